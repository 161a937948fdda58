//! Opening one WebSocket connection, from a chosen source address when asked.

use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;

/// A client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("TCP connect to {addr} failed: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The server answered the upgrade with an HTTP status (e.g. 503 while draining).
    /// `retry_after` is the header's whole seconds as sent (any size: the client caps it).
    #[error("upgrade refused with HTTP {status}")]
    Refused {
        status: u16,
        retry_after: Option<std::time::Duration>,
    },
    #[error("WebSocket handshake failed: {0}")]
    Handshake(tungstenite::Error),
}

/// The host:port of a `ws://` URL, resolved.
pub async fn resolve(url: &str) -> Result<SocketAddr, ConnectError> {
    let bad = |reason: &str| ConnectError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let request = url.into_client_request().map_err(|e| bad(&e.to_string()))?;
    let uri = request.uri();
    if uri.scheme_str() != Some("ws") {
        return Err(bad("only ws:// URLs are supported"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| bad(&e.to_string()))?
        .next()
        .ok_or_else(|| bad("host resolves to nothing"))
}

/// Connects to `url` (already resolved to `addr`), from `source` when given, with `config`.
pub async fn connect(
    url: &str,
    addr: SocketAddr,
    source: Option<IpAddr>,
    config: WebSocketConfig,
) -> Result<Ws, ConnectError> {
    let tcp = |source: std::io::Error| ConnectError::Tcp { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(tcp)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(tcp)?;
    }
    let stream = socket.connect(addr).await.map_err(tcp)?;
    stream.set_nodelay(true).map_err(tcp)?;
    match tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(ConnectError::Refused {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get(http_retry_after())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(std::time::Duration::from_secs),
        }),
        Err(e) => Err(ConnectError::Handshake(e)),
    }
}

fn http_retry_after() -> &'static str {
    "retry-after"
}

/// A small-buffer configuration for clients that hold many idle connections.
pub fn lean_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}
