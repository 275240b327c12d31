//! The audit: query and export, verify, checkpoints, replay, retention.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use byok_audit::{PublicKey, SignedCheckpoint};
use byok_domain::{Credential, Outcome, Timestamp};
use byok_store::{AuditFilter, TimelineItem, VerifyReport};
use byok_vault::{AuditPage, CheckpointCheck, Owner, PurgeReport, Vault, MAX_PAGE};
use bytes::Bytes;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, Query};

/// The longest call id a filter may name (the audit keeps at most this many bytes).
const MAX_CALL_ID_CHARS: usize = byok_domain::audit::CALL_ID_MAX_LEN;

// The documented bounds (`#[param]` takes literals) are the enforced ones.
const _: () = assert!(MAX_PAGE == 10_000 && MAX_CALL_ID_CHARS == 128);

/// `limit`: a page size from 1 to [`MAX_PAGE`], refused outside it.
fn page_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.parse::<u32>().ok().filter(|n| (1..=MAX_PAGE).contains(n)) {
        Some(n) => Ok(Some(n)),
        None => Err(de::Error::custom(format!("'{text}' is not a page size from 1 to {MAX_PAGE}"))),
    }
}

/// `call_id`: at most [`MAX_CALL_ID_CHARS`] characters.
fn call_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let call_id = String::deserialize(deserializer)?;
    match call_id.chars().count() {
        n if n > MAX_CALL_ID_CHARS => {
            Err(de::Error::custom(format!("{n} characters; a call id is at most {MAX_CALL_ID_CHARS}")))
        }
        _ => Ok(Some(call_id)),
    }
}

/// `GET /v1/orgs/{org}/audit`: the filters, all optional.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// credential id or name
    #[param(max_length = 64)]
    credential: Option<String>,
    /// at most 128 characters
    #[serde(default, deserialize_with = "call_id")]
    #[param(max_length = 128)]
    call_id: Option<String>,
    outcome: Option<Outcome>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    /// rows per page (default 1000)
    #[serde(default, deserialize_with = "page_size")]
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// the previous page's `next_after_seq`
    after_seq: Option<i64>,
}

/// Query the org's resolution rows. Filters: `credential` (id or name), `call_id`,
/// `outcome` (allowed|denied), `since`, `until` (RFC 3339), `limit` (≤ 10000),
/// `after_seq` (paging: the previous page's `next_after_seq`).
#[utoipa::path(get, path = "/v1/orgs/{org}/audit", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn query_audit(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    query: Result<Query<AuditQuery>, ApiError>,
) -> Result<Json<AuditPage>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    let Query(query) = query?;
    let credential = match &query.credential {
        Some(reference) => Some(vault.credential(org.id, reference).await?.credential.id),
        None => None,
    };
    let filter = AuditFilter {
        credential,
        call_id: query.call_id,
        outcome: query.outcome,
        since: query.since,
        until: query.until,
        after_seq: query.after_seq,
        limit: query.limit,
    };
    Ok(Json(vault.audit_rows(org.id, filter).await?))
}

/// `GET /v1/orgs/{org}/audit/export`: the range, both ends optional.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportQuery {
    /// from each chain's first entry at or after this time (RFC 3339)
    since: Option<Timestamp>,
    /// to each chain's last entry before this time (RFC 3339)
    until: Option<Timestamp>,
}

/// The org's audit as JSON Lines that verify on their own (`byok audit verify --export`):
/// a `header` line (format, version, org, export time, range, and where each chain's
/// slice starts and ends, a retention anchor included), then every lifecycle event
/// (`lifecycle`) and every call (`call`: the resolution row with its completion;
/// `completion`: one no row in the export carries), chain by chain in chain order, each
/// with every field its hash covers, its `prev_hash` and `hash`; last an `end` line with
/// the counts. Streamed: memory stays flat however long the audit. A stream that stops
/// before its `end` line is incomplete.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit/export", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ExportQuery),
    responses((status = 200, description = "JSON Lines (`application/x-ndjson`)", content_type = "application/x-ndjson", body = String),
        (status = 400, body = ErrorBody), (status = 422, description = "`since` is not before `until`", body = ErrorBody)))]
pub(crate) async fn export_audit(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    query: Result<Query<ExportQuery>, ApiError>,
) -> Result<Response, ApiError> {
    let org = admin.org(&vault, &org).await?;
    let Query(query) = query?;
    let mut export = vault.export_audit(org.id, query.since, query.until).await?;
    // The first lines are read before answering, so a store that fails at once gets an
    // error answer rather than a cut stream.
    let first = export.next_chunk().await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut chunk = first;
        loop {
            let Some(lines) = chunk else { return };
            if tx.send(Ok(Bytes::from(lines))).await.is_err() {
                // The client has gone away.
                return;
            }
            chunk = match export.next_chunk().await {
                Ok(next) => next,
                Err(err) => {
                    tracing::warn!(error = %byok_domain::error::Report(&err), "audit export failed midway");
                    // Ends the response without its last chunk: the client sees a cut stream.
                    let _ = tx.send(Err(std::io::Error::other("the audit export failed midway"))).await;
                    return;
                }
            };
        }
    });
    Ok((
        [(header::CONTENT_TYPE, byok_domain::export::CONTENT_TYPE), (header::CACHE_CONTROL, "no-store")],
        Body::new(Lines(rx)),
    )
        .into_response())
}

/// A response body fed chunk by chunk from a channel.
struct Lines(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|next| next.map(|chunk| chunk.map(http_body::Frame::data)))
    }
}

