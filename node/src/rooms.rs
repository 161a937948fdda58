//! Connections grouped by room on this node: join on accept, leave on close, and push one
//! message to every member. Reaching the members on other nodes is the app's business (the chat
//! app relays through Redis pub/sub and calls [`Rooms::broadcast`] on each node).
//!
//! A broadcast clones the message per member (a `tungstenite` text or binary message shares its
//! bytes, so that is a reference count), and a member whose push is refused (closed, or too
//! slow and now being closed) is dropped from the room at once.

use crate::push::Conn;
use std::collections::HashMap;
use std::sync::Mutex;
use tungstenite::Message;

/// Rooms of connections, by name.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, HashMap<u64, Conn>>>,
}

impl Rooms {
    pub fn new() -> Self {
        Rooms::default()
    }

    /// Adds `conn` to `room`.
    pub fn join(&self, room: &str, conn: Conn) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        rooms
            .entry(room.to_owned())
            .or_default()
            .insert(conn.id(), conn);
    }

    /// Removes the connection `id` from `room` (a room left empty is forgotten).
    pub fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// How many connections are in `room`.
    pub fn len(&self, room: &str) -> usize {
        let rooms = self.rooms.lock().expect("rooms lock");
        rooms.get(room).map_or(0, HashMap::len)
    }

    /// Whether no room has a member.
    pub fn is_empty(&self) -> bool {
        self.rooms.lock().expect("rooms lock").is_empty()
    }

    /// Pushes `message` to every member of `room`; returns how many took it.
    pub fn broadcast(&self, room: &str, message: &Message) -> usize {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let Some(members) = rooms.get_mut(room) else {
            return 0;
        };
        members.retain(|_, conn| conn.send(message.clone()).is_ok());
        let delivered = members.len();
        if members.is_empty() {
            rooms.remove(room);
        }
        delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Mailbox;
    use std::sync::Arc;
    use std::time::Duration;

    fn conn(id: u64, limit: usize) -> (Conn, Arc<Mailbox>) {
        let mailbox = Arc::new(Mailbox::default());
        let d = Duration::from_secs(1);
        (Conn::new(id, mailbox.clone(), limit, d, d), mailbox)
    }

    #[tokio::test]
    async fn a_broadcast_reaches_every_member_and_drops_the_closed_and_the_slow() {
        let rooms = Rooms::new();
        let (a, a_box) = conn(1, 10);
        let (b, b_box) = conn(2, 1);
        let (c, c_box) = conn(3, 10);
        rooms.join("r", a);
        rooms.join("r", b);
        rooms.join("other", c);
        assert_eq!(rooms.broadcast("r", &Message::text("one")), 2);
        // b's queue of one is full: the next push overflows it, and it leaves the room.
        assert_eq!(rooms.broadcast("r", &Message::text("two")), 1);
        assert_eq!(rooms.len("r"), 1);
        let a_got = a_box.next().await.pushes;
        assert_eq!(
            Vec::from(a_got),
            [Message::text("one"), Message::text("two")]
        );
        assert!(b_box.next().await.overflowed);
        assert!(c_box.seal().is_empty(), "other rooms hear nothing");
        // A sealed member (its connection ended) is dropped too; the empty room goes.
        a_box.seal();
        assert_eq!(rooms.broadcast("r", &Message::text("three")), 0);
        assert_eq!(rooms.len("r"), 0);
        rooms.leave("other", 3);
        assert!(rooms.is_empty());
        assert_eq!(rooms.broadcast("nobody", &Message::text("x")), 0);
    }
}
