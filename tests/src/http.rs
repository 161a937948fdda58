//! A minimal real HTTP/1.1 client (hyper, one connection per request).

use bytes::Bytes;
pub use http::Method;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// A response, read whole.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends one request; `Err` when the server cannot be reached.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    bearer: Option<&str>,
) -> std::io::Result<Response> {
    send(addr, method, path, bearer, Bytes::new()).await
}

/// `POST path` with a body and an optional bearer token, panicking if the server cannot be
/// reached.
pub async fn post_body(addr: SocketAddr, path: &str, bearer: Option<&str>, body: &str) -> Response {
    send(
        addr,
        Method::POST,
        path,
        bearer,
        Bytes::from(body.to_owned()),
    )
    .await
    .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Bytes,
) -> std::io::Result<Response> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    if let Some(token) = bearer {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(http_body_util::Full::new(body))
        .expect("a valid request");
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `GET path`, panicking if the server cannot be reached.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, Method::GET, path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `POST path` with an optional bearer token.
pub async fn post(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Response {
    request(addr, Method::POST, path, bearer)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Reads one sample of a Prometheus text exposition, e.g. `ebb_closes_total{kind="drain_clean"}`.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
}
