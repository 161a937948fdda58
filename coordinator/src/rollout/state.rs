//! A rollout: the node machines in plan order, stepped together, and the scheduler that admits
//! the next ones. This is what is saved in Redis for `--resume`, and it covers every node in
//! flight.

use super::Policy;
use super::abort::Abort;
use super::node::{Ctx, NodeAction, NodeInput, NodeRun, Phase};
use super::observe::Observation;
use super::scheduler::{self, Admission};
use ebb_proto::NodeName;
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
    },
    /// Run the `--exec` command for this node.
    RunExec {
        node: NodeName,
        instance: Uuid,
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
    /// Events may have been missed (a resumed rollout, a lost subscription).
    #[serde(skip)]
    pub missed_events: bool,
}

impl Rollout {
    pub fn new(id: String, plan: Vec<NodeName>) -> Self {
        Rollout {
            id,
            nodes: plan.into_iter().map(NodeRun::new).collect(),
            missed_events: false,
        }
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
        for run in &mut self.nodes {
            run.restart_timers(now);
        }
    }

    /// Everything to do now: the nodes in flight step first, in plan order, then the scheduler
    /// admits what the limits allow. An abort from anywhere is the only action returned: nothing
    /// else is touched after it. No action means wait.
    pub fn step(
        &mut self,
        obs: &Observation,
        policy: &Policy,
        inputs: &mut Vec<(NodeName, NodeInput)>,
    ) -> Vec<Action> {
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
            match self.act(index, action) {
                Some(Action::Abort(abort)) => return vec![Action::Abort(abort)],
                Some(action) => actions.push(action),
                None => {}
            }
        }
        loop {
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
                    actions.extend(self.act(index, action));
                }
                Admission::Abort(abort) => return vec![Action::Abort(abort)],
                Admission::Wait => break,
                Admission::Nothing => {
                    if self.nodes.iter().all(|r| r.phase == Phase::Done) {
                        actions.push(Action::Complete);
                    }
                    break;
                }
            }
        }
        actions
    }

    fn act(&self, index: usize, action: NodeAction) -> Option<Action> {
        let node = self.nodes[index].name().clone();
        match action {
            NodeAction::Wait => None,
            NodeAction::SendDrain { instance, attempt } => Some(Action::SendDrain {
                command_id: format!("{}{attempt}", self.command_prefix(index)),
                node,
                instance,
                attempt,
            }),
            NodeAction::RunExec { instance } => Some(Action::RunExec { node, instance }),
            NodeAction::Done => Some(Action::NodeDone { node }),
            NodeAction::Abort(abort) => Some(Action::Abort(abort)),
        }
    }
}

/// The input for `name`, if any (one per step).
fn take_input(inputs: &mut Vec<(NodeName, NodeInput)>, name: &NodeName) -> Option<NodeInput> {
    let at = inputs.iter().position(|(n, _)| n == name)?;
    Some(inputs.remove(at).1)
}

#[cfg(test)]
#[path = "tests/state.rs"]
mod tests;
