//! Consumers: read a group's streams in batches, hand them to a handler, commit the outcome.
//!
//! One running consumer per `(group, nr)`, guarded by the lock `<group>_consumer-<nr>`
//! (on a cluster pool with the group's hash tag: `{<tag>}<group>_consumer-<nr>`).
//! A consumer first re-reads its own pending entries (ID `0`), then new ones (`>`), blocking
//! up to its block time. Failed batches stay pending and are re-read after the retry delay;
//! entries claimed to this consumer are picked up by the next pending pass.

mod claim;
mod commits;
mod decide;
mod failure;
mod observe;
mod read_ahead;
mod run;
mod source;

use read_ahead::Pages;
use run::{Backoff, Run};

pub use failure::{BatchError, FailureKind};
pub use observe::{BatchCounts, Observer};

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::EventBroker;
use crate::broker::relay::Relay;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{Event, NewEvent};
use crate::keys;
use crate::redis::lock::Lock;
use crate::redis::pool::Connection;
use crate::registry::{GroupDef, GroupSlice};

/// What a handler decided for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: acknowledge it.
    Ack,
    /// Not now: leave it pending; it is delivered again after the retry delay.
    Retry(String),
    /// Never: move it to the dead-letter stream with this reason, and acknowledge it.
    DeadLetter(String),
}

/// A handler's answer for a batch: one outcome per event (in order) and the events it
/// publishes, committed atomically with the acknowledgements.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// One outcome per event of the batch.
    pub outcomes: Vec<Outcome>,
    /// Events to publish together with the acknowledgements.
    pub publishes: Vec<NewEvent>,
}

impl Decision {
    /// Acknowledge all `n` events, publish nothing.
    pub fn ack_all(n: usize) -> Self {
        Decision {
            outcomes: vec![Outcome::Ack; n],
            publishes: Vec::new(),
        }
    }
}

/// Handles batches for [`Consumer::consume_with`]. An `Err` leaves the whole batch pending;
/// a panic is caught and treated the same way.
pub trait BatchHandler: Send {
    /// Decides what happens to `events`.
    fn handle<'a>(
        &'a mut self,
        events: &'a [Event],
    ) -> impl Future<Output = anyhow::Result<Decision>> + Send + 'a;
}

/// Adapts an async closure `|events| async { Ok(()) }` (all acknowledged, or none).
struct FnHandler<F>(F);

impl<F, Fut> BatchHandler for FnHandler<F>
where
    F: FnMut(Vec<Event>) -> Fut + Send,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    fn handle<'a>(
        &'a mut self,
        events: &'a [Event],
    ) -> impl Future<Output = anyhow::Result<Decision>> + Send + 'a {
        let n = events.len();
        let fut = (self.0)(events.to_vec());
        async move {
            fut.await?;
            Ok(Decision::ack_all(n))
        }
    }
}

/// One handler shared by the slices of a group that spans commit domains: they take turns.
struct Shared<H>(Arc<tokio::sync::Mutex<H>>);

impl<H> Clone for Shared<H> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<H: BatchHandler> BatchHandler for Shared<H> {
    async fn handle(&mut self, events: &[Event]) -> anyhow::Result<Decision> {
        let mut handler = self.0.lock().await;
        handler.handle(events).await
    }
}

