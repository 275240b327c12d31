//! The official provider SDKs (Python `openai` — `OpenAI` and `AzureOpenAI` — `anthropic`
//! and `google-genai`, unchanged but for base URL and key) against the real `byok serve`,
//! with the mock provider as upstream: chat, streams, the Responses API, embeddings,
//! Gemini's generate and stream, Azure deployments, scope denials as each SDK's own
//! permission error, and the usage byok recorded equal to what each SDK saw.
//!
//! Needs a Python with the packages: `BYOK_PYTHON` names it (CI builds a venv), else
//! `python3`. Without them the test says it was skipped — unless
//! `BYOK_REQUIRE_SDK_TESTS=1`, when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use byok_domain::Outcome;
use byok_mock_provider::{MockConfig, MockProvider, Provider};
use byok_store::{AuditFilter, Store};
use serde_json::{json, Value};
use support::completion_of;
use support::{script_stdout, without_sdk_env, Server};

const OPENAI_KEY: &str = "sk-canary-sdk-openai-5f1e2d3c4b5a69788796";
const ANTHROPIC_KEY: &str = "sk-ant-canary-sdk-0a1b2c3d4e5f60718293";
const GEMINI_KEY: &str = "AIzaSyCanary-sdk-gemini-1a2b3c4d5e6f7a8b9c";
const AZURE_KEY: &str = "0123456789abcdef0123456789abcdefcanaryaz";
const KEYS: [&str; 4] = [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, AZURE_KEY];
/// An Azure OpenAI resource host, as an admin sets it on the credential; the operator's
/// `[upstreams.azure-openai]` override sends its calls to the mock.
const AZURE_RESOURCE: &str = "https://acme-byok.openai.azure.com";
/// The Python packages the script imports.
const IMPORTS: &str = "import openai, anthropic, google.genai";

