//! The node's one subscription to the cluster's chat channel: every stored message, from any
//! node, delivered to this node's members of its room. A lost subscription is made again (with
//! backoff), and then every member catches up from the history, since what was published in
//! between reached nobody here.

use super::Inner;
use ebb_proto::chat::RoomMessage;
use std::sync::Weak;
use std::time::Duration;

/// Pause between two attempts to subscribe again.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(500);
/// How long one subscribe may take.
const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(5);

/// Runs until the app is gone.
pub(super) async fn run(
    inner: Weak<Inner>,
    link: ebb_redis::Link,
    channel: String,
    mut subscription: ebb_redis::Subscription,
) {
    loop {
        loop {
            let payload = match subscription.next().await {
                Ok(payload) => payload,
                Err(why) => {
                    tracing::warn!(why, "chat relay lost its subscription");
                    break;
                }
            };
            let Some(inner) = inner.upgrade() else {
                return;
            };
            match serde_json::from_slice::<RoomMessage>(&payload) {
                Ok(message) => inner.deliver(&message),
                Err(e) => tracing::warn!(error = %e, "chat relay: not a room message; ignored"),
            }
        }
        subscription = loop {
            tokio::time::sleep(RESUBSCRIBE_BACKOFF).await;
            if inner.strong_count() == 0 {
                return;
            }
            match link.subscribe(&channel, SUBSCRIBE_LIMIT).await {
                Ok(subscription) => break subscription,
                Err(e) => tracing::warn!(error = %e, "chat relay cannot subscribe yet"),
            }
        };
        tracing::info!("chat relay subscribed again; members catch up from the history");
        if let Some(inner) = inner.upgrade() {
            inner.resync();
        }
    }
}
