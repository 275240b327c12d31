//! The phases of one call, in order. Each is a function named after what it does;
//! [`crate::server`] runs them in sequence and turns a [`Refusal`] into the provider's
//! error shape.
//!
//! 1. [`route::route`] — which provider, which upstream path (path tricks refused)
//! 2. [`authenticate::authenticate`] — the workload token
//! 3. [`classify::classify`] — model, family, capability, mode, team, workflow
//!    then [`admit`] — the org's source allow-list (katman-c) and budgets, then (in
//!    `server.rs`) the org's, team's and token's rate limits
//! 4. [`resolve::resolve_credential`] — the admitting credentials in the order to try
//!    them: the most specific rank, its pool's weighted pick first, cooling and failing
//!    keys left out (the platform pool's for a katman-a call none of its org's admits);
//!    the first whose own pace has room is used
//! 5. audit — the `CredentialResolutionAudit` row of this attempt, durable (group commit)
//! 6. [`decrypt::decrypt`] — DEK (cached or unwrapped in the KMS), then the secret
//! 7. [`inject::build_upstream_request`] — strip client credentials, inject the key
//! 8. [`forward::forward`] — send; never follow redirects. A 429/401/403/5xx/529 or no
//!    answer goes back to 4 with the tried credentials excluded (failover, at most
//!    `failover_attempts` more times; never for a pin), before anything reaches the client
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
