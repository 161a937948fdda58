//! Where connections come from: one [`Link`] per `--redis` target, asked for a client every time
//! a connection is (re)made.
//!
//! For a single server the answer never changes. Behind Sentinel it is the master the sentinels
//! name *now*, checked with `ROLE` before it is handed out: redis-rs's Sentinel client resolves
//! the master only when a connection is made and never moves a live one (redis-rs #1438), so
//! following a failover means making connections again through the link. Two things say when:
//! - an error on a connection (dead, timed out, `READONLY`): every ebb session then starts over
//!   ([`crate::Conn`] for request/response traffic, the node agent's and the coordinator's
//!   subscriptions for pub/sub);
//! - the sentinels' `+switch-master` announcement, which [`Link::switches`] turns into a count:
//!   a subscription on a demoted master never errors (it keeps listening on a replica that no
//!   one publishes to), so subscribers end their session when the count moves.
//!
//! A Redis Cluster is reached through redis-rs's cluster client, made from the seed nodes at
//! every connect: it finds the shards itself, routes each command by its key's slot and follows
//! `MOVED`, `ASK` and failovers. ebb's keys and channels of one ebb cluster share a hash tag, so
//! all of them live on one shard; its channels are sharded channels there
//! ([`Link::publish`], [`crate::subscription`]). A subscription on a node that lost the slot is
//! ended by the server (`SUNSUBSCRIBE`), so no switch count is needed.

use crate::client::{ClientError, address, sentinel_client, tls_certificates, without_setinfo};
use crate::connection::Connection;
use crate::subscription::Subscription;
use crate::target::{RedisTarget, Topology};
use futures_util::StreamExt;
use redis::aio::AsyncPushSender;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, ProtocolVersion};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// How long one resolution through the sentinels may take (every sentinel asked in turn, then
/// the master's `ROLE`).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The sentinels' channel announcing a new master.
pub const SWITCH_MASTER: &str = "+switch-master";
/// TCP keepalive on every subscription connection: idle this long, then probes every
/// [`SUBSCRIPTION_PROBE_EVERY`], [`SUBSCRIPTION_PROBES`] of them: a subscription whose peer is
/// gone without a word (a host or a network lost) fails within about 11 s, at no cost to Redis.
pub const SUBSCRIPTION_KEEPALIVE: Duration = Duration::from_secs(5);
pub const SUBSCRIPTION_PROBE_EVERY: Duration = Duration::from_secs(2);
pub const SUBSCRIPTION_PROBES: u32 = 3;
/// Pause before the `+switch-master` watcher tries the next sentinel.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// A source of clients for one target. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    target: Arc<RedisTarget>,
    source: Arc<Source>,
    /// How many times the master moved; never moves for a single server.
    switches: Arc<watch::Sender<u64>>,
}

enum Source {
    Fixed(redis::Client),
    Sentinel(Sentinel),
    Cluster(Seeds),
}

/// What a cluster client is made from, at every connect (a push sender is set per client).
struct Seeds {
    nodes: Vec<redis::ConnectionInfo>,
    username: Option<String>,
    password: Option<String>,
    certificates: Option<redis::TlsCertificates>,
}

struct Sentinel {
    /// Behind a mutex because redis-rs's Sentinel client needs `&mut` to resolve.
    client: tokio::sync::Mutex<SentinelClient>,
    /// One client per sentinel, for `+switch-master`.
    sentinels: Vec<redis::Client>,
    master: String,
    /// The `+switch-master` watcher, started with the first connection and stopped with the
    /// last clone of the link.
    watcher: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.get() {
            watcher.abort();
        }
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("target", &self.target.to_string())
            .finish()
    }
}

