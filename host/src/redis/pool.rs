//! One pool's connections: a client (one Redis server, or a Redis Cluster), a lazily opened
//! self-reconnecting shared connection, and dedicated connections for ordered writes and
//! blocking reads.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

use crate::address::RedisAddress;
use crate::error::{PoolContext, Result};

/// Response timeout of shared connections (pipelines, acks, claims, statistics).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a TCP connection to a Redis server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to a pool: to one Redis server, or to a Redis Cluster (which routes each
/// command to the node holding its keys' slot, and follows MOVED/ASK, failover and
/// resharding). Cheap to clone; clones share the connection.
#[derive(Clone)]
pub enum Connection {
    /// The shared, self-reconnecting connection to one server.
    Managed(ConnectionManager),
    /// A dedicated connection to one server, which never reconnects by itself.
    Direct(MultiplexedConnection),
    /// A connection to a Redis Cluster.
    Cluster(ClusterConnection),
}

impl Connection {
    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// Sends `cmd` to the server holding `key` (on a cluster: the master of its slot; for
    /// commands such as `SCAN` that name no key themselves).
    pub(crate) async fn query_at(&mut self, cmd: &Cmd, key: &str) -> RedisResult<Value> {
        match self {
            Connection::Cluster(con) => {
                let route = Route::new(crate::keys::slot(key), SlotAddr::Master);
                con.route_command(
                    cmd.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await
            }
            other => cmd.query_async(other).await,
        }
    }

    /// On a cluster, the address of the master serving `key`'s slot, as this connection
    /// reaches it (the server side of the connection, `CLIENT INFO`'s `laddr`); `None` on
    /// a single server.
    pub(crate) async fn master_of(&mut self, key: &str) -> RedisResult<Option<(String, u16)>> {
        if !self.is_cluster() {
            return Ok(None);
        }
        let info = self.query_at(redis::cmd("CLIENT").arg("INFO"), key).await?;
        let info: String = redis::from_redis_value(info)?;
        Ok(local_address(&info))
    }
}

/// The `laddr=<host>:<port>` of a `CLIENT INFO` line.
fn local_address(info: &str) -> Option<(String, u16)> {
    let laddr = info
        .split_ascii_whitespace()
        .find_map(|field| field.strip_prefix("laddr="))?;
    let (host, port) = laddr.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Managed(c) => c.req_packed_command(cmd),
            Connection::Direct(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Managed(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Direct(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Managed(c) => c.get_db(),
            Connection::Direct(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

// One per pool, built once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum PoolClient {
    Server(Client),
    Cluster {
        client: ClusterClient,
        seeds: Vec<RedisAddress>,
    },
}

/// One pool: a client and a lazily opened, self-reconnecting shared connection.
pub(crate) struct Pool {
    pub(crate) name: String,
    client: PoolClient,
    shared: OnceCell<Connection>,
}

impl Pool {
    /// A pool named `name` on the server `info` says; nothing is opened until first use.
    pub(crate) fn new(name: &str, info: redis::ConnectionInfo) -> RedisResult<Self> {
        Ok(Pool {
            name: name.to_string(),
            client: PoolClient::Server(Client::open(info)?),
            shared: OnceCell::new(),
        })
    }

    /// A pool named `name` on the Redis Cluster reached through `seeds`; nothing is opened
    /// until first use.
    pub(crate) fn new_cluster(name: &str, seeds: &[RedisAddress]) -> RedisResult<Self> {
        let client = ClusterClientBuilder::new(seeds.iter().map(|s| s.connection_info().clone()))
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(6)
            .build()?;
        Ok(Pool {
            name: name.to_string(),
            client: PoolClient::Cluster {
                client,
                seeds: seeds.to_vec(),
            },
            shared: OnceCell::new(),
        })
    }

    /// True when the pool is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.client, PoolClient::Cluster { .. })
    }

    /// The shared, multiplexed connection; opened on first use, reconnects by itself.
    pub(crate) async fn connection(&self) -> Result<Connection> {
        self.shared
            .get_or_try_init(|| async {
                match &self.client {
                    PoolClient::Server(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(CONNECT_TIMEOUT))
                            .set_response_timeout(Some(RESPONSE_TIMEOUT))
                            .set_number_of_retries(2)
                            .set_max_delay(Duration::from_secs(2));
                        ConnectionManager::new_with_config(client.clone(), config)
                            .await
                            .map(Connection::Managed)
                    }
                    PoolClient::Cluster { client, .. } => {
                        cluster_connection(client, RESPONSE_TIMEOUT).await
                    }
                }
            })
            .await
            .cloned()
            .pool(&self.name)
    }

    /// A connection of its own that never reconnects behind its user's back: what is sent
    /// on it reaches Redis in the order sent, on one socket per node, or fails; after a
    /// failure, open a new one. For pipelined flushes, whose order must not change across
    /// a reconnect.
    pub(crate) async fn ordered(&self) -> Result<Connection> {
        self.dedicated(RESPONSE_TIMEOUT).await
    }

    /// Where and how to connect (address, credentials, database); for a cluster, its first
    /// seed node.
    pub(crate) fn connection_info(&self) -> &redis::ConnectionInfo {
        match &self.client {
            PoolClient::Server(client) => client.get_connection_info(),
            PoolClient::Cluster { seeds, .. } => seeds[0].connection_info(),
        }
    }

    /// A publish/subscribe connection (for deploy notifications). On a cluster, to the
    /// first seed node that answers: Redis Cluster delivers `PUBLISH` to every node.
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        match &self.client {
            PoolClient::Server(client) => client.get_async_pubsub().await.pool(&self.name),
            PoolClient::Cluster { seeds, .. } => {
                let mut last = None;
                for seed in seeds {
                    let attempt = async {
                        Client::open(seed.connection_info().clone())?
                            .get_async_pubsub()
                            .await
                    };
                    match attempt.await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("a cluster has seeds")).pool(&self.name)
            }
        }
    }

    /// A connection of its own, for blocking reads: its response timeout must exceed the
    /// block time, or redis-rs gives up while Redis still delivers into the PEL.
    pub(crate) async fn dedicated(&self, response_timeout: Duration) -> Result<Connection> {
        match &self.client {
            PoolClient::Server(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response_timeout));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Direct)
                    .pool(&self.name)
            }
            PoolClient::Cluster { client, .. } => cluster_connection(client, response_timeout)
                .await
                .pool(&self.name),
        }
    }
}

async fn cluster_connection(
    client: &ClusterClient,
    response_timeout: Duration,
) -> RedisResult<Connection> {
    let config = ClusterConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(response_timeout);
    client
        .get_async_connection_with_config(config)
        .await
        .map(Connection::Cluster)
}

#[cfg(test)]
mod tests {
    use super::local_address;

    #[test]
    fn the_server_side_address_is_read_from_client_info() {
        let info = "id=7 addr=127.0.0.1:50312 laddr=127.0.0.1:7001 fd=9 name= age=0 idle=0";
        assert_eq!(local_address(info), Some(("127.0.0.1".into(), 7001)));
        assert_eq!(
            local_address("id=7 addr=[::1]:5 laddr=::1:7002 fd=9"),
            Some(("::1".into(), 7002))
        );
        assert_eq!(local_address("id=7 addr=127.0.0.1:50312"), None);
    }
}
