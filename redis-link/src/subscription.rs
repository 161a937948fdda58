//! Pub/sub through a [`crate::Link`], the same way on every topology.
//!
//! A subscription is a RESP3 connection whose pushes go to a sender the caller chooses: on a
//! single server (or the master a Sentinel names) `SUBSCRIBE`, on a Redis Cluster `SSUBSCRIBE`
//! (sharded pub/sub, Redis 7): ebb's channels share the cluster's hash tag with its keys, so
//! their traffic stays on the shard that owns that slot instead of being copied to every node,
//! as classic `PUBLISH` is on a Cluster.
//!
//! [`pushed`] reads a push: a message's payload, or the subscription's end. A subscription
//! ends when its connection closes and when the server unsubscribes it, which a Cluster does
//! when the slot leaves the node (a failover, a resharding): redis-rs would subscribe again on
//! its own once it notices, but ebb's subscribers start a new session instead, which re-reads
//! what was decided meanwhile (pub/sub is at-most-once) and cannot depend on when redis-rs
//! refreshes its slot map.

use crate::connection::Connection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

/// What one push means to a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// A message on the channel: its payload.
    Message(Vec<u8>),
    /// The subscription is over: why.
    Lost(&'static str),
    /// Anything else (subscribe confirmations, pongs).
    Other,
}

/// Reads one push.
pub fn pushed(push: PushInfo) -> Pushed {
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            // [channel, payload]
            match push.data.into_iter().nth(1) {
                Some(Value::BulkString(payload)) => Pushed::Message(payload),
                _ => Pushed::Other,
            }
        }
        PushKind::Disconnection => Pushed::Lost("the pub/sub connection closed"),
        PushKind::Unsubscribe | PushKind::SUnsubscribe => {
            Pushed::Lost("the server ended the subscription (the channel's slot moved)")
        }
        _ => Pushed::Other,
    }
}

/// A subscription whose messages are read in order, with nothing dropped (for the
/// coordinator, whose intake bounds what it keeps itself). Ends when [`pushed`] says so.
pub struct Subscription {
    conn: Connection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("conn", &self.conn)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(conn: Connection, pushes: mpsc::UnboundedReceiver<PushInfo>) -> Self {
        Subscription { conn, pushes }
    }

    /// The next message's payload, or why the subscription ended. Cancel safe.
    pub async fn next(&mut self) -> Result<Vec<u8>, &'static str> {
        loop {
            let Some(push) = self.pushes.recv().await else {
                return Err("the pub/sub connection closed");
            };
            match pushed(push) {
                Pushed::Message(payload) => return Ok(payload),
                Pushed::Lost(why) => return Err(why),
                Pushed::Other => {}
            }
        }
    }

    /// The subscription's connection, to ping it (a clone: it can be used beside [`next`]).
    ///
    /// [`next`]: Subscription::next
    pub fn connection(&self) -> Connection {
        self.conn.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: PushKind, data: Vec<Value>) -> PushInfo {
        PushInfo { kind, data }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn classic_and_sharded_messages_are_payloads() {
        for kind in [PushKind::Message, PushKind::SMessage] {
            let p = push(kind, vec![bulk("ebb:{c}:events"), bulk("hello")]);
            assert_eq!(pushed(p), Pushed::Message(b"hello".to_vec()));
        }
    }

    #[test]
    fn a_closed_connection_or_an_unsubscribe_from_the_server_ends_it() {
        for kind in [
            PushKind::Disconnection,
            PushKind::SUnsubscribe,
            PushKind::Unsubscribe,
        ] {
            assert!(matches!(
                pushed(push(kind, vec![bulk("ch"), Value::Int(0)])),
                Pushed::Lost(_)
            ));
        }
    }

    #[test]
    fn confirmations_and_malformed_messages_are_neither() {
        let confirm = push(PushKind::SSubscribe, vec![bulk("ch"), Value::Int(1)]);
        assert_eq!(pushed(confirm), Pushed::Other);
        let no_payload = push(PushKind::Message, vec![bulk("ch")]);
        assert_eq!(pushed(no_payload), Pushed::Other);
        let not_bytes = push(PushKind::SMessage, vec![bulk("ch"), Value::Int(7)]);
        assert_eq!(pushed(not_bytes), Pushed::Other);
    }
}
