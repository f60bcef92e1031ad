//! The Redis command layer: every stream, group and lock command Beehive sends is built and
//! parsed here, so the rest of the crate speaks in domain terms (publish, read a batch, ack,
//! claim, trim).
//!
//! Replies are parsed from raw [`redis::Value`]s without building a map per entry.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisResult, Value};

use crate::event::{EntryId, Event, NewEvent};

/// `XADD <stream> * [s <body>] [k v ...]`.
pub(crate) fn xadd(event: &NewEvent) -> Cmd {
    // Sized up front: one allocation each for the arguments and their bytes.
    let (mut args, mut bytes) = (3, 4 + event.stream.len() + 1);
    for (k, v) in event.fields() {
        args += 2;
        bytes += k.len() + v.len();
    }
    let mut cmd = Cmd::with_capacity(args, bytes);
    cmd.arg("XADD").arg(&event.stream).arg("*");
    for (k, v) in event.fields() {
        cmd.arg(k).arg(v);
    }
    cmd
}

/// `XGROUP CREATE <stream> <group> 0 MKSTREAM`; an existing group is fine.
pub(crate) async fn create_group<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
    group: &str,
) -> RedisResult<()> {
    let result: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(con)
        .await;
    match result {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// True when the error says the stream or the group does not exist (FLUSHALL, restart
/// without persistence, stream deleted).
pub(crate) fn is_no_group(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// An entry as returned by XREADGROUP/XAUTOCLAIM: `None` fields mean the entry was deleted
/// while pending.
pub(crate) struct RawEntry {
    pub(crate) id: EntryId,
    /// The fields as sent, flat (`f1, v1, f2, v2, ...`), each checked to be a string;
    /// `None` for an entry deleted while pending.
    pub(crate) fields: Option<Vec<Value>>,
}

impl RawEntry {
    /// Turns the entry into an event; a deleted entry becomes an event with no body and no
    /// metadata (the consumer dead-letters those).
    pub(crate) fn into_event(self, stream: &Arc<str>) -> Event {
        let flat = self.fields.unwrap_or_default();
        let pairs = flat.len() / 2;
        // Every field was checked by `parse_entries`: `bytes` cannot fail here.
        let mut values = flat.into_iter().map(|v| bytes(v).unwrap_or_default());
        let fields = std::iter::from_fn(move || Some((values.next()?, values.next()?)));
        Event::from_fields(stream.clone(), self.id, fields, pairs)
    }
}

/// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS s1 s2 ... id1 id2 ...`.
pub(crate) fn xreadgroup(
    group: &str,
    consumer: &str,
    count: usize,
    block: Option<Duration>,
    streams: &[(&str, String)],
) -> Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count);
    if let Some(block) = block {
        cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
    }
    cmd.arg("STREAMS");
    for (stream, _) in streams {
        cmd.arg(*stream);
    }
    for (_, id) in streams {
        cmd.arg(id.as_str());
    }
    cmd
}

/// Parses an XREAD/XREADGROUP reply (RESP2 arrays or RESP3 maps) into `(stream, entries)`.
pub(crate) fn parse_read_reply(value: Value) -> RedisResult<Vec<(String, Vec<RawEntry>)>> {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop().unwrap_or(Value::Nil);
                    let name = kv.pop().unwrap_or(Value::Nil);
                    Ok((name, entries))
                }
                other => Err(invalid("stream reply", &other)),
            })
            .collect::<RedisResult<_>>()?,
        other => return Err(invalid("stream reply", &other)),
    };
    pairs
        .into_iter()
        .map(|(name, entries)| Ok((string(name)?, parse_entries(entries)?)))
        .collect()
}

/// Parses a list of `[id, [f1, v1, ...] | nil]` entries.
pub(crate) fn parse_entries(value: Value) -> RedisResult<Vec<RawEntry>> {
    let items = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => return Err(invalid("entry list", &other)),
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut parts) = item else {
            return Err(invalid("entry", &item));
        };
        if parts.len() != 2 {
            return Err(invalid("entry", &Value::Array(parts)));
        }
        let fields = parts.pop().unwrap_or(Value::Nil);
        let id = parse_id(parts.pop().unwrap_or(Value::Nil))?;
        let fields = match fields {
            Value::Nil => None,
            Value::Array(mut flat) => {
                if let Some(bad) = flat.iter().find(|v| !is_string(v)) {
                    return Err(invalid("string", bad));
                }
                // An odd trailing field has no value: it is not part of the entry.
                flat.truncate(flat.len() / 2 * 2);
                Some(flat)
            }
            Value::Map(map) => {
                let flat: Vec<Value> = map.into_iter().flat_map(|(k, v)| [k, v]).collect();
                if let Some(bad) = flat.iter().find(|v| !is_string(v)) {
                    return Err(invalid("string", bad));
                }
                Some(flat)
            }
            other => return Err(invalid("entry fields", &other)),
        };
        entries.push(RawEntry { id, fields });
    }
    Ok(entries)
}

