//! Rolling restarts, end to end: a three-node cluster in Redis (a container from the local image),
//! nodes supervised as processes, `ebb-load soak` clients sending steadily throughout.
//!
//! 1. One rolling restart of 3 nodes x `--clients-per-node` clients: nothing lost, no duplicate
//!    at the application, and the coordinator's overhead (total time minus the nodes' own drain
//!    and restart times) as a share of the whole.
//! 2. `--repeat` more rolling restarts of the same cluster with a short close spread, to collect
//!    many samples of the coordinator's reaction time: from a draining node's "zero connections"
//!    event to the coordinator acting on it (`react_ms` in the report).
//!
//! Run: `scripts/bench.sh rollout [-- --clients-per-node 3000 --repeat 10]`

use ebb_tests::eventually;
use ebb_tests::fleet::{Supervised, ebb, node_args};
use ebb_tests::process::Proc;
use ebb_tests::redis::Redis;
use nix::sys::signal::Signal;
use std::time::Duration;

struct Args {
    clients_per_node: usize,
    repeat: usize,
}

fn args() -> Args {
    let flags = ebb_tests::bench::Flags::parse(&[("clients-per-node", 3000), ("repeat", 10)]);
    Args {
        clients_per_node: flags.get("clients-per-node") as usize,
        repeat: flags.get("repeat") as usize,
    }
}

const CLUSTER: &str = "bench";

async fn rollout(redis: &str, extra: &[&str]) -> serde_json::Value {
    let mut all = vec!["rolling-restart", "--json"];
    all.extend(extra);
    let (code, stdout, logs) = ebb(redis, CLUSTER, &all, Duration::from_secs(600)).await;
    assert_eq!(code, 0, "rollout failed: {logs:#?}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["status"], "completed", "{report}");
    report
}

fn percentile(values: &mut [u64], q: f64) -> u64 {
    values.sort_unstable();
    values[((values.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = args();
    let redis = Redis::run().await;
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let flags = node_args(redis.url(), CLUSTER, &["--close-spread", "3s"]);
        nodes.push(Supervised::start(name, flags).await);
    }
    let mut urls = Vec::new();
    for node in &nodes {
        urls.push(node.ws_url().await);
    }
    let clients = args.clients_per_node * nodes.len();
    let soak = Proc::spawn(
        &ebb_tests::bin::path("ebb-load"),
        &[
            "soak".into(),
            "--url".into(),
            urls.join(","),
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
    );
    eventually(
        "every client connected",
        Duration::from_secs(120),
        || async {
            let mut total = 0.0;
            for node in &nodes {
                let addr = node.addr().await;
                let text = ebb_tests::http::get(addr, "/metrics").await.body;
                total += ebb_tests::http::metric(&text, "ebb_connections").unwrap_or(0.0);
            }
            (total as usize == clients).then_some(())
        },
    )
    .await;
    // Let the records' coalesced counts catch up.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let report = rollout(redis.url(), &[]).await;
    let duration = report["duration_ms"].as_f64().unwrap();
    let overhead = report["overhead_ms"].as_f64().unwrap();
    println!();
    println!(
        "rolling restart of 3 nodes x {} clients under steady traffic:",
        args.clients_per_node
    );
    println!("| node | connections before | drain | restart | forced closes | reaction |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for node in report["nodes"].as_array().unwrap() {
        println!(
            "| {} | {} | {} ms | {} ms | {} | {} ms |",
            node["name"],
            node["connections_before"],
            node["drain_ms"],
            node["restart_ms"],
            node["forced_closes"],
            node["react_ms"]
        );
    }

    let mut reacts: Vec<u64> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["react_ms"].as_u64())
        .collect();
    let mut shares = vec![overhead / duration];
    for _ in 0..args.repeat {
        let report = rollout(redis.url(), &[]).await;
        shares.push(
            report["overhead_ms"].as_f64().unwrap() / report["duration_ms"].as_f64().unwrap(),
        );
        reacts.extend(
            report["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n["react_ms"].as_u64()),
        );
    }

    soak.signal(Signal::SIGINT);
    let mut soak = soak;
    let (_, stdout) = soak.wait_with_output(Duration::from_secs(120)).await;
    let summary: serde_json::Value = serde_json::from_str(stdout.last().unwrap()).unwrap();
    println!(
        "first rollout: {:.1} s, coordinator overhead {:.0} ms = {:.3}% (target < 2%: {})",
        duration / 1000.0,
        overhead,
        100.0 * overhead / duration,
        if overhead / duration < 0.02 {
            "met"
        } else {
            "MISSED"
        }
    );
    shares.sort_by(f64::total_cmp);
    println!(
        "{} rollouts in all: overhead share median {:.3}%, worst {:.3}%",
        shares.len(),
        100.0 * shares[shares.len() / 2],
        100.0 * shares[shares.len() - 1]
    );
    let n = reacts.len();
    let (p50, p99, max) = (
        percentile(&mut reacts, 0.5),
        percentile(&mut reacts, 0.99),
        percentile(&mut reacts, 1.0),
    );
    println!(
        "coordinator reaction to a node reaching zero connections, {n} drains: p50 {p50} ms, p99 {p99} ms, max {max} ms (target p99 < 50 ms: {})",
        if p99 < 50 { "met" } else { "MISSED" }
    );
    println!(
        "clients over all rollouts: sent {}, answered {}, lost {}, duplicate answers dropped {}, abnormal closes {}, reconnects {}",
        summary["sent"],
        summary["answered"],
        summary["lost"],
        summary["duplicates"],
        summary["abnormal_closes"],
        summary["reconnects"]
    );
    drop(nodes);
}
