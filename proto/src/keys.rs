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
//! | [`Keys::events`] `ebb:{c}:events` | pub/sub channel of [`crate::event`] JSON | node | coordinator |
//! | [`Keys::rollout_lock`] `ebb:{c}:rollout:lock` | string: holder token, PX expiry [`ROLLOUT_LOCK_TTL`] | coordinator | coordinator |
//! | [`Keys::rollout_state`] `ebb:{c}:rollout:state` | string: JSON rollout progress, for `--resume` | coordinator | coordinator |

use std::time::Duration;

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
/// Largest accepted name (cluster or node), in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A cluster or node name that would break the key schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("name {0:?} has a character other than ASCII letters, digits, '.', '_' or '-'")]
    BadChar(String),
}

/// Checks a cluster or node name: 1 to [`MAX_NAME_LEN`] of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(NameError::BadChar(name.to_owned()));
    }
    Ok(())
}

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
    pub fn node(&self, name: &str) -> String {
        format!("{}node:{name}", self.prefix)
    }

    /// `ebb:{c}:nodes`: the index of node names, scored by last heartbeat.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// `ebb:{c}:commands:<name>`: the channel a node listens on for its commands.
    pub fn commands(&self, name: &str) -> String {
        format!("{}commands:{name}", self.prefix)
    }

    /// `ebb:{c}:desired:<name>`: the last command for a node, reconciled on (re)connect.
    pub fn desired(&self, name: &str) -> String {
        format!("{}desired:{name}", self.prefix)
    }

    /// `ebb:{c}:events`: the channel every node of the cluster publishes events on.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// `ebb:{c}:rollout:lock`: one rollout per cluster.
    pub fn rollout_lock(&self) -> String {
        format!("{}rollout:lock", self.prefix)
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
        for key in [
            keys.node("a"),
            keys.nodes(),
            keys.commands("a"),
            keys.desired("a"),
            keys.events(),
            keys.rollout_lock(),
            keys.rollout_state(),
        ] {
            assert!(key.starts_with("ebb:{prod-eu}:"), "{key}");
        }
        assert_eq!(keys.node("web-1"), "ebb:{prod-eu}:node:web-1");
        assert_eq!(keys.commands("web-1"), "ebb:{prod-eu}:commands:web-1");
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
