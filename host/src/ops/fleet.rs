//! A fleet of hosts sharing a group fairly (DESIGN.md, "A fleet of hosts").
//!
//! `instances: N` counts the group's consumers across every host that runs it. Each host
//! beats a heartbeat into `beehive:fleet:<group>` (server clock) every [`TICK`], reads the
//! live hosts (a beat within `lock-ttl`), and runs its fair share: consumer `k` belongs to
//! the `(k - 1) mod H`-th live host in name order, so no host runs more than ⌈N/H⌉ once the
//! hosts agree. A consumer that belongs elsewhere now is stopped at a batch boundary (it
//! finishes its batch, commits, releases its lock) and its new host takes the lock as soon
//! as it is free; a host that dies stops beating and its consumers are taken over once
//! their locks expire. Every commit carries the lock's token, so a host that lost a
//! consumer (paused, partitioned) commits nothing for it.
//!
//! The first live host also retires consumers above `N` (after `instances` shrinks): it
//! takes the consumer's lock (so nobody runs it), claims its pending entries to the
//! remaining consumers and deletes it from the group once it holds nothing pending.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::{PoolContext, Result};
use crate::keys;
use crate::redis::lock::Lock;
use crate::redis::{commands, records};
use crate::registry::GroupDef;

/// How often a host beats and rebalances.
pub const TICK: Duration = Duration::from_millis(500);

/// The consumers (`1..=instances`) that `me` runs when `live` hosts run the group: the
/// `k`-th consumer goes to host `(k - 1) mod H` in name order. `me` counts even when its
/// own heartbeat is not visible yet.
pub fn fair_share(instances: u32, live: &[String], me: &str) -> Vec<u32> {
    let mut hosts: Vec<&str> = live.iter().map(String::as_str).collect();
    if !hosts.contains(&me) {
        hosts.push(me);
    }
    hosts.sort_unstable();
    hosts.dedup();
    let index = hosts.iter().position(|h| *h == me).unwrap_or(0) as u32;
    let count = hosts.len() as u32;
    (1..=instances)
        .filter(|k| (k - 1) % count == index)
        .collect()
}

/// The consumer that takes over the pending entries of a retired consumer `nr`.
pub fn heir(nr: u32, instances: u32) -> u32 {
    (nr - 1) % instances.max(1) + 1
}

/// What one group's coordinator needs.
pub struct FleetGroup {
    /// The engine.
    pub engine: Engine,
    /// The group.
    pub group: String,
    /// Consumers across the fleet.
    pub instances: u32,
    /// Lock TTL of the group's consumers; also how long a heartbeat counts.
    pub lock_ttl: Duration,
    /// Where deleted-while-pending entries of retired consumers go.
    pub dead_letter_stream: String,
    /// This host.
    pub host: String,
}

