//! The door: what a node lets in, and how it says no.
//!
//! Every connection meets these limits, each a semaphore whose permit is held exactly as long as
//! what it counts, so no count can drift:
//! - **sockets**: every accepted socket holds one, inside its I/O ([`conn::Held`]), so the permit
//!   follows an upgraded connection into its socket task and comes back when the descriptor
//!   closes. There are `RLIMIT_NOFILE - OWN_DESCRIPTORS`: the node's own sockets never make
//!   `accept` fail with EMFILE. With none left, the accept loop waits for one (counted) and new
//!   connections queue in the kernel; see `accept`.
//! - **handshakes**: HTTP connections not upgraded (an upgrade being read, a `/health` request, a
//!   keep-alive connection). Beyond `--max-handshakes` a new connection is closed at once; hyper
//!   closes one whose request headers take longer than `--header-timeout`.
//! - **capacity**: WebSocket connections, at most `min(--capacity, RLIMIT_NOFILE - --fd-reserve)`.
//!   Upgrade N+1 is refused before the 101 (503 + `Retry-After`, never accepted then closed) and
//!   `/health` says `"full": true`. The reserve is what keeps `/health`, `/metrics` and `/admin`
//!   answering when WebSocket connections are at the limit.
//! - **per address** (optional, `--max-connections-per-ip`): 429 + `Retry-After`.
//!
//! Whatever the door turns away is counted at once ([`crate::metrics::DoorEvent`]) and logged in
//! aggregate, at most one line per interval ([`report`]).
//!
//! Layout: `accept` (the accept loop: errors, backoff), `conn` (one HTTP connection under hyper,
//! with the header timeout and upgrades), `report` (the aggregated log line).

mod accept;
mod conn;
mod report;

pub(crate) use report::run as report;

use crate::app::App;
use crate::config::{DoorConfig, MIN_FD_RESERVE, OWN_DESCRIPTORS};
use crate::metrics::{DoorEvent, Metrics};
use crate::shared::Shared;
use axum::Router;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The numbers the door enforces, worked out once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The soft `RLIMIT_NOFILE` read at start (`u64::MAX` when unlimited or unreadable).
    pub nofile: u64,
    /// Sockets open at once: `nofile - OWN_DESCRIPTORS`.
    pub sockets: usize,
    /// HTTP connections not upgraded.
    pub handshakes: usize,
    /// WebSocket connections: `min(--capacity, nofile - fd_reserve)`. Zero: the node cannot
    /// serve (it refuses to start).
    pub capacity: usize,
}

impl Limits {
    /// The limits `config` gives under a descriptor limit of `nofile`.
    pub fn new(config: &DoorConfig, nofile: u64) -> Limits {
        let room = |reserve: usize| {
            usize::try_from(nofile.saturating_sub(reserve as u64))
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS)
        };
        Limits {
            nofile,
            sockets: room(OWN_DESCRIPTORS),
            handshakes: config.max_handshakes.min(Semaphore::MAX_PERMITS),
            capacity: config
                .capacity
                .unwrap_or(usize::MAX)
                .min(room(config.fd_reserve.max(MIN_FD_RESERVE))),
        }
    }
}

/// The soft descriptor limit of this process.
pub(crate) fn nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _hard)) => soft,
        Err(error) => {
            tracing::warn!(%error, "cannot read RLIMIT_NOFILE; the descriptor limit is not enforced");
            u64::MAX
        }
    }
}

/// Why an upgrade is refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The node is at its capacity: 503.
    Full { retry_after: u64 },
    /// The client's address is at its limit: 429.
    PerIp { retry_after: u64 },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, retry_after, body) = match self {
            Refusal::Full { retry_after } => (StatusCode::SERVICE_UNAVAILABLE, retry_after, "full"),
            Refusal::PerIp { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                retry_after,
                "too_many_from_address",
            ),
        };
        (
            status,
            [(header::RETRY_AFTER, retry_after.to_string())],
            axum::Json(serde_json::json!({ "status": body })),
        )
            .into_response()
    }
}

/// A WebSocket connection's place: held by its socket task, returned when the task ends.
#[derive(Debug)]
pub(crate) struct Seat {
    _capacity: OwnedSemaphorePermit,
    _address: Option<AddressSeat>,
}