fn python() -> Option<String> {
    let python = std::env::var("BYOK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok = Command::new(&python).args(["-c", IMPORTS]).output().is_ok_and(|out| out.status.success());
    ok.then_some(python)
}

async fn admin(client: &reqwest::Client, server: &Server, token: &str, path: &str, body: Value) -> Value {
    let response =
        client.post(format!("{}{path}", server.admin_url)).bearer_auth(token).json(&body).send().await.unwrap();
    let status = response.status();
    let json: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {json}");
    json
}

fn python_or_skip(test: &str) -> Option<String> {
    let python = python();
    if python.is_none() {
        if std::env::var("BYOK_REQUIRE_SDK_TESTS").is_ok_and(|v| v == "1") {
            panic!(
                "BYOK_REQUIRE_SDK_TESTS=1 but no Python with the openai, anthropic and google-genai packages (set \
                 BYOK_PYTHON)"
            );
        }
        let _ =
            writeln!(std::io::stderr(), "skipped {test}: python openai/anthropic/google-genai packages not installed");
    }
    python
}

#[tokio::test(flavor = "multi_thread")]
async fn official_sdks_work_through_byok_unchanged() {
    let Some(python) = python_or_skip("official_sdks_work_through_byok_unchanged") else { return };
    scenario(python, "").await;
}

/// The same, with the orgs' KEKs in a PKCS#11 token (SoftHSM2).
#[tokio::test(flavor = "multi_thread")]
async fn official_sdks_work_through_byok_with_keys_in_an_hsm() {
    let test = "official_sdks_work_through_byok_with_keys_in_an_hsm";
    let Some(python) = python_or_skip(test) else { return };
    let scratch = tempfile::tempdir().unwrap();
    let Some(config) = byok_kms_pkcs11::testing::test_token(scratch.path()).unwrap() else {
        if byok_kms_pkcs11::testing::pkcs11_required() {
            panic!("BYOK_REQUIRE_PKCS11=1 but {}", byok_kms_pkcs11::testing::NOT_INSTALLED);
        }
        let _ = writeln!(std::io::stderr(), "skipped {test}: {}", byok_kms_pkcs11::testing::NOT_INSTALLED);
        return;
    };
    let toml = format!(
        "[kms]\nbackend = \"pkcs11\"\n[kms.pkcs11]\nmodule = {:?}\ntoken_label = {:?}\npin_file = {:?}\n",
        config.module.display().to_string(),
        config.token_label,
        config.pin_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
    );
    scenario(python, &toml).await;
}

/// Runs the SDK script against a `byok serve` configured with `toml` plus the mock as
/// every provider's upstream.
async fn scenario(python: String, toml: &str) {
    let mock = MockProvider::start(MockConfig {
        openai_keys: vec![OPENAI_KEY.to_owned()],
        anthropic_keys: vec![ANTHROPIC_KEY.to_owned()],
        gemini_keys: vec![GEMINI_KEY.to_owned()],
        azure_keys: vec![AZURE_KEY.to_owned()],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let upstream = mock.base_url();
    // Azure credentials name their resource; the operator's override (which wins over
    // credentials' base URLs) sends those calls to the mock, as a gateway would.
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("byok.toml");
    let toml = format!("{toml}\n[upstreams.azure-openai]\nbase_url = {upstream:?}\noverride_credentials = true\n");
    std::fs::write(&file, toml).unwrap();
    let env = [
        ("BYOK_CONFIG", file.to_str().unwrap()),
        ("BYOK_UPSTREAM_OPENAI", upstream.as_str()),
        ("BYOK_UPSTREAM_ANTHROPIC", upstream.as_str()),
        ("BYOK_UPSTREAM_GEMINI", upstream.as_str()),
    ];
    let server = Server::start_with(&env);
    let operator = std::fs::read_to_string(server.data_dir.path().join("operator.token")).unwrap();
    let operator = operator.trim();
    let http = reqwest::Client::new();

    admin(&http, &server, operator, "/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
    admin(&http, &server, operator, "/v1/orgs/acme/teams", json!({"name": "agents"})).await;
    admin(&http, &server, operator, "/v1/orgs/acme/teams", json!({"name": "outsiders"})).await;
    let scope = json!({"teams": ["agents"]});
    admin(
        &http,
        &server,
        operator,
        "/v1/orgs/acme/credentials",
        json!({"name": "openai", "provider": "openai", "secret": OPENAI_KEY, "scope": scope}),
    )
    .await;
    admin(
        &http,
        &server,
        operator,
        "/v1/orgs/acme/credentials",
        json!({"name": "claude", "provider": "anthropic", "secret": ANTHROPIC_KEY, "scope": scope}),
    )
    .await;
    admin(
        &http,
        &server,
        operator,
        "/v1/orgs/acme/credentials",
        json!({"name": "gemini", "provider": "gemini", "secret": GEMINI_KEY, "scope": scope}),
    )
    .await;
    admin(
        &http,
        &server,
        operator,
        "/v1/orgs/acme/credentials",
        json!({"name": "azure", "provider": "azure-openai", "secret": AZURE_KEY, "scope": scope,
               "base_url": AZURE_RESOURCE}),
    )
    .await;
    let token = admin(&http, &server, operator, "/v1/orgs/acme/tokens", json!({"team": "agents"})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let denied = admin(&http, &server, operator, "/v1/orgs/acme/tokens", json!({"team": "outsiders"})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // A katman-a org with no key of its own: the platform pool serves it, one call's worth.
    let mut platform = Vec::new();
    for (name, provider, secret) in
        [("shared-openai", "openai", OPENAI_KEY), ("shared-claude", "anthropic", ANTHROPIC_KEY)]
    {
        let body = json!({"name": name, "provider": provider, "secret": secret});
        platform.push(
            admin(&http, &server, operator, "/v1/platform/credentials", body).await["id"].as_str().unwrap().to_owned(),
        );
    }
    admin(&http, &server, operator, "/v1/orgs", json!({"name": "startup", "tier": "katman-a"})).await;
    admin(&http, &server, operator, "/v1/orgs/startup/teams", json!({"name": "app"})).await;
    let budget = http
        .put(format!("{}/v1/orgs/startup/budget", server.admin_url))
        .bearer_auth(operator)
        .json(&json!({"monthly_limit": "0.000001"}))
        .send()
        .await
        .unwrap();
    assert!(budget.status().is_success());
    let startup = admin(&http, &server, operator, "/v1/orgs/startup/tokens", json!({"team": "app"})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let platform = platform.join(",");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/sdk_e2e.py");
    let output = tokio::task::spawn_blocking(move || {
        // The SDKs would prefer keys and endpoints from the environment.
        without_sdk_env(&mut Command::new(python))
            .arg(script)
            .env("BYOK_PROXY", &server.proxy_url)
            .env("BYOK_TOKEN", &token)
            .env("BYOK_DENIED_TOKEN", &denied)
            .env("BYOK_STARTUP_TOKEN", &startup)
            .env("BYOK_PLATFORM_CREDENTIALS", &platform)
            .output()
            .map(|out| (out, server))
    })
    .await
    .unwrap()
    .unwrap();
    let (output, server) = output;
    let stdout = script_stdout("the SDK script", &output, &server, &KEYS);
    let seen: Value = serde_json::from_str(&stdout).unwrap();

    // What reached the provider: each provider's exact stored key in its own header,
    // never the workload token, and never a key in a URL.
    let requests = mock.requests();
    assert!(requests.len() >= 17, "{} requests", requests.len());
    for request in &requests {
        let what = format!("{} {}", request.method, request.path);
        assert!(request.key_valid, "{what} carried a wrong key");
        assert!(request.headers.iter().all(|(_, v)| !v.contains("byok_")), "{what}: workload token forwarded");
        assert!(!request.path.contains("byok_") && request.query_param("key").is_none(), "{what}: key in the URL");
        let (key, header) = match request.provider {
            Provider::OpenAi => (OPENAI_KEY, "authorization"),
            Provider::Anthropic => (ANTHROPIC_KEY, "x-api-key"),
            Provider::Gemini => (GEMINI_KEY, "x-goog-api-key"),
            Provider::AzureOpenAi => (AZURE_KEY, "api-key"),
            other => panic!("{what}: an unexpected provider {other}"),
        };
        assert_eq!(request.presented_key.as_deref(), Some(key), "{what}");
        assert!(request.header(header).is_some_and(|v| v.ends_with(key)), "{what}: no {header}");
        for other in ["authorization", "x-api-key", "x-goog-api-key", "api-key"].into_iter().filter(|h| *h != header) {
            assert!(!request.has_header(other), "{what}: a stray {other} header");
        }
    }
    // The paths each SDK used, as the providers serve them.
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    for expected in [
        "/v1/responses",
        "/v1/embeddings",
        "/v1/models/gemini-2.5-flash:generateContent",
        "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
    ] {
        assert!(paths.contains(&expected), "no request to {expected}: {paths:#?}");
    }

    // Every SDK call has its audit row; the named calls are allowed, the denial is denied.
    let store = Store::open_sqlite(&server.data_dir.path().join("byok.db")).await.unwrap();
    let orgs = store.list_orgs().await.unwrap();
    let org = &orgs.iter().find(|o| o.name.as_str() == "acme").unwrap().id;
    let startup = &orgs.iter().find(|o| o.name.as_str() == "startup").unwrap().id;
    // Each named call's usage, as byok recorded it, is what the SDK reported.
    let reported = seen["usage"].as_object().unwrap();
    assert_eq!(reported.len(), 13, "{reported:?}");
    for (call_id, usage) in reported {
        let rows = store
            .list_audit(Some(org), &AuditFilter { call_id: Some(call_id.clone()), ..AuditFilter::default() })
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{call_id}");
        assert_eq!(rows[0].outcome, Outcome::Allowed);
        let completion = completion_of(&store, call_id).await;
        assert_eq!(completion.upstream_status, Some(200), "{call_id}");
        let expected = (usage[0].as_u64(), usage[1].as_u64());
        assert!(expected.0.is_some_and(|n| n > 0), "{call_id}: the SDK saw no input tokens");
        assert_eq!((completion.input_tokens, completion.output_tokens), expected, "{call_id}: usage recorded");
    }
    let denied_rows = store
        .list_audit(Some(org), &AuditFilter { outcome: Some(Outcome::Denied), ..AuditFilter::default() })
        .await
        .unwrap();
    assert_eq!(denied_rows.len(), 4, "the out-of-scope team's calls: OpenAI, Anthropic, Azure, Gemini");
    assert!(denied_rows.iter().all(|row| row.reason.as_deref() == Some("scope_denied")));
    let allowed_of = |org| {
        let store = store.clone();
        async move {
            store
                .list_audit(Some(org), &AuditFilter { outcome: Some(Outcome::Allowed), ..AuditFilter::default() })
                .await
                .unwrap()
        }
    };
    let (allowed, served) = (allowed_of(org).await, allowed_of(startup).await);
    assert_eq!(allowed.len() + served.len(), requests.len(), "one allowed row per request that reached the provider");
    // The startup's one call was the platform's, and refused ones were refused for its budget.
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].credential_owner, Some(byok_domain::CredentialOwner::Platform));
    let refused = store
        .list_audit(Some(startup), &AuditFilter { outcome: Some(Outcome::Denied), ..AuditFilter::default() })
        .await
        .unwrap();
    assert_eq!(refused.iter().map(|r| r.reason.as_deref()).collect::<Vec<_>>(), [Some("budget_exceeded"); 2]);
    store.close().await;
    drop(server);
    mock.shutdown().await;
}
