//! Redis Cluster as a pool (issue 16): private 3-master clusters started and stopped by the
//! tests (`beehive::redis_cluster`), the library and the real binary on them.

use std::collections::BTreeMap;
use std::time::Duration;

use beehive::redis_cluster::RedisCluster;
use beehive::{Decision, Event, Outcome, Registry};
use beehive_tests::cluster::{echo_inputs, entries, raw, three_masters as cluster, xlen};
use beehive_tests::{Beehive, TempDir, component, drain, eventually, field, run_beehive};
use redis::cluster_async::ClusterConnection;
use tokio_util::sync::CancellationToken;

/// The `src` field of every entry of `stream`, counted: each must appear once.
async fn sources(con: &mut ClusterConnection, stream: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for (id, fields) in entries(con, stream).await {
        let src = field(&fields, "src")
            .unwrap_or_else(|| panic!("{stream} entry {id} has no src"))
            .to_string();
        *seen.entry(src).or_default() += 1;
    }
    seen
}

/// Publishes, consumes with outputs in the input's slot and in other slots, claims,
/// collects garbage and reports statistics on a 3-master cluster whose streams live in
/// several slots: nothing is lost, nothing written twice, no CROSSSLOT reaches the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_tour_runs_on_a_cluster_across_slots() {
    let cluster = cluster();
    let mut registry = Registry::new();
    registry.register_redis_cluster(&cluster.seeds(), "orders");
    registry.register_redis_stream("{orders}-created", "orders", &["billing", "shipping"]);
    registry.register_redis_stream("{orders}-paid", "orders", &["billing"]);
    registry.register_redis_stream("{orders}-billed", "orders", &["bookkeeping"]);
    registry.register_redis_stream("audit", "orders", &["auditors"]);
    registry.register_redis_stream("invoices", "orders", &["accounting"]);
    let engine = registry.validate().await.expect("valid").create_engine();
    engine
        .ping("orders", Duration::from_secs(5))
        .await
        .expect("the cluster answers");
    let broker = engine.event_broker();
    let mut con = raw(&cluster).await;
    // The streams really live in different slots, on different masters.
    assert_ne!(
        beehive::keys::slot("{orders}-created"),
        beehive::keys::slot("audit")
    );

    // The flusher writes one transaction per slot, order kept per stream.
    let mut flusher = broker.new_flusher();
    for i in 0..300u32 {
        let stream = match i % 3 {
            0 => "{orders}-created",
            1 => "{orders}-paid",
            _ => "audit",
        };
        flusher
            .publish(stream, &i, &[("n", i.to_string())])
            .expect("buffer");
        if i % 50 == 49 {
            flusher.start_flush().await.expect("start_flush");
        }
    }
    flusher.flush().await.expect("flush");
    assert!(flusher.is_empty());
    for stream in ["{orders}-created", "{orders}-paid", "audit"] {
        let ns: Vec<u32> = entries(&mut con, stream)
            .await
            .iter()
            .map(|(_, f)| field(f, "n").unwrap().parse().unwrap())
            .collect();
        assert_eq!(ns.len(), 100, "{stream}");
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{stream} keeps publish order"
        );
    }

    // billing reads two streams of one slot; each event gives one output in that slot and
    // one in another slot (through the outbox and the relay).
    let mut consumer = broker.consumer("billing").expect("billing");
    consumer.disable_loop();
    struct Bill;
    impl beehive::BatchHandler for Bill {
        async fn handle(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
            let mut decision = Decision::ack_all(events.len());
            for event in events {
                let src = format!("{}/{}", event.stream(), event.id());
                for target in ["{orders}-billed", "invoices"] {
                    decision.publishes.push(
                        beehive::NewEvent::new(target, None, vec![("src".into(), src.clone())])
                            .expect("event"),
                    );
                }
            }
            Ok(decision)
        }
    }
    assert!(
        consumer
            .consume_with(CancellationToken::new(), 1, 40, Bill)
            .await
            .expect("consume billing")
    );
    let billed = sources(&mut con, "{orders}-billed").await;
    let invoiced = sources(&mut con, "invoices").await;
    assert_eq!(billed.len(), 200);
    assert_eq!(invoiced.len(), 200);
    assert!(billed.values().chain(invoiced.values()).all(|n| *n == 1));
    assert_eq!(xlen(&mut con, "beehive:outbox:{orders}billing").await, 0);

    // A handler's dead-letter lands in the group's default dead-letter stream, in its slot.
    let mut auditors = broker.consumer("auditors").expect("auditors");
    auditors.disable_loop();
    struct Refuse;
    impl beehive::BatchHandler for Refuse {
        async fn handle(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
            Ok(Decision {
                outcomes: vec![Outcome::DeadLetter("not audited".into()); events.len()],
                publishes: Vec::new(),
            })
        }
    }
    assert!(
        auditors
            .consume_with(CancellationToken::new(), 1, 100, Refuse)
            .await
            .unwrap()
    );
    assert_eq!(xlen(&mut con, "{audit}auditors-dead-letter").await, 100);

    // Claim: entries read by consumer-2 and left pending move to consumer-1.
    let shipping = broker.consumer("shipping").expect("shipping");
    let mut first = true;
    let mut stuck = broker.consumer("shipping").expect("shipping");
    stuck.disable_loop();
    stuck
        .consume_many(CancellationToken::new(), 2, 10, move |_events| {
            let fail = first;
            first = false;
            async move {
                if fail {
                    Ok(())
                } else {
                    anyhow::bail!("leave the rest pending")
                }
            }
        })
        .await
        .ok();
    let moved = shipping.claim(2, 1).await.expect("claim on a cluster");
    assert!(moved > 0, "consumer-2 left entries pending");

    // Statistics see every stream and group, with the lock-derived hosts empty.
    let stats = broker.statistics().await.expect("statistics on a cluster");
    let created = stats
        .iter()
        .find(|s| s.name == "{orders}-created")
        .expect("stream in the statistics");
    assert!(created.error.is_none(), "{:?}", created.error);
    assert_eq!(created.length, 100);
    let billing = created.groups.iter().find(|g| g.name == "billing").unwrap();
    assert_eq!(billing.pending, 0);
    assert_eq!(billing.outbox.as_ref().map(|o| o.length), Some(0));

    // GC deletes only what every group acknowledged: `{orders}-paid` (billing only) and
    // `audit` go; of `{orders}-created`, only the first 10 entries (shipping acknowledged
    // its first batch, the rest is pending); nothing of `{orders}-billed`, whose group
    // bookkeeping has read nothing yet.
    let report = engine.gc().await.expect("gc on a cluster");
    let deleted = |stream: &str| {
        report
            .streams
            .iter()
            .find(|s| s.stream == stream)
            .map(|s| s.deleted)
    };
    assert_eq!(deleted("{orders}-paid"), Some(100));
    assert_eq!(deleted("audit"), Some(100));
    assert_eq!(deleted("{orders}-created"), Some(10));
    assert_eq!(deleted("{orders}-billed"), Some(0));
    assert_eq!(xlen(&mut con, "{orders}-paid").await, 0);
    assert_eq!(xlen(&mut con, "{orders}-created").await, 90);
    assert_eq!(xlen(&mut con, "{orders}-billed").await, 200);
}

