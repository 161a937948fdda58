//! The rollout as a step function: given what is observed now, what to do next. No I/O and no
//! clock: the engine feeds observations (and the result of `--exec` commands) and carries out the
//! actions, so every rule here is tested against scripted observations.
//!
//! One node at a time, in plan order: check capacity → send `drain then exit` → wait for the
//! acknowledgement (state `draining`; re-send, then abort) → follow the count to zero → run the
//! `--exec` command if any → wait for the old instance to go → wait for its replacement (same
//! name, new instance, active; or with ephemeral names, the active count restored) → settle →
//! next. Any failure aborts before another node is touched.

use super::Policy;
use super::observe::Observation;
use ebb_proto::{NodeName, NodeState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

/// Where the current node is. Times are offsets from the start of this coordinator's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// About to check capacity and drain `plan[index]`.
    Check,
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
    /// Drained; the `--exec` command runs.
    Executing { instance: Uuid },
    /// Waiting for the old instance to exit and deregister.
    Exiting {
        instance: Uuid,
        #[serde(with = "ms")]
        since: Duration,
    },
    /// Waiting for the replacement to be active.
    Replacing {
        instance: Uuid,
        #[serde(with = "ms")]
        since: Duration,
    },
    /// Letting the cluster settle before the next node.
    Settling {
        #[serde(with = "ms")]
        until: Duration,
    },
    /// Every node done.
    Done,
}

/// What happened to one node.
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
    /// Instances of the cluster when this node's drain began (to spot the replacement when
    /// names are ephemeral).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub known_before: BTreeSet<Uuid>,
    #[serde(default)]
    pub active_before: usize,
    #[serde(with = "ms_opt", default)]
    pub drain_started: Option<Duration>,
    #[serde(with = "ms_opt", default)]
    pub drained_at: Option<Duration>,
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
            drain_started: None,
            drained_at: None,
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

/// Why a rollout stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Abort {
    #[error("node {node} is not registered; nothing was drained (check `ebb status`)")]
    Missing { node: NodeName },
    #[error(
        "node {node} is {state}, not active, before the rollout touched it; resolve that first (ebb resume {node})"
    )]
    NotActive { node: NodeName, state: NodeState },
    #[error(
        "draining {node} would leave {have} other active node(s), fewer than --min-active {need}"
    )]
    TooFewActive {
        node: NodeName,
        have: usize,
        need: usize,
    },
    #[error(
        "the other active nodes have room for {room} connections, but {node} holds {connections}"
    )]
    NoHeadroom {
        node: NodeName,
        room: u64,
        connections: u64,
    },
    #[error(
        "{node} did not acknowledge the drain after {attempts} attempt(s); is its agent connected to Redis?"
    )]
    NoAck { node: NodeName, attempts: u32 },
    #[error("{node} was resumed while the rollout was draining it")]
    Resumed { node: NodeName },
    #[error("{node} still had {connections} connection(s) after the drain timeout")]
    DrainTimeout { node: NodeName, connections: u64 },
    #[error("{node} vanished mid-drain (killed or crashed) and --on-node-lost is abort")]
    Lost { node: NodeName },
    #[error("the --exec command for {node} failed: {message}")]
    ExecFailed { node: NodeName, message: String },
    #[error(
        "{node} drained but did not exit within the exit timeout; a node restarted with `then: exit` must exit (or use --exec to restart it)"
    )]
    NoExit { node: NodeName },
    #[error(
        "no replacement for {node} became active within the replace timeout; the other nodes were not touched"
    )]
    NoReplacement { node: NodeName },
    #[error("Redis was unreachable for longer than the grace period while at {node}")]
    RedisLost { node: NodeName },
    #[error("the rollout lock was lost (another coordinator took over?)")]
    LockLost,
}

/// What the engine must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes or time passes.
    Wait,
    /// Send (or re-send) `drain then exit` to this instance.
    SendDrain {
        node: NodeName,
        instance: Uuid,
        attempt: u32,
    },
    /// Run the `--exec` command for this node.
    RunExec {
        node: NodeName,
    },
    /// A node is finished (its result is the last of [`Rollout::results`]).
    NodeDone,
    /// Every node is finished.
    Complete,
    Abort(Abort),
}

/// Input besides observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    ExecDone(Result<(), String>),
    /// The last `SendDrain` could not be sent (Redis unreachable): it does not count as an attempt.
    SendFailed,
}

/// A rollout's progress; serialized to Redis so a new coordinator can `--resume` it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub plan: Vec<NodeName>,
    pub index: usize,
    pub phase: Phase,
    /// Finished nodes, then the one in progress.
    pub results: Vec<NodeResult>,
    /// Events about the current node may have been missed (this process took over from a
    /// coordinator that stopped, or the event subscription was lost for a while), so its
    /// disappearance is not taken for a crash.
    #[serde(skip)]
    pub missed_events: bool,
}

