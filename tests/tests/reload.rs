//! Hot reload: replacing a component file while events flow loses nothing.

use std::path::Path;
use std::time::Duration;

use beehive_tests::{
    Beehive, TempDir, engine, entries, eventually, field, hostile_version, pending, redis, sha256,
};

fn config(
    dir: &TempDir,
    server: &beehive_tests::RedisServer,
    component: &Path,
) -> std::path::PathBuf {
    dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n    receipts: [auditors]\nconsumers:\n  handlers:\n    component: {}\n    publish: [receipts]\n    count: 50\n    block: 100ms\n",
            server.address(),
            component.display()
        ),
    )
}

async fn versions(server: &beehive_tests::RedisServer) -> Vec<(String, String)> {
    beehive_tests::receipt_versions(entries(server, "receipts").await)
}

#[tokio::test]
async fn swapping_v1_v2_broken_v3_under_load_handles_every_event_exactly_once() {
    let (v1, v2, v3) = (
        hostile_version("v1"),
        hostile_version("v2"),
        hostile_version("v3"),
    );
    let server = redis();
    let dir = TempDir::new();
    let live = dir.path().join("handler.wasm");
    std::fs::copy(&v1, &live).unwrap();
    let cfg = config(&dir, &server, &live);
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let host = Beehive::run(&cfg, &[]);

    // 20,000 events at a steady rate (50 every 10 ms), in the background.
    let total = 20_000usize;
    let publisher = tokio::spawn({
        let broker = engine.event_broker();
        async move {
            let mut ids = Vec::with_capacity(total);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while ids.len() < total {
                tick.tick().await;
                let mut flusher = broker.new_flusher();
                for i in 0..50 {
                    flusher
                        .publish("events", &(ids.len() + i), &[] as &[(&str, &str)])
                        .unwrap();
                }
                ids.extend(flusher.flush().await.unwrap());
            }
            ids
        }
    });
    let receipts_with = |version: &'static str| {
        let server = &server;
        move || async move { versions(server).await.iter().any(|(_, v)| v == version) }
    };
    eventually(
        "v1 to handle events",
        Duration::from_secs(60),
        receipts_with("v1"),
    )
    .await;
    std::fs::copy(&v2, &live).unwrap(); // cp over the file
    eventually(
        "v2 to take over",
        Duration::from_secs(60),
        receipts_with("v2"),
    )
    .await;
    std::fs::write(&live, b"\0asm\x0d\0\x01\0 this is not a component").unwrap();
    eventually(
        "the broken file to be refused",
        Duration::from_secs(30),
        || async {
            host.log_text()
                .contains("refused the new component version")
        },
    )
    .await;
    let staged = dir.path().join("handler.wasm.tmp");
    std::fs::copy(&v3, &staged).unwrap();
    std::fs::rename(&staged, &live).unwrap(); // atomic rename into place
    eventually(
        "v3 to take over",
        Duration::from_secs(60),
        receipts_with("v3"),
    )
    .await;

    let mut ids = publisher.await.unwrap();
    eventually(
        "every event to be handled",
        Duration::from_secs(120),
        || async {
            entries(&server, "receipts").await.len() >= total
                && pending(&server, "events", "handlers").await == 0
        },
    )
    .await;
    let receipts = versions(&server).await;
    assert_eq!(
        receipts.len(),
        total,
        "exactly one receipt per event: none lost, none twice"
    );
    let mut of: Vec<String> = receipts.iter().map(|(id, _)| id.clone()).collect();
    of.sort();
    ids.sort();
    assert_eq!(of, ids);
    // In commit order the versions never go back: v1..., v2..., v3...
    let order: Vec<&str> = receipts.iter().map(|(_, v)| v.as_str()).collect();
    let rank = |v: &str| {
        ["v1", "v2", "v3"]
            .iter()
            .position(|x| *x == v)
            .expect("only v1, v2 and v3 handle events")
    };
    assert!(
        order.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "versions interleave after a swap"
    );
    for v in ["v1", "v2", "v3"] {
        assert!(order.contains(&v), "{v} handled nothing");
    }
}

