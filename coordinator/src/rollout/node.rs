//! One node's rollout: a small state machine. No I/O and no clock of its own: the rollout feeds
//! it observations (and the results of its `--exec` command and sends) and carries out what it
//! returns, so every rule here is tested against scripted observations.
//!
//! `pending → acking → draining → [executing] → exiting → replacing → settling → done`:
//! the drain is sent (re-sent, then given up on), its acknowledgement is the old instance saying
//! `draining`, its count is followed to zero, the `--exec` command runs if any, the old instance
//! must be gone (its record *and* its own copy: a replacement that took the name over does not
//! make it gone), then a replacement must be active (same name, a new instance started after the
//! drain began; or with ephemeral names, the active count restored), then the settle time passes.
//! Admission (who may leave `pending`) is the scheduler's, not this machine's.

use super::abort::Abort;
use super::observe::{NodeView, Observation};
use super::{Policy, ms};
use ebb_proto::keys::MAX_CLOCK_SKEW;
use ebb_proto::{NodeName, NodeState};
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
    /// Replacement active; the settle time passes before its slot is free.
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
        }
    }

    /// The drain ended at `now`: its duration is known.
    fn mark_drained(&mut self, now: Duration) {
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
    /// The node is finished.
    Done,
    Abort(Abort),
}

