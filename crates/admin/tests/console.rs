//! The web console under `/ui`: three static files with their content types and strict
//! security headers, the same with or without a token, holding no data of their own; a
//! bundle with no inline script, no external origin and no way to turn API data into
//! markup. (The page in a real browser: scripts/console-test.sh.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use byok_store::testing::for_each_backend;
use http_body_util::BodyExt;
use serde_json::json;
use support::{harness, Harness, CANARY};
use tower::ServiceExt;

/// The console's files and their content types.
const ASSETS: [(&str, &str); 4] = [
    ("/ui", "text/html; charset=utf-8"),
    ("/ui/", "text/html; charset=utf-8"),
    ("/ui/console.js", "text/javascript; charset=utf-8"),
    ("/ui/console.css", "text/css; charset=utf-8"),
];

/// Paths under `/ui` that are not files of the console, some shaped like API paths.
const NOT_ASSETS: [&str; 9] = [
    "/ui/orgs",
    "/ui/v1/orgs",
    "/ui/v1/orgs/acme",
    "/ui/v1/orgs/acme/credentials",
    "/ui/orgs/acme/credentials/oa/lifecycle",
    "/ui/../v1/orgs",
    "/ui/%2e%2e/v1/orgs",
    "/ui/console.js/x",
    "/ui/index.html",
];

struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn raw(h: &Harness, method: Method, path: &str, token: Option<&str>) -> Raw {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = h.router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(!body.contains(CANARY), "a secret in {path}");
    Raw { status, headers, body }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

/// The headers every console answer carries.
fn assert_secured(path: &str, headers: &HeaderMap) {
    let csp = header(headers, "content-security-policy");
    assert_eq!(csp, byok_admin::CONTENT_SECURITY_POLICY_VALUE, "{path}");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for required in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "object-src 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(directives.contains(&required), "{path}: CSP lacks {required:?}: {csp}");
    }
    assert!(!csp.contains("unsafe-"), "{path}: {csp}");
    assert_eq!(header(headers, "x-content-type-options"), "nosniff", "{path}");
    assert_eq!(header(headers, "referrer-policy"), "no-referrer", "{path}");
    assert_eq!(header(headers, "cache-control"), "no-store", "{path}");
    assert_eq!(header(headers, "x-frame-options"), "DENY", "{path}");
    assert!(headers.get("set-cookie").is_none(), "{path} sets a cookie");
}

/// An org `acme` with a team, a credential `oa` and an org-admin token; returns the
/// org-admin token and what identifies the org's data (ids and the fingerprint).
async fn seeded(h: &Harness) -> (String, Vec<String>) {
    let org = h.ok(Method::POST, "/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
    let team = h.ok(Method::POST, "/v1/orgs/acme/teams", json!({"name": "agents"})).await;
    let cred = h
        .ok(
            Method::POST,
            "/v1/orgs/acme/credentials",
            json!({"name": "oa", "provider": "openai", "secret": CANARY, "scope": {"teams": ["agents"]}}),
        )
        .await;
    let admin = h.ok(Method::POST, "/v1/orgs/acme/admin-tokens", json!({})).await;
    let data = [&org["id"], &team["id"], &cred["id"], &cred["fingerprint"]]
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    (admin["token"].as_str().unwrap().to_owned(), data)
}

#[tokio::test]
async fn console_files_have_their_content_types_and_security_headers() {
    for_each_backend("console_files_have_their_content_types_and_security_headers", |t| async move {
        let h = harness(t).await;
        for (path, content_type) in ASSETS {
            for method in [Method::GET, Method::HEAD] {
                let answer = raw(&h, method.clone(), path, None).await;
                assert_eq!(answer.status, StatusCode::OK, "{method} {path}");
                assert_eq!(header(&answer.headers, "content-type"), content_type, "{method} {path}");
                assert_secured(path, &answer.headers);
                if method == Method::GET {
                    assert!(!answer.body.is_empty(), "{path}");
                }
            }
        }
        let page = raw(&h, Method::GET, "/ui", None).await.body;
        assert!(page.starts_with("<!doctype html>"), "{page}");
        // Anything else under /ui is a plain 404 with the same headers.
        for path in NOT_ASSETS {
            let answer = raw(&h, Method::GET, path, None).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}: {}", answer.body);
            assert_eq!(header(&answer.headers, "content-type"), "text/plain; charset=utf-8", "{path}");
            assert_secured(path, &answer.headers);
        }
    })
    .await
    .unwrap();
}

