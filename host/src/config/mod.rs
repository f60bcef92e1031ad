//! The configuration file (`beehive.yaml`): Redis pools with their streams and groups, plus
//! the reserved key `consumers` with one entry per WebAssembly consumer group.
//!
//! ```yaml
//! default:
//!   redis: localhost:6379:0
//!   streams:
//!     stream-a: [read-group-a, read-group-ab]
//! consumers:
//!   read-group-ab:
//!     component: examples/echo/echo.wasm
//!     count: 100
//! ```
//!
//! Every error names the file, the key path and what was expected; unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_serde::Value;

use crate::registry::{Registry, ValidatedRegistry};

pub use crate::error::ConfigError;

mod domains;
pub use domains::{GroupDomains, group_domains};

/// The reserved top-level key for consumer settings.
pub const CONSUMERS_KEY: &str = "consumers";
/// The reserved top-level key for the metrics endpoint (`metrics: { addr: 127.0.0.1:9464 }`).
pub const METRICS_KEY: &str = "metrics";

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// The validated registry of pools, streams and groups.
    pub registry: ValidatedRegistry,
    /// Settings per WebAssembly consumer group, by group name.
    pub consumers: BTreeMap<String, ConsumerConfig>,
    /// Where `beehive run` serves Prometheus metrics (`metrics.addr`); off when `None`.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Where a group's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// A file (relative paths are resolved against the config file's folder).
    File(PathBuf),
    /// The version deployed through Redis with `beehive deploy`.
    Deployed,
}

/// Settings of one consumer group run by `beehive run`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerConfig {
    /// The group.
    pub group: String,
    /// The handler component.
    pub component: ComponentSource,
    /// Events per batch (default 100).
    pub count: usize,
    /// Consumers `consumer-1..=instances` (default 1).
    pub instances: u32,
    /// Block time of a read (default 5 s).
    pub block: Duration,
    /// Streams the component may publish to (default none).
    pub publish: Vec<String>,
    /// Reclaim other consumers' entries pending longer than this (default 60 s).
    pub min_idle: Duration,
    /// Dead-letter after this many deliveries (default 5).
    pub max_deliveries: u32,
    /// Dead-letter stream (default `<group>-dead-letter`).
    pub dead_letter: String,
    /// Memory cap per instance in bytes (default 64 MiB).
    pub memory: u64,
    /// CPU deadline per batch (default 5 s).
    pub timeout: Duration,
    /// Most events one batch may publish (default 10,000).
    pub max_publishes: usize,
    /// TTL of each consumer's single-runner lock (default 30 s, at least 1 s): how long a
    /// killed host's consumer names stay taken.
    pub lock_ttl: Duration,
}

impl Config {
    /// Reads and validates `file`.
    pub fn load(file: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let file = file.as_ref();
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.display().to_string(),
            path: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Self::parse(&text, file)
    }

