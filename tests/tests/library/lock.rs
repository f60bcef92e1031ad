//! The single-runner lock: refreshed in the background, lost when deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use beehive_tests::{engine, eventually, pending, raw, redis};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_slow_handler_keeps_its_lock_and_a_deleted_lock_stops_the_consumer() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    broker
        .publish("stream-a", "slow", &[] as &[(&str, &str)])
        .await
        .unwrap();
    let ttl = Duration::from_millis(600);
    let mut consumer = broker.consumer("g").unwrap();
    consumer
        .set_lock_ttl(ttl)
        .set_block_time(Duration::from_millis(100));
    let handled = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn({
        let handled = handled.clone();
        async move {
            consumer
                .consume(CancellationToken::new(), 10, move |events| {
                    let handled = handled.clone();
                    async move {
                        // Three TTLs: only a background refresh keeps the lock alive.
                        tokio::time::sleep(3 * ttl).await;
                        handled.fetch_add(events.len(), Ordering::SeqCst);
                        Ok(())
                    }
                })
                .await
        }
    });
    eventually(
        "the slow batch to be committed",
        Duration::from_secs(10),
        || {
            let handled = handled.clone();
            let server = &server;
            async move {
                handled.load(Ordering::SeqCst) == 1 && pending(server, "stream-a", "g").await == 0
            }
        },
    )
    .await;
    let mut con = raw(&server).await;
    let holder: Option<String> = redis::cmd("GET")
        .arg("g_consumer-1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(holder.is_some(), "the lock is still held after three TTLs");
    assert!(!task.is_finished());

    let _: () = redis::cmd("DEL")
        .arg("g_consumer-1")
        .query_async(&mut con)
        .await
        .unwrap();
    let at = Instant::now();
    let ran = task.await.unwrap().unwrap();
    assert!(!ran, "a lost lock makes consume return false");
    // Within one refresh interval (TTL / 3), plus scheduling slack.
    assert!(
        at.elapsed() < ttl / 3 + Duration::from_millis(300),
        "took {:?}",
        at.elapsed()
    );
}

#[tokio::test]
async fn a_lock_lost_during_a_batch_commits_nothing() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    broker
        .publish("stream-a", "x", &[] as &[(&str, &str)])
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    let mut consumer = broker.consumer("g").unwrap();
    consumer.set_lock_ttl(ttl);
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let gates = Arc::new(std::sync::Mutex::new(Some((entered_tx, release_rx))));
    let task = tokio::spawn(async move {
        consumer
            .consume(CancellationToken::new(), 10, move |_| {
                let gates = gates.lock().unwrap().take();
                async move {
                    if let Some((entered, release)) = gates {
                        let _ = entered.send(());
                        let _ = release.await;
                    }
                    Ok(())
                }
            })
            .await
    });
    entered_rx.await.unwrap();
    // Another runner takes over the lock while the batch is being handled.
    let mut con = raw(&server).await;
    let _: () = redis::cmd("SET")
        .arg("g_consumer-1")
        .arg("someone-else")
        .query_async(&mut con)
        .await
        .unwrap();
    let _ = release_tx.send(());
    assert!(!task.await.unwrap().unwrap());
    assert_eq!(
        pending(&server, "stream-a", "g").await,
        1,
        "the loser must not acknowledge"
    );
    let holder: String = redis::cmd("GET")
        .arg("g_consumer-1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        holder, "someone-else",
        "and must not delete the new holder's lock"
    );
}

/// Publishes a receipt (meta `of` = the event's ID) for every event, after waiting on
/// `stall` (a blocking wait that freezes its whole single-threaded runtime).
struct Receipts {
    stall: Option<std::sync::mpsc::Receiver<()>>,
    entered: Option<std::sync::mpsc::Sender<()>>,
}

impl beehive::BatchHandler for Receipts {
    async fn handle(&mut self, events: &[beehive::Event]) -> anyhow::Result<beehive::Decision> {
        if let (Some(stall), Some(entered)) = (self.stall.take(), self.entered.take()) {
            entered.send(()).unwrap();
            // Blocks the thread: the runtime cannot refresh the lock meanwhile.
            let _ = stall.recv();
        }
        let mut decision = beehive::Decision::ack_all(events.len());
        for event in events {
            decision.publishes.push(
                beehive::NewEvent::new("receipts", None, vec![("of".into(), event.id())]).unwrap(),
            );
        }
        Ok(decision)
    }
}

#[tokio::test]
async fn a_stalled_event_loop_loses_its_lock_and_never_commits_after() {
    let server = redis();
    let engine = engine(
        &server,
        &[("stream-a", &["g"]), ("receipts", &["auditors"])],
    )
    .await;
    let broker = engine.event_broker();
    let id = broker
        .publish("stream-a", "x", &[] as &[(&str, &str)])
        .await
        .unwrap();
    let ttl = Duration::from_secs(1);
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (stall_tx, stall_rx) = std::sync::mpsc::channel();
    // The first runner lives on its own single-threaded runtime, which the handler stalls.
    let stalled = {
        let broker = broker.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut consumer = broker.consumer("g").unwrap();
                consumer.set_lock_ttl(ttl).disable_loop();
                let handler = Receipts {
                    stall: Some(stall_rx),
                    entered: Some(entered_tx),
                };
                consumer
                    .consume_with(CancellationToken::new(), 1, 10, handler)
                    .await
            })
        })
    };
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    let mut con = raw(&server).await;
    eventually(
        "the stalled runner's lock to expire",
        Duration::from_secs(10),
        || {
            let mut con = con.clone();
            async move {
                let exists: bool = redis::cmd("EXISTS")
                    .arg("g_consumer-1")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                !exists
            }
        },
    )
    .await;
    // A successor with the same name takes the lock and handles the stranded entry.
    let mut successor = broker.consumer("g").unwrap();
    successor.set_lock_ttl(ttl).disable_loop();
    let ran = successor
        .consume_with(
            CancellationToken::new(),
            1,
            10,
            Receipts {
                stall: None,
                entered: None,
            },
        )
        .await
        .unwrap();
    assert!(ran);
    // The stalled runner wakes up and tries to commit its (identical) work.
    stall_tx.send(()).unwrap();
    let result = tokio::task::spawn_blocking(move || stalled.join().unwrap())
        .await
        .unwrap();
    assert!(
        !matches!(result, Ok(true)),
        "the stalled runner must notice it lost its lock: {result:?}"
    );
    let receipts: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg("receipts")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        receipts.len(),
        1,
        "one receipt for {id}: the loser committed nothing"
    );
    assert_eq!(pending(&server, "stream-a", "g").await, 0);
}
