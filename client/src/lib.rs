//! ebb-client: WebSocket clients for fleets that drain.
//!
//! [`Client`] survives rolling restarts: it honours the delay a draining server advises, fails
//! over between URLs, resends what was not answered and drops duplicate answers, so the
//! application sees every reply exactly once. `ebb-load` (the binary) uses it to put a fleet
//! under load through a drain or a rolling restart.
//!
//! Layout:
//! - [`client`]: the reconnecting client ([`Client`], [`ClientConfig`], [`Event`]), with what
//!   bounds it (`max_pending`, `events_capacity`, `max_advised`);
//! - `task` (private): the task behind a client, which reconnects and waits as advised;
//! - `session` (private): one connection, writing pending messages while reading replies;
//! - `plan` (private): where and when to connect next, and what servers advised;
//! - `follow` (private): which reconnect targets a server names are followed (configured URLs
//!   only, by default);
//! - `sequence` (private): the push seqs seen, the resume point, duplicates;
//! - [`backoff`]: advised delays and full-jitter exponential backoff;
//! - [`protocol`]: how messages carry ids and pushes their sequence numbers ([`Correlate`],
//!   [`Echo`] for ebb's echo app, [`Chat`] for its chat app);
//! - [`stats`]: what a client counts;
//! - [`connect`]: one connection, optionally from a chosen source address;
//! - [`load`]: the modes of `ebb-load`.

pub mod backoff;
pub mod client;
pub mod connect;
mod follow;
pub mod load;
mod plan;
pub mod protocol;
mod sequence;
mod session;
pub mod stats;
mod task;

pub use backoff::Backoff;
pub use client::{Client, ClientConfig, Event, SendError};
pub use protocol::{Chat, Correlate, Echo};
pub use stats::Stats;
