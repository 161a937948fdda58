//! `ebb-node` drains, driven by signals, against real clients over TCP.

use ebb_proto::CloseReason;
use ebb_proto::ShutdownNotice;
use ebb_tests::process::Node;
use ebb_tests::ws::{Client, RawClient, RawFrame, Seen};
use ebb_tests::{eventually, http};
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;

async fn clients(node: &Node, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(Client::connect(&node.ws_url()).await);
    }
    eventually("all clients registered", SECS(5), || async {
        (node.metric("ebb_connections").await == n as f64).then_some(())
    })
    .await;
    clients
}

fn reason_of(seen: &Seen) -> CloseReason {
    match seen {
        Seen::Close(Some((_, reason))) => {
            CloseReason::decode(reason).unwrap_or_else(|| panic!("not ebb's reason: {reason}"))
        }
        other => panic!("expected a Close, got {other:?}"),
    }
}

#[tokio::test]
async fn sigterm_notices_then_closes_every_client_with_1001_and_exits_0() {
    let mut node = Node::start(&["--close-spread", "500ms", "--drain-deadline", "10s"]).await;
    let mut clients = clients(&node, 20).await;
    let started = Instant::now();
    node.signal(Signal::SIGTERM);

    for client in &mut clients {
        let (texts, close, _) = client.until_close(SECS(5)).await;
        assert_eq!(
            texts.len(),
            1,
            "exactly one notice before the close: {texts:?}"
        );
        let notice = ShutdownNotice::decode(&texts[0]).expect("a server_shutdown notice");
        assert!(notice.reconnect_in >= 100, "{notice:?}");
        let Seen::Close(Some((code, _))) = &close else {
            panic!("abnormal close: {close:?}")
        };
        assert_eq!(*code, 1001);
        let reason = reason_of(&close);
        assert_eq!(reason.reason, "draining");
        assert!((100..=1100).contains(&reason.retry_after_ms), "{reason:?}");
        client.finish(SECS(2)).await;
    }
    let status = node.proc.wait(SECS(10)).await;
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < SECS(10), "exited within the deadline");
    node.proc
        .wait_log("every connection closed cleanly", SECS(1))
        .await;
}

