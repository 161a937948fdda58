//! One connection's loop, from upgrade to the end, generic over any `Sink` + `Stream` of
//! tungstenite messages so it is tested with in-memory channels and paused time.
//!
//! Open: read data messages (cancel-safe `next()`), hand them to the app (at most `max_inflight`
//! at once, replies in arrival order), send the app's pushes in order, ping on an interval and
//! drop a peer that missed the previous pong, answer a client's Close. Closing (a drain order, or
//! the app's own close): stop reading, answer every message already received and send every push
//! queued before (both bounded by the in-flight timeout), send the Close with the reconnect hint,
//! then read only to see the client's Close, discarding any data (nothing is processed after our
//! Close), bounded by the close timeout. The drain deadline (`terminate`) ends every state at
//! once; so does a push queue that overflowed (the client is too slow, see [`crate::push`]).

use crate::app::App;
use crate::config::ConnectionConfig;
use crate::metrics::{CloseKind, Metrics};
use crate::registry::{CloseOrder, Mailbox};
use ebb_proto::close;
use futures_util::stream::FuturesOrdered;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout_at};
use tokio_util::sync::CancellationToken;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;

/// How long the Close of a connection too slow for its pushes may take to be written.
const TOO_SLOW_CLOSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Closed by a drain order; `clean` when the client answered our Close in time.
    Drained { clean: bool },
    /// The client sent Close first, with this code (the node answered it).
    ClientClosed { code: Option<u16> },
    /// TCP ended without a Close, or a write failed.
    Gone,
    /// The client missed a pong.
    Dead,
    /// The node closed it for a bad frame with this code; the transport should linger so the
    /// client reads the Close before the TCP connection goes.
    Rejected { code: u16 },
    /// The drain deadline cut it.
    Terminated,
    /// The app closed it with this code.
    AppClosed { code: u16 },
    /// Its push queue overflowed: closed with 1008.
    TooSlow,
}

impl Outcome {
    /// The metric kind.
    pub fn kind(self) -> CloseKind {
        match self {
            Outcome::Drained { clean: true } => CloseKind::DrainClean,
            Outcome::Drained { clean: false } | Outcome::Terminated => CloseKind::DrainForced,
            Outcome::ClientClosed { .. } => CloseKind::ClientClose,
            Outcome::Gone => CloseKind::PeerGone,
            Outcome::Dead => CloseKind::DeadPeer,
            Outcome::Rejected { .. } => CloseKind::Rejected,
            Outcome::AppClosed { .. } => CloseKind::AppClose,
            Outcome::TooSlow => CloseKind::TooSlow,
        }
    }

    /// How the app hears it.
    pub fn ended(self) -> crate::app::Ended {
        use crate::app::Ended;
        match self {
            Outcome::Drained { clean } => Ended::Moved { clean },
            Outcome::ClientClosed { code } => Ended::ByClient { code },
            Outcome::Gone | Outcome::Dead => Ended::Gone,
            Outcome::Rejected { code } => Ended::Rejected { code },
            Outcome::Terminated => Ended::Cut,
            Outcome::AppClosed { code } => Ended::ByApp { code },
            Outcome::TooSlow => Ended::TooSlow,
        }
    }
}

/// What the loop needs besides the transport.
#[derive(Debug)]
pub(crate) struct Context<'a, A: App> {
    pub app: &'a A,
    pub state: &'a A::State,
    pub mailbox: &'a Mailbox,
    pub terminate: &'a CancellationToken,
    pub config: &'a ConnectionConfig,
    pub metrics: &'a Metrics,
}

