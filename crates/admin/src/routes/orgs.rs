//! Orgs, admin tokens, teams and workflows.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use byok_domain::{AdminToken, AdminTokenId, Org, OrgId, Team, Tier, Timestamp, Workflow};
use byok_kms::KmsInfo;
use byok_vault::{KekStatus, Vault};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::auth::Admin;
use crate::confirm::{Confirm, ConfirmBody};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, Query};

/// `POST /v1/orgs`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrgRequest {
    /// Unique name (letters, digits, `.`, `_`, `-`).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: String,
    /// Billing tier.
    tier: Tier,
    /// Negotiated audit retention in days (katman-c only; default: the tier's).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 36500)]
    retention_days: Option<u32>,
}

/// A list of orgs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OrgList {
    orgs: Vec<Org>,
}

/// `POST /v1/orgs/{org}/admin-tokens`
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAdminTokenRequest {
    /// When the token stops working.
    #[serde(default)]
    expires_at: Option<Timestamp>,
}

/// A newly issued org-admin token: the only time its text is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct IssuedAdminTokenResponse {
    id: AdminTokenId,
    /// The token text (`byokadm_…`). Shown once.
    token: String,
    org_id: OrgId,
    expires_at: Option<Timestamp>,
}

/// `POST /v1/orgs/{org}/teams`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTeamRequest {
    /// Unique within the org.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: String,
}

/// A list of teams.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TeamList {
    teams: Vec<Team>,
}

/// `POST /v1/orgs/{org}/workflows`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWorkflowRequest {
    /// Unique within the org.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: String,
    /// Owning team (id or name).
    #[serde(default)]
    #[schema(value_type = Option<byok_domain::Name>)]
    team: Option<String>,
}

/// A list of workflows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WorkflowList {
    workflows: Vec<Workflow>,
}

/// Create an org (operator only), with its own KEK.
#[utoipa::path(post, path = "/v1/orgs", tag = "orgs", request_body = CreateOrgRequest, security(("bearer" = [])),
    responses((status = 201, body = Org), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_org(
    State(vault): State<Vault>,
    admin: Admin,
    JsonBody(body): JsonBody<CreateOrgRequest>,
) -> Result<(StatusCode, Json<Org>), ApiError> {
    admin.require_operator("create orgs")?;
    let org = vault.create_org_with_retention(&admin.actor(), &body.name, body.tier, body.retention_days).await?;
    Ok((StatusCode::CREATED, Json(org)))
}

/// The orgs this token may see.
#[utoipa::path(get, path = "/v1/orgs", tag = "orgs", security(("bearer" = [])), responses((status = 200, body = OrgList)))]
pub(crate) async fn list_orgs(State(vault): State<Vault>, admin: Admin) -> Result<Json<OrgList>, ApiError> {
    let orgs = vault.list_orgs().await?.into_iter().filter(|org| admin.0.may_access(&org.id)).collect();
    Ok(Json(OrgList { orgs }))
}

/// One org.
#[utoipa::path(get, path = "/v1/orgs/{org}", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = Org), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_org(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<Org>, ApiError> {
    Ok(Json(admin.org(&vault, &org).await?))
}

/// The org's admin tokens (never their text).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AdminTokenList {
    admin_tokens: Vec<AdminToken>,
}

/// The org's admin tokens: ids, creation, expiry, revocation and last use (to the
/// minute); never their text.
#[utoipa::path(get, path = "/v1/orgs/{org}/admin-tokens", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = AdminTokenList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_admin_tokens(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<AdminTokenList>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(AdminTokenList { admin_tokens: vault.list_admin_tokens(org.id).await? }))
}

