//! The provider registry: one entry per provider id.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

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
    /// Hosts a credential's admin-set `base_url` may name ([`HostPattern`] syntax; `*`
    /// stands for exactly one label). The operator may add more per provider
    /// (`[upstreams.<id>] allowed_hosts`); nobody else can.
    pub credential_hosts: &'static [&'static str],
}

impl ProviderSpec {
    /// [`Self::credential_hosts`], parsed.
    pub fn credential_host_patterns(&self) -> Vec<HostPattern> {
        // Every entry parses (a test below checks it).
        self.credential_hosts.iter().filter_map(|p| HostPattern::builtin(p).ok()).collect()
    }
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
        credential_hosts: &["api.openai.com"],
    },
    ProviderSpec {
        id: ProviderId::Anthropic,
        default_upstream: Some("https://api.anthropic.com"),
        injection: Injection::Header("x-api-key"),
        // The current Python SDK may send its api_key as a bearer token.
        token_headers: &["x-api-key", "authorization"],
        api: Api::Anthropic,
        credential_hosts: &["api.anthropic.com"],
    },
    ProviderSpec {
        id: ProviderId::Gemini,
        default_upstream: Some("https://generativelanguage.googleapis.com"),
        injection: Injection::Header("x-goog-api-key"),
        token_headers: &["x-goog-api-key", "authorization"],
        api: Api::Gemini,
        credential_hosts: &["generativelanguage.googleapis.com"],
    },
    ProviderSpec {
        id: ProviderId::AzureOpenai,
        default_upstream: None,
        injection: Injection::Header("api-key"),
        token_headers: &["api-key", "authorization"],
        api: Api::AzureOpenAi,
        credential_hosts: &["*.openai.azure.com", "*.cognitiveservices.azure.com", "*.services.ai.azure.com"],
    },
    ProviderSpec {
        id: ProviderId::Mistral,
        default_upstream: Some("https://api.mistral.ai"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
        credential_hosts: &["api.mistral.ai"],
    },
    ProviderSpec {
        id: ProviderId::Groq,
        default_upstream: Some("https://api.groq.com"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
        credential_hosts: &["api.groq.com"],
    },
    ProviderSpec {
        id: ProviderId::Openrouter,
        default_upstream: Some("https://openrouter.ai"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
        credential_hosts: &["openrouter.ai"],
    },
    ProviderSpec {
        id: ProviderId::Together,
        default_upstream: Some("https://api.together.xyz"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
        credential_hosts: &["api.together.xyz"],
    },
    ProviderSpec {
        id: ProviderId::Deepseek,
        default_upstream: Some("https://api.deepseek.com"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
        credential_hosts: &["api.deepseek.com"],
    },
    ProviderSpec {
        id: ProviderId::Xai,
        default_upstream: Some("https://api.x.ai"),
        injection: Injection::Bearer,
        token_headers: OPENAI_TOKEN_HEADERS,
        api: Api::OpenAi,
        credential_hosts: &["api.x.ai"],
    },
    ProviderSpec {
        id: ProviderId::Bedrock,
        default_upstream: None,
        injection: Injection::Signer,
        token_headers: &["authorization"],
        api: Api::Bedrock,
        credential_hosts: &["bedrock-runtime.*.amazonaws.com", "bedrock-runtime-fips.*.amazonaws.com"],
    },
];

/// The wire facts of `id`.
pub fn spec(id: ProviderId) -> &'static ProviderSpec {
    // Exhaustive: a provider without an entry does not compile (it would otherwise be
    // routed, and its key injected, as some other provider). REGISTRY is in
    // ProviderId::ALL order; the test below keeps it so.
    let index = match id {
        ProviderId::Openai => 0,
        ProviderId::Anthropic => 1,
        ProviderId::Gemini => 2,
        ProviderId::AzureOpenai => 3,
        ProviderId::Mistral => 4,
        ProviderId::Groq => 5,
        ProviderId::Openrouter => 6,
        ProviderId::Together => 7,
        ProviderId::Deepseek => 8,
        ProviderId::Xai => 9,
        ProviderId::Bedrock => 10,
    };
    &REGISTRY[index]
}

/// A host a credential's `base_url` may name: a domain name, where a `*` label stands for
/// exactly one label (`*.openai.azure.com` matches `acme.openai.azure.com`, neither
/// `openai.azure.com` nor `a.b.openai.azure.com`), or one IP address (only ever allowed
/// explicitly by the operator). Patterns are lower-case ASCII: an internationalized name
/// is written in its `xn--` form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern(Pattern);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Pattern {
    Ip(IpAddr),
    /// Labels, `*` for any one label.
    Domain(Vec<String>),
}

impl HostPattern {
    /// An operator's pattern (`llm.internal.example`, `*.corp.example`, `10.0.0.7`,
    /// `[fd00::7]`): a `*` may only be the whole first label, and then at least two
    /// labels follow it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pattern = Self::parse_any(text)?;
        if let Pattern::Domain(labels) = &pattern.0 {
            if labels.iter().skip(1).any(|l| l == "*") {
                return Err(format!("'{text}': a '*' may only be the whole first label (as in *.corp.example)"));
            }
            if labels[0] == "*" && labels.len() < 3 {
                return Err(format!(
                    "'{text}': too broad; a wildcard needs at least two labels after it (as in *.corp.example)"
                ));
            }
        }
        Ok(pattern)
    }

    /// A registry pattern: as [`Self::parse`], and a `*` may stand in any position
    /// (`bedrock-runtime.*.amazonaws.com`).
    fn builtin(text: &str) -> Result<Self, String> {
        Self::parse_any(text)
    }

    fn parse_any(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if let Some(inner) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Self(Pattern::Ip(IpAddr::V6(ip))))
                .map_err(|_| format!("'{text}' is not an IPv6 address"));
        }
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(Self(Pattern::Ip(ip)));
        }
        if !trimmed.is_ascii() {
            return Err(format!("'{text}': write an internationalized name in its ASCII form (xn--…)"));
        }
        let host = trimmed.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        if host.is_empty() {
            return Err("a host pattern must not be empty".to_owned());
        }
        if host.len() > 253 {
            return Err(format!("'{text}' is longer than 253 characters"));
        }
        if looks_like_ipv4(host) {
            return Err(format!(
                "'{text}' reads as an IPv4 address in a non-canonical form; write it in dotted decimal (as in 10.0.0.7)"
            ));
        }
        let mut labels = Vec::new();
        for label in host.split('.') {
            if label != "*" {
                check_label(label).map_err(|why| format!("'{text}': {why}"))?;
            }
            labels.push(label.to_owned());
        }
        Ok(Self(Pattern::Domain(labels)))
    }

    /// Whether `host` (a domain name: lower-case ASCII, no trailing dot) matches.
    pub fn matches_domain(&self, host: &str) -> bool {
        let Pattern::Domain(labels) = &self.0 else { return false };
        let mut host_labels = host.split('.');
        for pattern in labels {
            match host_labels.next() {
                Some(label) if !label.is_empty() && (pattern == "*" || pattern == label) => {}
                _ => return false,
            }
        }
        host_labels.next().is_none()
    }

    /// Whether `ip` is the address this pattern names.
    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        matches!(self.0, Pattern::Ip(allowed) if allowed == ip)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Pattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Pattern::Ip(ip) => write!(f, "{ip}"),
            Pattern::Domain(labels) => f.write_str(&labels.join(".")),
        }
    }
}

