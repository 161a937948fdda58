//! How the old instance leaves, in a node's restart: the drain acknowledged (re-sent, then given
//! up on), its connections followed to zero, the `--exec` command run if any (again after a
//! resume, unless what it starts is already there), and the instance gone, by its record and its
//! own copy; or vanished (killed), which the report calls lost. Part of the [`super::node`]
//! machine.

use super::abort::Abort;
use super::node::{Ctx, Flow, LOST_GRACE, NodeAction, NodeInput, NodeRun, Phase};
use super::observe::Observation;
use ebb_proto::NodeState;
use std::time::Duration;
use uuid::Uuid;

use Flow::{Act, Next};

impl NodeRun {
    pub(super) fn acking(
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

    pub(super) fn draining(&mut self, ctx: Ctx<'_>, instance: Uuid, since: Duration) -> Flow {
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
    pub(super) fn after_drain(&mut self, ctx: Ctx<'_>, instance: Uuid) -> Flow {
        if ctx.policy.exec {
            return self.run_exec(ctx, instance);
        }
        self.phase = Phase::Exiting {
            instance,
            since: ctx.obs.now,
        };
        Next
    }

    pub(super) fn executing(
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
            Some(NodeInput::SendFailed | NodeInput::CheckDone(_)) | None if running => {
                return Act(NodeAction::Wait);
            }
            Some(NodeInput::SendFailed | NodeInput::CheckDone(_)) | None => {}
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
    pub(super) fn run_exec(&mut self, ctx: Ctx<'_>, instance: Uuid) -> Flow {
        let seen = self.seen(ctx.obs, ctx.policy);
        self.result.known_before.extend(seen);
        self.phase = Phase::Executing {
            instance,
            running: true,
        };
        Act(NodeAction::RunExec { instance })
    }

    pub(super) fn exiting(&mut self, ctx: Ctx<'_>, instance: Uuid, since: Duration) -> Flow {
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

    /// The old instance went away before its drain was seen to end. If it said it drained or
    /// deregistered, it simply finished between two looks; otherwise it vanished (killed,
    /// crashed): wait for its replacement, or abort, by policy.
    pub(super) fn gone(&mut self, ctx: Ctx<'_>, instance: Uuid) -> Flow {
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
            // Until it went: its goodbye may still come (and clear `lost`), and a node that
            // vanished was out of service that long either way.
            self.result.mark_drained(now);
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

    /// Takes the drain's own counts from its `drained` event (the report's, nothing decided on
    /// them): records are written at intervals, so the drain knows best how many it closed.
    pub(super) fn note_drained(&mut self, obs: &Observation, instance: Uuid) {
        if let Some(info) = obs.drained.get(&instance) {
            let result = &mut self.result;
            result.clean_closes = Some(info.clean);
            result.forced_closes = Some(info.forced);
            let closed = info.clean.saturating_add(info.forced);
            result.connections_before = result.connections_before.max(closed);
        }
    }
}
