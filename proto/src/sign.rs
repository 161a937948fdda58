//! HMAC-SHA256 signing, shared by every party that holds the cluster's secret.
//!
//! With a shared secret configured, anyone who can PUBLISH to Redis still cannot drain the fleet
//! (nodes refuse commands that are unsigned, badly signed, expired or replayed) nor steer a
//! rollout (the coordinator ignores unsigned events and records). One secret signs several kinds
//! of message, so every signature is bound to a [`Domain`]: an event's signature never verifies
//! as a command's.
//!
//! Messages travel in one envelope, `{"v":1,"signed":"<the body's JSON, as a string>","sig":"<hex
//! HMAC-SHA256>"}` ([`Envelope`]): signing the exact string avoids any JSON canonicalisation
//! question, and the body is parsed only after its signature checked out.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted, in bytes: a shorter one is too easy to guess.
pub const MIN_SECRET_LEN: usize = 16;

/// A shared secret. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// A secret too short to protect anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the shared secret must be at least {MIN_SECRET_LEN} bytes long")]
pub struct WeakSecret;

impl Secret {
    /// Wraps a secret of at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, WeakSecret> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(WeakSecret);
        }
        Ok(Secret(bytes))
    }

    fn mac(&self, domain: Domain) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(domain.tag());
        mac
    }

    /// The lower-case hex HMAC-SHA256 of `message` in `domain`.
    pub fn sign(&self, domain: Domain, message: &[u8]) -> String {
        let mut mac = self.mac(domain);
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `signature_hex` is the HMAC of `message` in `domain`, compared in constant time.
    pub fn verify(&self, domain: Domain, message: &[u8], signature_hex: &str) -> bool {
        if signature_hex.len() != 64 {
            return false;
        }
        let Ok(signature) = hex::decode(signature_hex) else {
            return false;
        };
        let mut mac = self.mac(domain);
        mac.update(message);
        mac.verify_slice(&signature).is_ok()
    }

    /// `body` in a signed [`Envelope`], as JSON.
    pub fn seal(&self, domain: Domain, body: String) -> String {
        let sig = self.sign(domain, body.as_bytes());
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            signed: body,
            sig,
        };
        serde_json::to_string(&envelope).expect("an envelope always serializes")
    }
}

/// What a signature vouches for. The tag is hashed before the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// A command to a node (drain, resume).
    Command,
    /// A node's event on the events channel.
    Event,
    /// A node's record (and its per-instance copy).
    Record,
    /// A request to the coordinator service.
    Request,
    /// A rollout's control value (pause, continue, abort).
    Control,
}

impl Domain {
    fn tag(self) -> &'static [u8] {
        match self {
            Domain::Command => b"ebb-command\0",
            Domain::Event => b"ebb-event\0",
            Domain::Record => b"ebb-record\0",
            Domain::Request => b"ebb-request\0",
            Domain::Control => b"ebb-control\0",
        }
    }
}

/// The version field of an [`Envelope`].
pub const ENVELOPE_VERSION: u64 = 1;

/// A signed message: the body's exact JSON text and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u64,
    pub signed: String,
    pub sig: String,
}

impl Envelope {
    /// The body, if `secret` signed it in `domain`.
    pub fn open(&self, secret: &Secret, domain: Domain) -> Option<&str> {
        secret
            .verify(domain, self.signed.as_bytes(), &self.sig)
            .then_some(self.signed.as_str())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked examples of docs/protocol.md, section 6: a native agent checks itself
    /// against them, so they must stay true.
    #[test]
    fn the_worked_examples_of_the_protocol_document_hold() {
        let secret = Secret::new("an-example-secret-0123").unwrap();
        let command = concat!(
            r#"{"v":1,"id":"deploy-42","cluster":"prod","target":"web-1","#,
            r#""instance":"5f0c8a2e-3b1d-4c6e-9a7f-1d2e3c4b5a69","issued_at_ms":1718000100000,"#,
            r#""expires_at_ms":1718000400000,"nonce":"3e1f0b9c2d4a4e7f8a6b5c4d3e2f1a0b","#,
            r#""type":"drain","then":"exit"}"#
        );
        assert_eq!(
            secret.sign(Domain::Command, command.as_bytes()),
            "fa019c064400055ce22135867656ced63a034c5cc660f0b20c4ccf42cb797220"
        );
        let event = concat!(
            r#"{"v":1,"cluster":"prod","node":"web-1","#,
            r#""instance":"5f0c8a2e-3b1d-4c6e-9a7f-1d2e3c4b5a69","at_ms":1718000100250,"#,
            r#""type":"state","state":"draining","connections":42}"#
        );
        assert_eq!(
            secret.sign(Domain::Event, event.as_bytes()),
            "02cf4966b7643c5a85b20a7204253b3fecc65d16cf6dcdc3cb49163c43d17811"
        );
        let record = concat!(
            r#"["ebb-record-v1","prod","web-1","5f0c8a2e-3b1d-4c6e-9a7f-1d2e3c4b5a69","#,
            r#""ws://10.0.0.1:8080/ws","0.1.0","active","42","10000","1718000000000","#,
            r#""1718000004000","10000"]"#
        );
        assert_eq!(
            secret.sign(Domain::Record, record.as_bytes()),
            "5f177e070ccbba554d427709e69c7ae1da0ab2ea26586525f53d814191aa6c9f"
        );
    }

    #[test]
    fn sign_and_verify() {
        let secret = Secret::new("0123456789abcdef").unwrap();
        let sig = secret.sign(Domain::Command, b"hello");
        assert_eq!(sig.len(), 64);
        assert!(secret.verify(Domain::Command, b"hello", &sig));
        assert!(!secret.verify(Domain::Command, b"hellp", &sig));
        assert!(!secret.verify(Domain::Command, b"hello", "zz"));
        assert!(!secret.verify(Domain::Command, b"hello", &sig[..62]));
        let other = Secret::new("fedcba9876543210").unwrap();
        assert!(!other.verify(Domain::Command, b"hello", &sig));
        assert_eq!(Secret::new("short").unwrap_err(), WeakSecret);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn a_signature_is_bound_to_its_domain() {
        let secret = Secret::new("0123456789abcdef").unwrap();
        let sealed = secret.seal(Domain::Event, r#"{"x":1}"#.to_owned());
        let envelope: Envelope = serde_json::from_str(&sealed).unwrap();
        assert_eq!(envelope.open(&secret, Domain::Event), Some(r#"{"x":1}"#));
        assert_eq!(envelope.open(&secret, Domain::Command), None);
        assert_eq!(envelope.open(&secret, Domain::Record), None);
    }
}
