//! Output scenarios: C3 with one output per event (the event's body, meta `of` = its ID and
//! `t` = when the handler ran), to a stream in the input's pool (`C3-out-same`: the output
//! is committed with the acknowledgements) and to a stream registered in another pool on a
//! second private redis-server (`C3-out-cross`: the output goes to the group's outbox in
//! the same commit and the relay moves it to the target).
//!
//! Both run on one engine that knows both pools, so both have a relay running (idle for
//! `C3-out-same`); they differ only in where the output stream lives. A measurement ends
//! when the input is drained **and** every output is in its target, and checks that each
//! input has exactly one output there.
//!
//! With `BEEHIVE_BENCH_TRACE` set, a drain also prints a timeline (events handled, outbox
//! and target length every 20 ms) and the servers' `INFO commandstats` (reset before it).
//!
//! Two latencies: per output, its target entry ID's time minus its `t` (from when the
//! handler took up the batch, through its commit, to the `XADD` on the target); and, for
//! the relay, what it reports per output it wrote (`Observer::relay_latencies`): from the
//! commit that put the output in the outbox (the outbox entry ID's time) to the target's
//! answer, the relay's commit → `XADD` time the goal is about.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use beehive::consumer::{BatchCounts, Observer};
use beehive::redis_server::RedisServer;
use beehive::runtime::{Component, GuestSettings, WasmHandler};
use beehive::{BatchHandler, CancellationToken, Decision, Event, EventBroker, Registry};
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::report::{Report, Sample, median};
use crate::setup::{Bench, GROUP, STREAM, rate, redis_cpu};

/// The output stream in the input's pool.
pub const OUT_SAME: &str = "bench-out";
/// The output stream in the other pool (on the second redis-server).
pub const OUT_FAR: &str = "bench-out-far";
/// The scenario keys.
pub const SAME: &str = "C3-out-same";
/// See [`SAME`].
pub const CROSS: &str = "C3-out-cross";

/// Latencies (ms) of one scenario row, pooled over the runs.
#[derive(Default)]
struct Latencies {
    /// From the handler's call.
    ms: Vec<i64>,
    /// The relay's, from the commit into the outbox (cross-pool only).
    from_commit: Vec<i64>,
    /// Per run: time from the handler's last batch to the last output in its target (ms).
    tails: Vec<f64>,
}

/// The second redis-server, the two-pool engine and what the scenarios measured.
pub struct Outputs {
    /// The other pool's server (stopped on drop).
    _far: RedisServer,
    far_client: redis::Client,
    broker: EventBroker,
    component: Component,
    /// Events/s of the paced runs.
    pub paced_rate: u32,
    /// Seconds of publishing in each paced run.
    pub paced_seconds: f64,
    latencies: BTreeMap<(String, String), Latencies>,
    order: Vec<(String, String)>,
}

impl Outputs {
    /// Starts the second redis-server and an engine with both pools: the bench stream and
    /// [`OUT_SAME`] in `default` (the bench's server), [`OUT_FAR`] in `far`.
    pub async fn start(bench: &Bench, component: Component) -> anyhow::Result<Self> {
        let far = RedisServer::start().context("starting the second redis-server")?;
        let mut registry = Registry::new();
        registry.register_redis(&bench.server.address(), "", 0, "default");
        registry.register_redis(&far.address(), "", 0, "far");
        registry.register_redis_stream(STREAM, "default", &[GROUP]);
        registry.register_redis_stream(OUT_SAME, "default", &["auditors"]);
        registry.register_redis_stream(OUT_FAR, "far", &["far-auditors"]);
        let engine = registry.validate().await?.create_engine();
        Ok(Outputs {
            far_client: redis::Client::open(far.url())?,
            _far: far,
            broker: engine.event_broker(),
            component,
            paced_rate: 20_000,
            paced_seconds: 3.0,
            latencies: BTreeMap::new(),
            order: Vec::new(),
        })
    }

    fn settings() -> GuestSettings {
        GuestSettings {
            group: GROUP.into(),
            publish: vec![OUT_SAME.into(), OUT_FAR.into()],
            ..GuestSettings::default()
        }
    }

