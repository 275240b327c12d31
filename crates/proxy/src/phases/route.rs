//! Phase 1: the route. `/{provider}/{upstream path}`; the upstream path is brought to its
//! one normal form ([`byok_providers::normalize_path`]) — what `classify` reads and what
//! `inject` sends — or refused if it has none.

use axum::http::Uri;
use byok_domain::ProviderId;
use byok_providers::{normalize_path_for, spec, NormalizedPath, ProviderSpec};

use super::{Code, Refusal};

/// A routed request.
#[derive(Debug, Clone)]
pub struct Route {
    /// The provider's wire facts.
    pub spec: &'static ProviderSpec,
    /// The path to send upstream, in normal form (starts with `/`): what is classified
    /// and exactly what is sent.
    pub path: NormalizedPath,
    /// The same path as text (what the fuzzing entry point reports).
    pub upstream_path: String,
    /// The query string, if any.
    pub query: Option<String>,
}

/// Split `uri` into provider and upstream path. Refuses absolute request targets, unknown
/// providers and paths with no single reading: dot segments (also as `%2E` or `..;`),
/// empty segments (`//`), `@`, `;`, backslashes, encoded separators and reserved
/// characters (`%2F`, `%3A`, `%3F`, `%23`, …), controls and non-ASCII bytes (raw or
/// encoded: fullwidth dots, overlong UTF-8). A Bedrock model id (`/model/{modelId}/…`) is
/// the one segment kept encoded, in its canonical form
/// ([`byok_providers::normalize_path_for`]).
pub fn route(uri: &Uri) -> Result<Route, Refusal> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(Refusal::new(
            Code::InvalidRequest,
            "absolute request targets are not accepted; send the path only (the upstream host is chosen by byok)",
        ));
    }
    let path = uri.path();
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (provider, upstream_path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let provider: ProviderId = provider
        .parse()
        .map_err(|e: byok_domain::UnknownProvider| Refusal::new(Code::UnknownProvider, e.to_string()))?;
    let spec = spec(provider);
    let path = normalize_path_for(spec.api, upstream_path)
        .map_err(|e| Refusal::new(Code::InvalidRequest, format!("request path refused: {e}")))?;
    Ok(Route { spec, upstream_path: path.as_str().to_owned(), path, query: uri.query().map(str::to_owned) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_refusals() {
        let ok = [
            ("/openai/v1/chat/completions", ProviderId::Openai, "/v1/chat/completions", None),
            ("/anthropic/v1/messages?beta=true", ProviderId::Anthropic, "/v1/messages", Some("beta=true")),
            (
                "/azure-openai/openai/deployments/x/chat/completions?api-version=1",
                ProviderId::AzureOpenai,
                "/openai/deployments/x/chat/completions",
                Some("api-version=1"),
            ),
            (
                "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
                ProviderId::Gemini,
                "/v1beta/models/gemini-2.5-pro:generateContent",
                None,
            ),
            ("/openai/v1/models/", ProviderId::Openai, "/v1/models/", None),
            (
                "/bedrock/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
                ProviderId::Bedrock,
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                None,
            ),
            (
                "/bedrock/model/us.anthropic.claude-3-haiku-20240307-v1%3a0/converse-stream",
                ProviderId::Bedrock,
                "/model/us.anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream",
                None,
            ),
        ];
        for (uri, provider, path, query) in ok {
            let route = route(&uri.parse().unwrap()).unwrap();
            assert_eq!(route.spec.id, provider);
            assert_eq!(route.path.as_str(), path);
            assert_eq!(route.upstream_path, path);
            assert_eq!(route.query.as_deref(), query);
        }
        let refused = [
            ("/nope/v1/chat", Code::UnknownProvider),
            ("/", Code::UnknownProvider),
            ("http://evil.example/openai/v1/chat/completions", Code::InvalidRequest),
            ("/openai/v1/../../admin", Code::InvalidRequest),
            ("/openai/./v1/models", Code::InvalidRequest),
            ("/openai//evil.example/v1/models", Code::InvalidRequest),
            ("/openai/v1/models@evil.example", Code::InvalidRequest),
            ("/openai/v1%2f..%2fadmin", Code::InvalidRequest),
            ("/openai/v1/%2E%2E/admin", Code::InvalidRequest),
            ("/openai/v1/%2e%2e/admin", Code::InvalidRequest),
            ("/openai/v1/x%5cy", Code::InvalidRequest),
            ("/openai/v1/x%252fy", Code::InvalidRequest),
            ("/openai/v1/..;/admin", Code::InvalidRequest),
            ("/gemini/v1beta/models/gemini-2.5-pro%3AgenerateContent", Code::InvalidRequest),
            ("/openai/v1/models%3F/x", Code::InvalidRequest),
            ("/openai/v1/%c0%ae%c0%ae/admin", Code::InvalidRequest),
            ("/bedrock/model/a%2F..%2Fb/converse", Code::InvalidRequest),
            ("/bedrock/model/a%40evil.example/converse", Code::InvalidRequest),
        ];
        for (uri, code) in refused {
            let err = route(&uri.parse().unwrap()).unwrap_err();
            assert_eq!(err.code, code, "{uri}");
        }
        // Encoded unreserved characters are decoded: the normal form is what is sent.
        let route = route(&"/openai/v1/chat/%63ompletions".parse().unwrap()).unwrap();
        assert_eq!(route.upstream_path, "/v1/chat/completions");
    }
}
