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

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::ConnectionLike;

use super::pool::Connection;
use redis::{ConnectionInfo, RedisResult, Script, Value};

use super::commands;
pub(crate) use super::outbox_page::Output;
use super::outbox_page::{parse_page, write_bulk};
use super::page_reader::PageReader;
use super::resp::Cursor;
use crate::event::EntryId;
use crate::keys;

/// How long dedupe marks live after their last write. They matter only while an output
/// written to its target still sits in the outbox, which lasts one relay round trip unless
/// the outbox's own Redis stays unreachable after the write; 30 days covers any outage a
/// deployment survives without being restored from a backup.
pub const MARK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Delivers outputs in order. KEYS: per target stream of the page (each once), the stream
/// and its marks hash. ARGV: the outbox's mark field, the marks' TTL (ms), then per output
/// the index of its stream's pair in KEYS (0-based), its outbox ID, its field count and its
/// fields. Returns how many outputs it went through, then per output that was not written
/// its index (0-based) and `skip` (written before), `ERR <message>` (the target refused it)
/// or `RETRY <message>` (Redis is out of memory: the script stops there, the rest is tried
/// again later, order kept). Written outputs are not listed: a page that all goes through
/// answers with one integer.
static DELIVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function above(id, mark)
  local dash, mdash = string.find(id, '-', 1, true), string.find(mark, '-', 1, true)
  local im, mm = tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(mark, 1, mdash - 1))
  if im ~= mm then return im > mm end
  return tonumber(string.sub(id, dash + 1)) > tonumber(string.sub(mark, mdash + 1))
