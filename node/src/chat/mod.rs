//! The reference chat app (`ebb-node --app chat`): rooms that span the cluster through Redis
//! (local to the node without `--redis`), a per-room sequence, and recovery across nodes, so a
//! client that reconnects anywhere with the last `seq` it has resumes exactly where it was. The
//! wire protocol is [`ebb_proto::chat`].
//!
//! Delivery to one member goes through its cursor, the last `seq` it was sent: a message is
//! pushed only if its `seq` is higher, so the same message from the history and from the live
//! relay reaches it once. While a member catches up (a reconnect with `after=N`, or every member
//! after the node's Redis subscription was lost and made again), live messages are held and
//! sent after the history, in order: the relay is subscribed before the history is read, so
//! nothing stored falls between the two.

mod relay;
mod store;

use crate::app::{App, Ended};
use crate::handshake::{Handshake, Refusal};
use crate::push::Conn;
use ebb_proto::Keys;
use ebb_proto::chat::{Ack, ChatError, Gap, Post, RoomMessage, validate_room};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use store::Store;
use tungstenite::Message;

/// Live messages held for one member while it catches up; past this it is closed with 1013
/// (try again later) and resumes elsewhere.
const MAX_HELD: usize = 10_000;
/// How long connecting to Redis and subscribing may take at start.
const REDIS_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The chat app.
#[derive(Debug, Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// This node's members, by room and connection id.
    members: Mutex<HashMap<String, HashMap<u64, Arc<Member>>>>,
}

/// One connection in a room.
#[derive(Debug)]
pub struct Member {
    room: String,
    conn: Conn,
    cursor: Mutex<Cursor>,
    /// Held while one of its posts is stored: the socket loop runs a connection's messages
    /// concurrently, and a sender's posts must be numbered in the order it sent them (the lock
    /// is FIFO, taken at each post's first poll, which comes in arrival order).
    posting: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Cursor {
    /// The last seq sent.
    last: u64,
    catching_up: bool,
    held: Vec<RoomMessage>,
}

impl Chat {
    /// Rooms local to this node.
    pub fn local() -> Chat {
        Chat::with(Store::local())
    }

    /// Rooms that span every chat node of `cluster` on the Redis of `link`: subscribed before
    /// this returns, so the node serves no member before it hears the room.
    pub async fn with_redis(link: ebb_redis::Link, keys: Keys) -> anyhow::Result<Chat> {
        let conn = ebb_redis::Conn::new(link.clone(), REDIS_LIMIT).await?;
        let chat = Chat::with(Store::redis(conn, keys.clone(), link.sharded()));
        let subscription = link.subscribe(&keys.chat_channel(), REDIS_LIMIT).await?;
        tokio::spawn(relay::run(
            Arc::downgrade(&chat.inner),
            link,
            keys.chat_channel(),
            subscription,
        ));
        Ok(chat)
    }

    fn with(store: Store) -> Chat {
        Chat {
            inner: Arc::new(Inner {
                store,
                members: Mutex::default(),
            }),
        }
    }
}

impl Inner {
    /// Sends `message` to every member of its room on this node.
    fn deliver(&self, message: &RoomMessage) {
        let members: Vec<Arc<Member>> = {
            let rooms = self.members.lock().expect("chat members lock");
            let Some(room) = rooms.get(&message.room) else {
                return;
            };
            room.values().cloned().collect()
        };
        for member in members {
            member.deliver(message);
        }
    }

    /// After the relay lost messages (its subscription was made again): every member catches up.
    fn resync(self: &Arc<Self>) {
        let members: Vec<Arc<Member>> = {
            let rooms = self.members.lock().expect("chat members lock");
            rooms.values().flat_map(|r| r.values().cloned()).collect()
        };
        for member in members {
            member.cursor.lock().expect("cursor lock").catching_up = true;
            tokio::spawn(catch_up(self.clone(), member));
        }
    }

