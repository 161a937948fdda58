//! Where a drained node's clients should go: the coordinator picks the targets, so the fleet ends
//! a rollout balanced instead of each client picking a random survivor (often the next one to be
//! drained, which moves it twice).
//!
//! Candidates are active nodes not in flight. Nodes already restarted (or not in the plan, such
//! as a new pod) come first; nodes about to be drained (the next ones the scheduler would admit)
//! are used only when nothing else is left. Each target's weight is its room: what it lacks of
//! its share (by capacity, or even), within what its capacity leaves.

use super::Policy;
use super::node::{NodeRun, Phase};
use super::observe::{NodeView, Observation};
use ebb_proto::NodeName;
use ebb_proto::target::{MAX_TARGETS, Target};
use std::collections::HashSet;

/// The targets for the drain of `runs[index]`, with `population` the most connections the fleet
/// was seen to hold (see [`in_transit`]).
pub fn for_drain(
    runs: &[NodeRun],
    obs: &Observation,
    policy: &Policy,
    index: usize,
    population: u64,
) -> Vec<Target> {
    let run = &runs[index];
    let moving = run
        .result
        .old_instance
        .and_then(|i| obs.instance(run.name(), i))
        .map_or(0, |v| v.connections);
    let in_flight: HashSet<&NodeName> = runs
        .iter()
        .filter(|r| r.in_flight())
        .map(|r| r.name())
        .collect();
    let pending: Vec<&NodeName> = runs
        .iter()
        .filter(|r| r.phase == Phase::Pending)
        .map(|r| r.name())
        .collect();
    let soon: HashSet<&NodeName> = pending
        .iter()
        .take(policy.max_parallel.of(runs.len()))
        .copied()
        .collect();
    let mut candidates: Vec<(&NodeName, &NodeView)> = obs
        .active_except(&in_flight)
        .filter(|(name, v)| *name != run.name() && target(v).is_some())
        .collect();
    // A full node refuses upgrades (503): no client is sent there while another has a seat.
    if candidates.iter().any(|(_, v)| !full(v)) {
        candidates.retain(|(_, v)| !full(v));
    }
    let loads = in_transit(runs, obs, policy, index, population, &candidates);
    let room = rooms(&candidates, &loads, moving);
    let pick = |keep: &dyn Fn(&NodeName) -> bool| -> Vec<(usize, u64)> {
        (0..candidates.len())
            .filter(|&k| keep(candidates[k].0))
            .map(|k| (k, room[k]))
            .collect()
    };
    let fresh = pick(&|name| !pending.contains(&name));
    let fresh_room: u64 = fresh.iter().map(|(_, r)| *r).fold(0, u64::saturating_add);
    let mut pool = if !fresh.is_empty() && fresh_room >= moving {
        fresh
    } else {
        pick(&|name| !soon.contains(name))
    };
    if pool.is_empty() {
        pool = pick(&|_| true);
    }
    pool.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    pool.truncate(MAX_TARGETS);
    pool.into_iter()
        .filter_map(|(k, weight)| {
            let mut t = target(candidates[k].1)?;
            t.weight = weight.max(1);
            Some(t)
        })
        .collect()
}

/// A candidate's room: what it lacks of its share of the connections the candidates will hold
/// once `moving` have arrived (shares in proportion to capacity when every candidate states
/// one, else even), and never more than its capacity leaves. Weighing by capacity alone would
/// spread clients evenly over nodes of unequal load and leave the fleet as uneven as it was.
fn rooms(candidates: &[(&NodeName, &NodeView)], loads: &[u64], moving: u64) -> Vec<u64> {
    let total = loads.iter().fold(moving, |a, l| a.saturating_add(*l));
    let capacities: Option<Vec<u64>> = candidates.iter().map(|(_, v)| v.capacity).collect();
    let all_capacity: u64 = capacities
        .iter()
        .flatten()
        .fold(0, |a, c| a.saturating_add(*c));
    candidates
        .iter()
        .enumerate()
        .map(|(k, (_, v))| {
            let share = match &capacities {
                Some(caps) if all_capacity > 0 => {
                    (total as u128 * caps[k] as u128 / all_capacity as u128) as u64
                }
                _ => total.div_ceil(candidates.len().max(1) as u64),
            };
            let lacks = share.saturating_sub(loads[k]);
            let fits = v.capacity.map_or(u64::MAX, |c| c.saturating_sub(loads[k]));
            lacks.min(fits).max(1)
        })
        .collect()
}

/// Each candidate's load: its connections, plus its part of the clients still on their way from
/// the latest drains (`population` less what the records count now), dealt over those drains'
/// targets in proportion to their connections' room below an even share. Without this, the
/// nodes restarted first look emptier than they are at every drain, receive more each time,
/// and the fleet ends a rollout uneven.
fn in_transit(
    runs: &[NodeRun],
    obs: &Observation,
    policy: &Policy,
    index: usize,
    population: u64,
    candidates: &[(&NodeName, &NodeView)],
) -> Vec<u64> {
    let mut loads: Vec<u64> = candidates.iter().map(|(_, v)| v.connections).collect();
    let mut latest: Vec<&NodeRun> = runs
        .iter()
        .enumerate()
        .filter(|(i, r)| *i != index && r.result.drained_at.is_some())
        .map(|(_, r)| r)
        .collect();
    latest.sort_by_key(|r| std::cmp::Reverse(r.result.drained_at));
    latest.truncate(policy.max_parallel.of(runs.len()).max(1));
    // At most what those drains moved: clients that left the fleet are not on their way.
    let moved = latest
        .iter()
        .map(|r| r.result.connections_before)
        .fold(0, u64::saturating_add);
    let transit = population.saturating_sub(obs.connections()).min(moved);
    let heading: HashSet<&str> = latest
        .iter()
        .flat_map(|r| r.result.targets.iter().map(String::as_str))
        .collect();
    let receiving: Vec<usize> = (0..candidates.len())
        .filter(|&k| heading.contains(candidates[k].1.url.as_str()))
        .collect();
    if transit == 0 || receiving.is_empty() {
        return loads;
    }
    let total = loads.iter().fold(transit, |a, l| a.saturating_add(*l));
    let share = total.div_ceil(candidates.len() as u64);
    let lacks: Vec<u64> = receiving
        .iter()
        .map(|&k| share.saturating_sub(loads[k]).max(1))
        .collect();
    let all: u64 = lacks.iter().sum();
    for (&k, lack) in receiving.iter().zip(&lacks) {
        let part = (transit as u128 * *lack as u128 / all as u128) as u64;
        loads[k] = loads[k].saturating_add(part);
    }
    loads
}

/// At its stated capacity.
fn full(view: &NodeView) -> bool {
    view.capacity.is_some_and(|c| view.connections >= c)
}

/// The node as a target, if its URL can be one.
fn target(view: &NodeView) -> Option<Target> {
    let t = Target {
        url: view.url.clone(),
        weight: 1,
    };
    t.validate().ok().map(|()| t)
}

#[cfg(test)]
#[path = "tests/targets.rs"]
mod tests;
