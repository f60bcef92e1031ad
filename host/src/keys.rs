//! Every Redis key, channel, consumer name and entry field that Beehive derives, in one
//! place (DESIGN.md, "Redis keys and names").
//!
//! Nothing else in the crate formats a key: a module that needs one asks this module, so
//! a reader (or another language's tooling) finds the whole naming contract here.
//!
//! | what | format |
//! |---|---|
//! | consumer name | `consumer-<nr>` |
//! | single-runner lock of a consumer | `<group>_consumer-<nr>` |
//! | default dead-letter stream of a group | `<group>-dead-letter` |
//! | GC lock of a pool | `beehive:gc-lock` |
//! | deploy notifications (pub/sub channel) | `beehive:deploy` |
//! | deployed component of a group (hash `current`, `previous`) | `beehive:component:<group>` |
//! | a deployed component's bytes | `beehive:component-bytes:<sha256>` |
//! | what a host runs for a group | `beehive:hosts:<group>:<host>` |
//! | the hosts running a group, with their last heartbeat (a sorted set, score: ms) | `beehive:fleet:<group>` |
//! | a consumer lock's value | `<host>/<random>`: the host holding it, and a random token |
//! | outbox of a group's outputs to other domains (a stream) | `beehive:outbox:<group>` |
//! | the relay's lock of that outbox | `beehive:relay-lock:<group>` |
//! | outbox of redrives to another domain, and its relay's lock | `beehive:outbox:redrive:<dead-letter-stream>`, `beehive:relay-lock:redrive:<dead-letter-stream>` |
//! | dedupe marks of the outputs relayed to a stream (a hash) | `beehive:relayed:<stream>`, with the stream's hash tag |
//! | last commit run by a consumer on a cluster (`<series>:<seq>`, 10 minutes) | `beehive:commit-mark:<lock key>` |
//!
//! **On a Redis Cluster pool** the keys derived for a group's commit domain carry the
//! domain's hash tag right before the name they are derived from, so they share the slot
//! of the group's streams: `{<tag>}<group>_consumer-<nr>`, `{<tag>}<group>-dead-letter`,
//! `beehive:outbox:{<tag>}<group>`, `beehive:relay-lock:{<tag>}<group>`, and the group's
//! records `beehive:component:{<tag>}<group>`, `beehive:component-bytes:{<tag>}<digest>`,
//! `beehive:hosts:{<tag>}<group>:<host>`, `beehive:fleet:{<tag>}<group>`. The tag is the
//! hash tag of the group's streams (`orders` for `{orders}-created`), or the stream's own
//! name when it has none ([`slot_tag`]). Garbage collection locks each stream:
//! `beehive:gc-lock:{<tag>}<stream>`. A standalone pool's keys carry no tag.

/// The prefix reserved for Beehive's own keys: no stream or group may start with it.
pub const RESERVED_PREFIX: &str = "beehive:";

/// Suffix of a group's default dead-letter stream.
const DEAD_LETTER_SUFFIX: &str = "-dead-letter";

/// The name of consumer number `nr`: `consumer-<nr>`.
pub fn consumer_name(nr: u32) -> String {
    format!("consumer-{nr}")
}

/// The number in a consumer name `consumer-<nr>`, or `None` for any other name.
pub fn consumer_number(name: &str) -> Option<u32> {
    name.strip_prefix("consumer-")?.parse().ok()
}

/// The single-runner lock key of consumer `nr` of `group`: `<group>_consumer-<nr>`.
pub fn lock_key(group: &str, nr: u32) -> String {
    lock_key_in(None, group, nr)
}

/// Where a consumer on a cluster pool records the last commit it ran, so a resent commit
/// is not run twice: `beehive:commit-mark:<lock key>` (in the lock's slot: the lock key's
/// hash tag is the first in it).
pub fn commit_mark(lock_key: &str) -> String {
    format!("{RESERVED_PREFIX}commit-mark:{lock_key}")
}

/// [`lock_key`] in the slot of `tag` (a cluster pool): `{<tag>}<group>_consumer-<nr>`.
pub fn lock_key_in(tag: Option<&str>, group: &str, nr: u32) -> String {
    format!("{}{group}_consumer-{nr}", Tag(tag))
}

