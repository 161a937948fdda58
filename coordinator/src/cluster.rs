//! The coordinator's view of Redis: listing node records, sending commands, following events,
//! and the rollout's persisted state. Every key comes from [`ebb_proto::Keys`].
//!
//! Commands go through a `ConnectionManager` (it reconnects by itself, and every request has a
//! timeout, so a paused Redis is an error rather than a hang). Events come from a dedicated
//! pub/sub connection supervised by [`Cluster::follow_events`], which resubscribes after any
//! loss and says so, so the caller can re-read the records it may have missed changes to.

use ebb_proto::command::Command;
use ebb_proto::sign::Secret;
use ebb_proto::{Event, Keys, NodeName, NodeRecord};
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Timeout of every Redis request made by the coordinator.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a signed command stays valid.
pub const COMMAND_TTL: Duration = Duration::from_secs(300);

/// Removes a name from the index only if its record is (still) gone: a node may re-register
/// between the read that found it stale and this. KEYS: index, record. ARGV: name.
static PRUNE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"#,
    )
});

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid Redis URL {url:?}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("cannot reach Redis at {url}: {source}")]
    Unreachable {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid cluster name: {0}")]
    Name(#[from] ebb_proto::NameError),
}

/// A connection to one cluster's keys.
#[derive(Clone)]
pub struct Cluster {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    url: String,
    /// With a secret, records and events must carry the nodes' signatures.
    secret: Option<Secret>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.url)
            .field("cluster", &self.keys.cluster())
            .finish()
    }
}

/// Something from the event stream.
#[derive(Debug, Clone)]
pub enum Followed {
    /// A node's event.
    Event(Event),
    /// The subscription is (re)established: anything may have been missed before it.
    Subscribed,
    /// The subscription was lost; retrying.
    Lost(String),
}

