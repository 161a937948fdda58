//! The reference chat app's wire protocol and its limits (`ebb-node --app chat`), so that any
//! client can speak it and the history in Redis ([`crate::Keys::chat_history`]) is bounded.
//!
//! - connect to `/ws?room=R` ([`validate_room`]), on a reconnect `/ws?room=R&after=N`;
//! - client → server: [`Post`] `{"id":"<unique per sender>","text":"..."}`;
//! - server → sender: [`Ack`] `{"ack":"<id>","seq":N}` once stored; a resent id is not stored
//!   twice and is acked with its original `seq`;
//! - server → every member of R on every node, the sender included: [`RoomMessage`]
//!   `{"room":"R","seq":N,"id":"<id>","text":"..."}`, `seq` per room, increasing by exactly 1;
//! - with `after=N`, first every stored message of R with `seq > N`, then the live ones; when
//!   the history no longer reaches back to `N+1`, one [`Gap`] `{"room":"R","gap_from":N+1}` first;
//! - a post that cannot be taken is answered [`ChatError`] `{"error":"...","id":...}`: nothing
//!   was stored, and the client may send it again with the same id.

use serde::{Deserialize, Serialize};

/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest message id, in bytes.
pub const MAX_POST_ID_LEN: usize = 64;
/// Longest message text, in bytes.
pub const MAX_TEXT_LEN: usize = 4096;
/// Messages kept per room.
pub const HISTORY_LEN: u64 = 1000;
/// How long a message is kept, in milliseconds.
pub const HISTORY_AGE_MS: u64 = 3_600_000;

/// A room name: 1 to 64 bytes of `[A-Za-z0-9._-]`.
pub fn validate_room(room: &str) -> Result<(), String> {
    let ok = !room.is_empty()
        && room.len() <= MAX_ROOM_LEN
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "room must be 1 to {MAX_ROOM_LEN} of [A-Za-z0-9._-]"
        ))
    }
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Post {
    pub id: String,
    pub text: String,
}

impl Post {
    /// Parses and bounds a client's message.
    pub fn parse(text: &str) -> Result<Post, String> {
        let post: Post =
            serde_json::from_str(text).map_err(|e| format!("expected {{\"id\",\"text\"}}: {e}"))?;
        if post.id.is_empty() || post.id.len() > MAX_POST_ID_LEN {
            return Err(format!("id must be 1 to {MAX_POST_ID_LEN} bytes"));
        }
        if post.text.len() > MAX_TEXT_LEN {
            return Err(format!("text must be at most {MAX_TEXT_LEN} bytes"));
        }
        Ok(post)
    }
}

/// The sender's receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub ack: String,
    pub seq: u64,
}

/// A stored message, as every member receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMessage {
    pub room: String,
    pub seq: u64,
    pub id: String,
    pub text: String,
}

/// The history does not reach back to `gap_from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub room: String,
    pub gap_from: u64,
}

/// A post that was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_and_posts_are_bounded() {
        for good in ["a", "room-1", "A.b_c", &"r".repeat(64)] {
            assert!(validate_room(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a:b", "ü", "a*", &"r".repeat(65), "x;rm -rf /"] {
            assert!(validate_room(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Post::parse(r#"{"id":"m1","text":"hi"}"#),
            Ok(Post {
                id: "m1".into(),
                text: "hi".into()
            })
        );
        let long = format!(r#"{{"id":"m1","text":"{}"}}"#, "x".repeat(MAX_TEXT_LEN + 1));
        for bad in [
            "not json",
            r#"{"id":"","text":"x"}"#,
            r#"{"id":"m1"}"#,
            r#"{"id":"m1","text":"x","extra":1}"#,
            &long,
        ] {
            assert!(Post::parse(bad).is_err(), "{bad}");
        }
    }
}
