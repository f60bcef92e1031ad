//! Running a component as a batch handler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::batch::encode_batch;
use super::bindings::Consumer;
use super::bindings::beehive::broker::types;
use super::component::Component;
use super::host::HostState;
use crate::config::ConsumerConfig;
use crate::consumer::{BatchError, BatchHandler, Decision, FailureKind, Observer, Outcome};
use crate::event::Event;

/// The largest packed-batch buffer kept between batches.
const MAX_KEPT_BUFFER: usize = 4 << 20;

/// What a group's guest may do: its sandbox limits and publish allow-list.
#[derive(Debug, Clone)]
pub struct GuestSettings {
    /// The group (for logs and metrics).
    pub group: String,
    /// Streams the guest may publish to.
    pub publish: Vec<String>,
    /// Most events one batch may publish.
    pub max_publishes: usize,
    /// Memory cap per instance, in bytes.
    pub memory: u64,
    /// CPU deadline per batch.
    pub timeout: Duration,
    /// Where refused publishes are counted.
    pub metrics: Option<Arc<dyn Observer>>,
}

impl Default for GuestSettings {
    /// The config defaults: no publishing, 10,000 publishes per batch, 64 MiB, 5 s.
    fn default() -> Self {
        GuestSettings {
            group: String::new(),
            publish: Vec::new(),
            max_publishes: 10_000,
            memory: 64 << 20,
            timeout: Duration::from_secs(5),
            metrics: None,
        }
    }
}

impl GuestSettings {
    /// The sandbox settings of `consumer`'s group, as its config file sets them; refused
    /// publishes are counted by `observer`, if any.
    pub fn for_consumer(consumer: &ConsumerConfig, observer: Option<Arc<dyn Observer>>) -> Self {
        GuestSettings {
            group: consumer.group.clone(),
            publish: consumer.publish.clone(),
            max_publishes: consumer.max_publishes,
            memory: consumer.memory,
            timeout: consumer.timeout,
            metrics: observer,
        }
    }
}

/// Runs batches through a component: one store and instance, reused across batches and
/// replaced after a trap (a trapped instance cannot be entered again).
pub struct WasmHandler {
    component: Component,
    settings: Arc<GuestSettings>,
    label: Arc<str>,
    instance: Option<(Store<HostState>, Consumer)>,
    /// New versions of the component (hot reload), taken between batches.
    updates: Option<watch::Receiver<Component>>,
    /// The packed batch, its capacity reused from batch to batch.
    buffer: Vec<u8>,
}

impl WasmHandler {
    /// A handler for `component`; `label` (e.g. `group/consumer-1`) marks its logs.
    pub fn new(component: Component, settings: GuestSettings, label: &str) -> Self {
        WasmHandler {
            component,
            settings: Arc::new(settings),
            label: Arc::from(label),
            instance: None,
            updates: None,
            buffer: Vec::new(),
        }
    }

    /// A handler that follows `updates`: each batch starts on the newest version sent, while
    /// a batch already in flight finishes (and commits) on the version it started with.
    pub fn with_updates(
        mut updates: watch::Receiver<Component>,
        settings: GuestSettings,
        label: &str,
    ) -> Self {
        let component = updates.borrow_and_update().clone();
        let mut handler = Self::new(component, settings, label);
        handler.updates = Some(updates);
        handler
    }

    /// Switches to the newest version, if one was sent since the last batch.
    fn take_update(&mut self) {
        let Some(updates) = &mut self.updates else {
            return;
        };
        if !updates.has_changed().unwrap_or(false) {
            return;
        }
        let next = updates.borrow_and_update().clone();
        if next.digest() != self.component.digest() {
            tracing::info!(consumer = %self.label, from = %self.component.short_digest(), to = %next.short_digest(), "switching to the new component version");
            self.component = next;
            self.instance = None;
        }
    }

    /// The component version in use.
    pub fn component(&self) -> &Component {
        &self.component
    }

    async fn instantiate(
        component: Component,
        settings: Arc<GuestSettings>,
        label: Arc<str>,
    ) -> wasmtime::Result<(Store<HostState>, Consumer)> {
        let pre = component.pre();
        let timeout = settings.timeout;
        let mut store = Store::new(pre.engine(), HostState::new(settings, label));
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.data_mut().deadline = Instant::now() + timeout;
        store.set_epoch_deadline(1);
        let consumer = pre.instantiate_async(&mut store).await?;
        Ok((store, consumer))
    }

