//! `ebb-load hold`: open N idle connections and keep them (answering pings) until told to stop.
//! Used to measure what an idle connection costs a server, and to fill a fleet before a drain.

use crate::connect::{self, ConnectError};
use futures_util::StreamExt;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What to hold.
#[derive(Debug, Clone)]
pub struct Hold {
    pub url: String,
    pub connections: usize,
    /// Source addresses to spread over.
    pub sources: super::Sources,
    /// Handshakes in flight at once.
    pub concurrency: usize,
}

/// The outcome of opening the connections.
#[derive(Debug, Clone, Serialize)]
pub struct Opened {
    pub mode: &'static str,
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub connect_ms: u64,
}

/// Held connections; dropping it closes them all.
#[derive(Debug)]
pub struct Held {
    pub opened: Opened,
    /// Connections still open (the server has not closed them).
    pub open: Arc<AtomicUsize>,
    tasks: JoinSet<()>,
}

impl Held {
    /// Closes every connection (drops them).
    pub async fn release(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Opens the connections; each is then read by its own task (so pings are answered).
pub async fn open(hold: &Hold) -> Result<Held, ConnectError> {
    let addr = connect::resolve(&hold.url).await?;
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(hold.concurrency.max(1)));
    let open = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(1024);
    let mut tasks = JoinSet::new();
    for i in 0..hold.connections {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let (url, open, failed, first_error, ready) = (
            hold.url.clone(),
            open.clone(),
            failed.clone(),
            first_error.clone(),
            ready_tx.clone(),
        );
        let source = hold.sources.address(i);
        tasks.spawn(async move {
            let result = connect::connect(&url, addr, source, connect::lean_config()).await;
            drop(permit);
            match result {
                Ok(mut ws) => {
                    open.fetch_add(1, Ordering::Relaxed);
                    let _ = ready.send(()).await;
                    drop(ready);
                    while let Some(Ok(_)) = ws.next().await {}
                    open.fetch_sub(1, Ordering::Relaxed);
                }
                Err(error) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .expect("error lock")
                        .get_or_insert_with(|| error.to_string());
                    let _ = ready.send(()).await;
                }
            }
        });
    }
    drop(ready_tx);
    let mut done = 0;
    while done < hold.connections && ready_rx.recv().await.is_some() {
        done += 1;
    }
    let opened = Opened {
        mode: "hold",
        connected: open.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_error: first_error.lock().expect("error lock").clone(),
        connect_ms: start.elapsed().as_millis() as u64,
    };
    Ok(Held {
        opened,
        open,
        tasks,
    })
}

/// How long to keep the connections when no duration is given (bounded, like every load loop).
pub const DEFAULT_HOLD: Duration = Duration::from_secs(3600);
