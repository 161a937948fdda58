//! Redis Cluster (three masters, three replicas: real `redis-server` processes): nodes and the
//! coordinator reach it through `redis+cluster://` seeds, every ebb channel is a sharded
//! channel on the shard that owns the ebb cluster's hash tag, and a rolling restart rides
//! through that shard's master being SIGKILLed while the second node drains: it completes,
//! every node comes back new, never two out, no message lost, no abnormal close. A manual
//! failover (no one dies, so no connection errors) still moves every subscription. The users
//! `ebb acl` makes are enough on a Cluster: nothing they do there is denied.

use ebb_proto::Keys;
use ebb_tests::fleet::{Supervised, ebb, ebb_env, ebb_spawn, node_args};
use ebb_tests::process::Node;
use ebb_tests::readiness::{self, Readiness};
use ebb_tests::redis_cluster::{RedisCluster, subscribers};
use ebb_tests::traffic::Traffic;
use ebb_tests::{eventually, node_name};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "sharded";

fn keys() -> Keys {
    Keys::new(CLUSTER).unwrap()
}

/// `name`'s record as the master serving the ebb cluster's slot now holds it (empty while
/// none does).
async fn record(cluster: &RedisCluster, name: &str) -> HashMap<String, String> {
    let key = keys().node(&node_name(name));
    let Some(shard) = cluster.shard_of(&key).await else {
        return HashMap::new();
    };
    let Ok(mut conn) = RedisCluster::connect(shard.master).await else {
        return HashMap::new();
    };
    conn.hgetall(key).await.unwrap_or_default()
}

async fn state(cluster: &RedisCluster, name: &str) -> Option<String> {
    record(cluster, name).await.get("state").cloned()
}

#[tokio::test]
async fn a_rolling_restart_rides_through_the_shard_master_killed_during_the_second_drain() {
    let cluster = RedisCluster::start().await;
    let url = cluster.url();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let args = node_args(&url, CLUSTER, &["--close-spread", "3s"]);
        nodes.push(Arc::new(Supervised::start(name, args).await));
    }
    for name in ["n1", "n2", "n3"] {
        eventually(
            &format!("{name} registered through the cluster"),
            SECS(15),
            || async { (state(&cluster, name).await.as_deref() == Some("active")).then_some(()) },
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
        (state(&cluster, "n2").await.as_deref() == Some("draining")).then_some(())
    })
    .await;
    let slot_key = keys().nodes();
    let old = cluster
        .shard_of(&slot_key)
        .await
        .expect("a shard serves the slot");
    cluster.kill(old.master);
    let new = cluster.wait_failover(&slot_key, old.master, SECS(30)).await;
    assert!(old.replicas.contains(&new.master), "{old:?} -> {new:?}");

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

    // Through the seeds (one of them dead now), the new master lists every node, active.
    let (code, stdout, logs) = ebb(&url, CLUSTER, &["status", "--json"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let listed = status["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{status}");
    assert!(listed.iter().all(|n| n["state"] == "active"), "{status}");
}

#[tokio::test]
async fn channels_are_sharded_on_the_slot_s_shard_and_follow_a_manual_failover() {
    let cluster = RedisCluster::start().await;
    let url = cluster.url();
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let args = node_args(&url, CLUSTER, &["--name", name, "--close-spread", "0s"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(Node::start(&args).await);
    }
    let channels: Vec<String> = ["n1", "n2"]
        .iter()
        .map(|n| keys().commands(&node_name(n)))
        .collect();
    let old = cluster.shard_of(&keys().nodes()).await.unwrap();
    for channel in &channels {
        eventually(
            &format!("{channel} subscribed as a sharded channel on the slot's master"),
            SECS(15),
            || async { (subscribers(old.master, channel).await == Some((0, 1))).then_some(()) },
        )
        .await;
    }
    // On no other node, sharded or not: the traffic stays on that shard.
    for port in cluster.ports().into_iter().filter(|p| *p != old.master) {
        for channel in &channels {
            assert_eq!(subscribers(port, channel).await, Some((0, 0)), "{port}");
        }
    }
    // A failover nobody dies in: the old master becomes a replica and keeps its clients. The
    // server ends their sharded subscriptions (the slot left it); they subscribe on the new one.
    let replica = old.replicas[0];
    let mut conn = RedisCluster::connect(replica).await.unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut conn)
        .await
        .unwrap();
    let new = cluster
        .wait_failover(&keys().nodes(), old.master, SECS(30))
        .await;
    assert_eq!(new.master, replica);
    for channel in &channels {
        eventually(
            &format!("{channel} moved to the new master"),
            SECS(15),
            || async {
                (subscribers(new.master, channel).await == Some((0, 1))
                    && subscribers(old.master, channel).await == Some((0, 0)))
                .then_some(())
            },
        )
        .await;
    }

    // Commands reach the nodes through the new master, and their records are written there;
    // their events are sharded messages (a classic PUBLISH would not reach this subscriber).
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let seeds: Vec<String> = cluster
        .ports()
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let watcher = redis::cluster::ClusterClientBuilder::new(seeds)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()
        .unwrap();
    let mut watcher = watcher.get_async_connection().await.unwrap();
    watcher.ssubscribe(keys().events()).await.unwrap();
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
    let sharded = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|push| push.kind == redis::PushKind::SMessage)
        .count();
    assert!(sharded >= 2, "n1's draining and drained events: {sharded}");
    for name in ["n1", "n2"] {
        eventually(
            &format!("{name} active on the new master"),
            SECS(15),
            || async {
                let mut conn = RedisCluster::connect(new.master).await.ok()?;
                let r: HashMap<String, String> =
                    conn.hgetall(keys().node(&node_name(name))).await.ok()?;
                (r.get("state").map(String::as_str) == Some("active")).then_some(())
            },
        )
        .await;
    }
}

