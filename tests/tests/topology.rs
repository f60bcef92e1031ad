//! Topology: commit domains, the outbox and the relay (issue 15), on two private
//! redis-servers with the real binary and the echo example; and entries deleted while
//! pending, dead-lettered on the reclaim and `claim` paths.
//!
//! The own-pending-pass path (ID `0`) is covered with the library by
//! `library/consume.rs::an_entry_deleted_while_pending_is_dead_lettered_not_crash_looped`.
//! Under `beehive run` (with its metric) it is checked in
//! `a_stopped_target_pool_delays_outputs_but_not_consumption_and_loses_or_reorders_none`:
//! there the host's first pending pass meets it (its `XAUTOCLAIM` reports a deleted entry
//! whatever its idle time, so on Redis 7 that pass's reclaim step catches it first).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beehive::Event;
use beehive_tests::{
    Beehive, RedisServer, TempDir, beehive_bin, component, drain, engine, eventually, field,
    free_port, pending, raw, redis, sample, scrape,
};
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

/// The group of the README's example config, its outbox and its relay lock.
const GROUP: &str = "read-group-ab";
const OUTBOX: &str = "beehive:outbox:read-group-ab";
const RELAY_LOCK: &str = "beehive:relay-lock:read-group-ab";
const DEAD_LETTER: &str = "read-group-ab-dead-letter";
/// The db of pool `second`, as in the README.
const SECOND_DB: u8 = 3;

/// The README's two-pool shape: pool `default` (db 0 on `first`) with `stream-a` and
/// `stream-b` read by `read-group-ab`, pool `second` (db 3 on `second`) with `stream-c`
/// and `second_streams`; the echo component runs `read-group-ab` with `settings` (which
/// must say `publish:`), and `top` goes at the top level (a `metrics:` section).
fn two_pools(
    dir: &TempDir,
    first: &RedisServer,
    second: &RedisServer,
    second_streams: &str,
    settings: &str,
    top: &str,
) -> PathBuf {
    dir.write(
        "beehive.yaml",
        &format!(
            "default:
  redis: {}:0
  streams:
    stream-a: [read-group-a, read-group-ab]
    stream-b: [read-group-ab]
second:
  redis: {}:{SECOND_DB}
  streams:
    stream-c: [read-group-c]
{second_streams}{top}consumers:
  read-group-ab:
    component: {}
    max-deliveries: 5
{settings}",
            first.address(),
            second.address(),
            component("beehive-example-echo").display()
        ),
    )
}

/// The `echo-of` of every entry of `stream` in `db`, in stream order (duplicates kept).
async fn echoes(server: &RedisServer, db: u8, stream: &str) -> Vec<String> {
    beehive_tests::entries_db(server, db, stream)
        .await
        .iter()
        .map(|(id, f)| {
            field(f, "echo-of")
                .unwrap_or_else(|| panic!("{stream} entry {id} has no echo-of: {f:?}"))
                .to_string()
        })
        .collect()
}

/// `XLEN` of `stream` in `db` (0 when it does not exist).
async fn xlen_db(server: &RedisServer, db: u8, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut beehive_tests::raw_db(server, db).await)
        .await
        .expect("XLEN")
}

/// Every key of `db`, sorted.
async fn keys_db(server: &RedisServer, db: u8) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut beehive_tests::raw_db(server, db).await)
        .await
        .expect("KEYS");
    keys.sort();
    keys
}

/// The dbs of `server` that hold keys (`INFO keyspace`).
async fn dbs_with_keys(server: &RedisServer) -> Vec<String> {
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut raw(server).await)
        .await
        .expect("INFO keyspace");
    info.lines()
        .filter_map(|l| l.split_once(':').map(|(db, _)| db.to_string()))
        .filter(|db| db.starts_with("db"))
        .collect()
}

