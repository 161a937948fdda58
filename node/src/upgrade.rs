//! `GET /ws`: the WebSocket upgrade, refused with 503 + `Retry-After` unless the node is active,
//! and by the door's limits (503 + `Retry-After` at capacity, 429 + `Retry-After` past the
//! per-address limit) before anything is answered 101: a refused client is never accepted and
//! then closed. The seat it gets is held by its socket task, so it comes back when the task ends.
//! Then the app looks at the request ([`App::accept`]): its refusal (401, 403, ...) is answered
//! instead of the upgrade, and its state rides with the socket task, handed back to
//! [`App::closed`] at the end.
//!
//! ebb performs the upgrade itself (a few header checks, `Sec-WebSocket-Accept`, hyper's
//! `OnUpgrade`) instead of using axum's `WebSocketUpgrade`, because axum's `WebSocket` hides the
//! underlying stream: after closing a connection for a bad frame, the node must keep reading the
//! raw socket for a moment (a lingering close), or the kernel answers the client's unread bytes
//! with a RST that can destroy the Close frame before the client reads it.

use crate::app::App;
use crate::handshake::Handshake;
use crate::push::Conn;
use crate::shared::Shared;
use crate::socket::{self, Outcome};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::Role;

/// Most bytes read and discarded while lingering after a rejection.
const LINGER_MAX_BYTES: usize = 1 << 20;

pub(crate) async fn handler<A: App>(
    State(shared): State<Arc<Shared<A>>>,
    mut request: Request,
) -> Response {
    let state = shared.state();
    if state != ebb_proto::NodeState::Active {
        shared.metrics.upgrade_refused();
        let retry_after = shared.config.drain.retry_after_secs();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, retry_after.to_string())],
            axum::Json(serde_json::json!({ "status": state.as_str() })),
        )
            .into_response();
    }
    let accept = match accept_key(request.headers()) {
        Ok(accept) => accept,
        Err(error) => return error.into_response(),
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let seat = match shared.door.seat(peer.map(|addr| addr.ip())) {
        Ok(seat) => seat,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "connection cannot be upgraded",
        )
            .into_response();
    };

    // Registered before answering 101, so a drain that starts now includes this connection.
    let (mailbox, guard) = shared.registry.register();
    let handshake = Handshake::new(request.uri().clone(), request.headers().clone(), peer);
    let conn = Conn::new(
        guard.id(),
        mailbox.clone(),
        shared.config.connection.push_queue,
        shared.config.drain.inflight_timeout,
        shared.config.drain.close_timeout,
    );
    let state = match shared.app.accept(&handshake, conn).await {
        Ok(state) => state,
        Err(refusal) => {
            shared.metrics.app_refused();
            return refusal.into_response();
        }
    };
    let terminate = shared.terminate_token();
    let task_shared = shared.clone();
    shared.sockets.spawn(async move {
        let shared = task_shared;
        let _guard = guard;
        let _seat = seat;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                mailbox.seal();
                shared.app.closed(state, crate::app::Ended::Gone);
                return;
            }
        };
        let config = &shared.config.connection;
        let mut ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(config.websocket()),
        )
        .await;
        let outcome = socket::run(
            &mut ws,
            socket::Context {
                app: &shared.app,
                state: &state,
                mailbox: &mailbox,
                terminate: &terminate,
                config,
                metrics: &shared.metrics,
            },
        )
        .await;
        mailbox.seal();
        shared.record(outcome);
        shared.app.closed(state, outcome.ended());
        if let Outcome::Rejected { .. } = outcome {
            linger(ws.get_mut(), shared.config.drain.close_timeout).await;
        }
    });

    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
        .header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .expect("static headers are valid")
}

/// Why an upgrade request is not a WebSocket handshake ebb accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// No `Connection: upgrade` / `Upgrade: websocket`.
    NotWebSocket,
    /// `Sec-WebSocket-Version` is not 13.
    BadVersion,
    /// No `Sec-WebSocket-Key`.
    MissingKey,
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        match self {
            HandshakeError::NotWebSocket => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket")],
                "this endpoint speaks WebSocket only",
            )
                .into_response(),
            HandshakeError::BadVersion => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "unsupported WebSocket version",
            )
                .into_response(),
            HandshakeError::MissingKey => {
                (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key").into_response()
            }
        }
    }
}

/// Checks an upgrade request (RFC 6455 §4.2.1) and returns the `Sec-WebSocket-Accept` value.
fn accept_key(headers: &HeaderMap) -> Result<String, HandshakeError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(HandshakeError::NotWebSocket);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(HandshakeError::BadVersion);
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => {
            Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
        }
        _ => Err(HandshakeError::MissingKey),
    }
}

/// A lingering close: after our Close frame, send FIN and read (and drop) what the client still
/// sends until it closes or `limit` passes, so the kernel never answers unread data with a RST
/// that could destroy the Close frame in flight.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        let _ = io.shutdown().await;
        // On the heap: a buffer here would sit in every idle connection's task.
        let mut scratch = vec![0u8; 2048];
        let mut total = 0;
        while total < LINGER_MAX_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn accepts_a_valid_handshake() {
        // The example of RFC 6455 §1.3.
        let h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert_eq!(accept_key(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refuses_bad_handshakes() {
        let no_upgrade = headers(&[("sec-websocket-version", "13")]);
        assert_eq!(accept_key(&no_upgrade), Err(HandshakeError::NotWebSocket));
        let old = headers(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "8"),
        ]);
        assert_eq!(accept_key(&old), Err(HandshakeError::BadVersion));
        let no_key = headers(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
        ]);
        assert_eq!(accept_key(&no_key), Err(HandshakeError::MissingKey));
        assert_eq!(
            HandshakeError::BadVersion.into_response().status(),
            StatusCode::UPGRADE_REQUIRED
        );
    }
}
