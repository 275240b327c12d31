//! Phase 8: forward. One attempt, bounded in time; redirects are returned to the
//! client, never followed.
//!
//! Every upstream connection is dialled by [`Dialer`], which checks the address it is
//! about to connect to (SPEC §3, upstream safety): an upstream whose origin the operator
//! did not configure (`[upstreams.<id>] base_url`, `BYOK_UPSTREAM_<ID>`) may not be on a
//! loopback, private, link-local, unique-local, shared (CGNAT), multicast, broadcast or
//! unspecified address, nor on a cloud metadata address — in any notation, IPv4-mapped
//! and NAT64 forms included — unless `[proxy] allow_private_upstreams` says otherwise.
//! The check runs on the addresses the name resolves to at the moment of the dial, so a
//! DNS answer that changed since the credential was written cannot get around it.
//!
//! A workload learns only `upstream_unreachable` / `upstream_timeout` with a fixed
//! message; why (resolver, socket and TLS errors, addresses) goes to the operator's log
//! through [`Refusal::detail`].

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use super::{Code, Refusal};
use crate::config::{ConfigError, ProxyConfig};

/// What the workload is told when an upstream cannot be reached (whatever the reason).
pub(crate) const UNREACHABLE_MESSAGE: &str = "the upstream could not be reached (the operator's log has the details)";

/// What the workload is told when an upstream does not answer in time.
pub(crate) const TIMEOUT_MESSAGE: &str = "the upstream did not answer in time (the operator's log has the details)";

/// The upstream HTTP client (HTTP/1.1 over TLS or, where the operator configured it,
/// plain TCP) over a [`Dialer`]. It has no redirect logic at all.
pub(crate) type UpstreamClient = Client<hyper_rustls::HttpsConnector<Dialer>, Full<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the upstream client takes from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    connect_timeout: Duration,
    /// `[proxy] allow_private_upstreams`: no address check at all.
    allow_private: bool,
    /// The origins of the operator's `[upstreams]`: dialled without the address check.
    trusted: HashSet<Origin>,
    /// Most idle keep-alive connections kept per upstream origin.
    max_idle_per_host: usize,
}

impl From<&ProxyConfig> for ClientSettings {
    fn from(config: &ProxyConfig) -> Self {
        Self {
            connect_timeout: config.connect_timeout,
            allow_private: config.allow_private_upstreams,
            trusted: config.upstreams.values().filter_map(|base| Origin::of_base(base.as_str())).collect(),
            // A data-plane connection has at most one call in flight (HTTP/1.1), so no
            // more upstream connections than the listener's bound are ever busy at once:
            // as many stay open for reuse, none beyond.
            max_idle_per_host: config.connections.max_connections,
        }
    }
}

/// How long an idle upstream connection is kept for reuse.
const UPSTREAM_IDLE: Duration = Duration::from_secs(90);

/// Build the client: TLS (ring, webpki roots), connect timeout, every connection dialled
/// by a [`Dialer`], kept alive and reused — up to [`ClientSettings::max_idle_per_host`]
/// idle per origin for [`UPSTREAM_IDLE`] — so that a call under load finds a connection
/// open (no TCP or TLS handshake per call).
pub(crate) fn upstream_client(settings: impl Into<ClientSettings>) -> Result<UpstreamClient, ConfigError> {
    let settings = settings.into();
    let max_idle = settings.max_idle_per_host.max(1);
    let dialer = Dialer::new(settings);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(ConfigError::Tls)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(dialer);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(UPSTREAM_IDLE)
        .pool_max_idle_per_host(max_idle)
        .build(https))
}

/// Send `request`; map failures to `upstream_unreachable` (502) or `upstream_timeout` (504)
/// with a fixed message, the reason in [`Refusal::detail`].
pub(crate) async fn forward(
    client: &UpstreamClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Response<Incoming>, Refusal> {
    // Named only when the call fails (no text built for a call that succeeds).
    let uri = request.uri().clone();
    let target = || Origin::of_uri(&uri).map_or_else(|| "the upstream".to_owned(), |origin| origin.to_string());
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => Err(Refusal::new(Code::UpstreamUnreachable, UNREACHABLE_MESSAGE)
            .with_detail(format!("cannot reach {}: {}", target(), byok_domain::error::report(&err)))
            .caused_by(err)),
        Err(_) => Err(Refusal::new(Code::UpstreamTimeout, TIMEOUT_MESSAGE).with_detail(format!(
            "{} did not answer within {} s",
            target(),
            timeout.as_secs_f64()
        ))),
    }
}

