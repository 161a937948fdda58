//! ebb-node used as a library: the embedding application drives the drain through `Control`.

use ebb_node::config::{DrainConfig, NodeConfig};
use ebb_node::{DrainRequest, Echo, Node, Then};
use ebb_proto::NodeState;
use ebb_tests::ws::{Client, Seen};
use ebb_tests::{eventually, http};
use std::time::Duration;

fn config() -> NodeConfig {
    NodeConfig {
        drain: DrainConfig {
            close_spread: Duration::ZERO,
            notice: false,
            ..DrainConfig::default()
        },
        ..NodeConfig::default()
    }
}

#[tokio::test]
async fn control_drains_stays_resumes_and_exits() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = Node::new(config(), Echo::default())
        .start(listener)
        .unwrap();
    let control = running.control().clone();
    let url = format!("ws://{}/ws", running.local_addr());
    assert_eq!(control.state(), NodeState::Active);

    let mut client = Client::connect(&url).await;
    client.send("one").await;
    assert_eq!(
        client.next(Duration::from_secs(5)).await,
        Seen::Text("Echo: one".into())
    );

    control.drain(DrainRequest::stay("test"));
    let seen = client.next(Duration::from_secs(5)).await;
    assert!(matches!(seen, Seen::Close(Some((1001, _)))), "{seen:?}");
    client.finish(Duration::from_secs(2)).await;
    let mut state = control.subscribe_state();
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == NodeState::Drained),
    )
    .await
    .expect("drained")
    .unwrap();
    let report = control
        .subscribe_reports()
        .borrow()
        .clone()
        .expect("a report");
    assert_eq!(
        (report.clean, report.forced, report.then),
        (1, 0, Then::Stay)
    );
    assert_eq!(http::get(running.local_addr(), "/health").await.status, 503);

    control.resume();
    eventually("active again", Duration::from_secs(5), || async {
        (control.state() == NodeState::Active).then_some(())
    })
    .await;
    let mut again = Client::connect(&url).await;
    again.send("two").await;
    assert_eq!(
        again.next(Duration::from_secs(5)).await,
        Seen::Text("Echo: two".into())
    );

    control.drain(DrainRequest::exit("test"));
    let seen = again.next(Duration::from_secs(5)).await;
    assert!(matches!(seen, Seen::Close(Some((1001, _)))), "{seen:?}");
    again.finish(Duration::from_secs(2)).await;
    let report = tokio::time::timeout(Duration::from_secs(5), running.wait())
        .await
        .expect("the node stops after an exit drain")
        .unwrap();
    assert_eq!(
        (report.clean, report.forced, report.then),
        (1, 0, Then::Exit)
    );
}

#[tokio::test]
async fn resume_during_a_drain_keeps_the_connections_not_yet_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = NodeConfig {
        drain: DrainConfig {
            close_spread: Duration::from_secs(30),
            close_timeout: Duration::from_millis(300),
            notice: false,
            ..DrainConfig::default()
        },
        ..NodeConfig::default()
    };
    let running = Node::new(config, Echo::default()).start(listener).unwrap();
    let control = running.control().clone();
    let url = format!("ws://{}/ws", running.local_addr());
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(&url).await);
    }
    eventually("three connected", Duration::from_secs(5), || async {
        (control.connections() == 3).then_some(())
    })
    .await;
    control.drain(DrainRequest::exit("test"));
    // Slot 0 closes at once; the next is 10 s away. Resume before it.
    eventually("first closed", Duration::from_secs(5), || async {
        (control.connections() == 2).then_some(())
    })
    .await;
    control.resume();
    eventually("active again", Duration::from_secs(5), || async {
        (control.state() == NodeState::Active).then_some(())
    })
    .await;
    let mut open = 0;
    for client in &mut clients {
        match client.try_next(Duration::from_millis(200)).await {
            Some(Seen::Close(Some((1001, _)))) => continue,
            None => {}
            other => panic!("unexpected {other:?}"),
        }
        client.send("still").await;
        assert_eq!(
            client.next(Duration::from_secs(5)).await,
            Seen::Text("Echo: still".into())
        );
        open += 1;
    }
    assert_eq!(open, 2, "the two not yet closed stay open after resume");
}
