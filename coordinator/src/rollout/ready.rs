//! The last steps of a node's restart, once a replacement is active: it must stay ready for
//! `--min-ready` (the same instance, active and heartbeating; a replacement that restarts meanwhile
//! starts the clock again), pass the `--check` gate (a failure pauses the rollout, or aborts it),
//! and the settle time passes before its slot is free. Part of the [`super::node`] machine.

use super::abort::Abort;
use super::node::{CheckResult, Ctx, Flow, NodeAction, NodeInput, NodeRun, Phase};
use super::policy::OnCheckFail;
use ebb_proto::NodeState;
use std::time::Duration;
use uuid::Uuid;

use Flow::{Act, Next};

impl NodeRun {
    /// `new` replaced `old`: soak it, or go on at once without `--min-ready`.
    pub(super) fn soak(&mut self, ctx: Ctx<'_>, old: Uuid, new: Uuid) -> Flow {
        if ctx.policy.min_ready.is_zero() {
            return self.ready(ctx, new);
        }
        self.phase = Phase::Soaking {
            instance: old,
            new,
            since: ctx.obs.now,
            since_wall_ms: ctx.obs.wall_ms,
        };
        Next
    }

    pub(super) fn soaking(
        &mut self,
        ctx: Ctx<'_>,
        old: Uuid,
        new: Uuid,
        since: Duration,
        since_wall_ms: u64,
    ) -> Flow {
        let now = ctx.obs.now;
        let view = ctx.obs.record(self.name());
        match view {
            Some(v) if v.instance == new && v.state == NodeState::Active => {
                let soaked = now.saturating_sub(since) >= ctx.policy.min_ready;
                // Heartbeating: one since the soak began, and a recent one (a killed process's
                // record lingers until its TTL).
                let alive = v.updated_at_ms > since_wall_ms
                    && v.updated_at_ms.saturating_add(v.ttl_ms / 2) >= ctx.obs.wall_ms;
                if soaked && alive {
                    return self.ready(ctx, new);
                }
                Act(NodeAction::Wait)
            }
            // Restarted, gone or no longer active: find (and soak) a replacement again.
            _ => {
                self.phase = Phase::Replacing {
                    instance: old,
                    since: now,
                };
                Next
            }
        }
    }

    /// Ready: the check gate, or settle.
    fn ready(&mut self, ctx: Ctx<'_>, new: Uuid) -> Flow {
        self.result.new_instance = Some(new);
        if ctx.policy.check {
            return self.run_check(ctx, new);
        }
        self.settle(ctx)
    }

    fn run_check(&mut self, ctx: Ctx<'_>, new: Uuid) -> Flow {
        let Some(url) = ctx
            .obs
            .record(self.name())
            .filter(|v| v.instance == new)
            .map(|v| v.url.clone())
        else {
            // Gone before its gate: it is not ready after all.
            self.phase = Phase::Replacing {
                instance: self.result.old_instance.unwrap_or(new),
                since: ctx.obs.now,
            };
            return Next;
        };
        self.phase = Phase::Checking { new, running: true };
        Act(NodeAction::RunCheck { url })
    }

    pub(super) fn checking(
        &mut self,
        ctx: Ctx<'_>,
        new: Uuid,
        running: bool,
        input: Option<NodeInput>,
    ) -> Flow {
        match input {
            Some(NodeInput::CheckDone(Ok(()))) => {
                self.result.check = Some(CheckResult {
                    ok: true,
                    output: String::new(),
                });
                self.settle(ctx)
            }
            Some(NodeInput::CheckDone(Err(output))) => self.check_failed(ctx, output),
            // Resumed while it ran: run it again.
            _ if !running => self.run_check(ctx, new),
            _ => Act(NodeAction::Wait),
        }
    }

    fn check_failed(&mut self, ctx: Ctx<'_>, output: String) -> Flow {
        self.result.check = Some(CheckResult {
            ok: false,
            output: output.clone(),
        });
        let node = self.name().clone();
        if ctx.policy.on_check_fail == OnCheckFail::Abort {
            return self.abort(Abort::CheckFailed { node, output });
        }
        // Its restart is done; the rollout holds before the next node.
        let _ = self.settle(ctx);
        Act(NodeAction::Pause(format!(
            "the --check for {node} failed: {output}; `ebb rollout continue` to go on"
        )))
    }

    fn settle(&mut self, ctx: Ctx<'_>) -> Flow {
        self.phase = Phase::Settling {
            until: ctx.obs.now.saturating_add(ctx.policy.settle),
        };
        Next
    }

    pub(super) fn settling(&mut self, ctx: Ctx<'_>, until: Duration) -> Flow {
        if ctx.obs.now < until {
            return Act(NodeAction::Wait);
        }
        self.phase = Phase::Done;
        Act(NodeAction::Done)
    }
}
