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
    let components = supervisor::load_all(&config, &wasm)
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
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
    let mut supervisor = Supervisor::start(config, reloader.clone(), options, cancel.clone());
    if args.drain {
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
    supervisor.wait().await;
    tracing::info!("beehive run stopped");
    Ok(())
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
