//! Hostile guests: traps, deadlines, memory caps and escape attempts.

use std::sync::Arc;
use std::time::Duration;

use beehive::runtime::{GuestSettings, WasmEngine, WasmHandler};
use beehive_tests::{component, engine, entries, eventually, field, pending, redis};
use tokio_util::sync::CancellationToken;

async fn run_until_settled(
    server: &beehive_tests::RedisServer,
    events: &[&[(&str, &str)]],
    expected_dead: usize,
) -> Vec<(String, Vec<(String, String)>)> {
    let engine = engine(
        server,
        &[("events", &["handlers"]), ("receipts", &["auditors"])],
    )
    .await;
    let broker = engine.event_broker();
    for meta in events {
        broker.publish_meta("events", meta).await.unwrap();
    }
    let wasm = WasmEngine::new().unwrap();
    let component = wasm.load_file(&component("beehive-test-hostile")).unwrap();
    let settings = GuestSettings {
        publish: vec!["receipts".into()],
        max_publishes: 100,
        memory: 16 << 20,
        timeout: Duration::from_millis(300),
        ..GuestSettings::default()
    };
    let mut consumer = broker.consumer("handlers").unwrap();
    {
        let o = consumer.options_mut();
        o.block = Duration::from_millis(100);
        o.retry_delay = Duration::from_millis(50);
        o.max_deliveries = Some(2);
    }
    let cancel = CancellationToken::new();
    let consumer = Arc::new(consumer);
    let task = tokio::spawn({
        let (consumer, cancel) = (consumer.clone(), cancel.clone());
        async move {
            consumer
                .consume_with(
                    cancel,
                    1,
                    1,
                    WasmHandler::new(component, settings, "handlers/consumer-1"),
                )
                .await
        }
    });
    eventually(
        "every event to be settled",
        Duration::from_secs(30),
        || async {
            pending(server, "events", "handlers").await == 0
                && beehive_tests::xlen(server, "handlers-dead-letter").await as usize
                    == expected_dead
        },
    )
    .await;
    assert!(!task.is_finished(), "the host keeps running");
    cancel.cancel();
    assert!(task.await.unwrap().unwrap());
    entries(server, "handlers-dead-letter").await
}

#[tokio::test]
async fn traps_deadlines_and_memory_caps_fail_the_batch_and_the_instance_recovers() {
    let server = redis();
    let dead = run_until_settled(
        &server,
        &[
            &[("do", "panic")],
            &[("n", "1")],
            &[("do", "loop")],
            &[("n", "2")],
            &[("do", "alloc")],
            &[("n", "3")],
            &[("do", "recurse")],
            &[("n", "4")],
        ],
        4,
    )
    .await;
    let reasons: Vec<&str> = dead
        .iter()
        .map(|(_, f)| field(f, "beehive.reason").unwrap())
        .collect();
    assert!(
        reasons[0].contains("panic: asked to panic (at "),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("deadline exceeded"), "{}", reasons[1]);
    assert!(reasons[2].contains("memory"), "{}", reasons[2]);
    assert!(
        reasons[3].contains("stack overflow") || reasons[3].contains("trapped"),
        "{}",
        reasons[3]
    );
    for (_, f) in &dead {
        assert_eq!(field(f, "beehive.deliveries"), Some("2"));
    }
    // Every well-behaved event after a hostile one was still handled.
    let receipts = entries(&server, "receipts").await;
    assert_eq!(receipts.len(), 4);
}

#[tokio::test]
async fn a_guest_cannot_read_files_environment_or_open_sockets() {
    let server = redis();
    let addr = server.address();
    let dead = run_until_settled(
        &server,
        &[
            &[("do", "file")],
            &[("do", "env")],
            &[("do", "socket"), ("addr", addr.as_str())],
        ],
        3,
    )
    .await;
    let reasons: Vec<&str> = dead
        .iter()
        .map(|(_, f)| field(f, "beehive.reason").unwrap())
        .collect();
    assert!(reasons[0].starts_with("file: "), "{}", reasons[0]);
    assert_eq!(reasons[1], "env: empty");
    assert!(reasons[2].starts_with("socket: "), "{}", reasons[2]);
}

