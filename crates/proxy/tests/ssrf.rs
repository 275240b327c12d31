//! Upstream safety at dial time (SPEC §3): a credential's `base_url` that resolves to a
//! non-public address is refused when dialled unless the operator configured that
//! upstream or allows private upstreams; an operator override that says so beats a
//! credential's `base_url`; and whatever goes wrong with a connection, the workload learns
//! `upstream_unreachable` / `upstream_timeout` and nothing else — the detail is logged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use byok_crypto::{Kms, ProviderSecret};
use byok_domain::{ModelFamilyRegistry, ProviderId, ScopeInput};
use byok_kms::KmsHandle;
use byok_mock_provider::{MockConfig, MockProvider, ScriptedResponse};
use byok_proxy::ProxyConfig;
use byok_store::testing::TestStore;
use byok_vault::{HostPattern, NewCredential, Vault, VaultPolicy};
use support::{actor, log_buffer, openai_chat, Env, CANARY_PREFIX, KMS_TIMEOUT};

/// A vault over the env's store and keyring whose operator policy lets openai credentials
/// name loopback hosts (as `[upstreams.openai] allowed_hosts` would), over plain http
/// too: what a credential may name is not what it may be dialled to.
fn loopback_vault(env: &Env) -> Vault {
    let policy = ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .fold(VaultPolicy { allow_plain_http_base_url: true, ..VaultPolicy::default() }, |policy, host| {
            policy.allow_host(ProviderId::Openai, HostPattern::parse(host).unwrap())
        });
    let kms = KmsHandle::new(Arc::clone(&env.kms) as Arc<dyn Kms>, 4).with_timeout(KMS_TIMEOUT);
    Vault::new(env.t.store().clone(), kms, ModelFamilyRegistry::seeded(), policy)
}

/// An openai credential named `name` at `base_url`, holding the key the mock accepts.
async fn credential_at(env: &Env, name: &str, base_url: &str) {
    let new = NewCredential {
        name: name.to_owned(),
        provider: ProviderId::Openai,
        secret: ProviderSecret::new(env.keys.openai.clone()).unwrap(),
        scope: ScopeInput::default(),
        base_url: Some(base_url.to_owned()),
        expires_at: None,
        priority: None,
        weight: None,
        rpm: None,
        tpm: None,
        verify: false,
    };
    loopback_vault(env).create_credential(&actor(), env.org.id, new).await.unwrap();
}

/// An openai chat call pinned to credential `name`, with call id `call_id`: status and body.
async fn call(env: &Env, token: &str, name: &str, call_id: &str) -> (u16, String) {
    let response = env
        .http
        .post(env.url("/openai/v1/chat/completions"))
        .bearer_auth(token)
        .header("x-byok-credential", name)
        .header("x-byok-call-id", call_id)
        .json(&openai_chat("gpt-4o", false))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert!(!body.contains(CANARY_PREFIX), "a key leaked into a response body: {body}");
    (status, body)
}

/// The log lines that name `call_id`.
fn log_lines_of(call_id: &str) -> String {
    let logs = log_buffer();
    let logs = logs.lock().unwrap();
    String::from_utf8_lossy(&logs).lines().filter(|line| line.contains(call_id)).collect::<Vec<_>>().join("\n")
}

/// The workload's answer is the code and a fixed message: no socket, resolver or TLS
/// error text, no address, no port.
fn assert_says_nothing_more(body: &str, code: &str, port: u16) {
    assert!(body.contains(code), "{body}");
    let lower = body.to_ascii_lowercase();
    for leak in [
        "refused",
        "127.0.0.1",
        "::1",
        "localhost",
        "loopback",
        "dns",
        "tcp",
        "tls",
        "certificate",
        "corrupt",
        "os error",
        &port.to_string(),
    ] {
        assert!(!lower.contains(leak), "the workload learns '{leak}': {body}");
    }
}