end
local field, ttl = ARGV[1], ARGV[2]
local out = {0}
-- Per target stream (by its KEYS pair): the mark while this page has not passed it, or
-- true once it has (outbox IDs only grow, so once one output is above the mark, every
-- later one is), and the last outbox ID written to it.
local passed, last = {}, {}
local i, done, argc = 3, 0, #ARGV
while i <= argc do
  local j, id, n = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  local stream = KEYS[2 * j + 1]
  local p = passed[j]
  if p == nil then
    p = redis.call('HGET', KEYS[2 * j + 2], field) or true
    passed[j] = p
  end
  if p ~= true and above(id, p) then p = true; passed[j] = true end
  if p ~= true then
    out[#out + 1] = done
    out[#out + 1] = 'skip'
  else
    local r = redis.pcall('XADD', stream, '*', unpack(ARGV, i + 3, i + 2 + n))
    if type(r) == 'table' and r.err then
      if string.sub(r.err, 1, 3) == 'OOM' then
        out[#out + 1] = done
        out[#out + 1] = 'RETRY ' .. r.err
        break
      end
      out[#out + 1] = done
      out[#out + 1] = 'ERR ' .. r.err
    else
      last[j] = id
    end
  end
  done = done + 1
  i = i + 3 + n
end
out[1] = done
for j, id in pairs(last) do
  redis.call('HSET', KEYS[2 * j + 2], field, id)
  redis.call('PEXPIRE', KEYS[2 * j + 2], ttl)
end
return out
"#,
    )
});

/// What happened to one output of a delivered page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Written to its target.
    Written,
    /// Written before (its mark says so): nothing written now.
    Skipped,
    /// The target refused it (wrong type, ACL, ...): dead-letter it.
    Refused(String),
    /// Not tried (Redis out of memory on the way): try again later.
    Later(String),
}

/// Where the relay reads its outbox (or writes a target): a connection of its own whose
/// replies are parsed by hand (see [`PageReader`]; pages of outputs, and transactions'
/// answers, are what redis-rs's parser is slowest at), or a redis-rs connection where that
/// cannot be had (TLS, RESP3): the pool's shared one to read the outbox, a dedicated one
/// to write a target.
pub(crate) enum Reader {
    /// The relay's own connection.
    Own(PageReader),
    /// A redis-rs connection.
    Shared(Connection),
}

impl Reader {
    /// A connection of the relay's own to the server of `info` (named `name`), or `None`
    /// when that is not plain TCP with RESP2.
    pub(crate) async fn open_own(info: &ConnectionInfo, name: &str) -> RedisResult<Option<Reader>> {
        Ok(
            PageReader::connect(info, name, super::pool::RESPONSE_TIMEOUT)
                .await?
                .map(Reader::Own),
        )
    }

    /// Opens a connection of its own to the server of `info` (named `name`), or settles
    /// for `shared` when that is not plain TCP with RESP2, or the pool is a cluster.
    pub(crate) async fn open(
        info: &ConnectionInfo,
        name: &str,
        shared: Connection,
    ) -> RedisResult<Reader> {
        if shared.is_cluster() {
            return Ok(Reader::Shared(shared));
        }
        Ok(
            match PageReader::connect(info, name, super::pool::RESPONSE_TIMEOUT).await? {
                Some(own) => Reader::Own(own),
                None => Reader::Shared(shared),
            },
        )
    }
}

/// Deletes the settled head of `outbox` below `trim` (when given: `XTRIM MINID`) and reads
/// up to `count` outputs: the oldest left, or those after `after` (the relay's reads ahead),
/// in one round trip.
///
/// On the relay's own connection both commands are queued at once, so reads made one after
/// another go out (and are answered) in call order, and the future may be kept across
/// steps while other work goes on; on a redis-rs connection they go out when it is first
/// polled.
pub(crate) fn trim_and_read(
    reader: &Reader,
    outbox: &str,
    trim: Option<EntryId>,
    after: Option<EntryId>,
    count: usize,
) -> BoxFuture<'static, RedisResult<Vec<Output>>> {
    let start = after.map_or_else(|| "-".to_string(), |after| after.successor().to_string());
    let mut range = redis::cmd("XRANGE");
    range
        .arg(outbox)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count);
    let trim = trim.map(|below| commands::xtrim_minid(outbox, below));
    match reader {
        Reader::Own(own) => {
            // The page stays in the bytes Redis sent (see `outbox_page`).
            let trimmed = trim.as_ref().map(|trim| own.send(trim));
            let page = own.send_raw(&range);
            async move {
                if let Some(trimmed) = trimmed {
                    trimmed.await?;
                }
                parse_page(page.await?)
            }
            .boxed()
        }
        Reader::Shared(con) => {
            let mut con = con.clone();
            let mut pipe = redis::pipe();
            if let Some(trim) = trim {
                pipe.add_command(trim).ignore();
            }
            pipe.add_command(range);
            async move {
                let (value,): (Value,) = pipe.query_async(&mut con).await?;
                Ok(commands::parse_entries(value)?
                    .into_iter()
                    .map(Output::from_entry)
                    .collect())
            }
            .boxed()
        }
    }
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
/// skipping those the marks say were written; `mark_field` names the outbox. Returns what
/// happened to each, in order.
pub(crate) async fn deliver<C: ConnectionLike>(
    con: &mut C,
    mark_field: &str,
    outputs: &[&Output],
) -> RedisResult<Vec<Delivery>> {
    let mut invocation = DELIVER.prepare_invoke();
    invocation.arg(mark_field).arg(MARK_TTL.as_millis() as u64);
    // Each target stream (and its marks hash) once in KEYS; outputs name theirs by index.
    let mut streams: Vec<&str> = Vec::new();
    for output in outputs {
        let target = output.target.as_deref().unwrap_or_default();
        let index = match streams.iter().position(|s| *s == target) {
            Some(index) => index,
            None => {
                streams.push(target);
                invocation.key(target).key(keys::relay_marks(target));
                streams.len() - 1
            }
        };
        invocation
            .arg(index)
            .arg(output.id.to_string())
            .arg(2 * output.fields.len());
        for (k, v) in output.fields.iter() {
            invocation.arg(k).arg(v);
        }
    }
    let reply: Vec<Value> = invocation.invoke_async(con).await?;
    parse_deliveries(reply, outputs.len())
}

/// Records a target stream's dedupe mark inside a delivery transaction, only when the key
/// is a stream (so its `XADD`s just ran: a key of another type refused them, and then the
/// mark must not pass them). KEYS: the stream, its marks hash. ARGV: the outbox's mark field,
/// the last outbox ID written, the marks' TTL (ms).
const MARK_SOURCE: &str = r#"
if redis.call('TYPE', KEYS[1]).ok == 'stream' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"#;

/// Delivers like [`deliver`], with plain `XADD`s in a `MULTI`/`EXEC` instead of the
/// script: one round trip reads the marks under `WATCH`, the next writes what they do not
/// cover, with the new marks, in one transaction. Redis runs a transaction's `XADD`s
/// without the script's per-call overhead, so this costs the target about a third.
///
/// Needs a connection nobody else sends on (`WATCH` and `MULTI` are per connection).
/// Returns `Ok(None)` when the transaction did not run: a mark changed after it was read
/// (another relay wrote to the same target stream meanwhile), or Redis refused a command
/// while queueing it (ACL, out of memory). Nothing was written then; [`deliver`] with the
/// script decides per output.
pub(crate) async fn deliver_in_transaction<C: ConnectionLike>(
    con: &mut C,
    mark_field: &str,
    outputs: &[&Output],
) -> RedisResult<Option<Vec<Delivery>>> {
    let tx = Transaction::new(mark_field, outputs);
    let marks: Vec<Option<String>> = tx.read_marks().query_async(con).await?;
    let Some(plan) = tx.plan(marks)? else {
        redis::cmd("UNWATCH").exec_async(con).await?;
        return Ok(Some(vec![Delivery::Skipped; outputs.len()]));
    };
    // Sent as plain commands (not redis-rs's atomic pipeline), so that `EXEC`'s own answer
    // (its array, nil when a watched mark changed, or an abort) comes back as it is.
    let (exec,): (Value,) = tx.pipeline(&plan).query_async(con).await?;
    let results = match exec {
        Value::Array(results) => results
            .into_iter()
            .map(|result| match result {
                Value::ServerError(e) => Err(error_text(&e)),
                _ => Ok(()),
            })
            .collect(),
        _ => return Ok(None),
    };
    parse_transaction(results, &plan, outputs.len()).map(Some)
}

/// [`deliver_in_transaction`] on the relay's own connection: the transaction is written as
/// RESP straight from the page's bytes (each `XADD` is its target's name followed by the
/// output's fields as the outbox sent them), and `EXEC`'s answer is walked, not built.
pub(crate) async fn deliver_in_transaction_on(
    own: &PageReader,
    mark_field: &str,
    outputs: &[&Output],
) -> RedisResult<Option<Vec<Delivery>>> {
    let tx = Transaction::new(mark_field, outputs);
    let read = tx.read_marks();
    // Queued at once, in order: UNWATCH, WATCH, one HGET per stream.
    let replies: Vec<_> = read.cmd_iter().map(|cmd| own.send(cmd)).collect();
    let mut marks = Vec::with_capacity(replies.len());
    for reply in futures::future::join_all(replies).await.into_iter().skip(2) {
        marks.push(match reply? {
            Value::Nil => None,
            value => Some(commands::string(value)?),
        });
    }
    let Some(plan) = tx.plan(marks)? else {
        own.send(&redis::cmd("UNWATCH")).await?;
        return Ok(Some(vec![Delivery::Skipped; outputs.len()]));
    };
    let (packed, commands) = tx.packed(&plan);
    let exec = match own.send_packed_raw(packed, commands - 1).await {
        Ok(exec) => exec,
        // Refused while queueing (`EXECABORT`): nothing was written.
        Err(e) if e.code().is_some() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut answer = Cursor::new(&exec);
    // Nil: a watched mark changed, nothing was written.
    let Some(n) = answer.array()? else {
        return Ok(None);
    };
    let results = (0..n)
        .map(|_| answer.skip_or_error())
        .collect::<RedisResult<_>>()?;
    parse_transaction(results, &plan, outputs.len()).map(Some)
}

/// One delivery transaction of a page (all of one standalone target): its streams and
/// their marks' keys.
struct Transaction<'a> {
    mark_field: &'a str,
    outputs: &'a [&'a Output],
    streams: Vec<&'a str>,
    index: Vec<usize>,
    marks_keys: Vec<String>,
}

