//! A request's result, kept at `ebb:{c}:result:<id>` for [`RESULT_TTL`]: `queued` when the
//! service took it, `running` with its rollout's id, then the final report. Reading it is how
//! `ebb watch`, `ebb request --wait` and the API follow a request.

use crate::cluster::{Cluster, ClusterError};
use crate::rollout::report::{Report, Status};
use ebb_proto::keys::RESULT_TTL;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    Paused,
    Completed,
    Aborted,
    Failed,
    /// Never run: malformed, unsigned, expired, or another rollout was unfinished.
    Refused,
}

impl State {
    /// Whether nothing will change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Completed | State::Aborted | State::Failed | State::Refused
        )
    }

    /// The exit code of `ebb watch` / `ebb request --wait`: 0 completed, 1 aborted or refused,
    /// 2 failed.
    pub fn exit_code(self) -> u8 {
        match self {
            State::Completed => 0,
            State::Failed => 2,
            _ => 1,
        }
    }

    pub fn of(status: Status) -> State {
        match status {
            Status::Completed => State::Completed,
            Status::Aborted => State::Aborted,
            Status::Failed => State::Failed,
        }
    }
}

/// What is kept about a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestResult {
    /// The request's id (or, for a request refused unread, its stream entry's).
    pub id: String,
    /// The stream entry it came in.
    pub entry: String,
    pub status: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `--json` report, once it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    pub at_ms: u64,
}

impl RequestResult {
    pub fn new(id: &str, entry: &str, status: State) -> Self {
        RequestResult {
            id: id.to_owned(),
            entry: entry.to_owned(),
            status,
            rollout_id: None,
            reason: None,
            report: None,
            at_ms: ebb_proto::time::now_ms(),
        }
    }

    /// The final result of a rollout's `report`.
    pub fn finished(id: &str, entry: &str, report: &Report) -> Self {
        RequestResult {
            rollout_id: Some(report.rollout_id.clone()).filter(|r| !r.is_empty()),
            reason: report.reason.clone(),
            report: Some(serde_json::to_value(report).expect("a report serializes")),
            ..RequestResult::new(id, entry, State::of(report.status))
        }
    }
}

/// Stores `result`; with `only_new`, only if the id has none yet (`false` then: it had one).
pub async fn store(
    cluster: &mut Cluster,
    result: &RequestResult,
    only_new: bool,
) -> Result<bool, ClusterError> {
    let key = cluster.keys().result(&result.id);
    let json = serde_json::to_string(result).expect("a result serializes");
    let mut options = redis::SetOptions::default()
        .with_expiration(redis::SetExpiry::PX(RESULT_TTL.as_millis() as u64));
    if only_new {
        options = options.conditional_set(redis::ExistenceCheck::NX);
    }
    let set: Option<String> = cluster.conn().set_options(key, json, options).await?;
    Ok(set.is_some())
}

/// The result of request `id`, if any (an unreadable one is none, with a warning).
pub async fn load(cluster: &mut Cluster, id: &str) -> Result<Option<RequestResult>, ClusterError> {
    let key = cluster.keys().result(id);
    let json: Option<String> = cluster.conn().get(key).await?;
    Ok(json.and_then(|j| match serde_json::from_str(&j) {
        Ok(result) => Some(result),
        Err(error) => {
            tracing::warn!(%id, %error, "unreadable request result");
            None
        }
    }))
}
