//! Operating Beehive: tail, redrive and status, through the real binary.

use std::process::{Command, Output};

use beehive_tests::{
    TempDir, beehive_bin, component, drain, engine, entries, field, pending, raw, redis, sample,
    scrape, xlen,
};
use serde::Serialize;

fn beehive(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(beehive_bin())
        .args(args)
        .arg("-c")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .expect("run beehive")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Serialize)]
struct Order {
    id: u32,
    total: f64,
    items: Vec<String>,
}

async fn groups_info(server: &beehive_tests::RedisServer, stream: &str) -> redis::Value {
    redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut raw(server).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn tail_prints_bodies_as_json_without_disturbing_groups() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    orders: [billing]\n",
            server.address()
        ),
    );
    let engine = engine(&server, &[("orders", &["billing"])]).await;
    let broker = engine.event_broker();
    let first = broker
        .publish(
            "orders",
            &Order {
                id: 7,
                total: 12.5,
                items: vec!["tea".into()],
            },
            &[("version", "2")],
        )
        .await
        .unwrap();
    let second = broker
        .publish_meta("orders", &[("url", "/about-us/")])
        .await
        .unwrap();
    // A group with one pending entry, to check tail leaves it alone.
    let mut consumer = broker.consumer("billing").unwrap();
    consumer.disable_loop();
    consumer
        .consume(beehive::CancellationToken::new(), 1, |_| async {
            anyhow::bail!("keep pending")
        })
        .await
        .unwrap();
    let before = groups_info(&server, "orders").await;
    let pending_before = pending(&server, "orders", "billing").await;

    let out = ok(&beehive(
        &["tail", "orders", "--from", "0", "--count", "2", "--json"],
        &cfg,
    ));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], first.as_str());
    assert_eq!(
        lines[0]["body"],
        serde_json::json!({"id": 7, "total": 12.5, "items": ["tea"]})
    );
    assert_eq!(lines[0]["meta"]["version"], "2");
    assert_eq!(lines[1]["id"], second.as_str());
    assert_eq!(lines[1]["body"], serde_json::Value::Null);
    assert_eq!(lines[1]["meta"]["url"], "/about-us/");

    let text = ok(&beehive(
        &["tail", "orders", "--from", &second, "--count", "1"],
        &cfg,
    ));
    assert_eq!(text.trim(), format!("{second} orders url=/about-us/"));

    assert_eq!(
        groups_info(&server, "orders").await,
        before,
        "no group created or changed"
    );
    assert_eq!(pending(&server, "orders", "billing").await, pending_before);
}

#[tokio::test]
async fn tail_follows_new_entries() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    orders: [billing]\n",
            server.address()
        ),
    );
    let engine = engine(&server, &[("orders", &["billing"])]).await;
    let broker = engine.event_broker();
    broker
        .publish("orders", "old", &[("k", "v")])
        .await
        .unwrap();
    let child = Command::new(beehive_bin())
        .args(["tail", "orders", "--count", "1", "-c"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Publish until tail has printed one (new) entry: it started after "old".
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let mut new_id = String::new();
    while !waiter.is_finished() {
        new_id = broker
            .publish("orders", "new", &[("k", "v")])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = waiter.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("body=\"new\""), "{text}");
    assert!(!text.contains("\"old\""), "{text}");
    assert!(!new_id.is_empty());
}

#[tokio::test]
async fn redrive_moves_dead_letters_back_and_they_are_handled() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n    receipts: [auditors]\n    other: [auditors]\nconsumers:\n  handlers:\n    component: {}\n    publish: [receipts]\n",
            server.address(),
            component("beehive-test-hostile").display()
        ),
    );
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let broker = engine.event_broker();
    // Two events whose publish is refused (so they are dead-lettered), one of another kind.
    let a = broker
        .publish("events", "a", &[("do", "publish-to"), ("to", "other")])
        .await
        .unwrap();
    let b = broker
        .publish("events", "b", &[("do", "publish-to"), ("to", "other")])
        .await
        .unwrap();
    drain(&cfg);
    assert_eq!(xlen(&server, "handlers-dead-letter").await, 2);

    let out = ok(&beehive(
        &["redrive", "handlers-dead-letter", "--dry-run"],
        &cfg,
    ));
    assert!(out.contains("would redrive 2 entries"), "{out}");
    assert_eq!(
        xlen(&server, "handlers-dead-letter").await,
        2,
        "a dry run changes nothing"
    );
    assert_eq!(xlen(&server, "events").await, 2);

    let out = ok(&beehive(
        &[
            "redrive",
            "handlers-dead-letter",
            "--filter",
            "reason=no such reason",
        ],
        &cfg,
    ));
    assert!(out.contains("redrove 0 entries"), "{out}");

    // Redriven, the entries come back to their origin stream with their body and meta; a
    // tag is rewritten so the handler now publishes where it may.
    let out = ok(&beehive(
        &[
            "redrive",
            "handlers-dead-letter",
            "--filter",
            "reason=allow-list",
        ],
        &cfg,
    ));
    assert!(out.contains("redrove 2 entries"), "{out}");
    assert_eq!(xlen(&server, "handlers-dead-letter").await, 0);
    let back = entries(&server, "events").await;
    assert_eq!(back.len(), 4);
    for (_, fields) in &back[2..] {
        assert_eq!(field(fields, "do"), Some("publish-to"));
        assert_eq!(field(fields, "beehive.redrives"), Some("1"));
        assert_eq!(
            field(fields, "beehive.reason"),
            None,
            "dead-letter fields are stripped"
        );
    }
    // Make the redriven entries succeed: let the group publish to `other`, and drain.
    let cfg = dir.write(
        "beehive.yaml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("publish: [receipts]", "publish: [receipts, other]"),
    );
    drain(&cfg);
    assert_eq!(pending(&server, "events", "handlers").await, 0);
    assert_eq!(xlen(&server, "handlers-dead-letter").await, 0);
    let handled: Vec<String> = entries(&server, "other")
        .await
        .iter()
        .map(|(_, f)| field(f, "of").unwrap().to_string())
        .collect();
    assert_eq!(handled.len(), 2, "both redriven entries were handled");
    assert!(
        !handled.contains(&a) && !handled.contains(&b),
        "they carry new IDs"
    );
}