impl Rollout {
    pub fn new(id: String, plan: Vec<NodeName>) -> Self {
        Rollout {
            id,
            plan,
            index: 0,
            phase: Phase::Check,
            results: Vec::new(),
            missed_events: false,
        }
    }

    /// The node being worked on.
    pub fn current(&self) -> Option<&NodeName> {
        self.plan.get(self.index)
    }

    /// Restarts every timer at `now` (a resumed rollout's times are from a previous process).
    pub fn restart_timers(&mut self, now: Duration) {
        self.missed_events = true;
        match &mut self.phase {
            Phase::Acking { sent_at, .. } => *sent_at = now,
            Phase::Draining { since, .. }
            | Phase::Exiting { since, .. }
            | Phase::Replacing { since, .. } => *since = now,
            Phase::Settling { until } => *until = now,
            Phase::Check | Phase::Executing { .. } | Phase::Done => {}
        }
        if let Some(result) = self.results.get_mut(self.index) {
            result.drain_started = result.drain_started.map(|_| now);
            result.drained_at = result.drained_at.map(|_| now);
        }
    }

    fn result(&mut self) -> &mut NodeResult {
        let name = self.plan[self.index].clone();
        if self.results.len() <= self.index {
            self.results.push(NodeResult::new(name));
        }
        &mut self.results[self.index]
    }

