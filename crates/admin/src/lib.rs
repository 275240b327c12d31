//! byok's admin API.
//!
//! JSON over HTTP with bearer admin tokens; the OpenAPI document at `/v1/openapi.json` is
//! generated from these handlers. Invariants:
//! * every route under `/v1/orgs/{org}` checks that the token may act on that org
//!   before doing anything; an org-admin token gets the same 403 whether another org
//!   exists or not;
//! * no response ever contains a provider secret; token text appears only in the 201
//!   answer that issues it;
//! * bad input is refused with a 4xx naming the problem before anything is written;
//! * the web console under `/ui` is static (one HTML page, one script, one stylesheet):
//!   it gets every piece of data from this API with the token its user pasted.
#![forbid(unsafe_code)]

mod auth;
mod confirm;
mod console;
mod error;
mod extract;
mod openapi;
mod routes;

use std::future::Future;

use axum::Router;
use byok_vault::Vault;
use tokio::net::TcpListener;

pub use console::CONTENT_SECURITY_POLICY_VALUE;
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use openapi::openapi_document;

/// The admin API's router over `vault`.
pub fn router(vault: Vault) -> Router {
    routes::router().with_state(vault)
}

/// Serve the admin API on `listener` until `shutdown` completes, without connection
/// limits. `byok serve` serves [`router`] through `byok_proxy::serve_router` instead, which
/// applies the `[proxy]` header-read and idle timeouts, connection cap and head limits.
pub async fn serve(
    listener: TcpListener,
    vault: Vault,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(vault)).with_graceful_shutdown(shutdown).await
}
