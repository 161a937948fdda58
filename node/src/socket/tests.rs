//! The socket loop driven through in-memory channels, with paused time.

use super::*;
use crate::app::Echo;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tungstenite::Error;

/// An in-memory transport: what the test pushes is what the loop reads, and the loop's writes
/// come out on the other side.
struct Pipe {
    incoming: mpsc::UnboundedReceiver<Result<Message, Error>>,
    outgoing: mpsc::UnboundedSender<Message>,
    /// A peer that stopped reading: its window is full, every write waits.
    stuck: bool,
}

impl Stream for Pipe {
    type Item = Result<Message, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for Pipe {
    type Error = Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        if self.stuck {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.outgoing
            .send(item)
            .map_err(|_| Error::ConnectionClosed)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }
}

/// The test's end of a connection.
struct Peer {
    to_node: mpsc::UnboundedSender<Result<Message, Error>>,
    from_node: mpsc::UnboundedReceiver<Message>,
}

impl Peer {
    fn send(&self, message: Message) {
        self.to_node.send(Ok(message)).unwrap();
    }
    async fn recv(&mut self) -> Message {
        self.from_node
            .recv()
            .await
            .expect("the node wrote nothing more")
    }
}

struct Harness {
    app: Echo,
    mailbox: std::sync::Arc<Mailbox>,
    terminate: CancellationToken,
    config: ConnectionConfig,
    metrics: Metrics,
}

impl Harness {
    /// The app's push handle on the harness's connection, with a queue of `limit`.
    fn conn(&self, limit: usize) -> crate::push::Conn {
        let d = Duration::from_secs(3);
        crate::push::Conn::new(1, self.mailbox.clone(), limit, d, Duration::from_secs(1))
    }

    fn new(delay_ms: u64) -> Self {
        Harness {
            app: Echo::with_delay(Duration::from_millis(delay_ms)),
            mailbox: Default::default(),
            terminate: CancellationToken::new(),
            config: ConnectionConfig {
                ping_interval: Duration::from_secs(30),
                ..ConnectionConfig::default()
            },
            metrics: Metrics::default(),
        }
    }

    fn cx(&self) -> Context<'_, Echo> {
        Context {
            app: &self.app,
            state: &(),
            mailbox: &self.mailbox,
            terminate: &self.terminate,
            config: &self.config,
            metrics: &self.metrics,
        }
    }
}

fn pipe() -> (Pipe, Peer) {
    let (to_node, incoming) = mpsc::unbounded_channel();
    let (outgoing, from_node) = mpsc::unbounded_channel();
    (
        Pipe {
            incoming,
            outgoing,
            stuck: false,
        },
        Peer { to_node, from_node },
    )
}

fn order(close_timeout_ms: u64) -> CloseOrder {
    CloseOrder {
        code: 1001,
        reason: r#"{"reason":"draining","retry_after_ms":500}"#.into(),
        inflight_timeout: Duration::from_secs(3),
        close_timeout: Duration::from_millis(close_timeout_ms),
        by_app: false,
    }
}

