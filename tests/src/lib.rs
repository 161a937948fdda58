//! ebb's test harness: the pieces every scenario in `tests/` needs, so each scenario reads as
//! what it proves.
//!
//! - [`artifacts`]: where tests leave screenshots and page dumps (`target/test-artifacts/`);
//! - [`bench`]: the benchmarks' flags;
//! - [`bin`]: where the workspace's binaries are;
//! - [`process`]: a node (or any ebb binary) as a child process, its logs, signals and exit;
//! - [`procfs`]: memory and CPU time of a process, for benchmarks;
//! - [`http`]: a small real HTTP/1.1 client (hyper) for `/health`, `/metrics`, `/admin/*`;
//! - [`hostile`]: small hostile servers (raw HTTP refusals, scripted WebSocket servers) for
//!   client tests, and an address nothing listens on;
//! - [`ws`]: WebSocket clients: a well-behaved one (tokio-tungstenite) and a raw one that speaks
//!   the protocol by hand so it can misbehave (never answer a Close or a ping);
//! - [`fleet`]: a cluster of supervised nodes in Redis, the `ebb` CLI, and the event log;
//! - [`readiness`]: every node's `/health` sampled through a rollout, as a load balancer sees it;
//! - [`redis`]: Redis in a container (testcontainers, from the locally built image), over plain
//!   TCP or TLS;
//! - [`tls`]: a CA and a server certificate made for one test;
//! - [`sentinel`]: a master, a replica and three sentinels as real `redis-server` processes;
//! - [`containers`]: Redis and supervised `ebb-node` containers on a per-test Docker network,
//!   with faults to inject (kill, pause, Redis stop/start, cutting a node off from Redis);
//! - [`browser`]: a real headless Chromium driven through the DevTools protocol (the status
//!   page of `ebb serve`);
//! - [`traffic`]: live reconnecting clients through a rollout, and what they lost (nothing);
//! - [`eventually`]: poll a condition until it holds, instead of sleeping.

pub mod artifacts;
pub mod bench;
pub mod bin;
pub mod browser;
pub mod containers;
pub mod eventually;
pub mod fleet;
pub mod hostile;
pub mod http;
pub mod process;
pub mod procfs;
pub mod readiness;
pub mod redis;
pub mod redis_cluster;
pub mod sentinel;
pub mod tls;
pub mod traffic;
pub mod ws;

pub use eventually::eventually;

/// `name` as a [`ebb_proto::NodeName`]; panics on a name the test got wrong.
pub fn node_name(name: &str) -> ebb_proto::NodeName {
    ebb_proto::NodeName::parse(name).unwrap_or_else(|e| panic!("test node name {name:?}: {e}"))
}
