//! byok's data plane: the sidecar an application's SDK talks to.
//!
//! Every request goes through named phases (see [`phases`]):
//! `route → authenticate → classify → admit → resolve → audit → decrypt → inject → forward
//! → stream → meter`, with `resolve … forward` repeated for each failover attempt.
//!
//! Invariants (each has a test in `tests/`):
//! * no request reaches an upstream before its resolution row is durable, and a
//!   refused call opens no upstream connection at all;
//! * the upstream origin comes from the provider registry, the operator's
//!   configuration or the credential's admin-set `base_url` — never from the request;
//! * the plaintext key is opened once per cached DEK and kept only as the outbound header
//!   that carries it (or the Bedrock key that signs) and the response redactor's forms of
//!   it, with that DEK and no longer, always in zeroizing memory; outbound credential
//!   headers are marked sensitive;
//! * when audit, store or KMS cannot be used, the call fails closed with 503;
//! * a katman-b or katman-c call never uses a platform credential; every completion
//!   carries the price in force when its call was made.
#![forbid(unsafe_code)]

mod access;
#[doc(hidden)]
pub mod benching;
mod body;
mod cache;
mod config;
mod error;
mod health;
pub mod limits;
mod listen;
pub mod manual;
pub(crate) mod phases;
mod pools;
mod redact;
mod server;
mod spend;
mod tls;
mod verify;

pub use config::{ConfigError, ConnectionLimits, ProxyConfig, UpstreamBase};
pub use error::{classify, Code, Fault, Refusal};
pub use listen::serve_router;
pub use server::{serve, serve_with_tls, Sidecar};
pub use tls::{ListenerTls, TlsError};

/// Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): not an API, no stability
/// promise. Each runs one piece of the data plane exactly as a call does.
#[doc(hidden)]
pub mod fuzzing {
    use axum::http::Uri;
    use byok_providers::ProviderSpec;
    use bytes::Bytes;

    /// The `route` phase on a request target: `Ok((provider, upstream path, query))`,
    /// `Err(refusal message)`, or `None` when the bytes are not a request target at all.
    #[allow(clippy::type_complexity)]
    pub fn route(target: &[u8]) -> Option<Result<(&'static ProviderSpec, String, Option<String>), String>> {
        let uri = Uri::try_from(target).ok()?;
        Some(
            crate::phases::route::route(&uri)
                .map(|route| (route.spec, route.upstream_path, route.query))
                .map_err(|refusal| refusal.message),
        )
    }

    /// The response redactor for `key` over a body arriving as `chunks`: everything it
    /// lets out, in order (each pushed chunk's output, then what `finish` releases).
    pub fn redact_chunks<'a>(key: &[u8], chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut redactor = crate::redact::Redactor::new(key);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&redactor.push(Bytes::copy_from_slice(chunk)));
        }
        out.extend_from_slice(&redactor.finish());
        out
    }
}
