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
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{ComponentSource, ConsumerConfig};
use crate::consumer::Observer;
use crate::ops::metrics::Metrics;
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
    slots: RwLock<BTreeMap<String, Slot>>,
    metrics: Option<Metrics>,
    /// The file watcher, once [`watch_files`](Self::watch_files) started it.
    watcher: Mutex<Option<RecommendedWatcher>>,
}

/// The folder a component file lives in, canonicalized, and the file's path in it.
fn watched(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = path.file_name()?;
    Some((dir.clone(), dir.join(name)))
}

impl Reloader {
    /// Starts from the versions loaded at start-up, one per group of `consumers`.
    pub fn new<'a>(
        wasm: WasmEngine,
        consumers: impl IntoIterator<Item = (&'a ConsumerConfig, Component)>,
        metrics: Option<Metrics>,
    ) -> Self {
        let reloader = Reloader {
            wasm,
            slots: RwLock::default(),
            metrics,
            watcher: Mutex::new(None),
        };
        for (consumer, component) in consumers {
            reloader.insert(consumer, component);
        }
        reloader
    }

    /// Adds (or replaces) the slot of `consumer.group`, starting at `component`.
    pub fn insert(&self, consumer: &ConsumerConfig, component: Component) {
        let path = match &consumer.component {
            ComponentSource::File(path) => Some(path.clone()),
            ComponentSource::Deployed => None,
        };
        if let (Some(path), Some(watcher)) =
            (&path, self.watcher.lock().expect("watcher lock").as_mut())
            && let Some((dir, _)) = watched(path)
            && let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the component folder");
        }
        let observer = self
            .metrics
            .clone()
            .map(|m| Arc::new(m) as Arc<dyn Observer>);
        let settings = GuestSettings::for_consumer(consumer, observer);
        let slot = Slot {
            path,
            settings,
            sender: watch::Sender::new(component),
        };
        self.slots
            .write()
            .expect("slots lock")
            .insert(consumer.group.clone(), slot);
    }

    /// The WebAssembly engine components are compiled with.
    pub fn engine(&self) -> &WasmEngine {
        &self.wasm
    }

    /// Removes the slot of `group` (its consumers were stopped).
    pub fn remove(&self, group: &str) {
        self.slots.write().expect("slots lock").remove(group);
    }

    /// The groups it holds components for.
    pub fn groups(&self) -> Vec<String> {
        self.slots
            .read()
            .expect("slots lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Follows `group`'s live version.
    pub fn subscribe(&self, group: &str) -> Option<watch::Receiver<Component>> {
        self.slots
            .read()
            .expect("slots lock")
            .get(group)
            .map(|slot| slot.sender.subscribe())
    }

    /// The live version of `group`.
    pub fn current(&self, group: &str) -> Option<Component> {
        self.slots
            .read()
            .expect("slots lock")
            .get(group)
            .map(|slot| slot.sender.borrow().clone())
    }

    /// Loads a component from a file off the async threads.
    pub async fn load_file(&self, path: &Path) -> Result<Component, String> {
        let (wasm, path) = (self.wasm.clone(), path.to_path_buf());
        match tokio::task::spawn_blocking(move || wasm.load_file(&path)).await {
            Ok(Ok(component)) => Ok(component),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the compile task failed: {e}")),
        }
    }

    /// Reloads `group` from its file.
    pub async fn reload(&self, group: &str) -> ReloadOutcome {
        let path = match self.slots.read().expect("slots lock").get(group) {
            None => {
                return ReloadOutcome::Refused(format!(
                    "no component is configured for group {group}"
                ));
            }
            Some(slot) => slot.path.clone(),
        };
        let Some(path) = path else {
            return ReloadOutcome::Unchanged;
        };
        match self.load_file(&path).await {
            Ok(candidate) => self.offer(group, candidate).await,
            Err(reason) => self.refuse(group, reason),
        }
    }

    /// Swaps `candidate` in for `group` if it instantiates; unchanged if it is the live one.
    pub async fn offer(&self, group: &str, candidate: Component) -> ReloadOutcome {
        let settings = {
            let slots = self.slots.read().expect("slots lock");
            let Some(slot) = slots.get(group) else {
                return ReloadOutcome::Refused(format!(
                    "no component is configured for group {group}"
                ));
            };
            if candidate.digest() == slot.sender.borrow().digest() {
                return ReloadOutcome::Unchanged;
            }
            slot.settings.clone()
        };
        if let Err(reason) = check_instantiation(&candidate, &settings).await {
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
        if let Some(slot) = self.slots.read().expect("slots lock").get(group) {
            slot.sender.send_replace(candidate);
        }
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
        for group in self.groups() {
            let outcome = self.reload(&group).await;
            outcomes.push((group, outcome));
        }
        outcomes
    }

    /// The group whose component file is `path`, if any.
    fn group_of(&self, path: &Path) -> Option<String> {
        let (_, path) = watched(path)?;
        self.slots
            .read()
            .expect("slots lock")
            .iter()
            .find(|(_, slot)| {
                slot.path
                    .as_deref()
                    .and_then(watched)
                    .is_some_and(|(_, p)| p == path)
            })
            .map(|(group, _)| group.clone())
    }

    /// Watches every component file's folder (and those of groups inserted later) and
    /// reloads a group when its file changes (written, or renamed into place), after
    /// [`DEBOUNCE`] of quiet. Runs until `cancel`.
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
        let paths: Vec<PathBuf> = self
            .slots
            .read()
            .expect("slots lock")
            .values()
            .filter_map(|s| s.path.clone())
            .collect();
        for path in paths {
            if let Some((dir, _)) = watched(&path) {
                watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            }
        }
        *self.watcher.lock().expect("watcher lock") = Some(watcher);
        tokio::spawn(async move {
            let mut due: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
            loop {
                let next = due.values().min().copied();
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    path = rx.recv() => {
                        let Some(path) = path else { break };
                        if let Some(group) = self.group_of(&path) {
                            due.insert(group, tokio::time::Instant::now() + DEBOUNCE);
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
            self.watcher.lock().expect("watcher lock").take();
        });
        Ok(())
    }
}
