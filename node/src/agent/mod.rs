//! The Redis agent: a node's presence in its cluster.
//!
//! It registers the node (a record with a TTL, refreshed by heartbeats, plus an index entry),
//! listens for commands on the node's channel, reconciles the desired-state key on every
//! (re)connect (pub/sub is at-most-once: a command published while the node was cut off is still
//! obeyed when it comes back), publishes events (state changes, and connection counts while
//! draining so the coordinator reacts in milliseconds), and deregisters on a clean exit.
//!
//! Redis is never on the serving path: the agent runs beside the node, and when Redis goes away
//! it only retries (jittered exponential backoff, via backon) while the node keeps serving. A
//! session is one pair of connections (commands + pub/sub); any error ends the session and the
//! supervisor starts a new one, which re-registers and reconciles.
//!
//! Layout: `gate` (which commands to obey), `record` (atomic record writes), `session` (one
//! connected session).

mod gate;
mod record;
mod session;

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

/// What the agent needs to know.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub redis_url: String,
    pub cluster: String,
    pub name: NodeName,
    /// The URL clients should use for this node.
    pub advertise_url: String,
    /// The node software's version, shown by `ebb status`.
    pub version: String,
    /// Most connections this node should hold, for the coordinator's capacity check.
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
    pub fn new(redis_url: String, cluster: String, name: NodeName, advertise_url: String) -> Self {
        AgentConfig {
            redis_url,
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
    #[error("invalid Redis URL: {0}")]
    RedisUrl(#[source] redis::RedisError),
    #[error("invalid cluster or node name: {0}")]
    Name(#[from] ebb_proto::NameError),
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    instance: Uuid,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Agent {
    /// Starts the agent for the node behind `control`. Returns at once; connecting happens in the
    /// background.
    pub fn spawn(
        config: AgentConfig,
        control: Control,
        metrics: Arc<Metrics>,
    ) -> Result<Agent, AgentError> {
        let client = client(&config.redis_url).map_err(AgentError::RedisUrl)?;
        let keys = Keys::new(&config.cluster)?;
        let instance = Uuid::new_v4();
        let stop = CancellationToken::new();
        let state = session::State::new(config, keys, instance, control, metrics, stop.clone());
        let task = tokio::spawn(supervise(client, state));
        Ok(Agent {
            instance,
            stop,
            task,
        })
    }

    /// This process's instance id.
    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// Deregisters (if connected) and stops, waiting at most `limit`.
    pub async fn shutdown(self, limit: Duration) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            tracing::warn!("Redis agent did not finish deregistering in time");
            task.abort();
        }
    }
}

/// A client for `url` that sends no `CLIENT SETINFO` on connect: that command does not exist
/// before Redis 7.2, so a node's ACL rules (`ebb acl`) cannot name it, and refused it would leave
/// a denial in the ACL LOG for every connection.
fn client(url: &str) -> redis::RedisResult<redis::Client> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)?;
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    redis::Client::open(info.set_redis_settings(settings))
}

/// Runs sessions until stopped, backing off between failed ones.
async fn supervise(client: redis::Client, mut state: session::State) {
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(RECONNECT_MIN)
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times();
    let mut delays = backoff.build();
    loop {
        let result = session::run(&client, &mut state).await;
        state.metrics.redis_connected(false);
        match result {
            Ok(()) => return,
            Err(error) => {
                if state.was_connected() {
                    delays = backoff.build();
                }
                let delay = delays.next().unwrap_or(RECONNECT_MAX);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "Redis session ended; the node keeps serving");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = state.stop.cancelled() => return,
                }
            }
        }
    }
}