impl<'a> Transaction<'a> {
    fn new(mark_field: &'a str, outputs: &'a [&'a Output]) -> Self {
        let (streams, index) = targets(outputs);
        let marks_keys = streams.iter().map(|s| keys::relay_marks(s)).collect();
        Transaction {
            mark_field,
            outputs,
            streams,
            index,
            marks_keys,
        }
    }

    /// `UNWATCH` (whatever a failed step left watched), `WATCH` the marks, and read them:
    /// the replies that matter are the `HGET`s, one per stream.
    fn read_marks(&self) -> redis::Pipeline {
        let mut read = redis::pipe();
        read.cmd("UNWATCH").ignore();
        read.cmd("WATCH").arg(&self.marks_keys).ignore();
        for key in &self.marks_keys {
            read.cmd("HGET").arg(key).arg(self.mark_field);
        }
        read
    }

    /// Given the marks read, what to write (`None`: everything was written before).
    fn plan(&self, marks: Vec<Option<String>>) -> RedisResult<Option<Writes>> {
        let marks = marks
            .into_iter()
            .map(|mark| {
                mark.map(|m| {
                    m.parse::<EntryId>().map_err(|_| {
                        redis::RedisError::from((
                            redis::ErrorKind::UnexpectedReturnType,
                            "unexpected relay mark",
                            m,
                        ))
                    })
                })
                .transpose()
            })
            .collect::<RedisResult<Vec<_>>>()?;
        let plan = plan_writes(self.outputs, &self.index, &marks);
        Ok((!plan.writes.is_empty()).then_some(plan))
    }

    /// The `EVAL`s that move the marks of the streams `plan` writes to.
    fn mark_commands<'p>(&'p self, plan: &'p Writes) -> impl Iterator<Item = redis::Cmd> + 'p {
        plan.marks.iter().enumerate().filter_map(|(j, last)| {
            let last = last.as_ref()?;
            let mut eval = redis::cmd("EVAL");
            eval.arg(MARK_SOURCE)
                .arg(2)
                .arg(self.streams[j])
                .arg(&self.marks_keys[j])
                .arg(self.mark_field)
                .arg(last.to_string())
                .arg(MARK_TTL.as_millis() as u64);
            Some(eval)
        })
    }

    /// The transaction writing `plan` as redis-rs commands: `MULTI`, the `XADD`s, the
    /// marks, `EXEC` (only `EXEC`'s answer is kept).
    fn pipeline(&self, plan: &Writes) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors().cmd("MULTI").ignore();
        for &k in &plan.writes {
            let output = self.outputs[k];
            let mut xadd = redis::cmd("XADD");
            xadd.arg(output.target.as_deref().unwrap_or_default())
                .arg("*");
            for (f, v) in output.fields.iter() {
                xadd.arg(f).arg(v);
            }
            pipe.add_command(xadd).ignore();
        }
        for eval in self.mark_commands(plan) {
            pipe.add_command(eval).ignore();
        }
        pipe.cmd("EXEC");
        pipe
    }