    fn handler(&self) -> WasmHandler {
        WasmHandler::new(self.component.clone(), Self::settings(), "bench")
    }

    /// A connection to the server `target` lives on, and that of the source.
    async fn connections(
        &self,
        bench: &Bench,
        target: &str,
    ) -> anyhow::Result<(MultiplexedConnection, MultiplexedConnection)> {
        let source = bench.connection().await?;
        let target = if target == OUT_FAR {
            self.far_client.get_multiplexed_async_connection().await?
        } else {
            bench.connection().await?
        };
        Ok((source, target))
    }

    /// One interleaved run of both scenarios at `batch`, draining `n` events.
    pub async fn run(
        &mut self,
        bench: &Bench,
        report: &mut Report,
        run: usize,
        batch: usize,
        n: usize,
    ) -> anyhow::Result<()> {
        for (scenario, label, target) in [
            (SAME, "C3, one output per event, same pool", OUT_SAME),
            (
                CROSS,
                "C3, one output per event, other pool (outbox + relay)",
                OUT_FAR,
            ),
        ] {
            if bench.selected(scenario) {
                self.drain(bench, report, run, scenario, label, batch, n, target)
                    .await
                    .with_context(|| format!("{scenario} at batch {batch}"))?;
            }
        }
        Ok(())
    }

    /// Fills the input with `n` events asking for an output to `target`, drains it with
    /// the consumer, waits for every output to be in `target` and records the rate.
    #[allow(clippy::too_many_arguments)]
    async fn drain(
        &mut self,
        bench: &Bench,
        report: &mut Report,
        run: usize,
        scenario: &'static str,
        label: &'static str,
        batch: usize,
        n: usize,
        target: &'static str,
    ) -> anyhow::Result<()> {
        let (mut source, mut out) = self.connections(bench, target).await?;
        redis::cmd("DEL").arg(target).exec_async(&mut out).await?;
        bench.fill_tagged(n, |_| target).await?;
        let cpu = (redis_cpu(&mut source).await?, self.far_cpu().await?);
        let seen = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(std::sync::Mutex::new(None));
        let relay = RelayLatencies::default();
        let trace = std::env::var_os("BEEHIVE_BENCH_TRACE").is_some();
        if trace {
            for con in [&mut source, &mut out] {
                redis::cmd("CONFIG")
                    .arg("RESETSTAT")
                    .exec_async(con)
                    .await?;
            }
        }
        let sampling = CancellationToken::new();
        let sampler = trace.then(|| {
            tokio::spawn(sample(
                source.clone(),
                out.clone(),
                target,
                seen.clone(),
                sampling.clone(),
            ))
        });
        let started = Instant::now();
        let mut consumer = self.broker.consumer(GROUP)?;
        consumer.disable_loop();
        consumer.options_mut().metrics = Some(Arc::new(relay.clone()));
        consumer
            .consume_with(
                CancellationToken::new(),
                1,
                batch,
                Timed {
                    inner: self.handler(),
                    seen: seen.clone(),
                    last: last.clone(),
                },
            )
            .await?;
        wait_for(&mut out, target, n, Duration::from_secs(60)).await?;
        let elapsed = started.elapsed();
        sampling.cancel();
        if let Some(sampler) = sampler {
            for line in sampler.await?? {
                eprintln!("        {line}");
            }
            let servers = if target == OUT_FAR {
                vec![("source", &mut source), ("target", &mut out)]
            } else {
                vec![("source", &mut source)]
            };
            for (name, con) in servers {
                let stats: String = redis::cmd("INFO")
                    .arg("commandstats")
                    .query_async(con)
                    .await?;
                for line in stats.lines().filter(|l| l.starts_with("cmdstat_")) {
                    eprintln!("        {name} {line}");
                }
            }
        }
        let handled = seen.load(Ordering::Relaxed);
        let cpu = (
            redis_cpu(&mut source).await? - cpu.0,
            self.far_cpu().await? - cpu.1,
        );
        anyhow::ensure!(handled == n, "handled {handled} of {n} events");
        bench.check_drained(scenario, n).await?;
        let ms = latencies(&mut out, target, n).await?;
        let from_commit = relay.take();
        let last_batch = last.lock().expect("not poisoned").unwrap_or(started);
        let tail = (started + elapsed).saturating_duration_since(last_batch);
        report.add(Sample {
            scenario,
            label,
            batch: Some(batch),
            rate: rate(n, elapsed),
            run,
            redis_us: Some((cpu.0 + cpu.1) * 1e6 / n as f64),
        });
        eprintln!(
            "        input handled in {:.0} ms, last output {:.0} ms later; latency p50 {} ms, p99 {} ms, max {} ms; relay p50 {} ms, p99 {} ms; Redis CPU µs/event: source {:.2}, far {:.2}",
            (last_batch - started).as_secs_f64() * 1e3,
            tail.as_secs_f64() * 1e3,
            percentile(&ms, 50.0),
            percentile(&ms, 99.0),
            ms.iter().max().copied().unwrap_or(0),
            percentile(&from_commit, 50.0),
            percentile(&from_commit, 99.0),
            cpu.0 * 1e6 / n as f64,
            cpu.1 * 1e6 / n as f64,
        );
        self.record(
            scenario,
            &format!("drain, batch {batch}"),
            (ms, from_commit),
            Some(tail),
        );
        Ok(())
    }

