//! The atomic commit of a handled batch: publishes, acknowledgements and dead-letters in one
//! server-side script that first checks the consumer still owns its lock.
//!
//! A Lua script is as atomic as `MULTI`/`EXEC` (Redis runs it without interleaving other
//! commands) and, unlike a transaction on a multiplexed connection, it can check the lock
//! token and abort before writing anything. A crash before the script runs commits nothing;
//! after it, everything.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;

use crate::event::{EntryId, Event, NewEvent};

/// Error code the script raises when the lock is not ours any more.
pub(crate) const LOCK_LOST: &str = "BEEHIVE_LOCK_LOST";

/// How many IDs go into one XACK call inside the script (Lua's `unpack` has limits).
const ACK_CHUNK: usize = 1000;

static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
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
"#,
    )
});

/// The writes one batch commits: build it, then [`run`](CommitBatch::run) it.
#[derive(Default)]
pub(crate) struct CommitBatch {
    keys: Vec<String>,
    key_index: HashMap<String, usize>,
    args: Vec<Vec<u8>>,
    ops: usize,
}

/// Metadata fields added to a dead-lettered entry.
pub mod dead_letter_fields {
    /// The stream the entry came from.
    pub const ORIGIN_STREAM: &str = "beehive.origin-stream";
    /// The entry's ID in that stream.
    pub const ORIGIN_ID: &str = "beehive.origin-id";
    /// The consumer group that gave up on it.
    pub const GROUP: &str = "beehive.group";
    /// Why it was dead-lettered.
    pub const REASON: &str = "beehive.reason";
    /// How many times it had been delivered.
    pub const DELIVERIES: &str = "beehive.deliveries";
    /// How many times it was redriven from a dead-letter stream (kept across cycles).
    pub const REDRIVES: &str = "beehive.redrives";
    /// The fields a dead-letter adds, which a redrive strips again.
    pub const ADDED: [&str; 5] = [ORIGIN_STREAM, ORIGIN_ID, GROUP, REASON, DELIVERIES];
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

    fn op(&mut self, op: &str, key: &str, args: Vec<Vec<u8>>) {
        let k = self.key(key);
        self.args.push(op.as_bytes().to_vec());
        self.args.push(k.to_string().into_bytes());
        self.args.push(args.len().to_string().into_bytes());
        self.args.extend(args);
        self.ops += 1;
    }

    /// Adds an `XADD` of `event`.
    pub(crate) fn publish(&mut self, event: &NewEvent) {
        let args = event
            .fields()
            .flat_map(|(k, v)| [k.to_vec(), v.to_vec()])
            .collect();
        self.op("A", &event.stream, args);
    }

    /// Adds `XACK <stream> <group> <ids...>`.
    pub(crate) fn ack(&mut self, stream: &str, group: &str, ids: &[EntryId]) {
        for chunk in ids.chunks(ACK_CHUNK) {
            let mut args = Vec::with_capacity(chunk.len() + 1);
            args.push(group.as_bytes().to_vec());
            args.extend(chunk.iter().map(|id| id.to_string().into_bytes()));
            self.op("K", stream, args);
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
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(2 * (event.meta.len() + 6));
        if let Some(body) = &event.body {
            args.push(b"s".to_vec());
            args.push(body.clone());
        }
        for (k, v) in &event.meta {
            if !dead_letter_fields::ADDED.contains(&k.as_str()) {
                args.push(k.as_bytes().to_vec());
                args.push(v.as_bytes().to_vec());
            }
        }
        for (k, v) in [
            (ORIGIN_STREAM, event.stream().to_string()),
            (ORIGIN_ID, event.id()),
            (GROUP, group.to_string()),
            (REASON, reason.to_string()),
            (DELIVERIES, event.deliveries.to_string()),
        ] {
            args.push(k.as_bytes().to_vec());
            args.push(v.into_bytes());
        }
        self.op("A", dead_letter_stream, args);
        self.ack(event.stream(), group, &[event.id]);
    }

    /// Runs the batch atomically. With a `lock`, nothing is written unless `lock.0` still
    /// holds token `lock.1`; then the error has code [`LOCK_LOST`]. Returns the IDs of the
    /// XADDs in order (publishes and dead-letters).
    pub(crate) async fn run<C: redis::aio::ConnectionLike>(
        &self,
        con: &mut C,
        lock: Option<(&str, &str)>,
    ) -> redis::RedisResult<Vec<String>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let (lock_key, token) = lock.unwrap_or(("", ""));
        let mut invocation = COMMIT.key(lock_key);
        for key in &self.keys {
            invocation.key(key);
        }
        invocation.arg(token);
        for arg in &self.args {
            invocation.arg(arg.as_slice());
        }
        invocation.invoke_async(con).await
    }
}