    /// Parses and validates YAML `text` as if read from `file` (used in messages and to
    /// resolve relative component paths).
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let p = Parser {
            file: file.display().to_string(),
        };
        let root: Value = yaml_serde::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {} column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            p.err("", format!("{at}invalid YAML: {e}"))
        })?;
        let root = match root {
            Value::Null => {
                return Err(p.err("", "the file is empty: expected a map of Redis pools"));
            }
            Value::Mapping(m) => m,
            other => {
                return Err(p.err(
                    "",
                    format!("expected a map of Redis pools, got {}", kind(&other)),
                ));
            }
        };
        let mut registry = Registry::new();
        let mut stream_pools: BTreeMap<String, String> = BTreeMap::new();
        let mut group_pools: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut consumers_value = None;
        let mut metrics_addr = None;
        for (key, value) in &root {
            let name = p.key(key, "")?;
            if name == CONSUMERS_KEY {
                consumers_value = Some(value);
                continue;
            }
            if name == METRICS_KEY {
                let map = p.map(value, METRICS_KEY, "a map with the key addr")?;
                for (k, v) in map {
                    let k = p.key(k, METRICS_KEY)?;
                    let path = format!("{METRICS_KEY}.{k}");
                    match k.as_str() {
                        "addr" => {
                            let text = match v {
                                Value::Number(n) => n.to_string(),
                                other => p.string(
                                    other,
                                    &path,
                                    "host:port, or a port (served on 127.0.0.1)",
                                )?,
                            };
                            metrics_addr = Some(
                                crate::address::parse_listen_addr(&text)
                                    .map_err(|e| p.err(&path, e))?,
                            );
                        }
                        other => {
                            return Err(p.err(&path, unknown_key(other, &["addr"])));
                        }
                    }
                }
                continue;
            }
            // Every other top-level key is a pool; one that does not parse as a pool but is
            // spelled like a reserved key (`consumer:`) was most likely meant as that key.
            let parsed = (|| -> Result<(), ConfigError> {
                p.name(&name, &name, "pool")?;
                let pool = p.map(
                    value,
                    &name,
                    "a map with the keys redis (or cluster) and streams",
                )?;
                let mut address = None;
                let mut password = String::new();
                let mut cluster: Option<Vec<String>> = None;
                for (k, v) in pool {
                    let k = p.key(k, &name)?;
                    let path = format!("{name}.{k}");
                    match k.as_str() {
                        "redis" => address = Some(p.string(v, &path, "a Redis address: host:port:db, a redis:// or rediss:// URL, or a unix socket path")?),
                        "cluster" => {
                            let seeds = p.string_list(v, &path, "a non-empty list of seed nodes (host:port or redis:// / rediss:// URLs)")?;
                            if seeds.is_empty() {
                                return Err(p.err(&path, "expected a non-empty list of seed nodes (host:port or redis:// / rediss:// URLs)"));
                            }
                            cluster = Some(seeds);
                        }
                        "password" => password = p.string(v, &path, "a password string")?,
                        "streams" => {
                            if v.is_null() {
                                continue;
                            }
                            let streams = p.map(v, &path, "a map of stream names to lists of consumer groups")?;
                            for (sk, sv) in streams {
                                let stream = p.key(sk, &path)?;
                                let spath = format!("{path}.{stream}");
                                p.name(&stream, &spath, "stream")?;
                                let groups = p.string_list(sv, &spath, "a non-empty list of consumer group names")?;
                                if groups.is_empty() {
                                    return Err(p.err(&spath, "expected a non-empty list of consumer group names"));
                                }
                                if let Some(other) = stream_pools.get(&stream) {
                                    return Err(p.err(&spath, format!("stream with name {stream} already exists (in pool {other})")));
                                }
                                for group in &groups {
                                    p.name(group, &spath, "consumer group")?;
                                    match group_pools.get(group) {
                                        Some((pool, first)) if *pool != name => {
                                            return Err(p.err(&spath, format!("consumer group {group} already reads stream {first} in pool {pool}: a group's streams must share one pool")));
                                        }
                                        Some(_) => {}
                                        None => {
                                            group_pools.insert(group.clone(), (name.clone(), stream.clone()));
                                        }
                                    }
                                }
                                stream_pools.insert(stream.clone(), name.clone());
                                registry.register_redis_stream(&stream, &name, &groups);
                            }
                        }
                        other => return Err(p.err(&path, unknown_key(other, &["redis", "cluster", "password", "streams"]))),
                    }
                }
                match (address, cluster) {
                    (Some(_), Some(_)) => {
                        return Err(p.err(
                            &format!("{name}.cluster"),
                            "a pool is one Redis (redis:) or one Redis Cluster (cluster:), not both: remove one",
                        ));
                    }
                    (None, Some(seeds)) => {
                        for (i, seed) in seeds.iter().enumerate() {
                            let address =
                                crate::address::RedisAddress::parse(seed, &password, None)
                                    .map_err(|e| p.err(&format!("{name}.cluster[{i}]"), e))?;
                            if address.db() != 0 {
                                return Err(p.err(&format!("{name}.cluster[{i}]"), format!("a Redis Cluster has no db number: expected host:port, got {seed:?}")));
                            }
                        }
                        registry.register_redis_cluster(&seeds, &name);
                        registry.set_password(&name, &password);
                    }
                    (address, None) => {
                        let address = address.ok_or_else(|| {
                            p.err(
                                &format!("{name}.redis"),
                                "missing: expected a Redis address such as localhost:6379:0 (or cluster: [host:port, ...] for a Redis Cluster)",
                            )
                        })?;
                        crate::address::RedisAddress::parse(&address, &password, None)
                            .map_err(|e| p.err(&format!("{name}.redis"), e))?;
                        registry.register_redis(&address, &password, 0, &name);
                    }
                }
                Ok(())
            })();
            if let Err(e) = parsed {
                return Err(match nearest(&name, &[CONSUMERS_KEY, METRICS_KEY]) {
                    Some(reserved) => p.err(
                        &name,
                        format!(
                            "unknown top-level key {name:?}: did you mean {reserved}? (every other top-level key is a Redis pool, and this is not one: {}: {})",
                            e.path, e.message
                        ),
                    ),
                    None => e,
                });
            }
        }
        let registry = registry
            .validate_now()
            .map_err(|e| p.err("", e.to_string()))?;
        let mut consumers = BTreeMap::new();
        if let Some(value) = consumers_value
            && !value.is_null()
        {
            let map = p.map(
                value,
                CONSUMERS_KEY,
                "a map of consumer group names to their settings",
            )?;
            for (k, v) in map {
                let group = p.key(k, CONSUMERS_KEY)?;
                let path = format!("{CONSUMERS_KEY}.{group}");
                if registry.group(&group).is_none() {
                    let known: Vec<&str> = registry.groups().map(|g| g.name.as_str()).collect();
                    return Err(p.err(&path, format!("expected a registered consumer group, and {group} is not one (registered: {})", known.join(", "))));
                }
                let consumer = p.consumer(&group, v, &path, file, &registry)?;
                consumers.insert(group, consumer);
            }
        }
        Ok(Config {
            file: file.to_path_buf(),
            registry,
            consumers,
            metrics_addr,
        })
    }
}

