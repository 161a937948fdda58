//! ebb's test harness: the pieces every scenario in `tests/` needs, so each scenario reads as
//! what it proves.
//!
//! - [`bin`]: where the workspace's binaries are;
//! - [`process`]: a node (or any ebb binary) as a child process, its logs, signals and exit;
//! - [`http`]: a small real HTTP/1.1 client (hyper) for `/health`, `/metrics`, `/admin/*`;
//! - [`ws`]: WebSocket clients: a well-behaved one (tokio-tungstenite) and a raw one that speaks
//!   the protocol by hand so it can misbehave (never answer a Close or a ping);
//! - [`fleet`]: a cluster of supervised nodes in Redis, the `ebb` CLI, and the event log;
//! - [`redis`]: Redis in a container (testcontainers, from the locally built image);
//! - [`eventually`]: poll a condition until it holds, instead of sleeping.

pub mod bin;
pub mod eventually;
pub mod fleet;
pub mod http;
pub mod process;
pub mod redis;
pub mod ws;

pub use eventually::eventually;
