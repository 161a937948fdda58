//! The report a rollout ends with: printed as one JSON object with `--json` (the interface
//! contract: `status`, `duration_ms`, and per node `name`, `old_instance`, `new_instance`,
//! `connections_before`, `drain_ms`, `restart_ms`, `forced_closes`), and summarised for people.

use super::node::{CheckResult, NodeRun};
use ebb_proto::NodeName;
use serde::Serialize;
use uuid::Uuid;

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every node restarted.
    Completed,
    /// Stopped by a rule (capacity, timeout, lost node, lock): nothing else was touched.
    Aborted,
    /// Stopped by an error (Redis, the environment).
    Failed,
}

/// One node in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub name: NodeName,
    /// Where it got: `done`, `pending` (never touched), or the phase the rollout stopped in.
    pub phase: &'static str,
    pub old_instance: Option<Uuid>,
    pub new_instance: Option<Uuid>,
    pub connections_before: u64,
    pub drain_ms: Option<u64>,
    pub restart_ms: Option<u64>,
    pub clean_closes: Option<u64>,
    pub forced_closes: Option<u64>,
    /// The old instance vanished mid-drain (killed or crashed).
    pub lost: bool,
    /// From the node's "zero connections" event to the coordinator acting on it.
    pub react_ms: Option<u64>,
    /// How its `--check` ended, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckResult>,
    /// Where its drain sent its clients.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

impl NodeReport {
    pub fn new(run: &NodeRun, react_ms: Option<u64>) -> Self {
        let result = &run.result;
        NodeReport {
            name: result.name.clone(),
            phase: run.phase.name(),
            old_instance: result.old_instance,
            new_instance: result.new_instance,
            connections_before: result.connections_before,
            drain_ms: result.drain_ms,
            restart_ms: result.restart_ms,
            clean_closes: result.clean_closes,
            forced_closes: result.forced_closes,
            lost: result.lost,
            react_ms,
            check: result.check.clone(),
            targets: result.targets.clone(),
        }
    }
}

/// The whole rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub status: Status,
    pub cluster: String,
    pub rollout_id: String,
    pub duration_ms: u64,
    /// Time not spent in the nodes' drains and restarts: planning, commands, reaction delays.
    pub overhead_ms: u64,
    /// Why it stopped (aborted or failed).
    pub reason: Option<String>,
    /// The node it stopped at.
    pub failed_node: Option<NodeName>,
    /// What the events channel brought: `accepted`, and what was refused or dropped by reason
    /// (`unsigned`, `bad_signature`, `malformed`, `dropped`...). Zeros are left out.
    pub events: std::collections::BTreeMap<&'static str, u64>,
    /// The last rebalance step, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<super::rebalance::BalanceReport>,
    pub nodes: Vec<NodeReport>,
}

impl Report {
    /// The report of a rollout refused before it touched anything.
    pub fn refused(cluster: &str, reason: String) -> Self {
        Report {
            status: Status::Aborted,
            cluster: cluster.to_owned(),
            rollout_id: String::new(),
            duration_ms: 0,
            overhead_ms: 0,
            reason: Some(reason),
            failed_node: None,
            events: Default::default(),
            balance: None,
            nodes: Vec::new(),
        }
    }

    /// Fills `overhead_ms` from the duration and the nodes' own times.
    pub fn with_overhead(mut self) -> Self {
        let busy: u64 = self
            .nodes
            .iter()
            .map(|n| n.drain_ms.unwrap_or(0) + n.restart_ms.unwrap_or(0))
            .sum();
        self.overhead_ms = self.duration_ms.saturating_sub(busy);
        self
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "rollout {}: {:?} in {:.1}s ({} node(s), coordinator overhead {} ms)",
            self.rollout_id,
            self.status,
            self.duration_ms as f64 / 1000.0,
            self.nodes.len(),
            self.overhead_ms
        );
        for node in &self.nodes {
            if node.phase == "pending" {
                let _ = writeln!(text, "  {:<20} not touched", node.name);
                continue;
            }
            let _ = writeln!(
                text,
                "  {:<20} {:>6} conns  drain {:>6} ms  restart {:>6} ms  forced {}{}{}",
                node.name,
                node.connections_before,
                node.drain_ms.map_or("-".into(), |v| v.to_string()),
                node.restart_ms.map_or("-".into(), |v| v.to_string()),
                node.forced_closes.map_or("?".into(), |v| v.to_string()),
                if node.lost { "  (lost mid-drain)" } else { "" },
                if node.phase == "done" {
                    String::new()
                } else {
                    format!("  (stopped while {})", node.phase)
                },
            );
        }
        let ignored: u64 = self
            .events
            .iter()
            .filter(|(label, _)| **label != "accepted")
            .map(|(_, n)| n)
            .sum();
        if ignored > 0 {
            let _ = writeln!(
                text,
                "events ignored (forged, foreign, malformed or dropped): {:?}",
                self.events
            );
        }
        if let Some(reason) = &self.reason {
            let _ = writeln!(text, "stopped: {reason}");
        }
        if let Some(b) = &self.balance {
            let _ = writeln!(
                text,
                "balance: max/mean connections {:.2} -> {:.2} ({} moved){}",
                b.before,
                b.after,
                b.shed,
                b.reason
                    .as_ref()
                    .map(|r| format!("; {r}"))
                    .unwrap_or_default()
            );
        }
        text
    }
}
