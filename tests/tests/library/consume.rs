//! Consuming: batches, order, numbered consumers, cancellation, failing handlers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beehive::Event;
use beehive_tests::{engine, eventually, pending, redis};
use tokio_util::sync::CancellationToken;

type Batches = Arc<Mutex<Vec<Vec<Event>>>>;

/// A handler that records every batch.
fn recorder() -> (
    Batches,
    impl FnMut(Vec<Event>) -> std::future::Ready<anyhow::Result<()>> + Send,
) {
    let batches: Batches = Arc::default();
    let sink = batches.clone();
    (batches, move |events| {
        sink.lock().unwrap().push(events);
        std::future::ready(Ok(()))
    })
}

/// The IDs `stream`'s events were handled in, across batches.
fn ids_of(batches: &[Vec<Event>], stream: &str) -> Vec<String> {
    batches
        .iter()
        .flatten()
        .filter(|e| e.stream() == stream)
        .map(Event::id)
        .collect()
}

async fn publish_n(broker: &beehive::EventBroker, stream: &str, n: usize) -> Vec<String> {
    let mut flusher = broker.new_flusher();
    for i in 0..n {
        flusher
            .publish(stream, &format!("{stream}-{i}"), &[] as &[(&str, &str)])
            .unwrap();
    }
    flusher.flush().await.unwrap()
}

#[tokio::test]
async fn draining_reads_everything_in_batches_of_count_in_order() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    let ids = publish_n(&broker, "stream-a", 10).await;
    let mut consumer = broker.consumer("g").unwrap();
    consumer.disable_loop();
    let (batches, handler) = recorder();
    assert!(
        consumer
            .consume(CancellationToken::new(), 5, handler)
            .await
            .unwrap()
    );
    let sizes: Vec<usize> = batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, [5, 5]);
    let seen: Vec<String> = batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(Event::id)
        .collect();
    assert_eq!(seen, ids);
    assert_eq!(pending(&server, "stream-a", "g").await, 0);

    let (again, handler) = recorder();
    assert!(
        consumer
            .consume(CancellationToken::new(), 5, handler)
            .await
            .unwrap()
    );
    assert!(
        again.lock().unwrap().is_empty(),
        "a second drain has nothing to do"
    );
}

#[tokio::test]
async fn count_bounds_the_whole_batch_across_streams() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"]), ("stream-b", &["g"])]).await;
    let broker = engine.event_broker();
    let a = publish_n(&broker, "stream-a", 10).await;
    let b = publish_n(&broker, "stream-b", 10).await;
    let mut consumer = broker.consumer("g").unwrap();
    consumer.disable_loop();
    let (batches, handler) = recorder();
    assert!(
        consumer
            .consume(CancellationToken::new(), 8, handler)
            .await
            .unwrap()
    );
    let batches = batches.lock().unwrap();
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 8),
        "{:?}",
        batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 20);
    assert_eq!(ids_of(&batches, "stream-a"), a);
    assert_eq!(ids_of(&batches, "stream-b"), b);
}

#[tokio::test]
async fn a_second_runner_of_the_same_consumer_is_refused() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    let mut first = broker.consumer("g").unwrap();
    first.set_block_time(Duration::from_millis(200));
    let cancel = CancellationToken::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            first
                .consume(cancel, 10, move |events| {
                    counter.fetch_add(events.len(), Ordering::SeqCst);
                    std::future::ready(Ok(()))
                })
                .await
        }
    });
    publish_n(&broker, "stream-a", 1).await;
    eventually("the first consumer to run", Duration::from_secs(10), || {
        let handled = handled.clone();
        async move { handled.load(Ordering::SeqCst) == 1 }
    })
    .await;

    let second = broker.consumer("g").unwrap();
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let ran = second
        .consume(CancellationToken::new(), 10, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(()))
        })
        .await
        .unwrap();
    assert!(!ran, "the second runner must return false");
    assert_eq!(called.load(Ordering::SeqCst), 0);

    // The first still runs: it handles a new event, then stops with true on cancel.
    publish_n(&broker, "stream-a", 1).await;
    eventually(
        "the first consumer to keep running",
        Duration::from_secs(10),
        || {
            let handled = handled.clone();
            async move { handled.load(Ordering::SeqCst) == 2 }
        },
    )
    .await;
    cancel.cancel();
    assert!(running.await.unwrap().unwrap());
}

#[tokio::test]
async fn numbered_consumers_share_the_work_exactly_once() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    let ids = publish_n(&broker, "stream-a", 500).await;
    let seen: Arc<Mutex<Vec<(u32, String)>>> = Arc::default();
    let mut tasks = Vec::new();
    for nr in [1u32, 2] {
        let mut consumer = broker.consumer("g").unwrap();
        consumer.disable_loop();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            consumer
                .consume_many(CancellationToken::new(), nr, 7, move |events| {
                    let seen = seen.clone();
                    async move {
                        // Yield so both consumers interleave.
                        tokio::task::yield_now().await;
                        seen.lock()
                            .unwrap()
                            .extend(events.iter().map(|e| (nr, e.id())));
                        Ok(())
                    }
                })
                .await
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().unwrap());
    }
    let mut got: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "every event exactly once");
    assert_eq!(pending(&server, "stream-a", "g").await, 0);
}

