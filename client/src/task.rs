//! The task behind a [`Client`](crate::Client): it owns the connection and reconnects.
//!
//! It picks the next URL that has not refused it recently, connects, hands the connection to a
//! session ([`crate::session`]), and when that ends waits what the server advised (capped) or
//! backs off with full jitter, queueing the application's messages meanwhile. When the server
//! named a reconnect target the client may follow ([`crate::follow`]), the next attempt goes
//! there first; if it fails, the client's own choice is tried at once. Every deadline
//! built from a server's number goes through [`Backoff::advised`] and [`deadline`], so no
//! server can park the client for longer than `max_advised` or overflow an `Instant`.

use crate::backoff::{Backoff, deadline};
use crate::client::{ClientConfig, Event};
use crate::connect::{self, ConnectError, Ws};
use crate::follow::{self, Goto};
use crate::plan::{Advice, Choice, Plan};
use crate::protocol::Correlate;
use crate::sequence::Sequence;
use crate::stats::Stats;
use ebb_proto::{CloseReason, close};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tungstenite::Utf8Bytes;

/// How long a node that refused the upgrade without a (readable) `Retry-After` is skipped.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// From the handle to the task.
pub(crate) enum Command {
    /// A message, already tagged with its id.
    Send(u64, Utf8Bytes),
    Close,
}

/// What the handle reads while the task runs.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub stats: Mutex<Stats>,
    /// Messages accepted and not yet answered: the handle adds, the task takes away on an
    /// answer. The handle refuses sends once it reaches `max_pending`.
    pub outstanding: AtomicUsize,
    pub connected: AtomicBool,
}

impl Shared {
    pub fn stats(&self) -> Stats {
        self.stats.lock().expect("stats lock").clone()
    }
}

/// A message not yet answered.
pub(crate) struct Pending {
    /// The frame's text (cheap to clone for a resend).
    pub text: Utf8Bytes,
    /// Written on some connection already (so writing it again is a resend).
    pub on_wire: bool,
}

/// How a connection ended.
pub(crate) enum Ending {
    /// Close frame with this code and reason text; `ebb` when the text is ebb's close reason
    /// (its advised delay and target, as the server said them).
    Closed {
        code: u16,
        text: Option<String>,
        ebb: Option<CloseReason>,
    },
    /// No Close frame.
    Abnormal,
    /// The application closed the client.
    Shutdown,
}

/// The task's state.
pub(crate) struct Task {
    pub config: ClientConfig,
    pub correlate: Arc<dyn Correlate>,
    /// From the handle; `None` once the handle is gone, which ends the task like a Close.
    pub commands: mpsc::Receiver<Command>,
    /// To the application (`None` when `config.events` is off). When it is full the task waits.
    pub events: Option<mpsc::Sender<Event>>,
    pub shared: Arc<Shared>,
    /// At most `max_pending` entries: the handle counts every one in `shared.outstanding`.
    pub pending: BTreeMap<u64, Pending>,
    /// The current connection answered something (it is not flapping).
    pub answered_here: bool,
    /// The push sequence seen, across connections: a reconnect resumes after its contiguous end.
    pub sequence: Sequence,
}

/// The server's word on the target: the latest wins, and one too long to be a target counts
/// as ignored.
pub(crate) fn advise_target(task: &Task, advice: &mut Advice, target: Option<String>) {
    advice.target = follow::keep(target).unwrap_or_else(|()| {
        task.stat(|s| s.targets_ignored += 1);
        None
    });
}

impl Task {
    pub fn new(
        config: ClientConfig,
        correlate: Arc<dyn Correlate>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        shared: Arc<Shared>,
    ) -> Self {
        Task {
            events: config.events.then_some(events),
            config,
            correlate,
            commands,
            shared,
            pending: BTreeMap::new(),
            answered_here: false,
            sequence: Sequence::default(),
        }
    }

