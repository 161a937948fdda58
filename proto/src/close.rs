//! WebSocket close codes ebb uses and the close reason that carries a reconnect hint.
//!
//! A close reason is at most 123 bytes (RFC 6455 §5.5: a control frame's payload is at most 125
//! bytes, two of which are the code). ebb's reason is a small JSON object so any client can read
//! the advised delay: `{"reason":"draining","retry_after_ms":2350}`.

use serde::{Deserialize, Serialize};

/// 1000: normal closure.
pub const NORMAL: u16 = 1000;
/// 1001: going away. The default drain close code.
pub const GOING_AWAY: u16 = 1001;
/// 1002: protocol error.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1006: abnormal closure. Never sent on the wire; what a client reports when TCP ends without a Close.
pub const ABNORMAL: u16 = 1006;
/// 1007: invalid frame payload data (e.g. a text message that is not UTF-8).
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: policy violation.
pub const POLICY_VIOLATION: u16 = 1008;
/// 1009: message too big.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// 1011: internal error.
pub const INTERNAL_ERROR: u16 = 1011;
/// 1012: service restart.
pub const SERVICE_RESTART: u16 = 1012;
/// 4000–4999 are private-use codes. ebb clients treat 4000..=4099 as "do not reconnect".
pub const DO_NOT_RECONNECT: std::ops::RangeInclusive<u16> = 4000..=4099;
/// Longest close reason RFC 6455 allows, in bytes.
pub const MAX_REASON_LEN: usize = 123;

/// The reason text of a drain close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseReason {
    /// Why: `draining` for a drain, `forced` when the deadline cut it short.
    pub reason: String,
    /// How long the client should wait before reconnecting, in milliseconds.
    pub retry_after_ms: u64,
    /// Where the client should reconnect (a node the coordinator chose), when the node was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_to: Option<String>,
}

impl CloseReason {
    /// A drain close advising the client to wait `retry_after_ms` before reconnecting.
    pub fn draining(retry_after_ms: u64) -> Self {
        CloseReason {
            reason: "draining".to_owned(),
            retry_after_ms,
            reconnect_to: None,
        }
    }

    /// A shed close (`ebb rebalance`): the node stays up and sends the client elsewhere,
    /// advising it to wait `retry_after_ms` first.
    pub fn rebalance(retry_after_ms: u64) -> Self {
        CloseReason {
            reason: "rebalance".to_owned(),
            ..CloseReason::draining(retry_after_ms)
        }
    }

    /// The same, sending the client to `url` (dropped at encoding if it does not fit).
    pub fn to(mut self, url: Option<String>) -> Self {
        self.reconnect_to = url;
        self
    }

    /// Whether the whole reason, `reconnect_to` included, fits in [`MAX_REASON_LEN`] bytes (so
    /// [`CloseReason::encode`] keeps every field): a node that sends a notice before the Close
    /// names the target in it only when the Close will carry it too.
    pub fn fits(&self) -> bool {
        serde_json::to_string(self).is_ok_and(|t| t.len() <= MAX_REASON_LEN)
    }

    /// The JSON text sent in the Close frame, at most [`MAX_REASON_LEN`] bytes: a
    /// `reconnect_to` that does not fit is dropped (never cut), then the `reason` word is cut.
    pub fn encode(&self) -> String {
        let mut reason = self.clone();
        if reason.reconnect_to.is_some() && !reason.fits() {
            reason.reconnect_to = None;
        }
        loop {
            let text = serde_json::to_string(&reason).expect("a close reason always serializes");
            if text.len() <= MAX_REASON_LEN || reason.reason.is_empty() {
                return text;
            }
            let mut cut = reason
                .reason
                .len()
                .saturating_sub(text.len() - MAX_REASON_LEN);
            while !reason.reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.reason.truncate(cut);
        }
    }

    /// Reads a close reason; `None` when the text is not ebb's (any other server's reason).
    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_fits() {
        let reason = CloseReason::draining(2350);
        let text = reason.encode();
        assert_eq!(text, r#"{"reason":"draining","retry_after_ms":2350}"#);
        assert_eq!(CloseReason::decode(&text), Some(reason));
        assert!(CloseReason::decode("Server shutting down").is_none());
    }

    #[test]
    fn long_reasons_are_cut_to_123_bytes() {
        let reason = CloseReason {
            reason: "é".repeat(200),
            retry_after_ms: u64::MAX,
            reconnect_to: None,
        };
        let text = reason.encode();
        assert!(text.len() <= MAX_REASON_LEN, "{} bytes", text.len());
        assert_eq!(CloseReason::decode(&text).unwrap().retry_after_ms, u64::MAX);
    }

    #[test]
    fn a_target_that_does_not_fit_is_dropped_not_cut() {
        let url = "ws://ebb-node-12.ebb-node.default.svc:8080/ws".to_owned();
        let reason = CloseReason::draining(2350).to(Some(url.clone()));
        let text = reason.encode();
        assert!(text.len() <= MAX_REASON_LEN, "{text}");
        assert_eq!(CloseReason::decode(&text).unwrap().reconnect_to, Some(url));
        let long = format!("ws://{}/ws", "n".repeat(100));
        let text = CloseReason::draining(u64::MAX).to(Some(long)).encode();
        let back = CloseReason::decode(&text).unwrap();
        assert_eq!(
            (back.reconnect_to, back.reason.as_str()),
            (None, "draining")
        );
    }

    #[test]
    fn a_rebalance_close_names_its_target_when_it_fits() {
        let url = "ws://10.0.0.2:8080/ws".to_owned();
        let reason = CloseReason::rebalance(150).to(Some(url.clone()));
        assert!(reason.fits());
        assert_eq!(
            reason.encode(),
            r#"{"reason":"rebalance","retry_after_ms":150,"reconnect_to":"ws://10.0.0.2:8080/ws"}"#
        );
        // The longest valid target URL (64 bytes) does not fit beside a 3-digit delay.
        let long = format!("ws://{}", "h".repeat(crate::target::MAX_TARGET_URL_LEN - 5));
        let reason = CloseReason::rebalance(150).to(Some(long));
        assert!(!reason.fits());
        assert_eq!(
            CloseReason::decode(&reason.encode()).unwrap().reconnect_to,
            None
        );
    }
}
