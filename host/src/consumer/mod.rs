//! Consumers: read a group's streams in batches, hand them to a handler, commit the outcome.
//!
//! One running consumer per `(group, nr)`, guarded by the lock `<group>_consumer-<nr>`.
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
use crate::registry::GroupDef;

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
    fn for_group(group: &str) -> Self {
        ConsumerOptions {
            looping: true,
            block: Duration::from_secs(5),
            lock_ttl: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            pending_interval: Duration::from_secs(30),
            reclaim_idle: None,
            handler_deadline: Duration::ZERO,
            max_deliveries: None,
            dead_letter_stream: keys::dead_letter_stream(group),
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

use crate::keys::{consumer_name, lock_key};

impl Consumer {
    pub(crate) fn new(engine: Engine, group: GroupDef) -> Self {
        let options = ConsumerOptions::for_group(&group.name);
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
        let key = lock_key(&self.group.name, nr);
        let Some(lock) = Lock::acquire_as(
            con.clone(),
            &pool.name,
            &key,
            self.options.lock_ttl,
            &self.options.owner,
        )
        .await?
        else {
            tracing::info!(group = %self.group.name, consumer = nr, "consumer already runs elsewhere");
            return Ok(false);
        };
        let mut run = Run {
            consumer: self,
            name: consumer_name(nr),
            con,
            reader: None,
            pages: Pages::Unopened,
            streams: self
                .group
                .streams
                .iter()
                .map(|s| Arc::<str>::from(s.as_str()))
                .collect(),
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
            reading: VecDeque::new(),
        };
        if let Some(metrics) = &self.options.metrics {
            metrics.lock_held(&self.group.name, 1);
        }
        // Outputs to streams of other commit domains wait in the group's outbox: relay them
        // while consuming (one relay per outbox at a time, across hosts).
        let relay = self.relay()?;
        let relay_stop = CancellationToken::new();
        let relaying = relay.clone().map(|relay| {
            let stop = relay_stop.clone();
            tokio::spawn(async move { relay.run(stop).await })
        });
        let span = tracing::info_span!("consumer", group = %self.group.name, consumer = %consumer_name(nr));
        let result = run.run(handler).instrument(span).await;
        if let Some(metrics) = &self.options.metrics {
            metrics.lock_held(&self.group.name, -1);
        }
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

    /// The relay of this group's outbox, when any output can land in another commit domain
    /// (more than one pool is registered).
    fn relay(&self) -> Result<Option<Relay>> {
        if self.engine.registry().pools().nth(1).is_none() {
            return Ok(None);
        }
        let mut relay = Relay::new(
            &self.engine,
            &self.group.name,
            &self.options.dead_letter_stream,
        )?;
        if let Some(metrics) = self.options.metrics.clone() {
            let group = self.group.name.clone();
            relay = relay.on_delivered(Arc::new(move |target, n| {
                metrics.relayed(&group, target, n)
            }));
        }
        Ok(Some(relay))
    }
}
