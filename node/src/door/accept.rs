//! The accept loop, ebb's own rather than `axum::serve`'s, for three reasons: axum gives no way to
//! configure hyper's connection builder (no timer, so no header timeout), it logs every failed
//! `accept` at `error` and then sleeps a whole second (nothing is accepted meanwhile, not even a
//! `/health` probe, and nothing is counted), and the door must see each connection before hyper
//! does.
//!
//! Each accept first takes a place in the socket budget (the descriptor limit less the process's
//! own). When every place is taken the loop waits for one to come back rather than accept a
//! connection only to drop it: new connections wait in the kernel's accept queue meanwhile
//! (`--listen-backlog`), and since what holds the places is bounded (WebSocket connections by the
//! capacity, which leaves the reserve; handshakes by the header timeout), the wait is short: a
//! burst beyond the capacity is answered 503 + `Retry-After` one by one as the refusals finish.
//!
//! A failed `accept` is one of two things. The peer gave up before it was accepted
//! (`ECONNABORTED`, and the network errors Linux passes on from a pending connection): the next
//! one is tried at once; each of these consumed a queued connection, so this cannot spin. Or the
//! process or the system is out of something (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) or it is
//! unknown: counted, and the loop backs off for [`ACCEPT_BACKOFF`], because the listener stays
//! readable and an immediate retry would fail again at full speed.

