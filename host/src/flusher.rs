//! The flusher: buffers events and sends them in one transaction per pool.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, PoolContext, Result};
use crate::event::{NewEvent, encode_body, owned_meta};

/// Buffers events and publishes them with [`flush`](Flusher::flush): one `MULTI`/`EXEC`
/// pipeline per pool, order kept within each stream.
///
/// Events are checked when buffered (unregistered stream, empty event, reserved key), so a
/// flush fails only on Redis errors; then the failed pools' events stay buffered and the
/// next flush sends them again. Nothing is lost.
pub struct Flusher {
    engine: Engine,
    /// Per pool, the buffered events with their position in publish order.
    buffer: BTreeMap<String, Vec<(usize, NewEvent)>>,
    next: usize,
}

impl Flusher {
    pub(crate) fn new(engine: Engine) -> Self {
        Self {
            engine,
            buffer: BTreeMap::new(),
            next: 0,
        }
    }

    /// Buffers an event with a serde body.
    pub fn publish<T: Serialize + ?Sized, K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        stream: &str,
        body: &T,
        meta: &[(K, V)],
    ) -> Result<()> {
        let body = encode_body(stream, body)?;
        self.publish_event(NewEvent::new(stream, Some(body), owned_meta(meta))?)
    }

    /// Buffers a metadata-only event.
    pub fn publish_meta<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        stream: &str,
        meta: &[(K, V)],
    ) -> Result<()> {
        self.publish_event(NewEvent::new(stream, None, owned_meta(meta))?)
    }

    /// Buffers a checked event.
    pub fn publish_event(&mut self, event: NewEvent) -> Result<()> {
        let pool = self.engine.stream_pool(&event.stream)?.name.clone();
        self.buffer
            .entry(pool)
            .or_default()
            .push((self.next, event));
        self.next += 1;
        Ok(())
    }

    /// How many events wait to be flushed.
    pub fn len(&self) -> usize {
        self.buffer.values().map(Vec::len).sum()
    }

    /// True when nothing waits to be flushed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends the buffer and returns the new IDs in publish order (of the events buffered
    /// since the last successful flush).
    ///
    /// Each pool gets one atomic pipeline. If a pool fails, its events stay buffered, the
    /// other pools' are sent, and the error names the failed pool; flush again to resend.
    pub async fn flush(&mut self) -> Result<Vec<String>> {
        let mut ids: Vec<(usize, String)> = Vec::with_capacity(self.len());
        let mut first_error = None;
        let pools: Vec<String> = self.buffer.keys().cloned().collect();
        for pool_name in pools {
            let events = &self.buffer[&pool_name];
            match self.send(&pool_name, events).await {
                Ok(pool_ids) => {
                    ids.extend(events.iter().map(|(pos, _)| *pos).zip(pool_ids));
                    self.buffer.remove(&pool_name);
                }
                Err(e) => {
                    tracing::warn!(pool = %pool_name, error = %e, buffered = events.len(), "flush failed; events stay buffered");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.next = 0;
        ids.sort_unstable_by_key(|(pos, _)| *pos);
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }

    async fn send(&self, pool_name: &str, events: &[(usize, NewEvent)]) -> Result<Vec<String>> {
        let pool = self.engine.pool(pool_name)?;
        let mut con = pool.connection().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (_, event) in events {
            pipe.add_command(crate::commands::xadd(event));
        }
        let ids: Vec<String> = pipe.query_async(&mut con).await.pool(pool_name)?;
        if ids.len() != events.len() {
            return Err(Error::Validation(format!(
                "redis pool {pool_name}: flush returned {} IDs for {} events",
                ids.len(),
                events.len()
            )));
        }
        Ok(ids)
    }
}
