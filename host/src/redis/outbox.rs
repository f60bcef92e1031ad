//! The relay's commands: read an outbox, deliver a page of outputs to the streams of one
//! commit domain exactly once, and remove what was delivered from the outbox.
//!
//! Exactly once rests on dedupe marks written atomically with the target `XADD`: per target
//! stream, a hash (`keys::relay_marks`) maps each outbox to the ID of the last outbox entry
//! written to that stream. A relay moves an outbox's entries in ID order, so an entry whose
//! ID is not above the mark was already written: the script skips it. A crash after the
//! target write and before the outbox entry is deleted therefore never writes it twice.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script, Value};

use super::commands::{self, RawEntry};
use crate::event::EntryId;
use crate::keys;

/// How long dedupe marks live after their last write. They matter only while an output
/// written to its target still sits in the outbox, which lasts one relay round trip unless
/// the outbox's own Redis stays unreachable after the write; 30 days covers any outage a
/// deployment survives without being restored from a backup.
pub const MARK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Delivers outputs in order. KEYS: per output, its target stream and that stream's marks
/// hash. ARGV: the outbox's mark field, the marks' TTL (ms), then per output its outbox ID,
/// its field count and its fields. Returns per output the new entry ID, `skip` (written
/// before), or `ERR <message>` (the target refused it); stops with `RETRY <message>` when
/// Redis is out of memory (the rest is tried again later, order kept).
static DELIVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local field, ttl = ARGV[1], ARGV[2]
local out = {}
-- Per target stream: its marks key, and whether this page has passed its mark (outbox IDs
-- only grow, so once one output is above the mark, every later one is).
local marks, passed, last = {}, {}, {}
local i, k = 3, 1
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  local stream = KEYS[k]
  if marks[stream] == nil then
    marks[stream] = KEYS[k + 1]
    local mark = redis.call('HGET', KEYS[k + 1], field)
    passed[stream] = not mark
    if mark then
      local mm, ms = parse(mark)
      local im, is = parse(id)
      passed[stream] = im > mm or (im == mm and is > ms)
      if not passed[stream] then passed[stream] = mark end
    end
  end
  local p = passed[stream]
  if p ~= true then
    -- p is the mark: skip outputs at or below it.
    local mm, ms = parse(p)
    local im, is = parse(id)
    if im > mm or (im == mm and is > ms) then passed[stream] = true; p = true end
  end
  if p ~= true then
    out[#out + 1] = 'skip'
  else
    local r = redis.pcall('XADD', stream, '*', unpack(ARGV, i + 2, i + 1 + n))
    if type(r) == 'table' and r.err then
      if string.sub(r.err, 1, 3) == 'OOM' then
        out[#out + 1] = 'RETRY ' .. r.err
        break
      end
      out[#out + 1] = 'ERR ' .. r.err
    else
      last[stream] = id
      out[#out + 1] = r
    end
  end
  i, k = i + 2 + n, k + 2
end
for stream, id in pairs(last) do
  redis.call('HSET', marks[stream], field, id)
  redis.call('PEXPIRE', marks[stream], ttl)
end
return out
"#,
    )
});

/// One output waiting in an outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Output {
    /// Its outbox entry ID.
    pub(crate) id: EntryId,
    /// The stream it goes to (`None`: a malformed outbox entry).
    pub(crate) target: Option<String>,
    /// Its fields, as published (`s` for the body, then metadata).
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Output {
    fn from_raw(entry: RawEntry) -> Output {
        let mut flat = entry
            .fields
            .unwrap_or_default()
            .into_iter()
            .map(|v| commands::bytes(v).unwrap_or_default());
        let mut fields = Vec::new();
        while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
            fields.push((k, v));
        }
        let target = match fields.first() {
            Some((k, v)) if k == keys::OUTBOX_TARGET.as_bytes() => {
                String::from_utf8(v.clone()).ok()
            }
            _ => None,
        };
        if target.is_some() {
            fields.remove(0);
        }
        Output {
            id: entry.id,
            target,
            fields,
        }
    }
}

/// What happened to one output of a delivered page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Written to its target with this entry ID.
    Written(String),
    /// Written before (its mark says so): nothing written now.
    Skipped,
    /// The target refused it (wrong type, ACL, ...): dead-letter it.
    Refused(String),
    /// Not tried (Redis out of memory on the way): try again later.
    Later(String),
}

/// The oldest `count` outputs of `outbox`.
pub(crate) async fn page<C: ConnectionLike>(
    con: &mut C,
    outbox: &str,
    count: usize,
) -> RedisResult<Vec<Output>> {
    Ok(commands::range(con, outbox, "-", count)
        .await?
        .into_iter()
        .map(Output::from_raw)
        .collect())
}

/// Waits up to `block` for `outbox` to hold an entry (`XREAD ... STREAMS outbox 0-0`): at
/// once when it has one. Needs a connection whose response timeout exceeds `block`.
pub(crate) async fn wait_for_entries<C: ConnectionLike>(
    con: &mut C,
    outbox: &str,
    block: Duration,
) -> RedisResult<()> {
    let _: Value = commands::xread(outbox, "0-0", 1, block)
        .query_async(con)
        .await?;
    Ok(())
}

/// Writes `outputs` (all of one commit domain, each with a target) in order, atomically,
/// skipping those the marks say were written; `mark_field` names the outbox.
pub(crate) async fn deliver<C: ConnectionLike>(
    con: &mut C,
    mark_field: &str,
    outputs: &[&Output],
) -> RedisResult<Vec<Delivery>> {
    let mut invocation = DELIVER.prepare_invoke();
    invocation.arg(mark_field).arg(MARK_TTL.as_millis() as u64);
    for output in outputs {
        let target = output.target.as_deref().unwrap_or_default();
        invocation.key(target).key(keys::relay_marks(target));
        invocation
            .arg(output.id.to_string())
            .arg(2 * output.fields.len());
        for (k, v) in &output.fields {
            invocation.arg(k).arg(v);
        }
    }
    let replies: Vec<String> = invocation.invoke_async(con).await?;
    let mut out: Vec<Delivery> = replies
        .into_iter()
        .map(|r| {
            if r == "skip" {
                Delivery::Skipped
            } else if let Some(e) = r.strip_prefix("ERR ") {
                Delivery::Refused(e.to_string())
            } else if let Some(e) = r.strip_prefix("RETRY ") {
                Delivery::Later(e.to_string())
            } else {
                Delivery::Written(r)
            }
        })
        .collect();
    // The script stops at the first output it must retry: the rest wait too.
    if let Some(Delivery::Later(reason)) = out.last().cloned() {
        out.resize(outputs.len(), Delivery::Later(reason));
    }
    Ok(out)
}

/// Deletes the outbox's entries below `below` (`XTRIM MINID`): the settled head of the
/// outbox, in one cheap command.
pub(crate) async fn trim_below<C: ConnectionLike>(
    con: &mut C,
    outbox: &str,
    below: EntryId,
) -> RedisResult<()> {
    let _: i64 = commands::xtrim_minid(outbox, below)
        .query_async(con)
        .await?;
    Ok(())
}

/// Length of `outbox` and the ID of its oldest entry.
pub(crate) async fn backlog<C: ConnectionLike>(
    con: &mut C,
    outbox: &str,
) -> RedisResult<(u64, Option<EntryId>)> {
    let length = commands::stream_length(con, outbox).await?;
    if length == 0 {
        return Ok((0, None));
    }
    let oldest = commands::range(con, outbox, "-", 1).await?;
    Ok((length, oldest.first().map(|e| e.id)))
}