    /// The same transaction as the bytes to send, and how many commands they hold: each
    /// `XADD` is its header and target followed by the output's fields as the outbox sent
    /// them, copied once.
    fn packed(&self, plan: &Writes) -> (Vec<u8>, usize) {
        // Sized up front: per `XADD`, its fields, its target and under 48 bytes of headers
        // (`*N`, `XADD`, the target's length, `*`).
        let size = plan
            .writes
            .iter()
            .map(|&k| {
                let output = self.outputs[k];
                48 + output.target.as_deref().unwrap_or_default().len() + output.fields.resp().len()
            })
            .sum::<usize>();
        let mut out = Vec::with_capacity(size + 64);
        out.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
        let mut count = 1;
        for &k in &plan.writes {
            let output = self.outputs[k];
            out.push(b'*');
            out.extend_from_slice(
                itoa::Buffer::new()
                    .format(3 + 2 * output.fields.len())
                    .as_bytes(),
            );
            out.extend_from_slice(b"\r\n$4\r\nXADD\r\n");
            write_bulk(
                &mut out,
                output.target.as_deref().unwrap_or_default().as_bytes(),
            );
            out.extend_from_slice(b"$1\r\n*\r\n");
            out.extend_from_slice(output.fields.resp());
            count += 1;
        }
        for eval in self.mark_commands(plan) {
            eval.write_packed_command(&mut out);
            count += 1;
        }
        out.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
        (out, count + 1)
    }
}

