//! `beehive run`: runs every configured consumer until SIGINT/SIGTERM.

use super::{CommandResult, ConfigArg, Failure};
use crate::CancellationToken;
use crate::runtime::WasmEngine;
use crate::supervisor::{self, RunOptions};

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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

pub(super) async fn run(args: RunArgs) -> CommandResult {
    let config = args.config.load()?;
    let wasm = WasmEngine::new()
        .map_err(|e| Failure::Runtime(format!("cannot start the WebAssembly engine: {e:#}")))?;
    let components =
        supervisor::load_components(&config, &wasm).map_err(|e| Failure::Usage(e.to_string()))?;
    let metrics_addr = match &args.metrics_addr {
        Some(text) => Some(
            crate::metrics::parse_addr(text)
                .map_err(|e| Failure::Usage(format!("--metrics-addr: {e}")))?,
        ),
        None => config.metrics_addr,
    };
    let cancel = CancellationToken::new();
    let metrics = match metrics_addr {
        Some(addr) => {
            let metrics = crate::metrics::Metrics::new();
            metrics
                .clone()
                .serve(addr, cancel.clone())
                .await
                .map_err(|e| Failure::Runtime(format!("cannot serve metrics on {addr}: {e}")))?;
            Some(metrics)
        }
        None => None,
    };
    tokio::spawn(stop_on_signal(cancel.clone()));
    tracing::info!(
        groups = config.consumers.len(),
        drain = args.drain,
        "beehive run starting"
    );
    supervisor::run(
        &config,
        &components,
        RunOptions {
            drain: args.drain,
            metrics,
            ..RunOptions::default()
        },
        cancel,
    )
    .await;
    tracing::info!("beehive run stopped");
    Ok(())
}

/// Cancels on SIGINT or SIGTERM: consumers stop reading, finish and commit their batches,
/// and release their locks.
async fn stop_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping after the batches in flight"),
        _ = int.recv() => tracing::info!("SIGINT: stopping after the batches in flight"),
    }
    cancel.cancel();
}
