//! Requests to the coordinator service (`ebb serve`): entries of the Redis Stream
//! [`crate::Keys::requests`], field [`REQUEST_FIELD`], holding
//! `{"v":1,"id":"deploy-42","type":"rolling_restart", ...options}`.
//!
//! The `id` is the idempotency key: a request whose id already has a result is not carried out
//! again. With a secret, a request must be sealed ([`Domain::Request`]) and carry an expiry, so
//! a captured one is worth nothing later; a refused request is answered under its stream entry's
//! id, never under the id it claims (which it could use to pre-empt a genuine request).
//!
//! Options are the rollout flags of `ebb rolling-restart`, durations as humantime strings
//! (`"30s"`). Commands to run (`--exec`, `--check`) are not options: they belong to the
//! operator of the service (`ebb serve --exec ...`), not to whoever can add a request.

use crate::name::{NodeName, validate_name};
use crate::sign::{Domain, Envelope, Secret};
use serde::{Deserialize, Serialize};

/// Format version.
pub const REQUEST_VERSION: u64 = 1;
/// The stream entry's field holding the request.
pub const REQUEST_FIELD: &str = "request";
/// Largest request read, in bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Longest request id, in bytes (it goes into a key).
pub const MAX_REQUEST_ID_LEN: usize = 64;
/// Most nodes a request may name.
pub const MAX_REQUEST_NODES: usize = 10_000;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u64,
    /// Idempotency key: 1 to 64 of `[A-Za-z0-9._-]`.
    pub id: String,
    /// After this (ms since the epoch) it is refused. Required when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(flatten)]
    pub kind: RequestKind,
}

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestKind {
    RollingRestart(RolloutOptions),
}

/// The options of a rolling restart, as `ebb rolling-restart` takes them (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeName>>,
    /// `"2"` or `"25%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_active: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_names: Option<bool>,
    /// `"wait"` or `"abort"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_node_lost: Option<String>,
    /// `"pause"` or `"abort"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_check_fail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<bool>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("larger than {MAX_REQUEST_BYTES} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsigned, and a shared secret is configured")]
    Unsigned,
    #[error("bad signature")]
    BadSignature,
    #[error("expired at {0} ms")]
    Expired(u64),
}

impl RequestError {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RequestError::TooLarge => "too_large",
            RequestError::Malformed(_) => "malformed",
            RequestError::Unsigned => "unsigned",
            RequestError::BadSignature => "bad_signature",
            RequestError::Expired(_) => "expired",
        }
    }
}

impl Request {
    /// A rolling-restart request with `id`.
    pub fn rolling_restart(id: impl Into<String>, options: RolloutOptions) -> Self {
        Request {
            v: REQUEST_VERSION,
            id: id.into(),
            expires_at_ms: None,
            kind: RequestKind::RollingRestart(options),
        }
    }

    /// The stream field's value: plain JSON, or sealed with `secret` (an expiry `ttl_ms` from
    /// now added when missing).
    pub fn encode(&self, secret: Option<&Secret>, ttl_ms: u64) -> String {
        let Some(secret) = secret else {
            return serde_json::to_string(self).expect("a request serializes");
        };
        let mut request = self.clone();
        request
            .expires_at_ms
            .get_or_insert_with(|| crate::time::now_ms().saturating_add(ttl_ms));
        let json = serde_json::to_string(&request).expect("a request serializes");
        secret.seal(Domain::Request, json)
    }