/// Publishes `n` meta-only events to `stream` (`XADD`, pipelines of 500), event `i` with
/// the fields `fields(i)`; returns their IDs in order.
async fn xadd_many(
    con: &mut MultiplexedConnection,
    stream: &str,
    n: usize,
    fields: impl Fn(usize) -> Vec<(String, String)>,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let mut pipe = redis::pipe();
        for i in ids.len()..n.min(ids.len() + 500) {
            let cmd = pipe.cmd("XADD").arg(stream).arg("*");
            for (k, v) in fields(i) {
                cmd.arg(k).arg(v);
            }
        }
        let batch: Vec<String> = pipe.query_async(con).await.expect("XADD");
        ids.extend(batch);
    }
    ids
}

/// Fields of an event the echo component republishes to `to`.
fn echo_to(to: &str, i: usize) -> Vec<(String, String)> {
    vec![
        ("echo-to".to_string(), to.to_string()),
        ("n".to_string(), i.to_string()),
    ]
}

/// Polls `check` until it returns true (`true`) or `timeout` passes (`false`), for
/// conditions whose failure needs more context than [`eventually`] gives.
async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The host's log without its per-event lines: warnings and errors.
fn warnings(host: &Beehive) -> String {
    host.log_text()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `beehive <args> -c <config>`: (exit code, stdout, stderr).
fn beehive(args: &[&str], config: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(beehive_bin())
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .expect("run beehive");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Duplicated and lost source IDs among `echoed`, against `sources`.
fn duplicated_and_lost(echoed: &[String], sources: &[String]) -> (Vec<String>, Vec<String>) {
    let mut seen = BTreeSet::new();
    let duplicated: Vec<String> = echoed
        .iter()
        .filter(|id| !seen.insert(id.as_str()))
        .cloned()
        .collect();
    let lost: Vec<String> = sources
        .iter()
        .filter(|id| !seen.contains(id.as_str()))
        .cloned()
        .collect();
    (duplicated, lost)
}

#[tokio::test]
async fn the_readme_two_pool_config_writes_each_output_once_to_its_own_pool_and_nothing_stray() {
    let first = redis();
    let second = redis();
    let dir = TempDir::new();
    let cfg = two_pools(
        &dir,
        &first,
        &second,
        "",
        "    count: 100\n    instances: 2\n    block: 5s\n    publish: [stream-c]\n    min-idle: 60s\n",
        "",
    );

    // `beehive validate` names each group's domains and warns about the crossing.
    let (code, stdout, stderr) = beehive(&["validate"], &cfg);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "consumers.read-group-ab: reads pool default; writes stream-c (pool second), read-group-ab-dead-letter (pool default)"
        ),
        "the domains line:\n{stdout}"
    );
    assert!(
        stderr.contains("warning: consumers.read-group-ab: stream-c lives in pool second"),
        "the crossing warning:\n{stderr}"
    );

    // 500 events over both of the group's streams; IDs of two streams may coincide, so the
    // source stream rides along in the metadata (the echo copies it).
    let mut con = raw(&first).await;
    let mut sources = BTreeSet::new();
    for (stream, n) in [("stream-a", 300), ("stream-b", 200)] {
        let ids = xadd_many(&mut con, stream, n, |i| {
            let mut f = echo_to("stream-c", i);
            f.push(("src".into(), stream.into()));
            f
        })
        .await;
        sources.extend(ids.into_iter().map(|id| (stream.to_string(), id)));
    }
    assert_eq!(sources.len(), 500);

    let log = drain(&cfg);

    let landed = beehive_tests::entries_db(&second, SECOND_DB, "stream-c").await;
    let mut echoed = BTreeSet::new();
    for (id, f) in &landed {
        let key = (
            field(f, "src").unwrap_or_default().to_string(),
            field(f, "echo-of").unwrap_or_default().to_string(),
        );
        assert!(
            echoed.insert(key.clone()),
            "{key:?} landed twice (second time as {id})"
        );
    }
    assert_eq!(landed.len(), 500, "one output per event:\n{log}");
    assert_eq!(echoed, sources, "every source event echoed, once");
    assert_eq!(xlen_db(&second, SECOND_DB, OUTBOX).await, 0);

    // Pool `default` holds its own streams and Beehive's keys only: no stray stream-c.
    assert_eq!(xlen_db(&first, 0, OUTBOX).await, 0, "the outbox is drained");
    let keys = keys_db(&first, 0).await;
    assert!(!keys.contains(&"stream-c".to_string()), "stray: {keys:?}");
    let allowed = |k: &str| {
        ["stream-a", "stream-b"].contains(&k)
            || k.starts_with("beehive:")
            || k.starts_with("read-group-ab_consumer-")
            || k.ends_with("-dead-letter")
    };
    let stray: Vec<&String> = keys.iter().filter(|k| !allowed(k)).collect();
    assert!(stray.is_empty(), "keys written on default: {stray:?}");
    assert_eq!(dbs_with_keys(&first).await, ["db0"], "{keys:?}");
    // Pool `second` got stream-c (and its dedupe marks) in its own db, nothing else.
    let second_keys = keys_db(&second, SECOND_DB).await;
    assert!(
        second_keys
            .iter()
            .all(|k| k == "stream-c" || k.starts_with("beehive:")),
        "{second_keys:?}"
    );
    assert!(
        second_keys.contains(&"beehive:relayed:{stream-c}".to_string()),
        "{second_keys:?}"
    );
    assert_eq!(dbs_with_keys(&second).await, ["db3"]);
    // Nothing was dead-lettered.
    assert_eq!(xlen_db(&first, 0, DEAD_LETTER).await, 0, "{log}");
}

