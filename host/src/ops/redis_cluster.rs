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
    /// Each node's TLS port, in node order, when started with [`RedisCluster::start_tls`].
    tls_ports: Vec<u16>,
}

/// The files a TLS cluster's nodes serve and trust (PEM).
pub struct TlsFiles<'a> {
    /// The server certificate every node presents (valid for 127.0.0.1).
    pub cert: &'a std::path::Path,
    /// Its private key.
    pub key: &'a std::path::Path,
    /// The CA that signed it, which the nodes trust on the cluster bus.
    pub ca: &'a std::path::Path,
}

impl RedisCluster {
    /// Starts `masters` masters (at least 3) with `replicas` replicas each, keeping nothing
    /// on disk, joins them into a cluster covering all 16384 slots, and waits until every
    /// node reports `cluster_state:ok`. Ports are below 55000 (the cluster bus listens on
    /// the port + 10000).
    pub fn start(masters: usize, replicas: usize) -> io::Result<Self> {
        Self::start_inner(masters, replicas, None)
    }

    /// As [`start`](Self::start), and every node also listens for TLS clients on a port of
    /// its own ([`tls_seeds`](Self::tls_seeds)) and talks TLS on the cluster bus
    /// (`tls-cluster yes`). Clients that connect with TLS are told the nodes' TLS ports
    /// (`CLUSTER SLOTS`); the plain ports stay open for the harness and for checks.
    pub fn start_tls(masters: usize, replicas: usize, tls: &TlsFiles) -> io::Result<Self> {
        Self::start_inner(masters, replicas, Some(tls))
    }

    fn start_inner(masters: usize, replicas: usize, tls: Option<&TlsFiles>) -> io::Result<Self> {
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
            // A replica may take over however long ago it last heard from its master, and
            // syncs without writing an RDB file first: failover tests need both.
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ];
        let mut nodes = Vec::with_capacity(count);
        let mut tls_ports = Vec::new();
        while nodes.len() < count {
            let port = cluster_port()?;
            let mut node_args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let tls_port = match tls {
                Some(tls) => {
                    let tls_port = cluster_port()?;
                    let path = |p: &std::path::Path| p.display().to_string();
                    node_args.extend([
                        "--tls-port".to_string(),
                        tls_port.to_string(),
                        "--tls-cluster".to_string(),
                        "yes".to_string(),
                        "--tls-replication".to_string(),
                        "yes".to_string(),
                        "--tls-cert-file".to_string(),
                        path(tls.cert),
                        "--tls-key-file".to_string(),
                        path(tls.key),
                        "--tls-ca-cert-file".to_string(),
                        path(tls.ca),
                        "--tls-auth-clients".to_string(),
                        "no".to_string(),
                    ]);
                    Some(tls_port)
                }
                None => None,
            };
            let node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
            match RedisServer::start_on(port, &node_args) {
                Ok(node) => {
                    nodes.push(node);
                    tls_ports.extend(tls_port);
                }
                // Taken between the check and the start: try another port.
                Err(e) if e.to_string().contains("exited") => continue,
                Err(e) => return Err(e),
            }
        }
        let cluster = RedisCluster { nodes, tls_ports };
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
        if replicas > 0 {
            cluster.wait_replicas_synced(Duration::from_secs(30))?;
        }
        Ok(cluster)
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) -> io::Result<()> {
        wait_until(
            timeout,
            "the cluster did not reach cluster_state:ok",
            || {
                self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                    cli(n.port(), &["CLUSTER", "INFO"])
                        .is_ok_and(|i| i.contains("cluster_state:ok"))
                })
            },
        )
    }

    /// Waits until every replica's link to its master is up (it holds the master's data).
    fn wait_replicas_synced(&self, timeout: Duration) -> io::Result<()> {
        wait_until(
            timeout,
            "the replicas did not sync with their masters",
            || {
                self.nodes.iter().all(|n| {
                    cli(n.port(), &["INFO", "replication"]).is_ok_and(|info| {
                        info.contains("role:master") || info.contains("master_link_status:up")
                    })
                })
            },
        )
    }

    /// The seed addresses (`127.0.0.1:<port>` of every node), for
    /// [`Registry::register_redis_cluster`](crate::Registry::register_redis_cluster).
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address()).collect()
    }

    /// The TLS seed URLs (`rediss://127.0.0.1:<tls-port>`) of a cluster started with
    /// [`start_tls`](Self::start_tls); empty otherwise.
    pub fn tls_seeds(&self) -> Vec<String> {
        self.tls_ports
            .iter()
            .map(|p| format!("rediss://127.0.0.1:{p}"))
            .collect()
    }

    /// Every node, masters and replicas, in start order.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The port of the live master serving `slot`, as the first running node sees it.
    pub fn master_of_slot(&self, slot: u16) -> io::Result<u16> {
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let Ok(text) = cli(node.port(), &["CLUSTER", "NODES"]) else {
                continue;
            };
            if let Some(port) = master_in_nodes(&text, slot) {
                return Ok(port);
            }
        }
        Err(io::Error::other(format!(
            "no running node knows a live master of slot {slot}"
        )))
    }
}

