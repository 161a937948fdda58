//! `ebb-load echo`: throughput and latency. N connections each keep W messages of S bytes in
//! flight against an echo server for a bounded time; latencies go into an HdrHistogram.

use crate::connect::{self, ConnectError};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// What to run.
#[derive(Debug, Clone)]
pub struct EchoLoad {
    pub url: String,
    pub connections: usize,
    pub window: usize,
    pub size: usize,
    pub duration: Duration,
    pub sources: super::Sources,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct EchoSummary {
    pub mode: &'static str,
    pub connections: usize,
    pub window: usize,
    pub size: usize,
    pub messages: u64,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub errors: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs the load; `progress` is called with the messages answered so far, about every 100 ms.
pub async fn run(load: &EchoLoad, progress: impl Fn(u64)) -> Result<EchoSummary, ConnectError> {
    let addr = connect::resolve(&load.url).await?;
    let mut sockets = Vec::with_capacity(load.connections);
    for i in 0..load.connections {
        let ws = connect::connect(
            &load.url,
            addr,
            load.sources.address(i),
            connect::lean_config().read_buffer_size(64 * 1024),
        )
        .await?;
        sockets.push(ws);
    }
    let payload = "x".repeat(load.size);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + load.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in sockets {
        let (payload, done, window) = (payload.clone(), done.clone(), load.window);
        tasks.spawn(async move {
            let mut hist = histogram();
            let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
            let mut errors = 0u64;
            for _ in 0..window {
                in_flight.push_back(Instant::now());
                if ws.send(Message::text(payload.clone())).await.is_err() {
                    return (hist, 1);
                }
            }
            loop {
                let next = tokio::time::timeout_at(deadline, ws.next()).await;
                match next {
                    Err(_) => break,
                    Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => {
                        if let Some(sent) = in_flight.pop_front() {
                            let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                        }
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        in_flight.push_back(Instant::now());
                        if ws.send(Message::text(payload.clone())).await.is_err() {
                            errors += 1;
                            break;
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_)) | None) => {
                        errors += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            (hist, errors)
        });
    }
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            progress(done.load(std::sync::atomic::Ordering::Relaxed));
        }
    };
    let mut all = histogram();
    let mut errors = 0;
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok((hist, e)) = joined {
                let _ = all.add(&hist);
                errors += e;
            }
        }
    };
    tokio::select! {
        () = collect => {}
        () = ticker => unreachable!("the ticker never ends"),
    }
    let seconds = start
        .elapsed()
        .as_secs_f64()
        .min(load.duration.as_secs_f64().max(0.001));
    let messages = all.len();
    Ok(EchoSummary {
        mode: "echo",
        connections: load.connections,
        window: load.window,
        size: load.size,
        messages,
        seconds,
        msgs_per_sec: messages as f64 / seconds,
        p50_us: all.value_at_quantile(0.5),
        p99_us: all.value_at_quantile(0.99),
        p999_us: all.value_at_quantile(0.999),
        max_us: all.max(),
        errors,
    })
}
