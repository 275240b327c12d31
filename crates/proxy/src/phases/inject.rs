//! Phase 7: build the outbound request. The upstream origin comes from the credential's
//! admin-set `base_url`, the operator's configuration or the registry — never from the
//! request. Every client credential header, every `x-byok-*` header, every hop-by-hop
//! header and every routing header (`X-Forwarded-Host`, `X-Original-URL`, method
//! overrides, …) is removed; the path sent is exactly the normal form `classify` read;
//! the real key is injected, marked sensitive.

use axum::http::header::{HeaderName, HeaderValue, ACCEPT_ENCODING, CONNECTION, CONTENT_LENGTH, HOST};
use axum::http::{HeaderMap, Method, Request, Uri};
use byok_crypto::ProviderSecret;
use byok_domain::{Credential, ProviderId};
use byok_providers::{Api, Injection, CREDENTIAL_HEADERS};
use bytes::Bytes;
use http_body_util::Full;

use super::route::Route;
use super::{Code, Refusal};
use crate::config::ProxyConfig;

/// Hop-by-hop headers (RFC 9110 §7.6.1) and others a proxy must not forward.
const HOP_BY_HOP: [&str; 9] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect", "host"];

/// Headers some servers and proxies let choose the route, host, scheme or method in place
/// of the request line: the call must mean upstream what byok classified.
const ROUTING_HEADERS: [&str; 10] = [
    "forwarded",
    "x-rewrite-url",
    "x-real-ip",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-proxy-url",
    "x-http-destinationurl",
    "front-end-https",
];

/// Prefixes of routing header families (`X-Forwarded-Host`, `X-Original-URL`,
/// `X-Envoy-Original-Path`, …).
const ROUTING_HEADER_PREFIXES: [&str; 3] = ["x-forwarded-", "x-original-", "x-envoy-"];

/// Whether `name` (lower case) is a routing header.
fn is_routing_header(name: &str) -> bool {
    ROUTING_HEADERS.contains(&name) || ROUTING_HEADER_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Query parameters that carry a Google credential: byok never sends a key in a URL.
const GEMINI_KEY_PARAMETERS: [&str; 2] = ["key", "access_token"];

/// Where this call goes: the operator's override when it says it overrides credentials
/// (`[upstreams.<id>] override_credentials = true`), else the credential's `base_url`,
/// else the operator's override, else the registry's default.
pub(crate) fn upstream_base<'a>(
    credential: &'a Credential,
    provider: ProviderId,
    default: Option<&'static str>,
    config: &'a ProxyConfig,
) -> Result<&'a str, Refusal> {
    base_for(credential.base_url.as_deref(), provider, default, config)
}

/// [`upstream_base`] for a credential's `base_url` (also one not stored yet).
pub(crate) fn base_for<'a>(
    base_url: Option<&'a str>,
    provider: ProviderId,
    default: Option<&'static str>,
    config: &'a ProxyConfig,
) -> Result<&'a str, Refusal> {
    let operator = config.upstreams.get(&provider);
    if let Some(base) = operator.filter(|base| base.overrides_credentials()) {
        return Ok(base.as_str());
    }
    if let Some(base) = base_url {
        return Ok(base);
    }
    if let Some(base) = operator {
        return Ok(base.as_str());
    }
    default.ok_or_else(|| {
        Refusal::new(
            Code::NoCredential,
            format!("provider {provider} has no default upstream: the credential needs a base_url, or the operator an [upstreams.{provider}] entry"),
        )
    })
}

/// Whether a response or request header must not cross the proxy.
pub(crate) fn is_hop_by_hop(name: &HeaderName, connection_listed: &[String]) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name) || connection_listed.iter().any(|listed| listed == name)
}

/// Header names listed in a `Connection` header (also hop-by-hop).
pub(crate) fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn upstream_query(route: &Route) -> Option<String> {
    let query = route.query.as_deref()?;
    if route.spec.api != Api::Gemini {
        return Some(query.to_owned());
    }
    // A key in a URL lands in logs: byok never sends one, and drops a client's, by the name
    // Google reads once it has decoded it (`%6Bey` is `key`). A name that does not decode
    // was refused by `classify`; it is dropped here too.
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| match byok_providers::query_parameter_names(pair).next().flatten() {
            Some(name) => !GEMINI_KEY_PARAMETERS.iter().any(|key| name.eq_ignore_ascii_case(key)),
            None => false,
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The outbound request for `route`, carrying `secret`.
pub(crate) fn build_upstream_request(
    base: &str,
    route: &Route,
    method: &Method,
    client_headers: &HeaderMap,
    body: Bytes,
    secret: &ProviderSecret,
) -> Result<Request<Full<Bytes>>, Refusal> {
    let path = route.path.as_str();
    let mut target = String::with_capacity(base.len() + path.len() + 64);
    target.push_str(base);
    target.push_str(path);
    if let Some(query) = upstream_query(route) {
        target.push('?');
        target.push_str(&query);
    }
    let uri: Uri =
        target.parse().map_err(|e| Refusal::new(Code::InvalidRequest, format!("cannot form the upstream URL: {e}")))?;

    let listed = connection_listed(client_headers);
    let mut headers = HeaderMap::with_capacity(client_headers.len() + 2);
    for (name, value) in client_headers {
        let lower = name.as_str();
        if is_hop_by_hop(name, &listed)
            || name == CONTENT_LENGTH
            || name == HOST
            || name == ACCEPT_ENCODING
            || CREDENTIAL_HEADERS.contains(&lower)
            || lower.starts_with("x-byok-")
            || is_routing_header(lower)
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    // Usage is read and echoed keys are redacted from the response: it must not be compressed.
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    let (name, value) = match route.spec.injection {
        Injection::Bearer => (HeaderName::from_static("authorization"), format!("Bearer {}", secret.expose())),
        Injection::Header(name) => (HeaderName::from_static(name), secret.expose().to_owned()),
        Injection::Signer => {
            return Err(Refusal::new(Code::NoCredential, "request signing (AWS SigV4) is not supported yet"));
        }
    };
    let value = zeroize::Zeroizing::new(value);
    let mut value = HeaderValue::from_bytes(value.as_bytes())
        .map_err(|_| Refusal::new(Code::Internal, "the stored credential is not a valid header value"))?;
    value.set_sensitive(true);
    headers.insert(name, value);

    let mut request = Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(Full::new(body))
        .map_err(|e| Refusal::new(Code::Internal, format!("cannot build the upstream request: {e}")))?;
    *request.headers_mut() = headers;
    Ok(request)
}
