//! Faults during rollouts of a fleet of `ebb-node` containers: a node killed mid-drain, Redis
//! paused and stopped, a node cut off from Redis, two coordinators, a killed coordinator, and
//! garbage on the command channels. Redis and the nodes run in containers on a per-test network
//! (see `ebb_tests::containers`); the coordinator runs on the host.

use ebb_proto::command::{Action, Drain, Then};
use ebb_proto::sign::Secret;
use ebb_proto::{Command, Event, EventKind, NodeState};
use ebb_tests::containers::{Fleet, NodeContainer, join_within, report_of};
use ebb_tests::eventually;
use ebb_tests::ws::{Client, Seen};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinHandle;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A client of `node`, connected through its published port.
async fn connect(node: &NodeContainer) -> Client {
    let url = node.ws_url().await;
    tokio::time::timeout(SECS(10), Client::connect(&url))
        .await
        .unwrap_or_else(|_| panic!("connecting to {url} took longer than 10s"))
}

/// `n` clients of `node`, each read in a task until its Close (or abnormal end), so that close
/// handshakes complete while the test does other things.
async fn watched_clients(node: &NodeContainer, n: usize) -> Vec<JoinHandle<Seen>> {
    let mut watchers = Vec::new();
    for _ in 0..n {
        let mut client = connect(node).await;
        watchers.push(tokio::spawn(
            async move { client.until_close(SECS(60)).await.1 },
        ));
    }
    watchers
}

/// Sends `text` on `client` and expects its echo.
async fn echo_on(client: &mut Client, text: &str) {
    client.send(text).await;
    assert_eq!(
        client.next(SECS(5)).await,
        Seen::Text(format!("Echo: {text}"))
    );
}

/// A new client of `node` gets its message echoed (through the published port).
async fn echo(node: &NodeContainer, text: &str) {
    let mut client = connect(node).await;
    echo_on(&mut client, text).await;
}

/// The report's entries, after checking that n1, n2 and n3 were each replaced by a new instance.
fn every_node_replaced(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    let entries = report["nodes"]
        .as_array()
        .expect("a report lists its nodes");
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2", "n3"], "{report}");
    for entry in entries {
        assert!(entry["new_instance"].is_string(), "{entry}");
        assert_ne!(entry["old_instance"], entry["new_instance"], "{entry}");
    }
    entries
}

fn is_state(event: &Event, node: &str, state: NodeState) -> bool {
    event.node == node && matches!(event.kind, EventKind::State { state: s, .. } if s == state)
}

/// Names of the nodes that began draining, in order, per the event log.
fn draining_order(fleet: &Fleet) -> Vec<String> {
    fleet
        .events()
        .events()
        .iter()
        .filter(|(_, e)| {
            matches!(
                e.kind,
                EventKind::State {
                    state: NodeState::Draining,
                    ..
                }
            )
        })
        .map(|(_, e)| e.node.to_string())
        .collect()
}

/// Waits until `node` is mid-drain: draining, one connection closed, others still open.
async fn mid_drain(fleet: &Fleet, node: &str, clients: u64) {
    fleet
        .events()
        .wait_for(SECS(20), |e| {
            e.node == node
                && matches!(e.kind, EventKind::Connections { connections } if connections > 0 && connections < clients)
        })
        .await;
}

/// Waits until the record of `node` counts `n` connections.
async fn records_connections(fleet: &Fleet, node: &str, n: u64) {
    eventually(
        &format!("{node}'s record to count {n} connections"),
        SECS(5),
        || async {
            let record = fleet.record(node).await;
            (record.get("connections") == Some(&n.to_string())).then_some(())
        },
    )
    .await;
}

// --- 2. kill -9 of a node in the middle of its drain ---------------------------------------