/// Runs a connection to its end.
pub(crate) async fn run<T, A>(ws: &mut T, cx: Context<'_, A>) -> Outcome
where
    T: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
    A: App,
{
    let mut inflight = FuturesOrdered::new();
    let period = cx.config.ping_interval;
    let mut ping = interval_at(Instant::now() + period, period);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    // Created once rather than per iteration: each one registers a waiter, and re-registering
    // on every message would cost a few lock round-trips per message.
    let mut terminate = std::pin::pin!(cx.terminate.cancelled());
    let mut mailbox = std::pin::pin!(cx.mailbox.next());

    let order = loop {
        tokio::select! {
            biased;
            () = &mut terminate => return Outcome::Terminated,
            orders = &mut mailbox => {
                mailbox.set(cx.mailbox.next());
                // Boxed: the orders and their sends would otherwise sit in every idle task.
                match Box::pin(carry_out(ws, &cx, orders)).await {
                    Ok(Some(order)) => break order,
                    Ok(None) => {}
                    Err(end) => return end,
                }
            }
            Some(reply) = inflight.next(), if !inflight.is_empty() => {
                if let Err(end) = answer(ws, reply, &cx).await {
                    return end;
                }
            }
            message = ws.next(), if inflight.len() < cx.config.max_inflight => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    cx.metrics.received();
                    let mut reply = cx.app.handle(cx.state, message);
                    // Fast path: with nothing queued ahead, a reply that is ready at once goes
                    // straight out (no queue entry, no second trip through the loop).
                    if inflight.is_empty()
                        && let Some(ready) = poll_once(&mut reply)
                    {
                        if let Err(end) = answer(ws, ready, &cx).await {
                            return end;
                        }
                        continue;
                    }
                    inflight.push_back(reply);
                }
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite queued the answering Close; push it out.
                    let _ = cut(ws.flush(), &cx).await;
                    return Outcome::ClientClosed { code: frame.map(|f| f.code.into()) };
                }
                Some(Err(error)) => return Box::pin(reject(ws, error)).await,
                None => return Outcome::Gone,
            },
            _ = ping.tick() => {
                // While reading is paused (the app is behind), the pong may be waiting unread:
                // a missed pong only counts when the node was listening for it.
                let reading = inflight.len() < cx.config.max_inflight;
                if awaiting_pong && reading {
                    return Outcome::Dead;
                }
                awaiting_pong = true;
                if let Err(end) = cut(ws.send(Message::Ping(Default::default())), &cx).await {
                    return end;
                }
            }
        }
    };
    // Boxed: the closing half's timers would otherwise sit in every idle connection's task.
    Box::pin(close(ws, cx, inflight, order)).await
}

/// Carries out what the mailbox held: an overflow ends the connection as too slow; a notice and
/// the pushes are sent, in that order; a close order is handed back to begin closing.
async fn carry_out<T, A>(
    ws: &mut T,
    cx: &Context<'_, A>,
    orders: crate::registry::Orders,
) -> Result<Option<CloseOrder>, Outcome>
where
    T: Sink<Message, Error = tungstenite::Error> + Unpin,
    A: App,
{
    if orders.overflowed {
        return Err(too_slow(ws, cx).await);
    }
    if let Some(notice) = orders.notice {
        cut(ws.send(Message::text(notice)), cx).await?;
    }
    for push in orders.pushes {
        cut(ws.send(push), cx).await?;
        cx.metrics.pushed();
    }
    Ok(orders.close)
}

/// Sends one reply (if the app gave one) and counts it.
async fn answer<T, A>(
    ws: &mut T,
    reply: Option<Message>,
    cx: &Context<'_, A>,
) -> Result<(), Outcome>
where
    T: Sink<Message, Error = tungstenite::Error> + Unpin,
    A: App,
{
    let Some(reply) = reply else {
        return Ok(());
    };
    cut(ws.send(reply), cx).await?;
    cx.metrics.answered();
    Ok(())
}

