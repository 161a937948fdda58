//! `kill -9` the coordinator in every phase of a node's restart, then `ebb rolling-restart
//! --resume`: it finishes under the rules it was started with, drains no node twice, and never
//! has two nodes out (readiness watched from outside). Also: an interrupt takes back the drain it
//! left in the desired state, and a corrupted saved state is refused, not panicked on.

use ebb_tests::containers::report_of;
use ebb_tests::fleet::{EventLog, Supervised, ebb, ebb_spawn, node_args, wait_holding};
use ebb_tests::readiness::{self, Readiness};
use ebb_tests::redis::Redis;
use ebb_tests::traffic::Traffic;
use ebb_tests::{eventually, node_name};
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "crash";
/// Short, so `--resume` does not wait long for the dead coordinator's lock.
const LOCK_TTL: &str = "3s";

fn keys() -> ebb_proto::Keys {
    ebb_proto::Keys::new(CLUSTER).unwrap()
}

/// A test's own directory (pid files for `--exec`).
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ebb-crash-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What one crash scenario changes from a plain rollout of three nodes.
#[derive(Default)]
struct Setup {
    node_args: Vec<String>,
    /// Extra `rolling-restart` flags (`{dir}` is the scratch directory).
    ebb_args: Vec<String>,
    restart_delay: Option<Duration>,
    /// Log the nodes in as their own Redis users, and cut `n1` off its command channel until
    /// the coordinator is dead (the drain waits for an acknowledgement meanwhile).
    deaf_n1: bool,
    /// Live clients over the nodes (so drains take their close spread).
    clients: usize,
}

async fn users(redis: &Redis) -> String {
    let mut c = redis.connection().await;
    for user in ["n1", "n2", "n3"] {
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", user, "on", ">pw", "~*", "&*", "+@all"])
            .query_async(&mut c)
            .await
            .unwrap();
    }
    redis.url().replace("redis://", "redis://{user}:pw@")
}

async fn set_channels(redis: &Redis, user: &str, open: bool) {
    let events = format!("&{}", keys().events());
    let rule: Vec<&str> = if open {
        vec!["SETUSER", user, "allchannels"]
    } else {
        vec!["SETUSER", user, "resetchannels", &events]
    };
    let _: () = redis::cmd("ACL")
        .arg(&rule)
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
}

/// The in-flight phases of the saved rollout state.
async fn saved_phases(redis: &Redis) -> Vec<String> {
    let json: Option<String> = redis
        .connection()
        .await
        .get(keys().rollout_state())
        .await
        .unwrap();
    let Some(json) = json else { return Vec::new() };
    let saved: serde_json::Value = serde_json::from_str(&json).unwrap();
    saved["rollout"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["phase"]["phase"].as_str().unwrap().to_owned())
        .collect()
}

