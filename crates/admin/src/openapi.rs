//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{audit, credentials, health, orgs, tokens};

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
        orgs::create_admin_token,
        orgs::create_team, orgs::list_teams, orgs::create_workflow, orgs::list_workflows,
        credentials::create, credentials::list, credentials::show, credentials::update, credentials::rotate,
        credentials::disable, credentials::enable, credentials::revoke, audit::lifecycle,
        audit::query, audit::verify, audit::verify_checkpoint, audit::checkpoint, audit::purge, audit::public_key,
        tokens::create, tokens::list, tokens::revoke,
    ),
    modifiers(&BearerAuth),
    tags((name = "orgs"), (name = "credentials"), (name = "tokens"), (name = "audit"), (name = "health")),
)]
struct ApiDoc;

/// The admin API's OpenAPI 3.1 document as JSON.
pub fn openapi_document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}
