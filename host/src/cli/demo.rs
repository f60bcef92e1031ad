//! `beehive demo`: a tour on a private `redis-server`: the library API, then the example
//! WebAssembly handlers (Rust, Python and JavaScript) under the host, then status and GC.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{CommandResult, Failure};
use crate::config::Config;
use crate::keys::dead_letter_fields::REASON;
use crate::ops::redis_server::RedisServer;
use crate::ops::supervisor::{self, RunOptions};
use crate::runtime::WasmEngine;
use crate::{CancellationToken, Event};

/// Arguments of `beehive demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Use this Redis (host:port) instead of starting a private redis-server. The demo
    /// writes to the streams stream-a, colors, colors-normalized, stream-page-views,
    /// page-view-totals and their dead-letter streams.
    #[arg(long, conflicts_with = "cluster")]
    pub redis: Option<String>,
    /// Run the tour on a private Redis Cluster of 3 masters (redis-server
    /// --cluster-enabled yes, joined by redis-cli --cluster create) instead of one server:
    /// each stream lives in its own hash slot, so outputs travel through the outbox.
    #[arg(long)]
    pub cluster: bool,
    /// Where the Rust example components are (built by `bash scripts/build-examples`).
    #[arg(long, default_value = "target/wasm32-wasip2/release")]
    pub components: PathBuf,
    /// The Python example component.
    #[arg(long, default_value = "examples/python-router/python-router.wasm")]
    pub python: PathBuf,
    /// The JavaScript example component.
    #[arg(long, default_value = "examples/js-router/js-router.wasm")]
    pub js: PathBuf,
}

#[derive(Serialize)]
struct ColorV1 {
    color: &'static str,
    price: f64,
}

#[derive(Serialize)]
struct ColorV2 {
    name: &'static str,
    price_cents: i64,
}

/// The group of an interpreted router (Python, JavaScript): its config lines, when its
/// component was found.
fn interpreted_router(group: &str, path: Option<&Path>) -> String {
    path.map_or(String::new(), |path| {
        format!(
            "  {group}:\n    component: {}\n    publish: [colors-normalized]\n    limits: {{ memory: 128MiB, timeout: 10s }}\n",
            path.display()
        )
    })
}

fn demo_config(pool: &str, components: &Path, python: Option<&Path>, js: Option<&Path>) -> String {
    let mut color_groups = String::from("routers");
    for (group, path) in [("py-routers", python), ("js-routers", js)] {
        if path.is_some() {
            color_groups.push_str(", ");
            color_groups.push_str(group);
        }
    }
    format!(
        "default:
  {pool}
  streams:
    stream-a: [read-group-a]
    colors: [{color_groups}]
    colors-normalized: [color-audit]
    stream-page-views: [page-views]
    page-view-totals: [reporting]
consumers:
  routers:
    component: {router}
    publish: [colors-normalized]
  page-views:
    component: {page_views}
    publish: [page-view-totals]
{python}{js}",
        router = components.join("beehive_example_router.wasm").display(),
        page_views = components.join("beehive_example_page_views.wasm").display(),
        python = interpreted_router("py-routers", python),
        js = interpreted_router("js-routers", js),
    )
}