#[tokio::test]
async fn status_json_reports_oldest_pending_age_and_dead_letter_lengths() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\nconsumers:\n  handlers:\n    component: {}\n    dead-letter: handlers-dlq\n",
            server.address(),
            component("beehive-test-hostile").display()
        ),
    );
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let broker = engine.event_broker();
    broker
        .publish_meta("events", &[("do", "retry")])
        .await
        .unwrap();
    broker
        .publish_meta("events", &[("do", "publish-to"), ("to", "nowhere")])
        .await
        .unwrap();
    drain(&cfg);
    let out = ok(&beehive(&["status", "--json"], &cfg));
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let group = &status["streams"][0]["groups"][0];
    assert_eq!(group["name"], "handlers");
    assert_eq!(group["pending"], 1);
    assert!(group["oldest_pending_age"].as_u64().is_some(), "{group}");
    assert_eq!(group["dead_letter"]["stream"], "handlers-dlq");
    assert_eq!(group["dead_letter"]["length"], 1);
    let table = ok(&beehive(&["status"], &cfg));
    assert!(table.contains("DEAD-LETTER"), "{table}");
}

#[tokio::test]
async fn metrics_count_what_handlers_decided() {
    let server = redis();
    let dir = TempDir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n    receipts: [auditors]\nmetrics:\n  addr: 127.0.0.1:{port}\nconsumers:\n  handlers:\n    component: {}\n    publish: [receipts]\n    block: 100ms\n    count: 5\n    max-deliveries: 2\n",
            server.address(),
            component("beehive-test-hostile").display()
        ),
    );
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let broker = engine.event_broker();
    let mut flusher = broker.new_flusher();
    for i in 0..10 {
        flusher.publish("events", &i, &[("n", "ok")]).unwrap();
    }
    for _ in 0..3 {
        flusher.publish_meta("events", &[("do", "retry")]).unwrap();
    }
    for _ in 0..2 {
        flusher
            .publish_meta("events", &[("do", "publish-to"), ("to", "nowhere")])
            .unwrap();
    }
    flusher.flush().await.unwrap();
    // GC runs one pass at start and then every interval: with an hour, at most that first
    // pass trims (what the first batches acknowledged, if it runs after them), so the stream
    // length the gauge must report settles.
    let host = beehive_tests::Beehive::run(&cfg, &["--gc-interval", "1h"]);
    let g = "{group=\"handlers\"}";
    beehive_tests::eventually(
        "the metrics to count every decision",
        std::time::Duration::from_secs(30),
        || async {
            let text = scrape(port);
            sample(&text, &format!("beehive_events_dead_lettered_total{g}")) == Some(5.0)
                && sample(&text, &format!("beehive_events_acked_total{g}")) == Some(10.0)
        },
    )
    .await;
    let text = scrape(port);
    assert_eq!(
        sample(&text, &format!("beehive_events_acked_total{g}")),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("beehive_events_retried_total{g}")),
        Some(3.0),
        "first deliveries of the retried events\n{text}"
    );
    assert_eq!(
        sample(&text, &format!("beehive_events_dead_lettered_total{g}")),
        Some(5.0),
        "3 gave up + 2 refused publishes\n{text}"
    );
    assert_eq!(
        sample(&text, &format!("beehive_events_handled_total{g}")),
        Some(18.0),
        "15 first deliveries + 3 redeliveries\n{text}"
    );
    assert_eq!(
        sample(&text, &format!("beehive_publishes_refused_total{g}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "beehive_publishes_total{group=\"handlers\",stream=\"receipts\"}"
        ),
        Some(10.0),
        "{text}"
    );
    assert!(text.contains("beehive_batch_seconds_bucket"), "{text}");
    assert!(text.contains("beehive_event_delay_seconds_count"), "{text}");
    assert_eq!(
        sample(&text, &format!("beehive_locks_held{g}")),
        Some(1.0),
        "{text}"
    );
    beehive_tests::eventually(
        "the gauges to refresh",
        std::time::Duration::from_secs(15),
        || async {
            let text = scrape(port);
            let length = xlen(&server, "events").await;
            sample(
                &text,
                "beehive_pending{group=\"handlers\",stream=\"events\"}",
            ) == Some(0.0)
                && sample(&text, "beehive_stream_length{stream=\"events\"}") == Some(length as f64)
        },
    )
    .await;
    assert!(!text.contains("1795"), "no entry IDs in labels");
    drop(host);
    assert_eq!(xlen(&server, "handlers-dead-letter").await, 5);
}
