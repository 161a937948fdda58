//! The `ebb-load` binary: its three modes against real nodes, and the soak's verdict through a
//! drain (nothing lost, nothing abnormal, everyone back).

use ebb_tests::bin;
use ebb_tests::process::{Node, Proc};
use nix::sys::signal::Signal;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn load(args: &[&str]) -> Proc {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Proc::spawn(&bin::path("ebb-load"), &args)
}

async fn summary(proc: &mut Proc, limit: Duration) -> (i32, serde_json::Value) {
    let (status, stdout) = proc.wait_with_output(limit).await;
    let line = stdout.last().cloned().unwrap_or_default();
    let json = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
    (status.code().unwrap_or(-1), json)
}

#[tokio::test]
async fn soak_through_a_drain_loses_nothing_and_everyone_comes_back() {
    let mut a = Node::start(&["--close-spread", "500ms", "--reconnect-spread", "300ms"]).await;
    let b = Node::start(&[]).await;
    let urls = format!("{},{}", a.ws_url(), b.ws_url());
    let mut soak = load(&[
        "soak", "--url", &urls, "-n", "60", "--rate", "300", "--for", "4s", "--json",
    ]);
    ebb_tests::eventually("clients on both nodes", SECS(10), || async {
        (a.metric("ebb_connections").await + b.metric("ebb_connections").await == 60.0)
            .then_some(())
    })
    .await;
    a.signal(Signal::SIGTERM);
    assert_eq!(a.proc.wait(SECS(10)).await.code(), Some(0));
    let (code, s) = summary(&mut soak, SECS(30)).await;
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
    assert_eq!(s["abnormal_closes"], 0, "{s}");
    assert_eq!(s["connected_at_end"], 60, "{s}");
    assert_eq!(s["close_codes"]["1001"], 30, "{s}");
    assert_eq!(s["reconnects"], 30, "{s}");
    assert!(s["sent"].as_u64().unwrap() > 600, "{s}");
}

#[tokio::test]
async fn echo_and_hold_report_what_they_did() {
    let node = Node::start(&[]).await;
    let mut echo = load(&[
        "echo",
        "--url",
        &node.ws_url(),
        "-n",
        "4",
        "-w",
        "2",
        "--for",
        "1s",
        "--json",
    ]);
    let (code, s) = summary(&mut echo, SECS(20)).await;
    assert_eq!(code, 0, "{s}");
    assert!(s["messages"].as_u64().unwrap() > 100, "{s}");
    assert!(
        s["p99_us"].as_u64().unwrap() >= s["p50_us"].as_u64().unwrap(),
        "{s}"
    );

    let mut hold = load(&[
        "hold",
        "--url",
        &node.ws_url(),
        "-n",
        "50",
        "--sources",
        "2",
        "--for",
        "1s",
    ]);
    let (code, s) = summary(&mut hold, SECS(20)).await;
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["connected"], 50, "{s}");

    // A refused upgrade is a failure, with the reason.
    let mut refused = load(&[
        "hold",
        "--url",
        "ws://127.0.0.1:1/ws",
        "-n",
        "1",
        "--for",
        "1s",
    ]);
    let (code, s) = summary(&mut refused, SECS(20)).await;
    assert_eq!(code, 1, "{s}");
    assert!(
        s["first_error"].as_str().unwrap().contains("TCP connect"),
        "{s}"
    );
}

#[tokio::test]
async fn echo_with_a_window_beyond_the_tcp_buffers_keeps_flowing_and_ends_on_time() {
    // 10,000 KiB messages in flight against a node that reads 4 ahead of its replies: written
    // all at once before reading, the window blocked both sides and the run never ended.
    let node = Node::start(&["--max-inflight", "4", "--read-buffer-size", "1024"]).await;
    let mut echo = load(&[
        "echo",
        "--url",
        &node.ws_url(),
        "-n",
        "1",
        "-w",
        "10000",
        "-s",
        "1024",
        "--for",
        "1s",
        "--json",
    ]);
    let (code, s) = summary(&mut echo, SECS(20)).await;
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert!(s["messages"].as_u64().unwrap() > 1_000, "{s}");
}

#[tokio::test]
async fn bad_flags_exit_2() {
    for args in [
        &["soak", "--rate", "10"][..],
        &["echo", "-w", "0"][..],
        &["hold", "-n", "zero"][..],
        &["nonsense"][..],
    ] {
        let out = std::process::Command::new(bin::path("ebb-load"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = std::process::Command::new(bin::path("ebb-load"))
        .args(["soak", "--url", "ws://127.0.0.1:1/ws", "--rate", "-5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