#[tokio::test]
async fn health_and_upgrades_answer_503_while_draining() {
    let node = Node::start(&["--close-spread", "3s", "--drain-deadline", "10s"]).await;
    let health = http::get(node.addr, "/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "healthy");
    let _clients = clients(&node, 2).await;
    assert_eq!(
        http::get(node.addr, "/health").await.json()["connections"],
        2
    );

    node.signal(Signal::SIGTERM);
    let health = eventually("/health turns 503", SECS(5), || async {
        let r = http::get(node.addr, "/health").await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(health.json()["status"], "draining");

    match Client::try_connect(&node.ws_url()).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let retry = response.headers()["retry-after"].to_str().unwrap();
            assert!(retry.parse::<u64>().unwrap() >= 1, "{retry}");
        }
        other => panic!("expected an HTTP 503 refusal, got {other:?}"),
    }
    assert_eq!(node.metric("ebb_upgrades_refused_total").await, 1.0);
}

#[tokio::test]
async fn messages_in_flight_when_the_drain_starts_are_answered_before_the_close() {
    let mut node = Node::start(&["--echo-delay", "300ms", "--close-spread", "0s"]).await;
    let mut client = clients(&node, 1).await.pop().unwrap();
    for i in 0..5 {
        client.send(&format!("m{i}")).await;
    }
    eventually("the node received all five", SECS(5), || async {
        (node.metric("ebb_messages_received_total").await == 5.0).then_some(())
    })
    .await;
    node.signal(Signal::SIGTERM);

    let (texts, close, _) = client.until_close(SECS(5)).await;
    let echoes: Vec<_> = texts.iter().filter(|t| t.starts_with("Echo: ")).collect();
    assert_eq!(
        echoes,
        ["Echo: m0", "Echo: m1", "Echo: m2", "Echo: m3", "Echo: m4"]
    );
    assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    client.finish(SECS(2)).await;
    assert_eq!(node.proc.wait(SECS(5)).await.code(), Some(0));
}

#[tokio::test]
async fn closes_are_spread_evenly_over_the_window() {
    let n = 20;
    let spread = Duration::from_millis(2000);
    let node = Node::start(&["--close-spread", "2s", "--notice", "false"]).await;
    let clients = clients(&node, n).await;
    let start = Instant::now();
    node.signal(Signal::SIGTERM);
    let closes = futures_util::future::join_all(clients.into_iter().map(|mut c| async move {
        let (_, close, at) = c.until_close(SECS(10)).await;
        c.finish(SECS(2)).await;
        (reason_of(&close), at)
    }))
    .await;
    let mut offsets: Vec<Duration> = closes.iter().map(|(_, at)| *at - start).collect();
    offsets.sort();
    let step = spread / n as u32;
    // Slot i closes at i * step; allow scheduling jitter.
    for (i, offset) in offsets.iter().enumerate() {
        let planned = step * i as u32;
        let late = offset.saturating_sub(planned);
        let early = planned.saturating_sub(*offset);
        assert!(
            // Never early; late by scheduling and a busy CI machine at most.
            late < Duration::from_millis(400) && early < Duration::from_millis(50),
            "close {i} at {offset:?}, planned {planned:?}: {offsets:?}"
        );
    }
    // Each client got its own advised delay, spread over the reconnect window.
    let mut delays: Vec<u64> = closes.iter().map(|(r, _)| r.retry_after_ms).collect();
    delays.sort();
    delays.dedup();
    assert_eq!(delays.len(), n, "distinct advised delays: {delays:?}");
    assert!(
        delays[0] >= 100 && *delays.last().unwrap() <= 1100,
        "{delays:?}"
    );
}

#[tokio::test]
async fn a_client_that_ignores_the_close_is_cut_at_the_close_timeout() {
    let mut node = Node::start(&["--close-timeout", "1s", "--close-spread", "0s"]).await;
    let mut raw = RawClient::connect(node.addr).await;
    eventually("connected", SECS(5), || async {
        (node.metric("ebb_connections").await == 1.0).then_some(())
    })
    .await;
    node.signal(Signal::SIGTERM);
    let close = raw.read_until(RawFrame::CLOSE, SECS(5)).await;
    assert_eq!(close.close_code(), Some(1001));
    // Never answer: the node cuts the TCP connection after its close timeout.
    let waited = raw
        .wait_for_eof(SECS(5))
        .await
        .expect("the node cut the connection");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2000),
        "{waited:?}"
    );
    assert_eq!(node.proc.wait(SECS(5)).await.code(), Some(0));
    let line = node.proc.wait_log("drain finished", SECS(1)).await;
    assert!(line.contains("forced=1"), "{line}");
}

#[tokio::test]
async fn the_drain_deadline_ends_everything() {
    let mut node = Node::start(&[
        "--close-timeout",
        "30s",
        "--close-spread",
        "0s",
        "--drain-deadline",
        "1500ms",
    ])
    .await;
    let mut raws = Vec::new();
    for _ in 0..3 {
        raws.push(RawClient::connect(node.addr).await);
    }
    eventually("connected", SECS(5), || async {
        (node.metric("ebb_connections").await == 3.0).then_some(())
    })
    .await;
    let start = Instant::now();
    node.signal(Signal::SIGTERM);
    let status = node.proc.wait(SECS(6)).await;
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(1400) && took < SECS(4),
        "{took:?}"
    );
    let line = node.proc.wait_log("drain finished", SECS(1)).await;
    assert!(
        line.contains("forced=3") && line.contains("deadline_hit=true"),
        "{line}"
    );
    for raw in &mut raws {
        assert!(raw.wait_for_eof(SECS(1)).await.is_some());
    }
}

