//! Fleet-scale rollouts against real Redis and node processes, every limit watched from outside
//! (each node's `/health` sampled through the rollout) with live clients losing nothing:
//! `--max-parallel` reached and never passed, a canary pause held until `ebb rollout continue`
//! from a second process, `ebb rollout abort` finishing the node in flight and touching no other,
//! `--min-ready` starting over when a replacement restarts, and a failing `--check` pausing.

use ebb_proto::{EventKind, Keys, NodeState};
use ebb_tests::containers::report_of;
use ebb_tests::fleet::{EventLog, Supervised, ebb, ebb_spawn, node_args, wait_holding};
use ebb_tests::readiness::{self, Readiness};
use ebb_tests::redis::Redis;
use ebb_tests::traffic::Traffic;
use ebb_tests::{eventually, node_name};
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "fleet";

fn keys() -> Keys {
    Keys::new(CLUSTER).unwrap()
}

/// `n` supervised nodes `n1..`, active, and their WebSocket URLs.
async fn fleet(redis: &Redis, n: usize, extra: &[&str]) -> (Vec<Arc<Supervised>>, Vec<String>) {
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for i in 1..=n {
        let node =
            Supervised::start(&format!("n{i}"), node_args(redis.url(), CLUSTER, extra)).await;
        urls.push(node.ws_url().await);
        nodes.push(Arc::new(node));
    }
    active(redis, n).await;
    (nodes, urls)
}

/// Waits until `n` nodes are active; their instances by name.
async fn active(redis: &Redis, n: usize) -> BTreeMap<String, String> {
    eventually(&format!("{n} nodes active"), SECS(30), || async {
        let status = status(redis).await?;
        let active: BTreeMap<String, String> = status["nodes"]
            .as_array()?
            .iter()
            .filter(|node| node["state"] == "active")
            .map(|node| {
                let name = node["name"].as_str().unwrap().to_owned();
                (name, node["instance"].as_str().unwrap().to_owned())
            })
            .collect();
        (active.len() == n).then_some(active)
    })
    .await
}

async fn status(redis: &Redis) -> Option<serde_json::Value> {
    let (code, stdout, _) = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10)).await;
    (code == 0)
        .then(|| serde_json::from_str(&stdout).ok())
        .flatten()
}

/// The rollout as `ebb status` shows it, once `pred` holds.
async fn rollout_when(
    redis: &Redis,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(what, SECS(60), || async {
        let rollout = status(redis).await?["rollout"].clone();
        pred(&rollout).then_some(rollout)
    })
    .await
}

