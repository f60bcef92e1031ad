//! Claiming pending entries between numbered consumers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use beehive_tests::{engine, eventually, pending, raw, redis};
use tokio_util::sync::CancellationToken;

async fn consumer_pending(server: &beehive_tests::RedisServer, consumer: &str) -> u64 {
    let mut con = raw(server).await;
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("stream-a")
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer)
        .query_async(&mut con)
        .await
        .unwrap();
    rows.len() as u64
}

#[tokio::test]
async fn claim_moves_every_pending_entry_and_a_running_consumer_handles_them() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    let mut flusher = broker.new_flusher();
    for i in 0..250 {
        flusher
            .publish("stream-a", &i, &[] as &[(&str, &str)])
            .unwrap();
    }
    flusher.flush().await.unwrap();
    // consumer-2 reads all 250 and fails: they stay pending on consumer-2.
    let mut failing = broker.consumer("g").unwrap();
    failing.disable_loop();
    let ran = failing
        .consume_many(CancellationToken::new(), 2, 100, |_| async {
            anyhow::bail!("down")
        })
        .await
        .unwrap();
    assert!(ran);
    assert_eq!(consumer_pending(&server, "consumer-2").await, 250);

    // consumer-1 runs (idle) while the entries are claimed to it.
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut runner = broker.consumer("g").unwrap();
    runner.set_block_time(Duration::from_millis(100));
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (handled, cancel) = (handled.clone(), cancel.clone());
        async move {
            runner
                .consume_many(cancel, 1, 100, move |events| {
                    handled
                        .lock()
                        .unwrap()
                        .extend(events.iter().map(|e| e.id()));
                    std::future::ready(Ok(()))
                })
                .await
        }
    });
    let claimer = broker.consumer("g").unwrap();
    assert_eq!(
        claimer.claim(3, 1).await.unwrap(),
        0,
        "a consumer with nothing pending is a no-op"
    );
    assert_eq!(claimer.claim(2, 1).await.unwrap(), 250);
    assert_eq!(consumer_pending(&server, "consumer-2").await, 0);

    eventually(
        "the running consumer-1 to handle the claimed entries",
        Duration::from_secs(10),
        || {
            let handled = handled.clone();
            async move { handled.lock().unwrap().len() == 250 }
        },
    )
    .await;
    eventually("their acknowledgement", Duration::from_secs(5), || async {
        pending(&server, "stream-a", "g").await == 0
    })
    .await;
    cancel.cancel();
    assert!(task.await.unwrap().unwrap());
}
