//! What the coordinator believes about the cluster.
//!
//! **Records confirm; events only wake.** Anyone who can PUBLISH can put anything on the events
//! channel, so no event changes what the rollout believes: an event only tells the engine which
//! records to read again now instead of at the next poll. Every view here comes from a record the
//! cluster layer has already parsed (names, bounds, signature), and a record that is not fresh
//! (older than its TTL, or from the future, beyond [`ebb_proto::keys::MAX_CLOCK_SKEW`]) is not
//! a view at all: it is a leftover or a replayed copy.
//!
//! Besides the records, the observation holds the per-instance copies of the old instances the
//! rollout is waiting on ([`ebb_proto::Keys::instance`]): a replacement that took a node's name
//! over before its predecessor exited does not make the predecessor gone.
//!
//! What events do carry into the observation is informational only (a drain's clean and forced
//! counts for the report, whether an instance said goodbye, the reason of a refused command), and
//! only for instances and names the rollout watches, so a flood cannot grow it.

use ebb_proto::{Event, EventKind, NodeName, NodeRecord, NodeState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// One node instance as its record (or its own copy) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub instance: Uuid,
    pub state: NodeState,
    pub connections: u64,
    pub capacity: Option<u64>,
    pub url: String,
    pub started_at_ms: u64,
    pub updated_at_ms: u64,
    /// How long its record lives without a heartbeat.
    pub ttl_ms: u64,
}

impl From<&NodeRecord> for NodeView {
    fn from(record: &NodeRecord) -> Self {
        NodeView {
            instance: record.instance,
            state: record.state,
            connections: record.connections,
            capacity: record.capacity,
            url: record.url.clone(),
            started_at_ms: record.started_at_ms,
            updated_at_ms: record.updated_at_ms,
            ttl_ms: record.ttl_ms,
        }
    }
}

/// How a drained instance closed its connections (from its `drained` event: informational).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainedInfo {
    pub clean: u64,
    pub forced: u64,
}

/// What an event asks the engine to read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Nothing: not about a node the rollout looks at.
    Nothing,
    /// This node's record (and its watched instance's copy).
    Node(NodeName),
    /// Every record (a node the rollout does not know registered: with ephemeral names it may
    /// be a replacement).
    All,
}

/// The cluster as the coordinator sees it.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Time since this coordinator's run started (timeouts count in it).
    pub now: Duration,
    /// The coordinator's wall clock, ms since the epoch (freshness, start times).
    pub wall_ms: u64,
    /// Fresh records, by name.
    pub nodes: BTreeMap<NodeName, NodeView>,
    /// The own copies of watched instances, read with their records; `None` when absent.
    pub instances: HashMap<Uuid, Option<NodeView>>,
    /// Watched instances, by node name: the old instances of the nodes in flight.
    pub watched: HashMap<Uuid, NodeName>,
    /// The names the rollout looks at (its plan): events about others are ignored.
    pub plan: HashSet<NodeName>,
    pub drained: HashMap<Uuid, DrainedInfo>,
    /// Watched instances that said they deregistered (a killed process never does).
    pub deregistered: HashSet<Uuid>,
    /// The latest command refusal of each planned node (e.g. `bad_signature`), to explain a
    /// missing acknowledgement.
    pub refused: HashMap<NodeName, String>,
    /// When (in [`Observation::now`]) each node's record was last read fresh, this run.
    pub last_seen: HashMap<NodeName, Duration>,
}

impl Observation {
    /// The connections every fresh record counts, together.
    pub fn connections(&self) -> u64 {
        self.nodes
            .values()
            .map(|v| v.connections)
            .fold(0, u64::saturating_add)
    }

    /// Replaces every view with a full read of the records.
    pub fn apply_records(&mut self, records: &[NodeRecord]) {
        let wall_ms = self.wall_ms;
        self.nodes = records
            .iter()
            .filter(|r| fresh(r, wall_ms))
            .map(|r| (r.name.clone(), NodeView::from(r)))
            .collect();
        let now = self.now;
        for name in self.nodes.keys() {
            self.last_seen.insert(name.clone(), now);
        }
    }

