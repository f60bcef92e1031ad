//! `beehive run`: every configured consumer group's component, `instances` consumers each,
//! plus reclaiming (inside each consumer's pending passes) and garbage collection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ComponentSource, Config, ConsumerConfig};
use crate::engine::Engine;
use crate::reload::Reloader;
use crate::runtime::{Component, ComponentError, GuestSettings, WasmEngine, WasmHandler};

/// How `beehive run` behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Drain every group once and return instead of running until cancelled.
    pub drain: bool,
    /// How often garbage collection runs (not in drain mode).
    pub gc_interval: Duration,
    /// Where batches, failures and publishes are counted; its gauges are refreshed from
    /// statistics every `stats_interval`.
    pub metrics: Option<crate::metrics::Metrics>,
    /// How often the metrics gauges are refreshed.
    pub stats_interval: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            drain: false,
            gc_interval: Duration::from_secs(30),
            metrics: None,
            stats_interval: Duration::from_secs(5),
        }
    }
}

/// Loads every group's component, refusing the first that cannot be used.
pub fn load_components(
    config: &Config,
    wasm: &WasmEngine,
) -> Result<BTreeMap<String, Component>, ComponentError> {
    let mut components = BTreeMap::new();
    for (group, consumer) in &config.consumers {
        // Deployed components live in Redis: load_all fetches them.
        if let ComponentSource::File(path) = &consumer.component {
            let component = wasm.load_file(path)?;
            tracing::info!(group = %group, component = %component.origin(), digest = %component.short_digest(), "loaded component");
            components.insert(group.clone(), component);
        }
    }
    Ok(components)
}

/// Loads every group's component for `beehive run`: a version deployed through Redis (see
/// [`deploy`](crate::deploy)) wins over the file; a group configured as `deployed` needs one.
pub async fn load_all(
    config: &Config,
    wasm: &WasmEngine,
) -> Result<BTreeMap<String, Component>, ComponentError> {
    let engine = config.registry.create_engine();
    let mut components = BTreeMap::new();
    for (group, consumer) in &config.consumers {
        let deployed =
            crate::deploy::deployed(&engine, group)
                .await
                .map_err(|e| ComponentError {
                    origin: format!("deployed {group}"),
                    reason: format!("cannot read the deployed version from Redis: {e}"),
                })?;
        let component = match (deployed, &consumer.component) {
            (Some((digest, bytes)), _) => {
                let wasm = wasm.clone();
                let origin = crate::deploy::deployed_origin(group, &digest);
                tokio::task::spawn_blocking(move || wasm.load_bytes(&bytes, &origin))
                    .await
                    .map_err(|e| ComponentError {
                        origin: group.clone(),
                        reason: e.to_string(),
                    })??
            }
            (None, ComponentSource::File(path)) => {
                let (wasm, path) = (wasm.clone(), path.clone());
                tokio::task::spawn_blocking(move || wasm.load_file(&path))
                    .await
                    .map_err(|e| ComponentError {
                        origin: group.clone(),
                        reason: e.to_string(),
                    })??
            }
            (None, ComponentSource::Deployed) => {
                return Err(ComponentError {
                    origin: format!("consumers.{group}.component"),
                    reason: format!(
                        "no version of {group} is deployed yet: run beehive deploy {group} <file.wasm>"
                    ),
                });
            }
        };
        tracing::info!(group = %group, component = %component.origin(), digest = %component.short_digest(), "loaded component");
        components.insert(group.clone(), component);
    }
    Ok(components)
}

/// The sandbox settings of a group.
pub fn guest_settings(
    consumer: &ConsumerConfig,
    metrics: Option<crate::metrics::Metrics>,
) -> GuestSettings {
    GuestSettings {
        group: consumer.group.clone(),
        publish: consumer.publish.clone(),
        max_publishes: consumer.max_publishes,
        memory: consumer.memory,
        timeout: consumer.timeout,
        metrics,
    }
}