/// The default dead-letter stream of `group`: `<group>-dead-letter`.
pub fn dead_letter_stream(group: &str) -> String {
    dead_letter_stream_in(None, group)
}

/// [`dead_letter_stream`] in the slot of `tag` (a cluster pool): `{<tag>}<group>-dead-letter`.
pub fn dead_letter_stream_in(tag: Option<&str>, group: &str) -> String {
    format!("{}{group}{DEAD_LETTER_SUFFIX}", Tag(tag))
}

/// The group whose default dead-letter stream is `stream`, if it is one (with or without
/// a cluster pool's leading hash tag).
pub fn dead_letter_group(stream: &str) -> Option<&str> {
    let stream = strip_leading_tag(stream);
    stream
        .strip_suffix(DEAD_LETTER_SUFFIX)
        .filter(|g| !g.is_empty())
}

/// `name` without a leading `{<tag>}` (what the `_in` functions put before a name).
fn strip_leading_tag(name: &str) -> &str {
    if name.starts_with('{')
        && let Some(close) = name.find('}')
        && close > 1
    {
        return &name[close + 1..];
    }
    name
}

/// Formats `{<tag>}`, or nothing for a standalone pool's keys.
struct Tag<'a>(Option<&'a str>);

impl std::fmt::Display for Tag<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(tag) => write!(f, "{{{tag}}}"),
            None => Ok(()),
        }
    }
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of its hash tag, or of the whole key
/// when it has none, modulo 16384), as the server computes it.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match hash_tag(key) {
        Some(tag) => tag.as_bytes(),
        None => bytes,
    };
    crc16_xmodem(hashed) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A hash tag that puts a key in the slot of `key`: `key`'s own hash tag, or `key` itself
/// when it has none (and holds no `}`), or else the shortest decimal number with that slot.
pub fn slot_tag(key: &str) -> String {
    if let Some(tag) = hash_tag(key) {
        return tag.to_string();
    }
    if !key.contains('}') {
        return key.to_string();
    }
    let wanted = slot(key);
    (0u32..)
        .map(|n| n.to_string())
        .find(|n| slot(n) == wanted)
        .expect("every slot has a decimal tag")
}

/// The pool-level lock key of garbage collection (a standalone pool).
pub const GC_LOCK: &str = "beehive:gc-lock";

/// The lock of garbage collection of `stream` on a cluster pool, in the stream's slot:
/// `beehive:gc-lock:{<tag>}<stream>`.
pub fn gc_lock_of_stream(stream: &str) -> String {
    format!("beehive:gc-lock:{}{stream}", Tag(Some(&slot_tag(stream))))
}

/// The channel that announces deployments (message: the group name).
pub const DEPLOY_CHANNEL: &str = "beehive:deploy";

/// `beehive:component:<group>`: the hash of `current` and `previous` digests.
pub fn component_key(group: &str) -> String {
    component_key_in(None, group)
}

/// [`component_key`] in the slot of `tag`.
pub fn component_key_in(tag: Option<&str>, group: &str) -> String {
    format!("beehive:component:{}{group}", Tag(tag))
}

/// `beehive:component-bytes:<digest>`: a deployed component's bytes.
pub fn component_bytes_key(digest: &str) -> String {
    component_bytes_key_in(None, digest)
}

/// [`component_bytes_key`] in the slot of `tag` (beside its group's [`component_key_in`]).
pub fn component_bytes_key_in(tag: Option<&str>, digest: &str) -> String {
    format!("beehive:component-bytes:{}{digest}", Tag(tag))
}

/// Prefix of the keys `beehive:hosts:<group>:<host>` = the digest a host runs for a group
/// (they expire when the host stops advertising).
pub const HOSTS_PREFIX: &str = "beehive:hosts:";

/// The key under which `host` advertises the digest it runs for `group`.
pub fn host_key(group: &str, host: &str) -> String {
    host_key_in(None, group, host)
}