/// Runs a send or flush unless the drain deadline, or a push queue that overflowed, cuts the
/// connection first: a client that stops reading fills its TCP window, and its send would
/// otherwise hold the connection (and the drain) forever. A write that completes at once (the
/// usual case) registers nothing on the token.
async fn cut<F, A>(write: F, cx: &Context<'_, A>) -> Result<(), Outcome>
where
    F: Future<Output = Result<(), tungstenite::Error>>,
    A: App,
{
    let mut write = std::pin::pin!(write);
    if let Some(done) = poll_once(&mut write) {
        return done.map_err(|_| Outcome::Gone);
    }
    tokio::select! {
        biased;
        () = cx.terminate.cancelled() => Err(Outcome::Terminated),
        () = cx.mailbox.overflowed() => Err(Outcome::TooSlow),
        done = write => done.map_err(|_| Outcome::Gone),
    }
}

/// A client that did not keep up with the pushes: a Close with 1008, if it can still be written
/// within [`TOO_SLOW_CLOSE_WITHIN`], and the end.
async fn too_slow<T, A>(ws: &mut T, cx: &Context<'_, A>) -> Outcome
where
    T: Sink<Message, Error = tungstenite::Error> + Unpin,
    A: App,
{
    tracing::debug!("closing a connection too slow for its pushes");
    let frame = CloseFrame {
        code: close::POLICY_VIOLATION.into(),
        reason: "too slow".into(),
    };
    tokio::select! {
        biased;
        () = cx.terminate.cancelled() => {}
        _ = tokio::time::timeout(TOO_SLOW_CLOSE_WITHIN, ws.send(Message::Close(Some(frame)))) => {}
    }
    Outcome::TooSlow
}

/// Polls a future once without a waker to wake: `Some` if it is already done. Used only on a
/// future that, if pending, is then handed to a queue that polls it with a real waker.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match Pin::new(future).poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// The closing half: answer what was received, send the Close, wait for the client's.
async fn close<T, A>(
    ws: &mut T,
    cx: Context<'_, A>,
    mut inflight: FuturesOrdered<A::Reply>,
    order: CloseOrder,
) -> Outcome
where
    T: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
    A: App,
{
    let inflight_deadline = Instant::now() + order.inflight_timeout;
    while !inflight.is_empty() {
        tokio::select! {
            biased;
            _ = cx.terminate.cancelled() => return Outcome::Terminated,
            next = timeout_at(inflight_deadline, inflight.next()) => match next {
                Ok(Some(reply)) => {
                    if let Err(end) = answer(ws, reply, &cx).await {
                        return end;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(abandoned = inflight.len(), "in-flight timeout: closing with messages unanswered");
                    cx.metrics.abandoned(inflight.len() as u64);
                    break;
                }
            },
        }
    }
    drop(inflight);
    // What the app pushed before the Close goes first; after it, pushes are refused.
    for push in cx.mailbox.seal() {
        match timeout_at(inflight_deadline, cut(ws.send(push), &cx)).await {
            Ok(Ok(())) => cx.metrics.pushed(),
            Ok(Err(end)) => return end,
            Err(_) => {
                tracing::warn!("in-flight timeout: closing with pushes unsent");
                break;
            }
        }
    }

    let (code, by_app) = (order.code, order.by_app);
    let ended = |clean| {
        if by_app {
            Outcome::AppClosed { code }
        } else {
            Outcome::Drained { clean }
        }
    };
    let frame = CloseFrame {
        code: order.code.into(),
        reason: order.reason.into(),
    };
    if let Err(end) = cut(ws.send(Message::Close(Some(frame))), &cx).await {
        return end;
    }

    let handshake_deadline = Instant::now() + order.close_timeout;
    loop {
        tokio::select! {
            biased;
            _ = cx.terminate.cancelled() => return Outcome::Terminated,
            next = timeout_at(handshake_deadline, ws.next()) => match next {
                Err(_) => return ended(false),
                Ok(Some(Ok(Message::Close(_))) | None) => return ended(true),
                Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => cx.metrics.discarded(),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) => return ended(false),
            },
        }
    }
}

/// Closes a connection that sent a bad frame with the matching code.
async fn reject<T>(ws: &mut T, error: tungstenite::Error) -> Outcome
where
    T: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    use tungstenite::Error;
    let (code, reason) = match &error {
        Error::Capacity(_) => (close::MESSAGE_TOO_BIG, "message too big"),
        Error::Utf8(_) => (close::INVALID_PAYLOAD, "invalid UTF-8"),
        Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            return Outcome::Gone;
        }
        Error::Protocol(_) => (close::PROTOCOL_ERROR, "protocol error"),
        _ => return Outcome::Gone,
    };
    tracing::debug!(%error, code, "closing connection for a bad frame");
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    Outcome::Rejected { code }
}

#[cfg(test)]
mod tests;
