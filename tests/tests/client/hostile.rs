//! ebb-client against hostile servers over TCP (written here with a TcpListener): absurd
//! advised delays are capped and never panic, and a server that pushes faster than the
//! application reads is held back instead of buffered.

use super::{SECS, replies, until};
use ebb_client::{Client, ClientConfig, Echo, Event};
use ebb_proto::{CloseReason, ShutdownNotice};
use ebb_tests::eventually;
use ebb_tests::hostile::Hostile;
use ebb_tests::process::Node;
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// The longest delay the clients here honour.
const CAP: Duration = Duration::from_secs(1);
/// Room for a busy machine above the cap.
const SLACK: Duration = Duration::from_secs(3);

fn config(urls: Vec<String>) -> ClientConfig {
    let mut config = ClientConfig::new(urls);
    config.backoff.max_advised = CAP;
    config.backoff.max = Duration::from_millis(200);
    config
}

#[tokio::test]
async fn a_huge_retry_after_is_capped_and_the_client_fails_over() {
    let refuser = Hostile::refusing(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 18446744073709551615\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let mut b = Node::start(&[]).await;
    let (client, mut events) = Client::start(config(vec![refuser.ws_url(), b.ws_url()]), Echo);
    let id = client.send("hello").unwrap();
    assert_eq!(
        replies(&mut events, 1, SECS(10)).await,
        BTreeSet::from([id])
    );
    assert_eq!(client.stats().refused, 1);

    // With b gone, the refusing node is tried again once the capped Retry-After has passed.
    b.signal(Signal::SIGKILL);
    b.proc.wait(SECS(5)).await;
    let hits = eventually("the refuser tried again", CAP + SLACK * 2, || async {
        let hits = refuser.hits();
        (hits.len() >= 2).then_some(hits)
    })
    .await;
    let gap = hits[1] - hits[0];
    assert!(
        gap >= CAP && gap <= CAP + SLACK,
        "tried again after {gap:?}"
    );
    assert!(client.stats().refused >= 2);
    client.close().await;
}

#[tokio::test]
async fn huge_advised_delays_in_a_notice_and_a_close_are_capped() {
    // Every connection: a notice and a drain close, both advising u64::MAX ms.
    let hostile = Hostile::upgrading(|mut ws| async move {
        let notice = ShutdownNotice::new("bye", u64::MAX, 0).encode();
        let _ = ws.send(Message::text(notice)).await;
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: CloseReason::draining(u64::MAX).encode().into(),
        };
        let _ = ws.send(Message::Close(Some(frame))).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let b = Node::start(&[]).await;
    let (client, mut events) = Client::start(config(vec![hostile.ws_url(), b.ws_url()]), Echo);

    let notice = until(&mut events, SECS(10), |e| match e {
        Event::Notice(n) => Some(n),
        _ => None,
    })
    .await;
    assert_eq!(notice.reconnect_in, u64::MAX);
    let advised = until(&mut events, SECS(5), |e| match e {
        Event::Disconnected { code, advised, .. } => Some((code, advised)),
        _ => None,
    })
    .await;
    assert_eq!(advised, (Some(1001), Some(Duration::from_millis(u64::MAX))));
    let closed_at = Instant::now();
    let url = until(&mut events, CAP + SLACK, |e| match e {
        Event::Connected { url } => Some(url),
        _ => None,
    })
    .await;
    assert_eq!(url, b.ws_url(), "failed over to the real node");
    assert!(closed_at.elapsed() <= CAP + SLACK);
    let id = client.send("hello").unwrap();
    assert_eq!(replies(&mut events, 1, SECS(5)).await, BTreeSet::from([id]));
    let stats = client.close().await;
    let took = Duration::from_millis(stats.reconnect_ms[0]);
    assert!(
        took >= CAP - Duration::from_millis(50),
        "came back after {took:?}"
    );
    assert!(took <= CAP + SLACK, "came back after {took:?}");
}

#[tokio::test]
async fn a_server_pushing_faster_than_the_application_reads_is_held_back() {
    // 80 MB of pushes, more than the TCP buffers hold: a client that buffered whatever came
    // would take them all while the application reads nothing.
    const PUSHES: usize = 20_000;
    let held_back_at = Arc::new(Mutex::new(None::<usize>));
    let seen = held_back_at.clone();
    let hostile = Hostile::upgrading(move |mut ws| {
        let seen = seen.clone();
        async move {
            let filler = "p".repeat(4096);
            for i in 0..PUSHES {
                let push = ws.send(Message::text(format!("push {i} {filler}")));
                let mut push = std::pin::pin!(push);
                if tokio::time::timeout(SECS(1), &mut push).await.is_err() {
                    seen.lock().unwrap().get_or_insert(i);
                    if push.await.is_err() {
                        return;
                    }
                }
            }
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    let mut config = config(vec![hostile.ws_url()]);
    config.events_capacity = 16;
    let (client, mut events) = Client::start(config, Echo);
    let stalled = eventually("the server held back", SECS(30), || async {
        *held_back_at.lock().unwrap()
    })
    .await;
    assert!(stalled < PUSHES, "{stalled}");

    // Nothing was dropped: the application gets every push, in order.
    let read = tokio::time::timeout(SECS(60), async {
        let mut next = 0;
        while next < PUSHES {
            match events.recv().await.expect("the client stopped") {
                Event::Push { text, .. } => {
                    assert!(text.starts_with(&format!("push {next} ")), "{next}");
                    next += 1;
                }
                Event::Connected { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "every push read within 60 s");
    client.close().await;
}

#[tokio::test]
async fn closing_sends_1000_and_is_bounded_against_a_server_that_never_closes() {
    // The server reads up to the client's Close, records its code, then holds the connection
    // open without answering.
    let code = Arc::new(Mutex::new(None::<u16>));
    let seen = code.clone();
    let hostile = Hostile::upgrading(move |mut ws| {
        let seen = seen.clone();
        async move {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Close(frame) = message {
                    *seen.lock().unwrap() = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    break;
                }
            }
            tokio::time::sleep(SECS(60)).await;
        }
    })
    .await;
    let (client, mut events) = Client::start(config(vec![hostile.ws_url()]), Echo);
    until(&mut events, SECS(5), |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    })
    .await;
    let started = Instant::now();
    client.close().await;
    assert!(
        started.elapsed() < SECS(4),
        "closed in {:?}",
        started.elapsed()
    );
    assert_eq!(*code.lock().unwrap(), Some(1000));
}