impl Link {
    /// A link for `target`; files it names (the CA) are read now, so a bad one fails at start.
    pub fn new(target: &RedisTarget) -> Result<Link, ClientError> {
        let source = match &target.topology {
            Topology::Single { .. } => Source::Fixed(crate::client::client(target)?),
            Topology::Sentinel { .. } => Source::Sentinel(sentinel(target)?),
            Topology::Cluster { .. } => Source::Cluster(seeds(target)?),
        };
        Ok(Link {
            target: Arc::new(target.clone()),
            source: Arc::new(source),
            switches: Arc::new(watch::channel(0).0),
        })
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Whether channels are sharded (a Cluster): published with `SPUBLISH`, subscribed with
    /// `SSUBSCRIBE`.
    pub fn sharded(&self) -> bool {
        matches!(&*self.source, Source::Cluster(_))
    }

    /// The command that publishes `payload` on `channel`: `SPUBLISH` on a Cluster (a sharded
    /// channel, on the shard of its hash tag), else `PUBLISH`. Both reply with the number of
    /// subscribers reached.
    pub fn publish(&self, channel: &str, payload: &str) -> redis::Cmd {
        let name = if self.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        redis::cmd(name).arg(channel).arg(payload).take()
    }

    /// A request/response connection to the server(s) of the moment; connecting and every
    /// request bounded by `limit`.
    pub async fn connect(&self, limit: Duration) -> redis::RedisResult<Connection> {
        if let Source::Cluster(seeds) = &*self.source {
            let client =
                cluster_client(seeds, limit, None::<tokio::sync::mpsc::UnboundedSender<_>>)?;
            let conn = timed(limit, client.get_async_connection()).await?;
            return Ok(Connection::Cluster(conn));
        }
        let client = self.client().await?;
        let config = config(limit);
        let conn = client.get_multiplexed_async_connection_with_config(&config);
        Ok(Connection::Server(timed(limit, conn).await?))
    }

    /// A RESP3 connection subscribed to `channel` (sharded on a Cluster) whose pushes go to
    /// `sender` (read them with [`crate::pushed`]). Keep the connection: the subscription
    /// lives as long as it does.
    pub async fn subscribe_with(
        &self,
        channel: &str,
        sender: impl AsyncPushSender,
        limit: Duration,
    ) -> redis::RedisResult<Connection> {
        if let Source::Cluster(seeds) = &*self.source {
            let client = cluster_client(seeds, limit, Some(sender))?;
            let mut conn = timed(limit, client.get_async_connection()).await?;
            timed(limit, conn.ssubscribe(channel)).await?;
            return Ok(Connection::Cluster(conn));
        }
        let info = self.client().await?.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info
            .set_redis_settings(resp3)
            .set_tcp_settings(subscription_tcp());
        let client = redis::Client::open(info)?;
        let config = config(limit).set_push_sender(sender);
        let connect = client.get_multiplexed_async_connection_with_config(&config);
        let mut conn = timed(limit, connect).await?;
        timed(limit, conn.subscribe(channel)).await?;
        Ok(Connection::Server(conn))
    }

    /// A subscription to `channel` whose every message is kept until read.
    pub async fn subscribe(
        &self,
        channel: &str,
        limit: Duration,
    ) -> redis::RedisResult<Subscription> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let conn = self.subscribe_with(channel, tx, limit).await?;
        Ok(Subscription::new(conn, rx))
    }

    /// A client for the server to talk to now (a single server or behind Sentinel). Behind
    /// Sentinel: the current master, resolved and checked now (an error while the sentinels
    /// have not yet agreed on a new one).
    async fn client(&self) -> redis::RedisResult<redis::Client> {
        let sentinel = match &*self.source {
            Source::Fixed(client) => return Ok(client.clone()),
            Source::Sentinel(sentinel) => sentinel,
            Source::Cluster(_) => unreachable!("a Cluster is reached through its cluster client"),
        };
        self.watch(sentinel);
        let resolve = async { sentinel.client.lock().await.async_get_client().await };
        let client = tokio::time::timeout(RESOLVE_TIMEOUT, resolve)
            .await
            .map_err(|_| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "resolving the master through the sentinels timed out",
                ))
            })??;
        let info = without_setinfo(client.get_connection_info().clone());
        redis::Client::open(info)
    }

    /// A receiver whose value moves each time the sentinels announce a new master for this
    /// target (`changed()` never fires for a single server). Take it before connecting, so a
    /// switch during the connect is seen.
    pub fn switches(&self) -> watch::Receiver<u64> {
        if let Source::Sentinel(sentinel) = &*self.source {
            self.watch(sentinel);
        }
        self.switches.subscribe()
    }

    /// How many switches have been seen (to tell whether a connection predates one).
    pub fn generation(&self) -> u64 {
        *self.switches.borrow()
    }

    /// Starts the `+switch-master` watcher once, in the runtime of the first caller.
    fn watch(&self, sentinel: &Sentinel) {
        sentinel.watcher.get_or_init(|| {
            tokio::spawn(watch_switches(
                sentinel.sentinels.clone(),
                sentinel.master.clone(),
                self.switches.clone(),
            ))
            .abort_handle()
        });
    }
}

