//! What the coordinator believes about the cluster: node records as last read, kept current
//! between reads by the nodes' events. Records are the source of truth; events only make the
//! view fresh sooner, so an event never overrides a newer record and a stale read never
//! overrides a newer event.

use ebb_proto::{Event, EventKind, NodeName, NodeRecord, NodeState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// One node as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub instance: Uuid,
    pub state: NodeState,
    pub connections: u64,
    pub capacity: Option<u64>,
    /// When this view was true at the node (ms since epoch), to order reads and events.
    pub at_ms: u64,
}

impl From<&NodeRecord> for NodeView {
    fn from(record: &NodeRecord) -> Self {
        NodeView {
            instance: record.instance,
            state: record.state,
            connections: record.connections,
            capacity: record.capacity,
            at_ms: record.updated_at_ms,
        }
    }
}

/// How a drained instance closed its connections (from its `drained` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainedInfo {
    pub clean: u64,
    pub forced: u64,
}

/// The cluster as the coordinator sees it at `now` (time since the rollout started).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub now: Duration,
    pub nodes: BTreeMap<NodeName, NodeView>,
    pub drained: HashMap<Uuid, DrainedInfo>,
    /// Instances that deregistered (a clean exit; a killed process never does).
    pub deregistered: HashSet<Uuid>,
    /// The latest command refusal of each node (e.g. `bad_signature`), to explain a missing ack.
    pub refused: HashMap<NodeName, String>,
}

impl Observation {
    /// Replaces the view with a fresh read of every record, keeping any node whose event is
    /// newer than its record.
    pub fn apply_records(&mut self, records: &[NodeRecord]) {
        let mut nodes = BTreeMap::new();
        for record in records {
            let fresh = NodeView::from(record);
            let view = match self.nodes.remove(&record.name) {
                Some(known) if known.instance == fresh.instance && known.at_ms > fresh.at_ms => {
                    known
                }
                _ => fresh,
            };
            nodes.insert(record.name.clone(), view);
        }
        self.nodes = nodes;
    }

    /// Applies one event; `true` when it changed anything the rollout looks at.
    pub fn apply_event(&mut self, event: &Event) -> bool {
        let current = self.nodes.get_mut(&event.node);
        match (&event.kind, current) {
            (
                EventKind::Registered {
                    state, connections, ..
                },
                current,
            ) => {
                let capacity = current.as_ref().and_then(|v| v.capacity);
                let view = NodeView {
                    instance: event.instance,
                    state: *state,
                    connections: *connections,
                    capacity,
                    at_ms: event.at_ms,
                };
                self.nodes.insert(event.node.clone(), view);
                true
            }
            (EventKind::State { state, connections }, Some(view))
                if view.instance == event.instance && view.at_ms <= event.at_ms =>
            {
                view.state = *state;
                view.connections = *connections;
                view.at_ms = event.at_ms;
                true
            }
            (EventKind::Connections { connections }, Some(view))
                if view.instance == event.instance && view.at_ms <= event.at_ms =>
            {
                view.connections = *connections;
                view.at_ms = event.at_ms;
                true
            }
            (EventKind::Drained { clean, forced, .. }, _) => {
                self.drained.insert(
                    event.instance,
                    DrainedInfo {
                        clean: *clean,
                        forced: *forced,
                    },
                );
                true
            }
            (EventKind::CommandRefused { reason, .. }, _) => {
                self.refused.insert(event.node.clone(), reason.clone());
                false
            }
            (EventKind::Deregistered {}, current) => {
                self.deregistered.insert(event.instance);
                if current.is_some_and(|view| view.instance == event.instance) {
                    self.nodes.remove(&event.node);
                }
                true
            }
            _ => false,
        }
    }

    /// Whether `instance` finished a drain or exited cleanly (as opposed to vanishing).
    pub fn ended_cleanly(&self, instance: Uuid) -> bool {
        self.drained.contains_key(&instance) || self.deregistered.contains(&instance)
    }

    /// Active nodes other than `name`.
    pub fn active_others(&self, name: &NodeName) -> impl Iterator<Item = &NodeView> + '_ {
        let name = name.clone();
        self.nodes
            .iter()
            .filter(move |(n, v)| **n != name && v.state == NodeState::Active)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> NodeName {
        NodeName::parse(name).unwrap()
    }

    fn record(name: &str, instance: Uuid, state: NodeState, conns: u64, at: u64) -> NodeRecord {
        NodeRecord {
            name: NodeName::parse(name).unwrap(),
            instance,
            url: "ws://x/ws".into(),
            version: String::new(),
            state,
            connections: conns,
            capacity: None,
            started_at_ms: 0,
            updated_at_ms: at,
            ttl_ms: 10_000,
        }
    }

    fn event(name: &str, instance: Uuid, at: u64, kind: EventKind) -> Event {
        Event {
            v: 1,
            cluster: "c".into(),
            node: NodeName::parse(name).unwrap(),
            instance,
            at_ms: at,
            kind,
        }
    }

    #[test]
    fn events_refresh_and_stale_reads_do_not_regress() {
        let a = Uuid::new_v4();
        let mut obs = Observation::default();
        obs.apply_records(&[record("a", a, NodeState::Active, 10, 100)]);
        obs.apply_event(&event(
            "a",
            a,
            200,
            EventKind::State {
                state: NodeState::Draining,
                connections: 10,
            },
        ));
        obs.apply_event(&event(
            "a",
            a,
            300,
            EventKind::Connections { connections: 0 },
        ));
        // A read answered after the events but taken before them.
        obs.apply_records(&[record("a", a, NodeState::Active, 10, 150)]);
        let view = &obs.nodes["a"];
        assert_eq!((view.state, view.connections), (NodeState::Draining, 0));
        // A newer read wins.
        obs.apply_records(&[record("a", a, NodeState::Drained, 0, 400)]);
        assert_eq!(obs.nodes["a"].state, NodeState::Drained);
    }

    #[test]
    fn events_of_other_instances_are_ignored_until_they_register() {
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        let mut obs = Observation::default();
        obs.apply_records(&[record("a", old, NodeState::Drained, 0, 100)]);
        assert!(!obs.apply_event(&event(
            "a",
            new,
            200,
            EventKind::Connections { connections: 5 }
        )));
        obs.apply_event(&event("a", old, 250, EventKind::Deregistered {}));
        assert!(obs.nodes.is_empty());
        obs.apply_event(&event(
            "a",
            new,
            300,
            EventKind::Registered {
                url: String::new(),
                state: NodeState::Active,
                connections: 0,
            },
        ));
        assert_eq!(obs.nodes["a"].instance, new);
        // A late deregistration of the old instance does not remove the new one.
        obs.apply_event(&event("a", old, 310, EventKind::Deregistered {}));
        assert_eq!(obs.nodes["a"].instance, new);
    }

    #[test]
    fn records_missing_from_a_read_are_gone() {
        let mut obs = Observation::default();
        obs.apply_records(&[
            record("a", Uuid::new_v4(), NodeState::Active, 0, 1),
            record("b", Uuid::new_v4(), NodeState::Active, 0, 1),
        ]);
        obs.apply_records(&[record(
            "b",
            obs.nodes["b"].instance,
            NodeState::Active,
            0,
            2,
        )]);
        assert_eq!(obs.nodes.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(obs.active_others(&n("a")).count(), 1);
        assert_eq!(obs.active_others(&n("b")).count(), 0);
    }
}