/// `CLIENT KILL TYPE normal SKIPME yes`: every client connection but the caller's.
async fn kill_clients(con: &mut MultiplexedConnection) -> i64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(con)
        .await
        .expect("CLIENT KILL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_killed_connections_neither_lose_nor_duplicate_a_relayed_output() {
    const EVENTS: usize = 5_000;
    const KILLS: usize = 10;
    /// Publishing: TICKS ticks of EVENTS / TICKS events, one every TICK.
    const TICKS: usize = 200;
    const TICK: Duration = Duration::from_millis(40);
    let mut rng = beehive_tests::Rng::from_clock("topology chaos");
    let seed = rng.seed();
    let first = redis();
    let second = redis();
    let dir = TempDir::new();
    let cfg = two_pools(
        &dir,
        &first,
        &second,
        "",
        "    count: 50\n    instances: 2\n    block: 100ms\n    publish: [stream-c]\n    min-idle: 3s\n    lock-ttl: 1s\n    limits: { timeout: 1s }\n",
        "",
    );
    let args = ["--no-watch", "--gc-interval", "1h"];
    let mut host = Beehive::run(&cfg, &args);

    // One kill -9 at a random tick of each tenth of the publishing; CLIENT KILL on both
    // servers (the host's shared, reading, read-ahead and relay connections) at 4 other
    // random ticks. Publishing and the monkey share their connection, spared by SKIPME.
    let segment = TICKS / KILLS;
    let kill_ticks: BTreeSet<usize> = (0..KILLS)
        .map(|k| k * segment + 2 + rng.below(segment as u64 - 2) as usize)
        .collect();
    let mut client_kill_ticks = BTreeSet::new();
    while client_kill_ticks.len() < 4 {
        let t = 5 + rng.below(TICKS as u64 - 5) as usize;
        if !kill_ticks.contains(&t) {
            client_kill_ticks.insert(t);
        }
    }
    let mut source = raw(&first).await;
    let mut target = beehive_tests::raw_db(&second, SECOND_DB).await;
    let mut sources: Vec<String> = Vec::with_capacity(EVENTS);
    let (mut kills, mut killed_connections) = (0, 0);
    let mut tick = tokio::time::interval(TICK);
    let started = Instant::now();
    for t in 0..TICKS {
        tick.tick().await;
        let base = sources.len();
        sources.extend(
            xadd_many(&mut source, "stream-a", EVENTS / TICKS, |i| {
                echo_to("stream-c", base + i)
            })
            .await,
        );
        if kill_ticks.contains(&t) {
            host.signal("KILL");
            host.wait(Duration::from_secs(10));
            kills += 1;
            if kills < KILLS {
                // The dead host's relay lock would expire within its 10 s TTL; delete it, as
                // if that time had passed, so the next host relays at once and the next kill
                // can land in the middle of a relay step. The last kill waits for the TTL.
                let _: i64 = redis::cmd("DEL")
                    .arg(RELAY_LOCK)
                    .query_async(&mut source)
                    .await
                    .unwrap();
            }
            host = Beehive::run(&cfg, &args);
        }
        if client_kill_ticks.contains(&t) {
            killed_connections += kill_clients(&mut source).await;
            killed_connections += kill_clients(&mut target).await;
        }
    }
    eprintln!(
        "topology chaos: published {} events in {:?}, {kills} kill -9, {killed_connections} connections killed",
        sources.len(),
        started.elapsed()
    );
    assert_eq!(sources.len(), EVENTS);

    eventually(
        "every output in stream-c, nothing pending, the outbox empty",
        Duration::from_secs(90),
        || async {
            xlen_db(&second, SECOND_DB, "stream-c").await >= EVENTS as u64
                && pending(&first, "stream-a", GROUP).await == 0
                && xlen_db(&first, 0, OUTBOX).await == 0
        },
    )
    .await;
    eprintln!("topology chaos: all relayed after {:?}", started.elapsed());
    let echoed = echoes(&second, SECOND_DB, "stream-c").await;
    let (duplicated, lost) = duplicated_and_lost(&echoed, &sources);
    assert!(
        duplicated.is_empty() && lost.is_empty(),
        "exactly one output per event: {} duplicated (first {:?}), {} lost (first {:?}); seed {seed}\nlog of the last host:\n{}",
        duplicated.len(),
        duplicated.first(),
        lost.len(),
        lost.first(),
        host.log_text()
    );
    assert_eq!(echoed.len(), EVENTS);
    assert_eq!(xlen_db(&first, 0, DEAD_LETTER).await, 0, "nothing refused");
    assert_eq!(xlen_db(&first, 0, "stream-c").await, 0, "nothing stray");
}

