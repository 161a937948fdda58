//! Redis ACL rules per role, built from the key schema: what `ebb acl` prints and
//! `deploy/redis/acl.example.conf` holds. Pure: no I/O.
//!
//! Redis is shared by parties with different rights. Each gets its own user, whose rules allow
//! the commands ebb really sends for that role (read off the code, listed per grant below) on
//! that role's keys and channels, and nothing else:
//!
//! | role | reads | writes | subscribes | publishes |
//! | --- | --- | --- | --- | --- |
//! | node `N` | its record and copies, `desired:N` | its record and copies, the index, `nonce:*` | `commands:N` | `events` |
//! | coordinator | every record and copy, the index, `desired:*`, the lock, state and control | the index (prune), `desired:*`, the lock, state and control | `events` | `commands:*` |
//! | trigger | every record, the index, the rollout state | `desired:*` and the rollout control (write only) | `events` | `commands:*` |
//! | viewer | every record, the index, the rollout state | nothing | nothing | nothing |
//!
//! How the rules are made (Redis 7.0 or later: selectors and `%R~`/`%W~`):
//! - Every user starts from `reset on <password> resetkeys resetchannels -@all`, every selector
//!   from `resetkeys resetchannels -@all`: nothing is allowed that is not listed, whatever
//!   `acl-pubsub-default` says. `reset` also drops earlier selectors, so loading the rules again
//!   replaces them instead of adding to them.
//! - A user is a root [`Grant`] plus selectors. Redis allows a command when one grant allows all
//!   of it: the command, each key it names (`%R~` read, `%W~` write, `~` both) and each channel.
//!   Grants separate what one rule cannot: a channel pattern covers PUBLISH and SUBSCRIBE alike,
//!   so a node's `+subscribe &…:commands:N` and `+publish &…:events` are two grants, and it can
//!   neither publish a command nor listen to the events.
//! - Scripts: redis-rs's `Script::invoke_async` sends EVALSHA, and on NOSCRIPT `SCRIPT LOAD` and
//!   EVALSHA again. Redis checks the keys a script declares as read *and* write, within the one
//!   grant that allows EVALSHA, then checks each `redis.call` inside against all the user's
//!   grants like a command of its own: a script is no way around the rules. So the grant with
//!   `+evalsha` lists every key the role's scripts declare, read-write, and allows no other
//!   command that takes keys.
//! - The connection: redis-rs sends AUTH (HELLO for RESP3 URLs), which ACLs never check, and
//!   unless told not to `CLIENT SETINFO`. ebb's clients are told not to: `client|setinfo` does not
//!   exist before Redis 7.2, so a rule naming it would not load there, and denied it would put a
//!   denial in the ACL LOG for every connection. PING proves connections and subscriptions alive.
//! - Every pattern comes from [`Keys`] (see there why a pattern cannot reach a neighbour's keys).

use crate::keys::Keys;
use crate::name::{NameError, NodeName, validate_name};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The password rule when none is given: replace it (or load the rules with a real one).
pub const PASSWORD_PLACEHOLDER: &str = ">CHANGE-ME";

/// Every connection: PING (the liveness check of connections and subscriptions), HELLO (RESP3
/// connections, which every subscription is; like AUTH never checked, listed so the rules say
/// what a connection sends) and CLUSTER SLOTS (how redis-rs's cluster client learns which
/// shard serves which slot; unused but harmless on a single server).
const CONNECTION: &[&str] = &["ping", "hello", "cluster|slots"];
/// Subscribing: SUBSCRIBE, or SSUBSCRIBE on a Redis Cluster (sharded channels).
const SUBSCRIBE: &[&str] = &["subscribe", "ssubscribe"];
/// Publishing: PUBLISH, or SPUBLISH on a Redis Cluster.
const PUBLISH: &[&str] = &["publish", "spublish"];
/// redis-rs's `Script::invoke_async`: EVALSHA; on NOSCRIPT, SCRIPT LOAD and EVALSHA again.
const SCRIPTS: &[&str] = &["evalsha", "script|load"];
/// `redis::pipe().atomic()`: the coordinator's `send` (desired state and publish as one).
const TRANSACTION: &[&str] = &["multi", "exec"];

