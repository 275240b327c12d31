//! Which key a request presented, where, and the provider's answer when it is not accepted.

use axum::http::{HeaderMap, StatusCode};

use crate::errors;
use crate::record::Provider;
use crate::reply::Reply;
use crate::text::mask_key;
use crate::MockConfig;

/// How a request's key compares with the keys the mock accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyCheck {
    /// An accepted key in the provider's key header.
    Valid,
    /// No key in the provider's key header.
    Missing,
    /// Anthropic only: no `x-api-key`, but an `Authorization: Bearer` header, which this mock
    /// refuses so that a proxy injecting the wrong header is caught.
    BearerInsteadOfApiKey,
    /// A key the configuration does not accept.
    Wrong,
    /// Gemini only: a `key=` query parameter. Keys in URLs end up in logs; byok must never
    /// put one there, so the mock rejects the request whatever else it carries.
    KeyInUrl,
    /// Bedrock only: a SigV4 signature by an access key id the mock does not know (or
    /// with the wrong session token).
    UnknownKeyId,
    /// Bedrock only: a SigV4 signature that does not verify (wrong secret, altered
    /// request, malformed or expired).
    BadSignature,
}

/// The key a request presented and the verdict on it.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    pub(crate) presented: Option<String>,
    pub(crate) check: KeyCheck,
    /// Why a signature was refused (Bedrock), for the error message.
    pub(crate) detail: Option<String>,
}

impl Auth {
    pub(crate) fn is_valid(&self) -> bool {
        self.check == KeyCheck::Valid
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim).filter(|value| !value.is_empty())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let (scheme, token) = header(headers, "authorization")?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of a `key` query parameter, if there is one (`Some("")` for a bare `key`).
fn query_key(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == "key").then_some(value)
    })
}

fn verdict(presented: Option<&str>, accepted: &[String]) -> Auth {
    match presented {
        None => Auth { presented: None, check: KeyCheck::Missing, detail: None },
        Some(key) => Auth {
            presented: Some(key.to_owned()),
            check: if accepted.iter().any(|accepted| accepted == key) { KeyCheck::Valid } else { KeyCheck::Wrong },
            detail: None,
        },
    }
}

/// Finds the key `provider` expects and checks it against the configuration.
pub(crate) fn authenticate(provider: Provider, headers: &HeaderMap, query: Option<&str>, config: &MockConfig) -> Auth {
    match provider {
        Provider::OpenAi => verdict(bearer(headers), &config.openai_keys),
        Provider::AzureOpenAi => verdict(header(headers, "api-key"), &config.azure_keys),
        Provider::Anthropic => {
            let auth = verdict(header(headers, "x-api-key"), &config.anthropic_keys);
            if auth.check == KeyCheck::Missing && bearer(headers).is_some() {
                Auth { presented: None, check: KeyCheck::BearerInsteadOfApiKey, detail: None }
            } else {
                auth
            }
        }
        Provider::Gemini => {
            let from_header = header(headers, "x-goog-api-key");
            match query_key(query) {
                Some(in_url) => Auth {
                    presented: Some(from_header.unwrap_or(in_url).to_owned()),
                    check: KeyCheck::KeyInUrl,
                    detail: None,
                },
                None => verdict(from_header, &config.gemini_keys),
            }
        }
        // Bedrock requests are authenticated with their method, path and body
        // (`bedrock::authenticate`); nothing here says more.
        Provider::Bedrock | Provider::Unknown => Auth { presented: None, check: KeyCheck::Missing, detail: None },
    }
}

const OPENAI_MISSING_KEY: &str = "You didn't provide an API key. You need to provide your API key \
     in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as \
     the password field (with blank username) if you're accessing the API from your browser and \
     are prompted for a username and password. You can obtain an API key from \
     https://platform.openai.com/account/api-keys.";

/// The provider's error response for a key that is not accepted, or `None` for a valid key.
pub(crate) fn rejection(provider: Provider, auth: &Auth, config: &MockConfig) -> Option<Reply> {
    let check = auth.check;
    if check == KeyCheck::Valid {
        return None;
    }
    let presented = auth.presented.as_deref().unwrap_or_default();
    Some(match provider {
        Provider::Bedrock => crate::bedrock::rejection(check, auth.detail.as_deref()),
        Provider::OpenAi | Provider::Unknown => match check {
            KeyCheck::Wrong => {
                let quoted = if config.echo_full_key_in_401 { presented.to_owned() } else { mask_key(presented) };
                errors::openai(
                    StatusCode::UNAUTHORIZED,
                    &format!(
                        "Incorrect API key provided: {quoted}. You can find your API key at \
                         https://platform.openai.com/account/api-keys."
                    ),
                    "invalid_request_error",
                    None,
                    Some("invalid_api_key"),
                )
            }
            _ => errors::openai(StatusCode::UNAUTHORIZED, OPENAI_MISSING_KEY, "invalid_request_error", None, None),
        },
        Provider::AzureOpenAi => match check {
            KeyCheck::Wrong => errors::azure(
                StatusCode::UNAUTHORIZED,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure \
                 to provide a valid key for an active subscription and use a correct regional \
                 API endpoint for your resource.",
            ),
            _ => errors::azure(
                StatusCode::UNAUTHORIZED,
                "401",
                "Access denied due to missing subscription key. Make sure to include \
                 subscription key when making requests to an API.",
            ),
        },
        Provider::Anthropic => errors::anthropic(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            match check {
                KeyCheck::Wrong => "invalid x-api-key",
                KeyCheck::BearerInsteadOfApiKey => {
                    "x-api-key header is required (byok-mock-provider does not take Anthropic \
                     keys from Authorization: Bearer)"
                }
                _ => "x-api-key header is required",
            },
        ),
        Provider::Gemini => match check {
            KeyCheck::Wrong => errors::gemini_invalid_key(),
            KeyCheck::KeyInUrl => errors::gemini(
                StatusCode::BAD_REQUEST,
                "byok-mock-provider: API keys in the URL (`key=` query parameter) are not \
                 accepted; send the key in the x-goog-api-key header.",
                "INVALID_ARGUMENT",
            ),
            _ => errors::gemini(
                StatusCode::FORBIDDEN,
                "Method doesn't allow unregistered callers (callers without established \
                 identity). Please use API Key or other form of API consumer identity to call \
                 this API.",
                "PERMISSION_DENIED",
            ),
        },
    })
}