/// The coordinator, default `--on-node-lost wait`: it notices the killed node when its record
/// expires, waits (draining nothing else) while the supervisor holds the node down, and completes
/// once the container is started again.
#[tokio::test]
async fn a_node_killed_mid_drain_is_waited_for_and_the_rollout_completes() {
    let fleet = Fleet::start(&["n1", "n2", "n3"], &["--close-spread", "5s"]).await;
    let n1 = fleet.node("n1");
    let old = fleet.record("n1").await["instance"].clone();
    let watchers = watched_clients(n1, 4).await;
    // The coordinator takes `connections_before` from the record (refreshed by heartbeats) and
    // from the draining event, which it may only see coalesced with the first close.
    records_connections(&fleet, "n1", 4).await;
    n1.set_restart(false);

    let mut coordinator = fleet.ebb_spawn(&["rolling-restart", "--json"]);
    mid_drain(&fleet, "n1", 4).await;
    n1.kill().await;
    assert_eq!(n1.wait_exits(1, SECS(10)).await, [137]);
    eventually("n1's record to expire", SECS(10), || async {
        fleet.record("n1").await.is_empty().then_some(())
    })
    .await;
    coordinator
        .wait_log("n1: waiting for the replacement to be active", SECS(10))
        .await;
    // Held down a little longer: the coordinator keeps waiting and touches nobody else.
    tokio::time::sleep(SECS(1)).await;
    assert_eq!(draining_order(&fleet), ["n1"], "nothing else drained");
    assert_eq!(fleet.node("n2").starts(), 1);
    assert_eq!(fleet.node("n3").starts(), 1);

    n1.set_restart(true);
    let (status, stdout) = coordinator.wait_with_output(SECS(60)).await;
    assert_eq!(status.code(), Some(0), "{:#?}", coordinator.logs());
    let report = report_of(&stdout.join("\n"));
    assert_eq!(report["status"], "completed", "{report}");
    let entries = every_node_replaced(&report);
    assert_eq!(entries[0]["lost"], true, "{report}");
    assert_eq!(entries[1]["lost"], false, "{report}");
    assert_eq!(entries[2]["lost"], false, "{report}");
    assert_eq!(entries[0]["old_instance"], old);
    assert_eq!(entries[0]["connections_before"], 4);

    // One at a time, and n2 only after n1's replacement registered.
    let drained = fleet.events().assert_one_at_a_time();
    let names: Vec<&str> = drained.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["n1", "n2", "n3"]);
    let events = fleet.events().events();
    let replaced = events
        .iter()
        .position(|(_, e)| {
            e.node == "n1"
                && e.instance.to_string() != old
                && matches!(e.kind, EventKind::Registered { .. })
        })
        .expect("n1's replacement registered");
    let n2_draining = events
        .iter()
        .position(|(_, e)| is_state(e, "n2", NodeState::Draining))
        .expect("n2 drained");
    assert!(replaced < n2_draining, "n2 drained before n1 was replaced");
    // The supervisor counts a start once Docker's API returns, which can be after the node
    // inside has already registered (and been counted by the coordinator).
    for node in fleet.nodes() {
        eventually(
            &format!("{} started twice", node.name()),
            SECS(10),
            || async { (node.starts() == 2).then_some(()) },
        )
        .await;
    }
    assert_eq!(fleet.node("n2").exits(), [0]);
    assert_eq!(fleet.node("n3").exits(), [0]);
    let ends = join_within("n1's clients", watchers, SECS(10)).await;
    assert!(
        ends.iter()
            .any(|s| matches!(s, Seen::Close(Some((1001, _))))),
        "one closed cleanly before the kill: {ends:?}"
    );
    assert!(
        ends.iter().any(|s| matches!(s, Seen::Abnormal(_))),
        "the others were cut by the kill: {ends:?}"
    );
    fleet.shutdown().await;
}

