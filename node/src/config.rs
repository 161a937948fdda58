//! Node configuration: plain structs of durations and sizes, parsed once at the edge (the binary's
//! flags) and handed to the library. Every default lives here, as a named constant beside the
//! environment variable that overrides it in `ebb-node`, so the numbers are stated once.

use std::time::Duration;

/// `EBB_LISTEN`: address the HTTP/WebSocket server binds.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// `EBB_LISTEN_BACKLOG`: connections the kernel queues for the node to accept (capped by
/// `net.core.somaxconn`). tokio's default, 128, overflows under a burst of reconnects (the
/// clients of a drained node arriving at once), and every SYN dropped costs its client a
/// retransmit timeout (1 s, then 3 s).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;

/// `EBB_PROPAGATION_DELAY`: pause between flipping readiness and closing anything, so load
/// balancers notice the 503 first (the preStop-sleep problem). Off by default.
pub const DEFAULT_PROPAGATION_DELAY: Duration = Duration::ZERO;
/// `EBB_CLOSE_SPREAD`: window over which closes are spread evenly (like HAProxy `close-spread-time`).
pub const DEFAULT_CLOSE_SPREAD: Duration = Duration::from_secs(5);
/// `EBB_RECONNECT_BASE`: smallest reconnect delay advised to a client.
pub const DEFAULT_RECONNECT_BASE: Duration = Duration::from_millis(100);
/// `EBB_RECONNECT_SPREAD`: advised delays are spread over this window above the base.
pub const DEFAULT_RECONNECT_SPREAD: Duration = Duration::from_secs(1);
/// `EBB_INFLIGHT_TIMEOUT`: how long a closing connection may take to finish messages already received.
pub const DEFAULT_INFLIGHT_TIMEOUT: Duration = Duration::from_secs(3);
/// `EBB_CLOSE_TIMEOUT`: how long to wait for a client's Close after sending ours, then cut TCP.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// `EBB_DRAIN_DEADLINE`: the whole drain ends by then; whatever is open is terminated.
/// Keep it below the orchestrator's grace period (Kubernetes `terminationGracePeriodSeconds`).
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// `EBB_CLOSE_CODE`: close code of a drain close (1001 going away).
pub const DEFAULT_CLOSE_CODE: u16 = ebb_proto::close::GOING_AWAY;
/// `EBB_NOTICE`: send the seed's `server_shutdown` notice before closing.
pub const DEFAULT_NOTICE: bool = true;
/// `EBB_NOTICE_LEAD`: with the notice on, the first close comes no earlier than this after the
/// notices, so a message a client sent just before it saw the notice is read and answered before
/// its Close instead of crossing it on the wire. Closes are spread over `[lead, close spread]`.
pub const DEFAULT_NOTICE_LEAD: Duration = Duration::from_millis(500);
/// `EBB_NOTICE_MESSAGE`: the notice's human-readable text.
pub const DEFAULT_NOTICE_MESSAGE: &str = "Server is restarting. Please reconnect when advised.";
/// A shed (`ebb rebalance`) advises its clients delays spread over `[0, this)`: small, because
/// the node stays up and its targets have room, and the shed's rate already paces the
/// reconnects; the spread only keeps clients closed in the same instant from arriving in it.
pub const SHED_RECONNECT_SPREAD: Duration = Duration::from_millis(200);
/// `EBB_PING_INTERVAL`: ping every connection this often; a peer that has not answered the
/// previous ping by the next one is dropped.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// `EBB_MAX_MESSAGE_SIZE`: largest message (and frame) accepted; larger closes with 1009.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// `EBB_READ_BUFFER_SIZE`: per-connection read buffer. Small, so idle connections stay cheap:
/// tungstenite's default (128 KiB) would cost more than the whole connection should.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 1024;
/// `EBB_MAX_INFLIGHT`: messages of one connection processed concurrently before reading pauses.
pub const DEFAULT_MAX_INFLIGHT: usize = 64;
/// Pushes a connection may have waiting before it is closed as too slow (1008).
pub const DEFAULT_PUSH_QUEUE: usize = 1024;
/// `EBB_HTTP_SHUTDOWN_TIMEOUT`: after a drain that exits, how long plain HTTP requests may take.
pub const DEFAULT_HTTP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// `EBB_HEADER_TIMEOUT`: how long a client may take to send a request's headers (an upgrade's
/// included), counted from the connection's start (or the end of its previous request); then the
/// connection is closed and counted. Slow or silent clients cannot hold descriptors longer.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `EBB_MAX_HANDSHAKES`: HTTP connections open and not (yet) upgraded, beyond which a new
/// connection is closed at once (and counted).
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// `EBB_FD_RESERVE`: file descriptors WebSocket connections never use, so `/health`, `/metrics`,
/// `/admin` and refusals keep answering at the limit: WebSocket connections are capped at
/// `RLIMIT_NOFILE - reserve` (and `--capacity`). Of the reserve,
/// [`OWN_DESCRIPTORS`] are never used by sockets at all (the process's own files).
pub const DEFAULT_FD_RESERVE: usize = 64;
/// The part of the descriptor reserve no socket ever uses: stdio, the runtime's, the listener,
/// the Redis agent's connections. Every accepted socket counts against
/// `RLIMIT_NOFILE - OWN_DESCRIPTORS`; beyond it a new connection is closed at once.
pub const OWN_DESCRIPTORS: usize = 32;
/// The smallest descriptor reserve: the process's own and a few for HTTP at the limit (a smaller
/// one is raised to it).
pub const MIN_FD_RESERVE: usize = OWN_DESCRIPTORS + 8;
/// `EBB_FULL_RETRY_AFTER`: the `Retry-After` of an upgrade refused because the node is full (at
/// its capacity, or the client's address at its limit).
pub const DEFAULT_FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the node lets in: the limits applied at the door, before and at the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorConfig {
    /// Most WebSocket connections (`--capacity`); the node enforces the smaller of this and
    /// what the descriptor limit leaves after [`DoorConfig::fd_reserve`]. `None`: the latter.
    pub capacity: Option<usize>,
    /// See [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`DEFAULT_MAX_HANDSHAKES`].
    pub max_handshakes: usize,
    /// Most WebSocket connections from one IP address; `None`: no such limit.
    pub max_connections_per_ip: Option<usize>,
    /// See [`DEFAULT_FD_RESERVE`]; at least [`MIN_FD_RESERVE`].
    pub fd_reserve: usize,
    /// See [`DEFAULT_FULL_RETRY_AFTER`].
    pub full_retry_after: Duration,
}

