//! `ebb rolling-restart`: drain and restart every node, as many at a time as `--max-parallel`
//! allows (one by default).

use super::{Error, Outcome, Target};
use crate::cluster::Cluster;
use crate::lock::{Lock, LockError};
use crate::progress::Progress;
use crate::rollout::engine::{Engine, Saved};
use crate::rollout::observe::Observation;
use crate::rollout::rebalance::{self, Settings};
use crate::rollout::report::{Report, Status};
use crate::rollout::state::{Action, Rollout};
use crate::rollout::{Overrides, Policy};
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
    /// The rules given on the command line (the rest are defaults, or on resume the saved ones).
    pub overrides: Overrides,
    pub exec: Option<String>,
    /// `--check` template (`{name}`, `{url}`).
    pub check: Option<String>,
    pub redis_grace: Duration,
    /// The rollout lock's expiry: how long a dead coordinator's lock holds others off.
    pub lock_ttl: Duration,
    /// The service request this rollout carries out (saved with it, so a standby resumes it).
    pub request: Option<String>,
    /// Where progress goes.
    pub output: Output,
}

/// Where a rollout's progress goes.
#[derive(Debug, Clone, Default)]
pub enum Output {
    /// The terminal: bars on a TTY, lines otherwise.
    #[default]
    Terminal,
    /// A channel (the service publishes it).
    Channel(tokio::sync::mpsc::Sender<crate::progress::Line>),
}

pub async fn run(
    target: &Target,
    args: Args,
    interrupt: CancellationToken,
) -> Result<Outcome, Error> {
    let json = args.json;
    if args.dry_run {
        return dry_run(target, &args).await;
    }
    let report = execute(target, args, interrupt).await?;
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

/// Runs a rolling restart to its report: refused before touching anything (lock held,
/// unfinished rollout, nothing to do; `--json` always prints one object), or run, then
/// rebalanced when it completed uneven. The one way both front ends (the CLI and `ebb serve`)
/// roll a cluster.
pub async fn execute(
    target: &Target,
    args: Args,
    interrupt: CancellationToken,
) -> Result<Report, Error> {
    match start(target, args, interrupt).await? {
        Started::Refused(reason) => Ok(Report::refused(&target.cluster, reason)),
        Started::Ran(ran) => balanced(target, ran.0, &ran.1).await,
    }
}

/// How far a rolling restart got.
enum Started {
    /// Refused before touching anything (lock held, unfinished rollout, nothing to do).
    Refused(String),
    /// It ran, under this policy.
    Ran(Box<(Report, Policy)>),
}

/// The last step of a completed rollout: a rebalance when the fleet ended uneven.
async fn balanced(target: &Target, mut report: Report, policy: &Policy) -> Result<Report, Error> {
    if report.status != Status::Completed || !policy.rebalance {
        return Ok(report);
    }
    let settings = Settings {
        tolerance: rebalance::ROLLOUT_TOLERANCE,
        rate: rebalance::DEFAULT_RATE,
        rounds: rebalance::ROUNDS,
    };
    match super::rebalance::balance(target, settings).await {
        Ok(Ok(balance)) => report.balance = Some(balance),
        Ok(Err(held)) => eprintln!("ebb: not rebalancing: {held}"),
        Err(error) => eprintln!("ebb: not rebalancing: {error}"),
    }
    Ok(report)
}

/// What to run: a new rollout, or the saved one.
#[derive(Debug)]
pub struct Prepared {
    pub rollout: Rollout,
    pub policy: Policy,
    pub exec: Option<String>,
    pub check: Option<String>,
    /// The service request it carries out.
    pub request: Option<String>,
}

fn fresh_policy(args: &Args) -> Policy {
    Policy {
        exec: args.exec.is_some(),
        check: args.check.is_some(),
        ..args.overrides.apply(Policy::default())
    }
}

/// `--dry-run`: the plan and whether the first admission would pass now.
async fn dry_run(target: &Target, args: &Args) -> Result<Outcome, Error> {
    let mut cluster = target.connect().await?;
    let records = cluster.nodes().await?;
    let registered: Vec<NodeName> = records.iter().map(|r| r.name.clone()).collect();
    let plan = plan(target, args, registered)?;
    let mut obs = Observation {
        wall_ms: ebb_proto::time::now_ms(),
        ..Observation::default()
    };
    obs.apply_records(&records);
    print_plan(&plan, &obs, &fresh_policy(args));
    Ok(Outcome::Success)
}

async fn start(
    target: &Target,
    args: Args,
    interrupt: CancellationToken,
) -> Result<Started, Error> {
    let mut cluster = target.connect().await?;
    let records = cluster.nodes().await?;
    let registered: Vec<NodeName> = records.iter().map(|r| r.name.clone()).collect();
    let plan = plan(target, &args, registered)?;
    let fresh_policy = fresh_policy(&args);
    let lock = match take_lock(&mut cluster, args.resume, args.lock_ttl).await? {
        Ok(lock) => lock,
        Err(refused) => return Ok(Started::Refused(refused)),
    };
    let prepared = match prepare(&mut cluster, &args, plan, fresh_policy).await {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(refused)) => {
            let _ = lock.release(cluster.conn()).await;
            return Ok(Started::Refused(refused));
        }
        Err(error) => {
            let _ = lock.release(cluster.conn()).await;
            return Err(error);
        }
    };

    let mut progress = match &args.output {
        Output::Terminal => Progress::new(&prepared.rollout.plan(), false),
        Output::Channel(tx) => Progress::to_channel(tx.clone()),
    };
    for run in prepared.rollout.nodes.iter().filter(|r| !r.in_flight()) {
        if run.phase == crate::rollout::node::Phase::Done {
            progress.finish_node(run.name(), "done (before this coordinator)".to_owned());
        }
    }
    let policy = prepared.policy.clone();
    let engine = Engine {
        io: cluster,
        policy: prepared.policy,
        exec: prepared.exec,
        check: prepared.check,
        request: prepared.request,
        redis_grace: args.redis_grace,
        lock,
    };
    let report = engine.run(prepared.rollout, &mut progress, interrupt).await;
    progress.finish();
    Ok(Started::Ran(Box::new((report, policy))))
}

