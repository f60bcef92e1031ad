//! Test support for Beehive's end-to-end tests: private Redis servers, registries over them,
//! the real `beehive` binary, and waiting for conditions instead of sleeping.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod cluster;

pub use beehive::redis_server::RedisServer;
use beehive::{Engine, Registry};

/// Starts a private `redis-server` (no persistence) on a free port.
pub fn redis() -> RedisServer {
    RedisServer::start().expect("start a private redis-server")
}

/// A private `redis-server` (no persistence) whose only user is `user` with `password`
/// and every permission; the `default` user is off.
pub fn redis_with_user(user: &str, password: &str) -> RedisServer {
    let password = format!(">{password}");
    RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--user",
        user,
        "on",
        &password,
        "~*",
        "&*",
        "+@all",
        "--user",
        "default",
        "off",
    ])
    .expect("start a private redis-server with an ACL user")
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
    raw_db(server, 0).await
}

/// A plain connection to database `db` of `server`.
pub async fn raw_db(server: &RedisServer, db: u8) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}/{db}", server.address()))
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
            // Built as `cargo test --workspace` builds (features unified over the workspace),
            // so the dependencies it compiled are reused rather than rebuilt.
            .args(["build", "--quiet", "--workspace", "--bins"]);
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

/// The cargo target folder.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds guest `package` for `wasm32-wasip2` in release, with `BEEHIVE_TEST_VERSION` set
/// when `version` is given, and returns the component's path.
fn build_guest(package: &str, version: Option<&str>) -> PathBuf {
    let mut cargo =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(workspace_root()).args([
        "build",
        "--quiet",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        package,
    ]);
    match version {
        Some(version) => cargo.env("BEEHIVE_TEST_VERSION", version),
        None => cargo.env_remove("BEEHIVE_TEST_VERSION"),
    };
    let status = cargo
        .status()
        .expect("run cargo build for a guest component");
    assert!(status.success(), "building the guest {package} failed");
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.exists(), "no component at {}", path.display());
    path
}

/// Guest builds share one output path per package: one build at a time per test process.
static GUEST_BUILDS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Builds the guest package `package` for `wasm32-wasip2` (once per test process) and
/// returns a private copy of the component (later builds of the same package with another
/// version cannot change it).
pub fn component(package: &str) -> PathBuf {
    let mut built = GUEST_BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(p, _)| p == package) {
        return path.clone();
    }
    let copy = target_dir().join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::copy(build_guest(package, None), &copy).expect("copy the guest component");
    built.push((package.to_string(), copy.clone()));
    copy
}

/// A running `beehive run` process, killed on drop.
pub struct Beehive {
    child: std::process::Child,
    log: PathBuf,
}

impl Beehive {
    /// Starts `beehive run -c <config>` with extra arguments; its stderr goes to a log file.
    pub fn run(config: &Path, extra: &[&str]) -> Beehive {
        Self::run_with_env(config, extra, &[])
    }