/// The completion recorded for `call_id`.
async fn completion_status(env: &Env, call_id: &str) -> String {
    for _ in 0..200 {
        if let Some(c) = env.t.store().list_completions(call_id).await.unwrap().first() {
            return c.status.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no completion for {call_id}");
}

/// The operator configured no upstream at all (the harness points every provider at the
/// mock: an origin named there, for any provider, is the operator's and is dialled
/// unchecked): only credentials decide where calls go.
fn no_operator_upstreams(config: &mut ProxyConfig) {
    config.upstreams.clear();
}

#[tokio::test]
async fn a_credential_upstream_on_a_loopback_address_is_refused_when_dialled() {
    let env = Env::start_with(TestStore::sqlite().await.unwrap(), MockConfig::default(), no_operator_upstreams).await;
    let port = env.mock.addr().port();
    let token = env.token(&[]).await;
    // A name that resolves to loopback (the resolver's check), and IP literals (checked
    // before any resolution).
    let table = [
        ("by-name", format!("http://localhost:{port}"), "localhost resolves only to addresses"),
        ("v4", format!("http://127.0.0.1:{port}"), "127.0.0.1 is a loopback address"),
        ("v6", format!("http://[::1]:{port}"), "::1 is a loopback address"),
        ("tls-by-name", format!("https://localhost:{port}"), "localhost resolves only to addresses"),
    ];
    for (name, base_url, logged) in &table {
        credential_at(&env, name, base_url).await;
        let call_id = format!("ssrf-refused-{name}");
        let (status, body) = call(&env, &token, name, &call_id).await;
        assert_eq!(status, 502, "{base_url}: {body}");
        assert_says_nothing_more(&body, "upstream_unreachable", port);
        assert_eq!(completion_status(&env, &call_id).await, "upstream_unreachable");
        let log = log_lines_of(&call_id);
        assert!(log.contains("refused to connect") && log.contains(logged), "{base_url}: the log says: {log}");
    }
    assert_eq!(env.mock.request_count(), 0, "a refused upstream was reached");
    env.stop().await;
}

#[tokio::test]
async fn allow_private_upstreams_lets_a_credential_upstream_on_loopback_connect() {
    let env = Env::start_with(TestStore::sqlite().await.unwrap(), MockConfig::default(), |c| {
        no_operator_upstreams(c);
        c.allow_private_upstreams = true;
    })
    .await;
    let port = env.mock.addr().port();
    let token = env.token(&[]).await;
    for (name, base_url) in
        [("by-name", format!("http://localhost:{port}")), ("v4", format!("http://127.0.0.1:{port}"))]
    {
        credential_at(&env, name, &base_url).await;
        let (status, body) = call(&env, &token, name, &format!("ssrf-allowed-{name}")).await;
        assert_eq!(status, 200, "{base_url}: {body}");
    }
    assert_eq!(env.mock.request_count(), 2);
    env.stop().await;
}

#[tokio::test]
async fn an_operator_upstream_on_loopback_is_dialled_and_only_its_origin() {
    // The harness points every provider at the mock: the operator's own configuration.
    let env = Env::start(TestStore::sqlite().await.unwrap()).await;
    let port = env.mock.addr().port();
    let token = env.token(&[]).await;
    // The same origin as the operator's override is the operator's upstream …
    credential_at(&env, "same-origin", &format!("http://127.0.0.1:{port}")).await;
    let (status, body) = call(&env, &token, "same-origin", "ssrf-operator-same").await;
    assert_eq!(status, 200, "{body}");
    // … another name for it is not.
    credential_at(&env, "other-name", &format!("http://localhost:{port}")).await;
    let (status, body) = call(&env, &token, "other-name", "ssrf-operator-other").await;
    assert_eq!(status, 502, "{body}");
    assert_says_nothing_more(&body, "upstream_unreachable", port);
    assert_eq!(env.mock.request_count(), 1);
    env.stop().await;
}

#[tokio::test]
async fn an_operator_override_with_override_credentials_beats_the_credentials_base_url() {
    for override_credentials in [false, true] {
        let env = Env::start_with(TestStore::sqlite().await.unwrap(), MockConfig::default(), |c| {
            c.allow_private_upstreams = true;
            let base = c.upstreams.remove(&ProviderId::Openai).unwrap();
            c.upstreams.insert(ProviderId::Openai, base.with_override_credentials(override_credentials));
        })
        .await;
        let elsewhere =
            MockProvider::start(MockConfig { openai_keys: vec![env.keys.openai.clone()], ..MockConfig::default() })
                .await
                .unwrap();
        credential_at(&env, "own", &elsewhere.base_url()).await;
        let token = env.token(&[]).await;
        let (status, body) = call(&env, &token, "own", &format!("ssrf-precedence-{override_credentials}")).await;
        assert_eq!(status, 200, "{body}");
        let (operator, credential) = if override_credentials { (1, 0) } else { (0, 1) };
        assert_eq!(env.mock.request_count(), operator, "override_credentials = {override_credentials}");
        assert_eq!(elsewhere.request_count(), credential, "override_credentials = {override_credentials}");
        elsewhere.shutdown().await;
        env.stop().await;
    }
}

#[tokio::test]
async fn connection_tls_and_timeout_failures_tell_the_workload_nothing_and_the_log_everything() {
    let env = Env::start_with(TestStore::sqlite().await.unwrap(), MockConfig::default(), |c| {
        c.allow_private_upstreams = true;
        c.response_timeout = Duration::from_millis(300);
    })
    .await;
    let token = env.token(&[]).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let plain = env.mock.addr().port();
    // (credential, base_url, port, what the log says)
    let table = [
        ("closed-port", format!("http://127.0.0.1:{closed}"), closed, "Connection refused"),
        ("tls-to-plain", format!("https://localhost:{plain}"), plain, "InvalidContentType"),
        ("tls-to-plain-v4", format!("https://127.0.0.1:{plain}"), plain, "InvalidContentType"),
    ];
    for (name, base_url, port, logged) in &table {
        credential_at(&env, name, base_url).await;
        let call_id = format!("ssrf-failure-{name}");
        let (status, body) = call(&env, &token, name, &call_id).await;
        assert_eq!(status, 502, "{base_url}: {body}");
        assert_says_nothing_more(&body, "upstream_unreachable", *port);
        let log = log_lines_of(&call_id);
        assert!(log.contains(" WARN ") && log.contains(logged), "{base_url}: the log says: {log}");
        assert!(log.contains(&format!("127.0.0.1:{port}")) || log.contains(&format!("localhost:{port}")), "{log}");
    }
    // The operator's upstream (the mock) hangs: 504, nothing more.
    credential_at(&env, "hangs", &format!("http://localhost:{plain}")).await;
    env.mock.set_next_response(ScriptedResponse::Hang);
    let (status, body) = call(&env, &token, "hangs", "ssrf-failure-timeout").await;
    assert_eq!(status, 504, "{body}");
    assert_says_nothing_more(&body, "upstream_timeout", plain);
    let log = log_lines_of("ssrf-failure-timeout");
    assert!(log.contains("did not answer within 0.3 s"), "the log says: {log}");
    env.stop().await;
}
