//! One rollout per cluster: a lock with a token and an expiry, renewed while the rollout runs.
//!
//! The value names its holder (host, pid, start time) so a refused coordinator can say who holds
//! it. Renewal and release are compare-and-set scripts: a coordinator that lost its lock (it
//! stalled past the expiry and another took over) can neither extend nor delete the new holder's.
//! Writes of the rollout state are fenced the same way ([`Lock::save`]): a coordinator that lost
//! the lock cannot overwrite the state its successor resumed from.

use ebb_redis::Conn;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use std::time::Duration;

static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#,
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// KEYS: lock, state. ARGV: holder value, state JSON. 1 when written, 0 when the lock is not
/// (or no longer) the caller's.
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS: lock, state. ARGV: holder value. 1 when removed.
static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[2])
end
return 0
"#,
    )
});

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub token: String,
    pub host: String,
    pub pid: u32,
    pub started_at_ms: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = ebb_proto::time::now_ms().saturating_sub(self.started_at_ms) / 1000;
        write!(f, "{} (pid {}), running for {}s", self.host, self.pid, age)
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another rollout holds the lock: {holder}; if that coordinator died, the lock expires within {ttl:?} (then use --resume)"
    )]
    Held { holder: String, ttl: Duration },
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A held lock.
#[derive(Debug, Clone)]
pub struct Lock {
    key: String,
    value: String,
    ttl: Duration,
}

impl Lock {
    /// Takes the lock at `key`, or says who holds it.
    pub async fn acquire(conn: &mut Conn, key: String, ttl: Duration) -> Result<Lock, LockError> {
        let holder = Holder {
            token: uuid::Uuid::new_v4().simple().to_string(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            started_at_ms: ebb_proto::time::now_ms(),
        };
        let value = serde_json::to_string(&holder).expect("a holder serializes");
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64));
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .arg(options)
            .query_async(conn)
            .await?;
        if taken.is_some() {
            return Ok(Lock { key, value, ttl });
        }
        let current: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
        let holder = current
            .as_deref()
            .and_then(|v| serde_json::from_str::<Holder>(v).ok())
            .map(|h| h.to_string())
            .unwrap_or_else(|| current.unwrap_or_else(|| "unknown (just released)".to_owned()));
        Err(LockError::Held { holder, ttl })
    }

    /// Takes the lock, waiting up to `limit` for a previous holder's lock to expire (a
    /// coordinator that crashed cannot release it).
    pub async fn acquire_waiting(
        conn: &mut Conn,
        key: String,
        ttl: Duration,
        limit: Duration,
    ) -> Result<Lock, LockError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match Lock::acquire(conn, key.clone(), ttl).await {
                Err(LockError::Held { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                result => return result,
            }
        }
    }

    /// How long the lock lives without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often to renew.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Extends the expiry; `false` when the lock is no longer ours.
    pub async fn renew(&self, conn: &mut Conn) -> Result<bool, redis::RedisError> {
        let renewed: i64 = RENEW
            .key(&self.key)
            .arg(&self.value)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Writes `json` at `state_key` if the lock is still ours; `false` (nothing written) if not.
    pub async fn save(
        &self,
        conn: &mut Conn,
        state_key: &str,
        json: &str,
    ) -> Result<bool, redis::RedisError> {
        let saved: i64 = SAVE
            .key(&self.key)
            .key(state_key)
            .arg(&self.value)
            .arg(json)
            .invoke_async(conn)
            .await?;
        Ok(saved == 1)
    }

    /// Deletes `state_key` if the lock is still ours.
    pub async fn clear(&self, conn: &mut Conn, state_key: &str) -> Result<(), redis::RedisError> {
        let _: i64 = CLEAR
            .key(&self.key)
            .key(state_key)
            .arg(&self.value)
            .invoke_async(conn)
            .await?;
        Ok(())
    }

    /// A lock held by `holder` (for engines run against an in-memory cluster).
    pub fn held(key: String, value: String, ttl: Duration) -> Lock {
        Lock { key, value, ttl }
    }

    /// The lock's key and its holder's value.
    pub fn parts(&self) -> (&str, &str) {
        (&self.key, &self.value)
    }

    /// Releases the lock if it is still ours.
    pub async fn release(&self, conn: &mut Conn) -> Result<(), redis::RedisError> {
        let _: i64 = RELEASE
            .key(&self.key)
            .arg(&self.value)
            .invoke_async(conn)
            .await?;
        Ok(())
    }
}
