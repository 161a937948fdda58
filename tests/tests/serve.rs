//! `ebb serve` against a real Redis and real node processes: a request queued before any service
//! runs is carried out once one starts, the same id runs once, bad requests are answered and drain
//! nothing, the API refuses writes without its token and steers a rollout, and a leader killed
//! mid-rollout is replaced by a standby that finishes it: never two nodes out, live clients lose
//! nothing.

use ebb_proto::request::{Request, RolloutOptions};
use ebb_proto::sign::Secret;
use ebb_proto::{EventKind, Keys, NodeState};
use ebb_tests::fleet::{EventLog, Supervised, ebb, ebb_spawn, node_args, wait_holding};
use ebb_tests::process::Proc;
use ebb_tests::readiness::{self, Readiness};
use ebb_tests::redis::Redis;
use ebb_tests::traffic::Traffic;
use ebb_tests::{eventually, http};
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "svc";
const TOKEN: &str = "api-token-for-tests";
const SECRET: &str = "serve-test-secret-0123456789";

fn keys() -> Keys {
    Keys::new(CLUSTER).unwrap()
}

/// `n1..n3` under supervision, active, with their URLs.
async fn fleet(redis: &Redis, extra: &[&str]) -> (Vec<Arc<Supervised>>, Vec<String>) {
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let node = Supervised::start(name, node_args(redis.url(), CLUSTER, extra)).await;
        urls.push(node.ws_url().await);
        nodes.push(Arc::new(node));
    }
    instances(redis, 3).await;
    (nodes, urls)
}

/// The active nodes' instances, once `n` are active.
async fn instances(redis: &Redis, n: usize) -> BTreeMap<String, String> {
    eventually(&format!("{n} nodes active"), SECS(30), || async {
        let (code, stdout, _) = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10)).await;
        let status: serde_json::Value = serde_json::from_str(&stdout).ok()?;
        let active: BTreeMap<String, String> = status["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["state"] == "active")
            .map(|n| {
                (
                    n["name"].as_str().unwrap().into(),
                    n["instance"].as_str().unwrap().into(),
                )
            })
            .collect();
        (code == 0 && active.len() == n).then_some(active)
    })
    .await
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `ebb serve` on a free port; once its API answers.
async fn serve(redis: &Redis, extra: &[&str]) -> (Proc, SocketAddr) {
    let addr = free_addr();
    let listen = addr.to_string();
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--api-token",
        TOKEN,
        "--lock-ttl",
        "3s",
    ];
    args.extend(extra);
    let proc = ebb_spawn(redis.url(), CLUSTER, &args);
    eventually("the API answers", SECS(10), || async {
        let answer = http::request(addr, http::Method::GET, "/api/status", None).await;
        answer.is_ok_and(|r| r.status == 200).then_some(())
    })
    .await;
    (proc, addr)
}

async fn is_leader(addr: SocketAddr) -> bool {
    http::request(addr, http::Method::GET, "/api/status", None)
        .await
        .is_ok_and(|r| r.status == 200 && r.json()["leader"] == true)
}

/// The request's result through the API, once `pred` holds.
async fn result_when(
    addr: SocketAddr,
    id: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(what, limit, || async {
        let r = http::request(
            addr,
            http::Method::GET,
            &format!("/api/rollouts/{id}"),
            None,
        )
        .await
        .ok()?;
        let body = (r.status == 200).then(|| r.json())?;
        pred(&body).then_some(body)
    })
    .await
}

fn drains(log: &EventLog) -> usize {
    log.events()
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
        .count()
}

