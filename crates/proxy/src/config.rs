//! Data-plane configuration.

use std::collections::HashMap;
use std::time::Duration;

use byok_domain::{Cidr, ProviderId};

/// An operator-configured upstream base URL for a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamBase {
    url: String,
}

impl UpstreamBase {
    /// Parse and check an upstream base: `http` or `https`, a host, no user info, query
    /// or fragment. Plain `http` is allowed here because only the operator sets these.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("upstream '{text}' is not an absolute URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("upstream '{text}' must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("upstream '{text}' has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("upstream '{text}' must not contain user info, a query or a fragment"));
        }
        Ok(Self { url: url.as_str().trim_end_matches('/').to_owned() })
    }

    /// The base without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

/// Tuning and overrides of the data plane.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Operator overrides of providers' upstreams.
    pub upstreams: HashMap<ProviderId, UpstreamBase>,
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
