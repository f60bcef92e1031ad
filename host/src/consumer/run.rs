//! The loop of one running consumer: take a batch from the queue, hand it to the handler,
//! commit its decision; fill the queue from the [source](super::source) when it runs dry.
//! Reads ahead and commits stay in flight while the next batch is handled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::RelayPace;
use crate::redis::pool::Connection;
use tokio_util::sync::CancellationToken;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tracing::Instrument;

use super::commits::{BatchSummary, Decided, InFlight, MAX_COMMITS_IN_FLIGHT};
use super::decide::{self, Handled, Rules};
use super::failure::{failure_kind, panic_message};
use super::read_ahead::{Pages, REOPEN_AFTER_REDIRECT};
use super::source::{Fetched, Reader};
use super::{BatchHandler, Consumer, ConsumerOptions};
use crate::broker::relay::PAGE as RELAY_PAGE;
use crate::error::{Error, Result};
use crate::event::{EntryId, Event};
use crate::redis::commands;
use crate::redis::lock::Lock;

/// The longest a consumer waits, before a batch, for a relay that trails it.
pub(super) const RELAY_PATIENCE: Duration = Duration::from_millis(500);

/// How many outputs a relay of this process may trail before a consumer waits for it: half
/// a relay page. An output then waits behind at most about its batch and this many. In a
/// sweep at batch 1000 (one build), relay p99 was 39 / 52 / 76 ms with bounds of 250 / 500
/// / 1,000 at the same throughput: the relay and the consumers share the same cores.
const MAX_BEHIND: usize = RELAY_PAGE / 2;

/// The state of one running consumer.
pub(super) struct Run<'a> {
    pub(super) consumer: &'a Consumer,
    pub(super) name: String,
    pub(super) con: Connection,
    pub(super) reader: Option<Reader>,
    /// Where reads ahead go.
    pub(super) pages: Pages,
    /// The streams this run reads: the group's streams in one commit domain.
    pub(super) streams: Vec<Arc<str>>,
    /// That commit domain.
    pub(super) domain: crate::registry::Domain,
    /// Where outputs to other domains go, in this domain.
    pub(super) outbox: String,
    /// How far the outbox's relay trails (when outputs can leave the domain).
    pub(super) pace: Option<Arc<RelayPace>>,
    /// Entries delivered to us but not handled yet (a read may return more than `count`).
    pub(super) queue: VecDeque<Event>,
    /// When the oldest entry in the queue was delivered.
    pub(super) queued_at: Instant,
    /// The pending pass in progress: per stream index, the last ID seen.
    pub(super) pending: Option<Vec<(usize, EntryId)>>,
    pub(super) pending_due: Instant,
    /// When failed batches are due again (they are re-read by a pending pass).
    pub(super) retry_at: Option<Instant>,
    pub(super) groups_ready: bool,
    pub(super) backoff: Backoff,
    pub(super) lock: &'a Lock,
    pub(super) count: usize,
    pub(super) cancel: CancellationToken,
    /// Commits sent and not yet answered, oldest first: Redis runs them while the next
    /// batches are handled.
    pub(super) inflight: VecDeque<InFlight>,
    /// How many commits this run has sent with a mark (their sequence numbers).
    pub(super) commits_sent: u64,
    /// Reads of new entries sent ahead, oldest first, with when each was sent; a task
    /// turns each reply into events.
    pub(super) reading: VecDeque<(
        Instant,
        tokio::task::JoinHandle<redis::RedisResult<Vec<Event>>>,
    )>,
}

