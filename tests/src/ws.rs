//! WebSocket clients for tests: [`Client`] (tokio-tungstenite, well behaved) and [`RawClient`],
//! which speaks RFC 6455 by hand over a TCP stream so it can do what a real client must not
//! (ignore a Close, never answer a ping, announce a huge frame, send invalid UTF-8).

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tungstenite::Message;

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Text(String),
    /// A Close frame with its code and reason (`None` for an empty Close).
    Close(Option<(u16, String)>),
    /// The stream ended or failed without a Close frame: what browsers report as 1006.
    Abnormal(String),
}

/// A well-behaved client.
#[derive(Debug)]
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects, panicking on failure.
    pub async fn connect(url: &str) -> Client {
        Client::try_connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// Connects; the error is what the handshake got (e.g. an HTTP 503).
    pub async fn try_connect(url: &str) -> Result<Client, tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client { ws })
    }

    /// Sends a text message.
    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// The next text, Close or abnormal end, skipping pings and pongs; panics after `limit`.
    pub async fn next(&mut self, limit: Duration) -> Seen {
        self.try_next(limit)
            .await
            .unwrap_or_else(|| panic!("nothing received within {limit:?}"))
    }

    /// Like [`Client::next`], but `None` when nothing arrives within `limit`.
    pub async fn try_next(&mut self, limit: Duration) -> Option<Seen> {
        tokio::time::timeout(limit, async {
            loop {
                return match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => Seen::Text(text.as_str().to_owned()),
                    Some(Ok(Message::Close(frame))) => {
                        // Answer the Close (tungstenite queued the reply; flushing sends it).
                        let _ = self.ws.flush().await;
                        Seen::Close(
                            frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                        )
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Seen::Abnormal(e.to_string()),
                    None => Seen::Abnormal("stream ended".to_owned()),
                };
            }
        })
        .await
        .ok()
    }

    /// Stays connected for `period`, reading (so pings are answered, as a real client does);
    /// panics if anything but pings and pongs arrives.
    pub async fn idle(&mut self, period: Duration) {
        let _ = tokio::time::timeout(period, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("unexpected while idle: {other:?}"),
                }
            }
        })
        .await;
    }

    /// Reads until the Close (or an abnormal end), returning the texts before it, the close, and
    /// when the close arrived.
    pub async fn until_close(&mut self, limit: Duration) -> (Vec<String>, Seen, Instant) {
        let mut texts = Vec::new();
        loop {
            match self.next(limit).await {
                Seen::Text(text) => texts.push(text),
                end => return (texts, end, Instant::now()),
            }
        }
    }

    /// After a Close: waits for the server to end the TCP connection (a clean handshake).
    pub async fn finish(&mut self, limit: Duration) {
        let _ =
            tokio::time::timeout(limit, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// A frame as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub const TEXT: u8 = 0x1;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;

    /// The close code of a Close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == Self::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A client that speaks the protocol by hand.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    /// Opens the TCP connection and performs the upgrade on `/ws`.
    pub async fn connect(addr: std::net::SocketAddr) -> RawClient {
        RawClient::connect_to(addr, "/ws").await
    }

    /// Opens the TCP connection and performs the upgrade on `path` (with its query).
    pub async fn connect_to(addr: std::net::SocketAddr, path: &str) -> RawClient {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write handshake");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            stream.read_exact(&mut byte).await.expect("read handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        RawClient { stream }
    }

    /// Sends one masked frame (FIN set) with `opcode` and `payload`.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.send_header(opcode, payload.len() as u64).await;
        let masked: Vec<u8> = payload.to_vec(); // mask key is zero: XOR leaves the bytes as they are
        let _ = self.stream.write_all(&masked).await;
    }

    /// Sends only a frame header announcing `len` payload bytes (and no payload).
    pub async fn send_header(&mut self, opcode: u8, len: u64) {
        let mut header = vec![0x80 | opcode];
        match len {
            0..=125 => header.push(0x80 | len as u8),
            126..=65535 => {
                header.push(0x80 | 126);
                header.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                header.push(0x80 | 127);
                header.extend_from_slice(&len.to_be_bytes());
            }
        }
        header.extend_from_slice(&[0, 0, 0, 0]);
        let _ = self.stream.write_all(&header).await;
    }

    /// Reads the next frame; `None` when the server ended the TCP connection.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).await.ok()?;
        let opcode = head[0] & 0x0f;
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).await.ok()?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).await.ok()?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some(RawFrame { opcode, payload })
    }

    /// Reads frames until one with `opcode`, panicking after `limit` or at the end of the stream.
    pub async fn read_until(&mut self, opcode: u8, limit: Duration) -> RawFrame {
        tokio::time::timeout(limit, async {
            loop {
                match self.read_frame().await {
                    Some(frame) if frame.opcode == opcode => return frame,
                    Some(_) => continue,
                    None => panic!("connection ended before a frame with opcode {opcode}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no frame with opcode {opcode} within {limit:?}"))
    }

    /// Waits until the server ends the TCP connection (reading and dropping frames); returns how
    /// long that took, or `None` if it did not within `limit`.
    pub async fn wait_for_eof(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        tokio::time::timeout(limit, async { while self.read_frame().await.is_some() {} })
            .await
            .ok()
            .map(|()| start.elapsed())
    }
}
