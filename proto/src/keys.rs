//! The Redis key schema. Every key and channel ebb touches is built here, and nowhere else.
//!
//! All keys of a cluster share the prefix `ebb:{<cluster>}:`; the braces are a Redis Cluster hash
//! tag, so one cluster's keys live in one slot and multi-key scripts stay legal.
//!
//! | builder | type | written by | read by |
//! | --- | --- | --- | --- |
//! | [`Keys::node`] `ebb:{c}:node:<name>` | hash ([`crate::record`] fields), TTL [`NODE_TTL`] refreshed every [`HEARTBEAT_INTERVAL`] | node | coordinator |
//! | [`Keys::nodes`] `ebb:{c}:nodes` | sorted set: member = node name, score = last heartbeat (ms) | node (the coordinator prunes stale names) | coordinator, `ebb status` (listing without SCAN) |
//! | [`Keys::commands`] `ebb:{c}:commands:<name>` | pub/sub channel of [`crate::command`] payloads | coordinator, CI/CD, `redis-cli` | node |
//! | [`Keys::desired`] `ebb:{c}:desired:<name>` | string: the last command payload, TTL [`DESIRED_TTL`] | coordinator, `ebb drain`/`resume` | node, on (re)connect |
//! | [`Keys::instance`] `ebb:{c}:instance:<name>:<uuid>` | hash: the same fields as the record, this process's own, TTL [`NODE_TTL`] | node (every heartbeat) | coordinator (is the old instance still alive?) |
//! | [`Keys::nonce`] `ebb:{c}:nonce:<nonce>` | string, `SET NX PX` until the command expires | node (on applying a signed command) | node (replay check) |
//! | [`Keys::events`] `ebb:{c}:events` | pub/sub channel of [`crate::event`] JSON | node | coordinator |
//! | [`Keys::rollout_lock`] `ebb:{c}:rollout:lock` | string: holder token, PX expiry [`ROLLOUT_LOCK_TTL`] | coordinator | coordinator |
//! | [`Keys::requests`] `ebb:{c}:requests` | stream, field `request` ([`crate::request`]), consumer group [`REQUEST_GROUP`] | CI (`ebb request`, `XADD`), `ebb serve`'s API | `ebb serve` (leader) |
//! | [`Keys::result`] `ebb:{c}:result:<id>` | string: JSON result of a request, TTL [`RESULT_TTL`] | `ebb serve` | `ebb watch`, the API |
//! | [`Keys::progress`] `ebb:{c}:progress` | pub/sub channel of progress lines | `ebb serve` | `ebb watch` |
//! | [`Keys::serve_leader`] `ebb:{c}:serve:leader` | string: leader's id, PX [`LEADER_TTL`] | `ebb serve` | `ebb serve`, the API |
//! | [`Keys::rollout_control`] `ebb:{c}:rollout:control` | string: [`crate::control`] JSON (sealed with a secret) | `ebb rollout`, CI, coordinator (`--pause-after`) | coordinator (every tick) |
//! | [`Keys::rollout_state`] `ebb:{c}:rollout:state` | string: JSON rollout progress, for `--resume` | coordinator | coordinator |
//! | [`Keys::chat_seq`] `ebb:{c}:chat:seq:<room>` | string: the room's last sequence number | the chat app (its store script) | the chat app |
//! | [`Keys::chat_history`] `ebb:{c}:chat:history:<room>` | sorted set: member = stored message JSON, score = seq; at most [`crate::chat::HISTORY_LEN`], none older than [`crate::chat::HISTORY_AGE_MS`] | the chat app | the chat app (a reconnect's `after=N`) |
//! | [`Keys::chat_ids`] `ebb:{c}:chat:ids:<room>` | sorted set: member = message id, score = its seq, trimmed with the history | the chat app (a resent id is acked, not stored again) | the chat app |
//! | [`Keys::chat_channel`] `ebb:{c}:chat` | pub/sub channel of [`crate::chat::RoomMessage`] JSON | the chat app's store script | every chat node |
//!
//! Redis ACL key and channel patterns ([`crate::acl`]) come from here too: [`Keys::any_node`],
//! [`Keys::instances_of`], [`Keys::any_instance`], [`Keys::any_desired`], [`Keys::any_nonce`],
//! [`Keys::any_commands`]. Each is its key's own spelling with `*` where the variable part goes;
//! a pattern is exact elsewhere because cluster and node names (and nonces) hold no glob
//! character (`*`, `?`, `[`, `\`) and no `:`, so `instance:n1:*` never matches `n10`'s copies.

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
/// The consumer group of `ebb serve` on [`Keys::requests`].
pub const REQUEST_GROUP: &str = "ebb-serve";
/// How long a request's result is kept.
pub const RESULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Expiry of the service's leader lease; the leader renews it every third of this.
pub const LEADER_TTL: Duration = Duration::from_secs(6);

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

    /// `ebb:{c}:<kind>:`: what every key of one kind starts with.
    fn of_kind(&self, kind: &str) -> String {
        format!("{}{kind}:", self.prefix)
    }

    /// `ebb:{c}:node:<name>`: the node record hash.
    pub fn node(&self, name: &NodeName) -> String {
        self.of_kind("node") + name.as_str()
    }

    /// `ebb:{c}:node:*`: the ACL pattern of every node record.
    pub fn any_node(&self) -> String {
        self.of_kind("node") + "*"
    }

    /// `ebb:{c}:nodes`: the index of node names, scored by last heartbeat.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// `ebb:{c}:commands:<name>`: the channel a node listens on for its commands.
    pub fn commands(&self, name: &NodeName) -> String {
        self.of_kind("commands") + name.as_str()
    }

    /// `ebb:{c}:commands:*`: the ACL pattern of every node's command channel.
    pub fn any_commands(&self) -> String {
        self.of_kind("commands") + "*"
    }

    /// `ebb:{c}:desired:<name>`: the last command for a node, reconciled on (re)connect.
    pub fn desired(&self, name: &NodeName) -> String {
        self.of_kind("desired") + name.as_str()
    }

    /// `ebb:{c}:desired:*`: the ACL pattern of every node's desired state.
    pub fn any_desired(&self) -> String {
        self.of_kind("desired") + "*"
    }

    /// `ebb:{c}:instance:<name>:<instance>`: one process's own copy of its record, written on
    /// every heartbeat whether or not it still owns [`Keys::node`], so the coordinator can tell
    /// that an old instance is still alive after its replacement took the name over.
    pub fn instance(&self, name: &NodeName, instance: Uuid) -> String {
        format!("{}{name}:{}", self.of_kind("instance"), instance.simple())
    }

    /// `ebb:{c}:instance:<name>:*`: the ACL pattern of every copy node `name`'s processes write.
    pub fn instances_of(&self, name: &NodeName) -> String {
        format!("{}{name}:*", self.of_kind("instance"))
    }

    /// `ebb:{c}:instance:*`: the ACL pattern of every node's copies.
    pub fn any_instance(&self) -> String {
        self.of_kind("instance") + "*"
    }

    /// `ebb:{c}:nonce:<nonce>`: a signed command's nonce, remembered until the command expires
    /// (`SET NX PX`), so a replay is refused even by a node that restarted since.
    pub fn nonce(&self, nonce: &str) -> String {
        self.of_kind("nonce") + nonce
    }

    /// `ebb:{c}:nonce:*`: the ACL pattern of every nonce key.
    pub fn any_nonce(&self) -> String {
        self.of_kind("nonce") + "*"
    }

    /// The last sequence number of chat room `room` (a name [`crate::chat::validate_room`] took).
    pub fn chat_seq(&self, room: &str) -> String {
        format!("{}chat:seq:{room}", self.prefix)
    }

    /// The stored messages of chat room `room`.
    pub fn chat_history(&self, room: &str) -> String {
        format!("{}chat:history:{room}", self.prefix)
    }

    /// The ids stored in chat room `room`, each with its seq.
    pub fn chat_ids(&self, room: &str) -> String {
        format!("{}chat:ids:{room}", self.prefix)
    }

    /// Where every stored chat message is published.
    pub fn chat_channel(&self) -> String {
        format!("{}chat", self.prefix)
    }

    /// `ebb:{c}:events`: the channel every node of the cluster publishes events on.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// `ebb:{c}:rollout:lock`: one rollout per cluster.
    pub fn rollout_lock(&self) -> String {
        format!("{}rollout:lock", self.prefix)
    }

    /// `ebb:{c}:requests`: the Redis Stream of requests to `ebb serve` ([`crate::request`]).
    pub fn requests(&self) -> String {
        format!("{}requests", self.prefix)
    }

    /// `ebb:{c}:result:<id>`: a request's result (queued, running, then the final report).
    pub fn result(&self, id: &str) -> String {
        format!("{}result:{id}", self.prefix)
    }

    /// `ebb:{c}:progress`: the pub/sub channel of a service's rollout progress.
    pub fn progress(&self) -> String {
        format!("{}progress", self.prefix)
    }

    /// `ebb:{c}:serve:leader`: the lease of the one `ebb serve` that acts.
    pub fn serve_leader(&self) -> String {
        format!("{}serve:leader", self.prefix)
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
pub(crate) mod tests {
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

    /// Redis's glob as far as ebb's patterns use it: `*` (any run) and literal characters.
    pub(crate) fn glob(pattern: &str, text: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == text,
            Some((head, rest)) => {
                let Some(tail) = text.strip_prefix(head) else {
                    return false;
                };
                (0..=tail.len()).any(|at| tail.is_char_boundary(at) && glob(rest, &tail[at..]))
            }
        }
    }

    #[test]
    fn patterns_match_their_keys_and_nothing_next_to_them() {
        let keys = Keys::new("c").unwrap();
        let n1 = NodeName::parse("n1").unwrap();
        let n10 = NodeName::parse("n10").unwrap();
        let id = Uuid::new_v4();
        for (pattern, matching) in [
            (keys.any_node(), keys.node(&n1)),
            (keys.any_instance(), keys.instance(&n1, id)),
            (keys.instances_of(&n1), keys.instance(&n1, id)),
            (keys.any_desired(), keys.desired(&n1)),
            (keys.any_commands(), keys.commands(&n1)),
            (keys.any_nonce(), keys.nonce("abc")),
        ] {
            assert!(glob(&pattern, &matching), "{pattern} {matching}");
        }
        assert!(!glob(&keys.instances_of(&n1), &keys.instance(&n10, id)));
        assert!(!glob(&keys.any_node(), &keys.nodes()));
        assert!(!glob(&keys.any_node(), &keys.instance(&n1, id)));
        let other = Keys::new("c2").unwrap();
        assert!(!glob(&keys.any_node(), &other.node(&n1)));
        assert!(!glob(&keys.any_commands(), &keys.events()));
        assert!(glob("a*b*c", "axxbyyc") && !glob("a*b", "ab-c") && glob("*", ""));
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
