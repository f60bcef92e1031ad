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
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::FutureExt;
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
///
/// A panic cannot take it down. Its locks are taken through [`slots`](Self::slots),
/// [`slots_mut`](Self::slots_mut) and [`lock_watcher`](Self::lock_watcher), which take the
/// data of a poisoned lock as it is instead of panicking in turn, and the file watcher's
/// task survives a reload that panics. The data behind a poisoned lock is consistent
/// because no critical section changes it in more than one step: a `Slot` is built before
/// the write lock is taken and goes in with one `insert` (or out with one `remove`), a swap
/// is one `send_replace` on the slot's channel, and the watcher is one value set or taken.
/// A panic while a lock is held therefore leaves the map as it was before that step or as
/// it is after it, never half-way; the most a panic inside `notify` (the one foreign call
/// made under a lock) can cost is a folder left unwatched, which SIGHUP still reloads.
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
    /// The slots, for reading, even after a panic elsewhere poisoned the lock.
    fn slots(&self) -> RwLockReadGuard<'_, BTreeMap<String, Slot>> {
        self.slots.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slots, for writing, even after a panic elsewhere poisoned the lock.
    fn slots_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Slot>> {
        self.slots.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file watcher, even after a panic elsewhere poisoned its lock.
    fn lock_watcher(&self) -> MutexGuard<'_, Option<RecommendedWatcher>> {
        self.watcher.lock().unwrap_or_else(PoisonError::into_inner)
    }

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
        if let (Some(path), Some(watcher)) = (&path, self.lock_watcher().as_mut())
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
        self.slots_mut().insert(consumer.group.clone(), slot);
    }

    /// The WebAssembly engine components are compiled with.
    pub fn engine(&self) -> &WasmEngine {
        &self.wasm
    }

    /// Removes the slot of `group` (its consumers were stopped).
    pub fn remove(&self, group: &str) {
        self.slots_mut().remove(group);
    }

    /// The groups it holds components for.
    pub fn groups(&self) -> Vec<String> {
        self.slots().keys().cloned().collect()
    }

    /// Follows `group`'s live version.
    pub fn subscribe(&self, group: &str) -> Option<watch::Receiver<Component>> {
        self.slots().get(group).map(|slot| slot.sender.subscribe())
    }

    /// The live version of `group`.
    pub fn current(&self, group: &str) -> Option<Component> {
        self.slots()
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
        self.guarded(group, self.reload_unguarded(group)).await
    }

    /// Swaps `candidate` in for `group` if it instantiates; unchanged if it is the live one.
    pub async fn offer(&self, group: &str, candidate: Component) -> ReloadOutcome {
        self.guarded(group, self.offer_unguarded(group, candidate))
            .await
    }

    /// Runs `reload`; a panic in it refuses the version (logged and counted) instead of
    /// unwinding into the caller, such as the file watcher's task. The reloader's state
    /// stays consistent across the panic (see [`Reloader`]), so nothing needs undoing.
    async fn guarded(
        &self,
        group: &str,
        reload: impl Future<Output = ReloadOutcome>,
    ) -> ReloadOutcome {
        match AssertUnwindSafe(reload).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a panic without a message");
                self.refuse(group, format!("the reload panicked: {message}"))
            }
        }
    }

    async fn reload_unguarded(&self, group: &str) -> ReloadOutcome {
        let path = match self.slots().get(group) {
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
            Ok(candidate) => self.offer_unguarded(group, candidate).await,
            Err(reason) => self.refuse(group, reason),
        }
    }

    async fn offer_unguarded(&self, group: &str, candidate: Component) -> ReloadOutcome {
        let settings = {
            let slots = self.slots();
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
        if let Some(slot) = self.slots().get(group) {
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
        self.slots()
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
            .slots()
            .values()
            .filter_map(|s| s.path.clone())
            .collect();
        for path in paths {
            if let Some((dir, _)) = watched(&path) {
                watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            }
        }
        *self.lock_watcher() = Some(watcher);
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
            self.lock_watcher().take();
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The smallest component the host accepts: it exports `handle-events`, and traps if
    /// a batch is ever given to it.
    const COMPONENT: &str = r#"
        (component
          (core module $m
            (memory (export "memory") 1)
            (func (export "handle") (param i32 i32) (result i32) unreachable)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable))
          (core instance $i (instantiate $m))
          (type $outcome' (variant (case "ack") (case "retry" string) (case "dead-letter" string)))
          (export $outcome "outcome" (type $outcome'))
          (type $result (result (list $outcome) (error string)))
          (func $handle (param "events" (list u8)) (result $result)
            (canon lift (core func $i "handle") (memory (core memory $i "memory"))
              (realloc (core func $i "realloc"))))
          (instance $handler
            (export "outcome" (type $outcome))
            (export "handle-events" (func $handle)))
          (export "beehive:broker/handler@0.2.0" (instance $handler)))
    "#;

    /// The consumer config of group `handlers`, whose component file is `file`.
    fn consumer(file: &Path) -> ConsumerConfig {
        let text = format!(
            "default:\n  redis: localhost:6379:0\n  streams:\n    events: [handlers]\n\
             consumers:\n  handlers:\n    component: {}\n",
            file.display()
        );
        let mut config = Config::parse(&text, Path::new("beehive.yaml")).unwrap();
        config.consumers.remove("handlers").unwrap()
    }

    /// Takes `lock` in another thread and panics while holding it.
    fn panic_holding<T>(lock: impl FnOnce() -> T + Send) {
        std::thread::scope(|scope| {
            let holder = scope.spawn(|| {
                let _held = lock();
                panic!("a task panics while it holds the lock");
            });
            assert!(holder.join().is_err());
        });
    }

    #[tokio::test]
    async fn a_panic_while_a_lock_is_held_does_not_take_the_reloader_down() {
        let dir = std::env::temp_dir().join(format!("beehive-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Not a binary component: reloading it is refused, which is a reload that works.
        let file = dir.join("handler.wasm");
        std::fs::write(&file, COMPONENT).unwrap();
        let wasm = WasmEngine::new().unwrap().with_cache_dir(None);
        let v1 = wasm.load_wat(COMPONENT, "v1").unwrap();
        let v2 = wasm
            .load_wat(&COMPONENT.replace("unreachable)", "unreachable nop)"), "v2")
            .unwrap();
        assert_ne!(v1.digest(), v2.digest());
        let config = consumer(&file);
        let reloader = Arc::new(Reloader::new(wasm, [(&config, v1.clone())], None));
        let cancel = CancellationToken::new();
        reloader.clone().watch_files(cancel.clone()).unwrap();

        panic_holding(|| reloader.slots_mut());
        panic_holding(|| reloader.lock_watcher());
        assert!(reloader.slots.is_poisoned() && reloader.watcher.is_poisoned());

        // Every entry point still works, on the state as it was before the panics.
        assert_eq!(reloader.groups(), ["handlers"]);
        assert_eq!(reloader.current("handlers").unwrap().digest(), v1.digest());
        let mut updates = reloader.subscribe("handlers").unwrap();
        assert_eq!(
            reloader.offer("handlers", v2.clone()).await,
            ReloadOutcome::Swapped {
                digest: v2.digest().to_string()
            }
        );
        assert!(updates.has_changed().unwrap());
        assert_eq!(updates.borrow_and_update().digest(), v2.digest());
        assert_eq!(
            reloader.offer("handlers", v2.clone()).await,
            ReloadOutcome::Unchanged
        );
        let ReloadOutcome::Refused(reason) = reloader.reload("handlers").await else {
            panic!("a text file is not a component");
        };
        assert!(reason.contains("not a WebAssembly component"), "{reason}");
        reloader.insert(
            &ConsumerConfig {
                group: "others".into(),
                ..config.clone()
            },
            v1.clone(),
        );
        assert_eq!(reloader.groups(), ["handlers", "others"]);
        reloader.remove("others");
        assert_eq!(reloader.groups(), ["handlers"]);
        assert_eq!(reloader.current("handlers").unwrap().digest(), v2.digest());
        reloader.clone().watch_files(cancel.clone()).unwrap();
        cancel.cancel();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_reload_that_panics_is_refused_and_the_caller_goes_on() {
        let reloader = Reloader::new(WasmEngine::new().unwrap().with_cache_dir(None), [], None);
        let outcome = reloader
            .guarded("handlers", async { panic!("the compiler exploded") })
            .await;
        assert_eq!(
            outcome,
            ReloadOutcome::Refused("the reload panicked: the compiler exploded".into())
        );
        assert!(matches!(
            reloader.reload("handlers").await,
            ReloadOutcome::Refused(_)
        ));
    }
}
