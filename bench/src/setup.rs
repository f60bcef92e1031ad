//! What every scenario shares: a private redis-server, a registry of the bench streams, the
//! event shape (100-byte body, 2 meta pairs) and raw set-up commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use beehive::redis_server::RedisServer;
use beehive::runtime::{Component, WasmEngine};
use beehive::{EventBroker, Registry};
use redis::aio::MultiplexedConnection;

/// The stream consumed by the consume scenarios, and its group.
pub const STREAM: &str = "bench";
/// The group reading [`STREAM`].
pub const GROUP: &str = "g";
/// Where the C4 handler publishes its receipts.
pub const RECEIPTS: &str = "bench-receipts";
/// The stream the publish scenarios write to.
pub const PUBLISH_STREAM: &str = "bench-publish";

/// The 100-byte body every event carries.
pub fn body() -> Vec<u8> {
    vec![b'x'; 100]
}

/// The two meta pairs; `p` tells the bench guest what to publish (`0` nothing, `1` a
/// receipt, else the name of the stream it publishes the event to).
pub fn meta(p: &str) -> [(&'static str, &str); 2] {
    [("source", "bench"), ("p", p)]
}

/// The shared state of a benchmark process.
pub struct Bench {
    /// The private server (stopped on drop).
    pub server: RedisServer,
    /// A broker over it, with the bench streams registered.
    pub broker: EventBroker,
    /// A plain redis-rs client for baselines and set-up.
    pub client: redis::Client,
    /// The wasm engine and components, loaded once.
    pub wasm: WasmEngine,
    /// Folder of the built Rust components.
    pub components: PathBuf,
    /// Scenarios to run (`--only`); empty runs all.
    pub only: Vec<String>,
    /// Batch sizes of the consume scenarios (`--batches`).
    pub batches: Vec<usize>,
}

impl Bench {
    /// Starts a private redis-server and registers the bench streams.
    pub async fn start(components: PathBuf) -> anyhow::Result<Self> {
        let server = RedisServer::start().context("starting redis-server")?;
        let mut registry = Registry::new();
        registry.register_redis(&server.address(), "", 0, "default");
        registry.register_redis_stream(STREAM, "default", &[GROUP]);
        registry.register_redis_stream(RECEIPTS, "default", &["auditors"]);
        registry.register_redis_stream(PUBLISH_STREAM, "default", &["auditors"]);
        let engine = registry.validate().await?.create_engine();
        let client = redis::Client::open(server.url())?;
        Ok(Bench {
            broker: engine.event_broker(),
            server,
            client,
            wasm: WasmEngine::new()?,
            components,
            only: Vec::new(),
            batches: vec![10, 100, 1000],
        })
    }

    /// Whether `scenario` (e.g. `C3`) is to run.
    pub fn selected(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s.eq_ignore_ascii_case(scenario))
    }

    /// A connection for baselines and set-up (redis-rs defaults).
    pub async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }

    /// Loads a component by file name from the components folder, or an explicit path.
    pub fn component(&self, file: &Path) -> anyhow::Result<Component> {
        let path = if file.is_absolute() || file.exists() {
            file.to_path_buf()
        } else {
            self.components.join(file)
        };
        self.wasm.load_file(&path).with_context(|| {
            format!(
                "loading {} (build it: bash bench/build-guests)",
                path.display()
            )
        })
    }

    /// Empties the bench streams, recreates the group at 0 and publishes `n` events with
    /// pipelines of 1000 (every `every`-th asks for a receipt when `every` > 0).
    pub async fn fill(&self, n: usize, every: usize) -> anyhow::Result<()> {
        self.fill_tagged(n, |i| {
            if every > 0 && i % every == 0 {
                "1"
            } else {
                "0"
            }
        })
        .await
    }

    /// [`fill`](Self::fill) with meta `p` of the `i`-th event given by `p(i)` (see the bench
    /// guest: `0` nothing, `1` a receipt, else the stream it publishes the event to).
    pub async fn fill_tagged(
        &self,
        n: usize,
        p: impl Fn(usize) -> &'static str,
    ) -> anyhow::Result<()> {
        let mut con = self.connection().await?;
        redis::cmd("DEL")
            .arg(STREAM)
            .arg(RECEIPTS)
            .exec_async(&mut con)
            .await?;
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(STREAM)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .exec_async(&mut con)
            .await?;
        publish_events(&mut con, STREAM, n, p).await
    }

    /// CPU seconds the redis-server has used so far (user + system, from `INFO cpu`).
    pub async fn redis_cpu(&self) -> anyhow::Result<f64> {
        redis_cpu(&mut self.connection().await?).await
    }

    /// Checks a consume scenario left nothing pending (every entry it read was acknowledged).
    pub async fn check_drained(&self, scenario: &str, n: usize) -> anyhow::Result<()> {
        let pending = pending(&mut self.connection().await?, STREAM, GROUP).await?;
        anyhow::ensure!(
            pending == 0,
            "{scenario}: {pending} of {n} entries were left pending"
        );
        Ok(())
    }
}

/// Publishes `n` events to `stream` with pipelines of 1000, meta `p` of the `i`-th given by
/// `p(i)`.
pub async fn publish_events(
    con: &mut MultiplexedConnection,
    stream: &str,
    n: usize,
    p: impl Fn(usize) -> &'static str,
) -> anyhow::Result<()> {
    let body = body();
    let mut sent = 0;
    while sent < n {
        let mut pipe = redis::pipe();
        for i in sent..(sent + 1000).min(n) {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream).arg("*").arg("s").arg(&body);
            for (k, v) in meta(p(i)) {
                cmd.arg(k).arg(v);
            }
            pipe.add_command(cmd).ignore();
        }
        pipe.exec_async(&mut *con).await?;
        sent = (sent + 1000).min(n);
    }
    Ok(())
}

/// Entries read by `group` of `stream` and not yet acknowledged (`XPENDING`).
pub async fn pending(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> anyhow::Result<u64> {
    let info: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    Ok(match info.first() {
        Some(redis::Value::Int(p)) => *p as u64,
        _ => 0,
    })
}

/// CPU seconds the redis-server behind `con` has used so far (user + system, `INFO cpu`).
pub async fn redis_cpu(con: &mut MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(con).await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            matches!(key, "used_cpu_user" | "used_cpu_sys")
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum())
}

/// Events per second for `n` events in `elapsed`.
pub fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}