    /// Decides the next action. Transitions that need no I/O are applied in a loop, so one call
    /// goes as far as the observation allows.
    pub fn step(&mut self, obs: &Observation, policy: &Policy, input: Option<Input>) -> Action {
        let mut input = input;
        loop {
            let Some(name) = self.current().cloned() else {
                self.phase = Phase::Done;
                return Action::Complete;
            };
            let view = obs.nodes.get(&name);
            let now = obs.now;
            match self.phase.clone() {
                Phase::Done => return Action::Complete,
                Phase::Check => {
                    let Some(view) = view else {
                        return Action::Abort(Abort::Missing { node: name });
                    };
                    if view.state != NodeState::Active {
                        return Action::Abort(Abort::NotActive {
                            node: name,
                            state: view.state,
                        });
                    }
                    let others: Vec<_> = obs.active_others(&name).collect();
                    if others.len() < policy.min_active {
                        return Action::Abort(Abort::TooFewActive {
                            node: name,
                            have: others.len(),
                            need: policy.min_active,
                        });
                    }
                    if others.iter().all(|o| o.capacity.is_some()) && !others.is_empty() {
                        let room: u64 = others
                            .iter()
                            .map(|o| o.capacity.unwrap_or(0).saturating_sub(o.connections))
                            .sum();
                        if room < view.connections {
                            return Action::Abort(Abort::NoHeadroom {
                                node: name,
                                room,
                                connections: view.connections,
                            });
                        }
                    }
                    let instance = view.instance;
                    let connections = view.connections;
                    let known: BTreeSet<Uuid> = obs.nodes.values().map(|v| v.instance).collect();
                    let active_before = others.len() + 1;
                    let result = self.result();
                    result.old_instance = Some(instance);
                    result.connections_before = connections;
                    result.known_before = known;
                    result.active_before = active_before;
                    result.drain_started = Some(now);
                    self.phase = Phase::Acking {
                        instance,
                        sent_at: now,
                        attempts: 1,
                    };
                    return Action::SendDrain {
                        node: name,
                        instance,
                        attempt: 1,
                    };
                }
                Phase::Acking {
                    instance,
                    sent_at,
                    attempts,
                } if input == Some(Input::SendFailed) => {
                    input = None;
                    self.phase = Phase::Acking {
                        instance,
                        sent_at,
                        attempts: attempts.saturating_sub(1),
                    };
                }
                Phase::Acking {
                    instance,
                    sent_at,
                    attempts,
                } => match view {
                    Some(v) if v.instance == instance => match v.state {
                        NodeState::Draining | NodeState::Drained => {
                            // Records coalesce counts; the state change carries the live one.
                            let connections = v.connections;
                            let result = self.result();
                            result.connections_before = result.connections_before.max(connections);
                            self.phase = Phase::Draining {
                                instance,
                                since: now,
                            };
                        }
                        _ if now.saturating_sub(sent_at) < policy.ack_timeout => {
                            return Action::Wait;
                        }
                        _ if attempts <= policy.ack_retries => {
                            self.phase = Phase::Acking {
                                instance,
                                sent_at: now,
                                attempts: attempts + 1,
                            };
                            return Action::SendDrain {
                                node: name,
                                instance,
                                attempt: attempts + 1,
                            };
                        }
                        _ => {
                            return Action::Abort(Abort::NoAck {
                                node: name,
                                attempts,
                            });
                        }
                    },
                    // Gone before we saw it acknowledge: an idle node drains and exits in
                    // milliseconds; one that vanished without a word was killed.
                    _ => {
                        if let Some(abort) = self.gone(obs, &name, instance, now, policy) {
                            return Action::Abort(abort);
                        }
                    }
                },
                Phase::Draining { instance, since } => match view {
                    Some(v) if v.instance == instance => {
                        if v.state == NodeState::Active {
                            return Action::Abort(Abort::Resumed { node: name });
                        }
                        if v.connections == 0 || v.state == NodeState::Drained {
                            self.result().mark_drained(now);
                            if policy.exec {
                                self.phase = Phase::Executing { instance };
                                return Action::RunExec { node: name };
                            }
                            self.phase = Phase::Exiting {
                                instance,
                                since: now,
                            };
                        } else if now.saturating_sub(since) >= policy.drain_timeout {
                            return Action::Abort(Abort::DrainTimeout {
                                node: name,
                                connections: v.connections,
                            });
                        } else {
                            return Action::Wait;
                        }
                    }
                    _ => {
                        if let Some(abort) = self.gone(obs, &name, instance, now, policy) {
                            return Action::Abort(abort);
                        }
                    }
                },
                Phase::Executing { instance } => match input.take() {
                    Some(Input::ExecDone(Ok(()))) => {
                        self.phase = Phase::Exiting {
                            instance,
                            since: now,
                        };
                    }
                    Some(Input::ExecDone(Err(message))) => {
                        return Action::Abort(Abort::ExecFailed {
                            node: name,
                            message,
                        });
                    }
                    Some(Input::SendFailed) | None => return Action::Wait,
                },
                Phase::Exiting { instance, since } => match view {
                    Some(v) if v.instance == instance => {
                        if now.saturating_sub(since) >= policy.exit_timeout {
                            return Action::Abort(Abort::NoExit { node: name });
                        }
                        return Action::Wait;
                    }
                    _ => {
                        self.note_drained(obs, instance);
                        self.phase = Phase::Replacing {
                            instance,
                            since: now,
                        };
                    }
                },
                Phase::Replacing { instance, since } => {
                    let replacement = if policy.ephemeral_names {
                        let result = self.result();
                        let fresh = obs.nodes.values().find(|v| {
                            v.state == NodeState::Active
                                && !result.known_before.contains(&v.instance)
                        });
                        let active = obs
                            .nodes
                            .values()
                            .filter(|v| v.state == NodeState::Active && v.instance != instance)
                            .count();
                        fresh
                            .filter(|_| active >= result.active_before)
                            .map(|v| v.instance)
                    } else {
                        view.filter(|v| v.instance != instance && v.state == NodeState::Active)
                            .map(|v| v.instance)
                    };
                    match replacement {
                        Some(new_instance) => {
                            self.note_drained(obs, instance);
                            let result = self.result();
                            result.new_instance = Some(new_instance);
                            let from = result.drained_at.or(result.drain_started).unwrap_or(now);
                            result.restart_ms = Some(now.saturating_sub(from).as_millis() as u64);
                            self.phase = Phase::Settling {
                                until: now + policy.settle,
                            };
                        }
                        None if now.saturating_sub(since) >= policy.replace_timeout => {
                            return Action::Abort(Abort::NoReplacement { node: name });
                        }
                        None => return Action::Wait,
                    }
                }
                Phase::Settling { until } => {
                    if now < until {
                        return Action::Wait;
                    }
                    self.index += 1;
                    self.phase = Phase::Check;
                    self.missed_events = false;
                    return Action::NodeDone;
                }
            }
        }
    }

    /// The old instance's record went away before we saw its drain end. If it said it drained or
    /// deregistered, it simply finished between two observations; otherwise it vanished (killed,
    /// crashed): wait for its replacement, or abort, by policy.
    fn gone(
        &mut self,
        obs: &Observation,
        name: &NodeName,
        instance: Uuid,
        now: Duration,
        policy: &Policy,
    ) -> Option<Abort> {
        let clean = obs.ended_cleanly(instance);
        // With events possibly missed, there is no proof of a crash either.
        let lost = !clean && !self.missed_events;
        if lost && policy.abort_on_lost {
            self.result().lost = true;
            return Some(Abort::Lost { node: name.clone() });
        }
        let result = self.result();
        result.lost = lost;
        if result.drained_at.is_none() {
            if clean {
                result.mark_drained(now);
            } else {
                result.drained_at = Some(now);
            }
        }
        self.note_drained(obs, instance);
        self.phase = Phase::Replacing {
            instance,
            since: now,
        };
        None
    }

    fn note_drained(&mut self, obs: &Observation, instance: Uuid) {
        if let Some(info) = obs.drained.get(&instance) {
            let result = self.result();
            result.clean_closes = Some(info.clean);
            result.forced_closes = Some(info.forced);
        }
    }
}

/// Durations as whole milliseconds in the persisted state.
mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod ms_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests;