/// Revoke an org-admin token: it stops working at once, on every node (admin tokens are
/// checked against the store on every request). Idempotent; recorded as an
/// `admin_token_revoked` lifecycle event.
#[utoipa::path(delete, path = "/v1/orgs/{org}/admin-tokens/{id}", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("id" = String, Path, description = "admin token id (adm_…)")),
    responses((status = 200, body = AdminToken), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_admin_token(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<AdminToken>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    // Checked once the org is: an id that is none answers 404, like one that names nothing.
    let id = id.parse::<AdminTokenId>().map_err(|e| ApiError::not_found(e.to_string()))?;
    Ok(Json(vault.revoke_admin_token(&admin.actor(), org.id, id).await?))
}

/// Issue an org-admin token confined to this org.
#[utoipa::path(post, path = "/v1/orgs/{org}/admin-tokens", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = CreateAdminTokenRequest,
    responses((status = 201, body = IssuedAdminTokenResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_admin_token(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<CreateAdminTokenRequest>,
) -> Result<(StatusCode, Json<IssuedAdminTokenResponse>), ApiError> {
    let org = admin.org(&vault, &org).await?;
    let issued = vault.issue_org_admin_token(&admin.0, org.id, body.expires_at).await?;
    let response = IssuedAdminTokenResponse {
        id: issued.token.id,
        token: issued.text.expose().to_owned(),
        org_id: org.id,
        expires_at: issued.token.expires_at,
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// Create a team.
#[utoipa::path(post, path = "/v1/orgs/{org}/teams", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = CreateTeamRequest,
    responses((status = 201, body = Team), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_team(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<CreateTeamRequest>,
) -> Result<(StatusCode, Json<Team>), ApiError> {
    let org = admin.org(&vault, &org).await?;
    let team = vault.create_team(&admin.actor(), org.id, &body.name).await?;
    Ok((StatusCode::CREATED, Json(team)))
}

/// The org's teams.
#[utoipa::path(get, path = "/v1/orgs/{org}/teams", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), responses((status = 200, body = TeamList)))]
pub(crate) async fn list_teams(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<TeamList>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(TeamList { teams: vault.list_teams(org.id).await? }))
}

/// Create a workflow.
#[utoipa::path(post, path = "/v1/orgs/{org}/workflows", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = CreateWorkflowRequest,
    responses((status = 201, body = Workflow), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_workflow(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<CreateWorkflowRequest>,
) -> Result<(StatusCode, Json<Workflow>), ApiError> {
    let org = admin.org(&vault, &org).await?;
    let workflow = vault.create_workflow(&admin.actor(), org.id, &body.name, body.team.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(workflow)))
}

/// The org's workflows.
#[utoipa::path(get, path = "/v1/orgs/{org}/workflows", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), responses((status = 200, body = WorkflowList)))]
pub(crate) async fn list_workflows(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<WorkflowList>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(WorkflowList { workflows: vault.list_workflows(org.id).await? }))
}

/// `DELETE /v1/orgs/{org}`: the confirmation, read as text and checked once the org is
/// found (a name that names nothing is 404 first).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteOrgQuery {
    /// must be `true`: deletion cannot be undone
    #[param(value_type = Confirm, required = true)]
    confirm: Option<String>,
}

/// Crypto-shred an org (operator only): its KEKs are destroyed in the KMS, so its
/// credentials can never be opened again; its audit and lifecycle stay. Idempotent.
/// The request must say `?confirm=true`.
#[utoipa::path(delete, path = "/v1/orgs/{org}", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), DeleteOrgQuery),
    responses((status = 200, body = Org), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_org(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    query: Result<Query<DeleteOrgQuery>, ApiError>,
) -> Result<Json<Org>, ApiError> {
    admin.require_operator("delete orgs")?;
    let Query(query) = query?;
    // What the path names is looked up first: a name that names nothing is 404.
    let org = admin.org(&vault, &org).await?.id;
    Confirm::from_query(query.confirm.as_ref(), "deleting an org destroys its keys for good")?;
    Ok(Json(vault.delete_org(&admin.actor(), org).await?))
}

/// Rotate the org's KEK: a new version is current at once; every DEK is rewrapped to it
/// in the background (watch `GET /v1/orgs/{org}/kek`). The body must say
/// `{"confirm": true}`.
#[utoipa::path(post, path = "/v1/orgs/{org}/kek/rotate", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = ConfirmBody,
    responses((status = 202, body = KekStatus), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rotate_kek(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    body: Result<JsonBody<ConfirmBody>, ApiError>,
) -> Result<(StatusCode, Json<KekStatus>), ApiError> {
    let org = admin.org(&vault, &org).await?;
    let JsonBody(ConfirmBody { confirm: Confirm }) = body?;
    let status = vault.rotate_kek(&admin.actor(), org.id).await?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

/// The org's KEK version and rewrap progress.
#[utoipa::path(get, path = "/v1/orgs/{org}/kek", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = KekStatus), (status = 403, body = ErrorBody)))]
pub(crate) async fn get_kek_status(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<KekStatus>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.kek_status(org.id).await?))
}

/// `PUT /v1/orgs/{org}/kms`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveKmsRequest {
    /// `default`, or a customer-managed KMS from `[kms.customer.<name>]` (katman-c only).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    kms: String,
}

/// Move the org's KEK to another KMS (operator only): its next KEK version is created
/// there and is current at once; every DEK is rewrapped into it in the background, then
/// the org's KEKs in the KMS it left are removed (watch `GET /v1/orgs/{org}/kek`).
#[utoipa::path(put, path = "/v1/orgs/{org}/kms", tag = "orgs", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    request_body = MoveKmsRequest,
    responses((status = 202, body = KekStatus), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn move_kms(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<MoveKmsRequest>,
) -> Result<(StatusCode, Json<KekStatus>), ApiError> {
    admin.require_operator("move an org to another KMS")?;
    let org = admin.org(&vault, &org).await?;
    let status = vault.move_kms(&admin.actor(), org.id, &body.kms).await?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

/// The configured KMSs and how much the data plane's DEK cache spares them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct KmsList {
    kms: Vec<KmsInfo>,
    /// Data-plane DEK cache lookups since start: every miss is one unwrap in a KMS.
    dek_cache_hits: u64,
    /// See `dek_cache_hits`.
    dek_cache_misses: u64,
}

/// Every configured KMS with its health and counters (operator only).
#[utoipa::path(get, path = "/v1/kms", tag = "orgs", security(("bearer" = [])),
    responses((status = 200, body = KmsList), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_kms(State(vault): State<Vault>, admin: Admin) -> Result<Json<KmsList>, ApiError> {
    admin.require_operator("list the KMSs")?;
    let (dek_cache_hits, dek_cache_misses) = vault.kms().metrics().dek_cache_counts();
    Ok(Json(KmsList { kms: vault.kms().describe().await, dek_cache_hits, dek_cache_misses }))
}
