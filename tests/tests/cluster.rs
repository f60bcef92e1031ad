//! Redis Cluster as a pool (issue 16): private 3-master clusters started and stopped by the
//! tests (`beehive::redis_cluster`), the library and the real binary on them.

use std::collections::BTreeMap;
use std::time::Duration;

use beehive::redis_cluster::RedisCluster;
use beehive::{Decision, Event, Outcome, Registry};
use beehive_tests::{Beehive, TempDir, component, drain, eventually, field, run_beehive};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio_util::sync::CancellationToken;

fn cluster() -> RedisCluster {
    RedisCluster::start(3, 0).expect("start a private 3-master Redis Cluster")
}

/// A plain cluster connection, for checking what the cluster holds.
async fn raw(cluster: &RedisCluster) -> ClusterConnection {
    ClusterClient::new(
        cluster
            .seeds()
            .iter()
            .map(|s| format!("redis://{s}/"))
            .collect::<Vec<_>>(),
    )
    .expect("cluster client")
    .get_async_connection()
    .await
    .expect("connect to the cluster")
}

/// Every entry of `stream` as (id, text fields).
async fn entries(
    con: &mut ClusterConnection,
    stream: &str,
) -> Vec<(String, Vec<(String, String)>)> {
    let reply: Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .expect("XRANGE");
    reply
        .into_iter()
        .map(|(id, fields)| {
            let fields = fields
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect();
            (id, fields)
        })
        .collect()
}

async fn xlen(con: &mut ClusterConnection, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(con)
        .await
        .expect("XLEN")
}

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