/// `beehive validate` lists each group's slots and warns when outputs cross them;
/// `beehive run --drain` with the echo component moves events to the same slot and to
/// another slot exactly once; `beehive status` reads the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_component_on_a_cluster() {
    let cluster = cluster();
    let dir = TempDir::new();
    let seeds = cluster.seeds().join(", ");
    let config = dir.write(
        "beehive.yaml",
        &format!(
            "orders:
  cluster: [{seeds}]
  streams:
    \"{{orders}}-created\": [echoes]
    \"{{orders}}-echoed\": [readers]
    elsewhere: [others]
consumers:
  echoes:
    component: {}
    publish: [\"{{orders}}-echoed\", elsewhere]
",
            component("beehive-example-echo").display()
        ),
    );
    let config_arg = config.to_str().unwrap();
    let (code, out, err) = run_beehive(&["validate", "-c", config_arg], Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}{err}");
    let slot = beehive::keys::slot("orders");
    assert!(
        out.contains(&format!("consumers.echoes: reads pool orders slot {slot}")),
        "{out}"
    );
    assert!(
        err.contains("elsewhere lives in pool orders slot"),
        "validate warns about the crossing output: {err}"
    );

    let mut con = raw(&cluster).await;
    for i in 0..300 {
        let target = if i % 2 == 0 {
            "{orders}-echoed"
        } else {
            "elsewhere"
        };
        let _: String = redis::cmd("XADD")
            .arg("{orders}-created")
            .arg("*")
            .arg("echo-to")
            .arg(target)
            .arg("src")
            .arg(i.to_string())
            .query_async(&mut con)
            .await
            .unwrap();
    }
    drain(&config);
    let same = sources(&mut con, "{orders}-echoed").await;
    let other = sources(&mut con, "elsewhere").await;
    assert_eq!(same.len(), 150);
    assert_eq!(other.len(), 150);
    assert!(same.values().chain(other.values()).all(|n| *n == 1));

    let (code, out, err) = run_beehive(&["status", "-c", config_arg], Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("{orders}-created"), "{out}");

    // A running host on the cluster picks up new events as they come.
    let mut host = Beehive::run(&config, &[]);
    let _: String = redis::cmd("XADD")
        .arg("{orders}-created")
        .arg("*")
        .arg("echo-to")
        .arg("elsewhere")
        .arg("src")
        .arg("live")
        .query_async(&mut con)
        .await
        .unwrap();
    eventually(
        "the live event is echoed to another slot",
        Duration::from_secs(20),
        || {
            let mut con = con.clone();
            async move { sources(&mut con, "elsewhere").await.contains_key("live") }
        },
    )
    .await;
    host.signal("TERM");
    assert_eq!(
        host.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        host.log_text()
    );
}

