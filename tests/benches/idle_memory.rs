//! What an idle WebSocket connection costs a server, in resident memory: `ebb-node` against the
//! `plain-echo` baseline (plain tokio-tungstenite, same buffer sizes), measured in the same run.
//!
//! Each server is filled with `--base` connections, its RSS read; then with the rest, up to
//! `--connections`, spread over client processes (a process may hold at most 20,000 files here)
//! and source addresses, and its RSS read again. The slope between the two readings is the cost
//! per connection, free of fixed start-up costs.
//!
//! Run: `scripts/bench.sh idle_memory [-- --connections 19000]`

use ebb_tests::process::{Options, Proc};
use std::time::Duration;

struct Args {
    connections: usize,
    base: usize,
    per_process: usize,
}

fn args() -> Args {
    let flags = ebb_tests::bench::Flags::parse(&[
        ("connections", 10_000),
        ("base", 1_000),
        ("per-process", 5_000),
    ]);
    let args = Args {
        connections: flags.get("connections") as usize,
        base: flags.get("base") as usize,
        per_process: flags.get("per-process") as usize,
    };
    assert!(
        args.connections > args.base,
        "--connections must exceed --base"
    );
    args
}

/// Opens `n` connections to `url` in client processes of at most `per_process` each.
async fn hold(url: &str, n: usize, per_process: usize, first_source: usize) -> Vec<Proc> {
    let mut procs = Vec::new();
    let mut left = n;
    let mut source = first_source;
    while left > 0 {
        let count = left.min(per_process);
        // One source address per process: 127.0.0.<source>.
        let args: Vec<String> = [
            "hold",
            "--url",
            url,
            "-n",
            &count.to_string(),
            "--first-source",
            &source.to_string(),
            "--until-stdin-closes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let proc = Proc::spawn_with(
            &ebb_tests::bin::path("ebb-load"),
            &args,
            Options {
                echo_stderr: true,
                stdin: true,
            },
        );
        let line = proc
            .wait_stdout("\"mode\":\"hold\"", Duration::from_secs(120))
            .await;
        let summary: serde_json::Value = serde_json::from_str(&line).expect("hold summary");
        assert_eq!(summary["connected"], count, "{line}");
        procs.push(proc);
        left -= count;
        source += 1;
    }
    procs
}

struct Measure {
    name: &'static str,
    per_conn_kib: f64,
    base_kib: u64,
    full_kib: u64,
}

async fn measure(name: &'static str, server: Proc, addr: String, args: &Args) -> Measure {
    let url = format!("ws://{addr}/ws");
    let pid = server.pid();
    let first = hold(&url, args.base, args.per_process, 1).await;
    let base_kib = ebb_tests::procfs::settled_rss_kib(pid).await;
    let rest = hold(&url, args.connections - args.base, args.per_process, 2).await;
    let full_kib = ebb_tests::procfs::settled_rss_kib(pid).await;
    let per_conn_kib = (full_kib - base_kib) as f64 / (args.connections - args.base) as f64;
    drop((first, rest, server));
    Measure {
        name,
        per_conn_kib,
        base_kib,
        full_kib,
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let plain = Proc::spawn(&ebb_tests::bin::path("plain-echo"), &[]);
    let line = plain
        .wait_stdout("listening on", Duration::from_secs(10))
        .await;
    let addr = line.trim_start_matches("listening on ").to_owned();
    let plain = measure("plain-echo (baseline)", plain, addr, &args).await;

    let node = Proc::spawn_with(
        &ebb_tests::bin::path("ebb-node"),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--name".into(),
            "bench".into(),
        ],
        Options::default(),
    );
    let line = node.wait_log("node active", Duration::from_secs(10)).await;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("local_addr="))
        .expect("local_addr")
        .to_owned();
    let ebb = measure("ebb-node", node, addr, &args).await;

    println!();
    println!(
        "idle memory per connection, {} connections (slope from {}):",
        args.connections, args.base
    );
    println!(
        "| server | RSS at {} | RSS at {} | KiB per idle connection |",
        args.base, args.connections
    );
    println!("| --- | --- | --- | --- |");
    for m in [&plain, &ebb] {
        println!(
            "| {} | {} KiB | {} KiB | {:.2} |",
            m.name, m.base_kib, m.full_kib, m.per_conn_kib
        );
    }
    println!(
        "ebb-node / plain-echo: {:.2}x; target: at most 6 KiB per connection: {}",
        ebb.per_conn_kib / plain.per_conn_kib,
        if ebb.per_conn_kib <= 6.0 {
            "met"
        } else {
            "MISSED"
        }
    );
}
