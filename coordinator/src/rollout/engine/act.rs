//! Carrying the rollout's actions out: drains (the lock checked first), `--exec` and `--check`
//! commands in the background, pauses written to the control value, desired state taken back.

use super::*;

impl<C: Io> Engine<C> {
    /// Carries out one action; `Some` ends the rollout.
    pub(super) async fn act(
        &mut self,
        action: Action,
        rollout: &Rollout,
        state: &mut Looping,
        progress: &mut Progress,
    ) -> Option<Stop> {
        match action {
            Action::SendDrain {
                node,
                instance,
                attempt,
                command_id,
                targets,
            } => {
                let drain = Drain {
                    // With --exec the command restarts the node: it stays drained until then,
                    // so its own supervisor does not race the exec.
                    then: if self.policy.exec {
                        Then::Stay
                    } else {
                        Then::Exit
                    },
                    deadline_ms: None,
                    targets,
                };
                let send = Send {
                    node,
                    instance,
                    attempt,
                    command_id,
                };
                return self.send_drain(send, drain, state, progress).await;
            }
            Action::RunExec { node, instance } => {
                let instance = instance.to_string();
                let vars = [("name", node.as_str()), ("instance", instance.as_str())];
                let command = exec::render(self.exec.as_deref().unwrap_or_default(), &vars);
                self.spawn_job(node, Job::Exec, command, state, progress);
            }
            Action::RunCheck { node, url } => {
                let vars = [("name", node.as_str()), ("url", url.as_str())];
                let command = exec::render(self.check.as_deref().unwrap_or_default(), &vars);
                self.spawn_job(node, Job::Check, command, state, progress);
            }
            Action::Pause { reason } => {
                progress.note(&reason);
                let by = format!("ebb rolling-restart on {}", host());
                let control = Control::new(&rollout.id, Mode::Paused, &reason, &by);
                match self.io.set_control(&self.lock, &control).await {
                    Ok(true) => {}
                    Ok(false) => return Some(Stop::lock_lost("")),
                    Err(error) => {
                        // Not paused: say so rather than carry on as if it were.
                        return Some(Stop::new(
                            Status::Failed,
                            format!("could not pause the rollout ({reason}): {error}"),
                        ));
                    }
                }
            }
            Action::NodeDone { node } => {
                let run = rollout.nodes.iter().find(|r| *r.name() == node)?;
                progress.finish_node(&node, done_message(&run.result));
                self.clear_desired(rollout, &node).await;
            }
            Action::Complete => {
                return Some(Stop {
                    status: Status::Completed,
                    reason: None,
                    fenced: false,
                });
            }
            Action::Abort(abort) => {
                let mut reason = abort.to_string();
                if let Abort::NoAck { node, .. } = &abort
                    && let Some(why) = state.obs.refused.get(node)
                {
                    reason.push_str(&format!(" (it refused a command: {why})"));
                }
                return Some(Stop::new(Status::Aborted, reason));
            }
        }
        None
    }

    /// Runs an operator command for `node` in the background; its end comes as an input.
    pub(super) fn spawn_job(
        &self,
        node: NodeName,
        job: Job,
        command: String,
        state: &mut Looping,
        progress: &Progress,
    ) {
        progress.note(&format!("{node}: running {command}"));
        let run = self.io.exec(command, self.policy.replace_timeout);
        let task = state.jobs.spawn(run);
        state.job_nodes.insert(task.id(), (node, job));
    }

    pub(super) async fn send_drain(
        &mut self,
        send: Send,
        drain: Drain,
        state: &mut Looping,
        progress: &Progress,
    ) -> Option<Stop> {
        let Send {
            node,
            instance,
            attempt,
            command_id,
        } = send;
        // The lock is checked right before a drain goes out: a coordinator that lost it while
        // cut off from Redis must not drain another node.
        match self.io.renew(&self.lock).await {
            Ok(true) => state.last_renewed = Instant::now(),
            Ok(false) => return Some(Stop::lock_lost("")),
            Err(error) => {
                state.redis_down.get_or_insert_with(Instant::now);
                progress.note(&format!(
                    "{node}: not sending the drain: cannot renew the lock: {error}"
                ));
                state.inputs.push((node, NodeInput::SendFailed));
                return None;
            }
        }
        let mut cmd = Command::new(
            self.io.cluster(),
            node.clone(),
            command::Action::Drain(drain),
        );
        cmd.id = command_id;
        cmd.instance = Some(instance);
        match self.io.send(&cmd).await {
            Ok(0) => progress.note(&format!(
                "{node}: nobody is subscribed to its command channel (its agent may be reconnecting; the desired state will reach it)"
            )),
            Ok(_) => {}
            Err(error) => {
                state.redis_down.get_or_insert_with(Instant::now);
                progress.note(&format!(
                    "{node}: sending drain (attempt {attempt}) failed: {error}"
                ));
                state.inputs.push((node, NodeInput::SendFailed));
            }
        }
        None
    }

    /// Removes `node`'s desired state if it still holds this rollout's drain.
    pub(super) async fn clear_desired(&mut self, rollout: &Rollout, node: &NodeName) {
        let Some(index) = rollout.nodes.iter().position(|r| r.name() == node) else {
            return;
        };
        let prefix = rollout.command_prefix(index);
        if let Err(error) = self.io.clear_desired(node, &prefix).await {
            tracing::warn!(%node, %error, "could not clear the desired state");
        }
    }
}
