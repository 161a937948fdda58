//! The reconnecting client: its configuration, its handle, and what it tells the application.
//!
//! One task owns the connection ([`crate::task`] reconnects, [`crate::session`] serves one
//! connection); a [`Client`] is the handle that queues messages for it. Messages get ids
//! (through a [`Correlate`]) and stay pending until answered; whatever is pending when a
//! connection ends is sent again on the next one, and a reply for a message already answered is
//! dropped, so the application sees every answer exactly once. After a drain close the client
//! waits the delay the server advised (close reason or notice) and moves to the next URL; after
//! anything else it backs off with full jitter. A node that refuses the upgrade (503 +
//! `Retry-After`) is skipped until its `Retry-After` has passed. Close codes 4000–4099 mean "do
//! not reconnect". A drain or rebalance close (or notice) that names a reconnect target sends
//! the next attempt there first, only when it is one of [`ClientConfig::urls`] (unless
//! [`ClientConfig::follow_any_target`]): a server cannot send clients anywhere else.
//!
//! Everything a server can make the client hold is bounded: at most
//! [`ClientConfig::max_pending`] messages are unanswered (more are refused with
//! [`SendError::QueueFull`]), at most [`ClientConfig::events_capacity`] events wait to be read
//! (then the client stops reading from the server until the application reads, so a server that
//! pushes faster than the application reads is slowed down, not buffered), and every delay a
//! server advises is capped at [`Backoff::max_advised`].

use crate::backoff::Backoff;
use crate::connect;
use crate::protocol::Correlate;
use crate::stats::Stats;
use crate::task::{Command, Shared, Task};
use ebb_proto::ShutdownNotice;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tungstenite::protocol::WebSocketConfig;

/// ebb-node's default message limit, and so the client's.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Unanswered messages a client holds by default (~10 MB at 1 KiB each).
pub const DEFAULT_MAX_PENDING: usize = 10_000;
/// Unread events a client holds by default before it stops reading from the server.
pub const DEFAULT_EVENTS_CAPACITY: usize = 10_000;
/// The largest `max_pending` (a channel's capacity has a ceiling).
const MAX_PENDING_LIMIT: usize = usize::MAX >> 4;
/// How long [`Client::close`] waits for the task (its close handshake is bounded by half that).
const CLOSE_WAIT: Duration = Duration::from_secs(4);

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Nodes (or load balancers) to use, in failover order.
    pub urls: Vec<String>,
    /// Index of the URL to try first (spreads many clients over the URLs).
    pub first_url: usize,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    /// The connection's limits. Incoming messages and frames are bounded by tungstenite's
    /// defaults (64 MiB and 16 MiB) unless set here; a larger one ends the connection.
    pub websocket: WebSocketConfig,
    /// Source address (load generators spread connections over several).
    pub source: Option<IpAddr>,
    /// Emit [`Event`]s (off for load generators that only need [`Stats`]). When on, read the
    /// receiver: it holds at most `events_capacity` events, and then the client waits.
    pub events: bool,
    /// Events the receiver holds before the client waits for the application to read (it then
    /// reads nothing from the server, so the server's writes, not the client's memory, absorb
    /// the difference). Nothing is dropped.
    pub events_capacity: usize,
    /// Largest frame [`Client::send`] accepts, in bytes: the payload tagged with its id, as it
    /// goes on the wire. Set it to the node's `--max-message-size` (ebb-node's default here): a
    /// larger frame would be closed with 1009 and resent forever.
    pub max_message_size: usize,
    /// Most messages unanswered at once (queued, on the wire, or waiting for a resend);
    /// [`Client::send`] refuses more with [`SendError::QueueFull`]. This bounds what a client
    /// holds while no server answers. At least 1.
    pub max_pending: usize,
    /// Follow a server's reconnect target (`reconnect_to`, `reconnectTo`) even when it is not
    /// one of `urls`: any printable `ws://` URL of at most 64 bytes. Off by default, because a
    /// hostile or compromised server could otherwise send every client wherever it likes; with
    /// it off, a target is followed only when it is exactly one of `urls`.
    pub follow_any_target: bool,
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
            events_capacity: DEFAULT_EVENTS_CAPACITY,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_pending: DEFAULT_MAX_PENDING,
            follow_any_target: false,
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
    /// A text the correlation did not claim (a server push); `seq` is the sequence number the
    /// app gave it ([`crate::Correlate::seq_of`]), each handed on at most once (one seen before
    /// is dropped, counted in [`crate::Stats::push_duplicates`]); a reconnect resumes after the
    /// last contiguous seq ([`crate::Correlate::resume`]).
    Push {
        text: String,
        seq: Option<u64>,
    },
    /// The server announced its shutdown.
    Notice(ShutdownNotice),
    /// The connection ended: with the Close code, or `None` when abnormal (no Close frame).
    /// `advised` is what the server said; the client waits at most `backoff.max_advised`.
    /// `reason` is the Close reason as sent (at most 123 bytes), `None` without one.
    Disconnected {
        code: Option<u16>,
        advised: Option<Duration>,
        reason: Option<String>,
    },
    /// The server said not to reconnect (4000–4099); the client stopped.
    Stopped {
        code: u16,
    },
}