#[tokio::test]
async fn cancel_interrupts_a_blocking_read_promptly() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let mut consumer = engine.event_broker().consumer("g").unwrap();
    consumer.set_block_time(Duration::from_secs(10));
    let cancel = CancellationToken::new();
    let started = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            consumer
                .consume(cancel, 10, |_| std::future::ready(Ok(())))
                .await
        }
    });
    // Wait until the consumer is blocked in XREADGROUP on the server.
    eventually("the consumer to block", Duration::from_secs(10), || {
        let server_port = server.port();
        let started = started.clone();
        async move {
            let mut con = redis::Client::open(format!("redis://127.0.0.1:{server_port}/"))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut con)
                .await
                .unwrap();
            let blocked = clients
                .lines()
                .any(|l| l.contains("cmd=xreadgroup") && l.contains("flags=b"));
            started.store(blocked as usize, Ordering::SeqCst);
            blocked
        }
    })
    .await;
    let at = Instant::now();
    cancel.cancel();
    let ran = task.await.unwrap().unwrap();
    let took = at.elapsed();
    assert!(ran);
    assert!(took < Duration::from_millis(200), "cancel took {took:?}");
}

#[tokio::test]
async fn cancel_lets_the_batch_in_flight_finish_and_commit() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    publish_n(&broker, "stream-a", 3).await;
    let consumer = broker.consumer("g").unwrap();
    let cancel = CancellationToken::new();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let mut entered_tx = Some(entered_tx);
    let finished = Arc::new(AtomicUsize::new(0));
    let done = finished.clone();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            consumer
                .consume(cancel, 10, move |events| {
                    let tx = entered_tx.take();
                    let done = done.clone();
                    async move {
                        if let Some(tx) = tx {
                            let _ = tx.send(());
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        done.fetch_add(events.len(), Ordering::SeqCst);
                        Ok(())
                    }
                })
                .await
        }
    });
    entered_rx.await.unwrap();
    cancel.cancel();
    assert!(task.await.unwrap().unwrap());
    assert_eq!(
        finished.load(Ordering::SeqCst),
        3,
        "the slow batch finished"
    );
    assert_eq!(
        pending(&server, "stream-a", "g").await,
        0,
        "and was acknowledged"
    );
}

#[tokio::test]
async fn a_failing_handler_leaves_the_batch_pending_and_retries_it() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    let ids = publish_n(&broker, "stream-a", 4).await;
    let mut consumer = broker.consumer("g").unwrap();
    consumer.set_block_time(Duration::from_millis(100));
    consumer.options_mut().retry_delay = Duration::from_millis(100);
    let calls = Arc::new(AtomicUsize::new(0));
    let handled: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (calls, handled, cancel) = (calls.clone(), handled.clone(), cancel.clone());
        async move {
            consumer
                .consume(cancel, 10, move |events| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    let handled = handled.clone();
                    async move {
                        match n {
                            0 => anyhow::bail!("first attempt fails"),
                            1 => panic!("second attempt panics"),
                            _ => {
                                handled
                                    .lock()
                                    .unwrap()
                                    .extend(events.iter().map(|e| (e.id(), e.deliveries())));
                                Ok(())
                            }
                        }
                    }
                })
                .await
        }
    });
    eventually(
        "the batch to be handled after an error and a panic",
        Duration::from_secs(10),
        || {
            let handled = handled.clone();
            async move { handled.lock().unwrap().len() == 4 }
        },
    )
    .await;
    eventually("the acknowledgement", Duration::from_secs(5), || async {
        pending(&server, "stream-a", "g").await == 0
    })
    .await;
    assert!(!task.is_finished(), "the consumer is still alive");
    let handled = handled.lock().unwrap().clone();
    assert_eq!(
        handled.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert!(
        handled.iter().all(|(_, deliveries)| *deliveries == 3),
        "third delivery: {handled:?}"
    );
    cancel.cancel();
    assert!(task.await.unwrap().unwrap());
}

