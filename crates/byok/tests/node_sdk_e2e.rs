//! The official Node.js SDKs (`openai` — `OpenAI` and `AzureOpenAI` — and
//! `@anthropic-ai/sdk`, unchanged but for base URL and key) against the real `byok serve`,
//! with the mock provider as upstream: chat and messages, sync and streamed, scope
//! denials as each SDK's own `PermissionDeniedError`, and the usage byok recorded equal to
//! what each SDK saw.
//!
//! Needs `node` (`BYOK_NODE` names another) and the packages of `e2e/node` installed
//! there (`npm ci --prefix e2e/node`). Without them the test says it was skipped — unless
//! `BYOK_REQUIRE_NODE_SDK_TESTS=1`, when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use byok_domain::Outcome;
use byok_mock_provider::{MockConfig, MockProvider, Provider};
use byok_store::{AuditFilter, Store};
use serde_json::{json, Value};
use support::completion_of;
use support::{admin_json, operator_token, script_stdout, without_sdk_env, Server};

const OPENAI_KEY: &str = "sk-canary-node-openai-7a6b5c4d3e2f1a0b9c8d";
const ANTHROPIC_KEY: &str = "sk-ant-canary-node-1f2e3d4c5b6a79880796";
const AZURE_KEY: &str = "fedcba9876543210fedcba9876543210canarynd";
const KEYS: [&str; 3] = [OPENAI_KEY, ANTHROPIC_KEY, AZURE_KEY];

fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/node")
}

