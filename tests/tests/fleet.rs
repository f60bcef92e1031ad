//! A fleet of hosts (DESIGN.md, "A fleet of hosts"): several real `beehive run` processes on
//! one private redis-server share a group fairly, hand consumers over when a host dies, joins
//! or pauses, fence out a paused host that lost its consumers, retire the consumers above a
//! shrunk `instances` — and through all of it handle every event exactly once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use beehive_tests::{
    Beehive, RedisServer, TempDir, beehive_bin, component, engine, entries, field, free_port,
    pending, raw, sample, scrape, xlen,
};

const GROUP: &str = "handlers";
/// The group reads two streams: hand-overs and scale-in must hold on every one.
const STREAMS: [&str; 2] = ["events", "orders"];
const LOCK_TTL: Duration = Duration::from_secs(3);
const EVENTS: usize = 20_000;

/// This machine's name as the host computes it (`keys::host_id`: `<hostname>:<pid>`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// One `beehive run` host with its own config file (they differ only in the metrics port).
struct Host {
    label: String,
    cfg: PathBuf,
    port: u16,
    min_idle: Duration,
    process: Beehive,
}

impl Host {
    /// Starts a host of the group with `min-idle: 5s`: above the lock TTL, as the defaults
    /// are (60 s and 30 s), so what a lost host held is taken over with its consumer's lock
    /// (and fenced by its token), not reclaimed from under a lock that still holds.
    fn start(dir: &TempDir, server: &RedisServer, label: &str, instances: u32) -> Host {
        Self::start_with(dir, server, label, instances, Duration::from_secs(5))
    }

    fn start_with(
        dir: &TempDir,
        server: &RedisServer,
        label: &str,
        instances: u32,
        min_idle: Duration,
    ) -> Host {
        let port = free_port();
        let cfg = write_config(dir, server, label, port, instances, min_idle);
        let process = Beehive::run(&cfg, &[]);
        Host {
            label: label.to_string(),
            cfg,
            port,
            min_idle,
            process,
        }
    }

    /// Rewrites its config with another `instances` (for a SIGHUP).
    fn reconfigure(&self, dir: &TempDir, server: &RedisServer, instances: u32) {
        write_config(
            dir,
            server,
            &self.label,
            self.port,
            instances,
            self.min_idle,
        );
    }

    /// `<hostname>:<pid>`: its heartbeat's member and the owner in its lock values.
    fn id(&self) -> String {
        format!("{}:{}", hostname(), self.process.pid())
    }

