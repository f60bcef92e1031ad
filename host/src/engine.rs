//! The engine: one connection pool per registered Redis server.
//!
//! It knows pools and the topology, nothing of what runs on them: the event broker
//! ([`Engine::event_broker`]) and garbage collection ([`Engine::gc`]) are added by the
//! [`broker`](crate::broker) layer above.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

mod pace;
pub use pace::RelayPace;

use crate::error::{Error, Result};
use crate::redis::pool::{Connection, Pool};
use crate::registry::ValidatedRegistry;

/// Owns the connections to every pool; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    registry: ValidatedRegistry,
    pools: BTreeMap<String, Pool>,
    /// Per outbox (`<pool>/<key>`), how far this process's relay trails its consumers.
    paces: Mutex<HashMap<String, Arc<RelayPace>>>,
}

impl ValidatedRegistry {
    /// Creates an engine: the connection pools and the event broker on top of this topology.
    pub fn create_engine(&self) -> Engine {
        Engine::new(self.clone())
    }
}

impl Engine {
    pub(crate) fn new(registry: ValidatedRegistry) -> Self {
        let pools = registry
            .pools()
            .map(|def| {
                let pool = match &def.cluster {
                    None => Pool::new(&def.name, def.address.connection_info().clone()),
                    Some(seeds) => Pool::new_cluster(&def.name, seeds),
                }
                .expect("a validated address always opens a client");
                (def.name.clone(), pool)
            })
            .collect();
        Engine {
            inner: Arc::new(EngineInner {
                registry,
                pools,
                paces: Mutex::default(),
            }),
        }
    }

    /// The validated topology this engine serves.
    pub fn registry(&self) -> &ValidatedRegistry {
        &self.inner.registry
    }

    /// The pace of the outbox `outbox` in pool `pool`, shared by this process's consumers
    /// that fill it and its relay (see [`RelayPace`]).
    pub fn relay_pace(&self, pool: &str, outbox: &str) -> Arc<RelayPace> {
        let mut paces = self
            .inner
            .paces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        paces.entry(format!("{pool}/{outbox}")).or_default().clone()
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

    /// Checks that the pool called `pool` answers: a new connection (at most 2 s to
    /// connect) and a `PING` answered within `timeout`; for a cluster pool, that its seeds
    /// are cluster nodes and the cluster's state is `ok`. Nothing is retried.
    pub async fn ping(&self, pool: &str, timeout: std::time::Duration) -> Result<()> {
        use crate::error::PoolContext;
        let pool = self.pool(pool)?;
        let mut con = match pool.dedicated(timeout).await {
            Err(Error::Redis { source, .. })
                if pool.is_cluster() && crate::redis::commands::is_cluster_disabled(&source) =>
            {
                return Err(Error::Validation(format!(
                    "redis pool {}: the seed nodes are not in cluster mode (cluster support disabled): use redis: for a standalone server, or start the nodes with --cluster-enabled yes",
                    pool.name
                )));
            }
            other => other?,
        };
        crate::redis::commands::ping(&mut con)
            .await
            .pool(&pool.name)?;
        if pool.is_cluster() {
            let state = crate::redis::commands::cluster_state(&mut con)
                .await
                .pool(&pool.name)?;
            if state != "ok" {
                return Err(Error::Validation(format!(
                    "redis pool {}: the cluster's state is {state}, not ok (CLUSTER INFO): are all slots covered?",
                    pool.name
                )));
            }
        }
        Ok(())
    }

    /// A connection to the pool called `pool`, for commands of your own.
    pub async fn connection(&self, pool: &str) -> Result<Connection> {
        self.pool(pool)?.connection().await
    }
}
