//! The engine: runs the step function against the real cluster.
//!
//! It keeps an [`Observation`] fresh (records read every [`super::POLL_INTERVAL`], events applied
//! the moment they arrive, so a node reaching zero connections is acted on within milliseconds),
//! carries out the step's actions (commands, `--exec`), persists the rollout after every change so
//! `--resume` can continue it, renews the lock, and gives up when Redis stays unreachable for
//! longer than the grace period.

use super::observe::Observation;
use super::report::{NodeReport, Report, Status};
use super::step::{Abort, Action, Input, Phase, Rollout};
use super::{POLL_INTERVAL, Policy};
use crate::cluster::{Cluster, Followed};
use crate::exec;
use crate::lock::Lock;
use crate::progress::Progress;
use ebb_proto::NodeName;
use ebb_proto::command::{self, Command, Drain, Then};
use ebb_proto::sign::Secret;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval, interval_at};
use tokio_util::sync::CancellationToken;

/// How long to wait for the event subscription before the first command.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// How often timers in the step function are checked when nothing else happens.
const TICK: Duration = Duration::from_millis(100);

/// The rollout as persisted in Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    /// `running` while a coordinator works on it, `aborted` after it stopped.
    pub status: String,
    pub rollout: Rollout,
}

/// Everything the engine needs.
#[derive(Debug)]
pub struct Engine {
    pub cluster: Cluster,
    pub policy: Policy,
    pub secret: Option<Secret>,
    /// `--exec` template (`{name}`, `{instance}`).
    pub exec: Option<String>,
    pub redis_grace: Duration,
    pub lock: Lock,
}

