//! Who may start next. Pure: the rollout's node machines and the observation in, one decision
//! out.
//!
//! A node is admitted, in plan order, only while the limits allow: fewer than `--max-parallel`
//! nodes in flight, and after taking it out at least `--min-active` other nodes active (nodes in
//! flight do not count, whatever their records say), and, where every counted node states its
//! capacity, room on them for its connections plus those still on the nodes in flight. A check
//! that fails only because of nodes in flight waits for them; one that fails with none in flight
//! can never pass by waiting, so it stops the rollout before the node is touched.
//!
//! Except just after a record lapsed: when Redis fails over, nodes cannot write for a few
//! seconds and records can expire (or be lost with the last unreplicated writes) although
//! every node is alive. For [`LAPSED_GRACE`] after a record seen this run went missing, a check
//! that fails waits instead of stopping: the node re-registers within a few heartbeats, or it
//! really is gone and the check stops the rollout once the grace is over.

use super::Policy;
use super::abort::Abort;
use super::node::NodeRun;
use super::observe::Observation;
use ebb_proto::{NodeName, NodeState};
use std::collections::HashSet;
use std::time::Duration;

/// How long a check that fails waits after a record seen this run lapsed, before it stops the
/// rollout (several heartbeats and a record TTL at the defaults, well above a failover).
pub const LAPSED_GRACE: Duration = Duration::from_secs(15);

/// The scheduler's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Start this node (the index in the plan), which leaves `active_before` active nodes
    /// counting it.
    Start { index: usize, active_before: usize },
    /// Not now: a limit holds because of nodes in flight.
    Wait,
    /// No node is left to start.
    Nothing,
    /// The next node cannot be started, now or by waiting.
    Abort(Abort),
}

/// Decides whether the next pending node may start now.
pub fn next(runs: &[NodeRun], obs: &Observation, policy: &Policy) -> Admission {
    let in_flight: Vec<&NodeRun> = runs.iter().filter(|r| r.in_flight()).collect();
    if in_flight.len() >= policy.max_parallel.of(runs.len()) {
        return Admission::Wait;
    }
    let Some(index) = runs
        .iter()
        .position(|r| matches!(r.phase, super::node::Phase::Pending))
    else {
        return Admission::Nothing;
    };
    let name = runs[index].name();
    // Not now, or never: with nodes in flight, a limit they hold may free up; after a record
    // lapsed, its node may be back in a moment.
    let may_pass = !in_flight.is_empty() || obs.lapsed_within(LAPSED_GRACE);
    let refuse = |abort: Abort| {
        if may_pass {
            Admission::Wait
        } else {
            Admission::Abort(abort)
        }
    };
    let Some(view) = obs.record(name) else {
        return refuse(Abort::Missing { node: name.clone() });
    };
    if view.state != NodeState::Active {
        return Admission::Abort(Abort::NotActive {
            node: name.clone(),
            state: view.state,
        });
    }
    let mut out: HashSet<&NodeName> = in_flight.iter().map(|r| r.name()).collect();
    out.insert(name);
    let others: Vec<_> = obs.active_except(&out).map(|(_, v)| v).collect();
    if others.len() < policy.min_active {
        return refuse(Abort::TooFewActive {
            node: name.clone(),
            have: others.len(),
            need: policy.min_active,
        });
    }
    if !others.is_empty() && others.iter().all(|o| o.capacity.is_some()) {
        // Bounded by the record parser, and saturating besides: no forged number overflows.
        let room = others.iter().fold(0u64, |sum, o| {
            sum.saturating_add(o.capacity.unwrap_or(0).saturating_sub(o.connections))
        });
        let moving = in_flight
            .iter()
            .filter_map(|r| Some(obs.instance(r.name(), r.old_instance()?)?.connections))
            .fold(view.connections, u64::saturating_add);
        if room < moving {
            return refuse(Abort::NoHeadroom {
                node: name.clone(),
                room,
                connections: moving,
            });
        }
    }
    Admission::Start {
        index,
        active_before: others.len() + 1,
    }
}

#[cfg(test)]
#[path = "tests/scheduler.rs"]
mod tests;
