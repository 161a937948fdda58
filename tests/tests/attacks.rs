//! The attacks of the safety issue, each against a real Redis and real node processes, with
//! readiness watched from outside: none of them takes a second node out or runs anything.
//!
//! 1. forged events for a draining node (its end, its replacement) from someone who can only
//!    PUBLISH;
//! 2. a record and index entries whose names carry shell, with `--exec` in use;
//! 3. (the flood is `tests/flood.rs`);
//! 4. the coordinator killed while `--exec` runs is `tests/crash.rs`, with every other phase.

use ebb_proto::command::Then;
use ebb_proto::{Event, EventKind, Keys, NodeState};
use ebb_tests::fleet::{Supervised, ebb, ebb_spawn, node_args, wait_holding};
use ebb_tests::readiness::{self, Readiness};
use ebb_tests::redis::Redis;
use ebb_tests::traffic::Traffic;
use ebb_tests::{eventually, node_name};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "attack";
const SECRET: &str = "attack-test-secret-0123456789";

async fn conn(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis.connection().await
}

fn keys() -> Keys {
    Keys::new(CLUSTER).unwrap()
}

async fn record(redis: &Redis, name: &str) -> HashMap<String, String> {
    conn(redis)
        .await
        .hgetall(keys().node(&node_name(name)))
        .await
        .unwrap()
}

/// `n1`..`nN` under supervision, registered and active.
async fn fleet(redis: &Redis, n: usize, extra: &[&str]) -> Vec<Arc<Supervised>> {
    let mut nodes = Vec::new();
    for i in 1..=n {
        let name = format!("n{i}");
        let args = node_args(redis.url(), CLUSTER, extra);
        nodes.push(Arc::new(Supervised::start(&name, args).await));
    }
    for node in &nodes {
        eventually(&format!("{} active", node.name), SECS(10), || async {
            (record(redis, &node.name)
                .await
                .get("state")
                .map(String::as_str)
                == Some("active"))
            .then_some(())
        })
        .await;
    }
    nodes
}

async fn urls(nodes: &[Arc<Supervised>]) -> Vec<String> {
    let mut urls = Vec::new();
    for node in nodes {
        urls.push(node.ws_url().await);
    }
    urls
}