    /// The last lines of its log, for failure messages.
    fn log_tail(&self) -> String {
        let log = plain(&self.process.log_text());
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- {} ({}) log, last lines ---\n{}",
            self.label,
            self.id(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

fn write_config(
    dir: &TempDir,
    server: &RedisServer,
    label: &str,
    port: u16,
    instances: u32,
    min_idle: Duration,
) -> PathBuf {
    dir.write(
        &format!("{label}.yaml"),
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [{GROUP}]\n    orders: [{GROUP}]\n    receipts: [auditors]\nmetrics:\n  addr: 127.0.0.1:{port}\nconsumers:\n  {GROUP}:\n    component: {}\n    publish: [receipts]\n    instances: {instances}\n    count: 50\n    block: 200ms\n    lock-ttl: {}s\n    min-idle: {}s\n    limits: {{ timeout: 1s }}\n",
            server.address(),
            component("beehive-example-echo").display(),
            LOCK_TTL.as_secs(),
            min_idle.as_secs(),
        ),
    )
}

/// `text` without ANSI colour codes (the host colours its log).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn logs(hosts: &[&Host]) -> String {
    hosts
        .iter()
        .map(|h| h.log_tail())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Who holds the lock of consumers `1..=max` (`<group>_consumer-<nr>`, value
/// `<host>/<random>`): consumer number → host.
async fn holders(server: &RedisServer, max: u32) -> BTreeMap<u32, String> {
    let keys: Vec<String> = (1..=max)
        .map(|nr| format!("{GROUP}_consumer-{nr}"))
        .collect();
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut raw(server).await)
        .await
        .expect("MGET the consumer locks");
    (1..=max)
        .zip(values)
        .filter_map(|(nr, value)| {
            let value = value?;
            let (host, _token) = value.rsplit_once('/').unwrap_or(("?", &value));
            Some((nr, host.to_string()))
        })
        .collect()
}

/// Host → the consumers it holds.
fn shares(holders: &BTreeMap<u32, String>) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (nr, host) in holders {
        out.entry(host.clone()).or_default().push(*nr);
    }
    out
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; how long it took, or
/// `None` on timeout (the caller fails with what it saw).
async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until consumers `1..=instances` are each held, `per_host` by every host of
/// `hosts` and by no other host, and none above `instances` is held; within `timeout` of
/// `since`. Returns how long it took from `since`.
async fn settle(
    server: &RedisServer,
    what: &str,
    hosts: &[&Host],
    instances: u32,
    per_host: usize,
    since: Instant,
    timeout: Duration,
) -> Duration {
    let ids: Vec<String> = hosts.iter().map(|h| h.id()).collect();
    let settled = |seen: &BTreeMap<u32, String>| {
        let tally = shares(seen);
        seen.keys().copied().eq(1..=instances)
            && tally.len() == ids.len()
            && ids
                .iter()
                .all(|id| tally.get(id).is_some_and(|c| c.len() == per_host))
    };
    let left = timeout.saturating_sub(since.elapsed());
    let took = wait_until(left, || async { settled(&holders(server, 12).await) }).await;
    match took {
        Some(_) => {
            let took = since.elapsed();
            eprintln!("{what}: settled after {took:.1?}");
            took
        }
        None => {
            let seen = shares(&holders(server, 12).await);
            panic!(
                "{what}: not settled within {timeout:?} (expected {per_host} consumers on each of {ids:?}); lock holders now: {seen:?}\n{}",
                logs(hosts)
            );
        }
    }
}

/// Consumers of the group on `stream` (`XINFO CONSUMERS`): name → pending.
async fn consumers_on(server: &RedisServer, stream: &str) -> BTreeMap<String, u64> {
    let reply: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(GROUP)
        .query_async(&mut raw(server).await)
        .await;
    let Ok(redis::Value::Array(consumers)) = reply else {
        return BTreeMap::new();
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    };
    consumers
        .iter()
        .filter_map(|c| {
            let redis::Value::Array(flat) = c else {
                return None;
            };
            let mut name = None;
            let mut pending = 0;
            for kv in flat.chunks(2) {
                match (text(&kv[0]).as_str(), kv.get(1)) {
                    ("name", Some(v)) => name = Some(text(v)),
                    ("pending", Some(v)) => pending = text(v).parse().unwrap_or(0),
                    _ => {}
                }
            }
            Some((name?, pending))
        })
        .collect()
}

/// `beehive <args> -c <cfg>`: its stdout (fails the test on a non-zero exit).
fn beehive(args: &[&str], cfg: &std::path::Path) -> String {
    let out = Command::new(beehive_bin())
        .args(args)
        .arg("-c")
        .arg(cfg)
        .env_remove("RUST_LOG")
        .output()
        .expect("run beehive");
    assert!(
        out.status.success(),
        "beehive {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// From `beehive status --json`: per stream of the group, consumer name → host (null
/// when not running), and the fleet (host → heartbeat age in ms).
type StatusView = BTreeMap<String, (BTreeMap<String, Option<String>>, BTreeMap<String, u64>)>;

fn status_view(cfg: &std::path::Path) -> StatusView {
    let json: serde_json::Value =
        serde_json::from_str(&beehive(&["status", "--json"], cfg)).expect("status --json");
    let mut view = StatusView::new();
    for stream in json["streams"].as_array().expect("streams") {
        let name = stream["name"].as_str().unwrap_or_default();
        if !STREAMS.contains(&name) {
            continue;
        }
        for group in stream["groups"].as_array().expect("groups") {
            if group["name"] != GROUP {
                continue;
            }
            let consumers = group["consumers"]
                .as_array()
                .expect("consumers")
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["host"].as_str().map(String::from),
                    )
                })
                .collect();
            let fleet = group["fleet"]
                .as_array()
                .expect("fleet")
                .iter()
                .map(|h| {
                    (
                        h["host"].as_str().unwrap_or_default().to_string(),
                        h["heartbeat_age"].as_u64().expect("heartbeat_age in ms"),
                    )
                })
                .collect();
            view.insert(name.to_string(), (consumers, fleet));
        }
    }
    view
}

/// The IDs (`"<stream> <id>"`) pending for `consumer` of the group on every stream.
async fn pending_of(server: &RedisServer, consumer: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for stream in STREAMS {
        let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(100_000)
            .arg(consumer)
            .query_async(&mut raw(server).await)
            .await
            .unwrap_or_default();
        ids.extend(rows.into_iter().map(|(id, ..)| format!("{stream} {id}")));
    }
    ids
}

/// Entries of `receipts` from `start` (an XRANGE bound) as `(id, fields)`; the body
/// (msgpack) is not text, so fields stay bytes until decoded lossily.
async fn receipt_entries(
    server: &RedisServer,
    start: &str,
    count: Option<usize>,
    reverse: bool,
) -> Vec<(String, Vec<(String, String)>)> {
    let mut cmd = redis::cmd(if reverse { "XREVRANGE" } else { "XRANGE" });
    if reverse {
        cmd.arg("receipts").arg("+").arg(start);
    } else {
        cmd.arg("receipts").arg(start).arg("+");
    }
    if let Some(count) = count {
        cmd.arg("COUNT").arg(count);
    }
    let raw_entries: Vec<(String, Vec<Vec<u8>>)> = cmd
        .query_async(&mut raw(server).await)
        .await
        .expect("XRANGE receipts");
    raw_entries
        .into_iter()
        .map(|(id, flat)| {
            let fields = flat
                .chunks(2)
                .map(|kv| {
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    (
                        text(&kv[0]),
                        kv.get(1).map_or_else(String::new, |v| text(v)),
                    )
                })
                .collect();
            (id, fields)
        })
        .collect()
}

/// The ID of the last receipt ("0-0" when none).
async fn last_receipt(server: &RedisServer) -> String {
    receipt_entries(server, "-", Some(1), true)
        .await
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_string(), |(id, _)| id)
}