/// Who a Redis user is, in one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// One node (`ebb-node --name N`).
    Node(NodeName),
    /// `ebb rolling-restart` (and `ebb serve`, later).
    Coordinator,
    /// CI/CD: `ebb drain`, `ebb resume`, `redis-cli PUBLISH`.
    Trigger,
    /// `ebb status`.
    Viewer,
}

impl Role {
    /// The user name when none is given: `ebb-node-<name>`, `ebb-coordinator`, `ebb-trigger`,
    /// `ebb-viewer`.
    pub fn default_user(&self) -> UserName {
        UserName(match self {
            Role::Node(name) => format!("ebb-node-{name}"),
            Role::Coordinator => "ebb-coordinator".to_owned(),
            Role::Trigger => "ebb-trigger".to_owned(),
            Role::Viewer => "ebb-viewer".to_owned(),
        })
    }
}

/// A Redis user name under the node-name rule: safe in a `user:password@` URL, an ACL file line
/// (split at spaces) and a log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserName(String);

impl UserName {
    /// Parses `name` (1 to 128 of `[A-Za-z0-9._-]`).
    pub fn parse(name: &str) -> Result<Self, NameError> {
        validate_name(name)?;
        Ok(UserName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        UserName::parse(s)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's password rule: the placeholder, or the SHA-256 Redis compares with (`#<hex>`), so
/// the password itself is never printed nor stored in an ACL file.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    Placeholder,
    Sha256(String),
}

/// An empty password, which Redis would refuse to match anyway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the password is empty")]
pub struct EmptyPassword;

impl Password {
    /// The rule for `password`: its SHA-256.
    pub fn hashed(password: &str) -> Result<Password, EmptyPassword> {
        if password.is_empty() {
            return Err(EmptyPassword);
        }
        Ok(Password::Sha256(hex::encode(Sha256::digest(password))))
    }

    fn rule(&self) -> String {
        match self {
            Password::Placeholder => PASSWORD_PLACEHOLDER.to_owned(),
            Password::Sha256(hex) => format!("#{hex}"),
        }
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Password::Placeholder => "Password::Placeholder",
            Password::Sha256(_) => "Password::Sha256(..)",
        })
    }
}

/// How a grant may use the keys of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `%R~`: commands that read the key.
    Read,
    /// `%W~`: commands that write (or delete) it.
    Write,
    /// `~`: both, as EVAL/EVALSHA's declared keys need.
    ReadWrite,
}

impl Access {
    fn prefix(self) -> &'static str {
        match self {
            Access::Read => "%R~",
            Access::Write => "%W~",
            Access::ReadWrite => "~",
        }
    }

    /// Whether a pattern granted `self` allows an access `needed`.
    pub fn covers(self, needed: Access) -> bool {
        self == Access::ReadWrite || self == needed
    }
}

/// Commands allowed on some keys and channels: a user's root rules, or one selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// Commands (`subcommand|sub` for one subcommand), without the `+`.
    pub commands: Vec<&'static str>,
    pub keys: Vec<(Access, String)>,
    pub channels: Vec<String>,
}

impl Grant {
    fn allow(groups: &[&[&'static str]]) -> Grant {
        Grant {
            commands: groups.concat(),
            ..Grant::default()
        }
    }

    fn on(mut self, access: Access, patterns: impl IntoIterator<Item = String>) -> Grant {
        self.keys.extend(patterns.into_iter().map(|p| (access, p)));
        self
    }

    fn channels(mut self, patterns: impl IntoIterator<Item = String>) -> Grant {
        self.channels.extend(patterns);
        self
    }

    fn rules(&self) -> Vec<String> {
        let mut rules: Vec<String> = ["resetkeys", "resetchannels", "-@all"]
            .map(str::to_owned)
            .into();
        rules.extend(self.commands.iter().map(|c| format!("+{c}")));
        rules.extend(self.keys.iter().map(|(a, p)| format!("{}{p}", a.prefix())));
        rules.extend(self.channels.iter().map(|c| format!("&{c}")));
        rules
    }
}

/// Everything one user may do: the root grant and the selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub root: Grant,
    pub selectors: Vec<Grant>,
}

impl Rules {
    /// The root grant, then the selectors.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        std::iter::once(&self.root).chain(&self.selectors)
    }
}