/// Bad cluster input is named: seeds that are not cluster nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_server_given_as_a_cluster_is_refused_with_the_reason() {
    let server = beehive_tests::redis();
    let dir = TempDir::new();
    let config = dir.write(
        "beehive.yaml",
        &format!(
            "orders:\n  cluster: [{}]\n  streams:\n    a: [g]\n",
            server.address()
        ),
    );
    let (code, out, err) = run_beehive(
        &["validate", "-c", config.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains("not in cluster mode"), "{err}");
}

/// A group over streams in 3 slots reads and commits per slot (one lock each): no
/// CROSSSLOT reaches the user, every event is handled once, its outputs land once, and
/// the consumer runs once (a second start of the same number is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_over_three_slots_reads_and_commits_per_slot() {
    let cluster = cluster();
    let streams = ["north", "south", "west"];
    let slots: std::collections::BTreeSet<u16> =
        streams.iter().map(|s| beehive::keys::slot(s)).collect();
    assert_eq!(slots.len(), 3, "three streams in three slots");
    let mut registry = Registry::new();
    registry.register_redis_cluster(&cluster.seeds(), "orders");
    for stream in streams {
        registry.register_redis_stream(stream, "orders", &["all"]);
    }
    registry.register_redis_stream("{north}-out", "orders", &["readers"]);
    let engine = registry.validate().await.expect("valid").create_engine();
    assert_eq!(engine.registry().group_domains("all").len(), 3);
    let broker = engine.event_broker();
    let mut flusher = broker.new_flusher();
    for i in 0..600u32 {
        flusher
            .publish_meta(streams[i as usize % 3], &[("n", i.to_string())])
            .unwrap();
    }
    flusher.flush().await.expect("flush over three slots");

    // Consumer 1 runs (looping) until it has handled everything; meanwhile a second start
    // of consumer 1 is refused: it holds every slot's lock.
    let consumer = broker.consumer("all").unwrap();
    let cancel = CancellationToken::new();
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    struct Out(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl beehive::BatchHandler for Out {
        async fn handle(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
            let mut decision = Decision::ack_all(events.len());
            for event in events {
                decision.publishes.push(
                    beehive::NewEvent::new(
                        "{north}-out",
                        None,
                        vec![("src".into(), event.tag("n").to_string())],
                    )
                    .unwrap(),
                );
            }
            self.0
                .fetch_add(events.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(decision)
        }
    }
    let running = {
        let (cancel, handled) = (cancel.clone(), handled.clone());
        let consumer = broker.consumer("all").unwrap();
        tokio::spawn(async move {
            let mut consumer = consumer;
            consumer.set_block_time(Duration::from_millis(200));
            consumer.consume_with(cancel, 1, 50, Out(handled)).await
        })
    };
    let mut con = raw(&cluster).await;
    eventually(
        "every event handled and its output landed",
        Duration::from_secs(60),
        || {
            let mut con = con.clone();
            async move { xlen(&mut con, "{north}-out").await >= 600 }
        },
    )
    .await;
    let again = consumer
        .consume_many(CancellationToken::new(), 1, 10, |_| async { Ok(()) })
        .await
        .expect("second start");
    assert!(
        !again,
        "consumer-1 already runs: the second start is refused"
    );
    cancel.cancel();
    assert!(running.await.unwrap().expect("consumer ends cleanly"));
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 600);
    let out = sources(&mut con, "{north}-out").await;
    assert_eq!(out.len(), 600);
    assert!(out.values().all(|n| *n == 1));
    for stream in streams {
        let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(stream)
            .arg("all")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(pending.0, 0, "{stream} has nothing pending");
    }
}

