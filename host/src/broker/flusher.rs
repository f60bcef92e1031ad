//! The flusher: buffers events and sends them in one transaction per pool (per hash slot
//! on a cluster pool).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::redis::pool::Connection;
use futures::future::{MaybeDone, maybe_done};
use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, PoolContext, Result};
use crate::event::{NewEvent, encode_body, owned_meta};

/// Buffered events of one pool, each with its position in publish order.
type PoolEvents = Vec<(usize, NewEvent)>;

/// Per event of a pool's transaction, in order: its new ID, or why its `XADD` failed.
type Written = Vec<redis::RedisResult<String>>;

/// Redis's answer to one pool's transaction, polled in place until it is in.
type Reply = MaybeDone<Pin<Box<dyn Future<Output = Result<Written>> + Send>>>;

/// One pool's transaction sent by [`start_flush`](Flusher::start_flush) and not yet settled.
struct Flight {
    pool: String,
    /// Its events, kept for a resend until Redis's answer says they were written.
    events: PoolEvents,
    reply: Reply,
}

/// Buffers events and publishes them with [`flush`](Flusher::flush): one `MULTI`/`EXEC`
/// pipeline per pool, order kept within each stream.
///
/// Events are checked when buffered (unregistered stream, empty event, reserved key), so a
/// flush fails only on Redis errors; then the failed pools' events stay buffered and the
/// next flush sends them again. Nothing is lost.
///
/// For a steady stream of events, [`start_flush`](Flusher::start_flush) sends the buffer
/// without waiting for Redis's answer, so the next events are buffered while Redis writes
/// these.
pub struct Flusher {
    engine: Engine,
    /// Per pool, the buffered events with their position in publish order.
    buffer: BTreeMap<String, PoolEvents>,
    next: usize,
    /// Transactions sent by [`start_flush`](Flusher::start_flush), oldest first.
    in_flight: Vec<Flight>,
    /// Per pool, the connection [`start_flush`](Flusher::start_flush) sends on: one socket,
    /// never reconnected, so transactions in flight reach Redis in the order sent or fail.
    /// Dropped when a transaction on it fails; the next one opens a new connection.
    ordered: BTreeMap<String, Connection>,
    /// IDs (with publish positions) of written events not yet returned to the caller:
    /// a call that returns an error leaves them for the next successful call.
    written: Vec<(usize, String)>,
}

