//! A throwaway Redis Cluster per test: 6 `redis-server --cluster-enabled yes` on free loopback
//! ports (3 masters, 3 replicas, joined by `redis-cli --cluster create --cluster-replicas 1`), no
//! persistence except each node's own `nodes.conf` in a temp dir, every node killed on drop.
//!
//! Each node gets two free ports (client and cluster bus, `--cluster-port`), found by binding
//! 127.0.0.1:0 and releasing it; another process could take one in between, so a cluster that
//! does not come up is torn down and started again on fresh ports (a bounded number of times).
//! `--cluster-node-timeout` is short (2 s) so that a killed master's replica is promoted within
//! a few seconds; every wait on the cluster is bounded.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Node timeout of the test clusters, in milliseconds.
const NODE_TIMEOUT_MS: u64 = 2_000;

struct Node {
    port: u16,
    bus: u16,
    child: Option<Child>,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

/// One line of `CLUSTER NODES`, as far as the tests need it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    pub master_id: Option<String>,
    pub slots: Vec<(u16, u16)>,
}

use crate::helpers::free_port;

impl RedisCluster {
    /// Starts 6 nodes, creates the cluster and waits until every node reports it ok.
    pub async fn start() -> Self {
        for _ in 0..3 {
            let mut c = Self {
                nodes: Vec::new(),
                dir: tempfile::tempdir().expect("temp dir for the cluster"),
            };
            if c.try_start().await {
                return c;
            }
            // Dropping `c` kills whatever started.
        }
        panic!("a 6-node redis cluster did not come up in 3 attempts");
    }

