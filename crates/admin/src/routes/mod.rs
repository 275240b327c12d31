//! Routes of the admin API.

pub(crate) mod audit;
pub(crate) mod billing;
pub(crate) mod credentials;
pub(crate) mod health;
pub(crate) mod limits;
pub(crate) mod orgs;
pub(crate) mod platform;
pub(crate) mod tokens;

use axum::routing::{delete, get, post, put};
use axum::Router;
use byok_vault::Vault;

use crate::error::ApiError;

pub(crate) fn router() -> Router<Vault> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/kms", get(orgs::list_kms))
        .route("/v1/openapi.json", get(health::openapi_json))
        .route("/v1/orgs", post(orgs::create_org).get(orgs::list_orgs))
        .route("/v1/orgs/{org}", get(orgs::get_org).delete(orgs::delete_org).patch(billing::update_org))
        .route("/v1/orgs/{org}/rate-card", get(billing::get_rate_card))
        .route(
            "/v1/orgs/{org}/negotiated-rate-card",
            get(billing::get_negotiated_rate_card)
                .put(billing::put_negotiated_rate_card)
                .delete(billing::delete_negotiated_rate_card),
        )
        .route("/v1/orgs/{org}/budget", get(billing::get_budget).put(billing::put_budget))
        .route("/v1/orgs/{org}/controls", get(billing::get_controls).put(billing::put_controls))
        .route("/v1/orgs/{org}/limits", get(limits::get_limits).put(limits::put_limits).delete(limits::delete_limits))
        .route("/v1/orgs/{org}/usage", get(billing::get_org_usage))
        .route("/v1/usage", get(billing::get_usage_report))
        .route(
            "/v1/platform/credentials",
            post(platform::create_platform_credential).get(platform::list_platform_credentials),
        )
        .route(
            "/v1/platform/credentials/{cred}",
            get(platform::get_platform_credential).patch(platform::update_platform_credential),
        )
        .route("/v1/platform/credentials/{cred}/rotate", post(platform::rotate_platform_credential))
        .route("/v1/platform/credentials/{cred}/verify", post(platform::verify_platform_credential))
        .route("/v1/platform/credentials/{cred}/disable", post(platform::disable_platform_credential))
        .route("/v1/platform/credentials/{cred}/enable", post(platform::enable_platform_credential))
        .route("/v1/platform/credentials/{cred}/revoke", post(platform::revoke_platform_credential))
        .route("/v1/platform/credentials/{cred}/lifecycle", get(platform::platform_credential_lifecycle))
        .route("/v1/platform/audit/verify", get(platform::verify_platform_audit))
        .route("/v1/orgs/{org}/kek", get(orgs::get_kek_status))
        .route("/v1/orgs/{org}/kek/rotate", post(orgs::rotate_kek))
        .route("/v1/orgs/{org}/kms", put(orgs::move_kms))
        .route("/v1/orgs/{org}/admin-tokens", post(orgs::create_admin_token).get(orgs::list_admin_tokens))
        .route("/v1/orgs/{org}/admin-tokens/{id}", delete(orgs::revoke_admin_token))
        .route("/v1/orgs/{org}/teams", post(orgs::create_team).get(orgs::list_teams))
        .route("/v1/orgs/{org}/workflows", post(orgs::create_workflow).get(orgs::list_workflows))
        .route("/v1/orgs/{org}/credentials", post(credentials::create_credential).get(credentials::list_credentials))
        .route(
            "/v1/orgs/{org}/credentials/{cred}",
            get(credentials::get_credential).patch(credentials::update_credential),
        )
        .route("/v1/orgs/{org}/credentials/{cred}/rotate", post(credentials::rotate_credential))
        .route("/v1/orgs/{org}/credentials/{cred}/verify", post(credentials::verify_credential))
        .route("/v1/orgs/{org}/credentials/{cred}/disable", post(credentials::disable_credential))
        .route("/v1/orgs/{org}/credentials/{cred}/enable", post(credentials::enable_credential))
        .route("/v1/orgs/{org}/credentials/{cred}/revoke", post(credentials::revoke_credential))
        .route("/v1/orgs/{org}/credentials/{cred}/lifecycle", get(audit::credential_lifecycle))
        .route("/v1/orgs/{org}/audit", get(audit::query_audit))
        .route("/v1/orgs/{org}/audit/export", get(audit::export_audit))
        .route("/v1/orgs/{org}/audit/verify", get(audit::verify_audit).post(audit::verify_audit_checkpoint))
        .route("/v1/orgs/{org}/audit/checkpoints", post(audit::create_audit_checkpoint))
        .route("/v1/orgs/{org}/audit/purge", post(audit::purge_audit))
        .route("/v1/audit/public-key", get(audit::get_audit_public_key))
        .route("/v1/audit/public-keys", get(audit::list_audit_public_keys))
        .route("/v1/orgs/{org}/tokens", post(tokens::create_token).get(tokens::list_tokens))
        .route("/v1/orgs/{org}/tokens/{id}", delete(tokens::revoke_token))
        .merge(crate::console::router())
        .fallback(|| async { ApiError::not_found("no such endpoint; see /v1/openapi.json") })
}
