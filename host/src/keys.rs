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
    format!("{group}_consumer-{nr}")
}

/// The default dead-letter stream of `group`: `<group>-dead-letter`.
pub fn dead_letter_stream(group: &str) -> String {
    format!("{group}{DEAD_LETTER_SUFFIX}")
}

/// The group whose default dead-letter stream is `stream`, if it is one.
pub fn dead_letter_group(stream: &str) -> Option<&str> {
    stream
        .strip_suffix(DEAD_LETTER_SUFFIX)
        .filter(|g| !g.is_empty())
}

/// The pool-level lock key of garbage collection.
pub const GC_LOCK: &str = "beehive:gc-lock";

/// The channel that announces deployments (message: the group name).
pub const DEPLOY_CHANNEL: &str = "beehive:deploy";

/// `beehive:component:<group>`: the hash of `current` and `previous` digests.
pub fn component_key(group: &str) -> String {
    format!("beehive:component:{group}")
}

/// `beehive:component-bytes:<digest>`: a deployed component's bytes.
pub fn component_bytes_key(digest: &str) -> String {
    format!("beehive:component-bytes:{digest}")
}

/// Prefix of the keys `beehive:hosts:<group>:<host>` = the digest a host runs for a group
/// (they expire when the host stops advertising).
pub const HOSTS_PREFIX: &str = "beehive:hosts:";

/// The key under which `host` advertises the digest it runs for `group`.
pub fn host_key(group: &str, host: &str) -> String {
    format!("{HOSTS_PREFIX}{group}:{host}")
}

/// The pattern matching every host key of `group`.
pub fn host_key_prefix(group: &str) -> String {
    format!("{HOSTS_PREFIX}{group}:")
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
    format!("beehive:fleet:{group}")
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
    format!("beehive:outbox:{group}")
}

/// The lock that lets one relay at a time move the entries of `group`'s outbox.
pub fn relay_lock(group: &str) -> String {
    format!("beehive:relay-lock:{group}")
}

/// The outbox of redrives from `dead_letter_stream` to streams of another commit domain
/// (it lives beside the dead-letter stream; `beehive redrive` relays it).
pub fn redrive_outbox(dead_letter_stream: &str) -> String {
    format!("beehive:outbox:redrive:{dead_letter_stream}")
}

/// The lock of the relay of [`redrive_outbox`].
pub fn redrive_relay_lock(dead_letter_stream: &str) -> String {
    format!("beehive:relay-lock:redrive:{dead_letter_stream}")
}

/// The hash of dedupe marks for outputs relayed to `stream` (field: the outbox, value:
/// the last outbox entry ID written to `stream`). It lives in the slot of `stream`: a
/// stream name with a hash tag keeps it, any other name becomes the tag.
pub fn relay_marks(stream: &str) -> String {
    if hash_tag(stream).is_some() {
        format!("beehive:relayed:{stream}")
    } else {
        format!("beehive:relayed:{{{stream}}}")
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
