//! The relay: moves a group's outputs from its outbox (in the group's own commit domain) to
//! their target streams in other domains, exactly once and in publish order per target.
//!
//! A consumer commits outputs to streams of another domain into the outbox, atomically with
//! the acknowledgements of the batch that produced them. The relay then, holding the outbox's
//! lock (`keys::relay_lock`, one relay at a time across hosts):
//!
//! 1. takes the oldest page of the outbox (reads run up to a page ahead of delivery, and
//!    carry the deletion of what was settled before),
//! 2. per target domain, writes the page's outputs atomically with a dedupe mark per target
//!    stream (so an output written before a crash is skipped, never written twice): on a
//!    standalone target, `XADD`s in a transaction over a connection of the relay's own,
//!    guarded by `WATCH` on the marks; on a cluster slot (or when the transaction did not
//!    run), in one script,
//! 3. deletes the delivered entries from the outbox; outputs a target refused (a key of
//!    another type, an ACL) are moved to the group's dead-letter stream with the reason,
//!    atomically with their deletion from the outbox.
//!
//! A target that cannot be reached stops the relay at that output (order is kept) and it
//! retries with a backoff; the consumers go on and the outbox grows meanwhile.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, RelayPace};
use crate::error::{Error, PoolContext, Result};
use crate::event::EntryId;
use crate::keys::{self, dead_letter_fields};
use crate::redis::commands;
use crate::redis::lock::Lock;
use crate::redis::outbox::{self, Delivery, Output, Reader};
use crate::registry::{Domain, GroupSlice};

/// How many outputs one relay step moves at most. A step of 1,000 took 5–15 ms of the host
/// on 2 shared cores, and outputs committed meanwhile wait for the next step: 500 halves
/// that wait (relay p99 at batch 1000 from 40–67 to 35–44 ms) at no cost in throughput.
pub(crate) const PAGE: usize = 500;
/// TTL of the relay lock (refreshed every third of it): a relay that dies hands over to
/// another host's within this time.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How long one wait for new outbox entries blocks.
const BLOCK: Duration = Duration::from_secs(2);

/// Told how many outputs were written to each target stream.
pub type DeliveredFn = Arc<dyn Fn(&str, u64) + Send + Sync>;

/// Told, per output written, how long after its commit into the outbox it was written.
pub type LatenciesFn = Arc<dyn Fn(&[Duration]) + Send + Sync>;

/// The relay of one group's outbox; cheap to clone.
#[derive(Clone)]
pub struct Relay {
    engine: Engine,
    /// For logs and dead-letter fields: the group (or what else fills the outbox).
    group: String,
    pool: String,
    /// The commit domain of the outbox (unregistered targets are written in its pool).
    domain: Domain,
    outbox: String,
    lock: String,
    dead_letter_stream: String,
    delivered: Option<DeliveredFn>,
    latencies: Option<LatenciesFn>,
    /// How far this relay trails the consumers that fill its outbox (shared with them).
    pace: Arc<RelayPace>,
}

impl Relay {
    /// The relay of the outbox of `group`'s `slice` (the group's streams in one commit
    /// domain). Refused outputs go to `dead_letter_stream` when it lives in that domain,
    /// else to the default dead-letter stream in that domain (`<group>-dead-letter`, with
    /// the slice's hash tag on a cluster).
    pub fn new(
        engine: &Engine,
        group: &str,
        slice: &GroupSlice,
        dead_letter_stream: &str,
    ) -> Result<Relay> {
        let def = engine
            .registry()
            .group(group)
            .ok_or_else(|| Error::UnregisteredGroup(group.to_string()))?;
        let domain = engine.registry().slice_domain(def, slice);
        let local = !engine
            .registry()
            .crosses_domain(dead_letter_stream, &domain);
        let outbox = slice.outbox(group);
        Ok(Relay {
            pace: engine.relay_pace(&def.pool, &outbox),
            engine: engine.clone(),
            group: group.to_string(),
            pool: def.pool.clone(),
            domain,
            outbox,
            lock: slice.relay_lock(group),
            dead_letter_stream: if local {
                dead_letter_stream.to_string()
            } else {
                keys::dead_letter_stream_in(slice.tag.as_deref(), group)
            },
            delivered: None,
            latencies: None,
        })
    }