/// What the engine tells the machine besides observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeInput {
    ExecDone(Result<(), String>),
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
enum Flow {
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
    fn seen(&self, obs: &Observation, policy: &Policy) -> BTreeSet<Uuid> {
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
            Phase::Executing { running, .. } => *running = false,
            Phase::Pending | Phase::Done => {}
        }
        let result = &mut self.result;
        result.drain_started = result.drain_started.map(|_| now);
        result.drained_at = result.drained_at.map(|_| now);
        result.vanished_at = result.vanished_at.map(|_| now);
    }

    fn acking(
        &mut self,
        ctx: Ctx<'_>,
        instance: Uuid,
        sent_at: Duration,
        attempts: u32,
        input: Option<NodeInput>,
    ) -> Flow {
        let attempts = match input {
            Some(NodeInput::SendFailed) => attempts.saturating_sub(1),
            _ => attempts,
        };
        let now = ctx.obs.now;
        let Some(view) = ctx.obs.instance(self.name(), instance) else {
            return self.gone(ctx, instance);
        };
        if matches!(view.state, NodeState::Draining | NodeState::Drained) {
            let result = &mut self.result;
            // Records coalesce counts; the first one seen draining may be the higher one.
            result.connections_before = result.connections_before.max(view.connections);
            self.phase = Phase::Draining {
                instance,
                since: now,
            };
            return Next;
        }
        self.phase = Phase::Acking {
            instance,
            sent_at,
            attempts,
        };
        if now.saturating_sub(sent_at) < ctx.policy.ack_timeout {
            return Act(NodeAction::Wait);
        }
        if attempts <= ctx.policy.ack_retries {
            self.phase = Phase::Acking {
                instance,
                sent_at: now,
                attempts: attempts + 1,
            };
            return Act(NodeAction::SendDrain {
                instance,
                attempt: attempts + 1,
            });
        }
        self.abort(Abort::NoAck {
            node: self.name().clone(),
            attempts,
        })
    }

    fn draining(&mut self, ctx: Ctx<'_>, instance: Uuid, since: Duration) -> Flow {
        let now = ctx.obs.now;
        let Some(view) = ctx.obs.instance(self.name(), instance) else {
            return self.gone(ctx, instance);
        };
        if view.state == NodeState::Active {
            return self.abort(Abort::Resumed {
                node: self.name().clone(),
            });
        }
        if view.connections == 0 || view.state == NodeState::Drained {
            self.result.mark_drained(now);
            return self.after_drain(ctx, instance);
        }
        if now.saturating_sub(since) >= ctx.policy.drain_timeout {
            return self.abort(Abort::DrainTimeout {
                node: self.name().clone(),
                connections: view.connections,
            });
        }
        Act(NodeAction::Wait)
    }

    /// The drain ended (or the old instance vanished): the `--exec` command restarts it, or
    /// its own supervisor does.
    fn after_drain(&mut self, ctx: Ctx<'_>, instance: Uuid) -> Flow {
        if ctx.policy.exec {
            return self.run_exec(ctx, instance);
        }
        self.phase = Phase::Exiting {
            instance,
            since: ctx.obs.now,
        };
        Next
    }

    fn executing(
        &mut self,
        ctx: Ctx<'_>,
        instance: Uuid,
        running: bool,
        input: Option<NodeInput>,
    ) -> Flow {
        let now = ctx.obs.now;
        match input {
            Some(NodeInput::ExecDone(Ok(()))) => {
                self.phase = Phase::Exiting {
                    instance,
                    since: now,
                };
                return Next;
            }
            Some(NodeInput::ExecDone(Err(message))) => {
                return self.abort(Abort::ExecFailed {
                    node: self.name().clone(),
                    message,
                });
            }
            Some(NodeInput::SendFailed) | None if running => return Act(NodeAction::Wait),
            Some(NodeInput::SendFailed) | None => {}
        }
        // Resumed while the command ran: it may have restarted the node, or never run. Run it
        // again unless what it starts is already there.
        match ctx.obs.instance(self.name(), instance).map(|v| v.state) {
            Some(NodeState::Active) => self.abort(Abort::Resumed {
                node: self.name().clone(),
            }),
            None if self.replacement(ctx, instance).is_some() => {
                self.phase = Phase::Exiting {
                    instance,
                    since: now,
                };
                Next
            }
            _ => self.run_exec(ctx, instance),
        }
    }

    /// Runs the `--exec` command; nothing seen before it counts as the replacement it starts.
    fn run_exec(&mut self, ctx: Ctx<'_>, instance: Uuid) -> Flow {
        let seen = self.seen(ctx.obs, ctx.policy);
        self.result.known_before.extend(seen);
        self.phase = Phase::Executing {
            instance,
            running: true,
        };
        Act(NodeAction::RunExec { instance })
    }

    fn exiting(&mut self, ctx: Ctx<'_>, instance: Uuid, since: Duration) -> Flow {
        let now = ctx.obs.now;
        if ctx.obs.instance(self.name(), instance).is_some() {
            if now.saturating_sub(since) >= ctx.policy.exit_timeout {
                return self.abort(Abort::NoExit {
                    node: self.name().clone(),
                });
            }
            return Act(NodeAction::Wait);
        }
        self.note_drained(ctx.obs, instance);
        self.phase = Phase::Replacing {
            instance,
            since: now,
        };
        Next
    }

    fn replacing(&mut self, ctx: Ctx<'_>, instance: Uuid, since: Duration) -> Flow {
        let now = ctx.obs.now;
        // An instance taken for gone that shows up again (a partition healed) still holds
        // clients: wait for it to go.
        if ctx.obs.instance(self.name(), instance).is_some() {
            self.phase = Phase::Exiting {
                instance,
                since: now,
            };
            return Act(NodeAction::Wait);
        }
        match self.replacement(ctx, instance) {
            Some(new_instance) => {
                self.note_drained(ctx.obs, instance);
                let result = &mut self.result;
                // Its goodbye may have come after it was seen gone.
                result.lost = result.lost && !ctx.obs.ended_cleanly(instance);
                result.new_instance = Some(new_instance);
                let from = result.drained_at.or(result.drain_started).unwrap_or(now);
                result.restart_ms = Some(now.saturating_sub(from).as_millis() as u64);
                self.phase = Phase::Settling {
                    until: now.saturating_add(ctx.policy.settle),
                };
                Next
            }
            None if now.saturating_sub(since) >= ctx.policy.replace_timeout => {
                self.abort(Abort::NoReplacement {
                    node: self.name().clone(),
                })
            }
            None => Act(NodeAction::Wait),
        }
    }

    /// The instance that replaces `old`: active, none seen before (at the drain or the
    /// `--exec` command), and started after this node's drain began (so no leftover or replayed
    /// record of an earlier process counts).
    fn replacement(&self, ctx: Ctx<'_>, old: Uuid) -> Option<Uuid> {
        let result = &self.result;
        let skew = MAX_CLOCK_SKEW.as_millis() as u64;
        let new = |v: &&NodeView| {
            v.state == NodeState::Active
                && v.instance != old
                && !result.known_before.contains(&v.instance)
                && v.started_at_ms.saturating_add(skew) >= result.drain_started_wall_ms
        };
        if !ctx.policy.ephemeral_names {
            return ctx.obs.record(self.name()).filter(new).map(|v| v.instance);
        }
        let fresh = ctx.obs.nodes.values().find(new)?;
        let active = ctx
            .obs
            .nodes
            .values()
            .filter(|v| v.state == NodeState::Active)
            .count();
        (active >= result.active_before).then_some(fresh.instance)
    }

    fn settling(&mut self, ctx: Ctx<'_>, until: Duration) -> Flow {
        if ctx.obs.now < until {
            return Act(NodeAction::Wait);
        }
        self.phase = Phase::Done;
        Act(NodeAction::Done)
    }

    /// The old instance went away before its drain was seen to end. If it said it drained or
    /// deregistered, it simply finished between two looks; otherwise it vanished (killed,
    /// crashed): wait for its replacement, or abort, by policy.
    fn gone(&mut self, ctx: Ctx<'_>, instance: Uuid) -> Flow {
        let now = ctx.obs.now;
        let clean = ctx.obs.ended_cleanly(instance);
        // With events possibly missed, there is no proof of a crash either.
        let lost = !clean && !ctx.missed_events;
        self.result.lost = lost;
        if lost && ctx.policy.abort_on_lost {
            let since = *self.result.vanished_at.get_or_insert(now);
            if now.saturating_sub(since) < LOST_GRACE {
                return Act(NodeAction::Wait);
            }
            return self.abort(Abort::Lost {
                node: self.name().clone(),
            });
        }
        if self.result.drained_at.is_none() {
            if clean {
                self.result.mark_drained(now);
            } else {
                self.result.drained_at = Some(now);
            }
        }
        self.note_drained(ctx.obs, instance);
        if ctx.policy.exec {
            // Nothing restarts a vanished node but the command that restarts nodes.
            return self.after_drain(ctx, instance);
        }
        self.phase = Phase::Replacing {
            instance,
            since: now,
        };
        Next
    }

    fn abort(&self, abort: Abort) -> Flow {
        Act(NodeAction::Abort(abort))
    }

    /// Takes the drain's own counts from its `drained` event (the report's, nothing decided on
    /// them): records are written at intervals, so the drain knows best how many it closed.
    fn note_drained(&mut self, obs: &Observation, instance: Uuid) {
        if let Some(info) = obs.drained.get(&instance) {
            let result = &mut self.result;
            result.clean_closes = Some(info.clean);
            result.forced_closes = Some(info.forced);
            let closed = info.clean.saturating_add(info.forced);
            result.connections_before = result.connections_before.max(closed);
        }
    }
}

#[cfg(test)]
#[path = "tests/node.rs"]
mod tests;
