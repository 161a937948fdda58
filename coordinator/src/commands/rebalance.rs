//! `ebb rebalance [--tolerance 10%] [--rate N] [--json]`: even out the fleet's connections
//! without a restart, by telling overloaded nodes to shed clients to the nodes with room. Takes
//! the rollout lock, so it never overlaps a rollout.

use super::{Error, Outcome, Target};
use crate::lock::{Lock, LockError};
use crate::progress::Progress;
use crate::rollout::rebalance::{self, BalanceReport, Settings};

/// The flags.
#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub settings: Settings,
    pub json: bool,
}

pub async fn run(target: &Target, args: Args) -> Result<Outcome, Error> {
    let report = balance(target, args.settings).await?;
    let report = match report {
        Ok(report) => report,
        Err(refused) => return Ok(Outcome::Failed(refused)),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serializes")
        );
    } else {
        eprintln!(
            "max/mean connections {:.2} -> {:.2} in {} round(s), {} connection(s) moved",
            report.before, report.after, report.rounds, report.shed
        );
    }
    match (report.reached, report.reason) {
        (true, _) => Ok(Outcome::Success),
        (false, reason) => Ok(Outcome::Failed(
            reason.unwrap_or_else(|| "the fleet is still uneven".to_owned()),
        )),
    }
}

/// Rebalances under the rollout lock; `Ok(Err(why))` when the lock is held by someone else.
pub async fn balance(
    target: &Target,
    settings: Settings,
) -> Result<Result<BalanceReport, String>, Error> {
    let mut cluster = target.connect().await?;
    let ttl = ebb_proto::keys::ROLLOUT_LOCK_TTL;
    let key = cluster.keys().rollout_lock();
    let lock = match Lock::acquire(cluster.conn(), key, ttl).await {
        Ok(lock) => lock,
        Err(error @ LockError::Held { .. }) => return Ok(Err(error.to_string())),
        Err(LockError::Redis(error)) => return Err(Error::Cluster(error.into())),
    };
    let progress = Progress::new(&[], true);
    let result = renewing(&mut cluster, &lock, settings, &progress).await;
    let _ = lock.release(cluster.conn()).await;
    Ok(Ok(result?))
}

/// Runs the rebalance, renewing the lock meanwhile (a rebalance can outlast its expiry).
async fn renewing(
    cluster: &mut crate::cluster::Cluster,
    lock: &Lock,
    settings: Settings,
    progress: &Progress,
) -> Result<BalanceReport, Error> {
    let mut renewer = cluster.clone();
    let renew_every = lock.renew_every();
    let renewal = async {
        loop {
            tokio::time::sleep(renew_every).await;
            let _ = lock.renew(renewer.conn()).await;
        }
    };
    tokio::select! {
        report = rebalance::run(cluster, settings, progress) => Ok(report?),
        () = renewal => unreachable!("renews until the rebalance ends"),
    }
}

/// `--tolerance 10%` (or `0.1`).
pub fn parse_tolerance(s: &str) -> Result<f64, String> {
    let bad = || format!("expected a tolerance such as 10% or 0.1, got {s:?}");
    let value: f64 = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.trim().parse().map_err(|_| bad())?,
    };
    if !(0.0..=10.0).contains(&value) || value.is_nan() {
        return Err(bad());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_parse() {
        assert_eq!(parse_tolerance("10%"), Ok(0.1));
        assert_eq!(parse_tolerance("0.25"), Ok(0.25));
        for bad in ["", "x", "-5%", "NaN", "2000%"] {
            assert!(parse_tolerance(bad).is_err(), "{bad}");
        }
    }
}
