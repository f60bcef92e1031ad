//! The event broker: publishing, flushers, statistics, garbage collection and redrive.
//!
//! Consumers are created from the broker too ([`EventBroker::consumer`]), by the
//! [`consumer`](crate::consumer) layer above this one.

pub mod flusher;
pub mod gc;
pub mod redrive;
pub mod relay;
pub mod stats;

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, PoolContext, Result};
use crate::event::{EntryId, Event, NewEvent, encode_body, owned_meta};
use flusher::Flusher;
use stats::StreamStatistics;

/// Publishes events and creates consumers; cheap to clone.
#[derive(Clone)]
pub struct EventBroker {
    engine: Engine,
}

impl Engine {
    /// The event broker: publishing, flushers, consumers and statistics.
    pub fn event_broker(&self) -> EventBroker {
        EventBroker::new(self.clone())
    }
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
        crate::redis::commands::xadd(&event)
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
        let entries = crate::redis::commands::range(&mut con, stream, start, count)
            .await
            .pool(&pool.name)?;
        Ok(entries
            .into_iter()
            .map(|entry| entry.into_event(&name))
            .collect())
    }

    /// Follows `stream` (in `pool`) without joining a group: from `from` (an ID, inclusive;
    /// `0` for the whole stream) or, with `None`, only entries added from now on.
    pub async fn follow(&self, pool: &str, stream: &str, from: Option<&str>) -> Result<Follower> {
        let pool_handle = self.engine.pool(pool)?;
        let con = pool_handle
            .dedicated(Follower::MAX_BLOCK + std::time::Duration::from_secs(5))
            .await?;
        let mut follower = Follower {
            con,
            stream: std::sync::Arc::from(stream),
            pool: pool.to_string(),
            after: String::new(),
        };
        follower.after = match from {
            Some("-" | "0") => "0-0".to_string(),
            Some(id) => {
                let id: EntryId = id.parse().map_err(Error::InvalidArgument)?;
                id.predecessor().to_string()
            }
            None => crate::redis::commands::last_id(&mut follower.con, stream)
                .await
                .pool(pool)?
                .to_string(),
        };
        Ok(follower)
    }

    /// A flusher: buffers events and sends one pipeline per pool on [`Flusher::flush`].
    pub fn new_flusher(&self) -> Flusher {
        Flusher::new(self.engine.clone())
    }

    /// Per registered stream: its length and, per group, pending, lag, last-delivered ID,
    /// oldest pending age and per-consumer pending.
    pub async fn statistics(&self) -> Result<Vec<StreamStatistics>> {
        let registry = self.engine.registry();
        stats::collect(&self.engine, &|g| registry.default_dead_letter_stream(g)).await
    }

    /// Like [`statistics`](Self::statistics), with the dead-letter stream of each group
    /// named by `dead_letter_name` (e.g. from the `consumers:` config).
    pub async fn statistics_with(
        &self,
        dead_letter_name: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<Vec<StreamStatistics>> {
        stats::collect(&self.engine, dead_letter_name).await
    }
}

/// Reads a stream as it grows, without joining a consumer group (`XREAD`): inspecting never
/// disturbs delivery.
pub struct Follower {
    con: crate::redis::pool::Connection,
    stream: std::sync::Arc<str>,
    pool: String,
    after: String,
}

impl Follower {
    /// The longest a single [`next`](Self::next) blocks.
    pub const MAX_BLOCK: std::time::Duration = std::time::Duration::from_secs(10);

    /// Up to `count` entries, waiting up to `block` (at most [`MAX_BLOCK`](Self::MAX_BLOCK))
    /// for new ones; empty when none came.
    pub async fn next(&mut self, count: usize, block: std::time::Duration) -> Result<Vec<Event>> {
        let cmd = crate::redis::commands::xread(
            &self.stream,
            &self.after,
            count,
            block.min(Self::MAX_BLOCK),
        );
        let reply = cmd.query_async(&mut self.con).await.pool(&self.pool)?;
        let entries: Vec<_> = crate::redis::commands::parse_read_reply(reply)
            .pool(&self.pool)?
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .collect();
        if let Some(last) = entries.last() {
            self.after = last.id.to_string();
        }
        Ok(entries
            .into_iter()
            .map(|e| e.into_event(&self.stream))
            .collect())
    }
}