/// Three nodes; a rollout killed with SIGKILL once a node is in `phase`; `--resume`.
async fn kill_9_while(phase: &str, setup: Setup) {
    let redis = Redis::run().await;
    let dir = scratch();
    let url = if setup.deaf_n1 {
        users(&redis).await
    } else {
        redis.url().to_owned()
    };
    let extra: Vec<&str> = setup.node_args.iter().map(String::as_str).collect();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let args = node_args(&url.replace("{user}", name), CLUSTER, &extra);
        let node = Supervised::start(name, args).await;
        if let Some(delay) = setup.restart_delay {
            node.set_restart_delay(delay);
        }
        std::fs::write(dir.join(format!("{name}.pid")), node.pid().to_string()).unwrap();
        nodes.push(Arc::new(node));
    }
    let before = wait_active(&redis, 3).await;
    let mut urls = Vec::new();
    for node in &nodes {
        urls.push(node.ws_url().await);
    }
    let traffic = (setup.clients > 0).then(|| Traffic::start(&urls, setup.clients));
    if setup.deaf_n1 {
        set_channels(&redis, "n1", false).await;
    }
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let readiness = Readiness::watch(nodes.clone());
    let d = dir.display().to_string();
    let mut args = vec![
        "rolling-restart".to_owned(),
        "--lock-ttl".into(),
        LOCK_TTL.into(),
    ];
    args.extend(setup.ebb_args.iter().map(|a| a.replace("{dir}", &d)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = ebb_spawn(redis.url(), CLUSTER, &args);

    eventually(&format!("a node {phase}"), SECS(60), || async {
        saved_phases(&redis)
            .await
            .iter()
            .any(|p| p == phase)
            .then_some(())
    })
    .await;
    first.signal(Signal::SIGKILL);
    first.wait(SECS(5)).await;
    if setup.deaf_n1 {
        set_channels(&redis, "n1", true).await;
    }

    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &[
            "rolling-restart",
            "--resume",
            "--json",
            "--lock-ttl",
            LOCK_TTL,
        ],
        SECS(120),
    )
    .await;
    let report = report_of(&stdout);
    assert_eq!(code, 0, "{report} {logs:?}");
    assert_eq!(report["status"], "completed", "{report}");
    let after = wait_active(&redis, 3).await;
    for (name, instance) in &before {
        assert_ne!(after[name], *instance, "{name} was replaced");
    }
    let samples = readiness.stop().await;
    assert!(
        readiness::most_out(&samples) <= 1,
        "two nodes out at once: {:?}",
        samples.iter().map(readiness::out).collect::<Vec<_>>()
    );
    events.stop().await;
    let drains = events.drains_per_node();
    assert_eq!(
        drains,
        [("n1", 1), ("n2", 1), ("n3", 1)]
            .into_iter()
            .map(|(n, c)| (n.to_owned(), c))
            .collect::<BTreeMap<_, _>>(),
        "every node drained exactly once"
    );
    if let Some(traffic) = traffic {
        traffic.finish(SECS(20)).await.assert_nothing_lost();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `n` nodes are active; their instances by name.
async fn wait_active(redis: &Redis, n: usize) -> BTreeMap<String, String> {
    eventually(&format!("{n} nodes active"), SECS(30), || async {
        let (code, stdout, _) = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10)).await;
        let status: serde_json::Value = serde_json::from_str(&stdout).ok()?;
        let active: BTreeMap<String, String> = status["nodes"]
            .as_array()?
            .iter()
            .filter(|node| node["state"] == "active")
            .map(|node| {
                let name = node["name"].as_str().unwrap().to_owned();
                (name, node["instance"].as_str().unwrap().to_owned())
            })
            .collect();
        (code == 0 && active.len() == n).then_some(active)
    })
    .await
}

#[tokio::test]
async fn killed_while_waiting_for_an_acknowledgement() {
    let setup = Setup {
        ebb_args: vec!["--ack-timeout".into(), "30s".into()],
        deaf_n1: true,
        ..Setup::default()
    };
    kill_9_while("acking", setup).await;
}

#[tokio::test]
async fn killed_while_a_node_drains_its_clients() {
    let setup = Setup {
        node_args: vec!["--close-spread".into(), "3s".into()],
        clients: 30,
        ..Setup::default()
    };
    kill_9_while("draining", setup).await;
}

#[tokio::test]
async fn killed_while_its_exec_command_runs() {
    let setup = Setup {
        ebb_args: vec![
            "--exec".into(),
            "sleep 2; kill -TERM $(cat {dir}/{name}.pid) 2>/dev/null || true".into(),
        ],
        ..Setup::default()
    };
    kill_9_while("executing", setup).await;
}

#[tokio::test]
async fn killed_while_the_old_instance_exits() {
    // The command returns at once; the node exits two seconds later.
    let setup = Setup {
        ebb_args: vec![
            "--exec".into(),
            "(sleep 2; kill -TERM $(cat {dir}/{name}.pid)) >/dev/null 2>&1 </dev/null &".into(),
        ],
        ..Setup::default()
    };
    kill_9_while("exiting", setup).await;
}

#[tokio::test]
async fn killed_while_waiting_for_the_replacement() {
    let setup = Setup {
        restart_delay: Some(SECS(3)),
        ..Setup::default()
    };
    kill_9_while("replacing", setup).await;
}