#[tokio::test]
async fn max_parallel_is_reached_and_never_passed() {
    let redis = Redis::run().await;
    let (nodes, urls) = fleet(&redis, 6, &["--close-spread", "1s"]).await;
    let traffic = Traffic::start(&urls, 60);
    for (flag, allowed) in [("2", 2), ("50%", 3)] {
        let before = active(&redis, 6).await;
        let readiness = Readiness::watch(nodes.clone());
        let (code, stdout, logs) = ebb(
            redis.url(),
            CLUSTER,
            &["rolling-restart", "--json", "--max-parallel", flag],
            SECS(120),
        )
        .await;
        let report = report_of(&stdout);
        assert_eq!(code, 0, "{report} {logs:?}");
        let samples = readiness.stop().await;
        assert_eq!(
            readiness::most_out(&samples),
            allowed,
            "--max-parallel {flag}: reached, never passed"
        );
        let after = active(&redis, 6).await;
        for (name, instance) in &before {
            assert_ne!(&after[name], instance, "{name} replaced");
        }
    }
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn a_canary_pause_holds_until_continue_from_another_process() {
    let redis = Redis::run().await;
    let (nodes, urls) = fleet(&redis, 3, &["--close-spread", "1s"]).await;
    let traffic = Traffic::start(&urls, 30);
    let mut coordinator = ebb_spawn(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--json", "--pause-after", "1"],
    );
    let paused = rollout_when(&redis, "the canary paused", |r| {
        r["status"] == "paused"
            && r["done"] == 1
            && r["in_flight"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(
        paused["reason"]
            .as_str()
            .unwrap()
            .contains("--pause-after 1"),
        "{paused}"
    );
    // Held: for two seconds nothing goes out of service.
    let readiness = Readiness::watch(nodes.clone());
    tokio::time::sleep(SECS(2)).await;
    let samples = readiness.stop().await;
    assert_eq!(readiness::most_out(&samples), 0, "a pause drains nothing");
    assert!(samples.len() > 20, "sampled");
    assert_eq!(
        rollout_when(&redis, "still paused", |_| true).await["done"],
        1
    );

    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["rollout", "continue", "--wait"],
        SECS(20),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    let (status, stdout) = coordinator.wait_with_output(SECS(60)).await;
    let report = report_of(&stdout.join("\n"));
    assert_eq!(status.code(), Some(0), "{report}");
    assert_eq!(report["status"], "completed");
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn an_abort_from_another_process_finishes_the_node_in_flight_and_touches_no_other() {
    let redis = Redis::run().await;
    let (nodes, urls) = fleet(&redis, 3, &["--close-spread", "2s"]).await;
    let before = active(&redis, 3).await;
    let traffic = Traffic::start(&urls, 30);
    // n1 holds clients, so its drain lasts the close spread and is seen in flight.
    wait_holding(&nodes, 10).await;
    let mut coordinator = ebb_spawn(redis.url(), CLUSTER, &["rolling-restart", "--json"]);
    rollout_when(&redis, "n1 draining", |r| {
        r["in_flight"][0]["name"] == "n1" && r["in_flight"][0]["phase"] == "draining"
    })
    .await;
    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["rollout", "abort", "--reason", "deploy 42 is bad"],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    let (status, stdout) = coordinator.wait_with_output(SECS(60)).await;
    let report = report_of(&stdout.join("\n"));
    assert_eq!(status.code(), Some(1), "{report}");
    assert_eq!(report["status"], "aborted");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("aborted by") && reason.contains("deploy 42 is bad"),
        "{reason}"
    );
    let phases: Vec<&str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["done", "pending", "pending"], "nothing half-done");
    let after = active(&redis, 3).await;
    assert_ne!(after["n1"], before["n1"], "n1 finished its restart");
    assert_eq!((&after["n2"], &after["n3"]), (&before["n2"], &before["n3"]));
    let desired: Option<String> = redis
        .connection()
        .await
        .get(keys().desired(&node_name("n1")))
        .await
        .unwrap();
    assert_eq!(desired, None);
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn min_ready_starts_over_when_the_replacement_restarts() {
    let redis = Redis::run().await;
    let (nodes, urls) = fleet(&redis, 3, &[]).await;
    let before = active(&redis, 3).await;
    let traffic = Traffic::start(&urls, 10);
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let mut coordinator = ebb_spawn(
        redis.url(),
        CLUSTER,
        &[
            "rolling-restart",
            "--json",
            "--min-ready",
            "3s",
            "--nodes",
            "n1,n2",
        ],
    );
    // n1's first replacement is up and soaking: kill it; its supervisor starts another.
    let first = eventually("n1's first replacement", SECS(20), || async {
        let rollout = status(&redis).await?["rollout"].clone();
        (rollout["in_flight"][0]["phase"] == "soaking").then_some(())?;
        let now = active(&redis, 3).await;
        (now["n1"] != before["n1"]).then(|| now["n1"].clone())
    })
    .await;
    let starts = nodes[0].starts();
    nodes[0].signal(Signal::SIGKILL);
    let second = eventually("n1's second replacement", SECS(20), || async {
        let now = active(&redis, 3).await;
        (nodes[0].starts() > starts && now["n1"] != first).then(|| now["n1"].clone())
    })
    .await;
    let (status, stdout) = coordinator.wait_with_output(SECS(60)).await;
    let report = report_of(&stdout.join("\n"));
    assert_eq!(status.code(), Some(0), "{report}");
    assert_eq!(
        report["nodes"][0]["new_instance"], second,
        "the one that stayed"
    );
    events.stop().await;
    let log = events.events();
    let registered = |instance: &str| {
        log.iter()
            .find(|(_, e)| {
                e.instance.to_string() == instance && matches!(e.kind, EventKind::Registered { .. })
            })
            .map(|(at, _)| *at)
            .expect("registered")
    };
    let n2_drained: Instant = log
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
    let waited = n2_drained.duration_since(registered(&second));
    assert!(
        waited >= SECS(3),
        "n2 drained {waited:?} after n1's second replacement came"
    );
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn a_failing_check_pauses_the_rollout_with_its_output() {
    let redis = Redis::run().await;
    let (_nodes, urls) = fleet(&redis, 3, &[]).await;
    let before = active(&redis, 3).await;
    let traffic = Traffic::start(&urls, 10);
    let dir = std::env::temp_dir().join(format!("ebb-check-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = format!(
        "echo {{url}} >> {d}/urls; test {{name}} != n2 || {{ echo n2 is unhealthy >&2; exit 3; }}",
        d = dir.display()
    );
    let mut coordinator = ebb_spawn(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--json", "--check", &check],
    );
    let paused = rollout_when(&redis, "paused by the check", |r| r["status"] == "paused").await;
    let reason = paused["reason"].as_str().unwrap();
    assert!(
        reason.contains("n2") && reason.contains("n2 is unhealthy"),
        "{reason}"
    );
    assert_eq!(
        active(&redis, 3).await["n3"],
        before["n3"],
        "n3 not touched"
    );
    let (code, _, logs) = ebb(redis.url(), CLUSTER, &["rollout", "continue"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    let (status, stdout) = coordinator.wait_with_output(SECS(60)).await;
    let report = report_of(&stdout.join("\n"));
    assert_eq!(status.code(), Some(0), "{report}");
    assert_eq!(report["nodes"][0]["check"]["ok"], true);
    assert_eq!(report["nodes"][1]["check"]["ok"], false);
    let output = report["nodes"][1]["check"]["output"].as_str().unwrap();
    assert!(output.contains("n2 is unhealthy"), "{output}");
    // {url} is each replacement's advertised URL, one shell word.
    let seen = std::fs::read_to_string(dir.join("urls")).unwrap();
    assert_eq!(seen.lines().collect::<Vec<_>>(), urls);
    let _ = std::fs::remove_dir_all(&dir);

    // With --on-check-fail abort, the same failure stops the rollout.
    let (code, stdout, _) = ebb(
        redis.url(),
        CLUSTER,
        &[
            "rolling-restart",
            "--json",
            "--check",
            &check,
            "--on-check-fail",
            "abort",
        ],
        SECS(60),
    )
    .await;
    let report = report_of(&stdout);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("n2 is unhealthy"),
        "{report}"
    );
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}
