//! A real application on the ebb-node library, over real TCP: an app that authenticates the
//! upgrade, keeps per-connection state, groups connections in rooms, pushes, serves its own
//! route beside `/ws`, and hears how each connection ended. What the library promises it:
//! a refusal is an HTTP answer before any upgrade; a push reaches the room's members in order;
//! pushes queued before a drain arrive before its Close, and fail after it; a client that stops
//! reading is closed as too slow with the app's queue bounded.

use axum::routing::get;
use ebb_node::config::{ConnectionConfig, DrainConfig, NodeConfig};
use ebb_node::{App, Conn, DrainRequest, Ended, Handshake, Node, PushError, Refusal, Rooms};
use ebb_tests::ws::{Client, RawClient, Seen};
use ebb_tests::{eventually, http};
use futures_util::future::{Ready, ready};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// What the app saw, for the test to read.
#[derive(Default)]
struct Board {
    rooms: Rooms,
    ended: Mutex<Vec<(String, Ended)>>,
    draining: Mutex<bool>,
    conns: Mutex<Vec<Conn>>,
    /// The flood's pushes taken, and the error that stopped it.
    flood: Mutex<Option<(u64, PushError)>>,
    /// What each accepted upgrade looked like: its path and its peer.
    seen: Mutex<Vec<(String, Option<std::net::SocketAddr>)>>,
}

/// Per connection: who, where, and the push handle.
struct Member {
    user: String,
    room: String,
    conn: Conn,
}

#[derive(Clone, Default)]
struct Chatty(Arc<Board>);

impl App for Chatty {
    type State = Member;
    type Reply = Ready<Option<Message>>;

    fn accept(
        &self,
        handshake: &Handshake,
        conn: Conn,
    ) -> impl Future<Output = Result<Member, Refusal>> + Send {
        let token = handshake.query_param("token").or_else(|| {
            let header = handshake.headers().get("authorization")?.to_str().ok()?;
            header.strip_prefix("Bearer ").map(str::to_owned)
        });
        let result = match token.as_deref() {
            None => Err(Refusal::unauthorized("a token, please")),
            Some("banned") => Err(Refusal::forbidden("not you")),
            Some(user) => {
                let seen = (handshake.path().to_owned(), handshake.peer());
                self.0.seen.lock().unwrap().push(seen);
                let room = handshake
                    .query_param("room")
                    .unwrap_or_else(|| "lobby".into());
                // Pushed before the upgrade is even answered: it waits, and goes first.
                conn.send(Message::text(format!("welcome {user} to {room}")))
                    .expect("a fresh connection takes a push");
                self.0.rooms.join(&room, conn.clone());
                self.0.conns.lock().unwrap().push(conn.clone());
                Ok(Member {
                    user: user.to_owned(),
                    room,
                    conn,
                })
            }
        };
        ready(result)
    }

    fn handle(&self, member: &Member, message: Message) -> Self::Reply {
        let text = message.into_text().unwrap_or_default();
        let words: Vec<&str> = text.split(' ').collect();
        match words.as_slice() {
            ["say", rest @ ..] => {
                let line = Message::text(format!("{}: {}", member.user, rest.join(" ")));
                self.0.rooms.broadcast(&member.room, &line);
                ready(None)
            }
            ["pushes", n] => {
                for i in 0..n.parse::<u64>().unwrap() {
                    member
                        .conn
                        .send(Message::text(format!("push {i}")))
                        .unwrap();
                }
                ready(None)
            }
            ["flood", size] => {
                // From another task, as a live feed would: the socket writes meanwhile.
                let (conn, board) = (member.conn.clone(), self.0.clone());
                let payload = "x".repeat(size.parse().unwrap());
                tokio::spawn(async move {
                    let mut taken = 0;
                    let error = loop {
                        match conn.send(Message::text(payload.clone())) {
                            Ok(()) => taken += 1,
                            Err(e) => break e,
                        }
                        tokio::task::yield_now().await;
                    };
                    *board.flood.lock().unwrap() = Some((taken, error));
                });
                ready(None)
            }
            _ => ready(Some(Message::text(format!("{} said {text}", member.user)))),
        }
    }

    fn closed(&self, member: Member, ended: Ended) {
        self.0.rooms.leave(&member.room, member.conn.id());
        self.0.ended.lock().unwrap().push((member.user, ended));
    }

    fn draining(&self) {
        *self.0.draining.lock().unwrap() = true;
    }
}

fn config(push_queue: usize) -> NodeConfig {
    NodeConfig {
        drain: DrainConfig {
            close_spread: Duration::ZERO,
            notice: false,
            ..DrainConfig::default()
        },
        connection: ConnectionConfig {
            push_queue,
            ..ConnectionConfig::default()
        },
        ..NodeConfig::default()
    }
}

/// The app on a node, with its own `/hello` route beside ebb's.
async fn start(push_queue: usize) -> (ebb_node::Running, Arc<Board>) {
    let app = Chatty::default();
    let board = app.0.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let routes = axum::Router::new().route("/hello", get(|| async { "hello from the app" }));
    let running = Node::new(config(push_queue), app)
        .start_with(listener, routes)
        .unwrap();
    (running, board)
}