/// One entry of `XPENDING <stream> <group> <start> <end> <count> [consumer]`.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub(crate) id: EntryId,
    pub(crate) deliveries: u32,
}

/// The extended form of XPENDING: up to `count` pending entries from `start` to `end`
/// (inclusive), optionally of one consumer.
pub(crate) async fn pending_range<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
    group: &str,
    start: &str,
    end: &str,
    count: usize,
    consumer: Option<&str>,
) -> RedisResult<Vec<PendingEntry>> {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream).arg(group).arg(start).arg(end).arg(count);
    if let Some(consumer) = consumer {
        cmd.arg(consumer);
    }
    let value: Value = cmd.query_async(con).await?;
    let Value::Array(items) = value else {
        return Ok(Vec::new());
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(parts) = item else {
                return Err(invalid("pending entry", &item));
            };
            let mut parts = parts.into_iter();
            let (Some(id), Some(_consumer), Some(_idle), Some(deliveries)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "short XPENDING entry",
                )));
            };
            Ok(PendingEntry {
                id: parse_id(id)?,
                deliveries: int(deliveries)?.clamp(0, u32::MAX as i64) as u32,
            })
        })
        .collect()
}

/// `XCLAIM <stream> <group> <consumer> 0 <ids...> JUSTID`: moves ownership without counting
/// a delivery.
pub(crate) fn xclaim_justid(stream: &str, group: &str, consumer: &str, ids: &[EntryId]) -> Cmd {
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(stream).arg(group).arg(consumer).arg(0);
    for id in ids {
        cmd.arg(id.to_string());
    }
    cmd.arg("JUSTID");
    cmd
}

/// What one `XAUTOCLAIM` call did.
pub(crate) struct AutoClaimed {
    /// Where the next call starts (`0-0`: the scan is complete).
    pub(crate) cursor: String,
    /// The entries claimed, with their data.
    pub(crate) entries: Vec<RawEntry>,
    /// Pending entries that no longer exist in the stream (deleted or trimmed while
    /// pending): Redis removed them from the pending list, so nobody will see them again.
    pub(crate) deleted: Vec<EntryId>,
}

/// `XAUTOCLAIM <stream> <group> <consumer> <min-idle> <start> COUNT n`.
pub(crate) async fn autoclaim<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    start: &str,
    count: usize,
) -> RedisResult<AutoClaimed> {
    let value: Value = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(min_idle.as_millis() as u64)
        .arg(start)
        .arg("COUNT")
        .arg(count)
        .query_async(con)
        .await?;
    let Value::Array(parts) = value else {
        return Err(invalid("XAUTOCLAIM reply", &value));
    };
    let mut parts = parts.into_iter();
    let cursor = string(parts.next().unwrap_or(Value::Nil))?;
    let entries = parse_entries(parts.next().unwrap_or(Value::Nil))?;
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.into_iter().map(parse_id).collect::<RedisResult<_>>()?,
        _ => Vec::new(),
    };
    Ok(AutoClaimed {
        cursor,
        entries,
        deleted,
    })
}

/// Those of `ids` that no longer exist in `stream` (one `XRANGE id id` each, pipelined).
pub(crate) async fn missing_entries<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
    ids: &[EntryId],
) -> RedisResult<Vec<EntryId>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        let id = id.to_string();
        pipe.cmd("XRANGE").arg(stream).arg(&id).arg(&id);
    }
    let found: Vec<Value> = pipe.query_async(con).await?;
    Ok(ids
        .iter()
        .zip(found)
        .filter(|(_, v)| {
            matches!(v, Value::Array(items) if items.is_empty()) || matches!(v, Value::Nil)
        })
        .map(|(id, _)| *id)
        .collect())
}

/// What XINFO GROUPS says about one group.
#[derive(Debug, Clone)]
pub(crate) struct GroupInfo {
    pub(crate) name: String,
    pub(crate) pending: u64,
    pub(crate) last_delivered: EntryId,
    pub(crate) lag: Option<u64>,
}

