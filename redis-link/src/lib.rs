//! ebb's one Redis connection layer.
//!
//! Every binary that takes `--redis` (ebb-node, `ebb`, ebb-agent, the test harness) parses it here,
//! once, at the edge, into a [`RedisTarget`]: which topology (a single server over plain TCP or
//! TLS, Sentinel, Cluster), which addresses, which credentials. A bad URL is refused with a
//! [`TargetError`] that names what is wrong, and a target's `Display` never shows a password, so
//! it can go into logs, `ebb status` and reports as it is.
//!
//! A crate of its own rather than a module of `ebb-proto`: `proto` holds the wire types and key
//! schema and depends on no Redis client; the connection functions that will live here (command
//! connections, pub/sub subscriptions that follow a failover) need redis-rs, and only the crates
//! that talk to Redis should pay for it.
//!
//! Layout:
//! - [`target`]: the URL forms, the parser, the redacted display;
//! - [`client`]: a redis-rs client for a target;
//! - [`cli`]: the `--redis` flag's clap parser, which never quotes the URL back;
//! - [`link`]: where connections come from, re-resolved through the sentinels at every connect,
//!   through redis-rs's cluster client on a Cluster;
//! - [`connection`]: one live connection, to a server or across a Cluster;
//! - [`subscription`]: pub/sub (sharded on a Cluster) and what its pushes mean;
//! - [`conn`]: the request/response connection that reconnects through its link.

pub mod cli;
pub mod client;
pub mod conn;
pub mod connection;
pub mod link;
pub mod subscription;
pub mod target;

pub use cli::TargetParser;
pub use client::{ClientError, client, connection_info, without_setinfo};
pub use conn::{Conn, breaks_connection};
pub use connection::Connection;
pub use link::Link;
pub use subscription::{Pushed, Subscription, pushed};
pub use target::{Credentials, HostPort, RedisTarget, TargetError, Topology};