struct Parser {
    file: String,
}

impl Parser {
    fn err(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            path: path.to_string(),
            message: message.into(),
        }
    }

    fn key(&self, key: &Value, parent: &str) -> Result<String, ConfigError> {
        match key {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.err(parent, format!("expected string keys, got {}", kind(other)))),
        }
    }

    fn name(&self, name: &str, path: &str, what: &str) -> Result<(), ConfigError> {
        if name.is_empty()
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
            || name.starts_with(crate::keys::RESERVED_PREFIX)
        {
            return Err(self.err(path, format!("invalid {what} name {name:?}: expected a non-empty name without white space or the prefix beehive:")));
        }
        Ok(())
    }

    fn map<'v>(
        &self,
        value: &'v Value,
        path: &str,
        expected: &str,
    ) -> Result<&'v yaml_serde::Mapping, ConfigError> {
        match value {
            Value::Mapping(m) => Ok(m),
            other => Err(self.err(path, format!("expected {expected}, got {}", kind(other)))),
        }
    }

    fn string(&self, value: &Value, path: &str, expected: &str) -> Result<String, ConfigError> {
        match value {
            Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
            other => Err(self.err(path, format!("expected {expected}, got {}", kind(other)))),
        }
    }

    fn string_list(
        &self,
        value: &Value,
        path: &str,
        expected: &str,
    ) -> Result<Vec<String>, ConfigError> {
        match value {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.string(item, &format!("{path}[{i}]"), "a name"))
                .collect(),
            other => Err(self.err(path, format!("expected {expected}, got {}", kind(other)))),
        }
    }

    fn positive(&self, value: &Value, path: &str, max: u64) -> Result<u64, ConfigError> {
        match value.as_u64() {
            Some(n) if n >= 1 && n <= max => Ok(n),
            _ => Err(self.err(
                path,
                format!(
                    "expected a whole number from 1 to {max}, got {}",
                    describe(value)
                ),
            )),
        }
    }

    fn duration(&self, value: &Value, path: &str) -> Result<Duration, ConfigError> {
        let parsed = match value {
            Value::String(s) => humantime::parse_duration(s.trim()).ok(),
            _ => None,
        };
        match parsed {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(self.err(
                path,
                format!(
                    "expected a duration such as 500ms, 5s or 2m, got {}",
                    describe(value)
                ),
            )),
        }
    }

    fn size(&self, value: &Value, path: &str) -> Result<u64, ConfigError> {
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => parse_size(s),
            _ => None,
        };
        match parsed {
            Some(n) if n >= 1 << 16 => Ok(n),
            _ => Err(self.err(
                path,
                format!(
                    "expected a size of at least 64KiB such as 64MiB or 1GiB, got {}",
                    describe(value)
                ),
            )),
        }
    }

    fn consumer(
        &self,
        group: &str,
        value: &Value,
        path: &str,
        file: &Path,
        registry: &ValidatedRegistry,
    ) -> Result<ConsumerConfig, ConfigError> {
        let map = self.map(
            value,
            path,
            "a map of consumer settings (component, count, instances, ...)",
        )?;
        let mut c = ConsumerConfig {
            group: group.to_string(),
            component: ComponentSource::Deployed,
            count: 100,
            instances: 1,
            block: Duration::from_secs(5),
            publish: Vec::new(),
            min_idle: Duration::from_secs(60),
            max_deliveries: 5,
            dead_letter: registry.default_dead_letter_stream(group),
            memory: 64 << 20,
            timeout: Duration::from_secs(5),
            max_publishes: 10_000,
            lock_ttl: Duration::from_secs(30),
        };
        let mut component = None;
        for (k, v) in map {
            let k = self.key(k, path)?;
            let kpath = format!("{path}.{k}");
            match k.as_str() {
                "component" => {
                    let s = self.string(v, &kpath, "a path to a .wasm component, or deployed")?;
                    component = Some(if s == "deployed" {
                        ComponentSource::Deployed
                    } else {
                        let p = PathBuf::from(&s);
                        let base = file.parent().unwrap_or(Path::new(""));
                        ComponentSource::File(if p.is_absolute() { p } else { base.join(p) })
                    });
                }
                "count" => c.count = self.positive(v, &kpath, 100_000)? as usize,
                "instances" => c.instances = self.positive(v, &kpath, 1024)? as u32,
                "block" => c.block = self.duration(v, &kpath)?,
                "publish" => {
                    c.publish = self.string_list(v, &kpath, "a list of registered stream names")?;
                    for (i, stream) in c.publish.iter().enumerate() {
                        if registry.stream(stream).is_none() {
                            return Err(self.err(
                                &format!("{kpath}[{i}]"),
                                format!("expected a registered stream, and {stream} is not one"),
                            ));
                        }
                    }
                }
                "min-idle" => c.min_idle = self.duration(v, &kpath)?,
                "lock-ttl" => {
                    c.lock_ttl = self.duration(v, &kpath)?;
                    if c.lock_ttl < Duration::from_secs(1) {
                        return Err(self.err(
                            &kpath,
                            format!(
                                "expected a lock TTL of at least 1s, got {}",
                                humantime::format_duration(c.lock_ttl)
                            ),
                        ));
                    }
                }
                "max-deliveries" => c.max_deliveries = self.positive(v, &kpath, 1_000_000)? as u32,
                "max-publishes" => c.max_publishes = self.positive(v, &kpath, 1_000_000)? as usize,
                "dead-letter" => {
                    c.dead_letter = self.string(v, &kpath, "a stream name")?;
                    self.name(&c.dead_letter, &kpath, "stream")?;
                }
                "limits" => {
                    let limits = self.map(v, &kpath, "a map with memory and timeout")?;
                    for (lk, lv) in limits {
                        let lk = self.key(lk, &kpath)?;
                        let lpath = format!("{kpath}.{lk}");
                        match lk.as_str() {
                            "memory" => c.memory = self.size(lv, &lpath)?,
                            "timeout" => c.timeout = self.duration(lv, &lpath)?,
                            other => {
                                return Err(
                                    self.err(&lpath, unknown_key(other, &["memory", "timeout"]))
                                );
                            }
                        }
                    }
                }
                other => {
                    return Err(self.err(&kpath, unknown_key(other, CONSUMER_KEYS)));
                }
            }
        }
        c.component = component.ok_or_else(|| {
            self.err(
                &format!("{path}.component"),
                "missing: expected a path to a .wasm component, or deployed",
            )
        })?;
        if c.timeout >= c.min_idle {
            return Err(self.err(&format!("{path}.limits.timeout"), format!(
                "expected a batch deadline below min-idle ({}), got {}: a live consumer's batch could be reclaimed by another",
                humantime::format_duration(c.min_idle),
                humantime::format_duration(c.timeout)
            )));
        }
        if registry
            .stream(&c.dead_letter)
            .is_some_and(|s| s.groups.iter().any(|g| g == group))
        {
            return Err(self.err(
                &format!("{path}.dead-letter"),
                format!(
                    "expected a stream the group does not read itself, got {}",
                    c.dead_letter
                ),
            ));
        }
        Ok(c)
    }
}