    async fn try_start(&mut self) -> bool {
        for _ in 0..6 {
            let (port, bus) = (free_port(), free_port());
            if port == bus {
                return false;
            }
            self.nodes.push(Node {
                port,
                bus,
                child: None,
            });
        }
        for i in 0..self.nodes.len() {
            self.spawn(i);
        }
        for i in 0..self.nodes.len() {
            if !self.wait_ping(i).await {
                return false;
            }
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &self.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create (apt-get install redis-tools)");
        if !out.status.success() {
            eprintln!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            return false;
        }
        self.wait_ok(Duration::from_secs(30)).await
    }

    fn spawn(&mut self, i: usize) {
        let dir = self.dir.path().join(format!("node-{i}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let n = &mut self.nodes[i];
        let child = Command::new("redis-server")
            .args(["--port", &n.port.to_string()])
            .args(["--cluster-port", &n.bus.to_string()])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            // A replica's first sync starts at once (the default waits 5 s for more replicas).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); scripts/test installs it"));
        n.child = Some(child);
    }

    /// Up to 5 s for a node to answer PING (false if it exited: a port was taken).
    async fn wait_ping(&mut self, i: usize) -> bool {
        for _ in 0..100 {
            if let Some(c) = self.nodes[i].child.as_mut()
                && matches!(c.try_wait(), Ok(Some(_)))
            {
                return false;
            }
            if self.cli(i, &["PING"]) == "PONG" {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Seed URLs of every node (the client learns the topology from any of them).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    fn index_of_port(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Runs one command on node `i` through `redis-cli`, bounded by `timeout 5`.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .args(["5", "redis-cli", "-h", "127.0.0.1", "-p"])
            .arg(self.nodes[i].port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs several commands on one connection to node `i` (`redis-cli` reading them from its
    /// standard input, e.g. `ASKING` before a command); returns the replies, one per line.
    pub fn cli_script(&self, i: usize, lines: &[&str]) -> String {
        use std::io::Write;
        let mut child = Command::new("timeout")
            .args(["5", "redis-cli", "-h", "127.0.0.1", "-p"])
            .arg(self.nodes[i].port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run redis-cli");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(format!("{}\n", lines.join("\n")).as_bytes());
        }
        let out = child.wait_with_output().expect("redis-cli output");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether node `i` is, in its own view, a master serving slots.
    pub fn is_master(&self, i: usize) -> bool {
        let port = self.port(i);
        self.alive(i)
            && self
                .nodes_seen_by(i)
                .iter()
                .any(|n| n.port == port && n.master && !n.slots.is_empty())
    }

    /// Whether every live node says `cluster_state:ok` and sees every other live node's role
    /// the same way (one master per slot range, nobody live flagged failed).
    async fn wait_ok(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.all_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn all_ok(&self) -> bool {
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.alive(i)).collect();
        live.iter().all(|&i| {
            let info = self.cli(i, &["CLUSTER", "INFO"]);
            if !info.contains("cluster_state:ok") {
                return false;
            }
            let nodes = self.nodes_seen_by(i);
            let me_master = nodes
                .iter()
                .any(|n| n.port == self.port(i) && n.master && !n.slots.is_empty());
            // A master's replica (when it has a live one) has finished its sync.
            if me_master {
                let repl = self.cli(i, &["INFO", "replication"]);
                let has_live_replica = nodes.iter().any(|n| {
                    n.master_id.is_some()
                        && !n.failed
                        && nodes
                            .iter()
                            .any(|m| m.port == self.port(i) && Some(&m.id) == n.master_id.as_ref())
                });
                if has_live_replica && !repl.contains("state=online") {
                    return false;
                }
            }
            let masters_with_slots = nodes
                .iter()
                .filter(|n| n.master && !n.failed && !n.slots.is_empty())
                .count();
            // Every live node that is not one of the 3 masters is known as a replica everywhere
            // (right after `--cluster create` a replica may still look like an empty master).
            let replicas = nodes
                .iter()
                .filter(|n| n.master_id.is_some() && !n.failed)
                .count();
            masters_with_slots == 3
                && replicas + 3 == live.len()
                && nodes
                    .iter()
                    .filter(|n| self.alive(self.index_of_port(n.port)))
                    .all(|n| !n.failed)
        })
    }

    /// `CLUSTER NODES` as node `i` sees it.
    pub fn nodes_seen_by(&self, i: usize) -> Vec<NodeInfo> {
        self.cli(i, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(parse_node_line)
            .collect()
    }

    /// Any live node's view.
    fn view(&self) -> Vec<NodeInfo> {
        let i = (0..self.nodes.len())
            .find(|&i| self.alive(i))
            .expect("a live node");
        self.nodes_seen_by(i)
    }

    /// The node index of the master serving `key`'s slot, and of one live replica of it.
    pub fn master_and_replica_of(&self, key: &str) -> (usize, usize) {
        let i = (0..self.nodes.len()).find(|&i| self.alive(i)).unwrap_or(0);
        let slot: u16 = self
            .cli(i, &["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let view = self.view();
        let master = view
            .iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no master for slot {slot}: {view:?}"));
        let replica = view
            .iter()
            .find(|n| n.master_id.as_deref() == Some(&master.id) && !n.failed)
            .unwrap_or_else(|| panic!("no replica of {}: {view:?}", master.port));
        (
            self.index_of_port(master.port),
            self.index_of_port(replica.port),
        )
    }

    /// Waits (at most 5 s) until master `i`'s replica has acknowledged everything it was sent.
    pub async fn wait_replicated(&self, i: usize) {
        for _ in 0..100 {
            let info = self.cli(i, &["INFO", "replication"]);
            let field = |name: &str| {
                info.split([',', '\r', '\n'])
                    .find_map(|f| f.strip_prefix(name))
                    .map(str::to_string)
            };
            if let (Some(master), Some(replica)) = (field("master_repl_offset:"), field("offset="))
                && master == replica
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the replica of {} never caught up", self.port(i));
    }

    /// Kills node `i` as a crash would (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes (`STOP`) or thaws (`CONT`) node `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i]
            .child
            .as_ref()
            .expect("node is running")
            .id()
            .to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Waits (bounded) until node `i` is a master serving slots and the cluster is ok again.
    pub async fn wait_promoted(&self, i: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let port = self.port(i);
        while tokio::time::Instant::now() < deadline {
            let promoted = self
                .view()
                .iter()
                .any(|n| n.port == port && n.master && !n.slots.is_empty());
            if promoted && self.all_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "node {port} was not promoted within {limit:?}: {:?}",
            self.view()
        );
    }
}

fn parse_node_line(line: &str) -> Option<NodeInfo> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let port = f[1]
        .split(['@', ','])
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    let flags = f[2];
    let slots = f[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|a| (a, a)),
        })
        .collect();
    Some(NodeInfo {
        id: f[0].to_string(),
        port,
        master: flags.contains("master"),
        failed: flags.split(',').any(|x| x == "fail" || x == "fail?"),
        master_id: (f[3] != "-").then(|| f[3].to_string()),
        slots,
    })
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // SIGKILL ends a frozen (SIGSTOP) node too.
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
