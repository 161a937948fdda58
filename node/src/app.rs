//! The application a node serves: what it does with each WebSocket message.
//!
//! The library owns the socket loop (so the drain can hold every connection to its promises:
//! messages received are answered, nothing is processed after the Close) and calls the app for
//! each data message. Replies go out in the order messages arrived, even when the app answers
//! them concurrently.

use futures_util::future::{BoxFuture, Either, Ready, ready};
use std::future::Future;
use std::time::Duration;
use tungstenite::Message;

/// What a node does with each text or binary message.
pub trait App: Send + Sync + 'static {
    /// The future of one reply. `Unpin` so a reply that is ready at once can be polled in place
    /// and sent without queueing (box an `async` block: `Box::pin(async move { ... })`).
    type Reply: Future<Output = Option<Message>> + Send + Unpin + 'static;

    /// Handles one message; resolves to the reply to send, or `None` for no reply.
    fn handle(&self, message: Message) -> Self::Reply;
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
    type Reply = Either<Ready<Option<Message>>, BoxFuture<'static, Option<Message>>>;

    fn handle(&self, message: Message) -> Self::Reply {
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
        let reply = app.handle(Message::text("hi")).await;
        assert_eq!(reply, Some(Message::text("Echo: hi")));
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        let reply = Echo::default().handle(Message::binary(vec![1, 2])).await;
        assert_eq!(reply, Some(Message::binary(vec![1, 2])));
    }
}
