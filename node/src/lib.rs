//! ebb-node: graceful drains for axum WebSocket servers.
//!
//! A node serves WebSocket clients on `/ws` through an [`App`] (which sees each upgrade request,
//! keeps per-connection state, and pushes through a [`Conn`] handle) beside the app's own HTTP
//! routes ([`Node::start_with`]), and, when told to drain (SIGTERM in
//! the binary, `POST /admin/drain`, a Redis command, or [`Control::drain`] from an embedding
//! application), runs one drain sequence: readiness flips, new upgrades get 503 + `Retry-After`,
//! clients get a notice, each connection answers what it already received and is closed 1001 at
//! its slot of a paced schedule with its own advised reconnect delay, the close handshake is
//! awaited (bounded), and a deadline ends whatever is left. axum's graceful shutdown does not see
//! upgraded connections, so every socket task is tracked here. A drain may name reconnect
//! targets, dealt to the clients in proportion; a shed ([`Control::shed`], `ebb rebalance`)
//! closes some connections the same way while the node stays active.
//!
//! The library never installs signal handlers: it takes a listener and hands back a [`Running`]
//! node whose [`Control`] the caller wires to whatever triggers it has.
//!
//! Layout:
//! - [`config`]: every timing and limit, with its default;
//! - [`app`]: the [`App`] trait (a connection's life) and the reference [`Echo`] app;
//! - `handshake`: what the app sees of an upgrade request ([`Handshake`]) and its [`Refusal`];
//! - `push`: the per-connection handle [`Conn`] (bounded pushes, the slow-consumer policy);
//! - [`rooms`]: connections grouped by name on this node, for fan-out;
//! - [`chat`]: the reference chat app (rooms across the cluster, recovery from a Redis history);
//! - [`control`]: [`Control`], the handle every trigger uses, and [`DrainReport`];
//! - `drain`: the drain controller (one code path);
//! - `shed`: closing some connections of an active node, paced, each sent to a target;
//! - [`pacing`]: the close schedule and advised delays;
//! - `registry`: live connections and the mailbox the drain talks to each through;
//! - `socket`: one connection's loop, generic over `Sink` + `Stream`;
//! - `door`: the accept loop and the limits at the door (header timeout, handshakes in progress,
//!   descriptors, capacity, per address), and how the node says no;
//! - `upgrade`, `http`: the HTTP surface (`/ws`, `/health`, `/metrics`, `/admin/*`);
//! - [`metrics`]: Prometheus metrics;
//! - [`logging`]: the binaries' shared log setup;
//! - [`agent`]: the Redis agent (registration, heartbeat, commands, events), driven by the node
//!   library or, through [`Control::driven`], by `ebb-agent` for a server of another language.

pub mod agent;
pub mod app;
pub mod chat;
pub mod config;
pub mod control;
mod door;
mod drain;
mod handshake;
mod http;
pub mod logging;
pub mod metrics;
pub mod pacing;
mod push;
mod registry;
pub mod rooms;
mod shared;
mod shed;
mod socket;
mod upgrade;

pub use app::{App, Echo, Ended};
pub use config::NodeConfig;
pub use control::{Control, DrainReport, DrainRequest, Driver, Request, ShedRequest};
pub use door::Limits;
pub use ebb_proto::command::Then;
pub use ebb_proto::target::Target;
pub use handshake::{Handshake, Refusal};
pub use metrics::Metrics;
pub use push::{Conn, PushError};
pub use rooms::Rooms;

use shared::Shared;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long socket tasks may linger after a drain that exits.
const SOCKETS_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// The door's refusals are logged at most once per this interval.
const DOOR_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A node, configured but not yet serving.
#[derive(Debug)]
pub struct Node<A> {
    shared: Arc<Shared<A>>,
    requests: mpsc::UnboundedReceiver<control::Request>,
}

