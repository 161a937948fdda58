//! The Redis ACL rules of `ebb acl`, loaded as the ACL file of a real Redis (container) whose
//! default user is off: two supervised nodes, a coordinator, a trigger and a viewer each log in
//! as their own user. Everything they normally do (register, heartbeat, drain and resume, a
//! rolling restart, status, deregister) runs without a single denial, and what each role must
//! not do is refused with NOPERM.

use ebb_proto::{Keys, NodeName};
use ebb_tests::fleet::{Supervised, ebb, ebb_env, node_args};
use ebb_tests::redis::Redis;
use ebb_tests::{eventually, node_name};
use nix::sys::signal::Signal;
use redis::aio::MultiplexedConnection;
use std::sync::Mutex;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "acl";
/// `ebb acl` needs no Redis; the global flag is given anyway.
const NOWHERE: &str = "redis://127.0.0.1:1";

/// The test's own user, outside ebb's rules, to look at what happened.
const ADMIN: (&str, &str) = ("admin", "admin-pass");
const N1: (&str, &str) = ("n1", "n1-pass");
const N2: (&str, &str) = ("n2", "n2-pass");
const COORDINATOR: (&str, &str) = ("ebb-coordinator", "coordinator-pass");
const TRIGGER: (&str, &str) = ("ebb-trigger", "trigger-pass");
const VIEWER: (&str, &str) = ("ebb-viewer", "viewer-pass");

/// What Redis and redis-rs say when a rule refuses something.
const DENIALS: [&str; 3] = ["NOPERM", "no permissions", "can't run this command"];

