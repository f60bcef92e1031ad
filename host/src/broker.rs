//! The event broker: publishing, flushers, consumers and statistics.

use serde::Serialize;

use crate::consumer::Consumer;
use crate::engine::Engine;
use crate::error::{Error, PoolContext, Result};
use crate::event::{Event, NewEvent, encode_body, owned_meta};
use crate::flusher::Flusher;
use crate::stats::{self, StreamStatistics};

/// Publishes events and creates consumers; cheap to clone.
#[derive(Clone)]
pub struct EventBroker {
    engine: Engine,
}

impl EventBroker {
    pub(crate) fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// The engine behind this broker.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Publishes `body` (MessagePack, structs as maps) with metadata `meta` to `stream` and
    /// returns the new entry's ID.
    ///
    /// Fails without writing anything for an unregistered stream or an invalid metadata key.
    pub async fn publish<T: Serialize + ?Sized, K: AsRef<str>, V: AsRef<str>>(
        &self,
        stream: &str,
        body: &T,
        meta: &[(K, V)],
    ) -> Result<String> {
        let body = encode_body(stream, body)?;
        self.publish_event(NewEvent::new(stream, Some(body), owned_meta(meta))?)
            .await
    }

    /// Publishes a metadata-only event (no body) and returns its ID.
    pub async fn publish_meta<K: AsRef<str>, V: AsRef<str>>(
        &self,
        stream: &str,
        meta: &[(K, V)],
    ) -> Result<String> {
        self.publish_event(NewEvent::new(stream, None, owned_meta(meta))?)
            .await
    }

    /// Publishes an already encoded MessagePack body (`None` for metadata only).
    pub async fn publish_raw<K: AsRef<str>, V: AsRef<str>>(
        &self,
        stream: &str,
        body: Option<Vec<u8>>,
        meta: &[(K, V)],
    ) -> Result<String> {
        self.publish_event(NewEvent::new(stream, body, owned_meta(meta))?)
            .await
    }

    /// Publishes a checked event and returns its ID.
    pub async fn publish_event(&self, event: NewEvent) -> Result<String> {
        let pool = self.engine.stream_pool(&event.stream)?;
        let mut con = pool.connection().await?;
        crate::commands::xadd(&event)
            .query_async(&mut con)
            .await
            .pool(&pool.name)
    }

    /// Reads up to `count` entries of `stream` (registered or not, e.g. a dead-letter
    /// stream) in `pool`, from `start` (an ID, inclusive; `-` for the beginning, `(ID` to
    /// start after one), without joining any consumer group: delivery is not disturbed.
    pub async fn range(
        &self,
        pool: &str,
        stream: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<Event>> {
        let pool = self.engine.pool(pool)?;
        let mut con = pool.connection().await?;
        let name: std::sync::Arc<str> = std::sync::Arc::from(stream);
        let entries = crate::commands::range(&mut con, stream, start, count)
            .await
            .pool(&pool.name)?;
        Ok(entries
            .into_iter()
            .map(|entry| entry.into_event(&name))
            .collect())
    }

    /// A flusher: buffers events and sends one pipeline per pool on [`Flusher::flush`].
    pub fn new_flusher(&self) -> Flusher {
        Flusher::new(self.engine.clone())
    }

    /// A consumer for `group`; see [`Consumer`] for its options.
    pub fn consumer(&self, group: &str) -> Result<Consumer> {
        let def = self
            .engine
            .registry()
            .group(group)
            .ok_or_else(|| Error::UnregisteredGroup(group.to_string()))?;
        Ok(Consumer::new(self.engine.clone(), def.clone()))
    }

    /// Per registered stream: its length and, per group, pending, lag, last-delivered ID,
    /// oldest pending age and per-consumer pending.
    pub async fn statistics(&self) -> Result<Vec<StreamStatistics>> {
        stats::collect(&self.engine).await
    }
}
