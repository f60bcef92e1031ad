//! Garbage collection deletes only what every group has acknowledged.

use beehive_tests::{engine, raw, redis, xlen};
use tokio_util::sync::CancellationToken;

async fn publish(engine: &beehive::Engine, stream: &str, n: usize) -> Vec<String> {
    let mut flusher = engine.event_broker().new_flusher();
    for i in 0..n {
        flusher.publish(stream, &i, &[] as &[(&str, &str)]).unwrap();
    }
    flusher.flush().await.unwrap()
}

/// Drains `group`, acknowledging only the first `ack` events (the rest fail and stay pending).
async fn consume(engine: &beehive::Engine, group: &str, ack: usize) {
    let mut consumer = engine.event_broker().consumer(group).unwrap();
    consumer.disable_loop();
    let mut seen = 0;
    consumer
        .consume(CancellationToken::new(), 1, move |_| {
            seen += 1;
            let ok = seen <= ack;
            async move {
                if ok {
                    Ok(())
                } else {
                    anyhow::bail!("keep pending")
                }
            }
        })
        .await
        .unwrap();
}

async fn first_id(server: &beehive_tests::RedisServer, stream: &str) -> Option<String> {
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut raw(server).await)
        .await
        .unwrap();
    entries.into_iter().next().map(|(id, _)| id)
}

#[tokio::test]
async fn a_single_group_that_acknowledged_everything_empties_the_stream() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    publish(&engine, "stream-a", 20).await;
    consume(&engine, "g", usize::MAX).await;
    let report = engine.gc().await.unwrap();
    assert_eq!(report.deleted(), 20);
    assert_eq!(xlen(&server, "stream-a").await, 0);
    // Later events are kept until they are read.
    publish(&engine, "stream-a", 3).await;
    assert_eq!(engine.gc().await.unwrap().deleted(), 0);
    assert_eq!(xlen(&server, "stream-a").await, 3);
}

#[tokio::test]
async fn nothing_goes_while_another_group_has_not_read_it() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g", "h"])]).await;
    publish(&engine, "stream-a", 10).await;
    // h never started: it has read nothing.
    consume(&engine, "g", usize::MAX).await;
    assert_eq!(engine.gc().await.unwrap().deleted(), 0);
    assert_eq!(xlen(&server, "stream-a").await, 10);
    // h created but consumed nothing yet.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("stream-a")
        .arg("h")
        .arg("0")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(engine.gc().await.unwrap().deleted(), 0);
    consume(&engine, "h", usize::MAX).await;
    assert_eq!(engine.gc().await.unwrap().deleted(), 10);
}

#[tokio::test]
async fn nothing_at_or_after_the_oldest_pending_entry_goes() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let ids = publish(&engine, "stream-a", 10).await;
    consume(&engine, "g", 4).await; // 4 acknowledged, 6 pending
    assert_eq!(engine.gc().await.unwrap().deleted(), 4);
    assert_eq!(
        first_id(&server, "stream-a").await.as_deref(),
        Some(ids[4].as_str())
    );
}

#[tokio::test]
async fn an_unregistered_group_on_the_stream_is_respected() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    publish(&engine, "stream-a", 5).await;
    let mut con = raw(&server).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("stream-a")
        .arg("analytics")
        .arg("0")
        .query_async(&mut con)
        .await
        .unwrap();
    consume(&engine, "g", usize::MAX).await;
    assert_eq!(engine.gc().await.unwrap().deleted(), 0);
    // The outside group reads two entries and acknowledges them.
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("analytics")
        .arg("c")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg("stream-a")
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    let ids: Vec<String> = match read {
        redis::Value::Array(streams) => match &streams[0] {
            redis::Value::Array(kv) => match &kv[1] {
                redis::Value::Array(entries) => entries
                    .iter()
                    .map(|e| match e {
                        redis::Value::Array(parts) => {
                            redis::from_redis_value_ref(&parts[0]).unwrap()
                        }
                        _ => panic!(),
                    })
                    .collect(),
                _ => panic!(),
            },
            _ => panic!(),
        },
        other => panic!("{other:?}"),
    };
    let _: u64 = redis::cmd("XACK")
        .arg("stream-a")
        .arg("analytics")
        .arg(&ids)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(engine.gc().await.unwrap().deleted(), 2);
    assert_eq!(xlen(&server, "stream-a").await, 3);
}

#[tokio::test]
async fn gc_runs_in_chunks_over_a_large_backlog() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    publish(&engine, "stream-a", 25_000).await;
    let mut consumer = engine.event_broker().consumer("g").unwrap();
    consumer.disable_loop();
    consumer
        .consume(CancellationToken::new(), 1000, |_| async { Ok(()) })
        .await
        .unwrap();
    assert_eq!(engine.gc().await.unwrap().deleted(), 25_000);
    assert_eq!(xlen(&server, "stream-a").await, 0);
}