#[tokio::test]
async fn wrong_outcome_counts_and_huge_errors_are_retried_then_dead_lettered() {
    let server = redis();
    let dead = run_until_settled(
        &server,
        &[
            &[("do", "wrong-count")],
            &[("do", "huge-error")],
            &[("n", "ok")],
        ],
        2,
    )
    .await;
    let reasons: Vec<&str> = dead
        .iter()
        .map(|(_, f)| field(f, "beehive.reason").unwrap())
        .collect();
    assert!(
        reasons[0].contains("0 outcomes for 1 events"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].len() < 8192,
        "a megabyte error is truncated, got {} bytes",
        reasons[1].len()
    );
}

#[tokio::test]
async fn a_batch_cannot_publish_past_max_publishes() {
    let server = redis();
    let engine = engine(
        &server,
        &[("events", &["handlers"]), ("receipts", &["auditors"])],
    )
    .await;
    let broker = engine.event_broker();
    let flood = broker
        .publish_meta("events", &[("do", "publish-many"), ("n", "5000")])
        .await
        .unwrap();
    let fine = broker
        .publish_meta("events", &[("do", "publish-many"), ("n", "50")])
        .await
        .unwrap();
    let wasm = WasmEngine::new().unwrap();
    let component = wasm.load_file(&component("beehive-test-hostile")).unwrap();
    let settings = GuestSettings {
        publish: vec!["receipts".into()],
        max_publishes: 100,
        ..GuestSettings::default()
    };
    let mut consumer = broker.consumer("handlers").unwrap();
    consumer.disable_loop();
    assert!(
        consumer
            .consume_with(
                CancellationToken::new(),
                1,
                1,
                WasmHandler::new(component, settings, "handlers/consumer-1")
            )
            .await
            .unwrap()
    );
    let dead = entries(&server, "handlers-dead-letter").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(field(&dead[0].1, "beehive.origin-id"), Some(flood.as_str()));
    assert!(
        field(&dead[0].1, "beehive.reason")
            .unwrap()
            .contains("max-publishes"),
        "{dead:?}"
    );
    // What the flooding batch published before the limit is committed with its outcome (the
    // handler chose to dead-letter it); the well-behaved batch publishes all 50.
    let receipts = entries(&server, "receipts").await;
    assert_eq!(
        receipts
            .iter()
            .filter(|(_, f)| field(f, "of") == Some(fine.as_str()))
            .count(),
        50
    );
    assert_eq!(
        receipts
            .iter()
            .filter(|(_, f)| field(f, "of") == Some(flood.as_str()))
            .count(),
        100
    );
}

#[tokio::test]
async fn huge_bodies_binary_meta_and_corrupt_bodies_never_crash_the_host() {
    let server = redis();
    let mut con = beehive_tests::raw(&server).await;
    let huge = vec![0x5au8; 24 << 20]; // above the 16 MiB memory cap
    let add = |fields: Vec<(Vec<u8>, Vec<u8>)>| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("events").arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd
    };
    let cmds = [
        add(vec![
            (b"s".to_vec(), huge.clone()),
            (b"n".to_vec(), b"huge".to_vec()),
        ]),
        add(vec![
            (b"n".to_vec(), b"binary".to_vec()),
            (b"bin".to_vec(), vec![0xff, 0xfe, 0x00, 0x80]),
            (vec![0xc3, 0x28], b"bad-utf8-key".to_vec()),
        ]),
        add(vec![
            (b"s".to_vec(), vec![0xc1, 0xc1, 0xff]),
            (b"n".to_vec(), b"corrupt".to_vec()),
        ]),
    ];
    let mut ids = Vec::new();
    for cmd in cmds {
        ids.push(cmd.query_async::<String>(&mut con).await.unwrap());
    }
    let dead = run_until_settled(&server, &[], 1).await;
    assert_eq!(dead.len(), 1);
    let (_, fields) = &dead[0];
    assert_eq!(field(fields, "beehive.origin-id"), Some(ids[0].as_str()));
    let reason = field(fields, "beehive.reason").unwrap();
    assert!(
        reason.contains("memory"),
        "the reason names the memory cap: {reason}"
    );
    let mut of: Vec<String> = entries(&server, "receipts")
        .await
        .iter()
        .map(|(_, f)| field(f, "of").unwrap().to_string())
        .collect();
    of.sort();
    assert_eq!(
        of,
        vec![ids[1].clone(), ids[2].clone()],
        "the others are handled"
    );
}
