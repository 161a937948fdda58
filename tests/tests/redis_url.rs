//! The `--redis` URL at the edge of every binary: bad URLs and flags are usage errors (exit 2)
//! that say what is wrong and never print the password, and `rediss://` with `--redis-ca` and
//! an ACL user reaches a real redis-server that serves TLS only, with its certificates and host
//! name checked.

use ebb_tests::fleet::{Supervised, ebb, node_args};
use ebb_tests::process::{Node, Proc};
use ebb_tests::redis::Redis;
use ebb_tests::tls::TestCa;
use ebb_tests::{eventually, http};
use std::collections::HashMap;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "test";
const PASSWORD: &str = "hunter2-tls";

/// `ebb-node` with `args` run to its end: (exit code, stderr lines).
async fn node_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, Vec<String>) {
    let mut all = vec!["--name", "n1", "--listen", "127.0.0.1:0"];
    all.extend(args);
    let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    let mut proc = Proc::spawn_with_env(
        &ebb_tests::bin::path("ebb-node"),
        &all,
        Default::default(),
        env,
    );
    let (status, _) = proc.wait_with_output(SECS(10)).await;
    (status.code().unwrap_or(-1), proc.logs())
}

/// Every bad `--redis` (and `--redis-ca` beside it), with a password in it, and a phrase the
/// error must hold.
const BAD: &[(&str, &[&str], &str)] = &[
    ("redis://u:hunter2@h:99999", &[], "bad port"),
    ("http://u:hunter2@h", &[], "unknown scheme"),
    ("redis://u:hunter2@h/x1", &[], "bad database"),
    ("redis://u:hunter2@h?db=1", &[], "query parameters"),
    ("redis+sentinel://u:hunter2@s1,s2", &[], "master's name"),
    ("redis+cluster://u:hunter2@a:1/0", &[], "database 0 only"),
    ("u:hunter2@h:6379", &[], "expected a URL starting with"),
    (
        "redis://u:hunter2@h",
        &["--redis-ca", "/etc/hostname"],
        "--redis-ca is for TLS",
    ),
    (
        "rediss://u:hunter2@h",
        &["--redis-ca", "/nonexistent/ca.pem"],
        "cannot read the CA file",
    ),
];

#[tokio::test]
async fn bad_redis_urls_are_usage_errors_that_never_show_the_password() {
    for (url, extra, phrase) in BAD {
        let mut args = vec!["--redis", url];
        args.extend(*extra);
        let (code, logs) = node_exit(&args, &[]).await;
        let text = logs.join("\n");
        assert_eq!(code, 2, "ebb-node --redis {url}: {text}");
        assert!(text.contains(phrase), "ebb-node --redis {url}: {text}");
        assert!(!text.contains("hunter2"), "ebb-node --redis {url}: {text}");

        let mut args = extra.to_vec();
        args.push("status");
        let (code, stdout, logs) = ebb(url, CLUSTER, &args, SECS(10)).await;
        let text = logs.join("\n");
        assert_eq!(code, 2, "ebb --redis {url}: {text}");
        assert!(text.contains(phrase), "ebb --redis {url}: {text}");
        assert!(
            !text.contains("hunter2") && !stdout.contains("hunter2"),
            "{text}"
        );
    }
    // The same through the environment, which is where a password belongs.
    let (code, logs) = node_exit(&[], &[("EBB_REDIS_URL", "redis://u:hunter2@h:0")]).await;
    let text = logs.join("\n");
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("bad port") && !text.contains("hunter2"),
        "{text}"
    );
    // `--redis-ca` needs `--redis` on a node (a standalone node has no Redis to trust).
    let (code, logs) = node_exit(&["--redis-ca", "/etc/hostname"], &[]).await;
    assert_eq!(code, 2, "{logs:?}");
    // A well-formed Cluster URL whose seeds do not resolve: the node serves without Redis,
    // retrying, and neither its logs nor redis-rs's name the password.
    let node = Node::start(&["--redis", "redis+cluster://u:hunter2@a:1,b:2"]).await;
    node.proc
        .wait_log("Redis session ended; the node keeps serving", SECS(10))
        .await;
    assert_eq!(http::get(node.addr, "/health").await.status.as_u16(), 200);
    let text = node.proc.logs().join("\n");
    assert!(!text.contains("hunter2"), "{text}");
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A Redis that serves TLS only, its default user off and one ACL user `ebb`.
async fn tls_redis(ca: &TestCa) -> Redis {
    let acl = format!("user default off\nuser ebb on >{PASSWORD} ~* &* +@all\n");
    Redis::run_tls(ca, acl).await
}