/// The XPENDING rows of `group` on `stream` for `consumer` (all consumers when `None`):
/// `(id, consumer, idle ms, deliveries)`.
async fn pending_rows(
    server: &RedisServer,
    stream: &str,
    group: &str,
    consumer: Option<&str>,
) -> Vec<(String, String, u64, u64)> {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream).arg(group).arg("-").arg("+").arg(10_000);
    if let Some(consumer) = consumer {
        cmd.arg(consumer);
    }
    cmd.query_async(&mut raw(server).await)
        .await
        .expect("XPENDING")
}

/// Leaves every entry of `stream-a` pending on `consumer-<nr>` of `group` (a handler that
/// fails), in drain mode.
async fn leave_pending(broker: &beehive::EventBroker, group: &str, nr: u32) {
    let mut consumer = broker.consumer(group).unwrap();
    consumer.disable_loop();
    assert!(
        consumer
            .consume_many(CancellationToken::new(), nr, 100, |_| async {
                anyhow::bail!("keep pending")
            })
            .await
            .unwrap()
    );
}

/// Asserts that `dead_letter` holds exactly one entry: `id` of `stream-a`, reason
/// `deleted...`.
async fn assert_dead_lettered_as_deleted(server: &RedisServer, dead_letter: &str, id: &str) {
    let dead = beehive_tests::entries(server, dead_letter).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let fields = &dead[0].1;
    assert_eq!(field(fields, "beehive.origin-id"), Some(id), "{fields:?}");
    assert_eq!(
        field(fields, "beehive.origin-stream"),
        Some("stream-a"),
        "{fields:?}"
    );
    let reason = field(fields, "beehive.reason").unwrap_or_default();
    assert!(reason.starts_with("deleted"), "{fields:?}");
}

