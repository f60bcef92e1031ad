//! Prometheus metrics of a running host, served at `GET /metrics` (OpenMetrics text).
//!
//! Labels are bounded: group, stream, consumer-independent kinds; never event IDs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::consumer::{BatchCounts, Observer};

type Labels = Vec<(&'static str, String)>;

fn batch_histogram() -> Histogram {
    // 100 µs .. ~52 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

fn delay_histogram() -> Histogram {
    // 1 ms .. ~2.3 h
    Histogram::new(exponential_buckets(0.001, 2.0, 24))
}

/// The host's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    handled: Family<Labels, Counter>,
    acked: Family<Labels, Counter>,
    retried: Family<Labels, Counter>,
    dead_lettered: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    publishes: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    commit_failures: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    batch_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    delay_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    pending: Family<Labels, Gauge>,
    lag: Family<Labels, Gauge>,
    length: Family<Labels, Gauge>,
    oldest_pending: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    locks: Family<Labels, Gauge>,
    relayed: Family<Labels, Counter>,
    relay_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    deleted_pending: Family<Labels, Counter>,
    outbox_length: Family<Labels, Gauge>,
    outbox_oldest: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

fn group(group: &str) -> Labels {
    vec![("group", group.to_string())]
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("beehive");
        let inner = Inner {
            handled: Family::default(),
            acked: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            failures: Family::default(),
            publishes: Family::default(),
            refused: Family::default(),
            commit_failures: Family::default(),
            reloads: Family::default(),
            batch_seconds: Family::new_with_constructor(batch_histogram),
            delay_seconds: Family::new_with_constructor(delay_histogram),
            pending: Family::default(),
            lag: Family::default(),
            length: Family::default(),
            oldest_pending: Family::default(),
            locks: Family::default(),
            relayed: Family::default(),
            relay_seconds: Family::new_with_constructor(delay_histogram),
            deleted_pending: Family::default(),
            outbox_length: Family::default(),
            outbox_oldest: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events_handled",
            "Events given to a handler",
            inner.handled.clone(),
        );
        registry.register("events_acked", "Events acknowledged", inner.acked.clone());
        registry.register(
            "events_retried",
            "Events left pending for a retry",
            inner.retried.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events moved to the dead-letter stream",
            inner.dead_lettered.clone(),
        );
        registry.register("batch_failures", "Failed batches by kind (trap, deadline, memory, stack_overflow, error, wrong_outcomes, panic, instantiate)", inner.failures.clone());
        registry.register(
            "publishes",
            "Events published by handlers, by target stream",
            inner.publishes.clone(),
        );
        registry.register(
            "publishes_refused",
            "Publishes refused (allow-list, max-publishes, invalid event)",
            inner.refused.clone(),
        );
        registry.register(
            "commit_failures",
            "Commits that failed (the batch stays pending)",
            inner.commit_failures.clone(),
        );
        registry.register(
            "reloads",
            "Component reloads by result (ok, refused)",
            inner.reloads.clone(),
        );
        registry.register(
            "batch_seconds",
            "Time to handle and commit one batch",
            inner.batch_seconds.clone(),
        );
        registry.register(
            "event_delay_seconds",
            "End-to-end delay: commit time minus the entry ID's timestamp",
            inner.delay_seconds.clone(),
        );
        registry.register(
            "pending",
            "Entries delivered and not acknowledged",
            inner.pending.clone(),
        );
        registry.register(
            "lag",
            "Entries not delivered to the group yet",
            inner.lag.clone(),
        );
        registry.register(
            "stream_length",
            "Entries in the stream",
            inner.length.clone(),
        );
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest pending entry",
            inner.oldest_pending.clone(),
        );
        registry.register(
            "locks_held",
            "Consumers of the group holding their lock in this host",
            inner.locks.clone(),
        );
        registry.register(
            "consumers_running",
            "Consumers of the group running on this host (holding their lock)",
            inner.locks.clone(),
        );
        registry.register(
            "relay_delivered",
            "Outputs the relay wrote to streams of another commit domain, by target stream",
            inner.relayed.clone(),
        );
        registry.register(
            "relay_latency_seconds",
            "Time from an output's commit into the outbox to its write on the target, per output",
            inner.relay_seconds.clone(),
        );
        registry.register(
            "events_deleted_while_pending",
            "Entries found deleted (XDEL, trimmed) while pending, dead-lettered",
            inner.deleted_pending.clone(),
        );
        registry.register(
            "outbox_length",
            "Outputs waiting in the group's outbox for the relay",
            inner.outbox_length.clone(),
        );
        registry.register(
            "outbox_oldest_seconds",
            "Age of the oldest output waiting in the group's outbox",
            inner.outbox_oldest.clone(),
        );
        Metrics {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// Records a handled batch.
    pub fn batch(
        &self,
        group_name: &str,
        counts: BatchCounts,
        elapsed: Duration,
        oldest_entry_ms: Option<u64>,
    ) {
        let labels = group(group_name);
        let i = &self.inner;
        i.handled.get_or_create(&labels).inc_by(counts.handled);
        i.acked.get_or_create(&labels).inc_by(counts.acked);
        i.retried.get_or_create(&labels).inc_by(counts.retried);
        i.dead_lettered
            .get_or_create(&labels)
            .inc_by(counts.dead_lettered);
        i.batch_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(ms) = oldest_entry_ms {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            i.delay_seconds
                .get_or_create(&labels)
                .observe(now.saturating_sub(ms) as f64 / 1000.0);
        }
    }

    /// Records a failed batch of `kind`.
    pub fn failure(&self, group_name: &str, kind: &str) {
        let mut labels = group(group_name);
        labels.push(("kind", kind.to_string()));
        self.inner.failures.get_or_create(&labels).inc();
    }

    /// Records committed publishes to `stream`.
    pub fn published(&self, group_name: &str, stream: &str, n: u64) {
        let mut labels = group(group_name);
        labels.push(("stream", stream.to_string()));
        self.inner.publishes.get_or_create(&labels).inc_by(n);
    }

    /// Records a refused publish.
    pub fn publish_refused(&self, group_name: &str) {
        self.inner.refused.get_or_create(&group(group_name)).inc();
    }

    /// Records a failed commit.
    pub fn commit_failed(&self, group_name: &str) {
        self.inner
            .commit_failures
            .get_or_create(&group(group_name))
            .inc();
    }

    /// Records a component reload (`ok` or `refused`).
    pub fn reload(&self, group_name: &str, result: &str) {
        let mut labels = group(group_name);
        labels.push(("result", result.to_string()));
        self.inner.reloads.get_or_create(&labels).inc();
    }

    /// A consumer of `group` took (`+1`) or released (`-1`) its lock.
    pub fn lock_held(&self, group_name: &str, delta: i64) {
        self.inner
            .locks
            .get_or_create(&group(group_name))
            .inc_by(delta);
    }

    /// Records outputs the relay wrote to `stream` for `group`.
    pub fn relayed(&self, group_name: &str, stream: &str, n: u64) {
        let mut labels = group(group_name);
        labels.push(("stream", stream.to_string()));
        self.inner.relayed.get_or_create(&labels).inc_by(n);
    }

    /// Records, per output the relay of `group` wrote, the time since its commit.
    pub fn relay_latencies(&self, group_name: &str, latencies: &[Duration]) {
        let histogram = self.inner.relay_seconds.get_or_create(&group(group_name));
        for latency in latencies {
            histogram.observe(latency.as_secs_f64());
        }
    }

    /// Records entries of `group` found deleted while pending.
    pub fn deleted_while_pending(&self, group_name: &str, n: u64) {
        self.inner
            .deleted_pending
            .get_or_create(&group(group_name))
            .inc_by(n);
    }

    /// Sets the outbox gauges of `group`: waiting outputs and the age of the oldest.
    pub fn set_outbox(&self, group_name: &str, length: u64, oldest: Option<Duration>) {
        let labels = group(group_name);
        self.inner
            .outbox_length
            .get_or_create(&labels)
            .set(length as i64);
        self.inner
            .outbox_oldest
            .get_or_create(&labels)
            .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// Sets the length gauge of `stream`.
    pub fn set_stream_length(&self, stream: &str, length: u64) {
        self.inner
            .length
            .get_or_create(&vec![("stream", stream.to_string())])
            .set(length as i64);
    }

    /// Sets the gauges of `group` on `stream`: pending entries, lag (when Redis knows it)
    /// and the age of the oldest pending entry.
    pub fn set_group_backlog(
        &self,
        group: &str,
        stream: &str,
        pending: u64,
        lag: Option<u64>,
        oldest_pending: Option<Duration>,
    ) {
        let i = &self.inner;
        let labels: Labels = vec![("group", group.to_string()), ("stream", stream.to_string())];
        i.pending.get_or_create(&labels).set(pending as i64);
        if let Some(lag) = lag {
            i.lag.get_or_create(&labels).set(lag as i64);
        }
        i.oldest_pending
            .get_or_create(&labels)
            .set(oldest_pending.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// The metrics in OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.inner.registry).expect("writing to a String cannot fail");
        out
    }

    /// Serves `GET /metrics` on `addr` until `cancel` fires.
    pub async fn serve(
        self,
        addr: SocketAddr,
        cancel: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tracing::info!(%bound, "serving metrics at /metrics");
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics listener");
                            continue;
                        }
                    },
                };
                let metrics = self.clone();
                tokio::spawn(async move {
                    let mut request = Vec::with_capacity(1024);
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                        match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let response = if request.starts_with(b"GET /metrics ")
                        || request.starts_with(b"GET /metrics?")
                    {
                        let body = metrics.render();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    };
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Ok(bound)
    }
}

pub use crate::address::parse_listen_addr as parse_addr;

impl Observer for Metrics {
    fn batch(
        &self,
        group: &str,
        counts: BatchCounts,
        took: Duration,
        oldest_entry_ms: Option<u64>,
    ) {
        Metrics::batch(self, group, counts, took, oldest_entry_ms);
    }

    fn failure(&self, group: &str, kind: &str) {
        Metrics::failure(self, group, kind);
    }

    fn published(&self, group: &str, stream: &str, n: u64) {
        Metrics::published(self, group, stream, n);
    }

    fn publish_refused(&self, group: &str) {
        Metrics::publish_refused(self, group);
    }

    fn commit_failed(&self, group: &str) {
        Metrics::commit_failed(self, group);
    }

    fn relayed(&self, group: &str, stream: &str, n: u64) {
        Metrics::relayed(self, group, stream, n);
    }

    fn relay_latencies(&self, group: &str, latencies: &[Duration]) {
        Metrics::relay_latencies(self, group, latencies);
    }

    fn deleted_while_pending(&self, group: &str, n: u64) {
        Metrics::deleted_while_pending(self, group, n);
    }

    fn lock_held(&self, group: &str, delta: i64) {
        Metrics::lock_held(self, group, delta);
    }
}
