//! What both halves of the agent share: who the node is, the handles on it, how to reach Redis
//! and publish an event, and why a session ends.

use super::AgentConfig;
use super::record::Identity;
use crate::control::Control;
use crate::metrics::Metrics;
use ebb_proto::{Event, EventKind, Keys};
use ebb_redis::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer {0} in time")]
    Timeout(&'static str),
    #[error("the pub/sub connection closed")]
    PubSubClosed,
    #[error("the sentinels switched the master")]
    MasterSwitched,
    #[error("the liveness half lost Redis")]
    LivenessLost,
    #[error("the node is gone")]
    NodeGone,
}

/// Runs `future` (a Redis request) under `limit`.
pub(crate) async fn timed<T, E: Into<SessionError>>(
    limit: Duration,
    what: &'static str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, SessionError> {
    timeout(limit, future)
        .await
        .map_err(|_| SessionError::Timeout(what))?
        .map_err(Into::into)
}

/// One half of the agent, for the `redis_connected` gauge.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Half {
    Liveness,
    Commands,
}

/// The node, as both halves see it.
#[derive(Debug)]
pub(crate) struct Context {
    pub config: AgentConfig,
    pub keys: Keys,
    pub identity: Identity,
    pub control: Control,
    pub metrics: Arc<Metrics>,
    /// Cancelled by [`super::Agent::shutdown`]: liveness deregisters, commands stop.
    pub stop: CancellationToken,
    /// Cancelled by the commands half once it first subscribed: liveness waits for it (bounded)
    /// before registering, so a node that appears in Redis is, in practice, already listening.
    pub listening: CancellationToken,
    /// Counts the liveness half's failed sessions. The commands half ends its session when it
    /// moves: both reach the same Redis over the same path, and the heartbeat is what notices a
    /// partition at once, where the otherwise silent subscription would notice only through
    /// TCP keepalive (see `inbox`).
    pub liveness_failures: tokio::sync::watch::Sender<u64>,
    liveness_up: AtomicBool,
    commands_up: AtomicBool,
}

impl Context {
    pub fn new(
        config: AgentConfig,
        keys: Keys,
        instance: Uuid,
        control: Control,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        let identity = Identity {
            name: config.name.clone(),
            instance,
            url: config.advertise_url.clone(),
            version: config.version.clone(),
            capacity: config.capacity,
            started_at_ms: ebb_proto::time::now_ms(),
            ttl: config.ttl,
        };
        Context {
            config,
            keys,
            identity,
            control,
            metrics,
            stop,
            listening: CancellationToken::new(),
            liveness_failures: tokio::sync::watch::Sender::new(0),
            liveness_up: AtomicBool::new(false),
            commands_up: AtomicBool::new(false),
        }
    }

    /// A new connection through the link (behind Sentinel, to the master of the moment) whose
    /// connect and every request are bounded by the Redis timeout.
    pub async fn connect(&self) -> Result<Connection, SessionError> {
        let limit = self.config.redis_timeout;
        timed(limit, "connect", self.config.redis.connect(limit)).await
    }

    /// Publishes an event of this instance (sealed with the secret, if any).
    pub async fn publish(
        &self,
        conn: &mut Connection,
        kind: EventKind,
    ) -> Result<(), SessionError> {
        let event = Event::now(
            self.keys.cluster(),
            self.identity.name.clone(),
            self.identity.instance,
            kind,
        );
        let payload = event.encode(self.config.secret.as_ref());
        let publish = self.config.redis.publish(&self.keys.events(), &payload);
        let _: i64 = publish.query_async(conn).await?;
        Ok(())
    }

    /// Records whether `half` is connected; the gauge says 1 only while both are.
    pub fn set_connected(&self, half: Half, up: bool) {
        let flag = match half {
            Half::Liveness => &self.liveness_up,
            Half::Commands => &self.commands_up,
        };
        flag.store(up, Ordering::Relaxed);
        let both =
            self.liveness_up.load(Ordering::Relaxed) && self.commands_up.load(Ordering::Relaxed);
        self.metrics.redis_connected(both);
    }
}
