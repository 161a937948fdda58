//! A rollout: the node machines in plan order, stepped together, and the scheduler that admits
//! the next ones. This is what is saved in Redis for `--resume`, and it covers every node in
//! flight.

use super::Policy;
use super::abort::Abort;
use super::node::{Ctx, NodeAction, NodeInput, NodeRun, Phase};
use super::observe::Observation;
use super::scheduler::{self, Admission};
use super::targets;
use ebb_proto::NodeName;
use ebb_proto::control::Mode;
use ebb_proto::target::Target;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// What the engine must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send (or re-send) the drain, with this command id, to this instance.
    SendDrain {
        node: NodeName,
        instance: Uuid,
        attempt: u32,
        command_id: String,
        targets: Vec<Target>,
    },
    /// Run the `--exec` command for this node.
    RunExec {
        node: NodeName,
        instance: Uuid,
    },
    /// Run the `--check` command for this node's replacement at `url`.
    RunCheck {
        node: NodeName,
        url: String,
    },
    /// Pause the rollout (write its control value), for this reason.
    Pause {
        reason: String,
    },
    /// A node is finished.
    NodeDone {
        node: NodeName,
    },
    /// Every node is finished.
    Complete,
    Abort(Abort),
}

/// A saved rollout that cannot be resumed as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("it has no nodes")]
    Empty,
    #[error("node {0} appears twice in its plan")]
    Duplicate(NodeName),
    #[error("node {0} is in flight with no old instance recorded")]
    NoInstance(NodeName),
    #[error("its id {0:?} is not 1 to 32 hex digits")]
    BadId(String),
}

/// A rollout's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub nodes: Vec<NodeRun>,
    /// The mode it is in, as last read from its control value (kept for `ebb status`).
    #[serde(default = "running")]
    pub mode: Mode,
    /// Why it is paused or aborted, and by whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_by: Option<String>,
    /// `--pause-after` already paused it once.
    #[serde(default)]
    pub canary_paused: bool,
    /// The most connections the fleet was seen to hold during this rollout: what is not on a
    /// node now is on its way to one (the clients of a drain just finished arrive over their
    /// advised delays), and reconnect targets are weighed with them counted.
    #[serde(default)]
    pub population: u64,
    /// Events may have been missed (a resumed rollout, a lost subscription).
    #[serde(skip)]
    pub missed_events: bool,
}

impl Rollout {
    pub fn new(id: String, plan: Vec<NodeName>) -> Self {
        Rollout {
            id,
            nodes: plan.into_iter().map(NodeRun::new).collect(),
            mode: Mode::Running,
            mode_reason: None,
            mode_by: None,
            canary_paused: false,
            population: 0,
            missed_events: false,
        }
    }

    /// Takes the mode its control value asks for. An abort is final for this run: a `continue`
    /// after it does not undo it (a `--resume` reads the control value afresh).
    pub fn set_mode(&mut self, mode: Mode, reason: Option<String>, by: Option<String>) {
        if self.mode == Mode::Aborted && mode != Mode::Aborted {
            return;
        }
        self.mode = mode;
        (self.mode_reason, self.mode_by) = match mode {
            Mode::Running => (None, None),
            _ => (reason, by),
        };
    }