/// The settings of a consumer group.
const CONSUMER_KEYS: &[&str] = &[
    "component",
    "count",
    "instances",
    "block",
    "publish",
    "min-idle",
    "lock-ttl",
    "max-deliveries",
    "max-publishes",
    "dead-letter",
    "limits",
];

/// `unknown key "instance": did you mean instances? expected component, count, ...`
fn unknown_key(key: &str, known: &[&str]) -> String {
    let expected = match known {
        [] => String::new(),
        [only] => only.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    };
    match nearest(key, known) {
        Some(near) => format!("unknown key {key:?}: did you mean {near}? expected {expected}"),
        None => format!("unknown key {key:?}: expected {expected}"),
    }
}

/// The known key nearest to `key`, when a typo away: at most two edits (insertions,
/// deletions, substitutions or swaps of neighbours, ignoring case), and fewer than the key's
/// length.
fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key = key.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < key.chars().count().min(k.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance (Levenshtein with swaps of neighbouring characters).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Parses `64MiB`, `512KB`, `1GiB`, `1048576`.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/beehive/beehive.yaml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const GOOD: &str = "
default:
  redis: localhost:6379:0
  streams:
    stream-a: [read-group-a, read-group-ab]
    stream-b: [read-group-ab]
second:
  redis: 127.0.0.1:6380:3
  streams:
    stream-c: [read-group-c]
consumers:
  read-group-ab:
    component: examples/echo/echo.wasm
    count: 100
    instances: 2
    block: 5s
    publish: [stream-c]
    min-idle: 60s
    max-deliveries: 5
    dead-letter: read-group-ab-dead
    limits: { memory: 64MiB, timeout: 5s }
";

    #[test]
    fn the_design_example_loads() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.registry.stream("stream-c").unwrap().pool, "second");
        let c = &config.consumers["read-group-ab"];
        assert_eq!(c.instances, 2);
        assert_eq!(c.memory, 64 << 20);
        assert_eq!(c.dead_letter, "read-group-ab-dead");
        assert_eq!(
            c.component,
            ComponentSource::File(PathBuf::from("/etc/beehive/examples/echo/echo.wasm"))
        );
        assert_eq!(
            config
                .registry
                .pools()
                .find(|p| p.name == "second")
                .unwrap()
                .address
                .db(),
            3
        );
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let cases: &[(&str, &str)] = &[
            (
                "default: [1]",
                "/etc/beehive/beehive.yaml: default: expected a map with the keys redis (or cluster) and streams, got a list",
            ),
            (
                "default:\n  streams: {}\n",
                "/etc/beehive/beehive.yaml: default.redis: missing",
            ),
            (
                "default:\n  redis: localhost\n",
                "/etc/beehive/beehive.yaml: default.redis: invalid Redis address",
            ),
            (
                "default:\n  redis: localhost:1\n  stream: {}\n",
                "default.stream: unknown key \"stream\"",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: []\n",
                "default.streams.a: expected a non-empty list",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nsecond:\n  redis: localhost:2\n  streams:\n    a: [h]\n",
                "second.streams.a: stream with name a already exists (in pool default)",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nsecond:\n  redis: localhost:2\n  streams:\n    b: [g]\n",
                "second.streams.b: consumer group g already reads stream a in pool default",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nconsumers:\n  h: {component: x.wasm}\n",
                "consumers.h: expected a registered consumer group",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nconsumers:\n  g: {component: x.wasm, count: 0}\n",
                "consumers.g.count: expected a whole number from 1",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nconsumers:\n  g: {component: x.wasm, block: soon}\n",
                "consumers.g.block: expected a duration",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nconsumers:\n  g: {component: x.wasm, publish: [zzz]}\n",
                "consumers.g.publish[0]: expected a registered stream",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nconsumers:\n  g: {component: x.wasm, min-idle: 5s, limits: {timeout: 5s}}\n",
                "consumers.g.limits.timeout: expected a batch deadline below min-idle",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nconsumers:\n  g: {component: x.wasm, limits: {memory: lots}}\n",
                "consumers.g.limits.memory: expected a size",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nconsumers:\n  g: {count: 3}\n",
                "consumers.g.component: missing",
            ),
            (
                "default:\n  redis: localhost:1\n  streams:\n    a: [g]\nconsumers:\n  g: {component: x.wasm, colour: red}\n",
                "consumers.g.colour: unknown key",
            ),
            ("default: {redis: 'localhost:1'\n", "invalid YAML"),
            (
                "orders:\n  redis: localhost:1\n  cluster: [localhost:2]\n",
                "orders.cluster: a pool is one Redis (redis:) or one Redis Cluster (cluster:), not both",
            ),
            (
                "orders:\n  cluster: [localhost:2, 'localhost:3:4']\n",
                "orders.cluster[1]: a Redis Cluster has no db number",
            ),
            (
                "orders:\n  cluster: []\n",
                "orders.cluster: expected a non-empty list of seed nodes",
            ),
            (
                "orders:\n  cluster: [nohost]\n",
                "orders.cluster[0]: invalid Redis address",
            ),
            ("", "the file is empty"),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.contains(expected),
                "for {text:?}\n got: {message}\nwant: {expected}"
            );
            assert!(
                message.starts_with("/etc/beehive/beehive.yaml: "),
                "{message}"
            );
        }
    }

    #[test]
    fn a_misspelt_reserved_key_is_suggested() {
        let pools = "default:\n  redis: localhost:1\n  streams:\n    a: [g]\n";
        for (text, expected) in [
            (
                format!("{pools}consumer:\n  g:\n    component: x.wasm\n"),
                "/etc/beehive/beehive.yaml: consumer: unknown top-level key \"consumer\": did you mean consumers? (every other top-level key is a Redis pool, and this is not one: consumer.g: unknown key \"g\": expected redis, cluster, password or streams)",
            ),
            (
                format!("{pools}Consumres:\n  g: {{component: x.wasm}}\n"),
                "Consumres: unknown top-level key \"Consumres\": did you mean consumers?",
            ),
            (
                format!("{pools}metric:\n  addr: 9464\n"),
                "metric: unknown top-level key \"metric\": did you mean metrics?",
            ),
            (
                format!("{pools}consumers:\n  g: {{component: x.wasm, instance: 2}}\n"),
                "consumers.g.instance: unknown key \"instance\": did you mean instances? expected component, count,",
            ),
            (
                format!("{pools}consumers:\n  g: {{component: x.wasm, limits: {{timout: 1s}}}}\n"),
                "consumers.g.limits.timout: unknown key \"timout\": did you mean timeout? expected memory or timeout",
            ),
            (
                "default:\n  redis: localhost:1\n  stream: {}\n".to_string(),
                "default.stream: unknown key \"stream\": did you mean streams? expected redis, cluster, password or streams",
            ),
            (
                format!("{pools}metrics:\n  adr: 9464\n"),
                "metrics.adr: unknown key \"adr\": did you mean addr? expected addr",
            ),
            (
                format!("{pools}consumers:\n  g: {{component: x.wasm, colour: red}}\n"),
                "consumers.g.colour: unknown key \"colour\": expected component",
            ),
        ] {
            let message = error(&text);
            assert!(
                message.contains(expected),
                "for {text:?}\n got: {message}\nwant: {expected}"
            );
        }
        // A pool that parses keeps its name, however close to a reserved key.
        let config = parse("consumer:\n  redis: localhost:1\n  streams:\n    a: [g]\n").unwrap();
        assert!(config.registry.pools().any(|p| p.name == "consumer"));
        // A broken pool far from any reserved key keeps its own error.
        assert!(
            error("orders:\n  redis: localhost:1\n  strems: {}\n")
                .contains("orders.strems: unknown key \"strems\": did you mean streams?")
        );
        assert_eq!(nearest("xyz", &["streams"]), None);
        assert_eq!(nearest("a", &["addr"]), None);
        assert_eq!(edit_distance("consumres", "consumers"), 1);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("2 GB"), Some(2_000_000_000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("x"), None);
    }
}
