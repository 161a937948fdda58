//! Redis behind Sentinel, as real processes of Debian's `redis-server`: a master, a replica and
//! three sentinels on loopback ports, each with its own directory and config file (sentinels
//! rewrite theirs). Killing the master (SIGKILL) leaves the sentinels to promote the replica.

use crate::process::Proc;
use nix::sys::signal::Signal;
use std::time::Duration;

/// The master's name the sentinels watch.
pub const MASTER: &str = "ebb-master";

/// A master, a replica and three sentinels; every process is killed on drop.
pub struct SentinelSet {
    dir: tempfile::TempDir,
    /// The data nodes by port (the master first, as started).
    data: Vec<(u16, Proc)>,
    sentinels: Vec<(u16, Proc)>,
}

impl std::fmt::Debug for SentinelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSet")
            .field(
                "data",
                &self.data.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .field(
                "sentinels",
                &self.sentinels.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A loopback port nothing listens on now (the kernel's pick, released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn redis_server(args: &[String]) -> Proc {
    Proc::spawn(std::path::Path::new("redis-server"), args)
}

impl SentinelSet {
    /// Starts the five processes and waits until the replica is in sync and every sentinel
    /// knows the replica and the two other sentinels (so a failover can be agreed on).
    pub async fn start() -> SentinelSet {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (master, replica) = (free_port(), free_port());
        let mut data = Vec::new();
        for (port, replica_of) in [(master, None), (replica, Some(master))] {
            let work = dir.path().join(format!("data-{port}"));
            std::fs::create_dir_all(&work).unwrap();
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
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
            if let Some(of) = replica_of {
                args.extend(["--replicaof".into(), format!("127.0.0.1 {of}")]);
            }
            data.push((port, redis_server(&args)));
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir = dir.path().display()
                ),
            )
            .unwrap();
            let args = vec![conf.display().to_string(), "--sentinel".to_owned()];
            sentinels.push((port, redis_server(&args)));
        }
        let set = SentinelSet {
            dir,
            data,
            sentinels,
        };
        set.wait_ready(Duration::from_secs(30)).await;
        set
    }

    /// `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/ebb-master`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// A plain connection to the data node on `port`.
    pub async fn connect(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let connect = client.get_multiplexed_async_connection();
        tokio::time::timeout(Duration::from_secs(3), connect)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))?
    }

    /// The master's port as the first sentinel that answers names it.
    pub async fn master_port(&self) -> Option<u16> {
        for (port, _) in &self.sentinels {
            let Ok(mut conn) = Self::connect(*port).await else {
                continue;
            };
            let addr: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER)
                .query_async(&mut conn)
                .await;
            if let Ok(Some((_, port))) = addr {
                return Some(port);
            }
        }
        None
    }

    /// A connection to the master of the moment (for the test's own reads).
    pub async fn master(&self) -> redis::aio::MultiplexedConnection {
        let port = self.master_port().await.expect("a sentinel names a master");
        Self::connect(port)
            .await
            .unwrap_or_else(|e| panic!("connecting to the master on {port}: {e}"))
    }

    /// SIGKILLs the current master; returns its port.
    pub async fn kill_master(&self) -> u16 {
        let port = self.master_port().await.expect("a sentinel names a master");
        let (_, proc) = self
            .data
            .iter()
            .find(|(p, _)| *p == port)
            .expect("the master is one of ours");
        proc.signal(Signal::SIGKILL);
        port
    }

    /// Waits until the sentinels name a master other than `old` and it says it is one.
    pub async fn wait_failover(&self, old: u16, limit: Duration) -> u16 {
        crate::eventually("the sentinels to promote the replica", limit, || async {
            let port = self.master_port().await.filter(|p| *p != old)?;
            let mut conn = Self::connect(port).await.ok()?;
            let role: redis::Value = redis::cmd("ROLE").query_async(&mut conn).await.ok()?;
            format!("{role:?}").contains("master").then_some(port)
        })
        .await
    }

    async fn wait_ready(&self, limit: Duration) {
        let replica = self.data[1].0;
        crate::eventually("the replica in sync", limit, || async {
            let mut conn = Self::connect(replica).await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .ok()?;
            info.contains("master_link_status:up").then_some(())
        })
        .await;
        for (port, _) in &self.sentinels {
            crate::eventually(
                &format!("sentinel {port} to know the replica and the other sentinels"),
                limit,
                || async {
                    let mut conn = Self::connect(*port).await.ok()?;
                    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(MASTER)
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    let others: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("SENTINELS")
                        .arg(MASTER)
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    (replicas.len() == 1 && others.len() == 2).then_some(())
                },
            )
            .await;
        }
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(port, _)| *port).collect()
    }

    /// Where the processes keep their files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
