//! The Redis key schema. Every key and channel ebb touches is built here, and nowhere else.
//!
//! All keys of a cluster share the prefix `ebb:{<cluster>}:`; the braces are a Redis Cluster hash
//! tag, so one cluster's keys live in one slot and multi-key scripts stay legal.
//!
//! | builder | type | written by | read by |
//! | --- | --- | --- | --- |
//! | [`Keys::node`] `ebb:{c}:node:<name>` | hash ([`crate::record`] fields), TTL [`NODE_TTL`] refreshed every [`HEARTBEAT_INTERVAL`] | node | coordinator |
//! | [`Keys::nodes`] `ebb:{c}:nodes` | sorted set: member = node name, score = last heartbeat (ms) | node | coordinator (listing without SCAN) |
//! | [`Keys::commands`] `ebb:{c}:commands:<name>` | pub/sub channel of [`crate::command`] payloads | coordinator, CI/CD, `redis-cli` | node |
//! | [`Keys::desired`] `ebb:{c}:desired:<name>` | string: the last command payload, TTL [`DESIRED_TTL`] | coordinator | node, on (re)connect |
//! | [`Keys::instance`] `ebb:{c}:instance:<name>:<uuid>` | hash: the same fields as the record, this process's own, TTL [`NODE_TTL`] | node (every heartbeat) | coordinator (is the old instance still alive?) |
//! | [`Keys::nonce`] `ebb:{c}:nonce:<nonce>` | string, `SET NX PX` until the command expires | node (on applying a signed command) | node (replay check) |
//! | [`Keys::events`] `ebb:{c}:events` | pub/sub channel of [`crate::event`] JSON | node | coordinator |
//! | [`Keys::rollout_lock`] `ebb:{c}:rollout:lock` | string: holder token, PX expiry [`ROLLOUT_LOCK_TTL`] | coordinator | coordinator |
//! | [`Keys::rollout_control`] `ebb:{c}:rollout:control` | string: [`crate::control`] JSON (sealed with a secret) | `ebb rollout`, CI, coordinator (`--pause-after`) | coordinator (every tick) |
//! | [`Keys::rollout_state`] `ebb:{c}:rollout:state` | string: JSON rollout progress, for `--resume` | coordinator | coordinator |

pub use crate::name::{MAX_NAME_LEN, NameError, NodeName, validate_name};
use std::time::Duration;
use uuid::Uuid;

/// Every key starts with this.
pub const KEY_ROOT: &str = "ebb";
/// The cluster used when none is given.
pub const DEFAULT_CLUSTER: &str = "default";
/// How long a node record outlives its last heartbeat. A SIGKILLed node disappears after this.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// How often a node refreshes its record (and its connection count while active).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a desired-state command is kept for a node that is disconnected from Redis.
pub const DESIRED_TTL: Duration = Duration::from_secs(24 * 3600);
/// Expiry of the rollout lock; the holder renews it every third of this.
pub const ROLLOUT_LOCK_TTL: Duration = Duration::from_secs(15);
/// How far apart the clocks of nodes and coordinators may be. A record whose `updated_at_ms` is
/// older than [`NODE_TTL`] plus this is stale (a replayed or leftover copy), and one from further
/// in the future than this is refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Longest nonce, in bytes. Nonces go into keys ([`Keys::nonce`]), so they follow the name rule.
pub const MAX_NONCE_LEN: usize = 64;

/// The key and channel builder of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    cluster: String,
    prefix: String,
}

impl Keys {
    /// Keys of cluster `cluster`; the name is validated so every key built is well formed.
    pub fn new(cluster: &str) -> Result<Self, NameError> {
        validate_name(cluster)?;
        Ok(Keys {
            cluster: cluster.to_owned(),
            prefix: format!("{KEY_ROOT}:{{{cluster}}}:"),
        })
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `ebb:{c}:node:<name>`: the node record hash.
    pub fn node(&self, name: &NodeName) -> String {
        format!("{}node:{name}", self.prefix)
    }

    /// `ebb:{c}:nodes`: the index of node names, scored by last heartbeat.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// `ebb:{c}:commands:<name>`: the channel a node listens on for its commands.
    pub fn commands(&self, name: &NodeName) -> String {
        format!("{}commands:{name}", self.prefix)
    }

    /// `ebb:{c}:desired:<name>`: the last command for a node, reconciled on (re)connect.
    pub fn desired(&self, name: &NodeName) -> String {
        format!("{}desired:{name}", self.prefix)
    }

    /// `ebb:{c}:instance:<name>:<instance>`: one process's own copy of its record, written on
    /// every heartbeat whether or not it still owns [`Keys::node`], so the coordinator can tell
    /// that an old instance is still alive after its replacement took the name over.
    pub fn instance(&self, name: &NodeName, instance: Uuid) -> String {
        format!("{}instance:{name}:{}", self.prefix, instance.simple())
    }

    /// `ebb:{c}:nonce:<nonce>`: a signed command's nonce, remembered until the command expires
    /// (`SET NX PX`), so a replay is refused even by a node that restarted since.
    pub fn nonce(&self, nonce: &str) -> String {
        format!("{}nonce:{nonce}", self.prefix)
    }

    /// `ebb:{c}:events`: the channel every node of the cluster publishes events on.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// `ebb:{c}:rollout:lock`: one rollout per cluster.
    pub fn rollout_lock(&self) -> String {
        format!("{}rollout:lock", self.prefix)
    }

    /// `ebb:{c}:rollout:control`: the mode the running rollout should be in
    /// ([`crate::control`]).
    pub fn rollout_control(&self) -> String {
        format!("{}rollout:control", self.prefix)
    }

    /// `ebb:{c}:rollout:state`: progress of the current rollout, for `--resume`.
    pub fn rollout_state(&self) -> String {
        format!("{}rollout:state", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tagged_prefix() {
        let keys = Keys::new("prod-eu").unwrap();
        let a = NodeName::parse("a").unwrap();
        for key in [
            keys.node(&a),
            keys.nodes(),
            keys.commands(&a),
            keys.desired(&a),
            keys.instance(&a, Uuid::nil()),
            keys.nonce("n1"),
            keys.events(),
            keys.rollout_lock(),
            keys.rollout_state(),
            keys.rollout_control(),
        ] {
            assert!(key.starts_with("ebb:{prod-eu}:"), "{key}");
        }
        let web = NodeName::parse("web-1").unwrap();
        assert_eq!(keys.node(&web), "ebb:{prod-eu}:node:web-1");
        assert_eq!(keys.commands(&web), "ebb:{prod-eu}:commands:web-1");
        assert_eq!(
            keys.instance(&web, Uuid::nil()),
            "ebb:{prod-eu}:instance:web-1:00000000000000000000000000000000"
        );
    }

    #[test]
    fn names_are_validated() {
        assert!(Keys::new("default").is_ok());
        assert_eq!(Keys::new(""), Err(NameError::Empty));
        assert!(matches!(Keys::new("a}b"), Err(NameError::BadChar(_))));
        assert!(matches!(Keys::new("a:b"), Err(NameError::BadChar(_))));
        assert_eq!(validate_name(&"x".repeat(129)), Err(NameError::TooLong));
        assert!(validate_name("node-1.eu_west").is_ok());
    }
}
