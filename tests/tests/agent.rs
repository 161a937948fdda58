//! `ebb-agent` with a server written in another language: the Node.js server of
//! `examples/node-ws/` (Debian's `node-ws`), run by the agent as its child against a real
//! Redis. Its record carries the app's real connection count, read from its `/health`; a drain
//! command sends it SIGTERM, the agent follows it to its exit, reports drained, deregisters and
//! exits with the app's status. A health answer that is not a count is an error, never a
//! registration; `then: stay` is refused; the app dying on its own is lost, not drained. And
//! a fleet of three such apps, each under a restart-on-exit supervisor, is rolled by `ebb
//! rolling-restart` with ebb-load's soak clients across them. The app never outlives its agent
//! (a SIGKILLed agent's app drains and exits); `--pid` attaches to a running app;
//! `--drain-deadline` ends an app that will not stop.

use ebb_proto::EventKind;
use ebb_proto::Keys;
use ebb_tests::fleet::{EventLog, ebb};
use ebb_tests::process::Proc;
use ebb_tests::readiness::{self, Readiness};
use ebb_tests::redis::Redis;
use ebb_tests::sentinel::free_port;
use ebb_tests::ws::{Client, Seen};
use ebb_tests::{eventually, node_name};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "agent";

fn server_js() -> String {
    format!(
        "{}/../examples/node-ws/server.js",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `ebb-agent` running the Node.js server on `port` as node `name`.
fn agent(redis: &Redis, name: &str, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    agent_at(redis.url(), name, port, extra, env)
}

fn agent_at(url: &str, name: &str, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut args = agent_args(url, name, port, extra);
    args.extend(["--".to_owned(), "node".to_owned(), server_js()]);
    let port = port.to_string();
    let mut env = env.to_vec();
    env.push(("PORT", &port));
    spawn_agent(&args, &env)
}

/// The agent's flags for node `name` of an app on `port`, without the app.
fn agent_args(url: &str, name: &str, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--redis",
        url,
        "--cluster",
        CLUSTER,
        "--name",
        name,
        "--advertise-url",
        &format!("ws://127.0.0.1:{port}/"),
        "--health-url",
        &format!("http://127.0.0.1:{port}/health"),
        "--heartbeat-interval",
        "300ms",
        "--record-ttl",
        "2s",
        "--poll-interval",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn spawn_agent(args: &[String], env: &[(&str, &str)]) -> Proc {
    Proc::spawn_with_env(
        &ebb_tests::bin::path("ebb-agent"),
        args,
        Default::default(),
        env,
    )
}

/// The Node.js server on `port`, started by the test (not by an agent).
fn app(port: u16) -> Proc {
    let port = port.to_string();
    Proc::spawn_with_env(
        std::path::Path::new("node"),
        &[server_js()],
        Default::default(),
        &[("PORT", &port)],
    )
}

/// The pid of the app an agent runs, from its "app healthy" line.
async fn app_pid(agent: &Proc) -> Pid {
    let line = agent.wait_log("app healthy", SECS(5)).await;
    line.split("pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .map(Pid::from_raw)
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X'))
    })
}

async fn record(redis: &Redis, name: &str) -> HashMap<String, String> {
    let key = Keys::new(CLUSTER).unwrap().node(&node_name(name));
    let mut conn = redis.connection().await;
    conn.hgetall(key).await.unwrap()
}

async fn wait_count(redis: &Redis, name: &str, count: &str) {
    eventually(
        &format!("{name}'s record: active with {count} connections"),
        SECS(15),
        || async {
            let r = record(redis, name).await;
            (r.get("state").map(String::as_str) == Some("active")
                && r.get("connections").map(String::as_str) == Some(count))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_node_js_server_under_ebb_agent_registers_its_real_count_and_drains_on_command() {
    let redis = Redis::run().await;
    let port = free_port();
    let mut agent = agent(&redis, "n1", port, &[], &[]);
    wait_count(&redis, "n1", "0").await;
    let url = format!("ws://127.0.0.1:{port}/");
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut client = Client::connect(&url).await;
        client.send(&format!("hello {i}")).await;
        assert_eq!(
            client.next(SECS(5)).await,
            Seen::Text(format!("Echo: hello {i}"))
        );
        clients.push(client);
    }
    wait_count(&redis, "n1", "3").await;
    let (code, stdout, logs) = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["nodes"][0]["connections"], 3, "{status}");

    let (code, _, logs) = ebb(redis.url(), CLUSTER, &["drain", "n1", "--wait"], SECS(30)).await;
    assert_eq!(code, 0, "{logs:?}");
    for client in &mut clients {
        let (_, close, _) = client.until_close(SECS(10)).await;
        assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    }
    let status = agent.wait(SECS(15)).await;
    assert_eq!(status.code(), Some(0), "{:#?}", agent.logs());
    assert!(record(&redis, "n1").await.is_empty(), "deregistered");
}

#[tokio::test]
async fn the_count_can_come_from_prometheus_and_the_drain_from_a_post() {
    let redis = Redis::run().await;
    let port = free_port();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let drain = format!("http://127.0.0.1:{port}/drain");
    // The health answer holds no count, and SIGTERM is ignored: the metric and the POST are
    // the only ways.
    let extra = [
        "--metrics-url",
        &metrics,
        "--connections-metric",
        "app_connections",
        "--drain-url",
        &drain,
    ];
    let env = [("HEALTH_GARBAGE", "1"), ("IGNORE_SIGTERM", "1")];
    let mut agent = agent(&redis, "n1", port, &extra, &env);
    wait_count(&redis, "n1", "0").await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(Client::connect(&format!("ws://127.0.0.1:{port}/")).await);
    }
    wait_count(&redis, "n1", "2").await;
    let (code, _, logs) = ebb(redis.url(), CLUSTER, &["drain", "n1", "--wait"], SECS(30)).await;
    assert_eq!(code, 0, "{logs:?}");
    for client in &mut clients {
        let (_, close, _) = client.until_close(SECS(10)).await;
        assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    }
    assert_eq!(
        agent.wait(SECS(15)).await.code(),
        Some(0),
        "{:#?}",
        agent.logs()
    );
}

#[tokio::test]
async fn a_health_answer_that_is_not_a_count_is_an_error_not_a_registration() {
    let redis = Redis::run().await;
    let port = free_port();
    let mut agent = agent(
        &redis,
        "n1",
        port,
        &["--start-timeout", "2s"],
        &[("HEALTH_GARBAGE", "1")],
    );
    let status = agent.wait(SECS(15)).await;
    assert_eq!(status.code(), Some(1));
    let line = agent.wait_log("did not answer", SECS(5)).await;
    assert!(line.contains("no non-negative integer"), "{line}");
    assert!(record(&redis, "n1").await.is_empty(), "never registered");
    // And the app was not left behind: nothing listens on its port any more.
    eventually("the app gone", SECS(5), || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn then_stay_is_refused_and_the_app_dying_on_its_own_is_lost_not_drained() {
    let redis = Redis::run().await;
    let port = free_port();
    let mut agent = agent(&redis, "n1", port, &[], &[]);
    wait_count(&redis, "n1", "0").await;
    let (code, _, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["drain", "n1", "--then", "stay"],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    agent
        .wait_log("drain refused: `then: stay`", SECS(10))
        .await;
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/")).await;
    client.send("still up").await;
    assert_eq!(
        client.next(SECS(5)).await,
        Seen::Text("Echo: still up".into())
    );
    assert_eq!(record(&redis, "n1").await["state"], "active");

    // The app killed under the agent: the agent exits with its status and leaves the record to
    // expire (no `drained`, no deregistration).
    let pid = app_pid(&agent).await;
    nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
    let status = agent.wait(SECS(10)).await;
    assert_eq!(status.code(), Some(128 + 9), "{:#?}", agent.logs());
    // Its last words may still be on their way through the pipe after the exit.
    agent.wait_log("reported as lost", SECS(5)).await;
    let left = record(&redis, "n1").await;
    assert_eq!(
        left.get("state").map(String::as_str),
        Some("active"),
        "{left:?}"
    );
}

#[tokio::test]
async fn an_agent_killed_with_sigkill_takes_its_app_down_with_a_graceful_drain() {
    let redis = Redis::run().await;
    let port = free_port();
    let mut agent = agent(&redis, "n1", port, &[], &[]);
    wait_count(&redis, "n1", "0").await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(Client::connect(&format!("ws://127.0.0.1:{port}/")).await);
    }
    wait_count(&redis, "n1", "2").await;
    let pid = app_pid(&agent).await;
    agent.signal(Signal::SIGKILL);
    assert_eq!(agent.wait(SECS(5)).await.signal(), Some(9));
    // The kernel sent the app its drain signal: it closes its clients cleanly and exits.
    for client in &mut clients {
        let (_, close, _) = client.until_close(SECS(10)).await;
        assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    }
    eventually("the orphaned app gone", SECS(15), || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_app_still_running_at_its_drain_deadline_is_killed_and_its_clients_counted_forced() {
    let redis = Redis::run().await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let port = free_port();
    // The app ignores its drain signal: only the deadline ends it.
    let mut agent = agent(
        &redis,
        "n1",
        port,
        &["--drain-deadline", "2s"],
        &[("IGNORE_SIGTERM", "1")],
    );
    wait_count(&redis, "n1", "0").await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(Client::connect(&format!("ws://127.0.0.1:{port}/")).await);
    }
    wait_count(&redis, "n1", "2").await;
    let started = std::time::Instant::now();
    let (code, _, logs) = ebb(redis.url(), CLUSTER, &["drain", "n1"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    assert_eq!(
        agent.wait(SECS(15)).await.code(),
        Some(128 + 9),
        "{:#?}",
        agent.logs()
    );
    assert!(started.elapsed() >= SECS(2), "not before its deadline");
    agent.wait_log("drain deadline; killing it", SECS(5)).await;
    let drained = eventually("the drained event", SECS(5), || async {
        events.events().into_iter().find_map(|(_, e)| match e.kind {
            EventKind::Drained { clean, forced, .. } => Some((clean, forced)),
            _ => None,
        })
    })
    .await;
    assert_eq!(drained, (0, 2), "both clients were still there: forced");
    assert!(
        record(&redis, "n1").await.is_empty(),
        "deregistered all the same"
    );
}

#[tokio::test]
async fn attached_with_pid_the_agent_drains_a_process_it_did_not_start() {
    let redis = Redis::run().await;
    let port = free_port();
    let mut server = app(port);
    let pid = server.pid().to_string();
    let mut args = agent_args(redis.url(), "n1", port, &[]);
    args.extend(["--pid".to_owned(), pid.clone()]);
    let mut agent = spawn_agent(&args, &[]);
    wait_count(&redis, "n1", "0").await;
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/")).await;
    wait_count(&redis, "n1", "1").await;
    let (code, _, logs) = ebb(redis.url(), CLUSTER, &["drain", "n1", "--wait"], SECS(30)).await;
    assert_eq!(code, 0, "{logs:?}");
    let (_, close, _) = client.until_close(SECS(10)).await;
    assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    // The app's status goes to its own parent (here, the test); the agent's is 0: drained.
    assert_eq!(server.wait(SECS(15)).await.code(), Some(0));
    assert_eq!(
        agent.wait(SECS(15)).await.code(),
        Some(0),
        "{:#?}",
        agent.logs()
    );
    assert!(record(&redis, "n1").await.is_empty(), "deregistered");

    // Attached to a process that then dies on its own: lost, exit 1, the record left to expire.
    let mut server = app(port);
    let mut args = agent_args(redis.url(), "n2", port, &[]);
    args.extend(["--pid".to_owned(), server.pid().to_string()]);
    let mut agent = spawn_agent(&args, &[]);
    wait_count(&redis, "n2", "0").await;
    server.signal(Signal::SIGKILL);
    server.wait(SECS(5)).await;
    assert_eq!(
        agent.wait(SECS(10)).await.code(),
        Some(1),
        "{:#?}",
        agent.logs()
    );
    agent.wait_log("reported as lost", SECS(5)).await;
    assert_eq!(
        record(&redis, "n2").await["state"],
        "active",
        "not deregistered"
    );
}

#[tokio::test]
async fn a_bad_pid_is_refused_with_a_clear_error() {
    let redis = Redis::run().await;
    let base = agent_args(redis.url(), "n1", free_port(), &[]);
    let with = |extra: &[&str]| {
        let mut args = base.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // Not a process, not one to attach to, or both ways at once: refused before Redis is used.
    for (extra, code, says) in [
        (&["--pid", "2147483647"][..], 1, "no such process"),
        (&["--pid", "1"], 2, "--pid"),
        (&["--pid", "0"], 2, "--pid"),
        (&["--pid=-5"], 2, "--pid"),
        (&["--pid", "12; rm -rf /"], 2, "--pid"),
        (
            &["--pid", "42", "--", "node", "x.js"],
            2,
            "cannot be used with",
        ),
        (&[], 2, "required"),
    ] {
        let mut agent = spawn_agent(&with(extra), &[]);
        assert_eq!(agent.wait(SECS(10)).await.code(), Some(code), "{extra:?}");
        // Its last words may still be on their way through the pipe after the exit.
        agent.wait_log(says, SECS(5)).await;
    }
    assert!(record(&redis, "n1").await.is_empty(), "never registered");
}

/// One app name under a restart-on-exit supervisor: `ebb-agent` and its app, started again on
/// the same port whenever the agent exits.
struct Supervisor {
    starts: Arc<AtomicUsize>,
    restart: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    fn start(redis_url: &str, name: &str, port: u16) -> Supervisor {
        let (starts, restart) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(true)),
        );
        let task = tokio::spawn({
            let (starts, restart) = (starts.clone(), restart.clone());
            let (url, name) = (redis_url.to_owned(), name.to_owned());
            async move {
                while restart.load(Ordering::SeqCst) {
                    let mut proc = agent_at(&url, &name, port, &[], &[]);
                    starts.fetch_add(1, Ordering::SeqCst);
                    proc.wait(SECS(600)).await;
                }
            }
        });
        Supervisor {
            starts,
            restart,
            _task: task,
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.restart.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_fleet_of_node_js_servers_under_ebb_agent_is_rolled_one_at_a_time_losing_nothing() {
    let redis = Redis::run().await;
    let names = ["a1", "a2", "a3"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let supervisors: Vec<Supervisor> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| Supervisor::start(redis.url(), name, *port))
        .collect();
    for name in names {
        wait_count(&redis, name, "0").await;
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("ws://127.0.0.1:{p}/"))
        .collect();
    // ebb-load's soak clients across the apps, until told to stop (SIGINT), then its verdict.
    let mut soak = Proc::spawn(
        &ebb_tests::bin::path("ebb-load"),
        &[
            "soak",
            "--url",
            &urls.join(","),
            "-n",
            "30",
            "--rate",
            "300",
            "--for",
            "180s",
            "--json",
        ]
        .map(String::from),
    );
    // The apps' real counts reach their records.
    eventually("the clients counted in the records", SECS(20), || async {
        let mut total = 0;
        for name in names {
            total += record(&redis, name)
                .await
                .get("connections")?
                .parse::<u64>()
                .ok()?;
        }
        (total == 30).then_some(())
    })
    .await;
    // And `ebb status` shows them: the apps' real counts, every app active.
    let (code, stdout, logs) = ebb(redis.url(), CLUSTER, &["status", "--json"], SECS(10)).await;
    assert_eq!(code, 0, "{logs:?}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let listed = status["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{status}");
    assert!(listed.iter().all(|n| n["state"] == "active"), "{status}");
    let counted: u64 = listed
        .iter()
        .filter_map(|n| n["connections"].as_u64())
        .sum();
    assert_eq!(counted, 30, "{status}");
    let addrs = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| {
            (
                n.to_string(),
                std::net::SocketAddr::from(([127, 0, 0, 1], *p)),
            )
        })
        .collect();
    let watch = Readiness::watch_addrs(addrs);

    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["rolling-restart", "--json"],
        SECS(120),
    )
    .await;
    let report = ebb_tests::containers::report_of(&stdout);
    assert_eq!(code, 0, "{report} {logs:?}");
    assert_eq!(report["status"], "completed", "{report}");
    for (name, supervisor) in names.iter().zip(&supervisors) {
        assert_eq!(
            supervisor.starts.load(Ordering::SeqCst),
            2,
            "{name}: {report}"
        );
    }
    let samples = watch.stop().await;
    assert_eq!(
        readiness::most_out(&samples),
        1,
        "never two apps out at once"
    );
    soak.signal(Signal::SIGINT);
    let (status, stdout) = soak.wait_with_output(SECS(40)).await;
    let line = stdout.last().cloned().unwrap_or_default();
    let verdict: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
    assert_eq!(status.code(), Some(0), "{verdict}");
    assert_eq!(verdict["lost"], 0, "{verdict}");
    assert_eq!(verdict["abnormal_closes"], 0, "{verdict}");
    assert_eq!(verdict["connected_at_end"], 30, "{verdict}");
    // Every client was closed with 1001 at least once (by the app it was on) and came back.
    assert!(
        verdict["close_codes"]["1001"].as_u64() >= Some(30),
        "{verdict}"
    );
    assert!(verdict["sent"].as_u64().unwrap() > 300, "{verdict}");
}