/// Tunables of a [`Consumer`]; every field has a sensible default.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Keep reading (block for new events) rather than drain and return. Default `true`.
    pub looping: bool,
    /// How long one read blocks waiting for new events. Default 5 s.
    pub block: Duration,
    /// TTL of the single-runner lock; it is refreshed every third of it. Default 30 s.
    pub lock_ttl: Duration,
    /// How long a failed batch waits before it is delivered again. Default 1 s.
    pub retry_delay: Duration,
    /// How often the consumer re-reads its pending entries (claimed ones included) while
    /// busy; it also does so whenever a blocking read comes back empty. Default 30 s.
    pub pending_interval: Duration,
    /// Reclaim other consumers' entries pending longer than this (`XAUTOCLAIM`) at each
    /// pending pass. Default `None` (only [`Consumer::claim`] moves entries).
    pub reclaim_idle: Option<Duration>,
    /// The longest a batch may take in the handler (its CPU deadline). With
    /// [`reclaim_idle`](Self::reclaim_idle), entries that have waited in the consumer's
    /// queue so long that handling them could end after another consumer may reclaim them
    /// are not handled but re-read from the pending list (which resets their idle time): an
    /// entry is never handled by two consumers at once. Default zero.
    pub handler_deadline: Duration,
    /// After this many deliveries an entry goes to the dead-letter stream. Default `None`
    /// (retry forever).
    pub max_deliveries: Option<u32>,
    /// Where dead-lettered entries go. Default `<group>-dead-letter`.
    pub dead_letter_stream: String,
    /// In drain mode, how long the consumer waits at the end for its outputs to other
    /// commit domains to leave the outbox. Default 30 s.
    pub relay_drain: Duration,
    /// Who holds the consumer's lock, written into its value (`<owner>/<random>`) so
    /// `beehive status` shows which host runs each consumer. Default: this host
    /// (`<hostname>:<pid>`).
    pub owner: String,
    /// Where to count batches, failures and publishes. Default `None`.
    pub metrics: Option<Arc<dyn Observer>>,
    /// Test hook: the next this-many commits fail before reaching Redis, as if the host
    /// died between the handler's return and the commit.
    #[doc(hidden)]
    pub fail_commits: Arc<AtomicU32>,
}

impl ConsumerOptions {
    fn for_group(group: &GroupDef) -> Self {
        ConsumerOptions {
            looping: true,
            block: Duration::from_secs(5),
            lock_ttl: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            pending_interval: Duration::from_secs(30),
            reclaim_idle: None,
            handler_deadline: Duration::ZERO,
            max_deliveries: None,
            dead_letter_stream: group.default_dead_letter_stream(),
            relay_drain: Duration::from_secs(30),
            owner: keys::host_id(),
            fail_commits: Arc::default(),
            metrics: None,
        }
    }
}

impl EventBroker {
    /// A consumer for `group`; see [`Consumer`] for its options.
    pub fn consumer(&self, group: &str) -> Result<Consumer> {
        let def = self
            .engine()
            .registry()
            .group(group)
            .ok_or_else(|| Error::UnregisteredGroup(group.to_string()))?;
        Ok(Consumer::new(self.engine().clone(), def.clone()))
    }
}

/// Reads a consumer group's streams; see the [module docs](self).
pub struct Consumer {
    engine: Engine,
    group: GroupDef,
    options: ConsumerOptions,
}

use crate::keys::consumer_name;

impl Consumer {
    pub(crate) fn new(engine: Engine, group: GroupDef) -> Self {
        let options = ConsumerOptions::for_group(&group);
        Consumer {
            engine,
            group,
            options,
        }
    }

    /// The group this consumer reads.
    pub fn group(&self) -> &str {
        &self.group.name
    }

    /// Drain mode: read everything there is (pending first), then return `true` instead of
    /// blocking for more.
    pub fn disable_loop(&mut self) -> &mut Self {
        self.options.looping = false;
        self
    }

    /// Sets how long one read blocks for new events.
    pub fn set_block_time(&mut self, block: Duration) -> &mut Self {
        self.options.block = block;
        self
    }

    /// Sets the lock TTL (refreshed every third of it).
    pub fn set_lock_ttl(&mut self, ttl: Duration) -> &mut Self {
        self.options.lock_ttl = ttl;
        self
    }

    /// The options, for reading or changing several at once.
    pub fn options_mut(&mut self) -> &mut ConsumerOptions {
        &mut self.options
    }