/// The rules of `role` in the cluster of `keys`.
pub fn rules(keys: &Keys, role: &Role) -> Rules {
    match role {
        Role::Node(name) => node(keys, name),
        Role::Coordinator => coordinator(keys),
        Role::Trigger => trigger(keys),
        Role::Viewer => viewer(keys),
    }
}

fn node(keys: &Keys, name: &NodeName) -> Rules {
    use Access::*;
    let (record, copies, index) = (keys.node(name), keys.instances_of(name), keys.nodes());
    Rules {
        // The record scripts (write, remove; KEYS: record, index, own copy) and the command
        // subscription.
        root: Grant::allow(&[CONNECTION, SCRIPTS, SUBSCRIBE])
            .on(ReadWrite, [record.clone(), index.clone(), copies.clone()])
            .channels([keys.commands(name)]),
        selectors: vec![
            // Inside the record scripts: TYPE (a key of the wrong type is taken back), HGET (is
            // the record still ours?), DEL, HSET, PEXPIRE.
            Grant::allow(&[&["type", "hget", "hset", "pexpire", "del"]])
                .on(ReadWrite, [record, copies]),
            // Inside them too: ZADD on register and heartbeat, ZREM on deregister, TYPE and DEL
            // of an index of the wrong type. ACLs cannot tell members apart: these allow any
            // member (see docs/security.md).
            Grant::allow(&[&["type", "zadd", "zrem", "del"]]).on(ReadWrite, [index]),
            // Reconciling on (re)connect: GETRANGE (bounded) of its desired state.
            Grant::allow(&[&["getrange"]]).on(Read, [keys.desired(name)]),
            // Replay protection of signed commands: SET NX PX of a nonce.
            Grant::allow(&[&["set"]]).on(Write, [keys.any_nonce()]),
            // Events: registered, state changes, counts, acknowledgements, deregistered.
            Grant::allow(&[PUBLISH]).channels([keys.events()]),
        ],
    }
}

fn coordinator(keys: &Keys) -> Rules {
    use Access::*;
    let (index, lock, state) = (keys.nodes(), keys.rollout_lock(), keys.rollout_state());
    let control = keys.rollout_control();
    Rules {
        // The scripts (prune: index; clear-desired: desired; renew, release: lock; save, clear:
        // lock and state or control), `send`'s MULTI/EXEC, and the events subscription.
        root: Grant::allow(&[CONNECTION, SCRIPTS, TRANSACTION, SUBSCRIBE])
            .on(
                ReadWrite,
                [
                    index.clone(),
                    keys.any_desired(),
                    lock.clone(),
                    state.clone(),
                    control.clone(),
                ],
            )
            .channels([keys.events()]),
        selectors: vec![
            // Records and old instances' copies: HGETALL only. The coordinator writes none.
            Grant::allow(&[&["hgetall"]]).on(Read, [keys.any_node(), keys.any_instance()]),
            // The index: ZRANGE to list; the prune script's ZSCORE and ZREM of long-gone names.
            Grant::allow(&[&["zrange", "zscore", "zrem"]]).on(ReadWrite, [index]),
            // Desired state: SET PX in `send`; GET and DEL in the clear-desired script.
            Grant::allow(&[&["set", "get", "del"]]).on(ReadWrite, [keys.any_desired()]),
            // The lock (SET NX PX, GET; renew: GET, PEXPIRE; release: GET, DEL), the state (GET
            // on --resume; save: SET; clear: DEL) and the control value (GET every tick; SET on
            // --pause-after; DEL when done).
            Grant::allow(&[&["set", "get", "pexpire", "del"]])
                .on(ReadWrite, [lock, state, control]),
            // Commands to every node.
            Grant::allow(&[PUBLISH]).channels([keys.any_commands()]),
            // Future: `ebb serve` consumes the request stream `ebb:{c}:requests` (XREADGROUP,
            // XACK, XAUTOCLAIM, XGROUP CREATE): one more grant here on that key alone, built from
            // `Keys` once the schema has it; the trigger gets XADD on it.
        ],
    }
}