#[tokio::test]
async fn a_second_sigterm_skips_pacing_and_keeps_the_planned_reconnects() {
    let mut node = Node::start(&["--close-spread", "20s", "--notice", "false"]).await;
    let clients = clients(&node, 10).await;
    let start = Instant::now();
    node.signal(Signal::SIGTERM);
    node.proc.wait_log("drain started", SECS(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // slot 0 closed, slot 1 is 2 s away
    node.signal(Signal::SIGTERM);
    let closes = futures_util::future::join_all(clients.into_iter().map(|mut c| async move {
        let (_, close, at) = c.until_close(SECS(10)).await;
        c.finish(SECS(2)).await;
        (reason_of(&close), at)
    }))
    .await;
    let status = node.proc.wait(SECS(5)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        start.elapsed() < SECS(3),
        "finished fast: {:?}",
        start.elapsed()
    );
    // The nine closed early were advised to come back when their slot planned (up to ~19 s away).
    let mut delays: Vec<u64> = closes.iter().map(|(r, _)| r.retry_after_ms).collect();
    delays.sort();
    assert!(delays[9] > 15_000, "{delays:?}");
    assert!(delays.windows(2).all(|w| w[1] > w[0] + 1000), "{delays:?}");
}

#[tokio::test]
async fn oversized_frames_close_with_1009_without_allocating_them() {
    let node = Node::start(&["--max-message-size", "1024"]).await;
    // A real client sending a message over the limit.
    let mut client = Client::connect(&node.ws_url()).await;
    client.send(&"x".repeat(100_000)).await;
    let seen = client.next(SECS(5)).await;
    assert!(matches!(seen, Seen::Close(Some((1009, _)))), "{seen:?}");

    // A raw client announcing 1 GiB and sending nothing more: refused on the header alone.
    let mut raw = RawClient::connect(node.addr).await;
    raw.send_header(RawFrame::TEXT, 1 << 30).await;
    let close = raw.read_until(RawFrame::CLOSE, SECS(5)).await;
    assert_eq!(close.close_code(), Some(1009));
    assert_eq!(
        node.metric(r#"ebb_rejected_frames_total{code="1009"}"#)
            .await,
        2.0
    );
    // Still serving everyone else.
    let mut other = Client::connect(&node.ws_url()).await;
    other.send("still here").await;
    assert_eq!(
        other.next(SECS(5)).await,
        Seen::Text("Echo: still here".into())
    );
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let node = Node::start(&[]).await;
    let mut raw = RawClient::connect(node.addr).await;
    raw.send_frame(RawFrame::TEXT, &[0x68, 0x69, 0xff, 0xfe])
        .await;
    let close = raw.read_until(RawFrame::CLOSE, SECS(5)).await;
    assert_eq!(close.close_code(), Some(1007));
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_dropped() {
    let node = Node::start(&["--ping-interval", "200ms"]).await;
    let mut raw = RawClient::connect(node.addr).await;
    let ping = raw.read_until(RawFrame::PING, SECS(5)).await;
    assert_eq!(ping.opcode, RawFrame::PING);
    // No pong: cut at the next tick.
    assert!(raw.wait_for_eof(SECS(5)).await.is_some());
    assert_eq!(
        node.metric(r#"ebb_closes_total{kind="dead_peer"}"#).await,
        1.0
    );
    // A well-behaved client (tungstenite answers pings) stays.
    let mut client = Client::connect(&node.ws_url()).await;
    client.idle(Duration::from_millis(700)).await;
    client.send("alive").await;
    assert_eq!(client.next(SECS(5)).await, Seen::Text("Echo: alive".into()));
}

#[tokio::test]
async fn admin_drain_needs_the_bearer_token() {
    let node = Node::start(&["--admin-token", "s3cret-token", "--close-spread", "0s"]).await;
    assert_eq!(
        http::post(node.addr, "/admin/drain", None).await.status,
        401
    );
    assert_eq!(
        http::post(node.addr, "/admin/drain", Some("wrong"))
            .await
            .status,
        401
    );
    assert_eq!(
        http::get(node.addr, "/health").await.status,
        200,
        "no drain"
    );

    let accepted = http::post(node.addr, "/admin/drain?then=stay", Some("s3cret-token")).await;
    assert_eq!(accepted.status, 202);
    eventually("drained and staying", SECS(5), || async {
        let health = http::get(node.addr, "/health").await;
        (health.json()["status"] == "drained").then_some(())
    })
    .await;
    assert_eq!(
        http::post(node.addr, "/admin/resume", Some("s3cret-token"))
            .await
            .status,
        202
    );
    eventually("active again", SECS(5), || async {
        (http::get(node.addr, "/health").await.status == 200).then_some(())
    })
    .await;
    let mut client = Client::connect(&node.ws_url()).await;
    client.send("back").await;
    assert_eq!(client.next(SECS(5)).await, Seen::Text("Echo: back".into()));
}

#[tokio::test]
async fn admin_endpoints_are_off_without_a_token() {
    let node = Node::start(&[]).await;
    assert_eq!(
        http::post(node.addr, "/admin/drain", Some("anything"))
            .await
            .status,
        404
    );
    assert_eq!(http::get(node.addr, "/health").await.status, 200);
}

#[tokio::test]
async fn bad_flags_exit_2_with_a_clear_message() {
    for (args, expected) in [
        (
            &["--close-code", "1006"][..],
            "cannot be sent in a Close frame",
        ),
        (&["--listen", "not-an-address"][..], "invalid value"),
        (&["--close-spread", "soon"][..], "invalid value"),
        (&["--name", "bad name"][..], "invalid node name"),
        (&["--no-such-flag"][..], "unexpected argument"),
    ] {
        let output = std::process::Command::new(ebb_tests::bin::path("ebb-node"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_cannot_hold_the_node_past_its_drain_deadline() {
    let mut node = Node::start(&["--drain-deadline", "2s", "--close-spread", "0s"]).await;
    let mut raw = RawClient::connect(node.addr).await;
    // Send far more than the socket buffers hold and never read the echoes: the node's writes
    // block on a full window (and then its reads too, so ours do).
    let chunk = vec![b'x'; 60_000];
    let _ = tokio::time::timeout(SECS(5), async {
        for _ in 0..400 {
            raw.send_frame(RawFrame::TEXT, &chunk).await;
        }
    })
    .await;
    assert!(node.metric("ebb_messages_received_total").await > 10.0);
    let start = Instant::now();
    node.signal(Signal::SIGTERM);
    let status = node.proc.wait(SECS(10)).await;
    assert_eq!(status.code(), Some(0));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < SECS(5),
        "{took:?}"
    );
    let line = node.proc.wait_log("drain finished", SECS(1)).await;
    assert!(line.contains("forced=1"), "{line}");
}

/// What one talking client saw of a drain.
#[derive(Debug)]
struct Talk {
    /// Messages sent, all before the notice was seen (sending stops at the notice).
    sent: u32,
    /// Answers received before the Close, in order.
    answered: Vec<u32>,
    notice_at: Option<Instant>,
    close_at: Instant,
    close: Seen,
}

/// Answers a client gets before it counts as talking.
const TALKING_AFTER: usize = 20;

/// Sends `m<i>` every `gap` until the notice arrives, reads everything until the Close.
async fn talk(mut client: Client, gap: Duration, talking: Arc<AtomicUsize>) -> Talk {
    use futures_util::{SinkExt, StreamExt};
    let (mut sent, mut answered, mut notice_at) = (0u32, Vec::new(), None);
    let mut next_send = tokio::time::Instant::now();
    let deadline = Instant::now() + SECS(30);
    loop {
        assert!(Instant::now() < deadline, "no Close within 30 s");
        tokio::select! {
            message = client.ws.next() => match message {
                Some(Ok(tungstenite::Message::Text(text))) => {
                    if let Some(i) = text.as_str().strip_prefix("Echo: m") {
                        if answered.len() == TALKING_AFTER {
                            talking.fetch_add(1, Ordering::Relaxed);
                        }
                        answered.push(i.parse().expect("an echo of m<i>"));
                    } else {
                        ShutdownNotice::decode(&text).expect("a server_shutdown notice");
                        notice_at = Some(Instant::now());
                    }
                }
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    let close_at = Instant::now();
                    let _ = client.ws.flush().await;
                    let close = Seen::Close(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())));
                    client.finish(SECS(2)).await;
                    return Talk { sent, answered, notice_at, close_at, close };
                }
                Some(Ok(_)) => {}
                other => panic!("the connection ended without a Close: {other:?}"),
            },
            () = tokio::time::sleep_until(next_send), if notice_at.is_none() => {
                client.send(&format!("m{sent}")).await;
                sent += 1;
                next_send += gap;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_client_sent_before_it_saw_the_notice_is_answered_before_its_close() {
    let n = 200;
    let lead = Duration::from_millis(500);
    let mut node = Node::start(&[
        "--close-spread",
        "1s",
        "--notice-lead",
        "500ms",
        "--drain-deadline",
        "15s",
    ])
    .await;
    let talking = Arc::new(AtomicUsize::new(0));
    let talkers: Vec<_> = clients(&node, n)
        .await
        .into_iter()
        .map(|c| tokio::spawn(talk(c, Duration::from_millis(10), talking.clone())))
        .collect();
    eventually("every client talking", SECS(10), || async {
        (talking.load(Ordering::Relaxed) == n).then_some(())
    })
    .await;
    node.signal(Signal::SIGTERM);

    let mut talks = Vec::new();
    for talker in talkers {
        talks.push(talker.await.unwrap());
    }
    let mut gaps = Vec::new();
    for (c, talk) in talks.iter().enumerate() {
        assert!(
            matches!(talk.close, Seen::Close(Some((1001, _)))),
            "client {c}: {:?}",
            talk.close
        );
        let notice_at = talk
            .notice_at
            .unwrap_or_else(|| panic!("client {c} saw no notice"));
        // Everything it sent before it saw the notice was answered, in order, before its Close.
        let expected: Vec<u32> = (0..talk.sent).collect();
        assert_eq!(talk.answered, expected, "client {c}");
        gaps.push(talk.close_at - notice_at);
    }
    let first_notice = talks.iter().filter_map(|t| t.notice_at).min().unwrap();
    let first_close = talks.iter().map(|t| t.close_at).min().unwrap();
    let last_close = talks.iter().map(|t| t.close_at).max().unwrap();
    gaps.sort();
    let sent: u32 = talks.iter().map(|t| t.sent).sum();
    println!(
        "{n} clients sent {sent} messages, all answered before their Close; first Close {:?} \
         after the first notice, last {:?}; per-client notice-to-Close gap min {:?}, median {:?}",
        first_close - first_notice,
        last_close - first_notice,
        gaps[0],
        gaps[gaps.len() / 2],
    );
    // The closes start a notice lead after the notices (less what delivering 200 notices and
    // scheduling the client tasks takes), and end within the close spread.
    let tolerance = Duration::from_millis(60);
    assert!(
        first_close - first_notice >= lead - tolerance,
        "{:?}",
        first_close - first_notice
    );
    assert!(gaps[0] >= lead - tolerance, "{gaps:?}");
    assert!(last_close - first_notice < SECS(1) + Duration::from_millis(400));
    assert_eq!(node.proc.wait(SECS(10)).await.code(), Some(0));
}
