//! Resident memory of `beehive run` with ten small component groups.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::setup::Bench;

/// The `beehive` binary next to this benchmark (same profile), or `$BEEHIVE_BIN`.
pub fn beehive_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BEEHIVE_BIN") {
        return Ok(bin.into());
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("beehive");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it (cargo build --release -p beehive) or set BEEHIVE_BIN",
        bin.display()
    );
    Ok(bin)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// Starts `beehive run` with `groups` groups (one stream each, the trivial guest, one
/// instance per group), waits until every group has handled 100 events, and prints the
/// resident set size.
pub async fn report(bench: &Bench, component: &Path, groups: usize) -> anyhow::Result<()> {
    let component = component.canonicalize().with_context(|| {
        format!(
            "{} (build it: bash bench/build-guests)",
            component.display()
        )
    })?;
    let dir = std::env::temp_dir().join(format!("beehive-bench-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut yaml = format!(
        "default:\n  redis: {}\n  streams:\n",
        bench.server.address()
    );
    for g in 0..groups {
        yaml.push_str(&format!("    rss-{g}: [rss-group-{g}]\n"));
    }
    yaml.push_str("consumers:\n");
    for g in 0..groups {
        yaml.push_str(&format!(
            "  rss-group-{g}:\n    component: {}\n    count: 100\n",
            component.display()
        ));
    }
    let config = dir.join("beehive.yaml");
    std::fs::write(&config, yaml)?;
    let mut child = tokio::process::Command::new(beehive_bin()?)
        .args(["run", "--no-watch", "-c"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env("BEEHIVE_CACHE_DIR", dir.join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("beehive run exited at once")?;
    let mut con = bench.connection().await?;
    // Feed every group and wait until each has handled its events.
    for g in 0..groups {
        for _ in 0..100 {
            redis::cmd("XADD")
                .arg(format!("rss-{g}"))
                .arg("*")
                .arg("source")
                .arg("bench")
                .exec_async(&mut con)
                .await?;
        }
    }
    let started = Instant::now();
    loop {
        let mut done = 0;
        for g in 0..groups {
            let info: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(format!("rss-{g}"))
                .query_async(&mut con)
                .await?;
            // Lag 0 and nothing pending: every event handled and acknowledged.
            let zero = |key: &str, group: &std::collections::HashMap<String, redis::Value>| {
                matches!(group.get(key), Some(redis::Value::Int(0)))
            };
            if info
                .iter()
                .any(|group| zero("pending", group) && zero("lag", group))
            {
                done += 1;
            }
        }
        if done == groups {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "beehive run did not handle the events of all {groups} groups within 2 minutes"
        );
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("beehive run exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss = rss_kib(pid)?;
    child.kill().await?;
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    println!(
        "RSS of `beehive run` with {groups} component groups (trivial guest, 1 instance each), after handling: {:.1} MiB",
        rss as f64 / 1024.0
    );
    Ok(())
}
