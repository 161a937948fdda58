//! `ebb request rolling-restart [flags] [--id ID] [--wait]`: adds a request to the cluster's
//! request stream for `ebb serve` to carry out (signed with `--secret`), prints its id, and with
//! `--wait` follows it to its end like `ebb watch`, exiting with the rollout's exit code.

use super::{Error, Outcome, Target};
use crate::service::requests;
use ebb_proto::request::{Request, RolloutOptions};
use std::time::Duration;

/// How long a request waits in the stream before it is refused as expired (with a secret).
pub const REQUEST_TTL: Duration = Duration::from_secs(24 * 3600);

/// What to request.
#[derive(Debug, Clone)]
pub struct Args {
    /// The idempotency key (default: a fresh one).
    pub id: Option<String>,
    pub options: RolloutOptions,
    /// Follow it to its end, at most this long.
    pub wait: Option<Duration>,
}

pub async fn run(target: &Target, args: Args) -> Result<Outcome, Error> {
    let id = args
        .id
        .unwrap_or_else(|| format!("req-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    let request = Request::rolling_restart(&id, args.options);
    // Checked as the service will check it, so a bad option is refused here, at once.
    let value = request.encode(target.secret.as_ref(), REQUEST_TTL.as_millis() as u64);
    ebb_proto::request::Request::decode(
        value.as_bytes(),
        target.secret.as_ref(),
        ebb_proto::time::now_ms(),
    )
    .map_err(|e| Error::Usage(e.to_string()))?;
    let ebb_proto::request::RequestKind::RollingRestart(options) = &request.kind;
    crate::service::run::overrides(options).map_err(Error::Usage)?;
    let mut cluster = target.connect().await?;
    let entry = requests::add(&mut cluster, &value).await?;
    eprintln!("request {id} added (stream entry {entry}); `ebb watch {id}` follows it");
    println!("{id}");
    match args.wait {
        None => Ok(Outcome::Success),
        Some(limit) => super::watch::follow(target, &id, limit).await,
    }
}
