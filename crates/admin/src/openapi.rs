//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{audit, billing, credentials, health, orgs, platform, tokens};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin token: the operator token or an org-admin token"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "byok admin API", description = "Manage orgs, teams, workflows, provider credentials and workload tokens."),
    paths(
        health::healthz, health::readyz,
        orgs::create_org, orgs::list_orgs, orgs::get_org, orgs::delete_org, orgs::rotate_kek, orgs::kek_status,
        orgs::move_kms, orgs::list_kms,
        orgs::create_admin_token, orgs::list_admin_tokens, orgs::revoke_admin_token,
        orgs::create_team, orgs::list_teams, orgs::create_workflow, orgs::list_workflows,
        credentials::create, credentials::list, credentials::show, credentials::update, credentials::rotate,
        credentials::disable, credentials::enable, credentials::revoke, audit::lifecycle,
        audit::query, audit::verify, audit::verify_checkpoint, audit::checkpoint, audit::purge, audit::public_key,
        tokens::create, tokens::list, tokens::revoke,
        billing::update_org, billing::get_rate_card, billing::put_rate_card, billing::delete_rate_card,
        billing::get_budget, billing::put_budget, billing::delete_budget,
        billing::get_controls, billing::put_controls, billing::delete_controls,
        billing::usage, billing::usage_report,
        platform::create_platform_credential, platform::list_platform_credentials, platform::show_platform_credential,
        platform::update_platform_credential, platform::rotate_platform_credential,
        platform::disable_platform_credential, platform::enable_platform_credential,
        platform::revoke_platform_credential, platform::platform_credential_lifecycle, platform::verify_platform_audit,
    ),
    modifiers(&BearerAuth),
    tags((name = "orgs"), (name = "credentials"), (name = "tokens"), (name = "audit"), (name = "billing"),
        (name = "platform"), (name = "health")),
)]
struct ApiDoc;

/// The admin API's OpenAPI 3.1 document as JSON.
pub fn openapi_document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}
