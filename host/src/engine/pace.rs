//! How far a relay trails the consumers that fill its outbox, within one process, so that
//! a consumer can wait for a relay that is behind but moving (backpressure), and never for
//! one that is stopped.
//!
//! The consumers of a group slice count the outputs they commit into its outbox; the relay
//! of that outbox, while it holds the outbox's lock in this process, counts what it
//! settles and says whether its targets take outputs. A consumer whose relay is more than
//! a bound behind waits for it (for a bounded time) before it handles its next batch. The
//! outbox then stays short and outputs reach their targets a few batches after their
//! input's commit, instead of queueing for as long as the input takes to drain. A relay
//! whose target is down (or that runs on another host) sets nobody waiting: consumption
//! goes on and the outbox grows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The shared pace of one outbox in this process; see the module docs.
#[derive(Debug, Default)]
pub struct RelayPace {
    /// Outbox entries this process's consumers committed (or are committing).
    committed: AtomicU64,
    /// Outbox entries this process's relay settled (delivered, skipped or dead-lettered).
    settled: AtomicU64,
    /// A relay of this process holds the outbox and its targets take outputs.
    flowing: AtomicBool,
    /// Woken at each step of the relay and when it stops flowing.
    progress: Notify,
}

impl RelayPace {
    /// A consumer sent a commit that writes `n` entries into the outbox.
    pub fn committed(&self, n: u64) {
        if n > 0 {
            self.committed.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The relay settled `n` entries of the outbox; its targets take outputs.
    pub fn settled(&self, n: u64) {
        self.settled.fetch_add(n, Ordering::Relaxed);
        self.flowing.store(true, Ordering::Relaxed);
        self.progress.notify_waiters();
    }

    /// The relay found the outbox empty: whatever was committed before is settled.
    pub fn caught_up(&self) {
        self.settled
            .fetch_max(self.committed.load(Ordering::Relaxed), Ordering::Relaxed);
        self.flowing.store(true, Ordering::Relaxed);
        self.progress.notify_waiters();
    }

    /// The relay stopped moving entries (a target is down, it failed, or it let go of the
    /// outbox): nobody waits for it.
    pub fn stopped(&self) {
        self.flowing.store(false, Ordering::Relaxed);
        self.progress.notify_waiters();
    }

    /// How many committed entries the relay has not settled, while it flows.
    pub fn behind(&self) -> Option<u64> {
        behind(
            self.committed.load(Ordering::Relaxed),
            self.settled.load(Ordering::Relaxed),
            self.flowing.load(Ordering::Relaxed),
        )
    }

    /// Waits while the relay flows and is more than `max_behind` entries behind, for at
    /// most `patience`. Returns how long it waited.
    pub async fn wait_within(&self, max_behind: u64, patience: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        let deadline = started + patience;
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            // Registered before the check, so a step between the two is not missed.
            progress.as_mut().enable();
            if self.behind().is_none_or(|b| b <= max_behind) {
                return started.elapsed();
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return started.elapsed();
            }
        }
    }
}

/// Entries committed and not settled when the relay flows; `None` when it does not (then
/// nobody should wait for it). Settled counts may run ahead of this process's commits
/// (entries other hosts committed): that reads as not behind.
fn behind(committed: u64, settled: u64, flowing: bool) -> Option<u64> {
    flowing.then(|| committed.saturating_sub(settled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_relay_is_never_waited_for() {
        assert_eq!(behind(5000, 0, false), None);
        assert_eq!(behind(5000, 1000, true), Some(4000));
        assert_eq!(behind(10, 500, true), Some(0));
    }

    #[test]
    fn catching_up_settles_what_was_committed() {
        let pace = RelayPace::default();
        assert_eq!(pace.behind(), None);
        pace.committed(3000);
        pace.settled(1000);
        assert_eq!(pace.behind(), Some(2000));
        pace.caught_up();
        assert_eq!(pace.behind(), Some(0));
        pace.committed(10);
        pace.stopped();
        assert_eq!(pace.behind(), None);
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_when_the_relay_moves_or_stops() {
        let pace = std::sync::Arc::new(RelayPace::default());
        pace.committed(3000);
        pace.settled(0);
        let waiter = {
            let pace = pace.clone();
            tokio::spawn(async move { pace.wait_within(1000, Duration::from_secs(60)).await })
        };
        // Still behind after this step: the waiter waits on.
        pace.settled(1000);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        pace.settled(1000);
        let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the relay's step")
            .unwrap();
        assert!(waited < Duration::from_secs(60));

        pace.committed(5000);
        let waiter = {
            let pace = pace.clone();
            tokio::spawn(async move { pace.wait_within(1000, Duration::from_secs(60)).await })
        };
        pace.stopped();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("a stopped relay releases its waiters")
            .unwrap();
    }

    #[tokio::test]
    async fn a_relay_that_does_not_move_is_waited_for_only_so_long() {
        let pace = RelayPace::default();
        pace.committed(5000);
        pace.settled(0);
        let waited = pace.wait_within(1000, Duration::from_millis(250)).await;
        assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(10));
    }
}
