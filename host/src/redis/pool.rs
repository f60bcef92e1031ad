//! One pool's connections: a client, a lazily opened self-reconnecting shared connection,
//! and dedicated connections for ordered writes and blocking reads.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::OnceCell;

use crate::error::{PoolContext, Result};

/// Response timeout of shared connections (pipelines, acks, claims, statistics).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a TCP connection to a Redis server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One Redis server: a client and a lazily opened, self-reconnecting shared connection.
pub(crate) struct Pool {
    pub(crate) name: String,
    client: Client,
    shared: OnceCell<ConnectionManager>,
}

impl Pool {
    /// A pool named `name` connecting as `info` says; nothing is opened until first use.
    pub(crate) fn new(name: &str, info: redis::ConnectionInfo) -> redis::RedisResult<Self> {
        Ok(Pool {
            name: name.to_string(),
            client: Client::open(info)?,
            shared: OnceCell::new(),
        })
    }
}

impl Pool {
    /// The shared, multiplexed connection; opened on first use, reconnects by itself.
    pub(crate) async fn connection(&self) -> Result<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        self.shared
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .cloned()
            .pool(&self.name)
    }

    /// A connection of its own that never reconnects behind its user's back: what is sent
    /// on it reaches Redis in the order sent, on one socket, or fails; after a failure, open
    /// a new one. For pipelined flushes, whose order must not change across a reconnect.
    pub(crate) async fn ordered(&self) -> Result<MultiplexedConnection> {
        self.dedicated(RESPONSE_TIMEOUT).await
    }

    /// Where and how to connect (address, credentials, database).
    pub(crate) fn connection_info(&self) -> &redis::ConnectionInfo {
        self.client.get_connection_info()
    }

    /// A publish/subscribe connection (for deploy notifications).
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        self.client.get_async_pubsub().await.pool(&self.name)
    }

    /// A connection of its own, for blocking reads: its response timeout must exceed the
    /// block time, or redis-rs gives up while Redis still delivers into the PEL.
    pub(crate) async fn dedicated(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .pool(&self.name)
    }
}