/// The receipts after receipt `mark` as `"<stream> <source id>"`, sorted.
async fn receipts_after(server: &RedisServer, mark: &str) -> Vec<String> {
    let mut of: Vec<String> = receipt_entries(server, &format!("({mark}"), None, false)
        .await
        .iter()
        .filter_map(|(_, f)| Some(format!("{} {}", field(f, "from")?, field(f, "echo-of")?)))
        .collect();
    of.sort();
    of
}

/// What the background publisher has written: `"<stream> <id>"` per event.
struct Publisher {
    /// It publishes up to this many events (raised phase by phase, so events flow in each).
    allowed: Arc<AtomicUsize>,
    published: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Publisher {
    /// Publishes 40 events every 40 ms (1,000/s), alternating the group's streams, each with
    /// `echo-to=receipts` and `from=<stream>` so a receipt names the event it is for.
    fn start(engine: beehive::Engine) -> Publisher {
        let allowed = Arc::new(AtomicUsize::new(0));
        let published = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (allowed, published) = (allowed.clone(), published.clone());
            async move {
                let broker = engine.event_broker();
                let mut ids = Vec::with_capacity(EVENTS);
                let mut tick = tokio::time::interval(Duration::from_millis(40));
                while ids.len() < EVENTS {
                    tick.tick().await;
                    let n = 40.min(allowed.load(Ordering::SeqCst).saturating_sub(ids.len()));
                    if n == 0 {
                        continue;
                    }
                    let mut flusher = broker.new_flusher();
                    let mut streams = Vec::with_capacity(n);
                    for i in 0..n {
                        let stream = STREAMS[(ids.len() + i) % STREAMS.len()];
                        flusher
                            .publish(
                                stream,
                                &(ids.len() + i),
                                &[("echo-to", "receipts"), ("from", stream)],
                            )
                            .unwrap();
                        streams.push(stream);
                    }
                    let written = flusher.flush().await.expect("publish");
                    ids.extend(
                        streams
                            .into_iter()
                            .zip(written)
                            .map(|(stream, id)| format!("{stream} {id}")),
                    );
                    published.store(ids.len(), Ordering::SeqCst);
                }
                ids
            }
        });
        Publisher {
            allowed,
            published,
            task,
        }
    }

    fn allow(&self, total: usize) {
        self.allowed.store(total.min(EVENTS), Ordering::SeqCst);
    }

    fn published(&self) -> usize {
        self.published.load(Ordering::SeqCst)
    }
}

