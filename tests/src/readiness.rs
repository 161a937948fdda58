//! Readiness watched from outside: every node's `/health` sampled through a rollout, the way a
//! load balancer sees the fleet. The rollout's promise ("never more than N out of service") is
//! checked against this, not against what the nodes or the coordinator say about themselves.

use crate::fleet::Supervised;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often every node is asked.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// A `/health` that takes longer than this counts as not ready.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);

/// One sample: the names that were not ready.
pub type Sample = BTreeSet<String>;

/// A running sampler.
#[derive(Debug)]
pub struct Readiness {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Readiness {
    /// Starts sampling `nodes` (a node that is down or restarting is not ready).
    pub fn watch(nodes: Vec<Arc<Supervised>>) -> Readiness {
        let nodes = nodes
            .iter()
            .map(|node| (node.name.clone(), node.listen_addr()))
            .collect();
        Readiness::watch_addrs(nodes)
    }

    /// Starts sampling the `/health` of each named address (any server that answers 200 when
    /// ready: ebb-node, or an app under ebb-agent).
    pub fn watch_addrs(nodes: Vec<(String, SocketAddr)>) -> Readiness {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (samples, stop) = (samples.clone(), stop.clone());
            async move {
                let mut every = tokio::time::interval(SAMPLE_EVERY);
                while !stop.is_cancelled() {
                    every.tick().await;
                    let sample = sample(&nodes).await;
                    samples.lock().unwrap().push(sample);
                }
            }
        });
        Readiness {
            samples,
            stop,
            task,
        }
    }

    /// Stops sampling; returns every sample.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.samples.lock().unwrap().clone()
    }
}

async fn sample(nodes: &[(String, SocketAddr)]) -> Sample {
    // Asked at the node's fixed address, as a load balancer does: a node that is down refuses
    // the connection. (The supervisor's own view of a restart lags behind the process, which
    // may already serve, and be registered, before the supervisor has read that it does.)
    let asks = nodes.iter().map(|(name, addr)| async move {
        let ask = crate::http::request(*addr, http::Method::GET, "/health", None);
        let ready = tokio::time::timeout(ANSWER_WITHIN, ask)
            .await
            .is_ok_and(|r| r.is_ok_and(|r| r.status == 200));
        (!ready).then(|| name.clone())
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The most nodes not ready in one sample.
pub fn most_out(samples: &[Sample]) -> usize {
    samples.iter().map(BTreeSet::len).max().unwrap_or(0)
}

/// Whether `limit` was reached in some sample.
pub fn reached(samples: &[Sample], limit: usize) -> bool {
    samples.iter().any(|s| s.len() >= limit)
}
