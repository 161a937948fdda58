//! Taking requests and carrying one out, as the leader.
//!
//! A request is read (refused with its reason, under its stream entry's id, if it is not a valid
//! one), claimed by its id (a second request with the same id runs nothing), run with
//! [`rolling_restart::execute`] (the CLI's own path) and answered with its report. A request a
//! dead leader had taken is resumed from the saved state when that state is its own.

use super::Shared;
use super::requests::{self, Entry};
use super::results::{self, RequestResult, State};
use crate::cluster::{Cluster, ClusterError};
use crate::commands::Error;
use crate::commands::rolling_restart::{self, Args, Output};
use crate::progress::Line;
use crate::rollout::{MaxParallel, OnCheckFail, Overrides};
use ebb_proto::request::{Request, RequestKind, RolloutOptions};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Progress lines waiting to be published; beyond this they are dropped.
const PROGRESS_QUEUE: usize = 256;

/// Takes requests until `stop`: first whatever a dead leader left, then new ones.
pub async fn requests(
    shared: &Shared,
    cluster: &mut Cluster,
    stop: &CancellationToken,
) -> Result<(), ClusterError> {
    requests::ensure_group(cluster).await?;
    for entry in requests::claim_pending(cluster, &shared.consumer).await? {
        tracing::info!(entry = %entry.id, "taking over a request a previous leader had taken");
        one(shared, cluster, entry, stop).await?;
    }
    while !stop.is_cancelled() {
        let next = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = requests::next(cluster, &shared.consumer) => next?,
        };
        if let Some(entry) = next {
            one(shared, cluster, entry, stop).await?;
        }
    }
    Ok(())
}

/// Carries one entry out and acknowledges it (unless stopped mid-rollout: then it stays pending
/// for the next leader).
async fn one(
    shared: &Shared,
    cluster: &mut Cluster,
    entry: Entry,
    stop: &CancellationToken,
) -> Result<(), ClusterError> {
    let request = match read(shared, &entry) {
        Ok(request) => request,
        Err((label, reason)) => {
            return refuse(shared, cluster, &entry, &entry.id, label, reason).await;
        }
    };
    let RequestKind::RollingRestart(options) = &request.kind;
    let overrides = match overrides(options) {
        Ok(overrides) => overrides,
        Err(reason) => {
            return refuse(shared, cluster, &entry, &request.id, "bad_option", reason).await;
        }
    };
    let Some(resume) = claim(cluster, &request.id, &entry).await? else {
        tracing::info!(id = %request.id, entry = %entry.id, "request already carried out; not again");
        return requests::ack(cluster, &entry.id).await;
    };
    let args = Args {
        dry_run: false,
        json: true,
        resume,
        fresh: false,
        nodes: options.nodes.clone(),
        overrides,
        exec: shared.config.exec.clone(),
        check: shared.config.check.clone(),
        redis_grace: shared.config.redis_grace,
        lock_ttl: shared.config.lock_ttl,
        request: Some(request.id.clone()),
        output: Output::Terminal,
    };
    let report = carry_out(shared, cluster, &request.id, args, stop).await;
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            let mut result = RequestResult::new(&request.id, &entry.id, State::Failed);
            result.reason = Some(error.to_string());
            results::store(cluster, &result, false).await?;
            return requests::ack(cluster, &entry.id).await;
        }
    };
    if stop.is_cancelled() && report.status != crate::rollout::report::Status::Completed {
        // Interrupted by our own shutdown or lost lease: the next leader resumes it.
        tracing::info!(id = %request.id, "left for the next leader");
        return Ok(());
    }
    shared.metrics.rollout_ended(&report);
    let result = RequestResult::finished(&request.id, &entry.id, &report);
    results::store(cluster, &result, false).await?;
    requests::ack(cluster, &entry.id).await
}

/// Decodes the entry's request, or says why not (a label for the metrics, and a sentence).
fn read(shared: &Shared, entry: &Entry) -> Result<Request, (&'static str, String)> {
    let value = entry
        .request
        .as_deref()
        .ok_or(("no_request", "the entry has no `request` field".to_owned()))?;
    let now = ebb_proto::time::now_ms();
    Request::decode(value, shared.target.secret.as_ref(), now)
        .map_err(|e| (e.label(), e.to_string()))
}

