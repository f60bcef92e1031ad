//! The flusher: buffers events and sends them in one transaction per pool.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::engine::Engine;
use crate::error::{Error, PoolContext, Result};
use crate::event::{NewEvent, encode_body, owned_meta};

/// Buffered events of one pool, each with its position in publish order.
type PoolEvents = Vec<(usize, NewEvent)>;

/// Per event of a pool's transaction, in order: its new ID, or why its `XADD` failed.
type Written = Vec<redis::RedisResult<String>>;

/// The task sending one pool's transaction.
type SendTask = JoinHandle<Result<Written>>;

/// Buffers events and publishes them with [`flush`](Flusher::flush): one `MULTI`/`EXEC`
/// pipeline per pool, order kept within each stream.
///
/// Events are checked when buffered (unregistered stream, empty event, reserved key), so a
/// flush fails only on Redis errors; then the failed pools' events stay buffered and the
/// next flush sends them again. Nothing is lost.
///
/// For a steady stream of events, [`start_flush`](Flusher::start_flush) sends the buffer
/// without waiting for Redis's answer, so the next events are buffered while Redis writes
/// these (one flush in flight at a time, so order and the resend on failure are kept).
pub struct Flusher {
    engine: Engine,
    /// Per pool, the buffered events with their position in publish order.
    buffer: BTreeMap<String, PoolEvents>,
    next: usize,
    /// The flush started by [`start_flush`](Flusher::start_flush) and not yet answered:
    /// per pool, its events (kept for a resend) and the task sending them.
    in_flight: Vec<(String, PoolEvents, SendTask)>,
}

