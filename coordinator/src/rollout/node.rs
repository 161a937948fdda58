//! One node's rollout: a small state machine. No I/O and no clock of its own: the rollout feeds
//! it observations (and the results of its `--exec` command and sends) and carries out what it
//! returns, so every rule here is tested against scripted observations.
//!
//! `pending → acking → draining → [executing] → exiting → replacing → [soaking] → [checking] →
//! settling → done`:
//! the drain is sent (re-sent, then given up on), its acknowledgement is the old instance saying
//! `draining`, its count is followed to zero, the `--exec` command runs if any, the old instance
//! must be gone (its record *and* its own copy: a replacement that took the name over does not
//! make it gone), then a replacement must be active (same name, a new instance started after the
//! drain began; or with ephemeral names, the active count restored), then it must stay ready for
//! `--min-ready`, pass the `--check` gate, and the settle time passes (those last steps are in
//! [`super::ready`]). Admission (who may leave `pending`) is the scheduler's, not this machine's.

use super::abort::Abort;
use super::observe::{NodeView, Observation};
use super::{Policy, ms};
use ebb_proto::NodeName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

/// How long a vanished instance's goodbye (its `drained` or `deregistered` event) may trail the
/// disappearance of its record: a node deletes its record first and says so after, so an idle
/// node that drains and exits within milliseconds is not taken for a killed one.
pub const LOST_GRACE: Duration = Duration::from_secs(1);

/// Where a node is. Times are offsets from the start of this coordinator's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Not admitted yet.
    Pending,
    /// Drain sent, waiting for the node to say `draining`.
    Acking {
        instance: Uuid,
        #[serde(with = "ms")]
        sent_at: Duration,
        attempts: u32,
    },
    /// Following the connection count to zero.
    Draining {
        instance: Uuid,
        #[serde(with = "ms")]
        since: Duration,
    },
    /// Drained; the `--exec` command runs. Not `running` after a resume: whether to run it
    /// again is decided from what is observed.
    Executing {
        instance: Uuid,
        running: bool,
    },
    /// Waiting for the old instance to be gone.
    Exiting {
        instance: Uuid,
        #[serde(with = "ms")]
        since: Duration,
    },
    /// Waiting for a replacement to be active.
    Replacing {
        instance: Uuid,
        #[serde(with = "ms")]
        since: Duration,
    },
    /// A replacement is active; it must stay so (same instance, heartbeating) for `--min-ready`.
    Soaking {
        instance: Uuid,
        new: Uuid,
        #[serde(with = "ms")]
        since: Duration,
        /// Wall clock at the start of the soak: the replacement must heartbeat after it.
        since_wall_ms: u64,
    },
    /// The `--check` command gates the node. Not `running` after a resume: it runs again.
    Checking {
        new: Uuid,
        running: bool,
    },
    /// Replacement ready; the settle time passes before its slot is free.
    Settling {
        #[serde(with = "ms")]
        until: Duration,
    },
    Done,
}

impl Phase {
    /// The phase's name, as in the saved state and the report.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Acking { .. } => "acking",
            Phase::Draining { .. } => "draining",
            Phase::Executing { .. } => "executing",
            Phase::Exiting { .. } => "exiting",
            Phase::Replacing { .. } => "replacing",
            Phase::Soaking { .. } => "soaking",
            Phase::Checking { .. } => "checking",
            Phase::Settling { .. } => "settling",
            Phase::Done => "done",
        }
    }
}

/// What happened to one node, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResult {
    pub name: NodeName,
    pub old_instance: Option<Uuid>,
    pub new_instance: Option<Uuid>,
    pub connections_before: u64,
    /// From the drain command to the count reaching zero.
    pub drain_ms: Option<u64>,
    /// From the count reaching zero to the replacement being active.
    pub restart_ms: Option<u64>,
    pub clean_closes: Option<u64>,
    pub forced_closes: Option<u64>,
    /// The old instance vanished before finishing its drain (killed, crashed).
    pub lost: bool,
    /// Instances that cannot be the replacement: those seen when the drain began (of this name;
    /// of the whole cluster with ephemeral names), and those seen when the `--exec` command
    /// started (it restarts the node: whatever ran before it is not what it started).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub known_before: BTreeSet<Uuid>,
    #[serde(default)]
    pub active_before: usize,
    /// Wall clock at the drain, ms: a replacement must have started after it.
    #[serde(default)]
    pub drain_started_wall_ms: u64,
    #[serde(with = "ms::opt", default)]
    pub drain_started: Option<Duration>,
    #[serde(with = "ms::opt", default)]
    pub drained_at: Option<Duration>,
    /// When the old instance was first seen gone without a goodbye.
    #[serde(with = "ms::opt", default)]
    pub vanished_at: Option<Duration>,
    /// How the `--check` gate ended, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckResult>,
    /// The reconnect targets of its last drain command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// How a node's `--check` ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub ok: bool,
    /// The end of its output when it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

impl NodeResult {
    /// Nothing done yet to `name`.
    pub fn new(name: NodeName) -> Self {
        NodeResult {
            name,
            old_instance: None,
            new_instance: None,
            connections_before: 0,
            drain_ms: None,
            restart_ms: None,
            clean_closes: None,
            forced_closes: None,
            lost: false,
            known_before: BTreeSet::new(),
            active_before: 0,
            drain_started_wall_ms: 0,
            drain_started: None,
            drained_at: None,
            vanished_at: None,
            check: None,
            targets: Vec::new(),
        }
    }

