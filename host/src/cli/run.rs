//! `beehive run`: runs every configured consumer until SIGINT/SIGTERM. Component files are
//! watched and hot-reloaded; SIGHUP reloads the configuration (as far as is safe) and every
//! component.

use std::sync::Arc;

use super::{CommandResult, ConfigArg, Failure};
use crate::CancellationToken;
use crate::config::Config;
use crate::ops::reload::{ReloadOutcome, Reloader};
use crate::ops::supervisor::{self, RunOptions, Supervisor};
use crate::runtime::WasmEngine;

/// Arguments of `beehive run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Drain every group once, then exit (for batch jobs and tests).
    #[arg(long)]
    pub drain: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (host:port, or a port on 127.0.0.1);
    /// overrides `metrics.addr` in the config. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Do not watch component files; reload only on SIGHUP.
    #[arg(long)]
    pub no_watch: bool,
    /// With --drain: how long Redis may go unanswered (at start, or while draining) before
    /// the drain gives up with exit 1. Without --drain, `beehive run` waits for Redis
    /// as long as it takes.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// How often garbage collection trims acknowledged events (e.g. 30s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub gc_interval: std::time::Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

pub(super) async fn run(args: RunArgs) -> CommandResult {
    use tokio::signal::unix::{SignalKind, signal};
    let config = args.config.load()?;
    let wasm = WasmEngine::new()
        .map_err(|e| Failure::Runtime(format!("cannot start the WebAssembly engine: {e:#}")))?;
    let connect_timeout = args
        .connect_timeout
        .max(std::time::Duration::from_millis(100));
    if args.drain {
        // A batch job must end: Redis gets --connect-timeout to answer, then the drain fails.
        wait_for_pools(&config, connect_timeout).await?;
    }
    let loading = supervisor::load_all(&config, &wasm);
    let components = if args.drain {
        tokio::time::timeout(connect_timeout, loading)
            .await
            .map_err(|_| {
                Failure::Runtime(format!(
                    "giving up the drain: Redis did not answer within {} (--connect-timeout) while loading the components",
                    humantime::format_duration(connect_timeout)
                ))
            })?
    } else {
        loading.await
    }
    .map_err(|e| component_failure(&config, e))?;
    let metrics_addr = match &args.metrics_addr {
        Some(text) => Some(
            crate::ops::metrics::parse_addr(text)
                .map_err(|e| Failure::Usage(format!("--metrics-addr: {e}")))?,
        ),
        None => config.metrics_addr,
    };
    let cancel = CancellationToken::new();
    let metrics = match metrics_addr {
        Some(addr) => {
            let metrics = crate::ops::metrics::Metrics::new();
            metrics
                .clone()
                .serve(addr, cancel.clone())
                .await
                .map_err(|e| Failure::Runtime(format!("cannot serve metrics on {addr}: {e}")))?;
            Some(metrics)
        }
        None => None,
    };
    let consumers = components
        .into_iter()
        .filter_map(|(group, component)| config.consumers.get(&group).map(|c| (c, component)));
    let reloader = Arc::new(Reloader::new(wasm.clone(), consumers, metrics.clone()));
    if !args.drain && !args.no_watch {
        reloader
            .clone()
            .watch_files(cancel.clone())
            .map_err(|e| Failure::Runtime(format!("cannot watch component files: {e}")))?;
    }
    if !args.drain {
        crate::ops::deploy::follow(
            config.registry.create_engine(),
            wasm,
            reloader.clone(),
            cancel.clone(),
        );
    }
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return Err(Failure::Runtime("cannot install signal handlers".into()));
    };
    tracing::info!(
        groups = config.consumers.len(),
        drain = args.drain,
        "beehive run starting"
    );
    let options = RunOptions {
        drain: args.drain,
        metrics,
        gc_interval: args.gc_interval.max(std::time::Duration::from_millis(10)),
        ..RunOptions::default()
    };
    let watched = config.clone();
    let mut supervisor = Supervisor::start(config, reloader.clone(), options, cancel.clone());
    let mut watchdog = None;
    if args.drain {
        watchdog = Some(tokio::spawn(watch_pools(
            watched,
            connect_timeout,
            cancel.clone(),
        )));
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            cancel.cancel();
        });
    } else {
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM: stopping after the batches in flight");
                    break;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping after the batches in flight");
                    break;
                }
                _ = hup.recv() => reload(&args.config, &mut supervisor, &reloader).await,
            }
        }
        cancel.cancel();
    }
    let finished = supervisor.wait();
    match watchdog {
        None => finished.await,
        Some(mut watchdog) => {
            tokio::pin!(finished);
            tokio::select! {
                biased;
                reason = &mut watchdog => {
                    // A pool stayed unanswered too long and the run was cancelled: in-flight
                    // batches get a moment to finish, then the drain fails.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), finished).await;
                    let reason = reason.unwrap_or_else(|e| format!("the Redis watchdog failed: {e}"));
                    return Err(Failure::Runtime(reason));
                }
                _ = &mut finished => {}
            }
            if !watchdog.is_finished() {
                watchdog.abort();
            } else if let Ok(reason) = watchdog.await {
                return Err(Failure::Runtime(reason));
            }
        }
    }
    tracing::info!("beehive run stopped");
    Ok(())
}