impl Flusher {
    pub(crate) fn new(engine: Engine) -> Self {
        Self {
            engine,
            buffer: BTreeMap::new(),
            next: 0,
            in_flight: Vec::new(),
            ordered: BTreeMap::new(),
            written: Vec::new(),
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
        let in_flight: usize = self.in_flight.iter().map(|f| f.events.len()).sum();
        self.buffer.values().map(Vec::len).sum::<usize>() + in_flight
    }

    /// True when every event published to this flusher is known to be written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends the buffer and returns the new IDs in publish order: of the events buffered
    /// since the last successful flush, including those of flushes still in flight from
    /// [`start_flush`](Self::start_flush), which this waits for first.
    ///
    /// Each pool gets one atomic pipeline, all sent at once. If a pool fails, its events stay buffered, the
    /// other pools' are sent, and the error names the failed pool; flush again to resend.
    /// The IDs of the events a failing call did write are returned by the next successful
    /// call. When Redis ran a pool's transaction but refused some of its `XADD`s (a stream
    /// key holding another type), the written events leave the buffer and only the refused
    /// ones stay, so a resend never duplicates an event.
    pub async fn flush(&mut self) -> Result<Vec<String>> {
        self.settle(self.in_flight.len()).await?;
        // Every pool's transaction at once: a flush takes as long as the slowest pool.
        let engine = &self.engine;
        let parts = transactions(engine, std::mem::take(&mut self.buffer));
        let sends = parts.into_iter().map(|(pool_name, events)| async move {
            let result = async {
                let mut con = engine.pool(&pool_name)?.connection().await?;
                send(&mut con, &pool_name, &transaction(&events), events.len()).await
            }
            .await;
            (pool_name, events, result)
        });
        let results = futures::future::join_all(sends).await;
        let mut first_error = None;
        for (pool_name, events, result) in results {
            if let Err(e) = self.absorb(pool_name, events, result) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.next = 0;
        Ok(self.take_written())
    }

    /// Sends the buffer and returns without waiting for Redis's answer, so the caller can
    /// buffer the next events while Redis writes these: a pipelined flush.
    ///
    /// Each call sends what is buffered, then waits for the flush started by the call
    /// before and returns *its* IDs in publish order (empty on the first call). So one
    /// flush is in flight while the caller buffers, and Redis already has the next one
    /// when it answers the last, never waiting for the client. A pool's flushes go out in
    /// order on a connection of their own that never reconnects in between, so a lost
    /// connection fails every flush in flight on it. That connection is opened on first
    /// use and closed when the flusher is dropped: keep one flusher for a steady producer.
    ///
    /// When a flush fails for a pool, every flush in flight is settled before the error is
    /// returned, and the events not written go back to the buffer in publish order, ahead
    /// of anything buffered since; call again (or [`flush`](Self::flush)) to resend.
    /// Within each stream publish order is kept, with one exception: if Redis refuses a
    /// whole transaction (out of memory, say) but accepts the one sent right after it,
    /// the refused events are written after that one's when resent. Use
    /// [`flush`](Self::flush) alone where even that must not happen.
    ///
    /// Call [`flush`](Self::flush) last: it waits for the flushes in flight and sends the
    /// rest; dropping the flusher leaves a flush in flight unobserved.
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
        let older = self.in_flight.len();
        if let Err(e) = self.open_ordered().await {
            // Nothing new was sent; settle what is in flight so the buffer is whole.
            let _ = self.settle(self.in_flight.len()).await;
            return Err(e);
        }
        for (pool, events) in transactions(&self.engine, std::mem::take(&mut self.buffer)) {
            let mut con = self.ordered[&pool].clone();
            let (name, pipe, expected) = (pool.clone(), transaction(&events), events.len());
            let mut reply: Reply = maybe_done(Box::pin(async move {
                send(&mut con, &name, &pipe, expected).await
            }));
            // The first poll hands the transaction to the connection's writer (a FIFO
            // channel), so transactions reach Redis in the order they were started.
            let _ = futures::poll!(&mut reply);
            self.in_flight.push(Flight {
                pool,
                events,
                reply,
            });
        }
        // The connection's writer task was woken from this worker, into its LIFO slot,
        // which other workers cannot steal: yield so it writes now, not when the caller
        // next awaits after buffering the next events.
        tokio::task::yield_now().await;
        self.settle(older).await?;
        Ok(self.take_written())
    }

    /// Opens the ordered connection of every pool with buffered events that lacks one.
    async fn open_ordered(&mut self) -> Result<()> {
        for pool in self.buffer.keys() {
            if !self.ordered.contains_key(pool) {
                let con = self.engine.pool(pool)?.ordered().await?;
                self.ordered.insert(pool.clone(), con);
            }
        }
        Ok(())
    }

    /// Waits for the oldest `count` flights; if one fails, for every flight, so the buffer
    /// holds every event not written, in publish order. Written events' IDs go to
    /// `written`. Cancel-safe: a flight leaves `in_flight` only once its answer is in.
    async fn settle(&mut self, count: usize) -> Result<()> {
        let mut first_error = None;
        let mut settled = 0;
        while settled < count || (first_error.is_some() && !self.in_flight.is_empty()) {
            let Some(flight) = self.in_flight.first_mut() else {
                break;
            };
            (&mut flight.reply).await;
            let result = Pin::new(&mut flight.reply)
                .take_output()
                .expect("a reply that completed has an output");
            let Flight { pool, events, .. } = self.in_flight.remove(0);
            if result.is_err() {
                // Whatever was sent after this transaction on its connection may or may
                // not have reached Redis; the next flush starts on a new connection.
                self.ordered.remove(&pool);
            }
            if let Err(e) = self.absorb(pool, events, result) {
                first_error.get_or_insert(e);
            }
            settled += 1;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes one pool's answer for `events` (taken out of the buffer or the flight): the
    /// IDs of the written events go to `written`; events not written go back to the
    /// buffer, in publish order with what is there. When the whole transaction failed,
    /// `events` may be empty because they never left the buffer.
    fn absorb(
        &mut self,
        pool_name: String,
        events: PoolEvents,
        result: Result<Written>,
    ) -> Result<()> {
        let (kept, error) = match result {
            Ok(written) => {
                let mut kept = Vec::new();
                let mut refused = None;
                for ((pos, event), result) in events.into_iter().zip(written) {
                    match result {
                        Ok(id) => self.written.push((pos, id)),
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
        buffered.extend(kept);
        // Two sorted runs (what came back, what was buffered since): a stable sort by
        // publish position merges them.
        buffered.sort_by_key(|(pos, _)| *pos);
        tracing::warn!(pool = %pool_name, error = %error, buffered = buffered.len(), "flush failed; events stay buffered");
        Err(error)
    }

    /// The IDs not yet returned, in publish order.
    fn take_written(&mut self) -> Vec<String> {
        let mut ids = std::mem::take(&mut self.written);
        ids.sort_unstable_by_key(|(pos, _)| *pos);
        ids.into_iter().map(|(_, id)| id).collect()
    }
}

/// `MULTI`, an `XADD` per event, `EXEC`.
/// The transactions of a flush: one per pool, or on a cluster pool one per hash slot (a
/// transaction cannot span slots); each keeps publish order, so order per stream holds.
fn transactions(
    engine: &Engine,
    buffer: BTreeMap<String, PoolEvents>,
) -> Vec<(String, PoolEvents)> {
    let mut parts = Vec::with_capacity(buffer.len());
    for (pool, events) in buffer {
        if !engine.registry().is_cluster(&pool) {
            parts.push((pool, events));
            continue;
        }
        let mut by_slot: BTreeMap<u16, PoolEvents> = BTreeMap::new();
        for (pos, event) in events {
            by_slot
                .entry(crate::keys::slot(&event.stream))
                .or_default()
                .push((pos, event));
        }
        parts.extend(by_slot.into_values().map(|events| (pool.clone(), events)));
    }
    parts
}

fn transaction(events: &[(usize, NewEvent)]) -> redis::Pipeline {
    let mut pipe = redis::Pipeline::with_capacity(events.len());
    // Redis does not roll a transaction back when one command fails: each XADD's own
    // result tells which events were written.
    pipe.atomic().ignore_errors();
    for (_, event) in events {
        pipe.add_command(crate::redis::commands::xadd(event));
    }
    pipe
}

/// Sends one pool's transaction of `expected` events; returns each `XADD`'s result.
async fn send(
    con: &mut Connection,
    pool_name: &str,
    pipe: &redis::Pipeline,
    expected: usize,
) -> Result<Written> {
    let written: Written = crate::redis::transaction::exec(con, pipe)
        .await
        .pool(pool_name)?;
    if written.len() != expected {
        return Err(Error::Validation(format!(
            "redis pool {pool_name}: flush returned {} replies for {expected} events",
            written.len(),
        )));
    }
    Ok(written)
}