    /// Runs consumer number 1; see [`consume_many`](Self::consume_many).
    pub async fn consume<F, Fut>(
        &self,
        cancel: CancellationToken,
        count: usize,
        handler: F,
    ) -> Result<bool>
    where
        F: FnMut(Vec<Event>) -> Fut + Send,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.consume_many(cancel, 1, count, handler).await
    }

    /// Runs consumer `consumer-<nr>` with batches of at most `count` events (across all the
    /// group's streams, publish order kept within each stream).
    ///
    /// `handler` returning `Ok` acknowledges the batch; `Err` (or a panic) leaves it pending
    /// for a later retry and the consumer carries on. Returns `Ok(false)` at once, without
    /// calling the handler, when this consumer runs elsewhere, and `Ok(false)` when its lock
    /// is lost; `Ok(true)` when `cancel` fires (the batch in flight finishes and commits
    /// first) or, with [`disable_loop`](Self::disable_loop), when everything is drained.
    pub async fn consume_many<F, Fut>(
        &self,
        cancel: CancellationToken,
        nr: u32,
        count: usize,
        handler: F,
    ) -> Result<bool>
    where
        F: FnMut(Vec<Event>) -> Fut + Send,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.consume_with(cancel, nr, count, FnHandler(handler))
            .await
    }

    /// Like [`consume_many`](Self::consume_many), with a handler that decides per event and
    /// publishes atomically with its acknowledgements.
    pub async fn consume_with<H: BatchHandler>(
        &self,
        cancel: CancellationToken,
        nr: u32,
        count: usize,
        handler: H,
    ) -> Result<bool> {
        if nr == 0 {
            return Err(Error::InvalidArgument("consumer numbers start at 1".into()));
        }
        if count == 0 {
            return Err(Error::InvalidArgument("count must be at least 1".into()));
        }
        let pool = self.engine.pool(&self.group.pool)?;
        let con = pool.connection().await?;
        // One lock per commit domain the group reads (one, unless its streams span slots of
        // a cluster), taken in the same order by every host: all or none.
        let slices = self.group.slices();
        let mut locks = Vec::with_capacity(slices.len());
        for slice in &slices {
            let key = slice.lock_key(&self.group.name, nr);
            let acquired = Lock::acquire_as(
                con.clone(),
                &pool.name,
                &key,
                self.options.lock_ttl,
                &self.options.owner,
            )
            .await;
            match acquired {
                Ok(Some(lock)) => locks.push(lock),
                other => {
                    for lock in locks {
                        let _ = lock.release().await;
                    }
                    other?;
                    tracing::info!(group = %self.group.name, consumer = nr, "consumer already runs elsewhere");
                    return Ok(false);
                }
            }
        }
        if let Some(metrics) = &self.options.metrics {
            metrics.lock_held(&self.group.name, 1);
        }
        let span = tracing::info_span!("consumer", group = %self.group.name, consumer = %consumer_name(nr));
        let result = if slices.len() == 1 {
            let lock = locks.pop().expect("one lock per slice");
            self.run_slice(&slices[0], lock, con, nr, count, cancel, handler)
                .instrument(span)
                .await
        } else {
            // The slices run side by side and take turns in the one handler; when one stops
            // for good (lock lost, error, cancel) the others stop at a batch boundary too.
            let handler = Shared(Arc::new(tokio::sync::Mutex::new(handler)));
            let stop = cancel.child_token();
            let runs = slices.iter().zip(locks).map(|(slice, lock)| {
                let (handler, stop, con) = (handler.clone(), stop.clone(), con.clone());
                async move {
                    let result = self
                        .run_slice(slice, lock, con, nr, count, stop.clone(), handler)
                        .await;
                    if self.options.looping || !matches!(result, Ok(true)) {
                        stop.cancel();
                    }
                    result
                }
            });
            let results = futures::future::join_all(runs).instrument(span).await;
            let mut combined = Ok(true);
            for result in results {
                match (result, &combined) {
                    (Err(e), Ok(_)) => combined = Err(e),
                    (Ok(false), Ok(_)) => combined = Ok(false),
                    _ => {}
                }
            }
            combined
        };
        if let Some(metrics) = &self.options.metrics {
            metrics.lock_held(&self.group.name, -1);
        }
        result
    }

    /// Runs consumer `nr` on one slice of the group (its streams in one commit domain)
    /// while holding that slice's `lock`; releases it at the end.
    #[allow(clippy::too_many_arguments)]
    async fn run_slice<H: BatchHandler>(
        &self,
        slice: &GroupSlice,
        lock: Lock,
        con: Connection,
        nr: u32,
        count: usize,
        cancel: CancellationToken,
        handler: H,
    ) -> Result<bool> {
        let registry = self.engine.registry();
        let mut run = Run {
            consumer: self,
            name: consumer_name(nr),
            con,
            reader: None,
            pages: Pages::Unopened,
            streams: slice
                .streams
                .iter()
                .map(|s| Arc::<str>::from(s.as_str()))
                .collect(),
            domain: registry.slice_domain(&self.group, slice),
            outbox: slice.outbox(&self.group.name),
            pace: None,
            queue: VecDeque::new(),
            queued_at: Instant::now(),
            pending: None,
            pending_due: Instant::now(),
            retry_at: None,
            groups_ready: false,
            backoff: Backoff::default(),
            lock: &lock,
            count,
            cancel,
            inflight: VecDeque::new(),
            commits_sent: 0,
            reading: VecDeque::new(),
        };
        // Outputs to streams of other commit domains wait in the slice's outbox: relay them
        // while consuming (one relay per outbox at a time, across hosts).
        let relay = self.relay(slice)?;
        run.pace = relay.as_ref().map(Relay::pace);
        let relay_stop = CancellationToken::new();
        let relaying = relay.clone().map(|relay| {
            let stop = relay_stop.clone();
            tokio::spawn(async move { relay.run(stop).await })
        });
        let result = run.run(handler).await;
        let lost = lock.lost().is_cancelled() || matches!(result, Err(Error::LockLost(_)));
        relay_stop.cancel();
        if let Some(task) = relaying {
            let _ = task.await;
        }
        if !self.options.looping
            && !lost
            && let Some(relay) = &relay
        {
            // Drain mode: the outputs land before the call returns (bounded: a target that
            // stays down leaves them in the outbox for a later relay).
            match relay.drain(self.options.relay_drain).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(group = %self.group.name, "outputs to other domains still wait in the outbox; a later run relays them")
                }
                Err(e) => {
                    tracing::warn!(group = %self.group.name, error = %e, "cannot drain the outbox")
                }
            }
        }
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "cannot release consumer lock; it expires by itself");
        }
        match result {
            Err(Error::LockLost(_)) => Ok(false),
            Ok(_) if lost => Ok(false),
            other => other,
        }
    }

    /// The relay of a slice's outbox, when any output can land in another commit domain
    /// (more than one pool is registered, or a pool is a cluster: another slot).
    fn relay(&self, slice: &GroupSlice) -> Result<Option<Relay>> {
        let registry = self.engine.registry();
        if registry.pools().nth(1).is_none() && !registry.is_cluster(&self.group.pool) {
            return Ok(None);
        }
        let mut relay = Relay::new(
            &self.engine,
            &self.group.name,
            slice,
            &self.options.dead_letter_stream,
        )?;
        if let Some(metrics) = self.options.metrics.clone() {
            let group = self.group.name.clone();
            let latency = (metrics.clone(), group.clone());
            relay = relay
                .on_delivered(Arc::new(move |target, n| {
                    metrics.relayed(&group, target, n)
                }))
                .on_latencies(Arc::new(move |latencies| {
                    latency.0.relay_latencies(&latency.1, latencies)
                }));
        }
        Ok(Some(relay))
    }
}
