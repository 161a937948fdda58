//! Echo throughput, latency and server CPU per message: `ebb-node` against the `plain-echo`
//! baseline (plain tokio-tungstenite, same buffers, no tracking), in the same run, server pinned
//! to CPU 0 and the load generator (`ebb-load echo`) to CPU 1. Rounds alternate between the two
//! servers; the median round of each is reported.
//!
//! Server CPU per echoed message is user+system time from `/proc/<pid>/stat` over the run divided
//! by the messages answered: it holds even when the load generator is the bottleneck.
//!
//! Run: `scripts/bench.sh echo_throughput [-- --rounds 3 --seconds 10 --connections 100 --window 1 --size 64]`

use ebb_tests::process::{Node, Proc};
use std::time::Duration;

struct Args {
    rounds: usize,
    seconds: u64,
    connections: u32,
    window: u32,
    size: u32,
}

fn args() -> Args {
    let flags = ebb_tests::bench::Flags::parse(&[
        ("rounds", 3),
        ("seconds", 10),
        ("connections", 100),
        ("window", 1),
        ("size", 64),
    ]);
    Args {
        rounds: flags.get("rounds") as usize,
        seconds: flags.get("seconds"),
        connections: flags.get("connections") as u32,
        window: flags.get("window") as u32,
        size: flags.get("size") as u32,
    }
}

#[derive(Debug, Clone, Copy)]
struct Round {
    msgs_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_us_per_msg: f64,
}

/// One round against the server `pid` listening on `addr`.
async fn round(pid: u32, addr: &str, args: &Args) -> Round {
    let cpu_before = ebb_tests::procfs::cpu_time(pid);
    let load: Vec<String> = [
        "-c".to_owned(),
        "1".to_owned(),
        ebb_tests::bin::path("ebb-load").display().to_string(),
        "echo".to_owned(),
        "--url".to_owned(),
        format!("ws://{addr}/ws"),
        "-n".to_owned(),
        args.connections.to_string(),
        "-w".to_owned(),
        args.window.to_string(),
        "-s".to_owned(),
        args.size.to_string(),
        "--for".to_owned(),
        format!("{}s", args.seconds),
        "--json".to_owned(),
    ]
    .to_vec();
    let mut load = Proc::spawn(std::path::Path::new("taskset"), &load);
    let (status, stdout) = load
        .wait_with_output(Duration::from_secs(args.seconds + 60))
        .await;
    assert!(status.success(), "ebb-load echo failed: {:?}", load.logs());
    let cpu = ebb_tests::procfs::cpu_time(pid) - cpu_before;
    let summary: serde_json::Value =
        serde_json::from_str(stdout.last().expect("a summary")).expect("JSON summary");
    assert_eq!(summary["errors"], 0, "{summary}");
    let messages = summary["messages"].as_f64().unwrap();
    Round {
        msgs_per_sec: summary["msgs_per_sec"].as_f64().unwrap(),
        p50_us: summary["p50_us"].as_u64().unwrap(),
        p99_us: summary["p99_us"].as_u64().unwrap(),
        cpu_us_per_msg: cpu.as_secs_f64() * 1e6 / messages,
    }
}

fn median(mut rounds: Vec<Round>) -> Round {
    rounds.sort_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec));
    rounds[rounds.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = args();
    let plain = Proc::spawn(
        std::path::Path::new("taskset"),
        &[
            "-c".into(),
            "0".into(),
            ebb_tests::bin::path("plain-echo").display().to_string(),
        ],
    );
    let line = plain
        .wait_stdout("listening on", Duration::from_secs(10))
        .await;
    let plain_addr = line.trim_start_matches("listening on ").to_owned();
    let node = Node::start_on(Some(0), &["--name", "bench"]).await;
    let node_addr = node.addr.to_string();

    let (mut plain_rounds, mut ebb_rounds) = (Vec::new(), Vec::new());
    for i in 0..args.rounds {
        // Warm both up once, then alternate so drift affects both alike.
        if i == 0 {
            let warm = Args { seconds: 2, ..args };
            round(plain.pid(), &plain_addr, &warm).await;
            round(node.proc.pid(), &node_addr, &warm).await;
        }
        plain_rounds.push(round(plain.pid(), &plain_addr, &args).await);
        ebb_rounds.push(round(node.proc.pid(), &node_addr, &args).await);
        eprintln!(
            "round {}: plain {:?} / ebb {:?}",
            i + 1,
            plain_rounds[i],
            ebb_rounds[i]
        );
    }
    let (plain, ebb) = (median(plain_rounds), median(ebb_rounds));
    println!();
    println!(
        "echo, {} connections, window {}, {}-byte messages, {} s per round, median of {} rounds; server on CPU 0, load on CPU 1:",
        args.connections, args.window, args.size, args.seconds, args.rounds
    );
    println!("| server | msgs/s | p50 | p99 | server CPU per message |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, r) in [("plain-echo (baseline)", plain), ("ebb-node", ebb)] {
        println!(
            "| {name} | {:.0} | {} µs | {} µs | {:.2} µs |",
            r.msgs_per_sec, r.p50_us, r.p99_us, r.cpu_us_per_msg
        );
    }
    let ratio = ebb.msgs_per_sec / plain.msgs_per_sec;
    println!(
        "ebb / plain throughput: {:.3} (target ≥ 0.95: {}); ebb CPU per message {:.2} µs (target ≤ 5 µs: {}); CPU ratio ebb / plain {:.2}",
        ratio,
        if ratio >= 0.95 { "met" } else { "MISSED" },
        ebb.cpu_us_per_msg,
        if ebb.cpu_us_per_msg <= 5.0 {
            "met"
        } else {
            "MISSED"
        },
        ebb.cpu_us_per_msg / plain.cpu_us_per_msg,
    );
}