    /// Checks a rollout read back from Redis before anything acts on it.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.id.is_empty()
            || self.id.len() > 32
            || !self.id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Invalid::BadId(self.id.chars().take(40).collect()));
        }
        if self.nodes.is_empty() {
            return Err(Invalid::Empty);
        }
        let mut seen = HashSet::new();
        for run in &self.nodes {
            if !seen.insert(run.name()) {
                return Err(Invalid::Duplicate(run.name().clone()));
            }
            if run.in_flight() && run.result.old_instance.is_none() {
                return Err(Invalid::NoInstance(run.name().clone()));
            }
        }
        Ok(())
    }

    /// The plan, in order.
    pub fn plan(&self) -> Vec<NodeName> {
        self.nodes.iter().map(|r| r.name().clone()).collect()
    }

    /// The nodes in flight.
    pub fn in_flight(&self) -> impl Iterator<Item = &NodeRun> + '_ {
        self.nodes.iter().filter(|r| r.in_flight())
    }

    /// Nodes finished so far.
    pub fn done(&self) -> usize {
        self.nodes.iter().filter(|r| r.phase == Phase::Done).count()
    }

    /// The prefix every drain command id of this rollout's `index`th node starts with.
    pub fn command_prefix(&self, index: usize) -> String {
        format!("r{}.{index}.", self.id)
    }

    /// Restarts every timer at `now` (a resumed rollout's times are from a previous process).
    pub fn restart_timers(&mut self, now: Duration) {
        self.missed_events = true;
        self.mode = Mode::Running;
        for run in &mut self.nodes {
            run.restart_timers(now);
        }
    }

    /// Everything to do now: the nodes in flight step first, in plan order, then the scheduler
    /// admits what the limits allow. A failure is the only action returned: nothing else is
    /// touched after it; an abort someone asked for comes last, after the nodes that finished
    /// in this step. No action means wait.
    pub fn step(
        &mut self,
        obs: &Observation,
        policy: &Policy,
        inputs: &mut Vec<(NodeName, NodeInput)>,
    ) -> Vec<Action> {
        self.population = self.population.max(obs.connections());
        let ctx = Ctx {
            obs,
            policy,
            missed_events: self.missed_events,
        };
        let mut actions = Vec::new();
        for index in 0..self.nodes.len() {
            if !self.nodes[index].in_flight() {
                continue;
            }
            let input = take_input(inputs, self.nodes[index].name());
            let action = self.nodes[index].step(ctx, input);
            match self.act(index, action, obs, policy) {
                Some(Action::Abort(abort)) => return vec![Action::Abort(abort)],
                Some(action) => actions.push(action),
                None => {}
            }
        }
        if let Some(pause) = self.canary(policy) {
            actions.push(pause);
        }
        // A pause asked in this step holds from this step: nothing more is admitted now.
        for action in &actions {
            if let Action::Pause { reason } = action {
                self.set_mode(
                    Mode::Paused,
                    Some(reason.clone()),
                    Some("this rollout".to_owned()),
                );
            }
        }
        if self.mode == Mode::Aborted && self.in_flight().next().is_none() {
            // After what finished this step (its desired state is taken back first).
            let by = self.mode_by.clone().unwrap_or_else(|| "someone".to_owned());
            let reason = self.mode_reason.clone().unwrap_or_default();
            actions.push(Action::Abort(Abort::Requested { by, reason }));
            return actions;
        }
        loop {
            if self.mode != Mode::Running {
                break;
            }
            match scheduler::next(&self.nodes, obs, policy) {
                Admission::Start {
                    index,
                    active_before,
                } => {
                    let view = obs
                        .record(self.nodes[index].name())
                        .expect("admitted with a record")
                        .clone();
                    let action = self.nodes[index].start(&view, obs, policy, active_before);
                    actions.extend(self.act(index, action, obs, policy));
                }
                Admission::Abort(abort) => return vec![Action::Abort(abort)],
                Admission::Wait => break,
                Admission::Nothing => break,
            }
        }
        if self.nodes.iter().all(|r| r.phase == Phase::Done) {
            actions.push(Action::Complete);
        }
        actions
    }

    /// `--pause-after N`: once N nodes are done and more are left, the rollout pauses, once.
    fn canary(&mut self, policy: &Policy) -> Option<Action> {
        let after = policy.pause_after?;
        let done = self.done();
        if self.canary_paused || done < after || done == self.nodes.len() {
            return None;
        }
        self.canary_paused = true;
        Some(Action::Pause {
            reason: format!(
                "paused after {done} node(s) (--pause-after {after}); `ebb rollout continue` goes on, `ebb rollout abort` stops"
            ),
        })
    }

    fn act(
        &mut self,
        index: usize,
        action: NodeAction,
        obs: &Observation,
        policy: &Policy,
    ) -> Option<Action> {
        let node = self.nodes[index].name().clone();
        match action {
            NodeAction::Wait => None,
            NodeAction::SendDrain { instance, attempt } => {
                let targets = targets::for_drain(&self.nodes, obs, policy, index, self.population);
                self.nodes[index].result.targets = targets.iter().map(|t| t.url.clone()).collect();
                Some(Action::SendDrain {
                    command_id: format!("{}{attempt}", self.command_prefix(index)),
                    node,
                    instance,
                    attempt,
                    targets,
                })
            }
            NodeAction::RunExec { instance } => Some(Action::RunExec { node, instance }),
            NodeAction::RunCheck { url } => Some(Action::RunCheck { node, url }),
            NodeAction::Pause(reason) => Some(Action::Pause { reason }),
            NodeAction::Done => Some(Action::NodeDone { node }),
            NodeAction::Abort(abort) => Some(Action::Abort(abort)),
        }
    }
}

fn running() -> Mode {
    Mode::Running
}

/// The input for `name`, if any (one per step).
fn take_input(inputs: &mut Vec<(NodeName, NodeInput)>, name: &NodeName) -> Option<NodeInput> {
    let at = inputs.iter().position(|(n, _)| n == name)?;
    Some(inputs.remove(at).1)
}

#[cfg(test)]
#[path = "tests/state.rs"]
mod tests;
