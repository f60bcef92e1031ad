//! Garbage collection: delete an entry once **every** consumer group has acknowledged it.
//!
//! Per stream, the safe cut is the minimum over groups of the oldest pending ID or, when a
//! group has nothing pending, the successor of its last-delivered ID. Every group counts:
//! the ones `XINFO GROUPS` reports (registered or not) and the registered ones not created
//! yet (they have read nothing, so nothing may go). `XTRIM MINID` deletes below the cut in
//! chunks, so a large backlog never blocks Redis for long. One host per pool runs a pass at
//! a time, guarded by the lock `beehive:gc-lock`.

use std::time::Duration;

use crate::redis::pool::Connection;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::{PoolContext, Result};
use crate::event::EntryId;
use crate::keys;
use crate::redis::commands;
use crate::redis::lock::Lock;
use crate::registry::StreamDef;

/// At most this many entries are deleted by one XTRIM.
const CHUNK: usize = 10_000;
/// TTL of the GC lock, refreshed every third of it during a pass: a host killed mid-pass
/// holds up garbage collection on its pool for at most this long.
const GC_LOCK_TTL: Duration = Duration::from_secs(10);

/// What one GC pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// One line per registered stream.
    pub streams: Vec<GcStream>,
}

/// What GC did to one stream.
#[derive(Debug, Clone, Serialize)]
pub struct GcStream {
    /// The stream.
    pub stream: String,
    /// The pool it lives in.
    pub pool: String,
    /// Entries deleted.
    pub deleted: u64,
    /// Why nothing could be deleted, when that is so for a reason worth telling.
    pub kept_because: Option<String>,
}

impl GcReport {
    /// Total entries deleted.
    pub fn deleted(&self) -> u64 {
        self.streams.iter().map(|s| s.deleted).sum()
    }
}

pub(crate) async fn run_pass(engine: &Engine) -> Result<GcReport> {
    let mut report = GcReport::default();
    for pool_def in engine.registry().pools() {
        let pool = engine.pool(&pool_def.name)?;
        let mut con = pool.connection().await?;
        let streams: Vec<&StreamDef> = engine
            .registry()
            .streams()
            .filter(|s| s.pool == pool_def.name)
            .collect();
        if streams.is_empty() {
            continue;
        }
        if pool.is_cluster() {
            // A cluster has no pool-wide transaction: one lock per stream, in its slot.
            for stream in streams {
                let key = keys::gc_lock_of_stream(&stream.name);
                let Some(lock) = Lock::acquire(con.clone(), &pool.name, &key, GC_LOCK_TTL).await?
                else {
                    report.streams.push(GcStream {
                        stream: stream.name.clone(),
                        pool: pool.name.clone(),
                        deleted: 0,
                        kept_because: Some(
                            "another host runs garbage collection on this stream".into(),
                        ),
                    });
                    continue;
                };
                let result = collect_stream(&mut con, stream).await.pool(&pool.name);
                if let Err(e) = lock.release().await {
                    tracing::warn!(error = %e, "cannot release GC lock; it expires by itself");
                }
                report.streams.push(result?);
            }
            continue;
        }
        let Some(lock) = Lock::acquire(con.clone(), &pool.name, keys::GC_LOCK, GC_LOCK_TTL).await?
        else {
            for stream in streams {
                report.streams.push(GcStream {
                    stream: stream.name.clone(),
                    pool: pool.name.clone(),
                    deleted: 0,
                    kept_because: Some("another host runs garbage collection on this pool".into()),
                });
            }
            continue;
        };
        let mut result = Ok(());
        for stream in streams {
            match collect_stream(&mut con, stream).await.pool(&pool.name) {
                Ok(line) => report.streams.push(line),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "cannot release GC lock; it expires by itself");
        }
        result?;
    }
    Ok(report)
}

async fn collect_stream(con: &mut Connection, stream: &StreamDef) -> redis::RedisResult<GcStream> {
    let mut line = GcStream {
        stream: stream.name.clone(),
        pool: stream.pool.clone(),
        deleted: 0,
        kept_because: None,
    };
    let groups = commands::groups_info(con, &stream.name).await?;
    if groups.is_empty() {
        line.kept_because = Some("no consumer group has been created yet".into());
        return Ok(line);
    }
    if let Some(missing) = stream
        .groups
        .iter()
        .find(|g| !groups.iter().any(|info| &info.name == *g))
    {
        line.kept_because = Some(format!("registered group {missing} has not started yet"));
        return Ok(line);
    }
    let mut cut: Option<EntryId> = None;
    for group in &groups {
        let group_cut = if group.pending > 0 {
            match commands::oldest_pending(con, &stream.name, &group.name).await? {
                Some(oldest) => oldest,
                None => group.last_delivered.successor(),
            }
        } else {
            group.last_delivered.successor()
        };
        cut = Some(cut.map_or(group_cut, |c| c.min(group_cut)));
    }
    let Some(cut) = cut else { return Ok(line) };
    loop {
        let step = match commands::nth_entry_id(con, &stream.name, CHUNK + 1).await? {
            Some(id) if id < cut => id,
            _ => cut,
        };
        let deleted: u64 = commands::xtrim_minid(&stream.name, step)
            .query_async(con)
            .await?;
        line.deleted += deleted;
        if step == cut || deleted == 0 {
            break;
        }
    }
    Ok(line)
}

impl Engine {
    /// One garbage-collection pass over every registered stream: deletes the entries that
    /// every consumer group has acknowledged (see [`gc`](crate::broker::gc)). Pools whose GC lock is
    /// held by another host are skipped.
    pub async fn gc(&self) -> Result<GcReport> {
        run_pass(self).await
    }

    /// Runs [`gc`](Self::gc) every `interval` until `cancel` fires; failures are logged and
    /// retried at the next interval.
    pub async fn run_gc(&self, cancel: CancellationToken, interval: Duration) {
        loop {
            match self.gc().await {
                Ok(report) if report.deleted() > 0 => {
                    tracing::info!(deleted = report.deleted(), "garbage collection")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
