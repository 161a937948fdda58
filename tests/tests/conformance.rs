//! The node protocol's conformance suite (docs/protocol.md): the same scenarios against every
//! implementation of it, seen only through Redis and the network, as the coordinator sees a
//! node. Each scenario is written once against [`Subject`] and run for each kind:
//! - `node`: ebb-node, the reference binary of the Rust library;
//! - `agent`: ebb-agent running the Node.js server of examples/node-ws, which knows nothing of
//!   ebb.
//!
//! A native agent in another language joins by adding a [`Kind`] that starts it. Every
//! scenario runs with a shared secret, as production does.
//!
//! 1. registration: the record's fields and bounds, the index entry, its TTL, the heartbeat,
//!    the real count, `registered`, and `ebb status` listing it;
//! 2. a signed drain: `draining` at once (the acknowledgement), the clients closed with 1001,
//!    then `drained {clean, forced}`, `deregistered`, the record, copy and index entry gone,
//!    exit 0;
//! 3. SIGTERM: the same drain and the same goodbye, without a command;
//! 4. refusals: garbage, oversized, unsigned, forged, foreign and replayed commands are
//!    refused, reported in `command_refused` by reason, and change nothing;
//! 5. the desired state: a predecessor's drain left in it does not drain a new instance.

use ebb_proto::command::{Action, Then};
use ebb_proto::sign::Secret;
use ebb_proto::{Command, EventKind, Keys, NodeState};
use ebb_tests::fleet::{EventLog, ebb};
use ebb_tests::process::{Node, Proc};
use ebb_tests::redis::Redis;
use ebb_tests::sentinel::free_port;
use ebb_tests::ws::{Client, Seen};
use ebb_tests::{eventually, node_name};
use nix::sys::signal::Signal;
use redis::AsyncCommands;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use uuid::Uuid;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const CLUSTER: &str = "conformance";
const SECRET: &str = "conformance-secret-0123456789abcdef";

#[derive(Debug, Clone, Copy)]
enum Kind {
    Node,
    Agent,
}

/// One implementation of the protocol, running as node `name`.
struct Subject {
    name: String,
    port: u16,
    kind: Kind,
    proc: Proc,
}

impl Subject {
    /// Starts it and waits until its record says `active`.
    async fn start(kind: Kind, redis: &Redis, name: &str) -> Subject {
        let port = free_port();
        let common = [
            "--redis",
            redis.url(),
            "--cluster",
            CLUSTER,
            "--name",
            name,
            "--secret",
            SECRET,
            "--heartbeat-interval",
            "300ms",
            "--record-ttl",
            "2s",
        ];
        let proc = match kind {
            Kind::Node => {
                let listen = format!("127.0.0.1:{port}");
                let mut args = common.to_vec();
                args.extend(["--listen", &listen, "--close-spread", "300ms"]);
                Node::start(&args).await.proc
            }
            Kind::Agent => {
                let (advertise, health) = (
                    format!("ws://127.0.0.1:{port}/"),
                    format!("http://127.0.0.1:{port}/health"),
                );
                let mut args: Vec<String> = common.iter().map(|s| s.to_string()).collect();
                let server = format!(
                    "{}/../examples/node-ws/server.js",
                    env!("CARGO_MANIFEST_DIR")
                );
                args.extend(
                    [
                        "--advertise-url",
                        &advertise,
                        "--health-url",
                        &health,
                        "--poll-interval",
                        "100ms",
                        "--",
                        "node",
                        &server,
                    ]
                    .map(String::from),
                );
                let port = port.to_string();
                Proc::spawn_with_env(
                    &ebb_tests::bin::path("ebb-agent"),
                    &args,
                    Default::default(),
                    &[("PORT", &port)],
                )
            }
        };
        let subject = Subject {
            name: name.to_owned(),
            port,
            kind,
            proc,
        };
        eventually(&format!("{kind:?} {name} active"), SECS(20), || async {
            (record(redis, name).await.get("state").map(String::as_str) == Some("active"))
                .then_some(())
        })
        .await;
        subject
    }

    fn ws_url(&self) -> String {
        match self.kind {
            Kind::Node => format!("ws://127.0.0.1:{}/ws", self.port),
            Kind::Agent => format!("ws://127.0.0.1:{}/", self.port),
        }
    }