/// Scheme, host and port of an upstream: what decides whether the operator configured it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of_base(base: &str) -> Option<Self> {
        let url = url::Url::parse(base).ok()?;
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    fn of_uri(uri: &Uri) -> Option<Self> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let port = match (uri.port_u16(), scheme.as_str()) {
            (Some(port), _) => port,
            (None, "https") => 443,
            (None, "http") => 80,
            (None, _) => return None,
        };
        Some(Self { scheme, host: uri.host()?.to_ascii_lowercase(), port })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// A connection the dial-time check refused.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused to connect: {} (an operator allows such upstreams with [upstreams.<id>] base_url or \
             [proxy] allow_private_upstreams)",
            self.0
        )
    }
}

impl std::error::Error for Refused {}

/// The connector under TLS: an operator-configured origin (or any, with
/// `allow_private_upstreams`) is dialled as it is; any other is dialled only to public
/// addresses — an IP-literal host is checked before the dial, a name is resolved by
/// [`PublicResolver`], which drops the addresses that are not public.
#[derive(Clone)]
pub(crate) struct Dialer {
    open: HttpConnector,
    checked: HttpConnector<PublicResolver>,
    trusted: Arc<HashSet<Origin>>,
    allow_private: bool,
}

impl Dialer {
    fn new(settings: ClientSettings) -> Self {
        let mut open = HttpConnector::new_with_resolver(GaiResolver::new());
        let mut checked = HttpConnector::new_with_resolver(PublicResolver);
        for http in [&mut open as &mut dyn ConfigureHttp, &mut checked] {
            http.configure(settings.connect_timeout);
        }
        Self { open, checked, trusted: Arc::new(settings.trusted), allow_private: settings.allow_private }
    }

    /// Whether connections to `uri` skip the address check.
    fn trusts(&self, uri: &Uri) -> bool {
        self.allow_private || Origin::of_uri(uri).is_some_and(|origin| self.trusted.contains(&origin))
    }
}

trait ConfigureHttp {
    fn configure(&mut self, connect_timeout: Duration);
}

impl<R> ConfigureHttp for HttpConnector<R> {
    fn configure(&mut self, connect_timeout: Duration) {
        self.enforce_http(false);
        self.set_connect_timeout(Some(connect_timeout));
        self.set_nodelay(true);
    }
}

impl Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both connectors (and their resolvers) are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if self.trusts(&uri) {
            let mut open = self.open.clone();
            return Box::pin(async move { open.call(uri).await.map_err(BoxError::from) });
        }
        if let Err(refused) = check_host(uri.host().unwrap_or_default()) {
            return Box::pin(std::future::ready(Err(BoxError::from(refused))));
        }
        let mut checked = self.checked.clone();
        Box::pin(async move { checked.call(uri).await.map_err(BoxError::from) })
    }
}

/// The host of a URI, before any resolution: an IP literal must be a public address; a
/// name that a resolver would read as an IPv4 address (`2130706433`, `0x7f.1`) is refused.
fn check_host(host: &str) -> Result<(), Refused> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return match not_public(ip) {
            Some(why) => Err(Refused(format!("{ip} is {why}"))),
            None => Ok(()),
        };
    }
    if byok_providers::looks_like_ipv4(bare) {
        return Err(Refused(format!("'{bare}' is an IPv4 address in a non-canonical notation")));
    }
    Ok(())
}

/// A resolver that keeps only public addresses (and fails when none is left).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublicResolver;

impl Service<Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            check_host(&host).map_err(|refused| io::Error::new(io::ErrorKind::PermissionDenied, refused))?;
            let mut kept = Vec::new();
            let mut dropped = Vec::new();
            for addr in tokio::net::lookup_host((host.as_str(), 0)).await? {
                match not_public(addr.ip()) {
                    None => kept.push(addr),
                    Some(why) => dropped.push(format!("{} is {why}", addr.ip())),
                }
            }
            if kept.is_empty() {
                let why = if dropped.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!("{host} resolves only to addresses an upstream may not have: {}", dropped.join(", "))
                };
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, Refused(why)));
            }
            if !dropped.is_empty() {
                tracing::warn!(%host, dropped = %dropped.join(", "), "not dialling an upstream's non-public addresses");
            }
            Ok(kept.into_iter())
        })
    }
}

/// Cloud metadata services: AWS, GCP, Azure, OCI and others (169.254.169.254), Azure's
/// host endpoint (168.63.129.16), Alibaba Cloud (100.100.100.200).
const METADATA_V4: [Ipv4Addr; 3] =
    [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(168, 63, 129, 16), Ipv4Addr::new(100, 100, 100, 200)];

/// AWS's IPv6 instance metadata service.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Why `ip` may not be an upstream's address (unless the operator allows it), or `None`
/// for a public address.
pub(crate) fn not_public(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(ip) => not_public_v4(ip).map(str::to_owned),
        IpAddr::V6(ip) => not_public_v6(ip),
    }
}