    async fn call(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
        self.take_update();
        if self.instance.is_none() {
            let instance = Self::instantiate(
                self.component.clone(),
                self.settings.clone(),
                self.label.clone(),
            )
            .await
            .map_err(|e| {
                let (_, text) = describe_trap(&e);
                failure(
                    FailureKind::Instantiate,
                    format!("cannot instantiate {}: {text}", self.component.origin()),
                )
            })?;
            self.instance = Some(instance);
        }
        let (store, consumer) = self.instance.as_mut().expect("instantiated above");
        store.data_mut().publishes.clear();
        store.data_mut().publish_overflow = false;
        store.data_mut().panic = None;
        store.data_mut().deadline = Instant::now() + self.settings.timeout;
        store.set_epoch_deadline(1);
        encode_batch(events, &mut self.buffer);
        let result = consumer
            .beehive_broker_handler()
            .call_handle_events(&mut *store, &self.buffer)
            .await;
        if self.buffer.capacity() > MAX_KEPT_BUFFER {
            // A batch of huge bodies: do not keep its memory for every batch after it.
            self.buffer = Vec::new();
        }
        match result {
            Ok(Ok(outcomes)) => {
                if outcomes.len() != events.len() {
                    return Err(failure(
                        FailureKind::WrongOutcomes,
                        format!(
                            "the handler returned {} outcomes for {} events",
                            outcomes.len(),
                            events.len()
                        ),
                    ));
                }
                if store.data().publish_overflow {
                    tracing::warn!(consumer = %self.label, max = self.settings.max_publishes, "the batch hit max-publishes; further publishes were refused");
                }
                let publishes = std::mem::take(&mut store.data_mut().publishes);
                Ok(Decision {
                    outcomes: outcomes.into_iter().map(from_wit).collect(),
                    publishes,
                })
            }
            Ok(Err(message)) => Err(failure(
                FailureKind::Error,
                format!("the handler failed the batch: {}", truncate(&message, 2048)),
            )),
            Err(trap) => {
                let panic = store.data_mut().panic.take();
                // A trapped instance cannot be entered again: start afresh next batch.
                self.instance = None;
                let (kind, text) = describe_trap(&trap);
                match panic {
                    // The guest said why it is about to trap: that is the batch error, not
                    // the wasm backtrace of its abort.
                    Some(report) if kind == FailureKind::Trap => {
                        Err(failure(FailureKind::Panic, report))
                    }
                    _ => Err(failure(kind, format!("the component trapped: {text}"))),
                }
            }
        }
    }
}

impl BatchHandler for WasmHandler {
    fn handle<'a>(
        &'a mut self,
        events: &'a [Event],
    ) -> impl Future<Output = anyhow::Result<Decision>> + Send + 'a {
        self.call(events)
    }
}

/// Instantiates `component` once in a throwaway store with the group's limits: a component
/// that traps (or runs out of memory or time) while starting is refused before it is used.
pub async fn check_instantiation(
    component: &Component,
    settings: &GuestSettings,
) -> Result<(), String> {
    WasmHandler::instantiate(
        component.clone(),
        Arc::new(settings.clone()),
        Arc::from("instantiation check"),
    )
    .await
    .map(|_| ())
    .map_err(|e| describe_trap(&e).1)
}

fn from_wit(outcome: types::Outcome) -> Outcome {
    match outcome {
        types::Outcome::Ack => Outcome::Ack,
        types::Outcome::Retry(reason) => Outcome::Retry(truncate(&reason, 2048).to_string()),
        types::Outcome::DeadLetter(reason) => {
            Outcome::DeadLetter(truncate(&reason, 2048).to_string())
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        s
    } else {
        &s[..s.floor_char_boundary(max)]
    }
}

fn failure(kind: FailureKind, message: String) -> anyhow::Error {
    BatchError { kind, message }.into()
}

/// Names the kind of trap: deadline, memory limit, stack overflow, or the guest's own.
fn describe_trap(error: &wasmtime::Error) -> (FailureKind, String) {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => (
            FailureKind::Deadline,
            "deadline exceeded (limits.timeout)".to_string(),
        ),
        Some(Trap::StackOverflow) => (FailureKind::StackOverflow, "stack overflow".to_string()),
        _ => {
            let text = format!("{error:#}");
            if text.contains("memory") && (text.contains("limit") || text.contains("grow")) {
                (
                    FailureKind::Memory,
                    format!(
                        "memory limit exceeded (limits.memory): {}",
                        truncate(&text, 512)
                    ),
                )
            } else {
                (FailureKind::Trap, truncate(&text, 1024).to_string())
            }
        }
    }
}
