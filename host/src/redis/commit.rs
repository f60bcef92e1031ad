//! The atomic commit of a handled batch: publishes, acknowledgements and dead-letters in one
//! server-side script that first checks the consumer still owns its lock.
//!
//! A Lua script is as atomic as `MULTI`/`EXEC` (Redis runs it without interleaving other
//! commands) and, unlike a transaction on a multiplexed connection, it can check the lock
//! token and abort before writing anything. A crash before the script runs commits nothing;
//! after it, everything.

use std::collections::HashMap;

use crate::event::{EntryId, Event, NewEvent};
use crate::keys::{self, dead_letter_fields};

/// Error code the script raises when the lock is not ours any more.
pub(crate) const LOCK_LOST: &str = "BEEHIVE_LOCK_LOST";

/// How many IDs go into one XACK call inside the script (Lua's `unpack` has limits).
const ACK_CHUNK: usize = 1000;

/// The commit script: checks the lock token, skips a commit that already ran (its mark,
/// `<series>:<seq>`, is at or past the one in `KEYS[2]`: a resend after a lost reply),
/// then runs the ops (`A` = XADD, `K` = XACK). Answers `{}`: nobody needs the new entries'
/// IDs, and a batch of 1,000 outputs answered with theirs cost the host a parse of 1,000
/// strings per commit.
const COMMIT_SOURCE: &str = r#"
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('BEEHIVE_LOCK_LOST the consumer lock is not held any more')
end
if ARGV[2] ~= '' then
  local series, seq = string.match(ARGV[2], '^(.*):(%d+)$')
  local last = redis.call('GET', KEYS[2])
  if last then
    local last_series, last_seq = string.match(last, '^(.*):(%d+)$')
    if last_series == series and tonumber(last_seq) >= tonumber(seq) then
      return {}
    end
  end
  redis.call('SET', KEYS[2], ARGV[2], 'PX', 600000)
end
local i = 3
while i <= #ARGV do
  local op, key, n = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  if op == 'A' then
    redis.call('XADD', key, '*', unpack(ARGV, i + 3, i + 2 + n))
  else
    redis.call('XACK', key, unpack(ARGV, i + 3, i + 2 + n))
  end
  i = i + 3 + n
end
return {}
"#;

/// The writes one batch commits: build it, then [`run`](CommitBatch::run) it.
///
/// Arguments are written into one buffer as they are added (no allocation per ID or
/// field), then copied once into the command.
#[derive(Default)]
pub(crate) struct CommitBatch {
    keys: Vec<String>,
    key_index: HashMap<String, usize>,
    /// Every argument after the token, concatenated; `ends[i]` is where argument `i` ends.
    data: Vec<u8>,
    ends: Vec<usize>,
    ops: usize,
    /// How many entries go into an outbox.
    outboxed: usize,
}

impl CommitBatch {
    /// True when there is nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// How many entries this commit writes into an outbox (for the relay to move).
    pub(crate) fn outboxed(&self) -> usize {
        self.outboxed
    }

    fn key(&mut self, key: &str) -> usize {
        if let Some(i) = self.key_index.get(key) {
            return *i;
        }
        self.keys.push(key.to_string());
        // KEYS[1] is the lock key and KEYS[2] the mark key, so stream keys start at 3.
        let i = self.keys.len() + 2;
        self.key_index.insert(key.to_string(), i);
        i
    }

    fn arg(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.ends.push(self.data.len());
    }

    /// Starts an op on `key` whose `n` arguments follow.
    fn op(&mut self, op: &str, key: &str, n: usize) {
        let k = self.key(key);
        self.arg(op.as_bytes());
        self.arg(k.to_string().as_bytes());
        self.arg(n.to_string().as_bytes());
        self.ops += 1;
    }

    /// Starts an `XADD` of an entry with `n` fields to `stream`, or, with an `outbox`, to
    /// the outbox with the target stream as its first field (the relay moves it).
    fn add(&mut self, stream: &str, outbox: Option<&str>, fields: usize) {
        match outbox {
            None => self.op("A", stream, 2 * fields),
            Some(outbox) => {
                self.outboxed += 1;
                self.op("A", outbox, 2 * (fields + 1));
                self.arg(keys::OUTBOX_TARGET.as_bytes());
                self.arg(stream.as_bytes());
            }
        }
    }

    /// Adds an `XADD` of `event` (to its stream, or with an `outbox` to that outbox).
    pub(crate) fn publish(&mut self, event: &NewEvent, outbox: Option<&str>) {
        self.add(&event.stream, outbox, event.fields().count());
        for (k, v) in event.fields() {
            self.arg(k);
            self.arg(v);
        }
    }