#[tokio::test]
async fn a_stopped_target_pool_delays_outputs_but_not_consumption_and_loses_or_reorders_none() {
    let first = redis();
    // The target persists every write: what it had before its stop is still there after.
    let mut second = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ])
    .unwrap();
    let dir = TempDir::new();
    let port = free_port();
    // One instance: commit order, and with it the outbox's order, is the source order.
    let cfg = two_pools(
        &dir,
        &first,
        &second,
        "",
        "    count: 20\n    block: 100ms\n    publish: [stream-c]\n    lock-ttl: 1s\n",
        &format!("metrics:\n  addr: 127.0.0.1:{port}\n"),
    );

    // Before the host starts, two entries are left pending on its consumer-1 and one of
    // them is deleted: the host's first pending pass must dead-letter it, not drop it.
    let library = engine(
        &first,
        &[
            ("stream-a", &["read-group-a", GROUP]),
            ("stream-b", &[GROUP]),
        ],
    )
    .await;
    let broker = library.event_broker();
    let mut source = raw(&first).await;
    let early = xadd_many(&mut source, "stream-a", 2, |i| {
        vec![("n".into(), format!("early-{i}"))]
    })
    .await;
    leave_pending(&broker, GROUP, 1).await;
    assert_eq!(pending(&first, "stream-a", GROUP).await, 2);
    let _: i64 = redis::cmd("XDEL")
        .arg("stream-a")
        .arg(&early[0])
        .query_async(&mut source)
        .await
        .unwrap();

    let host = Beehive::run(&cfg, &["--no-watch"]);
    let before = xadd_many(&mut source, "stream-a", 200, |i| echo_to("stream-c", i)).await;
    eventually(
        "the first 200 outputs to land",
        Duration::from_secs(30),
        || async { xlen_db(&second, SECOND_DB, "stream-c").await == 200 },
    )
    .await;
    assert_dead_lettered_as_deleted(&first, DEAD_LETTER, &early[0]).await;

    second.stop();
    let stopped = Instant::now();
    let mut during = xadd_many(&mut source, "stream-a", 150, |i| {
        echo_to("stream-c", 200 + i)
    })
    .await;
    eventually(
        "consumption to go on while the target is down (outbox 150, nothing pending)",
        Duration::from_secs(30),
        || async {
            pending(&first, "stream-a", GROUP).await == 0 && xlen_db(&first, 0, OUTBOX).await == 150
        },
    )
    .await;
    during.extend(
        xadd_many(&mut source, "stream-a", 150, |i| {
            echo_to("stream-c", 350 + i)
        })
        .await,
    );
    eventually(
        "the outbox to grow to 300, every input acknowledged",
        Duration::from_secs(30),
        || async {
            pending(&first, "stream-a", GROUP).await == 0 && xlen_db(&first, 0, OUTBOX).await == 300
        },
    )
    .await;
    // (What `beehive status` and the gauges show meanwhile:
    // `status_and_metrics_show_the_outbox_while_its_target_pool_is_down`.)
    // The outage lasts several seconds, whatever the checks above took: a scenario length,
    // not a condition to await.
    if let Some(rest) = Duration::from_secs(4).checked_sub(stopped.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    assert_eq!(
        xlen_db(&first, 0, OUTBOX).await,
        300,
        "nothing leaves the outbox while the target is down"
    );
    second.restart().unwrap();
    let restarted = Instant::now();

    let expected: Vec<String> = before.iter().chain(&during).cloned().collect();
    eventually(
        "every output to land after the restart",
        Duration::from_secs(30),
        || async {
            xlen_db(&second, SECOND_DB, "stream-c").await >= 500
                && xlen_db(&first, 0, OUTBOX).await == 0
        },
    )
    .await;
    eprintln!(
        "target down for {:?}; relayed within {:?} after its restart",
        restarted - stopped,
        restarted.elapsed()
    );
    let echoed = echoes(&second, SECOND_DB, "stream-c").await;
    let (duplicated, lost) = duplicated_and_lost(&echoed, &expected);
    assert!(
        duplicated.is_empty() && lost.is_empty(),
        "duplicated {duplicated:?}, lost {lost:?}\n{}",
        host.log_text()
    );
    assert_eq!(echoed, expected, "publish order kept in stream-c");

    let g = "{group=\"read-group-ab\"}";
    eventually(
        "the metrics to count what was relayed and the gauge to drop to 0",
        Duration::from_secs(20),
        || async {
            let text = scrape(port);
            sample(
                &text,
                "beehive_relay_delivered_total{group=\"read-group-ab\",stream=\"stream-c\"}",
            ) == Some(500.0)
                && sample(&text, &format!("beehive_outbox_length{g}")) == Some(0.0)
        },
    )
    .await;
    let text = scrape(port);
    assert_eq!(
        sample(
            &text,
            &format!("beehive_events_deleted_while_pending_total{g}")
        ),
        Some(1.0),
        "{text}"
    );
    // One latency per output written, the ones held back by the outage included.
    assert_eq!(
        sample(&text, &format!("beehive_relay_latency_seconds_count{g}")),
        Some(500.0),
        "{text}"
    );
    assert_eq!(
        xlen_db(&first, 0, DEAD_LETTER).await,
        1,
        "only the deleted entry"
    );
}

