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
use ebb_proto::control::{Control, Mode};
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
    #[serde(default)]
    pub check: Option<String>,
    /// The service request it carries out, if it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// Everything the engine needs.
#[derive(Debug)]
pub struct Engine<C> {
    pub io: C,
    pub policy: Policy,
    /// `--exec` template (`{name}`, `{instance}`).
    pub exec: Option<String>,
    /// `--check` template (`{name}`, `{url}`).
    pub check: Option<String>,
    /// The service request it carries out, if any (saved with the state).
    pub request: Option<String>,
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

/// Which operator command a background task runs.
#[derive(Debug, Clone, Copy)]
enum Job {
    Exec,
    Check,
}

/// A drain to send.
struct Send {
    node: NodeName,
    instance: uuid::Uuid,
    attempt: u32,
    command_id: String,
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The loop's own state.
struct Looping {
    obs: Observation,
    started: Instant,
    inputs: Vec<(NodeName, NodeInput)>,
    jobs: JoinSet<Result<(), String>>,
    /// Which node each `--exec` or `--check` task is for, and which of the two it is.
    job_nodes: HashMap<tokio::task::Id, (NodeName, Job)>,
    redis_down: Option<Instant>,
    last_renewed: Instant,
    persisted: String,
    react: HashMap<NodeName, u64>,
    /// Nodes in flight an event was about: read them before the next step.
    dirty: BTreeSet<NodeName>,
    read_all: bool,
    /// Read the control value before the next step (every tick).
    read_control: bool,
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
            jobs: JoinSet::new(),
            job_nodes: HashMap::new(),
            redis_down: None,
            last_renewed: Instant::now(),
            persisted: String::new(),
            react: HashMap::new(),
            dirty: BTreeSet::new(),
            read_all: false,
            read_control: true,
            events_open: true,
        };
        let stop = match self
            .begin(&mut rollout, &mut events, &mut state, progress)
            .await
        {
            Err(stop) => stop,
            Ok(()) => {
                self.turn(&mut rollout, &mut events, &mut state, progress, &interrupt)
                    .await
            }
        };
        stop_events.cancel();
        state.jobs.abort_all();
        self.wind_down(&rollout, &mut state, &stop).await;
        self.finish(rollout, &state, stop).await
    }

    /// Subscribes (before the first command: an idle node drains and exits within milliseconds,
    /// and events missed then would make its clean exit look like a crash) and reads the records.
    async fn begin(
        &mut self,
        rollout: &mut Rollout,
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
        // A resumed rollout that was paused stays paused from its first step.
        self.read_control(rollout, state).await;
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
}

/// The intervals the wait selects on.
struct Waits<'a> {
    poll: &'a mut Interval,
    tick: &'a mut Interval,
    renew: &'a mut Interval,
}

mod act;
mod end;
mod read;

use end::{describe, done_message, note_reactions};
