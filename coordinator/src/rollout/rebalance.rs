//! Rebalancing: `ebb rebalance`, and the last step of a rolling restart when the fleet ends
//! uneven. Measure (max/mean of the active nodes' connections), send each overloaded node a
//! `shed` (it closes that many clients, paced, each sent to a node with room, and stays active),
//! wait for the counts to move, and measure again, a few rounds at most. It says why when it could
//! not reach the tolerance: clients that do not follow targets (they follow only URLs they know)
//! come back wherever they like.

use super::balance::{self, imbalance};
use super::io::Io;
use super::observe::NodeView;
use crate::cluster::ClusterError;
use crate::progress::Progress;
use ebb_proto::NodeName;
use ebb_proto::command::{Action, Command};
use serde::Serialize;
use std::time::Duration;

/// `--tolerance`: max/mean above 1 + this is uneven.
pub const DEFAULT_TOLERANCE: f64 = 0.10;
/// After a rolling restart, the fleet is left within this.
pub const ROLLOUT_TOLERANCE: f64 = 0.25;
/// `--rate`: closes per second of each shedding node.
pub const DEFAULT_RATE: u32 = 200;
/// Rounds of shedding before giving up.
pub const ROUNDS: u32 = 3;
/// How often the records are read while waiting for counts to move.
const POLL: Duration = Duration::from_millis(250);

/// How to rebalance.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub tolerance: f64,
    pub rate: u32,
    pub rounds: u32,
}

/// What a rebalance did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalanceReport {
    /// max/mean before and after.
    pub before: f64,
    pub after: f64,
    pub rounds: u32,
    /// Connections the sheds asked to move.
    pub shed: u64,
    /// Within the tolerance at the end.
    pub reached: bool,
    /// Why not, when it was not reached.
    pub reason: Option<String>,
}

/// Rebalances the cluster behind `io`.
pub async fn run<C: Io>(
    io: &mut C,
    settings: Settings,
    progress: &Progress,
) -> Result<BalanceReport, ClusterError> {
    let before = imbalance(&loads(&active(io).await?));
    let mut report = BalanceReport {
        before,
        after: before,
        rounds: 0,
        shed: 0,
        reached: before <= 1.0 + settings.tolerance,
        reason: None,
    };
    while !report.reached && report.rounds < settings.rounds {
        let nodes = active(io).await?;
        let plan = balance::plan(&nodes, settings.tolerance, settings.rate);
        if plan.is_empty() {
            report.reason = Some("no node below the mean has room for more connections".into());
            break;
        }
        report.rounds += 1;
        for (name, shed) in &plan {
            progress.note(&format!(
                "{name}: shedding {} connection(s) at {}/s to {} node(s)",
                shed.count,
                shed.rate_per_s,
                shed.targets.len()
            ));
            report.shed += shed.count;
            let instance = nodes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.instance);
            let mut cmd = Command::new(io.cluster(), name.clone(), Action::Shed(shed.clone()));
            cmd.instance = instance;
            io.send(&cmd).await?;
        }
        settle(io, &plan, &nodes).await?;
        report.after = imbalance(&loads(&active(io).await?));
        report.reached = report.after <= 1.0 + settings.tolerance;
    }
    if !report.reached && report.reason.is_none() {
        report.reason = Some(format!(
            "max/mean is still {:.2} after {} round(s); do the clients follow reconnect targets (ebb-client follows only URLs it knows)?",
            report.after, report.rounds
        ));
    }
    Ok(report)
}

/// Waits until every shedding node's record shows its count down to the mean (or the time the
/// shed should take, plus two heartbeats, has passed).
async fn settle<C: Io>(
    io: &mut C,
    plan: &[(NodeName, ebb_proto::command::Shed)],
    before: &[(NodeName, NodeView)],
) -> Result<(), ClusterError> {
    let longest = plan
        .iter()
        .map(|(_, s)| Duration::from_secs_f64(s.count as f64 / s.rate_per_s as f64))
        .max()
        .unwrap_or_default();
    let heartbeat = before
        .iter()
        .map(|(_, v)| Duration::from_millis(v.ttl_ms / 2))
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + longest + heartbeat * 2 + Duration::from_secs(2);
    loop {
        tokio::time::sleep(POLL).await;
        let now = active(io).await?;
        // Each shedding node down to what it keeps, give or take 5% of what it sheds.
        let moved = plan.iter().all(|(name, shed)| {
            let was = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| v.connections);
            let goal = was.saturating_sub(shed.count) + shed.count / 20;
            now.iter()
                .find(|(n, _)| n == name)
                .is_none_or(|(_, v)| v.connections <= goal)
        });
        if moved || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
    }
}

/// The active nodes with fresh records.
async fn active<C: Io>(io: &mut C) -> Result<Vec<(NodeName, NodeView)>, ClusterError> {
    let now = io.now_ms();
    Ok(io
        .nodes()
        .await?
        .iter()
        .filter(|r| r.state == ebb_proto::NodeState::Active && r.is_fresh(now))
        .map(|r| (r.name.clone(), NodeView::from(r)))
        .collect())
}

fn loads(nodes: &[(NodeName, NodeView)]) -> Vec<u64> {
    nodes.iter().map(|(_, v)| v.connections).collect()
}
