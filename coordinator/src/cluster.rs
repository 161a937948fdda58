//! The coordinator's view of Redis: listing node records, sending commands, following events,
//! and the rollout's persisted state. Every key comes from [`ebb_proto::Keys`].
//!
//! Nothing read here is trusted: index entries must be node names, records are parsed (bounded
//! numbers, printable text, the node's signature when a secret is set) and must be listed under
//! their own name, or they are skipped with a warning. Events are decoded (size, seal, cluster)
//! in the subscription task and handed on through a bounded queue; what is refused or does not
//! fit is counted in [`Intake`] and logged in aggregate, never one line per payload.
//!
//! Commands go through an [`ebb_redis::Conn`] (it reconnects through the target's link, so behind
//! Sentinel to the master of the moment, and every request has a timeout, so a paused Redis is
//! an error rather than a hang). Events come from a dedicated pub/sub connection supervised by
//! [`Cluster::follow_events`], which resubscribes (through the link: after a failover, on the
//! new master) after any loss and says so, so the caller can re-read the records it may have
//! missed changes to.

use crate::lock::Lock;
use crate::rollout::io::{Io, Snapshot};
use ebb_proto::command::Command;
use ebb_proto::control::Control;
use ebb_proto::sign::Secret;
use ebb_proto::{Event, EventRefusal, Keys, NodeName, NodeRecord};
use ebb_redis::{Conn, Link, Subscription};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events waiting for the engine; beyond this they are dropped and counted.
pub const EVENT_QUEUE: usize = 1024;
/// How often refused and dropped events are logged (in aggregate).
const INTAKE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Timeout of every Redis request made by the coordinator.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a signed command stays valid.
pub const COMMAND_TTL: Duration = Duration::from_secs(300);

/// Removes a name from the index only if its heartbeat is still older than the threshold: a node
/// may re-register between the read that found it stale and this, and its registration (record
/// and index entry, one script) moves its score. Only the index is declared, so the rule that
/// allows it needs no write access to records (deploy/redis ACLs). KEYS: index. ARGV: name,
/// threshold (ms).
static PRUNE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"#,
    )
});

/// Deletes a desired-state key only if it still holds one of this rollout's commands (its id
/// starts with the rollout's prefix for the node), so a newer command from someone else stays.
/// KEYS: desired. ARGV: `"id":"<prefix>` as it appears in a plain or a sealed payload.
static CLEAR_DESIRED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
if v and (string.find(v, ARGV[1], 1, true) or string.find(v, ARGV[2], 1, true)) then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// What the event intake refused or dropped, by reason; shared by the subscription task (which
/// counts) and the engine (which reports).
#[derive(Debug, Default)]
pub struct Intake {
    accepted: AtomicU64,
    refused: [AtomicU64; 5],
    /// Decoded events that did not fit in the queue.
    dropped: AtomicU64,
    /// Set when an event was dropped, until the engine takes it (it must then re-read).
    overflowed: AtomicBool,
}

const REFUSALS: [EventRefusal; 5] = [
    EventRefusal::TooLarge,
    EventRefusal::Malformed,
    EventRefusal::Unsigned,
    EventRefusal::BadSignature,
    EventRefusal::WrongCluster,
];

impl Intake {
    fn refuse(&self, why: EventRefusal) {
        let at = REFUSALS.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[at].fetch_add(1, Ordering::Relaxed);
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.overflowed.store(true, Ordering::Relaxed);
    }

