//! `plain-echo`: the baseline for ebb's benchmarks — a plain tokio-tungstenite echo server with
//! no drain, no tracking, no metrics, and the same per-connection buffer sizes as `ebb-node`, so
//! the difference between the two is what ebb's bookkeeping costs.
//!
//! Usage: `plain-echo [ADDR]` (default 127.0.0.1:0); prints `listening on ADDR` on stdout.

use futures_util::{SinkExt, StreamExt};
use tungstenite::Message;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                let reply = match message {
                    Message::Text(text) => Message::text(format!("Echo: {}", text.as_str())),
                    Message::Binary(data) => Message::Binary(data),
                    Message::Close(_) => break,
                    _ => continue,
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
        });
    }
}