/// Publishes, for `duration`, every lie about `name`'s drain an attacker could tell: its count
/// at zero, its drain finished, its goodbye, and a new instance of it active. Returns how many.
async fn forge(redis: &Redis, name: &str, old: Uuid, duration: Duration) -> u64 {
    let mut conn = conn(redis).await;
    let node = node_name(name);
    let fresh = Uuid::new_v4();
    let lies = [
        (old, EventKind::Connections { connections: 0 }),
        (
            old,
            EventKind::State {
                state: NodeState::Drained,
                connections: 0,
            },
        ),
        (
            old,
            EventKind::Drained {
                clean: 10,
                forced: 0,
                duration_ms: 1,
                then: Then::Exit,
            },
        ),
        (old, EventKind::Deregistered {}),
        (
            fresh,
            EventKind::Registered {
                url: "ws://evil:1/ws".into(),
                state: NodeState::Active,
                connections: 0,
            },
        ),
        (
            fresh,
            EventKind::State {
                state: NodeState::Active,
                connections: 0,
            },
        ),
    ];
    let until = tokio::time::Instant::now() + duration;
    let mut published = 0;
    while tokio::time::Instant::now() < until {
        for (instance, kind) in &lies {
            let event = Event::now(CLUSTER, node.clone(), *instance, kind.clone());
            let _: i64 = conn
                .publish(keys().events(), event.encode(None))
                .await
                .unwrap();
            published += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    published
}

async fn forged_events_while_a_node_drains(secret: Option<&str>) {
    let redis = Redis::run().await;
    let mut extra = vec!["--close-spread", "3s"];
    if let Some(secret) = secret {
        extra.extend(["--secret", secret]);
    }
    let nodes = fleet(&redis, 3, &extra).await;
    let traffic = Traffic::start(&urls(&nodes).await, 30);
    wait_holding(&nodes, 10).await;
    let readiness = Readiness::watch(nodes.clone());
    let mut args = vec!["rolling-restart", "--json"];
    if let Some(secret) = secret {
        args.extend(["--secret", secret]);
    }
    let mut coordinator = ebb_spawn(redis.url(), CLUSTER, &args);

    let old = eventually("n1 draining", SECS(20), || async {
        let r = record(&redis, "n1").await;
        (r.get("state").map(String::as_str) == Some("draining"))
            .then(|| r["instance"].parse::<Uuid>().unwrap())
    })
    .await;
    let forged = forge(&redis, "n1", old, SECS(3)).await;

    let (status, stdout) = coordinator.wait_with_output(SECS(90)).await;
    let report = ebb_tests::containers::report_of(&stdout.join("\n"));
    assert_eq!(status.code(), Some(0), "{report}");
    assert_eq!(report["status"], "completed", "{report}");
    let samples = readiness.stop().await;
    assert_eq!(
        readiness::most_out(&samples),
        1,
        "never two nodes out at once, and the sampler did see the one"
    );
    assert!(forged > 500, "{forged}");
    match secret {
        // Unsigned: refused at the door and counted.
        Some(_) => {
            let unsigned = report["events"]["unsigned"].as_u64().unwrap_or(0);
            assert!(unsigned >= forged, "{unsigned} of {forged}: {report}");
        }
        // Without a secret the lies get in, and only wake the coordinator.
        None => assert!(report["events"]["accepted"].as_u64().unwrap() >= forged),
    }
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn forged_events_while_a_node_drains_never_take_a_second_node_out() {
    forged_events_while_a_node_drains(None).await;
}

#[tokio::test]
async fn with_a_secret_forged_events_are_refused_counted_and_change_nothing() {
    forged_events_while_a_node_drains(Some(SECRET)).await;
}

#[tokio::test]
async fn names_with_shell_in_them_are_never_listed_nor_executed() {
    let redis = Redis::run().await;
    let dir = std::env::temp_dir().join(format!("ebb-attack-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let nodes = fleet(&redis, 2, &[]).await;
    for node in &nodes {
        std::fs::write(
            dir.join(format!("{}.pid", node.name)),
            node.pid().to_string(),
        )
        .unwrap();
    }

    // A record listed under a valid name that claims a hostile one, index entries that are
    // not names at all, and a record whose numbers would overflow a sum.
    let mut c = conn(&redis).await;
    let now = ebb_proto::time::now_ms();
    let evil = keys().node(&node_name("evil"));
    let fields: Vec<(String, String)> = vec![
        ("name".into(), format!("evil;touch {d}/pwned-name")),
        ("instance".into(), Uuid::new_v4().to_string()),
        ("url".into(), "ws://x/ws".into()),
        ("version".into(), "1".into()),
        ("state".into(), "active".into()),
        ("connections".into(), "18446744073709551615".into()),
        ("capacity".into(), "18446744073709551615".into()),
        ("started_at_ms".into(), now.to_string()),
        ("updated_at_ms".into(), now.to_string()),
    ];
    let _: () = c.hset_multiple(&evil, &fields).await.unwrap();
    for member in [
        "evil".to_owned(),
        format!("x;touch {d}/pwned-index"),
        format!("$(touch {d}/pwned-subst)"),
    ] {
        let _: i64 = c.zadd(keys().nodes(), member, now as f64).await.unwrap();
    }

    let (code, stdout, logs) = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let listed: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["n1", "n2"]);
    assert!(logs.iter().any(|l| l.contains("skipping")), "{logs:?}");

    let (code, stdout, _) = ebb(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--dry-run"],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        !stdout.contains("evil") && !stdout.contains("touch"),
        "{stdout}"
    );

    let exec = format!("kill -TERM $(cat {d}/{{name}}.pid) && touch {d}/ran-{{name}}");
    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--json", "--exec", &exec],
        SECS(60),
    )
    .await;
    let report = ebb_tests::containers::report_of(&stdout);
    assert_eq!(code, 0, "{report} {logs:?}");
    let rolled: Vec<&str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(rolled, ["n1", "n2"]);
    for name in ["n1", "n2"] {
        assert!(
            dir.join(format!("ran-{name}")).exists(),
            "--exec ran for {name}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.starts_with("pwned"))
        .collect();
    assert!(left.is_empty(), "shell from Redis ran: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_replacement_that_registers_before_the_old_instance_exits_is_waited_for() {
    let redis = Redis::run().await;
    let nodes = fleet(&redis, 3, &["--close-spread", "3s"]).await;
    // n1's next process is started by hand, early; its supervisor does not start another.
    nodes[0].set_restart(false);
    let traffic = Traffic::start(&urls(&nodes).await, 30);
    wait_holding(&nodes, 10).await;
    let events = ebb_tests::fleet::EventLog::start(redis.url(), CLUSTER).await;
    let mut coordinator = ebb_spawn(redis.url(), CLUSTER, &["rolling-restart", "--json"]);

    let old = eventually("n1 draining", SECS(20), || async {
        let r = record(&redis, "n1").await;
        (r.get("state").map(String::as_str) == Some("draining"))
            .then(|| r["instance"].parse::<Uuid>().unwrap())
    })
    .await;
    let args = node_args(redis.url(), CLUSTER, &["--name", "n1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let early = ebb_tests::process::Node::start(&args).await;
    let new = eventually("the early instance owns n1's record", SECS(10), || async {
        let r = record(&redis, "n1").await;
        let instance = r.get("instance")?.parse::<Uuid>().ok()?;
        (instance != old && r.get("state").map(String::as_str) == Some("active"))
            .then_some(instance)
    })
    .await;

    let (status, stdout) = coordinator.wait_with_output(SECS(90)).await;
    let report = ebb_tests::containers::report_of(&stdout.join("\n"));
    assert_eq!(status.code(), Some(0), "{report}");
    assert_eq!(report["nodes"][0]["new_instance"], new.to_string());
    // n2 was not touched while the old n1 still held clients.
    events.stop().await;
    let log = events.events();
    let old_gone = log
        .iter()
        .find(|(_, e)| e.instance == old && matches!(e.kind, EventKind::Deregistered {}))
        .map(|(at, _)| *at)
        .expect("the old n1 exited cleanly");
    let n2_drains = log
        .iter()
        .find(|(_, e)| {
            e.node == "n2"
                && matches!(
                    e.kind,
                    EventKind::State {
                        state: NodeState::Draining,
                        ..
                    }
                )
        })
        .map(|(at, _)| *at)
        .expect("n2 drained");
    assert!(
        n2_drains > old_gone,
        "n2 drained while the old n1 was still up"
    );
    traffic.finish(SECS(20)).await.assert_nothing_lost();
    drop(early);
}
