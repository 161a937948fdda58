//! What a node counts, exposed at `GET /metrics` in Prometheus text format (prometheus-client).

use ebb_proto::NodeState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// How a connection ended, as counted in `ebb_closes_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseKind {
    /// Drain close whose handshake the client completed.
    DrainClean,
    /// Drain close cut because the client did not answer in time, or the drain deadline hit.
    DrainForced,
    /// The client sent Close first.
    ClientClose,
    /// TCP ended without a Close frame.
    PeerGone,
    /// No pong to the previous ping.
    DeadPeer,
    /// Closed by the node for a bad frame (1002, 1007, 1009).
    Rejected,
    /// Closed by the app.
    AppClose,
    /// Closed with 1008: the client did not keep up with the pushes.
    TooSlow,
}

impl CloseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseKind::DrainClean => "drain_clean",
            CloseKind::DrainForced => "drain_forced",
            CloseKind::ClientClose => "client_close",
            CloseKind::PeerGone => "peer_gone",
            CloseKind::DeadPeer => "dead_peer",
            CloseKind::Rejected => "rejected",
            CloseKind::AppClose => "app_close",
            CloseKind::TooSlow => "too_slow",
        }
    }

    const ALL: [CloseKind; 8] = [
        CloseKind::DrainClean,
        CloseKind::DrainForced,
        CloseKind::ClientClose,
        CloseKind::PeerGone,
        CloseKind::DeadPeer,
        CloseKind::Rejected,
        CloseKind::AppClose,
        CloseKind::TooSlow,
    ];
}

/// What the door turned away (or cut), as counted in the metrics and reported in aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DoorEvent {
    /// Request headers (an upgrade's included) not received within the header timeout:
    /// `ebb_header_timeouts_total`.
    HeaderTimeout,
    /// Closed on accept, too many handshakes in progress:
    /// `ebb_connections_shed_total{reason="handshakes"}`.
    ShedHandshakes,
    /// The accept loop waited for a socket to close: every socket the descriptor budget allows
    /// (the limit less the process's own) was open. New connections wait in the kernel's accept
    /// queue meanwhile, so a burst is answered (503s included) instead of dropped:
    /// `ebb_accept_paused_total`.
    AcceptPaused,
    /// Upgrade refused 503, the node at its capacity: `ebb_upgrades_limited_total{limit="capacity"}`.
    Full,
    /// Upgrade refused 429, the client's address at its limit:
    /// `ebb_upgrades_limited_total{limit="per_ip"}`.
    PerIp,
    /// `accept` failed with EMFILE: `ebb_accept_errors_total{error="emfile"}`.
    AcceptEmfile,
    /// `accept` failed with ENFILE (the system's table is full).
    AcceptEnfile,
    /// `accept` failed with ENOBUFS or ENOMEM.
    AcceptNomem,
    /// `accept` failed otherwise.
    AcceptOther,
}

impl DoorEvent {
    pub const ALL: [DoorEvent; 9] = [
        DoorEvent::HeaderTimeout,
        DoorEvent::ShedHandshakes,
        DoorEvent::AcceptPaused,
        DoorEvent::Full,
        DoorEvent::PerIp,
        DoorEvent::AcceptEmfile,
        DoorEvent::AcceptEnfile,
        DoorEvent::AcceptNomem,
        DoorEvent::AcceptOther,
    ];