fn trigger(keys: &Keys) -> Rules {
    use Access::*;
    Rules {
        // `send`'s MULTI/EXEC, and the events subscription of `ebb drain --wait`.
        root: Grant::allow(&[CONNECTION, TRANSACTION, SUBSCRIBE]).channels([keys.events()]),
        selectors: vec![
            // Finding the node to address: ZRANGE of the index, HGETALL of the records. The
            // prune script is not allowed (the coordinator prunes); `ebb` skips it when refused.
            Grant::allow(&[&["zrange", "hgetall"]]).on(Read, [keys.nodes(), keys.any_node()]),
            // Desired state, write only: SET PX; and `ebb rollout pause|continue|abort`: SET of the
            // control value.
            Grant::allow(&[&["set"]]).on(Write, [keys.any_desired(), keys.rollout_control()]),
            // `ebb rollout` reads the saved state to name the rollout it steers.
            Grant::allow(&[&["get"]]).on(Read, [keys.rollout_state()]),
            // Commands, by `ebb drain`/`resume` or `redis-cli PUBLISH`.
            Grant::allow(&[PUBLISH]).channels([keys.any_commands()]),
        ],
    }
}

fn viewer(keys: &Keys) -> Rules {
    Rules {
        // `ebb status`: ZRANGE of the index, HGETALL of the records.
        root: Grant::allow(&[CONNECTION, &["zrange", "hgetall"]])
            .on(Access::Read, [keys.nodes(), keys.any_node()]),
        // And the rollout in progress: GET of its saved state.
        selectors: vec![Grant::allow(&[&["get"]]).on(Access::Read, [keys.rollout_state()])],
    }
}

/// One Redis user: its name, password rule and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclUser {
    pub name: UserName,
    pub password: Password,
    pub rules: Rules,
}

impl AclUser {
    /// The user of `role` in the cluster of `keys`, named `name` or [`Role::default_user`].
    pub fn new(keys: &Keys, role: &Role, name: Option<UserName>, password: Password) -> AclUser {
        AclUser {
            name: name.unwrap_or_else(|| role.default_user()),
            password,
            rules: rules(keys, role),
        }
    }

    /// The arguments of `ACL SETUSER <name>`, one per rule; a selector is one `(...)` argument.
    pub fn setuser_rules(&self) -> Vec<String> {
        let mut rules = vec!["reset".to_owned(), "on".to_owned(), self.password.rule()];
        rules.extend(self.rules.root.rules());
        rules.extend(
            self.rules
                .selectors
                .iter()
                .map(|s| format!("({})", s.rules().join(" "))),
        );
        rules
    }

    /// `ACL SETUSER <name> <rules>` as a `redis-cli` line (it reads commands from stdin; a
    /// selector is double-quoted, nothing else needs quotes).
    pub fn command_line(&self) -> String {
        let rules: Vec<String> = self
            .setuser_rules()
            .into_iter()
            .map(|r| {
                if r.contains(' ') {
                    format!("\"{r}\"")
                } else {
                    r
                }
            })
            .collect();
        format!("ACL SETUSER {} {}", self.name, rules.join(" "))
    }

