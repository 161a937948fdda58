//! The node's command channel, read so that a flood can cost neither memory nor anyone's time.
//!
//! redis-rs's RESP2 pub/sub (`PubSub`) hands messages from its connection task to the reader
//! through an *unbounded* channel, and that task reads the socket as fast as Redis writes: a
//! reader that falls behind (it yields to the scheduler every 128 messages, the connection task
//! far less often) lets that channel grow without limit, and Redis's own
//! `client-output-buffer-limit pubsub` never bites because the socket is always drained. Measured
//! under a flood: 12 MiB of resident memory before, 126 MiB after.
//!
//! So the subscription is a RESP3 connection (Redis 6 or later; sharded on a Cluster, see
//! [`ebb_redis::subscription`]) whose push messages are handed over synchronously, in the
//! connection task, to [`accept`]: it refuses at once what is too large
//! to be a command and `try_send`s the rest into a bounded queue of [`super::COMMAND_QUEUE`]
//! payloads, dropping (and counting) what does not fit. Nothing between the socket and the worker
//! is unbounded. When the node cannot read as fast as Redis publishes, the backlog stays in
//! Redis's output buffer for this client (a subscriber, for its limits), and at its hard limit
//! (32 MB by default) Redis disconnects it: the session ends, and the commands half resubscribes
//! and reconciles the desired state, while liveness goes on untouched on its own connection.
//!
//! The subscription is otherwise silent. A connection that is lost without a word (a host or
//! a network gone, a partitioned master) is noticed by the liveness half's heartbeat, which
//! fails on the same path and ends this session too, and at the latest by TCP keepalive on it
//! ([`ebb_redis::link::SUBSCRIPTION_KEEPALIVE`]): the kernel's probes cost Redis nothing, where
//! a `PING` every heartbeat doubled what each node costs it (two round trips per heartbeat
//! instead of one, measured in `docs/benchmarks.md`, section 6). A subscriber far behind is
//! cut off by Redis's own output-buffer limit, and a demoted master is seen through the
//! sentinels' announcement or, on a Cluster, the server's unsubscribe.

use super::context::{SessionError, timed};
use crate::metrics::Metrics;
use ebb_proto::command::MAX_COMMAND_BYTES;
use ebb_redis::{Connection, Pushed};
use redis::PushInfo;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

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
    /// Holds the connection (and so the subscription) open.
    _conn: Connection,
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
    /// Subscribes to `channel` on a RESP3 connection of its own, made through `link`.
    pub async fn subscribe(
        link: &ebb_redis::Link,
        channel: &str,
        metrics: Arc<Metrics>,
        limit: Duration,
    ) -> Result<Inbox, SessionError> {
        let (queue_tx, queue) = mpsc::channel(super::COMMAND_QUEUE);
        let handoff = Handoff {
            queue: queue_tx,
            dropped: Arc::new(AtomicU64::new(0)),
            lost: CancellationToken::new(),
            metrics,
        };
        let (dropped, lost) = (handoff.dropped.clone(), handoff.lost.clone());
        let sender = move |push| {
            accept(&handoff, push);
            Ok::<(), std::convert::Infallible>(())
        };
        let subscribe = link.subscribe_with(channel, sender, limit);
        let conn = timed(limit, "SUBSCRIBE", subscribe).await?;
        Ok(Inbox {
            queue,
            dropped,
            lost,
            _conn: conn,
        })
    }

    /// The next payload; an error when the subscription is lost. Cancel safe.
    pub async fn next(&mut self) -> Result<Inbound, SessionError> {
        tokio::select! {
            biased;
            inbound = self.queue.recv() => inbound.ok_or(SessionError::PubSubClosed),
            () = self.lost.cancelled() => Err(SessionError::PubSubClosed),
        }
    }

    /// How many payloads were dropped so far on this subscription.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Called by the connection task for every push: queues a message's payload without waiting
/// (or drops and counts it), notes a lost subscription (the connection closed, or a Cluster
/// moved the slot away), ignores the rest (subscribe confirmations).
fn accept(handoff: &Handoff, push: PushInfo) {
    let payload = match ebb_redis::pushed(push) {
        Pushed::Message(payload) => payload,
        Pushed::Lost(why) => {
            tracing::info!(why, "command subscription lost");
            return handoff.lost.cancel();
        }
        Pushed::Other => return,
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