    /// Whether events were dropped since the last call.
    pub fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::Relaxed)
    }

    /// Counts so far: `accepted`, `dropped` and one per refusal label, zeros left out.
    pub fn counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut counts = std::collections::BTreeMap::new();
        let mut put = |label: &'static str, n: u64| {
            if n > 0 {
                counts.insert(label, n);
            }
        };
        put("accepted", self.accepted.load(Ordering::Relaxed));
        put("dropped", self.dropped.load(Ordering::Relaxed));
        for (refusal, n) in REFUSALS.iter().zip(&self.refused) {
            put(refusal.label(), n.load(Ordering::Relaxed));
        }
        counts
    }

    /// Everything but what was accepted.
    pub fn refused_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
            + self
                .refused
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .sum::<u64>()
    }
}

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Client(#[from] ebb_redis::ClientError),
    #[error("cannot reach Redis at {target}: {source}")]
    Unreachable {
        /// The redacted target.
        target: String,
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
    link: Link,
    conn: Conn,
    keys: Keys,
    /// With a secret, records and events must carry the nodes' signatures.
    secret: Option<Secret>,
    intake: Arc<Intake>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.link.target().to_string())
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
    /// Connects to `target` for cluster `cluster`; with `secret`, commands are signed and only
    /// records and events the nodes signed are read.
    pub async fn connect(
        target: &ebb_redis::RedisTarget,
        cluster: &str,
        secret: Option<Secret>,
    ) -> Result<Cluster, ClusterError> {
        let keys = Keys::new(cluster)?;
        let link = Link::new(target)?;
        let conn = Conn::new(link.clone(), REDIS_TIMEOUT)
            .await
            .map_err(|source| ClusterError::Unreachable {
                target: target.to_string(),
                source,
            })?;
        Ok(Cluster {
            link,
            conn,
            keys,
            secret,
            intake: Arc::default(),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A subscription to `channel` (sharded on a Cluster), on its own connection to the same
    /// Redis.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, ClusterError> {
        Ok(self.link.subscribe(channel, REDIS_TIMEOUT).await?)
    }

    /// Publishes `payload` on `channel` (sharded on a Cluster); how many subscribers got it.
    pub async fn publish(&mut self, channel: &str, payload: &str) -> Result<usize, ClusterError> {
        let publish = self.link.publish(channel, payload);
        Ok(publish.query_async(&mut self.conn).await?)
    }

    /// The command connection (for the rollout lock).
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Parses one record hash read under `name`; `None` (with a warning) when it is bad.
    fn parse(&self, name: &NodeName, hash: &HashMap<String, String>) -> Option<NodeRecord> {
        match NodeRecord::from_fields(hash, self.keys.cluster(), self.secret.as_ref()) {
            Ok(record) if record.name == *name => Some(record),
            Ok(record) => {
                tracing::warn!(%name, claimed = %record.name, "skipping a node record listed under another name");
                None
            }
            Err(error) => {
                tracing::warn!(%name, %error, "skipping an unreadable node record");
                None
            }
        }
    }

    /// Every registered node, sorted by name. Index entries that are not node names are skipped;
    /// those whose record expired long ago are pruned.
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
            .saturating_sub(2 * ebb_proto::keys::NODE_TTL.as_millis() as u64);
        let mut records = Vec::with_capacity(names.len());
        let mut stale = Vec::new();
        for ((name, score), hash) in names.into_iter().zip(hashes) {
            if hash.is_empty() {
                if score < stale_before as f64 {
                    stale.push(name);
                }
                continue;
            }
            records.extend(self.parse(&name, &hash));
        }
        for name in stale {
            let pruned: Result<i64, _> = PRUNE
                .key(self.keys.nodes())
                .arg(name.as_str())
                .arg(stale_before)
                .invoke_async(&mut self.conn)
                .await;
            match pruned {
                Ok(_) => {}
                // A viewer or a trigger may read the index but not prune it (deploy/redis ACLs);
                // the coordinator will.
                Err(error)
                    if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) =>
                {
                    tracing::debug!(%error, "not allowed to prune the node index; leaving it to the coordinator");
                    break;
                }
                Err(error) => return Err(error.into()),
            }
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// Sends a command: a drain or resume is written as the node's desired state (so a node that
    /// is disconnected now obeys when it reconnects), then published; a shed is only published
    /// (it is for now, not for whenever the node comes back). Returns how many subscribers got it.
    pub async fn send(&mut self, command: &Command) -> Result<usize, ClusterError> {
        let secret = self.secret.as_ref();
        let payload = command.encode(secret, COMMAND_TTL.as_millis() as u64);
        let channel = self.keys.commands(&command.target);
        if matches!(command.action, ebb_proto::command::Action::Shed(_)) {
            return self.publish(&channel, &payload).await;
        }
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
            .add_command(self.link.publish(&channel, &payload))
            .query_async(&mut self.conn)
            .await?;
        Ok(receivers)
    }

    /// The persisted rollout state, if any.
    pub async fn rollout_state(&mut self) -> Result<Option<String>, ClusterError> {
        Ok(self.conn.get(self.keys.rollout_state()).await?)
    }

    /// Follows the cluster's events until `stop`, reconnecting after any loss. Each
    /// (re)subscription is announced with [`Followed::Subscribed`].
    pub fn follow_events(&self, stop: CancellationToken) -> mpsc::Receiver<Followed> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let intake = Intake::scope(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            while !stop.is_cancelled() {
                let (subscribed, error) = tokio::select! {
                    () = stop.cancelled() => return,
                    ended = follow_once(&intake, &tx) => ended,
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

impl Io for Cluster {
    fn cluster(&self) -> &str {
        self.keys.cluster()
    }

    fn now_ms(&self) -> u64 {
        ebb_proto::time::now_ms()
    }

    async fn nodes(&mut self) -> Result<Vec<NodeRecord>, ClusterError> {
        Cluster::nodes(self).await
    }

    async fn read(
        &mut self,
        names: &[NodeName],
        instances: &[(NodeName, Uuid)],
    ) -> Result<Snapshot, ClusterError> {
        if names.is_empty() && instances.is_empty() {
            return Ok(Snapshot::default());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(self.keys.node(name));
        }
        for (name, instance) in instances {
            pipe.hgetall(self.keys.instance(name, *instance));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut self.conn).await?;
        let (records, copies) = hashes.split_at(names.len().min(hashes.len()));
        let read = |name: &NodeName, hash: &HashMap<String, String>| {
            (!hash.is_empty()).then(|| self.parse(name, hash)).flatten()
        };
        Ok(Snapshot {
            records: names
                .iter()
                .zip(records)
                .map(|(name, hash)| (name.clone(), read(name, hash)))
                .collect(),
            instances: instances
                .iter()
                .zip(copies)
                .map(|((name, instance), hash)| {
                    (
                        *instance,
                        read(name, hash).filter(|r| r.instance == *instance),
                    )
                })
                .collect(),
        })
    }

    async fn send(&mut self, command: &Command) -> Result<usize, ClusterError> {
        Cluster::send(self, command).await
    }

    async fn clear_desired(&mut self, name: &NodeName, prefix: &str) -> Result<(), ClusterError> {
        let _: i64 = CLEAR_DESIRED
            .key(self.keys.desired(name))
            .arg(format!(r#""id":"{prefix}"#))
            .arg(format!(r#"\"id\":\"{prefix}"#))
            .invoke_async(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn save_state(&mut self, lock: &Lock, json: &str) -> Result<bool, ClusterError> {
        let key = self.keys.rollout_state();
        Ok(lock.save(&mut self.conn, &key, json).await?)
    }

    async fn control(&mut self) -> Result<Option<Control>, ClusterError> {
        let value: Option<Vec<u8>> = self.conn.get(self.keys.rollout_control()).await?;
        let Some(value) = value else { return Ok(None) };
        match Control::decode(&value, self.secret.as_ref()) {
            Ok(control) => Ok(Some(control)),
            Err(error) => {
                tracing::warn!(%error, "ignoring the rollout's control value");
                Ok(None)
            }
        }
    }

    async fn set_control(&mut self, lock: &Lock, control: &Control) -> Result<bool, ClusterError> {
        let key = self.keys.rollout_control();
        let value = control.encode(self.secret.as_ref());
        Ok(lock.save(&mut self.conn, &key, &value).await?)
    }

    async fn clear_state(&mut self, lock: &Lock) -> Result<(), ClusterError> {
        for key in [self.keys.rollout_state(), self.keys.rollout_control()] {
            lock.clear(&mut self.conn, &key).await?;
        }
        Ok(())
    }

    async fn renew(&mut self, lock: &Lock) -> Result<bool, ClusterError> {
        Ok(lock.renew(&mut self.conn).await?)
    }

    async fn release(&mut self, lock: &Lock) -> Result<(), ClusterError> {
        Ok(lock.release(&mut self.conn).await?)
    }

    fn follow_events(&self, stop: CancellationToken) -> mpsc::Receiver<Followed> {
        Cluster::follow_events(self, stop)
    }

    fn intake(&self) -> Arc<Intake> {
        self.intake.clone()
    }

    fn exec(
        &self,
        command: String,
        limit: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        crate::exec::run(command, limit)
    }
}

/// What one subscription needs: where to subscribe, how to read, where to count.
struct IntakeScope {
    link: Link,
    channel: String,
    cluster: String,
    secret: Option<Secret>,
    intake: Arc<Intake>,
}

impl Intake {
    fn scope(cluster: &Cluster) -> IntakeScope {
        IntakeScope {
            link: cluster.link.clone(),
            channel: cluster.keys.events(),
            cluster: cluster.keys.cluster().to_owned(),
            secret: cluster.secret.clone(),
            intake: cluster.intake.clone(),
        }
    }
}

/// One subscription; returns whether it got as far as subscribing, and why it ended.
async fn follow_once(scope: &IntakeScope, tx: &mpsc::Sender<Followed>) -> (bool, String) {
    let mut subscribed = false;
    let why = subscription(scope, tx, &mut subscribed).await;
    (subscribed, why)
}

/// Subscribes and forwards events until something ends it; returns why.
async fn subscription(
    scope: &IntakeScope,
    tx: &mpsc::Sender<Followed>,
    subscribed: &mut bool,
) -> String {
    // Taken before connecting, so a failover announced meanwhile ends this subscription too.
    let mut switches = scope.link.switches();
    let connect = scope.link.subscribe(&scope.channel, REDIS_TIMEOUT);
    let mut subscription = match tokio::time::timeout(REDIS_TIMEOUT, connect).await {
        Ok(Ok(subscription)) => subscription,
        Ok(Err(error)) => return error.to_string(),
        Err(_) => return "timed out subscribing".to_owned(),
    };
    *subscribed = true;
    if tx.send(Followed::Subscribed).await.is_err() {
        return "stopped".to_owned();
    }
    let mut pinged = subscription.connection();
    let mut ping = tokio::time::interval(Duration::from_secs(2));
    let mut log = tokio::time::interval(INTAKE_LOG_EVERY);
    let mut logged = 0;
    loop {
        tokio::select! {
            message = subscription.next() => match message {
                Ok(payload) => {
                    if !scope.take(&payload, tx) {
                        return "stopped".to_owned();
                    }
                }
                Err(why) => return why.to_owned(),
            },
            // A subscription on a demoted master never errors; subscribe again on the new one.
            Ok(()) = switches.changed() => return "the sentinels switched the master".to_owned(),
            _ = log.tick() => logged = scope.log(logged),
            _ = ping.tick() => {
                // Proves the otherwise silent subscription is alive (a paused Redis is not).
                let ping_cmd = redis::cmd("PING");
                let pong = ping_cmd.query_async::<redis::Value>(&mut pinged);
                match tokio::time::timeout(REDIS_TIMEOUT, pong).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return error.to_string(),
                    Err(_) => return "Redis did not answer a ping".to_owned(),
                }
            }
        }
    }
}

impl IntakeScope {
    /// Decodes one payload and queues the event; refusals and overflow are counted. `false`
    /// once the engine is gone.
    fn take(&self, payload: &[u8], tx: &mpsc::Sender<Followed>) -> bool {
        let event = match Event::decode(payload, self.secret.as_ref(), &self.cluster) {
            Ok(event) => event,
            Err(why) => {
                self.intake.refuse(why);
                return true;
            }
        };
        match tx.try_send(Followed::Event(event)) {
            Ok(()) => {
                self.intake.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.intake.drop_one();
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// One aggregate line when something was refused or dropped since the last; returns the
    /// total so far.
    fn log(&self, logged: u64) -> u64 {
        let total = self.intake.refused_total();
        if total > logged {
            tracing::warn!(
                counts = ?self.intake.counts(),
                "events refused or dropped on the events channel (forged, foreign, malformed, or a flood)"
            );
        }
        total
    }
}
