//! Credentials.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use byok_crypto::ProviderSecret;
use byok_domain::{Credential, OrgId, ProviderId, ScopeInput, Timestamp};
use byok_vault::{CredentialDetail, CredentialPatch, NewCredential, Owner, StateChange, Vault, Verification};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::Admin;
use crate::confirm::{Confirm, ConfirmBody};
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;

/// `POST /v1/orgs/{org}/credentials`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCredentialRequest {
    /// Unique within the org.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: String,
    /// The one provider it serves.
    provider: ProviderId,
    /// The provider key: at least 16 bytes (UTF-8; so fewer characters may do) and at most
    /// 16 KiB, printable (no control characters). Write-only: never returned.
    #[schema(value_type = String, write_only, min_length = 16, max_length = 16384,
        pattern = "^[^\\u0000-\\u001F\\u007F]*[^\\s\\u0000-\\u001F\\u007F][^\\u0000-\\u001F\\u007F]*(?![\\s\\S])")]
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
    /// Its share of the calls among the admitting credentials of equal rank (same
    /// specificity and priority: a pool), in proportion to the others' weights. Default 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    weight: Option<u16>,
    /// The provider account's own calls-per-minute limit: byok paces the key to it and
    /// moves on to another candidate instead of provoking the provider's 429.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    rpm: Option<u64>,
    /// The provider account's own tokens-per-minute limit (input + output tokens).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    tpm: Option<u64>,
    /// Verify the key with the provider's cheapest authenticated read before storing it
    /// (audited, recorded as a `verified` event). A key the provider rejects (401/403) is
    /// refused with 422 `credential_invalid` and nothing is stored; a provider that is
    /// throttling or unreachable does not stop the creation. Default false.
    #[serde(default)]
    verify: bool,
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
    /// New weight (share of the calls within its pool).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    weight: Option<u16>,
    /// New calls-per-minute pace of the provider account; `null` removes it; absent
    /// leaves it.
    #[serde(default, deserialize_with = "present_or_null")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1_000_000_000)]
    rpm: Option<Option<u64>>,
    /// New tokens-per-minute pace of the provider account; `null` removes it; absent
    /// leaves it.
    #[serde(default, deserialize_with = "present_or_null")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1_000_000_000)]
    tpm: Option<Option<u64>>,
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
    /// The new provider key (as for a new credential). Write-only.
    #[schema(value_type = String, write_only, min_length = 16, max_length = 16384,
        pattern = "^[^\\u0000-\\u001F\\u007F]*[^\\s\\u0000-\\u001F\\u007F][^\\u0000-\\u001F\\u007F]*(?![\\s\\S])")]
    secret: ProviderSecret,
}

/// A list of credentials.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CredentialList {
    credentials: Vec<Credential>,
}

/// Whose credentials a route acts on, once the admin token is checked against it.
pub(crate) enum Target {
    /// An org's, by id.
    Org(OrgId),
    /// The platform pool (operator only).
    Platform,
}

impl Target {
    /// The org named in the path, if the token may act on it.
    pub(crate) async fn org(vault: &Vault, admin: &Admin, reference: &str) -> Result<Self, ApiError> {
        Ok(Target::Org(admin.org(vault, reference).await?.id))
    }

    /// The platform pool, for the operator token only.
    pub(crate) fn platform(admin: &Admin) -> Result<Self, ApiError> {
        admin.require_operator("manage the platform credential pool")?;
        Ok(Target::Platform)
    }

    fn owner(&self) -> Owner {
        match *self {
            Target::Org(id) => Owner::Org(id),
            Target::Platform => Owner::Platform,
        }
    }
}

pub(crate) async fn create_in(
    vault: &Vault,
    admin: &Admin,
    target: Target,
    body: CreateCredentialRequest,
) -> Result<(StatusCode, Json<Credential>), ApiError> {
    let new = NewCredential {
        name: body.name,
        provider: body.provider,
        secret: body.secret,
        scope: body.scope,
        base_url: body.base_url,
        expires_at: body.expires_at,
        priority: body.priority,
        weight: body.weight,
        rpm: body.rpm,
        tpm: body.tpm,
        verify: body.verify,
    };
    let credential = vault.create_credential(&admin.actor(), target.owner(), new).await?;
    Ok((StatusCode::CREATED, Json(credential)))
}

pub(crate) async fn list_in(vault: &Vault, target: Target) -> Result<Json<CredentialList>, ApiError> {
    Ok(Json(CredentialList { credentials: vault.list_credentials(target.owner()).await? }))
}

pub(crate) async fn show_in(vault: &Vault, target: Target, cred: &str) -> Result<Json<CredentialDetail>, ApiError> {
    Ok(Json(vault.credential(target.owner(), cred).await?))
}

pub(crate) async fn update_in(
    vault: &Vault,
    admin: &Admin,
    target: Target,
    cred: &str,
    body: PatchCredentialRequest,
) -> Result<Json<Credential>, ApiError> {
    let patch = CredentialPatch {
        scope: body.scope,
        expires_at: body.expires_at,
        priority: body.priority,
        weight: body.weight,
        rpm: body.rpm,
        tpm: body.tpm,
    };
    Ok(Json(vault.update_credential(&admin.actor(), target.owner(), cred, patch).await?))
}

