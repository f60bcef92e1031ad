//! Publishing scenarios P0–P3.

use std::time::Instant;

use anyhow::Context;
use beehive::NewEvent;

use crate::report::{Report, Sample};
use crate::setup::{Bench, PUBLISH_STREAM, body, meta, rate};

fn event() -> NewEvent {
    let meta = meta("0")
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    NewEvent::new(PUBLISH_STREAM, Some(body()), meta).expect("a valid event")
}

async fn reset(bench: &Bench) -> anyhow::Result<()> {
    let mut con = bench.connection().await?;
    redis::cmd("DEL")
        .arg(PUBLISH_STREAM)
        .exec_async(&mut con)
        .await?;
    Ok(())
}

/// P0: `redis-benchmark -c 1 -P 64` XADD of the same entry: Redis's own ceiling.
async fn p0(bench: &Bench, n: usize) -> anyhow::Result<f64> {
    let body = String::from_utf8(body())?;
    let mut cmd = tokio::process::Command::new("redis-benchmark");
    cmd.args([
        "-p",
        &bench.server.port().to_string(),
        "-c",
        "1",
        "-P",
        "64",
    ])
    .args(["-n", &n.to_string(), "--csv"])
    .args(["XADD", PUBLISH_STREAM, "*", "s", &body]);
    for (k, v) in meta("0") {
        cmd.args([k, v]);
    }
    let out = cmd
        .output()
        .await
        .context("running redis-benchmark (it comes with redis-server)")?;
    anyhow::ensure!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // --csv: a header line, then `"<command>","<rps>",...`.
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("\"XADD"))
        .with_context(|| format!("unexpected redis-benchmark output: {text}"))?;
    let rps = line
        .split("\",\"")
        .nth(1)
        .and_then(|v| v.trim_matches('"').parse::<f64>().ok())
        .with_context(|| format!("unexpected redis-benchmark output: {line}"))?;
    Ok(rps)
}

/// P1: `publish` one by one, each awaited.
async fn p1(bench: &Bench, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..n {
        bench.broker.publish_event(event()).await?;
    }
    Ok(rate(n, started.elapsed()))
}

/// P2: a `Flusher`, flushed every `per_flush` events; P2s (`start_flush`): the same,
/// pipelined (each flush is sent before the answer to the one before is awaited).
async fn p2(bench: &Bench, n: usize, per_flush: usize, start_flush: bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut flusher = bench.broker.new_flusher();
    for i in 0..n {
        flusher.publish_event(event())?;
        if (i + 1) % per_flush == 0 {
            if start_flush {
                flusher.start_flush().await?;
            } else {
                flusher.flush().await?;
            }
        }
    }
    flusher.flush().await?;
    Ok(rate(n, started.elapsed()))
}

/// P3: `tasks` concurrent publishers on one engine, each publishing one by one.
async fn p3(bench: &Bench, n: usize, tasks: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let broker = bench.broker.clone();
        let share = n / tasks + usize::from(t < n % tasks);
        handles.push(tokio::spawn(async move {
            for _ in 0..share {
                broker.publish_event(event()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(rate(n, started.elapsed()))
}

/// Runs one scenario of `n` events: its rate and Redis CPU µs per event.
async fn timed(
    bench: &Bench,
    n: usize,
    scenario: impl Future<Output = anyhow::Result<f64>>,
) -> anyhow::Result<(f64, f64)> {
    reset(bench).await?;
    let cpu = bench.redis_cpu().await?;
    let rate = scenario.await?;
    let cpu = bench.redis_cpu().await? - cpu;
    Ok((rate, cpu * 1e6 / n as f64))
}

/// One interleaved run of every publishing scenario.
pub async fn run(bench: &Bench, report: &mut Report, run: usize, n: usize) -> anyhow::Result<()> {
    let mut add = |scenario, label, batch, (rate, redis_us)| {
        report.add(Sample {
            scenario,
            label,
            batch,
            rate,
            run,
            redis_us: Some(redis_us),
        })
    };
    if bench.selected("P0") {
        add(
            "P0",
            "redis-benchmark -c 1 -P 64 XADD (baseline)",
            Some(64),
            timed(bench, n, p0(bench, n)).await?,
        );
    }
    if bench.selected("P1") {
        add(
            "P1",
            "publish, one by one, awaited",
            Some(1),
            timed(bench, n / 20, p1(bench, n / 20)).await?,
        );
    }
    for per_flush in [100, 1000] {
        for (scenario, label, start_flush) in [
            ("P2", "Flusher, flush every <batch> events", false),
            (
                "P2s",
                "Flusher, start_flush every <batch> events (pipelined)",
                true,
            ),
        ] {
            if bench.selected(scenario) {
                add(
                    scenario,
                    label,
                    Some(per_flush),
                    timed(bench, n, p2(bench, n, per_flush, start_flush)).await?,
                );
            }
        }
    }
    if bench.selected("P3") {
        add(
            "P3",
            "64 concurrent publishers, one engine",
            Some(64),
            timed(bench, n, p3(bench, n, 64)).await?,
        );
    }
    reset(bench).await?;
    Ok(())
}
