//! At the door: the header timeout, the capacity, the descriptor limit and how a node says it is
//! full, against the real `ebb-node` over real TCP.

use ebb_client::{ClientConfig, Echo, Event};
use ebb_node::config::DEFAULT_FD_RESERVE;
use ebb_tests::fleet::node_args;
use ebb_tests::process::Node;
use ebb_tests::redis::Redis;
use ebb_tests::ws::{Client, Seen};
use ebb_tests::{eventually, http, procfs};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const FULL: &str = r#"ebb_upgrades_limited_total{limit="capacity"}"#;
const PER_IP: &str = r#"ebb_upgrades_limited_total{limit="per_ip"}"#;
const SHED_HANDSHAKES: &str = r#"ebb_connections_shed_total{reason="handshakes"}"#;
const PAUSED: &str = "ebb_accept_paused_total";
const EMFILE: &str = r#"ebb_accept_errors_total{error="emfile"}"#;
/// Half an upgrade request: the request line and one header, and then nothing.
const HALF_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n";

/// Raises this process's soft descriptor limit to `want` (the nodes it starts inherit it).
fn raise_nofile(want: u64) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard >= want,
        "this test needs {want} descriptors; the hard limit is {hard} (raise it: ulimit -Hn)"
    );
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
    }
}

/// Connects, sends `text`, and expects the echo within a second.
async fn echo(client: &mut Client, text: &str) {
    client.send(text).await;
    assert_eq!(
        client.next(SECS(1)).await,
        Seen::Text(format!("Echo: {text}"))
    );
}

/// The status, `Retry-After` and body of an upgrade that was refused with an HTTP response.
fn refusal(attempt: Result<Client, tungstenite::Error>) -> (u16, Option<u64>) {
    match attempt {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        ),
        Ok(_) => panic!("the upgrade was accepted"),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Sends SIGTERM and expects a clean exit.
async fn stop(mut node: Node) {
    node.signal(Signal::SIGTERM);
    assert_eq!(node.proc.wait(SECS(15)).await.code(), Some(0));
}

#[tokio::test]
async fn half_sent_upgrades_are_closed_at_the_header_timeout_while_clients_keep_connecting() {
    const HALF: usize = 3_000;
    let header_timeout = SECS(2);
    // The test holds the 3,000 sockets, and the node (which inherits the limit) their peers.
    raise_nofile(HALF as u64 + 1_024);
    let node = Node::start(&["--header-timeout", "2s", "--max-handshakes", "4096"]).await;
    let pid = node.proc.pid();
    let rss_before = procfs::rss_kib(pid);
    let mut steady = Client::connect(&node.ws_url()).await;
    echo(&mut steady, "before").await;

    let opening = Instant::now();
    let mut waits = Vec::with_capacity(HALF);
    for _ in 0..HALF {
        let mut tcp = TcpStream::connect(node.addr).await.expect("connect");
        tcp.write_all(HALF_UPGRADE)
            .await
            .expect("write half a request");
        let sent = Instant::now();
        waits.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            // The node answers nothing: what ends this read is the node closing the connection.
            let read = timeout(SECS(10), tcp.read(&mut buf))
                .await
                .expect("closed within 10 s");
            assert!(matches!(read, Ok(0) | Err(_)), "an answer? {read:?}");
            sent.elapsed()
        }));
    }
    let opened_in = opening.elapsed();
    // A sample, for the figures (the /metrics request itself is a handshake too); on a slow
    // machine the first may be closed before the last is open.
    let handshakes = node.metric("ebb_handshakes").await;
    let rss_held = procfs::rss_kib(pid);

    // While they are held and closed: new clients connect and echo, and so does the old one.
    let mut probes = 0;
    let mut slowest = Duration::ZERO;
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    while waits.iter().any(|w| !w.is_finished()) {
        assert!(probes < 100, "the half-sent connections outlived 10 s");
        ticks.tick().await;
        let started = Instant::now();
        let mut fresh = Client::connect(&node.ws_url()).await;
        echo(&mut fresh, &format!("fresh {probes}")).await;
        echo(&mut steady, &format!("steady {probes}")).await;
        slowest = slowest.max(started.elapsed());
        probes += 1;
    }
    let mut closed_after = Vec::with_capacity(HALF);
    for wait in waits {
        closed_after.push(wait.await.expect("reader task"));
    }
    closed_after.sort();
    let (first, last) = (closed_after[0], closed_after[HALF - 1]);
    eprintln!(
        "{HALF} half-sent upgrades opened in {opened_in:?}, {handshakes} handshakes held; closed \
         {first:?}..{last:?} after they were sent; RSS {rss_before} KiB -> {rss_held} KiB held; \
         {probes} fresh clients echoed meanwhile, slowest {slowest:?}"
    );
    assert!(
        last <= header_timeout + SECS(1),
        "the last was closed {last:?} after it was sent"
    );
    // Not before the timeout (less the moment between the node's accept and the write).
    assert!(
        first >= header_timeout - Duration::from_millis(300),
        "{first:?}"
    );
    assert!(probes >= 5, "{probes} probes");
    assert!(slowest < SECS(1), "a fresh client took {slowest:?}");
    // Counted as the connection task ends, a moment after the client saw the close.
    let metrics = eventually("every one counted", SECS(2), || async {
        let metrics = node.metrics().await;
        let timeouts = http::metric(&metrics, "ebb_header_timeouts_total");
        (timeouts == Some(HALF as f64)).then_some(metrics)
    })
    .await;
    assert_eq!(http::metric(&metrics, SHED_HANDSHAKES), Some(0.0));
    assert_eq!(http::metric(&metrics, PAUSED), Some(0.0));
    node.proc.wait_log("header_timeout=", SECS(2)).await;
    drop(steady);
    stop(node).await;
}