pub(crate) async fn rotate_in(
    vault: &Vault,
    admin: &Admin,
    target: Target,
    cred: &str,
    body: RotateRequest,
) -> Result<Json<Credential>, ApiError> {
    Ok(Json(vault.rotate_credential(&admin.actor(), target.owner(), cred, body.secret).await?))
}

pub(crate) async fn verify_in(
    vault: &Vault,
    admin: &Admin,
    target: Target,
    cred: &str,
) -> Result<Json<Verification>, ApiError> {
    Ok(Json(vault.verify_credential(&admin.actor(), target.owner(), cred).await?))
}

pub(crate) async fn state_in(
    vault: &Vault,
    admin: &Admin,
    target: Target,
    cred: &str,
    change: StateChange,
) -> Result<Json<Credential>, ApiError> {
    Ok(Json(vault.change_credential_state(&admin.actor(), target.owner(), cred, change).await?))
}

/// Create a credential. The secret is sealed under a fresh DEK and never returned. With
/// `"verify": true` the key is first tried against the provider: one it rejects is
/// refused with 422 `credential_invalid` and nothing is stored.
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = CreateCredentialRequest,
    responses((status = 201, body = Credential), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<CreateCredentialRequest>,
) -> Result<(StatusCode, Json<Credential>), ApiError> {
    let target = Target::org(&vault, &admin, &org).await?;
    create_in(&vault, &admin, target, body).await
}

/// The org's credentials.
#[utoipa::path(get, path = "/v1/orgs/{org}/credentials", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), responses((status = 200, body = CredentialList)))]
pub(crate) async fn list_credentials(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<CredentialList>, ApiError> {
    list_in(&vault, Target::org(&vault, &admin, &org).await?).await
}

/// One credential with its versions.
#[utoipa::path(get, path = "/v1/orgs/{org}/credentials/{cred}", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = CredentialDetail), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
) -> Result<Json<CredentialDetail>, ApiError> {
    show_in(&vault, Target::org(&vault, &admin, &org).await?, &cred).await
}

/// Change scope, expiry, priority, weight or the provider account's paces (`rpm`, `tpm`;
/// `null` removes one).
#[utoipa::path(patch, path = "/v1/orgs/{org}/credentials/{cred}", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    request_body = PatchCredentialRequest,
    responses((status = 200, body = Credential), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn update_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
    JsonBody(body): JsonBody<PatchCredentialRequest>,
) -> Result<Json<Credential>, ApiError> {
    let target = Target::org(&vault, &admin, &org).await?;
    update_in(&vault, &admin, target, &cred, body).await
}

/// Make a new secret version current.
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials/{cred}/rotate", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    request_body = RotateRequest,
    responses((status = 200, body = Credential), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rotate_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
    JsonBody(body): JsonBody<RotateRequest>,
) -> Result<Json<Credential>, ApiError> {
    let target = Target::org(&vault, &admin, &org).await?;
    rotate_in(&vault, &admin, target, &cred, body).await
}

/// Verify the credential's current key with the provider's cheapest authenticated read
/// (`GET /v1/models`, or `/v1beta/models` for Gemini; Bedrock: 422, its runtime has no free
/// authenticated read). Audited like a call and recorded as a `verified` lifecycle event. A 401/403 makes the credential
/// `failing` (skipped by resolution until rotated, enabled or verified again); a success
/// clears that. The answer says what the provider said: `ok`, `invalid_key` (401/403),
/// `rate_limited` (429/529) or `unreachable` (no answer, a timeout, a 5xx). Takes no body.
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials/{cred}/verify", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = Verification), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn verify_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
) -> Result<Json<Verification>, ApiError> {
    let target = Target::org(&vault, &admin, &org).await?;
    verify_in(&vault, &admin, target, &cred).await
}

async fn change_state(
    vault: &Vault,
    admin: &Admin,
    org: &str,
    cred: &str,
    change: StateChange,
) -> Result<Json<Credential>, ApiError> {
    let target = Target::org(vault, admin, org).await?;
    state_in(vault, admin, target, cred, change).await
}

/// Disable (resolutions refuse it until enabled).
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials/{cred}/disable", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    responses((status = 200, body = Credential), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn disable_credential(
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
pub(crate) async fn enable_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
) -> Result<Json<Credential>, ApiError> {
    change_state(&vault, &admin, &org, &cred, StateChange::Enable).await
}

/// Revoke for good: the credential never resolves again and cannot be enabled. The body
/// must say `{"confirm": true}`.
#[utoipa::path(post, path = "/v1/orgs/{org}/credentials/{cred}/revoke", tag = "credentials", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("cred" = String, Path, description = "credential id or name")),
    request_body = ConfirmBody,
    responses((status = 200, body = Credential), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_credential(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, cred)): Path<(String, String)>,
    body: Result<JsonBody<ConfirmBody>, ApiError>,
) -> Result<Json<Credential>, ApiError> {
    // The org check comes first: another org's admin learns nothing from a bad body.
    let target = Target::org(&vault, &admin, &org).await?;
    let JsonBody(ConfirmBody { confirm: Confirm }) = body?;
    state_in(&vault, &admin, target, &cred, StateChange::Revoke).await
}