/// How long one `PING` may take before the pool counts as unanswered.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn pool_label(config: &Config, pool: &str) -> String {
    match config.registry.pools().find(|p| p.name == pool) {
        Some(def) => format!("pool {pool} ({})", def.address),
        None => format!("pool {pool}"),
    }
}

/// Waits until every pool answers `PING`, for up to `timeout`; the error names the first
/// pool that did not, its address and the last error.
async fn wait_for_pools(config: &Config, timeout: std::time::Duration) -> Result<(), Failure> {
    let engine = config.registry.create_engine();
    let deadline = tokio::time::Instant::now() + timeout;
    let pools: Vec<String> = config.registry.pools().map(|p| p.name.clone()).collect();
    for pool in &pools {
        let mut warned = false;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = tokio::time::timeout(
                left,
                engine.ping(pool, PING_TIMEOUT.min(left.max(PING_MIN))),
            )
            .await;
            let error = match attempt {
                Ok(Ok(())) => break,
                Ok(Err(e)) => redis_reason(&e),
                Err(_) => "no answer".to_string(),
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(Failure::Runtime(format!(
                    "giving up the drain: {} did not answer within {} (--connect-timeout): {error}",
                    pool_label(config, pool),
                    humantime::format_duration(timeout)
                )));
            }
            if !warned {
                tracing::warn!(pool = %pool_label(config, pool), %error, "Redis does not answer yet; waiting up to --connect-timeout");
                warned = true;
            }
            tokio::time::sleep(left.min(std::time::Duration::from_millis(500))).await;
        }
    }
    Ok(())
}

/// The shortest reply time a ping is given.
const PING_MIN: std::time::Duration = std::time::Duration::from_millis(100);

/// What went wrong talking to a pool, without the `redis pool <name>:` prefix (the message
/// names the pool already).
fn redis_reason(error: &crate::Error) -> String {
    match error {
        crate::Error::Redis { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// While a drain runs: pings every pool each second and, once one has not answered for
/// `timeout`, cancels the run and returns why.
async fn watch_pools(
    config: Config,
    timeout: std::time::Duration,
    cancel: CancellationToken,
) -> String {
    let engine = config.registry.create_engine();
    let pools: Vec<String> = config.registry.pools().map(|p| p.name.clone()).collect();
    let mut down_since: Vec<Option<tokio::time::Instant>> = vec![None; pools.len()];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => std::future::pending::<()>().await,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        for (pool, down) in pools.iter().zip(down_since.iter_mut()) {
            match engine.ping(pool, PING_TIMEOUT).await {
                Ok(()) => *down = None,
                Err(e) => {
                    let e = redis_reason(&e);
                    let since = *down.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= timeout {
                        cancel.cancel();
                        return format!(
                            "giving up the drain: {} has not answered for {} (--connect-timeout): {e}",
                            pool_label(&config, pool),
                            humantime::format_duration(timeout)
                        );
                    }
                    tracing::warn!(pool = %pool_label(&config, pool), error = %e, "Redis does not answer; the drain gives up after --connect-timeout");
                }
            }
        }
    }
}

/// A component that cannot be loaded: named by its key in the config file when it is a
/// group's file (`beehive.yaml: consumers.echo.component: /x/echo.wasm: no such file`).
pub(super) fn component_failure(config: &Config, e: crate::runtime::ComponentError) -> Failure {
    let group = config
        .consumers
        .iter()
        .find_map(|(group, c)| match &c.component {
            crate::config::ComponentSource::File(path)
                if path.display().to_string() == e.origin =>
            {
                Some(group)
            }
            _ => None,
        });
    Failure::Usage(match group {
        Some(group) => format!(
            "{}: consumers.{group}.component: {}: {}",
            config.file.display(),
            e.origin,
            e.reason
        ),
        None => e.to_string(),
    })
}

/// SIGHUP: the configuration as far as is safe, then every component from its file.
async fn reload(config: &ConfigArg, supervisor: &mut Supervisor, reloader: &Reloader) {
    tracing::info!("SIGHUP: reloading the configuration and components");
    match Config::load(&config.config) {
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the running configuration stays")
        }
        Ok(new) => match supervisor.apply(new).await {
            Ok(changes) if changes.is_empty() => tracing::info!("configuration unchanged"),
            Ok(changes) => tracing::info!(changes = ?changes, "configuration reloaded"),
            Err(reason) => {
                tracing::error!(%reason, "config reload refused; the running configuration stays")
            }
        },
    }
    for (group, outcome) in reloader.reload_all().await {
        if outcome == ReloadOutcome::Unchanged {
            tracing::info!(group, "component unchanged");
        }
    }
}