#[tokio::test]
async fn beyond_max_handshakes_a_new_connection_is_closed_at_once_and_counted() {
    let node = Node::start(&["--max-handshakes", "10", "--header-timeout", "2s"]).await;
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut tcp = TcpStream::connect(node.addr).await.expect("connect");
        tcp.write_all(HALF_UPGRADE).await.expect("write");
        slow.push(tcp);
    }
    let mut eleventh = TcpStream::connect(node.addr).await.expect("connect");
    let asked = Instant::now();
    let mut buf = [0u8; 64];
    let read = timeout(SECS(1), eleventh.read(&mut buf))
        .await
        .expect("closed at once, not at the header timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let shed_in = asked.elapsed();
    // The ten are closed at their timeout; then there is room again.
    for tcp in &mut slow {
        let read = timeout(SECS(4), tcp.read(&mut buf))
            .await
            .expect("timed out");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let mut client = eventually("room again", SECS(3), || async {
        Client::try_connect(&node.ws_url()).await.ok()
    })
    .await;
    echo(&mut client, "in").await;
    eprintln!("the 11th handshake was closed {shed_in:?} after it connected");
    assert_eq!(node.metric(SHED_HANDSHAKES).await, 1.0);
    assert_eq!(node.metric("ebb_header_timeouts_total").await, 10.0);
    drop(client);
    stop(node).await;
}

#[tokio::test]
async fn capacity_n_refuses_upgrade_n_plus_one_with_503_and_retry_after_until_one_leaves() {
    let node = Node::start(&["--capacity", "3", "--full-retry-after", "2s"]).await;
    let url = node.ws_url();
    let health = http::get(node.addr, "/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["full"], false);
    assert_eq!(health.json()["capacity"], 3);

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(&url).await);
    }
    let health = http::get(node.addr, "/health").await;
    assert_eq!(health.status, 200, "full is not dead: {}", health.body);
    let body = health.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["connections"], 3);
    assert_eq!(body["full"], true);

    assert_eq!(refusal(Client::try_connect(&url).await), (503, Some(2)));
    assert_eq!(refusal(Client::try_connect(&url).await), (503, Some(2)));
    assert_eq!(node.metric(FULL).await, 2.0);
    assert_eq!(node.metric("ebb_connections").await, 3.0);
    // Refused before the 101: no connection was accepted and then closed.
    let closes = node.metrics().await;
    assert!(
        closes
            .lines()
            .filter(|l| l.starts_with("ebb_closes_total"))
            .all(|l| l.ends_with(" 0")),
        "{closes}"
    );

    let mut leaving = clients.pop().unwrap();
    leaving.ws.close(None).await.expect("close");
    leaving.finish(SECS(2)).await;
    eventually("not full once one left", SECS(5), || async {
        let body = http::get(node.addr, "/health").await.json();
        (body["full"] == false && body["connections"] == 2).then_some(())
    })
    .await;
    let mut again = Client::connect(&url).await;
    echo(&mut again, "back in").await;
    assert_eq!(http::get(node.addr, "/health").await.json()["full"], true);
    clients.push(again);
    for client in &mut clients {
        echo(client, "still here").await;
    }
    drop(clients);
    stop(node).await;
}

