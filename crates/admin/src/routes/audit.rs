//! The audit: query and export, verify, checkpoints, replay, retention.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use byok_audit::{PublicKey, SignedCheckpoint};
use byok_domain::{Credential, Outcome, Timestamp};
use byok_store::{AuditFilter, TimelineItem, VerifyReport};
use byok_vault::{AuditPage, CheckpointCheck, Owner, PurgeReport, Vault};
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;

/// Parse a query string, refusing parameters not in `known`.
pub(crate) fn params(raw: Option<String>, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !known.contains(&key.as_ref()) {
            return Err(ApiError::invalid(format!("unknown query parameter '{key}'; known: {}", known.join(", "))));
        }
        out.insert(key.into_owned(), value.into_owned());
    }
    Ok(out)
}

pub(crate) fn time(params: &HashMap<String, String>, key: &str) -> Result<Option<Timestamp>, ApiError> {
    params
        .get(key)
        .map(|v| {
            Timestamp::parse_rfc3339(v).map_err(|_| {
                ApiError::invalid(format!("{key}: '{v}' is not an RFC 3339 time (e.g. 2030-01-01T00:00:00Z)"))
            })
        })
        .transpose()
}

pub(crate) fn number<T: std::str::FromStr>(params: &HashMap<String, String>, key: &str) -> Result<Option<T>, ApiError> {
    params
        .get(key)
        .map(|v| v.parse::<T>().map_err(|_| ApiError::invalid(format!("{key}: '{v}' is not a valid number"))))
        .transpose()
}

/// Query the org's resolution rows. Filters: `credential` (id or name), `call_id`,
/// `outcome` (allowed|denied), `since`, `until` (RFC 3339), `limit` (≤ 10000),
/// `after_seq` (paging: the previous page's `next_after_seq`).
#[utoipa::path(get, path = "/v1/orgs/{org}/audit", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"),
        ("credential" = Option<String>, Query), ("call_id" = Option<String>, Query), ("outcome" = Option<String>, Query),
        ("since" = Option<Timestamp>, Query), ("until" = Option<Timestamp>, Query), ("limit" = Option<u32>, Query),
        ("after_seq" = Option<i64>, Query)),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn query(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    let p = params(raw, &["credential", "call_id", "outcome", "since", "until", "limit", "after_seq"])?;
    let credential = match p.get("credential") {
        Some(reference) => Some(vault.credential(&org.id.to_string(), reference).await?.credential.id),
        None => None,
    };
    let outcome = p
        .get("outcome")
        .map(|v| v.parse::<Outcome>().map_err(|e| ApiError::invalid(format!("outcome: {e}"))))
        .transpose()?;
    let filter = AuditFilter {
        credential,
        call_id: p.get("call_id").cloned(),
        outcome,
        since: time(&p, "since")?,
        until: time(&p, "until")?,
        after_seq: number(&p, "after_seq")?,
        limit: number(&p, "limit")?,
    };
    Ok(Json(vault.audit_rows(&org.id.to_string(), filter).await?))
}

/// Recompute the org's audit hash chains; report the first broken link.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit/verify", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), responses((status = 200, body = VerifyReport)))]
pub(crate) async fn verify(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<VerifyReport>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.verify_audit(&org.id.to_string()).await?))
}

/// Check a checkpoint kept by an auditor: signature, heads still in place, chains intact.
#[utoipa::path(post, path = "/v1/orgs/{org}/audit/verify", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = SignedCheckpoint,
    responses((status = 200, body = CheckpointCheck), (status = 400, body = ErrorBody)))]
pub(crate) async fn verify_checkpoint(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(checkpoint): JsonBody<SignedCheckpoint>,
) -> Result<Json<CheckpointCheck>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.verify_checkpoint(&org.id.to_string(), &checkpoint).await?))
}

/// A signed checkpoint of the org's audit chains, to keep outside byok.
#[utoipa::path(post, path = "/v1/orgs/{org}/audit/checkpoints", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), responses((status = 201, body = SignedCheckpoint)))]
pub(crate) async fn checkpoint(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<(StatusCode, Json<SignedCheckpoint>), ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok((StatusCode::CREATED, Json(vault.audit_checkpoint(&org.id.to_string()).await?)))
}

/// The public key that signs checkpoints.
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = PublicKey)))]
pub(crate) async fn public_key(State(vault): State<Vault>, _admin: Admin) -> Result<Json<PublicKey>, ApiError> {
    Ok(Json(vault.audit_public_key()?))
}

/// `POST /v1/orgs/{org}/audit/purge`
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// Remove entries older than this; default: the org's retention.
    #[serde(default)]
    before: Option<Timestamp>,
}

/// Remove audit entries past retention (operator only); the rest stays verifiable.
/// katman-c's retention lock refuses a cut inside the retention period.
#[utoipa::path(post, path = "/v1/orgs/{org}/audit/purge", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = PurgeRequest,
    responses((status = 200, body = PurgeReport), (status = 403, body = ErrorBody)))]
pub(crate) async fn purge(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<PurgeRequest>,
) -> Result<Json<PurgeReport>, ApiError> {
    admin.require_operator("purge audit entries")?;
    Ok(Json(vault.purge_audit(&admin.actor(), &org, body.before).await?))
}

/// A credential's life in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LifecycleResponse {
    credential: Credential,
    /// Lifecycle events and calls, in time order (`type`: `lifecycle` or `call`).
    #[schema(value_type = Vec<Object>)]
    events: Vec<TimelineItem>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The credential's whole life in order: every lifecycle event and every call it served
/// or refused, with the version and fingerprint in force. Paged: `limit` (≤ 10000,
/// default 1000) and `after` (the previous page's `next`).
#[utoipa::path(get, path = "/v1/orgs/{org}/credentials/{cred}/lifecycle", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name"),
        ("after" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = LifecycleResponse), (status = 404, body = ErrorBody)))]
pub(crate) async fn lifecycle(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<LifecycleResponse>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    lifecycle_in(&vault, Owner::Org(&org.id.to_string()), &cred, raw).await
}

/// A page of a credential's timeline (an org's or the platform pool's).
pub(crate) async fn lifecycle_in(
    vault: &Vault,
    owner: Owner<'_>,
    cred: &str,
    raw: Option<String>,
) -> Result<Json<LifecycleResponse>, ApiError> {
    let p = params(raw, &["after", "limit"])?;
    let limit = number(&p, "limit")?.unwrap_or(1000);
    let (credential, events, next) =
        vault.credential_timeline(owner, cred, p.get("after").map(String::as_str), limit).await?;
    Ok(Json(LifecycleResponse { credential, events, next }))
}
