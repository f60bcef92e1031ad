//! WASM costs without Redis: instantiation from `InstancePre` and the host's per-event cost
//! of a `handle-events` call.

use std::time::{Duration, Instant};

use beehive::runtime::{Component, GuestSettings, WasmHandler, check_instantiation};
use beehive::{BatchHandler, EntryId, Event};

use crate::report::median;
use crate::setup::{STREAM, body, meta};

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let meta = meta("0")
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Event::new(
                STREAM,
                EntryId {
                    ms: 1_700_000_000_000 + i as u64,
                    seq: 0,
                },
                Some(body()),
                meta,
            )
        })
        .collect()
}

/// Median time of a fresh store + instantiation (what a new or recovering consumer pays).
pub async fn instantiation(component: &Component, runs: usize) -> anyhow::Result<Duration> {
    let settings = GuestSettings::default();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        check_instantiation(component, &settings)
            .await
            .map_err(anyhow::Error::msg)?;
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(Duration::from_secs_f64(median(&times)))
}

/// Median time of one `handle-events` call with `batch` events (instance reused).
pub async fn call_time(
    component: &Component,
    batch: usize,
    calls: usize,
) -> anyhow::Result<Duration> {
    let mut handler = WasmHandler::new(component.clone(), GuestSettings::default(), "bench");
    let events = events(batch);
    handler.handle(&events).await?; // instantiate outside the measurement
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..calls {
            handler.handle(&events).await?;
        }
        times.push(started.elapsed().as_secs_f64() / calls as f64);
    }
    Ok(Duration::from_secs_f64(median(&times)))
}

/// Prints instantiation time and per-event call cost for batches of 1, 100 and 1000.
pub async fn report(component: &Component) -> anyhow::Result<()> {
    let inst = instantiation(component, 200).await?;
    let one = call_time(component, 1, 2000).await?;
    let hundred = call_time(component, 100, 200).await?;
    let thousand = call_time(component, 1000, 20).await?;
    let per_event = |d: Duration, n: usize| d.as_secs_f64() * 1e9 / n as f64;
    println!();
    println!("WASM costs (trivial Rust guest, 100-byte body, 2 meta pairs, no Redis):");
    println!();
    println!("| what | time |");
    println!("|---|---:|");
    println!(
        "| fresh store + instantiate from InstancePre, median of 200 | {:.1} µs |",
        inst.as_secs_f64() * 1e6
    );
    println!(
        "| handle-events call, batch of 1 | {:.2} µs |",
        one.as_secs_f64() * 1e6
    );
    println!(
        "| handle-events call, batch of 100, per event | {:.0} ns |",
        per_event(hundred, 100)
    );
    println!(
        "| handle-events call, batch of 1000, per event | {:.0} ns |",
        per_event(thousand, 1000)
    );
    println!(
        "| marginal cost of one more event, (t(100) - t(1)) / 99 | {:.0} ns |",
        (hundred.as_secs_f64() - one.as_secs_f64()) * 1e9 / 99.0
    );
    Ok(())
}