/// The distinct target streams of `outputs`, in first-seen order, and per output the index
/// of its stream among them.
fn targets<'o>(outputs: &[&'o Output]) -> (Vec<&'o str>, Vec<usize>) {
    let mut streams: Vec<&str> = Vec::new();
    let index = outputs
        .iter()
        .map(|output| {
            let target = output.target.as_deref().unwrap_or_default();
            streams
                .iter()
                .position(|s| *s == target)
                .unwrap_or_else(|| {
                    streams.push(target);
                    streams.len() - 1
                })
        })
        .collect();
    (streams, index)
}

/// What a delivery transaction writes: the outputs not covered by their stream's mark (by
/// index, in order) and per stream the new mark (its last output written), if any.
#[derive(Debug, PartialEq, Eq)]
struct Writes {
    writes: Vec<usize>,
    marks: Vec<Option<EntryId>>,
}

/// Decides which outputs a delivery writes: those whose outbox ID is above their stream's
/// mark (`index[k]`: output `k`'s stream; `marks[j]`: stream `j`'s mark, `None` when it has
/// none). The rest were written before.
fn plan_writes(outputs: &[&Output], index: &[usize], marks: &[Option<EntryId>]) -> Writes {
    let mut plan = Writes {
        writes: Vec::new(),
        marks: vec![None; marks.len()],
    };
    for (k, output) in outputs.iter().enumerate() {
        let j = index[k];
        if marks[j].is_none_or(|mark| output.id > mark) {
            plan.writes.push(k);
            plan.marks[j] = Some(output.id);
        }
    }
    plan
}

/// Reads `EXEC`'s answer to a delivery transaction (per command, whether it went through or
/// the error that refused it): one per write, then one per mark.
fn parse_transaction(
    results: Vec<Result<(), String>>,
    plan: &Writes,
    n: usize,
) -> RedisResult<Vec<Delivery>> {
    let marks = plan.marks.iter().flatten().count();
    if results.len() != plan.writes.len() + marks {
        return Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected delivery transaction reply",
            format!(
                "{} answers for {} commands",
                results.len(),
                plan.writes.len() + marks
            ),
        )));
    }
    let mut out = vec![Delivery::Skipped; n];
    let mut results = results.into_iter();
    for (&k, result) in plan.writes.iter().zip(&mut results) {
        out[k] = match result {
            Err(e) => Delivery::Refused(e),
            Ok(()) => Delivery::Written,
        };
    }
    for result in results {
        if let Err(e) = result {
            // The outputs are written but their mark is not: a crash before the outbox
            // entries are deleted would write them again.
            tracing::error!(error = %e, "relay mark not recorded after its writes");
        }
    }
    Ok(out)
}

/// An error reply as Redis wrote it (`WRONGTYPE Operation against ...`).
fn error_text(e: &redis::ServerError) -> String {
    match e.details() {
        Some(details) => format!("{} {details}", e.code()),
        None => e.code().to_string(),
    }
}

