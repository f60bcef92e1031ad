//! The Redis Cluster scenario (issue 16): C0 and C3 on one redis-server against the same
//! workload on a private 3-master Redis Cluster, with Redis's and the host's CPU per event,
//! and what those figures project for 1, 3 and 10 masters with one host per master.
//!
//! The workload is the same on both: three streams whose hash tags put them on the three
//! different masters of the cluster (chosen with `CLUSTER NODES`), each with a group of its
//! own, filled with N/3 events each (100-byte body, 2 meta pairs), then drained by three
//! consumers at once, one per stream, each on a task of its own (as `beehive run` runs its
//! consumers). On the single server the three streams (same names) share one redis-server.
//! C0 is the bare redis-rs loop of `consume` (on the cluster through redis-rs's cluster
//! client), C3 the Beehive consumer with the trivial WASM guest (on the cluster through a
//! cluster pool). Only the drain is measured: the clock, `INFO cpu` of every server and the
//! bench process's own CPU time (`/proc/self/stat`) are read right before the consumers
//! start and right after the last one is done. With `BEEHIVE_BENCH_TRACE` set, each
//! measurement also prints the side's `INFO commandstats` (reset before it, summed over its
//! servers); `--only single` or `--only cluster` (with or without `C0`/`C3`) runs one side,
//! e.g. under `perf`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use beehive::redis_cluster::RedisCluster;
use beehive::runtime::{Component, GuestSettings, WasmHandler};
use beehive::{CancellationToken, EventBroker, Registry};
use redis::aio::MultiplexedConnection;

use crate::consume::{Counted, c0_loop};
use crate::report::{median, thousands};
use crate::setup::{Bench, pending, publish_events, rate, redis_cpu};

/// Streams (one per master of the cluster), so consumers running at once.
pub const STREAMS: usize = 3;

/// Clock ticks per second of `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Where a measurement's streams live.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Single,
    Cluster,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Single => "single",
            Target::Cluster => "cluster",
        }
    }
}

/// One side of the comparison: an engine over its pool and plain clients of its servers.
struct Side {
    broker: EventBroker,
    /// Per stream, a client of the server holding it (for filling and checking).
    holders: Vec<redis::Client>,
    /// Every server of the side, for `INFO cpu`.
    servers: Vec<redis::Client>,
    /// The cluster client C0 uses on the cluster; `None` on the single server.
    cluster: Option<redis::cluster::ClusterClient>,
}

/// One measurement.
struct Measured {
    scenario: &'static str,
    batch: usize,
    target: Target,
    run: usize,
    rate: f64,
    /// Redis CPU (every server of the side, user + system) per event, µs.
    redis_us: f64,
    /// The bench process's CPU (user + system, all threads) per event, µs.
    host_us: f64,
}

/// The cluster, both sides and what was measured.
pub struct ClusterBench {
    /// The private cluster (stopped on drop).
    _cluster: RedisCluster,
    streams: Vec<String>,
    groups: Vec<String>,
    /// `(tag, slot, master port)` of every stream, for the header.
    placement: Vec<(String, u16, u16)>,
    single: Side,
    cluster: Side,
    component: Component,
    samples: Vec<Measured>,
}

