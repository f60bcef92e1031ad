//! Test support on a private Redis Cluster (`beehive::redis_cluster`): starting one, a plain
//! cluster connection to write inputs and check what the cluster holds, and reading streams
//! through it.

use beehive::redis_cluster::RedisCluster;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use crate::RawFields;

/// Starts a private 3-master Redis Cluster (no replicas, nothing on disk).
pub fn three_masters() -> RedisCluster {
    RedisCluster::start(3, 0).expect("start a private 3-master Redis Cluster")
}

/// A plain cluster connection over the cluster's plain ports.
pub async fn raw(cluster: &RedisCluster) -> ClusterConnection {
    ClusterClient::new(
        cluster
            .seeds()
            .iter()
            .map(|s| format!("redis://{s}/"))
            .collect::<Vec<_>>(),
    )
    .expect("cluster client")
    .get_async_connection()
    .await
    .expect("connect to the cluster")
}

/// Every entry of `stream` as (id, fields), bytes untouched.
pub async fn raw_entries(con: &mut ClusterConnection, stream: &str) -> Vec<(String, RawFields)> {
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .expect("XRANGE")
}

/// Every entry of `stream` as (id, fields decoded lossily as text).
pub async fn entries(
    con: &mut ClusterConnection,
    stream: &str,
) -> Vec<(String, Vec<(String, String)>)> {
    raw_entries(con, stream)
        .await
        .into_iter()
        .map(|(id, fields)| {
            let fields = fields
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect();
            (id, fields)
        })
        .collect()
}

/// The length of `stream` (0 when it does not exist).
pub async fn xlen(con: &mut ClusterConnection, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(con)
        .await
        .expect("XLEN")
}

/// Pending count of `group` on `stream` (0 when the group does not exist).
pub async fn pending(con: &mut ClusterConnection, stream: &str, group: &str) -> u64 {
    let reply: redis::RedisResult<(u64, redis::Value, redis::Value, redis::Value)> =
        redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .query_async(con)
            .await;
    reply.map_or(0, |(n, ..)| n)
}

/// XADDs of events numbered `first..first + n` to `{orders}-created` for the echo example,
/// each with `src` = its number and `echo-to` alternately `{orders}-echoed` (the input's
/// slot) and `elsewhere` (another slot).
pub fn echo_inputs(first: usize, n: usize) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for i in first..first + n {
        let target = if i % 2 == 0 {
            "{orders}-echoed"
        } else {
            "elsewhere"
        };
        pipe.cmd("XADD")
            .arg("{orders}-created")
            .arg("*")
            .arg("echo-to")
            .arg(target)
            .arg("src")
            .arg(i.to_string());
    }
    pipe
}
