//! Phase 1: the route. `/{provider}/{upstream path}`; the upstream path is checked for
//! tricks that could change where a request goes or what it means upstream.

use axum::http::Uri;
use byok_domain::ProviderId;
use byok_providers::{spec, ProviderSpec};

use super::{Code, Refusal};

/// A routed request.
#[derive(Debug, Clone)]
pub struct Route {
    /// The provider's wire facts.
    pub spec: &'static ProviderSpec,
    /// The path to send upstream (starts with `/`).
    pub upstream_path: String,
    /// The query string, if any.
    pub query: Option<String>,
}

/// Split `uri` into provider and upstream path. Refuses absolute request targets and
/// path tricks: empty segments (`//`), dot segments (`.`, `..`), `@`, backslashes and
/// percent-encoded separators or dots.
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
    check_path(upstream_path)?;
    Ok(Route { spec: spec(provider), upstream_path: upstream_path.to_owned(), query: uri.query().map(str::to_owned) })
}

fn check_path(path: &str) -> Result<(), Refusal> {
    let refuse = |what: &str| Err(Refusal::new(Code::InvalidRequest, format!("request path refused: {what}")));
    if path.contains('@') {
        return refuse("'@' is not allowed");
    }
    if path.contains('\\') {
        return refuse("backslashes are not allowed");
    }
    let lower = path.to_ascii_lowercase();
    for encoded in ["%2f", "%5c", "%2e", "%40", "%00", "%25"] {
        if lower.contains(encoded) {
            return refuse("percent-encoded separators, dots, '@', '%' or NUL are not allowed");
        }
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (index, segment) in segments.iter().enumerate() {
        if *segment == "." || *segment == ".." {
            return refuse("'.' and '..' segments are not allowed");
        }
        if segment.is_empty() && index + 1 != segments.len() {
            return refuse("empty segments ('//') are not allowed");
        }
    }
    Ok(())
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
        ];
        for (uri, provider, path, query) in ok {
            let route = route(&uri.parse().unwrap()).unwrap();
            assert_eq!(route.spec.id, provider);
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
        ];
        for (uri, code) in refused {
            let err = route(&uri.parse().unwrap()).unwrap_err();
            assert_eq!(err.code, code, "{uri}");
        }
    }
}
