//! Phase 7: build the outbound request. The upstream origin comes from the credential's
//! admin-set `base_url`, the operator's configuration or the registry — never from the
//! request. Every client credential header, every `x-byok-*` header, every hop-by-hop
//! header and every routing header (`X-Forwarded-Host`, `X-Original-URL`, method
//! overrides, …) is removed; the path sent is exactly the normal form `classify` read;
//! the real key is injected, marked sensitive.
//!
//! Bedrock: the upstream is the region's runtime host (`bedrock-runtime.{region}.amazonaws.com`,
//! the region from the credential's secret) unless the credential's `base_url` or the
//! operator says otherwise; every `x-amz-*` header the client sent (a date, a session
//! token, a payload hash, a signature) is removed too. A Bedrock API key goes in as
//! `Authorization: Bearer`; an AWS access key signs the final request (method, path as
//! sent, query, headers, the body's SHA-256) with SigV4 (`aws-sigv4`, service `bedrock`).

use axum::http::header::{HeaderName, HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST};
use axum::http::{HeaderMap, Method, Request, Uri};
use std::time::SystemTime;

use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use byok_crypto::{BedrockAuth, BedrockKey, ProviderSecret};
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
/// else the operator's override, else the registry's default. `None` for Bedrock when
/// none of them is set: the region in the credential's secret names the host, once it is
/// decrypted ([`build_upstream_request`]).
pub(crate) fn upstream_base<'a>(
    credential: &'a Credential,
    provider: ProviderId,
    default: Option<&'static str>,
    config: &'a ProxyConfig,
) -> Result<Option<&'a str>, Refusal> {
    match base_for(credential.base_url.as_deref(), provider, default, config) {
        Ok(base) => Ok(Some(base)),
        Err(_) if provider == ProviderId::Bedrock => Ok(None),
        Err(refusal) => Err(refusal),
    }
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

/// Every secret text of `secret` for `api`, which the answer must never show: the key, or
/// for Bedrock the whole JSON and each of its keys.
pub(crate) fn secret_texts<'s>(api: Api, secret: &'s ProviderSecret, bedrock: Option<&'s BedrockKey>) -> Vec<&'s [u8]> {
    let mut texts = vec![secret.expose().as_bytes()];
    if api == Api::Bedrock {
        texts.extend(bedrock.into_iter().flat_map(BedrockKey::secret_texts).map(str::as_bytes));
    }
    texts
}

/// Read a stored Bedrock secret (validated when it was stored).
pub(crate) fn bedrock_key(secret: &ProviderSecret) -> Result<BedrockKey, Refusal> {
    BedrockKey::parse(secret)
        .map_err(|e| Refusal::new(Code::Internal, format!("the stored bedrock credential cannot be used: {e}")))
}

/// A credential's key as the wire takes it: the header that carries it (marked sensitive)
/// or, for a Bedrock access key, the key that signs. Built once per cached DEK
/// (`cache::CachedDek`) instead of per call; a header value's bytes are zeroized when its
/// last holder (the cache entry, a request in flight) drops it.
pub(crate) struct WireKey {
    /// The injection it was built for (a credential's provider decides it).
    injection: Injection,
    /// The header carrying the key: `Authorization: Bearer …`, `x-api-key`, …
    header: Option<(HeaderName, HeaderValue)>,
    /// A Bedrock secret: its region names the host; an access key signs each request.
    bedrock: Option<BedrockKey>,
}

impl std::fmt::Debug for WireKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireKey")
            .field("injection", &self.injection)
            .field("header", &self.header.as_ref().map(|(name, _)| name))
            .field("bedrock", &self.bedrock)
            .finish()
    }
}

impl WireKey {
    /// `secret` ready for `injection`. Fails closed (`internal`) on a stored secret the
    /// injection cannot use; the refusal never holds the secret.
    pub(crate) fn new(injection: Injection, secret: &ProviderSecret) -> Result<Self, Refusal> {
        let bedrock = match injection {
            Injection::Signer => Some(bedrock_key(secret)?),
            _ => None,
        };
        let header = match (injection, &bedrock) {
            (Injection::Bearer, _) => Some((AUTHORIZATION, bearer(secret.expose())?)),
            (Injection::Header(name), _) => Some((HeaderName::from_static(name), sensitive(secret.expose())?)),
            (Injection::Signer, Some(BedrockKey { auth: BedrockAuth::ApiKey(key), .. })) => {
                Some((AUTHORIZATION, bearer(secrecy::ExposeSecret::expose_secret(key))?))
            }
            (Injection::Signer, _) => None,
        };
        Ok(Self { injection, header, bedrock })
    }

    /// The Bedrock secret, if this is one.
    pub(crate) fn bedrock(&self) -> Option<&BedrockKey> {
        self.bedrock.as_ref()
    }
}

