//! The Redis agent: a node's presence in its cluster.
//!
//! It registers the node (a record with a TTL, refreshed by heartbeats, plus an index entry),
//! listens for commands on the node's channel, reconciles the desired-state key on every
//! (re)subscription (pub/sub is at-most-once: a command published while the node was cut off is
//! still obeyed when it comes back), publishes events (state changes, and connection counts while
//! draining so the coordinator reacts in milliseconds), and deregisters on a clean exit.
//!
//! Redis is never on the serving path: the agent runs beside the node, and when Redis goes away
//! it only retries (jittered exponential backoff, via backon) while the node keeps serving.
//!
//! Anyone who can PUBLISH can flood the command channel, so the agent is two independent halves,
//! each its own task with its own connections and its own retry loop:
//! - liveness (`liveness`): registration, heartbeats, state and count events, deregistration, on
//!   a connection nothing else uses, so no amount of command traffic delays a heartbeat;
//! - commands (`commands`): the pub/sub subscription (`inbox`: a reader that only forwards into
//!   a bounded queue, dropping and counting what does not fit), the worker that judges each
//!   payload (`gate`), claims signed commands' nonces in Redis (`nonce`), obeys, and reports
//!   refusals in aggregate (`refusals`); when payloads were dropped it re-reads the desired
//!   state, where the coordinator always writes its commands too.
//!
//! When either half loses Redis, only that half reconnects: a subscriber disconnected by Redis's
//! `client-output-buffer-limit pubsub` resubscribes and reconciles while heartbeats go on.
//!
//! Layout: `context` (what both halves share), `liveness`, `record` (atomic record writes),
//! `commands`, `inbox`, `gate`, `nonce`, `refusals`.

mod commands;
mod context;
mod gate;
mod inbox;
mod liveness;
mod nonce;
mod record;
mod refusals;

use crate::control::Control;
use crate::metrics::Metrics;
use backon::BackoffBuilder;
use ebb_proto::sign::Secret;
use ebb_proto::{Keys, NodeName};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Timeout of every Redis connect and command, so a paused or partitioned Redis is noticed.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// While draining, connection counts are published at most this often (and at once on zero).
pub const DEFAULT_COUNT_THROTTLE: Duration = Duration::from_millis(100);
/// First reconnect delay after Redis is lost; doubles (with jitter) up to the maximum.
pub const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Command-channel payloads waiting for the command worker; beyond it they are dropped (and
/// counted), and the worker re-reads the desired state instead. At most
/// [`ebb_proto::command::MAX_COMMAND_BYTES`] each: larger ones are refused before they queue.
pub const COMMAND_QUEUE: usize = 256;
/// Refusals are logged and published in aggregate, at most once per this interval.
pub const REFUSAL_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// After payloads were dropped, the desired state is re-read at most once per this interval.
pub const DESIRED_REREAD_INTERVAL: Duration = Duration::from_secs(1);

/// What the agent needs to know.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where Redis is (`--redis`, parsed once at the edge), and where connections come from.
    pub redis: ebb_redis::Link,
    pub cluster: String,
    pub name: NodeName,
    /// The URL clients should use for this node.
    pub advertise_url: String,
    /// The node software's version, shown by `ebb status`.
    pub version: String,
    /// Most connections this node holds, for the coordinator's capacity check: the capacity the
    /// node enforces ([`crate::Running::limits`]), so both use the same number.
    pub capacity: Option<u64>,
    /// With a secret, only signed commands are obeyed, and the record and events are signed.
    pub secret: Option<Secret>,
    pub heartbeat: Duration,
    pub ttl: Duration,
    pub redis_timeout: Duration,
    pub count_throttle: Duration,
}

impl AgentConfig {
    /// A config with the default timings.
    pub fn new(
        redis: ebb_redis::Link,
        cluster: String,
        name: NodeName,
        advertise_url: String,
    ) -> Self {
        AgentConfig {
            redis,
            cluster,
            name,
            advertise_url,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capacity: None,
            secret: None,
            heartbeat: ebb_proto::keys::HEARTBEAT_INTERVAL,
            ttl: ebb_proto::keys::NODE_TTL,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            count_throttle: DEFAULT_COUNT_THROTTLE,
        }
    }
}

/// A configuration the agent cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid cluster or node name: {0}")]
    Name(#[from] ebb_proto::NameError),
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    instance: Uuid,
    stop: CancellationToken,
    /// Ends after deregistering (or when stopped while disconnected).
    liveness: JoinHandle<()>,
    /// Ends when stopped.
    commands: JoinHandle<()>,
}

impl Agent {
    /// Starts the agent for the node behind `control`. Returns at once; connecting happens in the
    /// background.
    pub fn spawn(
        config: AgentConfig,
        control: Control,
        metrics: Arc<Metrics>,
    ) -> Result<Agent, AgentError> {
        let link = config.redis.clone();
        let keys = Keys::new(&config.cluster)?;
        let instance = Uuid::new_v4();
        let stop = CancellationToken::new();
        let context = Arc::new(context::Context::new(
            config,
            keys,
            instance,
            control,
            metrics,
            stop.clone(),
        ));
        let liveness = tokio::spawn(liveness::supervise(link.clone(), context.clone()));
        let commands = tokio::spawn(commands::supervise(link, context));
        Ok(Agent {
            instance,
            stop,
            liveness,
            commands,
        })
    }

    /// This process's instance id.
    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// Deregisters (if connected) and stops, waiting at most `limit`.
    pub async fn shutdown(self, limit: Duration) {
        self.stop.cancel();
        let (mut liveness, mut commands) = (self.liveness, self.commands);
        let both = async {
            let _ = (&mut liveness).await;
            let _ = (&mut commands).await;
        };
        if tokio::time::timeout(limit, both).await.is_err() {
            tracing::warn!("Redis agent did not finish deregistering in time");
            liveness.abort();
            commands.abort();
        }
    }
}

/// The delays between a half's failed sessions: jittered exponential backoff, started over once
/// a session got as far as being connected.
#[derive(Debug)]
struct Retry {
    builder: backon::ExponentialBuilder,
    delays: backon::ExponentialBackoff,
}

impl Retry {
    fn new() -> Self {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(RECONNECT_MIN)
            .with_max_delay(RECONNECT_MAX)
            .with_jitter()
            .without_max_times();
        Retry {
            delays: builder.build(),
            builder,
        }
    }

    /// After a session of `half` ended with `error`: waits the next delay (from the start again
    /// when the session had connected). `false` when stopped meanwhile.
    async fn wait(
        &mut self,
        half: &'static str,
        error: &context::SessionError,
        had_connected: bool,
        stop: &CancellationToken,
    ) -> bool {
        if had_connected {
            self.delays = self.builder.build();
        }
        let delay = self.delays.next().unwrap_or(RECONNECT_MAX);
        tracing::warn!(half, %error, retry_in_ms = delay.as_millis() as u64, "Redis session ended; the node keeps serving");
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = stop.cancelled() => false,
        }
    }
}