impl ClusterBench {
    /// Starts a 3-master cluster (no replicas), picks one hash tag per master and registers
    /// the same three streams and groups on the bench's redis-server and on the cluster.
    pub async fn start(bench: &Bench, component: Component) -> anyhow::Result<Self> {
        let (cluster, placement) = tokio::task::spawn_blocking(|| {
            let cluster =
                RedisCluster::start(STREAMS, 0).context("starting a 3-master Redis Cluster")?;
            let placement = tags_on_every_master(&cluster)?;
            anyhow::Ok((cluster, placement))
        })
        .await??;
        let streams: Vec<String> = placement
            .iter()
            .map(|(tag, _, _)| format!("{{{tag}}}bench"))
            .collect();
        let groups: Vec<String> = (0..STREAMS).map(|i| format!("g{i}")).collect();

        let mut registry = Registry::new();
        registry.register_redis(&bench.server.address(), "", 0, "default");
        for (stream, group) in streams.iter().zip(&groups) {
            registry.register_redis_stream(stream, "default", &[group]);
        }
        let single = Side {
            broker: registry.validate().await?.create_engine().event_broker(),
            holders: vec![bench.client.clone(); STREAMS],
            servers: vec![bench.client.clone()],
            cluster: None,
        };

        let seeds = cluster.seeds();
        let mut registry = Registry::new();
        registry.register_redis_cluster(&seeds, "default");
        for (stream, group) in streams.iter().zip(&groups) {
            registry.register_redis_stream(stream, "default", &[group]);
        }
        let node = |port: u16| redis::Client::open(format!("redis://127.0.0.1:{port}/"));
        let clustered = Side {
            broker: registry.validate().await?.create_engine().event_broker(),
            holders: placement
                .iter()
                .map(|&(_, _, port)| node(port))
                .collect::<Result<_, _>>()?,
            servers: seeds
                .iter()
                .map(|seed| redis::Client::open(format!("redis://{seed}/")))
                .collect::<Result<_, _>>()?,
            cluster: Some(redis::cluster::ClusterClient::new(
                seeds.iter().map(|seed| format!("redis://{seed}/")),
            )?),
        };
        Ok(ClusterBench {
            _cluster: cluster,
            streams,
            groups,
            placement,
            single,
            cluster: clustered,
            component,
            samples: Vec::new(),
        })
    }

    /// Where the streams are, one line each.
    pub fn print_placement(&self) {
        for (stream, (_, slot, port)) in self.streams.iter().zip(&self.placement) {
            println!("stream {stream}: slot {slot}, master 127.0.0.1:{port}");
        }
    }

    /// One interleaved run: for each batch size, C0 then C3, each on the single server and
    /// on the cluster (which goes first alternates from run to run), draining `n` events.
    pub async fn run(
        &mut self,
        bench: &Bench,
        run: usize,
        batches: &[usize],
        n: usize,
    ) -> anyhow::Result<()> {
        let order = if run.is_multiple_of(2) {
            [Target::Single, Target::Cluster]
        } else {
            [Target::Cluster, Target::Single]
        };
        for &batch in batches {
            for scenario in ["C0", "C3"] {
                if !picked(bench, scenario, &["C0", "C3"]) {
                    continue;
                }
                for target in order {
                    if !picked(bench, target.name(), &["single", "cluster"]) {
                        continue;
                    }
                    self.measure(run, scenario, batch, target, n)
                        .await
                        .with_context(|| {
                            format!("{scenario} at batch {batch} on the {}", target.name())
                        })?;
                }
            }
        }
        Ok(())
    }

    fn side(&self, target: Target) -> &Side {
        match target {
            Target::Single => &self.single,
            Target::Cluster => &self.cluster,
        }
    }