/// `--on-node-lost abort`: the coordinator stops with exit 1 and a reason naming the node, and
/// touches no other node.
#[tokio::test]
async fn a_node_killed_mid_drain_aborts_the_rollout_with_on_node_lost_abort() {
    let fleet = Fleet::start(&["n1", "n2", "n3"], &["--close-spread", "5s"]).await;
    let n1 = fleet.node("n1");
    let watchers = watched_clients(n1, 4).await;
    n1.set_restart(false);

    let mut coordinator =
        fleet.ebb_spawn(&["rolling-restart", "--json", "--on-node-lost", "abort"]);
    mid_drain(&fleet, "n1", 4).await;
    n1.kill().await;
    let (status, stdout) = coordinator.wait_with_output(SECS(30)).await;
    assert_eq!(status.code(), Some(1), "{:#?}", coordinator.logs());
    let report = report_of(&stdout.join("\n"));
    assert_eq!(report["status"], "aborted", "{report}");
    assert_eq!(report["failed_node"], "n1");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("n1 vanished mid-drain") && reason.contains("--on-node-lost"),
        "{reason}"
    );
    assert!(
        coordinator
            .logs()
            .iter()
            .any(|l| l.contains("n1 vanished mid-drain")),
        "{:#?}",
        coordinator.logs()
    );
    // It noticed through the record's expiry: the node is still held down.
    assert!(fleet.record("n1").await.is_empty());
    assert_eq!(n1.exits(), [137]);
    assert_eq!(n1.starts(), 1);

    assert_eq!(draining_order(&fleet), ["n1"], "nothing else drained");
    fleet.events().assert_one_at_a_time();
    for name in ["n2", "n3"] {
        let node = fleet.node(name);
        assert_eq!(node.starts(), 1, "{name}");
        assert_eq!(
            node.metric(r#"ebb_commands_applied_total{action="drain"}"#)
                .await,
            0.0,
            "{name}"
        );
        assert_eq!(fleet.record(name).await["state"], "active");
    }

    // The supervisor brings n1 back; the drain meant for the killed instance does not touch it.
    n1.set_restart(true);
    fleet.wait_active(&["n1"], SECS(20)).await;
    echo(n1, "back").await;
    join_within("n1's clients", watchers, SECS(10)).await;
    fleet.shutdown().await;
}

/// An idle node drains and exits within milliseconds of the command (draining, drained,
/// deregistered): the coordinator must take that for a clean exit, not for a node killed
/// mid-drain, so `--on-node-lost abort` does not stop a healthy rollout and nothing is `lost`.
#[tokio::test]
async fn idle_nodes_that_drain_and_exit_at_once_are_not_taken_for_lost_ones() {
    let fleet = Fleet::start(&["n1", "n2", "n3"], &["--close-spread", "0s"]).await;
    let (code, stdout, logs) = fleet
        .ebb(
            &["rolling-restart", "--json", "--on-node-lost", "abort"],
            SECS(60),
        )
        .await;
    let report = report_of(&stdout);
    let shown = format!("{report}\n{logs:#?}");
    fleet.shutdown().await;
    assert_eq!(code, 0, "{shown}");
    for entry in report["nodes"].as_array().unwrap() {
        assert_eq!(entry["lost"], false, "{shown}");
    }
}

// --- 3. Redis paused, then stopped, mid-rollout ---------------------------------------------

#[tokio::test]
async fn redis_paused_then_stopped_mid_rollout_nodes_serve_the_coordinator_aborts_nodes_re_register()
 {
    let mut fleet = Fleet::start(&["n1", "n2", "n3"], &["--close-spread", "2s"]).await;
    let n1_watchers = watched_clients(fleet.node("n1"), 2).await;
    let mut n2_client = connect(fleet.node("n2")).await;
    let mut n3_client = connect(fleet.node("n3")).await;

    let mut coordinator = fleet.ebb_spawn(&["rolling-restart", "--json", "--redis-grace", "3s"]);
    fleet
        .events()
        .wait_for(SECS(20), |e| is_state(e, "n1", NodeState::Draining))
        .await;

    fleet.redis().pause().await;
    echo_on(&mut n2_client, "paused").await;
    echo_on(&mut n3_client, "paused").await;
    echo(fleet.node("n2"), "paused, new").await;
    echo(fleet.node("n3"), "paused, new").await;

    fleet.redis().stop().await;
    echo_on(&mut n2_client, "stopped").await;
    echo_on(&mut n3_client, "stopped").await;
    echo(fleet.node("n2"), "stopped, new").await;

    // Redis lost for longer than the grace: an infrastructure failure (exit 2), and the report
    // still says where it stopped.
    let (status, stdout) = coordinator.wait_with_output(SECS(40)).await;
    assert_eq!(status.code(), Some(2), "{:#?}", coordinator.logs());
    let report = report_of(&stdout.join("\n"));
    assert_eq!(report["status"], "failed", "{report}");
    assert_eq!(report["failed_node"], "n1");
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.contains("Redis"), "{reason}");

    // n1 finished its drain on its own, exited, and its restarted container serves although it
    // cannot register.
    assert_eq!(fleet.node("n1").wait_exits(1, SECS(20)).await, [0]);
    echo(fleet.node("n1"), "restarted during the outage").await;
    // Nothing else was drained: same processes, clients still served.
    for name in ["n2", "n3"] {
        let node = fleet.node(name);
        assert_eq!(node.starts(), 1, "{name}");
        assert_eq!(
            node.metric(r#"ebb_commands_applied_total{action="drain"}"#)
                .await,
            0.0,
            "{name}"
        );
        assert_eq!(node.metric("ebb_redis_connected").await, 0.0, "{name}");
    }
    echo_on(&mut n2_client, "still here").await;

    // Redis comes back empty (no persistence); the nodes register again by themselves.
    fleet.redis_mut().start().await;
    fleet.wait_active(&["n1", "n2", "n3"], SECS(30)).await;
    let status = fleet.status().await;
    let mut listed: Vec<(&str, &str)> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("n1", "active"), ("n2", "active"), ("n3", "active")],
        "{status}"
    );
    echo_on(&mut n3_client, "after").await;
    join_within("n1's clients", n1_watchers, SECS(10)).await;
    fleet.shutdown().await;
}