/// Check a domain name (lower-case ASCII, no trailing dot): labels of 1 to 63 letters,
/// digits, `-` (not first or last) and `_`, at most 253 characters in all, and not a name
/// a resolver would read as an IPv4 address.
pub fn check_hostname(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > 253 {
        return Err(format!("'{host}' is not a valid host name"));
    }
    if looks_like_ipv4(host) {
        return Err(format!("'{host}' reads as an IPv4 address in a non-canonical form"));
    }
    host.split('.').try_for_each(check_label).map_err(|why| format!("'{host}': {why}"))
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("a label is empty".to_owned());
    }
    if label.len() > 63 {
        return Err(format!("label '{label}' is longer than 63 characters"));
    }
    if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
        return Err(format!("label '{label}' may only hold a-z, 0-9, '-' and '_'"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label '{label}' must not start or end with '-'"));
    }
    Ok(())
}

/// Whether a resolver (`inet_aton`, a WHATWG URL parser) would read `host` as an IPv4
/// address: its last label is a number — decimal, octal (`0177`) or hex (`0x7f`) — as in
/// `2130706433`, `0x7f.1`, `127.1`. No real domain name ends in a number.
pub fn looks_like_ipv4(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.is_empty() {
        return false;
    }
    if let Some(hex) = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    last.bytes().all(|b| b.is_ascii_digit())
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

    #[test]
    fn public_hosts_match_their_own_patterns_and_every_builtin_parses() {
        for s in REGISTRY {
            assert_eq!(s.credential_host_patterns().len(), s.credential_hosts.len(), "{}", s.id);
            if let Some(url) = s.default_upstream {
                let host = url.trim_start_matches("https://");
                assert!(s.credential_host_patterns().iter().any(|p| p.matches_domain(host)), "{host}");
            }
        }
        let azure = spec(ProviderId::AzureOpenai).credential_host_patterns();
        let bedrock = spec(ProviderId::Bedrock).credential_host_patterns();
        let table: [(&[HostPattern], &str, bool); 9] = [
            (&azure, "acme.openai.azure.com", true),
            (&azure, "acme.cognitiveservices.azure.com", true),
            (&azure, "acme.services.ai.azure.com", true),
            (&azure, "openai.azure.com", false),
            (&azure, "a.b.openai.azure.com", false),
            (&azure, "acme.openai.azure.com.evil.example", false),
            (&azure, "acmeopenai.azure.com", false),
            (&bedrock, "bedrock-runtime.us-east-1.amazonaws.com", true),
            (&bedrock, "evil.execute-api.us-east-1.amazonaws.com", false),
        ];
        for (patterns, host, expected) in table {
            assert_eq!(patterns.iter().any(|p| p.matches_domain(host)), expected, "{host}");
        }
    }

    #[test]
    fn operator_patterns() {
        let ok = [
            ("llm.internal.example", "llm.internal.example"),
            ("LLM.Internal.Example.", "llm.internal.example"),
            ("*.corp.example", "*.corp.example"),
            ("localhost", "localhost"),
            ("10.0.0.7", "10.0.0.7"),
            ("[fd00::7]", "[fd00::7]"),
            ("::1", "[::1]"),
            ("xn--80ak6aa92e.example", "xn--80ak6aa92e.example"),
        ];
        for (text, shown) in ok {
            assert_eq!(HostPattern::parse(text).unwrap().to_string(), shown, "{text}");
        }
        let bad = [
            ("", "empty"),
            ("llm*.corp.example", "a-z, 0-9"),
            ("llm.*.example", "whole first label"),
            ("*.example", "too broad"),
            ("*", "too broad"),
            ("2130706433", "non-canonical"),
            ("0x7f.1", "non-canonical"),
            ("127.1", "non-canonical"),
            ("0177.0.0.1", "non-canonical"),
            ("[127.0.0.1]", "IPv6"),
            ("пример.example", "xn--"),
            ("a..b", "empty"),
            ("-a.example", "start or end"),
            ("https://llm.example", "a-z, 0-9"),
            ("llm.example:8443", "a-z, 0-9"),
        ];
        for (text, why) in bad {
            let err = HostPattern::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        let corp = HostPattern::parse("*.corp.example").unwrap();
        assert!(corp.matches_domain("llm.corp.example"));
        assert!(!corp.matches_domain("corp.example"));
        assert!(!corp.matches_domain("a.llm.corp.example"));
        assert!(!corp.matches_domain(".corp.example"));
        let ip = HostPattern::parse("10.0.0.7").unwrap();
        assert!(ip.matches_ip("10.0.0.7".parse().unwrap()));
        assert!(!ip.matches_domain("10.0.0.7"));
        assert!(!HostPattern::parse("localhost").unwrap().matches_ip("127.0.0.1".parse().unwrap()));
    }
}