/// Runs this host's share of `fleet.group` until `stop` fires: `spawn(nr, stop)` starts
/// consumer `nr` (it must return when its token is cancelled). Then stops every consumer,
/// waits for them, and leaves the fleet.
pub async fn coordinate<F>(fleet: FleetGroup, mut spawn: F, stop: CancellationToken)
where
    F: FnMut(u32, CancellationToken) -> JoinHandle<()>,
{
    let mut running: BTreeMap<u32, (CancellationToken, JoinHandle<()>)> = BTreeMap::new();
    let mut stopping: Vec<JoinHandle<()>> = Vec::new();
    let mut shown: Option<Vec<u32>> = None;
    loop {
        running.retain(|_, (_, task)| !task.is_finished());
        stopping.retain(|task| !task.is_finished());
        match beat(&fleet).await {
            Ok(live) => {
                let mine = fair_share(fleet.instances, &live, &fleet.host);
                if shown.as_ref() != Some(&mine) {
                    tracing::info!(group = %fleet.group, hosts = live.len(), consumers = ?mine, "fleet share");
                    shown = Some(mine.clone());
                }
                let leaving: Vec<u32> = running
                    .keys()
                    .filter(|nr| !mine.contains(nr))
                    .copied()
                    .collect();
                for nr in leaving {
                    if let Some((token, task)) = running.remove(&nr) {
                        tracing::info!(group = %fleet.group, consumer = nr, "handing consumer over to another host");
                        token.cancel();
                        stopping.push(task);
                    }
                }
                for nr in mine {
                    running.entry(nr).or_insert_with(|| {
                        let token = stop.child_token();
                        let task = spawn(nr, token.clone());
                        (token, task)
                    });
                }
                if live.first().is_some_and(|first| *first == fleet.host)
                    && let Err(e) = retire_extra(&fleet).await
                {
                    tracing::warn!(group = %fleet.group, error = %e, "cannot retire consumers above instances yet");
                }
            }
            Err(e) => {
                tracing::warn!(group = %fleet.group, error = %e, "fleet heartbeat failed; running consumers keep their locks")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    for (_, (token, task)) in running {
        token.cancel();
        stopping.push(task);
    }
    for task in stopping {
        let _ = task.await;
    }
    if let Ok(def) = group_of(&fleet)
        && let Ok(pool) = fleet.engine.pool(&def.pool)
        && let Ok(mut con) = pool.connection().await
    {
        let _ = records::leave_fleet(&mut con, &def, &fleet.host).await;
    }
}

fn group_of(fleet: &FleetGroup) -> Result<GroupDef> {
    fleet
        .engine
        .registry()
        .group(&fleet.group)
        .cloned()
        .ok_or_else(|| crate::error::Error::UnregisteredGroup(fleet.group.clone()))
}

/// Beats this host's heartbeat; the live hosts.
async fn beat(fleet: &FleetGroup) -> Result<Vec<String>> {
    let def = group_of(fleet)?;
    let pool = fleet.engine.pool(&def.pool)?;
    let mut con = pool.connection().await?;
    records::heartbeat(&mut con, &def, &fleet.host, fleet.lock_ttl)
        .await
        .pool(&pool.name)
}

/// Retires the group's consumers numbered above `instances`: moves their pending entries to
/// their heirs and deletes them from the group once they hold nothing pending. A consumer
/// whose lock is held (it still runs somewhere) is left for a later tick.
async fn retire_extra(fleet: &FleetGroup) -> Result<()> {
    let Some(def) = fleet.engine.registry().group(&fleet.group).cloned() else {
        return Ok(());
    };
    let pool = fleet.engine.pool(&def.pool)?;
    let mut con = pool.connection().await?;
    let mut extra: Vec<u32> = Vec::new();
    for stream in &def.streams {
        let consumers = match commands::consumers_info(&mut con, stream, &def.name).await {
            Ok(consumers) => consumers,
            Err(e) if commands::is_no_group(&e) => continue,
            Err(e) => return Err(e).pool(&pool.name),
        };
        for consumer in consumers {
            if let Some(nr) = keys::consumer_number(&consumer.name)
                && nr > fleet.instances
                && !extra.contains(&nr)
            {
                extra.push(nr);
            }
        }
    }
    if extra.is_empty() {
        return Ok(());
    }
    let mut consumer = fleet.engine.event_broker().consumer(&def.name)?;
    consumer.options_mut().dead_letter_stream = fleet.dead_letter_stream.clone();
    consumer.options_mut().owner = fleet.host.clone();
    for nr in extra {
        let key = def.lock_key(nr);
        let Some(lock) =
            Lock::acquire_as(con.clone(), &pool.name, &key, fleet.lock_ttl, &fleet.host).await?
        else {
            continue;
        };
        let result = retire(&consumer, fleet, &def, &mut con, nr).await;
        if let Err(e) = lock.release().await {
            tracing::debug!(error = %e, "cannot release a retired consumer's lock; it expires");
        }
        result?;
    }
    Ok(())
}

async fn retire(
    consumer: &crate::consumer::Consumer,
    fleet: &FleetGroup,
    def: &crate::registry::GroupDef,
    con: &mut crate::redis::pool::Connection,
    nr: u32,
) -> Result<()> {
    let heir = heir(nr, fleet.instances);
    let moved = consumer.claim(nr, heir).await?;
    let name = keys::consumer_name(nr);
    let mut pending = 0;
    for stream in &def.streams {
        pending += commands::consumers_info(con, stream, &def.name)
            .await
            .pool(&def.pool)?
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.pending)
            .sum::<u64>();
    }
    if pending > 0 {
        // Entries arrived meanwhile (cannot happen while we hold its lock, unless it was
        // claimed to): next tick.
        return Ok(());
    }
    for stream in &def.streams {
        commands::delete_consumer(con, stream, &def.name, &name)
            .await
            .pool(&def.pool)?;
    }
    tracing::info!(group = %def.name, consumer = %name, heir, moved, "retired a consumer above instances");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn a_lone_host_runs_everything() {
        assert_eq!(fair_share(4, &[], "a"), [1, 2, 3, 4]);
        assert_eq!(fair_share(4, &hosts(&["a"]), "a"), [1, 2, 3, 4]);
    }

    #[test]
    fn shares_cover_every_consumer_once_and_differ_by_at_most_one() {
        for n in 1..=12u32 {
            for h in 1..=5usize {
                let live: Vec<String> = (0..h).map(|i| format!("host-{i}")).collect();
                let mut all: Vec<u32> = Vec::new();
                let mut sizes = Vec::new();
                for me in &live {
                    let mine = fair_share(n, &live, me);
                    sizes.push(mine.len());
                    all.extend(mine);
                }
                all.sort_unstable();
                assert_eq!(all, (1..=n).collect::<Vec<_>>(), "n={n} h={h}");
                let ceil = (n as usize).div_ceil(h);
                assert!(sizes.iter().all(|s| *s <= ceil), "n={n} h={h} {sizes:?}");
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn a_host_not_seen_yet_counts_itself() {
        let live = hosts(&["b", "c"]);
        assert_eq!(fair_share(6, &live, "a"), [1, 4]);
        assert_eq!(fair_share(6, &hosts(&["a", "b", "c"]), "a"), [1, 4]);
    }

    #[test]
    fn retired_consumers_go_to_the_remaining_ones() {
        assert_eq!(heir(4, 3), 1);
        assert_eq!(heir(5, 3), 2);
        assert_eq!(heir(6, 3), 3);
        assert_eq!(heir(7, 3), 1);
    }
}
