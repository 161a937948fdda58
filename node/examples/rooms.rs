//! A small app on the ebb-node library: rooms on one node, a token checked at the upgrade, the
//! app's own route beside ebb's, and the drain on SIGTERM.
//!
//!     cargo run -p ebb-node --example rooms
//!     websocat 'ws://127.0.0.1:8080/ws?room=lobby&token=ann'    # then type; the room hears it

use axum::routing::get;
use ebb_node::{App, Conn, DrainRequest, Ended, Handshake, Node, NodeConfig, Refusal, Rooms};
use futures_util::future::{Ready, ready};
use std::future::Future;
use tungstenite::Message;

#[derive(Default)]
struct Chat {
    rooms: Rooms,
}

/// Who a connection is, and where.
struct Member {
    name: String,
    room: String,
    conn: Conn,
}

impl App for Chat {
    type State = Member;
    type Reply = Ready<Option<Message>>;

    fn accept(
        &self,
        handshake: &Handshake,
        conn: Conn,
    ) -> impl Future<Output = Result<Member, Refusal>> + Send {
        let member = match (
            handshake.query_param("token"),
            handshake.query_param("room"),
        ) {
            (None, _) => Err(Refusal::unauthorized("?token= required")),
            (_, None) => Err(Refusal::bad_request("?room= required")),
            (Some(name), Some(room)) => {
                self.rooms.join(&room, conn.clone());
                Ok(Member { name, room, conn })
            }
        };
        ready(member)
    }

    fn handle(&self, member: &Member, message: Message) -> Self::Reply {
        if let Message::Text(text) = message {
            let line = Message::text(format!("{}: {}", member.name, text.as_str()));
            self.rooms.broadcast(&member.room, &line);
        }
        ready(None)
    }

    fn closed(&self, member: Member, ended: Ended) {
        self.rooms.leave(&member.room, member.conn.id());
        if ended.by_drain() {
            println!("{} moves to another node", member.name);
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    let routes = axum::Router::new().route("/hello", get(|| async { "hello" }));
    let running = Node::new(NodeConfig::default(), Chat::default()).start_with(listener, routes)?;
    let control = running.control().clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        control.drain(DrainRequest::exit("SIGINT"));
    });
    let report = running.wait().await?;
    println!("drained: {} clean, {} forced", report.clean, report.forced);
    Ok(())
}