/// `XINFO GROUPS <stream>`; an empty list when the stream does not exist.
pub(crate) async fn groups_info<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
) -> RedisResult<Vec<GroupInfo>> {
    let value: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await
    {
        Ok(value) => value,
        Err(e) if is_no_such_key(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let Value::Array(groups) = value else {
        return Ok(Vec::new());
    };
    groups
        .into_iter()
        .map(|group| {
            let mut info = GroupInfo {
                name: String::new(),
                pending: 0,
                last_delivered: EntryId::ZERO,
                lag: None,
            };
            for (key, value) in key_values(group)? {
                match key.as_str() {
                    "name" => info.name = string(value)?,
                    "pending" => info.pending = int(value)?.max(0) as u64,
                    "last-delivered-id" => info.last_delivered = parse_id(value)?,
                    "lag" => info.lag = int(value).ok().map(|l| l.max(0) as u64),
                    _ => {}
                }
            }
            Ok(info)
        })
        .collect()
}

/// What XINFO CONSUMERS says about one consumer.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerInfo {
    pub(crate) name: String,
    pub(crate) pending: u64,
    pub(crate) idle: Duration,
}

/// `XINFO CONSUMERS <stream> <group>`.
pub(crate) async fn consumers_info<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
    group: &str,
) -> RedisResult<Vec<ConsumerInfo>> {
    let value: Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    let Value::Array(consumers) = value else {
        return Ok(Vec::new());
    };
    consumers
        .into_iter()
        .map(|consumer| {
            let mut info = ConsumerInfo {
                name: String::new(),
                pending: 0,
                idle: Duration::ZERO,
            };
            for (key, value) in key_values(consumer)? {
                match key.as_str() {
                    "name" => info.name = string(value)?,
                    "pending" => info.pending = int(value)?.max(0) as u64,
                    "idle" => info.idle = Duration::from_millis(int(value)?.max(0) as u64),
                    _ => {}
                }
            }
            Ok(info)
        })
        .collect()
}

/// The oldest pending entry of a group (`XPENDING <stream> <group>` summary), if any.
pub(crate) async fn oldest_pending<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
    group: &str,
) -> RedisResult<Option<EntryId>> {
    let value: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    let Value::Array(parts) = value else {
        return Ok(None);
    };
    match parts.into_iter().nth(1) {
        Some(Value::Nil) | None => Ok(None),
        Some(id) => parse_id(id).map(Some),
    }
}

/// The ID of the `n`-th entry (1-based) of a stream, if the stream has that many.
pub(crate) async fn nth_entry_id<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
    n: usize,
) -> RedisResult<Option<EntryId>> {
    let value: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(n)
        .query_async(con)
        .await?;
    let entries = parse_entries(value)?;
    Ok(if entries.len() == n {
        entries.last().map(|e| e.id)
    } else {
        None
    })
}

/// `XRANGE <stream> <start> + COUNT <count>`: entries without joining a group.
pub(crate) async fn range<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
    start: &str,
    count: usize,
) -> RedisResult<Vec<RawEntry>> {
    let value: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(con)
        .await?;
    parse_entries(value)
}

/// `XREAD COUNT n BLOCK ms STREAMS <stream> <after>`: entries after `after`, no group.
pub(crate) fn xread(stream: &str, after: &str, count: usize, block: Duration) -> Cmd {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(stream)
        .arg(after);
    cmd
}

/// The newest entry's ID (`XREVRANGE <stream> + - COUNT 1`), `0-0` for an empty stream.
pub(crate) async fn last_id<C: ConnectionLike>(con: &mut C, stream: &str) -> RedisResult<EntryId> {
    let value: Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(con)
        .await?;
    Ok(parse_entries(value)?
        .first()
        .map_or(EntryId::ZERO, |e| e.id))
}

/// Every key starting with `prefix` (`SCAN ... MATCH <escaped prefix>*`) with its string
/// value.
/// True when a cluster client met a server that is not in cluster mode.
pub(crate) fn is_cluster_disabled(e: &redis::RedisError) -> bool {
    e.to_string().contains("cluster support disabled")
}

/// `cluster_state` from `CLUSTER INFO` (`ok` or `fail`).
pub(crate) async fn cluster_state<C: ConnectionLike>(con: &mut C) -> RedisResult<String> {
    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(con).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("cluster_state:"))
        .unwrap_or("unknown")
        .trim()
        .to_string())
}

pub(crate) async fn values_with_prefix(
    con: &mut super::pool::Connection,
    prefix: &str,
) -> RedisResult<Vec<(String, String)>> {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000);
        // On a cluster, the node of the prefix's slot (the prefix carries a hash tag).
        let (next, page): (u64, Vec<String>) =
            redis::from_redis_value(con.query_at(&scan, prefix).await?)?;
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(con).await?;
    let mut out: Vec<(String, String)> = keys
        .into_iter()
        .zip(values)
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    out.sort();
    Ok(out)
}

/// `XTRIM <stream> MINID <id>`: deletes entries with an ID below `id`; returns how many.
pub(crate) fn xtrim_minid(stream: &str, min_id: EntryId) -> Cmd {
    let mut cmd = redis::cmd("XTRIM");
    cmd.arg(stream).arg("MINID").arg(min_id.to_string());
    cmd
}

