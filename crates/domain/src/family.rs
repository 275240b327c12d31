//! The model-family registry: data, not code.
//!
//! A family is a name plus glob patterns over model ids (`*` matches any run of
//! characters). A model belongs to the family of the most specific matching pattern:
//! the one with the most literal characters; an exact pattern beats a glob of the same
//! length; remaining ties go to the alphabetically first family, so the answer never
//! depends on insertion order. Operators add or replace families in configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One pattern of a family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FamilyPattern(String);

impl FamilyPattern {
    /// A pattern; `*` is the only wildcard.
    pub fn new(pattern: impl Into<String>) -> Self {
        Self(pattern.into())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn literal_len(&self) -> usize {
        self.0.chars().filter(|c| *c != '*').count()
    }

    fn is_exact(&self) -> bool {
        !self.0.contains('*')
    }

    /// Whether `model` matches this pattern.
    pub fn matches(&self, model: &str) -> bool {
        glob_match(self.0.as_bytes(), model.as_bytes())
    }
}

/// `*`-only glob match, iterative with single backtrack point (linear in practice).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|c| *c == b'*')
}

/// Family name → patterns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelFamilyRegistry {
    families: BTreeMap<String, Vec<FamilyPattern>>,
}

/// The seed families of the product contract.
const SEED: &[(&str, &[&str])] = &[
    ("gpt-4o", &["gpt-4o", "gpt-4o-2024-*", "chatgpt-4o-latest"]),
    ("gpt-4o-mini", &["gpt-4o-mini", "gpt-4o-mini-*"]),
    ("gpt-4.1", &["gpt-4.1", "gpt-4.1-*"]),
    ("gpt-4.1-mini", &["gpt-4.1-mini*"]),
    ("gpt-4.1-nano", &["gpt-4.1-nano*"]),
    ("gpt-5", &["gpt-5", "gpt-5-*"]),
    ("gpt-5-mini", &["gpt-5-mini*"]),
    ("gpt-5-nano", &["gpt-5-nano*"]),
    ("o-series", &["o1*", "o3*", "o4-mini*"]),
    ("text-embedding-3", &["text-embedding-3-small", "text-embedding-3-large"]),
    // Claude on Bedrock: `anthropic.claude-…` model ids, `us.anthropic.claude-…`
    // inference profiles and ARNs ending in either (`…:inference-profile/us.anthropic.…`,
    // `…::foundation-model/anthropic.…`).
    (
        "claude-opus",
        &[
            "claude-opus-*",
            "claude-3-opus-*",
            "anthropic.claude-opus-*",
            "anthropic.claude-3-opus-*",
            "*.anthropic.claude-opus-*",
            "*.anthropic.claude-3-opus-*",
            "*/anthropic.claude-opus-*",
            "*/anthropic.claude-3-opus-*",
        ],
    ),
    (
        "claude-sonnet",
        &[
            "claude-sonnet-*",
            "claude-3-5-sonnet-*",
            "claude-3-7-sonnet-*",
            "anthropic.claude-sonnet-*",
            "anthropic.claude-3-5-sonnet-*",
            "anthropic.claude-3-7-sonnet-*",
            "anthropic.claude-3-sonnet-*",
            "*.anthropic.claude-sonnet-*",
            "*.anthropic.claude-3-5-sonnet-*",
            "*.anthropic.claude-3-7-sonnet-*",
            "*.anthropic.claude-3-sonnet-*",
            "*/anthropic.claude-sonnet-*",
            "*/anthropic.claude-3-5-sonnet-*",
            "*/anthropic.claude-3-7-sonnet-*",
            "*/anthropic.claude-3-sonnet-*",
        ],
    ),
    (
        "claude-haiku",
        &[
            "claude-haiku-*",
            "claude-3-haiku-*",
            "claude-3-5-haiku-*",
            "anthropic.claude-haiku-*",
            "anthropic.claude-3-haiku-*",
            "anthropic.claude-3-5-haiku-*",
            "*.anthropic.claude-haiku-*",
            "*.anthropic.claude-3-haiku-*",
            "*.anthropic.claude-3-5-haiku-*",
            "*/anthropic.claude-haiku-*",
            "*/anthropic.claude-3-haiku-*",
            "*/anthropic.claude-3-5-haiku-*",
        ],
    ),
    ("gemini-pro", &["gemini-*-pro*"]),
    ("gemini-flash", &["gemini-*-flash*"]),
    // Bedrock's other model providers (model ids, inference profiles, ARNs).
    ("llama", &["meta.llama*", "*.meta.llama*", "*/meta.llama*"]),
    ("nova", &["amazon.nova-*", "*.amazon.nova-*", "*/amazon.nova-*"]),
    ("mistral", &["mistral.*", "*.mistral.*", "*/mistral.*"]),
];

impl ModelFamilyRegistry {
    /// The seed families from the product contract.
    pub fn seeded() -> Self {
        let mut registry = Self::default();
        for (family, patterns) in SEED {
            registry.set_family(family, patterns.iter().map(|p| FamilyPattern::new(*p)).collect());
        }
        registry
    }

