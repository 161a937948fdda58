//! Finding a node's replacement, once its old instance is gone: the same name under a new
//! instance (or with ephemeral names, a new node and the active count restored) that is active,
//! was never seen before (at the drain or the `--exec` command) and started after the drain
//! began, so no leftover or replayed record counts. Part of the [`super::node`] machine.

use super::abort::Abort;
use super::node::{Ctx, Flow, NodeAction, NodeRun, Phase};
use super::observe::NodeView;
use ebb_proto::NodeState;
use ebb_proto::keys::MAX_CLOCK_SKEW;
use std::time::Duration;
use uuid::Uuid;

use Flow::Act;

impl NodeRun {
    pub(super) fn replacing(&mut self, ctx: Ctx<'_>, instance: Uuid, since: Duration) -> Flow {
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
                self.soak(ctx, instance, new_instance)
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
    pub(super) fn replacement(&self, ctx: Ctx<'_>, old: Uuid) -> Option<Uuid> {
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
}