    /// [`run`](Self::run) with extra environment variables.
    pub fn run_with_env(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Beehive {
        let log = config.with_extension(format!("{}.log", rand_u64()));
        let stderr = std::fs::File::create(&log).expect("create log");
        let child = std::process::Command::new(beehive_bin())
            .arg("run")
            .arg("-c")
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start beehive run");
        Beehive { child, log }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"KILL"`, `"HUP"`, ...).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit (up to `timeout`) and returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "beehive did not exit within {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Beehive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs `beehive run --drain -c <config>` to completion and returns its log; fails the
/// test on a non-zero exit.
pub fn drain(config: &Path) -> String {
    let mut process = Beehive::run(config, &["--drain"]);
    let code = process.wait(Duration::from_secs(60));
    let log = process.log_text();
    assert_eq!(code, Some(0), "beehive run --drain failed:\n{log}");
    log
}

/// Every entry of a stream as `(id, fields)`, fields decoded lossily as text (the body too).
pub async fn entries(server: &RedisServer, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
    entries_db(server, 0, stream).await
}

/// [`entries`] of `stream` in database `db`.
pub async fn entries_db(
    server: &RedisServer,
    db: u8,
    stream: &str,
) -> Vec<(String, Vec<(String, String)>)> {
    let raw_entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut raw_db(server, db).await)
        .await
        .expect("XRANGE");
    raw_entries
        .into_iter()
        .map(|(id, flat)| {
            let fields = flat
                .chunks(2)
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv[0]).into_owned(),
                        String::from_utf8_lossy(kv.get(1).map(Vec::as_slice).unwrap_or(b""))
                            .into_owned(),
                    )
                })
                .collect();
            (id, fields)
        })
        .collect()
}

/// The value of `key` among `fields`.
pub fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The `of` meta of every receipt in `receipts` (the source IDs the handler saw), sorted,
/// duplicates kept: tests compare it with the published IDs to prove exactly-once.
pub async fn receipt_ids(server: &RedisServer) -> Vec<String> {
    let mut of: Vec<String> = entries(server, "receipts")
        .await
        .iter()
        .filter_map(|(_, f)| field(f, "of").map(str::to_string))
        .collect();
    of.sort();
    of
}

/// Builds the Python router example with componentize-py (once per test process) and
/// returns the component's path.
pub fn python_component() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut sources = vec![
                PathBuf::from("examples/python-router/app.py"),
                PathBuf::from("examples/python-router/build.sh"),
                PathBuf::from("scripts/build-python"),
                PathBuf::from("wit/beehive.wit"),
            ];
            sources.extend(files_in("guest-sdk/python", "py"));
            built_example(
                "python-router.wasm",
                &sources,
                "examples/python-router/build.sh",
            )
        })
        .clone()
}

/// Builds the JavaScript router example with componentize-js (once per test process, with
/// `bash examples/js-router/build.sh <out>`) and returns the component's path.
pub fn js_component() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            built_example(
                "js-router.wasm",
                &[
                    PathBuf::from("examples/js-router/handler.js"),
                    PathBuf::from("examples/js-router/build.sh"),
                    PathBuf::from("guest-sdk/js/beehive.js"),
                    PathBuf::from("scripts/build-js"),
                    PathBuf::from("wit/beehive.wit"),
                ],
                "examples/js-router/build.sh",
            )
        })
        .clone()
}

/// The files of workspace folder `dir` ending in `.ext`, relative to the workspace root.
fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join(dir))
        .expect("read a workspace folder")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == ext))
        .map(|path| Path::new(dir).join(path.file_name().expect("a file name")))
        .collect();
    files.sort();
    files
}

/// `target/<name>`, rebuilt with `bash <script> <out>` unless it is newer than every one of
/// `sources` (workspace-relative).
fn built_example(name: &str, sources: &[PathBuf], script: &str) -> PathBuf {
    let target = target_dir();
    std::fs::create_dir_all(&target).expect("target dir");
    let out = target.join(name);
    let built_at = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
    let fresh = built_at.is_some_and(|built| {
        sources.iter().all(|s| {
            std::fs::metadata(workspace_root().join(s))
                .and_then(|m| m.modified())
                .is_ok_and(|m| m <= built)
        })
    });
    if fresh {
        return out;
    }
    let status = std::process::Command::new("bash")
        .arg(workspace_root().join(script))
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(status.success(), "{script} failed to build {name}");
    out
}

/// Reads an example's `beehive.yaml`, points it at `server` and `component`, and writes it
/// into `dir`.
pub fn example_config(
    dir: &TempDir,
    example: &str,
    server: &RedisServer,
    component: &Path,
) -> PathBuf {
    let text = std::fs::read_to_string(
        workspace_root()
            .join("examples")
            .join(example)
            .join("beehive.yaml"),
    )
    .expect("example config");
    let text = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("redis: localhost:6379:0") {
                line.replace("localhost:6379:0", &format!("{}:0", server.address()))
            } else if line.trim_start().starts_with("component:") {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}component: {}", component.display())
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    dir.write(&format!("{example}.yaml"), &text)
}

/// Builds the hostile test guest with `BEEHIVE_TEST_VERSION=version` baked in and returns a
/// copy of it named after the version (so versions differ in digest and in the receipts
/// they publish).
pub fn hostile_version(version: &str) -> PathBuf {
    let _guard = GUEST_BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let copy = target_dir().join(format!("hostile-{version}.wasm"));
    std::fs::copy(build_guest("beehive-test-hostile", Some(version)), &copy)
        .expect("copy the versioned guest");
    copy
}

// ---- Raw entries and the binary's output (guest tooling and error-message tests) ----

/// A stream entry's fields as stored, bytes untouched.
pub type RawFields = Vec<(Vec<u8>, Vec<u8>)>;

/// `XADD <stream> * <fields>` with raw bytes (bodies no encoder of ours would write);
/// returns the entry ID.
pub async fn xadd_raw(server: &RedisServer, stream: &str, fields: &[(&[u8], &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(&mut raw(server).await).await.expect("XADD")
}

/// Every entry of a stream as `(id, fields)`, the fields' bytes untouched.
pub async fn raw_entries(server: &RedisServer, stream: &str) -> Vec<(String, RawFields)> {
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut raw(server).await)
        .await
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(id, flat)| {
            let fields = flat
                .chunks(2)
                .map(|kv| (kv[0].clone(), kv.get(1).cloned().unwrap_or_default()))
                .collect();
            (id, fields)
        })
        .collect()
}

/// Runs the `beehive` binary with `args` (no `RUST_LOG`), waiting at most `timeout`;
/// returns its exit code, stdout and stderr.
pub fn run_beehive(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = std::process::Command::new(beehive_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start beehive");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "beehive {args:?} did not exit within {timeout:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        code,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` over plain TCP; the body (empty when the host does not answer yet).
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    if socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return String::new();
    }
    let mut response = String::new();
    let _ = socket.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The value of the sample `name{labels}` in a scrape, `None` when absent.
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|v| v.trim().parse().ok())
}

