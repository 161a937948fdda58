//! Nodes in Redis and the `ebb` coordinator: registration, commands, and rolling restarts of real
//! node processes, against a real Redis in a container (testcontainers, local image).

use ebb_proto::{EventKind, Keys, NodeState};
use ebb_tests::fleet::{EventLog, Supervised, ebb, ebb_spawn, node_args};
use ebb_tests::process::Node;
use ebb_tests::redis::Redis;
use ebb_tests::ws::{Client, Seen};
use ebb_tests::{eventually, http};
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "test";

async fn conn(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn record(
    conn: &mut redis::aio::MultiplexedConnection,
    name: &str,
) -> HashMap<String, String> {
    conn.hgetall(
        Keys::new(CLUSTER)
            .unwrap()
            .node(&ebb_tests::node_name(name)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_node_registers_heartbeats_expires_when_killed_and_deregisters_on_exit() {
    let redis = Redis::run().await;
    let mut c = conn(&redis).await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let args = node_args(redis.url(), CLUSTER, &["--name", "n1", "--capacity", "500"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&args).await;

    let first = eventually("registered", SECS(5), || async {
        let r = record(&mut conn(&redis).await, "n1").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(first["state"], "active");
    assert_eq!(first["capacity"], "500");
    assert_eq!(first["url"], format!("ws://{}/ws", node.addr));
    let members: Vec<String> = c
        .zrange(Keys::new(CLUSTER).unwrap().nodes(), 0, -1)
        .await
        .unwrap();
    assert_eq!(members, ["n1"]);
    // Heartbeats move updated_at_ms forward and keep the TTL short but alive.
    eventually("a heartbeat", SECS(5), || async {
        let r = record(&mut conn(&redis).await, "n1").await;
        (r.get("updated_at_ms") != first.get("updated_at_ms")).then_some(())
    })
    .await;
    let ttl: i64 = c
        .pttl(
            Keys::new(CLUSTER)
                .unwrap()
                .node(&ebb_tests::node_name("n1")),
        )
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 2000, "{ttl}");
    let registered = events
        .wait_for(SECS(1), |e| matches!(e.kind, EventKind::Registered { .. }))
        .await;

    // SIGKILL: nothing deregisters; the record expires with its TTL.
    node.signal(Signal::SIGKILL);
    eventually("the record expired", SECS(5), || async {
        record(&mut conn(&redis).await, "n1")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        !events
            .events()
            .iter()
            .any(|(_, e)| matches!(e.kind, EventKind::Deregistered {})),
        "a killed node cannot deregister"
    );
    let (code, stdout, _) = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10)).await;
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 0, "{stdout}");

    // A clean exit deregisters at once.
    let mut node = Node::start(&args).await;
    eventually("registered again", SECS(5), || async {
        let r = record(&mut conn(&redis).await, "n1").await;
        (r.get("instance").map(String::as_str) != Some(&registered.instance.to_string())
            && !r.is_empty())
        .then_some(())
    })
    .await;
    node.signal(Signal::SIGTERM);
    assert_eq!(node.proc.wait(SECS(10)).await.code(), Some(0));
    assert!(record(&mut c, "n1").await.is_empty());
    events
        .wait_for(SECS(2), |e| matches!(e.kind, EventKind::Deregistered {}))
        .await;
}

#[tokio::test]
async fn a_drain_published_while_the_node_is_cut_off_is_obeyed_when_it_reconnects() {
    let redis = Redis::run().await;
    let mut c = conn(&redis).await;
    // The node logs in as its own Redis user, so the test can lock it out and let it back in.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "node", "on", ">node-pass", "~*", "&*", "+@all"])
        .query_async(&mut c)
        .await
        .unwrap();
    let node_url = redis.url().replace("redis://", "redis://node:node-pass@");
    let args = node_args(
        &node_url,
        CLUSTER,
        &["--name", "n1", "--close-spread", "0s"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&args).await;
    let mut client = Client::connect(&node.ws_url()).await;
    eventually("registered", SECS(5), || async {
        (!record(&mut conn(&redis).await, "n1").await.is_empty()).then_some(())
    })
    .await;

    // Cut the node off: its user is disabled and its connections killed.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "node", "off"])
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "node"])
        .query_async(&mut c)
        .await
        .unwrap();
    let channel = Keys::new(CLUSTER)
        .unwrap()
        .commands(&ebb_tests::node_name("n1"));
    eventually("the node's subscription is gone", SECS(5), || async {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg(&["NUMSUB", channel.as_str()])
            .query_async(&mut conn(&redis).await)
            .await
            .unwrap();
        (n == 0).then_some(())
    })
    .await;

    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["drain", "n1", "--then", "stay"],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    assert!(
        logs.iter().any(|l| l.contains("0 subscriber(s)")),
        "published while nobody listened: {logs:?}"
    );
    // Still serving while cut off.
    client.send("still here").await;
    assert_eq!(
        client.next(SECS(5)).await,
        Seen::Text("Echo: still here".into())
    );
    assert_eq!(http::get(node.addr, "/health").await.status, 200);

    // Let it back in: it re-registers and obeys the desired state.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "node", "on"])
        .query_async(&mut c)
        .await
        .unwrap();
    let seen = client.next(SECS(15)).await;
    assert!(
        matches!(seen, Seen::Text(ref t) if t.contains("server_shutdown")),
        "{seen:?}"
    );
    assert!(matches!(
        client.next(SECS(5)).await,
        Seen::Close(Some((1001, _)))
    ));
    eventually("drained in its record", SECS(10), || async {
        let r = record(&mut conn(&redis).await, "n1").await;
        (r.get("state").map(String::as_str) == Some("drained")).then_some(())
    })
    .await;
    node.proc
        .wait_log("command accepted", SECS(1))
        .await
        .contains("Desired")
        .then_some(())
        .expect("obeyed from the desired state");
}

#[tokio::test]
async fn malformed_unsigned_forged_and_replayed_commands_are_refused_and_counted() {
    let redis = Redis::run().await;
    let mut c = conn(&redis).await;
    let secret = "a-shared-secret-for-the-test";
    let args = node_args(redis.url(), CLUSTER, &["--name", "n1", "--secret", secret]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&args).await;
    eventually("registered", SECS(5), || async {
        (!record(&mut conn(&redis).await, "n1").await.is_empty()).then_some(())
    })
    .await;
    let channel = Keys::new(CLUSTER)
        .unwrap()
        .commands(&ebb_tests::node_name("n1"));
    let publish = |payload: Vec<u8>| {
        let channel = channel.clone();
        let url = redis.url().to_owned();
        async move {
            let mut c = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let n: i64 = c.publish(channel, payload).await.unwrap();
            assert_eq!(n, 1);
        }
    };

    let drain = r#"{"v":1,"id":"x1","target":"n1","type":"drain"}"#;
    publish(b"\x00\xff random bytes \x13".to_vec()).await;
    publish(vec![b'{'; 1 << 20]).await;
    publish(drain.replace("\"v\":1", "\"v\":9").into_bytes()).await;
    publish(drain.as_bytes().to_vec()).await; // unsigned
    let wrong = ebb_proto::sign::Secret::new("not-the-shared-secret").unwrap();
    let mut cmd = ebb_proto::Command::new(
        CLUSTER,
        ebb_tests::node_name("n1"),
        ebb_proto::command::Action::Drain(Default::default()),
    );
    publish(cmd.encode(Some(&wrong), 60_000).into_bytes()).await; // forged
    // A genuine signed command, then the same bytes again.
    cmd.action = ebb_proto::command::Action::Resume(Default::default());
    let signed = cmd.encode(Some(&ebb_proto::sign::Secret::new(secret).unwrap()), 60_000);
    publish(signed.clone().into_bytes()).await;
    publish(signed.into_bytes()).await;

    let expected = [
        ("malformed", 1.0),
        ("too_large", 1.0),
        ("unknown_version", 1.0),
        ("unsigned", 1.0),
        ("bad_signature", 1.0),
        ("replayed", 1.0),
    ];
    eventually("every refusal counted", SECS(10), || async {
        let text = node.metrics().await;
        expected
            .iter()
            .all(|(reason, n)| {
                http::metric(
                    &text,
                    &format!(r#"ebb_commands_refused_total{{reason="{reason}"}}"#),
                ) == Some(*n)
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        node.metric(r#"ebb_commands_applied_total{action="resume"}"#)
            .await,
        1.0
    );
    // Still serving, still active, never drained.
    assert_eq!(http::get(node.addr, "/health").await.status, 200);
    let mut client = Client::connect(&node.ws_url()).await;
    client.send("ok").await;
    assert_eq!(client.next(SECS(5)).await, Seen::Text("Echo: ok".into()));
    let r = record(&mut c, "n1").await;
    assert_eq!(r["state"], "active");
}

/// Three supervised nodes with clients; returns the nodes and the clients per node.
async fn fleet(redis: &Redis, extra: &[&str]) -> Vec<Supervised> {
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(Supervised::start(name, node_args(redis.url(), CLUSTER, extra)).await);
    }
    eventually("three nodes registered", SECS(10), || async {
        let (code, stdout, _) = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10)).await;
        let status: serde_json::Value = serde_json::from_str(&stdout).ok()?;
        (code == 0 && status["nodes"].as_array()?.len() == 3).then_some(())
    })
    .await;
    nodes
}

fn report_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn a_rolling_restart_drains_one_node_at_a_time_and_every_node_comes_back_new() {
    let redis = Redis::run().await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let nodes = fleet(&redis, &["--close-spread", "300ms"]).await;
    let mut clients = Vec::new();
    for node in &nodes {
        for _ in 0..5 {
            clients.push(Client::connect(&node.ws_url().await).await);
        }
    }
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.until_close(SECS(60)).await.1 }))
        .collect();

    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--json"],
        SECS(90),
    )
    .await;
    assert_eq!(code, 0, "{logs:#?}");
    let report = report_of(&stdout);
    assert_eq!(report["status"], "completed");
    let entries = report["nodes"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for entry in entries {
        assert_ne!(entry["old_instance"], entry["new_instance"], "{entry}");
        assert!(entry["new_instance"].is_string(), "{entry}");
        assert_eq!(entry["connections_before"], 5, "{entry}");
        assert_eq!(entry["forced_closes"], 0, "{entry}");
        for field in ["drain_ms", "restart_ms"] {
            assert!(entry[field].is_u64(), "{field} in {entry}");
        }
    }
    assert!(report["duration_ms"].is_u64());
    for node in &nodes {
        assert_eq!(node.starts(), 2, "{} restarted once", node.name);
    }
    let drained = events.assert_one_at_a_time();
    let names: Vec<&str> = drained.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["n1", "n2", "n3"]);
    for watcher in watchers {
        let close = watcher.await.unwrap();
        assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    }
}

#[tokio::test]
async fn a_replacement_that_never_comes_back_aborts_and_leaves_the_rest_untouched() {
    let redis = Redis::run().await;
    let nodes = fleet(&redis, &["--close-spread", "0s"]).await;
    nodes[1].set_restart(false);
    let before = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10))
        .await
        .1;
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    let n3_instance = before["nodes"][2]["instance"].clone();

    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--json", "--replace-timeout", "3s"],
        SECS(60),
    )
    .await;
    assert_eq!(code, 1, "{logs:#?}");
    let report = report_of(&stdout);
    assert_eq!(report["status"], "aborted");
    assert_eq!(report["failed_node"], "n2");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("no replacement for n2"),
        "{report}"
    );
    assert!(
        logs.iter().any(|l| l.contains("no replacement for n2")),
        "{logs:#?}"
    );
    let after = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10))
        .await
        .1;
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    let n3 = after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n3")
        .unwrap();
    assert_eq!(n3["instance"], n3_instance, "n3 untouched");
    assert_eq!(n3["state"], "active");
    assert_eq!(nodes[2].starts(), 1);
}

