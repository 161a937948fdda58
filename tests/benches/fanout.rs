//! Fan-out: one room message to `--connections` clients on one node, delivery time from the
//! send to each client's receipt (p50, p99, the last), over `--rounds` messages. ebb-node's chat
//! app (`--app chat`, local rooms: no Redis) against the baseline, a Node.js `ws` server written
//! after the seed article that broadcasts with `wss.clients.forEach(c => c.send(m))`
//! (tests/benches/broadcast.js), measured in the same run with the same clients.
//!
//! The clients live in this process (lean 4 KiB read buffers), one task each; a round is sent
//! once every client has the previous one (or after 30 s).
//!
//! Run: `scripts/bench.sh fanout [-- --connections 10000 --rounds 20]`

use ebb_tests::process::{Options, Proc};
use futures_util::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tungstenite::Message;

/// Connections opened at once while filling.
const CONNECT_AT_ONCE: usize = 200;

/// Each round's send time, and every delivery's time after it.
#[derive(Default)]
struct Rounds {
    sent: Vec<Option<Instant>>,
    delays: Vec<Vec<Duration>>,
}

/// Which round a received text is: ebb's `{"room","seq":N,...}` (seq = round + 1), or the
/// baseline's `round N`.
fn round_of(text: &str) -> Option<usize> {
    if let Some(n) = text.strip_prefix("round ") {
        return n.parse().ok();
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v["seq"].as_u64().map(|s| s as usize - 1)
}

async fn receiver(
    url: String,
    rounds: Arc<Mutex<Rounds>>,
) -> impl std::future::Future<Output = ()> {
    let addr = ebb_client::connect::resolve(&url).await.expect("resolve");
    let ws = ebb_client::connect::connect(&url, addr, None, ebb_client::connect::lean_config())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    async move {
        let (_, mut read) = ws.split();
        while let Some(Ok(message)) = read.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let now = Instant::now();
            let Some(round) = round_of(text.as_str()) else {
                continue;
            };
            let mut r = rounds.lock().unwrap();
            if let Some(Some(sent)) = r.sent.get(round).copied() {
                r.delays[round].push(now - sent);
            }
        }
    }
}

struct Delivery {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    last: Duration,
    delivered: usize,
}

async fn measure(
    name: &'static str,
    url: &str,
    post: impl Fn(usize) -> String,
    n: usize,
    rounds: usize,
) -> Delivery {
    let shared = Arc::new(Mutex::new(Rounds {
        sent: vec![None; rounds],
        delays: vec![Vec::new(); rounds],
    }));
    let mut tasks = tokio::task::JoinSet::new();
    let mut opened = 0;
    while opened < n {
        let batch = CONNECT_AT_ONCE.min(n - opened);
        let connects = (0..batch).map(|_| receiver(url.to_owned(), shared.clone()));
        for task in futures_util::future::join_all(connects).await {
            tasks.spawn(task);
        }
        opened += batch;
    }
    let (mut sender, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the sender");
    for round in 0..rounds {
        shared.lock().unwrap().sent[round] = Some(Instant::now());
        sender.send(Message::text(post(round))).await.expect("send");
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.lock().unwrap().delays[round].len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tasks.abort_all();
    let r = shared.lock().unwrap();
    let mut all: Vec<Duration> = r.delays.iter().flatten().copied().collect();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    let mut lasts: Vec<Duration> = r
        .delays
        .iter()
        .filter_map(|d| d.iter().max().copied())
        .collect();
    lasts.sort();
    Delivery {
        name,
        p50: at(0.50),
        p99: at(0.99),
        last: lasts[lasts.len() / 2],
        delivered: all.len(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let flags = ebb_tests::bench::Flags::parse(&[("connections", 10_000), ("rounds", 20)]);
    let (n, rounds) = (
        flags.get("connections") as usize,
        flags.get("rounds") as usize,
    );

    let script = format!("{}/benches/broadcast.js", env!("CARGO_MANIFEST_DIR"));
    let node = Proc::spawn_with(std::path::Path::new("node"), &[script], Options::default());
    let line = node
        .wait_stdout("listening on", Duration::from_secs(10))
        .await;
    let addr = line.trim_start_matches("listening on ").to_owned();
    let baseline = measure(
        "Node.js ws, clients.forEach(send)",
        &format!("ws://{addr}/"),
        |r| format!("round {r}"),
        n,
        rounds,
    )
    .await;
    println!(
        "| {} | {} | {} | {} | {} |",
        baseline.name,
        ms(baseline.p50),
        ms(baseline.p99),
        ms(baseline.last),
        baseline.delivered
    );
    drop(node);

    let ebb = Proc::spawn_with(
        &ebb_tests::bin::path("ebb-node"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--name",
            "fanout",
            "--app",
            "chat",
        ]
        .map(String::from),
        Options::default(),
    );
    let line = ebb.wait_log("node active", Duration::from_secs(10)).await;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("local_addr="))
        .expect("local_addr")
        .to_owned();
    let url = format!("ws://{addr}/ws?room=bench");
    let chat = measure(
        "ebb-node --app chat (Rooms, Conn::send)",
        &url,
        |r| format!(r#"{{"id":"s-{r}","text":"round {r}"}}"#),
        n,
        rounds,
    )
    .await;
    println!(
        "| {} | {} | {} | {} | {} |",
        chat.name,
        ms(chat.p50),
        ms(chat.p99),
        ms(chat.last),
        chat.delivered
    );

    println!();
    println!("fan-out of one room message to {n} connections, {rounds} rounds:");
    println!("| server | delivery p50 | delivery p99 | last delivery (median round) | delivered |");
    println!("| --- | --- | --- | --- | --- |");
    for r in [&baseline, &chat] {
        println!(
            "| {} | {} | {} | {} | {} of {} |",
            r.name,
            ms(r.p50),
            ms(r.p99),
            ms(r.last),
            r.delivered,
            n * rounds
        );
    }
    println!(
        "ebb / Node.js: p50 {:.2}x, p99 {:.2}x, last {:.2}x",
        chat.p50.as_secs_f64() / baseline.p50.as_secs_f64(),
        chat.p99.as_secs_f64() / baseline.p99.as_secs_f64(),
        chat.last.as_secs_f64() / baseline.last.as_secs_f64(),
    );
}
