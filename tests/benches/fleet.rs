//! Fleet-scale rollouts: `--nodes` supervised `ebb-node` processes (24 by default) in one Redis,
//! `ebb-load soak` clients spread evenly over them, sending throughout. Each round starts a fresh
//! soak (so every round begins balanced and counts its own reconnects) and runs one rolling
//! restart:
//!
//! - `--max-parallel` 1, 2 and 4: the rollout's time against the bound ceil(N/p) × (drain +
//!   restart), with drain and restart the nodes' own mean from the report; reconnects per client
//!   against the floor (N+2)/N of one node at a time with no spare node and a balanced end;
//!   max/mean connections once every client is back.
//! - `--max-parallel 1 --no-rebalance`, then `ebb rebalance --tolerance 10%`: what the reconnect
//!   targets alone leave, and what the rebalance makes of it.
//!
//! Every round also reports lost messages and abnormal closes (both must be 0).
//!
//! Run: `scripts/bench.sh fleet [-- --nodes 24 --clients-per-node 100]`

use ebb_tests::eventually;
use ebb_tests::fleet::{Supervised, ebb, node_args};
use ebb_tests::process::Proc;
use ebb_tests::redis::Redis;
use nix::sys::signal::Signal;
use std::time::Duration;

const CLUSTER: &str = "fleet";
const SECS: fn(u64) -> Duration = Duration::from_secs;

struct Args {
    nodes: usize,
    clients_per_node: usize,
    /// Each node's close spread, in ms: the drain's length.
    spread_ms: u64,
}

fn args() -> Args {
    let flags = ebb_tests::bench::Flags::parse(&[
        ("nodes", 24),
        ("clients-per-node", 100),
        ("spread-ms", 2000),
    ]);
    Args {
        nodes: flags.get("nodes") as usize,
        clients_per_node: flags.get("clients-per-node") as usize,
        spread_ms: flags.get("spread-ms"),
    }
}

/// One rolling restart to measure.
struct Round {
    parallel: usize,
    rebalance_after: bool,
}

/// What a round measured.
struct Measured {
    label: String,
    parallel: usize,
    duration_ms: f64,
    bound_ms: f64,
    reconnects_per_client: f64,
    after_rollout: f64,
    after_rebalance: Option<f64>,
    final_step: Option<(f64, f64)>,
    lost: u64,
    abnormal: u64,
}

struct Fleet {
    redis: Redis,
    nodes: Vec<Supervised>,
    urls: Vec<String>,
}

impl Fleet {
    async fn start(args: &Args) -> Fleet {
        let redis = Redis::run().await;
        let spread = format!("{}ms", args.spread_ms);
        let mut nodes = Vec::new();
        for i in 1..=args.nodes {
            let flags = node_args(redis.url(), CLUSTER, &["--close-spread", &spread]);
            nodes.push(Supervised::start(&format!("n{i:02}"), flags).await);
        }
        let mut urls = Vec::new();
        for node in &nodes {
            urls.push(node.ws_url().await);
        }
        Fleet { redis, nodes, urls }
    }

    /// Every node's live connection count (its `/metrics`).
    async fn counts(&self) -> Vec<f64> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            let text = ebb_tests::http::get(node.addr().await, "/metrics")
                .await
                .body;
            counts.push(ebb_tests::http::metric(&text, "ebb_connections").unwrap_or(0.0));
        }
        counts
    }

    /// max/mean of the live counts, once `clients` are connected and the records agree.
    async fn settled_imbalance(&self, clients: usize) -> f64 {
        let counts = eventually("every client connected", SECS(120), || async {
            let counts = self.counts().await;
            (counts.iter().sum::<f64>() as usize == clients).then_some(counts)
        })
        .await;
        eventually("the records caught up", SECS(30), || async {
            let (code, stdout, _) =
                ebb(self.redis.url(), CLUSTER, &["status", "--json"], SECS(10)).await;
            let status: serde_json::Value = serde_json::from_str(&stdout).ok()?;
            let total: u64 = status["nodes"]
                .as_array()?
                .iter()
                .filter_map(|n| n["connections"].as_u64())
                .sum();
            (code == 0 && total as usize == clients).then_some(())
        })
        .await;
        imbalance(&counts)
    }

    fn soak(&self, clients: usize) -> Proc {
        Proc::spawn(
            &ebb_tests::bin::path("ebb-load"),
            &[
                "soak".into(),
                "--url".into(),
                self.urls.join(","),
                "-n".into(),
                clients.to_string(),
                "--rate".into(),
                (clients as f64 / 2.0).to_string(),
                "--for".into(),
                "30m".into(),
                "--settle".into(),
                "30s".into(),
                "--json".into(),
            ],
        )
    }

    async fn ebb_json(&self, args: &[&str]) -> serde_json::Value {
        let (code, stdout, logs) = ebb(self.redis.url(), CLUSTER, args, SECS(900)).await;
        assert_eq!(code, 0, "{args:?} failed: {logs:#?}");
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    }

    async fn run(&self, round: &Round, clients: usize) -> Measured {
        let soak = self.soak(clients);
        self.settled_imbalance(clients).await;
        let parallel = round.parallel.to_string();
        let mut flags = vec!["rolling-restart", "--json", "--max-parallel", &parallel];
        if round.rebalance_after {
            flags.push("--no-rebalance");
        }
        let report = self.ebb_json(&flags).await;
        assert_eq!(report["status"], "completed", "{report}");
        let after_rollout = self.settled_imbalance(clients).await;
        eprintln!("connections after the rollout: {:?}", self.counts().await);
        let after_rebalance = if round.rebalance_after {
            let rebalance = self
                .ebb_json(&["rebalance", "--tolerance", "10%", "--json"])
                .await;
            assert_eq!(rebalance["reached"], true, "{rebalance}");
            Some(self.settled_imbalance(clients).await)
        } else {
            None
        };
        let summary = stop(soak).await;
        eprintln!(
            "clients: {} reconnects, {} to a target the server named, {} targets ignored, {} refused, {} failed connects",
            summary["reconnects"],
            summary["targets_followed"],
            summary["targets_ignored"],
            summary["refused"],
            summary["connect_failures"]
        );
        let nodes = report["nodes"].as_array().unwrap();
        let per_node: f64 = nodes
            .iter()
            .map(|n| {
                let ms = |field: &str| n[field].as_f64().unwrap_or_else(|| panic!("{field}: {n}"));
                ms("drain_ms") + ms("restart_ms")
            })
            .sum::<f64>()
            / nodes.len() as f64;
        let batches = nodes.len().div_ceil(round.parallel) as f64;
        let final_step = report["balance"]
            .as_object()
            .map(|b| (b["before"].as_f64().unwrap(), b["after"].as_f64().unwrap()));
        Measured {
            label: if round.rebalance_after {
                format!("{}, --no-rebalance, then ebb rebalance", round.parallel)
            } else {
                round.parallel.to_string()
            },
            parallel: round.parallel,
            duration_ms: report["duration_ms"].as_f64().unwrap(),
            bound_ms: batches * per_node,
            reconnects_per_client: summary["reconnects"].as_f64().unwrap() / clients as f64,
            after_rollout,
            after_rebalance,
            final_step,
            lost: summary["lost"].as_u64().unwrap(),
            abnormal: summary["abnormal_closes"].as_u64().unwrap(),
        }
    }
}

