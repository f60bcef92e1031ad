//! Publishing, the flusher and the wire format.

use std::time::Duration;

use beehive::{Error, Event};
use beehive_tests::{engine, raw, redis, xlen};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Color {
    color: String,
    price: f64,
    tags: Vec<String>,
    stock: Option<u32>,
}

async fn drain(engine: &beehive::Engine, group: &str) -> Vec<Event> {
    let all = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = all.clone();
    let mut consumer = engine.event_broker().consumer(group).unwrap();
    consumer.disable_loop();
    assert!(
        consumer
            .consume(CancellationToken::new(), 100, move |events| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().extend(events);
                    Ok(())
                }
            })
            .await
            .unwrap()
    );
    all.lock().unwrap().clone()
}

#[tokio::test]
async fn bodies_tags_and_meta_only_events_round_trip() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"]), ("stream-b", &["g"])]).await;
    let broker = engine.event_broker();
    let red = Color {
        color: "red".into(),
        price: 12.34,
        tags: vec!["a".into(), "b".into()],
        stock: None,
    };
    let blue = Color {
        color: "blue".into(),
        price: 0.5,
        tags: vec![],
        stock: Some(7),
    };
    let mut flusher = broker.new_flusher();
    flusher
        .publish("stream-b", &red, &[("version", "1")])
        .unwrap();
    flusher
        .publish("stream-b", &blue, &[("version", "2"), ("source", "test")])
        .unwrap();
    flusher
        .publish("stream-a", "hello", &[] as &[(&str, &str)])
        .unwrap();
    flusher
        .publish_meta("stream-a", &[("url", "/about-us/"), ("ip", "232.12.24.11")])
        .unwrap();
    assert_eq!(flusher.len(), 4);
    let ids = flusher.flush().await.unwrap();
    assert_eq!(ids.len(), 4);
    assert!(flusher.is_empty());

    let events = drain(&engine, "g").await;
    assert_eq!(events.len(), 4);
    // IDs are unique per stream only.
    let find = |stream: &str, id: &str| {
        events
            .iter()
            .find(|e| e.stream() == stream && e.id() == id)
            .unwrap()
            .clone()
    };
    let (e_red, e_blue) = (find("stream-b", &ids[0]), find("stream-b", &ids[1]));
    let (e_hello, e_meta) = (find("stream-a", &ids[2]), find("stream-a", &ids[3]));
    assert_eq!(e_red.unserialize::<Color>().unwrap(), red);
    assert_eq!(e_blue.unserialize::<Color>().unwrap(), blue);
    assert_eq!(e_red.tag("version"), "1");
    assert_eq!(e_blue.tag("source"), "test");
    assert_eq!(e_blue.tag("missing"), "");
    assert_eq!(e_red.stream(), "stream-b");
    assert_eq!(e_hello.unserialize::<String>().unwrap(), "hello");
    assert!(e_hello.meta().is_empty());
    assert_eq!(e_meta.body(), None);
    assert_eq!(e_meta.tag("url"), "/about-us/");
    assert_eq!(e_meta.tag("ip"), "232.12.24.11");
    let err = e_meta.unserialize::<String>().unwrap_err().to_string();
    assert!(
        err.contains("has no body") && err.contains(&e_meta.id()),
        "{err}"
    );
    let err = e_red.unserialize::<u64>().unwrap_err().to_string();
    assert!(err.contains("cannot decode event"), "{err}");
}

#[tokio::test]
async fn the_wire_format_is_messagepack_in_field_s() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let id = engine
        .event_broker()
        .publish("stream-a", "a1", &[("k", "v")])
        .await
        .unwrap();
    let mut con = raw(&server).await;
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg("stream-a")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        entries,
        vec![(
            id,
            vec![
                b"s".to_vec(),
                vec![0xA2, 0x61, 0x31],
                b"k".to_vec(),
                b"v".to_vec()
            ]
        )]
    );

    // An entry written by another client (BeeORM, redis-cli) with a MessagePack map body.
    let body = rmp_serde::to_vec_named(&Color {
        color: "green".into(),
        price: 1.0,
        tags: vec!["x".into()],
        stock: Some(1),
    })
    .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("stream-a")
        .arg("*")
        .arg("s")
        .arg(body)
        .arg("version")
        .arg("9")
        .query_async(&mut con)
        .await
        .unwrap();
    let events = drain(&engine, "g").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].unserialize::<Color>().unwrap().color, "green");
    assert_eq!(events[1].tag("version"), "9");
}

