//! The node's HTTP surface: `/ws`, `/health`, `/metrics`, and the admin endpoints.
//!
//! `/health` is seed-compatible: 200 `{"status":"healthy","connections":N,"full":false,
//! "capacity":C}` while active, 503 `{"status":"draining",...}` (or `starting`, `drained`)
//! otherwise, so a load balancer or a Kubernetes readiness probe stops routing to a node the
//! moment its drain begins. A node at its capacity stays 200 with `"full":true`: it is full, not
//! dead, and it still answers (descriptors are reserved for it, see `door`).
//! `POST /admin/drain` and `POST /admin/resume` need `Authorization: Bearer <token>` and answer
//! 404 when no token is configured.

use crate::app::App;
use crate::control::{DrainRequest, Request};
use crate::shared::Shared;
use crate::upgrade;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ebb_proto::NodeState;
use ebb_proto::command::Then;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn router<A: App>(shared: Arc<Shared<A>>) -> Router {
    Router::new()
        .route("/ws", get(upgrade::handler::<A>))
        .route("/health", get(health::<A>))
        .route("/metrics", get(metrics::<A>))
        .route("/admin/drain", post(admin_drain::<A>))
        .route("/admin/resume", post(admin_resume::<A>))
        .with_state(shared)
}

async fn health<A: App>(State(shared): State<Arc<Shared<A>>>) -> Response {
    let connections = shared.registry.count();
    match shared.state() {
        NodeState::Active => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "status": "healthy",
                "connections": connections,
                "full": shared.door.is_full(),
                "capacity": shared.door.limits().capacity,
            })),
        )
            .into_response(),
        state => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": state.as_str(), "connections": connections })),
        )
            .into_response(),
    }
}

async fn metrics<A: App>(State(shared): State<Arc<Shared<A>>>) -> Response {
    shared.metrics.set_handshakes(shared.door.handshakes());
    let text = shared
        .metrics
        .render(shared.state(), shared.registry.count());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Query of `POST /admin/drain`: `?then=stay&deadline_ms=10000`.
#[derive(Debug, Deserialize)]
struct DrainQuery {
    #[serde(default)]
    then: Then,
    deadline_ms: Option<u64>,
}

/// Why an admin request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdminRefusal {
    /// No token configured: the endpoints do not exist.
    Off,
    /// Missing or wrong bearer token.
    Unauthorized,
}

impl IntoResponse for AdminRefusal {
    fn into_response(self) -> Response {
        match self {
            AdminRefusal::Off => (
                StatusCode::NOT_FOUND,
                "admin endpoints are off (no token configured)",
            )
                .into_response(),
            AdminRefusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token",
            )
                .into_response(),
        }
    }
}

/// Checks the bearer token in constant time.
fn authorize<A: App>(shared: &Shared<A>, headers: &HeaderMap) -> Result<(), AdminRefusal> {
    let Some(expected) = shared.config.admin_token.as_deref() else {
        return Err(AdminRefusal::Off);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        tracing::warn!("admin request with a missing or wrong bearer token refused");
        Err(AdminRefusal::Unauthorized)
    }
}

/// Compares without an early exit, so response time does not reveal how much of a guess matched.
/// (Written here rather than pulling a crate for six lines.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn admin_drain<A: App>(
    State(shared): State<Arc<Shared<A>>>,
    headers: HeaderMap,
    query: Result<Query<DrainQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refusal) = authorize(&shared, &headers) {
        return refusal.into_response();
    }
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
    };
    let args = ebb_proto::command::Drain {
        then: query.then,
        deadline_ms: query.deadline_ms,
        targets: Vec::new(),
    };
    if let Err(problem) = args.validate() {
        return (StatusCode::BAD_REQUEST, problem).into_response();
    }
    let request = DrainRequest {
        then: query.then,
        deadline: query.deadline_ms.map(Duration::from_millis),
        targets: Vec::new(),
        trigger: "admin".to_owned(),
    };
    let _ = shared.requests.send(Request::Drain(request));
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "status": "draining", "then": query.then })),
    )
        .into_response()
}

async fn admin_resume<A: App>(
    State(shared): State<Arc<Shared<A>>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = authorize(&shared, &headers) {
        return refusal.into_response();
    }
    let _ = shared.requests.send(Request::Resume);
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "status": "resuming" })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