/// Prints how far the events got, for the phase just done.
async fn progress(server: &RedisServer, publisher: &Publisher, phase: &str) {
    let receipts = xlen(server, "receipts").await;
    eprintln!(
        "{phase}: {} published, {receipts} receipts",
        publisher.published()
    );
}

/// Every receipt as `"<stream> <source id>"`, sorted, duplicates kept.
async fn receipts(server: &RedisServer) -> Vec<String> {
    let mut of: Vec<String> = entries(server, "receipts")
        .await
        .iter()
        .map(|(id, f)| {
            format!(
                "{} {}",
                field(f, "from").unwrap_or_else(|| panic!("receipt {id} has no from: {f:?}")),
                field(f, "echo-of").unwrap_or_else(|| panic!("receipt {id} has no echo-of: {f:?}"))
            )
        })
        .collect();
    of.sort();
    of
}

/// Three hosts share `instances: 6` two by two; a killed host's consumers go to the other
/// two and come back when it is started again; a host paused past its lock TTL loses its
/// consumers and commits nothing for them once resumed; `instances` 6 → 3 by SIGHUP retires
/// consumers 4–6 from every stream of the group. 20,000 events flow through all of it and
/// each gets exactly one receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_hands_over_fences_and_scales_in_with_every_event_once() {
    let server = beehive_tests::redis();
    let dir = TempDir::new();
    let engine = engine(
        &server,
        &[
            ("events", &[GROUP]),
            ("orders", &[GROUP]),
            ("receipts", &["auditors"]),
        ],
    )
    .await;
    // Built before the clock of any phase starts.
    component("beehive-example-echo");
    let _ = beehive_bin();
    let test_start = Instant::now();
    let publisher = Publisher::start(engine.clone());
    publisher.allow(4_000);

    // 1. Three hosts, instances: 6: two consumers each.
    let a = Host::start(&dir, &server, "a", 6);
    let b = Host::start(&dir, &server, "b", 6);
    let c = Host::start(&dir, &server, "c", 6);
    let last_start = Instant::now();
    settle(
        &server,
        "three hosts",
        &[&a, &b, &c],
        6,
        2,
        last_start,
        Duration::from_secs(10),
    )
    .await;

    // `status --json` names the host of every consumer on every stream, and the fleet.
    let ids = [a.id(), b.id(), c.id()];
    let last = std::cell::RefCell::new(StatusView::new());
    let shown = wait_until(Duration::from_secs(10), || {
        let (last, ids, cfg) = (&last, &ids, &a.cfg);
        async move {
            let view = status_view(cfg);
            let fine = view.len() == STREAMS.len()
                && view.values().all(|(consumers, fleet)| {
                    let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
                    for host in consumers.values().flatten() {
                        *per_host.entry(host.as_str()).or_default() += 1;
                    }
                    consumers.len() == 6
                        && per_host.len() == 3
                        && ids.iter().all(|id| per_host.get(id.as_str()) == Some(&2))
                        && ids.iter().all(|id| {
                            fleet
                                .get(id)
                                .is_some_and(|age| *age < LOCK_TTL.as_millis() as u64)
                        })
                });
            *last.borrow_mut() = view;
            fine
        }
    })
    .await;
    assert!(
        shown.is_some(),
        "status --json: every consumer on every stream with its host, 2 per host, and the three hosts' fresh heartbeats; got {:#?}\nhosts {ids:?}",
        last.borrow()
    );
    let text = beehive(&["status"], &b.cfg);
    for id in &ids {
        assert!(
            text.contains(&format!("on {id}")),
            "status names host {id} after its consumers:\n{text}"
        );
    }
    let fleet_line = text
        .lines()
        .find(|l| l.contains("fleet:"))
        .unwrap_or_else(|| panic!("status shows a fleet: line:\n{text}"));
    assert!(
        ids.iter().all(|id| fleet_line.contains(id.as_str())),
        "the fleet line names every host: {fleet_line}"
    );
    // Each host reports the consumers it runs.
    let running = "beehive_consumers_running{group=\"handlers\"}";
    for host in [&a, &b, &c] {
        let gauge = wait_until(Duration::from_secs(10), || async {
            sample(&scrape(host.port), running) == Some(2.0)
        })
        .await;
        assert!(
            gauge.is_some(),
            "{running} 2 on {}:\n{}",
            host.label,
            scrape(host.port)
        );
    }
    progress(&server, &publisher, "three hosts").await;

    // 2. kill -9 one: the two others run three each once its locks expire; a new host
    // started in its place gets two back.
    publisher.allow(8_000);
    let mut c = c;
    c.process.signal("KILL");
    c.process.wait(Duration::from_secs(5));
    let killed = Instant::now();
    settle(
        &server,
        "kill -9 of c",
        &[&a, &b],
        6,
        3,
        killed,
        LOCK_TTL + Duration::from_secs(5),
    )
    .await;
    progress(&server, &publisher, "c killed").await;
    publisher.allow(11_000);
    let dead_c = c;
    let c = Host::start(&dir, &server, "c2", 6);
    let restarted = Instant::now();
    settle(
        &server,
        "c started again",
        &[&a, &b, &c],
        6,
        2,
        restarted,
        Duration::from_secs(10),
    )
    .await;
    progress(&server, &publisher, "c back").await;

    // 3. SIGSTOP one while events flow, past its lock TTL: the others take its consumers
    // and handle what Redis had delivered to it; after SIGCONT it commits nothing for the
    // consumers it lost (each of those entries keeps exactly one receipt), and the fleet
    // settles back to two each.
    publisher.allow(15_000);
    let a_consumers: Vec<u32> = shares(&holders(&server, 6).await)
        .remove(&a.id())
        .unwrap_or_default();
    let mark = last_receipt(&server).await;
    a.process.signal("STOP");
    let stopped = Instant::now();
    let published_at_stop = publisher.published();
    // What Redis delivered to the paused host's consumers (the batch it handles, the reads
    // it has in flight, which Redis answers while it sleeps) and it did not commit: what
    // it would commit once resumed, were it not fenced.
    let inflight = std::cell::RefCell::new(Vec::new());
    wait_until(Duration::from_millis(1500), || async {
        let mut ids = Vec::new();
        for nr in &a_consumers {
            ids.extend(pending_of(&server, &format!("consumer-{nr}")).await);
        }
        let some = !ids.is_empty();
        *inflight.borrow_mut() = ids;
        some
    })
    .await;
    let inflight = inflight.into_inner();
    assert!(
        !inflight.is_empty(),
        "the paused host's consumers {a_consumers:?} hold uncommitted deliveries (else nothing tests the fencing)"
    );
    settle(
        &server,
        "a paused",
        &[&b, &c],
        6,
        3,
        stopped,
        LOCK_TTL + Duration::from_secs(5),
    )
    .await;
    // The survivors work a's consumers while it sleeps: events keep flowing, and what a
    // held gets its receipt from them.
    let late = std::cell::RefCell::new(Vec::new());
    let flowed = wait_until(Duration::from_secs(10), || async {
        let handled = receipts_after(&server, &mark).await;
        let missing: Vec<String> = inflight
            .iter()
            .filter(|id| handled.binary_search(id).is_err())
            .cloned()
            .collect();
        let done = missing.is_empty()
            && publisher.published() > published_at_stop + 200
            && stopped.elapsed() > LOCK_TTL + Duration::from_secs(1);
        *late.borrow_mut() = missing;
        done
    })
    .await;
    assert!(
        flowed.is_some(),
        "events flow while a is paused (published {published_at_stop} → {}) and the survivors handle the {} entries a held; not handled: {:?}\n{}",
        publisher.published(),
        inflight.len(),
        late.borrow(),
        logs(&[&b, &c])
    );
    eprintln!(
        "a paused for {:.1?}; the {} entries delivered to its consumers {a_consumers:?} were handled by the others",
        stopped.elapsed(),
        inflight.len()
    );
    a.process.signal("CONT");
    let resumed = Instant::now();
    settle(
        &server,
        "a resumed",
        &[&a, &b, &c],
        6,
        2,
        resumed,
        Duration::from_secs(10),
    )
    .await;
    progress(&server, &publisher, "a resumed").await;

    // 4. instances 6 → 3: rewrite every host's config and SIGHUP it. Consumers 4–6 end with
    // nothing pending and are gone from every stream of the group; 1–3 remain, one on each
    // host.
    publisher.allow(18_000);
    for host in [&a, &b, &c] {
        host.reconfigure(&dir, &server, 3);
    }
    for host in [&a, &b, &c] {
        host.process.signal("HUP");
    }
    let reloaded = Instant::now();
    let retired = |seen: &BTreeMap<String, BTreeMap<String, u64>>| {
        let names = ["consumer-1", "consumer-2", "consumer-3"];
        seen.len() == STREAMS.len()
            && seen
                .values()
                .all(|on| on.keys().map(String::as_str).eq(names.iter().copied()))
    };
    let seen = std::cell::RefCell::new(BTreeMap::new());
    let done = wait_until(Duration::from_secs(20), || {
        let (server, seen) = (&server, &seen);
        async move {
            let mut now = BTreeMap::new();
            for stream in STREAMS {
                now.insert(stream.to_string(), consumers_on(server, stream).await);
            }
            let fine = retired(&now);
            *seen.borrow_mut() = now;
            fine
        }
    })
    .await;
    assert!(
        done.is_some(),
        "consumers 4–6 retired from every stream, 1–3 kept; XINFO CONSUMERS now: {:?}\n{}",
        seen.borrow(),
        logs(&[&a, &b, &c])
    );
    eprintln!(
        "instances 6 → 3: consumers 4–6 retired after {:.1?}",
        reloaded.elapsed()
    );
    settle(
        &server,
        "instances 3",
        &[&a, &b, &c],
        3,
        1,
        reloaded,
        Duration::from_secs(20),
    )
    .await;
    progress(&server, &publisher, "instances 3").await;

    // 5. The rest of the events; every one gets exactly one receipt.
    publisher.allow(EVENTS);
    let mut published = publisher.task.await.expect("the publisher");
    let drained = wait_until(Duration::from_secs(60), || async {
        xlen(&server, "receipts").await >= EVENTS as u64
            && pending(&server, "events", GROUP).await == 0
            && pending(&server, "orders", GROUP).await == 0
    })
    .await;
    let got = receipts(&server).await;
    published.sort();
    let mut distinct = got.clone();
    distinct.dedup();
    let twice: Vec<&String> = got
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| &w[0])
        .collect();
    let missing: Vec<&String> = published
        .iter()
        .filter(|id| distinct.binary_search(id).is_err())
        .collect();
    assert!(
        drained.is_some() && twice.is_empty() && missing.is_empty() && got.len() == EVENTS,
        "exactly one receipt per event: {} receipts for {} events, {} duplicated (first {:?}), {} missing (first {:?})\n{}",
        got.len(),
        published.len(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        logs(&[&a, &b, &c, &dead_c])
    );
    assert_eq!(distinct, published);
    for id in &inflight {
        assert_eq!(
            got.iter().filter(|r| *r == id).count(),
            1,
            "{id}, delivered to a before its pause, has exactly one receipt"
        );
    }
    assert_eq!(xlen(&server, "handlers-dead-letter").await, 0);
    // Consumers 4–6 never came back.
    for stream in STREAMS {
        let on = consumers_on(&server, stream).await;
        assert!(
            on.keys()
                .map(String::as_str)
                .eq(["consumer-1", "consumer-2", "consumer-3"]),
            "{stream}: {on:?}"
        );
    }
    eprintln!("whole test: {:.1?}", test_start.elapsed());
}