/// Reads the deliver script's answer (see [`DELIVER`]) into one [`Delivery`] per output.
fn parse_deliveries(reply: Vec<Value>, n: usize) -> RedisResult<Vec<Delivery>> {
    let bad = |what: String| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected deliver reply",
            what,
        ))
    };
    let mut reply = reply.into_iter();
    let done = match reply.next() {
        Some(Value::Int(done)) if (0..=n as i64).contains(&done) => done as usize,
        other => return Err(bad(format!("count: {other:?}"))),
    };
    let mut out = vec![Delivery::Written; done];
    // Outputs the script did not go through (it stopped to retry) wait, order kept.
    out.resize(n, Delivery::Later("not tried".into()));
    while let (Some(index), Some(status)) = (reply.next(), reply.next()) {
        let index = match index {
            Value::Int(i) => usize::try_from(i).ok().filter(|i| *i < n),
            _ => None,
        }
        .ok_or_else(|| bad(format!("index {index:?} of {n}")))?;
        let status = commands::string(status)?;
        if status == "skip" {
            out[index] = Delivery::Skipped;
        } else if let Some(e) = status.strip_prefix("ERR ") {
            out[index] = Delivery::Refused(e.to_string());
        } else if let Some(e) = status.strip_prefix("RETRY ") {
            for later in &mut out[index..] {
                *later = Delivery::Later(e.to_string());
            }
        } else {
            return Err(bad(format!("status {status}")));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_page_that_all_went_through_is_one_count() {
        let out = parse_deliveries(vec![Value::Int(3)], 3).unwrap();
        assert_eq!(out, vec![Delivery::Written; 3]);
    }

    #[test]
    fn skipped_refused_and_retried_outputs_are_listed_by_index() {
        let reply = vec![
            Value::Int(3),
            Value::Int(0),
            bulk("skip"),
            Value::Int(2),
            bulk("ERR WRONGTYPE no"),
            Value::Int(3),
            bulk("RETRY OOM full"),
        ];
        let out = parse_deliveries(reply, 5).unwrap();
        assert_eq!(
            out,
            vec![
                Delivery::Skipped,
                Delivery::Written,
                Delivery::Refused("WRONGTYPE no".into()),
                Delivery::Later("OOM full".into()),
                Delivery::Later("OOM full".into()),
            ]
        );
    }

    fn output(id: &str, target: &str, n: &str) -> Output {
        Output {
            id: id.parse().unwrap(),
            target: Some(target.into()),
            fields: super::super::outbox_page::Fields::from_pairs([("n", n)]),
        }
    }

    #[test]
    fn outputs_at_or_below_their_streams_mark_are_not_written_again() {
        let outputs = [
            output("5-0", "a", "1"),
            output("6-0", "b", "2"),
            output("7-0", "a", "3"),
            output("8-0", "b", "4"),
        ];
        let refs: Vec<&Output> = outputs.iter().collect();
        let (streams, index) = targets(&refs);
        assert_eq!(streams, ["a", "b"]);
        assert_eq!(index, [0, 1, 0, 1]);
        let marks = [Some("5-0".parse().unwrap()), None];
        assert_eq!(
            plan_writes(&refs, &index, &marks),
            Writes {
                writes: vec![1, 2, 3],
                marks: vec![Some("7-0".parse().unwrap()), Some("8-0".parse().unwrap())],
            }
        );
        let marks = [Some("9-0".parse().unwrap()), Some("6-0".parse().unwrap())];
        assert_eq!(
            plan_writes(&refs, &index, &marks),
            Writes {
                writes: vec![3],
                marks: vec![None, Some("8-0".parse().unwrap())],
            }
        );
    }

    /// A private redis-server and a connection to it.
    async fn server() -> (
        crate::ops::redis_server::RedisServer,
        redis::aio::MultiplexedConnection,
    ) {
        let server = crate::ops::redis_server::RedisServer::start().expect("redis-server starts");
        let con = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (server, con)
    }

    async fn values(con: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<String> {
        let entries = commands::range(con, stream, "-", 100).await.unwrap();
        entries
            .into_iter()
            .map(|e| {
                let fields = e.fields.unwrap_or_default();
                commands::string(fields[1].clone()).unwrap()
            })
            .collect()
    }

    /// The mark of outbox `p/o` in `stream`'s marks hash.
    async fn mark_of(con: &mut redis::aio::MultiplexedConnection, stream: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(keys::relay_marks(stream))
            .arg("p/o")
            .query_async(con)
            .await
            .unwrap()
    }

    /// Makes `key` a string, so `XADD`s to it are refused.
    async fn not_a_stream(con: &mut redis::aio::MultiplexedConnection, key: &str) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("not a stream")
            .query_async(con)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_transaction_writes_what_the_marks_do_not_cover_and_moves_them() {
        let (_server, mut con) = server().await;
        let _: () = redis::cmd("HSET")
            .arg(keys::relay_marks("a"))
            .arg("p/o")
            .arg("5-0")
            .query_async(&mut con)
            .await
            .unwrap();
        let outputs = [
            output("5-0", "a", "1"),
            output("6-0", "b", "2"),
            output("7-0", "a", "3"),
        ];
        let refs: Vec<&Output> = outputs.iter().collect();
        let mut own = con.clone();
        let delivered = deliver_in_transaction(&mut own, "p/o", &refs)
            .await
            .unwrap()
            .expect("the transaction ran");
        assert_eq!(
            delivered,
            [Delivery::Skipped, Delivery::Written, Delivery::Written]
        );
        assert_eq!(values(&mut con, "a").await, ["3"]);
        assert_eq!(values(&mut con, "b").await, ["2"]);
        for (stream, mark) in [("a", "7-0"), ("b", "6-0")] {
            assert_eq!(mark_of(&mut con, stream).await.as_deref(), Some(mark));
            let ttl: i64 = redis::cmd("PTTL")
                .arg(keys::relay_marks(stream))
                .query_async(&mut con)
                .await
                .unwrap();
            assert!(ttl > 0, "marks expire");
        }
        // The same page again (a relay that crashed before deleting it): nothing twice.
        let again = deliver_in_transaction(&mut own, "p/o", &refs)
            .await
            .unwrap()
            .expect("nothing to write is an answer too");
        assert_eq!(again, vec![Delivery::Skipped; 3]);
        assert_eq!(values(&mut con, "a").await, ["3"]);
    }

    #[tokio::test]
    async fn the_relays_own_connection_writes_once_and_says_which_output_was_refused() {
        let (server, mut con) = server().await;
        let info = redis::IntoConnectionInfo::into_connection_info(server.url()).unwrap();
        let own = PageReader::connect(&info, "test-relay", Duration::from_secs(10))
            .await
            .unwrap()
            .expect("plain TCP with RESP2");
        let outputs = [output("5-0", "a", "1"), output("6-0", "b", "2")];
        let refs: Vec<&Output> = outputs.iter().collect();
        let delivered = deliver_in_transaction_on(&own, "p/o", &refs)
            .await
            .unwrap()
            .expect("the transaction ran");
        assert_eq!(delivered, [Delivery::Written, Delivery::Written]);
        let again = deliver_in_transaction_on(&own, "p/o", &refs)
            .await
            .unwrap()
            .expect("nothing to write is an answer too");
        assert_eq!(again, vec![Delivery::Skipped; 2]);
        assert_eq!(values(&mut con, "a").await, ["1"]);
        assert_eq!(values(&mut con, "b").await, ["2"]);

        // `c` holds a string: the transaction writes `d` and marks it, refuses `c` and
        // leaves its mark; the same page again writes nothing twice and is refused again.
        not_a_stream(&mut con, "c").await;
        let outputs = [output("7-0", "c", "3"), output("8-0", "d", "4")];
        let refs: Vec<&Output> = outputs.iter().collect();
        let delivered = deliver_in_transaction_on(&own, "p/o", &refs)
            .await
            .unwrap()
            .expect("the transaction ran");
        assert!(
            matches!(&delivered[0], Delivery::Refused(e) if e.starts_with("WRONGTYPE")),
            "{delivered:?}"
        );
        assert_eq!(delivered[1], Delivery::Written);
        let again = deliver_in_transaction_on(&own, "p/o", &refs)
            .await
            .unwrap()
            .expect("the transaction ran");
        assert!(matches!(&again[0], Delivery::Refused(_)), "{again:?}");
        assert_eq!(again[1], Delivery::Skipped);
        let delivered = deliver(&mut con, "p/o", &refs).await.unwrap();
        assert!(
            matches!(&delivered[0], Delivery::Refused(_)),
            "{delivered:?}"
        );
        assert_eq!(delivered[1], Delivery::Skipped);
        assert_eq!(values(&mut con, "d").await, ["4"], "written once");
        assert_eq!(
            mark_of(&mut con, "c").await,
            None,
            "a refused output is not marked as written"
        );
    }

    #[tokio::test]
    async fn a_key_of_another_type_refuses_its_outputs_and_keeps_its_mark_back() {
        let (_server, mut con) = server().await;
        not_a_stream(&mut con, "a").await;
        let outputs = [output("5-0", "a", "1"), output("6-0", "b", "2")];
        let refs: Vec<&Output> = outputs.iter().collect();
        let delivered = deliver_in_transaction(&mut con.clone(), "p/o", &refs)
            .await
            .unwrap()
            .expect("the transaction ran");
        assert!(
            matches!(&delivered[0], Delivery::Refused(e) if e.starts_with("WRONGTYPE")),
            "{delivered:?}"
        );
        assert_eq!(delivered[1], Delivery::Written);
        assert_eq!(
            mark_of(&mut con, "a").await,
            None,
            "a refused output is not marked as written"
        );
    }

    /// A connection that, before it sends a transaction, has another client move the marks
    /// of stream `a` (as a second relay writing to the same stream would).
    struct Interloper {
        con: redis::aio::MultiplexedConnection,
        other: redis::aio::MultiplexedConnection,
    }

    impl ConnectionLike for Interloper {
        fn req_packed_command<'a>(
            &'a mut self,
            cmd: &'a redis::Cmd,
        ) -> redis::RedisFuture<'a, Value> {
            self.con.req_packed_command(cmd)
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            pipe: &'a redis::Pipeline,
            offset: usize,
            count: usize,
        ) -> redis::RedisFuture<'a, Vec<Value>> {
            Box::pin(async move {
                let multi = pipe
                    .cmd_iter()
                    .any(|c| c.args_iter().next() == Some(redis::Arg::Simple(b"MULTI")));
                if multi {
                    let _: () = redis::cmd("HSET")
                        .arg(keys::relay_marks("a"))
                        .arg("other/outbox")
                        .arg("1-0")
                        .query_async(&mut self.other)
                        .await?;
                }
                self.con.req_packed_commands(pipe, offset, count).await
            })
        }

        fn get_db(&self) -> i64 {
            0
        }
    }

    #[tokio::test]
    async fn a_mark_moved_meanwhile_leaves_the_page_to_the_script() {
        let (server, mut con) = server().await;
        let other = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let own = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut interloper = Interloper { con: own, other };
        let outputs = [output("5-0", "a", "1")];
        let refs: Vec<&Output> = outputs.iter().collect();
        let result = deliver_in_transaction(&mut interloper, "p/o", &refs)
            .await
            .unwrap();
        assert_eq!(
            result, None,
            "the watched marks changed: the transaction did not run"
        );
        assert!(values(&mut con, "a").await.is_empty(), "nothing written");
        // The script then writes it, once.
        let delivered = deliver(&mut con, "p/o", &refs).await.unwrap();
        assert_eq!(delivered, [Delivery::Written]);
        assert_eq!(values(&mut con, "a").await, ["1"]);
    }

    #[test]
    fn a_malformed_reply_is_an_error() {
        assert!(parse_deliveries(vec![], 1).is_err());
        assert!(parse_deliveries(vec![Value::Int(2)], 1).is_err());
        assert!(parse_deliveries(vec![Value::Int(1), Value::Int(5), bulk("skip")], 1).is_err());
        assert!(parse_deliveries(vec![Value::Int(1), Value::Int(0), bulk("what")], 1).is_err());
    }
}
