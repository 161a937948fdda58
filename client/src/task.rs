//! The task behind a [`Client`](crate::Client): it owns the connection and reconnects.
//!
//! It picks the next URL that has not refused it recently, connects, hands the connection to a
//! session ([`crate::session`]), and when that ends waits what the server advised (capped) or
//! backs off with full jitter, queueing the application's messages meanwhile. Every deadline
//! built from a server's number goes through [`Backoff::advised`] and [`deadline`], so no
//! server can park the client for longer than `max_advised` or overflow an `Instant`.

use crate::backoff::{Backoff, deadline};
use crate::client::{ClientConfig, Event};
use crate::connect::{self, ConnectError, Ws};
use crate::protocol::Correlate;
use crate::stats::Stats;
use ebb_proto::close;
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
    /// Close frame with this code and advised delay (as the server said it).
    Closed {
        code: u16,
        advised: Option<Duration>,
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
}

/// Where and when to connect next.
struct Plan {
    urls: usize,
    next: usize,
    /// Per URL: refused (503) until then.
    refused_until: Vec<Option<Instant>>,
    /// Failed attempts in a row.
    failures: u32,
    /// Connections in a row that ended without an answer or advice (a server that takes the
    /// connection and drops it): backed off like failed connects, not retried at once.
    flaps: u32,
    lost_at: Option<Instant>,
    /// When the server advised to come back (a notice or a close reason), capped.
    come_back_at: Option<Instant>,
}

impl Plan {
    fn new(urls: usize, first: usize) -> Self {
        Plan {
            urls,
            next: first % urls,
            refused_until: vec![None; urls],
            failures: 0,
            flaps: 0,
            lost_at: None,
            come_back_at: None,
        }
    }

    /// The next URL that has not refused us recently, or when the first refusal ends.
    fn candidate(&self, now: Instant) -> Result<usize, Instant> {
        (0..self.urls)
            .map(|k| (self.next + k) % self.urls)
            .find(|&i| self.refused_until[i].is_none_or(|t| t <= now))
            .ok_or_else(|| {
                self.refused_until
                    .iter()
                    .flatten()
                    .min()
                    .copied()
                    .unwrap_or(now)
            })
    }

    /// Away from the node that closed, to any other at random, so its clients spread over all
    /// the survivors instead of piling onto the next one.
    fn lost(&mut self, i: usize) {
        self.lost_at = Some(Instant::now());
        self.next = if self.urls > 1 {
            (i + 1 + rand::random_range(0..self.urls - 1)) % self.urls
        } else {
            i
        };
    }
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
            let i = match plan.candidate(Instant::now()) {
                Ok(i) => i,
                Err(until) => {
                    if !self.wait(until).await {
                        return;
                    }
                    continue;
                }
            };
            let url = self.config.urls[i].clone();
            let ws = match self.attempt(&url).await {
                Ok(ws) => ws,
                Err(error) => {
                    if let Some(delay) = self.failed(&mut plan, i, error)
                        && !self.wait(deadline(Instant::now(), delay)).await
                    {
                        return;
                    }
                    continue;
                }
            };
            self.connected(&mut plan, url).await;
            let ending = self.serve(ws, &mut plan.come_back_at).await;
            self.shared.connected.store(false, Ordering::Relaxed);
            plan.lost(i);
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
                .come_back_at
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            self.stat(|s| s.reconnected(now.saturating_duration_since(lost), late));
        }
        plan.come_back_at = None;
        self.emit(Event::Connected { url }).await;
        self.shared.connected.store(true, Ordering::Relaxed);
    }

    /// After a connection ended: counts and reports it, and says how long to wait before the
    /// next attempt (`None`: the client stops).
    async fn ended(&mut self, plan: &mut Plan, ending: Ending) -> Option<Duration> {
        match ending {
            Ending::Shutdown => None,
            Ending::Closed { code, advised } => {
                plan.flaps = if advised.is_some() || self.answered_here {
                    0
                } else {
                    plan.flaps.saturating_add(1)
                };
                self.stat(|s| *s.close_codes.entry(code).or_default() += 1);
                self.emit(Event::Disconnected {
                    code: Some(code),
                    advised,
                })
                .await;
                if close::DO_NOT_RECONNECT.contains(&code) {
                    self.emit(Event::Stopped { code }).await;
                    return None;
                }
                let now = Instant::now();
                if let Some(advised) = advised {
                    plan.come_back_at = Some(deadline(now, self.backoff().advised(advised)));
                }
                Some(match plan.come_back_at {
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
                })
                .await;
                plan.come_back_at = None;
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
