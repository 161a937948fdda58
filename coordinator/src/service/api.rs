//! The service's HTTP API (axum):
//!
//! - `GET /api/status`: `{"leader": bool, "nodes": [...], "rollout": {...} | null}`, plus
//!   `cluster`, this service's `consumer`, and `lease` (who leads: `{"host", "pid",
//!   "since_ms"}`, or null while nobody does);
//! - `GET /api/rollouts/<id>`: the request's result, its `--json` report when it ran, with
//!   `status` one of queued, running, paused, completed, aborted, failed, refused;
//! - `POST /api/rollouts` (bearer token): a request, the same JSON as a stream entry's; 202 with
//!   its id and entry;
//! - `POST /api/rollouts/<id>/pause|continue|abort` (bearer token);
//! - `GET /metrics`; `GET /`: the status page.
//!
//! Writes need `--api-token` (401 without it or with another; 403 when the service has none);
//! bad input is a 4xx with `{"error": "..."}`. Any service answers, leader or not: requests go
//! through Redis to whichever is the leader.

use super::Shared;
use super::requests;
use super::results::{self, State};
use crate::cluster::Cluster;
use crate::commands::status;
use crate::lock::Holder;
use axum::Router;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use ebb_proto::control::{Control, Mode};
use ebb_proto::request::{MAX_REQUEST_BYTES, Request};
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

type App = Arc<Shared>;

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, shared: App, shutdown: CancellationToken) {
    let app = router(shared);
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
    if let Err(error) = server.await {
        tracing::error!(%error, "the API server failed");
    }
}

pub fn router(shared: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/status", get(api_status))
        .route("/api/rollouts", post(create))
        .route("/api/rollouts/{id}", get(rollout))
        .route("/api/rollouts/{id}/{action}", post(control))
        .with_state(shared)
}

/// An error answer: `{"error": ...}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// Redis could not answer.
fn unavailable(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

async fn connect(app: &App) -> Result<Cluster, ApiError> {
    app.target.connect().await.map_err(unavailable)
}

/// The bearer token check of the write endpoints.
fn authorized(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &app.config.api_token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "writes are off: ebb serve runs without --api-token",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
        )),
    }
}

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn page() -> Html<&'static str> {
    Html(super::page::HTML)
}

async fn metrics(AxumState(app): AxumState<App>) -> Response {
    if let Ok(mut cluster) = app.target.connect().await
        && let Ok(Some(json)) = cluster.rollout_state().await
        && let Ok(saved) = crate::commands::rolling_restart::read_saved(&json)
    {
        let mut phases: Vec<(String, usize)> = Vec::new();
        for run in &saved.rollout.nodes {
            let phase = run.phase.name().to_owned();
            match phases.iter_mut().find(|(p, _)| *p == phase) {
                Some((_, n)) => *n += 1,
                None => phases.push((phase, 1)),
            }
        }
        app.metrics.set_phases(&phases);
    } else {
        app.metrics.set_phases(&[]);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn api_status(AxumState(app): AxumState<App>) -> Result<Json<Value>, ApiError> {
    let mut cluster = connect(&app).await?;
    let (nodes, rollout) = status::snapshot(&mut cluster).await.map_err(unavailable)?;
    let lease = lease(&mut cluster).await;
    Ok(Json(json!({
        "leader": app.leader.load(Ordering::SeqCst),
        "consumer": app.consumer,
        "cluster": app.target.cluster,
        "lease": lease,
        "nodes": nodes,
        "rollout": rollout,
    })))
}

/// Longest lease holder's host name shown.
const MAX_HOST_LEN: usize = 253;

/// Who holds the leader lease, as `{"host", "pid", "since_ms"}`; null when nobody does, or the
/// key holds no lease (anything in Redis may: another type, other JSON), or cannot be read.
async fn lease(cluster: &mut Cluster) -> Value {
    let key = cluster.keys().serve_leader();
    let value: Option<String> = cluster.conn().get(key).await.ok().flatten();
    let Some(holder) = value.and_then(|v| serde_json::from_str::<Holder>(&v).ok()) else {
        return Value::Null;
    };
    let host: String = holder.host.chars().take(MAX_HOST_LEN).collect();
    json!({ "host": host, "pid": holder.pid, "since_ms": holder.started_at_ms })
}

async fn rollout(
    AxumState(app): AxumState<App>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if ebb_proto::keys::validate_name(&id).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "a request id is 1 to 64 of [A-Za-z0-9._-]",
        ));
    }
    let mut cluster = connect(&app).await?;
    let result = results::load(&mut cluster, &id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no request {id:?}")))?;
    let mut status = result.status;
    let mut live = Value::Null;
    if status == State::Running
        && let Ok((_, rollout)) = status::snapshot(&mut cluster).await
        && rollout["request"] == id.as_str()
    {
        if rollout["status"] == "paused" {
            status = State::Paused;
        }
        live = rollout;
    }
    let mut body = match &result.report {
        Some(report) => report.clone(),
        None => json!({}),
    };
    body["id"] = json!(result.id);
    body["entry"] = json!(result.entry);
    body["status"] = json!(status);
    if let Some(reason) = &result.reason {
        body["reason"] = json!(reason);
    }
    if !live.is_null() {
        body["rollout"] = live;
    }
    Ok(Json(body))
}

async fn create(
    AxumState(app): AxumState<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorized(&app, &headers)?;
    if body.len() > MAX_REQUEST_BYTES {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request is too large",
        ));
    }
    // Checked here (plain: the token vouches for it), sealed for the stream with the secret.
    let request = Request::decode(&body, None, ebb_proto::time::now_ms())
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let ebb_proto::request::RequestKind::RollingRestart(options) = &request.kind;
    super::run::overrides(options).map_err(|why| error(StatusCode::BAD_REQUEST, why))?;
    let mut cluster = connect(&app).await?;
    let value = request.encode(app.target.secret.as_ref(), REQUEST_TTL_MS);
    let entry = requests::add(&mut cluster, &value)
        .await
        .map_err(unavailable)?;
    let queued = json!({ "id": request.id, "entry": entry, "status": "queued" });
    Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
}

/// How long a request added through the API stays valid in the stream.
const REQUEST_TTL_MS: u64 = 24 * 3600 * 1000;

async fn control(
    AxumState(app): AxumState<App>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authorized(&app, &headers)?;
    let mode = match action.as_str() {
        "pause" => Mode::Paused,
        "continue" => Mode::Running,
        "abort" => Mode::Aborted,
        _ => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "expected pause, continue or abort",
            ));
        }
    };
    let mut cluster = connect(&app).await?;
    let (_, rollout) = status::snapshot(&mut cluster).await.map_err(unavailable)?;
    let steerable = matches!(rollout["status"].as_str(), Some("running" | "paused"));
    if rollout["request"] != id.as_str() || !steerable {
        let why = format!("request {id:?} is not a running rollout");
        return Err(error(StatusCode::CONFLICT, why));
    }
    let rollout_id = rollout["id"].as_str().ok_or_else(|| {
        error(
            StatusCode::CONFLICT,
            "the running rollout's state is unreadable",
        )
    })?;
    let reason = format!("{action} through the API");
    let control = Control::new(rollout_id, mode, &reason, "ebb serve API");
    let key = cluster.keys().rollout_control();
    let value = control.encode(app.target.secret.as_ref());
    let () = cluster.conn().set(key, value).await.map_err(unavailable)?;
    let requested = json!({ "id": id, "requested": mode.as_str() });
    Ok((StatusCode::ACCEPTED, Json(requested)).into_response())
}
