//! Running consumers in production: the supervisor that starts them from a configuration,
//! hot reload of their components, fleet deploy through Redis, and Prometheus metrics.

pub mod deploy;
pub mod fleet;
pub mod metrics;
pub mod redis_cluster;
pub mod redis_server;
pub mod reload;
pub mod supervisor;
