//! Credentials.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use byok_crypto::ProviderSecret;
use byok_domain::{Credential, ProviderId, ScopeInput, Timestamp};
use byok_vault::{CredentialDetail, CredentialPatch, NewCredential, StateChange, Vault};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;

/// `POST /v1/orgs/{org}/credentials`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCredentialRequest {
    /// Unique within the org.
    name: String,
    /// The one provider it serves.
    provider: ProviderId,
    /// The provider key. Write-only: never returned.
    #[schema(value_type = String, write_only)]
    secret: ProviderSecret,
    /// Allow-lists; empty or absent lists mean "any".
    #[serde(default)]
    scope: ScopeInput,
    /// Admin-set upstream base URL (required for azure-openai).
    #[serde(default)]
    base_url: Option<String>,
    /// When it stops resolving.
    #[serde(default)]
    expires_at: Option<Timestamp>,
    /// Tie-breaker among equally specific credentials; higher wins. Default 0.
    #[serde(default)]
    priority: Option<i32>,
}

/// `PATCH /v1/orgs/{org}/credentials/{cred}`
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchCredentialRequest {
    /// New allow-lists, replacing the old ones whole.
    #[serde(default)]
    scope: Option<ScopeInput>,
    /// New expiry; `null` removes it; absent leaves it.
    #[serde(default, deserialize_with = "present_or_null")]
    #[schema(value_type = Option<Timestamp>)]
    expires_at: Option<Option<Timestamp>>,
    /// New priority.
    #[serde(default)]
    priority: Option<i32>,
}

/// Distinguishes an absent field (outer `None`, via `default`) from `null` (`Some(None)`).
fn present_or_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `POST /v1/orgs/{org}/credentials/{cred}/rotate`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateRequest {
    /// The new provider key. Write-only.
    #[schema(value_type = String, write_only)]
    secret: ProviderSecret,
}

/// A list of credentials.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CredentialList {
    credentials: Vec<Credential>,
}

/// Create a credential. The secret is sealed under a fresh DEK and never returned.
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = CreateCredentialRequest,
    responses((status = 201, body = Credential), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<CreateCredentialRequest>,
) -> Result<(StatusCode, Json<Credential>), ApiError> {
    let org = admin.org(&vault, &org).await?;
    let new = NewCredential {
        name: body.name,
        provider: body.provider,
        secret: body.secret,
        scope: body.scope,
        base_url: body.base_url,
        expires_at: body.expires_at,
        priority: body.priority,
    };
    let credential = vault.create_credential(&admin.actor(), &org.id.to_string(), new).await?;
    Ok((StatusCode::CREATED, Json(credential)))
}

/// The org's credentials.
#[utoipa::path(get, path = "/v1/orgs/{org}/credentials", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), responses((status = 200, body = CredentialList)))]
pub(crate) async fn list(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<CredentialList>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(CredentialList { credentials: vault.list_credentials(&org.id.to_string()).await? }))
}

/// One credential with its versions.
#[utoipa::path(get, path = "/v1/orgs/{org}/credentials/{cred}", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = CredentialDetail), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
) -> Result<Json<CredentialDetail>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.credential(&org.id.to_string(), &cred).await?))
}

/// Change scope, expiry or priority.
#[utoipa::path(patch, path = "/v1/orgs/{org}/credentials/{cred}", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    request_body = PatchCredentialRequest,
    responses((status = 200, body = Credential), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn update(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
    JsonBody(body): JsonBody<PatchCredentialRequest>,
) -> Result<Json<Credential>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    let patch = CredentialPatch { scope: body.scope, expires_at: body.expires_at, priority: body.priority };
    Ok(Json(vault.update_credential(&admin.actor(), &org.id.to_string(), &cred, patch).await?))
}

/// Make a new secret version current.
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials/{cred}/rotate", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    request_body = RotateRequest,
    responses((status = 200, body = Credential), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rotate(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
    JsonBody(body): JsonBody<RotateRequest>,
) -> Result<Json<Credential>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.rotate_credential(&admin.actor(), &org.id.to_string(), &cred, body.secret).await?))
}

async fn change_state(
    vault: &Vault,
    admin: &Admin,
    org: &str,
    cred: &str,
    change: StateChange,
) -> Result<Json<Credential>, ApiError> {
    let org = admin.org(vault, org).await?;
    Ok(Json(vault.change_credential_state(&admin.actor(), &org.id.to_string(), cred, change).await?))
}

/// Disable (resolutions refuse it until enabled).
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials/{cred}/disable", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = Credential), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn disable(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
) -> Result<Json<Credential>, ApiError> {
    change_state(&vault, &admin, &org, &cred, StateChange::Disable).await
}

/// Enable a disabled credential.
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials/{cred}/enable", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = Credential), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn enable(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
) -> Result<Json<Credential>, ApiError> {
    change_state(&vault, &admin, &org, &cred, StateChange::Enable).await
}

/// Revoke for good.
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials/{cred}/revoke", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = Credential), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
) -> Result<Json<Credential>, ApiError> {
    change_state(&vault, &admin, &org, &cred, StateChange::Revoke).await
}
