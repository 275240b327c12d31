//! The read-only web console under `/ui`: one HTML page, one script and one stylesheet,
//! compiled into the binary.
//!
//! The routes themselves hold no data and need no token: the page asks for an admin token,
//! keeps it in the browser's `sessionStorage` and sends it as `Authorization: Bearer` to
//! the JSON API (`/v1/…`), which checks it as for any other client. Every answer carries a
//! strict Content-Security-Policy (scripts and styles from this origin only, no inline
//! script, no framing, no form submission, Trusted Types required, so a string can never
//! become markup), `nosniff`, `no-referrer` and `no-store`.

use axum::http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use byok_vault::Vault;

/// The policy every console answer carries.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; \
     object-src 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// The console's routes (merged into the admin router).
pub(crate) fn router() -> Router<Vault> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/console.js", get(script))
        .route("/ui/console.css", get(stylesheet))
        .route("/ui/{*rest}", get(not_found))
}

async fn index() -> Response {
    asset(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset(StatusCode::OK, "text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn stylesheet() -> Response {
    asset(StatusCode::OK, "text/css; charset=utf-8", CONSOLE_CSS)
}

async fn not_found() -> Response {
    asset(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n")
}

/// `body` with its content type and the console's security headers.
fn asset(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 8] = [
        (CONTENT_TYPE, content_type),
        (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        (CACHE_CONTROL, "no-store"),
        (X_FRAME_OPTIONS, "DENY"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
