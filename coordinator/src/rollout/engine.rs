//! The engine: runs a [`Rollout`] against the cluster ([`Io`]). The one engine behind every
//! front end.
//!
//! It keeps an [`Observation`] fresh from the records (all of them every [`POLL_INTERVAL`]; the
//! in-flight nodes' every tick, and at once when an event about them arrives: events wake,
//! records confirm),
//! steps the rollout, saves it **before** acting (fenced by the lock, so a coordinator that lost
//! the lock cannot overwrite its successor's state), carries the actions out (drains, `--exec`
//! commands), renews the lock, and stops when Redis stays unreachable past the grace period.
//! However it stops short, it removes the desired state its drains left for nodes still in
//! flight, so a node reconnecting later does not drain on its own.

use super::abort::Abort;
use super::io::Io;
use super::node::{NodeInput, NodeResult, Phase};
use super::observe::{Observation, Wake};
use super::report::{NodeReport, Report, Status};
use super::state::{Action, Rollout};
use super::{POLL_INTERVAL, Policy};
use crate::cluster::Followed;
use crate::exec;
use crate::lock::Lock;
use crate::progress::Progress;
use ebb_proto::NodeName;
use ebb_proto::command::{self, Command, Drain, Then};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval, interval_at};
use tokio_util::sync::CancellationToken;

/// How long to wait for the event subscription before the first command.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);
/// How often timers are checked, and the nodes in flight read, when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// Most events taken from the queue before the records they point at are read.
const EVENT_BATCH: usize = 1024;

/// The rollout as persisted in Redis: with the policy and `--exec` template it runs under, so a
/// `--resume` continues it under the same rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    /// `running` while a coordinator works on it, `aborted` after it stopped.
    pub status: String,
    pub rollout: Rollout,
    pub policy: Policy,
    #[serde(default)]
    pub exec: Option<String>,
}

/// Everything the engine needs.
#[derive(Debug)]
pub struct Engine<C> {
    pub io: C,
    pub policy: Policy,
    /// `--exec` template (`{name}`, `{instance}`).
    pub exec: Option<String>,
    pub redis_grace: Duration,
    pub lock: Lock,
}

/// How the loop ended.
struct Stop {
    status: Status,
    reason: Option<String>,
    /// The lock was lost: nothing may be written any more.
    fenced: bool,
}

impl Stop {
    fn new(status: Status, reason: impl Into<String>) -> Self {
        Stop {
            status,
            reason: Some(reason.into()),
            fenced: false,
        }
    }

    fn lock_lost(detail: &str) -> Self {
        Stop {
            status: Status::Aborted,
            reason: Some(format!("{}{detail}", Abort::LockLost)),
            fenced: true,
        }
    }
}

/// The loop's own state.
struct Looping {
    obs: Observation,
    started: Instant,
    inputs: Vec<(NodeName, NodeInput)>,
    execs: JoinSet<Result<(), String>>,
    /// Which node each `--exec` task is for.
    exec_nodes: HashMap<tokio::task::Id, NodeName>,
    redis_down: Option<Instant>,
    last_renewed: Instant,
    persisted: String,
    react: HashMap<NodeName, u64>,
    /// Nodes in flight an event was about: read them before the next step.
    dirty: BTreeSet<NodeName>,
    read_all: bool,
    events_open: bool,
}

impl<C: Io> Engine<C> {
    /// Runs `rollout` to its end and returns the report. `interrupt` stops it where it is (the
    /// saved state lets `--resume` continue).
    pub async fn run(
        mut self,
        mut rollout: Rollout,
        progress: &mut Progress,
        interrupt: CancellationToken,
    ) -> Report {
        let stop_events = CancellationToken::new();
        let mut events = self.io.follow_events(stop_events.clone());
        let mut state = Looping {
            obs: Observation {
                plan: rollout.plan().into_iter().collect(),
                ..Observation::default()
            },
            started: Instant::now(),
            inputs: Vec::new(),
            execs: JoinSet::new(),
            exec_nodes: HashMap::new(),
            redis_down: None,
            last_renewed: Instant::now(),
            persisted: String::new(),
            react: HashMap::new(),
            dirty: BTreeSet::new(),
            read_all: false,
            events_open: true,
        };
        let stop = match self.begin(&mut events, &mut state, progress).await {
            Err(stop) => stop,
            Ok(()) => {
                self.turn(&mut rollout, &mut events, &mut state, progress, &interrupt)
                    .await
            }
        };
        stop_events.cancel();
        state.execs.abort_all();
        self.wind_down(&rollout, &mut state, &stop).await;
        self.finish(rollout, &state, stop).await
    }