#[tokio::test]
async fn a_second_rollout_is_refused_naming_the_holder() {
    let redis = Redis::run().await;
    let _nodes = fleet(&redis, &["--close-spread", "0s"]).await;
    let first = ebb_spawn(redis.url(), CLUSTER, &["rolling-restart", "--settle", "3s"]);
    first.wait_log("drain sent", SECS(10)).await;
    let (code, _, logs) = ebb(redis.url(), CLUSTER, &["rolling-restart"], SECS(10)).await;
    assert_eq!(code, 1, "{logs:#?}");
    let refusal = logs.join("\n");
    assert!(
        refusal.contains("another rollout holds the lock") && refusal.contains("pid"),
        "{refusal}"
    );
    let mut first = first;
    assert_eq!(
        first.wait(SECS(60)).await.code(),
        Some(0),
        "the first one completes"
    );
}

#[tokio::test]
async fn a_killed_coordinator_is_resumed_and_no_node_is_drained_twice() {
    let redis = Redis::run().await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let nodes = fleet(&redis, &["--close-spread", "0s"]).await;
    let first = ebb_spawn(redis.url(), CLUSTER, &["rolling-restart", "--settle", "2s"]);
    // Kill it after the first node is back, while it settles.
    first.wait_log("n1: done", SECS(30)).await;
    first.signal(Signal::SIGKILL);

    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--resume", "--json"],
        SECS(90),
    )
    .await;
    assert_eq!(code, 0, "{logs:#?}");
    let report = report_of(&stdout);
    assert_eq!(report["status"], "completed");
    // Each node drained exactly once, one at a time.
    assert_eq!(
        events.drains_per_node(),
        ["n1", "n2", "n3"].map(|n| (n.to_owned(), 1)).into()
    );
    for node in &nodes {
        assert_eq!(node.starts(), 2, "{}", node.name);
    }
    // A finished rollout leaves nothing to resume.
    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--resume"],
        SECS(30),
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        logs.iter().any(|l| l.contains("no rollout to resume")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn drain_stay_and_resume_from_the_cli() {
    let redis = Redis::run().await;
    let nodes = fleet(&redis, &["--close-spread", "0s"]).await;
    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &[
            "drain",
            "n2",
            "--then",
            "stay",
            "--wait",
            "--timeout",
            "20s",
        ],
        SECS(30),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    let addr = nodes[1].addr().await;
    assert_eq!(http::get(addr, "/health").await.json()["status"], "drained");
    let (code, _, _) = ebb(redis.url(), CLUSTER, &["resume", "n2"], SECS(10)).await;
    assert_eq!(code, 0);
    eventually("active again", SECS(10), || async {
        (http::get(addr, "/health").await.status == 200).then_some(())
    })
    .await;
    let (code, stdout, _) = ebb(redis.url(), CLUSTER, &["status"], SECS(10)).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("n2") && stdout.contains("active"),
        "{stdout}"
    );
    let _ = NodeState::Active;
}

