//! Signed commands' nonces, remembered in Redis so a replay is refused across restarts.
//!
//! The gate's in-memory cache refuses a replay to the same process for free; this covers what
//! memory cannot: the same signed command published again after the node restarted (a new
//! process, the same name, the same secret) while it is still unexpired. Applying a signed
//! command first claims `Keys::nonce` with `SET NX PX` until the command expires (plus the clock
//! skew allowed between nodes, so a node whose clock lags cannot accept it after its key is
//! gone); a claim that finds the key taken means the command was already applied by some
//! instance of the cluster.

use ebb_proto::Keys;
use ebb_proto::keys::MAX_CLOCK_SKEW;
use redis::{AsyncCommands, ExistenceCheck, SetExpiry, SetOptions};
use std::time::Duration;

/// Longest a nonce is kept, whatever expiry its command carries (about ten years: effectively
/// for ever, while keeping `PX` far from Redis's limit).
pub const MAX_NONCE_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long the nonce of a command expiring at `expires_at_ms` is kept, from `now_ms`.
pub(crate) fn ttl_ms(expires_at_ms: Option<u64>, now_ms: u64) -> u64 {
    let max = MAX_NONCE_TTL.as_millis() as u64;
    expires_at_ms
        .map_or(max, |expires| {
            expires
                .saturating_sub(now_ms)
                .saturating_add(MAX_CLOCK_SKEW.as_millis() as u64)
        })
        .clamp(1, max)
}

/// Claims `nonce` until the command expires; `true` when this is its first use.
pub(crate) async fn claim(
    conn: &mut ebb_redis::Connection,
    keys: &Keys,
    nonce: &str,
    expires_at_ms: Option<u64>,
    now_ms: u64,
) -> redis::RedisResult<bool> {
    let options = SetOptions::default()
        .conditional_set(ExistenceCheck::NX)
        .with_expiration(SetExpiry::PX(ttl_ms(expires_at_ms, now_ms)));
    let set: redis::Value = conn.set_options(keys.nonce(nonce), 1, options).await?;
    Ok(!matches!(set, redis::Value::Nil))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_lives_as_long_as_its_command_plus_the_skew() {
        let skew = MAX_CLOCK_SKEW.as_millis() as u64;
        assert_eq!(ttl_ms(Some(61_000), 1_000), 60_000 + skew);
        // Already expired (a clock ahead of the signer's): still at least the skew.
        assert_eq!(ttl_ms(Some(1_000), 5_000), skew);
        assert_eq!(ttl_ms(Some(u64::MAX), 0), MAX_NONCE_TTL.as_millis() as u64);
        assert_eq!(ttl_ms(None, 0), MAX_NONCE_TTL.as_millis() as u64);
    }
}