/// Scale-in after a host died: consumer-5 (of a fleet that ran `instances: 6`) holds
/// entries read by a host that died with its lock. Two hosts with `instances: 3` leave it
/// alone while that lock lives, then retire it: its pending entries go to its heir
/// (consumer-2) and it is deleted from every stream only once it holds nothing; every
/// event gets exactly one receipt. `min-idle: 10s` keeps the idle reclaim out of the way,
/// so only the retirement moves those entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hosts_consumer_above_instances_hands_its_pending_to_its_heir_before_it_goes() {
    let server = beehive_tests::redis();
    let dir = TempDir::new();
    let engine = engine(
        &server,
        &[
            ("events", &[GROUP]),
            ("orders", &[GROUP]),
            ("receipts", &["auditors"]),
        ],
    )
    .await;
    component("beehive-example-echo");
    let _ = beehive_bin();
    let broker = engine.event_broker();
    let mut flusher = broker.new_flusher();
    let mut streams = Vec::new();
    for i in 0..300 {
        let stream = STREAMS[i % STREAMS.len()];
        flusher
            .publish(stream, &i, &[("echo-to", "receipts"), ("from", stream)])
            .unwrap();
        streams.push(stream);
    }
    let written = flusher.flush().await.unwrap();
    let mut published: Vec<String> = streams
        .iter()
        .zip(&written)
        .map(|(stream, id)| format!("{stream} {id}"))
        .collect();
    published.sort();

    // The dead host: it read 20 entries of each stream as consumer-5 and still holds the
    // lock for one more lock-ttl.
    let mut con = raw(&server).await;
    for stream in STREAMS {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("consumer-5")
        .arg("COUNT")
        .arg(20)
        .arg("STREAMS")
        .arg(&STREAMS)
        .arg(">")
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    let held = pending_of(&server, "consumer-5").await;
    assert_eq!(held.len(), 40);
    let dead_lock = "gone-host:1/token";
    let _: () = redis::cmd("SET")
        .arg(format!("{GROUP}_consumer-5"))
        .arg(dead_lock)
        .arg("PX")
        .arg(LOCK_TTL.as_millis() as u64)
        .query_async(&mut con)
        .await
        .unwrap();

    let min_idle = Duration::from_secs(10);
    let a = Host::start_with(&dir, &server, "a", 3, min_idle);
    let b = Host::start_with(&dir, &server, "b", 3, min_idle);
    // While the dead host's lock lives, consumer-5 keeps what it holds.
    let lock_gone = wait_until(LOCK_TTL + Duration::from_secs(2), || async {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("{GROUP}_consumer-5"))
            .query_async(&mut raw(&server).await)
            .await
            .unwrap();
        if value.as_deref() == Some(dead_lock) {
            let still = pending_of(&server, "consumer-5").await;
            assert_eq!(
                still.len(),
                40,
                "consumer-5 is left alone while another host holds its lock\n{}",
                logs(&[&a, &b])
            );
            false
        } else {
            true
        }
    })
    .await;
    assert!(lock_gone.is_some(), "the dead host's lock expires");

    // Then it is retired: gone from every stream, its entries handled once.
    let seen = std::cell::RefCell::new(BTreeMap::new());
    let retired = wait_until(Duration::from_secs(20), || async {
        let mut now = BTreeMap::new();
        for stream in STREAMS {
            now.insert(stream, consumers_on(&server, stream).await);
        }
        let gone = now.values().all(|on| !on.contains_key("consumer-5"));
        *seen.borrow_mut() = now;
        gone && xlen(&server, "receipts").await >= published.len() as u64
            && pending(&server, "events", GROUP).await == 0
            && pending(&server, "orders", GROUP).await == 0
    })
    .await;
    let receipts_now = xlen(&server, "receipts").await;
    assert!(
        retired.is_some(),
        "consumer-5 retired and every event handled; XINFO CONSUMERS: {:?}, receipts {receipts_now}\n{}",
        seen.borrow(),
        logs(&[&a, &b])
    );
    assert_eq!(receipts(&server).await, published, "one receipt per event");
    let log = plain(&format!(
        "{}\n{}",
        a.process.log_text(),
        b.process.log_text()
    ));
    let retirements: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("retired a consumer above instances"))
        .collect();
    // (Two hosts that both think they are first may both log it; only one moves anything.)
    let moved: u64 = retirements
        .iter()
        .filter_map(|l| {
            l.split("moved=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        !retirements.is_empty()
            && retirements
                .iter()
                .all(|l| l.contains("consumer=consumer-5") && l.contains("heir=2"))
            && moved == 40,
        "consumer-5 retired, its 40 entries moved to consumer-2: {retirements:#?}"
    );
    assert_eq!(xlen(&server, "handlers-dead-letter").await, 0);
}
