//! An org's rate limits (SPEC 3.1): calls and tokens per minute for the org, its teams
//! and its workload tokens.

use axum::extract::{Path, State};
use axum::Json;
use byok_vault::{LimitsInput, LimitsView, Vault};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;

/// The org's rate limits: the org's own, its teams' (by name) and its workload tokens'
/// (by id). `{}` when it has none.
#[utoipa::path(get, path = "/v1/orgs/{org}/limits", tag = "limits", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = LimitsInput), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_limits(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<LimitsView>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.limits(org.id).await?))
}

/// Set the org's rate limits (operator or org admin), replacing them whole:
/// `{"org": {"rpm": 600, "tpm": 200000}, "teams": {"research": {"rpm": 60}},
/// "tokens": {"tok_…": {"rpm": 10}}}` (teams by name or id, tokens by id; each figure
/// 1 to 10⁹, absent: no limit on that count). `rpm` counts the calls admitted in the last
/// 60 seconds, `tpm` the input + output tokens of the calls completed in the last 60
/// seconds; a call over any limit that applies to it is refused with `rate_limited` (429)
/// and nothing is sent. `{}` removes every limit. Recorded as a `limits_changed` event.
#[utoipa::path(put, path = "/v1/orgs/{org}/limits", tag = "limits", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = LimitsInput,
    responses((status = 200, body = LimitsInput), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn put_limits(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    body: Result<JsonBody<LimitsInput>, ApiError>,
) -> Result<Json<LimitsView>, ApiError> {
    // The org check comes first: another org's admin learns nothing from a bad body.
    let org = admin.org(&vault, &org).await?;
    let JsonBody(limits) = body?;
    Ok(Json(vault.set_limits(&admin.actor(), org.id, limits).await?))
}

/// Remove every rate limit of the org (operator or org admin); the answer is the org's
/// limits afterwards, `{}`. Idempotent.
#[utoipa::path(delete, path = "/v1/orgs/{org}/limits", tag = "limits", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = LimitsInput), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_limits(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<LimitsView>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    vault.clear_limits(&admin.actor(), org.id).await?;
    Ok(Json(vault.limits(org.id).await?))
}
