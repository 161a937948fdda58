//! The handle through which anything triggers a drain: the binary's signal handlers, the admin
//! endpoint, the Redis agent, or an embedding application. All of them end in the same request
//! queue, read by one drain controller, so there is one drain code path (and a shed, which
//! closes some connections of an active node, is run by the same controller, so a drain and a
//! shed never race).

use ebb_proto::NodeState;
use ebb_proto::command::Then;
use ebb_proto::target::Target;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// A request to start draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRequest {
    /// Exit once drained, or stay drained until resumed.
    pub then: Then,
    /// Overrides the configured drain deadline.
    pub deadline: Option<Duration>,
    /// Where the clients should reconnect: each gets one, dealt in proportion to the weights
    /// over the close schedule, as `reconnect_to` in its Close reason and `reconnectTo` in its
    /// notice. Empty: no target is named. Handed out as given: the Redis agent removes this
    /// node's own advertised URL before it asks (the library does not know its URL).
    pub targets: Vec<Target>,
    /// Who asked, for the logs and the report (`SIGTERM`, `admin`, `command <id>`...).
    pub trigger: String,
}

impl DrainRequest {
    /// A drain that ends in exit, asked by `trigger`.
    pub fn exit(trigger: impl Into<String>) -> Self {
        DrainRequest {
            then: Then::Exit,
            deadline: None,
            targets: Vec::new(),
            trigger: trigger.into(),
        }
    }

    /// A drain that stays drained until resumed, asked by `trigger`.
    pub fn stay(trigger: impl Into<String>) -> Self {
        DrainRequest {
            then: Then::Stay,
            ..DrainRequest::exit(trigger)
        }
    }
}

/// A request to shed connections: an active node closes `count` of them (at most what it has),
/// `rate_per_s` a second, each sent to one of `targets` (dealt in proportion), and stays active.
/// Ignored while draining; a drain that comes during a shed takes over; a second shed replaces
/// the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShedRequest {
    /// How many connections to close.
    pub count: usize,
    /// Closes per second (at least 1).
    pub rate_per_s: u32,
    /// Where the shed clients should go; a shed without targets closes nothing.
    pub targets: Vec<Target>,
    /// Who asked, for the logs.
    pub trigger: String,
}

/// What a drain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Who asked.
    pub trigger: String,
    /// Exit or stay.
    pub then: Then,
    /// Connections open when the closing phase began.
    pub connections: u64,
    /// Closes whose handshake completed (including clients that closed first during the drain).
    pub clean: u64,
    /// Connections cut: no Close answer in time, or still open at the deadline.
    pub forced: u64,
    /// From the start of the drain to the last connection gone.
    pub duration: Duration,
    /// Whether the deadline ended it.
    pub deadline_hit: bool,
}

/// Messages to the drain controller (or, for a [`Control::driven`] one, to its [`Driver`]).
#[derive(Debug)]
pub enum Request {
    Drain(DrainRequest),
    /// Skip what is left of pacing and waits (a second signal); starts an exit drain if idle.
    Hurry,
    /// Become active again (from draining or drained-and-staying).
    Resume,
    /// Close some connections, staying active.
    Shed(ShedRequest),
}

/// A cloneable handle on a running node's lifecycle.
#[derive(Debug, Clone)]
pub struct Control {
    pub(crate) requests: mpsc::UnboundedSender<Request>,
    pub(crate) state: watch::Receiver<NodeState>,
    pub(crate) transitions: broadcast::Sender<NodeState>,
    pub(crate) connections: watch::Receiver<usize>,
    pub(crate) report: watch::Receiver<Option<DrainReport>>,
}

impl Control {
    /// Starts a drain (no-op while one is running, except that `then: exit` upgrades a `stay`).
    pub fn drain(&self, request: DrainRequest) {
        let _ = self.requests.send(Request::Drain(request));
    }

    /// Sheds connections while staying active (ignored while draining; replaces a shed in
    /// progress).
    pub fn shed(&self, request: ShedRequest) {
        let _ = self.requests.send(Request::Shed(request));
    }

    /// Finishes fast: skips remaining pacing; starts an exit drain when none is running.
    pub fn hurry(&self) {
        let _ = self.requests.send(Request::Hurry);
    }

    /// Becomes active again after a drain that stays (or stops a drain in progress).
    pub fn resume(&self) {
        let _ = self.requests.send(Request::Resume);
    }

    /// The lifecycle state now.
    pub fn state(&self) -> NodeState {
        *self.state.borrow()
    }