/// Connects from `source` (any 127.0.0.0/8 address reaches a node on 127.0.0.1).
async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Result<Client, tungstenite::Error> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let tcp = socket.connect(addr).await?;
    let url = format!("ws://{addr}/ws");
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await?;
    Ok(Client { ws })
}

#[tokio::test]
async fn an_address_past_its_limit_is_refused_with_429_and_retry_after() {
    let node = Node::start(&["--max-connections-per-ip", "2", "--full-retry-after", "1s"]).await;
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let two = Ipv4Addr::new(127, 0, 0, 2);
    let mut a = connect_from(one, node.addr).await.expect("first");
    let _b = connect_from(one, node.addr).await.expect("second");
    assert_eq!(refusal(connect_from(one, node.addr).await), (429, Some(1)));
    let mut other = connect_from(two, node.addr).await.expect("another address");
    echo(&mut other, "from .2").await;
    assert_eq!(node.metric(PER_IP).await, 1.0);
    assert_eq!(node.metric(FULL).await, 0.0);
    // Not full: the node has room, this address has not.
    assert_eq!(http::get(node.addr, "/health").await.json()["full"], false);
    a.ws.close(None).await.expect("close");
    a.finish(SECS(2)).await;
    let mut again = eventually("the address has room again", SECS(5), || async {
        connect_from(one, node.addr).await.ok()
    })
    .await;
    echo(&mut again, "again").await;
    stop(node).await;
}

#[tokio::test]
async fn at_the_descriptor_limit_health_answers_full_refusals_are_counted_and_nothing_spins() {
    const CLIENTS: usize = 400;
    let node = Node::start_after(
        "ulimit -n 256",
        &[
            "--capacity",
            "1000",
            "--full-retry-after",
            "1s",
            "--close-spread",
            "500ms",
        ],
    )
    .await;
    let capacity = 256 - DEFAULT_FD_RESERVE;
    let health = http::get(node.addr, "/health").await.json();
    assert_eq!(
        health["capacity"], capacity,
        "min(--capacity, 256 - reserve)"
    );
    assert_eq!(node.metric("ebb_capacity").await, capacity as f64);

    // 400 clients at once.
    let url = node.ws_url();
    let attempts = futures_util::future::join_all(
        (0..CLIENTS).map(|_| timeout(SECS(20), Client::try_connect(&url))),
    )
    .await;
    let mut held = Vec::new();
    let mut refused_503 = 0;
    for attempt in attempts {
        match attempt.expect("every attempt ends: none is left waiting in the backlog") {
            Ok(client) => held.push(client),
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
                assert_eq!(response.headers()["retry-after"], "1");
                refused_503 += 1;
            }
            // Not accepted and then dropped: a burst beyond the sockets left waits its turn.
            Err(other) => panic!("not refused with a 503: {other}"),
        }
    }
    assert_eq!(held.len(), capacity, "exactly the capacity got in");
    let refused = CLIENTS - capacity;
    assert_eq!(refused_503, refused);
    let metrics = node.metrics().await;
    assert_eq!(http::metric(&metrics, FULL), Some(refused as f64));
    assert_eq!(http::metric(&metrics, SHED_HANDSHAKES), Some(0.0));
    let paused = http::metric(&metrics, PAUSED).unwrap_or(0.0);
    // In the log, in aggregate: a line a second at most, adding up to the refusals.
    let logged = eventually("the refusals logged", SECS(3), || async {
        let lines: Vec<String> = node
            .proc
            .logs()
            .into_iter()
            .filter(|l| l.contains("door refusals"))
            .collect();
        let sum: usize = lines.iter().map(|l| logged_count(l, "full")).sum();
        (sum == refused_503).then_some(lines)
    })
    .await;
    assert!(logged.len() <= 3, "{logged:#?}");

    // At the limit: /health answers 200 full every time, upgrades keep being refused (not
    // ignored), and the node idles.
    let pid = node.proc.pid();
    let (cpu_before, started) = (procfs::cpu_time(pid), Instant::now());
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        ticks.tick().await;
        let asked = Instant::now();
        let health = timeout(SECS(1), http::get(node.addr, "/health"))
            .await
            .expect("/health answers at the limit");
        slowest = slowest.max(asked.elapsed());
        assert_eq!(health.status, 200);
        let body = health.json();
        assert_eq!(
            (body["full"].as_bool(), body["connections"].as_u64()),
            (Some(true), Some(capacity as u64))
        );
        assert_eq!(refusal(Client::try_connect(&url).await).0, 503);
        assert!(http::get(node.addr, "/metrics").await.status.is_success());
    }
    let window = started.elapsed();
    let cpu = procfs::cpu_time(pid) - cpu_before;
    eprintln!(
        "under ulimit -n 256: {} held, {refused_503} refused 503 (accepting paused {paused} times \
         in the burst); at the limit /health answered 20/20 (slowest {slowest:?}); node CPU \
         {cpu:?} over {window:?}",
        held.len()
    );
    assert!(
        cpu < window / 10,
        "the node used {cpu:?} of CPU in {window:?}"
    );
    for client in &mut held[..3] {
        echo(client, "held").await;
    }
    drop(held);
    stop(node).await;
}

