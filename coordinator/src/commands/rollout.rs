//! `ebb rollout pause|continue|abort [--reason R] [--wait]`: steer the running rollout from
//! another terminal or a CI job, through its control value in Redis (signed with `--secret`).
//!
//! Pause admits no new node (those in flight finish) until `continue`; abort does the same and
//! then stops the rollout, aborted. The coordinator reads the value every tick, so it acts
//! within about 100 ms; `--wait` returns once it has (the saved state shows the mode).

use super::{Error, Outcome, Target};
use crate::rollout::engine::Saved;
use ebb_proto::control::{Control, Mode};
use redis::AsyncCommands;
use std::time::Duration;

/// What to ask.
#[derive(Debug, Clone)]
pub struct Args {
    pub mode: Mode,
    pub reason: Option<String>,
    /// Wait (at most this long) until the coordinator has taken the mode.
    pub wait: Option<Duration>,
}

pub async fn run(target: &Target, args: Args) -> Result<Outcome, Error> {
    let mut cluster = target.connect().await?;
    let Some(saved) = saved(&mut cluster).await? else {
        return Ok(Outcome::Failed(format!(
            "there is no rollout in cluster {:?} to {}",
            target.cluster,
            verb(args.mode)
        )));
    };
    let id = saved.rollout.id.clone();
    let reason = args
        .reason
        .unwrap_or_else(|| format!("{} by an operator", args.mode.as_str()));
    let by = format!(
        "ebb rollout on {}",
        gethostname::gethostname().to_string_lossy()
    );
    let control = Control::new(&id, args.mode, &reason, &by);
    let key = cluster.keys().rollout_control();
    let _: () = cluster
        .conn()
        .set(key, control.encode(target.secret.as_ref()))
        .await
        .map_err(crate::cluster::ClusterError::from)?;
    let in_flight: Vec<String> = saved
        .rollout
        .in_flight()
        .map(|r| format!("{} ({})", r.name(), r.phase.name()))
        .collect();
    eprintln!(
        "rollout {id}: {} requested ({} of {} node(s) done; in flight: {})",
        args.mode.as_str(),
        saved.rollout.done(),
        saved.rollout.nodes.len(),
        if in_flight.is_empty() {
            "none".to_owned()
        } else {
            format!("{}, which finish first", in_flight.join(", "))
        }
    );
    match args.wait {
        None => Ok(Outcome::Success),
        Some(limit) => wait_taken(&mut cluster, &id, args.mode, limit).await,
    }
}

fn verb(mode: Mode) -> &'static str {
    match mode {
        Mode::Running => "continue",
        Mode::Paused => "pause",
        Mode::Aborted => "abort",
    }
}

async fn saved(cluster: &mut crate::cluster::Cluster) -> Result<Option<Saved>, Error> {
    let Some(json) = cluster.rollout_state().await? else {
        return Ok(None);
    };
    match super::rolling_restart::read_saved(&json) {
        Ok(saved) => Ok(Some(saved)),
        Err(why) => Err(Error::Infrastructure(format!(
            "the saved rollout state is unreadable ({why})"
        ))),
    }
}

/// Until the saved state shows `mode` (or, for an abort, the rollout has stopped).
async fn wait_taken(
    cluster: &mut crate::cluster::Cluster,
    id: &str,
    mode: Mode,
    limit: Duration,
) -> Result<Outcome, Error> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = saved(cluster).await?;
        let taken = match &now {
            Some(s) if s.rollout.id == id => {
                s.rollout.mode == mode || (mode == Mode::Aborted && s.status != "running")
            }
            // It ended.
            _ => mode == Mode::Aborted,
        };
        if taken {
            eprintln!("rollout {id}: {}", mode.as_str());
            return Ok(Outcome::Success);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Outcome::Failed(format!(
                "the coordinator did not take `{}` within {limit:?}; is it running? (`ebb status` shows the rollout)",
                mode.as_str()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