    /// Adds `XACK <stream> <group> <ids...>`.
    pub(crate) fn ack(&mut self, stream: &str, group: &str, ids: &[EntryId]) {
        for chunk in ids.chunks(ACK_CHUNK) {
            self.op("K", stream, chunk.len() + 1);
            self.arg(group.as_bytes());
            for id in chunk {
                id.write_to(&mut self.data);
                self.ends.push(self.data.len());
            }
        }
    }

    /// Copies `event` (body and metadata) to `dead_letter_stream` (or with an `outbox`,
    /// to the outbox for it) with the `beehive.*` fields, and acknowledges it.
    pub(crate) fn dead_letter(
        &mut self,
        dead_letter_stream: &str,
        group: &str,
        event: &Event,
        reason: &str,
        outbox: Option<&str>,
    ) {
        use dead_letter_fields::*;
        let kept = || {
            event
                .meta
                .iter()
                .filter(|(k, _)| !dead_letter_fields::ADDED.contains(&k.as_str()))
        };
        let n = usize::from(event.body.is_some()) + kept().count() + 5;
        self.add(dead_letter_stream, outbox, n);
        if let Some(body) = &event.body {
            self.arg(b"s");
            self.arg(body);
        }
        for (k, v) in kept() {
            self.arg(k.as_bytes());
            self.arg(v.as_bytes());
        }
        for (k, v) in [
            (ORIGIN_STREAM, event.stream().to_string()),
            (ORIGIN_ID, event.id()),
            (GROUP, group.to_string()),
            (REASON, reason.to_string()),
            (DELIVERIES, event.deliveries.to_string()),
        ] {
            self.arg(k.as_bytes());
            self.arg(v.as_bytes());
        }

        self.ack(event.stream(), group, &[event.id]);
    }

    /// The `EVAL` command of this batch: the script, the keys (the lock key, the mark key,
    /// then each stream once), the token (empty without a lock: then the first key is the
    /// first stream again, so that on a cluster every key names the batch's slot), the mark
    /// (empty without one: then the mark key repeats the first key), then per op its code,
    /// key index, argument count and arguments.
    fn command(&self, lock: Option<(String, String)>, mark: Option<CommitMark>) -> redis::Cmd {
        let (lock_key, token) = lock.unwrap_or_else(|| {
            (
                self.keys.first().cloned().unwrap_or_default(),
                String::new(),
            )
        });
        let (mark_key, mark) = match mark {
            Some(mark) => (mark.key, format!("{}:{}", mark.series, mark.seq)),
            None => (lock_key.clone(), String::new()),
        };
        // EVAL, not EVALSHA: Redis caches the compiled script by its hash either way,
        // and a commit never fails with NOSCRIPT (after a restart or SCRIPT FLUSH),
        // whose retry could apply it after a commit sent later.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(COMMIT_SOURCE)
            .arg(self.keys.len() + 2)
            .arg(&lock_key)
            .arg(&mark_key);
        for key in &self.keys {
            cmd.arg(key);
        }
        cmd.arg(&token).arg(&mark);
        let mut start = 0;
        for &end in &self.ends {
            cmd.arg(&self.data[start..end]);
            start = end;
        }
        cmd
    }

    /// The ops of this batch as readable lines, `<code> <key> <args...>` (bytes shown as
    /// lossy UTF-8), for tests of what a commit contains.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> Vec<String> {
        let args: Vec<String> = {
            let mut start = 0;
            self.ends
                .iter()
                .map(|&end| {
                    let arg = String::from_utf8_lossy(&self.data[start..end]).into_owned();
                    start = end;
                    arg
                })
                .collect()
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let key_index: usize = args[i + 1].parse().expect("a key index");
            let n: usize = args[i + 2].parse().expect("an argument count");
            let mut line = format!("{} {}", args[i], self.keys[key_index - 3]);
            for arg in &args[i + 3..i + 3 + n] {
                line.push(' ');
                line.push_str(arg);
            }
            out.push(line);
            i += 3 + n;
        }
        out
    }

    /// Runs the batch atomically. With a `lock` (key, token), nothing is written unless the
    /// key still holds the token; then the error has code [`LOCK_LOST`]. With a `mark`,
    /// a commit whose mark is at or before the last one recorded for its series writes
    /// nothing: it already ran, and this is a resend (the cluster client
    /// sends a request again when its connection dropped, even if Redis ran it).
    ///
    /// The returned future owns everything it needs, so a consumer can leave the commit in
    /// flight while it handles its next batch; the command is sent on its first poll.
    pub(crate) async fn run<C>(
        self,
        mut con: C,
        lock: Option<(String, String)>,
        mark: Option<CommitMark>,
    ) -> redis::RedisResult<()>
    where
        C: redis::aio::ConnectionLike + Send + 'static,
    {
        if self.is_empty() {
            return Ok(());
        }
        self.command(lock, mark).exec_async(&mut con).await
    }
}