    /// Both scenarios under a steady rate: events published at [`Self::paced_rate`] for
    /// [`Self::paced_seconds`] while a looping consumer (batches of up to `batch`) handles
    /// them; records the outputs' latencies.
    pub async fn paced(&mut self, bench: &Bench, run: usize, batch: usize) -> anyhow::Result<()> {
        for (scenario, target) in [(SAME, OUT_SAME), (CROSS, OUT_FAR)] {
            if bench.selected(scenario) {
                self.paced_one(bench, run, scenario, target, batch)
                    .await
                    .with_context(|| format!("{scenario} paced"))?;
            }
        }
        Ok(())
    }

    async fn paced_one(
        &mut self,
        bench: &Bench,
        run: usize,
        scenario: &'static str,
        target: &'static str,
        batch: usize,
    ) -> anyhow::Result<()> {
        let (mut source, mut out) = self.connections(bench, target).await?;
        redis::cmd("DEL").arg(target).exec_async(&mut out).await?;
        bench.fill_tagged(0, |_| target).await?;
        let cancel = CancellationToken::new();
        let mut consumer = self.broker.consumer(GROUP)?;
        consumer.set_block_time(Duration::from_millis(500));
        let relay = RelayLatencies::default();
        consumer.options_mut().metrics = Some(Arc::new(relay.clone()));
        let handler = self.handler();
        let consuming = {
            let cancel = cancel.clone();
            tokio::spawn(async move { consumer.consume_with(cancel, 1, batch, handler).await })
        };
        // Publish in ticks of 5 ms, catching up when a tick is late (the average rate holds).
        let tick = Duration::from_millis(5);
        let per_tick = (self.paced_rate as f64 * tick.as_secs_f64()).max(1.0);
        let n = (self.paced_rate as f64 * self.paced_seconds) as usize;
        let body = crate::setup::body();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut sent = 0usize;
        let mut due = 0.0f64;
        while sent < n {
            interval.tick().await;
            due += per_tick;
            let upto = (due as usize).min(n);
            if upto > sent {
                let mut pipe = redis::pipe();
                for _ in sent..upto {
                    let mut cmd = redis::cmd("XADD");
                    cmd.arg(STREAM).arg("*").arg("s").arg(&body);
                    for (k, v) in crate::setup::meta(target) {
                        cmd.arg(k).arg(v);
                    }
                    pipe.add_command(cmd).ignore();
                }
                pipe.exec_async(&mut source).await?;
                sent = upto;
            }
        }
        let publishing = started.elapsed();
        let waited = wait_for(&mut out, target, n, Duration::from_secs(60)).await;
        cancel.cancel();
        consuming.await??;
        waited?;
        bench.check_drained(scenario, n).await?;
        let ms = latencies(&mut out, target, n).await?;
        let from_commit = relay.take();
        eprintln!(
            "  run {} {scenario:<12} paced {} events/s (achieved {:.0}), batch ≤ {batch}: latency p50 {} ms, p99 {} ms, max {} ms; relay p50 {} ms, p99 {} ms",
            run + 1,
            self.paced_rate,
            rate(n, publishing),
            percentile(&ms, 50.0),
            percentile(&ms, 99.0),
            ms.iter().max().copied().unwrap_or(0),
            percentile(&from_commit, 50.0),
            percentile(&from_commit, 99.0),
        );
        let row = format!("paced {} events/s, batch ≤ {batch}", self.paced_rate);
        self.record(scenario, &row, (ms, from_commit), None);
        Ok(())
    }

