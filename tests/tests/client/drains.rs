//! ebb-client against real node drains over TCP: advised delays, failover, resend, dedup.

use super::SECS;
use ebb_client::{Client, ClientConfig, Echo, Event, SendError};
use ebb_tests::eventually;
use ebb_tests::process::Node;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// Sends `n` messages spaced by `every`, returning the ids.
async fn send_steadily(client: &Client, n: usize, every: Duration) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(client.send(format!("m{i}")).unwrap());
        tokio::time::sleep(every).await;
    }
    ids
}

#[tokio::test]
async fn a_client_survives_a_drain_without_losing_or_duplicating_a_message() {
    // Replies take 50 ms, so messages are in flight whenever the drain comes.
    let args = [
        "--echo-delay",
        "50ms",
        "--close-spread",
        "0s",
        "--reconnect-base",
        "300ms",
        "--reconnect-spread",
        "0s",
    ];
    let mut a = Node::start(&args).await;
    let b = Node::start(&args).await;
    let config = ClientConfig::new(vec![a.ws_url(), b.ws_url()]);
    let (client, mut events) = Client::start(config, Echo);
    eventually("connected", SECS(5), || async {
        (a.metric("ebb_connections").await == 1.0).then_some(())
    })
    .await;

    let sending = send_steadily(&client, 100, Duration::from_millis(10));
    let drain = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.signal(Signal::SIGTERM);
    };
    let (ids, ()) = tokio::join!(sending, drain);
    assert_eq!(a.proc.wait(SECS(10)).await.code(), Some(0));
    eventually("every message answered", SECS(10), || async {
        (client.pending() == 0).then_some(())
    })
    .await;

    let mut replies = Vec::new();
    let mut closed_at = None;
    let mut advised = None;
    let mut reconnected_at = None;
    while let Ok(event) = events.try_recv() {
        match event {
            Event::Reply { id, .. } => replies.push(id),
            Event::Disconnected {
                code, advised: a, ..
            } => {
                assert_eq!(code, Some(1001));
                closed_at = Some(Instant::now());
                advised = a;
            }
            Event::Connected { url } if closed_at.is_some() => {
                assert_eq!(url, b.ws_url(), "failed over to the other node");
                reconnected_at = Some(());
            }
            _ => {}
        }
    }
    replies.sort();
    assert_eq!(replies, ids, "every message answered exactly once");
    assert_eq!(advised, Some(Duration::from_millis(300)));
    assert!(reconnected_at.is_some());
    let stats = client.close().await;
    assert_eq!(stats.sent, 100);
    assert_eq!(stats.answered, 100);
    assert_eq!(stats.abnormal, 0);
    assert_eq!(stats.close_codes.get(&1001), Some(&1));
    assert_eq!(stats.reconnects, 1);
    assert_eq!(stats.notices, 1);
    // It waited what the node advised, not less, and not much more.
    let took = stats.reconnect_ms[0];
    assert!((300..1500).contains(&took), "reconnected after {took} ms");
    assert!(b.metric("ebb_messages_answered_total").await >= 1.0);
}

#[tokio::test]
async fn unanswered_messages_are_resent_after_a_forced_close() {
    // The node is killed while messages are in flight: they were never answered, so they are
    // sent again to the other node.
    let mut a = Node::start(&["--echo-delay", "2s"]).await;
    let b = Node::start(&[]).await;
    let (client, _events) = Client::start(ClientConfig::new(vec![a.ws_url(), b.ws_url()]), Echo);
    eventually("connected", SECS(5), || async {
        (a.metric("ebb_connections").await == 1.0).then_some(())
    })
    .await;
    for i in 0..5 {
        client.send(format!("slow {i}")).unwrap();
    }
    eventually("received", SECS(5), || async {
        (a.metric("ebb_messages_received_total").await == 5.0).then_some(())
    })
    .await;
    a.signal(Signal::SIGKILL);
    a.proc.wait(SECS(5)).await;
    eventually("answered by the other node", SECS(10), || async {
        (client.pending() == 0).then_some(())
    })
    .await;
    let stats = client.close().await;
    assert_eq!((stats.sent, stats.answered, stats.resent), (5, 5, 5));
    assert_eq!(stats.abnormal, 1, "a killed node is an abnormal close");
    assert_eq!(b.metric("ebb_messages_answered_total").await, 5.0);
}

#[tokio::test]
async fn a_refusing_node_is_skipped_and_do_not_reconnect_codes_stop_the_client() {
    let a = Node::start(&[
        "--admin-token",
        "t0ken-t0ken",
        "--close-spread",
        "0s",
        "--close-code",
        "4000",
    ])
    .await;
    let b = Node::start(&[]).await;
    // a is drained and staying: it refuses upgrades with 503; the client goes to b.
    ebb_tests::http::post(a.addr, "/admin/drain?then=stay", Some("t0ken-t0ken")).await;
    eventually("a refuses", SECS(5), || async {
        (ebb_tests::http::get(a.addr, "/health").await.status == 503).then_some(())
    })
    .await;
    let (client, _) = Client::start(ClientConfig::new(vec![a.ws_url(), b.ws_url()]), Echo);
    client.send("hello").unwrap();
    eventually("answered by b", SECS(5), || async {
        (client.pending() == 0).then_some(())
    })
    .await;
    let stats = client.close().await;
    assert_eq!(stats.refused, 1);

    // A drain that closes with 4000 tells clients not to come back.
    let c = Node::start(&["--close-spread", "0s", "--close-code", "4000"]).await;
    let (client, mut events) = Client::start(ClientConfig::new(vec![c.ws_url()]), Echo);
    eventually("connected", SECS(5), || async {
        (c.metric("ebb_connections").await == 1.0).then_some(())
    })
    .await;
    c.signal(Signal::SIGTERM);
    let stopped = tokio::time::timeout(SECS(5), async {
        while let Some(event) = events.recv().await {
            if let Event::Stopped { code } = event {
                return code;
            }
        }
        0
    })
    .await
    .unwrap();
    assert_eq!(stopped, 4000);
    assert_eq!(client.stats().reconnects, 0);
    // A stopped client says so instead of queueing messages nobody will send.
    eventually("sends refused", SECS(5), || async {
        (client.send("late") == Err(SendError::Stopped)).then_some(())
    })
    .await;
}