/// Runs every consumer of `config` with the live component versions of `reloader` until
/// `cancel` fires (or, with `drain`, until everything is drained). In-flight batches finish
/// and commit before it returns; locks are released.
pub async fn run(
    config: &Config,
    reloader: &Arc<Reloader>,
    options: RunOptions,
    cancel: CancellationToken,
) {
    let engine = config.registry.create_engine();
    let mut tasks = JoinSet::new();
    let background = CancellationToken::new();
    for (group, consumer) in &config.consumers {
        let Some(updates) = reloader.subscribe(group) else {
            continue;
        };
        if !options.drain {
            tokio::spawn(advertise(
                engine.clone(),
                group.clone(),
                updates.clone(),
                background.clone(),
            ));
        }
        for nr in 1..=consumer.instances {
            tasks.spawn(run_consumer(
                engine.clone(),
                consumer.clone(),
                updates.clone(),
                nr,
                options.clone(),
                cancel.clone(),
            ));
        }
    }
    if !options.drain {
        let (engine, stop, interval) = (engine.clone(), background.clone(), options.gc_interval);
        tokio::spawn(async move { engine.run_gc(stop, interval).await });
    }
    if let Some(metrics) = options.metrics.clone() {
        let (broker, stop, interval) = (
            engine.event_broker(),
            background.clone(),
            options.stats_interval,
        );
        let dead_letters: BTreeMap<String, String> = config
            .consumers
            .iter()
            .map(|(g, c)| (g.clone(), c.dead_letter.clone()))
            .collect();
        tokio::spawn(async move {
            let name = |group: &str| {
                dead_letters
                    .get(group)
                    .cloned()
                    .unwrap_or_else(|| format!("{group}-dead-letter"))
            };
            loop {
                match broker.statistics_with(&name).await {
                    Ok(stats) => metrics.observe_statistics(&stats),
                    Err(e) => tracing::warn!(error = %e, "cannot refresh metrics gauges"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result {
            tracing::error!(error = %e, "a consumer task failed");
        }
    }
    background.cancel();
}

/// This host's identity in `beehive:hosts:*` keys: `<hostname>:<pid>`.
pub fn host_id() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{hostname}:{}", std::process::id())
}

/// The key under which a host advertises the digest it runs for a group.
pub fn host_key(group: &str, host: &str) -> String {
    format!("{HOSTS_PREFIX}{group}:{host}")
}

/// Prefix of the keys `beehive:hosts:<group>:<host>` = running digest (expire when the host
/// stops advertising).
pub const HOSTS_PREFIX: &str = "beehive:hosts:";
const ADVERTISE_EVERY: Duration = Duration::from_secs(10);
const ADVERTISE_TTL: Duration = Duration::from_secs(30);

/// Keeps `beehive:hosts:<group>:<host>` set to the digest this host runs, at once after a
/// swap and every 10 s otherwise; deleted when the host stops.
async fn advertise(
    engine: Engine,
    group: String,
    mut updates: tokio::sync::watch::Receiver<Component>,
    stop: CancellationToken,
) {
    let Some(pool) = engine.registry().group(&group).map(|g| g.pool.clone()) else {
        return;
    };
    let key = host_key(&group, &host_id());
    loop {
        let digest = updates.borrow_and_update().digest().to_string();
        if let Ok(mut con) = engine.connection(&pool).await {
            let result: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&key)
                .arg(&digest)
                .arg("PX")
                .arg(ADVERTISE_TTL.as_millis() as u64)
                .query_async(&mut con)
                .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "cannot advertise the running component");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = updates.changed() => {}
            _ = tokio::time::sleep(ADVERTISE_EVERY) => {}
        }
    }
    if let Ok(mut con) = engine.connection(&pool).await {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query_async(&mut con).await;
    }
}

async fn run_consumer(
    engine: Engine,
    config: ConsumerConfig,
    updates: tokio::sync::watch::Receiver<Component>,
    nr: u32,
    run: RunOptions,
    cancel: CancellationToken,
) {
    let drain = run.drain;
    let group = config.group.clone();
    let mut consumer = match engine.event_broker().consumer(&group) {
        Ok(consumer) => consumer,
        Err(e) => {
            tracing::error!(group = %group, error = %e, "cannot create consumer");
            return;
        }
    };
    {
        let options = consumer.options_mut();
        options.looping = !drain;
        options.block = config.block;
        options.max_deliveries = Some(config.max_deliveries);
        options.dead_letter_stream = config.dead_letter.clone();
        options.reclaim_idle = Some(config.min_idle);
        options.pending_interval =
            (config.min_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        options.metrics = run.metrics.clone();
    }
    let settings = guest_settings(&config, run.metrics.clone());
    let label = format!("{group}/consumer-{nr}");
    let mut failures = 0u32;
    loop {
        let handler = WasmHandler::with_updates(updates.clone(), settings.clone(), &label);
        tracing::info!(consumer = %label, digest = %handler.component().short_digest(), "consumer starting");
        match consumer
            .consume_with(cancel.clone(), nr, config.count, handler)
            .await
        {
            Ok(true) => {
                tracing::info!(consumer = %label, "consumer stopped");
                return;
            }
            Ok(false) if drain => {
                tracing::warn!(consumer = %label, "consumer runs elsewhere; not draining it here");
                return;
            }
            Ok(false) => {
                tracing::warn!(consumer = %label, "consumer runs elsewhere or lost its lock; trying again shortly");
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                tracing::error!(consumer = %label, error = %e, attempt = failures, "consumer failed; retrying with backoff");
            }
        }
        let delay = Duration::from_millis(500u64 << failures.min(4)).min(Duration::from_secs(10));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
