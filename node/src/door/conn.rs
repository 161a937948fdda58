//! One HTTP connection, served by hyper's HTTP/1 connection builder with what `axum::serve`
//! leaves out: a timer, and so hyper's own `header_read_timeout`, which runs from the moment hyper
//! starts waiting for a request head (the connection's start, or the end of the previous request)
//! until the whole head has arrived. A client that sends half an upgrade request, or nothing, is
//! closed when it passes; `upgrade.rs`'s handshake is an ordinary request to hyper, so it is
//! covered too. Upgrades are served (`with_upgrades`), and the exit asks the connection to finish
//! its request and close (hyper's graceful shutdown), as `axum::serve` does.

use super::{Admitted, DoorEvent};
use crate::app::App;
use crate::shared::Shared;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// A socket with its place in the socket budget: the permit lives exactly as long as the
/// descriptor, through an upgrade into the WebSocket's task.
#[derive(Debug)]
pub(crate) struct Held<T> {
    io: T,
    _socket: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Serves one connection until it closes, is upgraded, or (after `exit`) has finished.
pub(crate) async fn serve<A: App>(
    tcp: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    router: Router,
    header_timeout: Duration,
    shared: Arc<Shared<A>>,
    exit: CancellationToken,
) {
    let Admitted { socket, handshake } = admitted;
    let io = TokioIo::new(Held {
        io: tcp,
        _socket: socket,
    });
    // Whether a request head ever arrived: a keep-alive connection left idle past the timeout
    // is closed the same way, but it is no slow client.
    let served = Arc::new(AtomicBool::new(false));
    let tower = TowerToHyperService::new(router);
    let service = {
        let served = served.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            served.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(ConnectInfo(peer));
            tower.call(request)
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = exit.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    drop(handshake);
    match result {
        Ok(()) => {}
        Err(error) if error.is_timeout() && !served.load(Ordering::Relaxed) => {
            shared.door.refused(DoorEvent::HeaderTimeout);
        }
        Err(error) if error.is_timeout() => {
            tracing::trace!(%peer, "idle keep-alive connection closed at the header timeout");
        }
        Err(error) => tracing::trace!(%peer, %error, "HTTP connection failed"),
    }
}
