//! What the engine needs from the cluster, as a trait: Redis implements it
//! ([`crate::cluster::Cluster`]), and so does the in-memory cluster the model tests run the
//! engine against, so the one engine is what both exercise.

use crate::cluster::{ClusterError, Followed, Intake};
use crate::lock::Lock;
use ebb_proto::command::Command;
use ebb_proto::control::Control;
use ebb_proto::{NodeName, NodeRecord};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One targeted read: the records of some nodes and the own copies of some instances.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub records: Vec<(NodeName, Option<NodeRecord>)>,
    pub instances: Vec<(Uuid, Option<NodeRecord>)>,
}

/// The cluster, as the engine uses it. Every method is one round trip (or none).
#[allow(async_fn_in_trait)]
pub trait Io {
    /// The ebb cluster's name.
    fn cluster(&self) -> &str;

    /// The coordinator's wall clock, ms since the epoch.
    fn now_ms(&self) -> u64;

    /// Every node record (parsed and verified; bad ones skipped with a warning).
    async fn nodes(&mut self) -> Result<Vec<NodeRecord>, ClusterError>;

    /// The records of `names` and the own copies of `instances`.
    async fn read(
        &mut self,
        names: &[NodeName],
        instances: &[(NodeName, Uuid)],
    ) -> Result<Snapshot, ClusterError>;

    /// Writes the command as the node's desired state and publishes it (signed when the
    /// cluster has a secret); how many subscribers got it.
    async fn send(&mut self, command: &Command) -> Result<usize, ClusterError>;

    /// Deletes `name`'s desired state if it still holds a command whose id starts with
    /// `prefix` (one this rollout wrote), and nothing newer from someone else.
    async fn clear_desired(&mut self, name: &NodeName, prefix: &str) -> Result<(), ClusterError>;

    /// Saves the rollout state if `lock` is still held; `false` when it is not (nothing written).
    async fn save_state(&mut self, lock: &Lock, json: &str) -> Result<bool, ClusterError>;

    /// The running rollout's control value, parsed (and verified with a secret); a bad one is
    /// logged and taken as none.
    async fn control(&mut self) -> Result<Option<Control>, ClusterError>;

    /// Writes the control value if `lock` is still held; `false` when it is not.
    async fn set_control(&mut self, lock: &Lock, control: &Control) -> Result<bool, ClusterError>;

    /// Removes the rollout state (and its control value) if `lock` is still held.
    async fn clear_state(&mut self, lock: &Lock) -> Result<(), ClusterError>;

    /// Extends the lock; `false` when it is no longer ours.
    async fn renew(&mut self, lock: &Lock) -> Result<bool, ClusterError>;

    /// Releases the lock if it is still ours.
    async fn release(&mut self, lock: &Lock) -> Result<(), ClusterError>;

    /// Follows the cluster's events until `stop` (bounded; what overflows is counted in
    /// [`Intake`]).
    fn follow_events(&self, stop: CancellationToken) -> mpsc::Receiver<Followed>;

    /// What the event intake refused and dropped.
    fn intake(&self) -> Arc<Intake>;

    /// Runs an `--exec` command line, bounded by `limit`.
    fn exec(
        &self,
        command: String,
        limit: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static;
}
