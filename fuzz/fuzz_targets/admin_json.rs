//! The admin API's JSON request bodies, through the real router over a real SQLite store,
//! local keyring and audit signer (built once, rebuilt every few thousand inputs so that
//! what valid bodies create does not pile up).
//!
//! No provider is reachable: the data plane's key probe is a stub under which every key is
//! `unreachable`, except one holding `rejected`, which the provider "rejects" (401), so a
//! create with `"verify": true` reaches both outcomes.
//!
//! Input: `[route, who]` then the body. `route` picks one of the routes that take a JSON
//! body; `who`'s low bit picks the operator token or an org-admin token of `acme`, the
//! next bit the org in the path (`acme`, katman-c, or `startup`, katman-a).
//!
//! Properties: no panic; never a 5xx; every 4xx is the JSON error body
//! (`{"error":{"code","message"}}`); a body that is not a JSON object (nor empty) is never
//! accepted; a `secret` sent in a body never comes back.
#![no_main]

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use byok_audit::AuditSigner;
use byok_crypto::token::{TokenKind, TokenText};
use byok_crypto::{LocalKeyring, ProviderSecret};
use byok_domain::{Credential, CredentialHealth, CredentialId, ModelFamilyRegistry, Org, ProviderId};
use byok_store::Store;
use byok_kms::KmsHandle;
use byok_vault::{KeyProbe, ProbeFuture, Vault, VaultPolicy, Verification};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt;

/// Every route that reads a JSON body; `{org}` and `{cred}` are filled in per input.
const ROUTES: [(&str, &str); 22] = [
    ("POST", "/v1/orgs"),
    ("PATCH", "/v1/orgs/{org}"),
    ("PUT", "/v1/orgs/{org}/negotiated-rate-card"),
    ("PUT", "/v1/orgs/{org}/budget"),
    ("PUT", "/v1/orgs/{org}/controls"),
    ("PUT", "/v1/orgs/{org}/kms"),
    ("POST", "/v1/orgs/{org}/admin-tokens"),
    ("POST", "/v1/orgs/{org}/teams"),
    ("POST", "/v1/orgs/{org}/workflows"),
    ("POST", "/v1/orgs/{org}/credentials"),
    ("PATCH", "/v1/orgs/{org}/credentials/{cred}"),
    ("POST", "/v1/orgs/{org}/credentials/{cred}/rotate"),
    ("POST", "/v1/orgs/{org}/audit/verify"),
    ("POST", "/v1/orgs/{org}/audit/purge"),
    ("POST", "/v1/orgs/{org}/tokens"),
    ("POST", "/v1/platform/credentials"),
    ("PATCH", "/v1/platform/credentials/{cred}"),
    ("POST", "/v1/platform/credentials/{cred}/rotate"),
    ("POST", "/v1/orgs/{org}/credentials/{cred}/revoke"),
    ("POST", "/v1/platform/credentials/{cred}/revoke"),
    ("POST", "/v1/orgs/{org}/kek/rotate"),
    ("PUT", "/v1/orgs/{org}/limits"),
];

/// The data plane's key probe, with no provider behind it.
struct NoUpstream;

impl KeyProbe for NoUpstream {
    fn probe_credential<'a>(&'a self, _: &'a Org, _: &'a Credential) -> ProbeFuture<'a> {
        Box::pin(async { Ok(Verification::unreachable()) })
    }

    fn probe_secret<'a>(&'a self, _: ProviderId, _: Option<&'a str>, secret: &'a ProviderSecret) -> ProbeFuture<'a> {
        let rejected = secret.expose().contains("rejected");
        Box::pin(async move { Ok(if rejected { Verification::from_status(401) } else { Verification::unreachable() }) })
    }

    fn local_health(&self, _: &CredentialId) -> Option<CredentialHealth> {
        None
    }
}

/// Inputs between two rebuilds of the store.
const REBUILD_EVERY: usize = 5_000;

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    operator: String,
    org_admin: String,
    uses: usize,
    _dir: tempfile::TempDir,
}

/// A scratch directory, in memory where there is one (the store syncs every write).
fn scratch() -> tempfile::TempDir {
    let memory = Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("byok-fuzz-").to_owned();
    if memory.is_dir() {
        if let Ok(dir) = builder.tempdir_in(memory) {
            return dir;
        }
    }
    builder.tempdir().expect("a scratch directory")
}

async fn call(router: &Router, method: &str, path: &str, token: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a method"))
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    let response = router.clone().oneshot(request).await.expect("an answer");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.expect("a body").to_bytes();
    (status, bytes.to_vec())
}