/// Makes a resent commit a no-op: commits of one series (one consumer's run) carry
/// increasing sequence numbers, and the script records the last one run in `key` (in the
/// batch's slot), for ten minutes.
pub(crate) struct CommitMark {
    /// Where the last mark of the series is kept ([`keys::commit_mark`]).
    pub(crate) key: String,
    /// Unique per consumer run.
    pub(crate) series: String,
    /// This commit's number in the series; each commit sent takes the next.
    pub(crate) seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    fn event(stream: &str, seq: u64, meta: &[(&str, &str)]) -> Event {
        Event::new(
            stream,
            EntryId { ms: 7, seq },
            None,
            meta.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .with_deliveries(2)
    }

    #[test]
    fn the_command_carries_lock_keys_token_and_ops_in_order() {
        let mut commit = CommitBatch::default();
        commit.publish(
            &NewEvent::new("out", Some(vec![1, 2]), vec![("k".into(), "v".into())]).unwrap(),
            None,
        );
        commit.ack(
            "in",
            "g",
            &[EntryId { ms: 1, seq: 0 }, EntryId { ms: 1, seq: 1 }],
        );
        commit.publish(
            &NewEvent::new("out", None, vec![("n".into(), "2".into())]).unwrap(),
            None,
        );
        let mark = CommitMark {
            key: "g_consumer-1:last-commit".into(),
            series: "s1".into(),
            seq: 7,
        };
        let args = packed(&commit.command(Some(("g_consumer-1".into(), "tok".into())), Some(mark)));
        assert_eq!(args[0], "EVAL");
        assert_eq!(args[1], COMMIT_SOURCE);
        assert_eq!(
            &args[2..],
            [
                "4",
                "g_consumer-1",
                "g_consumer-1:last-commit",
                "out",
                "in",
                "tok",
                "s1:7", // numkeys, KEYS, token, mark
                "A",
                "3",
                "4",
                "s",
                "\u{1}\u{2}",
                "k",
                "v", // XADD out
                "K",
                "4",
                "3",
                "g",
                "1-0",
                "1-1", // XACK in g
                "A",
                "3",
                "2",
                "n",
                "2", // XADD out again: the same key index
            ]
        );
    }

    #[test]
    fn without_a_lock_the_token_is_empty_and_the_first_key_a_stream_of_the_batch() {
        let mut commit = CommitBatch::default();
        commit.ack("in", "g", &[EntryId { ms: 1, seq: 0 }]);
        let args = packed(&commit.command(None, None));
        // A real key of the batch first: on a cluster, EVAL is routed by its first key.
        assert_eq!(&args[2..8], ["3", "in", "in", "in", "", ""]);
    }

    #[test]
    fn acks_are_split_into_chunks() {
        let mut commit = CommitBatch::default();
        let ids: Vec<EntryId> = (0..2500).map(|seq| EntryId { ms: 1, seq }).collect();
        commit.ack("in", "g", &ids);
        let ops = commit.describe();
        assert_eq!(ops.len(), 3);
        let counts: Vec<usize> = ops.iter().map(|op| op.split(' ').count() - 3).collect();
        assert_eq!(counts, [ACK_CHUNK, ACK_CHUNK, 500]);
        assert!(ops[2].ends_with(" 1-2499"));
    }

    #[test]
    fn a_dead_letter_copies_the_entry_replaces_earlier_beehive_fields_and_acks() {
        let mut commit = CommitBatch::default();
        let redriven = event(
            "in",
            3,
            &[
                ("color", "red"),
                (dead_letter_fields::REASON, "old"),
                (dead_letter_fields::REDRIVES, "1"),
            ],
        );
        commit.dead_letter("g-dead", "g", &redriven, "no such color", None);
        assert_eq!(
            commit.describe(),
            [
                "A g-dead color red beehive.redrives 1 beehive.origin-stream in beehive.origin-id 7-3 beehive.group g beehive.reason no such color beehive.deliveries 2",
                "K in g 7-3",
            ]
        );
    }

    #[test]
    fn an_empty_batch_is_empty() {
        let commit = CommitBatch::default();
        assert!(commit.is_empty());
        assert!(commit.describe().is_empty());
    }

    #[test]
    fn outputs_to_another_domain_go_to_the_outbox_naming_their_target() {
        let mut commit = CommitBatch::default();
        let out = NewEvent::new("far", None, vec![("k".into(), "v".into())]).unwrap();
        commit.publish(&out, Some("beehive:outbox:g"));
        commit.dead_letter(
            "far-dead",
            "g",
            &event("in", 1, &[("a", "b")]),
            "bad",
            Some("beehive:outbox:g"),
        );
        assert_eq!(
            commit.describe(),
            [
                "A beehive:outbox:g beehive.target far k v",
                "A beehive:outbox:g beehive.target far-dead a b beehive.origin-stream in beehive.origin-id 7-1 beehive.group g beehive.reason bad beehive.deliveries 2",
                "K in g 7-1",
            ]
        );
    }
}