    /// `n` clients, each answered once.
    async fn clients(&self, n: usize) -> Vec<Client> {
        let mut clients = Vec::new();
        for i in 0..n {
            let mut client = Client::connect(&self.ws_url()).await;
            client.send(&format!("hello {i}")).await;
            assert_eq!(
                client.next(SECS(5)).await,
                Seen::Text(format!("Echo: hello {i}"))
            );
            clients.push(client);
        }
        clients
    }
}

fn keys() -> Keys {
    Keys::new(CLUSTER).unwrap()
}

async fn record(redis: &Redis, name: &str) -> HashMap<String, String> {
    redis
        .connection()
        .await
        .hgetall(keys().node(&node_name(name)))
        .await
        .unwrap()
}

async fn wait_connections(redis: &Redis, name: &str, n: u64) {
    eventually(&format!("{name}'s record counts {n}"), SECS(10), || async {
        (record(redis, name).await.get("connections") == Some(&n.to_string())).then_some(())
    })
    .await;
}

/// The kinds of events `instance` published, in order.
fn kinds_of(events: &EventLog, instance: Uuid) -> Vec<EventKind> {
    events
        .events()
        .into_iter()
        .filter(|(_, e)| e.instance == instance)
        .map(|(_, e)| e.kind)
        .collect()
}

fn position(kinds: &[EventKind], what: &str, pred: impl Fn(&EventKind) -> bool) -> usize {
    kinds
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no {what} in {kinds:#?}"))
}

/// Asserts the goodbye of a drained instance: `draining`, then `drained` with `clean` clients
/// and none forced, then `deregistered`; and nothing of it left in Redis.
async fn assert_drained_and_gone(
    redis: &Redis,
    events: &EventLog,
    name: &str,
    instance: Uuid,
    clean: u64,
) {
    let kinds = eventually("the goodbye published", SECS(5), || async {
        let kinds = kinds_of(events, instance);
        kinds
            .iter()
            .any(|k| matches!(k, EventKind::Deregistered {}))
            .then_some(kinds)
    })
    .await;
    let draining = position(&kinds, "draining", |k| {
        matches!(
            k,
            EventKind::State {
                state: NodeState::Draining,
                ..
            }
        )
    });
    let drained = position(&kinds, "drained", |k| {
        matches!(k, EventKind::Drained { .. })
    });
    let gone = position(&kinds, "deregistered", |k| {
        matches!(k, EventKind::Deregistered {})
    });
    assert!(draining < drained && drained < gone, "{kinds:#?}");
    assert!(
        matches!(kinds[drained], EventKind::Drained { clean: c, forced: 0, then: Then::Exit, .. } if c == clean),
        "{:?}",
        kinds[drained]
    );
    let n = node_name(name);
    let mut c = redis.connection().await;
    assert!(record(redis, name).await.is_empty(), "the record is gone");
    let copy: bool = c.exists(keys().instance(&n, instance)).await.unwrap();
    assert!(!copy, "the per-instance copy is gone");
    let indexed: Option<f64> = c.zscore(keys().nodes(), name).await.unwrap();
    assert_eq!(indexed, None, "the index entry is gone");
}

async fn registers_with_its_real_count_and_keeps_its_record_fresh(kind: Kind) {
    let redis = Redis::run().await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let subject = Subject::start(kind, &redis, "c1").await;
    let r = record(&redis, "c1").await;
    assert_eq!(r["name"], "c1");
    let instance: Uuid = r["instance"].parse().expect("a UUID");
    assert!(
        r["url"].starts_with("ws://") && r["url"].len() <= 64,
        "{r:?}"
    );
    assert!(
        r["url"].is_ascii() && !r["url"].contains(['"', '\\']),
        "{r:?}"
    );
    assert_eq!(r["connections"], "0");
    let started: u64 = r["started_at_ms"].parse().unwrap();
    let updated: u64 = r["updated_at_ms"].parse().unwrap();
    assert!(started <= updated, "{r:?}");
    assert!(
        r.contains_key("sig"),
        "a record is signed under a secret: {r:?}"
    );
    let mut c = redis.connection().await;
    let ttl: i64 = c.pttl(keys().node(&node_name("c1"))).await.unwrap();
    assert!(
        ttl > 0 && ttl <= 2000,
        "the record expires unless refreshed: {ttl}"
    );
    let indexed: Option<f64> = c.zscore(keys().nodes(), "c1").await.unwrap();
    assert!(indexed.is_some(), "listed in the index");
    let copy: bool = c
        .exists(keys().instance(&node_name("c1"), instance))
        .await
        .unwrap();
    assert!(copy, "the per-instance copy is written");
    events
        .wait_for(SECS(5), |e| {
            e.instance == instance
                && matches!(
                    e.kind,
                    EventKind::Registered {
                        state: NodeState::Active,
                        ..
                    }
                )
        })
        .await;

    let _clients = subject.clients(3).await;
    wait_connections(&redis, "c1", 3).await;
    eventually("the heartbeat refreshes the record", SECS(5), || async {
        let now: u64 = record(&redis, "c1")
            .await
            .get("updated_at_ms")?
            .parse()
            .ok()?;
        (now > updated).then_some(())
    })
    .await;
    let (code, stdout, logs) = ebb(
        redis.url(),
        CLUSTER,
        &["status", "--json", "--secret", SECRET],
        SECS(10),
    )
    .await;
    assert_eq!(code, 0, "{logs:?}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let listed = &status["nodes"][0];
    assert_eq!(
        (listed["name"].as_str(), listed["connections"].as_u64()),
        (Some("c1"), Some(3)),
        "{status}"
    );
    assert_eq!(listed["state"], "active", "{status}");
}

async fn a_signed_drain_closes_the_clients_and_says_goodbye_in_order(kind: Kind) {
    let redis = Redis::run().await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let mut subject = Subject::start(kind, &redis, "c1").await;
    let instance: Uuid = record(&redis, "c1").await["instance"].parse().unwrap();
    let clients = subject.clients(2).await;
    wait_connections(&redis, "c1", 2).await;
    // The clients answer the Close frames while `ebb drain --wait` waits.
    let drain = ebb(
        redis.url(),
        CLUSTER,
        &["drain", "c1", "--wait", "--secret", SECRET],
        SECS(30),
    );
    let closes = async {
        let mut closes = Vec::new();
        // Each client hangs up after the handshake, as a real one does (the server waits for
        // that before it counts the connection closed).
        for mut client in clients {
            closes.push(client.until_close(SECS(10)).await.1);
        }
        closes
    };
    let ((code, _, logs), closes) = tokio::join!(drain, closes);
    assert_eq!(code, 0, "{logs:?}");
    for close in closes {
        assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    }
    let status = subject.proc.wait(SECS(15)).await;
    assert_eq!(status.code(), Some(0), "{:#?}", subject.proc.logs());
    assert_drained_and_gone(&redis, &events, &subject.name, instance, 2).await;
    let kinds = kinds_of(&events, instance);
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, EventKind::CommandApplied { action, .. } if action == "drain")),
        "{kinds:#?}"
    );
}

