//! Statistics: per stream its length, per group pending, lag and consumers.

use std::time::Duration;

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{PoolContext, Result};
use crate::keys;
use crate::redis::{commands, outbox, records};

/// Statistics of one registered stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatistics {
    /// Stream name.
    pub name: String,
    /// The pool it lives in.
    pub pool: String,
    /// Entries in the stream (`XLEN`).
    pub length: u64,
    /// Every group on the stream: the registered ones (created or not) and any others.
    pub groups: Vec<GroupStatistics>,
    /// Why the stream's pool could not be read (the other fields are then empty): one
    /// pool being down does not hide the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Statistics of one consumer group on one stream.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatistics {
    /// Group name.
    pub name: String,
    /// Whether the group is registered for this stream.
    pub registered: bool,
    /// Whether the group exists in Redis (it is created when a consumer first starts).
    pub created: bool,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// Entries not delivered yet; `None` when Redis cannot tell (after some deletions).
    pub lag: Option<u64>,
    /// The last entry delivered to the group.
    pub last_delivered_id: String,
    /// Age of the oldest pending entry (by its ID's timestamp, against the server clock).
    #[serde(serialize_with = "millis")]
    pub oldest_pending_age: Option<Duration>,
    /// Consumers with their pending counts.
    pub consumers: Vec<ConsumerStatistics>,
    /// The group's dead-letter stream and its length (registered groups only).
    pub dead_letter: Option<DeadLetterStatistics>,
    /// The hosts running the group's component right now, with the digest each runs.
    pub hosts: Vec<HostComponent>,
    /// The digest deployed through Redis (`beehive deploy`), if any.
    pub deployed: Option<String>,
    /// Outputs to other commit domains waiting in the group's outbox for the relay
    /// (registered groups only).
    pub outbox: Option<OutboxStatistics>,
    /// The hosts that announced themselves for the group, with their heartbeat age.
    pub fleet: Vec<FleetHost>,
}

/// A group's outbox: outputs committed for streams of other commit domains, not relayed yet.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OutboxStatistics {
    /// Outputs waiting.
    pub length: u64,
    /// Age of the oldest waiting output.
    #[serde(serialize_with = "millis")]
    pub oldest_age: Option<Duration>,
}

/// A host running a group's component.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostComponent {
    /// `<hostname>:<pid>`.
    pub host: String,
    /// SHA-256 digest of the component version it runs.
    pub digest: String,
}

/// A group's dead-letter stream.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterStatistics {
    /// Stream name.
    pub stream: String,
    /// Entries in it.
    pub length: u64,
}

/// Statistics of one consumer of a group.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatistics {
    /// Consumer name (`consumer-<nr>`).
    pub name: String,
    /// Entries delivered to it and not acknowledged.
    pub pending: u64,
    /// Time since its last interaction with the group.
    #[serde(serialize_with = "millis_required")]
    pub idle: Duration,
    /// The host running it now (from its lock), if it runs.
    pub host: Option<String>,
}

/// A host of the fleet running a group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FleetHost {
    /// `<hostname>:<pid>`.
    pub host: String,
    /// Time since its last heartbeat (a host stops counting after the group's lock TTL).
    #[serde(serialize_with = "millis_required")]
    pub heartbeat_age: Duration,
}

fn millis<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

