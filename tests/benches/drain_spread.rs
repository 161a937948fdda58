//! A drain of many connections: how long from the signal to the exit, and how flat the
//! reconnect rate on the surviving node is, for ebb's paced drain against the all-at-once close
//! of the seed article (every client closed at once and told nothing), in the same run.
//!
//! Node A holds the clients (`ebb-load soak --start-on-first`, reconnecting clients sending
//! steadily); node B survives. A is sent SIGTERM; the clients move to B. Reconnects are counted
//! per 100 ms over the window from the first to the last.
//!
//! Run: `scripts/bench.sh drain_spread [-- --clients 10000 --spread 10]`

use ebb_tests::eventually;
use ebb_tests::process::{Node, Proc};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

struct Args {
    clients: usize,
    spread_secs: u64,
}

fn args() -> Args {
    let flags = ebb_tests::bench::Flags::parse(&[("clients", 10_000), ("spread", 10)]);
    Args {
        clients: flags.get("clients") as usize,
        spread_secs: flags.get("spread"),
    }
}

struct Outcome {
    name: &'static str,
    exit_after: Duration,
    summary: serde_json::Value,
}

async fn drain(name: &'static str, node_flags: &[&str], args: &Args) -> Outcome {
    let mut a = Node::start(node_flags).await;
    let b = Node::start(&["--name", "survivor"]).await;
    let soak = Proc::spawn(
        &ebb_tests::bin::path("ebb-load"),
        &[
            "soak".into(),
            "--url".into(),
            format!("{},{}", a.ws_url(), b.ws_url()),
            "--start-on-first".into(),
            "-n".into(),
            args.clients.to_string(),
            "--rate".into(),
            "2000".into(),
            "--for".into(),
            "10m".into(),
            "--settle".into(),
            "30s".into(),
            "--sources".into(),
            "2".into(),
            "--json".into(),
        ],
    );
    eventually(
        "every client on node A",
        Duration::from_secs(120),
        || async { (a.metric("ebb_connections").await as usize == args.clients).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = Instant::now();
    a.signal(Signal::SIGTERM);
    let status = a
        .proc
        .wait(Duration::from_secs(args.spread_secs + 60))
        .await;
    let exit_after = signalled.elapsed();
    assert!(status.success());
    eventually(
        "every client on node B",
        Duration::from_secs(60),
        || async { (b.metric("ebb_connections").await as usize == args.clients).then_some(()) },
    )
    .await;
    soak.signal(Signal::SIGINT);
    let mut soak = soak;
    let (_, stdout) = soak.wait_with_output(Duration::from_secs(120)).await;
    let summary: serde_json::Value =
        serde_json::from_str(stdout.last().expect("a soak summary")).expect("JSON");
    Outcome {
        name,
        exit_after,
        summary,
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let spread = format!("{}s", args.spread_secs);
    let seed = drain(
        "all at once (seed article: no pacing, no advice)",
        &[
            "--name",
            "a",
            "--close-spread",
            "0s",
            "--reconnect-base",
            "0s",
            "--reconnect-spread",
            "0s",
            "--notice",
            "false",
        ],
        &args,
    )
    .await;
    let ebb = drain(
        "ebb (paced closes, spread advice)",
        &[
            "--name",
            "a",
            "--close-spread",
            &spread,
            "--reconnect-spread",
            "1s",
        ],
        &args,
    )
    .await;
    println!();
    println!(
        "drain of {} connections, ebb spread {}s, reconnects to the surviving node per 100 ms:",
        args.clients, args.spread_secs
    );
    println!(
        "| drain | signal → exit | reconnect window | largest 100 ms bucket | mean bucket | largest / mean | lost | abnormal closes |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for o in [&seed, &ebb] {
        let b = &o.summary["reconnects_per_100ms"];
        println!(
            "| {} | {:.2} s | {} ms | {} | {:.1} | {:.2} | {} | {} |",
            o.name,
            o.exit_after.as_secs_f64(),
            b["window_ms"],
            b["largest"],
            b["mean"].as_f64().unwrap_or(0.0),
            b["peak_to_mean"].as_f64().unwrap_or(0.0),
            o.summary["lost"],
            o.summary["abnormal_closes"],
        );
    }
    let peak = ebb.summary["reconnects_per_100ms"]["peak_to_mean"]
        .as_f64()
        .unwrap_or(f64::MAX);
    let within = ebb.exit_after <= Duration::from_secs(args.spread_secs + 1);
    println!(
        "ebb: exit within spread + 1 s: {}; largest bucket ≤ 2x mean: {} ({:.2}); peak reconnect rate vs all-at-once: {:.3}x",
        if within { "met" } else { "MISSED" },
        if peak <= 2.0 { "met" } else { "MISSED" },
        peak,
        ebb.summary["reconnects_per_100ms"]["largest"]
            .as_f64()
            .unwrap_or(0.0)
            / seed.summary["reconnects_per_100ms"]["largest"]
                .as_f64()
                .unwrap_or(1.0)
                .max(1.0),
    );
}
