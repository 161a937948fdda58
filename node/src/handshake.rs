//! What the app sees of an upgrade request before it is answered, and how it says no.
//!
//! The request is checked and seated by the door first (node state, handshake headers, capacity,
//! per-address limit); only then does the app look, so a refusal costs the app one call and the
//! client one HTTP answer: it is never upgraded and then closed.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri};
use std::net::SocketAddr;

/// The upgrade request, as the app sees it.
#[derive(Debug, Clone)]
pub struct Handshake {
    uri: Uri,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
}

impl Handshake {
    pub(crate) fn new(uri: Uri, headers: HeaderMap, peer: Option<SocketAddr>) -> Self {
        Handshake { uri, headers, peer }
    }

    /// The request path (`/ws`).
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// The first value of query parameter `name`, percent-decoded (`None` when absent or not
    /// valid UTF-8 once decoded).
    pub fn query_param(&self, name: &str) -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(self.query()?)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The request headers (`Authorization`, `Cookie`, `Origin`...).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The TCP peer (a proxy's address behind one: read its forwarding header instead).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
}

/// An upgrade the app refuses: a 4xx status and a short text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    /// A refusal with `status`, which must be a client error (4xx): anything else is answered
    /// 403, since only the client can be at fault for an upgrade the app turns down.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::FORBIDDEN
        };
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    /// 401: no valid credentials.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Refusal::new(StatusCode::UNAUTHORIZED, reason)
    }

    /// 403: credentials, but not for this.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Refusal::new(StatusCode::FORBIDDEN, reason)
    }

    /// 400: a request the app cannot use (a bad query parameter).
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, reason)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, self.reason).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded_and_refusals_stay_client_errors() {
        let hs = Handshake::new(
            "/ws?room=a%20b&after=7&room=second".parse().unwrap(),
            HeaderMap::new(),
            None,
        );
        assert_eq!(hs.path(), "/ws");
        assert_eq!(hs.query_param("room").as_deref(), Some("a b"));
        assert_eq!(hs.query_param("after").as_deref(), Some("7"));
        assert_eq!(hs.query_param("none"), None);
        let bare = Handshake::new("/ws".parse().unwrap(), HeaderMap::new(), None);
        assert_eq!(bare.query_param("room"), None);
        assert_eq!(
            Refusal::new(StatusCode::OK, "x").status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "x").status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            Refusal::new(StatusCode::TOO_MANY_REQUESTS, "x").status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
