//! Commits in flight: a decided batch's commit is sent at once and left running while the
//! next batch is handled; settling records how each went (metrics, retry, lock loss).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::FutureExt;

use super::BatchCounts;
use super::run::Run;
use crate::error::{Error, Result};
use crate::keys;
use crate::redis::commit::{CommitBatch, CommitMark, LOCK_LOST};

/// How many commits may be in flight before the consumer waits for the oldest.
pub(super) const MAX_COMMITS_IN_FLIGHT: usize = 3;

/// What a handled batch did, recorded (metrics, retry) once its commit is settled.
pub(super) struct BatchSummary {
    pub(super) counts: BatchCounts,
    /// Events published per stream.
    pub(super) published: BTreeMap<String, u64>,
    pub(super) started: Instant,
    pub(super) oldest_entry_ms: Option<u64>,
    /// Entries found deleted while pending (dead-lettered by this batch's commit).
    pub(super) deleted: u64,
    /// When the batch's entries were delivered to this consumer (at the latest).
    pub(super) delivered_at: Instant,
}

/// A handled batch and the commit of its decision, not yet sent.
pub(super) struct Decided {
    pub(super) commit: CommitBatch,
    pub(super) summary: BatchSummary,
}

/// The commit's reply; `None` when a test hook dropped it.
type CommitFuture = std::pin::Pin<Box<dyn Future<Output = Option<redis::RedisResult<()>>> + Send>>;

/// A commit sent to Redis whose reply is not in yet.
pub(super) struct InFlight {
    /// Only ever polled through `&mut` (`Mutex::get_mut`, no locking): the mutex makes the
    /// consumer's state `Sync`, as tasks holding `&Run` across awaits require.
    result: std::sync::Mutex<CommitFuture>,
    summary: BatchSummary,
}

impl InFlight {
    /// The commit's reply, to await (or poll once).
    pub(super) fn result(&mut self) -> &mut CommitFuture {
        self.result
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Run<'_> {
    /// Sends the commit of a decided batch and leaves it in flight while the consumer goes
    /// on; [`settle`](Self::settle) waits for every commit in flight, which happens before
    /// anything reads this consumer's pending entries. Commits share one connection, so
    /// Redis runs them in the order they were sent.
    pub(super) async fn start_commit(&mut self, decided: Decided) {
        let injected = self
            .options()
            .fail_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let Decided { commit, summary } = decided;
        // Past min-idle another consumer may have reclaimed these entries (this host was
        // paused, say, while its lock held): committing now could handle them twice. The
        // batch is left pending instead; whoever owns its entries handles them.
        let stale = self
            .options()
            .reclaim_idle
            .is_some_and(|min_idle| summary.delivered_at.elapsed() >= min_idle);
        let mut result: CommitFuture = if stale {
            tracing::warn!(group = %self.group(), consumer = %self.name, "the batch took past min-idle to reach its commit (was the host paused?): not committing it; its entries are retried by whoever holds them now");
            Box::pin(async { None })
        } else if injected {
            tracing::warn!(group = %self.group(), consumer = %self.name, "injected fault: the commit is dropped; the batch stays pending");
            Box::pin(async { None })
        } else {
            let lock = (self.lock.key().to_string(), self.lock.token().to_string());
            // On a cluster, a request whose connection dropped is sent again by the client,
            // even when Redis ran it: the mark makes a second run a no-op.
            let mark = self.con.is_cluster().then(|| {
                self.commits_sent += 1;
                CommitMark {
                    key: keys::commit_mark(self.lock.key()),
                    series: self.lock.token().to_string(),
                    seq: self.commits_sent,
                }
            });
            if let Some(pace) = &self.pace {
                pace.committed(commit.outboxed() as u64);
            }
            Box::pin(commit.run(self.con.clone(), Some(lock), mark).map(Some))
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
    pub(super) async fn settle(&mut self) -> Result<()> {
        while !self.inflight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest commit in flight and records how it went.
    pub(super) async fn settle_oldest(&mut self) -> Result<()> {
        match self.inflight.pop_front() {
            Some(mut inflight) => {
                let result = inflight.result().await;
                self.record(inflight.summary, result)
            }
            None => Ok(()),
        }
    }

    /// Records the commits whose replies are in, without waiting for the others.
    pub(super) fn record_answered(&mut self) -> Result<()> {
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
    pub(super) fn record(
        &mut self,
        batch: BatchSummary,
        result: Option<redis::RedisResult<()>>,
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
                if batch.deleted > 0 {
                    metrics.deleted_while_pending(&group, batch.deleted);
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
