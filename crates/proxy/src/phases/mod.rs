//! The phases of one call, in order. Each is a function named after what it does;
//! [`crate::server`] runs them in sequence and turns a [`Refusal`] into the provider's
//! error shape.
//!
//! 1. [`route::route`] — which provider, which upstream path (path tricks refused)
//! 2. [`authenticate::authenticate`] — the workload token
//! 3. [`classify::classify`] — model, family, capability, mode, team, workflow
//!    then [`admit`] — the org's source allow-list (katman-c) and budgets
//! 4. [`resolve::resolve_credential`] — the one credential whose scope admits the call
//!    (the platform pool's for a katman-a call none of its org's admits)
//! 5. audit — the `CredentialResolutionAudit` row, durable (group commit)
//! 6. [`decrypt::decrypt`] — DEK (cached or unwrapped in the KMS), then the secret
//! 7. [`inject::build_upstream_request`] — strip client credentials, inject the key
//! 8. [`forward::forward`] — send; never follow redirects
//! 9. stream and meter — [`crate::body::MeteredBody`]: pass through, redact echoes,
//!    read usage, record completion

pub mod admit;
pub mod authenticate;
pub mod classify;
pub mod decrypt;
pub mod forward;
pub mod inject;
pub mod resolve;
pub mod route;

pub use crate::error::{Code, Refusal};
