//! The report a rollout ends with: printed as one JSON object with `--json` (the interface
//! contract: `status`, `duration_ms`, and per node `name`, `old_instance`, `new_instance`,
//! `connections_before`, `drain_ms`, `restart_ms`, `forced_closes`), and summarised for people.

use super::step::NodeResult;
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
}

impl NodeReport {
    pub fn new(result: &NodeResult, react_ms: Option<u64>) -> Self {
        NodeReport {
            name: result.name.clone(),
            old_instance: result.old_instance,
            new_instance: result.new_instance,
            connections_before: result.connections_before,
            drain_ms: result.drain_ms,
            restart_ms: result.restart_ms,
            clean_closes: result.clean_closes,
            forced_closes: result.forced_closes,
            lost: result.lost,
            react_ms,
        }
    }
}

/// The whole rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    pub nodes: Vec<NodeReport>,
}

impl Report {
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
            let _ = writeln!(
                text,
                "  {:<20} {:>6} conns  drain {:>6} ms  restart {:>6} ms  forced {}{}",
                node.name,
                node.connections_before,
                node.drain_ms.map_or("-".into(), |v| v.to_string()),
                node.restart_ms.map_or("-".into(), |v| v.to_string()),
                node.forced_closes.map_or("?".into(), |v| v.to_string()),
                if node.lost { "  (lost mid-drain)" } else { "" },
            );
        }
        if let Some(reason) = &self.reason {
            let _ = writeln!(text, "stopped: {reason}");
        }
        text
    }
}
