//! `beehive-bench fleet`: real `beehive run` processes sharing one group.
//!
//! - **Throughput**: 1 host × `instances: 4` against 2 hosts × 2 (the fleet's fair share) on
//!   the same redis-server, each over the same preloaded events through the echo component
//!   (one receipt per event); events/s from the first to the last receipt (receipt IDs are
//!   server timestamps), so component loading does not count.
//! - **Join**: under a steady flow, a second host joins a host running all 4 consumers;
//!   the longest gap between receipts and the longest delay of an event (its receipt's
//!   timestamp minus its own) around the hand-over.
//! - **Kill**: one of two hosts is killed with SIGKILL under the same flow; the events its
//!   consumers held wait for their locks to expire (`lock-ttl`): the longest delay of an
//!   event is the figure to compare with `lock-ttl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use beehive::redis_server::RedisServer;
use redis::aio::MultiplexedConnection;

/// Lock TTL of the benchmark's consumers.
const LOCK_TTL: Duration = Duration::from_secs(2);
/// Consumers of the group across the fleet.
const INSTANCES: u32 = 4;

/// What the fleet benchmark measured.
pub struct FleetFigures {
    /// Events/s with one host running every consumer.
    pub one_host: f64,
    /// Events/s with two hosts sharing them.
    pub two_hosts: f64,
    /// Around a join: the longest gap between receipts, and the longest event delay.
    pub join: (Duration, Duration),
    /// Around a kill: the longest gap between receipts, and the longest event delay.
    pub kill: (Duration, Duration),
    /// From the kill until the survivor holds every consumer.
    pub takeover: Duration,
}

/// A `beehive run` child process, killed on drop.
struct Host(Child);