/// Stops a soak; its summary.
async fn stop(soak: Proc) -> serde_json::Value {
    soak.signal(Signal::SIGINT);
    let mut soak = soak;
    let (_, stdout) = soak.wait_with_output(SECS(120)).await;
    serde_json::from_str(stdout.last().unwrap()).unwrap()
}

fn imbalance(counts: &[f64]) -> f64 {
    let mean = counts.iter().sum::<f64>() / counts.len() as f64;
    counts.iter().copied().fold(0.0, f64::max) / mean
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

#[tokio::main]
async fn main() {
    let args = args();
    let fleet = Fleet::start(&args).await;
    let clients = args.nodes * args.clients_per_node;
    let rounds = [
        Round {
            parallel: 1,
            rebalance_after: false,
        },
        Round {
            parallel: 2,
            rebalance_after: false,
        },
        Round {
            parallel: 4,
            rebalance_after: false,
        },
        Round {
            parallel: 1,
            rebalance_after: true,
        },
    ];
    let mut results = Vec::new();
    for round in &rounds {
        let measured = fleet.run(round, clients).await;
        eprintln!("round --max-parallel {} done", measured.label);
        results.push(measured);
    }
    print(&args, clients, &results);
}

fn print(args: &Args, clients: usize, results: &[Measured]) {
    let n = args.nodes as f64;
    let floor = (n + 2.0) / n;
    println!();
    println!(
        "{} nodes, {} soak clients ({} per node), {} ms close spread:",
        args.nodes, clients, args.clients_per_node, args.spread_ms
    );
    println!(
        "| --max-parallel | rollout | bound ceil(N/p) x (drain + restart) | rollout / bound | reconnects per client | max/mean after rollout | final rebalance step | max/mean after ebb rebalance | lost | abnormal closes |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for m in results {
        println!(
            "| {} | {:.1} s | {:.1} s | {:.2} | {:.3} | {:.2} | {} | {} | {} | {} |",
            m.label,
            m.duration_ms / 1000.0,
            m.bound_ms / 1000.0,
            m.duration_ms / m.bound_ms,
            m.reconnects_per_client,
            m.after_rollout,
            m.final_step
                .map(|(b, a)| format!("{b:.2} -> {a:.2}"))
                .unwrap_or_else(|| "not needed".into()),
            m.after_rebalance
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into()),
            m.lost,
            m.abnormal,
        );
    }
    println!();
    for m in results.iter().filter(|m| m.parallel == 1) {
        println!(
            "--max-parallel {}: reconnects per client {:.3} against the floor (N+2)/N = {:.3}: {:.1}% above (goal within 10%: {})",
            m.label,
            m.reconnects_per_client,
            floor,
            100.0 * (m.reconnects_per_client / floor - 1.0),
            verdict(m.reconnects_per_client <= floor * 1.10)
        );
    }
    for m in results {
        println!(
            "--max-parallel {}: max/mean after the rollout {:.2} (goal <= 1.25: {}){}",
            m.label,
            m.after_rollout,
            verdict(m.after_rollout <= 1.25),
            m.after_rebalance
                .map(|r| format!(
                    "; after ebb rebalance {r:.2} (goal <= 1.15: {})",
                    verdict(r <= 1.15)
                ))
                .unwrap_or_default()
        );
    }
}
