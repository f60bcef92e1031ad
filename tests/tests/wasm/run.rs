//! `beehive run` handles, publishes, retries and dead-letters.

use beehive_tests::{TempDir, component, drain, engine, entries, field, pending, redis, xlen};

use crate::config;

#[tokio::test]
async fn events_are_handled_by_the_component_and_acknowledged() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = config(
        &dir,
        &server,
        &component("beehive-test-hostile"),
        "    count: 7\n",
    );
    let engine = engine(
        &server,
        &[("events", &["handlers"]), ("receipts", &["auditors"])],
    )
    .await;
    let mut flusher = engine.event_broker().new_flusher();
    let mut ids = Vec::new();
    for i in 0..50 {
        flusher
            .publish("events", &i, &[("n", i.to_string())])
            .unwrap();
    }
    ids.extend(flusher.flush().await.unwrap());
    drain(&cfg);
    assert_eq!(pending(&server, "events", "handlers").await, 0);
    let receipts = entries(&server, "receipts").await;
    let mut of: Vec<String> = receipts
        .iter()
        .map(|(_, f)| field(f, "of").unwrap().to_string())
        .collect();
    of.sort();
    ids.sort();
    assert_eq!(of, ids, "one receipt per event");
}

#[tokio::test]
async fn publishing_is_allow_listed() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = config(
        &dir,
        &server,
        &component("beehive-test-hostile"),
        "    count: 1\n",
    );
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let broker = engine.event_broker();
    let allowed = broker
        .publish_meta("events", &[("do", "publish-to"), ("to", "receipts")])
        .await
        .unwrap();
    let refused = broker
        .publish_meta("events", &[("do", "publish-to"), ("to", "forbidden")])
        .await
        .unwrap();
    drain(&cfg);
    let receipts = entries(&server, "receipts").await;
    assert_eq!(receipts.len(), 1);
    assert_eq!(field(&receipts[0].1, "of"), Some(allowed.as_str()));
    assert_eq!(
        xlen(&server, "forbidden").await,
        0,
        "nothing written to a stream outside the allow-list"
    );
    let dead = entries(&server, "handlers-dead-letter").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        field(&dead[0].1, "beehive.origin-id"),
        Some(refused.as_str())
    );
    let reason = field(&dead[0].1, "beehive.reason").unwrap();
    assert!(
        reason.contains("stream forbidden is not in this group's publish allow-list"),
        "the guest saw the refusal: {reason}"
    );
}

#[tokio::test]
async fn a_retried_event_stays_pending_then_is_dead_lettered_after_max_deliveries() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = config(
        &dir,
        &server,
        &component("beehive-test-hostile"),
        "    max-deliveries: 3\n",
    );
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let broker = engine.event_broker();
    broker
        .publish("events", "ok-1", &[("k", "1")])
        .await
        .unwrap();
    let retried = broker
        .publish("events", "stubborn", &[("do", "retry"), ("colour", "red")])
        .await
        .unwrap();
    broker
        .publish("events", "ok-2", &[("k", "2")])
        .await
        .unwrap();

    drain(&cfg);
    assert_eq!(
        pending(&server, "events", "handlers").await,
        1,
        "only the retried event stays pending"
    );
    assert_eq!(xlen(&server, "receipts").await, 2);
    drain(&cfg); // second delivery
    assert_eq!(pending(&server, "events", "handlers").await, 1);
    assert_eq!(xlen(&server, "handlers-dead-letter").await, 0);
    drain(&cfg); // third delivery: max-deliveries reached
    assert_eq!(
        pending(&server, "events", "handlers").await,
        0,
        "dead-lettered entries are acknowledged"
    );
    let dead = entries(&server, "handlers-dead-letter").await;
    assert_eq!(dead.len(), 1);
    let f = &dead[0].1;
    assert_eq!(field(f, "beehive.origin-stream"), Some("events"));
    assert_eq!(field(f, "beehive.origin-id"), Some(retried.as_str()));
    assert_eq!(field(f, "beehive.group"), Some("handlers"));
    assert_eq!(field(f, "beehive.deliveries"), Some("3"));
    assert!(
        field(f, "beehive.reason")
            .unwrap()
            .contains("asked to retry")
    );
    assert_eq!(field(f, "colour"), Some("red"), "the original meta is kept");
    assert!(
        field(f, "s").unwrap().contains("stubborn"),
        "and the original body"
    );
}
