//! Why a rollout stops. Every reason is one sentence an operator can act on, naming the node.

use ebb_proto::{NodeName, NodeState};
use serde::{Deserialize, Serialize};

/// Why a rollout stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Abort {
    #[error("node {node} is not registered; nothing was drained (check `ebb status`)")]
    Missing { node: NodeName },
    #[error(
        "node {node} is {state}, not active, before the rollout touched it; resolve that first (ebb resume {node})"
    )]
    NotActive { node: NodeName, state: NodeState },
    #[error(
        "draining {node} would leave {have} other active node(s), fewer than --min-active {need}"
    )]
    TooFewActive {
        node: NodeName,
        have: usize,
        need: usize,
    },
    #[error(
        "the other active nodes have room for {room} connections, but {node} holds {connections}"
    )]
    NoHeadroom {
        node: NodeName,
        room: u64,
        connections: u64,
    },
    #[error(
        "{node} did not acknowledge the drain after {attempts} attempt(s); is its agent connected to Redis?"
    )]
    NoAck { node: NodeName, attempts: u32 },
    #[error("{node} was resumed while the rollout was draining it")]
    Resumed { node: NodeName },
    #[error("{node} still had {connections} connection(s) after the drain timeout")]
    DrainTimeout { node: NodeName, connections: u64 },
    #[error("{node} vanished mid-drain (killed or crashed) and --on-node-lost is abort")]
    Lost { node: NodeName },
    #[error("the --exec command for {node} failed: {message}")]
    ExecFailed { node: NodeName, message: String },
    #[error(
        "{node} drained but did not exit within the exit timeout; a node restarted with `then: exit` must exit (or use --exec to restart it)"
    )]
    NoExit { node: NodeName },
    #[error(
        "no replacement for {node} became active within the replace timeout; the other nodes were not touched"
    )]
    NoReplacement { node: NodeName },
    #[error("Redis was unreachable for longer than the grace period while at {node}")]
    RedisLost { node: NodeName },
    #[error("the --check for {node} failed: {output}")]
    CheckFailed { node: NodeName, output: String },
    #[error("aborted by {by}: {reason}; the nodes in flight were finished first")]
    Requested { by: String, reason: String },
    #[error(
        "the rollout lock was lost (another coordinator took over?); nothing more was sent, and its saved state was left to the new holder"
    )]
    LockLost,
}

impl Abort {
    /// The node it names, if any.
    pub fn node(&self) -> Option<&NodeName> {
        match self {
            Abort::Missing { node }
            | Abort::NotActive { node, .. }
            | Abort::TooFewActive { node, .. }
            | Abort::NoHeadroom { node, .. }
            | Abort::NoAck { node, .. }
            | Abort::Resumed { node }
            | Abort::DrainTimeout { node, .. }
            | Abort::Lost { node }
            | Abort::ExecFailed { node, .. }
            | Abort::NoExit { node }
            | Abort::NoReplacement { node }
            | Abort::CheckFailed { node, .. }
            | Abort::RedisLost { node } => Some(node),
            Abort::LockLost | Abort::Requested { .. } => None,
        }
    }
}
