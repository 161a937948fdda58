//! Redis behind Sentinel (a master, a replica, three sentinels: real `redis-server` processes):
//! nodes and the coordinator reach it through `redis+sentinel://`, and a rolling restart rides
//! through the master being SIGKILLed while the second node drains: it completes, every node
//! comes back new, never two out, no message lost, no abnormal close. A manual failover (no one
//! dies, so no connection errors) still moves every subscription to the new master.

use ebb_proto::Keys;
use ebb_tests::fleet::{Supervised, ebb, ebb_spawn, node_args};
use ebb_tests::process::Node;
use ebb_tests::readiness::{self, Readiness};
use ebb_tests::sentinel::SentinelSet;
use ebb_tests::traffic::Traffic;
use ebb_tests::{eventually, node_name};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "sentinel";

/// `name`'s record as the master of the moment holds it (empty while there is none).
async fn record(set: &SentinelSet, name: &str) -> HashMap<String, String> {
    let Some(port) = set.master_port().await else {
        return HashMap::new();
    };
    let Ok(mut conn) = SentinelSet::connect(port).await else {
        return HashMap::new();
    };
    let key = Keys::new(CLUSTER).unwrap().node(&node_name(name));
    conn.hgetall(key).await.unwrap_or_default()
}

async fn state(set: &SentinelSet, name: &str) -> Option<String> {
    record(set, name).await.get("state").cloned()
}

#[tokio::test]
async fn a_rolling_restart_rides_through_a_sentinel_failover_during_the_second_drain() {
    let set = SentinelSet::start().await;
    let url = set.url();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let args = node_args(&url, CLUSTER, &["--close-spread", "3s"]);
        nodes.push(Arc::new(Supervised::start(name, args).await));
    }
    for name in ["n1", "n2", "n3"] {
        eventually(
            &format!("{name} registered through the sentinels"),
            SECS(15),
            || async { (state(&set, name).await.as_deref() == Some("active")).then_some(()) },
        )
        .await;
    }
    let mut urls = Vec::new();
    for node in &nodes {
        urls.push(node.ws_url().await);
    }
    let traffic = Traffic::start(&urls, 30);
    let readiness = Readiness::watch(nodes.clone());
    let mut coordinator = ebb_spawn(
        &url,
        CLUSTER,
        &["rolling-restart", "--json", "--redis-grace", "60s"],
    );

    eventually("n2 draining", SECS(60), || async {
        (state(&set, "n2").await.as_deref() == Some("draining")).then_some(())
    })
    .await;
    let old = set.kill_master().await;
    let new = set.wait_failover(old, SECS(30)).await;
    assert_ne!(old, new);

    let (status, stdout) = coordinator.wait_with_output(SECS(150)).await;
    let report = ebb_tests::containers::report_of(&stdout.join("\n"));
    assert_eq!(status.code(), Some(0), "{report} {:#?}", coordinator.logs());
    assert_eq!(report["status"], "completed", "{report}");
    for node in &nodes {
        assert_eq!(node.starts(), 2, "{} replaced once: {report}", node.name);
    }
    let samples = readiness.stop().await;
    assert_eq!(
        readiness::most_out(&samples),
        1,
        "never two nodes out at once"
    );
    traffic.finish(SECS(30)).await.assert_nothing_lost();

    // Through the sentinels, the new master lists every node, active.
    let (code, stdout, logs) = ebb(&url, CLUSTER, &["status", "--json"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{status}");
    assert!(nodes.iter().all(|n| n["state"] == "active"), "{status}");
}

/// How many subscribers `channel` has on the data node on `port`.
async fn listeners(port: u16, channel: &str) -> Option<i64> {
    let mut conn = SentinelSet::connect(port).await.ok()?;
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(n)
}

#[tokio::test]
async fn a_manual_failover_moves_every_command_subscription_to_the_new_master() {
    let set = SentinelSet::start().await;
    let url = set.url();
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let args = node_args(&url, CLUSTER, &["--name", name, "--close-spread", "0s"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(Node::start(&args).await);
    }
    let keys = Keys::new(CLUSTER).unwrap();
    let channels: Vec<String> = ["n1", "n2"]
        .iter()
        .map(|n| keys.commands(&node_name(n)))
        .collect();
    let old = set.master_port().await.unwrap();
    for channel in &channels {
        eventually(
            &format!("{channel} subscribed on the master"),
            SECS(15),
            || async { (listeners(old, channel).await == Some(1)).then_some(()) },
        )
        .await;
    }

    // A failover nobody dies in: the old master becomes a replica and keeps its clients, and a
    // subscription on it would never error. The sentinels' `+switch-master` moves them.
    // (Refused with NOGOODSLAVE until the sentinel has fresh word from the replica.)
    let sentinel = set.sentinel_ports()[0];
    eventually(
        "a sentinel to accept SENTINEL FAILOVER",
        SECS(15),
        || async {
            let mut conn = SentinelSet::connect(sentinel).await.ok()?;
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(ebb_tests::sentinel::MASTER)
                .query_async::<()>(&mut conn)
                .await
                .ok()
        },
    )
    .await;
    let new = set.wait_failover(old, SECS(30)).await;
    for channel in &channels {
        eventually(
            &format!("{channel} moved to the new master"),
            SECS(15),
            || async {
                (listeners(new, channel).await == Some(1)
                    && listeners(old, channel).await == Some(0))
                .then_some(())
            },
        )
        .await;
    }

    // Commands reach the nodes on the new master, and their records are written there.
    let (code, _, logs) = ebb(
        &url,
        CLUSTER,
        &["drain", "n1", "--then", "stay", "--wait"],
        SECS(30),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    assert_eq!(
        ebb_tests::http::get(nodes[0].addr, "/health").await.json()["status"],
        "drained"
    );
    let (code, _, logs) = ebb(&url, CLUSTER, &["resume", "n1"], SECS(20)).await;
    assert_eq!(code, 0, "{logs:?}");
    for name in ["n1", "n2"] {
        eventually(
            &format!("{name} active on the new master"),
            SECS(15),
            || async {
                let mut conn = SentinelSet::connect(new).await.ok()?;
                let r: HashMap<String, String> =
                    conn.hgetall(keys.node(&node_name(name))).await.ok()?;
                (r.get("state").map(String::as_str) == Some("active")).then_some(())
            },
        )
        .await;
    }
}
