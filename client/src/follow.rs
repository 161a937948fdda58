//! Whether to follow a server's reconnect target.
//!
//! A draining (or shedding) ebb node names where the client should reconnect: `reconnect_to` in
//! its Close reason, `reconnectTo` in its notice. That is server input, and a server that could
//! send clients anywhere could point a whole fleet at a victim, or at itself under another name.
//! So a client follows a target only when it is one of its own configured URLs
//! ([`ClientConfig::urls`](crate::ClientConfig::urls)), compared exactly (configure the URLs as
//! the nodes advertise them). [`ClientConfig::follow_any_target`](crate::ClientConfig::follow_any_target)
//! (off by default) widens that to any short printable `ws://` URL, for clients that reach the
//! fleet through a load balancer URL and trust its servers. A target is a hint for one attempt:
//! when it fails, the client falls back to its own choice at once.

use ebb_proto::target::{MAX_TARGET_URL_LEN, Target};

/// Where a followed target points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Goto {
    /// One of the configured URLs, by index.
    Listed(usize),
    /// A URL outside the list (only with `follow_any_target`).
    Other(String),
}

/// Whether an advised target is followed, and where to; `None`: ignored.
pub(crate) fn choose(urls: &[String], follow_any: bool, target: &str) -> Option<Goto> {
    if let Some(i) = urls.iter().position(|url| url == target) {
        return Some(Goto::Listed(i));
    }
    let acceptable = Target {
        url: target.to_owned(),
        weight: 1,
    }
    .validate()
    .is_ok()
        && target.starts_with("ws://");
    (follow_any && acceptable).then(|| Goto::Other(target.to_owned()))
}

/// A target as received, kept only when short enough to be one (so a hostile notice's huge
/// `reconnectTo` costs nothing); `Err` for one that was too long (counted as ignored).
pub(crate) fn keep(target: Option<String>) -> Result<Option<String>, ()> {
    match target {
        Some(url) if url.len() > MAX_TARGET_URL_LEN => Err(()),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Vec<String> {
        vec![
            "ws://10.0.0.1:8080/ws".into(),
            "ws://10.0.0.2:8080/ws".into(),
        ]
    }

    #[test]
    fn only_configured_urls_are_followed_by_default() {
        let urls = urls();
        assert_eq!(
            choose(&urls, false, "ws://10.0.0.2:8080/ws"),
            Some(Goto::Listed(1))
        );
        for hostile in [
            "ws://evil.example:80/ws",
            "ws://10.0.0.2:8080/ws/",
            "WS://10.0.0.2:8080/ws",
            "",
        ] {
            assert_eq!(choose(&urls, false, hostile), None, "{hostile:?}");
        }
    }

    #[test]
    fn follow_any_accepts_short_ws_urls_only() {
        let urls = urls();
        assert_eq!(
            choose(&urls, true, "ws://10.0.0.9:8080/ws"),
            Some(Goto::Other("ws://10.0.0.9:8080/ws".into()))
        );
        // A listed one is still found by index.
        assert_eq!(
            choose(&urls, true, "ws://10.0.0.1:8080/ws"),
            Some(Goto::Listed(0))
        );
        let long = format!("ws://{}/ws", "a".repeat(MAX_TARGET_URL_LEN));
        for bad in [
            "wss://10.0.0.9/ws",
            "http://10.0.0.9/ws",
            "ws://a b/ws",
            long.as_str(),
        ] {
            assert_eq!(choose(&urls, true, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn huge_targets_are_not_kept() {
        assert_eq!(keep(None), Ok(None));
        assert_eq!(keep(Some("ws://a/ws".into())), Ok(Some("ws://a/ws".into())));
        assert_eq!(keep(Some("x".repeat(MAX_TARGET_URL_LEN + 1))), Err(()));
    }
}