fn not_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if METADATA_V4.contains(&ip) => "a cloud metadata address",
        (0, _, _) => "an unspecified address (0.0.0.0/8)",
        (127, _, _) => "a loopback address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address (RFC 1918)",
        (169, 254, _) => "a link-local address",
        (100, 64..=127, _) => "a shared address (CGNAT, 100.64.0.0/10)",
        (192, 0, 0) => "an IETF protocol address (192.0.0.0/24)",
        (198, 18..=19, _) => "a benchmarking address (198.18.0.0/15)",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn not_public_v6(ip: Ipv6Addr) -> Option<String> {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    let via = |form: &str, v4: Ipv4Addr| not_public_v4(v4).map(|why| format!("{form} of {v4}, {why}"));
    if ip == METADATA_V6 {
        return Some("a cloud metadata address".to_owned());
    }
    if ip.is_unspecified() {
        return Some("the unspecified address".to_owned());
    }
    if ip.is_loopback() {
        return Some("a loopback address".to_owned());
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return via("the IPv4-mapped form", v4);
    }
    match s {
        [0, 0, 0, 0, 0, 0, _, _] => {
            Some(format!("an IPv4-compatible address (deprecated) of {}", embedded(s[6], s[7])))
        }
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => via("the NAT64 form", embedded(s[6], s[7])),
        [0x64, 0xff9b, 1, ..] => Some("a local-use NAT64 address (64:ff9b:1::/48)".to_owned()),
        [0x2002, high, low, ..] => via("the 6to4 form", embedded(high, low)),
        [first, ..] if first & 0xfe00 == 0xfc00 => Some("a unique-local address (fc00::/7)".to_owned()),
        [first, ..] if first & 0xffc0 == 0xfe80 => Some("a link-local address".to_owned()),
        [first, ..] if first & 0xffc0 == 0xfec0 => Some("a site-local address (deprecated)".to_owned()),
        [first, ..] if first & 0xff00 == 0xff00 => Some("a multicast address".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        let refused = [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.0.1",
            "169.254.169.254",
            "168.63.129.16",
            "100.64.0.1",
            "100.100.100.200",
            "100.127.255.255",
            "192.0.0.170",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd00::1",
            "fd00:ec2::254",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
        ];
        for text in refused {
            let ip: IpAddr = text.parse().unwrap();
            assert!(not_public(ip).is_some(), "{text} passed");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ];
        for text in public {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(not_public(ip), None, "{text}");
        }
        assert_eq!(not_public("169.254.169.254".parse().unwrap()).unwrap(), "a cloud metadata address");
        assert_eq!(
            not_public("::ffff:127.0.0.1".parse().unwrap()).unwrap(),
            "the IPv4-mapped form of 127.0.0.1, a loopback address"
        );
    }

    #[test]
    fn hosts_are_checked_before_resolution() {
        for (host, refused) in [
            ("127.0.0.1", true),
            ("[::1]", true),
            ("[::ffff:7f00:1]", true),
            ("0x7f.1", true),
            ("2130706433", true),
            ("0177.0.0.1", true),
            ("127.1", true),
            ("8.8.8.8", false),
            ("[2606:4700:4700::1111]", false),
            ("api.openai.com", false),
            ("localhost", false), // names are checked after resolution
        ] {
            assert_eq!(check_host(host).is_err(), refused, "{host}");
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_non_public_addresses() {
        let err = PublicResolver.call("localhost".parse::<Name>().unwrap()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("localhost resolves only to addresses an upstream may not have"), "{text}");
        assert!(text.contains("127.0.0.1 is a loopback address"), "{text}");
        let err = PublicResolver.call("0x7f.1".parse::<Name>().unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("non-canonical"), "{err}");
    }

    #[test]
    fn operator_origins_are_trusted_and_nothing_else() {
        let mut config = ProxyConfig::default();
        let base = crate::config::UpstreamBase::parse("http://127.0.0.1:9000/v1").unwrap();
        config.upstreams.insert(byok_domain::ProviderId::Openai, base);
        let dialer = Dialer::new(ClientSettings::from(&config));
        for (uri, trusted) in [
            ("http://127.0.0.1:9000/v1/chat", true),
            ("http://127.0.0.1:9000/other", true),
            ("http://127.0.0.1:9001/v1", false),
            ("https://127.0.0.1:9000/v1", false),
            ("http://localhost:9000/v1", false),
            ("http://127.0.0.1/v1", false),
        ] {
            assert_eq!(dialer.trusts(&uri.parse().unwrap()), trusted, "{uri}");
        }
        config.allow_private_upstreams = true;
        let dialer = Dialer::new(ClientSettings::from(&config));
        assert!(dialer.trusts(&"http://localhost:1/".parse().unwrap()));
    }
}
