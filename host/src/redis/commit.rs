//! The atomic commit of a handled batch: publishes, acknowledgements and dead-letters in one
//! server-side script that first checks the consumer still owns its lock.
//!
//! A Lua script is as atomic as `MULTI`/`EXEC` (Redis runs it without interleaving other
//! commands) and, unlike a transaction on a multiplexed connection, it can check the lock
//! token and abort before writing anything. A crash before the script runs commits nothing;
//! after it, everything.

use std::collections::HashMap;

use crate::event::{EntryId, Event, NewEvent};
use crate::keys::dead_letter_fields;

/// Error code the script raises when the lock is not ours any more.
pub(crate) const LOCK_LOST: &str = "BEEHIVE_LOCK_LOST";

/// How many IDs go into one XACK call inside the script (Lua's `unpack` has limits).
const ACK_CHUNK: usize = 1000;

/// The commit script: checks the lock token, then runs the ops (`A` = XADD, `K` = XACK).
const COMMIT_SOURCE: &str = r#"
if KEYS[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('BEEHIVE_LOCK_LOST the consumer lock is not held any more')
end
local ids = {}
local i = 2
while i <= #ARGV do
  local op, key, n = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  if op == 'A' then
    ids[#ids + 1] = redis.call('XADD', key, '*', unpack(ARGV, i + 3, i + 2 + n))
  else
    redis.call('XACK', key, unpack(ARGV, i + 3, i + 2 + n))
  end
  i = i + 3 + n
end
return ids
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
}

impl CommitBatch {
    /// True when there is nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops == 0
    }

    fn key(&mut self, key: &str) -> usize {
        if let Some(i) = self.key_index.get(key) {
            return *i;
        }
        self.keys.push(key.to_string());
        // KEYS[1] is the lock key, so stream keys start at 2.
        let i = self.keys.len() + 1;
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

    /// Adds an `XADD` of `event`.
    pub(crate) fn publish(&mut self, event: &NewEvent) {
        self.op("A", &event.stream, 2 * event.fields().count());
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

    /// Copies `event` (body and metadata) to `dead_letter_stream` with the `beehive.*`
    /// fields, and acknowledges it.
    pub(crate) fn dead_letter(
        &mut self,
        dead_letter_stream: &str,
        group: &str,
        event: &Event,
        reason: &str,
    ) {
        use dead_letter_fields::*;
        let kept = || {
            event
                .meta
                .iter()
                .filter(|(k, _)| !dead_letter_fields::ADDED.contains(&k.as_str()))
        };
        let n = 2 * (usize::from(event.body.is_some()) + kept().count() + 5);
        self.op("A", dead_letter_stream, n);
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

    /// Runs the batch atomically. With a `lock` (key, token), nothing is written unless the
    /// key still holds the token; then the error has code [`LOCK_LOST`]. Returns the IDs of
    /// the XADDs in order (publishes and dead-letters).
    ///
    /// The returned future owns everything it needs, so a consumer can leave the commit in
    /// flight while it handles its next batch; the command is sent on its first poll.
    pub(crate) async fn run<C>(
        self,
        mut con: C,
        lock: Option<(String, String)>,
    ) -> redis::RedisResult<Vec<String>>
    where
        C: redis::aio::ConnectionLike + Send + 'static,
    {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let (lock_key, token) = lock.unwrap_or_default();
        // EVAL, not EVALSHA: Redis caches the compiled script by its hash either way,
        // and a commit never fails with NOSCRIPT (after a restart or SCRIPT FLUSH),
        // whose retry could apply it after a commit sent later.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(COMMIT_SOURCE)
            .arg(self.keys.len() + 1)
            .arg(&lock_key);
        for key in &self.keys {
            cmd.arg(key);
        }
        cmd.arg(&token);
        let mut start = 0;
        for &end in &self.ends {
            cmd.arg(&self.data[start..end]);
            start = end;
        }
        cmd.query_async(&mut con).await
    }
}