    /// The relay of the redrive outbox of `dead_letter_stream` (in `pool`); refused
    /// outputs go back to `dead_letter_stream`.
    pub fn for_redrive(engine: &Engine, pool: &str, dead_letter_stream: &str) -> Relay {
        let clustered = engine.registry().is_cluster(pool);
        let outbox = keys::redrive_outbox(dead_letter_stream, clustered);
        Relay {
            pace: engine.relay_pace(pool, &outbox),
            engine: engine.clone(),
            group: keys::dead_letter_group(dead_letter_stream)
                .unwrap_or(dead_letter_stream)
                .to_string(),
            pool: pool.to_string(),
            domain: Domain {
                pool: pool.to_string(),
                slot: clustered.then(|| keys::slot(dead_letter_stream)),
            },
            outbox,
            lock: keys::redrive_relay_lock(dead_letter_stream, clustered),
            dead_letter_stream: dead_letter_stream.to_string(),
            delivered: None,
            latencies: None,
        }
    }

    /// How far this relay trails the consumers that fill its outbox, in this process.
    pub fn pace(&self) -> Arc<RelayPace> {
        self.pace.clone()
    }

    /// Calls `latencies(per output)` after each step that wrote outputs: from the outbox
    /// entry's ID time (when the commit wrote it, by the outbox Redis's clock) to the
    /// target's answer (by this host's clock; 0 when the clocks disagree the other way).
    pub fn on_latencies(mut self, latencies: LatenciesFn) -> Relay {
        self.latencies = Some(latencies);
        self
    }

    /// Calls `delivered(target, n)` after each step that wrote outputs.
    pub fn on_delivered(mut self, delivered: DeliveredFn) -> Relay {
        self.delivered = Some(delivered);
        self
    }