    async fn far_cpu(&self) -> anyhow::Result<f64> {
        redis_cpu(&mut self.far_client.get_multiplexed_async_connection().await?).await
    }

    fn record(
        &mut self,
        scenario: &str,
        row: &str,
        (ms, from_commit): (Vec<i64>, Vec<i64>),
        tail: Option<Duration>,
    ) {
        let key = (scenario.to_string(), row.to_string());
        if !self.latencies.contains_key(&key) {
            self.order.push(key.clone());
        }
        let entry = self.latencies.entry(key).or_default();
        entry.ms.extend(ms);
        entry.from_commit.extend(from_commit);
        entry.tails.extend(tail.map(|t| t.as_secs_f64() * 1e3));
    }

    /// Prints the latency table (Markdown), rows in the order they were first measured.
    pub fn print_latencies(&self) {
        if self.order.is_empty() {
            return;
        }
        println!();
        println!(
            "Output latency (ms to the output's XADD on its target: from the handler's call \
             (target entry ID time − meta t), and the relay's, from the commit into the \
             outbox (outbox entry ID time) to the target's answer; pooled over runs)"
        );
        println!();
        println!(
            "| scenario | how | outputs | from call p50 ms | p99 ms | max ms | relay, from commit p50 ms | p99 ms | max ms | last output after input handled, median ms |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut order = self.order.clone();
        // Drain rows first (by batch), then the paced ones, same before cross in each.
        order.sort_by_key(|(scenario, row)| {
            (
                row.starts_with("paced"),
                row.split(' ')
                    .next_back()
                    .and_then(|b| b.parse::<usize>().ok()),
                scenario != SAME,
            )
        });
        for key in order {
            let l = &self.latencies[&key];
            let tail = if l.tails.is_empty() {
                "–".to_string()
            } else {
                format!("{:.0}", median(&l.tails))
            };
            let relay = if l.from_commit.is_empty() {
                "– | – | –".to_string()
            } else {
                format!(
                    "{} | {} | {}",
                    percentile(&l.from_commit, 50.0),
                    percentile(&l.from_commit, 99.0),
                    l.from_commit.iter().max().copied().unwrap_or(0),
                )
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {relay} | {tail} |",
                key.0,
                key.1,
                l.ms.len(),
                percentile(&l.ms, 50.0),
                percentile(&l.ms, 99.0),
                l.ms.iter().max().copied().unwrap_or(0),
            );
        }
    }
}

/// Counts what a handler saw and when it last handled a batch.
struct Timed<H> {
    inner: H,
    seen: Arc<AtomicUsize>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl<H: BatchHandler> BatchHandler for Timed<H> {
    async fn handle(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
        self.seen.fetch_add(events.len(), Ordering::Relaxed);
        let decision = self.inner.handle(events).await;
        *self.last.lock().expect("not poisoned") = Some(Instant::now());
        decision
    }
}

/// Collects the relay's per-output latencies (ms); ignores every other figure.
#[derive(Clone, Debug, Default)]
struct RelayLatencies(Arc<std::sync::Mutex<Vec<i64>>>);

impl RelayLatencies {
    fn take(&self) -> Vec<i64> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

impl Observer for RelayLatencies {
    fn batch(&self, _: &str, _: BatchCounts, _: Duration, _: Option<u64>) {}
    fn failure(&self, _: &str, _: &str) {}
    fn published(&self, _: &str, _: &str, _: u64) {}
    fn publish_refused(&self, _: &str) {}
    fn commit_failed(&self, _: &str) {}
    fn relayed(&self, _: &str, _: &str, _: u64) {}
    fn deleted_while_pending(&self, _: &str, _: u64) {}
    fn lock_held(&self, _: &str, _: i64) {}