    /// Fills the three streams with `n / 3` events each, drains them with three consumers
    /// at once and records the rate and the CPU per event.
    async fn measure(
        &mut self,
        run: usize,
        scenario: &'static str,
        batch: usize,
        target: Target,
        n: usize,
    ) -> anyhow::Result<()> {
        let per_stream = n / STREAMS;
        let n = per_stream * STREAMS;
        let side = self.side(target);
        self.fill(side, per_stream).await?;
        let mut servers = Vec::new();
        for server in &side.servers {
            servers.push(server.get_multiplexed_async_connection().await?);
        }
        // C0's connections are opened before the clock starts (C3's pool connection is
        // the engine's, opened by the first measurement and kept).
        let c0_connections = if scenario == "C0" {
            Some(self.c0_connections(side).await?)
        } else {
            None
        };
        let trace = std::env::var_os("BEEHIVE_BENCH_TRACE").is_some();
        if trace {
            for con in &mut servers {
                redis::cmd("CONFIG")
                    .arg("RESETSTAT")
                    .exec_async(con)
                    .await?;
            }
        }
        let redis_before = cpu_of(&mut servers).await?;
        let host_before = process_cpu()?;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (stream, group)) in self.streams.iter().zip(&self.groups).enumerate() {
            let (stream, group) = (stream.clone(), group.clone());
            match &c0_connections {
                Some(C0Connections::Single(cons)) => {
                    let con = cons[i].clone();
                    tasks.spawn(async move { c0_loop(con, &stream, &group, batch).await });
                }
                Some(C0Connections::Cluster(cons)) => {
                    let con = cons[i].clone();
                    tasks.spawn(async move { c0_loop(con, &stream, &group, batch).await });
                }
                None => {
                    let broker = side.broker.clone();
                    let component = self.component.clone();
                    tasks.spawn(async move { c3(broker, component, &group, batch).await });
                }
            }
        }
        let mut handled = 0;
        while let Some(done) = tasks.join_next().await {
            handled += done??;
        }
        let elapsed = started.elapsed();
        let host = process_cpu()? - host_before;
        let redis = cpu_of(&mut servers).await? - redis_before;
        anyhow::ensure!(handled == n, "handled {handled} of {n} events");
        if trace {
            print_commandstats(&mut servers, n).await?;
        }
        self.check_drained(side).await?;
        let sample = Measured {
            scenario,
            batch,
            target,
            run,
            rate: rate(n, elapsed),
            redis_us: redis * 1e6 / n as f64,
            host_us: host * 1e6 / n as f64,
        };
        eprintln!(
            "  run {} {scenario} {:>4} {:<7} {:>10.0} events/s  Redis {:.2} µs/event  host {:.2} µs/event",
            run + 1,
            batch,
            target.name(),
            sample.rate,
            sample.redis_us,
            sample.host_us
        );
        self.samples.push(sample);
        Ok(())
    }

    /// One C0 connection per stream: plain multiplexed connections to the single server,
    /// or redis-rs cluster connections.
    async fn c0_connections(&self, side: &Side) -> anyhow::Result<C0Connections> {
        Ok(match &side.cluster {
            None => {
                let mut cons = Vec::new();
                for holder in &side.holders {
                    cons.push(holder.get_multiplexed_async_connection().await?);
                }
                C0Connections::Single(cons)
            }
            Some(client) => {
                let mut cons = Vec::new();
                for _ in 0..STREAMS {
                    cons.push(client.get_async_connection().await?);
                }
                C0Connections::Cluster(cons)
            }
        })
    }

    /// Recreates every stream with its group at 0 and publishes `n` events to each with
    /// pipelines of 1000, on the server that holds it.
    async fn fill(&self, side: &Side, n: usize) -> anyhow::Result<()> {
        for ((stream, group), holder) in self.streams.iter().zip(&self.groups).zip(&side.holders) {
            let mut con = holder.get_multiplexed_async_connection().await?;
            redis::cmd("DEL").arg(stream).exec_async(&mut con).await?;
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .exec_async(&mut con)
                .await?;
            publish_events(&mut con, stream, n, |_| "0").await?;
        }
        Ok(())
    }

    /// Checks every group left nothing pending.
    async fn check_drained(&self, side: &Side) -> anyhow::Result<()> {
        for ((stream, group), holder) in self.streams.iter().zip(&self.groups).zip(&side.holders) {
            let mut con = holder.get_multiplexed_async_connection().await?;
            let pending = pending(&mut con, stream, group).await?;
            anyhow::ensure!(pending == 0, "{stream}: {pending} entries left pending");
        }
        Ok(())
    }

    /// Prints the table and the projections (Markdown, as they go into the README).
    pub fn print(&self) {
        let keys = self.keys();
        println!();
        println!(
            "Redis Cluster: {STREAMS} streams, one per master, drained by {STREAMS} consumers at once; \
             single = the same {STREAMS} streams on one redis-server"
        );
        println!();
        println!(
            "| scenario | batch | where | events/s median | min | max | cluster/single events/s | Redis CPU µs/event | cluster/single Redis CPU | host CPU µs/event | cluster/single host CPU |"
        );
        println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &(scenario, batch) in &keys {
            for target in [Target::Single, Target::Cluster] {
                let samples = self.of(scenario, batch, target);
                if samples.is_empty() {
                    continue;
                }
                let rates: Vec<f64> = samples.iter().map(|s| s.rate).collect();
                let ratio = |value: fn(&Measured) -> f64| match target {
                    Target::Single => "–".to_string(),
                    Target::Cluster => self
                        .ratio(scenario, batch, value)
                        .map_or("–".into(), |r| format!("{r:.2}×")),
                };
                println!(
                    "| {scenario} | {batch} | {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {} |",
                    target.name(),
                    thousands(median(&rates)),
                    thousands(rates.iter().copied().fold(f64::INFINITY, f64::min)),
                    thousands(rates.iter().copied().fold(0.0, f64::max)),
                    ratio(|s| s.rate),
                    median_of(&samples, |s| s.redis_us),
                    ratio(|s| s.redis_us),
                    median_of(&samples, |s| s.host_us),
                    ratio(|s| s.host_us),
                );
            }
        }
        if let Some(&(scenario, batch)) = keys.first() {
            let runs = [Target::Single, Target::Cluster]
                .map(|target| self.of(scenario, batch, target).len())
                .into_iter()
                .max()
                .unwrap_or(0);
            println!();
            println!("({runs} interleaved runs per row; ratios are medians of per-run ratios)");
        }
        self.print_projection(&keys);
    }

    /// Projected events/s for 1, 3 and 10 masters with one host per master, from the
    /// median CPU per event (see the README for the model).
    fn print_projection(&self, keys: &[(&'static str, usize)]) {
        println!();
        println!(
            "Projection: per master+host pair 1e6 / max(Redis µs, host µs / host cores) events/s \
             (Redis on one core of its own, the host on cores of its own), times the masters; \
             1 master from the single-server figures, 3 and 10 from the cluster's"
        );
        println!();
        println!(
            "| scenario | batch | host cores | Redis µs/event single / cluster | host µs/event single / cluster | 1 master | 3 masters | 10 masters | bound by |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for &(scenario, batch) in keys {
            let single = self.of(scenario, batch, Target::Single);
            let cluster = self.of(scenario, batch, Target::Cluster);
            if single.is_empty() || cluster.is_empty() {
                continue;
            }
            let (rs, hs) = (
                median_of(&single, |s| s.redis_us),
                median_of(&single, |s| s.host_us),
            );
            let (rc, hc) = (
                median_of(&cluster, |s| s.redis_us),
                median_of(&cluster, |s| s.host_us),
            );
            for cores in [1.0, 2.0] {
                let pair = |redis: f64, host: f64| 1e6 / redis.max(host / cores);
                let bound = |redis: f64, host: f64| {
                    if redis >= host / cores {
                        "Redis"
                    } else {
                        "host"
                    }
                };
                let bounds = if bound(rs, hs) == bound(rc, hc) {
                    bound(rc, hc).to_string()
                } else {
                    format!("{} (1) / {} (3, 10)", bound(rs, hs), bound(rc, hc))
                };
                println!(
                    "| {scenario} | {batch} | {cores} | {rs:.2} / {rc:.2} | {hs:.2} / {hc:.2} | {} | {} | {} | {bounds} |",
                    thousands(pair(rs, hs)),
                    thousands(3.0 * pair(rc, hc)),
                    thousands(10.0 * pair(rc, hc)),
                );
            }
        }
        println!();
        println!(
            "Cores kept busy while draining, (Redis µs + host µs) × events/s, of the machine's {}:",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        for &(scenario, batch) in keys {
            for target in [Target::Single, Target::Cluster] {
                let samples = self.of(scenario, batch, target);
                if samples.is_empty() {
                    continue;
                }
                let cores = |value: fn(&Measured) -> f64| {
                    let cores: Vec<f64> = samples.iter().map(|s| value(s) * s.rate / 1e6).collect();
                    median(&cores)
                };
                println!(
                    "  {scenario} batch {batch} {:<7}: {:.2} (Redis {:.2}, host {:.2})",
                    target.name(),
                    cores(|s| s.redis_us + s.host_us),
                    cores(|s| s.redis_us),
                    cores(|s| s.host_us),
                );
            }
        }
    }

    /// `(scenario, batch)` in the order measured.
    fn keys(&self) -> Vec<(&'static str, usize)> {
        let mut keys = Vec::new();
        for s in &self.samples {
            if !keys.contains(&(s.scenario, s.batch)) {
                keys.push((s.scenario, s.batch));
            }
        }
        keys
    }

    fn of(&self, scenario: &str, batch: usize, target: Target) -> Vec<&Measured> {
        self.samples
            .iter()
            .filter(|s| s.scenario == scenario && s.batch == batch && s.target == target)
            .collect()
    }

    /// Median over runs of cluster / single of `value`, same run.
    fn ratio(&self, scenario: &str, batch: usize, value: fn(&Measured) -> f64) -> Option<f64> {
        let single = self.of(scenario, batch, Target::Single);
        let ratios: Vec<f64> = self
            .of(scenario, batch, Target::Cluster)
            .iter()
            .filter_map(|c| {
                let s = single.iter().find(|s| s.run == c.run)?;
                Some(value(c) / value(s))
            })
            .collect();
        (!ratios.is_empty()).then(|| median(&ratios))
    }
}

/// Whether `name` (one of `among`) runs: `--only` names scenarios (`C0`, `C3`) and may name
/// a side (`single`, `cluster`, to profile one); naming none of `among` runs them all.
fn picked(bench: &Bench, name: &str, among: &[&str]) -> bool {
    let named = |n: &str| bench.only.iter().any(|o| o.eq_ignore_ascii_case(n));
    !among.iter().any(|n| named(n)) || named(name)
}

/// C0's connections, one per stream.
enum C0Connections {
    Single(Vec<MultiplexedConnection>),
    Cluster(Vec<redis::cluster_async::ClusterConnection>),
}

/// C3 on `group`: the Beehive consumer with the trivial WASM guest, draining its stream.
async fn c3(
    broker: EventBroker,
    component: Component,
    group: &str,
    batch: usize,
) -> anyhow::Result<usize> {
    let mut consumer = broker.consumer(group)?;
    consumer.disable_loop();
    let settings = GuestSettings {
        group: group.into(),
        ..GuestSettings::default()
    };
    let seen = Arc::new(AtomicUsize::new(0));
    consumer
        .consume_with(
            CancellationToken::new(),
            1,
            batch,
            Counted {
                inner: WasmHandler::new(component, settings, group),
                seen: seen.clone(),
            },
        )
        .await?;
    Ok(seen.load(Ordering::Relaxed))
}

/// One hash tag per master: the first of `b0`, `b1`, ... whose slot each master serves.
fn tags_on_every_master(cluster: &RedisCluster) -> anyhow::Result<Vec<(String, u16, u16)>> {
    let mut found: Vec<(String, u16, u16)> = Vec::new();
    for i in 0..1000 {
        let tag = format!("b{i}");
        let slot = beehive::keys::slot(&format!("{{{tag}}}"));
        let port = cluster.master_of_slot(slot)?;
        if !found.iter().any(|&(_, _, p)| p == port) {
            found.push((tag, slot, port));
            if found.len() == STREAMS {
                found.sort_by_key(|&(_, _, port)| port);
                return Ok(found);
            }
        }
    }
    anyhow::bail!("no hash tag found for every master")
}

/// `INFO commandstats` summed over `servers`: per command, calls and µs per event.
async fn print_commandstats(servers: &mut [MultiplexedConnection], n: usize) -> anyhow::Result<()> {
    let mut sums: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
    for con in servers {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(con)
            .await?;
        for line in stats.lines() {
            let Some((name, fields)) = line.trim().split_once(':') else {
                continue;
            };
            let Some(name) = name.strip_prefix("cmdstat_") else {
                continue;
            };
            let field = |key: &str| {
                fields.split(',').find_map(|f| {
                    let (k, v) = f.split_once('=')?;
                    (k == key).then(|| v.parse::<f64>().ok()).flatten()
                })
            };
            let sum = sums.entry(name.to_string()).or_default();
            sum.0 += field("calls").unwrap_or(0.0) as u64;
            sum.1 += field("usec").unwrap_or(0.0);
        }
    }
    for (name, (calls, usec)) in sums {
        eprintln!(
            "        {name:<20} {calls:>8} calls  {:>6.3} µs/event",
            usec / n as f64
        );
    }
    Ok(())
}

/// The summed CPU seconds of `servers` (`INFO cpu`).
async fn cpu_of(servers: &mut [MultiplexedConnection]) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for con in servers {
        sum += redis_cpu(con).await?;
    }
    Ok(sum)
}

/// CPU seconds this process has used so far, user + system over all its threads
/// (`utime` + `stime` of `/proc/self/stat`, in clock ticks of 10 ms).
fn process_cpu() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command name (which may hold spaces) in parentheses: state is the
    // first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no ) in /proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("/proc/self/stat is too short")?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

fn median_of(samples: &[&Measured], value: fn(&Measured) -> f64) -> f64 {
    let values: Vec<f64> = samples.iter().map(|s| value(s)).collect();
    median(&values)
}