    /// Applies a read of one node's record (`None`: it has none).
    pub fn apply_record(&mut self, name: &NodeName, record: Option<&NodeRecord>) {
        match record.filter(|r| fresh(r, self.wall_ms) && r.name == *name) {
            Some(record) => {
                self.nodes.insert(name.clone(), NodeView::from(record));
                self.last_seen.insert(name.clone(), self.now);
            }
            None => {
                self.nodes.remove(name);
            }
        }
    }

    /// Applies a read of a watched instance's own copy.
    pub fn apply_instance(&mut self, instance: Uuid, copy: Option<&NodeRecord>) {
        let view = copy
            .filter(|r| fresh(r, self.wall_ms) && r.instance == instance)
            .map(NodeView::from);
        self.instances.insert(instance, view);
    }

    /// Watches exactly these instances (the old instances of the nodes in flight): their copies
    /// are read with the records, and whatever was noted about others is forgotten.
    pub fn set_watched(&mut self, watched: impl IntoIterator<Item = (Uuid, NodeName)>) {
        self.watched = watched.into_iter().collect();
        let keep = |instance: &Uuid| self.watched.contains_key(instance);
        self.instances.retain(|i, _| keep(i));
        self.drained.retain(|i, _| keep(i));
        self.deregistered.retain(keep);
    }

    /// Notes what an event says that is informational, and says what to read again. Nothing
    /// here changes a view.
    pub fn note_event(&mut self, event: &Event) -> Wake {
        let watched = self.watched.get(&event.instance) == Some(&event.node);
        let planned = self.plan.contains(&event.node);
        match &event.kind {
            EventKind::Drained { clean, forced, .. } if watched => {
                let info = DrainedInfo {
                    clean: *clean,
                    forced: *forced,
                };
                self.drained.insert(event.instance, info);
            }
            EventKind::Deregistered {} if watched => {
                self.deregistered.insert(event.instance);
            }
            EventKind::CommandRefused { reason, .. } if planned => {
                let reason: String = reason.chars().take(64).collect();
                self.refused.insert(event.node.clone(), reason);
                return Wake::Nothing;
            }
            EventKind::Registered { .. } if !planned => return Wake::All,
            _ => {}
        }
        if planned {
            Wake::Node(event.node.clone())
        } else {
            Wake::Nothing
        }
    }

    /// The record of `name`.
    /// Whether a record read fresh this run is missing now, and was seen less than `grace`
    /// ago: a record that lapsed recently may belong to a node that could not write while
    /// Redis failed over (it re-registers within a few heartbeats), not only to one that died.
    pub fn lapsed_within(&self, grace: Duration) -> bool {
        self.last_seen.iter().any(|(name, seen)| {
            !self.nodes.contains_key(name) && self.now.saturating_sub(*seen) < grace
        })
    }

    pub fn record(&self, name: &NodeName) -> Option<&NodeView> {
        self.nodes.get(name)
    }

    /// What is known of `instance` of `name`: its record while it owns the name, else its own
    /// copy. `None`: it is gone (exited, or killed and expired).
    pub fn instance(&self, name: &NodeName, instance: Uuid) -> Option<&NodeView> {
        match self.nodes.get(name) {
            Some(view) if view.instance == instance => Some(view),
            _ => self.instances.get(&instance).and_then(Option::as_ref),
        }
    }

    /// Whether `instance` finished a drain or exited cleanly (as opposed to vanishing). Only
    /// events say this, so it decides nothing but what the report calls the end.
    pub fn ended_cleanly(&self, instance: Uuid) -> bool {
        self.drained.contains_key(&instance) || self.deregistered.contains(&instance)
    }

    /// Active nodes, other than those in `except`.
    pub fn active_except<'a>(
        &'a self,
        except: &'a HashSet<&NodeName>,
    ) -> impl Iterator<Item = (&'a NodeName, &'a NodeView)> + 'a {
        self.nodes
            .iter()
            .filter(move |(name, view)| view.state == NodeState::Active && !except.contains(name))
    }
}

fn fresh(record: &NodeRecord, wall_ms: u64) -> bool {
    if record.is_fresh(wall_ms) {
        return true;
    }
    tracing::warn!(
        node = %record.name,
        updated_at_ms = record.updated_at_ms,
        now_ms = wall_ms,
        "ignoring a node record that is not fresh (a leftover, a replayed copy, or clocks apart)"
    );
    false
}

#[cfg(test)]
#[path = "tests/observe.rs"]
mod tests;
