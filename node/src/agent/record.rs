//! Writing and removing this node's record, atomically, without clobbering a newer instance.
//!
//! Two processes can briefly share a name (a replacement started before its predecessor exited,
//! a partition that healed). The newest start wins: an older instance stops writing the record
//! once a newer one owns it, and an instance deletes the record only if it still owns it. Every
//! instance also keeps its own copy at [`Keys::instance`], written in the same script whether or
//! not it owns the record, so the coordinator can see that an old instance still holds clients
//! after its replacement took the name over.

use ebb_proto::keys::MAX_CLOCK_SKEW;
use ebb_proto::record::NodeRecord;
use ebb_proto::sign::Secret;
use ebb_proto::{Keys, NodeName, NodeState};
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

/// KEYS: record, index, own copy. ARGV: instance, started_at_ms, ttl_ms, now_ms, name,
/// max_clock_skew_ms, field, value, ... Returns 1 when the record was written, 0 when a newer
/// instance owns it (the own copy is written either way).
///
/// Redis is writable by others, so nothing found there is taken on trust: a value of another type
/// at the record or index key is not a record or an index (left alone, one stray `SET` would fail
/// every write and the node could never register again), and an owner counts as newer only if
/// its start time is a number no later than now plus the allowed clock skew (a record claiming to
/// start in the future is no instance's).
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function claim(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t ~= kind and t ~= 'none' then redis.call('DEL', key) end
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[3], ARGV[3])
claim(KEYS[1], 'hash')
claim(KEYS[2], 'zset')
local current = redis.call('HGET', KEYS[1], 'instance')
if current and current ~= ARGV[1] then
  local started = tonumber(redis.call('HGET', KEYS[1], 'started_at_ms') or '') or 0
  if started > tonumber(ARGV[2]) and started <= tonumber(ARGV[4]) + tonumber(ARGV[6]) then
    return 0
  end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
"#,
    )
});

/// KEYS: record, index, own copy. ARGV: instance, name. Returns 1 when the record was removed.
/// Keys of another type than expected are left alone.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('DEL', KEYS[3])
if redis.call('TYPE', KEYS[1])['ok'] == 'hash'
    and redis.call('HGET', KEYS[1], 'instance') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('TYPE', KEYS[2])['ok'] == 'zset' then
    redis.call('ZREM', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
"#,
    )
});

/// Who this node is, for its record.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub name: NodeName,
    pub instance: Uuid,
    pub url: String,
    pub version: String,
    pub capacity: Option<u64>,
    pub started_at_ms: u64,
    /// The record's TTL, declared in it so readers can tell a stale copy.
    pub ttl: Duration,
}

impl Identity {
    pub fn record(&self, state: NodeState, connections: u64, now_ms: u64) -> NodeRecord {
        NodeRecord {
            name: self.name.clone(),
            instance: self.instance,
            url: self.url.clone(),
            version: self.version.clone(),
            state,
            connections,
            capacity: self.capacity,
            started_at_ms: self.started_at_ms,
            updated_at_ms: now_ms,
            ttl_ms: self.ttl.as_millis() as u64,
        }
    }
}

/// Writes the record (signed with `secret`) and refreshes its TTL; `false` when a newer instance
/// owns the name.
pub(crate) async fn write(
    conn: &mut ebb_redis::Connection,
    keys: &Keys,
    record: &NodeRecord,
    secret: Option<&Secret>,
) -> redis::RedisResult<bool> {
    let mut invocation = WRITE.prepare_invoke();
    invocation
        .key(keys.node(&record.name))
        .key(keys.nodes())
        .key(keys.instance(&record.name, record.instance))
        .arg(record.instance.to_string())
        .arg(record.started_at_ms)
        .arg(record.ttl_ms)
        .arg(record.updated_at_ms)
        .arg(record.name.as_str())
        .arg(MAX_CLOCK_SKEW.as_millis() as u64);
    for (name, value) in record.to_fields(keys.cluster(), secret) {
        invocation.arg(name).arg(value);
    }
    let written: i64 = invocation.invoke_async(conn).await?;
    Ok(written == 1)
}

/// Removes the record if this instance owns it.
pub(crate) async fn remove(
    conn: &mut ebb_redis::Connection,
    keys: &Keys,
    identity: &Identity,
) -> redis::RedisResult<bool> {
    let removed: i64 = REMOVE
        .key(keys.node(&identity.name))
        .key(keys.nodes())
        .key(keys.instance(&identity.name, identity.instance))
        .arg(identity.instance.to_string())
        .arg(identity.name.as_str())
        .invoke_async(conn)
        .await?;
    Ok(removed == 1)
}
