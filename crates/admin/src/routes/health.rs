//! Liveness, readiness and the OpenAPI document.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use byok_vault::Vault;
use serde::Serialize;

/// Liveness/readiness answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HealthStatus {
    /// `ok` or `unavailable`.
    status: &'static str,
    /// What is not ready, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// What runs otherwise than configured while the node is ready (rate limits enforced
    /// per node because the shared limit store is unreachable, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    detail: Vec<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = HealthStatus)))]
pub(crate) async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok", reason: None, detail: Vec::new() })
}

/// The store answers and can write, and the KMS is reachable. A store that cannot write
/// (a full disk, a read-only database) is not ready: the reason says
/// `store cannot write: …`. The write check runs at most once a second, however often
/// this is asked. While ready, `detail` says what runs otherwise than configured (rate
/// limits enforced per node because the shared limit store is unreachable).
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = HealthStatus), (status = 503, body = HealthStatus)))]
pub(crate) async fn readyz(State(vault): State<Vault>) -> Response {
    let detail = vault.data_plane_notices();
    match vault.check_ready().await {
        Ok(()) => Json(HealthStatus { status: "ok", reason: None, detail }).into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthStatus { status: "unavailable", reason: Some(err.to_string()), detail }),
        )
            .into_response(),
    }
}

/// This document.
pub(crate) async fn openapi_json() -> Json<serde_json::Value> {
    Json(crate::openapi::openapi_document())
}

/// Prometheus metrics (text format): KMS operations and latency by KMS, the data plane's
/// calls (by provider, capability, outcome and code), upstream answers by status class,
/// call, upstream and overhead latencies, open streams, DEK and directory cache lookups,
/// audit commits. No secret and no org data is ever a label.
pub(crate) async fn metrics(State(vault): State<Vault>) -> Response {
    match vault.kms().metrics().render() {
        Ok(text) => {
            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
