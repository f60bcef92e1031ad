//! Fleet deploy across hand-overs: a consumer that moves to another host runs the version
//! deployed through Redis there, not the host's configured file.

use std::path::Path;
use std::time::Duration;

use beehive_tests::{
    Beehive, TempDir, engine, entries, eventually, hostile_version, pending, redis,
};

/// `(of, version)` of every receipt.
async fn versions(server: &beehive_tests::RedisServer) -> Vec<(String, String)> {
    beehive_tests::receipt_versions(entries(server, "receipts").await)
}

/// The hosts running each consumer of `handlers`, from `beehive status --json`.
fn running_hosts(cfg: &Path) -> Vec<String> {
    let out = std::process::Command::new(beehive_tests::beehive_bin())
        .args(["status", "--json", "-c"])
        .arg(cfg)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    status["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == "events")
        .flat_map(|s| s["groups"].as_array().cloned().unwrap_or_default())
        .filter(|g| g["name"] == "handlers")
        .flat_map(|g| g["consumers"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["host"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn a_consumer_handed_over_after_a_deploy_runs_the_deployed_version() {
    let (v1, v2) = (hostile_version("v1"), hostile_version("v2"));
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n    receipts: [auditors]\nconsumers:\n  handlers:\n    component: {}\n    publish: [receipts]\n    count: 20\n    instances: 2\n    block: 100ms\n    lock-ttl: 2s\n",
            server.address(),
            v1.display()
        ),
    );
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let broker = engine.event_broker();
    let mut a = Beehive::run(&cfg, &[]);
    let b = Beehive::run(&cfg, &[]);
    eventually(
        "each host to run one consumer",
        Duration::from_secs(30),
        || async {
            let mut hosts = running_hosts(&cfg);
            hosts.sort();
            hosts.dedup();
            hosts.len() == 2
        },
    )
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
    // Both hosts swap to v2: a batch of events lands on both consumers with v2.
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(broker.publish("events", &i, &[("n", "x")]).await.unwrap());
    }
    eventually(
        "the batch to be handled",
        Duration::from_secs(30),
        || async {
            pending(&server, "events", "handlers").await == 0
                && entries(&server, "receipts").await.len() >= ids.len()
        },
    )
    .await;

    // The host that runs consumer-1 or consumer-2 dies: the survivor takes its consumer
    // (once the lock expires) and runs it with the deployed v2, not its file's v1.
    a.signal("KILL");
    a.wait(Duration::from_secs(10));
    let survivor = format!(":{}", b.pid());
    eventually(
        "the survivor to run both consumers",
        Duration::from_secs(30),
        || async {
            let hosts = running_hosts(&cfg);
            hosts.len() == 2 && hosts.iter().all(|h| h.ends_with(&survivor))
        },
    )
    .await;
    let mut late = Vec::new();
    for i in 0..40 {
        late.push(broker.publish("events", &i, &[("n", "y")]).await.unwrap());
    }
    eventually("the late events", Duration::from_secs(30), || async {
        let got = versions(&server).await;
        late.iter().all(|id| got.iter().any(|(of, _)| of == id))
    })
    .await;
    let got = versions(&server).await;
    for id in &late {
        let version = got.iter().find(|(of, _)| of == id).map(|(_, v)| v.as_str());
        assert_eq!(
            version,
            Some("v2"),
            "event {id} handled after the hand-over runs the deployed version"
        );
    }
    ids.extend(late);
    let mut of: Vec<String> = got.into_iter().map(|(id, _)| id).collect();
    of.sort();
    ids.sort();
    assert_eq!(of, ids, "every event exactly once across the hand-over");
}