async fn sigterm_drains_and_says_goodbye_like_a_command(kind: Kind) {
    let redis = Redis::run().await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let mut subject = Subject::start(kind, &redis, "c1").await;
    let instance: Uuid = record(&redis, "c1").await["instance"].parse().unwrap();
    let clients = subject.clients(2).await;
    wait_connections(&redis, "c1", 2).await;
    subject.proc.signal(Signal::SIGTERM);
    for mut client in clients {
        let (_, close, _) = client.until_close(SECS(10)).await;
        assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    }
    assert_eq!(
        subject.proc.wait(SECS(15)).await.code(),
        Some(0),
        "{:#?}",
        subject.proc.logs()
    );
    assert_drained_and_gone(&redis, &events, &subject.name, instance, 2).await;
}

async fn bad_commands_are_refused_by_reason_and_change_nothing(kind: Kind) {
    let redis = Redis::run().await;
    let events = EventLog::start(redis.url(), CLUSTER).await;
    let subject = Subject::start(kind, &redis, "c1").await;
    let instance: Uuid = record(&redis, "c1").await["instance"].parse().unwrap();
    let mut clients = subject.clients(1).await;
    let channel = keys().commands(&node_name("c1"));
    let mut c = redis.connection().await;
    let mut publish = async |payload: Vec<u8>| {
        let receivers: i64 = c.publish(&channel, payload).await.unwrap();
        assert_eq!(receivers, 1, "the subject listens on {channel}");
    };
    let secret = Secret::new(SECRET).unwrap();
    let drain =
        |cluster: &str| Command::new(cluster, node_name("c1"), Action::Drain(Default::default()));
    publish(b"\x00\xff not json".to_vec()).await;
    publish(vec![b'{'; 20_000]).await;
    publish(br#"{"v":1,"id":"x1","target":"c1","type":"drain"}"#.to_vec()).await;
    let forged =
        drain(CLUSTER).encode(Some(&Secret::new("not-the-shared-secret").unwrap()), 60_000);
    publish(forged.into_bytes()).await;
    publish(
        drain("another-cluster")
            .encode(Some(&secret), 60_000)
            .into_bytes(),
    )
    .await;
    let mut stale = drain(CLUSTER);
    stale.expires_at_ms = Some(ebb_proto::time::now_ms() - 60_000);
    publish(stale.encode(Some(&secret), 60_000).into_bytes()).await;
    let mut other = drain(CLUSTER);
    other.instance = Some(Uuid::new_v4());
    publish(other.encode(Some(&secret), 60_000).into_bytes()).await;
    // A genuine resume (it changes nothing on an active node), then the same bytes again.
    let resume = Command::new(CLUSTER, node_name("c1"), Action::Resume(Default::default()))
        .encode(Some(&secret), 60_000);
    publish(resume.clone().into_bytes()).await;
    publish(resume.into_bytes()).await;

    let expected: BTreeMap<&str, u64> = [
        ("malformed", 1),
        ("too_large", 1),
        ("unsigned", 1),
        ("bad_signature", 1),
        ("wrong_cluster", 1),
        ("expired", 1),
        ("wrong_instance", 1),
        ("replayed", 1),
    ]
    .into();
    let refused = eventually("every refusal reported by reason", SECS(10), || async {
        let mut refused: BTreeMap<String, u64> = BTreeMap::new();
        for kind in kinds_of(&events, instance) {
            if let EventKind::CommandRefused {
                reason,
                count,
                reasons,
                ..
            } = kind
            {
                if reasons.is_empty() {
                    *refused.entry(reason).or_default() += count.unwrap_or(1);
                } else {
                    for (reason, n) in reasons {
                        *refused.entry(reason).or_default() += n;
                    }
                }
            }
        }
        let all = expected.iter().all(|(r, n)| refused.get(*r) >= Some(n));
        all.then_some(refused)
    })
    .await;
    assert_eq!(refused.values().sum::<u64>(), 8, "{refused:?}");
    let kinds = kinds_of(&events, instance);
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, EventKind::CommandApplied { action, .. } if action == "resume")),
        "{kinds:#?}"
    );
    assert!(
        !kinds.iter().any(|k| matches!(
            k,
            EventKind::State {
                state: NodeState::Draining,
                ..
            }
        )),
        "nothing drained it: {kinds:#?}"
    );
    assert_eq!(record(&redis, "c1").await["state"], "active");
    clients[0].send("still here").await;
    assert_eq!(
        clients[0].next(SECS(5)).await,
        Seen::Text("Echo: still here".into())
    );
}

