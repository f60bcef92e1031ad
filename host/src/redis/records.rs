//! Beehive's own records in Redis: deployed components, and what each host runs.
//!
//! The key names come from [`crate::keys`]; this module only knows how each record is laid
//! out (a hash of `current` and `previous` digests, a string of bytes, a string with a TTL).

use std::time::Duration;

use redis::RedisResult;
use redis::aio::ConnectionLike;

use super::pool::Connection;
use crate::keys;
use crate::registry::GroupDef;

/// The hash field of the deployed digest.
const CURRENT: &str = "current";
/// The hash field of the digest deployed before it.
const PREVIOUS: &str = "previous";

/// The digest deployed for `group`, if any.
pub(crate) async fn deployed_digest<C: ConnectionLike>(
    con: &mut C,
    group: &GroupDef,
) -> RedisResult<Option<String>> {
    redis::cmd("HGET")
        .arg(keys::component_key_in(group.tag.as_deref(), &group.name))
        .arg(CURRENT)
        .query_async(con)
        .await
}

/// The digests deployed for `group`: (current, previous).
pub(crate) async fn deployed_versions<C: ConnectionLike>(
    con: &mut C,
    group: &GroupDef,
) -> RedisResult<(Option<String>, Option<String>)> {
    redis::cmd("HMGET")
        .arg(keys::component_key_in(group.tag.as_deref(), &group.name))
        .arg(CURRENT)
        .arg(PREVIOUS)
        .query_async(con)
        .await
}

/// The bytes of the component with this digest, if stored.
pub(crate) async fn component_bytes<C: ConnectionLike>(
    con: &mut C,
    group: &GroupDef,
    digest: &str,
) -> RedisResult<Option<Vec<u8>>> {
    redis::cmd("GET")
        .arg(keys::component_bytes_key_in(group.tag.as_deref(), digest))
        .query_async(con)
        .await
}

/// Atomically: stores `bytes` under `digest`, makes `digest` the current version of
/// `group` (the old `current` becomes `previous` when it differs), and announces it on
/// the deploy channel.
pub(crate) async fn store_deployment(
    con: &mut Connection,
    group: &GroupDef,
    digest: &str,
    bytes: &[u8],
    current: Option<&str>,
) -> RedisResult<()> {
    let key = keys::component_key_in(group.tag.as_deref(), &group.name);
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("SET")
        .arg(keys::component_bytes_key_in(group.tag.as_deref(), digest))
        .arg(bytes)
        .ignore();
    let hset = pipe.cmd("HSET").arg(&key).arg(CURRENT).arg(digest);
    if let Some(current) = current.filter(|c| *c != digest) {
        hset.arg(PREVIOUS).arg(current);
    }
    hset.ignore();
    exec_and_announce(con, pipe, group).await
}

/// Atomically: swaps `group`'s current and previous versions (or, with no previous,
/// withdraws the deployment) and announces it on the deploy channel.
pub(crate) async fn store_rollback(
    con: &mut Connection,
    group: &GroupDef,
    current: &str,
    previous: Option<&str>,
) -> RedisResult<()> {
    let key = keys::component_key_in(group.tag.as_deref(), &group.name);
    let mut pipe = redis::pipe();
    pipe.atomic();
    match previous {
        Some(previous) => {
            pipe.cmd("HSET")
                .arg(&key)
                .arg(CURRENT)
                .arg(previous)
                .arg(PREVIOUS)
                .arg(current)
                .ignore();
        }
        None => {
            pipe.cmd("DEL").arg(&key).ignore();
        }
    }
    exec_and_announce(con, pipe, group).await
}

/// Runs the records' transaction `pipe` and announces `group` on the deploy channel: in
/// the same transaction on one server; right after it on a cluster, where `PUBLISH` is
/// routed by its channel's slot and cannot join a transaction on the group's slot (hosts
/// that miss the announcement still find the new records at their next check).
async fn exec_and_announce(
    con: &mut Connection,
    mut pipe: redis::Pipeline,
    group: &GroupDef,
) -> RedisResult<()> {
    let mut publish = redis::cmd("PUBLISH");
    publish.arg(keys::DEPLOY_CHANNEL).arg(&group.name);
    if con.is_cluster() {
        super::transaction::exec::<()>(con, &pipe).await?;
        publish.query_async::<i64>(con).await.map(drop)
    } else {
        pipe.add_command(publish).ignore();
        super::transaction::exec(con, &pipe).await
    }
}

