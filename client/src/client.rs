//! The reconnecting client.
//!
//! One task owns the connection. Messages get ids (through a [`Correlate`]) and stay pending
//! until answered; whatever is pending when a connection ends is sent again on the next one, and
//! a reply for a message already answered is dropped, so the application sees every answer
//! exactly once. After a drain close the client waits the delay the server advised (close reason
//! or notice) and moves to the next URL; after anything else it backs off with full jitter. A
//! node that refuses the upgrade (503 + `Retry-After`) is skipped until its `Retry-After` has
//! passed. Close codes 4000–4099 mean "do not reconnect".

use crate::backoff::Backoff;
use crate::connect::{self, ConnectError, Ws};
use crate::protocol::Correlate;
use crate::stats::Stats;
use ebb_proto::{CloseReason, ShutdownNotice, close};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tungstenite::Message;
use tungstenite::protocol::WebSocketConfig;

/// How long to wait for the server to end TCP after the close handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Nodes (or load balancers) to use, in failover order.
    pub urls: Vec<String>,
    /// Index of the URL to try first (spreads many clients over the URLs).
    pub first_url: usize,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    pub websocket: WebSocketConfig,
    /// Source address (load generators spread connections over several).
    pub source: Option<IpAddr>,
    /// Emit [`Event`]s (off for load generators that only need [`Stats`]). When on, read the
    /// receiver: events queue until read.
    pub events: bool,
    /// Largest message [`Client::send`] accepts, in bytes (ebb-node's default limit): a larger
    /// one would be closed with 1009 and resent forever.
    pub max_message_size: usize,
}

impl ClientConfig {
    /// Defaults for these URLs.
    pub fn new(urls: Vec<String>) -> Self {
        ClientConfig {
            urls,
            first_url: 0,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            websocket: connect::lean_config(),
            source: None,
            events: true,
            max_message_size: 64 * 1024,
        }
    }
}

/// What happened, for applications that want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected {
        url: String,
    },
    /// The answer to message `id` (each id at most once).
    Reply {
        id: u64,
        text: String,
    },
    /// A text the correlation did not claim (server push).
    Push(String),
    /// The server announced its shutdown.
    Notice(ShutdownNotice),
    /// The connection ended: with the Close code, or `None` when abnormal (no Close frame).
    Disconnected {
        code: Option<u16>,
        advised: Option<Duration>,
    },
    /// The server said not to reconnect (4000–4099); the client stopped.
    Stopped {
        code: u16,
    },
}

/// A message the client will not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("message of {size} bytes exceeds the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
}

enum Command {
    Send(u64, String),
    Close,
}