/// The count of `name` in an aggregated refusal line (`... counts=full=12 accept_emfile=3`).
fn logged_count(line: &str, name: &str) -> usize {
    line.split(|c: char| c.is_whitespace() || c == '"')
        .flat_map(|w| w.split("counts=").last())
        .filter_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .filter_map(|n| n.parse::<usize>().ok())
        .sum()
}

#[tokio::test]
async fn descriptors_taken_behind_the_nodes_back_make_accept_fail_and_the_loop_backs_off() {
    // 150 descriptors the node does not know about (the shell that execs it opens them), under
    // a limit of 256: its socket budget (256 - OWN_DESCRIPTORS) is more than what is left, so accept
    // fails with EMFILE and connections wait in the kernel's backlog.
    let prelude = "for fd in $(seq 10 159); do eval \"exec $fd</dev/null\"; done\nulimit -n 256";
    let node = Node::start_after(prelude, &["--close-spread", "0s"]).await;
    let url = node.ws_url();
    let pid = node.proc.pid();

    // Clients, one at a time, until one is not answered: the node is out of descriptors.
    let mut held = Vec::new();
    for _ in 0..150 {
        match timeout(SECS(1), Client::try_connect(&url)).await {
            Ok(Ok(client)) => held.push(client),
            Ok(Err(e)) => panic!("refused rather than left waiting: {e}"),
            Err(_) => break,
        }
    }
    assert!(held.len() < 150, "never ran out: {} held", held.len());
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { timeout(SECS(30), Client::try_connect(&url)).await })
        })
        .collect();
    // The node cannot accept even a /metrics request now: its log says what happens.
    node.proc.wait_log("accept_emfile=", SECS(5)).await;

    // While it lasts: an attempt per backoff (100 ms), a log line a second, and no spinning.
    let emfile_lines = || -> Vec<String> {
        let logs = node.proc.logs();
        logs.into_iter()
            .filter(|l| l.contains("accept_emfile="))
            .collect()
    };
    let (cpu_before, lines_before, started) =
        (procfs::cpu_time(pid), emfile_lines().len(), Instant::now());
    tokio::time::sleep(SECS(2)).await; // the measuring window itself
    let (cpu, window) = (procfs::cpu_time(pid) - cpu_before, started.elapsed());
    let in_window = emfile_lines().split_off(lines_before);
    let lines = in_window.len();
    let attempts: usize = in_window
        .iter()
        .map(|l| logged_count(l, "accept_emfile"))
        .sum();
    eprintln!(
        "out of descriptors with {} clients held: node CPU {cpu:?} over {window:?}; {lines} log \
         lines saying {attempts} failed accepts",
        held.len()
    );
    assert!(
        cpu < window / 10,
        "the node used {cpu:?} of CPU in {window:?}"
    );
    assert!((1..=3).contains(&lines), "{lines} lines in {window:?}");
    // Ten a second (one per backoff), certainly not thousands.
    assert!((1..=12 * lines).contains(&attempts), "{in_window:#?}");

    // Descriptors come back: the waiting clients are accepted, and /health answers again.
    for client in held.drain(..10) {
        drop(client);
    }
    for wait in waiting {
        let client = wait
            .await
            .expect("task")
            .expect("accepted once descriptors came back")
            .expect("upgraded");
        held.push(client);
    }
    let health = timeout(SECS(5), http::get(node.addr, "/health"))
        .await
        .expect("/health answers again");
    assert_eq!(health.status, 200);
    let counted = node.metric(EMFILE).await;
    assert!((1.0..=100.0).contains(&counted), "{counted}");
    drop(held);
    stop(node).await;
}