#[tokio::test]
async fn sighup_reloads_and_status_shows_the_running_digest() {
    let (v1, v2) = (hostile_version("v1"), hostile_version("v2"));
    let server = redis();
    let dir = TempDir::new();
    let live = dir.path().join("handler.wasm");
    std::fs::copy(&v1, &live).unwrap();
    let cfg = config(&dir, &server, &live);
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let broker = engine.event_broker();
    let host = Beehive::run(&cfg, &["--no-watch"]);
    broker
        .publish("events", "one", &[("n", "1")])
        .await
        .unwrap();
    eventually(
        "v1 to handle the first event",
        Duration::from_secs(60),
        || async { versions(&server).await.len() == 1 },
    )
    .await;

    std::fs::copy(&v2, &live).unwrap();
    host.signal("HUP");
    eventually("the SIGHUP reload", Duration::from_secs(60), || async {
        host.log_text().contains("reloaded component")
    })
    .await;
    broker
        .publish("events", "two", &[("n", "2")])
        .await
        .unwrap();
    eventually(
        "v2 to handle the second event",
        Duration::from_secs(30),
        || async { versions(&server).await.len() == 2 },
    )
    .await;
    let seen = versions(&server).await;
    assert_eq!((seen[0].1.as_str(), seen[1].1.as_str()), ("v1", "v2"));

    let digest = sha256(&v2);
    eventually(
        "status to show the running digest",
        Duration::from_secs(20),
        || {
            let (cfg, digest) = (cfg.clone(), digest.clone());
            async move {
                let out = std::process::Command::new(beehive_tests::beehive_bin())
                    .args(["status", "--json", "-c"])
                    .arg(&cfg)
                    .output()
                    .unwrap();
                let status: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                status["streams"][0]["groups"][0]["hosts"][0]["digest"] == digest.as_str()
            }
        },
    )
    .await;
}