impl<A: App> Node<A> {
    /// A node serving `app` with `config`.
    pub fn new(config: NodeConfig, app: A) -> Self {
        let (tx, requests) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(config, app, Arc::default(), tx));
        Node { shared, requests }
    }

    /// The handle to drain, hurry, resume and observe the node.
    pub fn control(&self) -> Control {
        Control {
            requests: self.shared.requests.clone(),
            state: self.shared.state.subscribe(),
            transitions: self.shared.transitions.clone(),
            connections: self.shared.registry.subscribe(),
            report: self.shared.report.subscribe(),
        }
    }

    /// The node's metrics (the Redis agent counts commands here).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The limits the node enforces (worked out from its config and `RLIMIT_NOFILE` when it was
    /// created). Give [`Limits::capacity`] to the agent, so the record says what is enforced.
    pub fn limits(&self) -> Limits {
        self.shared.door.limits()
    }

    /// Starts serving on `listener` and becomes active. The returned [`Running`] resolves when a
    /// drain that ends in exit has finished. Fails when the descriptor limit leaves no room for a
    /// WebSocket connection after the reserve.
    pub fn start(self, listener: TcpListener) -> io::Result<Running> {
        self.start_with(listener, axum::Router::new())
    }

    /// Like [`Node::start`], serving the app's own `routes` beside ebb's (`/ws`, `/health`,
    /// `/metrics`, `/admin/*`; a route of the app's at one of those paths is a panic, as axum
    /// merges). Every request goes through the node's door and its limits, and plain requests
    /// get `http_shutdown_timeout` after a drain that exits, like ebb's own.
    pub fn start_with(self, listener: TcpListener, routes: axum::Router) -> io::Result<Running> {
        let local_addr = listener.local_addr()?;
        let limits = self.limits();
        if limits.capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "RLIMIT_NOFILE {} leaves no descriptor for a WebSocket connection after the \
                     reserve of {} (raise the limit, e.g. ulimit -n, or lower --fd-reserve)",
                    limits.nofile, self.shared.config.door.fd_reserve
                ),
            ));
        }
        let control = self.control();
        let Node { shared, requests } = self;
        let exit = CancellationToken::new();
        let controller = tokio::spawn(drain::controller(shared.clone(), requests, exit.clone()));
        let router = routes.merge(http::router(shared.clone()));
        let reporter = {
            let (shared, exit) = (shared.clone(), exit.clone());
            tokio::spawn(
                async move { door::report(&shared.door, DOOR_REPORT_INTERVAL, exit).await },
            )
        };
        shared.set_state(ebb_proto::NodeState::Active);
        tracing::info!(
            capacity = limits.capacity,
            nofile = limits.nofile,
            fd_reserve = shared.config.door.fd_reserve,
            sockets = limits.sockets,
            max_handshakes = limits.handshakes,
            header_timeout_ms = shared.config.door.header_timeout.as_millis() as u64,
            "door limits"
        );
        tracing::info!(%local_addr, "node active");
        let task = tokio::spawn(async move {
            let server = door::serve(listener, router, shared.clone(), exit.clone());
            let http_grace = async {
                exit.cancelled().await;
                tokio::time::sleep(shared.config.http_shutdown_timeout).await;
            };
            tokio::select! {
                () = server => {}
                () = http_grace => tracing::warn!("HTTP requests outlived the shutdown timeout"),
            }
            let report = controller.await.map_err(io::Error::other)?;
            let _ = reporter.await;
            shared.sockets.close();
            // Every connection is gone by now (the deadline terminated the last); bounded anyway,
            // so nothing can keep the process from exiting.
            if tokio::time::timeout(SOCKETS_GRACE, shared.sockets.wait())
                .await
                .is_err()
            {
                tracing::error!(
                    left = shared.sockets.len(),
                    "socket tasks outlived the drain"
                );
            }
            Ok(report)
        });
        Ok(Running {
            local_addr,
            limits,
            control,
            task,
        })
    }
}

/// A serving node.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    limits: Limits,
    control: Control,
    task: JoinHandle<io::Result<DrainReport>>,
}

impl Running {
    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The limits the node enforces; [`Limits::capacity`] is what its record should advertise.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The node's control handle.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Waits until a drain that ends in exit has finished and the server has stopped.
    /// Cancel safe only in the sense that dropping it leaves the node running detached.
    pub async fn wait(self) -> io::Result<DrainReport> {
        self.task.await.map_err(io::Error::other)?
    }
}
