//! The providers byok knows. Wire details (upstream hosts, how a key is injected) belong
//! to the data plane's registry; here is only the closed set of ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A provider id as it appears in routes (`/openai/…`) and in a credential's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
// Exhaustive on purpose: a new provider must be a compile error wherever providers are
// told apart (its wire facts, its injection), never a silent fallback.
pub enum ProviderId {
    /// OpenAI.
    Openai,
    /// Anthropic.
    Anthropic,
    /// Google Gemini (Generative Language API).
    Gemini,
    /// Azure OpenAI (the credential's `base_url` names the resource).
    AzureOpenai,
    /// Mistral (OpenAI-compatible).
    Mistral,
    /// Groq (OpenAI-compatible).
    Groq,
    /// OpenRouter (OpenAI-compatible).
    Openrouter,
    /// Together (OpenAI-compatible).
    Together,
    /// DeepSeek (OpenAI-compatible).
    Deepseek,
    /// xAI (OpenAI-compatible).
    Xai,
    /// AWS Bedrock (SigV4-signed).
    Bedrock,
}

impl ProviderId {
    /// Every provider, in a stable order.
    pub const ALL: [ProviderId; 11] = [
        ProviderId::Openai,
        ProviderId::Anthropic,
        ProviderId::Gemini,
        ProviderId::AzureOpenai,
        ProviderId::Mistral,
        ProviderId::Groq,
        ProviderId::Openrouter,
        ProviderId::Together,
        ProviderId::Deepseek,
        ProviderId::Xai,
        ProviderId::Bedrock,
    ];

    /// The id as text (`azure-openai`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderId::Openai => "openai",
            ProviderId::Anthropic => "anthropic",
            ProviderId::Gemini => "gemini",
            ProviderId::AzureOpenai => "azure-openai",
            ProviderId::Mistral => "mistral",
            ProviderId::Groq => "groq",
            ProviderId::Openrouter => "openrouter",
            ProviderId::Together => "together",
            ProviderId::Deepseek => "deepseek",
            ProviderId::Xai => "xai",
            ProviderId::Bedrock => "bedrock",
        }
    }

    /// Whether a credential for this provider must carry an admin-set `base_url`
    /// (there is no public default host).
    pub fn requires_base_url(&self) -> bool {
        matches!(self, ProviderId::AzureOpenai)
    }
}

/// A provider id that byok does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider '{0}'; known providers: openai, anthropic, gemini, azure-openai, mistral, groq, openrouter, together, deepseek, xai, bedrock")]
pub struct UnknownProvider(pub String);

impl FromStr for ProviderId {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderId::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_serde_agree() {
        for p in ProviderId::ALL {
            assert_eq!(p.as_str().parse::<ProviderId>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.as_str()));
        }
        let err = "openia".parse::<ProviderId>().unwrap_err();
        assert!(err.to_string().contains("unknown provider 'openia'"));
    }
}
