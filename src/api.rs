//! HTTP: `/metrics` (Prometheus text), `/healthz`, `/readyz` (ready once
//! subscribed and while connected), and the customer API: `GET`/`DELETE /v1/customers/{id}`
//! (any linked id; `?type=phone` to name the id type). Customer requests go
//! through the router so they see every event routed before them.
//! `/v1/funnels`, `/v1/funnels/{name}` and `/v1/stats` summarise the live metrics.

use crate::engine::CustomerView;
use crate::ingest::nats::Control;
use crate::metrics::latency::LatencyHub;
use crate::metrics::Metrics;
use crate::model::Plan;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Clone)]
pub struct AppState {
    pub plan: Arc<Plan>,
    pub metrics: Arc<Metrics>,
    pub latency: Arc<LatencyHub>,
    pub ready: Arc<AtomicBool>,
    /// True while state is rebuilt from JetStream (`/metrics` answers 503).
    pub rebuilding: Arc<AtomicBool>,
    pub control: mpsc::Sender<Control>,
    /// The NATS client, once connected: `/readyz` is 503 while it reconnects.
    pub client: Arc<std::sync::OnceLock<async_nats::Client>>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/customers/{id}", get(get_customer).delete(delete_customer))
        .route("/v1/funnels", get(|State(s): State<AppState>| async move { Json(crate::stats::funnels(&s.plan, &s.metrics)) }))
        .route("/v1/funnels/{name}", get(get_funnel))
        .route("/v1/stats", get(|State(s): State<AppState>| async move { Json(crate::stats::stats(&s.plan, &s.metrics, crate::ingest::nats::wall_ms())) }))
        .fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            let hint = if uri.path().starts_with("/v1/customers") { " (a customer is /v1/customers/{id})" } else { "" };
            (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": format!("no such endpoint: {method} {}{hint}", uri.path()) })))
        })
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    // Half-rebuilt counters would read to Prometheus as a reset, then a surge.
    if s.rebuilding.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "rebuilding customer state from JetStream\n").into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    let connected = s.client.get().is_some_and(crate::ingest::nats::connected);
    match (s.ready.load(Ordering::Acquire), connected) {
        (true, true) => (StatusCode::OK, "ready\n").into_response(),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: the NATS connection is lost; reconnecting\n").into_response(),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: not consuming from NATS\n").into_response(),
    }
}

#[derive(Deserialize)]
pub struct IdQuery {
    #[serde(rename = "type")]
    id_type: Option<String>,
}

/// Errors of the customer API, as JSON bodies with a status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no customer has the id `{0}`")]
    NotFound(String),
    #[error("no funnel is named `{0}`")]
    NoFunnel(String),
    #[error("journeyd is shutting down")]
    Unavailable,
    #[error("journeyd is not consuming yet (connecting to NATS, or rebuilding state), or is draining")]
    NotReady,
    #[error("journeyd did not answer within {} s (a forget asked for may still take effect)", CONTROL_WAIT.as_secs())]
    Timeout,
}

/// How long a customer query or forget waits for the router.
pub const CONTROL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::NotFound(_) | ApiError::NoFunnel(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable | ApiError::NotReady | ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

/// `request`'s answer, if the router gives it within [`CONTROL_WAIT`].
async fn bounded<T>(request: impl std::future::Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    tokio::time::timeout(CONTROL_WAIT, request).await.map_err(|_| ApiError::Timeout)?
}

/// Looks a customer up through the router (waiting at most [`CONTROL_WAIT`]).
pub async fn lookup(control: &mpsc::Sender<Control>, id_type: Option<String>, id: String) -> Result<CustomerView, ApiError> {
    bounded(async {
        let (tx, rx) = oneshot::channel();
        control.send(Control::Query { id_type, id: id.clone(), reply: tx }).await.map_err(|_| ApiError::Unavailable)?;
        let pending = rx.await.map_err(|_| ApiError::Unavailable)?.ok_or_else(|| ApiError::NotFound(id.clone()))?;
        pending.await.map_err(|_| ApiError::Unavailable)?.ok_or(ApiError::NotFound(id))
    })
    .await
}

/// Forgets a customer through the router (waiting at most [`CONTROL_WAIT`]);
/// returns what was removed.
pub async fn forget(control: &mpsc::Sender<Control>, id_type: Option<String>, id: String) -> Result<CustomerView, ApiError> {
    bounded(async {
        let (tx, rx) = oneshot::channel();
        control.send(Control::Forget { id_type, id: id.clone(), reply: tx }).await.map_err(|_| ApiError::Unavailable)?;
        let pending = rx.await.map_err(|_| ApiError::Unavailable)?.ok_or_else(|| ApiError::NotFound(id.clone()))?;
        let (view, ids) = pending.await.map_err(|_| ApiError::Unavailable)?.ok_or(ApiError::NotFound(id))?;
        // Best effort: stale index entries of a forgotten customer are also skipped lazily.
        let _ = control.try_send(Control::Purge(ids));
        Ok(view)
    })
    .await
}

/// Customer queries go through the router, which reads them only while it
/// consumes: before that (and while draining) they are refused at once.
fn consuming(s: &AppState) -> Result<(), ApiError> {
    s.ready.load(Ordering::Acquire).then_some(()).ok_or(ApiError::NotReady)
}

async fn get_customer(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<IdQuery>) -> Result<Json<CustomerView>, ApiError> {
    consuming(&s)?;
    lookup(&s.control, q.id_type, id).await.map(Json)
}

async fn delete_customer(State(s): State<AppState>, Path(id): Path<String>, Query(q): Query<IdQuery>) -> Result<Json<serde_json::Value>, ApiError> {
    consuming(&s)?;
    let view = forget(&s.control, q.id_type, id).await?;
    Ok(Json(serde_json::json!({ "forgotten": view })))
}

async fn get_funnel(State(s): State<AppState>, Path(name): Path<String>) -> Result<Json<crate::stats::FunnelReport>, ApiError> {
    crate::stats::funnels(&s.plan, &s.metrics).into_iter().find(|f| f.name == name).map(Json).ok_or(ApiError::NoFunnel(name))
}
