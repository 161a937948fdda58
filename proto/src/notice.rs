//! The shutdown notice a draining node may send every client before closing it.
//!
//! The format is the seed article's, so clients written for it keep working:
//! `{"type":"server_shutdown","message":...,"reconnectIn":ms,"timestamp":ms}`.
//! `reconnectIn` is this client's own advised delay, counted from the notice: the time until the
//! node will close it plus the delay its close reason will advise.

use serde::{Deserialize, Serialize};

/// The `type` field of a notice.
pub const NOTICE_TYPE: &str = "server_shutdown";

/// A `server_shutdown` notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownNotice {
    /// Always [`NOTICE_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable text.
    pub message: String,
    /// Milliseconds from now until the client should reconnect.
    #[serde(rename = "reconnectIn")]
    pub reconnect_in: u64,
    /// When the notice was sent, ms since the epoch.
    pub timestamp: u64,
    /// Where to reconnect (the same target the Close reason will carry), when there is one.
    #[serde(
        rename = "reconnectTo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub reconnect_to: Option<String>,
}

impl ShutdownNotice {
    /// A notice advising a reconnect in `reconnect_in` ms.
    pub fn new(message: impl Into<String>, reconnect_in: u64, timestamp: u64) -> Self {
        ShutdownNotice {
            kind: NOTICE_TYPE.to_owned(),
            message: message.into(),
            reconnect_in,
            timestamp,
            reconnect_to: None,
        }
    }

    /// The JSON text frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a notice always serializes")
    }

    /// Reads a text message as a notice; `None` for anything else (application messages).
    pub fn decode(text: &str) -> Option<Self> {
        if !text.contains(NOTICE_TYPE) {
            return None;
        }
        serde_json::from_str::<ShutdownNotice>(text)
            .ok()
            .filter(|n| n.kind == NOTICE_TYPE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_format() {
        let notice = ShutdownNotice::new("restarting", 1500, 1_700_000_000_000);
        let json: serde_json::Value = serde_json::from_str(&notice.encode()).unwrap();
        assert_eq!(json["type"], "server_shutdown");
        assert_eq!(json["message"], "restarting");
        assert_eq!(json["reconnectIn"], 1500);
        assert_eq!(json["timestamp"], 1_700_000_000_000u64);
        assert_eq!(ShutdownNotice::decode(&notice.encode()), Some(notice));
        assert_eq!(ShutdownNotice::decode("Echo: hi"), None);
        assert_eq!(ShutdownNotice::decode(r#"{"type":"other"}"#), None);
    }
}