// --- 4. a node cut off from Redis while a drain is published ---------------------------------

#[tokio::test]
async fn a_node_cut_off_from_redis_keeps_serving_and_obeys_a_drain_published_meanwhile() {
    // A long record TTL keeps n1 listed while it is cut off, so `ebb drain` finds it.
    let fleet = Fleet::start(
        &["n1", "n2"],
        &["--close-spread", "0s", "--record-ttl", "30s"],
    )
    .await;
    let n1 = fleet.node("n1");
    let instance = fleet.record("n1").await["instance"].clone();
    let mut client = connect(n1).await;
    echo_on(&mut client, "before").await;

    n1.disconnect_from_redis().await;
    eventually("n1 to notice it lost Redis", SECS(10), || async {
        (n1.metric("ebb_redis_connected").await == 0.0).then_some(())
    })
    .await;
    let (code, _, logs) = fleet
        .ebb(&["drain", "n1", "--then", "stay"], SECS(20))
        .await;
    assert_eq!(code, 0, "{logs:?}");

    // Cut off: it did not get the command and serves as before, through its published port.
    echo_on(&mut client, "cut off").await;
    echo(n1, "cut off, new").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = n1.health().await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "healthy");
    echo_on(&mut client, "still cut off").await;
    assert_eq!(n1.metric("ebb_redis_connected").await, 0.0);

    // Back on the network: it reconnects, reads the desired state and drains (then stays).
    n1.connect_to_redis().await;
    let seen = client.next(SECS(30)).await;
    assert!(
        matches!(seen, Seen::Text(ref t) if t.contains("server_shutdown")),
        "{seen:?}"
    );
    assert!(
        matches!(client.next(SECS(5)).await, Seen::Close(Some((1001, _)))),
        "a drain close"
    );
    eventually("n1's record to say drained", SECS(10), || async {
        let record = fleet.record("n1").await;
        (record.get("state").map(String::as_str) == Some("drained")).then_some(record)
    })
    .await;
    assert_eq!(
        fleet.record("n1").await["instance"],
        instance,
        "same process"
    );
    assert_eq!(n1.health().await.json()["status"], "drained");
    assert_eq!(n1.starts(), 1);
    assert!(n1.exits().is_empty(), "then stay: it did not exit");
    let logs = n1.logs().await;
    assert!(
        logs.lines()
            .any(|l| l.contains("command accepted") && l.contains("Desired")),
        "obeyed from the desired state:\n{logs}"
    );
    assert_eq!(fleet.record("n2").await["state"], "active");
    echo(fleet.node("n2"), "untouched").await;
    fleet.shutdown().await;
}

// --- 5. two coordinators at once ---------------------------------------------------------------