impl Engine {
    /// Runs `rollout` to its end and returns the report. `interrupt` stops it where it is (the
    /// persisted state lets `--resume` continue).
    pub async fn run(
        mut self,
        mut rollout: Rollout,
        progress: &mut Progress,
        interrupt: CancellationToken,
    ) -> Report {
        let started = Instant::now();
        let stop = CancellationToken::new();
        let mut events = self.cluster.follow_events(stop.clone());
        let mut obs = Observation::default();
        let mut react: HashMap<NodeName, u64> = HashMap::new();
        let mut persisted = String::new();
        let mut redis_down: Option<Instant> = None;
        let mut input = None;
        let mut exec_task: Option<JoinHandle<Result<(), String>>> = None;
        let mut events_open = true;

        // Subscribed before the first command: an idle node drains and exits within
        // milliseconds, and events missed then would make its clean exit look like a crash.
        match tokio::time::timeout(SUBSCRIBE_WAIT, events.recv()).await {
            Ok(Some(Followed::Subscribed)) => {}
            Ok(Some(Followed::Lost(why))) => {
                return self
                    .finish(
                        rollout,
                        started,
                        Status::Failed,
                        Some(format!("cannot subscribe to the cluster's events: {why}")),
                        react,
                    )
                    .await;
            }
            _ => progress.note("the event subscription is slow; following records until it is up"),
        }
        match self.cluster.nodes().await {
            Ok(records) => obs.apply_records(&records),
            Err(error) => {
                return self
                    .finish(
                        rollout,
                        started,
                        Status::Failed,
                        Some(error.to_string()),
                        react,
                    )
                    .await;
            }
        }
        let mut poll = interval_at(Instant::now() + POLL_INTERVAL, POLL_INTERVAL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tick = interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let renew_every = self.lock.renew_every();
        let mut renew = interval_at(Instant::now() + renew_every, renew_every);
        let mut last_renewed = Instant::now();

        let (status, reason) = loop {
            obs.now = started.elapsed();
            let before = rollout.phase.clone();
            let action = rollout.step(&obs, &self.policy, input.take());
            if let (Phase::Draining { .. }, Phase::Exiting { .. } | Phase::Executing { .. }) =
                (&before, &rollout.phase)
                && let Some(name) = rollout.current()
                && let Some(view) = obs.nodes.get(name)
            {
                let lag = ebb_proto::time::now_ms().saturating_sub(view.at_ms);
                react.insert(name.clone(), lag);
                tracing::debug!(node = %name, react_ms = lag, "acted on the drain's end");
            }
            // Saved before acting, so a coordinator that dies mid-action is resumed past it.
            self.persist(&rollout, "running", &mut persisted, &mut redis_down)
                .await;
            if last_renewed.elapsed() >= self.lock.ttl() {
                break (
                    Status::Aborted,
                    Some(format!(
                        "{} (not renewed for {:?}: Redis unreachable)",
                        Abort::LockLost,
                        self.lock.ttl()
                    )),
                );
            }
            let waiting = matches!(action, Action::Wait);
            match action {
                Action::Wait => {}
                Action::SendDrain {
                    node,
                    instance,
                    attempt,
                } => {
                    let mut cmd = Command::new(
                        self.cluster.keys().cluster(),
                        node.clone(),
                        command::Action::Drain(Drain {
                            // With --exec the command restarts the node: it stays drained
                            // until then, so its own supervisor does not race the exec.
                            then: if self.policy.exec {
                                Then::Stay
                            } else {
                                Then::Exit
                            },
                            deadline_ms: None,
                        }),
                    );
                    cmd.instance = Some(instance);
                    // The lock is checked right before a drain goes out: a coordinator that lost
                    // it while cut off from Redis must not drain a second node.
                    match self.lock.renew(self.cluster.conn()).await {
                        Ok(true) => last_renewed = Instant::now(),
                        Ok(false) => break (Status::Aborted, Some(Abort::LockLost.to_string())),
                        Err(error) => {
                            redis_down.get_or_insert_with(Instant::now);
                            progress.note(&format!(
                                "{node}: not sending the drain: cannot renew the lock: {error}"
                            ));
                            input = Some(Input::SendFailed);
                            continue;
                        }
                    }
                    match self.cluster.send(&cmd, self.secret.as_ref()).await {
                        Ok(0) => progress.note(&format!(
                            "{node}: nobody is subscribed to its command channel (its agent may be reconnecting; the desired state will reach it)"
                        )),
                        Ok(_) => {}
                        Err(error) => {
                            redis_down.get_or_insert_with(Instant::now);
                            progress.note(&format!("{node}: sending drain (attempt {attempt}) failed: {error}"));
                            input = Some(Input::SendFailed);
                        }
                    }
                }
                Action::RunExec { node } => {
                    let instance = rollout
                        .results
                        .get(rollout.index)
                        .and_then(|r| r.old_instance);
                    let template = self.exec.clone().unwrap_or_default();
                    let command = exec::render(&template, &node, instance);
                    progress.note(&format!("{node}: running {command}"));
                    let limit = self.policy.replace_timeout;
                    exec_task = Some(tokio::spawn(
                        async move { exec::run(&command, limit).await },
                    ));
                }
                Action::NodeDone => {
                    let result = &rollout.results[rollout.index - 1];
                    progress.finish_node(&result.name, done_message(result));
                    let name = result.name.clone();
                    if let Err(error) = self.cluster.clear_desired(&name).await {
                        tracing::debug!(%error, "could not clear the desired state");
                    }
                }
                Action::Complete => break (Status::Completed, None),
                Action::Abort(abort) => {
                    let mut reason = abort.to_string();
                    if let Abort::NoAck { node, .. } = &abort
                        && let Some(why) = obs.refused.get(node)
                    {
                        reason.push_str(&format!(" (it refused a command: {why})"));
                    }
                    break (Status::Aborted, Some(reason));
                }
            }
            describe(progress, &rollout, &obs);
            if !waiting {
                continue;
            }
            if let Some(since) = redis_down
                && since.elapsed() >= self.redis_grace
            {
                let node = rollout
                    .current()
                    .cloned()
                    .unwrap_or_else(|| NodeName::parse("-").expect("valid"));
                break (
                    Status::Failed,
                    Some(format!(
                        "{}; run `ebb rolling-restart --resume` once Redis is back",
                        Abort::RedisLost { node }
                    )),
                );
            }
            tokio::select! {
                biased;
                () = interrupt.cancelled() => break (
                    Status::Aborted,
                    Some("interrupted; run `ebb rolling-restart --resume` to continue".to_owned()),
                ),
                followed = events.recv(), if events_open => match followed {
                    // One event per step: a burst (an idle node drains and exits within
                    // milliseconds) is seen in order, not only its end.
                    Some(followed) => {
                        if self.follow(followed, &mut obs, &mut redis_down, progress).await {
                            rollout.missed_events = true;
                        }
                    }
                    None => events_open = false,
                },
                done = async { exec_task.as_mut().expect("guarded").await }, if exec_task.is_some() => {
                    exec_task = None;
                    input = Some(Input::ExecDone(done.unwrap_or_else(|e| Err(e.to_string()))));
                }
                _ = poll.tick() => self.reread(&mut obs, &mut redis_down).await,
                _ = renew.tick() => match self.lock.renew(self.cluster.conn()).await {
                    Ok(true) => last_renewed = Instant::now(),
                    Ok(false) => break (Status::Aborted, Some(Abort::LockLost.to_string())),
                    Err(error) => {
                        tracing::warn!(%error, "renewing the rollout lock failed");
                        redis_down.get_or_insert_with(Instant::now);
                    }
                },
                _ = tick.tick() => {}
            }
        };
        stop.cancel();
        if status != Status::Completed {
            self.persist(&rollout, "aborted", &mut persisted, &mut redis_down)
                .await;
        }
        self.finish(rollout, started, status, reason, react).await
    }

    /// Applies what the event stream brought; `true` when events may have been missed.
    async fn follow(
        &mut self,
        followed: Followed,
        obs: &mut Observation,
        redis_down: &mut Option<Instant>,
        progress: &Progress,
    ) -> bool {
        match followed {
            Followed::Event(event) => {
                obs.apply_event(&event);
                false
            }
            Followed::Subscribed => {
                self.reread(obs, redis_down).await;
                false
            }
            Followed::Lost(why) => {
                progress.note(&format!("lost the event subscription ({why}); retrying"));
                redis_down.get_or_insert_with(Instant::now);
                true
            }
        }
    }

    async fn reread(&mut self, obs: &mut Observation, redis_down: &mut Option<Instant>) {
        match self.cluster.nodes().await {
            Ok(records) => {
                obs.apply_records(&records);
                *redis_down = None;
            }
            Err(error) => {
                tracing::warn!(%error, "reading node records failed");
                redis_down.get_or_insert_with(Instant::now);
            }
        }
    }

    async fn persist(
        &mut self,
        rollout: &Rollout,
        status: &str,
        persisted: &mut String,
        redis_down: &mut Option<Instant>,
    ) {
        let saved = Saved {
            status: status.to_owned(),
            rollout: rollout.clone(),
        };
        let json = serde_json::to_string(&saved).expect("a rollout serializes");
        if json == *persisted {
            return;
        }
        match self.cluster.save_rollout_state(&json).await {
            Ok(()) => *persisted = json,
            Err(error) => {
                tracing::warn!(%error, "saving the rollout state failed");
                redis_down.get_or_insert_with(Instant::now);
            }
        }
    }

    async fn finish(
        mut self,
        rollout: Rollout,
        started: Instant,
        status: Status,
        reason: Option<String>,
        react: HashMap<NodeName, u64>,
    ) -> Report {
        if status == Status::Completed
            && let Err(error) = self.cluster.clear_rollout_state().await
        {
            tracing::warn!(%error, "could not clear the finished rollout's state");
        }
        if let Err(error) = self.lock.release(self.cluster.conn()).await {
            tracing::warn!(%error, "could not release the rollout lock (it expires by itself)");
        }
        let failed_node = (status != Status::Completed)
            .then(|| rollout.current().cloned())
            .flatten();
        Report {
            status,
            cluster: self.cluster.keys().cluster().to_owned(),
            rollout_id: rollout.id.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
            overhead_ms: 0,
            reason,
            failed_node,
            nodes: rollout
                .results
                .iter()
                .map(|r| NodeReport::new(r, react.get(&r.name).copied()))
                .collect(),
        }
        .with_overhead()
    }
}

fn done_message(result: &super::step::NodeResult) -> String {
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

/// Updates the current node's progress line.
fn describe(progress: &mut Progress, rollout: &Rollout, obs: &Observation) {
    let Some(name) = rollout.current() else {
        return;
    };
    let connections = obs.nodes.get(name).map(|v| v.connections);
    let message = match &rollout.phase {
        Phase::Check => "checking capacity".to_owned(),
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
        Phase::Settling { .. } => "replacement active; settling".to_owned(),
        Phase::Done => return,
    };
    progress.node(name, message);
}
