//! byok's data plane: the sidecar an application's SDK talks to.
//!
//! Every request goes through named phases (see [`phases`]):
//! `route → authenticate → classify → admit → resolve → audit → decrypt → inject → forward
//! → stream → meter`.
//!
//! Invariants (each has a test in `tests/`):
//! * no request reaches an upstream before its resolution row is durable, and a
//!   refused call opens no upstream connection at all;
//! * the upstream origin comes from the provider registry, the operator's
//!   configuration or the credential's admin-set `base_url` — never from the request;
//! * the plaintext key exists only between `decrypt` and the outbound request (and, to
//!   redact echoes, in the response redactor), always in zeroizing types; outbound
//!   credential headers are marked sensitive;
//! * when audit, store or KMS cannot be used, the call fails closed with 503;
//! * a katman-b or katman-c call never uses a platform credential; every completion
//!   carries the price in force when its call was made.
#![forbid(unsafe_code)]

mod body;
mod cache;
mod config;
mod error;
pub(crate) mod phases;
mod redact;
mod server;
mod spend;

pub use config::{ProxyConfig, UpstreamBase};
pub use server::{serve, Sidecar};