    fn leave(&self, member: &Member) {
        let mut rooms = self.members.lock().expect("chat members lock");
        if let Some(room) = rooms.get_mut(&member.room) {
            room.remove(&member.conn.id());
            if room.is_empty() {
                rooms.remove(&member.room);
            }
        }
    }
}

impl Member {
    fn deliver(&self, message: &RoomMessage) {
        let mut cursor = self.cursor.lock().expect("cursor lock");
        if cursor.catching_up {
            if cursor.held.len() < MAX_HELD {
                cursor.held.push(message.clone());
            } else {
                let _ = self.conn.close(1013, "try again later");
            }
            return;
        }
        cursor.send(&self.conn, message);
    }
}

impl Cursor {
    fn send(&mut self, conn: &Conn, message: &RoomMessage) {
        if message.seq > self.last {
            self.last = message.seq;
            let _ = conn.send(Message::text(json(message)));
        }
    }
}

/// Sends the member what the history holds after its cursor, then what was held meanwhile.
async fn catch_up(inner: Arc<Inner>, member: Arc<Member>) {
    let after = member.cursor.lock().expect("cursor lock").last;
    let since = inner.store.since(&member.room, after).await;
    let mut cursor = member.cursor.lock().expect("cursor lock");
    match since {
        Ok(since) => {
            if let Some(gap_from) = since.gap_from.filter(|g| *g > cursor.last) {
                let gap = Gap {
                    room: member.room.clone(),
                    gap_from,
                };
                let _ = member.conn.send(Message::text(json(&gap)));
            }
            for message in &since.messages {
                cursor.send(&member.conn, message);
            }
            let mut held = std::mem::take(&mut cursor.held);
            held.sort_by_key(|m| m.seq);
            for message in &held {
                cursor.send(&member.conn, message);
            }
            cursor.catching_up = false;
        }
        Err(why) => {
            tracing::warn!(%why, room = %member.room, "cannot catch a member up; closing it to resume elsewhere");
            let _ = member.conn.close(1013, "history unavailable");
        }
    }
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("chat messages always serialize")
}

impl App for Chat {
    type State = Arc<Member>;
    type Reply = BoxFuture<'static, Option<Message>>;

    fn accept(
        &self,
        handshake: &Handshake,
        conn: Conn,
    ) -> impl Future<Output = Result<Arc<Member>, Refusal>> + Send {
        let result = (|| {
            let room = handshake
                .query_param("room")
                .ok_or_else(|| Refusal::bad_request("?room= required"))?;
            validate_room(&room).map_err(Refusal::bad_request)?;
            let after = match handshake.query_param("after") {
                None => None,
                Some(n) => Some(n.parse::<u64>().map_err(|_| {
                    Refusal::bad_request("after must be a whole number (the last seq you have)")
                })?),
            };
            let member = Arc::new(Member {
                room: room.clone(),
                conn: conn.clone(),
                cursor: Mutex::new(Cursor {
                    last: after.unwrap_or(0),
                    catching_up: after.is_some(),
                    held: Vec::new(),
                }),
                posting: tokio::sync::Mutex::new(()),
            });
            self.inner
                .members
                .lock()
                .expect("chat members lock")
                .entry(room)
                .or_default()
                .insert(conn.id(), member.clone());
            if after.is_some() {
                tokio::spawn(catch_up(self.inner.clone(), member.clone()));
            }
            Ok(member)
        })();
        std::future::ready(result)
    }

    fn handle(&self, member: &Arc<Member>, message: Message) -> Self::Reply {
        let (inner, member) = (self.inner.clone(), member.clone());
        Box::pin(async move {
            let _in_order = member.posting.lock().await;
            let room = &member.room;
            let text = match message {
                Message::Text(text) => text,
                _ => return Some(error("send text: {\"id\",\"text\"}", None)),
            };
            let post = match Post::parse(text.as_str()) {
                Ok(post) => post,
                Err(why) => return Some(error(&why, None)),
            };
            match inner.store.store(room, &post.id, &post.text).await {
                Ok((seq, stored)) => {
                    if let Some(message) = stored {
                        inner.deliver(&message);
                    }
                    Some(Message::text(json(&Ack { ack: post.id, seq })))
                }
                Err(why) => Some(error(&why, Some(post.id))),
            }
        })
    }

    fn closed(&self, member: Arc<Member>, _: Ended) {
        self.inner.leave(&member);
    }
}

fn error(why: &str, id: Option<String>) -> Message {
    Message::text(json(&ChatError {
        error: why.to_owned(),
        id,
    }))
}
