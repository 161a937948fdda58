//! Events a node publishes on [`crate::Keys::events`], so the coordinator reacts in milliseconds
//! instead of polling.
//!
//! The events channel is open to anyone who can PUBLISH, so an event is a hint, never a fact: it
//! wakes the coordinator, which then reads the records (the source of truth) before deciding
//! anything. With a secret, nodes seal their events ([`crate::sign::Envelope`], domain
//! [`Domain::Event`]) and the coordinator drops (and counts) what is not sealed with it.

use crate::command::Then;
use crate::name::NodeName;
use crate::sign::{Domain, Envelope, Secret};
use crate::state::NodeState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Event format version.
pub const EVENT_VERSION: u64 = 1;
/// Largest event payload read, in bytes; anything larger is dropped unread.
pub const MAX_EVENT_BYTES: usize = 8 * 1024;

/// One event from one node instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub v: u64,
    /// The cluster the node belongs to (covered by the signature).
    pub cluster: String,
    /// Node name.
    pub node: NodeName,
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
    /// Commands were refused (see [`crate::Refusal::label`]). A node reports refusals in
    /// aggregate, at most one event per interval, so a flood of garbage costs it one PUBLISH a
    /// second rather than one per payload; an event without `count` stands for one refusal.
    CommandRefused {
        /// The reason of a single refusal, or the most frequent one of an aggregate.
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command_id: Option<String>,
        /// How many refusals this event stands for (absent: one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
        /// Refusals by reason, when this event stands for more than one.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        reasons: BTreeMap<String, u64>,
    },
}

/// Why a payload on the events channel was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventRefusal {
    #[error("larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("not an ebb event")]
    Malformed,
    #[error("unsigned, and a shared secret is configured")]
    Unsigned,
    #[error("bad signature")]
    BadSignature,
    #[error("for another cluster")]
    WrongCluster,
}

impl EventRefusal {
    /// A short, stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            EventRefusal::TooLarge => "too_large",
            EventRefusal::Malformed => "malformed",
            EventRefusal::Unsigned => "unsigned",
            EventRefusal::BadSignature => "bad_signature",
            EventRefusal::WrongCluster => "wrong_cluster",
        }
    }
}

impl Event {
    /// An event of `node` in `cluster`, stamped now.
    pub fn now(cluster: &str, node: NodeName, instance: Uuid, kind: EventKind) -> Self {
        Event {
            v: EVENT_VERSION,
            cluster: cluster.to_owned(),
            node,
            instance,
            at_ms: crate::time::now_ms(),
            kind,
        }
    }

    /// The payload published: plain JSON, or sealed with `secret`.
    pub fn encode(&self, secret: Option<&Secret>) -> String {
        let json = serde_json::to_string(self).expect("an event always serializes");
        match secret {
            Some(secret) => secret.seal(Domain::Event, json),
            None => json,
        }
    }

    /// Reads a payload from the events channel of `cluster`. With `secret`, only events sealed
    /// with it pass; without, plain events and envelopes both do.
    pub fn decode(
        payload: &[u8],
        secret: Option<&Secret>,
        cluster: &str,
    ) -> Result<Self, EventRefusal> {
        if payload.len() > MAX_EVENT_BYTES {
            return Err(EventRefusal::TooLarge);
        }
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|_| EventRefusal::Malformed)?;
        let event: Event = if value.get("signed").is_some() {
            let envelope: Envelope =
                serde_json::from_value(value).map_err(|_| EventRefusal::Malformed)?;
            let body = match secret {
                Some(secret) => envelope
                    .open(secret, Domain::Event)
                    .ok_or(EventRefusal::BadSignature)?,
                None => envelope.signed.as_str(),
            };
            serde_json::from_str(body).map_err(|_| EventRefusal::Malformed)?
        } else if secret.is_some() {
            return Err(EventRefusal::Unsigned);
        } else {
            serde_json::from_value(value).map_err(|_| EventRefusal::Malformed)?
        };
        if event.v != EVENT_VERSION {
            return Err(EventRefusal::Malformed);
        }
        if event.cluster != cluster {
            return Err(EventRefusal::WrongCluster);
        }
        Ok(event)
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
                count: None,
                reasons: BTreeMap::new(),
            },
            EventKind::CommandRefused {
                reason: "malformed".into(),
                command_id: None,
                count: Some(1200),
                reasons: BTreeMap::from([("malformed".into(), 1000), ("too_large".into(), 200)]),
            },
        ] {
            let event = Event::now("c", NodeName::parse("node-a").unwrap(), id, kind);
            assert_eq!(
                Event::decode(event.encode(None).as_bytes(), None, "c"),
                Ok(event.clone())
            );
            let sealed = event.encode(Some(&secret()));
            assert_eq!(
                Event::decode(sealed.as_bytes(), Some(&secret()), "c"),
                Ok(event)
            );
        }
        assert_eq!(
            Event::decode(b"garbage", None, "c"),
            Err(EventRefusal::Malformed)
        );
    }

    fn secret() -> Secret {
        Secret::new("event-test-secret-0123").unwrap()
    }

    #[test]
    fn a_refusal_event_from_before_aggregation_still_reads_as_one() {
        let old = r#"{"v":1,"cluster":"c","node":"n1","instance":"00000000-0000-0000-0000-000000000000","at_ms":1,"type":"command_refused","reason":"unsigned"}"#;
        let event = Event::decode(old.as_bytes(), None, "c").unwrap();
        assert_eq!(
            event.kind,
            EventKind::CommandRefused {
                reason: "unsigned".into(),
                command_id: None,
                count: None,
                reasons: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn forged_and_foreign_events_are_dropped() {
        let event = Event::now(
            "c",
            NodeName::parse("n1").unwrap(),
            Uuid::new_v4(),
            EventKind::Connections { connections: 0 },
        );
        let refused = |payload: &str, secret: Option<&Secret>| {
            Event::decode(payload.as_bytes(), secret, "c").unwrap_err()
        };
        assert_eq!(
            refused(&event.encode(None), Some(&secret())),
            EventRefusal::Unsigned
        );
        let forged = event.encode(Some(&Secret::new("not-the-secret-at-all").unwrap()));
        assert_eq!(
            refused(&forged, Some(&secret())),
            EventRefusal::BadSignature
        );
        let tampered = event.encode(Some(&secret())).replace("n1", "n2");
        assert_eq!(
            refused(&tampered, Some(&secret())),
            EventRefusal::BadSignature
        );
        assert_eq!(
            Event::decode(event.encode(None).as_bytes(), None, "other"),
            Err(EventRefusal::WrongCluster)
        );
        let bad_name = event.encode(None).replace("\"n1\"", "\"n1;id\"");
        assert_eq!(refused(&bad_name, None), EventRefusal::Malformed);
        let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_EVENT_BYTES));
        assert_eq!(refused(&huge, None), EventRefusal::TooLarge);
    }
}