#[tokio::test]
async fn a_request_queued_before_any_service_runs_is_carried_out_once() {
    let redis = Redis::run().await;
    let (_nodes, urls) = fleet(&redis, &["--close-spread", "500ms"]).await;
    let before = instances(&redis, 3).await;
    let traffic = Traffic::start(&urls, 20);
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &[
            "request",
            "rolling-restart",
            "--id",
            "deploy-42",
            "--max-parallel",
            "1",
        ],
        SECS(10),
    )
    .await;
    assert_eq!((code, stdout.trim()), (0, "deploy-42"), "{logs:?}");
    assert_eq!(drains(&events), 0, "no service yet: nothing happens");

    let (_service, _) = serve(&redis, &[]).await;
    let (code, stdout, logs) = ebb(redis.url(), CLUSTER, &["watch", "deploy-42"], SECS(60)).await;
    assert_eq!(code, 0, "{logs:?}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["status"], "completed");
    assert!(
        logs.iter().any(|l| l.contains("n3: done")),
        "progress followed: {logs:?}"
    );
    let after = instances(&redis, 3).await;
    assert!(
        before.iter().all(|(n, i)| after[n] != *i),
        "every node replaced"
    );
    assert_eq!(drains(&events), 3);

    // The same id again: answered with the first result, nothing drained.
    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &[
            "request",
            "rolling-restart",
            "--id",
            "deploy-42",
            "--wait",
            "--timeout",
            "30s",
        ],
        SECS(40),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    let entries: i64 = redis
        .connection()
        .await
        .xlen(keys().requests())
        .await
        .unwrap();
    assert_eq!(entries, 2);
    eventually("the duplicate acknowledged", SECS(10), || async {
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(keys().requests())
            .arg(ebb_proto::keys::REQUEST_GROUP)
            .query_async(&mut redis.connection().await)
            .await
            .unwrap();
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0)))
            .then_some(())
    })
    .await;
    assert_eq!(instances(&redis, 3).await, after, "not run twice");
    assert_eq!(drains(&events), 3);
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn bad_requests_are_answered_with_why_and_drain_nothing() {
    let redis = Redis::run().await;
    let (_nodes, _) = fleet(&redis, &["--secret", SECRET]).await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let (_service, addr) = serve(&redis, &["--secret", SECRET]).await;
    let unsigned = Request::rolling_restart("u1", RolloutOptions::default()).encode(None, 0);
    let forged = Request::rolling_restart("f1", RolloutOptions::default())
        .encode(Some(&Secret::new("somebody-elses-secret").unwrap()), 60_000);
    let mut c = redis.connection().await;
    for (value, why) in [
        ("not json", "malformed"),
        // Checked before anything it says is read: no field of an unsigned request matters.
        (
            r#"{"v":1,"id":"x","type":"rolling_restart","exec":"rm -rf /"}"#,
            "unsigned",
        ),
        (unsigned.as_str(), "unsigned"),
        (forged.as_str(), "bad signature"),
    ] {
        let entry: String = c
            .xadd(keys().requests(), "*", &[("request", value)])
            .await
            .unwrap();
        // Answered under its entry's id (never under the id it claims).
        let result = result_when(addr, &entry, "refused", SECS(10), |r| {
            r["status"] == "refused"
        })
        .await;
        let reason = result["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{value}: {reason}");
    }
    // An entry without the field at all.
    let entry: String = c
        .xadd(keys().requests(), "*", &[("other", "x")])
        .await
        .unwrap();
    result_when(addr, &entry, "refused", SECS(10), |r| {
        r["status"] == "refused"
    })
    .await;
    for id in ["u1", "f1"] {
        let r = http::request(
            addr,
            http::Method::GET,
            &format!("/api/rollouts/{id}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 404, "a refused request claims no id");
    }
    assert_eq!(drains(&events), 0, "nothing drained");
    let metrics = http::get(addr, "/metrics").await.body;
    let refused = |reason: &str| {
        http::metric(
            &metrics,
            &format!(r#"ebb_serve_requests_refused_total{{reason="{reason}"}}"#),
        )
    };
    assert_eq!(refused("malformed"), Some(1.0), "{metrics}");
    assert_eq!(refused("unsigned"), Some(2.0));
    assert_eq!(refused("no_request"), Some(1.0));
    assert_eq!(refused("bad_signature"), Some(1.0));
}

#[tokio::test]
async fn the_api_refuses_writes_without_its_token_and_steers_a_rollout() {
    let redis = Redis::run().await;
    let (_nodes, urls) = fleet(&redis, &["--close-spread", "500ms"]).await;
    let traffic = Traffic::start(&urls, 20);
    let (_service, addr) = serve(&redis, &[]).await;
    let body = r#"{"v":1,"id":"canary-1","type":"rolling_restart","pause_after":1}"#;
    for token in [None, Some("wrong")] {
        let r = http::post_body(addr, "/api/rollouts", token, body).await;
        assert_eq!(r.status, 401, "{token:?}");
    }
    let r = http::post_body(addr, "/api/rollouts", Some(TOKEN), "{not json").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("malformed"));
    let bad = r#"{"v":1,"id":"b","type":"rolling_restart","max_parallel":"lots"}"#;
    assert_eq!(
        http::post_body(addr, "/api/rollouts", Some(TOKEN), bad)
            .await
            .status,
        400
    );

    let r = http::post_body(addr, "/api/rollouts", Some(TOKEN), body).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let paused = result_when(addr, "canary-1", "paused", SECS(30), |r| {
        r["status"] == "paused"
    })
    .await;
    assert_eq!(paused["rollout"]["done"], 1, "{paused}");
    let r = http::post_body(addr, "/api/rollouts/canary-1/continue", None, "").await;
    assert_eq!(r.status, 401, "steering needs the token too");
    let r = http::post_body(addr, "/api/rollouts/canary-1/continue", Some(TOKEN), "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let done = result_when(addr, "canary-1", "completed", SECS(60), |r| {
        r["status"] == "completed"
    })
    .await;
    assert_eq!(done["nodes"].as_array().unwrap().len(), 3);

    // Abort through the API: the node in flight finishes, no other is touched.
    let body = r#"{"v":1,"id":"stop-1","type":"rolling_restart","pause_after":1}"#;
    assert_eq!(
        http::post_body(addr, "/api/rollouts", Some(TOKEN), body)
            .await
            .status,
        202
    );
    result_when(addr, "stop-1", "paused", SECS(30), |r| {
        r["status"] == "paused"
    })
    .await;
    let r = http::post_body(addr, "/api/rollouts/stop-1/abort", Some(TOKEN), "").await;
    assert_eq!(r.status, 202);
    let aborted = result_when(addr, "stop-1", "aborted", SECS(30), |r| {
        r["status"] == "aborted"
    })
    .await;
    assert!(
        aborted["reason"].as_str().unwrap().contains("aborted by"),
        "{aborted}"
    );
    let r = http::post_body(addr, "/api/rollouts/stop-1/pause", Some(TOKEN), "").await;
    assert_eq!(r.status, 409, "not running any more");
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn a_leader_killed_mid_rollout_is_replaced_by_a_standby_that_finishes_it() {
    let redis = Redis::run().await;
    let (nodes, urls) = fleet(&redis, &["--close-spread", "2s"]).await;
    let before = instances(&redis, 3).await;
    let traffic = Traffic::start(&urls, 30);
    wait_holding(&nodes, 10).await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let (a, a_addr) = serve(&redis, &[]).await;
    let (b, b_addr) = serve(&redis, &[]).await;
    let mut services = [(a, a_addr), (b, b_addr)];
    let leader = eventually("one leader", SECS(10), || async {
        let (a, b) = (is_leader(a_addr).await, is_leader(b_addr).await);
        (a != b).then_some(if a { 0 } else { 1 })
    })
    .await;
    let standby = 1 - leader;
    let readiness = Readiness::watch(nodes.clone());
    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["request", "rolling-restart", "--id", "handover"],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    let leader_addr = services[leader].1;
    result_when(leader_addr, "handover", "n1 draining", SECS(30), |r| {
        r["rollout"]["in_flight"][0]["name"] == "n1"
            && r["rollout"]["in_flight"][0]["phase"] == "draining"
    })
    .await;
    services[leader].0.signal(Signal::SIGKILL);
    services[leader].0.wait(SECS(5)).await;

    let standby_addr = services[standby].1;
    eventually("the standby leads", SECS(15), || async {
        is_leader(standby_addr).await.then_some(())
    })
    .await;
    let done = result_when(standby_addr, "handover", "completed", SECS(90), |r| {
        r["status"] == "completed"
    })
    .await;
    assert_eq!(done["nodes"].as_array().unwrap().len(), 3, "{done}");
    let after = instances(&redis, 3).await;
    assert!(
        before.iter().all(|(n, i)| after[n] != *i),
        "every node replaced"
    );
    let samples = readiness.stop().await;
    assert!(
        readiness::most_out(&samples) <= 1,
        "never two out across the handover"
    );
    events.stop().await;
    let per_node = events.drains_per_node();
    assert!(
        per_node.values().all(|n| *n == 1),
        "none drained twice: {per_node:?}"
    );
    traffic.finish(SECS(20)).await.assert_nothing_lost();
}

#[tokio::test]
async fn a_flood_of_garbage_requests_is_answered_and_the_real_one_still_runs() {
    const GARBAGE: usize = 500;
    let redis = Redis::run().await;
    let (_nodes, _) = fleet(&redis, &[]).await;
    let mut c = redis.connection().await;
    let mut pipe = redis::pipe();
    for i in 0..GARBAGE {
        let value = match i % 3 {
            0 => format!("{{\"v\":1,\"id\":\"g{i}\",\"type\":\"reboot\"}}"),
            1 => "x".repeat(70_000),
            _ => format!("$(touch /tmp/ebb-pwned-{i})"),
        };
        pipe.xadd(keys().requests(), "*", &[("request", value)])
            .ignore();
    }
    let () = pipe.query_async(&mut c).await.unwrap();
    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["request", "rolling-restart", "--id", "after-flood"],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    let (_service, addr) = serve(&redis, &[]).await;
    let done = result_when(addr, "after-flood", "completed", SECS(90), |r| {
        r["status"] == "completed"
    })
    .await;
    assert_eq!(done["nodes"].as_array().unwrap().len(), 3);
    let metrics = http::get(addr, "/metrics").await.body;
    let refused: f64 = ["malformed", "too_large"]
        .iter()
        .filter_map(|r| {
            http::metric(
                &metrics,
                &format!(r#"ebb_serve_requests_refused_total{{reason="{r}"}}"#),
            )
        })
        .sum();
    assert_eq!(refused as usize, GARBAGE, "{metrics}");
    assert!(!std::path::Path::new("/tmp/ebb-pwned-2").exists());
}
