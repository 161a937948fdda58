//! Events a node publishes on [`crate::Keys::events`], so the coordinator reacts in milliseconds
//! instead of polling. The node records stay the source of truth: an event missed during a Redis
//! blip is recovered by reading the record.

use crate::command::Then;
use crate::state::NodeState;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Event format version.
pub const EVENT_VERSION: u64 = 1;

/// One event from one node instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub v: u64,
    /// Node name.
    pub node: String,
    /// The publishing process's instance id.
    pub instance: Uuid,
    /// When it happened, ms since the epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The instance wrote its record (first start, or again after Redis came back).
    Registered {
        url: String,
        state: NodeState,
        connections: u64,
    },
    /// The lifecycle state changed.
    State { state: NodeState, connections: u64 },
    /// The connection count changed while draining (published at once when it reaches zero).
    Connections { connections: u64 },
    /// The drain finished.
    Drained {
        clean: u64,
        forced: u64,
        duration_ms: u64,
        then: Then,
    },
    /// The instance removed its record on a clean exit.
    Deregistered {},
    /// A command was accepted and is being carried out.
    CommandApplied { command_id: String, action: String },
    /// A command was refused (see [`crate::Refusal::label`]).
    CommandRefused {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command_id: Option<String>,
    },
}

impl Event {
    /// An event stamped now.
    pub fn now(node: impl Into<String>, instance: Uuid, kind: EventKind) -> Self {
        Event {
            v: EVENT_VERSION,
            node: node.into(),
            instance,
            at_ms: crate::time::now_ms(),
            kind,
        }
    }

    /// The JSON published.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }

    /// Reads an event; `None` for anything that is not one (the channel is open to anyone).
    pub fn decode(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload)
            .ok()
            .filter(|e: &Event| e.v == EVENT_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let id = Uuid::new_v4();
        for kind in [
            EventKind::Registered {
                url: "ws://10.0.0.1:8080/ws".into(),
                state: NodeState::Active,
                connections: 0,
            },
            EventKind::State {
                state: NodeState::Draining,
                connections: 12,
            },
            EventKind::Connections { connections: 0 },
            EventKind::Drained {
                clean: 10,
                forced: 2,
                duration_ms: 1500,
                then: Then::Exit,
            },
            EventKind::Deregistered {},
            EventKind::CommandApplied {
                command_id: "c1".into(),
                action: "drain".into(),
            },
            EventKind::CommandRefused {
                reason: "replayed".into(),
                command_id: None,
            },
        ] {
            let event = Event::now("node-a", id, kind);
            assert_eq!(Event::decode(event.encode().as_bytes()), Some(event));
        }
        assert_eq!(Event::decode(b"garbage"), None);
    }
}