impl Harness {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let dir = scratch();
        let (router, operator, org_admin) = runtime.block_on(async {
            let store = Store::open_sqlite(&dir.path().join("byok.db")).await.expect("the store");
            let keyring = LocalKeyring::open(dir.path().join("keyring.json")).expect("the keyring");
            let signer = AuditSigner::load_or_create(&dir.path().join("audit-signing.key")).expect("the signer");
            let vault = Vault::new(
                store,
                KmsHandle::new(Arc::new(keyring), 4),
                ModelFamilyRegistry::seeded(),
                VaultPolicy::default(),
            )
            .with_audit_signer(Arc::new(signer));
            vault.set_key_probe(Arc::new(NoUpstream));
            let operator = TokenText::generate(TokenKind::Admin);
            vault.register_operator_token(&operator).await.expect("the operator token");
            let operator = operator.expose().to_owned();
            let router = byok_admin::router(vault);
            // Something for every route to act on.
            let setup: [(&str, &str, &str); 10] = [
                ("POST", "/v1/orgs", r#"{"name":"acme","tier":"katman-c"}"#),
                ("POST", "/v1/orgs", r#"{"name":"startup","tier":"katman-a"}"#),
                ("POST", "/v1/orgs/acme/teams", r#"{"name":"agents"}"#),
                ("POST", "/v1/orgs/startup/teams", r#"{"name":"agents"}"#),
                ("POST", "/v1/orgs/acme/workflows", r#"{"name":"triage","team":"agents"}"#),
                (
                    "POST",
                    "/v1/orgs/acme/credentials",
                    r#"{"name":"prod","provider":"openai","secret":"sk-fuzz-0123456789abcdef","scope":{"teams":["agents"]},"expires_at":"2099-01-01T00:00:00Z"}"#,
                ),
                (
                    "POST",
                    "/v1/orgs/startup/credentials",
                    r#"{"name":"prod","provider":"anthropic","secret":"sk-ant-fuzz-0123456789abcdef"}"#,
                ),
                (
                    "POST",
                    "/v1/platform/credentials",
                    r#"{"name":"prod","provider":"openai","secret":"sk-platform-0123456789abcdef"}"#,
                ),
                ("POST", "/v1/orgs/startup/tokens", r#"{"team":"agents"}"#),
                ("POST", "/v1/orgs/acme/admin-tokens", "{}"),
            ];
            let mut org_admin = String::new();
            for (method, path, body) in setup {
                let (status, answer) = call(&router, method, path, &operator, body.as_bytes().to_vec()).await;
                assert!((200..300).contains(&status), "setup {method} {path}: {status} {}", String::from_utf8_lossy(&answer));
                if path.ends_with("/admin-tokens") {
                    let answer: Value = serde_json::from_slice(&answer).expect("JSON");
                    org_admin = answer["token"].as_str().expect("a token").to_owned();
                }
            }
            (router, operator, org_admin)
        });
        Harness { runtime, router, operator, org_admin, uses: 0, _dir: dir }
    }
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

/// The `secret` a body sends, when the rest of the body does not hold the same text (an
/// error may quote another field's value).
fn sent_secret(body: &[u8]) -> Option<String> {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else { return None };
    let Some(Value::String(secret)) = fields.remove("secret") else { return None };
    let rest = serde_json::to_string(&fields).unwrap_or_default();
    (secret.trim().len() >= 8 && !rest.contains(secret.trim())).then(|| secret.trim().to_owned())
}

fuzz_target!(|data: &[u8]| {
    let Some((&[route, who], body)) = data.split_first_chunk::<2>() else { return };
    let (method, template) = ROUTES[usize::from(route) % ROUTES.len()];
    let org = if who & 2 == 0 { "acme" } else { "startup" };
    let path = template.replace("{org}", org).replace("{cred}", "prod");
    HARNESS.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|h| h.uses >= REBUILD_EVERY) {
            *slot = None;
            *slot = Some(Harness::new());
        }
        let Some(harness) = slot.as_mut() else { return };
        harness.uses += 1;
        let token = if who & 1 == 0 { &harness.operator } else { &harness.org_admin };
        let (status, answer) = harness.runtime.block_on(call(&harness.router, method, &path, token, body.to_vec()));
        let text = String::from_utf8_lossy(&answer);
        assert!(status < 500, "{method} {path} answered {status}: {text}\nbody: {:?}", String::from_utf8_lossy(body));
        if status >= 400 {
            let error: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            assert!(
                error["error"]["code"].is_string() && error["error"]["message"].is_string(),
                "{method} {path} answered {status} without the JSON error body: {text}"
            );
        }
        let blank = body.iter().all(u8::is_ascii_whitespace);
        if !blank && !matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_))) {
            assert!(status >= 400, "{method} {path} accepted a body that is not a JSON object ({status}): {text}");
        }
        if let Some(secret) = sent_secret(body) {
            assert!(!text.contains(&secret), "{method} {path}: the secret came back: {text}");
        }
    });
});
