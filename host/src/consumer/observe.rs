//! What a consumer reports as it works, for metrics: an [`Observer`] is told about every
//! settled batch, failure, publish and lock. The `ops` layer's Prometheus metrics
//! implement it; the consumer knows nothing of how the figures are kept.

use std::time::Duration;

/// What one handled batch did, for [`Observer::batch`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    /// Events given to the handler.
    pub handled: u64,
    /// Events acknowledged.
    pub acked: u64,
    /// Events left pending for a retry.
    pub retried: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
}

/// Receives a consumer's figures. Every method is called from the consumer's task and
/// must not block.
pub trait Observer: std::fmt::Debug + Send + Sync + 'static {
    /// A batch of `group` was committed: what it did, how long it took from the handler's
    /// start to the commit, and the timestamp (ms) of its oldest entry ID.
    fn batch(&self, group: &str, counts: BatchCounts, took: Duration, oldest_entry_ms: Option<u64>);
    /// A batch of `group` failed in the handler; `kind` is a [`FailureKind`](super::FailureKind)
    /// label (or `panic`).
    fn failure(&self, group: &str, kind: &str);
    /// `n` events published by a handler of `group` to `stream` were committed.
    fn published(&self, group: &str, stream: &str, n: u64);
    /// A handler of `group` asked for a publish that was refused.
    fn publish_refused(&self, group: &str);
    /// A commit of `group` failed (the batch stays pending).
    fn commit_failed(&self, group: &str);
    /// The relay of `group`'s outbox wrote `n` outputs to `stream` (another commit domain).
    fn relayed(&self, group: &str, stream: &str, n: u64);
    /// The relay of `group`'s outbox wrote outputs whose commits (into the outbox) were
    /// that long before, one per output: from the outbox entry's ID time (the source
    /// Redis's clock) to the target's answer (the relay host's clock). Does nothing unless
    /// implemented.
    fn relay_latencies(&self, group: &str, latencies: &[Duration]) {
        let _ = (group, latencies);
    }
    /// `n` entries of `group` were found deleted while pending and dead-lettered.
    fn deleted_while_pending(&self, group: &str, n: u64);
    /// A consumer of `group` took (`+1`) or released (`-1`) its lock.
    fn lock_held(&self, group: &str, delta: i64);
}
