//! ebb-node used as a library: the embedding application drives the drain through `Control`.

use ebb_node::config::{DrainConfig, NodeConfig};
use ebb_node::{DrainRequest, Echo, Node, ShedRequest, Target, Then};
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

/// The reason of the Close `client` receives next.
async fn close_reason(client: &mut Client) -> ebb_proto::CloseReason {
    match client.next(Duration::from_secs(5)).await {
        Seen::Close(Some((1001, reason))) => ebb_proto::CloseReason::decode(&reason)
            .unwrap_or_else(|| panic!("not ebb's reason: {reason}")),
        other => panic!("expected a Close 1001, got {other:?}"),
    }
}

#[tokio::test]
async fn a_shed_closes_the_newest_stays_active_gives_way_to_drains_and_is_replaced_by_the_next() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = NodeConfig {
        drain: DrainConfig {
            close_spread: Duration::from_secs(30),
            notice: false,
            ..DrainConfig::default()
        },
        ..NodeConfig::default()
    };
    let running = Node::new(config, Echo::default()).start(listener).unwrap();
    let control = running.control().clone();
    let addr = running.local_addr();
    let url = format!("ws://{addr}/ws");
    let target = |url: &str| Target {
        url: url.to_owned(),
        weight: 1,
    };
    let shed = |count, rate_per_s, to: &str| ShedRequest {
        count,
        rate_per_s,
        targets: vec![target(to)],
        trigger: "test".to_owned(),
    };
    // Connected one after the other, so their order is known.
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(Client::connect(&url).await);
        eventually("connected", Duration::from_secs(5), || async {
            (control.connections() == i + 1).then_some(())
        })
        .await;
    }

    // The two newest go, to the target, with a small advised delay; the node stays active.
    control.shed(shed(2, 1000, "ws://x:1/ws"));
    for i in [5, 4] {
        let reason = close_reason(&mut clients[i]).await;
        assert_eq!(reason.reason, "rebalance");
        assert_eq!(reason.reconnect_to.as_deref(), Some("ws://x:1/ws"));
        assert!(reason.retry_after_ms < 200, "{reason:?}");
    }
    eventually("two shed", Duration::from_secs(5), || async {
        (control.connections() == 4).then_some(())
    })
    .await;
    assert_eq!(control.state(), NodeState::Active);
    assert_eq!(http::get(addr, "/health").await.status, 200);

    // A slow shed closes client 3 at once, its next close is a second away; a second shed
    // replaces it and closes client 2 (to its own target), and nothing more closes.
    control.shed(shed(4, 1, "ws://slow:1/ws"));
    assert_eq!(
        close_reason(&mut clients[3]).await.reconnect_to.as_deref(),
        Some("ws://slow:1/ws")
    );
    control.shed(shed(1, 1000, "ws://y:1/ws"));
    assert_eq!(
        close_reason(&mut clients[2]).await.reconnect_to.as_deref(),
        Some("ws://y:1/ws")
    );
    assert_eq!(clients[1].try_next(Duration::from_millis(1500)).await, None);
    eventually("shed clients gone", Duration::from_secs(5), || async {
        (control.connections() == 2).then_some(())
    })
    .await;

    // While draining, a shed is ignored: the drain closes client 0 now and client 1 only 15 s
    // later, and the shed does not close client 1 meanwhile.
    control.drain(DrainRequest::stay("test"));
    assert_eq!(close_reason(&mut clients[0]).await.reason, "draining");
    control.shed(shed(5, 1000, "ws://x:1/ws"));
    assert_eq!(clients[1].try_next(Duration::from_millis(500)).await, None);
    control.resume();
    eventually("active again", Duration::from_secs(5), || async {
        (control.state() == NodeState::Active).then_some(())
    })
    .await;
    clients[1].send("still").await;
    assert_eq!(
        clients[1].next(Duration::from_secs(5)).await,
        Seen::Text("Echo: still".into())
    );

    // A drain during a shed takes over the connections the shed has not reached.
    let mut late = Client::connect(&url).await;
    eventually("connected", Duration::from_secs(5), || async {
        (control.connections() == 2).then_some(())
    })
    .await;
    control.shed(shed(2, 1, "ws://x:1/ws"));
    assert_eq!(close_reason(&mut late).await.reason, "rebalance");
    control.drain(DrainRequest::exit("test"));
    control.hurry();
    assert_eq!(close_reason(&mut clients[1]).await.reason, "draining");
    let report = tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("the node stops after an exit drain")
        .unwrap();
    assert_eq!(report.then, Then::Exit);
}
