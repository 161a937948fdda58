//! A Redis Cluster of real processes of Debian's `redis-server`: three masters and three
//! replicas on loopback, each with its own directory, joined by `redis-cli --cluster create`.
//!
//! Each node also listens on its port + 10000 (the cluster bus), so ports are picked below
//! 55535 with both free. `cluster-replica-validity-factor 0` lets a replica that has only just
//! synced take over when its master is killed; a node timeout of one second makes that quick.

use crate::process::Proc;
use nix::sys::signal::Signal;
use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// How long the cluster's nodes wait before they call a silent master failed.
const NODE_TIMEOUT_MS: u64 = 1000;

/// Six nodes; every process is killed on drop.
pub struct RedisCluster {
    _dir: tempfile::TempDir,
    nodes: Vec<(u16, Proc)>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<u16> = self.nodes.iter().map(|(p, _)| *p).collect();
        f.debug_struct("RedisCluster")
            .field("ports", &ports)
            .finish()
    }
}

/// The master and replicas serving one slot, as a node reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub master: u16,
    pub replicas: Vec<u16>,
}

/// `n` loopback ports below 55535 whose bus ports (+10000) are free too.
fn cluster_ports(n: usize) -> Vec<u16> {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let mut ports = Vec::new();
    // Bounded: a few thousand candidates from a start that differs between test processes
    // (clock and pid), in 20000..45535.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let start = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 25535;
    for offset in 0..5000u32 {
        let port = 20000 + ((start + offset * 7) % 25535) as u16;
        if !ports.contains(&port) && free(port) && free(port + 10000) {
            ports.push(port);
            if ports.len() == n {
                return ports;
            }
        }
    }
    panic!("no {n} free port pairs below 55535");
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster (one replica per master) and waits until every
    /// node says the cluster is ok and every replica is in sync.
    pub async fn start() -> RedisCluster {
        Self::start_with_acl(None).await
    }

    /// The same, every node loading `acl` as its ACL file (which must leave the default user
    /// on without a password: the harness connects as it).
    pub async fn start_with_acl(acl: Option<&str>) -> RedisCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for port in cluster_ports(6) {
            let work = dir.path().join(format!("node-{port}"));
            std::fs::create_dir_all(&work).unwrap();
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &work.join("nodes.conf").display().to_string(),
                "--cluster-node-timeout",
                &NODE_TIMEOUT_MS.to_string(),
                "--cluster-replica-validity-factor",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &work.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(acl) = acl {
                let file = work.join("users.acl");
                std::fs::write(&file, acl).unwrap();
                args.extend(["--aclfile".to_owned(), file.display().to_string()]);
            }
            nodes.push((
                port,
                Proc::spawn(std::path::Path::new("redis-server"), &args),
            ));
        }
        let cluster = RedisCluster { _dir: dir, nodes };
        for (port, _) in &cluster.nodes {
            crate::eventually(
                &format!("redis-server on {port}"),
                Duration::from_secs(10),
                || async { Self::connect(*port).await.ok() },
            )
            .await;
        }
        cluster.create().await;
        cluster.wait_ready(Duration::from_secs(30)).await;
        cluster
    }

    async fn create(&self) {
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(self.nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let output = tokio::process::Command::new("redis-cli")
            .args(&args)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(30), output)
            .await
            .expect("redis-cli --cluster create in time")
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    async fn wait_ready(&self, limit: Duration) {
        for (port, _) in &self.nodes {
            crate::eventually(
                &format!("node {port} to say the cluster is ok"),
                limit,
                || async {
                    let mut conn = Self::connect(*port).await.ok()?;
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    let role: String = redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    let synced =
                        role.contains("role:master") || role.contains("master_link_status:up");
                    // Every range served with a replica known (a failover has somewhere to go).
                    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    let replicated = ranges
                        .iter()
                        .all(|r| matches!(r, redis::Value::Array(items) if items.len() >= 4));
                    (info.contains("cluster_state:ok") && synced && replicated).then_some(())
                },
            )
            .await;
        }
    }

    /// `redis+cluster://127.0.0.1:p1,...` naming the first three nodes as seeds.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}", self.seeds())
    }

    /// The same URL with a user and password.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis+cluster://{user}:{password}@{}", self.seeds())
    }

    fn seeds(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        seeds.join(",")
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(p, _)| *p).collect()
    }

    /// A plain connection to the node on `port`.
    pub async fn connect(port: u16) -> redis::RedisResult<MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let connect = client.get_multiplexed_async_connection();
        tokio::time::timeout(Duration::from_secs(3), connect)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))?
    }

    /// The shard serving `key`'s slot, as the first live node that answers reports it, and
    /// only once that master says it is one (after a failover the map can name the dead one).
    pub async fn shard_of(&self, key: &str) -> Option<Shard> {
        for (port, _) in &self.nodes {
            let Ok(mut conn) = Self::connect(*port).await else {
                continue;
            };
            let Ok(slot) = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
            else {
                continue;
            };
            let Ok(ranges) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Vec<redis::Value>>(&mut conn)
                .await
            else {
                continue;
            };
            let shard = ranges.iter().find_map(|r| shard_in(r, slot))?;
            return is_master(shard.master).await.then_some(shard);
        }
        None
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&self, port: u16) {
        let (_, proc) = self
            .nodes
            .iter()
            .find(|(p, _)| *p == port)
            .expect("the node is one of ours");
        proc.signal(Signal::SIGKILL);
    }

    /// Waits until `key`'s slot is served by a master other than `old`; returns the new one.
    pub async fn wait_failover(&self, key: &str, old: u16, limit: Duration) -> Shard {
        crate::eventually("a replica to take over the slot", limit, || async {
            self.shard_of(key).await.filter(|s| s.master != old)
        })
        .await
    }
}

/// The shard in one `CLUSTER SLOTS` entry (`[start, end, [ip, port, id], replicas...]`) if it
/// holds `slot`.
fn shard_in(range: &redis::Value, slot: i64) -> Option<Shard> {
    let redis::Value::Array(items) = range else {
        return None;
    };
    let int = |v: &redis::Value| match v {
        redis::Value::Int(n) => Some(*n),
        _ => None,
    };
    let (start, end) = (int(items.first()?)?, int(items.get(1)?)?);
    if !(start..=end).contains(&slot) {
        return None;
    }
    let port = |v: &redis::Value| match v {
        redis::Value::Array(node) => int(node.get(1)?).and_then(|p| u16::try_from(p).ok()),
        _ => None,
    };
    Some(Shard {
        master: port(items.get(2)?)?,
        replicas: items[3..].iter().filter_map(port).collect(),
    })
}

async fn is_master(port: u16) -> bool {
    let Ok(mut conn) = RedisCluster::connect(port).await else {
        return false;
    };
    let role: redis::RedisResult<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await;
    matches!(role, Ok(v) if format!("{v:?}").contains("master"))
}

/// How many subscribers `channel` has on the node on `port`: (classic, sharded).
pub async fn subscribers(port: u16, channel: &str) -> Option<(i64, i64)> {
    let mut conn = RedisCluster::connect(port).await.ok()?;
    let (_, classic): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .ok()?;
    let (_, sharded): (String, i64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .ok()?;
    Some((classic, sharded))
}
