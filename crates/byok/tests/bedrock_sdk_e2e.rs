//! boto3's `bedrock-runtime` client, unchanged but for `endpoint_url`, the CA it trusts and
//! its Bedrock bearer token (the byok workload token in `AWS_BEARER_TOKEN_BEDROCK`),
//! against a real `byok serve` with TLS on the data plane: Converse (model id and
//! inference profile), ConverseStream, InvokeModel and InvokeModelWithResponseStream,
//! each signed by byok with SigV4 from the stored access key and verified by the mock;
//! the usage byok recorded is what boto3 saw; a scope denial is boto3's own
//! `AccessDeniedException`.
//!
//! Needs a Python with boto3: `BYOK_PYTHON` names it (CI builds a venv), else `python3`.
//! Without it the test says it was skipped — unless `BYOK_REQUIRE_SDK_TESTS=1`, when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use byok_domain::Outcome;
use byok_mock_provider::{BedrockAccessKey, MockConfig, MockProvider, Provider};
use byok_store::{AuditFilter, Store};
use serde_json::{json, Value};
use support::completion_of;
use support::pki::Pki;
use support::{admin_json, operator_token, script_stdout, Server};

const KEY_ID: &str = "AKIACANARYBEDROCKE2E7";
const SECRET: &str = "canary-bedrock-secret/3f9a8b7c6d5e4f30a1b2c3d4e5f6a7b8c9d0e1f2";

fn python_or_skip(test: &str) -> Option<String> {
    let python = std::env::var("BYOK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    if Command::new(&python).args(["-c", "import boto3"]).output().is_ok_and(|out| out.status.success()) {
        return Some(python);
    }
    if std::env::var("BYOK_REQUIRE_SDK_TESTS").is_ok_and(|v| v == "1") {
        panic!("BYOK_REQUIRE_SDK_TESTS=1 but no Python with boto3 (set BYOK_PYTHON)");
    }
    let _ = writeln!(std::io::stderr(), "skipped {test}: python boto3 not installed");
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_bedrock_runtime_works_through_byok_unchanged() {
    let Some(python) = python_or_skip("boto3_bedrock_runtime_works_through_byok_unchanged") else { return };
    let pki = Pki::new();
    let mock = MockProvider::start(MockConfig {
        bedrock_access_keys: vec![BedrockAccessKey {
            access_key_id: KEY_ID.to_owned(),
            secret_access_key: SECRET.to_owned(),
            session_token: None,
        }],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let upstream = mock.base_url();
    let server = Server::start_tls(&pki, &[("BYOK_UPSTREAM_BEDROCK", upstream.as_str())]);
    let operator = operator_token(&server);
    let http = reqwest::Client::new();
    let admin = |path: &str, body: Value| {
        admin_json(&http, reqwest::Method::POST, format!("{}{path}", server.admin_url), &operator, Some(body))
    };
    admin("/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
    admin("/v1/orgs/acme/teams", json!({"name": "apps"})).await;
    admin("/v1/orgs/acme/teams", json!({"name": "outsiders"})).await;
    let secret = json!({"access_key_id": KEY_ID, "secret_access_key": SECRET, "region": "us-east-1"}).to_string();
    let created = admin(
        "/v1/orgs/acme/credentials",
        json!({"name": "aws", "provider": "bedrock", "secret": secret, "scope": {"teams": ["apps"]}}),
    )
    .await;
    assert!(!created.to_string().contains(SECRET), "the secret was echoed");
    let token = admin("/v1/orgs/acme/tokens", json!({"team": "apps"})).await["token"].as_str().unwrap().to_owned();
    let denied =
        admin("/v1/orgs/acme/tokens", json!({"team": "outsiders"})).await["token"].as_str().unwrap().to_owned();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/bedrock_e2e.py");
    let proxy = server.proxy_url.replacen("http://", "https://", 1);
    let ca = pki.path("ca.pem");
    let output = tokio::task::spawn_blocking({
        let (token, denied) = (token.clone(), denied.clone());
        move || {
            let mut command = Command::new(python);
            command
                .arg(script)
                .env("BYOK_PROXY", &proxy)
                .env("BYOK_CA", &ca)
                .env("BYOK_TOKEN", &token)
                .env("BYOK_DENIED_TOKEN", &denied);
            // Nothing of the developer's own AWS setup: the bearer token is the only credential.
            for var in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE",
                "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE",
                "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                "AWS_BEARER_TOKEN_BEDROCK",
                "AWS_CA_BUNDLE",
            ] {
                command.env_remove(var);
            }
            command.env("AWS_CONFIG_FILE", "/dev/null").env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
            command.env("AWS_EC2_METADATA_DISABLED", "true");
            command.output()
        }
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = script_stdout("the boto3 script", &output, &server, &[SECRET]);
    let seen: Value = serde_json::from_str(&stdout).unwrap();
    assert!(seen["denied"].as_str().unwrap().contains("team"), "{seen}");

    // What reached the provider: byok's SigV4 signature from the stored key, verified by
    // the mock; never the workload token; exactly the paths boto3 asked for.
    let requests = mock.requests();
    assert_eq!(requests.len(), 5, "{requests:#?}");
    for request in &requests {
        let what = format!("{} {}", request.method, request.path);
        assert_eq!(request.provider, Provider::Bedrock, "{what}");
        assert!(request.key_valid, "{what}: the mock refused byok's signature: {:?}", request.headers);
        assert_eq!(request.presented_key.as_deref(), Some(KEY_ID), "{what}");
        assert!(request.header("authorization").is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential=")));
        assert!(request.headers.iter().all(|(_, v)| !v.contains("byok_") && !v.contains(SECRET)), "{what}");
    }
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    for action in ["converse", "converse-stream", "invoke", "invoke-with-response-stream"] {
        let expected = format!("/model/anthropic.claude-3-haiku-20240307-v1%3A0/{action}");
        assert!(paths.contains(&expected.as_str()), "no request to {expected}: {paths:#?}");
    }
    assert!(paths.contains(&"/model/us.anthropic.claude-3-haiku-20240307-v1%3A0/converse"), "{paths:#?}");

    // Each call's usage, as byok recorded it, is what boto3 saw, in call order; the denial
    // is audited as scope_denied.
    let store = Store::open_sqlite(&server.data_dir.path().join("byok.db")).await.unwrap();
    let orgs = store.list_orgs().await.unwrap();
    let org = &orgs.iter().find(|o| o.name.as_str() == "acme").unwrap().id;
    let allowed = store
        .list_audit(Some(org), &AuditFilter { outcome: Some(Outcome::Allowed), ..AuditFilter::default() })
        .await
        .unwrap();
    let reported = seen["usage"].as_array().unwrap();
    assert_eq!(allowed.len(), reported.len(), "{reported:?}");
    for (row, usage) in allowed.iter().zip(reported) {
        let completion = completion_of(&store, &row.call_id).await;
        assert_eq!(completion.upstream_status, Some(200), "{usage}");
        assert_eq!(
            (completion.input_tokens, completion.output_tokens),
            (usage[1].as_u64(), usage[2].as_u64()),
            "{usage}"
        );
        assert_eq!(row.model_family.as_deref(), Some("claude-haiku"), "{usage}");
    }
    let refused = store
        .list_audit(Some(org), &AuditFilter { outcome: Some(Outcome::Denied), ..AuditFilter::default() })
        .await
        .unwrap();
    assert_eq!(refused.iter().map(|r| r.reason.as_deref()).collect::<Vec<_>>(), [Some("scope_denied")]);
    store.close().await;
    drop(server);
    mock.shutdown().await;
}