    /// Hands an event to the application, waiting while its receiver is full: that is what
    /// bounds the receiver, and meanwhile the task reads nothing from the server.
    pub async fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event).await;
        }
    }

    pub fn stat(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.shared.stats.lock().expect("stats lock"));
    }

    pub fn queue(&mut self, id: u64, text: Utf8Bytes) {
        let pending = Pending {
            text,
            on_wire: false,
        };
        self.pending.insert(id, pending);
        self.stat(|s| s.sent += 1);
    }

    /// Waits until `until`, queueing sends meanwhile; `false` if the application closed.
    async fn wait(&mut self, until: Instant) -> bool {
        loop {
            tokio::select! {
                () = sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    Some(Command::Send(id, text)) => self.queue(id, text),
                    Some(Command::Close) | None => return false,
                },
            }
        }
    }

    pub async fn run(mut self) {
        let mut plan = Plan::new(self.config.urls.len(), self.config.first_url);
        loop {
            let choice = match self.target(&mut plan, Instant::now()) {
                Some(goto) => Choice::Target(goto),
                None => match plan.candidate(Instant::now()) {
                    Ok(i) => Choice::Own(i),
                    Err(until) => {
                        if !self.wait(until).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let url = choice.url(&self.config.urls);
            let url = match self.sequence.resume_after() {
                Some(last) => self.correlate.resume(&url, last),
                None => url,
            };
            let ws = match (self.attempt(&url).await, &choice) {
                (Ok(ws), _) => ws,
                (Err(error), Choice::Target(_)) => {
                    self.target_failed(&mut plan, choice.listed(), error);
                    continue;
                }
                (Err(error), &Choice::Own(i)) => {
                    if let Some(delay) = self.failed(&mut plan, i, error)
                        && !self.wait(deadline(Instant::now(), delay)).await
                    {
                        return;
                    }
                    continue;
                }
            };
            if let Choice::Target(_) = choice {
                self.stat(|s| s.targets_followed += 1);
            }
            self.connected(&mut plan, url).await;
            let ending = self.serve(ws, &mut plan.advice).await;
            self.shared.connected.store(false, Ordering::Relaxed);
            plan.lost(choice.listed());
            let Some(delay) = self.ended(&mut plan, ending).await else {
                return;
            };
            if !self.wait(deadline(Instant::now(), delay)).await {
                return;
            }
        }
    }

    /// One connection attempt, resolved each time: a restarted node may come back elsewhere.
    async fn attempt(&self, url: &str) -> Result<Ws, ConnectError> {
        let addr = connect::resolve(url).await?;
        let config = &self.config;
        timeout(
            config.connect_timeout,
            connect::connect(url, addr, config.source, config.websocket),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::Tcp {
                addr,
                source: std::io::ErrorKind::TimedOut.into(),
            })
        })
    }

    /// The target a server advised, taken (it is good for one attempt), if the client follows
    /// it ([`follow::choose`]) and it has not refused the client recently.
    fn target(&self, plan: &mut Plan, now: Instant) -> Option<Goto> {
        let target = plan.advice.target.take()?;
        let config = &self.config;
        let Some(goto) = follow::choose(&config.urls, config.follow_any_target, &target) else {
            self.stat(|s| s.targets_ignored += 1);
            return None;
        };
        match goto {
            Goto::Listed(i) if plan.refused_until[i].is_some_and(|t| t > now) => None,
            goto => Some(goto),
        }
    }

    /// After a followed target failed: counted like any failed attempt (a refusing listed URL
    /// is skipped for its capped `Retry-After`), then the client's own choice is tried at once,
    /// with neither its order nor its backoff touched: the target was the server's idea.
    fn target_failed(&self, plan: &mut Plan, listed: Option<usize>, error: ConnectError) {
        match error {
            ConnectError::Refused { retry_after, .. } => {
                self.stat(|s| s.refused += 1);
                if let Some(i) = listed {
                    let wait = self
                        .backoff()
                        .advised(retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
                    plan.refused_until[i] = Some(deadline(Instant::now(), wait));
                }
            }
            _ => self.stat(|s| s.connect_failures += 1),
        }
    }

    /// After a failed attempt: skips a refusing URL for its (capped) `Retry-After`, moves on,
    /// and says how long to back off once every URL failed in a row (`None`: try the next now).
    fn failed(&self, plan: &mut Plan, i: usize, error: ConnectError) -> Option<Duration> {
        match error {
            ConnectError::Refused { retry_after, .. } => {
                self.stat(|s| s.refused += 1);
                let wait = self
                    .backoff()
                    .advised(retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
                plan.refused_until[i] = Some(deadline(Instant::now(), wait));
            }
            _ => self.stat(|s| s.connect_failures += 1),
        }
        plan.next = (i + 1) % plan.urls;
        plan.failures = plan.failures.saturating_add(1);
        let urls = u32::try_from(plan.urls).unwrap_or(u32::MAX);
        plan.failures
            .is_multiple_of(urls)
            .then(|| self.jitter(plan.failures / urls - 1))
    }

    async fn connected(&mut self, plan: &mut Plan, url: String) {
        plan.failures = 0;
        if let Some(lost) = plan.lost_at.take() {
            let now = Instant::now();
            let late = plan
                .advice
                .come_back_at
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            self.stat(|s| s.reconnected(now.saturating_duration_since(lost), late));
        }
        plan.advice = Advice::default();
        self.emit(Event::Connected { url }).await;
        self.shared.connected.store(true, Ordering::Relaxed);
    }

    /// After a connection ended: counts and reports it, and says how long to wait before the
    /// next attempt (`None`: the client stops).
    async fn ended(&mut self, plan: &mut Plan, ending: Ending) -> Option<Duration> {
        match ending {
            Ending::Shutdown => None,
            Ending::Closed { code, text, ebb } => {
                let advised = ebb
                    .as_ref()
                    .map(|r| Duration::from_millis(r.retry_after_ms));
                // An ebb close (a drain's, a rebalance's) is advice, not a failure: no backoff
                // grows from it.
                plan.flaps = if ebb.is_some() || self.answered_here {
                    0
                } else {
                    plan.flaps.saturating_add(1)
                };
                // An ebb reason is the server's latest word on the target too.
                if let Some(reason) = ebb {
                    advise_target(self, &mut plan.advice, reason.reconnect_to);
                }
                self.stat(|s| *s.close_codes.entry(code).or_default() += 1);
                self.emit(Event::Disconnected {
                    code: Some(code),
                    advised,
                    reason: text,
                })
                .await;
                if close::DO_NOT_RECONNECT.contains(&code) {
                    self.emit(Event::Stopped { code }).await;
                    return None;
                }
                let now = Instant::now();
                if let Some(advised) = advised {
                    plan.advice.come_back_at = Some(deadline(now, self.backoff().advised(advised)));
                }
                Some(match plan.advice.come_back_at {
                    Some(t) if t > now => t - now,
                    _ => self.jitter(plan.flaps.saturating_sub(1)),
                })
            }
            Ending::Abnormal => {
                plan.flaps = if self.answered_here {
                    0
                } else {
                    plan.flaps.saturating_add(1)
                };
                self.stat(|s| s.abnormal += 1);
                self.emit(Event::Disconnected {
                    code: None,
                    advised: None,
                    reason: None,
                })
                .await;
                plan.advice.come_back_at = None;
                Some(self.jitter(plan.flaps.saturating_sub(1)))
            }
        }
    }

    fn backoff(&self) -> &Backoff {
        &self.config.backoff
    }

    fn jitter(&self, attempt: u32) -> Duration {
        self.backoff().delay(attempt, None, rand::random::<f64>())
    }
}
