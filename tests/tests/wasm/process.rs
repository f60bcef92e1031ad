//! Whole processes: SIGKILL and reclaim, SIGTERM and drain.

use std::time::Duration;

use beehive_tests::{
    Beehive, TempDir, component, engine, entries, eventually, field, pending, raw, redis,
};

use crate::config;

#[tokio::test]
async fn a_killed_host_s_entries_are_reclaimed_by_another_consumer() {
    let server = redis();
    let dir = TempDir::new();
    let settings = "    count: 5\n    instances: 1\n    block: 100ms\n    min-idle: 1s\n    limits: {timeout: 800ms}\n";
    let cfg = config(&dir, &server, &component("beehive-test-hostile"), settings);
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let mut flusher = engine.event_broker().new_flusher();
    for i in 0..60 {
        flusher
            .publish("events", &i, &[("do", "slow"), ("ms", "20")])
            .unwrap();
    }
    let mut ids = flusher.flush().await.unwrap();

    let first = Beehive::run(&cfg, &[]);
    eventually(
        "the first host to be busy",
        Duration::from_secs(30),
        || async { entries(&server, "receipts").await.len() >= 5 },
    )
    .await;
    first.signal("KILL");
    drop(first);
    assert!(
        pending(&server, "events", "handlers").await > 0
            || entries(&server, "receipts").await.len() == 60
    );

    // The second host runs consumer-1 (whose lock the dead host still holds until its TTL)
    // and consumer-2, which reclaims the stranded entries once they are idle for min-idle.
    let cfg2 = config(
        &dir,
        &server,
        &component("beehive-test-hostile"),
        &settings.replace("instances: 1", "instances: 2"),
    );
    let _second = Beehive::run(&cfg2, &[]);
    eventually(
        "every event to be handled",
        Duration::from_secs(60),
        || async {
            pending(&server, "events", "handlers").await == 0 && {
                let mut of: Vec<String> = entries(&server, "receipts")
                    .await
                    .iter()
                    .map(|(_, f)| field(f, "of").unwrap().to_string())
                    .collect();
                of.sort();
                of.dedup();
                of.len() == 60
            }
        },
    )
    .await;
    let mut of: Vec<String> = entries(&server, "receipts")
        .await
        .iter()
        .map(|(_, f)| field(f, "of").unwrap().to_string())
        .collect();
    of.sort();
    of.dedup();
    ids.sort();
    assert_eq!(of, ids, "every event handled");
}

#[tokio::test]
async fn sigterm_finishes_the_batch_in_flight_and_releases_locks() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = config(
        &dir,
        &server,
        &component("beehive-test-hostile"),
        "    count: 4\n    block: 100ms\n    limits: {timeout: 10s}\n",
    );
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let mut flusher = engine.event_broker().new_flusher();
    for i in 0..4 {
        flusher
            .publish("events", &i, &[("do", "slow"), ("ms", "900")])
            .unwrap();
    }
    flusher.flush().await.unwrap();
    let mut host = Beehive::run(&cfg, &[]);
    eventually(
        "the slow batch to be in flight",
        Duration::from_secs(30),
        || async { pending(&server, "events", "handlers").await == 4 },
    )
    .await;
    host.signal("TERM");
    let code = host.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", host.log_text());
    assert_eq!(
        pending(&server, "events", "handlers").await,
        0,
        "the batch in flight was committed"
    );
    assert_eq!(entries(&server, "receipts").await.len(), 4);
    let lock: Option<String> = redis::cmd("GET")
        .arg("handlers_consumer-1")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(lock, None, "the lock is released");
}

#[tokio::test]
async fn a_slow_handler_just_inside_its_deadline_is_never_reclaimed_from() {
    let server = redis();
    let dir = TempDir::new();
    // The boundary: a batch deadline just below min-idle, batches that take most of it,
    // and a second consumer eager to reclaim anything idle for min-idle. (Seconds, not
    // tenths: entries read ahead wait for the batch before them, and a loaded CI machine
    // must not eat the whole margin between that wait and min-idle.)
    let cfg = config(
        &dir,
        &server,
        &component("beehive-test-hostile"),
        "    count: 2\n    instances: 2\n    block: 100ms\n    min-idle: 3s\n    limits: {timeout: 2990ms}\n",
    );
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let mut flusher = engine.event_broker().new_flusher();
    for i in 0..12 {
        flusher
            .publish("events", &i, &[("do", "slow"), ("ms", "900")])
            .unwrap();
    }
    let mut ids = flusher.flush().await.unwrap();
    let host = Beehive::run(&cfg, &[]);
    eventually(
        "every slow event to be handled",
        Duration::from_secs(60),
        || async {
            pending(&server, "events", "handlers").await == 0
                && entries(&server, "receipts").await.len() >= 12
        },
    )
    .await;
    ids.sort();
    assert_eq!(
        beehive_tests::receipt_ids(&server).await,
        ids,
        "exactly one receipt per event: nothing handled twice"
    );
    let log = host.log_text();
    assert!(
        !log.contains("reclaimed idle entries"),
        "a live consumer's entries are never reclaimed:\n{log}"
    );
}

#[tokio::test]
async fn redis_unreachable_at_start_is_retried_until_it_comes_up() {
    let mut server = redis();
    let dir = TempDir::new();
    let cfg = config(
        &dir,
        &server,
        &component("beehive-test-hostile"),
        "    block: 100ms\n",
    );
    server.stop();
    let host = Beehive::run(&cfg, &[]);
    eventually(
        "the host to log that Redis is unreachable",
        Duration::from_secs(30),
        || async {
            let log = host.log_text();
            log.contains("retrying") || log.contains("Connection refused")
        },
    )
    .await;
    server.restart().unwrap();
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let id = engine
        .event_broker()
        .publish("events", &1, &[] as &[(&str, &str)])
        .await
        .unwrap();
    eventually(
        "the event to be handled once Redis is up",
        Duration::from_secs(60),
        || async {
            entries(&server, "receipts")
                .await
                .iter()
                .any(|(_, f)| field(f, "of") == Some(id.as_str()))
        },
    )
    .await;
    let log = host.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
