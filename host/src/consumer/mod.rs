//! Consumers: read a group's streams in batches, hand them to a handler, commit the outcome.
//!
//! One running consumer per `(group, nr)`, guarded by the lock `<group>_consumer-<nr>`.
//! A consumer first re-reads its own pending entries (ID `0`), then new ones (`>`), blocking
//! up to its block time. Failed batches stay pending and are re-read after the retry delay;
//! entries claimed to this consumer are picked up by the next pending pass.

mod observe;

pub use observe::{BatchCounts, Observer};

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::EventBroker;
use crate::engine::Engine;
use crate::error::{Error, PoolContext, Result};
use crate::event::{EntryId, Event, NewEvent};
use crate::keys;
use crate::redis::commands::{self, RawEntry};
use crate::redis::commit::{CommitBatch, LOCK_LOST};
use crate::redis::lock::Lock;
use crate::redis::page_reader::PageReader;
use crate::redis::pool::RESPONSE_TIMEOUT;
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
        let Some(lock) =
            Lock::acquire(con.clone(), &pool.name, &key, self.options.lock_ttl).await?
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
        let span = tracing::info_span!("consumer", group = %self.group.name, consumer = %consumer_name(nr));
        let result = run.run(handler).instrument(span).await;
        if let Some(metrics) = &self.options.metrics {
            metrics.lock_held(&self.group.name, -1);
        }
        let lost = lock.lost().is_cancelled() || matches!(result, Err(Error::LockLost(_)));
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "cannot release consumer lock; it expires by itself");
        }
        match result {
            Err(Error::LockLost(_)) => Ok(false),
            Ok(_) if lost => Ok(false),
            other => other,
        }
    }

    /// Moves every pending entry of `consumer-<from>` to `consumer-<to>`, on all the group's
    /// streams, and returns how many moved. Claiming does not count as a delivery.
    pub async fn claim(&self, from: u32, to: u32) -> Result<u64> {
        let pool = self.engine.pool(&self.group.pool)?;
        let mut con = pool.connection().await?;
        let (from, to) = (consumer_name(from), consumer_name(to));
        let mut moved = 0;
        for stream in &self.group.streams {
            loop {
                let page = match commands::pending_range(
                    &mut con,
                    stream,
                    &self.group.name,
                    "-",
                    "+",
                    1000,
                    Some(&from),
                )
                .await
                {
                    Ok(page) => page,
                    Err(e) if commands::is_no_group(&e) => break,
                    Err(e) => return Err(e).pool(&pool.name),
                };
                if page.is_empty() {
                    break;
                }
                let ids: Vec<EntryId> = page.iter().map(|p| p.id).collect();
                let claimed: Vec<String> =
                    commands::xclaim_justid(stream, &self.group.name, &to, &ids)
                        .query_async(&mut con)
                        .await
                        .pool(&pool.name)?;
                moved += claimed.len() as u64;
                if claimed.is_empty() {
                    // Entries deleted while pending cannot be claimed; stop rather than spin.
                    break;
                }
            }
        }
        Ok(moved)
    }
}

/// The state of one running consumer.
struct Run<'a> {
    consumer: &'a Consumer,
    name: String,
    con: ConnectionManager,
    reader: Option<Reader>,
    /// Where reads ahead go.
    pages: Pages,
    streams: Vec<Arc<str>>,
    /// Entries delivered to us but not handled yet (a read may return more than `count`).
    queue: VecDeque<Event>,
    /// When the oldest entry in the queue was delivered.
    queued_at: Instant,
    /// The pending pass in progress: per stream index, the last ID seen.
    pending: Option<Vec<(usize, EntryId)>>,
    pending_due: Instant,
    /// When failed batches are due again (they are re-read by a pending pass).
    retry_at: Option<Instant>,
    groups_ready: bool,
    backoff: Backoff,
    lock: &'a Lock,
    count: usize,
    cancel: CancellationToken,
    /// Commits sent and not yet answered, oldest first: Redis runs them while the next
    /// batches are handled.
    inflight: VecDeque<InFlight>,
    /// Reads of new entries sent ahead, oldest first, with when each was sent; a task
    /// turns each reply into events.
    reading: VecDeque<(
        Instant,
        tokio::task::JoinHandle<redis::RedisResult<Vec<Event>>>,
    )>,
}

