//! `ebb-load soak`: N reconnecting clients spread over several URLs send at a steady rate while
//! the fleet drains or restarts around them; at the end every message must have been answered
//! once. Reports what was lost, duplicated, closed abnormally, and how reconnects were spread.

use crate::client::{Client, ClientConfig};
use crate::protocol::Echo;
use crate::stats::Stats;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What to run.
#[derive(Debug, Clone)]
pub struct Soak {
    pub urls: Vec<String>,
    pub clients: usize,
    /// Messages per second, all clients together.
    pub rate: f64,
    /// Longest run (it also stops on `stop`).
    pub duration: Duration,
    /// After sending stops, how long answers to the last messages may take.
    pub settle: Duration,
    pub sources: super::Sources,
    /// Payload size in bytes.
    pub size: usize,
    /// Every client starts on the first URL (instead of spreading over them), e.g. to fill one
    /// node before draining it.
    pub start_on_first: bool,
}

/// A distribution, in ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Spread {
    fn of(values: &[u64]) -> Self {
        let mut v = values.to_vec();
        v.sort_unstable();
        let at = |q: f64| {
            v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        Spread {
            count: v.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: v.last().copied().unwrap_or(0),
        }
    }
}

/// Reconnects per 100 ms over the window from the first to the last one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Buckets {
    pub window_ms: u64,
    pub largest: u64,
    pub mean: f64,
    /// `largest / mean`: 1.0 is perfectly flat.
    pub peak_to_mean: f64,
    pub counts: Vec<u64>,
}

impl Buckets {
    pub fn of(at_ms: &[u64]) -> Self {
        let (Some(first), Some(last)) = (at_ms.iter().min(), at_ms.iter().max()) else {
            return Buckets::default();
        };
        let n = ((last - first) / 100 + 1) as usize;
        let mut counts = vec![0u64; n];
        for t in at_ms {
            counts[((t - first) / 100) as usize] += 1;
        }
        let largest = counts.iter().copied().max().unwrap_or(0);
        let mean = at_ms.len() as f64 / n as f64;
        Buckets {
            window_ms: last - first,
            largest,
            mean,
            peak_to_mean: if mean > 0.0 {
                largest as f64 / mean
            } else {
                0.0
            },
            counts,
        }
    }
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSummary {
    pub mode: &'static str,
    pub clients: usize,
    pub seconds: f64,
    pub sent: u64,
    pub answered: u64,
    /// Sent and never answered.
    pub lost: u64,
    /// Answers that arrived twice (dropped by the clients: the application saw each once).
    pub duplicates: u64,
    pub resent: u64,
    pub abnormal_closes: u64,
    pub close_codes: std::collections::BTreeMap<u16, u64>,
    pub reconnects: u64,
    pub refused: u64,
    pub connect_failures: u64,
    /// Reconnects made to the target a server named, and targets not followed.
    pub targets_followed: u64,
    pub targets_ignored: u64,
    /// Clients connected at the end.
    pub connected_at_end: usize,
    /// From losing a connection to the next one.
    pub reconnect_ms: Spread,
    /// How much later than the server advised clients came back.
    pub late_ms: Spread,
    pub reconnects_per_100ms: Buckets,
}

/// Live numbers for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    pub connected: usize,
    pub sent: u64,
    pub pending: u64,
}

/// Runs the soak until `duration` or `stop`, then settles and reports.
pub async fn run(soak: &Soak, stop: CancellationToken, progress: impl Fn(Live)) -> SoakSummary {
    let started = Instant::now();
    let clients: Vec<Arc<Client>> = (0..soak.clients)
        .map(|i| {
            let mut config = ClientConfig::new(soak.urls.clone());
            config.first_url = if soak.start_on_first {
                0
            } else {
                i % soak.urls.len().max(1)
            };
            config.source = soak.sources.address(i);
            config.events = false;
            Arc::new(Client::start(config, Echo).0)
        })
        .collect();
    let live = |clients: &[Arc<Client>]| Live {
        connected: clients.iter().filter(|c| c.is_connected()).count(),
        sent: clients.iter().map(|c| c.stats().sent).sum(),
        pending: clients.iter().map(|c| c.pending()).sum(),
    };
    let deadline = tokio::time::Instant::now() + soak.duration;
    let sending = CancellationToken::new();
    // At least a millisecond: a rate above 1,000 messages/s per client is not a soak.
    let interval = Duration::from_secs_f64(soak.clients as f64 / soak.rate.max(0.001))
        .max(Duration::from_millis(1));
    let payload = "x".repeat(soak.size);
    let senders: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let (client, sending, payload) = (client.clone(), sending.clone(), payload.clone());
            // Staggered so the rate is steady rather than in waves.
            let offset = interval.mul_f64(i as f64 / soak.clients.max(1) as f64);
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = sending.cancelled() => return,
                        _ = tick.tick() => {
                            let _ = client.send(payload.clone());
                        }
                    }
                }
            })
        })
        .collect();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => progress(live(&clients)),
        }
    }
    sending.cancel();
    for sender in senders {
        let _ = sender.await;
    }
    // Let the last answers (and any resend after a late reconnect) arrive.
    let settle_until = tokio::time::Instant::now() + soak.settle;
    while tokio::time::Instant::now() < settle_until && clients.iter().any(|c| c.pending() > 0) {
        progress(live(&clients));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected_at_end = clients.iter().filter(|c| c.is_connected()).count();
    let mut total = Stats::default();
    let closing = clients.into_iter().map(|c| async move {
        match Arc::try_unwrap(c) {
            Ok(client) => client.close().await,
            Err(shared) => shared.stats(),
        }
    });
    for stats in futures_util::future::join_all(closing).await {
        total.merge(&stats);
    }
    SoakSummary {
        mode: "soak",
        clients: soak.clients,
        seconds: started.elapsed().as_secs_f64(),
        sent: total.sent,
        answered: total.answered,
        lost: total.unanswered(),
        duplicates: total.duplicates,
        resent: total.resent,
        abnormal_closes: total.abnormal,
        close_codes: total.close_codes.clone(),
        reconnects: total.reconnects,
        refused: total.refused,
        connect_failures: total.connect_failures,
        targets_followed: total.targets_followed,
        targets_ignored: total.targets_ignored,
        connected_at_end,
        reconnect_ms: Spread::of(&total.reconnect_ms),
        late_ms: Spread::of(&total.late_ms),
        reconnects_per_100ms: Buckets::of(&total.reconnected_at_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_measure_flatness() {
        let flat: Vec<u64> = (0..1000).map(|i| 1_000 + i).collect();
        let b = Buckets::of(&flat);
        assert_eq!(b.counts.len(), 10);
        assert!((b.peak_to_mean - 1.0).abs() < 1e-9);
        let mut storm = flat.clone();
        storm.extend(std::iter::repeat_n(1_000, 1000));
        assert!(Buckets::of(&storm).peak_to_mean > 5.0);
        assert_eq!(Buckets::of(&[]).largest, 0);
    }

    #[test]
    fn spreads() {
        let s = Spread::of(&[5, 1, 3, 2, 4]);
        assert_eq!((s.count, s.p50, s.max), (5, 3, 5));
        assert_eq!(Spread::of(&[]).max, 0);
    }
}
