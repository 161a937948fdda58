//! Balanced by design: drains that carry reconnect targets and sheds (`ebb rebalance`), published
//! through a real Redis (container) to real `ebb-node` processes, with live ebb-clients over TCP
//! that must lose nothing and go where they are sent, and only there.

use ebb_client::ClientConfig;
use ebb_proto::{CloseReason, Keys};
use ebb_tests::fleet::node_args;
use ebb_tests::process::Node;
use ebb_tests::redis::Redis;
use ebb_tests::traffic::{Closed, Traffic};
use ebb_tests::ws::{Client, Seen};
use ebb_tests::{eventually, http};
use redis::AsyncCommands;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "balance";
/// How often each client sends: enough traffic to have messages in flight at every close,
/// little enough for hundreds of debug-built clients on a two-core machine.
const EVERY: Duration = Duration::from_millis(200);

async fn node(redis: &Redis, name: &str, extra: &[&str]) -> Node {
    let mut args = vec!["--name", name];
    args.extend(extra);
    let args = node_args(redis.url(), CLUSTER, &args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&args).await;
    // Listening for commands before the test publishes one.
    let channel = Keys::new(CLUSTER)
        .unwrap()
        .commands(&ebb_tests::node_name(name));
    eventually("subscribed", SECS(10), || async {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut redis.connection().await)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    node
}

/// Publishes a hand-written command (as a CI job would with `redis-cli PUBLISH`).
async fn publish(redis: &Redis, name: &str, payload: &str) {
    let channel = Keys::new(CLUSTER)
        .unwrap()
        .commands(&ebb_tests::node_name(name));
    let heard: i64 = redis
        .connection()
        .await
        .publish(channel, payload)
        .await
        .unwrap();
    assert_eq!(heard, 1, "the node heard {payload}");
}

async fn connections(node: &Node) -> usize {
    node.metric("ebb_connections").await as usize
}

/// `n` clients with events on, all starting at `urls[0]`, sending every [`EVERY`].
fn traffic(urls: &[String], n: usize) -> Traffic {
    Traffic::start_with(n, EVERY, |_| ClientConfig::new(urls.to_vec()))
}

/// Waits until `node` holds `n` connections.
async fn holds(node: &Node, n: usize, limit: Duration) {
    eventually(
        &format!("{n} connections on {}", node.addr),
        limit,
        || async { (connections(node).await == n).then_some(()) },
    )
    .await;
}

/// The close reasons, checked: every close 1001 with ebb's reason of at most 123 bytes.
fn reasons(closes: &[Closed]) -> Vec<CloseReason> {
    closes
        .iter()
        .map(|closed| {
            assert_eq!(closed.code, Some(1001), "{closed:?}");
            let text = closed.reason.as_deref().unwrap_or_default();
            assert!(text.len() <= 123, "{} bytes: {text}", text.len());
            CloseReason::decode(text).unwrap_or_else(|| panic!("not ebb's reason: {text}"))
        })
        .collect()
}

fn targets_json(targets: &[(&str, u64)]) -> String {
    let targets: Vec<_> = targets
        .iter()
        .map(|(url, weight)| serde_json::json!({ "url": url, "weight": weight }))
        .collect();
    serde_json::to_string(&targets).unwrap()
}

#[tokio::test]
async fn a_drain_with_targets_3_to_1_sends_200_clients_3_to_1_and_loses_nothing() {
    let redis = Redis::run().await;
    let a = node(&redis, "a", &["--close-spread", "1s"]).await;
    let b = node(&redis, "b", &[]).await;
    let c = node(&redis, "c", &[]).await;
    let urls = [a.ws_url(), b.ws_url(), c.ws_url()];
    let traffic = traffic(&urls, 200);
    holds(&a, 200, SECS(20)).await;

    let drain = format!(
        r#"{{"v":1,"id":"deploy-7","target":"a","type":"drain","then":"stay","targets":{}}}"#,
        targets_json(&[(&b.ws_url(), 3), (&c.ws_url(), 1)])
    );
    publish(&redis, "a", &drain).await;
    eventually("every client moved", SECS(30), || async {
        let (on_b, on_c) = (connections(&b).await, connections(&c).await);
        (on_b + on_c == 200 && connections(&a).await == 0).then_some(())
    })
    .await;
    let (on_b, on_c) = (connections(&b).await, connections(&c).await);
    eprintln!("split after the drain: b={on_b} c={on_c}");
    assert!(
        on_b.abs_diff(150) <= 10 && on_c.abs_diff(50) <= 10,
        "b={on_b} c={on_c}"
    );

    let closes = traffic.closes();
    assert_eq!(closes.len(), 200, "one close per client");
    let reasons = reasons(&closes);
    let named = |url: &str| {
        reasons
            .iter()
            .filter(|r| r.reconnect_to.as_deref() == Some(url))
            .count()
    };
    assert!(reasons.iter().all(|r| r.reason == "draining"));
    assert_eq!((named(&b.ws_url()), named(&c.ws_url())), (150, 50));
    let totals = traffic.finish(SECS(20)).await;
    totals.assert_nothing_lost();
    assert_eq!(totals.targets_followed, 200, "{totals:?}");
    assert_eq!(
        http::get(a.addr, "/health").await.json()["status"],
        "drained"
    );
}

#[tokio::test]
async fn a_target_too_long_for_the_close_reason_is_dropped_and_clients_choose_for_themselves() {
    let redis = Redis::run().await;
    let a = node(&redis, "a", &["--close-spread", "500ms"]).await;
    let b = node(&redis, "b", &[]).await;
    let c = node(&redis, "c", &[]).await;
    // B's URL padded to the longest valid target (64 bytes): beside a delay of 100 ms or more
    // it does not fit in 123 bytes. The clients know B by that very URL.
    let mut b_long = format!("{}?", b.ws_url());
    b_long.push_str(&"p".repeat(ebb_proto::target::MAX_TARGET_URL_LEN - b_long.len()));
    let urls = [a.ws_url(), b_long.clone(), c.ws_url()];
    let traffic = traffic(&urls, 40);
    let mut watcher = Client::connect(&a.ws_url()).await;
    holds(&a, 41, SECS(20)).await;

    let drain = format!(
        r#"{{"v":1,"id":"long-1","target":"a","type":"drain","then":"stay","targets":{}}}"#,
        targets_json(&[(&b_long, 1)])
    );
    publish(&redis, "a", &drain).await;
    // Neither the notice nor the Close names it.
    let (texts, close, _) = watcher.until_close(SECS(10)).await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(!texts[0].contains("reconnectTo"), "{}", texts[0]);
    let Seen::Close(Some((1001, reason))) = close else {
        panic!("{close:?}")
    };
    assert_eq!(CloseReason::decode(&reason).unwrap().reconnect_to, None);

    eventually("every client moved", SECS(30), || async {
        (connections(&b).await + connections(&c).await == 40).then_some(())
    })
    .await;
    let (on_b, on_c) = (connections(&b).await, connections(&c).await);
    eprintln!("own choices after a dropped target: b={on_b} c={on_c}");
    // Their own choice is any other node at random: both get some (all 40 on one: 2^-39).
    assert!(on_b > 0 && on_c > 0, "b={on_b} c={on_c}");
    let reasons = reasons(&traffic.closes());
    assert_eq!(reasons.len(), 40);
    assert!(reasons.iter().all(|r| r.reconnect_to.is_none()));
    let totals = traffic.finish(SECS(20)).await;
    totals.assert_nothing_lost();
    assert_eq!(totals.targets_followed, 0, "{totals:?}");
}

/// Samples what a load balancer and the coordinator see of `node` until stopped: its `/health`
/// status and its record's state in Redis; and, once `shedding` is cancelled, connects a new
/// client every 50 ms, each of which must be accepted and answered. Returns (samples, health
/// codes not 200, record states not active, new clients).
///
/// The new clients wait for the shed to have begun: a shed closes the newest connections that
/// exist when its command arrives, so a client that connected a moment before it is rightly
/// among those it may close.
async fn sample_while(
    redis: &Redis,
    node: &Node,
    name: &str,
    shedding: CancellationToken,
    stop: CancellationToken,
) -> (usize, Vec<u16>, Vec<String>, Vec<Client>) {
    let key = Keys::new(CLUSTER)
        .unwrap()
        .node(&ebb_tests::node_name(name));
    let mut conn = redis.connection().await;
    let (mut samples, mut unready, mut inactive, mut fresh) =
        (0, Vec::new(), Vec::new(), Vec::new());
    // Bounded: at most a minute of samples.
    for i in 0..3000 {
        if stop.is_cancelled() {
            break;
        }
        let status = http::get(node.addr, "/health").await.status.as_u16();
        if status != 200 {
            unready.push(status);
        }
        let state: String = conn.hget(&key, "state").await.unwrap();
        if state != "active" {
            inactive.push(state);
        }
        samples += 1;
        if i % 5 == 0 && shedding.is_cancelled() {
            let mut client = Client::connect(&node.ws_url()).await;
            client.send("still here").await;
            assert_eq!(
                client.next(SECS(5)).await,
                Seen::Text("Echo: still here".into())
            );
            fresh.push(client);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (samples, unready, inactive, fresh)
}

#[tokio::test]
async fn a_shed_of_100_at_200_per_second_moves_100_of_300_clients_while_the_node_stays_ready() {
    let redis = Redis::run().await;
    let a = node(&redis, "a", &[]).await;
    let b = node(&redis, "b", &[]).await;
    let c = node(&redis, "c", &[]).await;
    let urls = [a.ws_url(), b.ws_url(), c.ws_url()];
    let traffic = traffic(&urls, 300);
    holds(&a, 300, SECS(30)).await;

    let (started, stop) = (CancellationToken::new(), CancellationToken::new());
    let sampling = sample_while(&redis, &a, "a", started.clone(), stop.clone());
    // The node's own URL among the targets is never handed out: every shed client goes to b.
    let shed = format!(
        r#"{{"v":1,"id":"rebalance-1","target":"a","type":"shed","count":100,"rate_per_s":200,"targets":{}}}"#,
        targets_json(&[(&b.ws_url(), 1), (&a.ws_url(), 5)])
    );
    let shedding = async {
        publish(&redis, "a", &shed).await;
        // Its first close is ordered after it fixed which connections are its own.
        eventually("the shed begun", SECS(10), || async {
            (a.metric("ebb_shed_total").await >= 1.0).then_some(())
        })
        .await;
        started.cancel();
        eventually("100 clients on b", SECS(20), || async {
            (connections(&b).await >= 99).then_some(())
        })
        .await;
        eventually("the shed over", SECS(10), || async {
            (a.metric("ebb_shed_in_progress").await == 0.0).then_some(())
        })
        .await;
        // The last reconnects land (advised at most 200 ms), then sampling stops.
        eventually("every shed client back", SECS(10), || async {
            (traffic.closes().len() == 100 && connections(&b).await == 100).then_some(())
        })
        .await;
        stop.cancel();
    };
    let ((samples, unready, inactive, fresh), ()) = tokio::join!(sampling, shedding);
    eprintln!(
        "shed: {samples} readiness samples, {} new clients accepted meanwhile",
        fresh.len()
    );
    assert!(samples >= 10, "{samples} samples");
    assert!(
        unready.is_empty(),
        "/health not 200 during the shed: {unready:?}"
    );
    assert!(
        inactive.is_empty(),
        "record not active during the shed: {inactive:?}"
    );
    let on_b = connections(&b).await;
    assert!(on_b.abs_diff(100) <= 1, "b={on_b}");
    assert_eq!(connections(&c).await, 0, "nobody chose for themselves");
    assert_eq!(connections(&a).await, 200 + fresh.len());

    let reasons = reasons(&traffic.closes());
    assert_eq!(reasons.len(), 100);
    for reason in &reasons {
        assert_eq!(reason.reason, "rebalance");
        assert_eq!(reason.reconnect_to.as_deref(), Some(b.ws_url().as_str()));
        assert!(reason.retry_after_ms < 200, "{reason:?}");
    }
    assert_eq!(a.metric("ebb_shed_total").await, 100.0);
    assert_eq!(
        a.metric(r#"ebb_commands_applied_total{action="shed"}"#)
            .await,
        1.0
    );
    assert_eq!(
        a.metric(r#"ebb_closes_total{kind="drain_clean"}"#).await,
        100.0
    );
    let totals = traffic.finish(SECS(20)).await;
    totals.assert_nothing_lost();
    assert_eq!(totals.targets_followed, 100, "{totals:?}");
}

#[tokio::test]
async fn a_shed_to_a_target_outside_the_clients_urls_is_not_followed() {
    let redis = Redis::run().await;
    let a = node(&redis, "a", &[]).await;
    let b = node(&redis, "b", &[]).await;
    let c = node(&redis, "c", &[]).await;
    // The clients know a and b only: c is, to them, anywhere a server might point.
    let urls = [a.ws_url(), b.ws_url()];
    let traffic = traffic(&urls, 50);
    holds(&a, 50, SECS(20)).await;

    let shed = format!(
        r#"{{"v":1,"id":"rebalance-2","target":"a","type":"shed","count":20,"rate_per_s":100,"targets":{}}}"#,
        targets_json(&[(&c.ws_url(), 1)])
    );
    publish(&redis, "a", &shed).await;
    eventually("20 clients moved", SECS(20), || async {
        (connections(&b).await == 20 && connections(&a).await == 30).then_some(())
    })
    .await;
    assert_eq!(
        connections(&c).await,
        0,
        "nobody followed the unknown target"
    );
    let reasons = reasons(&traffic.closes());
    assert_eq!(reasons.len(), 20);
    assert!(
        reasons
            .iter()
            .all(|r| r.reconnect_to.as_deref() == Some(c.ws_url().as_str()))
    );
    let totals = traffic.finish(SECS(20)).await;
    totals.assert_nothing_lost();
    assert_eq!(
        (totals.targets_followed, totals.targets_ignored),
        (0, 20),
        "{totals:?}"
    );
}
