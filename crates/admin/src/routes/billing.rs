//! Billing tiers: tier changes, negotiated rate cards, budgets, katman-c controls and
//! statements.

use axum::extract::{Path, State};
use axum::Json;
use byok_domain::{Org, OrgControls, RateCard, Statement, Tier, Timestamp};
use byok_store::UsageSource;
use byok_vault::{BudgetInput, BudgetView, ControlsInput, RateCardView, UsageReport, Vault};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, Query};

/// `PATCH /v1/orgs/{org}`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchOrgRequest {
    /// The new billing tier; it applies from the org's next call on.
    tier: Tier,
}

/// Change an org's billing tier (operator only), from its next call on; calls already
/// made keep the tier and price they were made under. Moving to katman-c is refused
/// while a credential has no expiry or is org-wide (the answer names them); leaving
/// katman-c drops the negotiated card, retention and controls (recorded in the
/// `tier_changed` event) and needs the org back on the default KMS.
#[utoipa::path(patch, path = "/v1/orgs/{org}", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = PatchOrgRequest,
    responses((status = 200, body = Org), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn update_org(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<PatchOrgRequest>,
) -> Result<Json<Org>, ApiError> {
    admin.require_operator("change an org's tier")?;
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.change_tier(&admin.actor(), org.id, body.tier).await?))
}

/// The rate card the org is billed with: its negotiated card (katman-c), else its tier's.
#[utoipa::path(get, path = "/v1/orgs/{org}/rate-card", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = RateCardView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_rate_card(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<RateCardView>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.rate_card(org.id).await?))
}

/// The org's negotiated rate card (katman-c), if it has one: 404 when it is billed with
/// its tier's card.
#[utoipa::path(get, path = "/v1/orgs/{org}/negotiated-rate-card", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = RateCardView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_negotiated_rate_card(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<RateCardView>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    let view = vault.rate_card(org.id).await?;
    if !view.negotiated {
        return Err(ApiError::not_found(format!(
            "org {} has no negotiated rate card; it is billed with its tier's card (GET /v1/orgs/{{org}}/rate-card)",
            org.id
        )));
    }
    Ok(Json(view))
}

/// Set a katman-c org's negotiated rate card (operator only). Amounts are decimal
/// strings; calls made before keep the card they were priced with.
#[utoipa::path(put, path = "/v1/orgs/{org}/negotiated-rate-card", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = RateCard,
    responses((status = 200, body = RateCardView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn put_negotiated_rate_card(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(card): JsonBody<RateCard>,
) -> Result<Json<RateCardView>, ApiError> {
    admin.require_operator("negotiate rate cards")?;
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.set_rate_card(&admin.actor(), org.id, Some(card)).await?))
}

/// Remove a katman-c org's negotiated card (operator only): it is billed with its tier's
/// card from its next call on, which the answer shows.
#[utoipa::path(delete, path = "/v1/orgs/{org}/negotiated-rate-card", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = RateCardView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_negotiated_rate_card(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<RateCardView>, ApiError> {
    admin.require_operator("negotiate rate cards")?;
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.set_rate_card(&admin.actor(), org.id, None).await?))
}

/// The org's monthly budget and this month's spend.
#[utoipa::path(get, path = "/v1/orgs/{org}/budget", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = BudgetView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_budget(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<BudgetView>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.budget(org.id).await?))
}

/// Set the org's monthly budget (operator or org admin), replacing the old one whole:
/// `{"monthly_limit": "50.00", "teams": {"research": "10.00"}}`. A call that would start
/// once the org's or its team's spend this UTC month has reached the limit is refused
/// with `budget_exceeded` (429) and nothing is sent. `{}` removes every limit.
#[utoipa::path(put, path = "/v1/orgs/{org}/budget", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = BudgetInput,
    responses((status = 200, body = BudgetView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn put_budget(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<BudgetInput>,
) -> Result<Json<BudgetView>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.set_budget(&admin.actor(), org.id, body).await?))
}

/// The org's katman-c controls.
#[utoipa::path(get, path = "/v1/orgs/{org}/controls", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")),
    responses((status = 200, body = OrgControls), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_controls(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
) -> Result<Json<OrgControls>, ApiError> {
    Ok(Json(admin.org(&vault, &org).await?.controls))
}

/// Set a katman-c org's controls (operator or org admin), replacing them whole:
/// `max_credential_age_days` (a credential whose current version is older is refused
/// with `rotation_required` until rotated) and `allowed_source_cidrs` (data-plane calls
/// from elsewhere are refused with `source_forbidden`). `{}` removes them.
#[utoipa::path(put, path = "/v1/orgs/{org}/controls", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name")), request_body = ControlsInput,
    responses((status = 200, body = OrgControls), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn put_controls(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    JsonBody(controls): JsonBody<ControlsInput>,
) -> Result<Json<OrgControls>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    Ok(Json(vault.set_controls(&admin.actor(), org.id, controls).await?.controls))
}

/// What a statement is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum StatementSource {
    /// The usage rollup (fast).
    Rollup,
    /// The raw audit rows (slow; always agrees with the rollup).
    Audit,
}

impl<'de> Deserialize<'de> for StatementSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "rollup" => Ok(Self::Rollup),
            "audit" => Ok(Self::Audit),
            other => Err(de::Error::custom(format!("'{other}' is not rollup or audit"))),
        }
    }
}

/// `GET /v1/orgs/{org}/usage`: the period and where the statement comes from.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatementQuery {
    /// RFC 3339, inclusive
    from: Option<Timestamp>,
    /// RFC 3339, exclusive
    to: Option<Timestamp>,
    /// `rollup` (default) or `audit`
    source: Option<StatementSource>,
}

/// `GET /v1/usage`: the period.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// RFC 3339, inclusive
    from: Option<Timestamp>,
    /// RFC 3339, exclusive
    to: Option<Timestamp>,
}

/// The org's statement for `[from, to)` (RFC 3339; default: the current UTC month):
/// calls, tokens and fees per (tier, provider, model family, credential owner, rate
/// card), each line rounded half-up to 6 decimals, totals the sums of the lines.
/// `source=audit` recomputes it from the raw audit rows instead of the usage rollup
/// (slower; the two always agree).
#[utoipa::path(get, path = "/v1/orgs/{org}/usage", tag = "billing", security(("bearer" = [])),
    params(("org" = String, Path, description = "org id or name"), StatementQuery),
    responses((status = 200, body = Statement), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn get_org_usage(
    State(vault): State<Vault>,
    admin: Admin,
    Path(org): Path<String>,
    query: Result<Query<StatementQuery>, ApiError>,
) -> Result<Json<Statement>, ApiError> {
    let org = admin.org(&vault, &org).await?;
    let Query(StatementQuery { from, to, source }) = query?;
    let source = match source {
        None | Some(StatementSource::Rollup) => UsageSource::Rollup,
        Some(StatementSource::Audit) => UsageSource::Audit,
    };
    Ok(Json(vault.statement(org.id, from, to, source).await?))
}

/// Every org's usage for `[from, to)`, one line per org (operator only).
#[utoipa::path(get, path = "/v1/usage", tag = "billing", security(("bearer" = [])),
    params(UsageQuery),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn get_usage_report(
    State(vault): State<Vault>,
    admin: Admin,
    query: Result<Query<UsageQuery>, ApiError>,
) -> Result<Json<UsageReport>, ApiError> {
    admin.require_operator("see every org's usage")?;
    let Query(UsageQuery { from, to }) = query?;
    Ok(Json(vault.usage_report(from, to).await?))
}
