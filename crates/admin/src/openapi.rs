//! The OpenAPI document, generated from the handlers' annotations.

use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{audit, billing, credentials, health, limits, orgs, platform, tokens};

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
        orgs::create_org, orgs::list_orgs, orgs::get_org, orgs::delete_org, orgs::rotate_kek, orgs::get_kek_status,
        orgs::move_kms, orgs::list_kms,
        orgs::create_admin_token, orgs::list_admin_tokens, orgs::revoke_admin_token,
        orgs::create_team, orgs::list_teams, orgs::create_workflow, orgs::list_workflows,
        credentials::create_credential, credentials::list_credentials, credentials::get_credential, credentials::update_credential, credentials::rotate_credential,
        credentials::verify_credential, credentials::disable_credential, credentials::enable_credential, credentials::revoke_credential, audit::credential_lifecycle,
        audit::query_audit, audit::export_audit, audit::verify_audit, audit::verify_audit_checkpoint, audit::create_audit_checkpoint, audit::purge_audit, audit::get_audit_public_key, audit::list_audit_public_keys,
        tokens::create_token, tokens::list_tokens, tokens::revoke_token,
        billing::update_org, billing::get_rate_card, billing::get_negotiated_rate_card,
        billing::put_negotiated_rate_card, billing::delete_negotiated_rate_card,
        billing::get_budget, billing::put_budget, billing::get_controls, billing::put_controls,
        billing::get_org_usage, billing::get_usage_report,
        limits::get_limits, limits::put_limits, limits::delete_limits,
        platform::create_platform_credential, platform::list_platform_credentials, platform::get_platform_credential,
        platform::update_platform_credential, platform::rotate_platform_credential, platform::verify_platform_credential,
        platform::disable_platform_credential, platform::enable_platform_credential,
        platform::revoke_platform_credential, platform::platform_credential_lifecycle, platform::verify_platform_audit,
    ),
    // Types used only as query parameters, which utoipa does not collect by itself.
    components(schemas(billing::StatementSource, crate::confirm::Confirm)),
    modifiers(&BearerAuth),
    tags((name = "orgs"), (name = "credentials"), (name = "tokens"), (name = "audit"), (name = "billing"),
        (name = "limits"), (name = "platform"), (name = "health")),
)]
struct ApiDoc;

/// The admin API's OpenAPI 3.1 document as JSON.
pub fn openapi_document() -> serde_json::Value {
    let mut document =
        serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
    flatten_all_of(&mut document);
    complete_operations(&mut document);
    widen_unsigned(&mut document);
    document
}

/// utoipa writes a `u32` as `int32` with minimum 0, which caps it at 2³¹ − 1; byok takes
/// every `u32` (ranges it refuses beyond that are stated with `maximum`).
fn widen_unsigned(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("format").and_then(Value::as_str) == Some("int32") && object.get("minimum") == Some(&json!(0))
            {
                object.insert("format".into(), json!("uint32"));
                object.entry("maximum").or_insert(json!(u32::MAX));
            }
            object.values_mut().for_each(widen_unsigned);
        }
        Value::Array(items) => items.iter_mut().for_each(widen_unsigned),
        _ => {}
    }
}

/// The error answers every operation can give, beyond what its annotation lists (the
/// same for all, so said once here rather than on each handler).
fn complete_operations(document: &mut Value) {
    let schemas = document.pointer("/components/schemas").cloned().unwrap_or_default();
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            let Some(operation) = operation.as_object_mut() else { continue };
            let secured = operation.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
            let parameters = operation.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
            let located = |location: &str| parameters.iter().any(|p| p["in"] == location);
            // A body whose fields are all optional may be left out: it reads as `{}`.
            if let Some(body) = operation.get_mut("requestBody").and_then(Value::as_object_mut) {
                let schema = body
                    .get("content")
                    .and_then(|content| content.pointer("/application~1json/schema/$ref"))
                    .and_then(Value::as_str)
                    .and_then(|r| r.rsplit('/').next())
                    .and_then(|name| schemas.get(name));
                let required = schema.and_then(|s| s.get("required")).and_then(Value::as_array);
                if schema.is_some() && required.is_none_or(Vec::is_empty) {
                    body.insert("required".into(), Value::Bool(false));
                }
            }
            let mut add = Vec::new();
            if operation.contains_key("requestBody") || located("query") {
                add.push(("400", "The body or a query parameter is invalid (the message says which and why)."));
            }
            if secured {
                add.push(("401", "Missing, unknown, expired or revoked admin token."));
            }
            if path.contains("{org}") {
                add.push(("403", "The token may not act on this org (or the operation is the operator's)."));
            }
            if located("path") || operation.contains_key("requestBody") {
                add.push(("404", "No such org, credential or token, or a name in the body (a team, a workflow, a KMS) that refers to nothing; the message names the field."));
            }
            if method != "get" && !path.contains("/audit") {
                add.push(("409", "The change conflicts with the current state: a name already taken, a revoked credential, a change made concurrently (read again and retry)."));
            }
            if secured {
                add.push(("503", "The store or the KMS cannot be used (`store_unavailable`, `kms_unavailable`)."));
            }
            let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { continue };
            for (status, description) in add {
                responses.entry(status).or_insert_with(|| error_response(description));
            }
            for response in responses.values_mut() {
                if response.get("description").and_then(Value::as_str).is_some_and(str::is_empty) {
                    response["description"] = Value::String("See the operation's description.".into());
                }
            }
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
    })
}