#[tokio::test]
async fn an_entry_deleted_while_pending_is_dead_lettered_not_crash_looped() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    let ids = publish_n(&broker, "stream-a", 3).await;
    let mut consumer = broker.consumer("g").unwrap();
    consumer.disable_loop();
    consumer
        .consume(CancellationToken::new(), 10, |_| async {
            anyhow::bail!("keep pending")
        })
        .await
        .unwrap();
    assert_eq!(pending(&server, "stream-a", "g").await, 3);
    let mut con = beehive_tests::raw(&server).await;
    let _: u64 = redis::cmd("XDEL")
        .arg("stream-a")
        .arg(&ids[1])
        .query_async(&mut con)
        .await
        .unwrap();

    let (batches, handler) = recorder();
    assert!(
        consumer
            .consume(CancellationToken::new(), 10, handler)
            .await
            .unwrap()
    );
    let handled: Vec<String> = batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(Event::id)
        .collect();
    assert_eq!(
        handled,
        [ids[0].clone(), ids[2].clone()],
        "the handler never sees the deleted entry"
    );
    assert_eq!(
        pending(&server, "stream-a", "g").await,
        0,
        "and it is acknowledged"
    );
    let dead = beehive_tests::entries(&server, "g-dead-letter").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        beehive_tests::field(&dead[0].1, "beehive.origin-id"),
        Some(ids[1].as_str())
    );
    assert!(
        beehive_tests::field(&dead[0].1, "beehive.reason")
            .unwrap()
            .contains("deleted while pending")
    );
}

#[tokio::test]
async fn large_batches_read_ahead_in_pages_arrive_whole_and_in_order() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"]), ("stream-b", &["g"])]).await;
    let broker = engine.event_broker();
    let mut a = Vec::new();
    let mut b = Vec::new();
    // Interleaved publishes, so a batch mixes both streams.
    for _ in 0..5 {
        a.extend(publish_n(&broker, "stream-a", 300).await);
        b.extend(publish_n(&broker, "stream-b", 300).await);
    }
    let mut consumer = broker.consumer("g").unwrap();
    consumer.disable_loop();
    let (batches, handler) = recorder();
    assert!(
        consumer
            .consume(CancellationToken::new(), 1000, handler)
            .await
            .unwrap()
    );
    let batches = std::mem::take(&mut *batches.lock().unwrap());
    // Reads ahead ask for smaller pages, yet every batch but the last is a full one.
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1000, 1000, 1000]);
    assert_eq!(ids_of(&batches, "stream-a"), a);
    assert_eq!(ids_of(&batches, "stream-b"), b);
    // Two streams may hold the same ID (IDs are per stream): ordered, not strictly.
    for batch in batches.iter() {
        assert!(
            batch.windows(2).all(|w| w[0].entry_id() <= w[1].entry_id()),
            "a batch is ordered by ID across streams"
        );
    }
    assert_eq!(pending(&server, "stream-a", "g").await, 0);
    assert_eq!(pending(&server, "stream-b", "g").await, 0);
}

/// The line of `CLIENT LIST` for the consumer's read-ahead connection, if it is open.
async fn read_ahead_client(con: &mut redis::aio::MultiplexedConnection) -> Option<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(con)
        .await
        .unwrap();
    list.lines()
        .find(|l| l.contains(" name=beehive-read-ahead:g:consumer-1 "))
        .map(str::to_string)
}

#[tokio::test]
async fn reads_ahead_use_a_connection_of_their_own_that_comes_back_after_a_kill() {
    let server = beehive_tests::redis_with_user("alice", "pw");
    let url = format!("redis://alice:pw@{}/3", server.address());
    let mut registry = beehive::Registry::new();
    registry.register_redis(&url, "", 0, "default");
    registry.register_redis_stream("stream-a", "default", &["g"]);
    let engine = registry.validate().await.unwrap().create_engine();
    let broker = engine.event_broker();
    let mut ids = publish_n(&broker, "stream-a", 500).await;

    let consumer = broker.consumer("g").unwrap();
    let (batches, handler) = recorder();
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { consumer.consume(cancel, 10, handler).await }
    });
    let handled = |n: usize| {
        let batches = batches.clone();
        move || {
            let done = batches.lock().unwrap().iter().map(Vec::len).sum::<usize>() >= n;
            std::future::ready(done)
        }
    };
    eventually(
        "the first 500 events handled",
        Duration::from_secs(20),
        handled(500),
    )
    .await;

    // The pool's user and database, on a connection named for the group and consumer.
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let line = read_ahead_client(&mut con)
        .await
        .expect("a read-ahead connection");
    assert!(
        line.contains(" user=alice ") && line.contains(" db=3 "),
        "{line}"
    );

    // Killed under the consumer: it keeps going, and reads ahead on a new connection.
    let id = line
        .split(' ')
        .find_map(|kv| kv.strip_prefix("id="))
        .unwrap()
        .to_string();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .exec_async(&mut con)
        .await
        .unwrap();
    ids.extend(publish_n(&broker, "stream-a", 500).await);
    eventually(
        "all 1000 events handled",
        Duration::from_secs(20),
        handled(1000),
    )
    .await;
    let line = read_ahead_client(&mut con)
        .await
        .expect("a new read-ahead connection");
    assert!(!line.starts_with(&format!("id={id} ")), "{line}");

    cancel.cancel();
    assert!(run.await.unwrap().unwrap());
    assert_eq!(
        ids_of(&batches.lock().unwrap(), "stream-a"),
        ids,
        "each event once, in order"
    );
    let summary: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg("stream-a")
        .arg("g")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(summary.0, 0, "nothing left pending");
}