#[tokio::test]
async fn killed_while_settling() {
    let setup = Setup {
        ebb_args: vec!["--settle".into(), "3s".into()],
        ..Setup::default()
    };
    kill_9_while("settling", setup).await;
}

#[tokio::test]
async fn an_interrupt_takes_back_its_drain_and_a_resume_finishes() {
    let redis = Redis::run().await;
    let args = node_args(redis.url(), CLUSTER, &["--close-spread", "2s"]);
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for name in ["n1", "n2"] {
        let node = Supervised::start(name, args.clone()).await;
        urls.push(node.ws_url().await);
        nodes.push(node);
    }
    wait_active(&redis, 2).await;
    let traffic = Traffic::start(&urls, 20);
    wait_holding(&nodes, 10).await;
    let mut first = ebb_spawn(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--lock-ttl", LOCK_TTL],
    );
    eventually("draining", SECS(30), || async {
        saved_phases(&redis)
            .await
            .iter()
            .any(|p| p == "draining")
            .then_some(())
    })
    .await;
    let desired = |name: &str| keys().desired(&node_name(name));
    let held: Option<String> = redis.connection().await.get(desired("n1")).await.unwrap();
    assert!(held.is_some(), "the drain is in n1's desired state");
    first.signal(Signal::SIGINT);
    assert_eq!(first.wait(SECS(10)).await.code(), Some(1));
    let left: Option<String> = redis.connection().await.get(desired("n1")).await.unwrap();
    assert_eq!(left, None, "an interrupt takes its drain back");
    // A command someone else wrote since is not the rollout's to take back when n1 is done.
    let theirs = r#"{"v":1,"id":"ops-1","target":"n1","type":"drain","then":"stay"}"#;
    let _: () = redis
        .connection()
        .await
        .set(desired("n1"), theirs)
        .await
        .unwrap();
    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &[
            "rolling-restart",
            "--resume",
            "--json",
            "--lock-ttl",
            LOCK_TTL,
            "--nodes",
            "n1",
        ],
        SECS(60),
    )
    .await;
    assert_eq!(
        code, 2,
        "--nodes with --resume is refused? {stdout} {logs:?}"
    );
    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &[
            "rolling-restart",
            "--resume",
            "--json",
            "--lock-ttl",
            LOCK_TTL,
        ],
        SECS(60),
    )
    .await;
    assert_eq!(code, 0, "{stdout} {logs:?}");
    let still: Option<String> = redis.connection().await.get(desired("n1")).await.unwrap();
    assert_eq!(still.as_deref(), Some(theirs));
    let ours: Option<String> = redis.connection().await.get(desired("n2")).await.unwrap();
    assert_eq!(
        ours, None,
        "the rollout's own drain of n2 is taken back once n2 is done"
    );
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn a_corrupted_saved_state_is_refused_with_a_way_out() {
    let redis = Redis::run().await;
    let args = node_args(redis.url(), CLUSTER, &[]);
    let _nodes = [
        Supervised::start("n1", args.clone()).await,
        Supervised::start("n2", args).await,
    ];
    wait_active(&redis, 2).await;
    let mut c = redis.connection().await;
    for garbage in [
        "not json",
        r#"{"status":"running","rollout":{"id":"ab","nodes":[]},"policy":{}}"#,
        r#"{"status":"running","rollout":{"id":"zz;rm -rf /","nodes":[{"phase":{"phase":"pending"},"result":{"name":"n1"}}]}}"#,
    ] {
        let _: () = c.set(keys().rollout_state(), garbage).await.unwrap();
        let (code, stdout, logs) = ebb(
            redis.url(),
            CLUSTER,
            &[
                "rolling-restart",
                "--resume",
                "--json",
                "--lock-ttl",
                LOCK_TTL,
            ],
            SECS(30),
        )
        .await;
        let report = report_of(&stdout);
        assert_eq!(code, 1, "{report} {logs:?}");
        let reason = report["reason"].as_str().unwrap();
        assert!(
            reason.contains("unreadable") && reason.contains("--fresh"),
            "{reason}"
        );
        assert!(!logs.iter().any(|l| l.contains("panicked")), "{logs:?}");
    }
    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &[
            "rolling-restart",
            "--fresh",
            "--json",
            "--lock-ttl",
            LOCK_TTL,
        ],
        SECS(60),
    )
    .await;
    assert_eq!(code, 0, "{stdout} {logs:?}");
}