    /// Subscribes (before the first command: an idle node drains and exits within milliseconds,
    /// and events missed then would make its clean exit look like a crash) and reads the records.
    async fn begin(
        &mut self,
        events: &mut mpsc::Receiver<Followed>,
        state: &mut Looping,
        progress: &Progress,
    ) -> Result<(), Stop> {
        match tokio::time::timeout(SUBSCRIBE_WAIT, events.recv()).await {
            Ok(Some(Followed::Subscribed)) => {}
            Ok(Some(Followed::Lost(why))) => {
                return Err(Stop::new(
                    Status::Failed,
                    format!("cannot subscribe to the cluster's events: {why}"),
                ));
            }
            _ => progress.note("the event subscription is slow; following records until it is up"),
        }
        state.obs.wall_ms = self.io.now_ms();
        match self.io.nodes().await {
            Ok(records) => state.obs.apply_records(&records),
            Err(error) => return Err(Stop::new(Status::Failed, error.to_string())),
        }
        Ok(())
    }

    /// The loop: step, save, act, wait, read; until a stop.
    async fn turn(
        &mut self,
        rollout: &mut Rollout,
        events: &mut mpsc::Receiver<Followed>,
        state: &mut Looping,
        progress: &mut Progress,
        interrupt: &CancellationToken,
    ) -> Stop {
        let mut poll = interval_at(Instant::now() + POLL_INTERVAL, POLL_INTERVAL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tick = interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let renew_every = self.lock.renew_every();
        let mut renew = interval_at(Instant::now() + renew_every, renew_every);
        loop {
            self.clock(state);
            let before: Vec<Phase> = rollout.nodes.iter().map(|r| r.phase.clone()).collect();
            let actions = rollout.step(&state.obs, &self.policy, &mut state.inputs);
            // Watched from the step that admits a node, before its first event can come.
            state.obs.set_watched(
                rollout
                    .in_flight()
                    .filter_map(|r| Some((r.old_instance()?, r.name().clone()))),
            );
            note_reactions(rollout, &before, state);
            // Saved before acting, so a coordinator that dies mid-action is resumed past it.
            if let Err(stop) = self.persist(rollout, "running", state).await {
                return stop;
            }
            if state.last_renewed.elapsed() >= self.lock.ttl() {
                let detail = format!(
                    " (not renewed for {:?}: Redis unreachable)",
                    self.lock.ttl()
                );
                return Stop::lock_lost(&detail);
            }
            for action in actions {
                if let Some(stop) = self.act(action, rollout, state, progress).await {
                    return stop;
                }
            }
            describe(progress, rollout, &state.obs);
            if let Some(since) = state.redis_down
                && since.elapsed() >= self.redis_grace
            {
                let node = rollout.in_flight().next().map(|r| r.name().clone());
                let at = node.map_or("-".to_owned(), |n| n.to_string());
                return Stop::new(
                    Status::Failed,
                    format!(
                        "Redis was unreachable for longer than the grace period while at {at}; run `ebb rolling-restart --resume` once Redis is back"
                    ),
                );
            }
            let wait = Waits {
                poll: &mut poll,
                tick: &mut tick,
                renew: &mut renew,
            };
            if let Some(stop) = self
                .wait(rollout, events, state, progress, interrupt, wait)
                .await
            {
                return stop;
            }
            self.refresh(rollout, state).await;
        }
    }

    /// Sets the observation's clocks.
    fn clock(&self, state: &mut Looping) {
        state.obs.now = state.started.elapsed();
        state.obs.wall_ms = self.io.now_ms();
    }

    /// Carries out one action; `Some` ends the rollout.
    async fn act(
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
            } => {
                return self
                    .send_drain(node, instance, attempt, command_id, state, progress)
                    .await;
            }
            Action::RunExec { node, instance } => {
                let template = self.exec.clone().unwrap_or_default();
                let command = exec::render(&template, &node, Some(instance));
                progress.note(&format!("{node}: running {command}"));
                let run = self.io.exec(command, self.policy.replace_timeout);
                let task = state.execs.spawn(run);
                state.exec_nodes.insert(task.id(), node);
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

    async fn send_drain(
        &mut self,
        node: NodeName,
        instance: uuid::Uuid,
        attempt: u32,
        command_id: String,
        state: &mut Looping,
        progress: &Progress,
    ) -> Option<Stop> {
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
            command::Action::Drain(Drain {
                // With --exec the command restarts the node: it stays drained until then, so
                // its own supervisor does not race the exec.
                then: if self.policy.exec {
                    Then::Stay
                } else {
                    Then::Exit
                },
                deadline_ms: None,
                targets: Vec::new(),
            }),
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

    /// Waits for the next thing that may change what the rollout decides.
    async fn wait(
        &mut self,
        rollout: &mut Rollout,
        events: &mut mpsc::Receiver<Followed>,
        state: &mut Looping,
        progress: &Progress,
        interrupt: &CancellationToken,
        waits: Waits<'_>,
    ) -> Option<Stop> {
        tokio::select! {
            biased;
            () = interrupt.cancelled() => return Some(Stop::new(
                Status::Aborted,
                "interrupted; run `ebb rolling-restart --resume` to continue",
            )),
            followed = events.recv(), if state.events_open => match followed {
                Some(followed) => {
                    self.take(followed, rollout, state, progress);
                    // A burst is taken whole, then read once.
                    while state.dirty.len() < EVENT_BATCH {
                        let Ok(more) = events.try_recv() else { break };
                        self.take(more, rollout, state, progress);
                    }
                }
                None => state.events_open = false,
            },
            Some(done) = state.execs.join_next_with_id(), if !state.execs.is_empty() => {
                let (id, result) = match done {
                    Ok((id, result)) => (id, result),
                    Err(error) => (error.id(), Err(format!("the --exec task failed: {error}"))),
                };
                if let Some(node) = state.exec_nodes.remove(&id) {
                    state.inputs.push((node, NodeInput::ExecDone(result)));
                }
                // What the command did is judged on a read taken after it.
                state.read_all = true;
            }
            _ = waits.poll.tick() => state.read_all = true,
            _ = waits.renew.tick() => match self.io.renew(&self.lock).await {
                Ok(true) => state.last_renewed = Instant::now(),
                Ok(false) => return Some(Stop::lock_lost("")),
                Err(error) => {
                    tracing::warn!(%error, "renewing the rollout lock failed");
                    state.redis_down.get_or_insert_with(Instant::now);
                }
            },
            // The nodes in flight are read every tick whatever the events say: a timeout is
            // judged on a fresh read, and a lost event costs at most a tick.
            _ = waits.tick.tick() => state.dirty.extend(rollout.in_flight().map(|r| r.name().clone())),
        }
        if self.io.intake().take_overflow() {
            // Dropped events may have said anything: read everything, and trust no silence.
            rollout.missed_events = true;
            state.read_all = true;
        }
        None
    }

    /// Takes one item of the event stream: an event only marks what to read.
    fn take(
        &self,
        followed: Followed,
        rollout: &mut Rollout,
        state: &mut Looping,
        progress: &Progress,
    ) {
        match followed {
            Followed::Event(event) => match state.obs.note_event(&event) {
                Wake::Node(name) if rollout.in_flight().any(|r| *r.name() == name) => {
                    state.dirty.insert(name);
                }
                Wake::All if self.policy.ephemeral_names => state.read_all = true,
                _ => {}
            },
            Followed::Subscribed => state.read_all = true,
            Followed::Lost(why) => {
                progress.note(&format!("lost the event subscription ({why}); retrying"));
                state.redis_down.get_or_insert_with(Instant::now);
                rollout.missed_events = true;
            }
        }
    }

    /// Reads what the wait said to read.
    async fn refresh(&mut self, rollout: &Rollout, state: &mut Looping) {
        let dirty = std::mem::take(&mut state.dirty);
        if std::mem::take(&mut state.read_all) {
            self.read_all(rollout, state).await;
        } else if !dirty.is_empty() {
            let names: Vec<NodeName> = dirty.into_iter().collect();
            self.read_some(rollout, &names, state).await;
        }
    }

    async fn read_all(&mut self, rollout: &Rollout, state: &mut Looping) {
        state.obs.wall_ms = self.io.now_ms();
        match self.io.nodes().await {
            Ok(records) => {
                state.obs.apply_records(&records);
                state.redis_down = None;
            }
            Err(error) => {
                tracing::warn!(%error, "reading node records failed");
                state.redis_down.get_or_insert_with(Instant::now);
                return;
            }
        }
        self.read_some(rollout, &[], state).await;
    }

    /// Reads the records of `names` and the own copies of every watched instance.
    async fn read_some(&mut self, rollout: &Rollout, names: &[NodeName], state: &mut Looping) {
        let watched: Vec<_> = rollout
            .in_flight()
            .filter_map(|r| Some((r.name().clone(), r.old_instance()?)))
            .collect();
        state.obs.wall_ms = self.io.now_ms();
        match self.io.read(names, &watched).await {
            Ok(snapshot) => {
                for (name, record) in &snapshot.records {
                    state.obs.apply_record(name, record.as_ref());
                }
                for (instance, copy) in &snapshot.instances {
                    state.obs.apply_instance(*instance, copy.as_ref());
                }
                state.redis_down = None;
            }
            Err(error) => {
                tracing::warn!(%error, "reading node records failed");
                state.redis_down.get_or_insert_with(Instant::now);
            }
        }
    }

    /// Saves the rollout if it changed; a lost lock stops everything.
    async fn persist(
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

    /// Removes `node`'s desired state if it still holds this rollout's drain.
    async fn clear_desired(&mut self, rollout: &Rollout, node: &NodeName) {
        let Some(index) = rollout.nodes.iter().position(|r| r.name() == node) else {
            return;
        };
        let prefix = rollout.command_prefix(index);
        if let Err(error) = self.io.clear_desired(node, &prefix).await {
            tracing::warn!(%node, %error, "could not clear the desired state");
        }
    }

    /// After a stop short of completion: the drains of nodes in flight are taken back from the
    /// desired state, and the state is saved as stopped. Nothing is written once the lock is lost.
    async fn wind_down(&mut self, rollout: &Rollout, state: &mut Looping, stop: &Stop) {
        if stop.fenced || stop.status == Status::Completed {
            return;
        }
        let in_flight: Vec<NodeName> = rollout.in_flight().map(|r| r.name().clone()).collect();
        for node in &in_flight {
            self.clear_desired(rollout, node).await;
        }
        let _ = self.persist(rollout, "aborted", state).await;
    }

    async fn finish(mut self, rollout: Rollout, state: &Looping, stop: Stop) -> Report {
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
            nodes: rollout
                .nodes
                .iter()
                .map(|r| NodeReport::new(r, state.react.get(r.name()).copied()))
                .collect(),
        }
        .with_overhead()
    }
}

/// The intervals the wait selects on.
struct Waits<'a> {
    poll: &'a mut Interval,
    tick: &'a mut Interval,
    renew: &'a mut Interval,
}

/// Records, for each node whose drain was just seen to end, how long after its record said so.
fn note_reactions(rollout: &Rollout, before: &[Phase], state: &mut Looping) {
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

fn done_message(result: &NodeResult) -> String {
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
fn describe(progress: &mut Progress, rollout: &Rollout, obs: &Observation) {
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
            Phase::Settling { .. } => "replacement active; settling".to_owned(),
            Phase::Pending | Phase::Done => continue,
        };
        progress.node(run.name(), message);
    }
}