fn close_code(message: &Message) -> Option<u16> {
    match message {
        Message::Close(Some(frame)) => Some(frame.code.into()),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn messages_in_flight_are_answered_before_the_close() {
    let h = Harness::new(200);
    let (mut ws, mut peer) = pipe();
    let driver = async {
        for i in 0..3 {
            peer.send(Message::text(format!("m{i}")));
        }
        // Let the loop read all three, then order the close while they are being processed.
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.mailbox.close(order(5_000));
        for i in 0..3 {
            assert_eq!(peer.recv().await, Message::text(format!("Echo: m{i}")));
        }
        let close = peer.recv().await;
        assert_eq!(close_code(&close), Some(1001));
        if let Message::Close(Some(frame)) = &close {
            let reason = ebb_proto::CloseReason::decode(frame.reason.as_str()).unwrap();
            assert_eq!(reason.retry_after_ms, 500);
        }
        // After our Close nothing is processed: this message is discarded, not echoed.
        peer.send(Message::text("late"));
        peer.send(Message::Close(None));
    };
    let (outcome, ()) = tokio::join!(run(&mut ws, h.cx()), driver);
    assert_eq!(outcome, Outcome::Drained { clean: true });
    assert!(
        peer.from_node.try_recv().is_err(),
        "nothing after the Close"
    );
    let text = h.metrics.render(ebb_proto::NodeState::Draining, 0);
    assert!(text.contains("ebb_messages_received_total 3"), "{text}");
    assert!(text.contains("ebb_messages_answered_total 3"), "{text}");
    assert!(text.contains("ebb_messages_discarded_total 1"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_ignores_the_close_is_cut_at_the_timeout() {
    let h = Harness::new(0);
    let (mut ws, mut peer) = pipe();
    h.mailbox.close(order(1_500));
    let start = Instant::now();
    let (outcome, close) = tokio::join!(run(&mut ws, h.cx()), peer.recv());
    assert_eq!(close_code(&close), Some(1001));
    assert_eq!(outcome, Outcome::Drained { clean: false });
    assert_eq!(start.elapsed(), Duration::from_millis(1_500));
}

#[tokio::test(start_paused = true)]
async fn in_flight_work_is_bounded_by_its_timeout() {
    let h = Harness::new(10_000);
    let (mut ws, mut peer) = pipe();
    let driver = async {
        peer.send(Message::text("slow"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        h.mailbox.close(order(1_000));
        let close = peer.recv().await;
        assert_eq!(
            close_code(&close),
            Some(1001),
            "closed without the slow reply"
        );
        peer.send(Message::Close(None));
    };
    let start = Instant::now();
    let (outcome, ()) = tokio::join!(run(&mut ws, h.cx()), driver);
    assert_eq!(outcome, Outcome::Drained { clean: true });
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_millis(3_100),
        "{elapsed:?}"
    );
    assert!(
        h.metrics
            .render(ebb_proto::NodeState::Draining, 0)
            .contains("ebb_inflight_abandoned_total 1")
    );
}

#[tokio::test(start_paused = true)]
async fn the_notice_comes_before_the_close() {
    let h = Harness::new(0);
    let (mut ws, mut peer) = pipe();
    let driver = async {
        h.mailbox.notice("notice".into());
        assert_eq!(peer.recv().await, Message::text("notice"));
        // Still open: messages are answered between notice and close.
        peer.send(Message::text("x"));
        assert_eq!(peer.recv().await, Message::text("Echo: x"));
        h.mailbox.close(order(1_000));
        assert_eq!(close_code(&peer.recv().await), Some(1001));
        peer.send(Message::Close(None));
    };
    let (outcome, ()) = tokio::join!(run(&mut ws, h.cx()), driver);
    assert_eq!(outcome, Outcome::Drained { clean: true });
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_after_a_missed_pong() {
    let h = Harness::new(0);
    let (mut ws, mut peer) = pipe();
    let start = Instant::now();
    let driver = async {
        assert!(matches!(peer.recv().await, Message::Ping(_)));
        // No pong: the next tick ends the connection.
    };
    let (outcome, ()) = tokio::join!(run(&mut ws, h.cx()), driver);
    assert_eq!(outcome, Outcome::Dead);
    assert_eq!(start.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_live_peer_survives_pings() {
    let h = Harness::new(0);
    let (mut ws, mut peer) = pipe();
    let driver = async {
        for _ in 0..5 {
            assert!(matches!(peer.recv().await, Message::Ping(_)));
            peer.send(Message::Pong(Default::default()));
        }
        peer.send(Message::Close(None));
    };
    let start = Instant::now();
    let (outcome, ()) = tokio::join!(run(&mut ws, h.cx()), driver);
    assert_eq!(outcome, Outcome::ClientClosed { code: None });
    assert_eq!(start.elapsed(), Duration::from_secs(150));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_terminates_at_once() {
    let h = Harness::new(0);
    let (mut ws, mut peer) = pipe();
    h.mailbox.close(order(60_000));
    let driver = async {
        assert_eq!(close_code(&peer.recv().await), Some(1001));
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.terminate.cancel();
    };
    let (outcome, ()) = tokio::join!(run(&mut ws, h.cx()), driver);
    assert_eq!(outcome, Outcome::Terminated);
}

#[tokio::test(start_paused = true)]
async fn bad_frames_close_with_their_codes() {
    use tungstenite::error::{CapacityError, ProtocolError};
    let cases = [
        (
            Error::Capacity(CapacityError::MessageTooLong {
                size: 1 << 20,
                max_size: 1 << 16,
            }),
            1009,
        ),
        (Error::Utf8("bad".into()), 1007),
        (
            Error::Protocol(ProtocolError::UnmaskedFrameFromClient),
            1002,
        ),
    ];
    for (error, code) in cases {
        let h = Harness::new(0);
        let (mut ws, mut peer) = pipe();
        peer.to_node.send(Err(error)).unwrap();
        let outcome = run(&mut ws, h.cx()).await;
        assert_eq!(outcome, Outcome::Rejected { code });
        assert_eq!(close_code(&peer.recv().await), Some(code));
    }
}

#[tokio::test(start_paused = true)]
async fn eof_is_a_gone_peer() {
    let h = Harness::new(0);
    let (mut ws, peer) = pipe();
    drop(peer);
    assert_eq!(run(&mut ws, h.cx()).await, Outcome::Gone);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stopped_reading_is_cut_at_the_deadline() {
    let h = Harness::new(0);
    let (mut ws, _peer) = pipe();
    ws.stuck = true;
    h.mailbox.close(order(60_000));
    let deadline = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.terminate.cancel();
    };
    let start = Instant::now();
    let (outcome, ()) = tokio::join!(run(&mut ws, h.cx()), deadline);
    assert_eq!(
        outcome,
        Outcome::Terminated,
        "the blocked Close send was cut"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn pushes_go_out_in_order_and_those_queued_before_a_drain_precede_its_close() {
    let h = Harness::new(0);
    let conn = h.conn(16);
    let (mut ws, mut peer) = pipe();
    let driver = async {
        conn.send(Message::text("p0")).unwrap();
        conn.send(Message::text("p1")).unwrap();
        assert_eq!(peer.recv().await, Message::text("p0"));
        assert_eq!(peer.recv().await, Message::text("p1"));
        // Queued, then the drain's close order at once: the pushes still go first.
        conn.send(Message::text("p2")).unwrap();
        conn.send(Message::text("p3")).unwrap();
        h.mailbox.close(order(1_000));
        assert_eq!(peer.recv().await, Message::text("p2"));
        assert_eq!(peer.recv().await, Message::text("p3"));
        assert_eq!(close_code(&peer.recv().await), Some(1001));
        assert_eq!(
            conn.send(Message::text("late")),
            Err(crate::PushError::Closed)
        );
        peer.send(Message::Close(None));
    };
    let (outcome, ()) = tokio::join!(run(&mut ws, h.cx()), driver);
    assert_eq!(outcome, Outcome::Drained { clean: true });
    let text = h.metrics.render(ebb_proto::NodeState::Draining, 0);
    assert!(text.contains("ebb_messages_pushed_total 4"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_as_too_slow_once_its_pushes_overflow() {
    let h = Harness::new(0);
    let conn = h.conn(8);
    let (mut ws, _peer) = pipe();
    ws.stuck = true;
    let driver = async {
        // The first push blocks the socket's write; the queue then fills and overflows.
        let mut refused = None;
        for i in 0..100 {
            if let Err(e) = conn.send(Message::text(format!("p{i}"))) {
                refused = Some((i, e));
                break;
            }
            tokio::task::yield_now().await;
        }
        refused
    };
    let start = Instant::now();
    let (outcome, refused) = tokio::join!(run(&mut ws, h.cx()), driver);
    let (at, error) = refused.expect("a push was refused");
    assert_eq!(error, crate::PushError::TooSlow);
    assert!(
        at <= 10,
        "refused at push {at}: at most the queue plus the one being written"
    );
    assert_eq!(outcome, Outcome::TooSlow);
    // Bounded by the Close's own write limit, not by any drain deadline.
    assert!(
        start.elapsed() <= TOO_SLOW_CLOSE_WITHIN,
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        conn.send(Message::text("after")),
        Err(crate::PushError::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn the_app_closes_with_its_own_code_after_its_pushes() {
    let h = Harness::new(0);
    let conn = h.conn(16);
    let (mut ws, mut peer) = pipe();
    let driver = async {
        conn.send(Message::text("last words")).unwrap();
        conn.close(4003, "kicked").unwrap();
        assert_eq!(peer.recv().await, Message::text("last words"));
        let close = peer.recv().await;
        assert_eq!(close_code(&close), Some(4003));
        peer.send(Message::Close(None));
    };
    let (outcome, ()) = tokio::join!(run(&mut ws, h.cx()), driver);
    assert_eq!(outcome, Outcome::AppClosed { code: 4003 });
    assert_eq!(outcome.ended(), crate::Ended::ByApp { code: 4003 });
}
