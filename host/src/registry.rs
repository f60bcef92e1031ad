//! The registry: Redis pools, streams and their consumer groups, validated once at start-up.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::address::RedisAddress;
use crate::error::{Error, List, Result};

/// Collects pools and streams; [`validate`](Registry::validate) turns it into a
/// [`ValidatedRegistry`] or explains what is wrong.
///
/// ```
/// # async fn example() -> beehive::Result<()> {
/// let mut registry = beehive::Registry::new();
/// registry.register_redis("localhost:6379", "", 0, "default");
/// registry.register_redis_stream("stream-a", "default", &["read-group-a", "read-group-ab"]);
/// registry.register_redis_stream("stream-b", "default", &["read-group-ab"]);
/// let validated = registry.validate().await?;
/// let engine = validated.create_engine();
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pools: Vec<PoolRegistration>,
    streams: Vec<StreamRegistration>,
}

#[derive(Debug, Clone)]
struct PoolRegistration {
    name: String,
    address: String,
    password: String,
    db: i64,
}

#[derive(Debug, Clone)]
struct StreamRegistration {
    name: String,
    pool: String,
    groups: Vec<String>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a Redis server as pool `pool` (an empty name means `"default"`).
    ///
    /// `address` is `host:port`, a `redis://`/`rediss://` URL (user and password allowed) or a
    /// unix socket path; a non-empty `password` and a non-zero `db` override the address's.
    /// Nothing is checked or connected until [`validate`](Self::validate).
    pub fn register_redis(
        &mut self,
        address: &str,
        password: &str,
        db: i64,
        pool: &str,
    ) -> &mut Self {
        let name = if pool.is_empty() { "default" } else { pool };
        self.pools.push(PoolRegistration {
            name: name.to_string(),
            address: address.to_string(),
            password: password.to_string(),
            db,
        });
        self
    }

    /// Registers stream `name` on `pool`, read by the consumer groups `groups`.
    pub fn register_redis_stream<S: AsRef<str>>(
        &mut self,
        name: &str,
        pool: &str,
        groups: &[S],
    ) -> &mut Self {
        let pool = if pool.is_empty() { "default" } else { pool };
        self.streams.push(StreamRegistration {
            name: name.to_string(),
            pool: pool.to_string(),
            groups: groups.iter().map(|g| g.as_ref().to_string()).collect(),
        });
        self
    }

    /// Checks the registry and freezes it.
    ///
    /// Fails (never panics) on: a stream registered twice, in one pool or across pools; a
    /// stream on an unknown pool; a pool registered twice; a group whose streams live in
    /// different pools; an empty group list; an invalid address or db; an empty or invalid
    /// name. Nothing connects to Redis here: connections are opened on first use.
    pub async fn validate(self) -> Result<ValidatedRegistry> {
        self.validate_now()
    }

