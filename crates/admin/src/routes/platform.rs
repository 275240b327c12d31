//! The platform credential pool (operator only): the same operations as an org's
//! credentials, under `/v1/platform/credentials`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use byok_domain::Credential;
use byok_store::VerifyReport;
use byok_vault::{CredentialDetail, Owner, StateChange, Vault, Verification};

use super::audit::{lifecycle_in, LifecycleQuery, LifecycleResponse};
use super::credentials::{
    create_in, list_in, rotate_in, show_in, state_in, update_in, verify_in, CreateCredentialRequest, CredentialList,
    PatchCredentialRequest, RotateRequest, Target,
};
use crate::auth::Admin;
use crate::confirm::{Confirm, ConfirmBody};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, Query};

/// Add a credential to the platform pool (operator only). katman-a calls that none of
/// their org's credentials admits resolve among these; its scope may restrict model
/// families, capabilities and modes (teams and workflows do not apply).
#[utoipa::path(post, path = "/v1/platform/credentials", tag = "platform", security(("bearer" = [])),
    request_body = CreateCredentialRequest,
    responses((status = 201, body = Credential), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn create_platform_credential(
    State(vault): State<Vault>,
    admin: Admin,
    JsonBody(body): JsonBody<CreateCredentialRequest>,
) -> Result<(StatusCode, Json<Credential>), ApiError> {
    create_in(&vault, &admin, Target::platform(&admin)?, body).await
}

/// The platform pool's credentials (operator only).
#[utoipa::path(get, path = "/v1/platform/credentials", tag = "platform", security(("bearer" = [])),
    responses((status = 200, body = CredentialList), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_platform_credentials(
    State(vault): State<Vault>,
    admin: Admin,
) -> Result<Json<CredentialList>, ApiError> {
    list_in(&vault, Target::platform(&admin)?).await
}

/// One platform credential with its versions (operator only).
#[utoipa::path(get, path = "/v1/platform/credentials/{cred}", tag = "platform", security(("bearer" = [])),
    params(("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = CredentialDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_platform_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path(cred): Path<String>,
) -> Result<Json<CredentialDetail>, ApiError> {
    show_in(&vault, Target::platform(&admin)?, &cred).await
}

/// Change a platform credential's scope, expiry, priority, weight or paces (operator only).
#[utoipa::path(patch, path = "/v1/platform/credentials/{cred}", tag = "platform", security(("bearer" = [])),
    params(("cred" = String, Path, description = "credential id or name")), request_body = PatchCredentialRequest,
    responses((status = 200, body = Credential), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn update_platform_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path(cred): Path<String>,
    JsonBody(body): JsonBody<PatchCredentialRequest>,
) -> Result<Json<Credential>, ApiError> {
    update_in(&vault, &admin, Target::platform(&admin)?, &cred, body).await
}

/// Make a new secret version of a platform credential current (operator only).
#[utoipa::path(post, path = "/v1/platform/credentials/{cred}/rotate", tag = "platform", security(("bearer" = [])),
    params(("cred" = String, Path, description = "credential id or name")), request_body = RotateRequest,
    responses((status = 200, body = Credential), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rotate_platform_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path(cred): Path<String>,
    JsonBody(body): JsonBody<RotateRequest>,
) -> Result<Json<Credential>, ApiError> {
    rotate_in(&vault, &admin, Target::platform(&admin)?, &cred, body).await
}

/// Verify a platform credential's current key with the provider (operator only), as for
/// an org's credential: audited, recorded as a `verified` event; a 401/403 makes it
/// `failing`, a success clears that. Takes no body.
#[utoipa::path(post, path = "/v1/platform/credentials/{cred}/verify", tag = "platform", security(("bearer" = [])),
    params(("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = Verification), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn verify_platform_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path(cred): Path<String>,
) -> Result<Json<Verification>, ApiError> {
    verify_in(&vault, &admin, Target::platform(&admin)?, &cred).await
}

/// Disable a platform credential (operator only).
#[utoipa::path(post, path = "/v1/platform/credentials/{cred}/disable", tag = "platform", security(("bearer" = [])),
    params(("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = Credential), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn disable_platform_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path(cred): Path<String>,
) -> Result<Json<Credential>, ApiError> {
    state_in(&vault, &admin, Target::platform(&admin)?, &cred, StateChange::Disable).await
}

/// Enable a disabled platform credential (operator only).
#[utoipa::path(post, path = "/v1/platform/credentials/{cred}/enable", tag = "platform", security(("bearer" = [])),
    params(("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = Credential), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn enable_platform_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path(cred): Path<String>,
) -> Result<Json<Credential>, ApiError> {
    state_in(&vault, &admin, Target::platform(&admin)?, &cred, StateChange::Enable).await
}

/// Revoke a platform credential for good (operator only). The body must say
/// `{"confirm": true}`.
#[utoipa::path(post, path = "/v1/platform/credentials/{cred}/revoke", tag = "platform", security(("bearer" = [])),
    params(("cred" = String, Path, description = "credential id or name")), request_body = ConfirmBody,
    responses((status = 200, body = Credential), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_platform_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path(cred): Path<String>,
    body: Result<JsonBody<ConfirmBody>, ApiError>,
) -> Result<Json<Credential>, ApiError> {
    let target = Target::platform(&admin)?;
    let JsonBody(ConfirmBody { confirm: Confirm }) = body?;
    state_in(&vault, &admin, target, &cred, StateChange::Revoke).await
}

/// A platform credential's whole life in order (operator only): its lifecycle events and
/// every call it served or refused, of every org (each row names its org). Paged like an
/// org credential's lifecycle.
#[utoipa::path(get, path = "/v1/platform/credentials/{cred}/lifecycle", tag = "platform", security(("bearer" = [])),
    params(("cred" = String, Path, description = "credential id or name"), LifecycleQuery),
    responses((status = 200, body = LifecycleResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn platform_credential_lifecycle(
    State(vault): State<Vault>,
    admin: Admin,
    Path(cred): Path<String>,
    query: Result<Query<LifecycleQuery>, ApiError>,
) -> Result<Json<LifecycleResponse>, ApiError> {
    admin.require_operator("read the platform credential pool")?;
    let Query(query) = query?;
    lifecycle_in(&vault, Owner::Platform, &cred, query).await
}

/// Recompute the platform pool's lifecycle-event hash chain (operator only).
#[utoipa::path(get, path = "/v1/platform/audit/verify", tag = "platform", security(("bearer" = [])),
    responses((status = 200, body = VerifyReport), (status = 403, body = ErrorBody)))]
pub(crate) async fn verify_platform_audit(
    State(vault): State<Vault>,
    admin: Admin,
) -> Result<Json<VerifyReport>, ApiError> {
    admin.require_operator("verify the platform pool's audit")?;
    Ok(Json(vault.verify_platform_audit().await?))
}