async fn record(url: &str, ca: &TestCa, name: &str) -> HashMap<String, String> {
    let mut conn = Redis::connection_to(url, Some(&ca.ca_path()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let key = ebb_proto::Keys::new(CLUSTER)
        .unwrap()
        .node(&ebb_tests::node_name(name));
    redis::AsyncCommands::hgetall(&mut conn, key).await.unwrap()
}

#[tokio::test]
async fn nodes_register_and_a_rolling_restart_completes_through_tls_with_an_acl_user() {
    let ca = TestCa::new();
    let redis = tls_redis(&ca).await;
    let url = redis.url_as("ebb", PASSWORD);
    let ca_file = ca.ca_path().display().to_string();
    let tls = ["--redis-ca", ca_file.as_str()];
    let cli = |args: &[&'static str]| -> Vec<String> {
        tls.iter().chain(args).map(|s| s.to_string()).collect()
    };

    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let extra = ["--close-spread", "0s", "--redis-ca", ca_file.as_str()];
        nodes.push(Supervised::start(name, node_args(&url, CLUSTER, &extra)).await);
    }
    for name in ["n1", "n2"] {
        eventually(
            &format!("{name} registered through TLS"),
            SECS(10),
            || async {
                (record(&url, &ca, name)
                    .await
                    .get("state")
                    .map(String::as_str)
                    == Some("active"))
                .then_some(())
            },
        )
        .await;
    }

    let (code, stdout, logs) =
        ebb(&url, CLUSTER, &strs(&cli(&["status", "--json"])), SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    // Commands reach the node through its TLS subscription.
    let (code, _, logs) = ebb(
        &url,
        CLUSTER,
        &strs(&cli(&["drain", "n1", "--then", "stay"])),
        SECS(20),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    let n1 = nodes[0].addr().await;
    eventually("n1 drained", SECS(10), || async {
        (http::get(n1, "/health").await.json()["status"] == "drained").then_some(())
    })
    .await;
    let (code, _, logs) = ebb(&url, CLUSTER, &strs(&cli(&["resume", "n1"])), SECS(20)).await;
    assert_eq!(code, 0, "{logs:?}");
    eventually("n1 active again", SECS(10), || async {
        (http::get(n1, "/health").await.status == 200).then_some(())
    })
    .await;

    let (code, stdout, logs) = ebb(
        &url,
        CLUSTER,
        &strs(&cli(&["rolling-restart", "--json"])),
        SECS(90),
    )
    .await;
    assert_eq!(code, 0, "{logs:#?}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["status"], "completed", "{report}");
    for node in &nodes {
        assert_eq!(node.starts(), 2, "{} replaced once", node.name);
    }
    assert!(!logs.join("\n").contains(PASSWORD));

    // The nodes name where they connect, with the password hidden; nothing shows the password.
    let shown = url.replace(PASSWORD, "***");
    for node in &nodes {
        let logs = node.logs().join("\n");
        assert!(logs.contains(&shown), "{shown} not in {logs}");
        assert!(!logs.contains(PASSWORD), "{logs}");
    }
}

#[tokio::test]
async fn tls_refuses_an_unknown_ca_a_wrong_host_name_plain_tcp_and_a_wrong_password() {
    let ca = TestCa::new();
    let redis = tls_redis(&ca).await;
    let url = redis.url_as("ebb", PASSWORD);
    let ca_file = ca.ca_path().display().to_string();
    let other = TestCa::new();
    let other_ca = other.ca_path().display().to_string();
    let by_ip = url.replacen("@localhost:", "@127.0.0.1:", 1);
    let plain = url.replacen("rediss://", "redis://", 1);
    let wrong_password = redis.url_as("ebb", "not-the-password");
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (&url, vec![], "certificate"),
        (&url, vec!["--redis-ca", other_ca.as_str()], "certificate"),
        (&by_ip, vec!["--redis-ca", ca_file.as_str()], "certificate"),
        (&plain, vec![], "cannot reach Redis"),
        (
            &wrong_password,
            vec!["--redis-ca", ca_file.as_str()],
            "cannot reach Redis",
        ),
    ];
    for (url, mut args, phrase) in cases {
        args.push("status");
        let (code, stdout, logs) = ebb(url, CLUSTER, &args, SECS(20)).await;
        let text = logs.join("\n");
        assert_eq!(code, 2, "{url} {args:?}: {text}");
        assert!(
            text.to_lowercase().contains(&phrase.to_lowercase()),
            "{url} {args:?}: {phrase:?} not in {text}"
        );
        assert!(
            !text.contains(PASSWORD) && !stdout.contains(PASSWORD),
            "{text}"
        );
    }

    // A node that cannot verify the server keeps serving, says why, and does not register.
    let args = node_args(
        &url,
        CLUSTER,
        &["--name", "n2", "--redis-ca", other_ca.as_str()],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&args).await;
    node.proc.wait_log("certificate", SECS(10)).await;
    assert_eq!(http::get(node.addr, "/health").await.status, 200);
    assert!(record(&url, &ca, "n2").await.is_empty());
    assert!(!node.proc.logs().join("\n").contains(PASSWORD));
}
