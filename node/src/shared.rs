//! The state every part of a running node shares: config, app, lifecycle state, connections,
//! metrics, the door's limits, and the tokens that end socket tasks.

use crate::app::App;
use crate::config::NodeConfig;
use crate::control::{DrainReport, Request};
use crate::door::Door;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::socket::Outcome;
use ebb_proto::NodeState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// State changes a slow listener may fall behind by before it must resynchronise.
const TRANSITIONS_BUFFER: usize = 64;

/// Clean and forced closes of the drain in progress.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub clean: AtomicU64,
    pub forced: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Shared<A> {
    pub config: NodeConfig,
    pub app: A,
    pub state: watch::Sender<NodeState>,
    /// Every state change, in order (a watch keeps only the latest: a drain of an idle node goes
    /// active → draining → drained faster than a watcher looks, and events must show each step).
    pub transitions: broadcast::Sender<NodeState>,
    pub report: watch::Sender<Option<DrainReport>>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// The limits on what comes in, and their live counts.
    pub door: Door,
    /// Every socket task; the node waits on it before returning.
    pub sockets: TaskTracker,
    /// Cancelled at a drain's deadline: every socket task still running ends at once. Replaced
    /// on resume if it was used, so connections accepted afterwards get a live one.
    terminate: Mutex<CancellationToken>,
    pub tally: Tally,
    /// Requests to the drain controller (the admin endpoint sends here).
    pub requests: mpsc::UnboundedSender<Request>,
}

impl<A: App> Shared<A> {
    pub fn new(
        config: NodeConfig,
        app: A,
        metrics: Arc<Metrics>,
        requests: mpsc::UnboundedSender<Request>,
    ) -> Self {
        let door = Door::new(config.door.clone(), crate::door::nofile(), metrics.clone());
        Shared {
            door,
            config,
            app,
            state: watch::Sender::new(NodeState::Starting),
            transitions: broadcast::Sender::new(TRANSITIONS_BUFFER),
            report: watch::Sender::new(None),
            registry: Arc::new(Registry::default()),
            metrics,
            sockets: TaskTracker::new(),
            terminate: Mutex::new(CancellationToken::new()),
            tally: Tally::default(),
            requests,
        }
    }

    pub fn state(&self) -> NodeState {
        *self.state.borrow()
    }

    pub fn set_state(&self, state: NodeState) {
        self.state.send_replace(state);
        let _ = self.transitions.send(state);
    }

    /// The token a new socket task should watch.
    pub fn terminate_token(&self) -> CancellationToken {
        self.terminate.lock().expect("terminate lock").clone()
    }

    /// After a resume: a token the next drain can cancel.
    pub fn renew_terminate_token(&self) {
        let mut token = self.terminate.lock().expect("terminate lock");
        if token.is_cancelled() {
            *token = CancellationToken::new();
        }
    }

    /// Counts how a connection ended, in the metrics and, while draining, in the drain's tally.
    pub fn record(&self, outcome: Outcome) {
        self.metrics.closed(outcome.kind());
        if let Outcome::Rejected { code } = outcome {
            self.metrics.rejected(code);
        }
        if self.state() == NodeState::Active {
            return;
        }
        match outcome {
            Outcome::Drained { clean: true }
            | Outcome::ClientClosed { .. }
            | Outcome::AppClosed { .. } => {
                self.tally.clean.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Drained { clean: false } | Outcome::Terminated => {
                self.tally.forced.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Gone | Outcome::Dead | Outcome::Rejected { .. } | Outcome::TooSlow => {}
        }
    }
}
