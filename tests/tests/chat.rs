//! The reference chat app (`ebb-node --app chat`) over real TCP: its wire protocol on one node
//! without Redis, and three nodes sharing rooms through a real Redis through a rolling restart,
//! with clients that resume from the last `seq` they have: every client gets every message of its
//! room from its first `seq` to the last, none twice, and every sent id is stored exactly once.

use ebb_proto::chat::{Ack, RoomMessage};
use ebb_tests::eventually;
use ebb_tests::fleet::{Supervised, ebb, node_args};
use ebb_tests::process::Node;
use ebb_tests::redis::Redis;
use ebb_tests::ws::{Client, Seen};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tungstenite::Message;

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
    let mut a = Client::connect(&url("?room=r1")).await;
    let mut b = Client::connect(&url("?room=r1")).await;
    let mut other = Client::connect(&url("?room=r2")).await;
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
    let mut late = Client::connect(&url("?room=r1&after=1")).await;
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
        match Client::try_connect(&url(query)).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{query}");
            }
            other => panic!("{query}: expected a 400, got {other:?}"),
        }
    }
}

/// What one resuming client saw and did.
#[derive(Debug, Default)]
struct Heard {
    /// Every room message received, in order (duplicates included, to count them).
    seqs: Vec<u64>,
    ids: Vec<String>,
    acked: BTreeMap<String, u64>,
    reconnects: u64,
    gaps: u64,
}

/// A chat client that posts every `every`, resends what is unacked after a reconnect, and
/// resumes from the last seq it has on whichever node takes it.
async fn client(
    urls: Vec<String>,
    start: usize,
    room: String,
    me: String,
    every: Duration,
    stop: CancellationToken,
    seen: Arc<Mutex<Heard>>,
) {
    let mut first = true;
    let mut sent = 0u64;
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    let mut at = start;
    loop {
        let last = seen.lock().unwrap().seqs.last().copied();
        let query = match (first, last) {
            (false, Some(last)) => format!("?room={room}&after={last}"),
            _ => format!("?room={room}"),
        };
        let url = format!("{}{query}", urls[at % urls.len()]);
        at += 1;
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            // That node is restarting: the next one.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !first {
            seen.lock().unwrap().reconnects += 1;
        }
        first = false;
        for (id, text) in &pending {
            let _ = ws
                .send(Message::text(format!(r#"{{"id":"{id}","text":"{text}"}}"#)))
                .await;
        }
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick(), if !stop.is_cancelled() => {
                    let id = format!("{me}-{sent}");
                    let text = format!("m{sent}");
                    sent += 1;
                    pending.insert(id.clone(), text.clone());
                    if ws.send(Message::text(format!(r#"{{"id":"{id}","text":"{text}"}}"#))).await.is_err() {
                        break;
                    }
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                        let mut seen = seen.lock().unwrap();
                        if v.get("ack").is_some() {
                            let ack: Ack = serde_json::from_value(v).unwrap();
                            pending.remove(&ack.ack);
                            seen.acked.insert(ack.ack, ack.seq);
                        } else if v.get("gap_from").is_some() {
                            seen.gaps += 1;
                        } else if v.get("seq").is_some() {
                            let m: RoomMessage = serde_json::from_value(v).unwrap();
                            assert_eq!(m.room, room);
                            seen.seqs.push(m.seq);
                            seen.ids.push(m.id);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
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
        reconnects += s.reconnects;
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