/// The `node` to run, if it can import both SDKs from `e2e/node`.
fn node_or_skip(test: &str) -> Option<String> {
    let node = std::env::var("BYOK_NODE").unwrap_or_else(|_| "node".to_owned());
    let ok = Command::new(&node)
        .current_dir(project())
        .args(["--input-type=module", "-e", "await import('openai'); await import('@anthropic-ai/sdk');"])
        .output()
        .is_ok_and(|out| out.status.success());
    if ok {
        return Some(node);
    }
    if std::env::var("BYOK_REQUIRE_NODE_SDK_TESTS").is_ok_and(|v| v == "1") {
        panic!(
            "BYOK_REQUIRE_NODE_SDK_TESTS=1 but {node} cannot import the SDKs of e2e/node (npm ci --prefix e2e/node)"
        );
    }
    let _ = writeln!(std::io::stderr(), "skipped {test}: node or the npm packages of e2e/node are not installed");
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn official_node_sdks_work_through_byok_unchanged() {
    let Some(node) = node_or_skip("official_node_sdks_work_through_byok_unchanged") else { return };
    let mock = MockProvider::start(MockConfig {
        openai_keys: vec![OPENAI_KEY.to_owned()],
        anthropic_keys: vec![ANTHROPIC_KEY.to_owned()],
        azure_keys: vec![AZURE_KEY.to_owned()],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let upstream = mock.base_url();
    // The Azure credential names its resource; the operator's override sends it to the mock.
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("byok.toml");
    std::fs::write(
        &config,
        format!("[upstreams.azure-openai]\nbase_url = {upstream:?}\noverride_credentials = true\n"),
    )
    .unwrap();
    let server = Server::start_with(&[
        ("BYOK_CONFIG", config.to_str().unwrap()),
        ("BYOK_UPSTREAM_OPENAI", upstream.as_str()),
        ("BYOK_UPSTREAM_ANTHROPIC", upstream.as_str()),
    ]);
    let operator = operator_token(&server);
    let http = reqwest::Client::new();
    let admin = |path: &str, body: Value| {
        admin_json(&http, reqwest::Method::POST, format!("{}{path}", server.admin_url), &operator, Some(body))
    };
    admin("/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
    admin("/v1/orgs/acme/teams", json!({"name": "agents"})).await;
    admin("/v1/orgs/acme/teams", json!({"name": "outsiders"})).await;
    let scope = json!({"teams": ["agents"]});
    for (name, provider, secret) in
        [("openai", "openai", OPENAI_KEY), ("claude", "anthropic", ANTHROPIC_KEY), ("azure", "azure-openai", AZURE_KEY)]
    {
        let mut body = json!({"name": name, "provider": provider, "secret": secret, "scope": scope});
        if provider == "azure-openai" {
            body["base_url"] = json!("https://acme-byok.openai.azure.com");
        }
        admin("/v1/orgs/acme/credentials", body).await;
    }
    let token = admin("/v1/orgs/acme/tokens", json!({"team": "agents"})).await["token"].as_str().unwrap().to_owned();
    let denied =
        admin("/v1/orgs/acme/tokens", json!({"team": "outsiders"})).await["token"].as_str().unwrap().to_owned();

    let proxy = server.proxy_url.clone();
    let output = tokio::task::spawn_blocking(move || {
        // The SDKs would prefer keys and endpoints from the environment.
        without_sdk_env(&mut Command::new(node))
            .current_dir(project())
            .arg("sdk_e2e.mjs")
            .env("BYOK_PROXY", proxy)
            .env("BYOK_TOKEN", &token)
            .env("BYOK_DENIED_TOKEN", &denied)
            .output()
            .map(|out| (out, token))
    })
    .await
    .unwrap()
    .unwrap();
    let (output, token) = output;
    let stdout = script_stdout("the Node SDK script", &output, &server, &KEYS);
    let seen: Value = serde_json::from_str(&stdout).unwrap();

    // What reached the provider: each provider's exact stored key in its own header,
    // never the workload token.
    let requests = mock.requests();
    assert_eq!(requests.len(), 6, "{requests:#?}");
    for request in &requests {
        let what = format!("{} {}", request.method, request.path);
        assert!(request.key_valid, "{what} carried a wrong key");
        assert!(request.headers.iter().all(|(_, v)| !v.contains(&token) && !v.contains("byok_")), "{what}: token");
        let (key, header) = match request.provider {
            Provider::OpenAi => (OPENAI_KEY, "authorization"),
            Provider::Anthropic => (ANTHROPIC_KEY, "x-api-key"),
            Provider::AzureOpenAi => (AZURE_KEY, "api-key"),
            other => panic!("{what}: an unexpected provider {other}"),
        };
        assert_eq!(request.presented_key.as_deref(), Some(key), "{what}");
        assert!(request.header(header).is_some_and(|v| v.ends_with(key)), "{what}: no {header}");
        for other in ["authorization", "x-api-key", "api-key"].into_iter().filter(|h| *h != header) {
            assert!(!request.has_header(other), "{what}: a stray {other} header");
        }
    }
    assert!(requests
        .iter()
        .any(|r| r.path == "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"));

    // Each named call's usage, as byok recorded it, is what the SDK reported.
    let store = Store::open_sqlite(&server.data_dir.path().join("byok.db")).await.unwrap();
    let orgs = store.list_orgs().await.unwrap();
    let org = &orgs.iter().find(|o| o.name.as_str() == "acme").unwrap().id;
    let reported = seen["usage"].as_object().unwrap();
    assert_eq!(reported.len(), 6, "{reported:?}");
    for (call_id, usage) in reported {
        let rows = store
            .list_audit(Some(org), &AuditFilter { call_id: Some(call_id.clone()), ..AuditFilter::default() })
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{call_id}");
        assert_eq!(rows[0].outcome, Outcome::Allowed);
        let completion = completion_of(&store, call_id).await;
        let expected = (usage[0].as_u64(), usage[1].as_u64());
        assert!(expected.0.is_some_and(|n| n > 0) && expected.1.is_some_and(|n| n > 0), "{call_id}: {usage}");
        assert_eq!((completion.input_tokens, completion.output_tokens), expected, "{call_id}: usage recorded");
    }
    let denied_rows = store
        .list_audit(Some(org), &AuditFilter { outcome: Some(Outcome::Denied), ..AuditFilter::default() })
        .await
        .unwrap();
    assert_eq!(denied_rows.len(), 3, "the out-of-scope team's calls: OpenAI, Azure, Anthropic");
    assert!(denied_rows.iter().all(|row| row.reason.as_deref() == Some("scope_denied")));
    store.close().await;
    drop(server);
    mock.shutdown().await;
}
