//! `beehive-bench tooling`: `beehive test` on recorded events against `beehive run --drain`
//! on the same events through Redis, with the Rust router, both the real release binary.
//!
//! The events are published to a private redis-server, recorded with `beehive record`,
//! then handled twice: by `beehive test --count 100` (no Redis; its expectation written by a
//! first `--update` run, so the timed run compares every event) and by `beehive run
//! --drain` (the same component and batch size, through Redis). Both figures are whole
//! process runs, start-up and component loading included.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use beehive::redis_server::RedisServer;

/// What the tooling benchmark measured.
pub struct ToolingFigures {
    /// Events handled.
    pub events: usize,
    /// `beehive test` events/s.
    pub test: f64,
    /// `beehive run --drain` events/s.
    pub drain: f64,
}

fn run(cmd: &mut Command) -> anyhow::Result<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let took = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    );
    Ok((took, out.stdout))
}

async fn publish(server: &RedisServer, n: usize) -> anyhow::Result<()> {
    let mut con = redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?;
    let mut sent = 0;
    while sent < n {
        let mut pipe = redis::pipe();
        for i in sent..(sent + 1000).min(n) {
            // v2 colours: `{ "name": "red", "price_cents": i }` as MessagePack.
            let mut body = vec![0x82, 0xa4];
            body.extend_from_slice(b"name");
            body.extend_from_slice(&[0xa3, b'r', b'e', b'd', 0xab]);
            body.extend_from_slice(b"price_cents");
            body.push(0xce);
            body.extend_from_slice(&(i as u32).to_be_bytes());
            pipe.cmd("XADD")
                .arg("colors")
                .arg("*")
                .arg("s")
                .arg(body)
                .arg("version")
                .arg("2")
                .ignore();
        }
        pipe.exec_async(&mut con).await?;
        sent = (sent + 1000).min(n);
    }
    Ok(())
}

/// Runs the comparison with the `beehive` binary at `beehive` and the router component.
pub async fn run_tooling(
    beehive: &Path,
    router: &Path,
    events: usize,
) -> anyhow::Result<ToolingFigures> {
    // The config lives in a temporary folder: give it absolute paths.
    let router = &std::fs::canonicalize(router).with_context(|| {
        format!(
            "{} not found: bash scripts/build-examples",
            router.display()
        )
    })?;
    let beehive = &std::fs::canonicalize(beehive).with_context(|| {
        format!(
            "{} not found: cargo build --release -p beehive",
            beehive.display()
        )
    })?;
    anyhow::ensure!(
        beehive.exists(),
        "{} not found: cargo build --release -p beehive",
        beehive.display()
    );
    let server = RedisServer::start()?;
    let dir = std::env::temp_dir().join(format!("beehive-bench-tooling-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config: PathBuf = dir.join("beehive.yaml");
    std::fs::write(
        &config,
        format!(
            "default:\n  redis: {}:0\n  streams:\n    colors: [routers]\n    colors-normalized: [color-audit]\nconsumers:\n  routers:\n    component: {}\n    count: 100\n    publish: [colors-normalized]\n",
            server.address(),
            router.display()
        ),
    )?;
    publish(&server, events).await?;
    let (_, recorded) = run(Command::new(beehive)
        .args(["record", "colors", "--count"])
        .arg(events.to_string())
        .arg("-c")
        .arg(&config))?;
    let jsonl = dir.join("events.jsonl");
    std::fs::write(&jsonl, &recorded)?;
    let test = |update: bool| {
        let mut cmd = Command::new(beehive);
        cmd.arg("test")
            .arg(router)
            .arg(&jsonl)
            .args(["--count", "100", "--publish", "colors-normalized"])
            .stdout(Stdio::null());
        if update {
            cmd.arg("--update");
        }
        cmd
    };
    run(&mut test(true))?;
    let (test_took, _) = run(&mut test(false))?;
    let (drain_took, _) = run(Command::new(beehive)
        .args(["run", "--drain", "--no-watch", "-c"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ToolingFigures {
        events,
        test: events as f64 / test_took.as_secs_f64(),
        drain: events as f64 / drain_took.as_secs_f64(),
    })
}

/// Prints the figures with the goal.
pub fn print(figures: &ToolingFigures) {
    let ratio = figures.test / figures.drain.max(1.0);
    println!(
        "\nbeehive test vs beehive run --drain ({} recorded events, Rust router, batches of 100, whole process runs)",
        figures.events
    );
    println!(
        "  beehive test          {:>10} events/s",
        crate::report::thousands(figures.test)
    );
    println!(
        "  beehive run --drain   {:>10} events/s",
        crate::report::thousands(figures.drain)
    );
    println!(
        "  ratio {ratio:.2}x (goal: beehive test faster: {})",
        if ratio > 1.0 { "met" } else { "NOT met" }
    );
}
