//! How a client's messages carry their ids, so replies can be matched and duplicates dropped,
//! and how an app's pushes carry their sequence numbers, so a reconnect resumes after the last
//! one and a push seen twice is dropped.
//!
//! [`Echo`] is the correlation for ebb's echo app (`<id> <payload>`, answered `Echo: <id>
//! <payload>`); [`Chat`] is the one for ebb's chat app (`ebb-node --app chat`,
//! [`ebb_proto::chat`]).

use ebb_proto::chat::{Ack, RoomMessage};

/// Tags outgoing messages with their id and finds the id in a reply.
pub trait Correlate: Send + Sync + 'static {
    /// The text sent for message `id`.
    fn tag(&self, id: u64, payload: &str) -> String;
    /// The id a reply answers, or `None` for a text that answers nothing (a push, a notice).
    fn id_of(&self, reply: &str) -> Option<u64>;
    /// The sequence number of a push, when the app numbers them.
    fn seq_of(&self, push: &str) -> Option<u64> {
        let _ = push;
        None
    }
    /// The URL of a reconnect that has seen every push up to `last_seq`.
    fn resume(&self, url: &str, last_seq: u64) -> String {
        let _ = last_seq;
        url.to_owned()
    }
}

/// Correlation for ebb's chat app: a message is posted as `{"id":"<sender>-<n>","text":...}`,
/// answered by its `{"ack":...,"seq":N}`; room messages are pushes numbered by their `seq`; a
/// reconnect asks for `after=<last seq>` (the URL carries `?room=R`).
#[derive(Debug, Clone)]
pub struct Chat {
    sender: String,
}

impl Chat {
    /// `sender` makes this client's ids unique in the room (1 to 40 bytes; a UUID does).
    pub fn new(sender: impl Into<String>) -> Self {
        Chat {
            sender: sender.into(),
        }
    }
}

impl Correlate for Chat {
    fn tag(&self, id: u64, payload: &str) -> String {
        serde_json::json!({ "id": format!("{}-{id}", self.sender), "text": payload }).to_string()
    }

    fn id_of(&self, reply: &str) -> Option<u64> {
        let ack: Ack = serde_json::from_str(reply).ok()?;
        ack.ack
            .strip_prefix(&self.sender)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    fn seq_of(&self, push: &str) -> Option<u64> {
        serde_json::from_str::<RoomMessage>(push)
            .ok()
            .map(|m| m.seq)
    }

    fn resume(&self, url: &str, last_seq: u64) -> String {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut params: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("after="))
            .collect();
        let after = format!("after={last_seq}");
        params.push(&after);
        format!("{base}?{}", params.join("&"))
    }
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
    fn chat_posts_carry_the_senders_ids_and_a_reconnect_resumes_after_the_last_seq() {
        let chat = Chat::new("c7");
        let sent: serde_json::Value = serde_json::from_str(&chat.tag(3, "hi \"there\"")).unwrap();
        assert_eq!(sent, serde_json::json!({"id":"c7-3","text":"hi \"there\""}));
        assert_eq!(chat.id_of(r#"{"ack":"c7-3","seq":12}"#), Some(3));
        assert_eq!(
            chat.id_of(r#"{"ack":"c70-3","seq":12}"#),
            None,
            "another sender's"
        );
        assert_eq!(
            chat.id_of(r#"{"room":"r","seq":1,"id":"c7-3","text":"x"}"#),
            None
        );
        assert_eq!(
            chat.seq_of(r#"{"room":"r","seq":41,"id":"x","text":"y"}"#),
            Some(41)
        );
        assert_eq!(chat.seq_of(r#"{"room":"r","gap_from":3}"#), None);
        assert_eq!(
            chat.resume("ws://h:1/ws?room=r&after=2", 9),
            "ws://h:1/ws?room=r&after=9"
        );
        assert_eq!(chat.resume("ws://h:1/ws", 9), "ws://h:1/ws?after=9");
        assert_eq!(Echo.resume("ws://h:1/ws", 9), "ws://h:1/ws");
    }

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
