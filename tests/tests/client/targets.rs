//! ebb-client and the reconnect targets servers name: a listed target is tried first, a failing
//! one gives way to the client's own choice at once, an unlisted one is never followed unless
//! the client is configured to follow any.

use super::{SECS, until};
use ebb_client::{Client, ClientConfig, Echo, Event};
use ebb_proto::CloseReason;
use ebb_tests::hostile::{Hostile, unused_addr};
use ebb_tests::process::Node;
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// A server that closes every connection at once as a shed does: 1001, `rebalance`, no delay,
/// sending the client to `to`.
async fn shedding_to(to: String) -> Hostile {
    Hostile::upgrading(move |mut ws| {
        let reason = CloseReason::rebalance(0).to(Some(to.clone())).encode();
        async move {
            let frame = CloseFrame {
                code: CloseCode::Away,
                reason: reason.into(),
            };
            let _ = ws.send(Message::Close(Some(frame))).await;
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await
}

/// The URL of the next connection after the first, and how long after the close it came.
async fn next_connection(events: &mut tokio::sync::mpsc::Receiver<Event>) -> (String, Duration) {
    until(events, SECS(5), |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await;
    let closed = Instant::now();
    let url = until(events, SECS(5), |e| match e {
        Event::Connected { url } => Some(url),
        _ => None,
    })
    .await;
    (url, closed.elapsed())
}

#[tokio::test]
async fn a_listed_target_is_followed_first() {
    let b = Node::start(&[]).await;
    let c = Node::start(&[]).await;
    let shedder = shedding_to(b.ws_url()).await;
    // The own choice after the shedder would be b or c at random; the target says b.
    let config = ClientConfig::new(vec![shedder.ws_url(), c.ws_url(), b.ws_url()]);
    let (client, mut events) = Client::start(config, Echo);
    let (url, _) = next_connection(&mut events).await;
    assert_eq!(url, b.ws_url());
    let stats = client.close().await;
    assert_eq!((stats.targets_followed, stats.targets_ignored), (1, 0));
}

#[tokio::test]
async fn a_target_outside_the_urls_is_not_followed() {
    // Where a hostile server would send the fleet: it must never be contacted.
    let victim =
        Hostile::upgrading(|mut ws| async move { while let Some(Ok(_)) = ws.next().await {} })
            .await;
    let shedder = shedding_to(victim.ws_url()).await;
    let b = Node::start(&[]).await;
    let config = ClientConfig::new(vec![shedder.ws_url(), b.ws_url()]);
    let (client, mut events) = Client::start(config, Echo);
    let (url, _) = next_connection(&mut events).await;
    assert_eq!(url, b.ws_url(), "its own choice");
    let stats = client.close().await;
    assert!(
        victim.hits().is_empty(),
        "the unlisted target was contacted"
    );
    assert_eq!((stats.targets_followed, stats.targets_ignored), (0, 1));
}

#[tokio::test]
async fn a_listed_target_that_fails_gives_way_to_the_own_choice_at_once() {
    let dead = format!("ws://{}/ws", unused_addr());
    let shedder = shedding_to(dead.clone()).await;
    let b = Node::start(&[]).await;
    let config = ClientConfig::new(vec![shedder.ws_url(), dead, b.ws_url()]);
    let (client, mut events) = Client::start(config, Echo);
    let (url, took) = next_connection(&mut events).await;
    assert_eq!(url, b.ws_url());
    // No backoff in between: two refused connects on 127.0.0.1 at most, then b.
    assert!(took < Duration::from_secs(1), "{took:?}");
    let id = client.send("hello").unwrap();
    until(&mut events, SECS(5), |e| match e {
        Event::Reply { id: got, .. } if got == id => Some(()),
        _ => None,
    })
    .await;
    let stats = client.close().await;
    assert!(stats.connect_failures >= 1, "{stats:?}");
    assert_eq!(stats.targets_followed, 0);
}

#[tokio::test]
async fn follow_any_target_follows_a_node_outside_the_urls() {
    let b = Node::start(&[]).await;
    let c = Node::start(&[]).await;
    let shedder = shedding_to(c.ws_url()).await;
    let mut config = ClientConfig::new(vec![shedder.ws_url(), b.ws_url()]);
    config.follow_any_target = true;
    let (client, mut events) = Client::start(config, Echo);
    let (url, _) = next_connection(&mut events).await;
    assert_eq!(url, c.ws_url());
    let stats = client.close().await;
    assert_eq!(stats.targets_followed, 1);
}
