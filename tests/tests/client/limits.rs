//! ebb-client at its own limits, against the real ebb-node: the size check counts the frame the
//! client really sends, a full queue refuses more, and thousands of pending messages flow through
//! a node that pauses reading until its replies are read.

use super::{SECS, replies};
use ebb_client::{Client, ClientConfig, Echo, SendError};
use ebb_tests::hostile::unused_addr;
use ebb_tests::process::Node;
use std::collections::BTreeSet;
use std::time::Duration;

/// A client of `url` that retries often (its node is started after it).
fn config(url: String) -> ClientConfig {
    let mut config = ClientConfig::new(vec![url]);
    config.backoff.max = Duration::from_millis(300);
    config
}

#[tokio::test]
async fn the_size_limit_counts_the_id_the_frame_really_carries() {
    const LIMIT: usize = 64;
    let node = Node::start(&["--max-message-size", "64"]).await;
    let mut config = config(node.ws_url());
    config.max_message_size = LIMIT;
    let (client, mut events) = Client::start(config, Echo);

    // A payload of exactly the limit is a frame of "1 " + payload: over it, and refused.
    let err = client.send("x".repeat(LIMIT)).unwrap_err();
    assert_eq!(err, SendError::TooLarge { size: 66, max: 64 });
    // Frames of exactly the limit, with ids from 1 to 10 (the refusal took none): the payload
    // shrinks as the id grows.
    let mut sent = BTreeSet::new();
    for id in 1..=10u64 {
        let payload = "x".repeat(LIMIT - id.to_string().len() - 1);
        if id == 10 {
            // The payload that fitted with a one-digit id no longer does.
            let err = client.send("x".repeat(LIMIT - 2)).unwrap_err();
            assert_eq!(err, SendError::TooLarge { size: 65, max: 64 });
        }
        assert_eq!(client.send(payload), Ok(id));
        sent.insert(id);
    }
    assert_eq!(replies(&mut events, 10, SECS(10)).await, sent);
    assert_eq!(node.metric("ebb_messages_received_total").await, 10.0);
    assert_eq!(
        node.metric(r#"ebb_closes_total{kind="rejected"}"#).await,
        0.0,
        "no 1009"
    );
    let stats = client.close().await;
    assert!(stats.close_codes.is_empty(), "{stats:?}");
    assert_eq!((stats.abnormal, stats.reconnects, stats.resent), (0, 0, 0));
}

#[tokio::test]
async fn a_full_queue_refuses_more_and_every_queued_message_is_answered_once_a_node_is_up() {
    const MAX: usize = 100;
    let addr = unused_addr();
    let mut config = config(format!("ws://{addr}/ws"));
    config.max_pending = MAX;
    let (client, mut events) = Client::start(config, Echo);
    let queued: BTreeSet<u64> = (0..MAX)
        .map(|i| client.send(format!("m{i}")).unwrap())
        .collect();
    assert_eq!(
        client.send("one too many"),
        Err(SendError::QueueFull { max: MAX })
    );
    assert_eq!(client.pending(), MAX as u64);

    let listen = addr.to_string();
    let node = Node::start(&["--listen", &listen]).await;
    assert_eq!(replies(&mut events, MAX, SECS(15)).await, queued);
    assert_eq!(client.pending(), 0);
    // Room again.
    let id = client.send("after").unwrap();
    assert_eq!(replies(&mut events, 1, SECS(5)).await, BTreeSet::from([id]));
    let stats = client.close().await;
    assert_eq!(
        (stats.sent, stats.answered),
        (MAX as u64 + 1, MAX as u64 + 1)
    );
    assert_eq!(stats.duplicates, 0);
    assert_eq!(
        node.metric("ebb_messages_received_total").await,
        MAX as f64 + 1.0
    );
}

#[tokio::test]
async fn thousands_of_pending_messages_flow_through_a_node_that_pauses_reading() {
    // 20 MB queued while no node runs; the node reads at most 4 messages ahead of its replies
    // and its writes stall when the client does not read: writing everything before reading
    // anything deadlocked both sides here.
    const N: usize = 20_000;
    let addr = unused_addr();
    let mut config = config(format!("ws://{addr}/ws"));
    config.max_pending = N;
    let (client, mut events) = Client::start(config, Echo);
    let payload = "x".repeat(1024);
    let queued: BTreeSet<u64> = (0..N).map(|_| client.send(&*payload).unwrap()).collect();

    let listen = addr.to_string();
    let node = Node::start(&[
        "--listen",
        &listen,
        "--max-inflight",
        "4",
        "--read-buffer-size",
        "1024",
    ])
    .await;
    assert_eq!(replies(&mut events, N, SECS(60)).await, queued);
    let stats = client.close().await;
    assert_eq!((stats.answered, stats.duplicates), (N as u64, 0));
    assert_eq!((stats.abnormal, stats.resent), (0, 0), "{stats:?}");
    assert_eq!(node.metric("ebb_messages_answered_total").await, N as f64);
}