    /// Relays until `cancel` fires: takes the outbox's lock when free, then moves entries as
    /// they come. Errors are logged and retried with a backoff.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !cancel.is_cancelled() {
            match self.hold_and_relay(&cancel, None).await {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "relay failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Moves outputs until the outbox is empty (`Ok(true)`), or `timeout` passes
    /// (`Ok(false)`: a target is unreachable, or another host's relay is slow); for drain
    /// mode, so outputs land before the process exits.
    pub async fn drain(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let cancel = CancellationToken::new();
        loop {
            if self.backlog().await?.0 == 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            match self.hold_and_relay(&cancel, Some(deadline)).await {
                Ok(true) => {}
                // Another relay holds the lock: it moves the entries; check again soon.
                Ok(false) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "relay failed while draining; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Entries waiting in the outbox and the ID of the oldest.
    pub async fn backlog(&self) -> Result<(u64, Option<EntryId>)> {
        let pool = self.engine.pool(&self.pool)?;
        let mut con = pool.connection().await?;
        outbox::backlog(&mut con, &self.outbox)
            .await
            .pool(&self.pool)
    }

    /// Takes the lock (or returns `Ok(false)` at once when another relay has it) and moves
    /// entries while holding it: until `cancel` fires, or with a `deadline`, until the
    /// outbox is empty or the deadline passes.
    async fn hold_and_relay(
        &self,
        cancel: &CancellationToken,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        let pool = self.engine.pool(&self.pool)?;
        let con = pool.connection().await?;
        let Some(lock) = Lock::acquire(con, &self.pool, &self.lock, LOCK_TTL).await? else {
            if deadline.is_none() {
                // Another host relays: look again later (its lock expires if it dies).
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(LOCK_TTL / 3) => {}
                }
            }
            return Ok(false);
        };
        let result = self.relay_while(&lock, cancel, deadline).await;
        // Whoever holds the lock next says whether it flows.
        self.pace.stopped();
        if let Err(e) = lock.release().await {
            tracing::debug!(error = %e, "cannot release the relay lock; it expires by itself");
        }
        result.map(|()| true)
    }

    async fn relay_while(
        &self,
        lock: &Lock,
        cancel: &CancellationToken,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let pool = self.engine.pool(&self.pool)?;
        let mut con = pool.connection().await?;
        // Pages are read on a connection of the relay's own (the source of most of its
        // replies' bytes), so they neither queue behind nor hold up the consumers' commits
        // on the shared one.
        let name = keys::read_ahead_client_name(&self.group, "relay");
        let reader = outbox::Reader::open(pool.connection_info(), &name, con.clone())
            .await
            .pool(&self.pool)?;
        let mut waiter = None;
        // Per standalone target pool, the relay's own connection for delivery transactions.
        let mut targets: HashMap<String, Reader> = HashMap::new();
        let mut stalled = Duration::ZERO;
        // The settled head of the outbox not yet deleted (below this ID): deleted with the
        // next read, in the same round trip.
        let mut trim: Option<EntryId> = None;
        // Outputs read and not delivered yet, oldest first, and the read in flight for the
        // ones after them: reads run ahead of delivery, across steps, so that a read
        // queued behind the consumers' commits on the outbox's server does not hold up the
        // next step.
        let mut buffer: VecDeque<Output> = VecDeque::new();
        let mut reading: Option<Read> = None;
        let result = loop {
            if cancel.is_cancelled()
                || lock.lost().is_cancelled()
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                break Ok(());
            }
            if buffer.is_empty() {
                let read = reading.take().unwrap_or_else(|| {
                    outbox::trim_and_read(&reader, &self.outbox, trim.take(), None, PAGE)
                });
                match read.await.pool(&self.pool) {
                    Ok(page) => buffer.extend(page),
                    Err(e) => break Err(e),
                }
            }
            if buffer.is_empty() {
                self.pace.caught_up();
                if deadline.is_some() {
                    break Ok(());
                }
                if waiter.is_none() {
                    match pool.dedicated(BLOCK + Duration::from_secs(5)).await {
                        Ok(con) => waiter = Some(con),
                        Err(e) => break Err(e),
                    }
                }
                let waiting = waiter.as_mut().expect("opened above");
                tokio::select! {
                    result = outbox::wait_for_entries(waiting, &self.outbox, BLOCK) => {
                        // A failed wait drops the connection: the next step opens another.
                        if let Err(e) = result.pool(&self.pool) {
                            break Err(e);
                        }
                    }
                    _ = cancel.cancelled() => break Ok(()),
                    _ = lock.lost().cancelled() => break Ok(()),
                }
                continue;
            }
            let page: Vec<Output> = buffer.drain(..buffer.len().min(PAGE)).collect();
            // While this page is delivered, read on (and delete the head settled before)
            // until a page is buffered; not while a target is down.
            let read_ahead = stalled.is_zero();
            let mut read_failed = None;
            let delivered = {
                let deliver = self.deliver(&page, &mut targets, stalled.is_zero());
                tokio::pin!(deliver);
                let mut more = true;
                loop {
                    if read_ahead && more && reading.is_none() && buffer.len() < PAGE {
                        let after = buffer.back().unwrap_or(&page[page.len() - 1]).id;
                        reading = Some(outbox::trim_and_read(
                            &reader,
                            &self.outbox,
                            trim.take(),
                            Some(after),
                            PAGE,
                        ));
                    }
                    tokio::select! {
                        delivered = &mut deliver => break delivered,
                        read = answer(&mut reading) => match read.pool(&self.pool) {
                            // Nothing more for now: the next step reads from the head.
                            Ok(read) => {
                                more = !read.is_empty();
                                buffer.extend(read);
                            }
                            Err(e) => {
                                more = false;
                                read_failed = Some(e);
                            }
                        },
                    }
                }
            };
            let settled = self.settle(&mut con, &page, delivered).await;
            let (moved, below, whole) = match settled {
                Ok(settled) => settled,
                Err(e) => break Err(e),
            };
            if whole {
                // The next read deletes this page.
                trim = below;
            } else {
                // Stopped early: what is behind the stop is read again from the head, so
                // delete the settled part now and drop what was read ahead.
                buffer.clear();
                reading = None;
                if let Some(below) = below.or(trim.take())
                    && let Err(e) = outbox::trim_below(&mut con, &self.outbox, below)
                        .await
                        .pool(&self.pool)
                {
                    break Err(e);
                }
                trim = None;
            }
            if let Some(e) = read_failed {
                break Err(e);
            }
            if moved == 0 {
                self.pace.stopped();
                // The head of the outbox cannot move now (a target is down): wait, longer
                // each time, up to 5 s.
                stalled = (stalled * 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
                tokio::select! {
                    _ = cancel.cancelled() => break Ok(()),
                    _ = lock.lost().cancelled() => break Ok(()),
                    _ = tokio::time::sleep(stalled) => {}
                }
            } else {
                self.pace.settled(moved as u64);
                if !stalled.is_zero() {
                    tracing::info!(group = %self.group, "relay targets reachable again; outputs flow");
                }
                stalled = Duration::ZERO;
            }
        };
        // What was settled last leaves the outbox now (else the next relay skips it by its
        // marks and deletes it then).
        if let Some(below) = trim
            && let Err(e) = outbox::trim_below(&mut con, &self.outbox, below).await
        {
            tracing::debug!(group = %self.group, error = %e, "cannot delete relayed outbox entries; the next step does");
        }
        result
    }

    /// Writes one page to its targets: per target domain (the domains in parallel), in
    /// outbox order; stops at the first output that cannot be written now. Touches only
    /// the targets.
    async fn deliver<'p>(
        &self,
        page: &'p [Output],
        targets: &mut HashMap<String, Reader>,
        first_failure: bool,
    ) -> Delivered<'p> {
        let mut delivered = Delivered {
            stop_at: page.len(),
            settled: Vec::new(),
            refused: Vec::new(),
            written: BTreeMap::new(),
            latencies: Vec::new(),
        };
        // Per target commit domain (a pool, or a slot of a cluster pool): one script each.
        let mut by_domain: BTreeMap<Domain, Vec<(usize, &Output)>> = BTreeMap::new();
        for (i, output) in page.iter().enumerate() {
            match &output.target {
                None => delivered
                    .refused
                    .push((i, "outbox entry names no target stream".into())),
                Some(target) => {
                    let domain = self.engine.registry().stream_domain(target, &self.domain);
                    by_domain.entry(domain).or_default().push((i, output));
                }
            }
        }
        let mark_field = format!("{}/{}", self.pool, self.outbox);
        let delivering = by_domain.iter().map(|(domain, outputs)| {
            let own = domain
                .slot
                .is_none()
                .then(|| targets.remove(&domain.pool))
                .flatten();
            let only: Vec<&Output> = outputs.iter().map(|(_, o)| *o).collect();
            let mark_field = &mark_field;
            async move { self.deliver_to(domain, mark_field, only, own).await }
        });
        let results = futures::future::join_all(delivering).await;
        let answered_ms = self.latencies.as_ref().map(|_| wall_clock_ms());
        let mut results_by_domain = Vec::with_capacity(results.len());
        for ((domain, _), (result, own)) in by_domain.iter().zip(results) {
            if let Some(own) = own {
                targets.insert(domain.pool.clone(), own);
            }
            results_by_domain.push(result);
        }
        for ((domain, outputs), result) in by_domain.iter().zip(results_by_domain) {
            let pool_name = &domain.pool;
            match result {
                Ok(results) => {
                    for ((i, output), result) in outputs.iter().zip(results) {
                        match result {
                            Delivery::Written => {
                                delivered.settled.push(*i);
                                if let Some(now) = answered_ms {
                                    delivered.latencies.push(Duration::from_millis(
                                        now.saturating_sub(output.id.ms),
                                    ));
                                }
                                let target = output.target.as_deref().unwrap_or_default();
                                *delivered.written.entry(target).or_default() += 1;
                            }
                            Delivery::Skipped => delivered.settled.push(*i),
                            Delivery::Refused(reason) => delivered.refused.push((*i, reason)),
                            Delivery::Later(reason) => {
                                tracing::warn!(group = %self.group, pool = %pool_name, %reason, "relay target cannot take outputs now");
                                delivered.stop_at = delivered.stop_at.min(*i);
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    if first_failure {
                        tracing::warn!(group = %self.group, pool = %pool_name, error = %e, "relay target unreachable; its outputs wait in the outbox (retrying with a backoff)");
                    } else {
                        tracing::debug!(group = %self.group, pool = %pool_name, error = %e, "relay target still unreachable");
                    }
                    delivered.stop_at = delivered.stop_at.min(outputs[0].0);
                }
            }
        }
        delivered
    }

    /// Writes `outputs` (all of `domain`) and says what happened to each. A standalone
    /// target is written in a transaction on the relay's own connection to it (`own`, opened
    /// when `None`: hand-parsed where it can be, else a dedicated redis-rs one; handed back
    /// unless it failed); a cluster slot, or outputs the transaction could not take, with
    /// the deliver script on the pool's shared connection.
    async fn deliver_to(
        &self,
        domain: &Domain,
        mark_field: &str,
        outputs: Vec<&Output>,
        own: Option<Reader>,
    ) -> (Result<Vec<Delivery>>, Option<Reader>) {
        let pool = match self.engine.pool(&domain.pool) {
            Ok(pool) => pool,
            Err(e) => return (Err(e), own),
        };
        let mut own_back = None;
        if domain.slot.is_none() && !pool.is_cluster() {
            let mut con = match own {
                Some(con) => con,
                None => {
                    let name = keys::read_ahead_client_name(&self.group, "relay-target");
                    match outbox::Reader::open_own(pool.connection_info(), &name).await {
                        Ok(Some(own)) => own,
                        Ok(None) => {
                            match pool.dedicated(crate::redis::pool::RESPONSE_TIMEOUT).await {
                                Ok(con) => Reader::Shared(con),
                                Err(e) => return (Err(e), None),
                            }
                        }
                        Err(e) => return (Err(e).pool(&domain.pool), None),
                    }
                }
            };
            let result = match &mut con {
                Reader::Own(own) => {
                    outbox::deliver_in_transaction_on(own, mark_field, &outputs).await
                }
                Reader::Shared(con) => {
                    outbox::deliver_in_transaction(con, mark_field, &outputs).await
                }
            };
            match result {
                Ok(Some(delivered)) => return (Ok(delivered), Some(con)),
                // The transaction did not run, or its answer does not say per output: the
                // script decides (after the marks) below.
                Ok(None) => own_back = Some(con),
                // The connection may be broken: the next step opens another.
                Err(e) => return (Err(e).pool(&domain.pool), None),
            }
        }
        let result = async {
            let mut con = pool.connection().await?;
            outbox::deliver(&mut con, mark_field, &outputs)
                .await
                .pool(&domain.pool)
        }
        .await;
        (result, own_back)
    }

    /// Settles a delivered page in the outbox: dead-letters the refused outputs (each
    /// leaves the outbox with its move, atomically) and tells who asked what was written.
    /// Returns how many entries were settled, the ID below which the outbox's head is
    /// settled (to delete), and whether that is the whole page.
    async fn settle<C: redis::aio::ConnectionLike + Send>(
        &self,
        source: &mut C,
        page: &[Output],
        mut delivered: Delivered<'_>,
    ) -> Result<(usize, Option<EntryId>, bool)> {
        let stop_at = delivered.stop_at;
        // Entries behind a failed one stay for the next step too, so that a later retry
        // cannot overtake them per target (their marks keep what was written from being
        // written again).
        delivered.settled.retain(|i| *i < stop_at);
        delivered.refused.retain(|(i, _)| *i < stop_at);
        delivered.refused.sort_by_key(|(i, _)| *i);
        let mut moved = delivered.settled.len();
        for (i, reason) in delivered.refused {
            let output = &page[i];
            tracing::warn!(group = %self.group, target = ?output.target, %reason, "relay target refused an output; dead-lettering it");
            let reason = format!("relay refused: {reason}");
            let target = output.target.clone().unwrap_or_default();
            let mut fields: Vec<(&[u8], &[u8])> = output
                .fields
                .iter()
                .filter(|(k, _)| !dead_letter_fields::ADDED.iter().any(|a| a.as_bytes() == *k))
                .collect();
            let id = output.id.to_string();
            fields.push((
                dead_letter_fields::ORIGIN_STREAM.as_bytes(),
                target.as_bytes(),
            ));
            fields.push((dead_letter_fields::ORIGIN_ID.as_bytes(), id.as_bytes()));
            fields.push((dead_letter_fields::GROUP.as_bytes(), self.group.as_bytes()));
            fields.push((dead_letter_fields::REASON.as_bytes(), reason.as_bytes()));
            commands::redrive_entry(source, &self.outbox, &self.dead_letter_stream, &id, &fields)
                .await
                .pool(&self.pool)?;
            moved += 1;
        }
        if let Some(report) = &self.delivered {
            for (target, n) in &delivered.written {
                report(target, *n);
            }
        }
        if let Some(report) = &self.latencies
            && !delivered.latencies.is_empty()
        {
            report(&delivered.latencies);
        }
        // Everything before `stop_at` is settled: that head of the outbox can go in one
        // command (entries behind a failed one stay, so order per target holds).
        let below = (stop_at > 0).then(|| {
            page.get(stop_at)
                .map_or_else(|| page[stop_at - 1].id.successor(), |o| o.id)
        });
        Ok((moved, below, stop_at == page.len()))
    }
}

/// What delivering a page did, by index in the page.
struct Delivered<'p> {
    /// The first output that could not be written now (the page's length when none).
    stop_at: usize,
    /// Written now or before.
    settled: Vec<usize>,
    /// Refused by their target, with the reason.
    refused: Vec<(usize, String)>,
    /// How many were written per target stream.
    written: BTreeMap<&'p str, u64>,
    /// Per output written, the time from its commit to its write.
    latencies: Vec<Duration>,
}

/// A read of the outbox in flight.
type Read = futures::future::BoxFuture<'static, redis::RedisResult<Vec<Output>>>;

/// The answer of the read in flight, which is then done; never, while none is.
async fn answer(reading: &mut Option<Read>) -> redis::RedisResult<Vec<Output>> {
    match reading {
        Some(read) => {
            let answer = read.await;
            *reading = None;
            answer
        }
        None => std::future::pending().await,
    }
}

/// Milliseconds since the Unix epoch by this host's clock.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