/// `ebb acl --format aclfile` for `role`, the password given through the environment.
async fn acl_line(role: &[&str], password: &str) -> String {
    let var = "EBB_TEST_ACL_PASSWORD";
    let mut args = vec!["acl", "--format", "aclfile", "--password-env", var];
    args.extend(role);
    let nowhere = "redis://127.0.0.1:1";
    let (code, stdout, logs) = ebb_env(nowhere, CLUSTER, &args, &[(var, password)], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    stdout
}

#[tokio::test]
async fn the_users_of_ebb_acl_are_enough_on_a_cluster() {
    // The default user stays on for the harness; ebb's processes log in as their own users.
    let mut acl = "user default on nopass ~* &* +@all\n".to_owned();
    for (role, password) in [
        (
            &["--role", "node", "--node", "n1", "--user", "n1"][..],
            "n1-pass",
        ),
        (&["--role", "trigger"][..], "trigger-pass"),
        (&["--role", "viewer"][..], "viewer-pass"),
    ] {
        acl.push_str(acl_line(role, password).await.trim_end());
        acl.push('\n');
    }
    let cluster = RedisCluster::start_with_acl(Some(&acl)).await;
    let node_url = cluster.url_as("n1", "n1-pass");
    let args = node_args(
        &node_url,
        CLUSTER,
        &["--name", "n1", "--close-spread", "0s"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&args).await;
    eventually("n1 registered as its own user", SECS(15), || async {
        (state(&cluster, "n1").await.as_deref() == Some("active")).then_some(())
    })
    .await;

    let trigger = cluster.url_as("ebb-trigger", "trigger-pass");
    let drain = ["drain", "n1", "--then", "stay", "--wait"];
    let (code, _, logs) = ebb(&trigger, CLUSTER, &drain, SECS(30)).await;
    assert_eq!(code, 0, "{logs:?}");
    assert_eq!(
        ebb_tests::http::get(node.addr, "/health").await.json()["status"],
        "drained"
    );
    let (code, _, logs) = ebb(&trigger, CLUSTER, &["resume", "n1"], SECS(20)).await;
    assert_eq!(code, 0, "{logs:?}");
    let viewer = cluster.url_as("ebb-viewer", "viewer-pass");
    let (code, stdout, logs) = ebb(&viewer, CLUSTER, &["status", "--json"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    assert!(stdout.contains("\"n1\""), "{stdout}");

    // Not one denial on any node of the cluster.
    for port in cluster.ports() {
        let mut conn = RedisCluster::connect(port).await.unwrap();
        let log: Vec<redis::Value> = redis::cmd("ACL")
            .arg("LOG")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(log.is_empty(), "ACL LOG on {port}: {log:?}");
    }
}