impl Host {
    fn start(beehive: &Path, config: &Path) -> anyhow::Result<Host> {
        let child = Command::new(beehive)
            .args(["run", "--no-watch", "-c"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", beehive.display()))?;
        Ok(Host(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_config(dir: &Path, server: &RedisServer, echo: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("fleet.yaml");
    std::fs::write(
        &path,
        format!(
            "default:\n  redis: {}:0\n  streams:\n    events: [handlers]\n    receipts: [auditors]\nconsumers:\n  handlers:\n    component: {}\n    publish: [receipts]\n    count: 100\n    instances: {INSTANCES}\n    block: 100ms\n    lock-ttl: {}s\n    min-idle: 10s\n",
            server.address(),
            echo.display(),
            LOCK_TTL.as_secs()
        ),
    )?;
    Ok(path)
}

/// The hosts (pids) holding the group's consumer locks.
async fn lock_holders(con: &mut MultiplexedConnection) -> anyhow::Result<Vec<Option<u32>>> {
    let keys: Vec<String> = (1..=INSTANCES)
        .map(|nr| beehive::keys::lock_key("handlers", nr))
        .collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(con).await?;
    Ok(values
        .into_iter()
        .map(|v| {
            v.as_deref()
                .and_then(beehive::keys::lock_owner)
                .and_then(|owner| owner.rsplit(':').next()?.parse().ok())
        })
        .collect())
}

/// Waits until the consumers are held by exactly `hosts`, `per_host` each.
async fn await_shares(
    con: &mut MultiplexedConnection,
    hosts: &[u32],
    per_host: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let holders = lock_holders(con).await?;
        if hosts
            .iter()
            .all(|h| holders.iter().filter(|x| **x == Some(*h)).count() == per_host)
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the hosts did not settle on {per_host} consumers each: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(con: &mut MultiplexedConnection, n: usize) -> anyhow::Result<()> {
    let mut sent = 0;
    while sent < n {
        let mut pipe = redis::pipe();
        for i in sent..(sent + 1000).min(n) {
            pipe.cmd("XADD")
                .arg("events")
                .arg("*")
                .arg("echo-to")
                .arg("receipts")
                .arg("n")
                .arg(i)
                .ignore();
        }
        pipe.exec_async(con).await?;
        sent = (sent + 1000).min(n);
    }
    Ok(())
}

/// Receipt timestamps (ms) with their source event's timestamp, in receipt order.
async fn receipts(con: &mut MultiplexedConnection) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("receipts")
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query_async(con)
            .await?;
        let Some(last) = page.ids.last() else { break };
        start = format!("({}", last.id);
        for entry in &page.ids {
            let at = ms(&entry.id);
            let of: String = entry.get("echo-of").unwrap_or_default();
            out.push((at, ms(&of)));
        }
    }
    Ok(out)
}

fn ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

async fn await_receipts(
    con: &mut MultiplexedConnection,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let len: usize = redis::cmd("XLEN").arg("receipts").query_async(con).await?;
        if len >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {len} of {n} receipts arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events/s over `n` preloaded events with `hosts` hosts sharing the group.
async fn throughput(beehive: &Path, echo: &Path, hosts: usize, n: usize) -> anyhow::Result<f64> {
    let server = RedisServer::start()?;
    let dir = tempdir()?;
    let config = write_config(&dir, &server, echo)?;
    let mut con = redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?;
    let running: Vec<Host> = (0..hosts)
        .map(|_| Host::start(beehive, &config))
        .collect::<anyhow::Result<_>>()?;
    let pids: Vec<u32> = running.iter().map(Host::pid).collect();
    await_shares(
        &mut con,
        &pids,
        INSTANCES as usize / hosts,
        Duration::from_secs(60),
    )
    .await?;
    publish(&mut con, n).await?;
    await_receipts(&mut con, n, Duration::from_secs(300)).await?;
    let got = receipts(&mut con).await?;
    let first = got.iter().map(|r| r.0).min().unwrap_or(0);
    let last = got.iter().map(|r| r.0).max().unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(n as f64 / ((last - first).max(1) as f64 / 1000.0))
}

/// The longest gap between receipts and the longest event delay among receipts of events
/// published in `[from, to]` (server ms).
fn worst(got: &[(u64, u64)], from: u64, to: u64) -> (Duration, Duration) {
    let window: Vec<&(u64, u64)> = got
        .iter()
        .filter(|(_, of)| *of >= from && *of <= to)
        .collect();
    let mut at: Vec<u64> = window.iter().map(|r| r.0).collect();
    at.sort_unstable();
    let gap = at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let delay = window
        .iter()
        .map(|(at, of)| at.saturating_sub(*of))
        .max()
        .unwrap_or(0);
    (Duration::from_millis(gap), Duration::from_millis(delay))
}

async fn server_ms(con: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(con).await?;
    Ok(s * 1000 + us / 1000)
}

/// Publishes `rate` events/s until `stop` fires; returns how many.
fn steady_flow(
    url: String,
    rate: u32,
    stop: beehive::CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<usize>> {
    tokio::spawn(async move {
        let mut con = redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await?;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let per_tick = (rate / 100).max(1) as usize;
        let mut sent = 0;
        while !stop.is_cancelled() {
            tick.tick().await;
            publish(&mut con, per_tick).await?;
            sent += per_tick;
        }
        Ok(sent)
    })
}

/// The join and kill figures under a steady flow of `rate` events/s.
async fn join_and_kill(
    beehive: &Path,
    echo: &Path,
    rate: u32,
) -> anyhow::Result<((Duration, Duration), (Duration, Duration), Duration)> {
    let server = RedisServer::start()?;
    let dir = tempdir()?;
    let config = write_config(&dir, &server, echo)?;
    let mut con = redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?;
    let first = Host::start(beehive, &config)?;
    await_shares(
        &mut con,
        &[first.pid()],
        INSTANCES as usize,
        Duration::from_secs(60),
    )
    .await?;
    let stop = beehive::CancellationToken::new();
    let flow = steady_flow(server.url(), rate, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let join_from = server_ms(&mut con).await?;
    let mut second = Host::start(beehive, &config)?;
    await_shares(
        &mut con,
        &[first.pid(), second.pid()],
        INSTANCES as usize / 2,
        Duration::from_secs(60),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let join_to = server_ms(&mut con).await?;

    let kill_from = server_ms(&mut con).await?;
    let killed_at = Instant::now();
    second.kill();
    await_shares(&mut con, &[first.pid()], INSTANCES as usize, LOCK_TTL * 10).await?;
    let takeover = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kill_to = server_ms(&mut con).await?;
    stop.cancel();
    let sent = flow.await??;
    await_receipts(&mut con, sent, Duration::from_secs(120)).await?;
    let got = receipts(&mut con).await?;
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((
        worst(&got, join_from, join_to),
        worst(&got, kill_from, kill_to),
        takeover,
    ))
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "beehive-bench-fleet-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs the fleet benchmark with the `beehive` binary at `beehive` and the echo component.
pub async fn run(
    beehive: &Path,
    echo: &Path,
    events: usize,
    rate: u32,
) -> anyhow::Result<FleetFigures> {
    // The config lives in a temporary folder: give it absolute paths.
    let echo = &std::fs::canonicalize(echo)
        .with_context(|| format!("{} not found: bash scripts/build-examples", echo.display()))?;
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
    let one_host = throughput(beehive, echo, 1, events).await?;
    let two_hosts = throughput(beehive, echo, 2, events).await?;
    let (join, kill, takeover) = join_and_kill(beehive, echo, rate).await?;
    Ok(FleetFigures {
        one_host,
        two_hosts,
        join,
        kill,
        takeover,
    })
}

/// Prints the figures with their goals.
pub fn print(figures: &FleetFigures) {
    let ratio = figures.two_hosts / figures.one_host.max(1.0);
    println!(
        "\nFleet (real beehive run processes, echo component, instances: {INSTANCES}, lock-ttl {}s)",
        LOCK_TTL.as_secs()
    );
    println!(
        "  1 host x 4 consumers  {:>10} events/s",
        crate::report::thousands(figures.one_host)
    );
    println!(
        "  2 hosts x 2 consumers {:>10} events/s  ({ratio:.2}x; goal >= 0.9x on this shared machine: {})",
        crate::report::thousands(figures.two_hosts),
        if ratio >= 0.9 { "met" } else { "NOT met" }
    );
    let (gap, delay) = figures.join;
    println!(
        "  join: longest gap between receipts {} ms, longest event delay {} ms (goal < 1000 ms: {})",
        gap.as_millis(),
        delay.as_millis(),
        if gap < Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
    let (gap, delay) = figures.kill;
    let goal = LOCK_TTL + Duration::from_secs(1);
    println!(
        "  kill -9: longest gap between receipts {} ms, longest event delay {} ms; the survivor ran every consumer after {} ms (goal < lock-ttl + 1 s = {} ms: {})",
        gap.as_millis(),
        delay.as_millis(),
        figures.takeover.as_millis(),
        goal.as_millis(),
        if delay.max(figures.takeover) < goal {
            "met"
        } else {
            "NOT met"
        }
    );
}
