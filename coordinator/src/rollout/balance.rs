//! How balanced the fleet is, and which sheds would even it out. Pure.
//!
//! The measure is max/mean of the active nodes' connections (1.0 is perfect). A plan sheds, from
//! each node above the mean (rounded up), what it holds beyond it, and sends those clients to the
//! nodes below the mean, weighted by what each lacks (and never beyond a stated capacity).

use super::observe::NodeView;
use ebb_proto::NodeName;
use ebb_proto::command::Shed;
use ebb_proto::target::{MAX_TARGETS, Target};

/// max/mean of `loads` (1.0 for an empty or idle fleet).
pub fn imbalance(loads: &[u64]) -> f64 {
    let total: u64 = loads.iter().copied().fold(0, u64::saturating_add);
    if loads.is_empty() || total == 0 {
        return 1.0;
    }
    let mean = total as f64 / loads.len() as f64;
    *loads.iter().max().expect("not empty") as f64 / mean
}

/// The sheds that bring `nodes` (active, with their URLs) within `tolerance` (0.10 = max/mean
/// at most 1.10), at `rate` closes per second each; empty when already within it.
pub fn plan(nodes: &[(NodeName, NodeView)], tolerance: f64, rate: u32) -> Vec<(NodeName, Shed)> {
    let loads: Vec<u64> = nodes.iter().map(|(_, v)| v.connections).collect();
    if nodes.len() < 2 || imbalance(&loads) <= 1.0 + tolerance {
        return Vec::new();
    }
    let total: u64 = loads.iter().sum();
    let high = total.div_ceil(nodes.len() as u64);
    let low = total / nodes.len() as u64;
    let mut targets: Vec<Target> = nodes
        .iter()
        .filter(|(_, v)| v.connections < low)
        .filter_map(|(_, v)| {
            let lacks = low - v.connections;
            let room = v
                .capacity
                .map_or(lacks, |c| c.saturating_sub(v.connections).min(lacks));
            let target = Target {
                url: v.url.clone(),
                weight: room.max(1),
            };
            (room > 0 && target.validate().is_ok()).then_some(target)
        })
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.weight));
    targets.truncate(MAX_TARGETS);
    if targets.is_empty() {
        return Vec::new();
    }
    nodes
        .iter()
        .filter(|(_, v)| v.connections > high)
        .map(|(name, v)| {
            let shed = Shed {
                count: v.connections - high,
                rate_per_s: rate,
                targets: targets.clone(),
            };
            (name.clone(), shed)
        })
        .collect()
}

#[cfg(test)]
#[path = "tests/balance.rs"]
mod tests;
