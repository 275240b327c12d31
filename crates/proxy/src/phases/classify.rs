//! Phase 3: classify the call — everything scope can restrict, derived from the request
//! itself (route, normalized path, body, token), never from a caller's claim. A request
//! byok cannot read with certainty (a compressed or ambiguous body, a path keyword in
//! another letter case, a model name that is not short plain text) is refused here with
//! `invalid_request`, before any credential is chosen.

use axum::http::header::{CONTENT_ENCODING, TRANSFER_ENCODING};
use axum::http::HeaderMap;
use byok_domain::{CallScope, Dimension, ModelFamilyRegistry};

use super::authenticate::Caller;
use super::route::Route;
use super::{Code, Refusal};

/// Header naming the workflow of a call.
pub const WORKFLOW_HEADER: &str = "x-byok-workflow";

/// Refuse a body byok would read in another form than the upstream: a compressed one
/// (`Content-Encoding` other than `identity`, or a transfer coding other than `chunked`,
/// which the listener removes).
fn check_body_coding(headers: &HeaderMap) -> Result<(), Refusal> {
    let refuse = |what: &str| {
        Err(Refusal::new(
            Code::InvalidRequest,
            format!("{what} request bodies are not accepted: byok must read the body to classify the call"),
        ))
    };
    let codings =
        |name| headers.get_all(name).iter().map(|value| value.to_str().map(|text| text.split(',').map(str::trim)));
    for value in codings(CONTENT_ENCODING) {
        let Ok(mut codings) = value else { return refuse("content-encoded") };
        if codings.any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity")) {
            return refuse("compressed (content-encoded)");
        }
    }
    for value in codings(TRANSFER_ENCODING) {
        let Ok(mut codings) = value else { return refuse("transfer-encoded") };
        if codings.any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("chunked")) {
            return refuse("compressed (transfer-encoded)");
        }
    }
    Ok(())
}

/// Build the call's scope. A workflow must be one the token allows, and a token
/// restricted to workflows must name one.
pub(crate) fn classify(
    route: &Route,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    families: &ModelFamilyRegistry,
) -> Result<CallScope, Refusal> {
    check_body_coding(headers)?;
    let classification =
        byok_providers::classify(route.spec.api, &route.path, route.query.as_deref(), body).map_err(|ambiguity| {
            Refusal::new(Code::InvalidRequest, format!("the request cannot be classified with certainty: {ambiguity}"))
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identity_bodies_are_read() {
        let cases: [(&[(&str, &str)], bool); 8] = [
            (&[], true),
            (&[("content-encoding", "identity")], true),
            (&[("content-encoding", "Identity, ")], true),
            (&[("transfer-encoding", "chunked")], true),
            (&[("content-encoding", "gzip")], false),
            (&[("content-encoding", "identity"), ("content-encoding", "br")], false),
            (&[("content-encoding", "identity, deflate")], false),
            (&[("transfer-encoding", "gzip, chunked")], false),
        ];
        for (headers, accepted) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(*name, value.parse().unwrap());
            }
            let result = check_body_coding(&map);
            assert_eq!(result.is_ok(), accepted, "{headers:?}");
            if let Err(refusal) = result {
                assert_eq!(refusal.code, Code::InvalidRequest);
            }
        }
    }
}
