//! Shedding (`ebb rebalance`): an active node closes some of its connections, paced, sending each
//! client to a node with room, and stays active throughout.
//!
//! Why a shed is not a small drain: the node must keep serving. Readiness stays 200, new
//! upgrades are accepted, the Redis record stays `active`; only the chosen connections close,
//! each the drain's way (answer what it received, Close 1001 or the configured drain code with
//! `{"reason":"rebalance","retry_after_ms":N,"reconnect_to":"<url>"}`, await the handshake,
//! bounded by the close timeout).
//!
//! Which connections: the most recently connected ones, newest first. They are the ones that
//! most recently chose this node (often the clients that piled onto it after an earlier drain,
//! which is what a rebalance undoes), they have the least session state invested here, and the
//! registry keeps connections in id order, so finding the next one costs O(log n) and the shed
//! keeps no list: its memory is the deal of `count` targets and nothing else. Connections that
//! arrive during the shed are not touched (they chose this node after the coordinator counted),
//! and a connection already closing is passed over.
//!
//! Pacing: connection `i` is closed `i / rate` seconds in ([`crate::pacing::shed_slot`]) and
//! advised a delay spread over [`SHED_RECONNECT_SPREAD`] (0–200 ms), so its target sees a flat
//! reconnect rate.
//!
//! The shed runs in the drain controller, between drains, so the two never race: a drain that
//! arrives takes over (its snapshot holds every connection still open, the ones not yet shed
//! included), a shed that arrives replaces this one, a shed that arrives while draining is
//! ignored there (the drain wins).

use crate::app::App;
use crate::config::SHED_RECONNECT_SPREAD;
use crate::control::{Request, ShedRequest};
use crate::pacing;
use crate::registry::CloseOrder;
use crate::shared::Shared;
use ebb_proto::CloseReason;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::{Instant, sleep_until};

/// Sets the shed-in-progress gauge while alive.
struct InProgress<'a>(&'a crate::metrics::Metrics);

impl<'a> InProgress<'a> {
    fn new(metrics: &'a crate::metrics::Metrics) -> Self {
        metrics.shedding(true);
        InProgress(metrics)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.shedding(false);
    }
}

/// Runs one shed. Returns the request that interrupted it (a drain, a hurry, another shed),
/// which the controller then serves, or `None` once every close is ordered.
pub(crate) async fn run<A: App>(
    shared: &Shared<A>,
    requests: &mut mpsc::UnboundedReceiver<Request>,
    request: ShedRequest,
) -> Option<Request> {
    let n = request.count.min(shared.registry.count());
    if n == 0 || request.targets.is_empty() {
        tracing::info!(trigger = %request.trigger, "shed: nothing to close");
        return None;
    }
    let config = &shared.config.drain;
    let dealt = ebb_proto::target::deal(&request.targets, n);
    let _in_progress = InProgress::new(&shared.metrics);
    tracing::info!(
        trigger = %request.trigger,
        count = n,
        rate_per_s = request.rate_per_s,
        targets = request.targets.len(),
        "shed started: closing the newest connections, paced; staying active"
    );
    let started = Instant::now();
    // Connections registered from now on are not the shed's.
    let mut below = shared.registry.next_id();
    let mut shed = 0usize;
    for (i, &k) in dealt.iter().enumerate() {
        let slot = pacing::shed_slot(i, n, request.rate_per_s, SHED_RECONNECT_SPREAD);
        let at = started.checked_add(slot.close_at);
        if let Some(interrupt) = wait(requests, at).await {
            tracing::info!(shed, left = n - i, "shed interrupted");
            return Some(interrupt);
        }
        let reason = CloseReason::rebalance(slot.retry_after.as_millis() as u64)
            .to(Some(request.targets[k].url.clone()));
        let order = CloseOrder {
            code: config.close_code,
            reason: reason.encode(),
            inflight_timeout: config.inflight_timeout,
            close_timeout: config.close_timeout,
            by_app: false,
        };
        let Some(id) = shared.registry.close_newest_below(below, order) else {
            break;
        };
        below = id;
        shed += 1;
        shared.metrics.shed_one();
    }
    tracing::info!(
        shed,
        duration_ms = started.elapsed().as_millis() as u64,
        "shed finished: every close ordered"
    );
    None
}

/// Waits until `at` (`None`: beyond what an `Instant` holds, i.e. never), returning early with
/// a request that ends the shed. A resume means nothing to an active node and is dropped. A
/// moment already past costs no timer: the queue is only peeked.
async fn wait(
    requests: &mut mpsc::UnboundedReceiver<Request>,
    at: Option<Instant>,
) -> Option<Request> {
    loop {
        let request = match at {
            Some(at) if at <= Instant::now() => match requests.try_recv() {
                Ok(request) => request,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
            },
            _ => {
                let sleep = async {
                    match at {
                        Some(at) => sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = sleep => return None,
                    // Shared holds a sender, so the queue never closes while the node runs.
                    Some(request) = requests.recv() => request,
                }
            }
        };
        match request {
            Request::Resume => tracing::debug!("resume while active and shedding: nothing to do"),
            other => return Some(other),
        }
    }
}
