//! How a client's messages carry their ids, so replies can be matched and duplicates dropped.
//!
//! The client sends every message as `<id> <payload>`; the app must echo the id in its reply.
//! [`Echo`] is the correlation for ebb's reference app, which replies `Echo: <message>`.

/// Tags outgoing messages with their id and finds the id in a reply.
pub trait Correlate: Send + Sync + 'static {
    /// The text sent for message `id`.
    fn tag(&self, id: u64, payload: &str) -> String;
    /// The id a reply answers, or `None` for a text that answers nothing (a push, a notice).
    fn id_of(&self, reply: &str) -> Option<u64>;
}

/// Correlation for ebb's echo app: sends `<id> <payload>`, reads `Echo: <id> <payload>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Correlate for Echo {
    fn tag(&self, id: u64, payload: &str) -> String {
        format!("{id} {payload}")
    }

    fn id_of(&self, reply: &str) -> Option<u64> {
        let rest = reply.strip_prefix("Echo: ")?;
        let end = rest.find(' ').unwrap_or(rest.len());
        rest[..end].parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip() {
        let sent = Echo.tag(42, "hello world");
        assert_eq!(sent, "42 hello world");
        assert_eq!(Echo.id_of(&format!("Echo: {sent}")), Some(42));
        assert_eq!(Echo.id_of("Echo: 7"), Some(7));
        assert_eq!(Echo.id_of(r#"{"type":"server_shutdown"}"#), None);
        assert_eq!(Echo.id_of("Echo: x y"), None);
    }
}