    fn relay_latencies(&self, _: &str, latencies: &[Duration]) {
        let mut all = self.0.lock().expect("not poisoned");
        all.extend(latencies.iter().map(|l| l.as_millis() as i64));
    }
}

/// Every 20 ms until cancelled: events handled, the outbox's length and the target's.
async fn sample(
    mut source: MultiplexedConnection,
    mut out: MultiplexedConnection,
    target: &str,
    seen: Arc<AtomicUsize>,
    cancel: CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    let outbox = format!("beehive:outbox:{GROUP}");
    let mut lines = Vec::new();
    while !cancel.is_cancelled() {
        let outbox_len: usize = redis::cmd("XLEN")
            .arg(&outbox)
            .query_async(&mut source)
            .await?;
        let target_len: usize = redis::cmd("XLEN").arg(target).query_async(&mut out).await?;
        lines.push(format!(
            "t={:>5} ms handled {:>7} outbox {:>7} target {:>7}",
            started.elapsed().as_millis(),
            seen.load(Ordering::Relaxed),
            outbox_len,
            target_len
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(lines)
}

/// Waits until `stream` holds `n` entries (polling every millisecond).
async fn wait_for(
    con: &mut MultiplexedConnection,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let len: usize = redis::cmd("XLEN").arg(stream).query_async(con).await?;
        if len >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{stream}: {len} of {n} outputs after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Reads `stream` (the outputs of `n` inputs), checks each input has exactly one output
/// and returns per output its ID's time minus its meta `t`, in ms.
async fn latencies(
    con: &mut MultiplexedConnection,
    stream: &str,
    n: usize,
) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::with_capacity(n);
    let mut inputs: HashSet<Vec<u8>> = HashSet::with_capacity(n);
    let mut start = "-".to_string();
    loop {
        let page: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query_async(con)
            .await?;
        let Value::Array(entries) = page else {
            anyhow::bail!("{stream}: XRANGE answered {page:?}");
        };
        if entries.is_empty() {
            break;
        }
        let mut last_id = String::new();
        for entry in entries {
            let (id, fields) = parse_entry(entry).context("an output entry")?;
            let ms: i64 = id.split('-').next().unwrap_or("").parse()?;
            let mut t = None;
            for pair in fields.chunks(2) {
                if let [k, v] = pair {
                    match k.as_slice() {
                        b"t" => t = Some(std::str::from_utf8(v)?.parse::<i64>()?),
                        b"of" => anyhow::ensure!(
                            inputs.insert(v.clone()),
                            "{stream}: two outputs of input {}",
                            String::from_utf8_lossy(v)
                        ),
                        _ => {}
                    }
                }
            }
            out.push(ms - t.context("an output without meta t")?);
            last_id = id;
        }
        start = format!("({last_id}");
    }
    anyhow::ensure!(
        inputs.len() == n && out.len() == n,
        "{stream}: {} outputs of {} distinct inputs for {n} inputs",
        out.len(),
        inputs.len()
    );
    Ok(out)
}

fn parse_entry(entry: Value) -> Option<(String, Vec<Vec<u8>>)> {
    let Value::Array(mut parts) = entry else {
        return None;
    };
    let Value::Array(fields) = parts.pop()? else {
        return None;
    };
    let Value::BulkString(id) = parts.pop()? else {
        return None;
    };
    let fields = fields
        .into_iter()
        .filter_map(|v| match v {
            Value::BulkString(b) => Some(b),
            _ => None,
        })
        .collect();
    Some((String::from_utf8(id).ok()?, fields))
}

/// The `p`-th percentile (nearest rank) of `values`; 0 when empty.
fn percentile(values: &[i64], p: f64) -> i64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
