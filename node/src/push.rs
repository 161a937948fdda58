//! Server push: a per-connection handle ([`Conn`]) the app keeps to send at any time and to close
//! the connection with a code.
//!
//! The policy for a client that cannot keep up: pushes wait in a bounded queue
//! (`ConnectionConfig::push_queue`, 1024 by default) while the socket writes what came before.
//! The push that finds the queue full is refused ([`PushError::TooSlow`]), the queue is dropped,
//! and the connection is closed with 1008 (policy violation) and the reason `too slow`; a write
//! blocked on a client that stopped reading is abandoned at once. So a slow consumer costs at
//! most `push_queue` messages of memory, never more, and a fast one never sees the limit unless
//! the app pushes more than that in one burst.
//!
//! The drain's promises extend to pushes: a drain (or a shed) closes a connection only after
//! every push queued before its Close was sent, within the in-flight timeout; from the Close on,
//! a push fails with [`PushError::Closed`], as it does once the connection has ended.

use crate::registry::{CloseOrder, Mailbox, Refused};
use std::sync::Arc;
use std::time::Duration;
use tungstenite::Message;

/// Why a push or a close was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The connection is closing or closed; nothing more reaches it.
    #[error("the connection is closed")]
    Closed,
    /// The client could not keep up; the connection is being closed with 1008.
    #[error("the client is too slow: its push queue is full, and it is being closed")]
    TooSlow,
    /// A close code an endpoint must not send (RFC 6455 §7.4): 1000-1003, 1007-1014 and
    /// 3000-4999 may be sent.
    #[error("close code {0} may not be sent")]
    BadCode(u16),
}

/// The app's handle on one connection. Cheap to clone; it outlives the connection harmlessly
/// (every push then fails with [`PushError::Closed`]).
#[derive(Debug, Clone)]
pub struct Conn {
    id: u64,
    mailbox: Arc<Mailbox>,
    limit: usize,
    inflight_timeout: Duration,
    close_timeout: Duration,
}

impl Conn {
    pub(crate) fn new(
        id: u64,
        mailbox: Arc<Mailbox>,
        limit: usize,
        inflight_timeout: Duration,
        close_timeout: Duration,
    ) -> Self {
        Conn {
            id,
            mailbox,
            limit,
            inflight_timeout,
            close_timeout,
        }
    }

    /// This connection's id on this node (unique for the process's life).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues `message` for the client, after what was queued before.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), PushError> {
        self.mailbox
            .push(message.into(), self.limit)
            .map_err(|refused| match refused {
                Refused::Sealed => PushError::Closed,
                Refused::Overflow => PushError::TooSlow,
            })
    }

    /// Whether pushes are still taken.
    pub fn is_open(&self) -> bool {
        !self.mailbox.is_sealed()
    }

    /// Closes the connection with `code` and `reason` (cut to 123 bytes at a character
    /// boundary): what was pushed before is sent first, then the Close.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), PushError> {
        if !sendable(code) {
            return Err(PushError::BadCode(code));
        }
        if self.mailbox.is_sealed() {
            return Err(PushError::Closed);
        }
        let mut end = reason.len().min(ebb_proto::close::MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.mailbox.close(CloseOrder {
            code,
            reason: reason[..end].to_owned(),
            inflight_timeout: self.inflight_timeout,
            close_timeout: self.close_timeout,
            by_app: true,
        });
        Ok(())
    }
}

/// The codes an endpoint may put in a Close frame.
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(limit: usize) -> Conn {
        Conn::new(
            7,
            Arc::new(Mailbox::default()),
            limit,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn pushes_queue_in_order_until_the_limit_and_then_never_again() {
        let c = conn(3);
        for i in 0..3 {
            c.send(Message::text(format!("m{i}"))).unwrap();
        }
        assert_eq!(
            c.send(Message::text("one too many")),
            Err(PushError::TooSlow)
        );
        assert!(!c.is_open());
        assert_eq!(c.send(Message::text("after")), Err(PushError::Closed));
        let orders = c.mailbox.next().await;
        assert!(orders.overflowed && orders.pushes.is_empty(), "{orders:?}");

        let c = conn(3);
        c.send(Message::text("a")).unwrap();
        c.send(Message::text("b")).unwrap();
        let orders = c.mailbox.next().await;
        assert_eq!(
            Vec::from(orders.pushes),
            [Message::text("a"), Message::text("b")]
        );
        assert!(c.mailbox.seal().is_empty());
        assert_eq!(c.send(Message::text("c")), Err(PushError::Closed));
        assert_eq!(c.close(1000, "bye"), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn a_close_takes_only_sendable_codes_and_a_short_reason() {
        let c = conn(3);
        for bad in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, u16::MAX] {
            assert_eq!(c.close(bad, "x"), Err(PushError::BadCode(bad)), "{bad}");
        }
        let long = "é".repeat(100);
        c.close(4001, &long).unwrap();
        let order = c.mailbox.next().await.close.unwrap();
        assert_eq!((order.code, order.by_app), (4001, true));
        assert!(order.reason.len() <= 123 && long.starts_with(&order.reason));
    }
}
