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
    /// Seed nodes of a Redis Cluster (then `address` is unused).
    cluster: Option<Vec<String>>,
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
            cluster: None,
        });
        self
    }

    /// Registers a Redis Cluster as pool `pool` (an empty name means `"default"`), reached
    /// through any of its `seeds` (`host:port` or `redis://`/`rediss://` URLs, with user and
    /// password as for [`register_redis`](Self::register_redis)); the client follows the
    /// cluster's topology from there (MOVED/ASK, failover, resharding).
    ///
    /// A cluster has no db number. Streams of a consumer group must share one hash slot:
    /// give them one hash tag (`{orders}-created`, `{orders}-paid`).
    pub fn register_redis_cluster<S: AsRef<str>>(&mut self, seeds: &[S], pool: &str) -> &mut Self {
        let name = if pool.is_empty() { "default" } else { pool };
        self.pools.push(PoolRegistration {
            name: name.to_string(),
            address: String::new(),
            password: String::new(),
            db: 0,
            cluster: Some(seeds.iter().map(|s| s.as_ref().to_string()).collect()),
        });
        self
    }

    /// Sets the password of the pool registered as `pool` (for a cluster: of every node),
    /// overriding the one in its address.
    pub fn set_password(&mut self, pool: &str, password: &str) -> &mut Self {
        if let Some(p) = self.pools.iter_mut().rev().find(|p| p.name == pool) {
            p.password = password.to_string();
        }
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
            let def = match &pool.cluster {
                None => {
                    let db = (pool.db != 0).then_some(pool.db);
                    let address = RedisAddress::parse(&pool.address, &pool.password, db)
                        .map_err(|e| Error::Validation(format!("redis pool {}: {e}", pool.name)))?;
                    PoolDef {
                        name: pool.name.clone(),
                        address,
                        cluster: None,
                    }
                }
                Some(seeds) => {
                    let seeds = parse_seeds(seeds, &pool.password)
                        .map_err(|e| Error::Validation(format!("redis pool {}: {e}", pool.name)))?;
                    PoolDef {
                        name: pool.name.clone(),
                        address: seeds[0].clone(),
                        cluster: Some(seeds),
                    }
                }
            };
            pools.insert(pool.name.clone(), def);
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
                let clustered = pools[&stream.pool].cluster.is_some();
                let def = groups.entry(group.clone()).or_insert_with(|| GroupDef {
                    name: group.clone(),
                    pool: stream.pool.clone(),
                    streams: Vec::new(),
                    tag: clustered.then(|| crate::keys::slot_tag(&stream.name)),
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

/// Parses a cluster's seed list: at least one, each a TCP address or URL with no db.
fn parse_seeds(seeds: &[String], password: &str) -> std::result::Result<Vec<RedisAddress>, String> {
    if seeds.is_empty() {
        return Err("a cluster needs at least one seed node (host:port)".into());
    }
    seeds
        .iter()
        .map(|seed| {
            let address = RedisAddress::parse(seed, password, None)?;
            if address.db() != 0 {
                return Err(format!(
                    "cluster seed {address}: a Redis Cluster has no db number (it only has db 0)"
                ));
            }
            if matches!(
                address.connection_info().addr(),
                redis::ConnectionAddr::Unix(_)
            ) {
                return Err(format!(
                    "cluster seed {address}: expected host:port or a redis:// / rediss:// URL, not a unix socket"
                ));
            }
            Ok(address)
        })
        .collect()
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
/// the pool, for a cluster pool one hash slot of it; writes to streams of another domain
/// go through the writer's outbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain {
    /// The pool.
    pub pool: String,
    /// The hash slot, when the pool is a cluster.
    pub slot: Option<u16>,
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.slot {
            Some(slot) => write!(f, "pool {} slot {slot}", self.pool),
            None => write!(f, "pool {}", self.pool),
        }
    }
}

/// A registered Redis pool.
#[derive(Debug, Clone)]
pub struct PoolDef {
    /// Pool name.
    pub name: String,
    /// Where its server is (for a cluster: its first seed node).
    pub address: RedisAddress,
    /// The seed nodes, when the pool is a Redis Cluster.
    pub cluster: Option<Vec<RedisAddress>>,
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
    /// In a cluster pool, the hash tag of its first stream's slot, which the keys derived
    /// for the group carry (locks, outbox, default dead-letter stream, records); `None` on
    /// a standalone pool.
    pub tag: Option<String>,
}

/// The part of a group's streams that lives in one commit domain: a group on a standalone
/// pool has one; on a cluster pool, one per hash slot its streams use. Each is read with
/// its own `XREADGROUP`, committed on its own, and guarded by its own lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSlice {
    /// The hash tag of the slot (`None` on a standalone pool).
    pub tag: Option<String>,
    /// The group's streams in this domain, in registration order.
    pub streams: Vec<String>,
}

impl GroupSlice {
    /// The lock of consumer `nr` of `group` in this slice's domain.
    pub fn lock_key(&self, group: &str, nr: u32) -> String {
        crate::keys::lock_key_in(self.tag.as_deref(), group, nr)
    }

    /// The outbox of `group`'s outputs, from this slice, to other commit domains.
    pub fn outbox(&self, group: &str) -> String {
        crate::keys::outbox_in(self.tag.as_deref(), group)
    }

    /// The lock of the relay of [`outbox`](Self::outbox).
    pub fn relay_lock(&self, group: &str) -> String {
        crate::keys::relay_lock_in(self.tag.as_deref(), group)
    }
}

impl GroupDef {
    /// The group's streams by commit domain, in the order their first stream was
    /// registered: one slice on a standalone pool (or when all streams share a slot).
    pub fn slices(&self) -> Vec<GroupSlice> {
        let Some(first) = &self.tag else {
            return vec![GroupSlice {
                tag: None,
                streams: self.streams.clone(),
            }];
        };
        let mut slices: Vec<(u16, GroupSlice)> = Vec::new();
        for stream in &self.streams {
            let slot = crate::keys::slot(stream);
            match slices.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, slice)) => slice.streams.push(stream.clone()),
                None => {
                    let tag = if slices.is_empty() {
                        first.clone()
                    } else {
                        crate::keys::slot_tag(stream)
                    };
                    slices.push((
                        slot,
                        GroupSlice {
                            tag: Some(tag),
                            streams: vec![stream.clone()],
                        },
                    ));
                }
            }
        }
        slices.into_iter().map(|(_, slice)| slice).collect()
    }

    /// The slice that holds `stream`, if the group reads it.
    pub fn slice_of(&self, stream: &str) -> Option<GroupSlice> {
        self.slices()
            .into_iter()
            .find(|s| s.streams.iter().any(|x| x == stream))
    }

    /// The single-runner lock key of consumer `nr` (in the group's first domain; a group
    /// spanning slots holds one per slice: [`GroupSlice::lock_key`]).
    pub fn lock_key(&self, nr: u32) -> String {
        crate::keys::lock_key_in(self.tag.as_deref(), &self.name, nr)
    }

    /// The default dead-letter stream.
    pub fn default_dead_letter_stream(&self) -> String {
        crate::keys::dead_letter_stream_in(self.tag.as_deref(), &self.name)
    }

    /// The outbox of outputs to other commit domains.
    pub fn outbox(&self) -> String {
        crate::keys::outbox_in(self.tag.as_deref(), &self.name)
    }

    /// The lock of the relay of [`outbox`](Self::outbox).
    pub fn relay_lock(&self) -> String {
        crate::keys::relay_lock_in(self.tag.as_deref(), &self.name)
    }
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
        let pool = self.stream(stream).map_or(&from.pool, |def| &def.pool);
        self.domain_in(pool, stream)
    }

    /// The commit domain of `stream` when it lives in `pool`.
    fn domain_in(&self, pool: &str, stream: &str) -> Domain {
        Domain {
            pool: pool.to_string(),
            slot: self.is_cluster(pool).then(|| crate::keys::slot(stream)),
        }
    }

    /// True when the pool called `pool` is a Redis Cluster.
    pub fn is_cluster(&self, pool: &str) -> bool {
        self.inner
            .pools
            .get(pool)
            .is_some_and(|p| p.cluster.is_some())
    }

    /// True when `stream` is written in another commit domain than `from` (then outputs
    /// to it go through an outbox): another pool, or another slot of a cluster pool.
    /// Unregistered streams live in the writer's pool. Allocation-free: it is asked per
    /// output of every batch.
    pub fn crosses_domain(&self, stream: &str, from: &Domain) -> bool {
        let pool = self
            .stream(stream)
            .map_or(from.pool.as_str(), |def| &def.pool);
        pool != from.pool
            || from
                .slot
                .is_some_and(|slot| crate::keys::slot(stream) != slot)
    }

    /// The first commit domain whose streams `group` reads (where its default
    /// dead-letter stream and records live).
    pub fn group_domain(&self, group: &GroupDef) -> Domain {
        Domain {
            pool: group.pool.clone(),
            slot: group.tag.as_deref().map(crate::keys::slot),
        }
    }

    /// The commit domain of one slice of `group`.
    pub fn slice_domain(&self, group: &GroupDef, slice: &GroupSlice) -> Domain {
        Domain {
            pool: group.pool.clone(),
            slot: slice.tag.as_deref().map(crate::keys::slot),
        }
    }

    /// The commit domains whose streams `group` reads: one per pool (a group's streams
    /// share a pool), and on a cluster pool one per slot its streams use.
    pub fn group_domains(&self, group: &str) -> Vec<Domain> {
        self.group(group)
            .map(|g| {
                g.slices()
                    .iter()
                    .map(|slice| self.slice_domain(g, slice))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The default dead-letter stream of `group` (`<group>-dead-letter`, with the group's
    /// hash tag on a cluster pool).
    pub fn default_dead_letter_stream(&self, group: &str) -> String {
        match self.group(group) {
            Some(def) => def.default_dead_letter_stream(),
            None => crate::keys::dead_letter_stream(group),
        }
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
        assert_eq!(v.group("read-group-a").unwrap().tag, None);
        assert_eq!(
            v.group("read-group-a").unwrap().lock_key(1),
            "read-group-a_consumer-1"
        );
    }

    #[test]
    fn cluster_pools_put_each_group_in_one_slot() {
        let mut r = Registry::new();
        r.register_redis_cluster(&["127.0.0.1:7000", "127.0.0.1:7001"], "orders");
        r.register_redis("localhost:6379", "", 0, "default");
        r.register_redis_stream("{orders}-created", "orders", &["billing", "shipping"]);
        r.register_redis_stream("{orders}-paid", "orders", &["billing"]);
        r.register_redis_stream("audit", "orders", &["auditors"]);
        r.register_redis_stream("plain", "default", &["g"]);
        let v = r.validate_now().unwrap();
        assert!(v.is_cluster("orders") && !v.is_cluster("default"));
        let billing = v.group("billing").unwrap();
        assert_eq!(billing.tag.as_deref(), Some("orders"));
        assert_eq!(billing.lock_key(2), "{orders}billing_consumer-2");
        assert_eq!(billing.outbox(), "beehive:outbox:{orders}billing");
        assert_eq!(
            billing.default_dead_letter_stream(),
            "{orders}billing-dead-letter"
        );
        let domain = v.group_domain(billing);
        assert_eq!(domain.slot, Some(crate::keys::slot("orders")));
        assert_eq!(
            domain.to_string(),
            format!("pool orders slot {}", crate::keys::slot("orders"))
        );
        // Same slot: committed with the input; another slot or pool: through the outbox.
        assert!(!v.crosses_domain("{orders}-paid", &domain));
        assert!(!v.crosses_domain(&billing.default_dead_letter_stream(), &domain));
        assert!(v.crosses_domain("audit", &domain));
        assert!(v.crosses_domain("plain", &domain));
        assert!(v.crosses_domain("unregistered-elsewhere", &domain));
        assert_eq!(v.group("auditors").unwrap().tag.as_deref(), Some("audit"));
        assert_eq!(
            v.stream_domain("audit", &domain).slot,
            Some(crate::keys::slot("audit"))
        );
        assert_eq!(v.group_domain(v.group("g").unwrap()).slot, None);
        assert_eq!(v.group("g").unwrap().slices().len(), 1);
        assert_eq!(billing.slices().len(), 1);
    }

    #[test]
    fn a_group_over_several_slots_has_a_slice_per_slot() {
        let mut r = Registry::new();
        r.register_redis_cluster(&["127.0.0.1:7000"], "orders");
        r.register_redis_stream("a", "orders", &["g"]);
        r.register_redis_stream("{a}-more", "orders", &["g"]);
        r.register_redis_stream("b", "orders", &["g"]);
        let v = r.validate_now().unwrap();
        let g = v.group("g").unwrap();
        let slices = g.slices();
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0].tag.as_deref(), Some("a"));
        assert_eq!(slices[0].streams, ["a", "{a}-more"]);
        assert_eq!(slices[1].tag.as_deref(), Some("b"));
        assert_eq!(slices[1].lock_key("g", 1), "{b}g_consumer-1");
        assert_eq!(slices[1].outbox("g"), "beehive:outbox:{b}g");
        assert_eq!(g.slice_of("b"), Some(slices[1].clone()));
        let domains = v.group_domains("g");
        assert_eq!(domains.len(), 2);
        assert_eq!(domains[1].slot, Some(crate::keys::slot("b")));
    }

    #[test]
    fn cluster_mistakes_are_named() {
        let mut r = Registry::new();
        r.register_redis_cluster::<&str>(&[], "orders");
        assert!(err(r).contains("at least one seed node"));

        let mut r = Registry::new();
        r.register_redis_cluster(&["127.0.0.1:7000:2"], "orders");
        assert!(err(r).contains("has no db number"));

        let mut r = Registry::new();
        r.register_redis_cluster(&["/tmp/redis.sock"], "orders");
        assert!(err(r).contains("not a unix socket"));

        let mut r = Registry::new();
        r.register_redis_cluster(&["nohost"], "orders");
        assert!(err(r).starts_with("redis pool orders: invalid Redis address"));
    }
}