impl Default for DoorConfig {
    fn default() -> Self {
        DoorConfig {
            capacity: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_connections_per_ip: None,
            fd_reserve: DEFAULT_FD_RESERVE,
            full_retry_after: DEFAULT_FULL_RETRY_AFTER,
        }
    }
}

impl DoorConfig {
    /// The `Retry-After` of a refusal for being full, in whole seconds (at least 1).
    pub fn full_retry_after_secs(&self) -> u64 {
        self.full_retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// How a drain behaves. See the crate docs for the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    pub propagation_delay: Duration,
    pub notice: bool,
    /// With the notice on, how long after the notices the first close comes.
    pub notice_lead: Duration,
    pub notice_message: String,
    pub close_code: u16,
    pub close_spread: Duration,
    pub reconnect_base: Duration,
    pub reconnect_spread: Duration,
    pub inflight_timeout: Duration,
    pub close_timeout: Duration,
    pub deadline: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            propagation_delay: DEFAULT_PROPAGATION_DELAY,
            notice: DEFAULT_NOTICE,
            notice_lead: DEFAULT_NOTICE_LEAD,
            notice_message: DEFAULT_NOTICE_MESSAGE.to_owned(),
            close_code: DEFAULT_CLOSE_CODE,
            close_spread: DEFAULT_CLOSE_SPREAD,
            reconnect_base: DEFAULT_RECONNECT_BASE,
            reconnect_spread: DEFAULT_RECONNECT_SPREAD,
            inflight_timeout: DEFAULT_INFLIGHT_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            deadline: DEFAULT_DRAIN_DEADLINE,
        }
    }
}

impl DrainConfig {
    /// The `Retry-After` (whole seconds, at least 1) sent with a refused upgrade: the end of the
    /// advised reconnect window. A draining node will not take the client back; the hint keeps
    /// a client that has no other URL from retrying it in a tight loop.
    pub fn retry_after_secs(&self) -> u64 {
        (self.reconnect_base + self.reconnect_spread)
            .as_secs_f64()
            .ceil()
            .max(1.0) as u64
    }
}

/// Per-connection limits and liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    pub max_message_size: usize,
    pub read_buffer_size: usize,
    pub max_inflight: usize,
    pub ping_interval: Duration,
    /// Pushes a connection may have waiting; one more closes it as too slow ([`crate::push`]).
    pub push_queue: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            ping_interval: DEFAULT_PING_INTERVAL,
            push_queue: DEFAULT_PUSH_QUEUE,
        }
    }
}

impl ConnectionConfig {
    /// The tungstenite configuration: frames and messages capped at `max_message_size` (checked
    /// on the header, before anything is allocated), a small read buffer, and writes flushed as
    /// they come.
    pub fn websocket(&self) -> tungstenite::protocol::WebSocketConfig {
        tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(0)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// Everything the library needs to run a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub drain: DrainConfig,
    pub connection: ConnectionConfig,
    pub door: DoorConfig,
    /// Bearer token for `POST /admin/drain` and `/admin/resume`; `None` turns them off (404).
    pub admin_token: Option<String>,
    /// After a drain that exits, how long plain HTTP requests may take before the server stops.
    pub http_shutdown_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            drain: DrainConfig::default(),
            connection: ConnectionConfig::default(),
            door: DoorConfig::default(),
            admin_token: None,
            http_shutdown_timeout: DEFAULT_HTTP_SHUTDOWN_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_covers_the_reconnect_window() {
        let mut drain = DrainConfig::default();
        assert_eq!(drain.retry_after_secs(), 2);
        drain.reconnect_base = Duration::ZERO;
        drain.reconnect_spread = Duration::ZERO;
        assert_eq!(drain.retry_after_secs(), 1);
    }

    #[test]
    fn full_retry_after_is_whole_seconds_at_least_one() {
        let mut door = DoorConfig::default();
        assert_eq!(door.full_retry_after_secs(), 5);
        door.full_retry_after = Duration::from_millis(1500);
        assert_eq!(door.full_retry_after_secs(), 2);
        door.full_retry_after = Duration::ZERO;
        assert_eq!(door.full_retry_after_secs(), 1);
    }
}
