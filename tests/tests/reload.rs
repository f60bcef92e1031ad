//! Hot reload: replacing a component file while events flow loses nothing.

use std::path::Path;
use std::time::Duration;

use beehive_tests::{
    Beehive, TempDir, engine, entries, eventually, field, hostile_version, pending, redis,
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
    entries(server, "receipts")
        .await
        .into_iter()
        .map(|(_, f)| {
            (
                field(&f, "of").unwrap().to_string(),
                field(&f, "version").unwrap().to_string(),
            )
        })
        .collect()
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

    let digest = {
        use std::process::Command;
        let out = Command::new("sha256sum").arg(&v2).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
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