use crate::metrics::DoorEvent;
use nix::errno::Errno;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long the loop waits after `accept` failed for want of a resource: short, so `/health`
/// waits little once descriptors come back; long enough that a persistent EMFILE costs ten
/// system calls a second.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Where connections come from: a [`TcpListener`], or a script in tests.
pub(crate) trait Accept {
    type Io;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Io = TcpStream;
    fn accept(&mut self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// What a failed `accept` is: `None` when only that connection failed (try the next at once).
fn classify(error: &io::Error) -> Option<DoorEvent> {
    let Some(errno) = error.raw_os_error().map(Errno::from_raw) else {
        return match error.kind() {
            io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted => None,
            _ => Some(DoorEvent::AcceptOther),
        };
    };
    match errno {
        Errno::EMFILE => Some(DoorEvent::AcceptEmfile),
        Errno::ENFILE => Some(DoorEvent::AcceptEnfile),
        Errno::ENOBUFS | Errno::ENOMEM => Some(DoorEvent::AcceptNomem),
        // accept(2): Linux passes a pending connection's network error on; retry like EAGAIN.
        Errno::ECONNABORTED
        | Errno::ECONNRESET
        | Errno::EINTR
        | Errno::EPROTO
        | Errno::ENETDOWN
        | Errno::ENOPROTOOPT
        | Errno::EHOSTDOWN
        | Errno::ENONET
        | Errno::EHOSTUNREACH
        | Errno::EOPNOTSUPP
        | Errno::ENETUNREACH
        | Errno::EPERM => None,
        _ => Some(DoorEvent::AcceptOther),
    }
}

/// Accepts until `stop` is cancelled, each connection with a place from `sockets`, handing each
/// to `accepted` and each event worth counting (a wait for a place, a failure, then backing off)
/// to `counted`. Cancel safe.
pub(crate) async fn run<L: Accept>(
    listener: &mut L,
    sockets: &Arc<Semaphore>,
    stop: &CancellationToken,
    mut counted: impl FnMut(DoorEvent),
    mut accepted: impl FnMut(L::Io, SocketAddr, OwnedSemaphorePermit),
) {
    loop {
        let place = match sockets.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                counted(DoorEvent::AcceptPaused);
                tokio::select! {
                    () = stop.cancelled() => return,
                    place = sockets.clone().acquire_owned() => {
                        place.expect("the socket budget is never closed")
                    }
                }
            }
        };
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            result = listener.accept() => result,
        };
        match result {
            Ok((io, peer)) => accepted(io, peer, place),
            Err(error) => {
                let Some(event) = classify(&error) else {
                    tracing::trace!(%error, "a connection failed before it was accepted");
                    continue;
                };
                tracing::debug!(%error, "accept failed; backing off");
                counted(event);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::{Ipv4Addr, SocketAddrV4};

    /// Answers `accept` from a script; when the script ends, with `then` forever.
    struct Script {
        steps: VecDeque<io::Result<u32>>,
        then: fn() -> io::Result<u32>,
        calls: usize,
    }

    impl Accept for Script {
        type Io = u32;
        fn accept(&mut self) -> impl Future<Output = io::Result<(u32, SocketAddr)>> + Send {
            self.calls += 1;
            let next = self.steps.pop_front().unwrap_or_else(self.then);
            let peer = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
            std::future::ready(next.map(|io| (io, peer)))
        }
    }

    fn os(errno: Errno) -> io::Result<u32> {
        Err(io::Error::from_raw_os_error(errno as i32))
    }

    #[tokio::test(start_paused = true)]
    async fn a_persistent_emfile_is_counted_and_backed_off_never_spun() {
        let mut script = Script {
            steps: VecDeque::from([Ok(1)]),
            then: || os(Errno::EMFILE),
            calls: 0,
        };
        let stop = CancellationToken::new();
        let sockets = Arc::new(Semaphore::new(10));
        let (mut errors, mut conns) = (Vec::new(), Vec::new());
        let second = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        };
        let run = run(
            &mut script,
            &sockets,
            &stop,
            |e| errors.push(e),
            |io, _, _| conns.push(io),
        );
        tokio::join!(run, second);
        assert_eq!(conns, [1]);
        // One second of virtual time: one attempt per backoff, not thousands.
        let expected = (Duration::from_secs(1).as_millis() / ACCEPT_BACKOFF.as_millis()) as usize;
        assert!(
            (expected..=expected + 1).contains(&errors.len()),
            "{} errors",
            errors.len()
        );
        assert!(errors.iter().all(|e| *e == DoorEvent::AcceptEmfile));
        assert_eq!(script.calls, errors.len() + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_failed_before_accept_is_skipped_at_once() {
        let mut script = Script {
            steps: VecDeque::from([
                os(Errno::ECONNABORTED),
                os(Errno::EPROTO),
                Ok(7),
                os(Errno::ENFILE),
                os(Errno::ENOBUFS),
                Err(io::Error::other("odd")),
                Ok(8),
            ]),
            then: || Ok(0),
            calls: 0,
        };
        let stop = CancellationToken::new();
        let sockets = Arc::new(Semaphore::new(10));
        let start = tokio::time::Instant::now();
        let (mut errors, mut conns) = (Vec::new(), Vec::new());
        run(
            &mut script,
            &sockets,
            &stop,
            |e| errors.push(e),
            |io, _, _| {
                if io == 8 {
                    stop.cancel();
                }
                conns.push(io);
            },
        )
        .await;
        assert_eq!(conns, [7, 8]);
        assert_eq!(
            errors,
            [
                DoorEvent::AcceptEnfile,
                DoorEvent::AcceptNomem,
                DoorEvent::AcceptOther
            ]
        );
        // Three backoffs, none for the connections that failed before accept.
        assert_eq!(start.elapsed(), ACCEPT_BACKOFF * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_socket_open_it_waits_for_one_to_close_before_accepting() {
        let mut script = Script {
            steps: VecDeque::new(),
            then: || Ok(1),
            calls: 0,
        };
        let stop = CancellationToken::new();
        let sockets = Arc::new(Semaphore::new(2));
        let (places_tx, mut places) = tokio::sync::mpsc::unbounded_channel();
        let mut events = Vec::new();
        let run = run(
            &mut script,
            &sockets,
            &stop,
            |e| events.push(e),
            |_, _, place| {
                places_tx.send(place).unwrap();
            },
        );
        let check = async {
            let first = places.recv().await.unwrap();
            let _second = places.recv().await.unwrap();
            // Both places taken: nothing more is accepted (this script would accept at once),
            // however long.
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(places.try_recv().is_err());
            drop(first);
            let _third = places.recv().await.unwrap();
            stop.cancel();
        };
        tokio::join!(run, check);
        assert_eq!(events, [DoorEvent::AcceptPaused, DoorEvent::AcceptPaused]);
    }
}