    /// `user <name> <rules>`: a line of an ACL file (`aclfile`). Redis splits these at spaces
    /// and takes no quotes; a selector's parentheses group its rules.
    pub fn acl_file_line(&self) -> String {
        format!("user {} {}", self.name, self.setuser_rules().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::glob;
    use Access::*;

    /// Redis's decision for a command: one grant allows the command, each key with the access
    /// it needs, and each channel.
    fn allows(rules: &Rules, command: &str, keys: &[(&str, Access)], channels: &[&str]) -> bool {
        rules.grants().any(|g| {
            g.commands.contains(&command)
                && keys.iter().all(|(key, needed)| {
                    g.keys
                        .iter()
                        .any(|(have, p)| have.covers(*needed) && glob(p, key))
                })
                && channels
                    .iter()
                    .all(|c| g.channels.iter().any(|p| glob(p, c)))
        })
    }

    fn name(n: &str) -> NodeName {
        NodeName::parse(n).unwrap()
    }

    struct Cluster {
        keys: Keys,
        node: Rules,
        coordinator: Rules,
        trigger: Rules,
        viewer: Rules,
        record1: String,
        record2: String,
        copy1: String,
        copy2: String,
        index: String,
        desired1: String,
        desired2: String,
        lock: String,
        state: String,
        control: String,
        events: String,
        commands1: String,
        commands2: String,
    }

    fn cluster() -> Cluster {
        let keys = Keys::new("prod").unwrap();
        let (n1, n2) = (name("n1"), name("n2"));
        let id = uuid::Uuid::new_v4();
        Cluster {
            node: rules(&keys, &Role::Node(n1.clone())),
            coordinator: rules(&keys, &Role::Coordinator),
            trigger: rules(&keys, &Role::Trigger),
            viewer: rules(&keys, &Role::Viewer),
            record1: keys.node(&n1),
            record2: keys.node(&n2),
            copy1: keys.instance(&n1, id),
            copy2: keys.instance(&n2, id),
            index: keys.nodes(),
            desired1: keys.desired(&n1),
            desired2: keys.desired(&n2),
            lock: keys.rollout_lock(),
            state: keys.rollout_state(),
            control: keys.rollout_control(),
            events: keys.events(),
            commands1: keys.commands(&n1),
            commands2: keys.commands(&n2),
            keys,
        }
    }

    #[test]
    fn a_node_may_do_what_its_agent_does_and_nothing_to_anyone_else() {
        let c = cluster();
        let r = &c.node;
        // The record scripts, as declared and as called inside.
        let declared = [
            (c.record1.as_str(), ReadWrite),
            (&c.index, ReadWrite),
            (&c.copy1, ReadWrite),
        ];
        assert!(allows(r, "evalsha", &declared, &[]));
        assert!(allows(r, "script|load", &[], &[]));
        for (cmd, key, access) in [
            ("del", &c.copy1, Write),
            ("hset", &c.copy1, Write),
            ("pexpire", &c.copy1, Write),
            ("hget", &c.record1, Read),
            ("del", &c.record1, Write),
            ("hset", &c.record1, Write),
            ("pexpire", &c.record1, Write),
            ("zadd", &c.index, Write),
            ("zrem", &c.index, Write),
            ("type", &c.record1, Read),
            ("type", &c.index, Read),
            ("getrange", &c.desired1, Read),
        ] {
            assert!(allows(r, cmd, &[(key, access)], &[]), "{cmd} {key}");
        }
        assert!(allows(r, "set", &[(&c.keys.nonce("x1"), Write)], &[]));
        assert!(allows(r, "subscribe", &[], &[&c.commands1]));
        assert!(allows(r, "publish", &[], &[&c.events]));
        // The same on a Redis Cluster, as sharded channels.
        assert!(allows(r, "ssubscribe", &[], &[&c.commands1]));
        assert!(allows(r, "spublish", &[], &[&c.events]));
        assert!(allows(r, "cluster|slots", &[], &[]));
        assert!(allows(r, "ping", &[], &[]));

        // Another node's record, copy, desired state and channel; the lock and the state.
        for (cmd, key, access) in [
            ("hset", &c.record2, Write),
            ("del", &c.record2, Write),
            ("hget", &c.record2, Read),
            ("hset", &c.copy2, Write),
            ("get", &c.desired2, Read),
            ("set", &c.desired1, Write),
            ("set", &c.lock, Write),
            ("get", &c.lock, Read),
            ("set", &c.state, Write),
            ("getrange", &c.desired2, Read),
            ("zrange", &c.index, Read),
        ] {
            assert!(!allows(r, cmd, &[(key, access)], &[]), "{cmd} {key}");
        }
        assert!(!allows(r, "evalsha", &[(&c.record2, ReadWrite)], &[]));
        assert!(!allows(r, "subscribe", &[], &[&c.commands2]));
        assert!(!allows(r, "subscribe", &[], &[&c.events]));
        assert!(!allows(r, "publish", &[], &[&c.commands1]));
        assert!(!allows(r, "publish", &[], &[&c.commands2]));
        assert!(!allows(r, "ssubscribe", &[], &[&c.events]));
        assert!(!allows(r, "spublish", &[], &[&c.commands2]));
        assert!(!allows(r, "eval", &declared, &[]));
        assert!(!allows(r, "script|flush", &[], &[]));
    }

    #[test]
    fn the_coordinator_reads_everything_writes_its_own_and_no_record() {
        let c = cluster();
        let r = &c.coordinator;
        for declared in [
            vec![(c.index.as_str(), ReadWrite)],
            vec![(&c.desired1, ReadWrite)],
            vec![(&c.lock, ReadWrite)],
            vec![(&c.lock, ReadWrite), (&c.state, ReadWrite)],
            vec![(&c.lock, ReadWrite), (&c.control, ReadWrite)],
        ] {
            assert!(allows(r, "evalsha", &declared, &[]), "{declared:?}");
        }
        for (cmd, key, access) in [
            ("zrange", &c.index, Read),
            ("zscore", &c.index, Read),
            ("zrem", &c.index, Write),
            ("hgetall", &c.record1, Read),
            ("hgetall", &c.copy2, Read),
            ("set", &c.desired2, Write),
            ("get", &c.desired2, Read),
            ("del", &c.desired2, Write),
            ("set", &c.lock, Write),
            ("get", &c.lock, Read),
            ("pexpire", &c.lock, Write),
            ("del", &c.lock, Write),
            ("get", &c.state, Read),
            ("set", &c.state, Write),
            ("del", &c.state, Write),
            ("get", &c.control, Read),
            ("del", &c.control, Write),
        ] {
            assert!(allows(r, cmd, &[(key, access)], &[]), "{cmd} {key}");
        }
        assert!(allows(r, "multi", &[], &[]) && allows(r, "exec", &[], &[]));
        assert!(allows(r, "publish", &[], &[&c.commands2]));
        assert!(allows(r, "subscribe", &[], &[&c.events]));

        for (cmd, key, access) in [
            ("hset", &c.record1, Write),
            ("del", &c.record1, Write),
            ("hset", &c.copy1, Write),
            ("pexpire", &c.record1, Write),
            ("zadd", &c.index, Write),
        ] {
            assert!(!allows(r, cmd, &[(key, access)], &[]), "{cmd} {key}");
        }
        assert!(!allows(r, "evalsha", &[(&c.record1, ReadWrite)], &[]));
        assert!(!allows(r, "publish", &[], &[&c.events]));
        assert!(!allows(r, "subscribe", &[], &[&c.commands1]));
    }

    #[test]
    fn a_trigger_sends_commands_and_watches_but_owns_nothing() {
        let c = cluster();
        let r = &c.trigger;
        assert!(allows(r, "zrange", &[(&c.index, Read)], &[]));
        assert!(allows(r, "hgetall", &[(&c.record2, Read)], &[]));
        assert!(allows(r, "set", &[(&c.desired2, Write)], &[]));
        assert!(allows(r, "multi", &[], &[]) && allows(r, "exec", &[], &[]));
        assert!(allows(r, "publish", &[], &[&c.commands1]));
        assert!(allows(r, "subscribe", &[], &[&c.events]));
        // `ebb rollout pause|continue|abort`: the saved state read, the control value set.
        assert!(allows(r, "get", &[(&c.state, Read)], &[]));
        assert!(allows(r, "set", &[(&c.control, Write)], &[]));

        for (cmd, key, access) in [
            ("hset", &c.record1, Write),
            ("get", &c.desired1, Read),
            ("del", &c.desired1, Write),
            ("set", &c.lock, Write),
            ("get", &c.lock, Read),
            ("set", &c.state, Write),
            ("del", &c.state, Write),
            ("get", &c.control, Read),
            ("zrem", &c.index, Write),
            ("hgetall", &c.copy1, Read),
        ] {
            assert!(!allows(r, cmd, &[(key, access)], &[]), "{cmd} {key}");
        }
        assert!(!allows(r, "evalsha", &[(&c.index, ReadWrite)], &[]));
        assert!(!allows(r, "publish", &[], &[&c.events]));
        assert!(!allows(r, "subscribe", &[], &[&c.commands1]));
    }

    #[test]
    fn a_viewer_reads_records_and_the_index_only() {
        let c = cluster();
        let r = &c.viewer;
        assert!(allows(r, "zrange", &[(&c.index, Read)], &[]));
        assert!(allows(r, "hgetall", &[(&c.record1, Read)], &[]));
        assert!(
            allows(r, "get", &[(&c.state, Read)], &[]),
            "the rollout in `ebb status`"
        );
        assert!(!allows(r, "set", &[(&c.control, Write)], &[]));
        assert!(!allows(r, "hset", &[(&c.record1, Write)], &[]));
        assert!(!allows(r, "zrem", &[(&c.index, Write)], &[]));
        assert!(!allows(r, "hgetall", &[(&c.copy1, Read)], &[]));
        assert!(!allows(r, "get", &[(&c.desired1, Read)], &[]));
        assert!(!allows(r, "evalsha", &[(&c.index, ReadWrite)], &[]));
        assert!(!allows(r, "publish", &[], &[&c.commands1]));
        assert!(!allows(r, "publish", &[], &[&c.events]));
        assert!(!allows(r, "subscribe", &[], &[&c.events]));
    }

    #[test]
    fn no_pattern_leaves_the_cluster_and_every_grant_starts_from_nothing() {
        let c = cluster();
        for r in [&c.node, &c.coordinator, &c.trigger, &c.viewer] {
            for grant in r.grants() {
                let patterns = grant.keys.iter().map(|(_, p)| p).chain(&grant.channels);
                for pattern in patterns {
                    assert!(pattern.starts_with("ebb:{prod}:"), "{pattern}");
                }
                assert_eq!(grant.rules()[..3], ["resetkeys", "resetchannels", "-@all"]);
            }
            // The grant that may run scripts holds no other command that takes keys.
            for grant in r.grants().filter(|g| g.commands.contains(&"evalsha")) {
                for command in &grant.commands {
                    assert!(
                        [CONNECTION, SCRIPTS, TRANSACTION, SUBSCRIBE]
                            .concat()
                            .contains(command),
                        "{command} beside evalsha"
                    );
                }
            }
        }
    }

    #[test]
    fn renders_setuser_arguments_a_redis_cli_line_and_an_acl_file_line() {
        let keys = Keys::new("default").unwrap();
        let viewer = AclUser::new(&keys, &Role::Viewer, None, Password::Placeholder);
        assert_eq!(
            viewer.command_line(),
            "ACL SETUSER ebb-viewer reset on >CHANGE-ME resetkeys resetchannels -@all +ping \
             +hello +cluster|slots +zrange +hgetall %R~ebb:{default}:nodes %R~ebb:{default}:node:* \
             \"(resetkeys resetchannels -@all +get %R~ebb:{default}:rollout:state)\""
        );
        let node = AclUser::new(
            &keys,
            &Role::Node(name("node-1")),
            Some(UserName::parse("n1").unwrap()),
            Password::hashed("pass").unwrap(),
        );
        let args = node.setuser_rules();
        assert_eq!(
            args[..3],
            [
                "reset",
                "on",
                "#d74ff0ee8da3b9806b18c877dbf29bbde50b5bd8e4dad7a3a725000feb82e8f1"
            ]
        );
        assert!(
            args.contains(
                &"(resetkeys resetchannels -@all +publish +spublish &ebb:{default}:events)".into()
            ),
            "{args:?}"
        );
        assert!(args.contains(&"&ebb:{default}:commands:node-1".into()));
        let line = node.command_line();
        assert!(line.starts_with("ACL SETUSER n1 reset on #d74f"), "{line}");
        assert!(line.contains(
            r#" "(resetkeys resetchannels -@all +getrange %R~ebb:{default}:desired:node-1)""#
        ));
        let file = node.acl_file_line();
        assert!(file.starts_with("user n1 reset on #d74f"), "{file}");
        assert!(!file.contains('"'), "{file}");
        assert!(file.contains(" (resetkeys resetchannels -@all +set %W~ebb:{default}:nonce:*)"));
        assert_eq!(
            AclUser::new(&keys, &Role::Node(name("a")), None, Password::Placeholder).name,
            UserName::parse("ebb-node-a").unwrap()
        );
    }

    #[test]
    fn passwords_are_hashed_and_names_checked() {
        assert_eq!(Password::hashed(""), Err(EmptyPassword));
        let hashed = Password::hashed("hunter2-but-longer").unwrap();
        assert!(!format!("{hashed:?}").contains("hunter2"));
        assert!(!hashed.rule().contains("hunter2"));
        for bad in ["", "a b", "a:b", "n1@x", "x>y", "(x)"] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserName::parse("ebb-coordinator.eu_1").is_ok());
    }
}
