//! The subcommands. Each takes its parsed arguments and the global [`Target`], and returns an
//! [`Outcome`]; only the binary turns outcomes into exit codes and prints errors.

pub mod acl;
pub mod drain;
pub mod rebalance;
pub mod request;
pub mod resume;
pub mod rolling_restart;
pub mod rollout;
pub mod serve;
pub mod sign;
pub mod status;
pub mod watch;

use crate::cluster::{Cluster, ClusterError};
use ebb_proto::NodeName;
use ebb_proto::sign::Secret;

/// Which cluster, and how to reach and sign for it (the global flags).
#[derive(Debug, Clone)]
pub struct Target {
    /// `--redis` (with `--redis-ca`), parsed.
    pub redis: ebb_redis::RedisTarget,
    pub cluster: String,
    pub secret: Option<Secret>,
}

impl Target {
    pub async fn connect(&self) -> Result<Cluster, Error> {
        Ok(Cluster::connect(&self.redis, &self.cluster, self.secret.clone()).await?)
    }
}

/// The record of node `name`, or the failure to report when it is not registered.
pub(crate) async fn find_node(
    cluster: &mut Cluster,
    target: &Target,
    name: &NodeName,
) -> Result<Result<ebb_proto::NodeRecord, Outcome>, Error> {
    let nodes = cluster.nodes().await?;
    Ok(nodes.into_iter().find(|n| n.name == *name).ok_or_else(|| {
        Outcome::Failed(format!(
            "node {name} is not registered in cluster {:?}",
            target.cluster
        ))
    }))
}

/// How a subcommand ended. Exit codes: 0 success, 1 failed or aborted, 2 usage or infrastructure.
#[derive(Debug)]
pub enum Outcome {
    Success,
    /// The operation ran and did not succeed (a rollout aborted, a drain timed out).
    Failed(String),
}

/// An error before or outside the operation itself (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Usage(String),
    /// The environment failed the operation (Redis lost mid-rollout).
    #[error("{0}")]
    Infrastructure(String),
}
