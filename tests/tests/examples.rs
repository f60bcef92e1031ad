//! The example handlers (Rust, Python and JavaScript) with their own configs, under
//! `beehive run`.

use beehive_tests::{
    TempDir, component, drain, engine, entries, example_config, field, js_component, pending,
    python_component, redis,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct ColorV1 {
    color: String,
    price: f64,
}

#[derive(Serialize)]
struct ColorV2 {
    name: String,
    price_cents: i64,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Normalized {
    color: String,
    price_cents: i64,
}

/// Publishes v1, v2, an unknown version and a corrupt body, runs the router and checks
/// what it published and dead-lettered. The Rust, Python and JavaScript routers must agree.
async fn router_contract(example: &str, component: &std::path::Path) {
    let server = redis();
    let dir = TempDir::new();
    let cfg = example_config(&dir, example, &server, component);
    let engine = engine(
        &server,
        &[
            ("colors", &["routers"]),
            ("colors-normalized", &["color-audit"]),
        ],
    )
    .await;
    let broker = engine.event_broker();
    let v1 = broker
        .publish(
            "colors",
            &ColorV1 {
                color: "red".into(),
                price: 12.34,
            },
            &[("version", "1")],
        )
        .await
        .unwrap();
    let v2 = broker
        .publish(
            "colors",
            &ColorV2 {
                name: "blue".into(),
                price_cents: 99,
            },
            &[("version", "2")],
        )
        .await
        .unwrap();
    let v3 = broker
        .publish(
            "colors",
            &ColorV2 {
                name: "green".into(),
                price_cents: 1,
            },
            &[("version", "3")],
        )
        .await
        .unwrap();
    let corrupt = broker
        .publish_raw("colors", Some(vec![0xC1, 0xFF]), &[("version", "1")])
        .await
        .unwrap();

    drain(&cfg);
    assert_eq!(pending(&server, "colors", "routers").await, 0);
    let out = entries(&server, "colors-normalized").await;
    assert_eq!(out.len(), 2, "{out:?}");
    let normalized: Vec<(String, Normalized)> = {
        let raw: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg("colors-normalized")
            .arg("-")
            .arg("+")
            .query_async(&mut beehive_tests::raw(&server).await)
            .await
            .unwrap();
        raw.into_iter()
            .map(|(id, f)| (id, rmp_serde::from_slice(&f[1]).unwrap()))
            .collect()
    };
    assert_eq!(
        normalized[0].1,
        Normalized {
            color: "red".into(),
            price_cents: 1234
        }
    );
    assert_eq!(
        normalized[1].1,
        Normalized {
            color: "blue".into(),
            price_cents: 99
        }
    );
    assert_eq!(field(&out[0].1, "source-id"), Some(v1.as_str()));
    assert_eq!(field(&out[1].1, "source-id"), Some(v2.as_str()));
    assert_eq!(field(&out[1].1, "source-version"), Some("2"));

    let dead = entries(&server, "routers-dead-letter").await;
    assert_eq!(dead.len(), 2);
    let reason_of = |id: &str| {
        field(
            &dead
                .iter()
                .find(|(_, f)| field(f, "beehive.origin-id") == Some(id))
                .unwrap()
                .1,
            "beehive.reason",
        )
        .unwrap()
        .to_string()
    };
    assert!(
        reason_of(&v3).contains("unknown version"),
        "{}",
        reason_of(&v3)
    );
    assert!(
        reason_of(&corrupt).contains("cannot decode"),
        "{}",
        reason_of(&corrupt)
    );
}

#[tokio::test]
async fn the_rust_router_normalizes_versions_and_dead_letters_the_rest() {
    router_contract("router", &component("beehive-example-router")).await;
}

#[tokio::test]
async fn the_python_router_keeps_the_same_contract() {
    router_contract("python-router", &python_component()).await;
}

#[tokio::test]
async fn the_js_router_keeps_the_same_contract() {
    router_contract("js-router", &js_component()).await;
}

#[tokio::test]
async fn the_page_view_counter_sums_meta_only_events() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = example_config(
        &dir,
        "page-views",
        &server,
        &component("beehive-example-page-views"),
    );
    let engine = engine(&server, &[("stream-page-views", &["page-views"])]).await;
    let mut flusher = engine.event_broker().new_flusher();
    for (url, ip) in [
        ("/about-us/", "1.1.1.1"),
        ("/pricing/", "2.2.2.2"),
        ("/about-us/", "3.3.3.3"),
    ] {
        flusher
            .publish_meta("stream-page-views", &[("url", url), ("ip", ip)])
            .unwrap();
    }
    flusher
        .publish_meta("stream-page-views", &[("ip", "4.4.4.4")])
        .unwrap();
    flusher.flush().await.unwrap();
    drain(&cfg);
    let totals = entries(&server, "page-view-totals").await;
    let mut sums = std::collections::BTreeMap::<String, u64>::new();
    for (_, fields) in &totals {
        for (url, n) in fields {
            *sums.entry(url.clone()).or_default() += n.parse::<u64>().unwrap();
        }
    }
    assert_eq!(
        sums.into_iter().collect::<Vec<_>>(),
        [("/about-us/".to_string(), 2), ("/pricing/".to_string(), 1)]
    );
    let dead = entries(&server, "page-views-dead-letter").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        field(&dead[0].1, "beehive.reason"),
        Some("page view without a url")
    );
}

#[tokio::test]
async fn the_echo_handler_republishes_and_logs() {
    let server = redis();
    let dir = TempDir::new();
    let cfg = example_config(&dir, "echo", &server, &component("beehive-example-echo"));
    let engine = engine(
        &server,
        &[
            ("stream-a", &["read-group-a", "read-group-ab"]),
            ("stream-b", &["read-group-ab"]),
        ],
    )
    .await;
    let broker = engine.event_broker();
    let a = broker
        .publish("stream-a", "hello", &[("echo-to", "echo")])
        .await
        .unwrap();
    broker
        .publish("stream-b", &42, &[("k", "v")])
        .await
        .unwrap();
    let log = drain(&cfg);
    assert!(
        log.contains(&format!("stream-a {a} deliveries=1")),
        "guest logs reach the host log:\n{log}"
    );
    let echoed = entries(&server, "echo").await;
    assert_eq!(echoed.len(), 1);
    assert_eq!(field(&echoed[0].1, "echo-of"), Some(a.as_str()));
    assert_eq!(pending(&server, "stream-b", "read-group-ab").await, 0);
}