    /// Add a family or replace its patterns (operator configuration).
    pub fn set_family(&mut self, family: &str, patterns: Vec<FamilyPattern>) {
        self.families.insert(family.to_owned(), patterns);
    }

    /// Whether `family` is a known family name.
    pub fn contains(&self, family: &str) -> bool {
        self.families.contains_key(family)
    }

    /// Known family names, sorted.
    pub fn family_names(&self) -> impl Iterator<Item = &str> {
        self.families.keys().map(String::as_str)
    }

    /// The family of `model`, if any pattern matches.
    pub fn family_of(&self, model: &str) -> Option<&str> {
        let mut best: Option<(&str, (usize, bool))> = None;
        for (family, patterns) in &self.families {
            for pattern in patterns.iter().filter(|p| p.matches(model)) {
                let rank = (pattern.literal_len(), pattern.is_exact());
                // BTreeMap iterates alphabetically: a strictly better rank is needed to
                // displace an earlier family, which makes ties deterministic.
                if best.is_none_or(|(_, r)| rank > r) {
                    best = Some((family.as_str(), rank));
                }
            }
        }
        best.map(|(family, _)| family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_table_maps_models_to_families() {
        let registry = ModelFamilyRegistry::seeded();
        let table = [
            ("gpt-4o", Some("gpt-4o")),
            ("gpt-4o-2024-08-06", Some("gpt-4o")),
            ("chatgpt-4o-latest", Some("gpt-4o")),
            ("gpt-4o-mini", Some("gpt-4o-mini")),
            ("gpt-4o-mini-2024-07-18", Some("gpt-4o-mini")),
            ("gpt-4.1", Some("gpt-4.1")),
            ("gpt-4.1-2025-04-14", Some("gpt-4.1")),
            ("gpt-4.1-mini", Some("gpt-4.1-mini")),
            ("gpt-4.1-mini-2025-04-14", Some("gpt-4.1-mini")),
            ("gpt-4.1-nano", Some("gpt-4.1-nano")),
            ("gpt-5", Some("gpt-5")),
            ("gpt-5-mini", Some("gpt-5-mini")),
            ("gpt-5-nano-2025-08-07", Some("gpt-5-nano")),
            ("gpt-5-2025-08-07", Some("gpt-5")),
            ("o1", Some("o-series")),
            ("o3-mini", Some("o-series")),
            ("o4-mini-2025-04-16", Some("o-series")),
            ("text-embedding-3-small", Some("text-embedding-3")),
            ("text-embedding-ada-002", None),
            ("claude-sonnet-4-5-20250929", Some("claude-sonnet")),
            ("claude-3-7-sonnet-20250219", Some("claude-sonnet")),
            ("claude-opus-4-1", Some("claude-opus")),
            ("claude-3-5-haiku-latest", Some("claude-haiku")),
            ("gemini-2.5-pro", Some("gemini-pro")),
            ("gemini-2.0-flash-lite", Some("gemini-flash")),
            ("anthropic.claude-sonnet-4-5-20250929-v1:0", Some("claude-sonnet")),
            ("us.anthropic.claude-3-5-haiku-20241022-v1:0", Some("claude-haiku")),
            ("anthropic.claude-3-opus-20240229-v1:0", Some("claude-opus")),
            (
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-4-1-20250805-v1:0",
                Some("claude-opus"),
            ),
            (
                "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
                Some("claude-haiku"),
            ),
            ("meta.llama3-3-70b-instruct-v1:0", Some("llama")),
            ("us.meta.llama4-scout-17b-instruct-v1:0", Some("llama")),
            ("amazon.nova-pro-v1:0", Some("nova")),
            ("eu.amazon.nova-lite-v1:0", Some("nova")),
            ("mistral.mistral-large-2407-v1:0", Some("mistral")),
            ("amazon.titan-text-express-v1", None),
            ("my-finetune", None),
            ("", None),
        ];
        for (model, family) in table {
            assert_eq!(registry.family_of(model), family, "model {model}");
        }
    }

    #[test]
    fn operator_families_extend_and_override() {
        let mut registry = ModelFamilyRegistry::seeded();
        registry.set_family("llama", vec![FamilyPattern::new("llama-*"), FamilyPattern::new("meta-llama/*")]);
        registry.set_family("gpt-4o", vec![FamilyPattern::new("gpt-4o")]);
        assert_eq!(registry.family_of("meta-llama/Llama-3-70b"), Some("llama"));
        assert_eq!(registry.family_of("gpt-4o-2024-08-06"), None);
        assert!(registry.contains("llama"));
    }

    #[test]
    fn glob_edge_cases() {
        let cases = [
            ("*", "", true),
            ("a*", "a", true),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "axxbc", false),
            ("*b*", "abc", true),
            ("gemini-*-pro*", "gemini-1.5-pro-002", true),
            ("gemini-*-pro*", "gemini-pro", false),
            ("abc", "abcd", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(FamilyPattern::new(pattern).matches(text), expected, "{pattern} vs {text}");
        }
    }
}