/// A small xorshift generator for chaos tests: [`Rng::from_clock`] seeds it from the clock
/// and prints the seed under `name`, so a failing run can be told apart and replayed.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the clock; prints `<name> seed <seed>`.
    pub fn from_clock(name: &str) -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("{name} seed {seed}");
        Rng(seed)
    }

    /// The seed state (for messages).
    pub fn seed(&self) -> u64 {
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, made with `openssl` in
/// `dir`: (CA certificate, server certificate, server key).
pub fn certificates(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let path = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("the openssl command (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=beehive test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        path("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (path("ca.crt"), path("server.crt"), path("server.key"))
}

/// The SHA-256 of the file at `path` in hex (what `beehive deploy` calls its digest).
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("the sha256sum command");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// `(of, version)` of every receipt among `receipts` (entries of the `receipts` stream),
/// in stream order: which version of the hostile component handled which event.
pub fn receipt_versions(receipts: Vec<(String, Vec<(String, String)>)>) -> Vec<(String, String)> {
    receipts
        .into_iter()
        .map(|(_, f)| {
            (
                field(&f, "of").expect("a receipt has of").to_string(),
                field(&f, "version")
                    .expect("a receipt has version")
                    .to_string(),
            )
        })
        .collect()
}

/// Publishes to `stream` through `broker` every `every` until `stop` fires, each event's body
/// its sequence number (0, 1, ...), and returns the IDs published. A publish that fails
/// after `stop` ends it (what it tested may be shutting down); one that fails before is a
/// panic.
pub fn publish_steadily(
    broker: beehive::EventBroker,
    stream: &'static str,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut tick = tokio::time::interval(every);
        while !stop.is_cancelled() {
            tick.tick().await;
            match broker
                .publish(stream, &ids.len(), &[] as &[(&str, &str)])
                .await
            {
                Ok(id) => ids.push(id),
                Err(_) if stop.is_cancelled() => break,
                Err(e) => panic!("publish to {stream}: {e}"),
            }
        }
        ids
    })
}