    pub(crate) fn validate_now(self) -> Result<ValidatedRegistry> {
        let mut pools = BTreeMap::new();
        for pool in &self.pools {
            check_name("pool", &pool.name)?;
            if pools.contains_key(&pool.name) {
                return Err(Error::Validation(format!(
                    "redis pool {} already exists",
                    pool.name
                )));
            }
            let db = (pool.db != 0).then_some(pool.db);
            let address = RedisAddress::parse(&pool.address, &pool.password, db)
                .map_err(|e| Error::Validation(format!("redis pool {}: {e}", pool.name)))?;
            pools.insert(
                pool.name.clone(),
                PoolDef {
                    name: pool.name.clone(),
                    address,
                },
            );
        }
        let mut streams: BTreeMap<String, StreamDef> = BTreeMap::new();
        let mut groups: BTreeMap<String, GroupDef> = BTreeMap::new();
        for stream in &self.streams {
            check_name("stream", &stream.name)?;
            if streams.contains_key(&stream.name) {
                return Err(Error::Validation(format!(
                    "stream with name {} already exists",
                    stream.name
                )));
            }
            if !pools.contains_key(&stream.pool) {
                return Err(Error::Validation(format!(
                    "stream {} uses unknown redis pool {}",
                    stream.name, stream.pool
                )));
            }
            if stream.groups.is_empty() {
                return Err(Error::Validation(format!(
                    "stream {} has no consumer groups: register at least one",
                    stream.name
                )));
            }
            let mut stream_groups: Vec<String> = Vec::new();
            for group in &stream.groups {
                check_name("consumer group", group)?;
                if stream_groups.contains(group) {
                    return Err(Error::Validation(format!(
                        "stream {} lists consumer group {group} twice",
                        stream.name
                    )));
                }
                stream_groups.push(group.clone());
                let def = groups.entry(group.clone()).or_insert_with(|| GroupDef {
                    name: group.clone(),
                    pool: stream.pool.clone(),
                    streams: Vec::new(),
                });
                if def.pool != stream.pool {
                    return Err(Error::Validation(format!(
                        "consumer group {group} reads streams in different redis pools ({} in {}, {} in {}): a group's streams must share one pool",
                        List(&def.streams),
                        def.pool,
                        stream.name,
                        stream.pool
                    )));
                }
                def.streams.push(stream.name.clone());
            }
            streams.insert(
                stream.name.clone(),
                StreamDef {
                    name: stream.name.clone(),
                    pool: stream.pool.clone(),
                    groups: stream_groups,
                },
            );
        }
        Ok(ValidatedRegistry {
            inner: Arc::new(Topology {
                pools,
                streams,
                groups,
            }),
        })
    }
}

/// Names may not be empty, contain white space or control characters, or use the
/// reserved `beehive:` prefix.
fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Validation(format!("{kind} name is empty")));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Validation(format!(
            "{kind} name {name:?} is invalid: white space and control characters are not allowed"
        )));
    }
    if name.starts_with(crate::keys::RESERVED_PREFIX) {
        return Err(Error::Validation(format!(
            "{kind} name {name:?} is invalid: the prefix beehive: is reserved"
        )));
    }
    Ok(())
}

/// A commit domain: what one Redis transaction can touch. For a standalone pool that is
/// the pool; writes to streams of another domain go through the writer's outbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain {
    /// The pool.
    pub pool: String,
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pool {}", self.pool)
    }
}

/// A registered Redis pool.
#[derive(Debug, Clone)]
pub struct PoolDef {
    /// Pool name.
    pub name: String,
    /// Where its server is.
    pub address: RedisAddress,
}

/// A registered stream.
#[derive(Debug, Clone)]
pub struct StreamDef {
    /// Stream name (the Redis key).
    pub name: String,
    /// The pool it lives in.
    pub pool: String,
    /// The consumer groups that read it, in registration order.
    pub groups: Vec<String>,
}

/// A registered consumer group.
#[derive(Debug, Clone)]
pub struct GroupDef {
    /// Group name.
    pub name: String,
    /// The pool all its streams live in.
    pub pool: String,
    /// The streams it reads, in registration order.
    pub streams: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Topology {
    pub(crate) pools: BTreeMap<String, PoolDef>,
    pub(crate) streams: BTreeMap<String, StreamDef>,
    pub(crate) groups: BTreeMap<String, GroupDef>,
}

/// A registry that passed validation: the topology is consistent and immutable.
#[derive(Debug, Clone)]
pub struct ValidatedRegistry {
    pub(crate) inner: Arc<Topology>,
}

impl ValidatedRegistry {
    /// The commit domain `stream` is written in by a writer whose own domain is `from`:
    /// a registered stream's, or for an unregistered one (a default dead-letter stream, an
    /// ad-hoc stream) the writer's own.
    pub fn stream_domain(&self, stream: &str, from: &Domain) -> Domain {
        match self.stream(stream) {
            Some(def) => Domain {
                pool: def.pool.clone(),
            },
            None => from.clone(),
        }
    }

    /// True when `stream` is written in another commit domain than the writer's, whose
    /// streams live in `pool` (then outputs to it go through an outbox). Unregistered
    /// streams are written in the writer's own domain. Allocation-free: it is asked per
    /// output of every batch.
    pub fn crosses_domain(&self, stream: &str, pool: &str) -> bool {
        self.stream(stream).is_some_and(|def| def.pool != pool)
    }

