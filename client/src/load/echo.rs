//! `ebb-load echo`: throughput and latency. N connections each keep W messages of S bytes in
//! flight against an echo server for a bounded time; latencies go into an HdrHistogram.

use crate::connect::{self, ConnectError, Ws};
use crate::session::writable;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tungstenite::{Message, Utf8Bytes};

/// How long a connection's Close may take once the run is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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

/// One connection: keeps `window` messages in flight until `deadline`, writing while it reads.
/// A window written all at once before reading would block against a node that pauses reading
/// until its replies are read (`--max-inflight`) once the TCP buffers fill, and a blocked write
/// would outlive the deadline.
async fn drive(
    ws: Ws,
    payload: Utf8Bytes,
    window: usize,
    deadline: tokio::time::Instant,
    done: Arc<AtomicU64>,
) -> (Histogram<u64>, u64) {
    let (mut sink, mut stream) = ws.split();
    let mut hist = histogram();
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut errors = 0u64;
    let mut unflushed = false;
    loop {
        let more = in_flight.len() < window;
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            ready = writable(&mut sink, more), if more || unflushed => {
                let wrote = ready.and_then(|()| {
                    if more {
                        sink.start_send_unpin(Message::Text(payload.clone()))
                    } else {
                        Ok(())
                    }
                });
                if wrote.is_err() {
                    errors += 1;
                    break;
                }
                if more {
                    in_flight.push_back(Instant::now());
                }
                // A write leaves something to flush; a finished flush leaves nothing.
                unflushed = more;
            }
            next = stream.next() => match next {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    if let Some(sent) = in_flight.pop_front() {
                        let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    errors += 1;
                    break;
                }
            },
        }
    }
    // Bounded: a node that stopped reading must not hold the load past its deadline.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    (hist, errors)
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
    let payload = Utf8Bytes::from("x".repeat(load.size));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + load.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for ws in sockets {
        let (payload, done, window) = (payload.clone(), done.clone(), load.window);
        tasks.spawn(drive(ws, payload, window, deadline, done));
    }
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            progress(done.load(Ordering::Relaxed));
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