/// The nodes to roll, in order: `--nodes` (each must be registered) or every registered node.
fn plan(target: &Target, args: &Args, registered: Vec<NodeName>) -> Result<Vec<NodeName>, Error> {
    let Some(names) = &args.nodes else {
        return Ok(registered);
    };
    if let Some(unknown) = names.iter().find(|n| !registered.contains(n)) {
        return Err(Error::Usage(format!(
            "--nodes names {unknown}, which is not registered in cluster {:?}",
            target.cluster
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = names.iter().find(|n| !seen.insert(*n)) {
        return Err(Error::Usage(format!("--nodes names {twice} twice")));
    }
    Ok(names.clone())
}

/// Takes the rollout lock (on `--resume`, waiting for a stopped coordinator's to expire);
/// `Ok(Err(why))` when another coordinator holds it.
async fn take_lock(
    cluster: &mut Cluster,
    resume: bool,
    ttl: Duration,
) -> Result<Result<Lock, String>, Error> {
    let key = cluster.keys().rollout_lock();
    let lock = if resume {
        eprintln!(
            "ebb: taking the rollout lock (waiting up to {ttl:?} for a stopped coordinator's to expire)"
        );
        Lock::acquire_waiting(cluster.conn(), key, ttl, ttl + Duration::from_secs(1)).await
    } else {
        Lock::acquire(cluster.conn(), key, ttl).await
    };
    match lock {
        Ok(lock) => Ok(Ok(lock)),
        Err(error @ LockError::Held { .. }) => Ok(Err(error.to_string())),
        Err(LockError::Redis(error)) => Err(Error::Cluster(error.into())),
    }
}

/// The rollout to run, under the lock: the saved one on `--resume` (its policy and `--exec`
/// kept; a flag that contradicts them is refused), else a new one (refused while an unfinished
/// one exists, unless `--fresh`). `Ok(Err(why))` is a refusal.
async fn prepare(
    cluster: &mut Cluster,
    args: &Args,
    plan: Vec<NodeName>,
    fresh_policy: Policy,
) -> Result<Result<Prepared, String>, Error> {
    let saved = match cluster.rollout_state().await? {
        None => None,
        Some(json) => match read_saved(&json) {
            Ok(saved) => Some(saved),
            Err(why) if args.fresh => {
                eprintln!("ebb: discarding an unreadable saved rollout state: {why}");
                None
            }
            Err(why) => {
                let key = cluster.keys().rollout_state();
                return Ok(Err(format!(
                    "the saved rollout state is unreadable ({why}); inspect it with `redis-cli GET '{key}'`, or discard it with `ebb rolling-restart --fresh`"
                )));
            }
        },
    };
    match (args.resume, saved) {
        (true, Some(saved)) => Ok(resume(saved, args)),
        (true, None) => Ok(Err("there is no rollout to resume".to_owned())),
        (false, Some(saved)) if !args.fresh => Ok(Err(format!(
            "an unfinished rollout ({}, {}, {} of {} node(s) done) exists; run `ebb rolling-restart --resume` to continue it or `--fresh` to discard it",
            saved.rollout.id,
            saved.status,
            saved.rollout.done(),
            saved.rollout.nodes.len()
        ))),
        (false, _) if plan.is_empty() => Ok(Err(format!(
            "no nodes registered in cluster {:?}",
            cluster.keys().cluster()
        ))),
        (false, _) => Ok(Ok(Prepared {
            rollout: Rollout::new(new_id(), plan),
            policy: fresh_policy,
            exec: args.exec.clone(),
            check: args.check.clone(),
            request: args.request.clone(),
        })),
    }
}

/// Parses and checks a saved state.
pub fn read_saved(json: &str) -> Result<Saved, String> {
    let saved: Saved = serde_json::from_str(json).map_err(|e| e.to_string())?;
    saved.rollout.validate().map_err(|e| e.to_string())?;
    if saved.policy.exec != saved.exec.is_some() || saved.policy.check != saved.check.is_some() {
        return Err("its policy and its commands disagree".to_owned());
    }
    Ok(saved)
}

/// The rules given now on a resume: they must not contradict the saved ones.
#[derive(Debug, Clone, Copy)]
pub struct Given<'a> {
    pub overrides: &'a Overrides,
    pub exec: Option<&'a String>,
    pub check: Option<&'a String>,
}

impl<'a> From<&'a Args> for Given<'a> {
    fn from(args: &'a Args) -> Self {
        Given {
            overrides: &args.overrides,
            exec: args.exec.as_ref(),
            check: args.check.as_ref(),
        }
    }
}

/// The saved rollout, continued under its own rules.
pub fn resume<'a>(saved: Saved, given: impl Into<Given<'a>>) -> Result<Prepared, String> {
    let given = given.into();
    let mut conflicts = given.overrides.conflicts(&saved.policy);
    if given.exec.is_some() && given.exec != saved.exec.as_ref() {
        conflicts.push("--exec".to_owned());
    }
    if given.check.is_some() && given.check != saved.check.as_ref() {
        conflicts.push("--check".to_owned());
    }
    if !conflicts.is_empty() {
        return Err(format!(
            "rollout {} was started with other rules than {} give; run `ebb rolling-restart --resume` without them to continue it as it was started (saved: {})",
            saved.rollout.id,
            conflicts.join(", "),
            serde_json::to_string(&saved.policy).expect("a policy serializes"),
        ));
    }
    let mut rollout = saved.rollout;
    rollout.restart_timers(Duration::ZERO);
    let in_flight: Vec<String> = rollout.in_flight().map(|r| r.name().to_string()).collect();
    eprintln!(
        "ebb: resuming rollout {}: {} of {} node(s) done, in flight: {}",
        rollout.id,
        rollout.done(),
        rollout.nodes.len(),
        if in_flight.is_empty() {
            "none".to_owned()
        } else {
            in_flight.join(", ")
        }
    );
    Ok(Prepared {
        rollout,
        policy: saved.policy,
        exec: saved.exec,
        check: saved.check,
        request: saved.request,
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// `--dry-run`: the order, and whether the first admission would pass now.
fn print_plan(plan: &[NodeName], obs: &Observation, policy: &Policy) {
    println!(
        "rolling restart plan ({} node(s), at most {} at a time):",
        plan.len(),
        policy.max_parallel.of(plan.len())
    );
    for (i, name) in plan.iter().enumerate() {
        let view = obs.record(name);
        println!(
            "  {}. {:<20} {:<9} {} connection(s)",
            i + 1,
            name,
            view.map_or("missing".to_owned(), |v| v.state.to_string()),
            view.map_or(0, |v| v.connections)
        );
    }
    if plan.is_empty() {
        return;
    }
    let mut probe = Rollout::new("0".into(), plan.to_vec());
    let actions = probe.step(obs, policy, &mut Vec::new());
    let first = &plan[0];
    match actions.first() {
        Some(Action::SendDrain { .. }) => println!("capacity check for {first}: ok"),
        Some(Action::Abort(abort)) => println!("capacity check for {first}: would stop: {abort}"),
        other => println!("capacity check for {first}: {other:?}"),
    }
}
