//! Readiness watched from outside: every node's `/health` sampled through a rollout, the way a
//! load balancer sees the fleet. The rollout's promise ("never more than N out of service") is
//! checked against this, not against what the nodes or the coordinator say about themselves.
//!
//! One sample asks every node at once, but the answers are not of one instant: on a loaded
//! machine a node may read its request some milliseconds after another did. So "N out at once"
//! is judged on intervals, not on samples: a run of "not ready" answers from one node means it
//! was out at least from the first of those answers to the last of those questions (an outage is
//! one stretch of time), and only such stretches that overlap count as out together. A sample
//! may over-count (three nodes seen out across an 8 ms spread while only two ever were); the
//! stretches never do.

use crate::fleet::Supervised;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often every node is asked.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// A `/health` that takes longer than this counts as not ready.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);

/// One node's answer within a sample.
#[derive(Debug, Clone)]
pub struct Answer {
    pub name: String,
    pub asked: Instant,
    pub answered: Instant,
    pub ready: bool,
}

/// One sample: every node's answer.
pub type Sample = Vec<Answer>;

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
        let asked = Instant::now();
        let ask = crate::http::request(*addr, http::Method::GET, "/health", None);
        let ready = tokio::time::timeout(ANSWER_WITHIN, ask)
            .await
            .is_ok_and(|r| r.is_ok_and(|r| r.status == 200));
        Answer {
            name: name.clone(),
            asked,
            answered: Instant::now(),
            ready,
        }
    });
    futures_util::future::join_all(asks).await
}

/// The names not ready in one sample.
pub fn out(sample: &Sample) -> BTreeSet<&str> {
    sample
        .iter()
        .filter(|a| !a.ready)
        .map(|a| a.name.as_str())
        .collect()
}

/// The most nodes surely out of service at one instant: the most overlapping stretches (see
/// the module's doc), and 1 when any node was ever seen out.
pub fn most_out(samples: &[Sample]) -> usize {
    let seen_out = samples.iter().any(|s| !out(s).is_empty());
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for (from, to) in stretches(samples) {
        edges.extend([(from, 1), (to, -1)]);
    }
    // At one instant, ends before starts: touching stretches do not overlap.
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    (most as usize).max(usize::from(seen_out))
}

/// Every node's sure outages: from the first "not ready" answer of a run to the last question
/// of it (runs too short to hold such a stretch give none).
fn stretches(samples: &[Sample]) -> Vec<(Instant, Instant)> {
    let names: BTreeSet<&str> = samples.iter().flatten().map(|a| a.name.as_str()).collect();
    let mut found = Vec::new();
    for name in names {
        let mut run: Option<(Instant, Instant)> = None;
        let answers = samples.iter().flatten().filter(|a| a.name == name);
        for answer in answers.chain(std::iter::once(&Answer {
            name: name.to_owned(),
            asked: Instant::now(),
            answered: Instant::now(),
            ready: true,
        })) {
            match (&mut run, answer.ready) {
                (None, false) => run = Some((answer.answered, answer.asked)),
                (Some((_, last)), false) => *last = answer.asked,
                (Some((first, last)), true) => {
                    if first < last {
                        found.push((*first, *last));
                    }
                    run = None;
                }
                (None, true) => {}
            }
        }
    }
    found
}

/// Whether `limit` was reached in some sample.
pub fn reached(samples: &[Sample], limit: usize) -> bool {
    samples.iter().any(|s| out(s).len() >= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// Samples every 25 ms from `base`; each node's answer takes `lag` ms, and `out(name, t)`
    /// says whether it is out at the instant its answer is made (the answer's end).
    fn sampled(
        base: Instant,
        names: &[&str],
        lag: &[u64],
        until: u64,
        outs: impl Fn(&str, u64) -> bool,
    ) -> Vec<Sample> {
        (0..until)
            .step_by(25)
            .map(|t| {
                names
                    .iter()
                    .zip(lag)
                    .map(|(name, lag)| Answer {
                        name: name.to_string(),
                        asked: at(base, t),
                        answered: at(base, t + lag),
                        ready: !outs(name, t + lag),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_skewed_sample_does_not_count_out_nodes_that_never_were_out_together() {
        let base = Instant::now();
        // a out 0..1000 ms, b out 1000..2000, c out 1005..2000: two at most at any instant,
        // but c's answers lag 10 ms, so the sample asked at 1000 sees a (answered at once,
        // still 'out' by <= 1000), b and c out together.
        let outs = |name: &str, t: u64| match name {
            "a" => t <= 1000,
            "b" => (1000..2000).contains(&t),
            "c" => (1005..2000).contains(&t),
            _ => false,
        };
        let samples = sampled(base, &["a", "b", "c"], &[0, 0, 10], 3000, outs);
        assert!(reached(&samples, 3), "the sample over-counts");
        assert_eq!(most_out(&samples), 2);
    }

    #[test]
    fn outages_that_really_overlap_are_counted_and_a_lone_blip_is_one() {
        let base = Instant::now();
        let outs = |name: &str, t: u64| match name {
            "a" => (100..900).contains(&t),
            "b" => (500..1500).contains(&t),
            "c" => (600..700).contains(&t),
            _ => false,
        };
        let samples = sampled(base, &["a", "b", "c"], &[3, 3, 3], 2000, outs);
        assert_eq!(most_out(&samples), 3);
        let blip = sampled(base, &["a", "b"], &[3, 3], 500, |n, t| n == "a" && t == 103);
        assert_eq!(most_out(&blip), 1);
        let none = sampled(base, &["a", "b"], &[3, 3], 500, |_, _| false);
        assert_eq!(most_out(&none), 0);
    }
}