async fn join(running: &ebb_node::Running, user: &str, room: &str) -> Client {
    let url = format!("ws://{}/ws?token={user}&room={room}", running.local_addr());
    let mut client = Client::connect(&url).await;
    assert_eq!(
        client.next(SECS(5)).await,
        Seen::Text(format!("welcome {user} to {room}"))
    );
    client
}

#[tokio::test]
async fn the_app_refuses_an_upgrade_with_its_own_status_and_serves_its_own_routes() {
    let (running, board) = start(64).await;
    let addr = running.local_addr();
    for (path, status) in [("/ws", 401), ("/ws?token=banned", 403)] {
        match Client::try_connect(&format!("ws://{addr}{path}")).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{path}");
            }
            other => panic!("{path}: expected HTTP {status}, got {other:?}"),
        }
    }
    // The header works as the query does.
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer carol".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let welcome = ws.next().await.unwrap().unwrap();
    assert_eq!(welcome, Message::text("welcome carol to lobby"));
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("carol said hi")
    );

    let hello = http::get(addr, "/hello").await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.body, "hello from the app");
    assert_eq!(http::get(addr, "/health").await.status, 200);
    let metrics = http::get(addr, "/metrics").await.body;
    assert!(
        metrics.contains("ebb_upgrades_refused_by_app_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("ebb_connections 1"), "{metrics}");
    assert!(
        board.ended.lock().unwrap().is_empty(),
        "the refused were never connections"
    );
    let seen = board.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (path, peer) = &seen[0];
    assert_eq!(path, "/ws");
    let peer = peer.expect("the peer address");
    assert!(
        peer.ip().is_loopback() && peer.port() != addr.port(),
        "{peer}"
    );
}

#[tokio::test]
async fn a_room_message_reaches_every_member_on_the_node_and_no_one_else() {
    let (running, board) = start(64).await;
    let mut a1 = join(&running, "ann", "a").await;
    let mut a2 = join(&running, "abe", "a").await;
    let mut b1 = join(&running, "bob", "b").await;
    a1.send("say hello room").await;
    for client in [&mut a1, &mut a2] {
        assert_eq!(
            client.next(SECS(5)).await,
            Seen::Text("ann: hello room".into())
        );
    }
    assert_eq!(
        b1.try_next(Duration::from_millis(300)).await,
        None,
        "b heard nothing"
    );
    // A member that leaves is out of the room: the app's close callback saw to it.
    a2.ws.close(None).await.unwrap();
    eventually("abe's end heard", SECS(5), || async {
        let ended = board.ended.lock().unwrap().clone();
        ended
            .iter()
            .any(|(u, e)| u == "abe" && *e == Ended::ByClient { code: None })
            .then_some(())
    })
    .await;
    assert_eq!(board.rooms.len("a"), 1);
}

#[tokio::test]
async fn pushes_queued_before_a_drain_arrive_before_its_close_and_fail_after_it() {
    let (running, board) = start(1024).await;
    let mut client = join(&running, "dee", "d").await;
    client.send("pushes 500").await;
    // The first push is out: all 500 were queued at once, before the drain below.
    assert_eq!(client.next(SECS(5)).await, Seen::Text("push 0".into()));
    running.control().drain(DrainRequest::stay("test"));
    let (texts, close, _) = client.until_close(SECS(10)).await;
    let expected: Vec<String> = (1..500).map(|i| format!("push {i}")).collect();
    assert_eq!(
        texts, expected,
        "every queued push, in order, before the Close"
    );
    assert!(matches!(close, Seen::Close(Some((1001, _)))), "{close:?}");
    client.finish(SECS(2)).await;
    eventually("the app heard the drain and the end", SECS(5), || async {
        let ended = board.ended.lock().unwrap().clone();
        (*board.draining.lock().unwrap() && ended == [("dee".into(), Ended::Moved { clean: true })])
            .then_some(())
    })
    .await;
    let conn = board.conns.lock().unwrap()[0].clone();
    assert_eq!(conn.send(Message::text("too late")), Err(PushError::Closed));
    assert!(!conn.is_open());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_too_slow_and_its_queue_stays_bounded() {
    const QUEUE: u64 = 32;
    const SIZE: u64 = 64 * 1024;
    let (running, board) = start(QUEUE as usize).await;
    let mut raw = RawClient::connect_to(running.local_addr(), "/ws?token=sid&room=s").await;
    // One request for an endless feed, then this client never reads again.
    raw.send_frame(0x1, format!("flood {SIZE}").as_bytes())
        .await;
    let (taken, error) = eventually("the feed refused", SECS(20), || async {
        *board.flood.lock().unwrap()
    })
    .await;
    assert_eq!(error, PushError::TooSlow);
    // What the node holds for it: the queue, plus what the kernel's socket buffers took before
    // the write blocked (a few MiB on loopback), never the endless feed.
    let kernel = 16 * 1024 * 1024 / SIZE;
    assert!(taken <= QUEUE + kernel + 1, "{taken} pushes taken");
    eventually("the too-slow close heard", SECS(5), || async {
        let ended = board.ended.lock().unwrap().clone();
        (ended == [("sid".into(), Ended::TooSlow)]).then_some(())
    })
    .await;
    let metrics = http::get(running.local_addr(), "/metrics").await.body;
    assert!(
        metrics.contains(r#"ebb_closes_total{kind="too_slow"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("ebb_connections 0"), "{metrics}");
}
