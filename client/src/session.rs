//! One connection, from the first write to its end.
//!
//! What is pending is written (in id order: resends first, then each new message as it comes)
//! while replies are read, in one `select!` over the split halves of the connection: writing
//! never waits for reading to stop, nor reading for writing. A node pauses reading a connection
//! while `--max-inflight` replies are unsent, and its writes stall when the client does not
//! read; a client that wrote everything before reading anything would block it, and be blocked
//! by it, as soon as the TCP buffers fill (thousands of pending messages after an outage).
//!
//! The write branch holds no message while it waits (it asks the sink for room, then hands it
//! the next message at once), so another branch winning the `select!` loses nothing.

use crate::backoff::deadline;
use crate::client::Event;
use crate::plan::Advice;
use crate::sequence::Seen;
use crate::task::{Command, Ending, Task, advise_target};
use ebb_proto::{CloseReason, ShutdownNotice, close};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::{Instant, timeout};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// How long the close handshake may take (sending the Close, reading until the server ends
/// TCP): a server that neither reads nor closes cannot hold the client longer.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

type WsError = tungstenite::Error;

impl Task {
    /// Serves one connection until it ends. Whatever is not answered stays pending for the
    /// next one (so even a cancelled session would lose nothing; the task never cancels it).
    pub(crate) async fn serve<S>(&mut self, ws: S, advice: &mut Advice) -> Ending
    where
        S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
    {
        self.answered_here = false;
        let (mut sink, mut stream) = ws.split();
        // Ids to write on this connection, in order; at most everything pending.
        let mut unsent: VecDeque<u64> = self.pending.keys().copied().collect();
        let mut unflushed = false;
        loop {
            let writing = !unsent.is_empty();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Send(id, text)) => {
                        self.queue(id, text);
                        unsent.push_back(id);
                    }
                    Some(Command::Close) | None => {
                        let bye = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                        linger(&mut sink, Some(Message::Close(Some(bye))), &mut stream).await;
                        return Ending::Shutdown;
                    }
                },
                ready = writable(&mut sink, writing), if writing || unflushed => {
                    if ready.is_err() {
                        return Ending::Abnormal;
                    }
                    if !writing {
                        unflushed = false;
                    } else if let Ok(wrote) = self.write_next(&mut sink, &mut unsent) {
                        unflushed |= wrote;
                    } else {
                        return Ending::Abnormal;
                    }
                }
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => self.receive(text.as_str(), advice).await,
                    Some(Ok(Message::Close(frame))) => {
                        // tungstenite queued the answering Close; push it out, let the server end TCP.
                        linger(&mut sink, None, &mut stream).await;
                        return closed(frame);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Ending::Abnormal,
                },
            }
        }
    }

    /// Hands the next still-pending message of `unsent` to `sink`, which has room; `false` when
    /// none was left (all answered meanwhile).
    fn write_next<K>(&mut self, sink: &mut K, unsent: &mut VecDeque<u64>) -> Result<bool, WsError>
    where
        K: Sink<Message, Error = WsError> + Unpin,
    {
        while let Some(id) = unsent.pop_front() {
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            let resend = std::mem::replace(&mut pending.on_wire, true);
            sink.start_send_unpin(Message::Text(pending.text.clone()))?;
            if resend {
                self.stat(|s| s.resent += 1);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// A text from the server: a notice, an answer (each id once), or a push.
    async fn receive(&mut self, text: &str, advice: &mut Advice) {
        if let Some(notice) = ShutdownNotice::decode(text) {
            let advised = Duration::from_millis(notice.reconnect_in);
            let wait = self.config.backoff.advised(advised);
            advice.come_back_at = Some(deadline(Instant::now(), wait));
            advise_target(self, advice, notice.reconnect_to.clone());
            self.stat(|s| s.notices += 1);
            self.emit(Event::Notice(notice)).await;
            return;
        }
        match self.correlate.id_of(text) {
            Some(id) if self.pending.remove(&id).is_some() => {
                self.answered_here = true;
                self.shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                self.stat(|s| s.answered += 1);
                let text = text.to_owned();
                self.emit(Event::Reply { id, text }).await;
            }
            Some(_) => self.stat(|s| s.duplicates += 1),
            None => self.push(text).await,
        }
    }

    /// A push: new (handed on), seen before (dropped), or unnumbered ([`crate::sequence`]).
    async fn push(&mut self, text: &str) {
        let seq = self.correlate.seq_of(text);
        if let Some(seq) = seq {
            match self.sequence.see(seq) {
                Seen::Again => {
                    self.stat(|s| s.push_duplicates += 1);
                    return;
                }
                Seen::AfterHole => self.stat(|s| s.push_gaps += 1),
                Seen::New => {}
            }
        }
        self.stat(|s| s.pushes += 1);
        let text = text.to_owned();
        self.emit(Event::Push { text, seq }).await;
    }
}

/// Resolves when `sink` has room for another message (`more`) or, with nothing more to write,
/// once it has flushed. Holds no message, so dropping it loses nothing.
pub(crate) fn writable<K>(
    sink: &mut K,
    more: bool,
) -> impl Future<Output = Result<(), K::Error>> + '_
where
    K: Sink<Message> + Unpin,
{
    poll_fn(move |cx| {
        if more {
            sink.poll_ready_unpin(cx)
        } else {
            sink.poll_flush_unpin(cx)
        }
    })
}

/// The end of a connection: sends `last` (our Close) or flushes (the answer to the server's
/// Close, already queued), then reads until the server ends TCP, all within [`CLOSE_LINGER`].
async fn linger<K, R>(sink: &mut K, last: Option<Message>, stream: &mut R)
where
    K: Sink<Message, Error = WsError> + Unpin,
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let _ = timeout(CLOSE_LINGER, async {
        let _ = match last {
            Some(message) => sink.send(message).await,
            None => sink.flush().await,
        };
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// The ending a server's Close frame means, with its reason (at most 123 bytes: tungstenite
/// refuses a longer control frame) and what ebb's reason says, if it is one.
fn closed(frame: Option<CloseFrame>) -> Ending {
    match frame {
        Some(f) => Ending::Closed {
            code: u16::from(f.code),
            ebb: CloseReason::decode(f.reason.as_str()),
            text: Some(f.reason.as_str().to_owned()),
        },
        None => Ending::Closed {
            code: close::NORMAL,
            text: None,
            ebb: None,
        },
    }
}
