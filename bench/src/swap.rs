//! The hot-swap pause: the longest gap between batch completions around a swap, against
//! the longest gap with no swap, under a steady stream of events.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use beehive::redis_server::RedisServer;
use beehive::runtime::{GuestSettings, WasmEngine, WasmHandler};
use beehive::{BatchHandler, CancellationToken, Decision, Event, Registry};

/// Wraps a handler and records when each batch finished.
struct Timed {
    inner: WasmHandler,
    done: Arc<Mutex<Vec<Instant>>>,
}

impl BatchHandler for Timed {
    async fn handle(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
        let result = self.inner.handle(events).await;
        self.done.lock().expect("timings").push(Instant::now());
        result
    }
}

fn max_gap(times: &[Instant], from: Instant, to: Instant) -> Duration {
    times
        .windows(2)
        .filter(|w| w[0] >= from && w[1] <= to)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Runs the swap scenario: `swaps` swaps between echo and page-views at `rate` events/s.
pub async fn run(components: &Path, rate: u32, swaps: u32) -> anyhow::Result<()> {
    let server = RedisServer::start()?;
    let mut registry = Registry::new();
    registry.register_redis(&server.address(), "", 0, "default");
    registry.register_redis_stream("events", "default", &["handlers"]);
    let engine = registry.validate().await?.create_engine();
    let broker = engine.event_broker();
    let wasm = WasmEngine::new()?;
    let a = wasm
        .load_file(&components.join("beehive_example_echo.wasm"))
        .context("build the examples first: bash scripts/build-examples")?;
    let b = wasm.load_file(&components.join("beehive_example_page_views.wasm"))?;
    let (tx, rx) = tokio::sync::watch::channel(a.clone());
    let settings = GuestSettings {
        group: "handlers".into(),
        publish: vec![],
        ..GuestSettings::default()
    };
    let done = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = broker.consumer("handlers")?;
    consumer.set_block_time(Duration::from_millis(50));
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (cancel, done) = (cancel.clone(), done.clone());
        async move {
            consumer
                .consume_with(
                    cancel,
                    1,
                    100,
                    Timed {
                        inner: WasmHandler::with_updates(rx, settings, "bench"),
                        done,
                    },
                )
                .await
        }
    });
    let publisher = tokio::spawn({
        let (broker, cancel) = (broker.clone(), cancel.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let per_tick = (rate / 100).max(1);
            while !cancel.is_cancelled() {
                tick.tick().await;
                let mut flusher = broker.new_flusher();
                for _ in 0..per_tick {
                    flusher
                        .publish_meta("events", &[("url", "/bench/")])
                        .expect("valid event");
                }
                flusher.flush().await.expect("flush");
            }
        }
    });
    // Baseline: steady state with no swap.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_to = Instant::now();
    let mut windows = Vec::new();
    for i in 0..swaps {
        let next = if i % 2 == 0 { b.clone() } else { a.clone() };
        let at = Instant::now();
        tx.send_replace(next);
        tokio::time::sleep(Duration::from_millis(250)).await;
        windows.push((at - Duration::from_millis(50), Instant::now()));
    }
    cancel.cancel();
    publisher.await?;
    task.await??;
    let times = done.lock().expect("timings").clone();
    let baseline = max_gap(&times, base_from, base_to);
    let mut pauses: Vec<Duration> = windows
        .iter()
        .map(|(from, to)| max_gap(&times, *from, *to))
        .collect();
    pauses.sort();
    let median = pauses[pauses.len() / 2];
    let worst = *pauses.last().unwrap_or(&Duration::ZERO);
    println!(
        "swap pause under {rate} events/s, {swaps} swaps (echo <-> page-views), batches of up to 100:"
    );
    println!(
        "  longest gap between batches, no swap (baseline): {:>8.2} ms",
        baseline.as_secs_f64() * 1e3
    );
    println!(
        "  longest gap around a swap, median over swaps:    {:>8.2} ms",
        median.as_secs_f64() * 1e3
    );
    println!(
        "  longest gap around a swap, worst:                {:>8.2} ms",
        worst.as_secs_f64() * 1e3
    );
    println!(
        "  ratio worst / baseline:                          {:>8.2}",
        worst.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
    );
    Ok(())
}
