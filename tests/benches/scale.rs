//! Scale: `--nodes` (1,000) registered nodes in one Redis, each an in-process node with the real
//! Redis agent (`ebb_node::agent::Agent`: the same registration, heartbeat, command listener and
//! reconnects as `ebb-node`) and no clients, so one process holds the whole fleet.
//!
//! - Redis traffic at steady state: `CONFIG RESETSTAT`, a window of `--seconds`, then `INFO
//!   commandstats`. The commands the record script runs inside Redis (`HSET`, `PEXPIRE`, ...)
//!   are counted by Redis too, so round trips are the commands a client sent: the script calls
//!   (`EVALSHA`) and everything else the agents send; the bound is one round trip per node per
//!   heartbeat.
//! - `ebb status --json` (the release binary, a fresh process each time) over all nodes:
//!   wall time of `--status-runs` runs, median and worst; each run must list every node.
//! - The coordinator's reaction with the whole fleet registered: `--restartable` (10) more
//!   nodes are real servers (started on loopback, no clients) that the benchmark restarts as a
//!   supervisor would (a drain that ends in exit: agent stopped, a new node and agent under the
//!   same name); `--rollouts` (3) runs of `ebb rolling-restart --nodes <those> --json` (the
//!   release binary); each node's `react_ms` in the report (from its record saying the drain
//!   ended to the coordinator acting on it, one clock): p50, p99, worst.
//! - `--redis-cluster 1`: all of it against a Redis Cluster (three masters, three replicas,
//!   real processes) instead of one server; commands are counted on every master.
//!
//! Run: `scripts/bench.sh scale [-- --nodes 1000 --seconds 10 --status-runs 20 --rollouts 3
//! --restartable 10 --redis-cluster 0]`

use ebb_node::agent::{Agent, AgentConfig};
use ebb_node::{Echo, Node, NodeConfig};
use ebb_tests::eventually;
use ebb_tests::redis::Redis;
use ebb_tests::redis_cluster::RedisCluster;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where the fleet's Redis is.
enum Backend {
    Single(Box<Redis>),
    Cluster(RedisCluster),
}

impl Backend {
    fn url(&self) -> String {
        match self {
            Backend::Single(redis) => redis.url().to_owned(),
            Backend::Cluster(cluster) => cluster.url(),
        }
    }

    /// A connection to every master (commands are counted on each; a replica's commands are
    /// its master's replicated, not round trips of any client).
    async fn data_nodes(&self) -> Vec<redis::aio::MultiplexedConnection> {
        match self {
            Backend::Single(redis) => vec![redis.connection().await],
            Backend::Cluster(cluster) => {
                let mut conns = Vec::new();
                for port in cluster.ports() {
                    let mut conn = RedisCluster::connect(port).await.unwrap();
                    let role: String = redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    if role.contains("role:master") {
                        conns.push(conn);
                    }
                }
                conns
            }
        }
    }
}

const CLUSTER: &str = "scale";
/// Commands only the record script issues (inside Redis, not a round trip of their own).
const INSIDE_SCRIPTS: &[&str] = &["hset", "pexpire", "del", "type", "hget", "zadd"];
/// Not ebb's: the benchmark's own reads of the statistics, and on a Cluster the replicas'
/// acknowledgements to their masters (`REPLCONF ACK`, replication's own traffic).
const NOT_EBB: &[&str] = &["info", "config|resetstat", "replconf"];

