//! ebb's wire protocol: everything a node, a coordinator and a client must agree on, and no I/O.
//!
//! `node`, `coordinator` and `client` never depend on each other; this crate is all they share, so
//! a change to any format happens here once and every side sees it.
//!
//! Layout:
//! - [`name`]: [`NodeName`], the only way a node name gets anywhere;
//! - [`keys`]: the Redis key and channel schema, TTLs and intervals (nobody else formats a key);
//! - [`acl`]: Redis ACL rules per role (node, coordinator, trigger, viewer), from that schema;
//! - [`state`]: the node lifecycle states as stored and published;
//! - [`record`]: the node record hash a node writes and the coordinator reads;
//! - [`command`]: drain / resume commands, their validation, signing envelope and refusals;
//! - [`control`]: pause, continue or abort a running rollout from anywhere;
//! - [`event`]: what nodes publish so the coordinator reacts without polling;
//! - [`close`]: WebSocket close codes and the close reason that carries a reconnect hint;
//! - [`notice`]: the seed article's `server_shutdown` text notice;
//! - [`request`]: requests to the coordinator service (`ebb serve`), through a Redis Stream;
//! - [`sign`]: HMAC-SHA256 signing and the signed envelope, per domain;
//! - [`target`]: reconnect targets a drain or shed hands its clients;
//! - [`time`]: wall-clock milliseconds, the unit every timestamp on the wire uses.

pub mod acl;
pub mod chat;
pub mod close;
pub mod command;
pub mod control;
pub mod event;
pub mod keys;
pub mod name;
pub mod notice;
pub mod record;
pub mod request;
pub mod sign;
pub mod state;
pub mod target;
pub mod time;

pub use close::CloseReason;
pub use command::{Command, Refusal};
pub use event::{Event, EventKind, EventRefusal};
pub use keys::Keys;
pub use name::{NameError, NodeName};
pub use notice::ShutdownNotice;
pub use record::NodeRecord;
pub use state::NodeState;