/// [`host_key`] in the slot of `tag`.
pub fn host_key_in(tag: Option<&str>, group: &str, host: &str) -> String {
    format!("{}{host}", host_key_prefix_in(tag, group))
}

/// The prefix of every host key of `group`.
pub fn host_key_prefix(group: &str) -> String {
    host_key_prefix_in(None, group)
}

/// [`host_key_prefix`] in the slot of `tag`.
pub fn host_key_prefix_in(tag: Option<&str>, group: &str) -> String {
    format!("{HOSTS_PREFIX}{}{group}:", Tag(tag))
}

/// This process's identity as a host (`beehive:hosts:*`, `beehive:fleet:*`, lock values):
/// `<hostname>:<pid>`.
pub fn host_id() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{hostname}:{}", std::process::id())
}

/// The hosts running `group` (a sorted set: member = host, score = its last heartbeat in
/// server milliseconds).
pub fn fleet(group: &str) -> String {
    fleet_in(None, group)
}

/// [`fleet`] in the slot of `tag`.
pub fn fleet_in(tag: Option<&str>, group: &str) -> String {
    format!("beehive:fleet:{}{group}", Tag(tag))
}

/// A lock value: the holder (`owner`, e.g. a host) and a random token that proves it.
pub fn lock_value(owner: &str, token: &str) -> String {
    format!("{owner}/{token}")
}

/// The holder named in a lock value (what [`lock_value`] wrote), if any.
pub fn lock_owner(value: &str) -> Option<&str> {
    value
        .rsplit_once('/')
        .map(|(owner, _)| owner)
        .filter(|o| !o.is_empty())
}

