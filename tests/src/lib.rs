//! Test support for Beehive's end-to-end tests: private Redis servers, registries over them,
//! the real `beehive` binary, and waiting for conditions instead of sleeping.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use beehive::redis_server::RedisServer;
use beehive::{Engine, Registry};

/// Starts a private `redis-server` (no persistence) on a free port.
pub fn redis() -> RedisServer {
    RedisServer::start().expect("start a private redis-server")
}

/// A registry with one pool `default` on `server` and the given `(stream, groups)`.
pub fn registry(server: &RedisServer, streams: &[(&str, &[&str])]) -> Registry {
    let mut registry = Registry::new();
    registry.register_redis(&server.address(), "", 0, "default");
    for (stream, groups) in streams {
        registry.register_redis_stream(stream, "default", groups);
    }
    registry
}

/// A validated engine over [`registry`].
pub async fn engine(server: &RedisServer, streams: &[(&str, &[&str])]) -> Engine {
    registry(server, streams)
        .validate()
        .await
        .expect("valid registry")
        .create_engine()
}

/// A plain connection to `server`, for checking what Redis holds.
pub async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the private redis-server")
}

/// Polls `check` until it returns true, failing the test after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `XLEN` of a stream.
pub async fn xlen(server: &RedisServer, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut raw(server).await)
        .await
        .expect("XLEN")
}

/// Pending count of a group on a stream (0 when the group does not exist).
pub async fn pending(server: &RedisServer, stream: &str, group: &str) -> u64 {
    let reply: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(&mut raw(server).await)
        .await;
    match reply {
        Ok(redis::Value::Array(parts)) => match parts.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `beehive` binary of this build, built on first use (so a plain `cargo test` never
/// runs a stale binary).
pub fn beehive_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("BEEHIVE_BIN") {
            return PathBuf::from(path);
        }
        // target/<profile>/deps/<test-binary>
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cargo =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "beehive", "--bin", "beehive"]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo
            .status()
            .expect("run cargo build for the beehive binary");
        assert!(status.success(), "cargo build -p beehive failed");
        profile_dir.join("beehive")
    })
    .clone()
}

/// A temporary folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh folder under the system temp dir.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "beehive-test-{}-{:016x}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` with `contents` and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}