/// A message the client will not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The frame (the payload tagged with its id) is larger than `max_message_size`.
    #[error("message of {size} bytes (with its id) exceeds the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    /// `max` messages are unanswered already.
    #[error("{max} messages are waiting for an answer already; wait for replies and send again")]
    QueueFull { max: usize },
    /// The client stopped (the server said not to reconnect).
    #[error("the client has stopped")]
    Stopped,
}

/// A handle on a running client. Dropping it ends the client like [`Client::close`], without
/// waiting.
pub struct Client {
    /// To the task. Holds at most `max_pending` sends (each counts in `shared.outstanding`
    /// until answered) plus the one Close; dropping it ends the task.
    commands: mpsc::Sender<Command>,
    correlate: Arc<dyn Correlate>,
    max_message_size: usize,
    max_pending: usize,
    /// The next id. Held while a message is tagged and queued, so ids reach the task in order
    /// and a refused message takes none.
    next_id: Mutex<u64>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("max_message_size", &self.max_message_size)
            .field("max_pending", &self.max_pending)
            .field("pending", &self.pending())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts connecting. Events come on the returned receiver (empty unless `config.events`).
    pub fn start<C: Correlate>(
        config: ClientConfig,
        correlate: C,
    ) -> (Client, mpsc::Receiver<Event>) {
        assert!(!config.urls.is_empty(), "a client needs at least one URL");
        let max_pending = config.max_pending.clamp(1, MAX_PENDING_LIMIT);
        let (commands, commands_rx) = mpsc::channel(max_pending + 1);
        let (events_tx, events) = mpsc::channel(config.events_capacity.clamp(1, MAX_PENDING_LIMIT));
        let correlate: Arc<dyn Correlate> = Arc::new(correlate);
        let shared = Arc::new(Shared::default());
        let client = Client {
            commands,
            correlate: correlate.clone(),
            max_message_size: config.max_message_size,
            max_pending,
            next_id: Mutex::new(1),
            shared: shared.clone(),
            task: tokio::spawn(Task::new(config, correlate, commands_rx, events_tx, shared).run()),
        };
        (client, events)
    }

    /// Queues a message; returns its id (ids start at 1 and increase by one per accepted
    /// message). It is sent now if connected, else on connect, and again on every new
    /// connection until answered. Refused when its frame is over `max_message_size`, when
    /// `max_pending` messages are unanswered, or when the client has stopped.
    pub fn send(&self, payload: impl Into<String>) -> Result<u64, SendError> {
        let payload = payload.into();
        let mut next_id = self.next_id.lock().expect("id lock");
        if self.shared.outstanding.load(Ordering::Relaxed) >= self.max_pending {
            return Err(SendError::QueueFull {
                max: self.max_pending,
            });
        }
        let id = *next_id;
        // The size that counts is the frame's, with this very id (ids grow longer).
        let text = self.correlate.tag(id, &payload);
        if text.len() > self.max_message_size {
            return Err(SendError::TooLarge {
                size: text.len(),
                max: self.max_message_size,
            });
        }
        // Counted before it is queued, so the task never answers a message not yet counted.
        self.shared.outstanding.fetch_add(1, Ordering::Relaxed);
        match self.commands.try_send(Command::Send(id, text.into())) {
            Ok(()) => {
                *next_id += 1;
                Ok(id)
            }
            Err(refused) => {
                self.shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                Err(match refused {
                    TrySendError::Full(_) => SendError::QueueFull {
                        max: self.max_pending,
                    },
                    TrySendError::Closed(_) => SendError::Stopped,
                })
            }
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Messages accepted by [`Client::send`] and not yet answered.
    pub fn pending(&self) -> u64 {
        self.shared.outstanding.load(Ordering::Relaxed) as u64
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Closes the connection (Close 1000) and stops reconnecting; returns the final counters.
    /// Bounded: a task that does not finish in time (a server that never reads, an events
    /// receiver nobody reads) is aborted.
    pub async fn close(self) -> Stats {
        let Client {
            commands,
            mut task,
            shared,
            ..
        } = self;
        let _ = commands.try_send(Command::Close);
        if timeout(CLOSE_WAIT, &mut task).await.is_err() {
            task.abort();
        }
        shared.stats()
    }
}
