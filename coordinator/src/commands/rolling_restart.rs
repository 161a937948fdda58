//! `ebb rolling-restart`: drain and restart every node, one at a time.

use super::{Error, Outcome, Target};
use crate::lock::{Lock, LockError};
use crate::progress::Progress;
use crate::rollout::Policy;
use crate::rollout::engine::{Engine, Saved};
use crate::rollout::observe::Observation;
use crate::rollout::report::{Report, Status};
use crate::rollout::step::{Action, Rollout};
use ebb_proto::NodeName;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The flags of `rolling-restart`.
#[derive(Debug, Clone)]
pub struct Args {
    pub dry_run: bool,
    pub json: bool,
    pub resume: bool,
    pub fresh: bool,
    /// Restrict (and order) the plan to these nodes.
    pub nodes: Option<Vec<NodeName>>,
    pub policy: Policy,
    pub exec: Option<String>,
    pub redis_grace: Duration,
}

pub async fn run(
    target: &Target,
    args: Args,
    interrupt: CancellationToken,
) -> Result<Outcome, Error> {
    let json = args.json;
    let report = match start(target, args, interrupt).await? {
        Started::DryRun => return Ok(Outcome::Success),
        Started::Ran(report) => report,
        // `--json` always prints one object, also when the rollout never started.
        Started::Refused(reason) => Report {
            status: Status::Aborted,
            cluster: target.cluster.clone(),
            rollout_id: String::new(),
            duration_ms: 0,
            overhead_ms: 0,
            reason: Some(reason),
            failed_node: None,
            nodes: Vec::new(),
        },
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serializes")
        );
    } else if !report.nodes.is_empty() {
        eprint!("{}", report.summary());
    }
    let reason = || {
        report
            .reason
            .clone()
            .unwrap_or_else(|| "rollout stopped".to_owned())
    };
    match report.status {
        Status::Completed => Ok(Outcome::Success),
        Status::Aborted => Ok(Outcome::Failed(reason())),
        Status::Failed => Err(Error::Infrastructure(reason())),
    }
}

/// How far a rolling restart got.
enum Started {
    DryRun,
    /// Refused before touching anything (lock held, unfinished rollout, nothing to do).
    Refused(String),
    Ran(Report),
}

async fn start(
    target: &Target,
    args: Args,
    interrupt: CancellationToken,
) -> Result<Started, Error> {
    let mut cluster = target.connect().await?;
    let records = cluster.nodes().await?;
    let registered: Vec<NodeName> = records.iter().map(|r| r.name.clone()).collect();
    let plan = match &args.nodes {
        Some(names) => {
            if let Some(unknown) = names.iter().find(|n| !registered.contains(n)) {
                return Err(Error::Usage(format!(
                    "--nodes names {unknown}, which is not registered in cluster {:?}",
                    target.cluster
                )));
            }
            names.clone()
        }
        None => registered,
    };

    if args.dry_run {
        let mut obs = Observation::default();
        obs.apply_records(&records);
        print_plan(&plan, &obs, &args.policy);
        return Ok(Started::DryRun);
    }

    let ttl = ebb_proto::keys::ROLLOUT_LOCK_TTL;
    let lock_key = cluster.keys().rollout_lock();
    let lock = if args.resume {
        eprintln!(
            "ebb: taking the rollout lock (waiting up to {ttl:?} for a stopped coordinator's to expire)"
        );
        Lock::acquire_waiting(cluster.conn(), lock_key, ttl, ttl + Duration::from_secs(1)).await
    } else {
        Lock::acquire(cluster.conn(), lock_key, ttl).await
    };
    let lock = match lock {
        Ok(lock) => lock,
        Err(error @ LockError::Held { .. }) => return Ok(Started::Refused(error.to_string())),
        Err(LockError::Redis(error)) => return Err(Error::Cluster(error.into())),
    };

    let saved = match cluster.rollout_state().await? {
        Some(json) => match serde_json::from_str::<Saved>(&json) {
            Ok(saved) => Some(saved),
            Err(error) => {
                eprintln!("ebb: ignoring an unreadable saved rollout state: {error}");
                None
            }
        },
        None => None,
    };
    let rollout = match (args.resume, saved) {
        (true, Some(saved)) => {
            let mut rollout = saved.rollout;
            rollout.restart_timers(Duration::ZERO);
            eprintln!(
                "ebb: resuming rollout {} at node {} of {} ({})",
                rollout.id,
                rollout.index + 1,
                rollout.plan.len(),
                rollout.current().map_or("-", NodeName::as_str)
            );
            rollout
        }
        (true, None) => {
            let _ = lock.release(cluster.conn()).await;
            return Ok(Started::Refused("there is no rollout to resume".to_owned()));
        }
        (false, Some(saved)) if !args.fresh => {
            let _ = lock.release(cluster.conn()).await;
            return Ok(Started::Refused(format!(
                "an unfinished rollout ({}, {}) stopped at node {}; run `ebb rolling-restart --resume` to continue it or `--fresh` to discard it",
                saved.rollout.id,
                saved.status,
                saved.rollout.current().map_or("-", NodeName::as_str)
            )));
        }
        (false, _) => {
            if plan.is_empty() {
                let _ = lock.release(cluster.conn()).await;
                return Ok(Started::Refused(format!(
                    "no nodes registered in cluster {:?}",
                    target.cluster
                )));
            }
            Rollout::new(
                uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
                plan,
            )
        }
    };

    let mut progress = Progress::new(&rollout.plan, false);
    for done in &rollout.results[..rollout.index.min(rollout.results.len())] {
        progress.finish_node(&done.name, "done (before this coordinator)".to_owned());
    }
    let engine = Engine {
        cluster,
        policy: args.policy,
        secret: target.secret.clone(),
        exec: args.exec,
        redis_grace: args.redis_grace,
        lock,
    };
    let report = engine.run(rollout, &mut progress, interrupt).await;
    progress.finish();
    Ok(Started::Ran(report))
}

/// `--dry-run`: the order, and whether the first capacity check would pass now.
fn print_plan(plan: &[NodeName], obs: &Observation, policy: &Policy) {
    println!(
        "rolling restart plan ({} node(s), one at a time):",
        plan.len()
    );
    for (i, name) in plan.iter().enumerate() {
        let view = obs.nodes.get(name);
        println!(
            "  {}. {:<20} {:<9} {} connection(s)",
            i + 1,
            name,
            view.map_or("missing".to_owned(), |v| v.state.to_string()),
            view.map_or(0, |v| v.connections)
        );
    }
    if let Some(first) = plan.first() {
        let mut probe = Rollout::new("dry-run".into(), vec![first.clone()]);
        match probe.step(obs, policy, None) {
            Action::SendDrain { .. } => println!("capacity check for {first}: ok"),
            Action::Abort(abort) => println!("capacity check for {first}: would stop: {abort}"),
            other => println!("capacity check for {first}: {other:?}"),
        }
    }
}