impl Cluster {
    /// Connects to `url` for cluster `cluster`.
    pub async fn connect(
        url: &str,
        cluster: &str,
        secret: Option<Secret>,
    ) -> Result<Cluster, ClusterError> {
        let keys = Keys::new(cluster)?;
        let client = redis::Client::open(url).map_err(|source| ClusterError::Url {
            url: url.to_owned(),
            source,
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|source| ClusterError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        Ok(Cluster {
            client,
            conn,
            keys,
            url: url.to_owned(),
            secret,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The command connection (for the rollout lock).
    pub fn conn(&mut self) -> &mut ConnectionManager {
        &mut self.conn
    }

    /// Every registered node, sorted by name. Index entries whose record expired long ago are pruned.
    pub async fn nodes(&mut self) -> Result<Vec<NodeRecord>, ClusterError> {
        let listed: Vec<(String, f64)> = self
            .conn
            .zrange_withscores(self.keys.nodes(), 0, -1)
            .await?;
        let mut names = Vec::with_capacity(listed.len());
        for (name, score) in listed {
            match NodeName::parse(&name) {
                Ok(name) => names.push((name, score)),
                Err(error) => {
                    tracing::warn!(%error, "skipping an index entry that is not a node name")
                }
            }
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (name, _) in &names {
            pipe.hgetall(self.keys.node(name));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut self.conn).await?;
        let stale_before = ebb_proto::time::now_ms()
            .saturating_sub(2 * ebb_proto::keys::NODE_TTL.as_millis() as u64)
            as f64;
        let mut records = Vec::with_capacity(names.len());
        let mut stale = Vec::new();
        for ((name, score), hash) in names.into_iter().zip(hashes) {
            if hash.is_empty() {
                if score < stale_before {
                    stale.push(name);
                }
                continue;
            }
            match NodeRecord::from_fields(&hash, self.keys.cluster(), self.secret.as_ref()) {
                Ok(record) if record.name == name => records.push(record),
                Ok(record) => {
                    tracing::warn!(%name, claimed = %record.name, "skipping a node record listed under another name")
                }
                Err(error) => tracing::warn!(%name, %error, "skipping an unreadable node record"),
            }
        }
        for name in stale {
            let _: i64 = PRUNE
                .key(self.keys.nodes())
                .key(self.keys.node(&name))
                .arg(name.as_str())
                .invoke_async(&mut self.conn)
                .await?;
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// Sends a command: written as the node's desired state (so a node that is disconnected
    /// now obeys when it reconnects), then published. Returns how many subscribers got it.
    pub async fn send(
        &mut self,
        command: &Command,
        secret: Option<&Secret>,
    ) -> Result<usize, ClusterError> {
        let payload = command.encode(secret, COMMAND_TTL.as_millis() as u64);
        // A signed command is valid for COMMAND_TTL only; keeping it longer helps nobody.
        let desired_ttl = match secret {
            Some(_) => COMMAND_TTL,
            None => ebb_proto::keys::DESIRED_TTL,
        }
        .as_millis() as u64;
        let (_, receivers): ((), usize) = redis::pipe()
            .atomic()
            .set_options(
                self.keys.desired(&command.target),
                &payload,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(desired_ttl)),
            )
            .publish(self.keys.commands(&command.target), &payload)
            .query_async(&mut self.conn)
            .await?;
        Ok(receivers)
    }

    /// Forgets a node's desired state (after its replacement is up).
    pub async fn clear_desired(&mut self, name: &NodeName) -> Result<(), ClusterError> {
        let _: i64 = self.conn.del(self.keys.desired(name)).await?;
        Ok(())
    }

    /// The persisted rollout state, if any.
    pub async fn rollout_state(&mut self) -> Result<Option<String>, ClusterError> {
        Ok(self.conn.get(self.keys.rollout_state()).await?)
    }

    /// Persists the rollout state.
    pub async fn save_rollout_state(&mut self, json: &str) -> Result<(), ClusterError> {
        let _: () = self.conn.set(self.keys.rollout_state(), json).await?;
        Ok(())
    }

    /// Removes the rollout state (the rollout completed, or was discarded).
    pub async fn clear_rollout_state(&mut self) -> Result<(), ClusterError> {
        let _: i64 = self.conn.del(self.keys.rollout_state()).await?;
        Ok(())
    }

    /// Follows the cluster's events until `stop`, reconnecting after any loss. Each
    /// (re)subscription is announced with [`Followed::Subscribed`].
    pub fn follow_events(&self, stop: CancellationToken) -> mpsc::Receiver<Followed> {
        let (tx, rx) = mpsc::channel(4096);
        let client = self.client.clone();
        let channel = self.keys.events();
        let scope = (self.keys.cluster().to_owned(), self.secret.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            while !stop.is_cancelled() {
                let (subscribed, error) = tokio::select! {
                    () = stop.cancelled() => return,
                    ended = follow_once(&client, &channel, &scope, &tx) => ended,
                };
                if subscribed {
                    delay = Duration::from_millis(100);
                }
                if tx.send(Followed::Lost(error)).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        rx
    }
}

/// One subscription; returns whether it got as far as subscribing, and why it ended.
async fn follow_once(
    client: &redis::Client,
    channel: &str,
    scope: &(String, Option<Secret>),
    tx: &mpsc::Sender<Followed>,
) -> (bool, String) {
    let mut subscribed = false;
    let why = subscription(client, channel, scope, tx, &mut subscribed).await;
    (subscribed, why)
}

/// Subscribes and forwards events until something ends it; returns why.
async fn subscription(
    client: &redis::Client,
    channel: &str,
    (cluster, secret): &(String, Option<Secret>),
    tx: &mpsc::Sender<Followed>,
    subscribed: &mut bool,
) -> String {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = match tokio::time::timeout(REDIS_TIMEOUT, connect).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(error)) => return error.to_string(),
        Err(_) => return "timed out subscribing".to_owned(),
    };
    *subscribed = true;
    if tx.send(Followed::Subscribed).await.is_err() {
        return "stopped".to_owned();
    }
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(message) => {
                    if let Ok(event) = Event::decode(message.get_payload_bytes(), secret.as_ref(), cluster)
                        && tx.send(Followed::Event(event)).await.is_err()
                    {
                        return "stopped".to_owned();
                    }
                }
                None => return "the pub/sub connection closed".to_owned(),
            },
            _ = ping.tick() => {
                // Proves the otherwise silent subscription is alive (a paused Redis is not).
                match tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return error.to_string(),
                    Err(_) => return "Redis did not answer a ping".to_owned(),
                }
            }
        }
    }
}
