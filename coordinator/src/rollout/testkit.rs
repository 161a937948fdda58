//! Scripted observations for the pure parts' tests.

use super::observe::{NodeView, Observation};
use ebb_proto::{NodeName, NodeState};
use std::time::Duration;
use uuid::Uuid;

pub const ACTIVE: NodeState = NodeState::Active;
pub const DRAINING: NodeState = NodeState::Draining;
pub const DRAINED: NodeState = NodeState::Drained;

/// The wall clock of a script's start, ms.
pub const WALL: u64 = 1_700_000_000_000;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn n(name: &str) -> NodeName {
    NodeName::parse(name).unwrap()
}

pub fn ids<const N: usize>() -> [Uuid; N] {
    std::array::from_fn(|_| Uuid::new_v4())
}

/// A scripted cluster: records set and removed by hand, the clock moved by [`Script::at`].
pub struct Script {
    pub obs: Observation,
}

impl Script {
    pub fn new(nodes: &[(&str, Uuid, NodeState, u64)]) -> Self {
        let mut s = Script {
            obs: Observation {
                wall_ms: WALL,
                ..Observation::default()
            },
        };
        for &(name, instance, state, connections) in nodes {
            s.set(name, instance, state, connections);
        }
        s
    }

    /// A view of `instance` (started at the script's wall time) as `name`'s record.
    pub fn view(&self, instance: Uuid, state: NodeState, connections: u64) -> NodeView {
        NodeView {
            instance,
            state,
            connections,
            capacity: None,
            url: "ws://127.0.0.1:1/ws".into(),
            started_at_ms: self.obs.wall_ms,
            updated_at_ms: self.obs.wall_ms,
            ttl_ms: 10_000,
        }
    }

    pub fn set(&mut self, name: &str, instance: Uuid, state: NodeState, connections: u64) {
        let started = self
            .obs
            .nodes
            .get(&n(name))
            .filter(|v| v.instance == instance)
            .map(|v| v.started_at_ms);
        let mut view = self.view(instance, state, connections);
        view.started_at_ms = started.unwrap_or(view.started_at_ms);
        self.obs.nodes.insert(n(name), view);
    }

    pub fn capacity(&mut self, name: &str, capacity: u64) {
        self.obs.nodes.get_mut(&n(name)).unwrap().capacity = Some(capacity);
    }

    pub fn remove(&mut self, name: &str) {
        self.obs.nodes.remove(&n(name));
    }

    /// `instance`'s own copy says this (its record belongs to another instance now).
    pub fn copy(&mut self, instance: Uuid, state: NodeState, connections: u64) {
        let view = self.view(instance, state, connections);
        self.obs.instances.insert(instance, Some(view));
    }

    pub fn drop_copy(&mut self, instance: Uuid) {
        self.obs.instances.insert(instance, None);
    }

    /// The observation at `t` ms into the run (the wall clock moves with it).
    pub fn at(&mut self, t: u64) -> &Observation {
        self.obs.now = ms(t);
        self.obs.wall_ms = WALL + t;
        &self.obs
    }
}