#[tokio::main]
async fn main() {
    let flags = ebb_tests::bench::Flags::parse(&[
        ("nodes", 1000),
        ("seconds", 10),
        ("status-runs", 20),
        ("rollouts", 3),
        ("restartable", 10),
        ("redis-cluster", 0),
    ]);
    let (n, seconds, runs) = (
        flags.get("nodes") as usize,
        flags.get("seconds"),
        flags.get("status-runs") as usize,
    );
    let backend = if flags.get("redis-cluster") == 1 {
        Backend::Cluster(RedisCluster::start().await)
    } else {
        Backend::Single(Box::new(Redis::run().await))
    };
    let url = backend.url();
    // One link for the whole fleet, as one process holds it.
    let link = ebb_redis::Link::new(&ebb_redis::RedisTarget::parse(&url).unwrap()).unwrap();
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let node = Node::new(NodeConfig::default(), Echo::default());
        let name = ebb_tests::node_name(&format!("s{i:04}"));
        let url = format!(
            "ws://10.{}.{}.{}:8080/ws",
            i / 65536,
            (i / 256) % 256,
            i % 256
        );
        let mut config = AgentConfig::new(link.clone(), CLUSTER.to_owned(), name, url);
        config.capacity = Some(10_000);
        let heartbeat = config.heartbeat;
        agents.push((
            Agent::spawn(config, node.control(), node.metrics()).unwrap(),
            heartbeat,
        ));
        nodes.push(node);
    }
    let heartbeat = agents[0].1;
    let conn = ebb_redis::Conn::new(link.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let index = ebb_proto::Keys::new(CLUSTER).unwrap().nodes();
    eventually(
        &format!("{n} nodes registered"),
        Duration::from_secs(300),
        || async {
            let count: usize = redis::cmd("ZCARD")
                .arg(&index)
                .query_async(&mut conn.clone())
                .await
                .ok()?;
            (count == n).then_some(())
        },
    )
    .await;
    let registered = started.elapsed();

    // Steady state: what every node costs Redis per heartbeat.
    let mut data_nodes = backend.data_nodes().await;
    for conn in &mut data_nodes {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(conn)
            .await
            .unwrap();
    }
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let mut calls = BTreeMap::new();
    for conn in &mut data_nodes {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(conn)
            .await
            .unwrap();
        for (command, count) in command_calls(&stats) {
            *calls.entry(command).or_insert(0) += count;
        }
    }
    let elapsed = window.elapsed().as_secs_f64();
    let sent: u64 = calls
        .iter()
        .filter(|(c, _)| !INSIDE_SCRIPTS.contains(&c.as_str()) && !NOT_EBB.contains(&c.as_str()))
        .map(|(_, n)| n)
        .sum();
    let per_node_s = sent as f64 / n as f64 / elapsed;
    let per_heartbeat = per_node_s * heartbeat.as_secs_f64();

    // `ebb status` over the whole fleet.
    let ebb = ebb_tests::bin::path("ebb");
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = std::process::Command::new(&ebb)
            .args(["--redis", &url, "--cluster", CLUSTER, "status", "--json"])
            .output()
            .unwrap();
        times.push(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["nodes"].as_array().map(Vec::len), Some(n));
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    println!(
        "nodes: {n} (registered in {:.1} s)",
        registered.as_secs_f64()
    );
    println!(
        "steady state over {elapsed:.1} s: {sent} client commands = {per_node_s:.3} per node per second = {per_heartbeat:.2} round trips per node per heartbeat ({} ms; bound 1.00)",
        heartbeat.as_millis()
    );
    let mut by_command: Vec<_> = calls.iter().collect();
    by_command.sort_by(|a, b| b.1.cmp(a.1));
    for (command, count) in by_command {
        let inside = if INSIDE_SCRIPTS.contains(&command.as_str()) {
            " (inside the record script)"
        } else {
            ""
        };
        println!(
            "  {command}: {:.3} per node per second{inside}",
            *count as f64 / n as f64 / elapsed
        );
    }
    println!(
        "ebb status --json over {n} nodes, {runs} runs: median {:.0} ms, worst {:.0} ms (target < 200 ms)",
        ms(times[runs / 2]),
        ms(times[runs - 1])
    );

    let (reactions, without) = reactions(
        &link,
        &url,
        flags.get("restartable") as usize,
        flags.get("rollouts") as usize,
    )
    .await;
    let at = |q: f64| reactions[((reactions.len() - 1) as f64 * q).round() as usize];
    println!(
        "coordinator reaction with {n} other nodes registered, {} drains ({without} more ended before a record said so): p50 {} ms, p99 {} ms, worst {} ms (target p99 < 50 ms)",
        reactions.len(),
        at(0.5),
        at(0.99),
        reactions[reactions.len() - 1]
    );
    let shutdowns = agents
        .into_iter()
        .map(|(agent, _)| agent.shutdown(Duration::from_secs(5)));
    futures_util::future::join_all(shutdowns).await;
    drop(nodes);
}

