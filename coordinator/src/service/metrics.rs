//! What `ebb serve` counts, at `GET /metrics` in Prometheus text format (prometheus-client):
//! leadership, rollouts by outcome, refused requests by reason, nodes restarted with their drain
//! and restart durations, and the running rollout's nodes by phase (read at each scrape).

use crate::rollout::report::{Report, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

/// Every metric of the service.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leader: Gauge,
    rollouts: Family<Outcome, Counter>,
    refused: Family<Reason, Counter>,
    nodes_restarted: Counter,
    drain_seconds: Histogram,
    restart_seconds: Histogram,
    phase: Family<PhaseLabel, Gauge>,
    /// The phases set at the last scrape (reset at the next).
    phases_seen: Mutex<Vec<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ebb_serve");
        let leader = Gauge::default();
        let rollouts = Family::<Outcome, Counter>::default();
        let refused = Family::<Reason, Counter>::default();
        let nodes_restarted = Counter::default();
        let drain_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 12));
        let restart_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 12));
        let phase = Family::<PhaseLabel, Gauge>::default();
        registry.register(
            "leader",
            "1 while this service holds the leader lease",
            leader.clone(),
        );
        registry.register("rollouts", "Rollouts ended, by outcome", rollouts.clone());
        registry.register(
            "requests_refused",
            "Requests refused, by reason",
            refused.clone(),
        );
        registry.register(
            "nodes_restarted",
            "Nodes restarted by rollouts",
            nodes_restarted.clone(),
        );
        registry.register(
            "drain_seconds",
            "Drain time of each node",
            drain_seconds.clone(),
        );
        registry.register(
            "restart_seconds",
            "Restart time of each node",
            restart_seconds.clone(),
        );
        registry.register(
            "rollout_nodes",
            "Nodes of the running rollout, by phase",
            phase.clone(),
        );
        for outcome in ["completed", "aborted", "failed"] {
            let _ = rollouts.get_or_create(&Outcome { outcome });
        }
        Metrics {
            registry,
            leader,
            rollouts,
            refused,
            nodes_restarted,
            drain_seconds,
            restart_seconds,
            phase,
            phases_seen: Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    pub fn leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a rollout that ended, and its nodes.
    pub fn rollout_ended(&self, report: &Report) {
        let outcome = match report.status {
            Status::Completed => "completed",
            Status::Aborted => "aborted",
            Status::Failed => "failed",
        };
        self.rollouts.get_or_create(&Outcome { outcome }).inc();
        for node in report.nodes.iter().filter(|n| n.phase == "done") {
            self.nodes_restarted.inc();
            if let Some(ms) = node.drain_ms {
                self.drain_seconds.observe(ms as f64 / 1000.0);
            }
            if let Some(ms) = node.restart_ms {
                self.restart_seconds.observe(ms as f64 / 1000.0);
            }
        }
    }

    /// The running rollout's nodes by phase (`phases` as (phase, count)), for this scrape.
    pub fn set_phases(&self, phases: &[(String, usize)]) {
        let mut seen = self.phases_seen.lock().expect("phases lock");
        for old in seen.drain(..) {
            self.phase.get_or_create(&PhaseLabel { phase: old }).set(0);
        }
        for (phase, count) in phases {
            self.phase
                .get_or_create(&PhaseLabel {
                    phase: phase.clone(),
                })
                .set(*count as i64);
            seen.push(phase.clone());
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
