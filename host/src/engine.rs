//! The engine: one connection pool per registered Redis server, and the entry point to the
//! event broker and garbage collection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::broker::EventBroker;
use crate::error::{Error, PoolContext, Result};
use crate::gc::{self, GcReport};
use crate::registry::ValidatedRegistry;

/// Response timeout of shared connections (pipelines, acks, claims, statistics).
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a TCP connection to a Redis server.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Owns the connections to every pool; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    registry: ValidatedRegistry,
    pools: BTreeMap<String, Pool>,
}

/// One Redis server: a client and a lazily opened, self-reconnecting shared connection.
pub(crate) struct Pool {
    pub(crate) name: String,
    client: Client,
    shared: OnceCell<ConnectionManager>,
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

impl Engine {
    pub(crate) fn new(registry: ValidatedRegistry) -> Self {
        let pools = registry
            .pools()
            .map(|def| {
                let client = Client::open(def.address.connection_info().clone())
                    .expect("a validated address always opens a client");
                (
                    def.name.clone(),
                    Pool {
                        name: def.name.clone(),
                        client,
                        shared: OnceCell::new(),
                    },
                )
            })
            .collect();
        Engine {
            inner: Arc::new(EngineInner { registry, pools }),
        }
    }

    /// The validated topology this engine serves.
    pub fn registry(&self) -> &ValidatedRegistry {
        &self.inner.registry
    }

    /// The event broker: publishing, flushers, consumers and statistics.
    pub fn event_broker(&self) -> EventBroker {
        EventBroker::new(self.clone())
    }

    /// The pool called `name`.
    pub(crate) fn pool(&self, name: &str) -> Result<&Pool> {
        self.inner
            .pools
            .get(name)
            .ok_or_else(|| Error::Validation(format!("unknown redis pool {name}")))
    }

    /// The pool that holds `stream`, or `unregistered stream` for an unknown one.
    pub(crate) fn stream_pool(&self, stream: &str) -> Result<&Pool> {
        let def = self
            .registry()
            .stream(stream)
            .ok_or_else(|| Error::UnregisteredStream(stream.to_string()))?;
        self.pool(&def.pool)
    }

    /// A connection to the pool called `pool`, for commands of your own.
    pub async fn connection(&self, pool: &str) -> Result<ConnectionManager> {
        self.pool(pool)?.connection().await
    }

    /// One garbage-collection pass over every registered stream: deletes the entries that
    /// every consumer group has acknowledged (see [`gc`](crate::gc)). Pools whose GC lock is
    /// held by another host are skipped.
    pub async fn gc(&self) -> Result<GcReport> {
        gc::run_pass(self).await
    }

    /// Runs [`gc`](Self::gc) every `interval` until `cancel` fires; failures are logged and
    /// retried at the next interval.
    pub async fn run_gc(&self, cancel: CancellationToken, interval: Duration) {
        loop {
            match self.gc().await {
                Ok(report) if report.deleted() > 0 => {
                    tracing::info!(deleted = report.deleted(), "garbage collection")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