pub(super) async fn run(args: DemoArgs) -> CommandResult {
    let components =
        std::path::absolute(&args.components).map_err(|e| Failure::Usage(e.to_string()))?;
    for name in [
        "beehive_example_router.wasm",
        "beehive_example_page_views.wasm",
    ] {
        if !components.join(name).exists() {
            return Err(Failure::Usage(format!(
                "example component {} not found: run `bash scripts/demo`, which builds the examples first",
                components.join(name).display()
            )));
        }
    }
    let python = std::path::absolute(&args.python)
        .ok()
        .filter(|p| p.exists());
    let js = std::path::absolute(&args.js).ok().filter(|p| p.exists());
    let private;
    let private_cluster;
    let pool = match &args.redis {
        Some(address) => format!("redis: {address}"),
        None if args.cluster => {
            private_cluster =
                crate::ops::redis_cluster::RedisCluster::start(3, 0).map_err(|e| {
                    Failure::Runtime(format!("cannot start a private Redis Cluster: {e}"))
                })?;
            let seeds = private_cluster.seeds().join(", ");
            println!("started a private Redis Cluster of 3 masters on {seeds}");
            format!("cluster: [{seeds}]")
        }
        None => {
            private = RedisServer::start().map_err(|e| {
                Failure::Runtime(format!("cannot start a private redis-server: {e}"))
            })?;
            println!("started a private redis-server on {}", private.address());
            format!("redis: {}", private.address())
        }
    };
    let config = Config::parse(
        &demo_config(&pool, &components, python.as_deref(), js.as_deref()),
        Path::new("beehive-demo.yaml"),
    )?;
    let engine = config.registry.create_engine();
    let broker = engine.event_broker();

    println!("\n== the library: publish and consume natively");
    let id = broker
        .publish("stream-a", "hello", &[("version", "1")])
        .await?;
    println!("published \"hello\" to stream-a as {id}");
    let mut consumer = broker.consumer("read-group-a")?;
    consumer.disable_loop();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    consumer
        .consume(CancellationToken::new(), 10, move |events: Vec<Event>| {
            let mut lines = Vec::new();
            for event in &events {
                lines.push(format!(
                    "{} {} body={:?} version={}",
                    event.stream(),
                    event.id(),
                    event.unserialize::<String>(),
                    event.tag("version")
                ));
            }
            sink.lock().expect("demo sink").extend(lines);
            async { Ok(()) }
        })
        .await?;
    for line in seen.lock().expect("demo sink").iter() {
        println!("read-group-a handled {line}");
    }

    println!("\n== publishing for the WebAssembly handlers (one flusher pipeline)");
    let mut flusher = broker.new_flusher();
    flusher.publish(
        "colors",
        &ColorV1 {
            color: "red",
            price: 12.34,
        },
        &[("version", "1")],
    )?;
    flusher.publish(
        "colors",
        &ColorV2 {
            name: "blue",
            price_cents: 99,
        },
        &[("version", "2")],
    )?;
    flusher.publish(
        "colors",
        &ColorV2 {
            name: "green",
            price_cents: 5,
        },
        &[("version", "9")],
    )?;
    for (url, ip) in [
        ("/about-us/", "232.12.24.11"),
        ("/pricing/", "10.0.0.7"),
        ("/about-us/", "10.0.0.8"),
    ] {
        flusher.publish_meta("stream-page-views", &[("url", url), ("ip", ip)])?;
    }
    let ids = flusher.flush().await?;
    println!(
        "colors: v1 struct, v2 struct, unknown v9; stream-page-views: 3 meta-only events ({} IDs)",
        ids.len()
    );

    println!("\n== running the handlers (beehive run --drain)");
    let wasm = WasmEngine::new()
        .map_err(|e| Failure::Runtime(format!("cannot start the WebAssembly engine: {e:#}")))?;
    let loaded =
        supervisor::load_components(&config, &wasm).map_err(|e| Failure::Usage(e.to_string()))?;
    for (group, component) in &loaded {
        println!(
            "{group:<12} {} (sha256 {})",
            component.origin(),
            component.short_digest()
        );
    }
    for (language, found, path) in [
        ("Python", python.is_some(), &args.python),
        ("JavaScript", js.is_some(), &args.js),
    ] {
        if !found {
            println!(
                "(the {language} router is skipped: {} not found; bash scripts/build-examples builds it)",
                path.display()
            );
        }
    }
    let consumers = loaded
        .into_iter()
        .filter_map(|(group, component)| config.consumers.get(&group).map(|c| (c, component)));
    let reloader = std::sync::Arc::new(crate::ops::reload::Reloader::new(wasm, consumers, None));
    supervisor::run(
        &config,
        &reloader,
        RunOptions {
            drain: true,
            ..RunOptions::default()
        },
        CancellationToken::new(),
    )
    .await;

    println!("\n== what the handlers published");
    let registry = &config.registry;
    for stream in [
        "colors-normalized",
        "page-view-totals",
        &registry.default_dead_letter_stream("routers"),
        &registry.default_dead_letter_stream("py-routers"),
        &registry.default_dead_letter_stream("js-routers"),
    ] {
        for event in broker.range("default", stream, "-", 100).await? {
            let mut parts = Vec::new();
            if let Some(body) = event.body_json() {
                parts.push(format!(
                    "body={}",
                    body.map_or_else(|e| e.to_string(), |json| json.to_string())
                ));
            }
            for (k, v) in event.meta() {
                if !k.starts_with("beehive.") || k == REASON {
                    parts.push(format!("{k}={v}"));
                }
            }
            println!("{stream:<22} {}  {}", event.id(), parts.join(" "));
        }
    }

    println!("\n== status");
    for stream in broker.statistics().await? {
        for group in &stream.groups {
            println!(
                "{:<18} length {:<3} group {:<12} pending {} lag {}",
                stream.name,
                stream.length,
                group.name,
                group.pending,
                group.lag.map_or("?".into(), |l| l.to_string())
            );
        }
    }
    let report = engine.gc().await?;
    println!(
        "\n== garbage collection: deleted {} entries that every group acknowledged",
        report.deleted()
    );
    for line in &report.streams {
        println!(
            "{:<18} deleted {}{}",
            line.stream,
            line.deleted,
            line.kept_because
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