/// `Bearer {key}` as a sensitive header value.
fn bearer(key: &str) -> Result<HeaderValue, Refusal> {
    let mut value = zeroize::Zeroizing::new(Vec::with_capacity(7 + key.len()));
    value.extend_from_slice(b"Bearer ");
    value.extend_from_slice(key.as_bytes());
    header_value(value)
}

/// `key` as a sensitive header value.
fn sensitive(key: &str) -> Result<HeaderValue, Refusal> {
    header_value(zeroize::Zeroizing::new(key.as_bytes().to_vec()))
}

/// A sensitive header value that owns `bytes`: they are zeroized when the last copy of
/// the value is dropped (its `Bytes` shares them, never copies them).
fn header_value(bytes: zeroize::Zeroizing<Vec<u8>>) -> Result<HeaderValue, Refusal> {
    let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(ZeroizedBytes(bytes)))
        .map_err(|_| Refusal::new(Code::Internal, "the stored credential is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The owner of a header value's bytes, zeroized on drop.
struct ZeroizedBytes(zeroize::Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The outbound request for `route`, carrying `key`. `base` is the upstream origin;
/// `None` only for Bedrock, whose secret's region names it.
pub(crate) fn build_upstream_request(
    base: Option<&str>,
    route: &Route,
    method: &Method,
    client_headers: &HeaderMap,
    body: Bytes,
    key: &WireKey,
) -> Result<Request<Full<Bytes>>, Refusal> {
    if key.injection != route.spec.injection {
        return Err(Refusal::new(Code::Internal, "the credential's key was prepared for another provider"));
    }
    let bedrock = key.bedrock.as_ref();
    let region_origin;
    let base = match (base, bedrock) {
        (Some(base), _) => base,
        (None, Some(key)) => {
            region_origin = key.runtime_origin();
            region_origin.as_str()
        }
        (None, None) => {
            return Err(Refusal::new(Code::NoCredential, format!("provider {} has no upstream", route.spec.id)))
        }
    };
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
            || (bedrock.is_some() && lower.starts_with("x-amz-"))
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    // Usage is read and echoed keys are redacted from the response: it must not be compressed.
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    match (&key.header, bedrock) {
        (Some((name, value)), _) => {
            headers.insert(name.clone(), value.clone());
        }
        (None, Some(signing)) => sign_sigv4(method, &uri, &mut headers, &body, signing, SystemTime::now())?,
        (None, None) => return Err(Refusal::new(Code::Internal, "a signed provider without its key")),
    }
    request_with(method, uri, headers, body)
}

fn request_with(method: &Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Result<Request<Full<Bytes>>, Refusal> {
    let mut request = Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(Full::new(body))
        .map_err(|e| Refusal::new(Code::Internal, format!("cannot build the upstream request: {e}")))?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Sign `request` — as it will be sent: method, URI (the path exactly as sent; SigV4
/// encodes its segments once more, as AWS does for every service but S3), query, every
/// header, the body's SHA-256 — with the access key of `key`, for service `bedrock` in the
/// key's region at `time`. Adds `x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` (with a session token) and `authorization`; the last two are
/// marked sensitive.
pub(crate) fn sign_sigv4(
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    body: &[u8],
    key: &BedrockKey,
    time: SystemTime,
) -> Result<(), Refusal> {
    let BedrockAuth::AccessKey { access_key_id, secret_access_key, session_token } = &key.auth else {
        return Err(Refusal::new(Code::Internal, "only an access key signs"));
    };
    let not_text = |_| {
        Refusal::new(Code::InvalidRequest, "a request header value is not text; a signed request needs text values")
    };
    let signed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| value.to_str().map(|value| (name.as_str(), value)))
        .collect::<Result<_, _>>()
        .map_err(not_text)?;
    let identity = aws_credential_types::Credentials::new(
        access_key_id.as_str(),
        secrecy::ExposeSecret::expose_secret(secret_access_key),
        session_token.as_ref().map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned()),
        None,
        "byok",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&key.region)
        .name("bedrock")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| Refusal::failed(Code::Internal, "cannot sign the request", e))?
        .into();
    let uri = uri.to_string();
    let signable = SignableRequest::new(method.as_str(), &uri, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| Refusal::failed(Code::InvalidRequest, "the request cannot be signed", e))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| Refusal::failed(Code::InvalidRequest, "the request cannot be signed", e))?
        .into_parts();
    let (added, _query) = instructions.into_parts();
    for header in added {
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| Refusal::new(Code::Internal, "the signature is not a valid header value"))?;
        value.set_sensitive(header.sensitive() || header.name() == "authorization");
        headers.insert(header.name(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::route::route;

    fn secret(json: serde_json::Value) -> ProviderSecret {
        ProviderSecret::new(json.to_string()).unwrap()
    }

    #[test]
    fn bedrock_goes_to_its_region_signed_and_without_the_clients_credentials() {
        let route = route(&"/bedrock/model/anthropic.claude-3-haiku-20240307-v1:0/converse".parse().unwrap()).unwrap();
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer byok_workload"),
            ("x-amz-date", "20200101T000000Z"),
            ("x-amz-security-token", "client"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-amz-signature", "00"),
            ("content-type", "application/json"),
            ("x-amzn-bedrock-trace", "ENABLED"),
        ] {
            client.insert(name, value.parse().unwrap());
        }
        let body = Bytes::from_static(b"{\"messages\":[]}");
        let access = secret(serde_json::json!({
            "access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "session_token": "FwoGZXIvYXdzEXAMPLETOKEN",
            "region": "eu-west-3",
        }));
        let request =
            build_upstream_request(None, &route, &Method::POST, &client, body.clone(), &wire(&access)).unwrap();
        assert_eq!(
            request.uri().to_string(),
            "https://bedrock-runtime.eu-west-3.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        let headers = request.headers();
        let authorization = headers["authorization"].to_str().unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/"), "{authorization}");
        assert!(authorization.contains("/eu-west-3/bedrock/aws4_request"), "{authorization}");
        assert!(headers["authorization"].is_sensitive() && headers["x-amz-security-token"].is_sensitive());
        assert_eq!(headers["x-amz-security-token"], "FwoGZXIvYXdzEXAMPLETOKEN");
        assert_ne!(headers["x-amz-date"], "20200101T000000Z");
        assert_eq!(headers["x-amz-content-sha256"], sha256_hex(&body).as_str());
        assert!(!headers.contains_key("x-amz-signature"));
        assert_eq!(headers["x-amzn-bedrock-trace"], "ENABLED");

        // The operator's (or the credential's) base wins over the region.
        let request = build_upstream_request(
            Some("http://127.0.0.1:9"),
            &route,
            &Method::POST,
            &client,
            body.clone(),
            &wire(&access),
        )
        .unwrap();
        assert!(request.uri().to_string().starts_with("http://127.0.0.1:9/model/"));

        // A Bedrock API key is a bearer token, marked sensitive; nothing is signed.
        let api = secret(serde_json::json!({"api_key": "ABSKQmVkcm9ja0FQSUtleS1leGFtcGxl", "region": "us-east-1"}));
        let request = build_upstream_request(None, &route, &Method::POST, &client, body, &wire(&api)).unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer ABSKQmVkcm9ja0FQSUtleS1leGFtcGxl");
        assert!(request.headers()["authorization"].is_sensitive());
        assert!(!request.headers().contains_key("x-amz-date"));
        assert!(request.uri().to_string().starts_with("https://bedrock-runtime.us-east-1.amazonaws.com/"));

        // A stored secret that is no Bedrock secret fails closed.
        let bad = ProviderSecret::new("sk-not-a-bedrock-secret-000".to_owned()).unwrap();
        let refusal = WireKey::new(route.spec.injection, &bad).unwrap_err();
        assert_eq!(refusal.code, Code::Internal);
        assert!(!refusal.message.contains("sk-not"));
    }

    #[test]
    fn the_wire_key_is_the_providers_header_marked_sensitive_and_never_printed() {
        let secret = ProviderSecret::new("sk-wire-key-0123456789abcdef".to_owned()).unwrap();
        let bearer = WireKey::new(Injection::Bearer, &secret).unwrap();
        let header = WireKey::new(Injection::Header("x-api-key"), &secret).unwrap();
        let route = route(&"/openai/v1/chat/completions".parse().unwrap()).unwrap();
        let build = |key: &WireKey| {
            build_upstream_request(
                Some("http://127.0.0.1:9"),
                &route,
                &Method::POST,
                &HeaderMap::new(),
                Bytes::new(),
                key,
            )
        };
        let request = build(&bearer).unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer sk-wire-key-0123456789abcdef");
        assert!(request.headers()["authorization"].is_sensitive());
        // The same prepared value serves every call.
        let again = build(&bearer).unwrap();
        assert_eq!(again.headers()["authorization"], request.headers()["authorization"]);
        // A key prepared for another provider's injection is refused, not sent.
        let refusal = build(&header).unwrap_err();
        assert_eq!(refusal.code, Code::Internal);
        for key in [&bearer, &header] {
            let printed = format!("{key:?} {:?}", key.header.as_ref().map(|(_, value)| value));
            assert!(!printed.contains("sk-wire"), "{printed}");
        }
    }

    fn wire(secret: &ProviderSecret) -> WireKey {
        WireKey::new(Injection::Signer, secret).unwrap()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }
}
