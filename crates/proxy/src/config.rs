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
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let url = url::Url::parse(text).map_err(|source| ConfigError::UpstreamUrl { text: text.to_owned(), source })?;
        let invalid = |reason: &str| ConfigError::Upstream { text: text.to_owned(), reason: reason.to_owned() };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::UpstreamParts);
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
    /// Bounds on the listener's connections and request heads.
    pub connections: ConnectionLimits,
    /// Further attempts with other credentials after a throttled, rejected or failed
    /// upstream answer (`[proxy] failover_attempts`; 0 turns failover off).
    pub failover_attempts: u32,
    /// Where rate limits are counted (`[limits] redis_url`: shared by the fleet).
    pub limits: crate::limits::LimiterConfig,
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
            connections: ConnectionLimits::default(),
            failover_attempts: 2,
            limits: crate::limits::LimiterConfig::default(),
        }
    }
}

/// Bounds on the connections a listener serves and on the request heads it reads
/// (`[proxy] header_read_timeout_secs`, `idle_timeout_secs`, `max_connections`,
/// `max_uri_bytes`, `max_header_bytes`). `byok serve` applies them to both listeners.
///
/// A client cannot hold a connection without sending a request: the head must arrive
/// whole within [`Self::header_read_timeout`], and a kept-alive connection with no request
/// is closed after [`Self::idle_timeout`]. A request in flight (its body, its streamed
/// answer) is bounded by neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a client has to send a whole request head, counted from the accept for a new
    /// connection and from the first byte of the next request on a kept-alive one; then
    /// the connection is closed without an answer.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request before it is closed.
    pub idle_timeout: Duration,
    /// Most connections served at once. Further connections are not accepted until one
    /// ends: they wait in the kernel's listen backlog (clients see a slow connect, not a
    /// refusal), so a burst is absorbed and nothing beyond the cap costs byok memory.
    pub max_connections: usize,
    /// Longest request target (path and query) accepted; longer ones get 414
    /// `uri_too_long` in the provider's error shape.
    pub max_uri_bytes: usize,
    /// Largest header block accepted (each field counted as name, value and 4 bytes of
    /// framing); larger ones get 431 `headers_too_large` in the provider's error shape.
    /// A head beyond twice both limits is cut off by the HTTP parser with a bare 431.
    pub max_header_bytes: usize,
}

impl ConnectionLimits {
    /// Most connections that may be configured.
    pub const MAX_CONNECTIONS: usize = 1_000_000;
    /// Longest request target that may be configured: the HTTP parser's own limit.
    pub const MAX_URI_BYTES: usize = 65_534;
    /// Largest header block that may be configured.
    pub const MAX_HEADER_BYTES: usize = 1024 * 1024;
    /// Smallest URI and header limits that may be configured.
    pub const MIN_HEAD_BYTES: usize = 1024;
    /// Longest header-read timeout that may be configured.
    pub const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3600);
    /// Longest idle timeout that may be configured.
    pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

    /// Check every bound; the error names the `[proxy]` key that is out of range.
    pub fn check(&self) -> Result<(), ConfigError> {
        let timeouts = [
            ("header_read_timeout_secs", self.header_read_timeout, Self::MAX_HEADER_READ_TIMEOUT),
            ("idle_timeout_secs", self.idle_timeout, Self::MAX_IDLE_TIMEOUT),
        ];
        for (key, value, max) in timeouts {
            if value.is_zero() || value > max {
                return Err(ConfigError::OutOfRange { key, min: 1, max: max.as_secs() });
            }
        }
        let sizes = [
            ("max_connections", self.max_connections, 1, Self::MAX_CONNECTIONS),
            ("max_uri_bytes", self.max_uri_bytes, Self::MIN_HEAD_BYTES, Self::MAX_URI_BYTES),
            ("max_header_bytes", self.max_header_bytes, Self::MIN_HEAD_BYTES, Self::MAX_HEADER_BYTES),
        ];
        for (key, value, min, max) in sizes {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange { key, min: min as u64, max: max as u64 });
            }
        }
        Ok(())
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Why the data plane's configuration cannot be used. Each names the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An upstream base that is not a URL.
    #[error("upstream '{text}' is not an absolute URL")]
    UpstreamUrl {
        /// What was given.
        text: String,
        /// Why it does not parse.
        #[source]
        source: url::ParseError,
    },
    /// An upstream base with the wrong scheme or no host.
    #[error("upstream '{text}' {reason}")]
    Upstream {
        /// What was given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An upstream base with user info, a query or a fragment (not echoed: user info may
    /// be a password).
    #[error("an upstream must not contain user info, a query or a fragment")]
    UpstreamParts,
    /// A `[proxy]` bound out of its range.
    #[error("proxy.{key} must be between {min} and {max}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// The `[limits]` settings.
    #[error("[limits]")]
    Limits(#[source] crate::limits::LimiterError),
    /// The TLS stack for upstream connections could not be set up.
    #[error("TLS configuration failed")]
    Tls(#[source] rustls::Error),
}
