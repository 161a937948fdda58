//! HMAC-SHA256 signing of commands, shared by the coordinator (signs) and the node (verifies).
//!
//! With a shared secret configured, anyone who can PUBLISH to Redis still cannot drain the fleet:
//! the node refuses what is unsigned, badly signed, expired or replayed.

use hmac::{Hmac, KeyInit, Mac};
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

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }

    /// The lower-case hex HMAC-SHA256 of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `signature_hex` is the HMAC of `message`, compared in constant time.
    pub fn verify(&self, message: &[u8], signature_hex: &str) -> bool {
        let Ok(signature) = hex::decode(signature_hex) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(message);
        mac.verify_slice(&signature).is_ok()
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

    #[test]
    fn sign_and_verify() {
        let secret = Secret::new("0123456789abcdef").unwrap();
        let sig = secret.sign(b"hello");
        assert_eq!(sig.len(), 64);
        assert!(secret.verify(b"hello", &sig));
        assert!(!secret.verify(b"hellp", &sig));
        assert!(!secret.verify(b"hello", "zz"));
        let other = Secret::new("fedcba9876543210").unwrap();
        assert!(!other.verify(b"hello", &sig));
        assert_eq!(Secret::new("short").unwrap_err(), WeakSecret);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }
}