impl Flusher {
    pub(crate) fn new(engine: Engine) -> Self {
        Self {
            engine,
            buffer: BTreeMap::new(),
            next: 0,
            in_flight: Vec::new(),
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
        let pool = &self.engine.stream_pool(&event.stream)?.name;
        let entry = (self.next, event);
        match self.buffer.get_mut(pool.as_str()) {
            Some(events) => events.push(entry),
            None => {
                self.buffer.insert(pool.clone(), vec![entry]);
            }
        }
        self.next += 1;
        Ok(())
    }

    /// How many events are not yet known to be written: buffered, or in a flush started
    /// by [`start_flush`](Self::start_flush) that Redis has not answered yet.
    pub fn len(&self) -> usize {
        let in_flight: usize = self
            .in_flight
            .iter()
            .map(|(_, events, _)| events.len())
            .sum();
        self.buffer.values().map(Vec::len).sum::<usize>() + in_flight
    }

    /// True when every event published to this flusher is known to be written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends the buffer and returns the new IDs in publish order (of the events buffered
    /// since the last successful flush, including those of a flush still in flight from
    /// [`start_flush`](Self::start_flush), which this waits for first).
    ///
    /// Each pool gets one atomic pipeline. If a pool fails, its events stay buffered, the
    /// other pools' are sent, and the error names the failed pool; flush again to resend.
    /// When Redis ran a pool's transaction but refused some of its `XADD`s (a stream key
    /// holding another type), the written events leave the buffer and only the refused
    /// ones stay, so a resend never duplicates an event.
    pub async fn flush(&mut self) -> Result<Vec<String>> {
        let mut ids = self.settle().await?;
        let mut first_error = None;
        let pools: Vec<String> = self.buffer.keys().cloned().collect();
        for pool_name in pools {
            let events = &self.buffer[&pool_name];
            let result = send(&self.engine, &pool_name, events).await;
            let events = match result {
                Ok(_) => self.buffer.remove(&pool_name).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            if let Err(e) = self.absorb(pool_name, events, result, &mut ids) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.next = 0;
        Ok(in_publish_order(ids))
    }

    /// Starts sending the buffer and returns without waiting for Redis's answer, so the
    /// caller can buffer the next events while Redis writes these: a pipelined flush.
    ///
    /// At most one flush is in flight: this first waits for the one started before and
    /// returns *its* IDs in publish order (empty on the first call). If that one failed
    /// for a pool, its events go back to the front of the buffer (before the events
    /// buffered since, so order is kept), nothing new is sent, and the error is returned;
    /// call again (or [`flush`](Self::flush)) to resend. [`flush`](Self::flush) waits for
    /// the flush in flight and sends the rest; call it last, since dropping the flusher
    /// leaves a flush in flight unobserved.
    ///
    /// ```no_run
    /// # async fn example(broker: beehive::EventBroker) -> beehive::Result<()> {
    /// let mut flusher = broker.new_flusher();
    /// for batch in 0..100 {
    ///     for i in 0..100 {
    ///         flusher.publish("stream-a", &(batch * 100 + i), &[] as &[(&str, &str)])?;
    ///     }
    ///     let written = flusher.start_flush().await?; // IDs of the batch before
    /// #   let _ = written;
    /// }
    /// let last = flusher.flush().await?; // IDs of the last batch
    /// # let _ = last;
    /// # Ok(()) }
    /// ```
    pub async fn start_flush(&mut self) -> Result<Vec<String>> {
        let ids = in_publish_order(self.settle().await?);
        for (pool_name, events) in std::mem::take(&mut self.buffer) {
            let (engine, name) = (self.engine.clone(), pool_name.clone());
            let pipe = transaction(&events);
            let expected = events.len();
            let task =
                tokio::spawn(async move { send_pipeline(&engine, &name, &pipe, expected).await });
            self.in_flight.push((pool_name, events, task));
        }
        // A task spawned (or woken) by a runtime worker waits in that worker's LIFO slot,
        // which other workers cannot steal: without a yield, the send would only start when
        // the caller next awaits, after buffering the next events, and nothing would overlap.
        tokio::task::yield_now().await;
        Ok(ids)
    }

    /// Waits for the flush in flight. Failed pools' events go back to the front of the
    /// buffer. Cancel-safe: a pool's events leave `in_flight` only once its answer is in.
    async fn settle(&mut self) -> Result<Vec<(usize, String)>> {
        let mut ids = Vec::new();
        let mut first_error = None;
        while let Some((_, _, task)) = self.in_flight.first_mut() {
            let result = task.await;
            let (pool_name, events, _) = self.in_flight.remove(0);
            let result = result.unwrap_or_else(|e| {
                Err(Error::Validation(format!(
                    "redis pool {pool_name}: the flush task failed: {e}"
                )))
            });
            if let Err(e) = self.absorb(pool_name, events, result, &mut ids) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(ids),
        }
    }

    /// Takes one pool's answer for `events` (taken out of the buffer or the flight): the
    /// IDs of the written events go to `ids`; events not written go back to the front of
    /// the pool's buffer, ahead of anything buffered since. When the whole transaction
    /// failed, `events` may be empty because they never left the buffer.
    fn absorb(
        &mut self,
        pool_name: String,
        events: PoolEvents,
        result: Result<Written>,
        ids: &mut Vec<(usize, String)>,
    ) -> Result<()> {
        let (mut kept, error) = match result {
            Ok(written) => {
                let mut kept = Vec::new();
                let mut refused = None;
                for ((pos, event), result) in events.into_iter().zip(written) {
                    match result {
                        Ok(id) => ids.push((pos, id)),
                        Err(e) => {
                            refused.get_or_insert_with(|| Error::Redis {
                                pool: pool_name.clone(),
                                source: redis::RedisError::from((
                                    redis::ErrorKind::Client,
                                    "XADD refused",
                                    format!("stream {}: {e}", event.stream),
                                )),
                            });
                            kept.push((pos, event));
                        }
                    }
                }
                match refused {
                    None => return Ok(()),
                    Some(e) => (kept, e),
                }
            }
            Err(e) => (events, e),
        };
        let buffered = self.buffer.entry(pool_name.clone()).or_default();
        kept.append(buffered);
        *buffered = kept;
        tracing::warn!(pool = %pool_name, error = %error, buffered = buffered.len(), "flush failed; events stay buffered");
        Err(error)
    }
}

fn in_publish_order(mut ids: Vec<(usize, String)>) -> Vec<String> {
    ids.sort_unstable_by_key(|(pos, _)| *pos);
    ids.into_iter().map(|(_, id)| id).collect()
}

/// Sends `events` to pool `pool_name` in one `MULTI`/`EXEC`; returns each `XADD`'s result.
async fn send(engine: &Engine, pool_name: &str, events: &[(usize, NewEvent)]) -> Result<Written> {
    send_pipeline(engine, pool_name, &transaction(events), events.len()).await
}

/// `MULTI`, an `XADD` per event, `EXEC`.
fn transaction(events: &[(usize, NewEvent)]) -> redis::Pipeline {
    let mut pipe = redis::Pipeline::with_capacity(events.len());
    // Redis does not roll a transaction back when one command fails: each XADD's own
    // result tells which events were written.
    pipe.atomic().ignore_errors();
    for (_, event) in events {
        pipe.add_command(crate::commands::xadd(event));
    }
    pipe
}

async fn send_pipeline(
    engine: &Engine,
    pool_name: &str,
    pipe: &redis::Pipeline,
    expected: usize,
) -> Result<Written> {
    let mut con = engine.pool(pool_name)?.connection().await?;
    let written: Written = pipe.query_async(&mut con).await.pool(pool_name)?;
    if written.len() != expected {
        return Err(Error::Validation(format!(
            "redis pool {pool_name}: flush returned {} replies for {expected} events",
            written.len(),
        )));
    }
    Ok(written)
}