/// An outbox filled by two hosts: another host's commits (written straight into the outbox,
/// as its commit script would) land between this host's all along, while this host's
/// relay holds the outbox. Every output reaches the target once, and each host's outputs in
/// the order they entered the outbox (the relay's marks and deletions rely on that order:
/// an entry skipped past would be lost).
#[tokio::test]
async fn outputs_another_host_commits_in_between_are_relayed_once_and_in_order() {
    let first = redis();
    let second = redis();
    let dir = TempDir::new();
    // One instance: commit order, and with it the outbox's order, is the source order.
    let cfg = two_pools(
        &dir,
        &first,
        &second,
        "",
        "    count: 20\n    block: 100ms\n    publish: [stream-c]\n",
        "",
    );
    let host = Beehive::run(&cfg, &["--no-watch"]);
    let mut source = raw(&first).await;
    let mut sources = Vec::new();
    let mut foreign = Vec::new();
    for round in 0..40 {
        sources.extend(
            xadd_many(&mut source, "stream-a", 50, |i| {
                echo_to("stream-c", round * 50 + i)
            })
            .await,
        );
        for _ in 0..10 {
            let tag = format!("foreign-{}", foreign.len());
            let _: String = redis::cmd("XADD")
                .arg(OUTBOX)
                .arg("*")
                .arg("beehive.target")
                .arg("stream-c")
                .arg("echo-of")
                .arg(&tag)
                .query_async(&mut source)
                .await
                .unwrap();
            foreign.push(tag);
        }
        // Paced, so that the host's commits and the other host's interleave in the outbox.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = sources.len() + foreign.len();
    let landed = wait_until(Duration::from_secs(60), || async {
        xlen_db(&second, SECOND_DB, "stream-c").await >= all as u64
            && xlen_db(&first, 0, OUTBOX).await == 0
    })
    .await;
    let echoed = echoes(&second, SECOND_DB, "stream-c").await;
    assert!(
        landed,
        "{} of {all} outputs landed; host warnings:\n{}",
        echoed.len(),
        warnings(&host)
    );
    let (theirs, ours): (Vec<String>, Vec<String>) =
        echoed.into_iter().partition(|e| e.starts_with("foreign-"));
    assert_eq!(
        theirs, foreign,
        "the other host's outputs, once each, in order"
    );
    let (duplicated, lost) = duplicated_and_lost(&ours, &sources);
    assert!(
        duplicated.is_empty() && lost.is_empty(),
        "duplicated {duplicated:?}, lost {lost:?}"
    );
    assert_eq!(ours, sources, "this host's outputs in source order");
}

#[tokio::test]
async fn status_and_metrics_show_the_outbox_while_its_target_pool_is_down() {
    let first = redis();
    let mut second = redis();
    let dir = TempDir::new();
    let port = free_port();
    let cfg = two_pools(
        &dir,
        &first,
        &second,
        "",
        "    count: 20\n    block: 100ms\n    publish: [stream-c]\n",
        &format!("metrics:\n  addr: 127.0.0.1:{port}\n"),
    );
    let host = Beehive::run(&cfg, &["--no-watch"]);
    let mut source = raw(&first).await;
    xadd_many(&mut source, "stream-a", 10, |i| echo_to("stream-c", i)).await;
    eventually(
        "the first outputs to land",
        Duration::from_secs(30),
        || async { xlen_db(&second, SECOND_DB, "stream-c").await == 10 },
    )
    .await;
    second.stop();
    xadd_many(&mut source, "stream-a", 50, |i| echo_to("stream-c", 10 + i)).await;
    eventually(
        "50 outputs to wait in the outbox, every input acknowledged",
        Duration::from_secs(30),
        || async {
            pending(&first, "stream-a", GROUP).await == 0 && xlen_db(&first, 0, OUTBOX).await == 50
        },
    )
    .await;

    // Both are checked before either is asserted, so a failure reports both.
    let (code, stdout, stderr) = beehive(&["status"], &cfg);
    let status_ok = code == Some(0) && stdout.contains("outbox: 50 outputs waiting for the relay");
    // The gauges refresh every 5 s.
    let g = "{group=\"read-group-ab\"}";
    let gauges_ok = wait_until(Duration::from_secs(12), || async {
        let text = scrape(port);
        sample(&text, &format!("beehive_outbox_length{g}")) == Some(50.0)
            && sample(&text, &format!("beehive_outbox_oldest_seconds{g}")).is_some_and(|s| s > 0.0)
    })
    .await;
    assert!(
        status_ok && gauges_ok,
        "with the target pool down, `beehive status` shows the outbox: {status_ok} (exit \
         {code:?}):\n{stdout}\n{stderr}\nthe outbox gauges show 50 waiting: {gauges_ok}:\n{}\n\
         host warnings (last 5):\n{}",
        scrape(port)
            .lines()
            .filter(|l| l.starts_with("beehive_outbox"))
            .collect::<Vec<_>>()
            .join("\n"),
        warnings(&host)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn outputs_to_a_target_key_of_the_wrong_type_are_dead_lettered_and_the_rest_flow() {
    let first = redis();
    let second = redis();
    let dir = TempDir::new();
    let cfg = two_pools(
        &dir,
        &first,
        &second,
        "    stream-d: [read-group-d]\n",
        "    count: 10\n    block: 100ms\n    publish: [stream-c, stream-d]\n",
        "",
    );
    let _: () = redis::cmd("SET")
        .arg("stream-c")
        .arg("x")
        .query_async(&mut beehive_tests::raw_db(&second, SECOND_DB).await)
        .await
        .unwrap();
    // Interleaved: refused and healthy outputs share the outbox's pages.
    let mut source = raw(&first).await;
    let ids = xadd_many(&mut source, "stream-a", 100, |i| {
        echo_to(if i % 2 == 0 { "stream-c" } else { "stream-d" }, i)
    })
    .await;
    let to_c: Vec<String> = ids.iter().step_by(2).cloned().collect();
    let to_d: Vec<String> = ids.iter().skip(1).step_by(2).cloned().collect();

    let log = drain(&cfg);

    assert_eq!(
        echoes(&second, SECOND_DB, "stream-d").await,
        to_d,
        "the healthy target got each of its outputs once, in order:\n{log}"
    );
    let dead = beehive_tests::entries_db(&first, 0, DEAD_LETTER).await;
    let mut refused = Vec::new();
    for (id, f) in &dead {
        let reason = field(f, "beehive.reason").unwrap_or_default();
        assert!(
            reason.contains("relay refused") && reason.contains("WRONGTYPE"),
            "dead-letter {id}: {f:?}"
        );
        assert_eq!(field(f, "beehive.origin-stream"), Some("stream-c"), "{f:?}");
        assert_eq!(field(f, "beehive.group"), Some(GROUP), "{f:?}");
        refused.push(field(f, "echo-of").unwrap_or_default().to_string());
    }
    assert_eq!(
        refused, to_c,
        "every output to stream-c dead-lettered once, with the event it echoes:\n{log}"
    );
    assert_eq!(xlen_db(&first, 0, OUTBOX).await, 0);
    assert_eq!(pending(&first, "stream-a", GROUP).await, 0);
    let kept: String = redis::cmd("GET")
        .arg("stream-c")
        .query_async(&mut beehive_tests::raw_db(&second, SECOND_DB).await)
        .await
        .unwrap();
    assert_eq!(kept, "x", "the key of the wrong type is left alone");
    assert!(log.contains("WRONGTYPE"), "the refusal is logged:\n{log}");
}

type Handled = Arc<Mutex<Vec<String>>>;

fn recording() -> (
    Handled,
    impl FnMut(Vec<Event>) -> std::future::Ready<anyhow::Result<()>> + Send,
) {
    let handled: Handled = Arc::default();
    let sink = handled.clone();
    (handled, move |events: Vec<Event>| {
        sink.lock().unwrap().extend(events.iter().map(Event::id));
        std::future::ready(Ok(()))
    })
}

async fn publish_three(broker: &beehive::EventBroker) -> Vec<String> {
    let mut flusher = broker.new_flusher();
    for i in 0..3 {
        flusher
            .publish("stream-a", &i, &[] as &[(&str, &str)])
            .unwrap();
    }
    flusher.flush().await.unwrap()
}

async fn xdel(server: &RedisServer, id: &str) {
    let deleted: i64 = redis::cmd("XDEL")
        .arg("stream-a")
        .arg(id)
        .query_async(&mut raw(server).await)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
}

#[tokio::test]
async fn an_entry_deleted_while_pending_is_dead_lettered_when_reclaimed() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    let ids = publish_three(&broker).await;
    leave_pending(&broker, "g", 1).await;
    assert_eq!(
        pending_rows(&server, "stream-a", "g", Some("consumer-1"))
            .await
            .len(),
        3
    );
    xdel(&server, &ids[1]).await;

    let idle = Duration::from_millis(200);
    eventually(
        "consumer-1's entries to be idle past min-idle",
        Duration::from_secs(5),
        || async {
            pending_rows(&server, "stream-a", "g", None)
                .await
                .iter()
                .all(|(_, _, ms, _)| *ms > idle.as_millis() as u64)
        },
    )
    .await;
    let mut reclaimer = broker.consumer("g").unwrap();
    reclaimer.options_mut().reclaim_idle = Some(idle);
    reclaimer.disable_loop();
    let (handled, handler) = recording();
    assert!(
        reclaimer
            .consume_many(CancellationToken::new(), 2, 10, handler)
            .await
            .unwrap()
    );
    assert_eq!(
        *handled.lock().unwrap(),
        [ids[0].clone(), ids[2].clone()],
        "consumer-2 reclaims and handles the others, never the deleted one"
    );
    assert_eq!(pending(&server, "stream-a", "g").await, 0);
    assert_dead_lettered_as_deleted(&server, "g-dead-letter", &ids[1]).await;
}

#[tokio::test]
async fn an_entry_deleted_while_pending_is_dead_lettered_by_claim() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    let ids = publish_three(&broker).await;
    leave_pending(&broker, "g", 1).await;
    xdel(&server, &ids[1]).await;

    let claimer = broker.consumer("g").unwrap();
    assert_eq!(claimer.claim(1, 2).await.unwrap(), 2, "the others moved");
    assert!(
        pending_rows(&server, "stream-a", "g", Some("consumer-1"))
            .await
            .is_empty()
    );
    let moved: Vec<String> = pending_rows(&server, "stream-a", "g", Some("consumer-2"))
        .await
        .into_iter()
        .map(|(id, _, _, _)| id)
        .collect();
    assert_eq!(moved, [ids[0].clone(), ids[2].clone()]);
    assert_dead_lettered_as_deleted(&server, "g-dead-letter", &ids[1]).await;

    // consumer-2 then handles exactly the moved entries.
    let mut runner = broker.consumer("g").unwrap();
    runner.disable_loop();
    let (handled, handler) = recording();
    assert!(
        runner
            .consume_many(CancellationToken::new(), 2, 10, handler)
            .await
            .unwrap()
    );
    assert_eq!(*handled.lock().unwrap(), moved);
    assert_eq!(pending(&server, "stream-a", "g").await, 0);
}
