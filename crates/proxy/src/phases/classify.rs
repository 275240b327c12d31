//! Phase 3: classify the call — everything scope can restrict, derived from the request
//! itself (route, path, body, token), never from a caller's claim.

use axum::http::HeaderMap;
use byok_domain::{CallScope, Dimension, ModelFamilyRegistry};

use super::authenticate::Caller;
use super::route::Route;
use super::{Code, Refusal};

/// Header naming the workflow of a call.
pub const WORKFLOW_HEADER: &str = "x-byok-workflow";

/// Build the call's scope. A workflow must be one the token allows, and a token
/// restricted to workflows must name one.
pub(crate) fn classify(
    route: &Route,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    families: &ModelFamilyRegistry,
) -> Result<CallScope, Refusal> {
    let classification = byok_providers::classify(route.spec.api, &route.upstream_path, route.query.as_deref(), body);
    let model_family = classification.model.as_deref().and_then(|m| families.family_of(m)).map(str::to_owned);
    let token = &caller.token;
    let denied = |message: String| Refusal::new(Code::ScopeDenied, format!("{}: {message}", Dimension::Workflow));
    let workflow = match headers.get(WORKFLOW_HEADER).map(|v| v.to_str().map(str::trim)) {
        None => None,
        Some(Err(_)) => return Err(denied("the x-byok-workflow header is not valid text".into())),
        Some(Ok(reference)) => {
            let (id, owner) = caller
                .org
                .workflow(reference)
                .ok_or_else(|| denied(format!("unknown workflow '{reference}' in org {}", caller.org.org.id)))?;
            if owner.is_some_and(|team| team != token.team_id) {
                return Err(denied(format!(
                    "workflow {id} belongs to another team than this token's ({})",
                    token.team_id
                )));
            }
            if !token.workflows.is_empty() && !token.workflows.contains(&id) {
                return Err(denied(format!("workload token {} may not act for workflow {id}", token.id)));
            }
            Some(id)
        }
    };
    if workflow.is_none() && !token.workflows.is_empty() {
        return Err(denied(format!(
            "workload token {} is restricted to workflows; name one in the x-byok-workflow header",
            token.id
        )));
    }
    Ok(CallScope {
        provider: route.spec.id,
        model: classification.model,
        model_family,
        capability: classification.capability,
        mode: classification.mode,
        team: token.team_id,
        workflow,
    })
}