fn millis_required<S: serde::Serializer>(
    d: &Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

pub(crate) async fn collect(
    engine: &Engine,
    dead_letter_name: &(dyn Fn(&str) -> String + Sync),
) -> Result<Vec<StreamStatistics>> {
    let mut out = Vec::new();
    let unreachable = |stream: &crate::registry::StreamDef, error: String| StreamStatistics {
        name: stream.name.clone(),
        pool: stream.pool.clone(),
        length: 0,
        groups: Vec::new(),
        error: Some(error),
    };
    let registry = engine.registry();
    for stream in registry.streams() {
        let pool = engine.pool(&stream.pool)?;
        let mut con = match pool.connection().await {
            Ok(con) => con,
            Err(e) => {
                out.push(unreachable(stream, e.to_string()));
                continue;
            }
        };
        let stats: redis::RedisResult<StreamStatistics> = async {
            let length = commands::stream_length(&mut con, &stream.name).await?;
            let now_ms = commands::server_time_ms(&mut con).await?;
            let infos = commands::groups_info(&mut con, &stream.name).await?;
            let mut groups = Vec::new();
            for name in &stream.groups {
                if !infos.iter().any(|i| &i.name == name) {
                    groups.push(GroupStatistics {
                        name: name.clone(),
                        registered: true,
                        created: false,
                        pending: 0,
                        lag: Some(length),
                        last_delivered_id: "0-0".into(),
                        oldest_pending_age: None,
                        consumers: Vec::new(),
                        dead_letter: None,
                        hosts: Vec::new(),
                        deployed: None,
                        outbox: None,
                        fleet: Vec::new(),
                    });
                }
            }
            for info in infos {
                let oldest = if info.pending > 0 {
                    commands::oldest_pending(&mut con, &stream.name, &info.name).await?
                } else {
                    None
                };
                let consumers = commands::consumers_info(&mut con, &stream.name, &info.name)
                    .await?
                    .into_iter()
                    .map(|c| ConsumerStatistics {
                        name: c.name,
                        pending: c.pending,
                        idle: c.idle,
                        host: None,
                    })
                    .collect::<Vec<_>>();
                let mut consumers = consumers;
                let locks: Vec<String> = consumers
                    .iter()
                    .map(|c| {
                        keys::consumer_number(&c.name).map_or_else(String::new, |nr| match registry
                            .group(&info.name)
                        {
                            Some(def) => def.lock_key(nr),
                            None => keys::lock_key(&info.name, nr),
                        })
                    })
                    .collect();
                for (consumer, value) in consumers
                    .iter_mut()
                    .zip(records::lock_values(&mut con, &locks).await?)
                {
                    consumer.host = value
                        .as_deref()
                        .and_then(keys::lock_owner)
                        .map(String::from);
                }
                groups.push(GroupStatistics {
                    registered: stream.groups.contains(&info.name),
                    created: true,
                    pending: info.pending,
                    lag: info.lag,
                    last_delivered_id: info.last_delivered.to_string(),
                    oldest_pending_age: oldest
                        .map(|id| Duration::from_millis(now_ms.saturating_sub(id.ms))),
                    consumers,
                    dead_letter: None,
                    hosts: Vec::new(),
                    deployed: None,
                    outbox: None,
                    fleet: Vec::new(),
                    name: info.name,
                });
            }
            for group in groups.iter_mut().filter(|g| g.registered) {
                let Some(def) = registry.group(&group.name) else {
                    continue;
                };
                let stream = dead_letter_name(&group.name);
                let length = commands::stream_length(&mut con, &stream).await?;
                group.dead_letter = Some(DeadLetterStatistics { stream, length });
                group.hosts = records::hosts_of(&mut con, def)
                    .await?
                    .into_iter()
                    .map(|(host, digest)| HostComponent { host, digest })
                    .collect();
                group.deployed = records::deployed_digest(&mut con, def).await?;
                group.fleet = records::fleet_of(&mut con, def)
                    .await?
                    .into_iter()
                    .map(|(host, heartbeat_age)| FleetHost {
                        host,
                        heartbeat_age,
                    })
                    .collect();
                // Every outbox of the group (one per commit domain it reads).
                let (mut length, mut oldest) = (0, None);
                for slice in def.slices() {
                    let (n, first) = outbox::backlog(&mut con, &slice.outbox(&def.name)).await?;
                    length += n;
                    oldest = match (oldest, first) {
                        (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                        (a, b) => a.or(b),
                    };
                }
                group.outbox = Some(OutboxStatistics {
                    length,
                    oldest_age: oldest
                        .map(|id| Duration::from_millis(now_ms.saturating_sub(id.ms))),
                });
            }
            groups.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(StreamStatistics {
                name: stream.name.clone(),
                pool: stream.pool.clone(),
                length,
                groups,
                error: None,
            })
        }
        .await;
        match stats.pool(&pool.name) {
            Ok(stats) => out.push(stats),
            Err(e) => out.push(unreachable(stream, e.to_string())),
        }
    }
    Ok(out)
}