/// Reads the client's events until it connected to `want`.
async fn connected(events: &mut tokio::sync::mpsc::Receiver<Event>, want: String) {
    timeout(SECS(15), async {
        loop {
            match events.recv().await.expect("the client runs") {
                Event::Connected { url } if url == want => return,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never connected to {want}"))
}

#[tokio::test]
async fn a_client_moves_to_another_node_when_one_is_full_and_skips_it_until_its_retry_after() {
    let retry_after = SECS(2);
    let full = Node::start(&["--capacity", "1", "--full-retry-after", "2s"]).await;
    let other = Node::start(&[]).await;
    let mut holder = Client::connect(&full.ws_url()).await;
    let mut config = ClientConfig::new(vec![full.ws_url(), other.ws_url()]);
    config.backoff.max = Duration::from_millis(500);
    let (client, mut events) = ebb_client::Client::start(config, Echo);
    connected(&mut events, other.ws_url()).await;
    assert_eq!(
        full.metric(FULL).await,
        1.0,
        "tried the full node first, once"
    );
    let id = client.send("hello").unwrap();
    eventually("answered by the other node", SECS(5), || async {
        (client.pending() == 0).then_some(id)
    })
    .await;

    // The other node goes away: the client now has only the full one, and asks it once per
    // Retry-After, not in a loop.
    other.signal(Signal::SIGKILL);
    let mut refused_at = Vec::new();
    let mut last = full.metric(FULL).await;
    while refused_at.len() < 3 {
        let now = eventually("another refusal", SECS(10), || async {
            let n = full.metric(FULL).await;
            (n > last).then_some(n)
        })
        .await;
        assert_eq!(now, last + 1.0, "one refusal at a time");
        last = now;
        refused_at.push(Instant::now());
    }
    let gaps: Vec<Duration> = refused_at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("refusals by the full node {gaps:?} apart (Retry-After {retry_after:?})");
    for gap in &gaps {
        assert!(
            *gap >= retry_after - Duration::from_millis(100),
            "asked again after {gap:?}"
        );
    }

    // A seat frees up: the client gets it, and what it sends is answered.
    holder.ws.close(None).await.expect("close");
    holder.finish(SECS(2)).await;
    connected(&mut events, full.ws_url()).await;
    client.send("there").unwrap();
    eventually("answered by the node that was full", SECS(5), || async {
        (client.pending() == 0).then_some(())
    })
    .await;
    let stats = client.close().await;
    assert!(stats.refused >= 3, "{stats:?}");
    assert_eq!(stats.answered, 2);
    stop(full).await;
}

#[tokio::test]
async fn the_record_advertises_the_capacity_the_node_enforces() {
    const CLUSTER: &str = "door";
    let redis = Redis::run().await;
    let args = node_args(
        redis.url(),
        CLUSTER,
        &["--name", "n1", "--capacity", "1000"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start_after("ulimit -n 256", &args).await;
    let enforced = (256 - DEFAULT_FD_RESERVE).to_string();
    let key = ebb_proto::Keys::new(CLUSTER)
        .unwrap()
        .node(&ebb_tests::node_name("n1"));
    let record: HashMap<String, String> = eventually("registered", SECS(5), || async {
        let record: HashMap<String, String> = redis.connection().await.hgetall(&key).await.ok()?;
        (!record.is_empty()).then_some(record)
    })
    .await;
    assert_eq!(record["capacity"], enforced, "not the 1000 asked for");
    assert_eq!(
        http::get(node.addr, "/health").await.json()["capacity"].to_string(),
        enforced
    );
    stop(node).await;
}
