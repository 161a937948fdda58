//! The application a node serves: a connection's whole life, from the upgrade request to its end.
//!
//! The library owns the socket loop (so the drain can hold every connection to its promises:
//! messages received are answered, pushes queued before the Close are sent, nothing is processed
//! after the Close) and calls the app at each step:
//! 1. [`App::accept`] sees the upgrade request ([`Handshake`]: path, query, headers, peer) before
//!    anything is answered, and either accepts with the connection's own state or refuses with a
//!    4xx status ([`Refusal`]); a refused client is never upgraded;
//! 2. [`App::handle`] gets each data message with that state; replies go out in the order
//!    messages arrived, even when the app answers them concurrently;
//! 3. at any time, the [`Conn`] handle given to `accept` pushes messages the client did not ask
//!    for, or closes the connection with a code;
//! 4. [`App::closed`] hears how it ended ([`Ended`]) and gets the state back.
//!
//! [`App::draining`] tells the app its node has begun draining (no new upgrades from now on).

pub use crate::handshake::{Handshake, Refusal};
pub use crate::push::{Conn, PushError};
use futures_util::future::{BoxFuture, Either, Ready, ready};
use std::future::Future;
use std::time::Duration;
use tungstenite::Message;

/// What a node does for each connection.
pub trait App: Send + Sync + 'static {
    /// What the app keeps per connection (a user id, the rooms joined, the push handle...).
    type State: Send + Sync + 'static;

    /// The future of one reply. `Unpin` so a reply that is ready at once can be polled in place
    /// and sent without queueing (box an `async` block: `Box::pin(async move { ... })`).
    type Reply: Future<Output = Option<Message>> + Send + Unpin + 'static;

    /// Before the upgrade is answered: the connection's state, or a refusal. `conn` pushes to the
    /// connection and closes it; keep it (in the state, a room) to reach the client later.
    fn accept(
        &self,
        handshake: &Handshake,
        conn: Conn,
    ) -> impl Future<Output = Result<Self::State, Refusal>> + Send;

    /// Handles one message; resolves to the reply to send, or `None` for no reply.
    fn handle(&self, state: &Self::State, message: Message) -> Self::Reply;

    /// The connection has ended; its state is the app's again (leave its rooms here).
    fn closed(&self, state: Self::State, ended: Ended) {
        let _ = (state, ended);
    }

    /// The node began draining: it takes no new connection, and closes the ones it has, paced.
    fn draining(&self) {}
}

/// How a connection ended, as the app hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The node closed it to move the client (a drain or a shed), with 1001; `clean` when the
    /// client answered the Close in time.
    Moved { clean: bool },
    /// The app closed it ([`Conn::close`]) with `code`.
    ByApp { code: u16 },
    /// The client sent Close with `code` (or none).
    ByClient { code: Option<u16> },
    /// The client could not keep up with the pushes: closed with
    /// [`ebb_proto::close::POLICY_VIOLATION`] (see [`crate::push`]).
    TooSlow,
    /// The node closed it for a bad frame with `code` (1002, 1007, 1009).
    Rejected { code: u16 },
    /// TCP ended without a Close, a write failed, or a pong was missed.
    Gone,
    /// The drain deadline cut it.
    Cut,
}

impl Ended {
    /// Whether the node's drain or shed ended it: the client is expected back, on another node.
    pub fn by_drain(self) -> bool {
        matches!(self, Ended::Moved { .. } | Ended::Cut)
    }
}

/// The reference app: a text `M` is answered `Echo: M`, binary is echoed as is, each after an
/// optional artificial processing delay (so tests can hold messages in flight).
#[derive(Debug, Clone, Default)]
pub struct Echo {
    delay: Duration,
}

impl Echo {
    /// An echo app that takes `delay` to answer each message.
    pub fn with_delay(delay: Duration) -> Self {
        Echo { delay }
    }

    fn reply(message: Message) -> Option<Message> {
        match message {
            Message::Text(text) => Some(Message::text(format!("Echo: {}", text.as_str()))),
            Message::Binary(data) => Some(Message::Binary(data)),
            _ => None,
        }
    }
}

impl App for Echo {
    type State = ();
    type Reply = Either<Ready<Option<Message>>, BoxFuture<'static, Option<Message>>>;

    fn accept(&self, _: &Handshake, _: Conn) -> impl Future<Output = Result<(), Refusal>> + Send {
        ready(Ok(()))
    }

    fn handle(&self, _: &(), message: Message) -> Self::Reply {
        if self.delay.is_zero() {
            return Either::Left(ready(Echo::reply(message)));
        }
        let delay = self.delay;
        Either::Right(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Echo::reply(message)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn echoes_after_the_delay() {
        let app = Echo::with_delay(Duration::from_millis(200));
        let start = tokio::time::Instant::now();
        let reply = app.handle(&(), Message::text("hi")).await;
        assert_eq!(reply, Some(Message::text("Echo: hi")));
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        let reply = Echo::default()
            .handle(&(), Message::binary(vec![1, 2]))
            .await;
        assert_eq!(reply, Some(Message::binary(vec![1, 2])));
    }
}
