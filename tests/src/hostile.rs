//! Small hostile servers for client tests, on 127.0.0.1: [`Hostile::refusing`] answers every
//! upgrade with raw HTTP of the test's choosing (a 503 with an absurd `Retry-After`), and
//! [`Hostile::upgrading`] accepts the upgrade (tokio-tungstenite) and then runs the test's
//! script (a notice, a flood of pushes, a Close with any reason). They are servers, not mocks:
//! the client under test speaks to them over real TCP. Dropping one stops it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;

/// Largest request head a [`Hostile::refusing`] server reads.
const MAX_HEAD: usize = 16 * 1024;
/// How long it waits for one.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A running hostile server.
#[derive(Debug)]
pub struct Hostile {
    pub addr: SocketAddr,
    /// When each connection was accepted.
    hits: Arc<Mutex<Vec<Instant>>>,
    /// The accept loop and every connection's task; dropped (aborted) with the server.
    _tasks: JoinSet<()>,
}

/// An address on 127.0.0.1 nothing listens on (a node can be started there later).
pub fn unused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

impl Hostile {
    /// Reads each request's head and answers `response` (raw HTTP, written as is), then closes.
    pub async fn refusing(response: &str) -> Hostile {
        let response = Arc::new(response.to_owned());
        Hostile::serve(move |mut tcp| {
            let response = response.clone();
            async move {
                let _ = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut tcp)).await;
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.shutdown().await;
            }
        })
        .await
    }

    /// Accepts each upgrade and hands the connection to `script`.
    pub async fn upgrading<F, Fut>(script: F) -> Hostile
    where
        F: Fn(WebSocketStream<TcpStream>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let script = Arc::new(script);
        Hostile::serve(move |tcp| {
            let script = script.clone();
            async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    script(ws).await;
                }
            }
        })
        .await
    }

    async fn serve<F, Fut>(handle: F) -> Hostile
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let seen = hits.clone();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                seen.lock().unwrap().push(Instant::now());
                connections.spawn(handle(tcp));
            }
        });
        Hostile {
            addr,
            hits,
            _tasks: tasks,
        }
    }

    /// `ws://<addr>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// When each connection so far was accepted.
    pub fn hits(&self) -> Vec<Instant> {
        self.hits.lock().unwrap().clone()
    }
}

/// Reads up to the blank line that ends an HTTP request head (at most [`MAX_HEAD`] bytes).
async fn read_head(tcp: &mut TcpStream) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
}