#[tokio::test]
async fn the_cli_exits_2_when_redis_is_unreachable_or_flags_are_bad() {
    let (code, _, logs) = ebb("redis://127.0.0.1:1", CLUSTER, &["status"], SECS(20)).await;
    assert_eq!(code, 2);
    assert!(
        logs.iter().any(|l| l.contains("cannot reach Redis")),
        "{logs:?}"
    );
    let (code, _, logs) = ebb("redis://127.0.0.1:1", CLUSTER, &["drain"], SECS(20)).await;
    assert_eq!(code, 2, "{logs:?}");
    let (code, _, _) = ebb("redis://127.0.0.1:1", "bad name", &["status"], SECS(20)).await;
    assert_eq!(code, 2);
    let (code, _, _) = ebb(
        "redis://127.0.0.1:1",
        CLUSTER,
        &["rolling-restart", "--ack-timeout", "soon"],
        SECS(20),
    )
    .await;
    assert_eq!(code, 2);
}

#[tokio::test]
async fn the_readme_redis_cli_payloads_drain_and_resume_a_node() {
    let redis = Redis::run().await;
    let mut c = conn(&redis).await;
    let args = node_args(
        redis.url(),
        "default",
        &["--name", "node-a", "--close-spread", "0s"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&args).await;
    let channel = "ebb:{default}:commands:node-a";
    eventually("subscribed", SECS(5), || async {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg(&["NUMSUB", channel])
            .query_async(&mut conn(&redis).await)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    // Exactly what README.md tells CI/CD systems to publish, with then: stay.
    let drain = r#"{"v":1,"id":"deploy-42","target":"node-a","type":"drain","then":"stay"}"#;
    let n: i64 = c.publish(channel, drain).await.unwrap();
    assert_eq!(n, 1);
    eventually("drained", SECS(5), || async {
        (http::get(node.addr, "/health").await.json()["status"] == "drained").then_some(())
    })
    .await;
    let resume = r#"{"v":1,"id":"r-1","target":"node-a","type":"resume"}"#;
    let _: i64 = c.publish(channel, resume).await.unwrap();
    eventually("active again", SECS(5), || async {
        (http::get(node.addr, "/health").await.status == 200).then_some(())
    })
    .await;
}

/// Publishes `payload` on `name`'s command channel; returns how many subscribers heard it.
async fn publish(redis: &Redis, name: &str, payload: &str) -> i64 {
    let channel = Keys::new(CLUSTER)
        .unwrap()
        .commands(&ebb_tests::node_name(name));
    conn(redis).await.publish(channel, payload).await.unwrap()
}

/// The nonce inside a signed command payload.
fn nonce_of(payload: &str) -> String {
    let envelope: ebb_proto::sign::Envelope = serde_json::from_str(payload).unwrap();
    let cmd: ebb_proto::Command = serde_json::from_str(&envelope.signed).unwrap();
    cmd.nonce.expect("a signed command carries a nonce")
}

#[tokio::test]
async fn a_signed_command_is_not_obeyed_again_after_a_restart_nor_in_another_cluster() {
    let redis = Redis::run().await;
    let secret = "a-shared-secret-for-replays";
    let key = ebb_proto::sign::Secret::new(secret).unwrap();
    let args = node_args(
        redis.url(),
        CLUSTER,
        &["--name", "n1", "--secret", secret, "--close-spread", "0s"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = Node::start(&args).await;
    let first_instance = eventually("registered", SECS(5), || async {
        record(&mut conn(&redis).await, "n1")
            .await
            .remove("instance")
    })
    .await;
    let n1 = ebb_tests::node_name("n1");
    let drain = ebb_proto::Command::new(
        CLUSTER,
        n1.clone(),
        ebb_proto::command::Action::Drain(ebb_proto::command::Drain {
            then: ebb_proto::command::Then::Stay,
            deadline_ms: None,
            targets: Vec::new(),
        }),
    )
    .encode(Some(&key), 60_000);
    assert_eq!(publish(&redis, "n1", &drain).await, 1);
    eventually("drained and staying", SECS(5), || async {
        (http::get(first.addr, "/health").await.json()["status"] == "drained").then_some(())
    })
    .await;
    // The nonce is remembered in Redis until the command expires.
    let pttl: i64 = conn(&redis)
        .await
        .pttl(Keys::new(CLUSTER).unwrap().nonce(&nonce_of(&drain)))
        .await
        .unwrap();
    assert!(pttl > 50_000 && pttl <= 66_000, "nonce PTTL {pttl}");
    let resume = ebb_proto::Command::new(
        CLUSTER,
        n1.clone(),
        ebb_proto::command::Action::Resume(Default::default()),
    )
    .encode(Some(&key), 60_000);
    assert_eq!(publish(&redis, "n1", &resume).await, 1);
    eventually("active again", SECS(5), || async {
        (http::get(first.addr, "/health").await.status == 200).then_some(())
    })
    .await;

    // A new process under the same name and secret: its memory is empty, Redis's is not.
    first.signal(Signal::SIGTERM);
    assert_eq!(first.proc.wait(SECS(10)).await.code(), Some(0));
    let second = Node::start(&args).await;
    eventually("the new instance registered", SECS(5), || async {
        let instance = record(&mut conn(&redis).await, "n1")
            .await
            .remove("instance")?;
        (instance != first_instance).then_some(())
    })
    .await;
    assert_eq!(publish(&redis, "n1", &drain).await, 1);
    eventually("the replay refused", SECS(5), || async {
        (second
            .metric(r#"ebb_commands_refused_total{reason="replayed"}"#)
            .await
            == 1.0)
            .then_some(())
    })
    .await;

    // Signed with the same secret, for another cluster: worth nothing here.
    let elsewhere = ebb_proto::Command::new(
        "another-cluster",
        n1,
        ebb_proto::command::Action::Drain(Default::default()),
    )
    .encode(Some(&key), 60_000);
    assert_eq!(publish(&redis, "n1", &elsewhere).await, 1);
    eventually("the foreign command refused", SECS(5), || async {
        (second
            .metric(r#"ebb_commands_refused_total{reason="wrong_cluster"}"#)
            .await
            == 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        second
            .metric(r#"ebb_commands_applied_total{action="drain"}"#)
            .await,
        0.0
    );
    let health = http::get(second.addr, "/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(
        record(&mut conn(&redis).await, "n1").await["state"],
        "active"
    );
}

#[tokio::test]
async fn hostile_values_in_the_nodes_keys_neither_stop_it_registering_nor_cost_it_memory() {
    let redis = Redis::run().await;
    let mut c = conn(&redis).await;
    let keys = Keys::new(CLUSTER).unwrap();
    let n1 = ebb_tests::node_name("n1");
    // Before the node starts: a string where its record and the index go, and 1 MiB of desired
    // state (read bounded: 16 KiB + 1 byte at most).
    let _: () = c.set(keys.node(&n1), "not a record").await.unwrap();
    let _: () = c.set(keys.nodes(), "not an index").await.unwrap();
    let _: () = c.set(keys.desired(&n1), "{".repeat(1 << 20)).await.unwrap();
    let args = node_args(
        redis.url(),
        CLUSTER,
        &["--name", "n1", "--close-spread", "0s"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&args).await;
    let instance = eventually("registered over the garbage", SECS(5), || async {
        let mut r: HashMap<String, String> =
            conn(&redis).await.hgetall(keys.node(&n1)).await.ok()?;
        (r.get("state").map(String::as_str) == Some("active")).then(|| r.remove("instance"))?
    })
    .await;
    let members: Vec<String> = c.zrange(keys.nodes(), 0, -1).await.unwrap();
    assert_eq!(members, ["n1"]);
    eventually("the oversized desired state refused", SECS(5), || async {
        (node
            .metric(r#"ebb_commands_refused_total{reason="too_large"}"#)
            .await
            == 1.0)
            .then_some(())
    })
    .await;

    // A forged owner claiming to have started in the future does not make the node stand down.
    let _: () = c.del(keys.node(&n1)).await.unwrap();
    let future = (ebb_proto::time::now_ms() + 3_600_000).to_string();
    let forged = uuid::Uuid::new_v4().to_string();
    let _: () = c
        .hset_multiple(
            keys.node(&n1),
            &[
                ("instance", forged.as_str()),
                ("started_at_ms", future.as_str()),
            ],
        )
        .await
        .unwrap();
    eventually("the record taken back", SECS(5), || async {
        let r = record(&mut conn(&redis).await, "n1").await;
        (r.get("instance") == Some(&instance) && r.contains_key("state")).then_some(())
    })
    .await;

    // Desired state that is not a string, read on the resubscription that follows Redis
    // dropping the node's subscriber (as `client-output-buffer-limit pubsub` does): refused,
    // while the heartbeats go on and the node does not re-register.
    let _: () = c.del(keys.desired(&n1)).await.unwrap();
    let _: () = c.hset(keys.desired(&n1), "a", "b").await.unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut c)
        .await
        .unwrap();
    eventually(
        "the hash at the desired-state key refused",
        SECS(5),
        || async {
            (node
                .metric(r#"ebb_commands_refused_total{reason="malformed"}"#)
                .await
                == 1.0)
                .then_some(())
        },
    )
    .await;
    let logs = node.proc.logs();
    let count = |needle: &str| logs.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("listening for commands"), 2, "resubscribed once");
    assert_eq!(count("registered in Redis"), 1, "liveness untouched");

    // And it still obeys a genuine drain.
    let _: () = c.del(keys.desired(&n1)).await.unwrap();
    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["drain", "n1", "--then", "stay"],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    eventually("drained", SECS(5), || async {
        (http::get(node.addr, "/health").await.json()["status"] == "drained").then_some(())
    })
    .await;
}