/// `PING`: whether the server answers.
pub(crate) async fn ping<C: ConnectionLike>(con: &mut C) -> RedisResult<()> {
    let _: Value = redis::cmd("PING").query_async(con).await?;
    Ok(())
}

/// The server's clock in milliseconds (`TIME`).
pub(crate) async fn server_time_ms<C: ConnectionLike>(con: &mut C) -> RedisResult<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await?;
    Ok(secs * 1000 + micros / 1000)
}

fn is_no_such_key(e: &redis::RedisError) -> bool {
    e.to_string().contains("no such key")
}

fn key_values(value: Value) -> RedisResult<Vec<(String, Value)>> {
    match value {
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Ok((string(k)?, v)))
            .collect(),
        Value::Array(flat) => {
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut iter = flat.into_iter();
            while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                out.push((string(k)?, v));
            }
            Ok(out)
        }
        other => Err(invalid("key/value reply", &other)),
    }
}

pub(crate) fn parse_id(value: Value) -> RedisResult<EntryId> {
    let text = string(value)?;
    text.parse().map_err(|e: String| {
        redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "bad entry ID", e))
    })
}

/// Whether [`bytes`] accepts `value`.
fn is_string(value: &Value) -> bool {
    matches!(
        value,
        Value::BulkString(_)
            | Value::SimpleString(_)
            | Value::VerbatimString { .. }
            | Value::Int(_)
            | Value::Okay
    )
}

pub(crate) fn bytes(value: Value) -> RedisResult<Vec<u8>> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        Value::Okay => Ok(b"OK".to_vec()),
        other => Err(invalid("string", &other)),
    }
}

pub(crate) fn string(value: Value) -> RedisResult<String> {
    String::from_utf8(bytes(value)?).map_err(|_| {
        redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "non-UTF-8 string"))
    })
}

fn int(value: Value) -> RedisResult<i64> {
    match value {
        Value::Int(i) => Ok(i),
        Value::BulkString(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not an integer"))
            }),
        other => Err(invalid("integer", &other)),
    }
}

fn invalid(what: &'static str, value: &Value) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        format!("{what}: {value:?}"),
    ))
}

/// `XLEN <stream>` (0 for a stream that does not exist).
pub(crate) async fn stream_length<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
) -> RedisResult<u64> {
    redis::cmd("XLEN").arg(stream).query_async(con).await
}

/// `SET <key> <value> NX PX <ttl>`: true when the key was set (it did not exist).
pub(crate) async fn set_if_absent<C: ConnectionLike>(
    con: &mut C,
    key: &str,
    value: &str,
    ttl: Duration,
) -> RedisResult<bool> {
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis().max(1) as u64)
        .query_async(con)
        .await?;
    Ok(set.is_some())
}

/// This connection's server-side client ID (`CLIENT ID`).
pub(crate) async fn client_id<C: ConnectionLike>(con: &mut C) -> RedisResult<i64> {
    redis::cmd("CLIENT").arg("ID").query_async(con).await
}

/// Unblocks the client `id` blocked in a read (`CLIENT UNBLOCK`); true when it was blocked.
pub(crate) async fn client_unblock<C: ConnectionLike>(con: &mut C, id: i64) -> RedisResult<bool> {
    let unblocked: i64 = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(id)
        .query_async(con)
        .await?;
    Ok(unblocked == 1)
}

/// Republishes a dead-lettered entry to `target` with `fields` and deletes it (`id`) from
/// `dead_letter_stream`, atomically. `None` when the entry was already gone (redriven by a
/// concurrent run): nothing is written then.
pub(crate) async fn redrive_entry<C: ConnectionLike>(
    con: &mut C,
    dead_letter_stream: &str,
    target: &str,
    id: &str,
    fields: &[(&[u8], &[u8])],
) -> RedisResult<Option<String>> {
    static REDRIVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(
            r#"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"#,
        )
    });
    let mut invocation = REDRIVE.key(dead_letter_stream);
    invocation.key(target).arg(id);
    for (k, v) in fields {
        invocation.arg(*k).arg(*v);
    }
    invocation.invoke_async(con).await
}

/// `XGROUP DELCONSUMER <stream> <group> <consumer>`: removes a consumer from a group;
/// returns how many entries it still had pending (they are dropped from the pending list,
/// so call it once it has none). A missing stream or group is fine.
pub(crate) async fn delete_consumer<C: ConnectionLike>(
    con: &mut C,
    stream: &str,
    group: &str,
    consumer: &str,
) -> RedisResult<u64> {
    let result: RedisResult<u64> = redis::cmd("XGROUP")
        .arg("DELCONSUMER")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .query_async(con)
        .await;
    match result {
        Err(e) if is_no_group(&e) => Ok(0),
        other => other,
    }
}