#[tokio::test]
async fn a_coordinator_that_lost_its_lock_writes_nothing_more() {
    let redis = Redis::run().await;
    let args = node_args(redis.url(), CLUSTER, &["--close-spread", "2s"]);
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let node = Supervised::start(name, args.clone()).await;
        urls.push(node.ws_url().await);
        nodes.push(node);
    }
    wait_active(&redis, 3).await;
    let traffic = Traffic::start(&urls, 20);
    wait_holding(&nodes, 6).await;
    let mut first = ebb_spawn(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--json", "--lock-ttl", LOCK_TTL],
    );
    eventually("draining", SECS(30), || async {
        saved_phases(&redis)
            .await
            .iter()
            .any(|p| p == "draining")
            .then_some(())
    })
    .await;
    // As if this coordinator stalled past its lock's expiry and another took over and saved.
    let mut c = redis.connection().await;
    let _: () = c.set(keys().rollout_lock(), "someone-else").await.unwrap();
    let theirs = r#"{"successor":"state"}"#;
    let _: () = c.set(keys().rollout_state(), theirs).await.unwrap();
    let (status, stdout) = first.wait_with_output(SECS(30)).await;
    let report = report_of(&stdout.join("\n"));
    assert_eq!(status.code(), Some(1), "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("lock was lost"),
        "{report}"
    );
    let state: Option<String> = c.get(keys().rollout_state()).await.unwrap();
    assert_eq!(
        state.as_deref(),
        Some(theirs),
        "the successor's state is not overwritten"
    );
    let lock: Option<String> = c.get(keys().rollout_lock()).await.unwrap();
    assert_eq!(
        lock.as_deref(),
        Some("someone-else"),
        "nor its lock released"
    );
    // It sent no drain after: n2 and n3 were never touched.
    for name in ["n2", "n3"] {
        let r: std::collections::HashMap<String, String> =
            c.hgetall(keys().node(&node_name(name))).await.unwrap();
        assert_eq!(r["state"], "active", "{name}");
    }
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn a_resume_under_other_rules_is_refused_naming_them() {
    let redis = Redis::run().await;
    let args = node_args(redis.url(), CLUSTER, &["--close-spread", "2s"]);
    let mut urls = Vec::new();
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let node = Supervised::start(name, args.clone()).await;
        urls.push(node.ws_url().await);
        nodes.push(node);
    }
    wait_active(&redis, 2).await;
    let traffic = Traffic::start(&urls, 10);
    wait_holding(&nodes, 5).await;
    let mut first = ebb_spawn(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--lock-ttl", LOCK_TTL, "--settle", "1s"],
    );
    eventually("draining", SECS(30), || async {
        saved_phases(&redis)
            .await
            .iter()
            .any(|p| p == "draining")
            .then_some(())
    })
    .await;
    first.signal(Signal::SIGKILL);
    first.wait(SECS(5)).await;
    let resume = [
        "rolling-restart",
        "--resume",
        "--json",
        "--lock-ttl",
        LOCK_TTL,
    ];
    for other in [
        ["--settle", "5s"],
        ["--max-parallel", "2"],
        ["--exec", "true"],
    ] {
        let args: Vec<&str> = resume.iter().chain(other.iter()).copied().collect();
        let (code, stdout, _) = ebb(redis.url(), CLUSTER, &args, SECS(30)).await;
        let report = report_of(&stdout);
        assert_eq!(code, 1, "{report}");
        let reason = report["reason"].as_str().unwrap();
        assert!(reason.contains(other[0]), "{reason}");
    }
    // The same rule as saved is no conflict; no rule at all keeps the saved ones.
    let args: Vec<&str> = resume.iter().copied().chain(["--settle", "1s"]).collect();
    let (code, stdout, logs) = ebb(redis.url(), CLUSTER, &args, SECS(60)).await;
    assert_eq!(code, 0, "{stdout} {logs:?}");
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}
