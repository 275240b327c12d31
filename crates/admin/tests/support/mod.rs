//! The admin API test harness: an in-process router over a real store (SQLite and
//! PostgreSQL) and a real local keyring; every answer is checked for leaked canaries.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use byok_crypto::{LocalKeyring, TokenKind, TokenText};
use byok_domain::ModelFamilyRegistry;
use byok_kms::KmsHandle;
use byok_store::testing::TestStore;
use byok_store::Backend;
use byok_vault::{KeyProbe, Vault, VaultPolicy};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const CANARY: &str = "sk-canary-7f3a9c1e5b2d4f60a8e1";
pub const CANARY_2: &str = "sk-canary-rotated-0c4d2e9f71ab";

pub const TABLES: [&str; 8] = [
    "orgs",
    "teams",
    "workflows",
    "credentials",
    "credential_versions",
    "workload_tokens",
    "admin_tokens",
    "lifecycle_events",
];

pub struct Harness {
    pub t: TestStore,
    pub dir: tempfile::TempDir,
    pub router: Router,
    pub operator: String,
}

pub struct Answer {
    pub status: StatusCode,
    pub json: Value,
    pub raw: String,
}

pub async fn harness(t: TestStore) -> Harness {
    harness_with(t, None).await
}

/// A harness whose vault has `probe` installed as the data plane's key probe (the admin
/// API alone has none: verification then fails closed).
pub async fn harness_with_probe(t: TestStore, probe: Arc<dyn KeyProbe>) -> Harness {
    harness_with(t, Some(probe)).await
}

async fn harness_with(t: TestStore, probe: Option<Arc<dyn KeyProbe>>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let keyring = LocalKeyring::open(dir.path().join("keyring.json")).unwrap();
    let vault = Vault::new(
        t.store().clone(),
        KmsHandle::new(Arc::new(keyring), 4),
        ModelFamilyRegistry::seeded(),
        VaultPolicy::default(),
    );
    if let Some(probe) = probe {
        vault.set_key_probe(probe);
    }
    let operator = TokenText::generate(TokenKind::Admin);
    vault.register_operator_token(&operator).await.unwrap();
    let router = byok_admin::router(vault);
    Harness { t, dir, router, operator: operator.expose().to_owned() }
}

impl Harness {
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Body::from(body.unwrap_or("").to_owned())).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = format!("{:?}", response.headers());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        assert!(!raw.contains(CANARY) && !raw.contains(CANARY_2), "a secret leaked into a response: {raw}");
        assert!(!headers.contains("canary"), "a secret leaked into response headers");
        let json = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Answer { status, json, raw }
    }

    pub async fn op(&self, method: Method, path: &str, body: Value) -> Answer {
        let body = body.to_string();
        self.call(method, path, Some(&self.operator.clone()), Some(&body)).await
    }

    pub async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let answer = self.op(method.clone(), path, body).await;
        assert!(answer.status.is_success(), "{method} {path}: {} {}", answer.status, answer.raw);
        answer.json
    }

    pub async fn counts(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in TABLES {
            counts.push(self.t.count(table).await.unwrap());
        }
        counts
    }

    pub fn keyring_bytes(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("keyring.json")).unwrap()
    }

    /// No canary in the raw database (file and WAL for SQLite, every row as text for
    /// PostgreSQL) nor in the keyring.
    pub async fn assert_no_plaintext_at_rest(&self, canaries: &[&str]) {
        for canary in canaries {
            let keyring = self.keyring_bytes();
            assert!(!contains(&keyring, canary.as_bytes()), "canary in keyring");
            match self.t.backend() {
                Backend::Sqlite => {
                    let path = self.t.sqlite_path().unwrap();
                    let mut files = vec![path.to_owned()];
                    for suffix in ["-wal", "-shm", "-journal"] {
                        files.push(path.with_file_name(format!("byok.db{suffix}")));
                    }
                    let mut searched = 0;
                    for file in files.iter().filter(|f| f.exists()) {
                        searched += 1;
                        let bytes = std::fs::read(file).unwrap();
                        assert!(!contains(&bytes, canary.as_bytes()), "canary in {}", file.display());
                    }
                    assert!(searched >= 1);
                }
                Backend::Postgres => {
                    let hex: String = canary.bytes().map(|b| format!("{b:02x}")).collect();
                    for table in TABLES {
                        let sql = format!(
                            "SELECT COUNT(*) FROM {table} t WHERE strpos(t::text, '{canary}') > 0 OR strpos(t::text, '{hex}') > 0"
                        );
                        assert_eq!(self.t.query_i64(&sql).await.unwrap(), 0, "canary in table {table}");
                    }
                }
            }
        }
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