    /// The commit domains whose streams `group` reads (one per pool: a group's streams
    /// share a pool).
    pub fn group_domains(&self, group: &str) -> Vec<Domain> {
        self.group(group)
            .map(|g| {
                vec![Domain {
                    pool: g.pool.clone(),
                }]
            })
            .unwrap_or_default()
    }

    /// Every registered pool, by name.
    pub fn pools(&self) -> impl Iterator<Item = &PoolDef> {
        self.inner.pools.values()
    }

    /// Every registered stream, by name.
    pub fn streams(&self) -> impl Iterator<Item = &StreamDef> {
        self.inner.streams.values()
    }

    /// Every consumer group, by name.
    pub fn groups(&self) -> impl Iterator<Item = &GroupDef> {
        self.inner.groups.values()
    }

    /// The stream called `name`, if registered.
    pub fn stream(&self, name: &str) -> Option<&StreamDef> {
        self.inner.streams.get(name)
    }

    /// The group called `name`, if registered.
    pub fn group(&self, name: &str) -> Option<&GroupDef> {
        self.inner.groups.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(registry: Registry) -> String {
        registry.validate_now().unwrap_err().to_string()
    }

    #[test]
    fn duplicate_streams_are_refused_in_one_pool_and_across_pools() {
        let mut r = Registry::new();
        r.register_redis("localhost:6379", "", 0, "default");
        r.register_redis_stream("stream-a", "default", &["g"]);
        r.register_redis_stream("stream-a", "default", &["h"]);
        assert_eq!(err(r), "stream with name stream-a already exists");

        let mut r = Registry::new();
        r.register_redis("localhost:6379", "", 0, "default");
        r.register_redis("localhost:6380", "", 0, "second");
        r.register_redis_stream("stream-a", "default", &["g"]);
        r.register_redis_stream("stream-a", "second", &["h"]);
        assert_eq!(err(r), "stream with name stream-a already exists");
    }

    #[test]
    fn each_mistake_has_its_own_message() {
        let mut r = Registry::new();
        r.register_redis("localhost:6379", "", 0, "default");
        r.register_redis_stream("stream-a", "other", &["g"]);
        assert_eq!(err(r), "stream stream-a uses unknown redis pool other");

        let mut r = Registry::new();
        r.register_redis("localhost:6379", "", 0, "default");
        r.register_redis("localhost:6380", "", 0, "second");
        r.register_redis_stream("stream-a", "default", &["g"]);
        r.register_redis_stream("stream-b", "second", &["g"]);
        assert!(err(r).contains("consumer group g reads streams in different redis pools"));

        let mut r = Registry::new();
        r.register_redis("localhost:6379", "", 0, "default");
        r.register_redis_stream::<&str>("stream-a", "default", &[]);
        assert!(err(r).contains("stream stream-a has no consumer groups"));

        let mut r = Registry::new();
        r.register_redis("localhost", "", 0, "default");
        assert!(err(r).starts_with("redis pool default: invalid Redis address"));

        let mut r = Registry::new();
        r.register_redis("localhost:6379", "", -1, "default");
        assert!(err(r).contains("invalid Redis db -1"));

        let mut r = Registry::new();
        r.register_redis("localhost:6379", "", 0, "default");
        r.register_redis_stream("", "default", &["g"]);
        assert_eq!(err(r), "stream name is empty");

        let mut r = Registry::new();
        r.register_redis("localhost:6379", "", 0, "default");
        r.register_redis_stream("a b", "default", &["g"]);
        assert!(err(r).contains("white space"));
    }

    #[test]
    fn groups_collect_their_streams() {
        let mut r = Registry::new();
        r.register_redis("localhost:6379", "", 0, "");
        r.register_redis_stream("stream-a", "", &["read-group-a", "read-group-ab"]);
        r.register_redis_stream("stream-b", "default", &["read-group-ab"]);
        let v = r.validate_now().unwrap();
        assert_eq!(
            v.group("read-group-ab").unwrap().streams,
            ["stream-a", "stream-b"]
        );
        assert_eq!(v.group("read-group-a").unwrap().pool, "default");
    }
}