/// The console's routes are static: the same bytes with no token, a wrong one, an org
/// admin's or the operator's, and never an id, a fingerprint or a secret of the org. Its
/// data comes only from the API, which refuses every call the console makes without a
/// valid token.
#[tokio::test]
async fn no_console_route_answers_with_data_and_the_api_it_reads_needs_a_token() {
    for_each_backend("no_console_route_answers_with_data_and_the_api_it_reads_needs_a_token", |t| async move {
        let h = harness(t).await;
        let (org_admin, data) = seeded(&h).await;
        let operator = h.operator.clone();
        let tokens = [None, Some("byokadm_not-a-token"), Some(org_admin.as_str()), Some(operator.as_str())];
        for path in ASSETS.iter().map(|(path, _)| *path).chain(NOT_ASSETS) {
            let anonymous = raw(&h, Method::GET, path, None).await;
            for token in tokens {
                let answer = raw(&h, Method::GET, path, token).await;
                assert_eq!(answer.status, anonymous.status, "{path} with {token:?}");
                assert_eq!(answer.body, anonymous.body, "{path} answers differently with {token:?}");
                for datum in &data {
                    assert!(!answer.body.contains(datum.as_str()), "{path} shows {datum}");
                }
                assert!(!answer.body.contains(&operator) && !answer.body.contains(&org_admin), "{path} shows a token");
            }
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                let answer = raw(&h, method.clone(), path, Some(&operator)).await;
                assert!(answer.status.is_client_error(), "{method} {path}: {}", answer.status);
                for datum in &data {
                    assert!(!answer.body.contains(datum.as_str()), "{method} {path} shows {datum}");
                }
            }
        }

        let read_by_the_console = [
            "/v1/orgs",
            "/v1/kms",
            "/v1/orgs/acme",
            "/v1/orgs/acme/teams",
            "/v1/orgs/acme/workflows",
            "/v1/orgs/acme/credentials",
            "/v1/orgs/acme/credentials/oa",
            "/v1/orgs/acme/credentials/oa/lifecycle?limit=100",
            "/v1/orgs/acme/audit/verify",
            "/v1/orgs/acme/usage",
        ];
        for path in read_by_the_console {
            for token in [None, Some("byokadm_not-a-token")] {
                let answer = raw(&h, Method::GET, path, token).await;
                assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path} with {token:?}: {}", answer.body);
                for datum in &data {
                    assert!(!answer.body.contains(datum.as_str()), "{path} shows {datum} without a token");
                }
            }
            // With a token, the answer is JSON and has what the console reads.
            let answer = raw(&h, Method::GET, path, Some(&operator)).await;
            assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
            assert!(serde_json::from_str::<serde_json::Value>(&answer.body).is_ok(), "{path}");
        }
        let lifecycle = h.ok(Method::GET, "/v1/orgs/acme/credentials/oa/lifecycle?limit=1", json!({})).await;
        assert_eq!(lifecycle["events"][0]["kind"], "created", "{lifecycle}");
        assert!(lifecycle.get("next").is_some(), "{lifecycle}");
        let verified = h.ok(Method::GET, "/v1/orgs/acme/audit/verify", json!({})).await;
        assert_eq!(verified["ok"], true, "{verified}");
    })
    .await
    .unwrap();
}

/// No inline script or style, nothing from another origin, no cookie or persistent
/// storage, and no API that parses a string as markup or code: a hostile name in the
/// data is shown as text.
#[tokio::test]
async fn the_console_bundle_is_self_contained_and_renders_text_only() {
    for_each_backend("the_console_bundle_is_self_contained_and_renders_text_only", |t| async move {
        let h = harness(t).await;
        let html = raw(&h, Method::GET, "/ui", None).await.body;
        let js = raw(&h, Method::GET, "/ui/console.js", None).await.body;
        let css = raw(&h, Method::GET, "/ui/console.css", None).await.body;

        let lower = html.to_ascii_lowercase();
        assert_eq!(lower.matches("<script").count(), 1, "one script tag");
        assert!(lower.contains(r#"<script src="/ui/console.js" defer></script>"#), "{html}");
        assert!(lower.contains(r#"<link rel="stylesheet" href="/ui/console.css">"#), "{html}");
        assert!(!lower.contains("<style") && !lower.contains(" style="), "inline style");
        let handler = lower.split(|c: char| c.is_whitespace()).any(|word| {
            word.starts_with("on")
                && word.contains('=')
                && word[2..word.find('=').unwrap()].chars().all(|c| c.is_ascii_alphabetic())
        });
        assert!(!handler, "an inline event handler in the page");
        assert!(!lower.contains("javascript:"), "a javascript: URL");

        for (name, text) in [("index.html", &html), ("console.js", &js), ("console.css", &css)] {
            for external in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(external), "{name} refers to {external:?}");
            }
        }
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "Function(",
            "setTimeout(\"",
            "DOMParser",
            "createContextualFragment",
            "document.cookie",
            "localStorage",
        ] {
            assert!(!js.contains(forbidden), "console.js uses {forbidden}");
        }
        assert!(js.contains("sessionStorage"), "the token lives in sessionStorage");
        assert!(js.contains("\"Bearer \""), "the token goes out as a bearer token");
        // It never sends the token anywhere but in the Authorization header of a same-origin
        // call under /v1/.
        assert!(!js.contains("?token") && !js.contains("&token"), "a token in a URL");
    })
    .await
    .unwrap();
}
