//! The node's command channel, read so that a flood can cost neither memory nor anyone's time.
//!
//! redis-rs's RESP2 pub/sub (`PubSub`) hands messages from its connection task to the reader
//! through an *unbounded* channel, and that task reads the socket as fast as Redis writes: a
//! reader that falls behind (it yields to the scheduler every 128 messages, the connection task
//! far less often) lets that channel grow without limit, and Redis's own
//! `client-output-buffer-limit pubsub` never bites because the socket is always drained. Measured
//! under a flood: 12 MiB of resident memory before, 126 MiB after.
//!
//! So the subscription is a RESP3 connection (Redis 6 or later) whose push messages are handed
//! over synchronously, in the connection task, to [`accept`]: it refuses at once what is too large
//! to be a command and `try_send`s the rest into a bounded queue of [`super::COMMAND_QUEUE`]
//! payloads, dropping (and counting) what does not fit. Nothing between the socket and the worker
//! is unbounded. When the node cannot read as fast as Redis publishes, the backlog stays in
//! Redis's output buffer for this client (a subscriber, for its limits), and at its hard limit
//! (32 MB by default) Redis disconnects it: the session ends, and the commands half resubscribes
//! and reconciles the desired state, while liveness goes on untouched on its own connection.
//!
//! The subscription is otherwise silent, so a task of its own pings on it every heartbeat
//! interval: a paused or partitioned Redis ends the session instead of going unnoticed. (The
//! answer queues behind whatever Redis has yet to send, so a subscriber that is far behind is
//! noticed this way too.)

use super::context::{SessionError, timed};
use crate::metrics::Metrics;
use ebb_proto::command::MAX_COMMAND_BYTES;
use redis::aio::MultiplexedConnection;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, interval_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// A payload from the command channel.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// At most [`MAX_COMMAND_BYTES`], still to be judged.
    Payload(Vec<u8>),
    /// Refused unread: this many bytes.
    TooLarge(usize),
}

/// A subscribed command channel.
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: mpsc::Receiver<Inbound>,
    /// Payloads dropped because the queue was full, this subscription.
    dropped: Arc<AtomicU64>,
    /// Cancelled by the connection task when the connection is lost.
    lost: CancellationToken,
    /// Pings the subscription; returns the first failure. Aborted with the inbox.
    keepalive: AbortOnDropHandle<SessionError>,
    /// Holds the connection (and so the subscription) open.
    _conn: MultiplexedConnection,
}

/// What the connection task needs to hand a push over.
#[derive(Debug)]
struct Handoff {
    queue: mpsc::Sender<Inbound>,
    dropped: Arc<AtomicU64>,
    lost: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Inbox {
    /// Subscribes to `channel` on a RESP3 connection of its own.
    pub async fn subscribe(
        client: &redis::Client,
        channel: &str,
        metrics: Arc<Metrics>,
        ping_every: Duration,
        limit: Duration,
    ) -> Result<Inbox, SessionError> {
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))?;
        let (queue_tx, queue) = mpsc::channel(super::COMMAND_QUEUE);
        let handoff = Handoff {
            queue: queue_tx,
            dropped: Arc::new(AtomicU64::new(0)),
            lost: CancellationToken::new(),
            metrics,
        };
        let (dropped, lost) = (handoff.dropped.clone(), handoff.lost.clone());
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(Some(limit))
            .set_push_sender(move |push| {
                accept(&handoff, push);
                Ok::<(), std::convert::Infallible>(())
            });
        let mut conn = timed(
            limit,
            "pub/sub connect",
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        timed(limit, "SUBSCRIBE", conn.subscribe(channel)).await?;
        let keepalive = tokio::spawn(keepalive(conn.clone(), ping_every, limit));
        Ok(Inbox {
            queue,
            dropped,
            lost,
            keepalive: AbortOnDropHandle::new(keepalive),
            _conn: conn,
        })
    }

    /// The next payload; an error when the subscription is lost. Cancel safe.
    pub async fn next(&mut self) -> Result<Inbound, SessionError> {
        tokio::select! {
            biased;
            inbound = self.queue.recv() => inbound.ok_or(SessionError::PubSubClosed),
            () = self.lost.cancelled() => Err(SessionError::PubSubClosed),
            failed = &mut self.keepalive => Err(failed.unwrap_or(SessionError::PubSubClosed)),
        }
    }

    /// How many payloads were dropped so far on this subscription.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Called by the connection task for every push: queues a message's payload without waiting
/// (or drops and counts it), notes a lost connection, ignores the rest (subscribe confirmations).
fn accept(handoff: &Handoff, push: PushInfo) {
    match push.kind {
        PushKind::Message => {}
        PushKind::Disconnection => return handoff.lost.cancel(),
        _ => return,
    }
    // [channel, payload]
    let Some(Value::BulkString(payload)) = push.data.into_iter().nth(1) else {
        return;
    };
    let inbound = if payload.len() > MAX_COMMAND_BYTES {
        Inbound::TooLarge(payload.len())
    } else {
        Inbound::Payload(payload)
    };
    match handoff.queue.try_send(inbound) {
        Ok(()) | Err(TrySendError::Closed(_)) => {}
        Err(TrySendError::Full(_)) => {
            handoff.dropped.fetch_add(1, Ordering::Relaxed);
            handoff.metrics.command_dropped();
        }
    }
}

/// Pings on the subscription's connection every `period`; returns the first failure.
async fn keepalive(
    mut conn: MultiplexedConnection,
    period: Duration,
    limit: Duration,
) -> SessionError {
    let mut tick = interval_at(Instant::now() + period, period);
    let ping = redis::cmd("PING");
    loop {
        tick.tick().await;
        if let Err(error) = timed(limit, "pub/sub PING", ping.query_async::<Value>(&mut conn)).await
        {
            return error;
        }
    }
}
