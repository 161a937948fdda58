//! The reference chat app (`ebb-node --app chat`) over real TCP: its wire protocol on one node
//! without Redis, and three nodes sharing rooms through a real Redis through a rolling restart,
//! with ebb-client's chat correlation resuming from the last `seq` it has on whichever node takes
//! it: every client gets every message of its room from its first `seq` to the last, none twice,
//! and every sent id is stored exactly once.

use ebb_client::{Chat, Client, ClientConfig, Event};
use ebb_proto::chat::{Ack, RoomMessage};
use ebb_tests::eventually;
use ebb_tests::fleet::{Supervised, ebb, node_args};
use ebb_tests::process::{Node, Options, Proc};
use ebb_tests::redis::Redis;
use ebb_tests::ws::{Client as WsClient, Seen};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "chat";

fn json(seen: Seen) -> serde_json::Value {
    match seen {
        Seen::Text(text) => serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        other => panic!("expected a text, got {other:?}"),
    }
}

#[tokio::test]
async fn one_node_without_redis_numbers_acks_and_broadcasts_and_refuses_what_is_wrong() {
    let node = Node::start(&["--app", "chat"]).await;
    let url = |q: &str| format!("ws://{}/ws{q}", node.addr);
    let mut a = WsClient::connect(&url("?room=r1")).await;
    let mut b = WsClient::connect(&url("?room=r1")).await;
    let mut other = WsClient::connect(&url("?room=r2")).await;
    a.send(r#"{"id":"a-1","text":"hello"}"#).await;
    let mut got_a = [json(a.next(SECS(5)).await), json(a.next(SECS(5)).await)];
    got_a.sort_by_key(|v| v.get("ack").is_some());
    assert_eq!(
        got_a[0],
        serde_json::json!({"room":"r1","seq":1,"id":"a-1","text":"hello"})
    );
    assert_eq!(got_a[1], serde_json::json!({"ack":"a-1","seq":1}));
    assert_eq!(
        json(b.next(SECS(5)).await),
        serde_json::json!({"room":"r1","seq":1,"id":"a-1","text":"hello"})
    );
    // The same id again: acked with its first seq, stored and sent to nobody twice.
    a.send(r#"{"id":"a-1","text":"hello"}"#).await;
    assert_eq!(
        json(a.next(SECS(5)).await),
        serde_json::json!({"ack":"a-1","seq":1})
    );
    assert_eq!(b.try_next(Duration::from_millis(300)).await, None);
    assert_eq!(
        other.try_next(Duration::from_millis(100)).await,
        None,
        "r2 heard nothing"
    );
    b.send(r#"{"id":"b-1","text":"second"}"#).await;
    let acked = loop {
        let v = json(b.next(SECS(5)).await);
        if v.get("ack").is_some() {
            break v;
        }
    };
    assert_eq!(acked["seq"], 2);

    // A reconnect that says what it has gets the rest, then live ones.
    let mut late = WsClient::connect(&url("?room=r1&after=1")).await;
    assert_eq!(json(late.next(SECS(5)).await)["seq"], 2);

    // Garbage is answered, never stored.
    for bad in ["not json", r#"{"id":"","text":"x"}"#, r#"{"text":"no id"}"#] {
        a.send(bad).await;
        let answer = loop {
            let v = json(a.next(SECS(5)).await);
            if v.get("error").is_some() {
                break v;
            }
        };
        assert!(answer["error"].as_str().unwrap().len() > 3, "{answer}");
    }
    for query in [
        "",
        "?room=",
        "?room=a%20b",
        "?room=x;rm%20-rf",
        "?room=r1&after=-1",
        "?room=r1&after=x",
    ] {
        match WsClient::try_connect(&url(query)).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{query}");
            }
            other => panic!("{query}: expected a 400, got {other:?}"),
        }
    }
}

/// What one client's application saw.
#[derive(Debug, Default)]
struct Heard {
    /// Every room message handed to the application, in order.
    seqs: Vec<u64>,
    ids: Vec<String>,
    acked: BTreeMap<String, u64>,
    connections: u64,
    gaps: u64,
    /// Pushes ebb-client dropped as seen before (the server should send none twice).
    duplicates: u64,
}

/// An ebb-client with the chat correlation: it posts every `every` until `stop`, and on every
/// reconnect (any node) resumes after the last seq it has and resends what was not acked.
async fn client(
    urls: Vec<String>,
    start: usize,
    room: String,
    me: String,
    every: Duration,
    stop: CancellationToken,
    heard: Arc<Mutex<Heard>>,
) {
    let mut config = ClientConfig::new(urls.iter().map(|u| format!("{u}?room={room}")).collect());
    config.first_url = start % urls.len();
    let (client, mut events) = Client::start(config, Chat::new(me.clone()));
    let mut tick = tokio::time::interval(every);
    let mut n = 0;
    loop {
        tokio::select! {
            _ = tick.tick(), if !stop.is_cancelled() => {
                client.send(format!("{me} says {n}")).expect("the client takes it");
                n += 1;
            }
            event = events.recv() => {
                let Some(event) = event else { return };
                let mut heard = heard.lock().unwrap();
                heard.duplicates = client.stats().push_duplicates;
                match event {
                    Event::Reply { text, .. } => {
                        let ack: Ack = serde_json::from_str(&text).unwrap();
                        heard.acked.insert(ack.ack, ack.seq);
                    }
                    Event::Push { text, seq: Some(seq) } => {
                        let m: RoomMessage = serde_json::from_str(&text).unwrap();
                        assert_eq!((m.room.as_str(), m.seq), (room.as_str(), seq));
                        heard.seqs.push(seq);
                        heard.ids.push(m.id);
                    }
                    Event::Push { text, seq: None } => {
                        assert!(text.contains("gap_from"), "{text}");
                        heard.gaps += 1;
                    }
                    Event::Connected { .. } => heard.connections += 1,
                    _ => {}
                }
            }
        }
    }
}

#[tokio::test]
async fn three_rooms_across_three_nodes_lose_nothing_and_repeat_nothing_through_a_rolling_restart()
{
    let redis = Redis::run().await;
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let args = node_args(
            redis.url(),
            CLUSTER,
            &["--app", "chat", "--close-spread", "1s"],
        );
        let node = Supervised::start(name, args).await;
        urls.push(node.ws_url().await);
        nodes.push(node);
    }
    eventually("three chat nodes active", SECS(20), || async {
        let (code, out, _) = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(5)).await;
        let status: serde_json::Value = serde_json::from_str(&out).ok()?;
        (code == 0
            && status["nodes"]
                .as_array()?
                .iter()
                .filter(|n| n["state"] == "active")
                .count()
                == 3)
            .then_some(())
    })
    .await;
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut logs = Vec::new();
    for room in ["red", "green", "blue"] {
        for k in 1..=3 {
            let seen = Arc::new(Mutex::new(Heard::default()));
            logs.push((room, seen.clone()));
            tasks.push(tokio::spawn(client(
                urls.clone(),
                k,
                room.into(),
                format!("{room}{k}"),
                Duration::from_millis(100),
                stop.clone(),
                seen,
            )));
        }
    }
    eventually("every client hears its room", SECS(20), || async {
        logs.iter()
            .all(|(_, s)| s.lock().unwrap().seqs.len() >= 5)
            .then_some(())
    })
    .await;
    let (code, stdout, stderr) = ebb(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--json"],
        SECS(120),
    )
    .await;
    assert_eq!(code, 0, "{stdout} {stderr:?}");
    stop.cancel();
    // Every post acked, then every client has heard its room up to the room's last seq.
    eventually("everything acked and heard", SECS(30), || async {
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for (room, s) in &logs {
            let s = s.lock().unwrap();
            let top = s.acked.values().max().copied().unwrap_or(0);
            let e = last.entry(room).or_default();
            *e = (*e).max(top);
        }
        logs.iter()
            .all(|(room, s)| s.lock().unwrap().seqs.last().copied() == Some(last[room]))
            .then_some(())
    })
    .await;
    for task in &tasks {
        task.abort();
    }
    let mut reconnects = 0;
    let mut stored: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for (room, s) in &logs {
        let s = s.lock().unwrap();
        reconnects += s.connections - 1;
        assert_eq!(s.duplicates, 0, "{room}: the server sent no push twice");
        let first = s.seqs[0];
        let expected: Vec<u64> = (first..=*s.seqs.last().unwrap()).collect();
        assert_eq!(
            s.seqs, expected,
            "{room}: every seq from its first to the last, once"
        );
        assert_eq!(s.gaps, 0, "{room}: the history reached back");
        for (id, seq) in s.ids.iter().zip(&s.seqs) {
            if let Some(before) = stored.entry(room).or_default().insert(id.clone(), *seq) {
                assert_eq!(before, *seq, "{room}: {id} stored twice");
            }
        }
        for (id, seq) in &s.acked {
            assert_eq!(
                stored[room].get(id),
                Some(seq),
                "{room}: {id} acked as {seq}"
            );
        }
    }
    for (room, ids) in &stored {
        let seqs: BTreeSet<u64> = ids.values().copied().collect();
        assert_eq!(seqs.len(), ids.len(), "{room}: one id per seq");
    }
    assert!(
        reconnects >= 9,
        "every client moved at least once: {reconnects}"
    );
    for node in &nodes {
        assert_eq!(node.starts(), 2, "{} replaced once", node.name);
    }
}