    /// Its name in the aggregated log line.
    pub fn as_str(self) -> &'static str {
        match self {
            DoorEvent::HeaderTimeout => "header_timeout",
            DoorEvent::ShedHandshakes => "shed_handshakes",
            DoorEvent::AcceptPaused => "accept_paused",
            DoorEvent::Full => "full",
            DoorEvent::PerIp => "per_ip",
            DoorEvent::AcceptEmfile => "accept_emfile",
            DoorEvent::AcceptEnfile => "accept_enfile",
            DoorEvent::AcceptNomem => "accept_nomem",
            DoorEvent::AcceptOther => "accept_other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabel {
    error: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    state: Family<StateLabel, Gauge>,
    messages_received: Counter,
    messages_answered: Counter,
    messages_pushed: Counter,
    messages_discarded: Counter,
    inflight_abandoned: Counter,
    closes: Family<KindLabel, Counter>,
    rejected: Family<CodeLabel, Counter>,
    upgrades_refused: Counter,
    upgrades_refused_by_app: Counter,
    drains: Counter,
    last_drain_seconds: Gauge<f64, AtomicU64>,
    last_drain_clean: Gauge,
    last_drain_forced: Gauge,
    commands_applied: Family<ActionLabel, Counter>,
    commands_refused: Family<ReasonLabel, Counter>,
    commands_dropped: Counter,
    redis_connected: Gauge,
    shed: Counter,
    shed_in_progress: Gauge,
    capacity: Gauge,
    handshakes: Gauge,
    header_timeouts: Counter,
    door_shed: Family<ReasonLabel, Counter>,
    accept_paused: Counter,
    upgrades_limited: Family<LimitLabel, Counter>,
    accept_errors: Family<ErrorLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ebb");
        let metrics = Metrics {
            connections: Gauge::default(),
            state: Family::default(),
            messages_received: Counter::default(),
            messages_answered: Counter::default(),
            messages_pushed: Counter::default(),
            messages_discarded: Counter::default(),
            inflight_abandoned: Counter::default(),
            closes: Family::default(),
            rejected: Family::default(),
            upgrades_refused: Counter::default(),
            upgrades_refused_by_app: Counter::default(),
            drains: Counter::default(),
            last_drain_seconds: Gauge::default(),
            last_drain_clean: Gauge::default(),
            last_drain_forced: Gauge::default(),
            commands_applied: Family::default(),
            commands_refused: Family::default(),
            commands_dropped: Counter::default(),
            redis_connected: Gauge::default(),
            shed: Counter::default(),
            shed_in_progress: Gauge::default(),
            capacity: Gauge::default(),
            handshakes: Gauge::default(),
            header_timeouts: Counter::default(),
            door_shed: Family::default(),
            accept_paused: Counter::default(),
            upgrades_limited: Family::default(),
            accept_errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "node_state",
            "1 for the node's current lifecycle state",
            metrics.state.clone(),
        );
        registry.register(
            "messages_received",
            "Data messages received and handed to the app",
            metrics.messages_received.clone(),
        );
        registry.register(
            "messages_answered",
            "Replies sent",
            metrics.messages_answered.clone(),
        );
        registry.register(
            "messages_pushed",
            "Messages the app pushed that were sent",
            metrics.messages_pushed.clone(),
        );
        registry.register(
            "messages_discarded",
            "Data messages that arrived after the node's Close and were not processed",
            metrics.messages_discarded.clone(),
        );
        registry.register(
            "inflight_abandoned",
            "Messages whose processing outlived the in-flight timeout of a drain",
            metrics.inflight_abandoned.clone(),
        );
        registry.register(
            "closes",
            "Connections ended, by how",
            metrics.closes.clone(),
        );
        registry.register(
            "rejected_frames",
            "Connections closed for a bad frame, by close code",
            metrics.rejected.clone(),
        );
        registry.register(
            "upgrades_refused",
            "Upgrade requests refused with 503 while not active",
            metrics.upgrades_refused.clone(),
        );
        registry.register(
            "upgrades_refused_by_app",
            "Upgrades the app refused (its own 4xx) before answering 101",
            metrics.upgrades_refused_by_app.clone(),
        );
        registry.register("drains", "Drains completed", metrics.drains.clone());
        registry.register(
            "last_drain_seconds",
            "Duration of the last drain",
            metrics.last_drain_seconds.clone(),
        );
        registry.register(
            "last_drain_clean_closes",
            "Clean closes of the last drain",
            metrics.last_drain_clean.clone(),
        );
        registry.register(
            "last_drain_forced_closes",
            "Forced closes of the last drain",
            metrics.last_drain_forced.clone(),
        );
        registry.register(
            "commands_applied",
            "Redis commands obeyed, by action",
            metrics.commands_applied.clone(),
        );
        registry.register(
            "commands_refused",
            "Redis commands refused, by reason",
            metrics.commands_refused.clone(),
        );
        registry.register(
            "commands_dropped",
            "Command-channel payloads dropped unread because the command queue was full",
            metrics.commands_dropped.clone(),
        );
        registry.register(
            "redis_connected",
            "1 while the node's Redis agent is connected (liveness and commands)",
            metrics.redis_connected.clone(),
        );
        registry.register(
            "shed",
            "Connections a shed (ebb rebalance) ordered closed; their closes count in closes_total as drain closes",
            metrics.shed.clone(),
        );
        registry.register(
            "shed_in_progress",
            "1 while a shed is closing connections",
            metrics.shed_in_progress.clone(),
        );
        registry.register(
            "capacity",
            "WebSocket connections this node accepts: the smaller of --capacity and the descriptor limit less the reserve",
            metrics.capacity.clone(),
        );
        registry.register(
            "handshakes",
            "HTTP connections open and not upgraded",
            metrics.handshakes.clone(),
        );
        registry.register(
            "header_timeouts",
            "Connections closed because their request headers did not arrive within the header timeout",
            metrics.header_timeouts.clone(),
        );
        registry.register(
            "connections_shed",
            "Connections closed on accept, by the limit reached (handshakes: too many in progress)",
            metrics.door_shed.clone(),
        );
        registry.register(
            "accept_paused",
            "Times accepting waited for a socket to close (every socket the descriptor budget allows was open; new connections queue in the kernel meanwhile)",
            metrics.accept_paused.clone(),
        );
        registry.register(
            "upgrades_limited",
            "Upgrades refused by a limit: capacity (503), per_ip (429)",
            metrics.upgrades_limited.clone(),
        );
        registry.register(
            "accept_errors",
            "accept() failures, by error (emfile, enfile, nomem, other); each backs the accept loop off",
            metrics.accept_errors.clone(),
        );
        for event in DoorEvent::ALL {
            let _ = metrics.door_counter(event);
        }
        for kind in CloseKind::ALL {
            let _ = metrics.closes.get_or_create(&KindLabel {
                kind: kind.as_str(),
            });
        }
        for reason in ebb_proto::Refusal::LABELS {
            let _ = metrics
                .commands_refused
                .get_or_create(&ReasonLabel { reason });
        }
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub(crate) fn received(&self) {
        self.messages_received.inc();
    }
    pub(crate) fn answered(&self) {
        self.messages_answered.inc();
    }
    pub(crate) fn pushed(&self) {
        self.messages_pushed.inc();
    }
    pub(crate) fn discarded(&self) {
        self.messages_discarded.inc();
    }
    pub(crate) fn abandoned(&self, n: u64) {
        self.inflight_abandoned.inc_by(n);
    }
    pub(crate) fn closed(&self, kind: CloseKind) {
        self.closes
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }
    pub(crate) fn rejected(&self, code: u16) {
        self.rejected.get_or_create(&CodeLabel { code }).inc();
    }
    pub(crate) fn upgrade_refused(&self) {
        self.upgrades_refused.inc();
    }
    pub(crate) fn app_refused(&self) {
        self.upgrades_refused_by_app.inc();
    }
    pub(crate) fn drain_done(&self, seconds: f64, clean: u64, forced: u64) {
        self.drains.inc();
        self.last_drain_seconds.set(seconds);
        self.last_drain_clean.set(clean as i64);
        self.last_drain_forced.set(forced as i64);
    }
    /// Counts a command obeyed.
    pub fn command_applied(&self, action: &'static str) {
        self.commands_applied
            .get_or_create(&ActionLabel { action })
            .inc();
    }
    /// Counts a command refused.
    pub fn command_refused(&self, reason: &'static str) {
        self.commands_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
    /// Counts a command-channel payload dropped unread (the command queue was full).
    pub fn command_dropped(&self) {
        self.commands_dropped.inc();
    }
    /// Records whether the Redis agent is connected (every one of its connections).
    pub fn redis_connected(&self, up: bool) {
        self.redis_connected.set(up as i64);
    }

    /// Counts a connection a shed ordered closed.
    pub(crate) fn shed_one(&self) {
        self.shed.inc();
    }
    /// Records whether a shed is in progress.
    pub(crate) fn shedding(&self, on: bool) {
        self.shed_in_progress.set(on as i64);
    }

    /// The counter of a door event (created on first use).
    fn door_counter(&self, event: DoorEvent) -> Counter {
        match event {
            DoorEvent::HeaderTimeout => self.header_timeouts.clone(),
            DoorEvent::ShedHandshakes => self.door_shed.get_or_create_owned(&ReasonLabel {
                reason: "handshakes",
            }),
            DoorEvent::AcceptPaused => self.accept_paused.clone(),
            DoorEvent::Full => self
                .upgrades_limited
                .get_or_create_owned(&LimitLabel { limit: "capacity" }),
            DoorEvent::PerIp => self
                .upgrades_limited
                .get_or_create_owned(&LimitLabel { limit: "per_ip" }),
            DoorEvent::AcceptEmfile => self
                .accept_errors
                .get_or_create_owned(&ErrorLabel { error: "emfile" }),
            DoorEvent::AcceptEnfile => self
                .accept_errors
                .get_or_create_owned(&ErrorLabel { error: "enfile" }),
            DoorEvent::AcceptNomem => self
                .accept_errors
                .get_or_create_owned(&ErrorLabel { error: "nomem" }),
            DoorEvent::AcceptOther => self
                .accept_errors
                .get_or_create_owned(&ErrorLabel { error: "other" }),
        }
    }
    pub(crate) fn door(&self, event: DoorEvent) {
        self.door_counter(event).inc();
    }
    /// How many of `event` so far.
    pub fn door_count(&self, event: DoorEvent) -> u64 {
        self.door_counter(event).get()
    }
    pub(crate) fn set_capacity(&self, capacity: usize) {
        self.capacity.set(capacity as i64);
    }
    pub(crate) fn set_handshakes(&self, handshakes: usize) {
        self.handshakes.set(handshakes as i64);
    }

    /// The Prometheus text exposition, with the gauges read at this moment.
    pub fn render(&self, state: NodeState, connections: usize) -> String {
        self.connections.set(connections as i64);
        for s in NodeState::ALL {
            self.state
                .get_or_create(&StateLabel { state: s.as_str() })
                .set((s == state) as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.received();
        metrics.closed(CloseKind::DrainForced);
        metrics.command_refused("replayed");
        metrics.command_dropped();
        metrics.shed_one();
        metrics.shedding(true);
        let text = metrics.render(NodeState::Draining, 7);
        assert!(text.contains("ebb_connections 7"), "{text}");
        assert!(
            text.contains(r#"ebb_node_state{state="draining"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ebb_node_state{state="active"} 0"#),
            "{text}"
        );
        assert!(text.contains("ebb_messages_received_total 1"), "{text}");
        assert!(
            text.contains(r#"ebb_closes_total{kind="drain_forced"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ebb_closes_total{kind="drain_clean"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ebb_commands_refused_total{reason="replayed"} 1"#),
            "{text}"
        );
        assert!(text.contains("ebb_commands_dropped_total 1"), "{text}");
        assert!(text.contains("ebb_shed_total 1"), "{text}");
        assert!(text.contains("ebb_shed_in_progress 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