async fn a_predecessors_drain_in_the_desired_state_does_not_drain_a_new_instance(kind: Kind) {
    let redis = Redis::run().await;
    // What a coordinator left for the process before this one, a second ago: a drain, then
    // exit, for any instance.
    let mut drain = Command::new(
        CLUSTER,
        node_name("c1"),
        Action::Drain(ebb_proto::command::Drain {
            then: Then::Exit,
            deadline_ms: None,
            targets: Vec::new(),
        }),
    );
    drain.issued_at_ms = Some(ebb_proto::time::now_ms() - 1000);
    let drain = drain.encode(Some(&Secret::new(SECRET).unwrap()), 600_000);
    let _: () = redis
        .connection()
        .await
        .set(keys().desired(&node_name("c1")), drain)
        .await
        .unwrap();
    let subject = Subject::start(kind, &redis, "c1").await;
    let mut clients = subject.clients(1).await;
    // Past several heartbeats and reconcile passes, it still serves.
    let sampled_until = tokio::time::Instant::now() + SECS(2);
    while tokio::time::Instant::now() < sampled_until {
        assert_eq!(record(&redis, "c1").await["state"], "active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    clients[0].send("served").await;
    assert_eq!(
        clients[0].next(SECS(5)).await,
        Seen::Text("Echo: served".into())
    );
}

/// One `#[tokio::test]` per kind for each scenario.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod node {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Kind::Node).await;
            })*
        }
        mod agent {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Kind::Agent).await;
            })*
        }
    };
}

conformance!(
    registers_with_its_real_count_and_keeps_its_record_fresh,
    a_signed_drain_closes_the_clients_and_says_goodbye_in_order,
    sigterm_drains_and_says_goodbye_like_a_command,
    bad_commands_are_refused_by_reason_and_change_nothing,
    a_predecessors_drain_in_the_desired_state_does_not_drain_a_new_instance,
);