#[tokio::test]
async fn of_two_coordinators_started_at_once_one_rolls_and_the_other_names_it() {
    let fleet = Fleet::start(&["n1", "n2", "n3"], &["--close-spread", "0s"]).await;
    let mut a = fleet.ebb_spawn(&["rolling-restart", "--json"]);
    let mut b = fleet.ebb_spawn(&["rolling-restart", "--json"]);
    let (status_a, stdout_a) = a.wait_with_output(SECS(60)).await;
    let (status_b, stdout_b) = b.wait_with_output(SECS(60)).await;
    let (winner, loser, report) = match (status_a.code(), status_b.code()) {
        (Some(0), Some(1)) => (&a, &b, stdout_a),
        (Some(1), Some(0)) => (&b, &a, stdout_b),
        other => panic!(
            "expected one 0 and one 1, got {other:?}\nA: {:#?}\nB: {:#?}",
            a.logs(),
            b.logs()
        ),
    };
    assert_eq!(report_of(&report.join("\n"))["status"], "completed");
    let refusal = loser.logs().join("\n");
    assert!(
        refusal.contains("another rollout holds the lock")
            && refusal.contains(&format!("(pid {})", winner.pid())),
        "the refusal names the winner (pid {}): {refusal}",
        winner.pid()
    );

    let drained = fleet.events().assert_one_at_a_time();
    let names: Vec<&str> = drained.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["n1", "n2", "n3"], "each node drained once");
    for node in fleet.nodes() {
        eventually(
            &format!("{} started twice", node.name()),
            SECS(10),
            || async { (node.starts() == 2).then_some(()) },
        )
        .await;
        assert_eq!(node.exits(), [0], "{}", node.name());
    }
    fleet.shutdown().await;
}

// --- 6. a coordinator killed mid-rollout, then resumed ----------------------------------------

#[tokio::test]
async fn a_coordinator_killed_mid_rollout_is_resumed_and_no_node_is_drained_twice() {
    let fleet = Fleet::start(&["n1", "n2", "n3"], &["--close-spread", "1s"]).await;
    let watchers = watched_clients(fleet.node("n2"), 2).await;
    let mut first = fleet.ebb_spawn(&["rolling-restart"]);
    // Killed while n2 drains.
    fleet
        .events()
        .wait_for(SECS(30), |e| is_state(e, "n2", NodeState::Draining))
        .await;
    first.signal(Signal::SIGKILL);
    first.wait(SECS(5)).await;

    let (code, stdout, logs) = fleet
        .ebb(&["rolling-restart", "--resume", "--json"], SECS(90))
        .await;
    assert_eq!(code, 0, "{logs:#?}");
    let report = report_of(&stdout);
    assert_eq!(report["status"], "completed", "{report}");
    let entries = every_node_replaced(&report);
    // The old n2 exited while no coordinator watched: not a loss.
    for entry in entries {
        assert_eq!(entry["lost"], false, "{report}");
    }

    // Each node drained exactly once, one at a time.
    assert_eq!(
        fleet.events().drains_per_node(),
        ["n1", "n2", "n3"].map(|n| (n.to_owned(), 1)).into()
    );
    for node in fleet.nodes() {
        eventually(
            &format!("{} started twice", node.name()),
            SECS(10),
            || async { (node.starts() == 2).then_some(()) },
        )
        .await;
        assert_eq!(node.exits(), [0], "{}", node.name());
    }
    for end in join_within("n2's clients", watchers, SECS(10)).await {
        assert!(matches!(end, Seen::Close(Some((1001, _)))), "{end:?}");
    }
    let (code, _, logs) = fleet.ebb(&["rolling-restart", "--resume"], SECS(30)).await;
    assert_eq!(code, 1, "{logs:?}");
    assert!(
        logs.iter().any(|l| l.contains("no rollout to resume")),
        "{logs:?}"
    );
    fleet.shutdown().await;
}