    /// The drain ended at `now`: its duration is known.
    pub(super) fn mark_drained(&mut self, now: Duration) {
        self.drained_at = Some(now);
        self.drain_ms = self
            .drain_started
            .map(|start| now.saturating_sub(start).as_millis() as u64);
    }
}

/// What the machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    /// Nothing until something changes or time passes.
    Wait,
    /// Send (or re-send) the drain to this instance.
    SendDrain {
        instance: Uuid,
        attempt: u32,
    },
    /// Run the `--exec` command for the node.
    RunExec {
        instance: Uuid,
    },
    /// Run the `--check` command for the node's replacement at `url`.
    RunCheck {
        url: String,
    },
    /// The rollout must pause (the check failed), for this reason.
    Pause(String),
    /// The node is finished.
    Done,
    Abort(Abort),
}

/// What the engine tells the machine besides observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeInput {
    ExecDone(Result<(), String>),
    CheckDone(Result<(), String>),
    /// The last drain could not be sent (Redis unreachable): it does not count as an attempt.
    SendFailed,
}

/// What a step looks at.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub obs: &'a Observation,
    pub policy: &'a Policy,
    /// Events may have been missed (a resumed rollout, a lost subscription), so a vanished
    /// instance is not proof of a crash.
    pub missed_events: bool,
}

/// How a transition ended: moved on without I/O (step again), or with something to do.
pub(super) enum Flow {
    Next,
    Act(NodeAction),
}

use Flow::{Act, Next};

/// One node's machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRun {
    pub phase: Phase,
    pub result: NodeResult,
}

impl NodeRun {
    pub fn new(name: NodeName) -> Self {
        NodeRun {
            phase: Phase::Pending,
            result: NodeResult::new(name),
        }
    }

    pub fn name(&self) -> &NodeName {
        &self.result.name
    }

    /// Admitted and not done: it holds one of the rollout's slots.
    pub fn in_flight(&self) -> bool {
        !matches!(self.phase, Phase::Pending | Phase::Done)
    }

    /// The instance being replaced, while in flight.
    pub fn old_instance(&self) -> Option<Uuid> {
        self.in_flight()
            .then_some(self.result.old_instance)
            .flatten()
    }

    /// Admitted now: notes where the node starts from and sends its first drain.
    pub fn start(
        &mut self,
        view: &NodeView,
        obs: &Observation,
        policy: &Policy,
        active_before: usize,
    ) -> NodeAction {
        let known = self.seen(obs, policy);
        let result = &mut self.result;
        result.old_instance = Some(view.instance);
        result.connections_before = view.connections;
        result.known_before = known;
        result.known_before.insert(view.instance);
        result.active_before = active_before;
        result.drain_started = Some(obs.now);
        result.drain_started_wall_ms = obs.wall_ms;
        self.phase = Phase::Acking {
            instance: view.instance,
            sent_at: obs.now,
            attempts: 1,
        };
        NodeAction::SendDrain {
            instance: view.instance,
            attempt: 1,
        }
    }

    /// The instances observed now that could be mistaken for this node's replacement.
    pub(super) fn seen(&self, obs: &Observation, policy: &Policy) -> BTreeSet<Uuid> {
        if policy.ephemeral_names {
            return obs.nodes.values().map(|v| v.instance).collect();
        }
        obs.record(self.name())
            .map(|v| v.instance)
            .into_iter()
            .collect()
    }

    /// Decides what to do now. Transitions that need no I/O are applied in a loop, so one call
    /// goes as far as the observation allows.
    pub fn step(&mut self, ctx: Ctx<'_>, mut input: Option<NodeInput>) -> NodeAction {
        loop {
            let flow = match self.phase.clone() {
                Phase::Pending | Phase::Done => Act(NodeAction::Wait),
                Phase::Acking {
                    instance,
                    sent_at,
                    attempts,
                } => self.acking(ctx, instance, sent_at, attempts, input.take()),
                Phase::Draining { instance, since } => self.draining(ctx, instance, since),
                Phase::Executing { instance, running } => {
                    self.executing(ctx, instance, running, input.take())
                }
                Phase::Exiting { instance, since } => self.exiting(ctx, instance, since),
                Phase::Replacing { instance, since } => self.replacing(ctx, instance, since),
                Phase::Soaking {
                    instance,
                    new,
                    since,
                    since_wall_ms,
                } => self.soaking(ctx, instance, new, since, since_wall_ms),
                Phase::Checking { new, running } => self.checking(ctx, new, running, input.take()),
                Phase::Settling { until } => self.settling(ctx, until),
            };
            match flow {
                Next => continue,
                Act(action) => return action,
            }
        }
    }

    /// Restarts every timer at `now` (a resumed rollout's times are from a previous process).
    pub fn restart_timers(&mut self, now: Duration) {
        match &mut self.phase {
            Phase::Acking { sent_at, .. } => *sent_at = now,
            Phase::Draining { since, .. }
            | Phase::Exiting { since, .. }
            | Phase::Replacing { since, .. } => *since = now,
            Phase::Settling { until } => *until = now,
            Phase::Soaking { since, .. } => *since = now,
            Phase::Executing { running, .. } | Phase::Checking { running, .. } => *running = false,
            Phase::Pending | Phase::Done => {}
        }
        let result = &mut self.result;
        result.drain_started = result.drain_started.map(|_| now);
        result.drained_at = result.drained_at.map(|_| now);
        result.vanished_at = result.vanished_at.map(|_| now);
    }

    pub(super) fn abort(&self, abort: Abort) -> Flow {
        Act(NodeAction::Abort(abort))
    }
}

#[cfg(test)]
#[path = "tests/node.rs"]
mod tests;