/// A connection counted against its address; dropping it uncounts it.
#[derive(Debug)]
struct AddressSeat {
    ip: IpAddr,
    counts: Arc<PerIp>,
}

impl Drop for AddressSeat {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().expect("per-ip lock");
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// WebSocket connections per client address.
#[derive(Debug)]
struct PerIp {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSeat> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().expect("per-ip lock");
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSeat {
            ip,
            counts: self.clone(),
        })
    }
}

/// What an accepted connection holds while it speaks HTTP.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Its descriptor's place (taken by the accept loop); moves into the connection's I/O.
    socket: OwnedSemaphorePermit,
    /// Returned when the HTTP connection ends (closed, or upgraded).
    handshake: OwnedSemaphorePermit,
}

/// The node's limits and their live counts.
#[derive(Debug)]
pub(crate) struct Door {
    config: DoorConfig,
    limits: Limits,
    sockets: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    capacity: Arc<Semaphore>,
    per_ip: Option<Arc<PerIp>>,
    metrics: Arc<Metrics>,
    /// Notified at every refusal; the reporter waits on it, so a quiet node never wakes.
    refused: Notify,
}

impl Door {
    pub fn new(config: DoorConfig, nofile: u64, metrics: Arc<Metrics>) -> Door {
        let limits = Limits::new(&config, nofile);
        metrics.set_capacity(limits.capacity);
        Door {
            sockets: Arc::new(Semaphore::new(limits.sockets)),
            handshakes: Arc::new(Semaphore::new(limits.handshakes)),
            capacity: Arc::new(Semaphore::new(limits.capacity)),
            per_ip: config.max_connections_per_ip.map(|max| {
                Arc::new(PerIp {
                    max,
                    counts: Mutex::default(),
                })
            }),
            config,
            limits,
            metrics,
            refused: Notify::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Counts (and wakes the reporter for) something turned away.
    pub fn refused(&self, event: DoorEvent) {
        self.metrics.door(event);
        self.refused.notify_one();
    }

    /// A new TCP connection (holding its place in the socket budget) as a handshake, or why it
    /// is closed at once.
    pub fn admit(&self, socket: OwnedSemaphorePermit) -> Result<Admitted, DoorEvent> {
        let handshake = self
            .handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| DoorEvent::ShedHandshakes)?;
        Ok(Admitted { socket, handshake })
    }

    /// A seat for a WebSocket connection from `peer`, or the refusal to answer (counted).
    pub fn seat(&self, peer: Option<IpAddr>) -> Result<Seat, Refusal> {
        let retry_after = self.config.full_retry_after_secs();
        let Ok(capacity) = self.capacity.clone().try_acquire_owned() else {
            self.refused(DoorEvent::Full);
            return Err(Refusal::Full { retry_after });
        };
        let address = match (&self.per_ip, peer) {
            (Some(per_ip), Some(ip)) => match per_ip.take(ip) {
                Some(seat) => Some(seat),
                None => {
                    self.refused(DoorEvent::PerIp);
                    return Err(Refusal::PerIp { retry_after });
                }
            },
            _ => None,
        };
        Ok(Seat {
            _capacity: capacity,
            _address: address,
        })
    }

    /// Whether every WebSocket seat is taken.
    pub fn is_full(&self) -> bool {
        self.capacity.available_permits() == 0
    }

    /// HTTP connections open and not upgraded.
    pub fn handshakes(&self) -> usize {
        self.limits.handshakes - self.handshakes.available_permits()
    }
}

/// Serves `router` on `listener` through the door until `exit` is cancelled; then stops
/// accepting, asks every HTTP connection to finish (hyper's graceful shutdown) and waits for them.
/// Upgraded connections are not waited for here: their socket tasks are the drain's.
pub(crate) async fn serve<A: App>(
    mut listener: TcpListener,
    router: Router,
    shared: Arc<Shared<A>>,
    exit: CancellationToken,
) {
    let connections = TaskTracker::new();
    let door = &shared.door;
    let header_timeout = door.config.header_timeout;
    accept::run(
        &mut listener,
        &door.sockets,
        &exit,
        |event| door.refused(event),
        |tcp, peer, socket| {
            let _ = tcp.set_nodelay(true);
            match door.admit(socket) {
                Ok(admitted) => {
                    connections.spawn(conn::serve(
                        tcp,
                        peer,
                        admitted,
                        router.clone(),
                        header_timeout,
                        shared.clone(),
                        exit.clone(),
                    ));
                }
                // Dropped here: closed at once.
                Err(event) => door.refused(event),
            }
        },
    )
    .await;
    drop(listener);
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn config(capacity: Option<usize>) -> DoorConfig {
        DoorConfig {
            capacity,
            ..DoorConfig::default()
        }
    }

    #[test]
    fn capacity_is_the_smaller_of_the_flag_and_the_descriptors_left() {
        let limits = Limits::new(&config(Some(1000)), 256);
        assert_eq!(limits.capacity, 256 - 64);
        assert_eq!(limits.sockets, 256 - OWN_DESCRIPTORS);
        assert_eq!(Limits::new(&config(Some(100)), 256).capacity, 100);
        assert_eq!(Limits::new(&config(None), 20_000).capacity, 20_000 - 64);
        // Not enough descriptors for anything: the node refuses to start.
        assert_eq!(Limits::new(&config(Some(10)), 64).capacity, 0);
        // A reserve too small to leave the HTTP surface anything is raised.
        let tiny = DoorConfig {
            fd_reserve: 1,
            ..config(None)
        };
        assert_eq!(Limits::new(&tiny, 256).capacity, 256 - MIN_FD_RESERVE);
        let unlimited = Limits::new(&config(None), u64::MAX);
        assert_eq!(unlimited.capacity, Semaphore::MAX_PERMITS);
        assert_eq!(unlimited.handshakes, DoorConfig::default().max_handshakes);
    }

    #[test]
    fn seat_n_plus_one_is_refused_and_a_seat_comes_back_when_dropped() {
        let metrics = Arc::new(Metrics::default());
        let door = Door::new(config(Some(2)), 20_000, metrics.clone());
        let a = door.seat(None).unwrap();
        let _b = door.seat(None).unwrap();
        assert!(door.is_full());
        assert_eq!(
            door.seat(None).unwrap_err(),
            Refusal::Full { retry_after: 5 }
        );
        assert_eq!(metrics.door_count(DoorEvent::Full), 1);
        drop(a);
        assert!(!door.is_full());
        assert!(door.seat(None).is_ok());
        let response = Refusal::Full { retry_after: 5 }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn addresses_are_limited_one_by_one() {
        let metrics = Arc::new(Metrics::default());
        let door = Door::new(
            DoorConfig {
                max_connections_per_ip: Some(1),
                ..DoorConfig::default()
            },
            20_000,
            metrics.clone(),
        );
        let one = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let two = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let seat = door.seat(Some(one)).unwrap();
        // The same address as an IPv4-mapped IPv6 one is the same client.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(matches!(
            door.seat(Some(mapped)),
            Err(Refusal::PerIp { .. })
        ));
        assert!(door.seat(Some(two)).is_ok());
        assert_eq!(metrics.door_count(DoorEvent::PerIp), 1);
        // A refusal by address gives its capacity seat back.
        assert_eq!(door.capacity.available_permits(), door.limits.capacity - 1);
        drop(seat);
        assert!(
            door.per_ip
                .as_ref()
                .unwrap()
                .counts
                .lock()
                .unwrap()
                .is_empty()
        );
        assert!(door.seat(Some(one)).is_ok());
        let response = Refusal::PerIp { retry_after: 1 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn connections_beyond_the_handshakes_are_shed() {
        let metrics = Arc::new(Metrics::default());
        let handshakes = DoorConfig {
            max_handshakes: 2,
            ..DoorConfig::default()
        };
        let door = Door::new(handshakes, 20_000, metrics.clone());
        let socket = || door.sockets.clone().try_acquire_owned().unwrap();
        let a = door.admit(socket()).unwrap();
        let _b = door.admit(socket()).unwrap();
        assert_eq!(door.handshakes(), 2);
        assert_eq!(door.admit(socket()).unwrap_err(), DoorEvent::ShedHandshakes);
        // The shed connection's socket place came back with it.
        assert_eq!(door.sockets.available_permits(), door.limits.sockets - 2);
        drop(a);
        assert!(door.admit(socket()).is_ok());
    }
}