/// The events of a read of new entries (`>`), first delivery, from the streams we read.
fn new_events(reply: redis::Value, streams: &[Arc<str>]) -> redis::RedisResult<Vec<Event>> {
    let mut events = Vec::new();
    for (name, entries) in commands::parse_read_reply(reply)? {
        let Some(stream) = streams.iter().find(|s| ***s == name) else {
            continue;
        };
        events.extend(entries.into_iter().map(|entry| entry.into_event(stream)));
    }
    Ok(events)
}

/// Where a consumer's reads ahead go: a connection of its own whose replies are parsed
/// without redis-rs's generic parser, or the shared connection.
enum Pages {
    /// Not tried yet (or to be reopened after a connection error).
    Unopened,
    Own(PageReader),
    /// The address is not plain TCP with RESP2: always the shared connection.
    Unsupported,
    /// Opening failed: the shared connection until the next connection error.
    Failed,
}

/// A connection for blocking reads, with its server-side client ID (to unblock it).
struct Reader {
    con: MultiplexedConnection,
    id: i64,
}

enum Fetched {
    /// Entries were queued (or the pending pass advanced).
    Progress,
    /// Nothing new to read.
    Empty,
    /// Cancelled or lock lost while waiting.
    Interrupted,
}

impl Run<'_> {
    fn group(&self) -> &str {
        &self.consumer.group.name
    }

    fn options(&self) -> &ConsumerOptions {
        &self.consumer.options
    }

    async fn run<H: BatchHandler>(&mut self, mut handler: H) -> Result<bool> {
        loop {
            if self.lock.lost().is_cancelled() {
                self.settle().await?;
                return Err(Error::LockLost(self.lock.key().to_string()));
            }
            // Entries already delivered to us are handled before anything else, even when
            // cancelled, so a graceful stop leaves nothing pending under this consumer's name;
            // the pages read ahead fill a whole batch before it is handled.
            if self.queue.len() < self.count && !self.reading.is_empty() {
                self.absorb_read_ahead().await;
                continue;
            }
            if self.cancel.is_cancelled() && self.queue.is_empty() {
                self.settle().await?;
                return Ok(true);
            }
            if self.queue.is_empty() {
                // A read of our pending entries must not see the batch being committed.
                self.settle().await?;
                match self.fetch().await {
                    Ok(Fetched::Progress) => self.backoff.reset(),
                    Ok(Fetched::Interrupted) => continue,
                    Ok(Fetched::Empty) => {
                        self.backoff.reset();
                        if !self.options().looping {
                            return Ok(true);
                        }
                        // Idle: look at our pending entries (claimed ones) next, unless
                        // failed ones wait for their retry time.
                        if self.retry_at.is_none() {
                            self.pending_due = Instant::now();
                        }
                    }
                    Err(e) => {
                        self.on_redis_error(&e);
                        let delay = self.backoff.next();
                        tokio::select! {
                            _ = self.cancel.cancelled() => {}
                            _ = self.lock.lost().cancelled() => {}
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
                continue;
            }
            if self.queue_is_stale() {
                tracing::debug!(group = %self.group(), consumer = %self.name, entries = self.queue.len(), "queued entries waited too long to finish before min-idle; re-reading them");
                self.settle().await?;
                self.queue.clear();
                // Entries of reads still in flight are re-read by the pending pass too:
                // wait until Redis has run those reads, so the pass sees what they deliver.
                for (_, read) in self.reading.drain(..) {
                    let _ = read.await;
                }
                self.pending_due = Instant::now();
                continue;
            }
            let take = self.queue.len().min(self.count);
            let batch: Vec<Event> = self.queue.drain(..take).collect();
            // Redis runs the previous batch's commit and reads the next pages while this
            // batch is handled: the reads go out before the handler starts.
            self.read_ahead().await;
            self.record_answered()?;
            let decided = self.decide(&mut handler, batch).await?;
            self.start_commit(decided).await;
            while self.inflight.len() > MAX_COMMITS_IN_FLIGHT {
                self.settle_oldest().await?;
            }
        }
    }

    /// True when the queued entries were delivered so long ago that a batch of them could
    /// still be running when another consumer may reclaim them.
    fn queue_is_stale(&self) -> bool {
        let deadline = self.options().handler_deadline;
        self.options().reclaim_idle.is_some_and(|min_idle| {
            // (A deadline at or above min-idle could never pass: config refuses it.)
            deadline < min_idle && self.queued_at.elapsed() + deadline >= min_idle
        })
    }

    /// Sends non-blocking reads of new entries ahead of need, so Redis reads the next
    /// pages while batches are handled and committed: up to two reads in flight, as long as
    /// the queue and the reads in flight hold less than two batches. Only when the next
    /// fetch would read new entries anyway (no pending pass running or due), and only one
    /// read ahead when queued entries could otherwise wait close to min-idle.
    async fn read_ahead(&mut self) {
        let now = Instant::now();
        let pending_pass_due = self.pending.is_some()
            || now >= self.pending_due
            || self.retry_at.is_some_and(|t| now >= t);
        if pending_pass_due || !self.groups_ready || self.cancel.is_cancelled() {
            return;
        }
        let depth = match self.options().reclaim_idle {
            Some(min_idle) if self.options().handler_deadline * 3 >= min_idle => 1,
            _ => 2,
        };
        // Large batches are read in pages of READ_PAGE entries: Redis writes one page while
        // the client parses the one before, instead of handing over one large reply.
        let page = self.count.min(READ_PAGE);
        if matches!(self.pages, Pages::Unopened) {
            self.pages = self.open_pages().await;
        }
        while self.queue.len() + self.reading.len() * page < depth * self.count {
            let args: Vec<(&str, String)> = self
                .streams
                .iter()
                .map(|s| (&**s, ">".to_string()))
                .collect();
            let cmd = commands::xreadgroup(self.group(), &self.name, page, None, &args);
            let mut read: Pin<Box<dyn Future<Output = redis::RedisResult<redis::Value>> + Send>> =
                match &self.pages {
                    Pages::Own(pages) => Box::pin(pages.send(&cmd)),
                    _ => {
                        let mut con = self.con.clone();
                        Box::pin(async move { cmd.query_async::<redis::Value>(&mut con).await })
                    }
                };
            // The first poll hands the command to the connection here, so reads reach Redis
            // in order; turning the reply into events happens on a task of its own, which
            // the runtime may run on another worker while this one handles a batch.
            let sent = futures::poll!(read.as_mut());
            let streams = self.streams.clone();
            let convert = tokio::spawn(async move {
                let reply = match sent {
                    std::task::Poll::Ready(reply) => reply,
                    std::task::Poll::Pending => read.await,
                };
                new_events(reply?, &streams)
            });
            self.reading.push_back((Instant::now(), convert));
        }
    }

    /// Opens the connection for reads ahead, or says why the shared one is used.
    async fn open_pages(&self) -> Pages {
        let pool = match self.consumer.engine.pool(&self.consumer.group.pool) {
            Ok(pool) => pool,
            Err(_) => return Pages::Failed,
        };
        let name = keys::read_ahead_client_name(self.group(), &self.name);
        match PageReader::connect(pool.connection_info(), &name, RESPONSE_TIMEOUT).await {
            Ok(Some(pages)) => Pages::Own(pages),
            Ok(None) => Pages::Unsupported,
            Err(e) => {
                tracing::warn!(group = %self.group(), error = %e, "cannot open the read-ahead connection; reading ahead on the shared one");
                Pages::Failed
            }
        }
    }

    /// Waits for the oldest read ahead and queues what it delivered.
    async fn absorb_read_ahead(&mut self) {
        let Some((sent_at, read)) = self.reading.pop_front() else {
            return;
        };
        let events = read.await.unwrap_or_else(|e| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "reading ahead failed",
                e.to_string(),
            )))
        });
        match events {
            Ok(events) => {
                // Entries are delivered when Redis runs the read: counting their wait from
                // when it was sent errs on the safe side.
                if self.queue.is_empty() {
                    self.queued_at = sent_at;
                }
                self.queue.extend(events);
                self.sort_queue();
            }
            Err(e) => {
                // Whatever the read delivered sits in our pending list: the next pending
                // pass picks it up.
                self.on_redis_error(&e);
                self.pending_due = Instant::now();
            }
        }
    }

    fn on_redis_error(&mut self, e: &redis::RedisError) {
        if commands::is_no_group(e) {
            tracing::warn!(group = %self.group(), streams = ?self.consumer.group.streams, "consumer group or stream vanished (FLUSHALL, restart without persistence, or deleted); recreating it");
            self.groups_ready = false;
            self.pending = None;
        } else {
            tracing::warn!(group = %self.group(), consumer = %self.name, error = %e, "redis error while consuming; retrying");
        }
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            self.reader = None;
            if !matches!(self.pages, Pages::Unsupported) {
                self.pages = Pages::Unopened;
            }
        }
    }

    /// Reads the next entries into the queue: a page of the pending pass when one is due,
    /// new entries otherwise.
    async fn fetch(&mut self) -> redis::RedisResult<Fetched> {
        if !self.groups_ready {
            for stream in &self.consumer.group.streams {
                commands::create_group(&mut self.con, stream, &self.consumer.group.name).await?;
            }
            self.groups_ready = true;
        }
        let now = Instant::now();
        if self.pending.is_none()
            && (now >= self.pending_due || self.retry_at.is_some_and(|t| now >= t))
        {
            self.retry_at = None;
            if let Some(min_idle) = self.options().reclaim_idle {
                self.reclaim(min_idle).await?;
            }
            self.pending = Some(
                (0..self.streams.len())
                    .map(|i| (i, EntryId::ZERO))
                    .collect(),
            );
        }
        if self.pending.is_some() {
            return self.fetch_pending().await;
        }
        self.fetch_new().await
    }

    /// One page of our own pending entries, with their delivery counts.
    async fn fetch_pending(&mut self) -> redis::RedisResult<Fetched> {
        let cursors = self.pending.clone().unwrap_or_default();
        if cursors.is_empty() {
            self.pending = None;
            self.pending_due = Instant::now() + self.options().pending_interval;
            return Ok(Fetched::Progress);
        }
        let args: Vec<(&str, String)> = cursors
            .iter()
            .map(|(i, id)| (&*self.streams[*i], id.to_string()))
            .collect();
        let read_at = Instant::now();
        let reply = commands::xreadgroup(self.group(), &self.name, self.count, None, &args)
            .query_async(&mut self.con)
            .await?;
        let mut next = Vec::new();
        let mut fetched = Vec::new();
        for (name, entries) in commands::parse_read_reply(reply)? {
            let Some(&(i, _)) = cursors.iter().find(|(i, _)| *self.streams[*i] == *name) else {
                continue;
            };
            if let Some(last) = entries.last() {
                next.push((i, last.id));
                fetched.push((i, entries));
            }
        }
        self.pending = Some(next);
        for (i, entries) in fetched {
            let stream = self.streams[i].clone();
            let (first, last) = (
                entries[0].id.to_string(),
                entries[entries.len() - 1].id.to_string(),
            );
            let counts: BTreeMap<EntryId, u32> = commands::pending_range(
                &mut self.con,
                &stream,
                &self.consumer.group.name,
                &first,
                &last,
                entries.len(),
                Some(&self.name),
            )
            .await?
            .into_iter()
            .map(|p| (p.id, p.deliveries))
            .collect();
            self.enqueue(
                &stream,
                entries,
                |id| counts.get(&id).copied().unwrap_or(1),
                read_at,
            );
        }
        self.sort_queue();
        Ok(Fetched::Progress)
    }

    /// New entries (`>`), blocking unless draining; cancellation and lock loss interrupt
    /// the wait at once.
    async fn fetch_new(&mut self) -> redis::RedisResult<Fetched> {
        let args: Vec<(&str, String)> = self
            .streams
            .iter()
            .map(|s| (&**s, ">".to_string()))
            .collect();
        let block = if self.options().looping {
            let next_pass = self
                .retry_at
                .map_or(self.pending_due, |t| t.min(self.pending_due));
            let until_pending = next_pass.saturating_duration_since(Instant::now());
            Some(
                self.options()
                    .block
                    .min(until_pending)
                    .max(Duration::from_millis(1)),
            )
        } else {
            None
        };
        let cmd = commands::xreadgroup(self.group(), &self.name, self.count, block, &args);
        let mut read_at = Instant::now();
        let reply = match block {
            None => cmd.query_async(&mut self.con).await?,
            Some(block) => {
                if self.reader.is_none() {
                    self.reader = Some(self.open_reader(block).await?);
                }
                let reader = self.reader.as_mut().expect("reader was just opened");
                let id = reader.id;
                let read = cmd.query_async::<redis::Value>(&mut reader.con);
                tokio::select! {
                    // A blocking read delivers when it returns.
                    reply = read => {
                        read_at = Instant::now();
                        reply?
                    }
                    _ = self.cancel.cancelled() => return self.interrupt_read(id).await,
                    _ = self.lock.lost().cancelled() => return self.interrupt_read(id).await,
                }
            }
        };
        Ok(if self.absorb_new(reply, read_at)? {
            Fetched::Progress
        } else {
            Fetched::Empty
        })
    }

    /// Queues the entries of a read of new entries; true when there were any.
    fn absorb_new(&mut self, reply: redis::Value, read_at: Instant) -> redis::RedisResult<bool> {
        let events = new_events(reply, &self.streams)?;
        if events.is_empty() {
            return Ok(false);
        }
        if self.queue.is_empty() {
            self.queued_at = read_at;
        }
        self.queue.extend(events);
        self.sort_queue();
        Ok(true)
    }

    async fn open_reader(&self, block: Duration) -> redis::RedisResult<Reader> {
        let pool = self
            .consumer
            .engine
            .pool(&self.consumer.group.pool)
            .map_err(to_redis)?;
        // Above the longest block, so a blocking read is never cut short by the client.
        let timeout = self.options().block.max(block) + Duration::from_secs(5);
        let mut con = pool.dedicated(timeout).await.map_err(to_redis)?;
        let id = commands::client_id(&mut con).await?;
        Ok(Reader { con, id })
    }

    /// Unblocks our blocked read server-side, so nothing is delivered to a reader that no
    /// longer listens, and drops the reader connection.
    async fn interrupt_read(&mut self, id: i64) -> redis::RedisResult<Fetched> {
        self.reader = None;
        let _ = commands::client_unblock(&mut self.con, id).await;
        Ok(Fetched::Interrupted)
    }

    fn enqueue(
        &mut self,
        stream: &Arc<str>,
        entries: Vec<RawEntry>,
        deliveries: impl Fn(EntryId) -> u32,
        read_at: Instant,
    ) {
        if self.queue.is_empty() {
            self.queued_at = read_at;
        }
        for entry in entries {
            let mut event = entry.into_event(stream);
            event.deliveries = deliveries(event.id);
            self.queue.push_back(event);
        }
    }

    /// Orders queued entries by ID across streams (a stable sort keeps each stream's order).
    fn sort_queue(&mut self) {
        if self.streams.len() > 1 {
            self.queue.make_contiguous().sort_by_key(|e| e.id);
        }
    }

    /// XAUTOCLAIM of every entry idle longer than `min_idle` into this consumer.
    async fn reclaim(&mut self, min_idle: Duration) -> redis::RedisResult<()> {
        for stream in &self.consumer.group.streams {
            let mut cursor = "0-0".to_string();
            loop {
                let (next, entries) = commands::autoclaim(
                    &mut self.con,
                    stream,
                    &self.consumer.group.name,
                    &self.name,
                    min_idle,
                    &cursor,
                    1000,
                )
                .await?;
                if !entries.is_empty() {
                    tracing::info!(group = %self.group(), consumer = %self.name, stream = %stream, entries = entries.len(), "reclaimed idle entries");
                }
                if next == "0-0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    /// Handles one batch and commits the outcome. Only a lost lock is an error here:
    /// handler failures and commit failures leave the batch pending for a retry.
    /// Hands `batch` to the handler and builds the commit of its decision (the commit is
    /// not sent: see [`start_commit`](Self::start_commit)).
    async fn decide<H: BatchHandler>(
        &mut self,
        handler: &mut H,
        batch: Vec<Event>,
    ) -> Result<Decided> {
        let started = Instant::now();
        let group = self.consumer.group.name.clone();
        let dead_letter_stream = self.options().dead_letter_stream.clone();
        let max = self.options().max_deliveries;
        let mut commit = CommitBatch::default();
        let mut counts = BatchCounts::default();
        let oldest_entry_ms = batch.iter().map(|e| e.id.ms).min();
        // Entries that cannot be handled never reach the handler.
        let usable = |e: &Event| {
            let deleted = e.body.is_none() && e.meta.is_empty();
            let exhausted = max.is_some_and(|m| e.deliveries > m);
            !(deleted || exhausted)
        };
        let (events, hopeless): (Vec<Event>, Vec<Event>) = if batch.iter().all(usable) {
            (batch, Vec::new())
        } else {
            batch.into_iter().partition(usable)
        };
        for event in &hopeless {
            let reason = if event.body.is_none() && event.meta.is_empty() {
                "entry has no data (deleted while pending)".to_string()
            } else {
                format!(
                    "delivered {} times (max-deliveries {})",
                    event.deliveries,
                    max.unwrap_or(0)
                )
            };
            tracing::warn!(group = %group, stream = %event.stream, id = %event.id, %reason, "dead-lettering entry");
            commit.dead_letter(&dead_letter_stream, &group, event, &reason);
            counts.dead_lettered += 1;
        }
        let mut published: BTreeMap<String, u64> = BTreeMap::new();
        if !events.is_empty() {
            counts.handled = events.len() as u64;
            let span = tracing::info_span!("batch", size = events.len(), first = %events[0].id);
            let call = AssertUnwindSafe(handler.handle(&events))
                .catch_unwind()
                .instrument(span);
            let result = tokio::select! {
                result = call => result,
                _ = self.lock.lost().cancelled() => return Err(Error::LockLost(self.lock.key().to_string())),
            };
            let decision = match result {
                Ok(Ok(decision)) if decision.outcomes.len() == events.len() => Ok(decision),
                Ok(Ok(decision)) => Err((
                    "wrong_outcomes",
                    anyhow::anyhow!(
                        "the handler returned {} outcomes for {} events",
                        decision.outcomes.len(),
                        events.len()
                    ),
                )),
                Ok(Err(e)) => Err((failure_kind(&e), e)),
                Err(panic) => Err((
                    "panic",
                    anyhow::anyhow!("the handler panicked: {}", panic_message(&panic)),
                )),
            };
            match decision {
                Ok(decision) => {
                    let mut acks: BTreeMap<&str, Vec<EntryId>> = BTreeMap::new();
                    for (event, outcome) in events.iter().zip(&decision.outcomes) {
                        match outcome {
                            Outcome::Ack => {
                                acks.entry(event.stream()).or_default().push(event.id);
                                counts.acked += 1;
                            }
                            Outcome::DeadLetter(reason) => {
                                commit.dead_letter(&dead_letter_stream, &group, event, reason);
                                counts.dead_lettered += 1;
                            }
                            Outcome::Retry(reason)
                                if max.is_some_and(|m| event.deliveries >= m) =>
                            {
                                let reason = format!(
                                    "{reason} (gave up after {} deliveries)",
                                    event.deliveries
                                );
                                commit.dead_letter(&dead_letter_stream, &group, event, &reason);
                                counts.dead_lettered += 1;
                            }
                            Outcome::Retry(_) => counts.retried += 1,
                        }
                    }
                    for (stream, ids) in acks {
                        commit.ack(stream, &group, &ids);
                    }
                    for event in &decision.publishes {
                        commit.publish(event);
                        *published.entry(event.stream().to_string()).or_default() += 1;
                    }
                }
                Err((kind, error)) => {
                    let error = format!("{error:#}");
                    tracing::warn!(group = %group, consumer = %self.name, events = events.len(), %error, "batch failed; it stays pending for a retry");
                    if let Some(metrics) = &self.options().metrics {
                        metrics.failure(&group, kind);
                    }
                    for event in &events {
                        match max {
                            Some(m) if event.deliveries >= m => {
                                let reason =
                                    format!("failed {} times, last: {error}", event.deliveries);
                                commit.dead_letter(&dead_letter_stream, &group, event, &reason);
                                counts.dead_lettered += 1;
                            }
                            _ => counts.retried += 1,
                        }
                    }
                }
            }
        }
        Ok(Decided {
            commit,
            summary: BatchSummary {
                counts,
                published,
                started,
                oldest_entry_ms,
            },
        })
    }

    /// Sends the commit of a decided batch and leaves it in flight while the consumer goes
    /// on; [`settle`](Self::settle) waits for every commit in flight, which happens before
    /// anything reads this consumer's pending entries. Commits share one connection, so
    /// Redis runs them in the order they were sent.
    async fn start_commit(&mut self, decided: Decided) {
        let injected = self
            .options()
            .fail_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let Decided { commit, summary } = decided;
        let mut result: CommitFuture = if injected {
            tracing::warn!(group = %self.group(), consumer = %self.name, "injected fault: the commit is dropped; the batch stays pending");
            Box::pin(async { None })
        } else {
            let lock = (self.lock.key().to_string(), self.lock.token().to_string());
            Box::pin(commit.run(self.con.clone(), Some(lock)).map(Some))
        };
        // The first poll hands the command to the connection: Redis runs it while the
        // next batch is handled.
        let ready = futures::poll!(result.as_mut());
        self.inflight.push_back(InFlight {
            result: std::sync::Mutex::new(match ready {
                std::task::Poll::Ready(done) => Box::pin(async move { done }),
                std::task::Poll::Pending => result,
            }),
            summary,
        });
    }

    /// Waits for every commit in flight and records how each went.
    async fn settle(&mut self) -> Result<()> {
        while !self.inflight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest commit in flight and records how it went.
    async fn settle_oldest(&mut self) -> Result<()> {
        match self.inflight.pop_front() {
            Some(mut inflight) => {
                let result = inflight.result().await;
                self.record(inflight.summary, result)
            }
            None => Ok(()),
        }
    }

    /// Records the commits whose replies are in, without waiting for the others.
    fn record_answered(&mut self) -> Result<()> {
        while let Some(oldest) = self.inflight.front_mut() {
            let Some(result) = oldest.result().now_or_never() else {
                break;
            };
            let inflight = self.inflight.pop_front().expect("front exists");
            self.record(inflight.summary, result)?;
        }
        Ok(())
    }

    /// Records a finished commit: metrics, and a retry when it (or part of the batch)
    /// failed. A commit refused for the lock is [`Error::LockLost`].
    fn record(
        &mut self,
        batch: BatchSummary,
        result: Option<redis::RedisResult<Vec<String>>>,
    ) -> Result<()> {
        let group = self.consumer.group.name.clone();
        let committed = match result {
            None => false,
            Some(Ok(_)) => true,
            Some(Err(e)) if e.code() == Some(LOCK_LOST) => {
                return Err(Error::LockLost(self.lock.key().to_string()));
            }
            Some(Err(e)) => {
                tracing::warn!(group = %group, consumer = %self.name, error = %e, "commit failed; the batch stays pending");
                self.on_redis_error(&e);
                false
            }
        };
        if let Some(metrics) = &self.options().metrics {
            if committed {
                metrics.batch(
                    &group,
                    batch.counts,
                    batch.started.elapsed(),
                    batch.oldest_entry_ms,
                );
                for (stream, n) in &batch.published {
                    metrics.published(&group, stream, *n);
                }
            } else {
                metrics.commit_failed(&group);
            }
        }
        if !committed || batch.counts.retried > 0 {
            let at = Instant::now() + self.options().retry_delay;
            self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
        }
        Ok(())
    }
}

/// The most entries one read ahead asks for (per stream).
const READ_PAGE: usize = 200;

/// How many commits may be in flight before the consumer waits for the oldest.
const MAX_COMMITS_IN_FLIGHT: usize = 3;

/// What a handled batch did, recorded (metrics, retry) once its commit is settled.
struct BatchSummary {
    counts: BatchCounts,
    /// Events published per stream.
    published: BTreeMap<String, u64>,
    started: Instant,
    oldest_entry_ms: Option<u64>,
}

/// A handled batch and the commit of its decision, not yet sent.
struct Decided {
    commit: CommitBatch,
    summary: BatchSummary,
}

/// The commit's reply; `None` when a test hook dropped it.
type CommitFuture =
    std::pin::Pin<Box<dyn Future<Output = Option<redis::RedisResult<Vec<String>>>> + Send>>;

/// A commit sent to Redis whose reply is not in yet.
struct InFlight {
    /// Only ever polled through `&mut` (`Mutex::get_mut`, no locking): the mutex makes the
    /// consumer's state `Sync`, as tasks holding `&Run` across awaits require.
    result: std::sync::Mutex<CommitFuture>,
    summary: BatchSummary,
}

impl InFlight {
    /// The commit's reply, to await (or poll once).
    fn result(&mut self) -> &mut CommitFuture {
        self.result
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The metrics label of a handler error: a [`BatchError`] says its kind; anything else is
/// an `error`.
fn failure_kind(error: &anyhow::Error) -> &'static str {
    error
        .downcast_ref::<BatchError>()
        .map_or("error", |e| e.kind.label())
}

/// A handler error that says what kind of failure it was (for metrics); return it from a
/// [`BatchHandler`] as `Err(BatchError { .. }.into())`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BatchError {}

/// Why a handler failed a batch, attached to its error for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (a panic, `unreachable`, ...).
    Trap,
    /// The batch ran past its CPU deadline.
    Deadline,
    /// The guest hit its memory cap.
    Memory,
    /// The guest overflowed its stack.
    StackOverflow,
    /// The guest returned an error for the batch.
    Error,
    /// The guest returned the wrong number of outcomes.
    WrongOutcomes,
    /// The component could not be instantiated.
    Instantiate,
}

impl FailureKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::StackOverflow => "stack_overflow",
            FailureKind::Error => "error",
            FailureKind::WrongOutcomes => "wrong_outcomes",
            FailureKind::Instantiate => "instantiate",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

fn to_redis(e: Error) -> redis::RedisError {
    match e {
        Error::Redis { source, .. } => source,
        other => redis::RedisError::from((redis::ErrorKind::Client, "consumer", other.to_string())),
    }
}

/// Exponential backoff for Redis errors: 100 ms doubling to 5 s.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let delay =
            Duration::from_millis(100u64 << self.attempt.min(6)).min(Duration::from_secs(5));
        self.attempt += 1;
        delay
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}