/// The echo group on the cluster reached through `seeds`, with outputs to its own slot and
/// to another slot.
fn echo_config(dir: &TempDir, seeds: &[String], settings: &str) -> std::path::PathBuf {
    dir.write(
        "beehive.yaml",
        &format!(
            "orders:
  cluster: [{}]
  streams:
    \"{{orders}}-created\": [echoes]
    \"{{orders}}-echoed\": [readers]
    elsewhere: [others]
consumers:
  echoes:
    component: {}
    publish: [\"{{orders}}-echoed\", elsewhere]
{settings}",
            seeds.join(", "),
            component("beehive-example-echo").display()
        ),
    )
}

/// The echo group's settings for the failover and resharding tests: batches of 50, a lock
/// that a dead master's loss frees soon, reclaims well after any batch's deadline.
const STEADY_FLOW: &str = "    count: 50\n    block: 100ms\n    min-idle: 3s\n    lock-ttl: 2s\n    limits: { timeout: 1s }\n";

/// XADDs `n` events to `{orders}-created` numbered from `first`, echoed alternately to
/// the group's slot and to another slot; the numbers Redis acknowledged.
async fn publish(con: &mut ClusterConnection, first: usize, n: usize) -> Vec<String> {
    match echo_inputs(first, n).query_async::<Vec<String>>(con).await {
        Ok(_) => (first..first + n).map(|i| i.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Every echo of both targets, counted by source number.
async fn echoed(con: &mut ClusterConnection) -> BTreeMap<String, usize> {
    let mut all = sources(con, "{orders}-echoed").await;
    for (src, n) in sources(con, "elsewhere").await {
        *all.entry(src).or_default() += n;
    }
    all
}

/// True when every source number in `wanted` has an echo.
async fn all_echoed(mut con: ClusterConnection, wanted: &[String]) -> bool {
    let echoes = echoed(&mut con).await;
    wanted.iter().all(|w| echoes.contains_key(w))
}

/// kill -9 of the host at 5 random moments while 5,000 events flow, half echoed in the
/// input's slot (committed with the ack), half to another slot (outbox and relay): every
/// event has exactly one echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_flow_on_a_cluster_neither_loses_nor_duplicates_an_output() {
    const EVENTS: usize = 5_000;
    const TICKS: usize = 100;
    const KILLS: usize = 5;
    let mut rng = beehive_tests::Rng::from_clock("cluster chaos");
    let seed = rng.seed();
    let cluster = cluster();
    let dir = TempDir::new();
    let config = echo_config(
        &dir,
        &cluster.seeds(),
        "    count: 50\n    instances: 2\n    block: 100ms\n    min-idle: 3s\n    lock-ttl: 1s\n    limits: { timeout: 1s }\n",
    );
    let args = ["--no-watch", "--gc-interval", "1h"];
    let mut host = Beehive::run(&config, &args);
    let mut con = raw(&cluster).await;
    let segment = TICKS / KILLS;
    let kill_ticks: Vec<usize> = (0..KILLS)
        .map(|k| k * segment + 2 + rng.below(segment as u64 - 2) as usize)
        .collect();
    let mut published = Vec::with_capacity(EVENTS);
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    for t in 0..TICKS {
        tick.tick().await;
        let batch = publish(&mut con, published.len(), EVENTS / TICKS).await;
        assert!(!batch.is_empty(), "the cluster takes events");
        published.extend(batch);
        if kill_ticks.contains(&t) {
            host.signal("KILL");
            host.wait(Duration::from_secs(10));
            // As if the dead host's relay lock had expired (10 s): the next relays at once.
            let _: i64 = redis::cmd("DEL")
                .arg("beehive:relay-lock:{orders}echoes")
                .query_async(&mut con)
                .await
                .unwrap();
            host = Beehive::run(&config, &args);
        }
    }
    assert_eq!(published.len(), EVENTS);
    eventually("every event echoed", Duration::from_secs(90), || {
        let mut con = con.clone();
        async move { echoed(&mut con).await.len() >= EVENTS }
    })
    .await;
    let echoes = echoed(&mut con).await;
    let duplicated: Vec<_> = echoes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "duplicated echoes (first {:?}); seed {seed}\n{}",
        duplicated.first(),
        host.log_text()
    );
    assert!(published.iter().all(|p| echoes.contains_key(p)));
    assert_eq!(xlen(&mut con, "{orders}echoes-dead-letter").await, 0);
}

/// 3 masters with a replica each: kill -9 the master of the group's slot under a steady
/// flow. The host stays up, follows the promotion, and consumption resumes within 15 s of
/// it; every event the new master holds is echoed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_under_flow_is_followed_without_a_restart() {
    let mut cluster = RedisCluster::start(3, 1).expect("start 3 masters with replicas");
    let dir = TempDir::new();
    let config = echo_config(&dir, &cluster.seeds(), STEADY_FLOW);
    let mut host = Beehive::run(&config, &["--no-watch", "--gc-interval", "1h"]);
    let mut con = raw(&cluster).await;
    let mut next = 0;
    for _ in 0..20 {
        next += publish(&mut con, next, 20).await.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(next, 400, "the cluster takes events");
    let first = std::time::Instant::now();
    while echoed(&mut con).await.len() < 400 {
        assert!(
            first.elapsed() < Duration::from_secs(30),
            "the first events are not echoed:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Kill the master of the group's slot (with the events, the lock and the outbox).
    let slot = beehive::keys::slot("orders");
    let old = cluster.master_of_slot(slot).unwrap();
    let node = cluster
        .nodes()
        .iter_mut()
        .find(|n| n.port() == old)
        .expect("the master is ours");
    node.stop();
    // Keep publishing while the replica takes over (writes to that slot fail meanwhile).
    let promoted_by = std::time::Instant::now() + Duration::from_secs(30);
    let new = loop {
        if let Ok(port) = cluster.master_of_slot(slot)
            && port != old
        {
            break port;
        }
        assert!(
            std::time::Instant::now() < promoted_by,
            "no replica was promoted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    let promoted = std::time::Instant::now();
    eprintln!("slot {slot}: master {old} failed over to {new}");
    let mut con = raw(&cluster).await;
    let after: Vec<String> = loop {
        let batch = publish(&mut con, 100_000 + next, 50).await;
        if !batch.is_empty() {
            break batch;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eventually(
        "events published after the promotion are echoed",
        Duration::from_secs(15),
        || all_echoed(con.clone(), &after),
    )
    .await;
    eprintln!("resumed {:?} after the promotion", promoted.elapsed());
    assert!(host.is_running(), "the host stays up:\n{}", host.log_text());
    // What the new master holds (asynchronous replication may have lost the last writes
    // acknowledged by the old one, inputs and echoes alike) is echoed exactly once.
    let inputs: Vec<String> = entries(&mut con, "{orders}-created")
        .await
        .iter()
        .map(|(_, f)| field(f, "src").unwrap().to_string())
        .collect();
    eventually(
        "every surviving input echoed",
        Duration::from_secs(30),
        || all_echoed(con.clone(), &inputs),
    )
    .await;
    let echoes = echoed(&mut con).await;
    assert!(echoes.values().all(|n| *n == 1), "no duplicate echoes");
}

/// True when the echo consumer's read-ahead connection is connected to the node on `port`.
async fn reads_ahead_on(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return false;
    };
    let Ok(mut con) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .unwrap_or_default();
    list.contains(&beehive::keys::read_ahead_client_name(
        "echoes",
        "consumer-1",
    ))
}

/// The slot holding the echo group's streams, lock and outbox is resharded to another
/// master and back while events flow (one key at a time, so consumers, relay and
/// publishers run through `ASK` redirects and a half-moved slot): the host stays up, every
/// input entry is echoed exactly once and every event Redis acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_the_groups_slot_under_flow_loses_and_duplicates_nothing() {
    let cluster = std::sync::Arc::new(cluster());
    let dir = TempDir::new();
    let config = echo_config(&dir, &cluster.seeds(), STEADY_FLOW);
    let mut host = Beehive::run(&config, &["--no-watch", "--gc-interval", "1h"]);
    let mut con = raw(&cluster).await;
    // Numbers are never reused: a pipeline that failed half-way may still have written.
    let mut next = 0;
    let mut acknowledged = publish(&mut con, next, 200).await;
    next += 200;
    assert_eq!(acknowledged.len(), 200, "the cluster takes events");
    eventually(
        "the first events are echoed",
        Duration::from_secs(30),
        || all_echoed(con.clone(), &acknowledged),
    )
    .await;

    // Beehive's own flusher publishes too: a flush that fails on the half-moved slot
    // keeps its events buffered and the next one sends them, once.
    let mut registry = Registry::new();
    registry.register_redis_cluster(&cluster.seeds(), "orders");
    registry.register_redis_stream("{orders}-created", "orders", &["echoes"]);
    let engine = registry.validate().await.expect("valid").create_engine();
    let mut flusher = engine.event_broker().new_flusher();
    let mut buffered = Vec::new();
    let mut flush_errors = 0;

    let slot = beehive::keys::slot("orders");
    let home = cluster.master_of_slot(slot).unwrap();
    assert!(
        reads_ahead_on(home).await,
        "the consumer reads ahead on its own connection to the slot's master"
    );
    let away = *cluster
        .masters()
        .iter()
        .find(|p| **p != home)
        .expect("another master");
    for (from, to) in [(home, away), (away, home)] {
        let moving = {
            let cluster = cluster.clone();
            tokio::task::spawn_blocking(move || {
                cluster.migrate_slot(slot, to, 1, Duration::from_millis(300))
            })
        };
        let mut during = 0;
        while !moving.is_finished() {
            let batch = publish(&mut con, next, 20).await;
            next += 20;
            during += batch.len();
            acknowledged.extend(batch);
            for i in next..next + 10 {
                let target = if i % 2 == 0 {
                    "{orders}-echoed"
                } else {
                    "elsewhere"
                };
                let src = i.to_string();
                flusher
                    .publish_meta("{orders}-created", &[("echo-to", target), ("src", &src)])
                    .expect("buffer");
                buffered.push(src);
            }
            next += 10;
            match flusher.flush().await {
                Ok(_) => acknowledged.append(&mut buffered),
                Err(e) => {
                    if flush_errors == 0 {
                        eprintln!("first failed flush: {e}");
                    }
                    flush_errors += 1
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(moving.await.unwrap().unwrap(), from);
        assert_eq!(cluster.master_of_slot(slot).unwrap(), to);
        // The consumer's read-ahead connection follows the slot to its new master.
        eventually(
            "the read-ahead reader reopened on the new master",
            Duration::from_secs(30),
            || {
                let mut con = con.clone();
                async move {
                    publish(&mut con, 1_000_000, 1).await;
                    reads_ahead_on(to).await
                }
            },
        )
        .await;
        eprintln!("slot {slot} moved {from} -> {to}; {during} events acknowledged meanwhile");
        assert!(during > 0, "events were published while the slot moved");
        // And after the move.
        let batch = publish(&mut con, next, 100).await;
        next += 100;
        assert_eq!(batch.len(), 100, "the cluster takes events after the move");
        acknowledged.extend(batch);
    }
    flusher
        .flush()
        .await
        .expect("the flusher sends what it kept");
    acknowledged.append(&mut buffered);
    eprintln!("{flush_errors} flushes failed on the way and were resent");
    eventually("every event echoed", Duration::from_secs(60), || {
        all_echoed(con.clone(), &acknowledged)
    })
    .await;
    assert!(host.is_running(), "the host stays up:\n{}", host.log_text());
    // Exactly one echo per input entry (by ID: the echo's `echo-of`).
    let inputs: Vec<String> = entries(&mut con, "{orders}-created")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut echoes: BTreeMap<String, usize> = BTreeMap::new();
    for stream in ["{orders}-echoed", "elsewhere"] {
        for (id, fields) in entries(&mut con, stream).await {
            let of = field(&fields, "echo-of")
                .unwrap_or_else(|| panic!("{stream} entry {id} has no echo-of"));
            *echoes.entry(of.to_string()).or_default() += 1;
        }
    }
    let wrong: Vec<_> = inputs
        .iter()
        .filter(|id| echoes.get(*id) != Some(&1))
        .map(|id| (id, echoes.get(id).copied().unwrap_or(0)))
        .collect();
    assert!(
        wrong.is_empty() && echoes.len() == inputs.len(),
        "inputs not echoed exactly once: {} of {} (first {:?}); {} echoed IDs\n{}",
        wrong.len(),
        inputs.len(),
        wrong.first(),
        echoes.len(),
        host.log_text()
    );
    assert_eq!(xlen(&mut con, "{orders}echoes-dead-letter").await, 0);
    host.signal("TERM");
    host.wait(Duration::from_secs(10));
}

/// A cluster whose nodes speak TLS, given by `rediss://` seeds: the CLI publishes and a
/// host drains through it; a client that does not trust the nodes' CA is refused with a
/// certificate error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_is_reached_through_rediss_seeds() {
    let dir = TempDir::new();
    let (ca, cert, key) = beehive_tests::certificates(&dir);
    let cluster = RedisCluster::start_tls(
        3,
        0,
        &beehive::redis_cluster::TlsFiles {
            cert: &cert,
            key: &key,
            ca: &ca,
        },
    )
    .expect("start a 3-master cluster with TLS (Debian's redis-server has it)");
    let config = echo_config(&dir, &cluster.tls_seeds(), "");
    let ca_file = ca.to_str().unwrap();
    let beehive = |args: &[&str], trust: bool| {
        let mut cmd = std::process::Command::new(beehive_tests::beehive_bin());
        cmd.args(args).arg("-c").arg(&config);
        if trust {
            cmd.env("SSL_CERT_FILE", ca_file);
        } else {
            cmd.env_remove("SSL_CERT_FILE");
        }
        cmd.output().unwrap()
    };
    let mut ids = Vec::new();
    for (i, target) in ["{orders}-echoed", "elsewhere"].iter().enumerate() {
        let out = beehive(
            &[
                "publish",
                "{orders}-created",
                "--meta",
                &format!("echo-to={target}"),
                "--meta",
                &format!("src={i}"),
            ],
            true,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let mut host = Beehive::run_with_env(&config, &["--drain"], &[("SSL_CERT_FILE", ca_file)]);
    assert_eq!(
        host.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        host.log_text()
    );
    // Checked over the nodes' plain ports.
    let mut con = raw(&cluster).await;
    let mut echoed_of = Vec::new();
    for stream in ["{orders}-echoed", "elsewhere"] {
        eventually("the echo is relayed", Duration::from_secs(10), || {
            let mut con = con.clone();
            async move { xlen(&mut con, stream).await == 1 }
        })
        .await;
        let echo = entries(&mut con, stream).await;
        echoed_of.push(field(&echo[0].1, "echo-of").unwrap().to_string());
    }
    assert_eq!(echoed_of, ids, "each event echoed once, to its target");

    let out = beehive(&["validate"], false);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("certificate"),
        "a clear TLS error: {stderr}"
    );
}