    /// Follows the lifecycle state.
    pub fn subscribe_state(&self) -> watch::Receiver<NodeState> {
        self.state.clone()
    }

    /// Every state change from now on, in order (none coalesced, unlike
    /// [`Control::subscribe_state`]). A receiver that falls behind gets `Lagged` and should read
    /// [`Control::state`].
    pub fn subscribe_transitions(&self) -> broadcast::Receiver<NodeState> {
        self.transitions.subscribe()
    }

    /// Live connections now.
    pub fn connections(&self) -> usize {
        *self.connections.borrow()
    }

    /// Follows the live connection count.
    pub fn subscribe_connections(&self) -> watch::Receiver<usize> {
        self.connections.clone()
    }

    /// Follows drain reports (the latest finished drain).
    pub fn subscribe_reports(&self) -> watch::Receiver<Option<DrainReport>> {
        self.report.clone()
    }
}

/// How many state changes a [`Driver`]'s transitions keep for a slow receiver.
const DRIVEN_TRANSITIONS: usize = 64;

impl Control {
    /// A control handle whose lifecycle is driven from outside this library: by a sidecar
    /// (`ebb-agent`) that runs a server in another language and gives the Redis agent what
    /// that server does. The [`Driver`] receives what the agent asks (drain, resume, shed,
    /// hurry) and sets the state, the connection count and the drain report the agent
    /// publishes. Starts `starting` with 0 connections.
    pub fn driven() -> (Control, Driver) {
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let state = watch::Sender::new(NodeState::Starting);
        let transitions = broadcast::Sender::new(DRIVEN_TRANSITIONS);
        let connections = watch::Sender::new(0);
        let report = watch::Sender::new(None);
        let control = Control {
            requests: requests_tx,
            state: state.subscribe(),
            transitions: transitions.clone(),
            connections: connections.subscribe(),
            report: report.subscribe(),
        };
        let driver = Driver {
            requests,
            state,
            transitions,
            connections,
            report,
        };
        (control, driver)
    }
}

/// The other end of a [`Control::driven`] handle.
#[derive(Debug)]
pub struct Driver {
    requests: mpsc::UnboundedReceiver<Request>,
    state: watch::Sender<NodeState>,
    transitions: broadcast::Sender<NodeState>,
    connections: watch::Sender<usize>,
    report: watch::Sender<Option<DrainReport>>,
}

impl Driver {
    /// The next request; `None` once every [`Control`] clone is gone. Cancel safe.
    pub async fn next(&mut self) -> Option<Request> {
        self.requests.recv().await
    }

    /// Sets the lifecycle state (a change only when it differs), in order for
    /// [`Control::subscribe_transitions`].
    pub fn set_state(&self, state: NodeState) {
        if *self.state.borrow() != state {
            self.state.send_replace(state);
            let _ = self.transitions.send(state);
        }
    }

    pub fn state(&self) -> NodeState {
        *self.state.borrow()
    }

    /// The live connection count as last set.
    pub fn connections(&self) -> usize {
        *self.connections.borrow()
    }

    /// Sets the live connection count.
    pub fn set_connections(&self, connections: usize) {
        self.connections.send_if_modified(|now| {
            let changed = *now != connections;
            *now = connections;
            changed
        });
    }

    /// Publishes the report of a finished drain.
    pub fn report(&self, report: DrainReport) {
        self.report.send_replace(Some(report));
    }
}

#[cfg(test)]
mod driven_tests {
    use super::*;

    #[tokio::test]
    async fn a_driven_control_carries_requests_one_way_and_state_the_other() {
        let (control, mut driver) = Control::driven();
        assert_eq!(control.state(), NodeState::Starting);
        let mut transitions = control.subscribe_transitions();
        control.drain(DrainRequest::exit("test"));
        control.resume();
        assert!(matches!(driver.next().await, Some(Request::Drain(d)) if d.trigger == "test"));
        assert!(matches!(driver.next().await, Some(Request::Resume)));
        driver.set_state(NodeState::Active);
        driver.set_state(NodeState::Active);
        driver.set_state(NodeState::Draining);
        assert_eq!(transitions.recv().await.unwrap(), NodeState::Active);
        assert_eq!(
            transitions.recv().await.unwrap(),
            NodeState::Draining,
            "no repeat"
        );
        driver.set_connections(7);
        assert_eq!(control.connections(), 7);
        assert!(control.subscribe_reports().borrow().is_none());
        drop(control);
        assert!(driver.next().await.is_none());
    }
}