/// Recompute the org's audit hash chains; report the first broken link.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit/verify", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), responses((status = 200, body = VerifyReport)))]
pub(crate) async fn verify_audit(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<VerifyReport>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.verify_audit(org.id).await?))
}

/// Check a checkpoint kept by an auditor: signature, heads still in place, chains intact.
#[utoipa::path(post, path = "/v1/orgs/{org}/audit/verify", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = SignedCheckpoint,
    responses((status = 200, body = CheckpointCheck), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn verify_audit_checkpoint(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(checkpoint): JsonBody<SignedCheckpoint>,
) -> Result<Json<CheckpointCheck>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.verify_checkpoint(org.id, &checkpoint).await?))
}

/// A signed checkpoint of the org's audit chains, to keep outside byok.
#[utoipa::path(post, path = "/v1/orgs/{org}/audit/checkpoints", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), responses((status = 201, body = SignedCheckpoint)))]
pub(crate) async fn create_audit_checkpoint(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<(StatusCode, Json<SignedCheckpoint>), ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok((StatusCode::CREATED, Json(vault.audit_checkpoint(org.id).await?)))
}

/// The public key that signs checkpoints.
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = PublicKey)))]
pub(crate) async fn get_audit_public_key(
    State(vault): State<Vault>,
    _admin: Admin,
) -> Result<Json<PublicKey>, ApiError> {
    Ok(Json(vault.audit_public_key()?))
}

/// Every node's checkpoint key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PublicKeyList {
    /// Oldest first; a checkpoint's `key_id` names the one that signed it.
    keys: Vec<PublicKey>,
}

/// The public keys of every node sharing this database (each node signs checkpoints
/// with its own key and registers it on start): any of them verifies on every node.
#[utoipa::path(get, path = "/v1/audit/public-keys", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = PublicKeyList)))]
pub(crate) async fn list_audit_public_keys(
    State(vault): State<Vault>,
    _admin: Admin,
) -> Result<Json<PublicKeyList>, ApiError> {
    Ok(Json(PublicKeyList { keys: vault.audit_public_keys().await? }))
}

/// `POST /v1/orgs/{org}/audit/purge`: where to cut, always said.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// Remove entries older than this instant, or `"retention"`: older than the org's
    /// retention period.
    before: PurgeCut,
}

/// Where a purge cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PurgeCut {
    /// The org's retention period, counted back from now.
    Retention,
    /// An instant (not in the future).
    At(Timestamp),
}

impl<'de> Deserialize<'de> for PurgeCut {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "retention" {
            return Ok(PurgeCut::Retention);
        }
        Timestamp::parse_rfc3339(&text).map(PurgeCut::At).map_err(|_| {
            serde::de::Error::custom(format!(
                "'{}' is neither \"retention\" nor an RFC 3339 time (e.g. 2025-01-01T00:00:00Z)",
                text.chars().take(40).collect::<String>().escape_debug()
            ))
        })
    }
}

impl utoipa::PartialSchema for PurgeCut {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["retention"])))
            .item(<Timestamp as utoipa::PartialSchema>::schema())
            .description(Some("`\"retention\"` or an RFC 3339 instant."))
            .into()
    }
}

impl utoipa::ToSchema for PurgeCut {}

/// Remove audit entries (operator only); the rest stays verifiable. The body says where
/// to cut: `{"before": "retention"}` removes what is past the org's retention,
/// `{"before": "<RFC 3339>"}` what is older than that instant (never in the future).
/// katman-c's retention lock refuses a cut inside the retention period.
#[utoipa::path(post, path = "/v1/orgs/{org}/audit/purge", tag = "audit", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = PurgeRequest,
    responses((status = 200, body = PurgeReport), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn purge_audit(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    body: Result<JsonBody<PurgeRequest>, ApiError>,
) -> Result<Json<PurgeReport>, ApiError> {
    admin.require_operator("purge audit entries")?;
    let JsonBody(body) = body?;
    let before = match body.before {
        PurgeCut::Retention => None,
        PurgeCut::At(at) => Some(at),
    };
    let org = vault.org(&org).await?;
    Ok(Json(vault.purge_audit(&admin.actor(), org.id, before).await?))
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

/// `GET …/credentials/{cred}/lifecycle`: the page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LifecycleQuery {
    /// the previous page's `next`
    #[param(pattern = r"^[0-9]{1,18}\.[01]\.[0-9]{1,18}$")]
    after: Option<String>,
    /// items per page (default 1000)
    #[serde(default, deserialize_with = "page_size")]
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// The credential's whole life in order: every lifecycle event and every call it served
/// or refused, with the version and fingerprint in force. Paged: `limit` (≤ 10000,
/// default 1000) and `after` (the previous page's `next`).
#[utoipa::path(get, path = "/v1/orgs/{org}/credentials/{cred}/lifecycle", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name"),
        LifecycleQuery),
    responses((status = 200, body = LifecycleResponse), (status = 404, body = ErrorBody)))]
pub(crate) async fn credential_lifecycle(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
    query: Result<Query<LifecycleQuery>, ApiError>,
) -> Result<Json<LifecycleResponse>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    let Query(query) = query?;
    lifecycle_in(&vault, Owner::Org(org.id), &cred, query).await
}

/// A page of a credential's timeline (an org's or the platform pool's).
pub(crate) async fn lifecycle_in(
    vault: &Vault,
    owner: Owner,
    cred: &str,
    query: LifecycleQuery,
) -> Result<Json<LifecycleResponse>, ApiError> {
    let limit = query.limit.unwrap_or(1000);
    let (credential, events, next) = vault.credential_timeline(owner, cred, query.after.as_deref(), limit).await?;
    Ok(Json(LifecycleResponse { credential, events, next }))
}