/// Connect and response timeouts of `limit`.
fn config(limit: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit))
}

/// `future`, or an I/O error (so callers treat it as a lost connection) after `limit`.
async fn timed<T>(
    limit: Duration,
    future: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "Redis timed out")))?
}

/// A cluster client from the seeds: connect, response and overall timeouts of `limit` (the
/// overall one bounds the client's own retries and redirections), RESP3 with `push` when given.
fn cluster_client(
    seeds: &Seeds,
    limit: Duration,
    push: Option<impl AsyncPushSender>,
) -> redis::RedisResult<ClusterClient> {
    let mut builder = ClusterClientBuilder::new(seeds.nodes.clone())
        .connection_timeout(limit)
        .response_timeout(limit)
        .overall_response_timeout(Some(limit));
    if let Some(user) = &seeds.username {
        builder = builder.username(user);
    }
    if let Some(password) = &seeds.password {
        builder = builder.password(password);
    }
    if let Some(certificates) = &seeds.certificates {
        builder = builder.certs(certificates.clone());
    }
    if let Some(push) = push {
        builder = builder
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(push)
            .tcp_settings(subscription_tcp());
    }
    builder.build()
}

/// TCP settings of a subscription's connection: keepalive probes ([`SUBSCRIPTION_KEEPALIVE`]).
fn subscription_tcp() -> redis::io::tcp::TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(SUBSCRIPTION_KEEPALIVE)
        .with_interval(SUBSCRIPTION_PROBE_EVERY)
        .with_retries(SUBSCRIPTION_PROBES);
    redis::io::tcp::TcpSettings::default().set_keepalive(keepalive)
}

/// The seeds of a Cluster target, over TLS when it is (its CA read now).
fn seeds(target: &RedisTarget) -> Result<Seeds, ClientError> {
    let Topology::Cluster { seeds } = &target.topology else {
        unreachable!("called for Cluster targets only");
    };
    let nodes = seeds
        .iter()
        .map(|s| redis::IntoConnectionInfo::into_connection_info(address(target, s)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ClientError::Redis {
            target: target.to_string(),
            source,
        })?;
    Ok(Seeds {
        nodes: nodes.into_iter().map(without_setinfo).collect(),
        username: target.credentials.username.clone(),
        password: target.credentials.password().map(str::to_owned),
        certificates: if target.tls {
            Some(tls_certificates(target)?)
        } else {
            None
        },
    })
}

/// Follows `+switch-master` on one sentinel after another (the next after any loss) and counts
/// the announcements for `master` (`<master> <old-ip> <old-port> <new-ip> <new-port>`).
async fn watch_switches(
    sentinels: Vec<redis::Client>,
    master: String,
    switches: Arc<watch::Sender<u64>>,
) {
    for client in sentinels.iter().cycle() {
        let subscribe = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(SWITCH_MASTER).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(RESOLVE_TIMEOUT, subscribe).await {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let payload = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
                if payload.split(' ').next() == Some(master.as_str()) {
                    tracing::warn!(%master, announcement = %payload, "the sentinels switched the master; reconnecting");
                    switches.send_modify(|n| *n += 1);
                }
            }
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

/// The Sentinel client: the sentinels over TLS when the target is, the data nodes with the URL's
/// credentials, database and TLS.
fn sentinel(target: &RedisTarget) -> Result<Sentinel, ClientError> {
    let Topology::Sentinel {
        sentinels,
        master,
        db,
    } = &target.topology
    else {
        unreachable!("called for Sentinel targets only");
    };
    let redis_error = |source| ClientError::Redis {
        target: target.to_string(),
        source,
    };
    let addrs = sentinels.iter().map(|s| address(target, s));
    let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
        .map_err(redis_error)?
        .set_client_to_redis_db(i64::from(*db));
    if let Some(user) = &target.credentials.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = target.credentials.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if target.tls {
        let certificates = tls_certificates(target)?;
        builder = builder
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
            .set_client_to_redis_certificates(certificates.clone())
            .set_client_to_sentinel_certificates(certificates);
    }
    Ok(Sentinel {
        client: tokio::sync::Mutex::new(builder.build().map_err(redis_error)?),
        sentinels: sentinels
            .iter()
            .map(|s| sentinel_client(target, s))
            .collect::<Result<_, _>>()?,
        master: master.clone(),
        watcher: OnceLock::new(),
    })
}
