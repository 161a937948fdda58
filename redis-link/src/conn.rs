//! [`Conn`]: the request/response connection every ebb process uses, made through a [`Link`].
//!
//! Like redis-rs's `ConnectionManager` it is cheap to clone, multiplexed, bounded by timeouts,
//! and returns a failed request's error instead of retrying it (the callers decide: the rollout
//! engine rides through errors for `--redis-grace`, the node agent starts a new session). Unlike
//! it, the connection that replaces a broken one is made *through the link*: behind Sentinel
//! that is the master the sentinels name now, so a failover is followed. A connection is
//! dropped after an I/O error, a timeout, or `READONLY` (the server it reached was demoted), and
//! when the sentinels announce a new master ([`Link::generation`] moved). On a Cluster the
//! connection is redis-rs's cluster connection, which follows redirections and failovers
//! itself; one that fails at the connection level is replaced all the same.
//!
//! Written here rather than taken from deadpool-redis: the traffic is one multiplexed connection
//! per process (a pool would add connections, not throughput), and deadpool's Sentinel pool,
//! like redis-rs's, resolves only when it connects.

use crate::connection::Connection;
use crate::link::Link;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::Arc;
use std::time::Duration;

/// A multiplexed connection that reconnects through its [`Link`] after a connection-level error.
#[derive(Clone)]
pub struct Conn {
    shared: Arc<Shared>,
    db: i64,
}

struct Shared {
    link: Link,
    timeout: Duration,
    /// The live connection and the link's switch count when it was made.
    current: tokio::sync::Mutex<Option<(Connection, u64)>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("link", &self.shared.link)
            .finish()
    }
}

impl Conn {
    /// Connects now (so an unreachable Redis is an error at start); connects, and every request,
    /// bounded by `timeout`.
    pub async fn new(link: Link, timeout: Duration) -> RedisResult<Conn> {
        let db = link.target().db().into();
        let conn = Conn {
            shared: Arc::new(Shared {
                link,
                timeout,
                current: tokio::sync::Mutex::new(None),
            }),
            db,
        };
        conn.connection().await?;
        Ok(conn)
    }

    pub fn link(&self) -> &Link {
        &self.shared.link
    }

    /// The live connection, or a new one made through the link (also when the sentinels have
    /// switched the master since the live one was made).
    async fn connection(&self) -> RedisResult<Connection> {
        let mut current = self.shared.current.lock().await;
        let generation = self.shared.link.generation();
        if let Some((conn, made)) = &*current
            && *made == generation
        {
            return Ok(conn.clone());
        }
        let limit = self.shared.timeout;
        let conn = tokio::time::timeout(limit, self.shared.link.connect(limit))
            .await
            .map_err(|_| timed_out("connecting"))??;
        *current = Some((conn.clone(), generation));
        Ok(conn)
    }

    /// After `error`, forgets the connection if the error says it is no good any more.
    async fn after(&self, error: &RedisError) {
        if breaks_connection(error) {
            *self.shared.current.lock().await = None;
        }
    }
}

/// Whether an error means the connection (or the server it reached) is not to be used again.
pub fn breaks_connection(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        )
}

fn timed_out(what: &str) -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "Redis timed out", what.to_owned()))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let result = conn.req_packed_command(cmd).await;
            if let Err(error) = &result {
                self.after(error).await;
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(error) = &result {
                self.after(error).await;
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}