#[tokio::test]
async fn bad_publishes_are_refused_and_write_nothing() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    let err = broker
        .publish("nope", "x", &[] as &[(&str, &str)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnregisteredStream(_)));
    assert_eq!(err.to_string(), "unregistered stream nope");
    let err = broker
        .publish_meta::<&str, &str>("stream-a", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::EmptyEvent(_)), "{err}");
    let err = broker
        .publish("stream-a", "x", &[("s", "reserved")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    let mut flusher = broker.new_flusher();
    assert!(
        flusher
            .publish("nope", "x", &[] as &[(&str, &str)])
            .is_err()
    );
    assert!(flusher.publish_meta::<&str, &str>("stream-a", &[]).is_err());
    assert!(flusher.is_empty());
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert!(keys.is_empty(), "nothing may be written, found {keys:?}");
}

/// Flushes after a server restart: the connection reconnects by itself, so a flush may need
/// a retry (every 100 ms, for up to 5 s) while it does. Panics when none succeeds.
async fn flush_once_reconnected(flusher: &mut beehive::Flusher) -> Vec<String> {
    let mut last = None;
    for _ in 0..50 {
        match flusher.flush().await {
            Ok(ids) => return ids,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no flush succeeded after the restart: {last:?}")
}

/// The same with `start_flush`, then `flush`: every ID from the first successful call on.
async fn start_flush_once_reconnected(flusher: &mut beehive::Flusher) -> Vec<String> {
    let mut last = None;
    for _ in 0..50 {
        match flusher.start_flush().await {
            Ok(mut ids) => {
                ids.extend(flusher.flush().await.unwrap());
                return ids;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no start_flush succeeded after the restart: {last:?}")
}

#[tokio::test]
async fn the_flusher_keeps_its_buffer_while_redis_is_down() {
    let mut server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let mut flusher = engine.event_broker().new_flusher();
    flusher
        .publish("stream-a", "warm-up", &[] as &[(&str, &str)])
        .unwrap();
    flusher.flush().await.unwrap();

    server.stop();
    for i in 0..3 {
        flusher
            .publish("stream-a", &i, &[] as &[(&str, &str)])
            .unwrap();
    }
    let err = flusher.flush().await.unwrap_err();
    assert!(err.to_string().contains("redis pool default"), "{err}");
    assert_eq!(flusher.len(), 3, "nothing dropped");

    server.restart().unwrap();
    let ids = flush_once_reconnected(&mut flusher).await;
    assert_eq!(ids.len(), 3);
    assert_eq!(
        xlen(&server, "stream-a").await,
        3,
        "the restarted server kept nothing, so exactly the buffer arrived"
    );
}

/// `stream`'s entries as `(id, fields)`, in stream order.
async fn xrange(server: &beehive_tests::RedisServer, stream: &str) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut con = raw(server).await;
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap()
}

/// The bodies of `stream`'s entries, in stream order.
async fn bodies(server: &beehive_tests::RedisServer, stream: &str) -> Vec<u32> {
    let entries = xrange(server, stream).await;
    entries
        .into_iter()
        .map(|(_, fields)| rmp_serde::from_slice(&fields[1]).unwrap())
        .collect()
}

/// The IDs `stream` holds, in stream order.
async fn entry_ids(server: &beehive_tests::RedisServer, stream: &str) -> Vec<String> {
    let entries = xrange(server, stream).await;
    entries.into_iter().map(|(id, _)| id).collect()
}

#[tokio::test]
async fn start_flush_keeps_a_flush_in_flight_and_reports_its_ids_with_the_next_call() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"]), ("stream-b", &["g"])]).await;
    let mut flusher = engine.event_broker().new_flusher();
    let mut ids = Vec::new();
    // Enough batches that flushes overlap on the wire: each is sent before the answer to
    // the one before is awaited, and must still reach Redis in order.
    let (batches, per_batch) = (40u32, 50u32);
    for batch in 0..batches {
        for i in 0..per_batch {
            // Alternate streams so IDs are gathered across streams in publish order.
            let stream = if i % 2 == 0 { "stream-a" } else { "stream-b" };
            flusher
                .publish(stream, &(batch * per_batch + i), &[] as &[(&str, &str)])
                .unwrap();
        }
        let written = flusher.start_flush().await.unwrap();
        // The first call has nothing answered yet; later calls return the batch before.
        let expected = if batch == 0 { 0 } else { per_batch as usize };
        assert_eq!(written.len(), expected);
        ids.extend(written);
        assert_eq!(
            flusher.len(),
            per_batch as usize,
            "the batch in flight is not known written yet"
        );
    }
    ids.extend(flusher.flush().await.unwrap());
    assert!(flusher.is_empty());
    let total = batches * per_batch;
    assert_eq!(ids.len(), total as usize);

    let a = bodies(&server, "stream-a").await;
    let b = bodies(&server, "stream-b").await;
    assert_eq!(a, (0..total).filter(|n| n % 2 == 0).collect::<Vec<_>>());
    assert_eq!(b, (0..total).filter(|n| n % 2 == 1).collect::<Vec<_>>());
    // IDs come back in publish order: event n's ID is the one its stream holds for it.
    let events = drain(&engine, "g").await;
    for (n, id) in ids.iter().enumerate() {
        let stream = if n % 2 == 0 { "stream-a" } else { "stream-b" };
        let event = events
            .iter()
            .find(|e| e.stream() == stream && e.id() == *id)
            .unwrap_or_else(|| panic!("no event {id} in {stream}"));
        assert_eq!(event.unserialize::<u32>().unwrap(), n as u32);
    }
}

/// Buffers one `stream-a` event per body in `bodies`.
fn publish_to_a(flusher: &mut beehive::Flusher, bodies: std::ops::Range<u32>) {
    for n in bodies {
        flusher
            .publish("stream-a", &n, &[] as &[(&str, &str)])
            .unwrap();
    }
}

/// Writes event 0 through `start_flush`, which opens the flusher's own connection.
async fn open_start_flush_connection(flusher: &mut beehive::Flusher) {
    publish_to_a(flusher, 0..1);
    assert_eq!(flusher.start_flush().await.unwrap(), Vec::<String>::new());
    assert_eq!(flusher.flush().await.unwrap().len(), 1);
}

/// With start_flush's connection lost: sends [1, 2, 3] (the call succeeds: only the flush
/// before, none, is waited for), then [4, 5]; that call learns [1, 2, 3] failed and
/// returns the error.
async fn two_flushes_on_a_lost_connection(flusher: &mut beehive::Flusher) -> Error {
    publish_to_a(flusher, 1..4);
    assert_eq!(flusher.start_flush().await.unwrap(), Vec::<String>::new());
    publish_to_a(flusher, 4..6);
    flusher.start_flush().await.unwrap_err()
}

#[tokio::test]
async fn flushes_in_flight_on_a_lost_connection_are_resent_in_publish_order() {
    let mut server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let mut flusher = engine.event_broker().new_flusher();
    open_start_flush_connection(&mut flusher).await;

    server.stop();
    let err = two_flushes_on_a_lost_connection(&mut flusher).await;
    assert!(err.to_string().contains("redis pool default"), "{err}");
    assert_eq!(flusher.len(), 5, "nothing dropped: both flushes settled");

    // With the server still down, start_flush cannot open a new connection: it fails
    // without sending, and keeps everything.
    publish_to_a(&mut flusher, 6..7);
    let err = flusher.start_flush().await.unwrap_err();
    assert!(err.to_string().contains("redis pool default"), "{err}");
    assert_eq!(flusher.len(), 6);

    server.restart().unwrap();
    let ids = start_flush_once_reconnected(&mut flusher).await;
    assert_eq!(ids.len(), 6);
    assert_eq!(
        bodies(&server, "stream-a").await,
        vec![1, 2, 3, 4, 5, 6],
        "the restarted server kept nothing; both failed flushes' events came back, in order, once"
    );
}

#[tokio::test]
async fn after_a_failed_flush_nothing_new_is_sent_before_the_flushes_in_flight_settle() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let mut flusher = engine.event_broker().new_flusher();
    open_start_flush_connection(&mut flusher).await;

    // Redis closes start_flush's connection (and any other) while staying up.
    let mut con = raw(&server).await;
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .exec_async(&mut con)
        .await
        .unwrap();
    two_flushes_on_a_lost_connection(&mut flusher).await;

    // The next call opens a new connection and sends every event not written, 6 after
    // 1..=5: the failed flushes were settled before the error came back.
    publish_to_a(&mut flusher, 6..7);
    assert_eq!(flusher.start_flush().await.unwrap(), Vec::<String>::new());
    assert_eq!(flusher.flush().await.unwrap().len(), 6);
    assert_eq!(bodies(&server, "stream-a").await, vec![0, 1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn ids_written_by_a_failing_flush_come_with_the_next_successful_one() {
    let (server_a, mut server_b) = (redis(), redis());
    let mut registry = beehive::Registry::new();
    registry.register_redis(&server_a.address(), "", 0, "pool-a");
    registry.register_redis(&server_b.address(), "", 0, "pool-b");
    registry.register_redis_stream("stream-a", "pool-a", &["ga"]);
    registry.register_redis_stream("stream-b", "pool-b", &["gb"]);
    let engine = registry.validate().await.unwrap().create_engine();
    let mut flusher = engine.event_broker().new_flusher();

    server_b.stop();
    for (stream, n) in [("stream-a", 1u32), ("stream-b", 2), ("stream-a", 3)] {
        flusher.publish(stream, &n, &[] as &[(&str, &str)]).unwrap();
    }
    let err = flusher.flush().await.unwrap_err().to_string();
    assert!(
        err.contains("pool-b"),
        "the error names the failed pool: {err}"
    );
    assert_eq!(flusher.len(), 1, "pool-a's events were written");
    assert_eq!(bodies(&server_a, "stream-a").await, vec![1, 3]);

    server_b.restart().unwrap();
    let ids = flush_once_reconnected(&mut flusher).await;
    assert_eq!(
        ids.len(),
        3,
        "every event's ID, the earlier call's too: {ids:?}"
    );
    // In publish order: 1 and 3 are stream-a's entries, 2 is stream-b's.
    let ids_a = entry_ids(&server_a, "stream-a").await;
    let ids_b = entry_ids(&server_b, "stream-b").await;
    assert_eq!(
        ids,
        vec![ids_a[0].clone(), ids_b[0].clone(), ids_a[1].clone()]
    );
    assert!(flusher.is_empty());
}

#[tokio::test]
async fn an_xadd_refused_inside_a_flush_keeps_only_its_event_and_duplicates_nothing() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"]), ("stream-b", &["g"])]).await;
    let mut con = raw(&server).await;
    // stream-b's key holds a string: Redis runs the transaction but refuses that XADD.
    redis::cmd("DEL")
        .arg("stream-b")
        .exec_async(&mut con)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg("stream-b")
        .arg("not a stream")
        .exec_async(&mut con)
        .await
        .unwrap();
    let mut flusher = engine.event_broker().new_flusher();
    for (stream, n) in [("stream-a", 1u32), ("stream-b", 2), ("stream-a", 3)] {
        flusher.publish(stream, &n, &[] as &[(&str, &str)]).unwrap();
    }
    let err = flusher.flush().await.unwrap_err().to_string();
    assert!(
        err.contains("stream-b") && err.contains("WRONGTYPE"),
        "the error names the stream and Redis's reason: {err}"
    );
    assert_eq!(flusher.len(), 1, "only the refused event stays buffered");
    assert_eq!(bodies(&server, "stream-a").await, vec![1, 3]);

    // Once the key is a stream again, the next flush writes the refused event alone.
    redis::cmd("DEL")
        .arg("stream-b")
        .exec_async(&mut con)
        .await
        .unwrap();
    let ids = flusher.flush().await.unwrap();
    assert_eq!(
        bodies(&server, "stream-a").await,
        vec![1, 3],
        "nothing resent"
    );
    assert_eq!(bodies(&server, "stream-b").await, vec![2]);
    // The failed call's written IDs come with this one, all in publish order.
    let (a, b) = (
        entry_ids(&server, "stream-a").await,
        entry_ids(&server, "stream-b").await,
    );
    assert_eq!(ids, vec![a[0].clone(), b[0].clone(), a[1].clone()]);

    // The same through start_flush: the refused event goes back to the buffer.
    redis::cmd("SET")
        .arg("stream-b")
        .arg("not a stream")
        .exec_async(&mut con)
        .await
        .unwrap();
    flusher
        .publish("stream-b", &4u32, &[] as &[(&str, &str)])
        .unwrap();
    flusher
        .publish("stream-a", &5u32, &[] as &[(&str, &str)])
        .unwrap();
    flusher.start_flush().await.unwrap();
    assert!(flusher.start_flush().await.is_err());
    assert_eq!(flusher.len(), 1);
    assert_eq!(bodies(&server, "stream-a").await, vec![1, 3, 5]);
}