/// Component schemas made of `allOf` parts (serde's `flatten`) become one object: a part
/// that refuses unknown fields (`additionalProperties: false`) would otherwise refuse the
/// other parts' fields, and no answer would validate.
fn flatten_all_of(document: &mut Value) {
    let Some(schemas) = document.pointer("/components/schemas").and_then(Value::as_object).cloned() else { return };
    let Some(targets) = document.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    for schema in targets.values_mut() {
        let Some(parts) = schema.get("allOf").and_then(Value::as_array).cloned() else { continue };
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        let mut whole = true;
        for part in &parts {
            let part = match part.get("$ref").and_then(Value::as_str) {
                Some(reference) => match reference.rsplit('/').next().and_then(|name| schemas.get(name)) {
                    Some(target) => target,
                    None => {
                        whole = false;
                        break;
                    }
                },
                None => part,
            };
            match part.get("properties").and_then(Value::as_object) {
                Some(fields) => properties.extend(fields.clone()),
                None => {
                    whole = false;
                    break;
                }
            }
            required.extend(part.get("required").and_then(Value::as_array).cloned().unwrap_or_default());
        }
        if whole {
            let Some(object) = schema.as_object_mut() else { continue };
            object.remove("allOf");
            object.insert("type".into(), json!("object"));
            object.insert("properties".into(), Value::Object(properties));
            object.insert("required".into(), Value::Array(required));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body without a required field may be left out (it reads as `{}`); others may not.
    #[test]
    fn bodies_without_required_fields_are_optional() {
        let document = openapi_document();
        let optional = |path: &str, method: &str| document["paths"][path][method]["requestBody"]["required"].clone();
        assert_eq!(optional("/v1/orgs/{org}/admin-tokens", "post"), Value::Bool(false));
        assert_eq!(optional("/v1/orgs/{org}/budget", "put"), Value::Bool(false));
        assert_eq!(optional("/v1/orgs", "post"), Value::Bool(true));
        assert_eq!(optional("/v1/orgs/{org}/credentials/{cred}/rotate", "post"), Value::Bool(true));
    }

    /// Every `$ref` names a schema the document has.
    #[test]
    fn every_reference_resolves() {
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(object) => {
                    if let Some(Value::String(target)) = object.get("$ref") {
                        out.push(target.clone());
                    }
                    object.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let document = openapi_document();
        let mut targets = Vec::new();
        refs(&document, &mut targets);
        assert!(!targets.is_empty());
        for target in targets {
            let pointer = target.trim_start_matches('#');
            assert!(document.pointer(pointer).is_some(), "{target} does not resolve");
        }
    }

    /// Operation ids are unique (client generators name methods after them) and say
    /// what they do to what: `list_credentials`, never a bare `list`.
    #[test]
    fn operation_ids_are_unique_and_descriptive() {
        let document = openapi_document();
        let mut seen = std::collections::BTreeMap::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
                let descriptive = id.contains('_') || matches!(id, "healthz" | "readyz");
                assert!(descriptive, "{method} {path}: operationId '{id}' does not say what it acts on");
                assert!(operation["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path}: no tag");
                if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                    panic!("operationId '{id}' is used by both {other} and {method} {path}");
                }
            }
        }
        assert!(seen.len() > 50, "{} operations", seen.len());
    }

    /// Every secured operation documents 401; every `allOf` is flattened.
    #[test]
    fn every_operation_documents_its_errors() {
        let document = openapi_document();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if operation.get("security").is_some() {
                    assert!(operation["responses"].get("401").is_some(), "{method} {path}");
                }
            }
        }
        let text = document.to_string();
        assert!(!text.contains("allOf"), "an allOf is left");
    }
}