    /// Reads a stream field's value at `now_ms`; with `secret`, only a sealed, unexpired one.
    pub fn decode(
        value: &[u8],
        secret: Option<&Secret>,
        now_ms: u64,
    ) -> Result<Self, RequestError> {
        if value.len() > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge);
        }
        let bad = |e: serde_json::Error| RequestError::Malformed(e.to_string());
        let json: serde_json::Value = serde_json::from_slice(value).map_err(bad)?;
        let request: Request = if json.get("signed").is_some() {
            let envelope: Envelope = serde_json::from_value(json).map_err(bad)?;
            let body = match secret {
                Some(secret) => envelope
                    .open(secret, Domain::Request)
                    .ok_or(RequestError::BadSignature)?,
                None => envelope.signed.as_str(),
            };
            serde_json::from_str(body).map_err(bad)?
        } else if secret.is_some() {
            return Err(RequestError::Unsigned);
        } else {
            serde_json::from_value(json).map_err(bad)?
        };
        request.validate(secret.is_some(), now_ms)?;
        Ok(request)
    }

    fn validate(&self, signed: bool, now_ms: u64) -> Result<(), RequestError> {
        let malformed = |why: &str| Err(RequestError::Malformed(why.to_owned()));
        if self.v != REQUEST_VERSION {
            return malformed(&format!("unknown version {}", self.v));
        }
        if self.id.len() > MAX_REQUEST_ID_LEN || validate_name(&self.id).is_err() {
            return malformed(&format!(
                "id must be 1 to {MAX_REQUEST_ID_LEN} of [A-Za-z0-9._-]"
            ));
        }
        match self.expires_at_ms {
            Some(expires) if expires < now_ms => return Err(RequestError::Expired(expires)),
            None if signed => return malformed("a signed request must carry expires_at_ms"),
            _ => {}
        }
        let RequestKind::RollingRestart(options) = &self.kind;
        if options
            .nodes
            .as_ref()
            .is_some_and(|n| n.len() > MAX_REQUEST_NODES)
        {
            return malformed(&format!("at most {MAX_REQUEST_NODES} nodes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("request-test-secret-0123").unwrap()
    }

    #[test]
    fn a_hand_written_request_reads() {
        let text = r#"{"v":1,"id":"deploy-42","type":"rolling_restart","max_parallel":"25%","settle":"5s","nodes":["a","b"]}"#;
        let request = Request::decode(text.as_bytes(), None, 0).unwrap();
        assert_eq!(request.id, "deploy-42");
        let RequestKind::RollingRestart(options) = request.kind;
        assert_eq!(options.max_parallel.as_deref(), Some("25%"));
        assert_eq!(options.nodes.unwrap().len(), 2);
    }

    #[test]
    fn signed_requests_round_trip_and_forgeries_are_refused() {
        let now = crate::time::now_ms();
        let request = Request::rolling_restart("r1", RolloutOptions::default());
        let sealed = request.encode(Some(&secret()), 60_000);
        assert_eq!(
            Request::decode(sealed.as_bytes(), Some(&secret()), now)
                .unwrap()
                .id,
            "r1"
        );
        let refused =
            |value: &str| Request::decode(value.as_bytes(), Some(&secret()), now).unwrap_err();
        assert_eq!(refused(&request.encode(None, 0)), RequestError::Unsigned);
        let forged = request.encode(Some(&Secret::new("not-the-secret-at-all").unwrap()), 60_000);
        assert_eq!(refused(&forged), RequestError::BadSignature);
        let as_control = secret().seal(Domain::Control, serde_json::to_string(&request).unwrap());
        assert_eq!(refused(&as_control), RequestError::BadSignature);
        assert!(matches!(
            Request::decode(sealed.as_bytes(), Some(&secret()), now + 120_000),
            Err(RequestError::Expired(_))
        ));
    }

    #[test]
    fn bad_requests_say_why() {
        for (text, label) in [
            ("not json", "malformed"),
            (r#"{"v":1,"id":"x","type":"reboot"}"#, "malformed"),
            (r#"{"v":2,"id":"x","type":"rolling_restart"}"#, "malformed"),
            (
                r#"{"v":1,"id":"a b","type":"rolling_restart"}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"id":"x","type":"rolling_restart","exec":"rm -rf /"}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"id":"x","type":"rolling_restart","nodes":["evil;id"]}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"id":"x","type":"rolling_restart","expires_at_ms":1}"#,
                "expired",
            ),
        ] {
            let error = Request::decode(text.as_bytes(), None, 10).unwrap_err();
            assert_eq!(error.label(), label, "{text}: {error}");
        }
        let huge = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(Request::decode(&huge, None, 0), Err(RequestError::TooLarge));
    }
}