/// The client name of a consumer's read-ahead connection (`CLIENT SETNAME`); Redis takes
/// printable ASCII only, so anything else becomes `_`.
pub fn read_ahead_client_name(group: &str, consumer: &str) -> String {
    format!("beehive-read-ahead:{group}:{consumer}")
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

/// The outbox of `group`: a stream, in the group's own commit domain, holding its outputs
/// to streams of other domains until the relay has moved them.
pub fn outbox(group: &str) -> String {
    outbox_in(None, group)
}

/// [`outbox`] in the slot of `tag`.
pub fn outbox_in(tag: Option<&str>, group: &str) -> String {
    format!("beehive:outbox:{}{group}", Tag(tag))
}

/// The lock that lets one relay at a time move the entries of `group`'s outbox.
pub fn relay_lock(group: &str) -> String {
    relay_lock_in(None, group)
}

/// [`relay_lock`] in the slot of `tag`.
pub fn relay_lock_in(tag: Option<&str>, group: &str) -> String {
    format!("beehive:relay-lock:{}{group}", Tag(tag))
}

/// The outbox of redrives from `dead_letter_stream` to streams of another commit domain
/// (it lives beside the dead-letter stream; `beehive redrive` relays it). `clustered`:
/// the pool is a cluster, and the key takes the dead-letter stream's slot.
pub fn redrive_outbox(dead_letter_stream: &str, clustered: bool) -> String {
    let tag = clustered.then(|| slot_tag(dead_letter_stream));
    format!(
        "beehive:outbox:redrive:{}{dead_letter_stream}",
        Tag(tag.as_deref())
    )
}

/// The lock of the relay of [`redrive_outbox`].
pub fn redrive_relay_lock(dead_letter_stream: &str, clustered: bool) -> String {
    let tag = clustered.then(|| slot_tag(dead_letter_stream));
    format!(
        "beehive:relay-lock:redrive:{}{dead_letter_stream}",
        Tag(tag.as_deref())
    )
}

/// The hash of dedupe marks for outputs relayed to `stream` (field: the outbox, value:
/// the last outbox entry ID written to `stream`). It lives in the slot of `stream`: a
/// stream name with a hash tag keeps it, any other name becomes the tag.
pub fn relay_marks(stream: &str) -> String {
    if hash_tag(stream).is_some() {
        format!("beehive:relayed:{stream}")
    } else {
        format!("beehive:relayed:{}", Tag(Some(&slot_tag(stream))))
    }
}

/// The hash tag of a key (Redis Cluster: the part between the first `{` and the next `}`,
/// when not empty), which decides its slot.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The field of an outbox entry that names the stream its output goes to; the fields that
/// follow are the output's own.
pub const OUTBOX_TARGET: &str = "beehive.target";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(consumer_name(3), "consumer-3");
        assert_eq!(consumer_number("consumer-3"), Some(3));
        assert_eq!(consumer_number("worker-3"), None);
        assert_eq!(lock_key("billing", 2), "billing_consumer-2");
        assert_eq!(dead_letter_stream("billing"), "billing-dead-letter");
        assert_eq!(dead_letter_group("billing-dead-letter"), Some("billing"));
        assert_eq!(dead_letter_group("-dead-letter"), None);
        assert_eq!(dead_letter_group("billing"), None);
        assert_eq!(component_key("g"), "beehive:component:g");
        assert_eq!(component_bytes_key("ab"), "beehive:component-bytes:ab");
        assert_eq!(host_key("g", "h:1"), "beehive:hosts:g:h:1");
        assert!(host_key("g", "h").starts_with(&host_key_prefix("g")));
        assert_eq!(
            read_ahead_client_name("a b", "consumer-1"),
            "beehive-read-ahead:a_b:consumer-1"
        );
        assert_eq!(outbox("g"), "beehive:outbox:g");
        assert_eq!(fleet("g"), "beehive:fleet:g");
        assert_eq!(lock_owner(&lock_value("h:1", "abc")), Some("h:1"));
        assert_eq!(lock_owner("abc"), None);
        assert_eq!(relay_lock("g"), "beehive:relay-lock:g");
        for key in [GC_LOCK, DEPLOY_CHANNEL, HOSTS_PREFIX] {
            assert!(key.starts_with(RESERVED_PREFIX));
        }
    }

    #[test]
    fn slots_are_the_servers() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }

    #[test]
    fn tagged_keys_share_the_slot_of_their_domain() {
        for stream in ["{orders}-created", "stream-a", "a}b", "a{b", "x{}y"] {
            let tag = slot_tag(stream);
            assert_eq!(slot(&format!("{{{tag}}}")), slot(stream), "{stream}");
            let t = Some(tag.as_str());
            for key in [
                lock_key_in(t, "{g}x", 1),
                dead_letter_stream_in(t, "g"),
                outbox_in(t, "g"),
                relay_lock_in(t, "g"),
                component_key_in(t, "g"),
                component_bytes_key_in(t, "ab"),
                host_key_in(t, "g", "h:1"),
                fleet_in(t, "g"),
                gc_lock_of_stream(stream),
                redrive_outbox(stream, true),
                relay_marks(stream),
            ] {
                assert_eq!(slot(&key), slot(stream), "{key} for {stream}");
            }
        }
        assert_eq!(lock_key_in(Some("o"), "g", 2), "{o}g_consumer-2");
        assert_eq!(
            slot(&commit_mark(&lock_key_in(Some("o"), "g", 2))),
            slot("{o}-created"),
            "a commit mark lives in its lock's slot"
        );
        assert_eq!(dead_letter_group("{o}g-dead-letter"), Some("g"));
        assert_eq!(outbox_in(Some("o"), "g"), "beehive:outbox:{o}g");
        assert_eq!(redrive_outbox("d", false), "beehive:outbox:redrive:d");
    }

    #[test]
    fn relay_marks_share_the_slot_of_their_stream() {
        assert_eq!(hash_tag("{orders}-created"), Some("orders"));
        assert_eq!(hash_tag("a{}b"), None);
        assert_eq!(hash_tag("plain"), None);
        assert_eq!(
            relay_marks("{orders}-created"),
            "beehive:relayed:{orders}-created"
        );
        assert_eq!(relay_marks("stream-c"), "beehive:relayed:{stream-c}");
        assert_eq!(hash_tag(&relay_marks("stream-c")), Some("stream-c"));
        assert_eq!(
            hash_tag(&relay_marks("{orders}-paid")),
            hash_tag("{orders}-paid")
        );
    }
}