// --- 7. garbage on the command channels -------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_on_the_command_channels_is_refused_counted_and_every_node_keeps_serving() {
    let secret = "the-fleet's-shared-secret";
    let fleet = Fleet::start(&["n1", "n2", "n3"], &["--secret", secret]).await;
    let right = Secret::new(secret).unwrap();
    let wrong = Secret::new("a-secret-that-is-not-the-fleet's").unwrap();
    let mut clients = Vec::new();
    let mut instances = Vec::new();
    for node in fleet.nodes() {
        clients.push(connect(node).await);
        instances.push(fleet.record(node.name()).await["instance"].clone());
    }

    let drain = || {
        Action::Drain(Drain {
            then: Then::Exit,
            deadline_ms: None,
            targets: Vec::new(),
        })
    };
    for (i, node) in fleet.nodes().iter().enumerate() {
        let name = node.name();
        let other = if name == "n1" { "n2" } else { "n1" };
        let plain = format!(r#"{{"v":1,"id":"g{i}","target":"{name}","type":"drain"}}"#);
        let mut expired = Command::new(fleet.keys().cluster(), ebb_tests::node_name(name), drain());
        expired.expires_at_ms = Some(ebb_proto::time::now_ms() - 60_000);
        let mut wrong_instance =
            Command::new(fleet.keys().cluster(), ebb_tests::node_name(name), drain());
        wrong_instance.instance = Some(uuid::Uuid::new_v4());
        let genuine = Command::new(
            fleet.keys().cluster(),
            ebb_tests::node_name(name),
            Action::Resume(Default::default()),
        )
        .encode(Some(&right), 60_000);
        let tampered = Command::new(fleet.keys().cluster(), ebb_tests::node_name(name), drain())
            .encode(Some(&right), 60_000)
            .replace(r#"\"then\":\"exit\""#, r#"\"then\":\"stay\""#);
        assert!(tampered.contains("stay"), "{tampered}");
        let payloads: Vec<(&str, Vec<u8>)> = vec![
            ("malformed", noise(4096, 0x9e37_79b9_7f4a_7c15 + i as u64)),
            ("malformed", Vec::new()),
            ("malformed", b"\xff\xfe not UTF-8".to_vec()),
            ("malformed", br#"[1, 2, 3]"#.to_vec()),
            ("malformed", br#"{"v":1,"id":"#.to_vec()),
            ("too_large", vec![b'{'; 1 << 20]),
            ("too_large", format!("{plain:<20000}").into_bytes()),
            (
                "unknown_version",
                plain.replace(r#""v":1"#, r#""v":2"#).into_bytes(),
            ),
            (
                "unknown_version",
                plain.replace(r#""v":1"#, r#""v":4294967296"#).into_bytes(),
            ),
            ("unsigned", plain.clone().into_bytes()),
            (
                "bad_signature",
                Command::new(fleet.keys().cluster(), ebb_tests::node_name(name), drain())
                    .encode(Some(&wrong), 60_000)
                    .into_bytes(),
            ),
            ("bad_signature", tampered.into_bytes()),
            ("expired", expired.encode(Some(&right), 60_000).into_bytes()),
            (
                "wrong_target",
                Command::new(fleet.keys().cluster(), ebb_tests::node_name(other), drain())
                    .encode(Some(&right), 60_000)
                    .into_bytes(),
            ),
            (
                "wrong_instance",
                wrong_instance.encode(Some(&right), 60_000).into_bytes(),
            ),
            // A genuine command is obeyed once; the same bytes again are a replay.
            ("", genuine.clone().into_bytes()),
            ("replayed", genuine.into_bytes()),
        ];
        let mut expected: HashMap<&str, f64> = HashMap::new();
        for (reason, payload) in payloads {
            assert_eq!(
                fleet.publish_command(name, payload).await,
                1,
                "{name} listens"
            );
            if !reason.is_empty() {
                *expected.entry(reason).or_default() += 1.0;
            }
        }
        let total: f64 = expected.values().sum();
        eventually(
            &format!("{name} to count every refusal"),
            SECS(15),
            || async {
                let text = node.metrics().await;
                expected
                    .iter()
                    .all(|(reason, n)| {
                        ebb_tests::http::metric(
                            &text,
                            &format!(r#"ebb_commands_refused_total{{reason="{reason}"}}"#),
                        ) == Some(*n)
                    })
                    .then_some(())
            },
        )
        .await;
        // The node counts each refusal at once and reports them in aggregate: the events'
        // counts add up to every refusal, in fewer events than refusals.
        let events = eventually(
            &format!("{name}: every refusal reported"),
            SECS(5),
            || async {
                let (events, reported) = fleet
                    .events()
                    .events()
                    .iter()
                    .filter(|(_, e)| e.node == name)
                    .filter_map(|(_, e)| match &e.kind {
                        EventKind::CommandRefused { count, .. } => Some(count.unwrap_or(1)),
                        _ => None,
                    })
                    .fold((0u64, 0u64), |(events, sum), n| (events + 1, sum + n));
                (reported as f64 == total).then_some(events)
            },
        )
        .await;
        assert!(
            (events as f64) < total,
            "{events} refusal events for {total} refusals"
        );
        assert_eq!(
            node.metric(r#"ebb_commands_applied_total{action="resume"}"#)
                .await,
            1.0
        );
        assert_eq!(
            node.metric(r#"ebb_commands_applied_total{action="drain"}"#)
                .await,
            0.0
        );
    }

    // Every node still serving, still active, still the same process, still connected to Redis.
    for ((node, client), instance) in fleet.nodes().iter().zip(&mut clients).zip(&instances) {
        let name = node.name();
        echo_on(client, "still here").await;
        echo(node, "new client").await;
        assert_eq!(node.health().await.status, 200, "{name}");
        assert_eq!(node.metric("ebb_redis_connected").await, 1.0, "{name}");
        let record = fleet.record(name).await;
        assert_eq!(record["state"], "active", "{name}");
        assert_eq!(&record["instance"], instance, "{name}");
        assert_eq!(node.starts(), 1, "{name}");
    }
    assert!(draining_order(&fleet).is_empty());
    fleet.shutdown().await;
}

// --- 1. A rolling restart under steady traffic --------------------------------------------

/// Three node containers, clients of ebb-client (each knowing every node's URL) sending steadily
/// throughout a rolling restart: the rollout completes, every message is answered exactly once
/// at the application, no connection ends abnormally (1006), and every client reconnected.
#[tokio::test]
async fn a_rolling_restart_under_steady_traffic_answers_every_message_exactly_once() {
    use ebb_client::{Client, ClientConfig, Echo, Event};
    use ebb_tests::containers::Options;

    let fleet = Fleet::start_with(Options {
        cluster: "test".to_owned(),
        names: vec!["n1".into(), "n2".into(), "n3".into()],
        node_args: vec![
            "--close-spread".into(),
            "1s".into(),
            "--echo-delay".into(),
            "20ms".into(),
        ],
        stable_ports: true,
    })
    .await;
    let mut urls = Vec::new();
    for node in fleet.nodes() {
        urls.push(node.ws_url().await);
    }
    const CLIENTS: usize = 30;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut config = ClientConfig::new(urls.clone());
        config.first_url = i % urls.len();
        clients.push(Client::start(config, Echo));
    }
    eventually("every client connected", SECS(20), || async {
        clients.iter().all(|(c, _)| c.is_connected()).then_some(())
    })
    .await;

    // Each client sends every 50 ms until the rollout is over.
    let sending = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = clients
        .into_iter()
        .map(|(c, e)| (std::sync::Arc::new(c), e))
        .collect();
    let senders: Vec<JoinHandle<Vec<u64>>> = clients
        .iter()
        .map(|(client, _)| {
            let (client, sending) = (client.clone(), sending.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while !sending.is_cancelled() {
                    ids.push(
                        client
                            .send(format!("msg {}", ids.len()))
                            .expect("a small message"),
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ids
            })
        })
        .collect();

    let (code, stdout, logs) = fleet.ebb(&["rolling-restart", "--json"], SECS(120)).await;
    sending.cancel();
    let sent = join_within("senders", senders, SECS(10)).await;
    assert_eq!(code, 0, "{logs:#?}");
    let report = report_of(&stdout);
    assert_eq!(report["status"], "completed", "{report}");
    for entry in report["nodes"].as_array().unwrap() {
        assert_ne!(entry["old_instance"], entry["new_instance"], "{entry}");
        assert_eq!(entry["forced_closes"], 0, "{entry}");
    }
    eventually("every message answered", SECS(30), || async {
        clients.iter().all(|(c, _)| c.pending() == 0).then_some(())
    })
    .await;

    let mut total_sent = 0;
    for ((client, mut events), ids) in clients.into_iter().zip(sent) {
        let mut replies = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let Event::Reply { id, .. } = event {
                replies.push(id);
            }
        }
        replies.sort_unstable();
        assert_eq!(
            replies, ids,
            "each message answered exactly once at the application"
        );
        total_sent += ids.len();
        let client = std::sync::Arc::try_unwrap(client).expect("senders are done");
        let stats = client.close().await;
        assert_eq!(stats.abnormal, 0, "no 1006: {stats:?}");
        assert!(stats.reconnects >= 1, "every client reconnected: {stats:?}");
        assert!(
            stats.close_codes.keys().all(|code| *code == 1001),
            "{stats:?}"
        );
    }
    assert!(
        total_sent > CLIENTS * 20,
        "steady traffic: {total_sent} messages"
    );
    fleet.shutdown().await;
}