/// `ebb acl --format aclfile --password-env VAR <role>` with `password` in VAR: one line.
async fn acl_line(role: &[&str], password: &str) -> String {
    let var = "EBB_TEST_ACL_PASSWORD";
    let mut args = vec!["acl", "--format", "aclfile", "--password-env", var];
    args.extend(role);
    let (code, stdout, logs) = ebb_env(NOWHERE, CLUSTER, &args, &[(var, password)], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    assert!(!stdout.contains(password), "the password is never printed");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    stdout
}

/// The ACL file: the default user off, the test's admin, and ebb's users as `ebb acl` makes them.
async fn acl_file() -> String {
    let mut file = format!(
        "user default off\nuser {} on >{} ~* &* +@all\n",
        ADMIN.0, ADMIN.1
    );
    let users: [(&[&str], (&str, &str)); 5] = [
        (&["--role", "node", "--node", "n1", "--user", "n1"], N1),
        (&["--role", "node", "--node", "n2", "--user", "n2"], N2),
        (&["--role", "coordinator"], COORDINATOR),
        (&["--role", "trigger"], TRIGGER),
        (&["--role", "viewer"], VIEWER),
    ];
    for (role, (user, password)) in users {
        let line = acl_line(role, password).await;
        assert!(
            line.starts_with(&format!("user {user} reset on #")),
            "{line}"
        );
        file.push_str(&line);
        file.push('\n');
    }
    file
}

async fn conn(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

fn no_perm<T>(result: &redis::RedisResult<T>) -> bool {
    matches!(result, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm))
}

/// Runs `args` as `user` (at `url`) and checks that Redis refuses it with NOPERM.
async fn refused(url: &str, user: &str, args: &[&str]) {
    let result: redis::RedisResult<redis::Value> =
        cmd(args).query_async(&mut conn(url).await).await;
    assert!(
        no_perm(&result),
        "{user} {args:?}: expected NOPERM, got {result:?}"
    );
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

fn assert_no_denial(who: &str, lines: &[String]) {
    let denied: Vec<&String> = lines
        .iter()
        .filter(|l| DENIALS.iter().any(|d| l.contains(d)))
        .collect();
    assert!(denied.is_empty(), "{who} was denied something: {denied:#?}");
}

/// What the `ebb` processes of the test logged.
type CliLogs = Mutex<Vec<String>>;

/// `ebb status --json` as the viewer.
async fn status(redis: &Redis, cli_logs: &CliLogs) -> serde_json::Value {
    let url = redis.url_as(VIEWER.0, VIEWER.1);
    let (code, stdout, logs) = ebb(&url, CLUSTER, &["status", "--json"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    cli_logs.lock().unwrap().extend(logs);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `(state, instance)` of `name` in a status.
fn node_of(status: &serde_json::Value, name: &str) -> Option<(String, String)> {
    let node = status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)?;
    Some((
        node["state"].as_str()?.to_owned(),
        node["instance"].as_str()?.to_owned(),
    ))
}

async fn wait_state(redis: &Redis, name: &str, state: &str, cli_logs: &CliLogs) {
    eventually(&format!("{name} {state}"), SECS(20), || async {
        let status = status(redis, cli_logs).await;
        (node_of(&status, name)?.0 == state).then_some(())
    })
    .await;
}

#[tokio::test]
async fn each_role_does_its_work_and_nothing_else() {
    let redis = Redis::run_with_acl_file(acl_file().await).await;
    let url = |(user, password): (&str, &str)| redis.url_as(user, password);
    let keys = Keys::new(CLUSTER).unwrap();
    let (n1_name, n2_name): (NodeName, NodeName) = (node_name("n1"), node_name("n2"));
    let mut admin = conn(&url(ADMIN)).await;

    // Without a user nothing is allowed.
    let anonymous = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    let refusal = match anonymous {
        Err(e) => e.to_string(),
        Ok(mut c) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .unwrap_err()
            .to_string(),
    };
    assert!(refusal.contains("NOAUTH"), "{refusal}");

    // ---- The normal work, each as its own user: not one denial. ----
    let _: () = redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query_async(&mut admin)
        .await
        .unwrap();
    let cli_logs = CliLogs::default();
    let extra = ["--close-spread", "0s"];
    let n1 = Supervised::start("n1", node_args(&url(N1), CLUSTER, &extra)).await;
    let n2 = Supervised::start("n2", node_args(&url(N2), CLUSTER, &extra)).await;
    wait_state(&redis, "n1", "active", &cli_logs).await;
    wait_state(&redis, "n2", "active", &cli_logs).await;

    // The trigger drains n2 for maintenance, waits for it, and resumes it.
    let (code, _, logs) = ebb(
        &url(TRIGGER),
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
    assert_eq!(code, 0, "{logs:#?}");
    cli_logs.lock().unwrap().extend(logs);
    assert_eq!(
        node_of(&status(&redis, &cli_logs).await, "n2").unwrap().0,
        "drained"
    );
    let (code, _, logs) = ebb(&url(TRIGGER), CLUSTER, &["resume", "n2"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:#?}");
    cli_logs.lock().unwrap().extend(logs);
    wait_state(&redis, "n2", "active", &cli_logs).await;

    // The coordinator replaces both.
    let before = status(&redis, &cli_logs).await;
    let (code, stdout, logs) = ebb(
        &url(COORDINATOR),
        CLUSTER,
        &["rolling-restart", "--json"],
        SECS(90),
    )
    .await;
    assert_eq!(code, 0, "{logs:#?}");
    cli_logs.lock().unwrap().extend(logs);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["status"], "completed", "{report}");
    let entries = report["nodes"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{report}");
    for entry in entries {
        assert!(entry["new_instance"].is_string(), "{entry}");
        assert_ne!(entry["old_instance"], entry["new_instance"], "{entry}");
    }
    assert_eq!((n1.starts(), n2.starts()), (2, 2));
    let after = status(&redis, &cli_logs).await;
    for name in ["n1", "n2"] {
        let (state, instance) = node_of(&after, name).unwrap();
        assert_eq!(state, "active");
        assert_ne!(
            instance,
            node_of(&before, name).unwrap().1,
            "{name} replaced"
        );
    }

    // Redis denied nobody anything, and no process saw a denial.
    let log: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(log.is_empty(), "ACL LOG after the normal work: {log:#?}");
    assert_no_denial("n1", &n1.logs());
    assert_no_denial("n2", &n2.logs());
    assert_no_denial("the ebb CLI", &cli_logs.lock().unwrap());
    assert!(n1.logs().iter().any(|l| l.contains("registered in Redis")));

    // ---- What each role must not do. ----
    let (record1, record2) = (keys.node(&n1_name), keys.node(&n2_name));
    let (lock, state) = (keys.rollout_lock(), keys.rollout_state());
    let (events, commands1, commands2) = (
        keys.events(),
        keys.commands(&n1_name),
        keys.commands(&n2_name),
    );

    // Refused: the trigger no record, event, lock or rollout state; n1 nothing of n2's, no
    // command (not even its own), no lock; the viewer nothing but reading; the coordinator no
    // record, no event.
    let resume = r#"{"v":1,"id":"acl-resume","target":"n1","type":"resume"}"#;
    let take_lock = ["SET", &lock, "x", "NX", "PX", "15000"];
    let refusals: Vec<((&str, &str), Vec<&str>)> = vec![
        (TRIGGER, vec!["HSET", &record1, "state", "drained"]),
        (TRIGGER, vec!["PUBLISH", &events, "{}"]),
        (TRIGGER, take_lock.to_vec()),
        (TRIGGER, vec!["GET", &lock]),
        (TRIGGER, vec!["SET", &state, "{}"]),
        (TRIGGER, vec!["DEL", &state]),
        (N1, vec!["HSET", &record2, "state", "drained"]),
        (N1, vec!["DEL", &record2]),
        (N1, vec!["PUBLISH", &commands2, resume]),
        (N1, vec!["PUBLISH", &commands1, resume]),
        (N1, take_lock.to_vec()),
        (N1, vec!["GET", &lock]),
        (N1, vec!["SET", &state, "{}"]),
        (VIEWER, vec!["PUBLISH", &commands1, resume]),
        (VIEWER, vec!["PUBLISH", &events, "{}"]),
        (VIEWER, vec!["HSET", &record1, "state", "drained"]),
        (COORDINATOR, vec!["HSET", &record1, "state", "drained"]),
        (COORDINATOR, vec!["PUBLISH", &events, "{}"]),
    ];
    for (user, args) in &refusals {
        refused(&url(*user), user.0, args).await;
    }
    // Allowed: the trigger publishes a command.
    let receivers: i64 = cmd(&["PUBLISH", &commands1, resume])
        .query_async(&mut conn(&url(TRIGGER)).await)
        .await
        .unwrap();
    assert_eq!(receivers, 1, "n1 heard the trigger's command");
    // n1 cannot listen to n2's commands, nor to the events.
    let node1 = url(N1);
    let mut pubsub = redis::Client::open(node1.as_str())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    let subscribed = pubsub.subscribe(&commands2).await;
    assert!(
        no_perm(&subscribed),
        "n1 SUBSCRIBE {commands2}: {subscribed:?}"
    );
    let subscribed = pubsub.subscribe(&events).await;
    assert!(
        no_perm(&subscribed),
        "n1 SUBSCRIBE {events}: {subscribed:?}"
    );
    drop(pubsub);
    // Nor does a script help n1: its declared keys and every call inside are checked.
    let hset = redis::Script::new("return redis.call('HSET', KEYS[1], 'state', 'drained')");
    let declared: redis::RedisResult<i64> = hset
        .key(&record2)
        .invoke_async(&mut conn(&node1).await)
        .await;
    assert!(
        no_perm(&declared),
        "n1 script declaring n2's record: {declared:?}"
    );
    let sneaky = redis::Script::new("return redis.call('HSET', ARGV[1], 'state', 'drained')");
    let inside: redis::RedisResult<i64> = sneaky
        .key(&record1)
        .arg(&record2)
        .invoke_async(&mut conn(&node1).await)
        .await;
    assert!(
        matches!(&inside, Err(e) if e.to_string().contains("The user executing the script can't")),
        "n1 script writing n2's record inside: {inside:?}"
    );

    // Nothing above touched the nodes.
    let now = status(&redis, &cli_logs).await;
    for name in ["n1", "n2"] {
        assert_eq!(node_of(&now, name), node_of(&after, name), "{name}");
    }

    // The refusals are in the ACL LOG (it is not silent), under each hostile user.
    let log: Vec<std::collections::HashMap<String, String>> = redis::cmd("ACL")
        .arg("LOG")
        .arg(128)
        .query_async(&mut admin)
        .await
        .unwrap();
    for user in [TRIGGER.0, N1.0, VIEWER.0, COORDINATOR.0] {
        assert!(
            log.iter()
                .any(|e| e.get("username").map(String::as_str) == Some(user)),
            "no refusal of {user} in the ACL LOG: {log:#?}"
        );
    }

    // ---- A stale index entry: the viewer may not prune it, the coordinator does. ----
    let index = keys.nodes();
    let _: i64 = cmd(&["ZADD", &index, "1", "ghost"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let logs = CliLogs::default();
    assert_eq!(
        status(&redis, &logs).await["nodes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_no_denial("ebb status over a stale entry", &logs.lock().unwrap());
    let ghost: Option<f64> = cmd(&["ZSCORE", &index, "ghost"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(ghost, Some(1.0), "the viewer left the index alone");
    let (code, _, logs) = ebb(
        &url(COORDINATOR),
        CLUSTER,
        &["rolling-restart", "--dry-run"],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0, "{logs:#?}");
    let ghost: Option<f64> = cmd(&["ZSCORE", &index, "ghost"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(ghost, None, "the coordinator pruned it");

    // ---- Shutdown: each node deregisters itself. ----
    for node in [&n1, &n2] {
        node.set_restart(false);
        node.signal(Signal::SIGTERM);
    }
    eventually("both deregistered", SECS(20), || async {
        let left: i64 = cmd(&["ZCARD", &index])
            .query_async(&mut conn(&url(ADMIN)).await)
            .await
            .ok()?;
        (left == 0).then_some(())
    })
    .await;
    assert_eq!(
        status(&redis, &cli_logs).await["nodes"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_no_denial("n1", &n1.logs());
    assert_no_denial("n2", &n2.logs());
    for node in [&n1, &n2] {
        assert!(
            node.logs()
                .iter()
                .any(|l| l.contains("deregistered from Redis")),
            "{}",
            node.name
        );
    }
}
