//! `beehive demo`: a tour that needs nothing but `redis-server` on PATH.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CommandResult, Failure};
use crate::redis_server::RedisServer;
use crate::{CancellationToken, Registry};

/// Arguments of `beehive demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Use this Redis (host:port[:db] or URL) instead of starting a private redis-server.
    #[arg(long)]
    pub redis: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Color {
    color: String,
    price: f64,
}

pub(super) async fn run(args: DemoArgs) -> CommandResult {
    let private;
    let address = match &args.redis {
        Some(address) => address.clone(),
        None => {
            private = RedisServer::start().map_err(|e| {
                Failure::Runtime(format!("cannot start a private redis-server: {e}"))
            })?;
            println!("started a private redis-server on {}", private.address());
            private.address()
        }
    };
    let mut registry = Registry::new();
    registry.register_redis(&address, "", 0, "default");
    registry.register_redis_stream("stream-a", "default", &["read-group-a", "read-group-ab"]);
    registry.register_redis_stream("stream-b", "default", &["read-group-ab"]);
    registry.register_redis_stream("stream-page-views", "default", &["page-views"]);
    let engine = registry.validate().await?.create_engine();
    let broker = engine.event_broker();

    println!("\n== publishing");
    let id = broker
        .publish("stream-a", "hello", &[] as &[(&str, &str)])
        .await?;
    println!("stream-a          {id}  \"hello\"");
    let red = Color {
        color: "red".into(),
        price: 12.34,
    };
    let id = broker
        .publish("stream-b", &red, &[("version", "1")])
        .await?;
    println!("stream-b          {id}  {red:?} version=1");
    let mut flusher = broker.new_flusher();
    for (url, ip) in [
        ("/about-us/", "232.12.24.11"),
        ("/pricing/", "10.0.0.7"),
        ("/about-us/", "10.0.0.8"),
    ] {
        flusher.publish_meta("stream-page-views", &[("url", url), ("ip", ip)])?;
    }
    let ids = flusher.flush().await?;
    println!(
        "stream-page-views {} meta-only events in one pipeline: {}",
        ids.len(),
        ids.join(", ")
    );

    println!("\n== consuming read-group-ab (stream-a + stream-b), draining");
    let mut consumer = broker.consumer("read-group-ab")?;
    consumer.disable_loop();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    consumer
        .consume(CancellationToken::new(), 10, move |events| {
            let sink = sink.clone();
            async move {
                for event in events {
                    let body = match event.stream() {
                        "stream-b" => format!("{:?}", event.unserialize::<Color>()?),
                        _ => format!("{:?}", event.unserialize::<String>()?),
                    };
                    sink.lock().unwrap().push(format!(
                        "{} {} {body} version={:?}",
                        event.stream(),
                        event.id(),
                        event.tag("version")
                    ));
                }
                Ok(())
            }
        })
        .await?;
    for line in lines.lock().unwrap().iter() {
        println!("handled {line}");
    }

    println!("\n== consuming page-views (meta-only events)");
    let mut counter = broker.consumer("page-views")?;
    counter
        .disable_loop()
        .set_block_time(Duration::from_millis(100));
    let counts = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u32>::new()));
    let sink = counts.clone();
    counter
        .consume(CancellationToken::new(), 100, move |events| {
            for event in &events {
                *sink
                    .lock()
                    .unwrap()
                    .entry(event.tag("url").to_string())
                    .or_default() += 1;
            }
            async { Ok(()) }
        })
        .await?;
    for (url, n) in counts.lock().unwrap().iter() {
        println!("page {url}: {n} views");
    }

    println!("\n== status");
    for stream in broker.statistics().await? {
        for group in &stream.groups {
            println!(
                "{:<18} length {:<3} group {:<14} pending {} lag {:?}",
                stream.name, stream.length, group.name, group.pending, group.lag
            );
        }
    }
    let report = engine.gc().await?;
    println!(
        "\n== garbage collection: deleted {} entries every group had acknowledged",
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
