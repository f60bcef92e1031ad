//! Publishes and acknowledgements are committed together, or not at all.

use std::sync::atomic::Ordering;
use std::time::Duration;

use beehive::runtime::{GuestSettings, WasmEngine, WasmHandler};
use beehive_tests::{component, engine, entries, eventually, field, pending, redis, xlen};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_fault_between_handling_and_commit_publishes_nothing_and_redelivers_once() {
    let server = redis();
    let engine = engine(
        &server,
        &[("events", &["handlers"]), ("receipts", &["auditors"])],
    )
    .await;
    let id = engine
        .event_broker()
        .publish("events", "pay", &[("order", "7")])
        .await
        .unwrap();
    let wasm = WasmEngine::new().unwrap();
    let component = wasm.load_file(&component("beehive-test-hostile")).unwrap();
    let settings = GuestSettings {
        publish: vec!["receipts".into()],
        max_publishes: 100,
        memory: 32 << 20,
        timeout: Duration::from_secs(2),
        ..GuestSettings::default()
    };
    let mut consumer = engine.event_broker().consumer("handlers").unwrap();
    consumer.options_mut().block = Duration::from_millis(100);
    consumer.options_mut().retry_delay = Duration::from_millis(800);
    let faults = consumer.options_mut().fail_commits.clone();
    faults.store(1, Ordering::SeqCst);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            consumer
                .consume_with(
                    cancel,
                    1,
                    10,
                    WasmHandler::new(component, settings, "handlers/consumer-1"),
                )
                .await
        }
    });
    eventually("the injected fault to hit", Duration::from_secs(10), || {
        let faults = faults.clone();
        async move { faults.load(Ordering::SeqCst) == 0 }
    })
    .await;
    // The handler ran and published, but the commit never reached Redis.
    assert_eq!(
        xlen(&server, "receipts").await,
        0,
        "nothing published without the ack"
    );
    assert_eq!(
        pending(&server, "events", "handlers").await,
        1,
        "nothing acknowledged without the publish"
    );

    eventually(
        "the redelivered batch to commit",
        Duration::from_secs(10),
        || async { pending(&server, "events", "handlers").await == 0 },
    )
    .await;
    let receipts = entries(&server, "receipts").await;
    assert_eq!(receipts.len(), 1, "committed exactly once");
    assert_eq!(field(&receipts[0].1, "of"), Some(id.as_str()));
    cancel.cancel();
    assert!(task.await.unwrap().unwrap());
}
