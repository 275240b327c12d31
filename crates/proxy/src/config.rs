//! Data-plane configuration.

use std::collections::HashMap;
use std::time::Duration;

use byok_domain::{Cidr, ProviderId};

/// An operator-configured upstream base URL for a provider (`[upstreams.<id>] base_url`,
/// `BYOK_UPSTREAM_<ID>`).
///
/// Precedence (SPEC §3): a credential's admin-set `base_url` — held at write time to the
/// provider's hosts and the operator's `allowed_hosts` — wins over this override, which
/// wins over the registry's default; with [`UpstreamBase::with_override_credentials`]
/// (`[upstreams.<id>] override_credentials = true`) this override wins over every
/// credential's `base_url` too (all of the provider's calls go where the operator says).
/// The default keeps credentials' base URLs in force because a credential may name its
/// own resource (an Azure OpenAI endpoint) that no single override could.
///
/// Connections to an operator-configured upstream skip the dial-time address check
/// (the operator may point it at a local model server or a test double on loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamBase {
    url: String,
    override_credentials: bool,
}

impl UpstreamBase {
    /// Parse and check an upstream base: `http` or `https`, a host, no user info, query
    /// or fragment. Plain `http` is allowed here because only the operator sets these.
    /// Credentials' `base_url`s keep precedence (see the type's documentation).
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("upstream '{text}' is not an absolute URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("upstream '{text}' must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("upstream '{text}' has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err("an upstream must not contain user info, a query or a fragment".to_owned());
        }
        Ok(Self { url: url.as_str().trim_end_matches('/').to_owned(), override_credentials: false })
    }

    /// Whether this override also wins over credentials' `base_url`s
    /// (`[upstreams.<id>] override_credentials`).
    pub fn with_override_credentials(mut self, override_credentials: bool) -> Self {
        self.override_credentials = override_credentials;
        self
    }

    /// Whether this override wins over credentials' `base_url`s.
    pub fn overrides_credentials(&self) -> bool {
        self.override_credentials
    }

    /// The base without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

/// Tuning and overrides of the data plane.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Operator overrides of providers' upstreams (see [`UpstreamBase`] for which wins
    /// over a credential's `base_url`). Their origins (scheme, host, port) are dialled
    /// without the address check, whichever call goes there — a credential's `base_url`
    /// with the same origin too (it could only name it if the operator's
    /// `allowed_hosts` let it).
    pub upstreams: HashMap<ProviderId, UpstreamBase>,
    /// Let every upstream connection go to loopback, private, link-local, unique-local,
    /// shared (CGNAT) and cloud-metadata addresses (`[proxy] allow_private_upstreams`).
    /// Off by default: then only the origins of [`Self::upstreams`] may resolve to such
    /// addresses, and a credential's `base_url` that does is refused when dialled
    /// (`upstream_unreachable`).
    pub allow_private_upstreams: bool,
    /// Largest request body accepted (413 `request_too_large` beyond).
    pub max_request_body: usize,
    /// Time allowed to connect to an upstream.
    pub connect_timeout: Duration,
    /// Time allowed for an upstream to answer with headers (504 `upstream_timeout`).
    pub response_timeout: Duration,
    /// How long an unwrapped DEK may stay cached.
    pub dek_cache_ttl: Duration,
    /// How many calls one cached DEK may serve before it is unwrapped again.
    pub dek_cache_max_uses: u64,
    /// Most DEKs cached at once.
    pub dek_cache_capacity: usize,
    /// How often the store is asked whether another node changed something.
    pub change_poll_interval: Duration,
    /// Peers whose `X-Forwarded-For` names the caller (for katman-c source allow-lists).
    pub trusted_proxies: Vec<Cidr>,
    /// How often an org's month spend is read again from the store (other nodes' calls
    /// reach budgets within this).
    pub spend_refresh: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            upstreams: HashMap::new(),
            allow_private_upstreams: false,
            max_request_body: 32 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(600),
            dek_cache_ttl: Duration::from_secs(300),
            dek_cache_max_uses: 100_000,
            dek_cache_capacity: 4096,
            change_poll_interval: Duration::from_millis(250),
            trusted_proxies: Vec::new(),
            spend_refresh: Duration::from_secs(2),
        }
    }
}
