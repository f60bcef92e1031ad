//! Hot reload of handler components without losing an event.
//!
//! A new version is compiled off the consuming path (a blocking task), checked against the
//! world, test-instantiated with the group's limits, then published on the group's
//! [`watch`] channel. Consumers take it between batches: a batch in flight finishes and
//! commits on the version it started with; every batch after the swap uses the new one. A
//! version that fails any check is refused, logged with the file and reason, counted, and
//! the old one keeps running.
//!
//! Triggers: the component file changing (`cp` over it, or an atomic rename into place),
//! watched with `notify` and debounced, and SIGHUP ([`Reloader::reload_all`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{ComponentSource, Config};
use crate::metrics::Metrics;
use crate::runtime::{Component, GuestSettings, WasmEngine, check_instantiation};

/// How long a file must stay quiet after a change before it is reloaded, so a copy in
/// progress is not compiled half-written.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new version is live.
    Swapped {
        /// Its digest.
        digest: String,
    },
    /// The file holds the version already running.
    Unchanged,
    /// The new version was refused; the old one keeps running.
    Refused(String),
}

struct Slot {
    path: Option<PathBuf>,
    settings: GuestSettings,
    sender: watch::Sender<Component>,
}

/// Holds the live version of every group's component and swaps in new ones.
pub struct Reloader {
    wasm: WasmEngine,
    slots: BTreeMap<String, Slot>,
    metrics: Option<Metrics>,
}

impl Reloader {
    /// Starts from the versions loaded at start-up.
    pub fn new(
        wasm: WasmEngine,
        config: &Config,
        components: BTreeMap<String, Component>,
        metrics: Option<Metrics>,
    ) -> Self {
        let slots = components
            .into_iter()
            .filter_map(|(group, component)| {
                let consumer = config.consumers.get(&group)?;
                let path = match &consumer.component {
                    ComponentSource::File(path) => Some(path.clone()),
                    ComponentSource::Deployed => None,
                };
                let settings = crate::supervisor::guest_settings(consumer, metrics.clone());
                Some((
                    group,
                    Slot {
                        path,
                        settings,
                        sender: watch::Sender::new(component),
                    },
                ))
            })
            .collect();
        Reloader {
            wasm,
            slots,
            metrics,
        }
    }

    /// The groups it holds components for.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    /// Follows `group`'s live version.
    pub fn subscribe(&self, group: &str) -> Option<watch::Receiver<Component>> {
        self.slots.get(group).map(|slot| slot.sender.subscribe())
    }

    /// The live version of `group`.
    pub fn current(&self, group: &str) -> Option<Component> {
        self.slots
            .get(group)
            .map(|slot| slot.sender.borrow().clone())
    }

    /// Reloads `group` from its file.
    pub async fn reload(&self, group: &str) -> ReloadOutcome {
        let Some(slot) = self.slots.get(group) else {
            return ReloadOutcome::Refused(format!("no component is configured for group {group}"));
        };
        let Some(path) = slot.path.clone() else {
            return ReloadOutcome::Unchanged;
        };
        let wasm = self.wasm.clone();
        let loaded = tokio::task::spawn_blocking(move || wasm.load_file(&path)).await;
        let candidate = match loaded {
            Ok(Ok(component)) => component,
            Ok(Err(e)) => return self.refuse(group, e.to_string()),
            Err(e) => return self.refuse(group, format!("the compile task failed: {e}")),
        };
        self.offer(group, candidate).await
    }

    /// Swaps `candidate` in for `group` if it instantiates; unchanged if it is the live one.
    pub async fn offer(&self, group: &str, candidate: Component) -> ReloadOutcome {
        let Some(slot) = self.slots.get(group) else {
            return ReloadOutcome::Refused(format!("no component is configured for group {group}"));
        };
        if candidate.digest() == slot.sender.borrow().digest() {
            return ReloadOutcome::Unchanged;
        }
        if let Err(reason) = check_instantiation(&candidate, &slot.settings).await {
            return self.refuse(
                group,
                format!(
                    "component {}: traps on instantiation: {reason}",
                    candidate.origin()
                ),
            );
        }
        let digest = candidate.digest().to_string();
        tracing::info!(group, digest = %candidate.short_digest(), origin = %candidate.origin(), "reloaded component; batches from now on use it");
        slot.sender.send_replace(candidate);
        if let Some(metrics) = &self.metrics {
            metrics.reload(group, "ok");
        }
        ReloadOutcome::Swapped { digest }
    }

    fn refuse(&self, group: &str, reason: String) -> ReloadOutcome {
        tracing::error!(group, %reason, "refused the new component version; the running one stays");
        if let Some(metrics) = &self.metrics {
            metrics.reload(group, "refused");
        }
        ReloadOutcome::Refused(reason)
    }

    /// Reloads every group from its file (SIGHUP).
    pub async fn reload_all(&self) -> Vec<(String, ReloadOutcome)> {
        let mut outcomes = Vec::new();
        for group in self.slots.keys() {
            outcomes.push((group.clone(), self.reload(group).await));
        }
        outcomes
    }

    /// Watches every component file's folder and reloads a group when its file changes
    /// (written, or renamed into place), after [`DEBOUNCE`] of quiet. Runs until `cancel`.
    pub fn watch_files(self: Arc<Self>, cancel: CancellationToken) -> notify::Result<()> {
        let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && matches!(
                        event.kind,
                        EventKind::Create(_)
                            | EventKind::Modify(_)
                            | EventKind::Access(notify::event::AccessKind::Close(
                                notify::event::AccessMode::Write
                            ))
                    )
                {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
            })?;
        let mut by_file: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (group, slot) in &self.slots {
            let Some(path) = &slot.path else { continue };
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            if let Some(name) = path.file_name() {
                by_file.insert(dir.join(name), group.clone());
            }
        }
        tokio::spawn(async move {
            let _watcher = watcher; // dropped (unwatched) when the task ends
            let mut due: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
            loop {
                let next = due.values().min().copied();
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    path = rx.recv() => {
                        let Some(path) = path else { return };
                        let path = path.parent().and_then(|d| d.canonicalize().ok()).zip(path.file_name()).map_or(path.clone(), |(d, n)| d.join(n));
                        if let Some(group) = by_file.get(&path) {
                            due.insert(group.clone(), tokio::time::Instant::now() + DEBOUNCE);
                        }
                    }
                    _ = async { tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)).await }, if next.is_some() => {
                        let now = tokio::time::Instant::now();
                        let ready: Vec<String> = due.iter().filter(|(_, at)| **at <= now).map(|(g, _)| g.clone()).collect();
                        for group in ready {
                            due.remove(&group);
                            self.reload(&group).await;
                        }
                    }
                }
            }
        });
        Ok(())
    }
}