/// The digests the hosts advertise, and the deployed one, from `beehive status --json`.
fn rollout(cfg: &Path) -> (Vec<String>, Option<String>) {
    let out = std::process::Command::new(beehive_tests::beehive_bin())
        .args(["status", "--json", "-c"])
        .arg(cfg)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let group = &status["streams"][0]["groups"][0];
    let hosts = group["hosts"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|h| h["digest"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    (hosts, group["deployed"].as_str().map(String::from))
}

#[tokio::test]
async fn deploy_and_rollback_swap_every_host_without_losing_events() {
    let (v1, v2) = (hostile_version("v1"), hostile_version("v2"));
    let (d1, d2) = (sha256(&v1), sha256(&v2));
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n    receipts: [auditors]\nconsumers:\n  handlers:\n    component: {}\n    publish: [receipts]\n    count: 20\n    instances: 2\n    block: 100ms\n",
            server.address(),
            v1.display()
        ),
    );
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = beehive_tests::publish_steadily(
        engine.event_broker(),
        "events",
        Duration::from_millis(20),
        stop.clone(),
    );
    let _a = Beehive::run(&cfg, &[]);
    let _b = Beehive::run(&cfg, &[]);
    eventually("both hosts to run v1", Duration::from_secs(60), || async {
        rollout(&cfg).0 == vec![d1.clone(), d1.clone()]
    })
    .await;

    let out = std::process::Command::new(beehive_tests::beehive_bin())
        .args(["deploy", "handlers"])
        .arg(&v2)
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        "both hosts to run the deployed v2",
        Duration::from_secs(60),
        || async { rollout(&cfg) == (vec![d2.clone(), d2.clone()], Some(d2.clone())) },
    )
    .await;
    eventually("v2 receipts", Duration::from_secs(30), || async {
        versions(&server).await.iter().any(|(_, v)| v == "v2")
    })
    .await;

    // A host started after the deploy runs the deployed version, not its file (v1).
    let _c = Beehive::run(&cfg, &[]);
    eventually(
        "the late host to run v2",
        Duration::from_secs(60),
        || async { rollout(&cfg).0 == vec![d2.clone(), d2.clone(), d2.clone()] },
    )
    .await;

    let out = std::process::Command::new(beehive_tests::beehive_bin())
        .args(["rollback", "handlers", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first deploy had no deployed predecessor: rollback withdraws it, and every host
    // returns to its configured file (v1).
    eventually("every host back on v1", Duration::from_secs(60), || async {
        rollout(&cfg) == (vec![d1.clone(), d1.clone(), d1.clone()], None)
    })
    .await;

    stop.cancel();
    let mut ids = publisher.await.unwrap();
    eventually(
        "every event to be handled",
        Duration::from_secs(60),
        || async {
            entries(&server, "receipts").await.len() >= ids.len()
                && pending(&server, "events", "handlers").await == 0
        },
    )
    .await;
    let mut of: Vec<String> = versions(&server)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    of.sort();
    ids.sort();
    assert_eq!(
        of, ids,
        "every event exactly once across deploy and rollback"
    );
}

#[tokio::test]
async fn rollback_restores_the_previous_deployed_version() {
    let (v1, v2, v3) = (
        hostile_version("v1"),
        hostile_version("v2"),
        hostile_version("v3"),
    );
    let (d2, d3) = (sha256(&v2), sha256(&v3));
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n    receipts: [auditors]\nconsumers:\n  handlers:\n    component: deployed\n    publish: [receipts]\n    block: 100ms\n",
            server.address()
        ),
    );
    let beehive = |args: &[&str]| {
        let out = std::process::Command::new(beehive_tests::beehive_bin())
            .args(args)
            .arg("-c")
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // `component: deployed` needs a deployment before a host can start.
    let mut early = Beehive::run(&cfg, &[]);
    assert_eq!(early.wait(Duration::from_secs(30)), Some(2));
    assert!(
        early
            .log_text()
            .contains("no version of handlers is deployed yet"),
        "{}",
        early.log_text()
    );
    // A broken component is refused by deploy itself.
    let broken = dir.write("broken.wasm", "not wasm");
    let (code, stderr) = beehive(&["deploy", "handlers", broken.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not a WebAssembly component"), "{stderr}");

    for v in [&v1, &v2, &v3] {
        let (code, stderr) = beehive(&["deploy", "handlers", v.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{stderr}");
    }
    let _host = Beehive::run(&cfg, &[]);
    eventually("the host to run v3", Duration::from_secs(60), || async {
        rollout(&cfg) == (vec![d3.clone()], Some(d3.clone()))
    })
    .await;
    let (code, stderr) = beehive(&["rollback", "handlers"]);
    assert_eq!(code, Some(0), "{stderr}");
    eventually(
        "the host to run v2 again",
        Duration::from_secs(60),
        || async { rollout(&cfg) == (vec![d2.clone()], Some(d2.clone())) },
    )
    .await;
    engine(&server, &[("events", &["handlers"])])
        .await
        .event_broker()
        .publish("events", "x", &[("n", "1")])
        .await
        .unwrap();
    eventually(
        "v2 to handle the event",
        Duration::from_secs(30),
        || async { versions(&server).await.iter().any(|(_, v)| v == "v2") },
    )
    .await;
}

#[tokio::test]
async fn sighup_applies_config_changes_and_refuses_pool_changes() {
    let v1 = hostile_version("v1");
    let server = redis();
    let dir = TempDir::new();
    let write = |address: &str, publish: &str, second: bool| {
        let second = if second {
            format!(
                "  second:\n    component: {}\n    publish: [receipts]\n    block: 100ms\n",
                v1.display()
            )
        } else {
            String::new()
        };
        dir.write(
            "beehive.yaml",
            &format!(
                "default:\n  redis: {address}:0\n  streams:\n    events: [handlers]\n    more: [second]\n    receipts: [auditors]\n    other: [auditors]\nconsumers:\n  handlers:\n    component: {}\n    publish: [{publish}]\n    block: 100ms\n{second}",
                v1.display()
            ),
        )
    };
    let cfg = write(&server.address(), "receipts", false);
    let engine = engine(&server, &[("events", &["handlers"]), ("more", &["second"])]).await;
    let broker = engine.event_broker();
    let host = Beehive::run(&cfg, &[]);
    broker
        .publish_meta("events", &[("do", "publish-to"), ("to", "other")])
        .await
        .unwrap();
    eventually(
        "the refused publish to be dead-lettered",
        Duration::from_secs(60),
        || async { beehive_tests::xlen(&server, "handlers-dead-letter").await == 1 },
    )
    .await;

    // Widen the allow-list and add a group: both take effect without a restart.
    write(&server.address(), "receipts, other", true);
    host.signal("HUP");
    eventually("the config reload", Duration::from_secs(60), || async {
        host.log_text().contains("configuration reloaded")
    })
    .await;
    let allowed = broker
        .publish_meta("events", &[("do", "publish-to"), ("to", "other")])
        .await
        .unwrap();
    let more = broker.publish("more", "x", &[("n", "1")]).await.unwrap();
    eventually(
        "the new allow-list and the new group to work",
        Duration::from_secs(60),
        || async {
            let other = entries(&server, "other").await;
            let receipts = versions(&server).await;
            other
                .iter()
                .any(|(_, f)| field(f, "of") == Some(allowed.as_str()))
                && receipts.iter().any(|(of, _)| *of == more)
        },
    )
    .await;

    // A pool address change needs a restart: refused, the running config stays.
    write("127.0.0.1:1", "receipts, other", true);
    host.signal("HUP");
    eventually("the refusal", Duration::from_secs(30), || async {
        host.log_text().contains("pool addresses need a restart")
    })
    .await;
    let after = broker.publish("more", "y", &[("n", "2")]).await.unwrap();
    eventually(
        "the running config to keep working",
        Duration::from_secs(30),
        || async { versions(&server).await.iter().any(|(of, _)| *of == after) },
    )
    .await;

    // Removing a group stops its consumers and releases their locks.
    write(&server.address(), "receipts, other", false);
    host.signal("HUP");
    eventually(
        "the group to be removed",
        Duration::from_secs(30),
        || async { host.log_text().contains("removed second") },
    )
    .await;
    let lock: Option<String> = redis::cmd("GET")
        .arg("second_consumer-1")
        .query_async(&mut beehive_tests::raw(&server).await)
        .await
        .unwrap();
    assert_eq!(lock, None);
    assert_eq!(pending(&server, "events", "handlers").await, 0);
}