impl RedisCluster {
    /// Moves `slot` from its master to the master listening on `to`, as `redis-cli
    /// --cluster reshard` does it, while clients keep using the cluster: the target is set
    /// IMPORTING and the source MIGRATING (new keys then go to the target by `ASK`), the
    /// slot's keys are `MIGRATE`d `batch` at a time with `pause` between batches (so a
    /// test can run traffic through the half-moved slot), and finally every master is told
    /// the target owns it. Returns the port of the source.
    pub fn migrate_slot(
        &self,
        slot: u16,
        to: u16,
        batch: usize,
        pause: Duration,
    ) -> io::Result<u16> {
        let from = self.master_of_slot(slot)?;
        if from == to {
            return Err(io::Error::other(format!("slot {slot} is already on {to}")));
        }
        let id = |port: u16| cli(port, &["CLUSTER", "MYID"]).map(|id| id.trim().to_string());
        let (from_id, to_id) = (id(from)?, id(to)?);
        let slot_arg = slot.to_string();
        let setslot = |port: u16, args: &[&str]| {
            let mut all = vec!["CLUSTER", "SETSLOT", slot_arg.as_str()];
            all.extend_from_slice(args);
            cli_ok(port, &all)
        };
        setslot(to, &["IMPORTING", &from_id])?;
        setslot(from, &["MIGRATING", &to_id])?;
        let count = batch.max(1).to_string();
        let to_port = to.to_string();
        loop {
            let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, &count])?;
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "10000", "KEYS"];
            migrate.extend(keys);
            cli_ok(from, &migrate)?;
            std::thread::sleep(pause);
        }
        // The target first (so it never bounces its new slot back), then the source, then
        // every other master.
        setslot(to, &["NODE", &to_id])?;
        setslot(from, &["NODE", &to_id])?;
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            if node.port() != to && node.port() != from {
                let role = cli(node.port(), &["ROLE"])?;
                if role.starts_with("master") {
                    setslot(node.port(), &["NODE", &to_id])?;
                }
            }
        }
        wait_until(
            Duration::from_secs(30),
            "the nodes did not agree on the migrated slot",
            || {
                self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                    cli(n.port(), &["CLUSTER", "NODES"])
                        .is_ok_and(|text| master_in_nodes(&text, slot) == Some(to))
                })
            },
        )?;
        Ok(from)
    }

    /// The ports of the running masters.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .filter(|n| cli(n.port(), &["ROLE"]).is_ok_and(|r| r.starts_with("master")))
            .map(|n| n.port())
            .collect()
    }
}

/// From `CLUSTER NODES` (`<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch>
/// <link> <slot ranges>...`), the port of the master, not failed, whose ranges hold `slot`.
fn master_in_nodes(text: &str, slot: u16) -> Option<u16> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            return None;
        }
        let owns = fields.iter().skip(8).any(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
        });
        if !owns {
            return None;
        }
        let address = fields.get(1)?.split('@').next()?;
        address.rsplit_once(':')?.1.parse().ok()
    })
}

/// Checks `done` every 50 ms until it holds, or fails with `failure` after `timeout`.
fn wait_until(timeout: Duration, failure: &str, mut done: impl FnMut() -> bool) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, failure.to_string()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
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

/// Runs `redis-cli -p <port> <args>` and fails unless Redis answered `OK` (`redis-cli`
/// exits 0 on an error reply, so the reply itself is checked).
fn cli_ok(port: u16, args: &[&str]) -> io::Result<()> {
    let reply = cli(port, args)?;
    if reply.trim() == "OK" || reply.trim() == "NOKEY" {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} on port {port}: {}",
            args.join(" "),
            reply.trim()
        )))
    }
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
    fn the_master_of_a_slot_is_read_from_cluster_nodes() {
        let text = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922 12000\n\
                    c3 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected 10923-16383\n\
                    d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected\n";
        assert_eq!(master_in_nodes(text, 0), Some(7000));
        assert_eq!(master_in_nodes(text, 5461), Some(7001));
        assert_eq!(master_in_nodes(text, 12000), Some(7001));
        assert_eq!(
            master_in_nodes(text, 16000),
            None,
            "a failed master is no master"
        );
    }
}
