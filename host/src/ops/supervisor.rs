//! `beehive run`: every configured consumer group's component, `instances` consumers each,
//! plus reclaiming (inside each consumer's pending passes) and garbage collection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ComponentSource, Config, ConsumerConfig};
use crate::engine::Engine;
use crate::ops::fleet::{self, FleetGroup};
use crate::ops::reload::Reloader;
use crate::redis::records;
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
    pub metrics: Option<crate::ops::metrics::Metrics>,
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

/// Reads the deployed version of `group`, waiting for Redis with backoff (0.5 s doubling to
/// 10 s) while it cannot be reached: a host started before Redis comes up once it does.
async fn deployed_with_retry(
    engine: &crate::Engine,
    group: &str,
) -> crate::Result<Option<(String, Vec<u8>)>> {
    let mut delay = Duration::from_millis(500);
    loop {
        match crate::ops::deploy::deployed(engine, group).await {
            Err(crate::Error::Redis { pool, source })
                if source.is_io_error()
                    || source.is_connection_refusal()
                    || source.is_connection_dropped()
                    || source.is_timeout() =>
            {
                tracing::warn!(%pool, error = %source, retry_in = ?delay, "Redis is unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// Loads every group's component for `beehive run`: a version deployed through Redis (see
/// [`deploy`](crate::ops::deploy)) wins over the file; a group configured as `deployed` needs one.
///
/// While Redis cannot be reached, it waits for it (with backoff) rather than fail.
pub async fn load_all(
    config: &Config,
    wasm: &WasmEngine,
) -> Result<BTreeMap<String, Component>, ComponentError> {
    let engine = config.registry.create_engine();
    let mut components = BTreeMap::new();
    for (group, consumer) in &config.consumers {
        let deployed = deployed_with_retry(&engine, group)
            .await
            .map_err(|e| ComponentError {
                origin: format!("deployed {group}"),
                reason: format!("cannot read the deployed version from Redis: {e}"),
            })?;
        let component = match (deployed, &consumer.component) {
            (Some((digest, bytes)), _) => {
                let wasm = wasm.clone();
                let origin = crate::ops::deploy::deployed_origin(group, &digest);
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

/// Runs every consumer of `config` with the live component versions of `reloader` until
/// `cancel` fires (or, with `drain`, until everything is drained). In-flight batches finish
/// and commit before it returns; locks are released.
pub async fn run(
    config: &Config,
    reloader: &Arc<Reloader>,
    options: RunOptions,
    cancel: CancellationToken,
) {
    Supervisor::start(config.clone(), reloader.clone(), options, cancel)
        .wait()
        .await;
}

/// The consumers of one group: `instances` tasks (plus the host advertisement), stopped
/// together.
struct Runner {
    config: ConsumerConfig,
    streams: Vec<String>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

/// Runs the configured groups and applies configuration changes while running.
pub struct Supervisor {
    config: Config,
    engine: Engine,
    reloader: Arc<Reloader>,
    options: RunOptions,
    cancel: CancellationToken,
    background: CancellationToken,
    runners: BTreeMap<String, Runner>,
}

impl Supervisor {
    /// Starts every group of `config` whose component `reloader` holds, garbage collection
    /// and (with metrics) the gauge refresher.
    pub fn start(
        config: Config,
        reloader: Arc<Reloader>,
        options: RunOptions,
        cancel: CancellationToken,
    ) -> Self {
        let engine = config.registry.create_engine();
        let mut supervisor = Supervisor {
            config,
            engine,
            reloader,
            options,
            background: cancel.child_token(),
            cancel,
            runners: BTreeMap::new(),
        };
        let groups: Vec<ConsumerConfig> = supervisor.config.consumers.values().cloned().collect();
        for consumer in &groups {
            supervisor.start_group(consumer);
        }
        supervisor.start_background();
        supervisor
    }

    fn start_group(&mut self, consumer: &ConsumerConfig) {
        let group = consumer.group.clone();
        let Some(updates) = self.reloader.subscribe(&group) else {
            return;
        };
        let stop = self.cancel.child_token();
        let mut tasks = JoinSet::new();
        if !self.options.drain {
            tasks.spawn(advertise(
                self.engine.clone(),
                group.clone(),
                updates.clone(),
                stop.clone(),
            ));
        }
        if self.options.drain {
            // Drain mode is one pass over what is there: every consumer, here.
            for nr in 1..=consumer.instances {
                tasks.spawn(run_consumer(
                    self.engine.clone(),
                    consumer.clone(),
                    updates.clone(),
                    nr,
                    self.options.clone(),
                    stop.clone(),
                ));
            }
        } else {
            // Running: this host's fair share of the fleet's consumers.
            let fleet = FleetGroup {
                engine: self.engine.clone(),
                group: group.clone(),
                instances: consumer.instances,
                lock_ttl: consumer.lock_ttl,
                dead_letter_stream: consumer.dead_letter.clone(),
                host: host_id(),
            };
            let (engine, config, options) =
                (self.engine.clone(), consumer.clone(), self.options.clone());
            let spawn = move |nr: u32, token: CancellationToken| {
                tokio::spawn(run_consumer(
                    engine.clone(),
                    config.clone(),
                    updates.clone(),
                    nr,
                    options.clone(),
                    token,
                ))
            };
            tasks.spawn(fleet::coordinate(fleet, spawn, stop.clone()));
        }
        let streams = self
            .config
            .registry
            .group(&group)
            .map(|g| g.streams.clone())
            .unwrap_or_default();
        self.runners.insert(
            group,
            Runner {
                config: consumer.clone(),
                streams,
                stop,
                tasks,
            },
        );
    }

    async fn stop_group(&mut self, group: &str) {
        if let Some(mut runner) = self.runners.remove(group) {
            runner.stop.cancel();
            while runner.tasks.join_next().await.is_some() {}
        }
    }

    fn start_background(&mut self) {
        self.background.cancel();
        self.background = self.cancel.child_token();
        if !self.options.drain {
            let (engine, stop, interval) = (
                self.engine.clone(),
                self.background.clone(),
                self.options.gc_interval,
            );
            tokio::spawn(async move { engine.run_gc(stop, interval).await });
        }
        if let Some(metrics) = self.options.metrics.clone() {
            let (broker, stop, interval) = (
                self.engine.event_broker(),
                self.background.clone(),
                self.options.stats_interval,
            );
            let dead_letters: BTreeMap<String, String> = self
                .config
                .consumers
                .iter()
                .map(|(g, c)| (g.clone(), c.dead_letter.clone()))
                .collect();
            let registry = self.engine.registry().clone();
            tokio::spawn(async move {
                let name = |group: &str| {
                    dead_letters
                        .get(group)
                        .cloned()
                        .unwrap_or_else(|| registry.default_dead_letter_stream(group))
                };
                loop {
                    match broker.statistics_with(&name).await {
                        Ok(stats) => observe_statistics(&metrics, &stats),
                        Err(e) => tracing::warn!(error = %e, "cannot refresh metrics gauges"),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                }
            });
        }
    }

    /// Applies a reloaded configuration as far as it is safe: groups added, removed or
    /// changed (count, instances, block, limits, allow-list, dead-letter, component, ...)
    /// take effect now — a changed group's consumers finish their batches and restart with
    /// the new settings. A change of any pool's address is refused as a whole (it needs a
    /// restart) and the running configuration is kept. Returns what changed.
    pub async fn apply(&mut self, new: Config) -> Result<Vec<String>, String> {
        let pools = |config: &Config| -> Vec<(String, String, Option<String>)> {
            config
                .registry
                .pools()
                .map(|p| {
                    (
                        p.name.clone(),
                        match &p.cluster {
                            Some(seeds) => format!("cluster {}", crate::error::List(seeds)),
                            None => p.address.to_string(),
                        },
                        p.address
                            .connection_info()
                            .redis_settings()
                            .password()
                            .map(String::from),
                    )
                })
                .collect()
        };
        if pools(&self.config) != pools(&new) {
            return Err(
                "redis pools were added, removed or changed; pool addresses need a restart".into(),
            );
        }
        let mut changes = Vec::new();
        let old_groups: Vec<String> = self.runners.keys().cloned().collect();
        for group in old_groups
            .iter()
            .filter(|g| !new.consumers.contains_key(*g))
        {
            self.stop_group(group).await;
            self.reloader.remove(group);
            changes.push(format!("removed {group}"));
        }
        self.engine = new.registry.create_engine();
        let old_config = std::mem::replace(&mut self.config, new.clone());
        for (group, consumer) in &new.consumers {
            let streams = new
                .registry
                .group(group)
                .map(|g| g.streams.clone())
                .unwrap_or_default();
            let running = self
                .runners
                .get(group)
                .map(|r| (r.config.clone(), r.streams.clone()));
            if running
                .as_ref()
                .is_some_and(|(config, old_streams)| config == consumer && *old_streams == streams)
            {
                continue;
            }
            let component = if running
                .as_ref()
                .is_some_and(|(config, _)| config.component == consumer.component)
            {
                self.reloader.current(group)
            } else {
                match load_one(&self.engine, &self.reloader, group, consumer).await {
                    Ok(component) => Some(component),
                    Err(reason) => {
                        tracing::error!(group = %group, %reason, "config reload: cannot load the component; the group keeps its running settings");
                        if let Some(old) = old_config.consumers.get(group) {
                            self.config.consumers.insert(group.clone(), old.clone());
                        } else {
                            self.config.consumers.remove(group);
                        }
                        continue;
                    }
                }
            };
            let Some(component) = component else { continue };
            self.stop_group(group).await;
            self.reloader.insert(consumer, component);
            self.start_group(consumer);
            changes.push(if running.is_some() {
                format!("restarted {group} with its new settings")
            } else {
                format!("added {group}")
            });
        }
        self.start_background();
        Ok(changes)
    }

    /// Waits until every consumer has stopped (after `cancel`, or drained), then stops the
    /// background tasks.
    pub async fn wait(mut self) {
        for (_, mut runner) in std::mem::take(&mut self.runners) {
            while let Some(result) = runner.tasks.join_next().await {
                if let Err(e) = result {
                    tracing::error!(error = %e, "a consumer task failed");
                }
            }
        }
        self.background.cancel();
    }
}

/// Loads the component of one group: the deployed version if any, else its file.
async fn load_one(
    engine: &Engine,
    reloader: &Reloader,
    group: &str,
    consumer: &ConsumerConfig,
) -> Result<Component, String> {
    if let Some((digest, bytes)) = crate::ops::deploy::deployed(engine, group)
        .await
        .map_err(|e| e.to_string())?
    {
        let origin = crate::ops::deploy::deployed_origin(group, &digest);
        let wasm = reloader.engine().clone();
        return tokio::task::spawn_blocking(move || wasm.load_bytes(&bytes, &origin))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string());
    }
    match &consumer.component {
        ComponentSource::File(path) => reloader.load_file(path).await,
        ComponentSource::Deployed => Err(format!(
            "no version of {group} is deployed yet: run beehive deploy {group} <file.wasm>"
        )),
    }
}

pub use crate::keys::host_id;

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
    let Some(def) = engine.registry().group(&group).cloned() else {
        return;
    };
    let pool = def.pool.clone();
    let host = host_id();
    loop {
        let digest = updates.borrow_and_update().digest().to_string();
        if let Ok(mut con) = engine.connection(&pool).await {
            let result =
                records::advertise_host(&mut con, &def, &host, &digest, ADVERTISE_TTL).await;
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
        let _ = records::withdraw_host(&mut con, &def, &host).await;
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
    let observer = run
        .metrics
        .clone()
        .map(|m| Arc::new(m) as Arc<dyn crate::consumer::Observer>);
    {
        let options = consumer.options_mut();
        options.looping = !drain;
        options.block = config.block;
        options.max_deliveries = Some(config.max_deliveries);
        options.dead_letter_stream = config.dead_letter.clone();
        options.reclaim_idle = Some(config.min_idle);
        options.handler_deadline = config.timeout;
        options.lock_ttl = config.lock_ttl;
        options.pending_interval =
            (config.min_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        options.metrics = observer.clone();
    }
    let settings = GuestSettings::for_consumer(&config, observer);
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
                // Taken over, or still held by the host handing it over: try again soon.
                tracing::info!(consumer = %label, "consumer runs elsewhere or lost its lock; trying again shortly");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                failures = 0;
                continue;
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

/// Feeds the metrics' gauges from statistics.
fn observe_statistics(
    metrics: &crate::ops::metrics::Metrics,
    stats: &[crate::broker::stats::StreamStatistics],
) {
    for stream in stats.iter().filter(|s| s.error.is_none()) {
        metrics.set_stream_length(&stream.name, stream.length);
        for g in stream.groups.iter().filter(|g| g.registered) {
            if let Some(outbox) = &g.outbox {
                metrics.set_outbox(&g.name, outbox.length, outbox.oldest_age);
            }
            metrics.set_group_backlog(
                &g.name,
                &stream.name,
                g.pending,
                g.lag,
                g.oldest_pending_age,
            );
        }
    }
}
