//! Transactions (`MULTI` … `EXEC`) that carry on while a cluster moves a slot.
//!
//! redis-rs follows `MOVED`, `ASK` and `TRYAGAIN` for single commands, but a transaction
//! whose commands were redirected while being queued comes back as one `EXECABORT` with
//! the redirects inside, and nothing was written. [`exec`] sends such a transaction again:
//! to the node the slot is moving to, behind `ASKING`, when every command was asked there
//! (as Redis itself decides for a multi-key command: none of its keys is left on the old
//! node); after a topology refresh when the slot has moved; after a pause when its keys are
//! split between the two nodes for now. Since an aborted transaction wrote nothing, sending
//! it again never writes twice.

use std::time::{Duration, Instant};

use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{FromRedisValue, Pipeline, RedisError, RedisResult};

use super::pool::Connection;

/// How long a transaction is retried while its slot moves before the error is returned.
pub(crate) const MIGRATION_PATIENCE: Duration = Duration::from_secs(10);

/// Runs `pipe` (built with [`Pipeline::atomic`]) and parses `EXEC`'s reply as `T`; on a
/// cluster, a transaction aborted by a moving slot is sent again as the module says, for
/// up to [`MIGRATION_PATIENCE`].
pub(crate) async fn exec<T: FromRedisValue>(
    con: &mut Connection,
    pipe: &Pipeline,
) -> RedisResult<T> {
    let Connection::Cluster(cluster) = con else {
        return pipe.query_async(con).await;
    };
    let deadline = Instant::now() + MIGRATION_PATIENCE;
    let mut pause = Duration::from_millis(10);
    let mut asking: Option<(String, u16)> = None;
    loop {
        let result = match &asking {
            None => pipe.query_async(cluster).await,
            Some((host, port)) => exec_asking(cluster, pipe, host, *port).await,
        };
        let error = match result {
            Ok(reply) => return Ok(reply),
            Err(e) => e,
        };
        let step = plan(&redirects(&error), pipe.cmd_iter().count());
        if step == Step::GiveUp || Instant::now() >= deadline {
            return Err(error);
        }
        asking = None;
        match step {
            Step::Asking(host, port) => asking = Some((host, port)),
            Step::Refresh => {
                // A command routed by key follows the MOVED and refreshes the slot map,
                // which the aborted transaction did not.
                if let Some(key) = pipe.cmd_iter().next().and_then(first_key) {
                    let _: RedisResult<i64> =
                        redis::cmd("EXISTS").arg(key).query_async(cluster).await;
                }
            }
            Step::Wait => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Step::GiveUp => unreachable!("returned above"),
        }
    }
}

/// `ASKING`, then the transaction, as one write to the node at `host:port` (so nothing is
/// sent on that connection in between, and Redis keeps the `ASKING` flag for the
/// transaction), returning `EXEC`'s reply.
async fn exec_asking<T: FromRedisValue>(
    con: &mut redis::cluster_async::ClusterConnection,
    pipe: &Pipeline,
    host: &str,
    port: u16,
) -> RedisResult<T> {
    let mut asking = redis::pipe();
    asking.cmd("ASKING").cmd("MULTI");
    let mut queued = 0;
    for cmd in pipe.cmd_iter() {
        asking.add_command(cmd.clone());
        queued += 1;
    }
    asking.cmd("EXEC");
    let route = SingleNodeRoutingInfo::ByAddress {
        host: host.to_string(),
        port,
    };
    let mut replies = con.route_pipeline(asking, queued + 2, 1, route).await?;
    match replies.pop() {
        Some(exec) => T::from_redis_value(exec).map_err(RedisError::from),
        None => Err(RedisError::from((
            redis::ErrorKind::Client,
            "no reply to EXEC",
        ))),
    }
}

/// The key a command names first (its first argument), for routing.
fn first_key(cmd: &redis::Cmd) -> Option<Vec<u8>> {
    match cmd.args_iter().nth(1)? {
        redis::Arg::Simple(key) => Some(key.to_vec()),
        _ => None,
    }
}

/// The server errors inside an aborted transaction, as (code, details).
fn redirects(error: &RedisError) -> Vec<(String, String)> {
    error
        .clone()
        .into_server_errors()
        .map(|errors| {
            errors
                .iter()
                .map(|(_, e)| (e.code().to_string(), e.details().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// What to do about a transaction of `commands` commands that failed with `errors`.
#[derive(Debug, PartialEq)]
enum Step {
    /// Send it again to this node behind `ASKING`: the slot is moving there and none of
    /// the transaction's keys is left on the old node.
    Asking(String, u16),
    /// The slot has moved: refresh the topology and send it again.
    Refresh,
    /// The slot is moving and the keys are split between the nodes: wait and try again.
    Wait,
    /// Not a moving slot: return the error.
    GiveUp,
}

/// Decides the [`Step`] from the aborted transaction's errors (code, details).
fn plan(errors: &[(String, String)], commands: usize) -> Step {
    if errors.is_empty() {
        return Step::GiveUp;
    }
    let mut ask_to = None;
    let mut asks = 0;
    for (code, details) in errors {
        match code.as_str() {
            "MOVED" => return Step::Refresh,
            "ASK" => {
                let Some(address) = details.split_ascii_whitespace().nth(1) else {
                    return Step::GiveUp;
                };
                let Some((host, port)) = address
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                else {
                    return Step::GiveUp;
                };
                if ask_to.get_or_insert_with(|| (host.clone(), port)) != &(host, port) {
                    return Step::Wait;
                }
                asks += 1;
            }
            "TRYAGAIN" | "CLUSTERDOWN" => return Step::Wait,
            _ => return Step::GiveUp,
        }
    }
    match ask_to {
        Some((host, port)) if asks == commands => Step::Asking(host, port),
        // Some keys are still on the old node, the others already moved.
        _ => Step::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(c, d)| (c.to_string(), d.to_string()))
            .collect()
    }

    #[test]
    fn every_command_asked_to_one_node_is_sent_there_behind_asking() {
        let e = errors(&[("ASK", "105 127.0.0.1:7001"), ("ASK", "105 127.0.0.1:7001")]);
        assert_eq!(plan(&e, 2), Step::Asking("127.0.0.1".into(), 7001));
    }

    #[test]
    fn keys_split_between_the_nodes_wait() {
        // One XADD queued on the old node (its stream is still there), one asked away:
        // sending all of it to the new node would create the old node's stream there.
        let e = errors(&[("ASK", "105 127.0.0.1:7001")]);
        assert_eq!(plan(&e, 2), Step::Wait);
        assert_eq!(plan(&errors(&[("TRYAGAIN", "")]), 1), Step::Wait);
        assert_eq!(plan(&errors(&[("CLUSTERDOWN", "")]), 1), Step::Wait);
    }

    #[test]
    fn a_moved_slot_refreshes_the_topology() {
        let e = errors(&[
            ("ASK", "105 127.0.0.1:7001"),
            ("MOVED", "105 127.0.0.1:7001"),
        ]);
        assert_eq!(plan(&e, 2), Step::Refresh);
    }

    #[test]
    fn other_errors_are_returned() {
        assert_eq!(plan(&[], 1), Step::GiveUp);
        assert_eq!(
            plan(&errors(&[("WRONGTYPE", "Operation")]), 1),
            Step::GiveUp
        );
        assert_eq!(plan(&errors(&[("ASK", "garbage")]), 1), Step::GiveUp);
    }
}