/// A handle on a running client.
#[derive(Debug)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    max_message_size: usize,
    next_id: AtomicU64,
    stats: Arc<Mutex<Stats>>,
    pending: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Client {
    /// Starts connecting. Events come on the returned receiver (empty unless `config.events`).
    pub fn start<C: Correlate>(
        config: ClientConfig,
        correlate: C,
    ) -> (Client, mpsc::UnboundedReceiver<Event>) {
        assert!(!config.urls.is_empty(), "a client needs at least one URL");
        let max_message_size = config.max_message_size;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let pending = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let conn = Connection {
            answered_here: false,
            connected: connected.clone(),
            events: config.events.then_some(events_tx),
            config,
            correlate,
            commands: commands_rx,
            stats: stats.clone(),
            pending_count: pending.clone(),
            pending: BTreeMap::new(),
        };
        let task = tokio::spawn(conn.run());
        let client = Client {
            commands,
            max_message_size,
            next_id: AtomicU64::new(1),
            stats,
            pending,
            connected,
            task,
        };
        (client, events)
    }

    /// Queues a message; returns its id. It is sent now if connected, else on connect, and again
    /// on every new connection until answered.
    pub fn send(&self, payload: impl Into<String>) -> Result<u64, SendError> {
        let payload = payload.into();
        if payload.len() > self.max_message_size {
            return Err(SendError::TooLarge {
                size: payload.len(),
                max: self.max_message_size,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.commands.send(Command::Send(id, payload));
        Ok(id)
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Messages sent and not yet answered.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Closes the connection (Close 1000) and stops reconnecting; returns the final counters.
    pub async fn close(self) -> Stats {
        let _ = self.commands.send(Command::Close);
        let _ = timeout(CLOSE_LINGER * 2, self.task).await;
        self.stats.lock().expect("stats lock").clone()
    }
}

/// A message not yet answered.
struct Pending {
    payload: String,
    /// Written on some connection already (so sending it again is a resend).
    on_wire: bool,
}

/// How a connection ended.
enum Ending {
    /// Close frame with this code and advised delay.
    Closed {
        code: u16,
        advised: Option<Duration>,
    },
    /// No Close frame.
    Abnormal,
    /// The application closed the client.
    Shutdown,
}

struct Connection<C> {
    connected: Arc<AtomicBool>,
    /// The current connection answered something (it is not flapping).
    answered_here: bool,
    config: ClientConfig,
    correlate: C,
    commands: mpsc::UnboundedReceiver<Command>,
    events: Option<mpsc::UnboundedSender<Event>>,
    stats: Arc<Mutex<Stats>>,
    pending_count: Arc<AtomicU64>,
    pending: BTreeMap<u64, Pending>,
}

impl<C: Correlate> Connection<C> {
    fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    fn stat(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().expect("stats lock"));
    }

    fn queue(&mut self, id: u64, payload: String) {
        self.pending.insert(
            id,
            Pending {
                payload,
                on_wire: false,
            },
        );
        self.pending_count
            .store(self.pending.len() as u64, Ordering::Relaxed);
        self.stat(|s| s.sent += 1);
    }

    /// Waits until `until`, queueing sends meanwhile; `false` if the application closed.
    async fn wait(&mut self, until: Instant) -> bool {
        loop {
            tokio::select! {
                () = sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    Some(Command::Send(id, payload)) => self.queue(id, payload),
                    Some(Command::Close) | None => return false,
                },
            }
        }
    }

    async fn run(mut self) {
        let urls = self.config.urls.len();
        let mut next = self.config.first_url % urls;
        let mut refused_until: Vec<Option<Instant>> = vec![None; urls];
        let mut failures: u32 = 0;
        let mut lost_at: Option<Instant> = None;
        let mut come_back_at: Option<Instant> = None;
        // Connections in a row that ended without an answer or advice (a server that takes the
        // connection and drops it): backed off like failed connects, not retried at once.
        let mut flaps: u32 = 0;
        loop {
            // The next URL that has not refused us recently.
            let now = Instant::now();
            let candidate = (0..urls)
                .map(|k| (next + k) % urls)
                .find(|&i| refused_until[i].is_none_or(|t| t <= now));
            let Some(i) = candidate else {
                let until = refused_until.iter().flatten().min().copied().unwrap_or(now);
                if !self.wait(until).await {
                    return;
                }
                continue;
            };
            let url = self.config.urls[i].clone();
            // Resolved at every attempt: a restarted node may come back at another address.
            let attempt = match connect::resolve(&url).await {
                Ok(addr) => timeout(
                    self.config.connect_timeout,
                    connect::connect(&url, addr, self.config.source, self.config.websocket),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(ConnectError::Tcp {
                        addr,
                        source: std::io::ErrorKind::TimedOut.into(),
                    })
                }),
                Err(error) => Err(error),
            };
            let ws = match attempt {
                Ok(ws) => ws,
                Err(error) => {
                    match error {
                        ConnectError::Refused { retry_after, .. } => {
                            self.stat(|s| s.refused += 1);
                            let wait = retry_after.unwrap_or(Duration::from_secs(1));
                            refused_until[i] = Some(Instant::now() + wait);
                        }
                        _ => self.stat(|s| s.connect_failures += 1),
                    }
                    next = (i + 1) % urls;
                    // Try the other URLs at once; back off once every one failed in a row.
                    failures += 1;
                    if (failures as usize).is_multiple_of(urls) {
                        let delay = self.config.backoff.delay(
                            failures / urls as u32 - 1,
                            None,
                            rand::random::<f64>(),
                        );
                        if !self.wait(Instant::now() + delay).await {
                            return;
                        }
                    }
                    continue;
                }
            };
            failures = 0;
            if let Some(lost) = lost_at.take() {
                let now = Instant::now();
                let late =
                    come_back_at.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                self.stat(|s| s.reconnected(now - lost, late));
            }
            come_back_at = None;
            self.emit(Event::Connected { url: url.clone() });

            self.connected.store(true, Ordering::Relaxed);
            let ending = self.serve(ws, &mut come_back_at).await;
            self.connected.store(false, Ordering::Relaxed);
            lost_at = Some(Instant::now());
            // Away from the node that closed, to any other at random, so its clients spread
            // over all the survivors instead of piling onto the next one.
            next = if urls > 1 {
                (i + 1 + rand::random_range(0..urls - 1)) % urls
            } else {
                i
            };
            let delay = match ending {
                Ending::Shutdown => return,
                Ending::Closed { code, advised } => {
                    flaps = if advised.is_some() || self.answered_here {
                        0
                    } else {
                        flaps + 1
                    };
                    self.stat(|s| *s.close_codes.entry(code).or_default() += 1);
                    self.emit(Event::Disconnected {
                        code: Some(code),
                        advised,
                    });
                    if close::DO_NOT_RECONNECT.contains(&code) {
                        self.emit(Event::Stopped { code });
                        return;
                    }
                    let now = Instant::now();
                    if let Some(advised) = advised {
                        come_back_at = Some(now + advised.min(self.config.backoff.max_advised));
                    }
                    match come_back_at {
                        Some(t) if t > now => t - now,
                        _ => self.config.backoff.delay(
                            flaps.saturating_sub(1),
                            None,
                            rand::random::<f64>(),
                        ),
                    }
                }
                Ending::Abnormal => {
                    flaps = if self.answered_here { 0 } else { flaps + 1 };
                    self.stat(|s| s.abnormal += 1);
                    self.emit(Event::Disconnected {
                        code: None,
                        advised: None,
                    });
                    come_back_at = None;
                    self.config
                        .backoff
                        .delay(flaps.saturating_sub(1), None, rand::random::<f64>())
                }
            };
            if !self.wait(Instant::now() + delay).await {
                return;
            }
        }
    }

    /// One connection: resend what is pending, then send, receive and match until it ends.
    async fn serve(&mut self, mut ws: Ws, come_back_at: &mut Option<Instant>) -> Ending {
        self.answered_here = false;
        let mut resent = 0;
        for (id, pending) in self.pending.iter_mut() {
            if pending.on_wire {
                resent += 1;
            }
            pending.on_wire = true;
            let text = self.correlate.tag(*id, &pending.payload);
            if ws.feed(Message::text(text)).await.is_err() {
                return Ending::Abnormal;
            }
        }
        if ws.flush().await.is_err() {
            return Ending::Abnormal;
        }
        if resent > 0 {
            self.stat(|s| s.resent += resent);
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Send(id, payload)) => {
                        let text = self.correlate.tag(id, &payload);
                        self.queue(id, payload);
                        if let Some(p) = self.pending.get_mut(&id) {
                            p.on_wire = true;
                        }
                        if ws.send(Message::text(text)).await.is_err() {
                            return Ending::Abnormal;
                        }
                    }
                    Some(Command::Close) | None => {
                        let _ = ws.close(None).await;
                        let _ = timeout(CLOSE_LINGER, async { while ws.next().await.is_some() {} }).await;
                        return Ending::Shutdown;
                    }
                },
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => self.receive(text.as_str(), come_back_at),
                    Some(Ok(Message::Close(frame))) => {
                        let (code, advised) = match &frame {
                            Some(f) => (
                                u16::from(f.code),
                                CloseReason::decode(f.reason.as_str())
                                    .map(|r| Duration::from_millis(r.retry_after_ms)),
                            ),
                            None => (close::NORMAL, None),
                        };
                        // Answer the Close and let the server end TCP.
                        let _ = ws.flush().await;
                        let _ = timeout(CLOSE_LINGER, async { while ws.next().await.is_some() {} }).await;
                        return Ending::Closed { code, advised };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Ending::Abnormal,
                },
            }
        }
    }

    fn receive(&mut self, text: &str, come_back_at: &mut Option<Instant>) {
        if let Some(notice) = ShutdownNotice::decode(text) {
            *come_back_at = Some(
                Instant::now()
                    + Duration::from_millis(notice.reconnect_in)
                        .min(self.config.backoff.max_advised),
            );
            self.stat(|s| s.notices += 1);
            self.emit(Event::Notice(notice));
            return;
        }
        match self.correlate.id_of(text) {
            Some(id) => {
                if self.pending.remove(&id).is_some() {
                    self.answered_here = true;
                    self.pending_count
                        .store(self.pending.len() as u64, Ordering::Relaxed);
                    self.stat(|s| s.answered += 1);
                    self.emit(Event::Reply {
                        id,
                        text: text.to_owned(),
                    });
                } else {
                    self.stat(|s| s.duplicates += 1);
                }
            }
            None => self.emit(Event::Push(text.to_owned())),
        }
    }
}
