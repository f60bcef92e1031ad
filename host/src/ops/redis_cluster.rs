//! A private Redis Cluster on loopback ports: `redis-server --cluster-enabled yes` nodes
//! joined by `redis-cli --cluster create`, for the demo and for tests. Stopped on drop.

use std::io;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use super::redis_server::RedisServer;

/// How long a node may be unreachable before the cluster fails it over (milliseconds).
pub const NODE_TIMEOUT_MS: u64 = 2000;

/// A running Redis Cluster of private `redis-server` processes.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters (at least 3) with `replicas` replicas each, keeping nothing
    /// on disk, joins them into a cluster covering all 16384 slots, and waits until every
    /// node reports `cluster_state:ok`. Ports are below 55000 (the cluster bus listens on
    /// the port + 10000).
    pub fn start(masters: usize, replicas: usize) -> io::Result<Self> {
        if masters < 3 {
            return Err(io::Error::other("a Redis Cluster needs at least 3 masters"));
        }
        let count = masters * (1 + replicas);
        let timeout = NODE_TIMEOUT_MS.to_string();
        let args = [
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            timeout.as_str(),
        ];
        let mut nodes = Vec::with_capacity(count);
        while nodes.len() < count {
            let port = cluster_port()?;
            match RedisServer::start_on(port, &args) {
                Ok(node) => nodes.push(node),
                // Taken between the check and the start: try another port.
                Err(e) if e.to_string().contains("exited") => continue,
                Err(e) => return Err(e),
            }
        }
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(node.address());
        }
        create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes");
        let output = create.output().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    e.kind(),
                    "redis-cli not found on PATH: install it with redis-server",
                )
            } else {
                e
            }
        })?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&output.stderr).lines())
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("")
            )));
        }
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Waits until every running node reports `cluster_state:ok` and knows every other
    /// running node's role.
    pub fn wait_ok(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                cli(n.port(), &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the cluster did not reach cluster_state:ok",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed addresses (`127.0.0.1:<port>` of every node), for
    /// [`Registry::register_redis_cluster`](crate::Registry::register_redis_cluster).
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address()).collect()
    }

    /// Every node, masters and replicas, in start order.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The port of the master serving `slot`, as the node on `via` sees it.
    pub fn master_of_slot(&self, slot: u16) -> io::Result<u16> {
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let Ok(text) = cli(node.port(), &["CLUSTER", "SHARDS"]) else {
                continue;
            };
            if let Some(port) = master_in_shards(&text, slot) {
                return Ok(port);
            }
        }
        Err(io::Error::other(format!(
            "no running node knows the master of slot {slot}"
        )))
    }
}

/// From `redis-cli CLUSTER SHARDS` output (one value per line), the port of the master of
/// the shard whose slot ranges hold `slot`.
fn master_in_shards(text: &str, slot: u16) -> Option<u16> {
    // Per shard: "slots", start, end, ..., "nodes", then per node "id", .., "port", p, ..,
    // "role", r, ...; shards follow each other.
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut i = 0;
    let mut owns = false;
    let mut port = None;
    while i < lines.len() {
        match lines[i] {
            "slots" => {
                owns = false;
                let mut j = i + 1;
                while j + 1 < lines.len() && lines[j] != "nodes" {
                    if let (Ok(a), Ok(b)) = (lines[j].parse::<u16>(), lines[j + 1].parse::<u16>())
                        && (a..=b).contains(&slot)
                    {
                        owns = true;
                    }
                    j += 2;
                }
                i = j;
                continue;
            }
            "port" => port = lines.get(i + 1).and_then(|p| p.parse().ok()),
            "role" if owns && lines.get(i + 1) == Some(&"master") => {
                if let Some(p) = port {
                    return Some(p);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Runs `redis-cli -p <port> <args>` and returns what it printed.
fn cli(port: u16, args: &[&str]) -> io::Result<String> {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(
            String::from_utf8_lossy(&output.stderr).to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// A free port below 55000 whose cluster bus port (+10000) is free too.
fn cluster_port() -> io::Result<u16> {
    for _ in 0..1000 {
        let port = 20000 + (rand::random::<u16>() % 35000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free port pair below 55000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_of_a_slot_is_read_from_cluster_shards() {
        let text = "slots\n0\n5460\nnodes\nid\nabc\nport\n7000\nip\n127.0.0.1\nrole\nmaster\nid\ndef\nport\n7003\nrole\nreplica\nslots\n5461\n10922\nnodes\nid\nx\nport\n7001\nrole\nmaster\n";
        assert_eq!(master_in_shards(text, 0), Some(7000));
        assert_eq!(master_in_shards(text, 5460), Some(7000));
        assert_eq!(master_in_shards(text, 5461), Some(7001));
        assert_eq!(master_in_shards(text, 16000), None);
    }
}