impl Run<'_> {
    pub(super) fn group(&self) -> &str {
        &self.consumer.group.name
    }

    pub(super) fn options(&self) -> &ConsumerOptions {
        &self.consumer.options
    }

    pub(super) async fn run<H: BatchHandler>(&mut self, mut handler: H) -> Result<bool> {
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
            // Delivered no earlier than the oldest queued entry.
            let delivered_at = self.queued_at;
            let batch: Vec<Event> = self.queue.drain(..take).collect();
            // Redis runs the previous batch's commit and reads the next pages while this
            // batch is handled: the reads go out before the handler starts.
            self.read_ahead().await;
            self.record_answered()?;
            self.wait_for_relay().await;
            let decided = self.handle(&mut handler, batch, delivered_at).await?;
            self.start_commit(decided).await;
            while self.inflight.len() > MAX_COMMITS_IN_FLIGHT {
                self.settle_oldest().await?;
            }
        }
    }

    /// Backpressure: while the relay of this slice's outbox (in this process) moves
    /// outputs but trails by more than [`MAX_BEHIND`], gives it time to catch up
    /// (at most [`RELAY_PATIENCE`]), so outputs reach their targets soon after their
    /// input's commit and the outbox stays short. A relay that is stopped (its target is
    /// down) or runs on another host is not waited for.
    async fn wait_for_relay(&self) {
        let Some(pace) = &self.pace else {
            return;
        };
        tokio::select! {
            waited = pace.wait_within(MAX_BEHIND as u64, RELAY_PATIENCE) => {
                if waited >= RELAY_PATIENCE {
                    tracing::debug!(group = %self.group(), consumer = %self.name, "the relay trails and moves slowly; consuming on");
                }
            }
            _ = self.cancel.cancelled() => {}
            _ = self.lock.lost().cancelled() => {}
        }
    }

    /// True when the queued entries were delivered so long ago that a batch of them could
    /// still be running when another consumer may reclaim them.
    pub(super) fn queue_is_stale(&self) -> bool {
        let deadline = self.options().handler_deadline;
        self.options().reclaim_idle.is_some_and(|min_idle| {
            // (A deadline at or above min-idle could never pass: config refuses it.)
            deadline < min_idle && self.queued_at.elapsed() + deadline >= min_idle
        })
    }

    /// Hands `batch` to the handler and builds the commit of its decision (the commit is
    /// not sent: see [`start_commit`](Self::start_commit)). Only a lost lock is an error
    /// here: handler failures leave the batch pending for a retry.
    pub(super) async fn handle<H: BatchHandler>(
        &mut self,
        handler: &mut H,
        batch: Vec<Event>,
        delivered_at: Instant,
    ) -> Result<Decided> {
        let started = Instant::now();
        let oldest_entry_ms = batch.iter().map(|e| e.id.ms).min();
        let options = &self.consumer.options;
        let registry = self.consumer.engine.registry();
        let own = &self.domain;
        let is_remote = |stream: &str| registry.crosses_domain(stream, own);
        let rules = Rules {
            outbox: &self.outbox,
            is_remote: &is_remote,
            group: &self.consumer.group.name,
            dead_letter_stream: &options.dead_letter_stream,
            max_deliveries: options.max_deliveries,
        };
        // Entries that cannot be handled never reach the handler.
        let (events, hopeless) = decide::triage(batch, rules.max_deliveries);
        for (event, reason) in &hopeless {
            tracing::warn!(group = %rules.group, stream = %event.stream, id = %event.id, %reason, "dead-lettering entry");
        }
        let deleted = hopeless
            .iter()
            .filter(|(_, r)| r == decide::DELETED)
            .count() as u64;
        let handled = if events.is_empty() {
            Handled::Nothing
        } else {
            let span = tracing::info_span!("batch", size = events.len(), first = %events[0].id);
            let call = AssertUnwindSafe(handler.handle(&events))
                .catch_unwind()
                .instrument(span);
            tokio::select! {
                result = call => match result {
                    Ok(Ok(decision)) => decide::check_decision(decision, events.len()),
                    Ok(Err(e)) => Handled::Failed { kind: failure_kind(&e), error: format!("{e:#}") },
                    Err(panic) => Handled::Failed {
                        kind: "panic",
                        error: format!("the handler panicked: {}", panic_message(&panic)),
                    },
                },
                _ = self.lock.lost().cancelled() => Handled::LockLost,
            }
        };
        let Some(plan) = decide::decide(&hopeless, &events, handled, rules) else {
            return Err(Error::LockLost(self.lock.key().to_string()));
        };
        if let Some((kind, error)) = &plan.failure {
            tracing::warn!(group = %rules.group, consumer = %self.name, events = events.len(), %error, "batch failed; it stays pending for a retry");
            if let Some(metrics) = &options.metrics {
                metrics.failure(rules.group, kind);
            }
        }
        let commit = plan.commit(rules);
        Ok(Decided {
            commit,
            summary: BatchSummary {
                counts: plan.counts,
                published: plan.published,
                started,
                oldest_entry_ms,
                deleted,
                delivered_at,
            },
        })
    }

    pub(super) fn on_redis_error(&mut self, e: &redis::RedisError) {
        if commands::is_no_group(e) {
            tracing::warn!(group = %self.group(), streams = ?self.streams, "consumer group or stream vanished (FLUSHALL, restart without persistence, or deleted); recreating it");
            self.groups_ready = false;
            self.pending = None;
        } else {
            tracing::warn!(group = %self.group(), consumer = %self.name, error = %e, "redis error while consuming; retrying");
        }
        if crate::redis::resp::is_reply_too_large(e) {
            // The read-ahead connection is closed: read ahead on the shared one from now on.
            tracing::warn!(group = %self.group(), consumer = %self.name, "a read-ahead reply was too large for the read-ahead connection; reading ahead on the shared connection");
            self.pages = Pages::Failed;
        } else if e.redirect_node().is_some() && matches!(self.pages, Pages::Own(_)) {
            // A cluster slot moved away from the node read ahead on: the shared connection
            // follows it; the reader is reopened on the slot's master a little later.
            self.pages = Pages::Redirected(Instant::now() + REOPEN_AFTER_REDIRECT);
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            self.reader = None;
            if !matches!(self.pages, Pages::Unsupported) {
                self.pages = Pages::Unopened;
            }
        }
    }
}

pub(super) fn to_redis(e: Error) -> redis::RedisError {
    match e {
        Error::Redis { source, .. } => source,
        other => redis::RedisError::from((redis::ErrorKind::Client, "consumer", other.to_string())),
    }
}

/// Exponential backoff for Redis errors: 100 ms doubling to 5 s.
#[derive(Default)]
pub(super) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(super) fn next(&mut self) -> Duration {
        let delay =
            Duration::from_millis(100u64 << self.attempt.min(6)).min(Duration::from_secs(5));
        self.attempt += 1;
        delay
    }

    pub(super) fn reset(&mut self) {
        self.attempt = 0;
    }
}
