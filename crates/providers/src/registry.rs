//! The provider registry: one entry per provider id.

use byok_domain::ProviderId;

/// Which API dialect a provider speaks (paths, errors, usage fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI and the OpenAI-compatible providers.
    OpenAi,
    /// Azure OpenAI (deployments in the path; errors as OpenAI).
    AzureOpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini (Generative Language API).
    Gemini,
    /// AWS Bedrock runtime.
    Bedrock,
}

/// How the real key goes into the outbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// A header carrying the key as is (`x-api-key`, `api-key`, `x-goog-api-key`).
    Header(&'static str),
    /// The request is signed (AWS SigV4); the key is a signing credential.
    Signer,
}

/// One provider's wire facts.
#[derive(Debug, Clone, Copy)]
pub struct ProviderSpec {
    /// The id used in routes (`/openai/…`).
    pub id: ProviderId,
    /// The public origin requests go to, unless the operator or the credential says
    /// otherwise. `None`: there is no public default (the credential names it).
    pub default_upstream: Option<&'static str>,
    /// How the key is injected.
    pub injection: Injection,
    /// Headers whose value may be the workload token (lower-case names;
    /// `authorization` means `Bearer <token>`).
    pub token_headers: &'static [&'static str],
    /// The dialect.
    pub api: Api,
}

/// Every header a client might put a credential in. All are removed from a request
/// before the real key is injected.
pub const CREDENTIAL_HEADERS: [&str; 5] =
    ["authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization"];

const OPENAI_TOKEN_HEADERS: &[&str] = &["authorization"];

const REGISTRY: [ProviderSpec; 11] = [
    ProviderSpec {
        id: ProviderId::Openai,
        default_upstream: Some("https://api.openai.com"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
    },
    ProviderSpec {
        id: ProviderId::Anthropic,
        default_upstream: Some("https://api.anthropic.com"),
        injection: Injection::Header("x-api-key"),
        // The current Python SDK may send its api_key as a bearer token.
        token_headers: &["x-api-key", "authorization"],
        api: Api::Anthropic,
    },
    ProviderSpec {
        id: ProviderId::Gemini,
        default_upstream: Some("https://generativelanguage.googleapis.com"),
        injection: Injection::Header("x-goog-api-key"),
        token_headers: &["x-goog-api-key", "authorization"],
        api: Api::Gemini,
    },
    ProviderSpec {
        id: ProviderId::AzureOpenai,
        default_upstream: None,
        injection: Injection::Header("api-key"),
        token_headers: &["api-key", "authorization"],
        api: Api::AzureOpenAi,
    },
    ProviderSpec {
        id: ProviderId::Mistral,
        default_upstream: Some("https://api.mistral.ai"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
    },
    ProviderSpec {
        id: ProviderId::Groq,
        default_upstream: Some("https://api.groq.com"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
    },
    ProviderSpec {
        id: ProviderId::Openrouter,
        default_upstream: Some("https://openrouter.ai"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
    },
    ProviderSpec {
        id: ProviderId::Together,
        default_upstream: Some("https://api.together.xyz"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
    },
    ProviderSpec {
        id: ProviderId::Deepseek,
        default_upstream: Some("https://api.deepseek.com"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
    },
    ProviderSpec {
        id: ProviderId::Xai,
        default_upstream: Some("https://api.x.ai"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
    },
    ProviderSpec {
        id: ProviderId::Bedrock,
        default_upstream: None,
        injection: Injection::Signer,
        token_headers: &["authorization"],
        api: Api::Bedrock,
    },
];

/// The wire facts of `id`.
pub fn spec(id: ProviderId) -> &'static ProviderSpec {
    // REGISTRY lists every ProviderId in ProviderId::ALL order; the test below keeps it so.
    REGISTRY.iter().find(|s| s.id == id).unwrap_or(&REGISTRY[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_has_exactly_one_entry() {
        for id in ProviderId::ALL {
            assert_eq!(REGISTRY.iter().filter(|s| s.id == id).count(), 1, "{id}");
            assert_eq!(spec(id).id, id);
        }
    }

    #[test]
    fn defaults_are_https_and_never_carry_a_path_or_key() {
        for s in REGISTRY {
            if let Some(url) = s.default_upstream {
                assert!(url.starts_with("https://"), "{url}");
                assert_eq!(url.matches('/').count(), 2, "{url} must be an origin");
            }
            for header in s.token_headers {
                assert!(CREDENTIAL_HEADERS.contains(header), "{header} must be stripped too");
            }
        }
    }
}
