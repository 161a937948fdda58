//! `ebb serve --listen ADDR [--api-token T] [--exec CMD] [--check CMD]`: the coordinator as a
//! long-running service for one cluster (see [`crate::service`]). SIGTERM/SIGINT stop it; a
//! rollout it was running is left saved for the next leader.

use super::{Error, Outcome, Target};
use crate::service::{self, Config};
use tokio_util::sync::CancellationToken;

pub async fn run(
    target: &Target,
    config: Config,
    shutdown: CancellationToken,
) -> Result<Outcome, Error> {
    service::serve(target.clone(), config, shutdown).await?;
    Ok(Outcome::Success)
}
