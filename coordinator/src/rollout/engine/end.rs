//! Saving (fenced by the lock), winding down a rollout stopped short, the report, and the
//! progress lines.

use super::*;

impl<C: Io> Engine<C> {
    /// Saves the rollout if it changed; a lost lock stops everything.
    pub(super) async fn persist(
        &mut self,
        rollout: &Rollout,
        status: &str,
        state: &mut Looping,
    ) -> Result<(), Stop> {
        let saved = Saved {
            status: status.to_owned(),
            rollout: rollout.clone(),
            policy: self.policy.clone(),
            exec: self.exec.clone(),
            check: self.check.clone(),
            request: self.request.clone(),
        };
        let json = serde_json::to_string(&saved).expect("a rollout serializes");
        if json == state.persisted {
            return Ok(());
        }
        match self.io.save_state(&self.lock, &json).await {
            Ok(true) => {
                state.persisted = json;
                Ok(())
            }
            Ok(false) => Err(Stop::lock_lost("")),
            Err(error) => {
                tracing::warn!(%error, "saving the rollout state failed");
                state.redis_down.get_or_insert_with(Instant::now);
                Ok(())
            }
        }
    }

    /// After a stop short of completion: the drains of nodes in flight are taken back from the
    /// desired state, and the state is saved as stopped. Nothing is written once the lock is lost.
    pub(super) async fn wind_down(&mut self, rollout: &Rollout, state: &mut Looping, stop: &Stop) {
        if stop.fenced || stop.status == Status::Completed {
            return;
        }
        let in_flight: Vec<NodeName> = rollout.in_flight().map(|r| r.name().clone()).collect();
        for node in &in_flight {
            self.clear_desired(rollout, node).await;
        }
        let _ = self.persist(rollout, "aborted", state).await;
    }

    pub(super) async fn finish(mut self, rollout: Rollout, state: &Looping, stop: Stop) -> Report {
        if !stop.fenced {
            if stop.status == Status::Completed
                && let Err(error) = self.io.clear_state(&self.lock).await
            {
                tracing::warn!(%error, "could not clear the finished rollout's state");
            }
            if let Err(error) = self.io.release(&self.lock).await {
                tracing::warn!(%error, "could not release the rollout lock (it expires by itself)");
            }
        }
        let intake = self.io.intake();
        let failed_node = (stop.status != Status::Completed)
            .then(|| rollout.in_flight().next().map(|r| r.name().clone()))
            .flatten();
        Report {
            status: stop.status,
            cluster: self.io.cluster().to_owned(),
            rollout_id: rollout.id.clone(),
            duration_ms: state.started.elapsed().as_millis() as u64,
            overhead_ms: 0,
            reason: stop.reason,
            failed_node,
            events: intake.counts(),
            balance: None,
            nodes: rollout
                .nodes
                .iter()
                .map(|r| NodeReport::new(r, state.react.get(r.name()).copied()))
                .collect(),
        }
        .with_overhead()
    }
}

/// Records, for each node whose drain was just seen to end, how long after its record said so.
pub(super) fn note_reactions(rollout: &Rollout, before: &[Phase], state: &mut Looping) {
    for (run, was) in rollout.nodes.iter().zip(before) {
        let left_draining =
            matches!(was, Phase::Draining { .. }) && !matches!(run.phase, Phase::Draining { .. });
        if let Some(view) = state.obs.record(run.name()).filter(|_| left_draining) {
            let lag = state.obs.wall_ms.saturating_sub(view.updated_at_ms);
            state.react.insert(run.name().clone(), lag);
            tracing::debug!(node = %run.name(), react_ms = lag, "acted on the drain's end");
        }
    }
}

pub(super) fn done_message(result: &NodeResult) -> String {
    if result.lost {
        return format!(
            "done: the old instance vanished mid-drain (its remaining connections were cut); replacement active {} ms later",
            result.restart_ms.unwrap_or(0)
        );
    }
    format!(
        "done: {} connection(s) drained in {} ms, replacement active {} ms later{}",
        result.connections_before,
        result.drain_ms.unwrap_or(0),
        result.restart_ms.unwrap_or(0),
        result
            .forced_closes
            .map(|f| format!(", {f} forced"))
            .unwrap_or_default(),
    )
}

/// Updates the progress line of every node in flight.
pub(super) fn describe(progress: &mut Progress, rollout: &Rollout, obs: &Observation) {
    for run in rollout.in_flight() {
        let connections = run
            .old_instance()
            .and_then(|i| obs.instance(run.name(), i))
            .map(|v| v.connections);
        let message = match &run.phase {
            Phase::Acking { attempts, .. } => {
                format!("drain sent (attempt {attempts}), waiting for acknowledgement")
            }
            Phase::Draining { .. } => format!(
                "draining: {} connection(s) left",
                connections.map_or("?".into(), |c| c.to_string())
            ),
            Phase::Executing { .. } => "drained; running --exec".to_owned(),
            Phase::Exiting { .. } => "drained; waiting for the old instance to exit".to_owned(),
            Phase::Replacing { .. } => "waiting for the replacement to be active".to_owned(),
            Phase::Soaking { .. } => "replacement active; waiting for --min-ready".to_owned(),
            Phase::Checking { .. } => "replacement ready; running --check".to_owned(),
            Phase::Settling { .. } => "replacement active; settling".to_owned(),
            Phase::Pending | Phase::Done => continue,
        };
        progress.node(run.name(), message);
    }
}