/// Answers a request that will not run, under `id`, and acknowledges its entry.
async fn refuse(
    shared: &Shared,
    cluster: &mut Cluster,
    entry: &Entry,
    id: &str,
    label: &'static str,
    reason: String,
) -> Result<(), ClusterError> {
    tracing::warn!(entry = %entry.id, %id, %reason, "request refused");
    shared.metrics.refused(label);
    let mut result = RequestResult::new(id, &entry.id, State::Refused);
    result.reason = Some(reason);
    // A refusal never overwrites what a genuine request with this id has.
    results::store(cluster, &result, true).await?;
    requests::ack(cluster, &entry.id).await
}

/// Takes the request's id: `Some(false)` to run it anew, `Some(true)` to resume it (a dead
/// leader had started it, and the saved state is its own), `None` when it already ran.
async fn claim(
    cluster: &mut Cluster,
    id: &str,
    entry: &Entry,
) -> Result<Option<bool>, ClusterError> {
    let running = RequestResult::new(id, &entry.id, State::Running);
    if results::store(cluster, &running, true).await? {
        return Ok(Some(false));
    }
    let Some(existing) = results::load(cluster, id).await? else {
        return Ok(Some(false));
    };
    if existing.status.is_final() {
        return Ok(None);
    }
    let saved = cluster.rollout_state().await?;
    let ours = saved
        .as_deref()
        .and_then(|json| rolling_restart::read_saved(json).ok())
        .is_some_and(|s| s.request.as_deref() == Some(id));
    Ok(Some(ours))
}

/// Runs the rollout, publishing its progress and keeping its result `running` meanwhile.
async fn carry_out(
    shared: &Shared,
    cluster: &mut Cluster,
    id: &str,
    mut args: Args,
    stop: &CancellationToken,
) -> Result<crate::rollout::report::Report, Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Line>(PROGRESS_QUEUE);
    args.output = Output::Channel(tx);
    let mut publisher = cluster.clone();
    let channel = cluster.keys().progress();
    let request = id.to_owned();
    let forward = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            let json = serde_json::json!({
                "request": request,
                "node": line.node,
                "message": line.message,
                "done": line.done,
                "at_ms": ebb_proto::time::now_ms(),
            });
            let _ = publisher.publish(&channel, &json.to_string()).await;
        }
    });
    let run = rolling_restart::execute(&shared.target, args, stop.clone()).await;
    // The sender went with the engine; what is queued is published, then the task ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), forward).await;
    run
}

/// The request's options as the CLI's overrides.
pub fn overrides(o: &RolloutOptions) -> Result<Overrides, String> {
    let duration = |field: &str, v: &Option<String>| -> Result<Option<Duration>, String> {
        v.as_deref()
            .map(|s| humantime::parse_duration(s).map_err(|e| format!("{field}: {e}")))
            .transpose()
    };
    let choice = |field: &str, v: &Option<String>, yes: &str, no: &str| match v.as_deref() {
        None => Ok(None),
        Some(s) if s == yes => Ok(Some(true)),
        Some(s) if s == no => Ok(Some(false)),
        Some(s) => Err(format!("{field}: expected {yes} or {no}, got {s:?}")),
    };
    Ok(Overrides {
        max_parallel: o
            .max_parallel
            .as_deref()
            .map(|s| {
                s.parse::<MaxParallel>()
                    .map_err(|e| format!("max_parallel: {e}"))
            })
            .transpose()?,
        min_active: o.min_active,
        ack_timeout: duration("ack_timeout", &o.ack_timeout)?,
        ack_retries: o.ack_retries,
        drain_timeout: duration("drain_timeout", &o.drain_timeout)?,
        exit_timeout: duration("exit_timeout", &o.exit_timeout)?,
        replace_timeout: duration("replace_timeout", &o.replace_timeout)?,
        settle: duration("settle", &o.settle)?,
        ephemeral_names: o.ephemeral_names,
        abort_on_lost: choice("on_node_lost", &o.on_node_lost, "abort", "wait")?,
        pause_after: o.pause_after,
        min_ready: duration("min_ready", &o.min_ready)?,
        on_check_fail: choice("on_check_fail", &o.on_check_fail, "abort", "pause")?.map(|abort| {
            if abort {
                OnCheckFail::Abort
            } else {
                OnCheckFail::Pause
            }
        }),
        rebalance: o.rebalance,
    })
}
