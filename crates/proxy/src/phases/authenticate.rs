//! Phase 2: authenticate the workload token.

use std::sync::Arc;

use axum::http::HeaderMap;
use byok_crypto::{TokenHash, TokenKind};
use byok_domain::{OrgState, Timestamp, WorkloadToken};
use byok_providers::ProviderSpec;

use super::{Code, Refusal};
use crate::cache::{Directory, OrgSnapshot};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) token: Arc<WorkloadToken>,
    pub(crate) org: Arc<OrgSnapshot>,
}

/// The token presented in one of the headers the provider's SDK uses for its key.
fn presented_token<'h>(headers: &'h HeaderMap, spec: &ProviderSpec) -> Option<&'h str> {
    spec.token_headers.iter().find_map(|name| {
        let value = headers.get(*name)?.to_str().ok()?.trim();
        let token = if *name == "authorization" {
            let (scheme, rest) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())?
        } else {
            value
        };
        Some(token).filter(|t| !t.is_empty())
    })
}

fn invalid(message: &str) -> Refusal {
    Refusal::new(Code::InvalidWorkloadToken, message)
}

/// Find the token, check it is live, load its org.
pub(crate) async fn authenticate(
    directory: &Directory,
    headers: &HeaderMap,
    spec: &ProviderSpec,
) -> Result<Caller, Refusal> {
    let Some(presented) = presented_token(headers, spec) else {
        let names = spec.token_headers.join(" or ");
        return Err(invalid(&format!("no workload token: send your byok token as the API key (header {names})")));
    };
    if !presented.starts_with(TokenKind::Workload.prefix()) {
        // Never echo what was sent: it may be a real provider key pasted by mistake.
        return Err(invalid("the API key is not a byok workload token (they start with 'byok_')"));
    }
    let store_down =
        |e: byok_store::StoreError| Refusal::failed(Code::StoreUnavailable, "cannot check the workload token", e);
    let token = directory
        .token(&TokenHash::of(presented))
        .await
        .map_err(store_down)?
        .ok_or_else(|| invalid("unknown workload token"))?;
    let now = Timestamp::now();
    if token.revoked_at.is_some() {
        return Err(invalid(&format!("workload token {} was revoked", token.id)));
    }
    if token.expires_at.is_some_and(|at| at <= now) {
        return Err(invalid(&format!("workload token {} has expired", token.id)));
    }
    let org = directory
        .org(&token.org_id, spec.id)
        .await
        .map_err(store_down)?
        .ok_or_else(|| invalid("the workload token's org no longer exists"))?;
    if org.org.state == OrgState::Deleted {
        return Err(invalid(&format!("org {} was deleted", org.org.id)));
    }
    Ok(Caller { token, org })
}

#[cfg(test)]
mod tests {
    use super::*;
    use byok_domain::ProviderId;

    #[test]
    fn token_comes_from_the_providers_headers_only() {
        let anthropic = byok_providers::spec(ProviderId::Anthropic);
        let openai = byok_providers::spec(ProviderId::Openai);
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "byok_a".parse().unwrap());
        assert_eq!(presented_token(&headers, anthropic), Some("byok_a"));
        assert_eq!(presented_token(&headers, openai), None);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer byok_b".parse().unwrap());
        assert_eq!(presented_token(&headers, anthropic), Some("byok_b"));
        assert_eq!(presented_token(&headers, openai), Some("byok_b"));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Basic Zm9vOmJhcg==".parse().unwrap());
        assert_eq!(presented_token(&headers, openai), None);
    }
}
