//! Workload tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use byok_domain::{OrgId, TeamId, Timestamp, TokenId, WorkflowId, WorkloadToken};
use byok_vault::{NewWorkloadToken, Vault};
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;

/// `POST /v1/orgs/{org}/tokens`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTokenRequest {
    /// The team (id or name) whose calls the token makes.
    #[schema(value_type = byok_domain::Name)]
    team: String,
    /// Workflows (ids or names) it is restricted to; the token must then name one per call.
    #[serde(default)]
    #[schema(value_type = Vec<byok_domain::Name>)]
    workflows: Vec<String>,
    /// When it stops working.
    #[serde(default)]
    expires_at: Option<Timestamp>,
    /// A name for it, unique in the org (it can then be revoked by name).
    #[serde(default)]
    #[schema(value_type = Option<byok_domain::Name>)]
    name: Option<String>,
    /// What it is for (at most 500 characters).
    #[serde(default)]
    description: Option<String>,
}

/// A newly issued workload token: the only time its text is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct IssuedTokenResponse {
    id: TokenId,
    /// Its name, if it was given one.
    name: Option<byok_domain::Name>,
    /// What it is for, if said.
    description: Option<String>,
    /// The token text (`byok_…`), for the application's `api_key`. Shown once.
    token: String,
    org_id: OrgId,
    team_id: TeamId,
    workflows: Vec<WorkflowId>,
    expires_at: Option<Timestamp>,
}

/// A list of workload tokens (never their text).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenList {
    tokens: Vec<WorkloadToken>,
}

/// Issue a workload token.
#[utoipa::path(post, path = "/v1/orgs/{org}/tokens", tag = "tokens", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = CreateTokenRequest,
    responses((status = 201, body = IssuedTokenResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_token(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<CreateTokenRequest>,
) -> Result<(StatusCode, Json<IssuedTokenResponse>), ApiError> {
    let org = admin.org(&vault, &org).await?;
    let request = NewWorkloadToken {
        team: body.team,
        workflows: body.workflows,
        expires_at: body.expires_at,
        name: body.name,
        description: body.description,
    };
    let issued = vault.issue_workload_token(&admin.actor(), org.id, request).await?;
    let response = IssuedTokenResponse {
        id: issued.token.id,
        name: issued.token.name,
        description: issued.token.description,
        token: issued.text.expose().to_owned(),
        org_id: issued.token.org_id,
        team_id: issued.token.team_id,
        workflows: issued.token.workflows,
        expires_at: issued.token.expires_at,
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// The org's workload tokens.
#[utoipa::path(get, path = "/v1/orgs/{org}/tokens", tag = "tokens", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), responses((status = 200, body = TokenList)))]
pub(crate) async fn list_tokens(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<TokenList>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(TokenList { tokens: vault.list_workload_tokens(org.id).await? }))
}

/// Revoke a workload token (idempotent).
#[utoipa::path(delete, path = "/v1/orgs/{org}/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), ("id" = String, Path, description = "token id (tok_…) or name")),
    responses((status = 200, body = WorkloadToken), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_token(
    State(vault): State<Vault>,
    admin: Admin,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<WorkloadToken>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    // Resolved once the org is: a reference that is neither answers 404.
    let id = vault.workload_token_id(org.id, &id).await?;
    Ok(Json(vault.revoke_workload_token(&admin.actor(), org.id, id).await?))
}