/// Starts `count` restartable nodes, runs `rollouts` rolling restarts of them, and returns
/// every node's `react_ms` from the reports, sorted, and how many drains had none (the
/// coordinator saw the drain over only once the record was gone).
async fn reactions(
    link: &ebb_redis::Link,
    url: &str,
    count: usize,
    rollouts: usize,
) -> (Vec<u64>, usize) {
    let stop = CancellationToken::new();
    let names: Vec<String> = (0..count).map(|i| format!("r{i:02}")).collect();
    let supervisors: Vec<_> = names
        .iter()
        .map(|name| tokio::spawn(supervise(link.clone(), name.clone(), stop.clone())))
        .collect();
    let conn = ebb_redis::Conn::new(link.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let keys = ebb_proto::Keys::new(CLUSTER).unwrap();
    for name in &names {
        let key = keys.node(&ebb_tests::node_name(name));
        eventually(&format!("{name} active"), Duration::from_secs(30), || {
            let mut conn = conn.clone();
            let key = key.clone();
            async move {
                let state: Option<String> = redis::cmd("HGET")
                    .arg(&key)
                    .arg("state")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (state.as_deref() == Some("active")).then_some(())
            }
        })
        .await;
    }
    let ebb = ebb_tests::bin::path("ebb");
    let plan = names.join(",");
    let (mut reacts, mut without) = (Vec::new(), 0);
    for _ in 0..rollouts {
        let out = tokio::process::Command::new(&ebb)
            .args(["--redis", url, "--cluster", CLUSTER, "rolling-restart"])
            .args(["--nodes", &plan, "--no-rebalance", "--json"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for node in report["nodes"].as_array().unwrap() {
            match node["react_ms"].as_u64() {
                Some(ms) => reacts.push(ms),
                None => without += 1,
            }
        }
    }
    stop.cancel();
    for supervisor in supervisors {
        let _ = supervisor.await;
    }
    reacts.sort_unstable();
    assert!(
        !reacts.is_empty(),
        "no drain had a reaction ({without} without)"
    );
    (reacts, without)
}

/// One restartable node: a real server on loopback with its agent and one client (so a drain
/// has a connection to close and its record says when none is left); when a drain ends in
/// exit, the agent is stopped and a new node and agent take the name, until `stop`.
async fn supervise(link: ebb_redis::Link, name: String, stop: CancellationToken) {
    loop {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = Node::new(NodeConfig::default(), Echo::default());
        let url = format!("ws://{addr}/ws");
        let name = ebb_tests::node_name(&name);
        let mut config = AgentConfig::new(link.clone(), CLUSTER.to_owned(), name, url);
        config.capacity = Some(10_000);
        let agent = Agent::spawn(config, node.control(), node.metrics()).unwrap();
        let running = node.start(listener).unwrap();
        let client_url = format!("ws://{addr}/ws");
        tokio::spawn(async move {
            let mut client = ebb_tests::ws::Client::connect(&client_url).await;
            client.until_close(Duration::from_secs(120)).await;
        });
        tokio::select! {
            _ = running.wait() => agent.shutdown(Duration::from_secs(5)).await,
            () = stop.cancelled() => return agent.shutdown(Duration::from_secs(5)).await,
        }
    }
}

/// `cmdstat_<name>:calls=N,...` lines as name → calls.
fn command_calls(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}
