//! Statistics after a partial consume.

use beehive_tests::{engine, redis};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn statistics_report_length_pending_lag_and_consumers() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g", "never"])]).await;
    let broker = engine.event_broker();
    let mut flusher = broker.new_flusher();
    for i in 0..10 {
        flusher
            .publish("stream-a", &i, &[] as &[(&str, &str)])
            .unwrap();
    }
    flusher.flush().await.unwrap();
    // consumer-2 reads everything, in batches of 3, and acknowledges nothing.
    let mut c = broker.consumer("g").unwrap();
    c.disable_loop();
    let mut once = true;
    c.consume_many(CancellationToken::new(), 2, 3, move |_| {
        let first = std::mem::replace(&mut once, false);
        async move {
            if first {
                anyhow::bail!("fail")
            } else {
                Err(anyhow::anyhow!("stop here"))
            }
        }
    })
    .await
    .unwrap();
    let stats = broker.statistics().await.unwrap();
    let s = &stats[0];
    assert_eq!(
        (s.name.as_str(), s.pool.as_str(), s.length),
        ("stream-a", "default", 10)
    );
    let g = s.groups.iter().find(|g| g.name == "g").unwrap();
    assert_eq!(
        g.pending, 10,
        "consumer-2 read everything and acknowledged nothing"
    );
    assert_eq!(g.lag, Some(0));
    assert!(g.oldest_pending_age.is_some());
    assert_eq!(g.consumers.len(), 1);
    assert_eq!(
        (g.consumers[0].name.as_str(), g.consumers[0].pending),
        ("consumer-2", 10)
    );

    let mut ok = broker.consumer("g").unwrap();
    ok.disable_loop();
    ok.consume_many(CancellationToken::new(), 2, 4, |_| async { Ok(()) })
        .await
        .unwrap();
    let stats = broker.statistics().await.unwrap();
    let g = stats[0].groups.iter().find(|g| g.name == "g").unwrap();
    assert_eq!(g.pending, 0);
    assert_eq!(g.oldest_pending_age, None);
    let never = stats[0].groups.iter().find(|g| g.name == "never").unwrap();
    assert!(!never.created);
    assert_eq!(never.lag, Some(10));
}

#[tokio::test]
async fn lag_counts_what_was_not_delivered_yet() {
    let server = redis();
    let engine = engine(&server, &[("stream-a", &["g"])]).await;
    let broker = engine.event_broker();
    for i in 0..6 {
        broker
            .publish("stream-a", &i, &[] as &[(&str, &str)])
            .await
            .unwrap();
    }
    // Deliver exactly 4 of 6 (a consumer would read ahead), and acknowledge them.
    let mut con = beehive_tests::raw(&server).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("stream-a")
        .arg("g")
        .arg("0")
        .query_async(&mut con)
        .await
        .unwrap();
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c")
        .arg("COUNT")
        .arg(4)
        .arg("STREAMS")
        .arg("stream-a")
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    let ids: Vec<String> = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 4);
    let _: () = redis::cmd("XACK")
        .arg("stream-a")
        .arg("g")
        .arg(&ids)
        .query_async(&mut con)
        .await
        .unwrap();
    let stats = broker.statistics().await.unwrap();
    let g = &stats[0].groups[0];
    assert_eq!((g.pending, g.lag), (0, Some(2)));
}