/// Records that `host` runs `digest` for `group`, for `ttl`.
pub(crate) async fn advertise_host<C: ConnectionLike>(
    con: &mut C,
    group: &GroupDef,
    host: &str,
    digest: &str,
    ttl: Duration,
) -> RedisResult<()> {
    redis::cmd("SET")
        .arg(keys::host_key_in(group.tag.as_deref(), &group.name, host))
        .arg(digest)
        .arg("PX")
        .arg(ttl.as_millis().max(1) as u64)
        .query_async(con)
        .await
}

/// Removes `host`'s record for `group`.
pub(crate) async fn withdraw_host<C: ConnectionLike>(
    con: &mut C,
    group: &GroupDef,
    host: &str,
) -> RedisResult<()> {
    redis::cmd("DEL")
        .arg(keys::host_key_in(group.tag.as_deref(), &group.name, host))
        .query_async(con)
        .await
}

/// Every host that advertises a digest for `group`: (host, digest), sorted.
pub(crate) async fn hosts_of(
    con: &mut super::pool::Connection,
    group: &GroupDef,
) -> RedisResult<Vec<(String, String)>> {
    let prefix = keys::host_key_prefix_in(group.tag.as_deref(), &group.name);
    Ok(super::commands::values_with_prefix(con, &prefix)
        .await?
        .into_iter()
        .map(|(key, digest)| (key[prefix.len()..].to_string(), digest))
        .collect())
}

/// Records a heartbeat of `host` for `group` (at the server's clock) and returns the hosts
/// whose last heartbeat is at most `ttl` old, sorted, this one included; heartbeats older
/// than ten times `ttl` are removed.
pub(crate) async fn heartbeat<C: ConnectionLike>(
    con: &mut C,
    group: &GroupDef,
    host: &str,
    ttl: Duration,
) -> RedisResult<Vec<String>> {
    let now = super::commands::server_time_ms(con).await?;
    let key = keys::fleet_in(group.tag.as_deref(), &group.name);
    let ttl_ms = ttl.as_millis() as u64;
    let (_, _, mut live): ((), (), Vec<String>) = redis::pipe()
        .cmd("ZADD")
        .arg(&key)
        .arg(now)
        .arg(host)
        .cmd("ZREMRANGEBYSCORE")
        .arg(&key)
        .arg("-inf")
        .arg(format!("({}", now.saturating_sub(10 * ttl_ms)))
        .cmd("ZRANGEBYSCORE")
        .arg(&key)
        .arg(now.saturating_sub(ttl_ms))
        .arg("+inf")
        .query_async(con)
        .await?;
    live.sort();
    Ok(live)
}

/// Removes `host`'s heartbeat for `group` (it stops running the group).
pub(crate) async fn leave_fleet<C: ConnectionLike>(
    con: &mut C,
    group: &GroupDef,
    host: &str,
) -> RedisResult<()> {
    redis::cmd("ZREM")
        .arg(keys::fleet_in(group.tag.as_deref(), &group.name))
        .arg(host)
        .query_async(con)
        .await
}

/// The hosts that ever sent a heartbeat for `group` (and were not pruned), with the age of
/// their last one: (host, age), sorted by host.
pub(crate) async fn fleet_of<C: ConnectionLike>(
    con: &mut C,
    group: &GroupDef,
) -> RedisResult<Vec<(String, Duration)>> {
    let now = super::commands::server_time_ms(con).await?;
    let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys::fleet_in(group.tag.as_deref(), &group.name))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(con)
        .await?;
    let mut out: Vec<(String, Duration)> = members
        .into_iter()
        .map(|(host, at)| (host, Duration::from_millis(now.saturating_sub(at as u64))))
        .collect();
    out.sort();
    Ok(out)
}

/// The values of the given lock keys (`None` where a key is not set).
pub(crate) async fn lock_values<C: ConnectionLike>(
    con: &mut C,
    locks: &[String],
) -> RedisResult<Vec<Option<String>>> {
    if locks.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("MGET").arg(locks).query_async(con).await
}
