//! `ebb serve`: the coordinator as a service, driven by durable requests in Redis.
//!
//! Every `ebb serve` of a cluster competes for one lease (`ebb:{c}:serve:leader`); the leader
//! alone takes requests from the stream and runs them, one at a time, with the same engine as
//! `ebb rolling-restart` (one engine, two front ends). A standby that takes the lease after the
//! leader died claims what the leader had taken and left unacknowledged, and resumes its rollout
//! from the saved state: nothing needs an operator. Each request's progress is published on
//! `ebb:{c}:progress` and its result kept under its id.
//!
//! Layout: [`requests`] (the stream), [`results`] (what is kept per request), [`run`] (taking
//! and carrying out one request), [`api`] (HTTP: status, rollouts, control, metrics, the page),
//! [`metrics`].

pub mod api;
pub mod metrics;
pub mod page;
pub mod requests;
pub mod results;
pub mod run;

use crate::commands::{Error, Target};
use crate::lock::{Lock, LockError};
use ebb_proto::keys::LEADER_TTL;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a standby tries to take the lease.
const STANDBY_POLL: Duration = Duration::from_millis(500);

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Bearer token of the API's write endpoints; without one they are refused.
    pub api_token: Option<String>,
    /// The operator's `--exec` and `--check` templates, for every rollout it runs.
    pub exec: Option<String>,
    pub check: Option<String>,
    pub redis_grace: Duration,
    pub lock_ttl: Duration,
}

/// What the API shows of the service.
#[derive(Debug)]
pub struct Shared {
    pub target: Target,
    pub config: Config,
    /// This process's name in the consumer group and the lease.
    pub consumer: String,
    pub leader: AtomicBool,
    pub metrics: metrics::Metrics,
}

/// Runs the service until `shutdown`: the API on `config.listen`, and the leader loop. A
/// rollout running at shutdown is interrupted where it is (saved; a standby or the next start
/// resumes it).
pub async fn serve(
    target: Target,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", config.listen)))?;
    let consumer = format!(
        "{}-{}-{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let shared = Arc::new(Shared {
        target,
        config,
        consumer,
        leader: AtomicBool::new(false),
        metrics: metrics::Metrics::default(),
    });
    tracing::info!(addr = %listener.local_addr().map_err(|e| Error::Usage(e.to_string()))?, "ebb serve listening");
    let api = tokio::spawn(api::serve(listener, shared.clone(), shutdown.clone()));
    let led = lead(shared.clone(), shutdown.clone()).await;
    shutdown.cancel();
    let _ = api.await;
    led
}

/// Competes for the lease; while it holds it, carries requests out.
async fn lead(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), Error> {
    let mut cluster = shared.target.connect().await?;
    let key = cluster.keys().serve_leader();
    while !shutdown.is_cancelled() {
        let lease = match Lock::acquire(cluster.conn(), key.clone(), LEADER_TTL).await {
            Ok(lease) => lease,
            Err(LockError::Held { .. }) => {
                wait(&shutdown, STANDBY_POLL).await;
                continue;
            }
            Err(LockError::Redis(error)) => {
                tracing::warn!(%error, "cannot reach Redis for the leader lease");
                wait(&shutdown, STANDBY_POLL).await;
                continue;
            }
        };
        tracing::info!(consumer = %shared.consumer, "leader");
        shared.leader.store(true, Ordering::SeqCst);
        shared.metrics.leader(true);
        let lost = CancellationToken::new();
        let renewing = tokio::spawn(renew(cluster.clone(), lease.clone(), lost.clone()));
        let stop = shutdown.child_token();
        let stopped = stop.clone();
        tokio::spawn({
            let lost = lost.clone();
            async move {
                lost.cancelled().await;
                stop.cancel();
            }
        });
        if let Err(error) = run::requests(&shared, &mut cluster, &stopped).await {
            tracing::warn!(%error, "taking requests failed; standing by");
        }
        renewing.abort();
        shared.leader.store(false, Ordering::SeqCst);
        shared.metrics.leader(false);
        if !lost.is_cancelled() {
            let _ = lease.release(cluster.conn()).await;
        }
        wait(&shutdown, STANDBY_POLL).await;
    }
    Ok(())
}

/// Renews the lease every third of its expiry; `lost` when it is someone else's, or could not be
/// renewed for its whole expiry.
async fn renew(mut cluster: crate::cluster::Cluster, lease: Lock, lost: CancellationToken) {
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(lease.renew_every()).await;
        match lease.renew(cluster.conn()).await {
            Ok(true) => last = tokio::time::Instant::now(),
            Ok(false) => break,
            Err(error) => {
                tracing::warn!(%error, "renewing the leader lease failed");
                if last.elapsed() >= lease.ttl() {
                    break;
                }
            }
        }
    }
    tracing::warn!("the leader lease was lost; standing by");
    lost.cancel();
}

async fn wait(shutdown: &CancellationToken, period: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(period) => {}
    }
}