#[tokio::test]
async fn the_example_client_resumes_on_another_node_and_prints_every_message_once() {
    let redis = Redis::run().await;
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for name in ["n1", "n2"] {
        let args = node_args(
            redis.url(),
            CLUSTER,
            &["--app", "chat", "--close-spread", "300ms"],
        );
        let node = Supervised::start(name, args).await;
        urls.push(node.ws_url().await);
        nodes.push(node);
    }
    let script = format!("{}/../examples/chat/client.js", env!("CARGO_MANIFEST_DIR"));
    let mut client = Proc::spawn_with(
        std::path::Path::new("node"),
        &[script, urls.join(","), "lobby".into(), "ann".into()],
        Options {
            stdin: true,
            ..Options::default()
        },
    );
    for i in 0..20 {
        if i == 10 {
            // The node it is on drains: it resumes on the other one.
            nodes[0].signal(nix::sys::signal::Signal::SIGTERM);
        }
        client.write_line(&format!("line {i}")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.wait_stdout("ann: line 19", SECS(20)).await;
    let printed = client.stdout();
    let expected: Vec<String> = (0..20)
        .map(|i| format!("{} ann: line {i}", i + 1))
        .collect();
    assert_eq!(
        printed, expected,
        "each message once, in order, seq 1 to 20"
    );
    // n1 drained its client away and exited (and its supervisor started it again).
    eventually("n1 drained and back", SECS(20), || async {
        (nodes[0].starts() == 2).then_some(())
    })
    .await;
}
