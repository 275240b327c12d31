//! The data plane's contract, end to end over real HTTP: sidecar in-process, real store
//! and keyring, the mock provider as every upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

mod support;

use std::time::Duration;

use byok_domain::{Capability, Mode, Outcome, ProviderId, ScopeInput};
use byok_mock_provider::{MockConfig, ScriptedResponse};
use byok_store::testing::{for_each_backend, TestStore};
use serde_json::{json, Value};
use support::{access_line, anthropic_messages, log_buffer, openai_chat, Env, CANARY_PREFIX};

/// Send a request through the sidecar with the workload token in the header the
/// provider's SDK uses.
async fn send(
    env: &Env,
    provider: ProviderId,
    token: &str,
    path: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let url = env.url(&format!("/{}{path}", provider.as_str()));
    let mut request = match &body {
        Some(body) => env.http.post(url).json(body),
        None => env.http.get(url),
    };
    request = match provider {
        ProviderId::Anthropic => request.header("x-api-key", token).header("anthropic-version", "2023-06-01"),
        ProviderId::Gemini => request.header("x-goog-api-key", token),
        ProviderId::AzureOpenai => request.header("api-key", token),
        _ => request.bearer_auth(token),
    };
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn text_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let headers = format!("{:?}", response.headers());
    let body = response.text().await.unwrap();
    assert!(!body.contains(CANARY_PREFIX), "a key leaked into a response body: {body}");
    assert!(!headers.contains(CANARY_PREFIX), "a key leaked into response headers: {headers}");
    (status, headers, body)
}

fn assert_no_key_in_logs() {
    let logs = log_buffer();
    let logs = logs.lock().unwrap();
    let text = String::from_utf8_lossy(&logs);
    assert!(!text.contains(CANARY_PREFIX), "a key leaked into the trace log");
}

/// For each provider: the request reaches the right upstream path with exactly the
/// stored key in the provider's header, no workload token and no byok header.
#[tokio::test]
async fn injected_header_is_exactly_the_stored_secret_for_each_provider() {
    let env = Env::start(TestStore::sqlite().await.unwrap()).await;
    let table: Vec<(ProviderId, &str, Option<Value>, &str, &str)> = vec![
        (ProviderId::Openai, "/v1/chat/completions", Some(openai_chat("gpt-4o", false)), "authorization", "Bearer "),
        (ProviderId::Openai, "/v1/models", None, "authorization", "Bearer "),
        (ProviderId::Anthropic, "/v1/messages", Some(anthropic_messages("claude-sonnet-4-5", false)), "x-api-key", ""),
        (
            ProviderId::Gemini,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            Some(json!({"contents":[{"parts":[{"text":"hi"}]}]})),
            "x-goog-api-key",
            "",
        ),
        (
            ProviderId::AzureOpenai,
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
            Some(openai_chat("ignored", false)),
            "api-key",
            "",
        ),
        (
            ProviderId::Mistral,
            "/v1/chat/completions",
            Some(openai_chat("mistral-large", false)),
            "authorization",
            "Bearer ",
        ),
        (
            ProviderId::Groq,
            "/openai/v1/chat/completions",
            Some(openai_chat("llama-3.3-70b", false)),
            "authorization",
            "Bearer ",
        ),
        (ProviderId::Openrouter, "/api/v1/chat/completions", Some(openai_chat("x", false)), "authorization", "Bearer "),
        (ProviderId::Together, "/v1/chat/completions", Some(openai_chat("x", false)), "authorization", "Bearer "),
        (
            ProviderId::Deepseek,
            "/v1/chat/completions",
            Some(openai_chat("deepseek-chat", false)),
            "authorization",
            "Bearer ",
        ),
        (ProviderId::Xai, "/v1/chat/completions", Some(openai_chat("grok-4", false)), "authorization", "Bearer "),
    ];
    for provider in [
        ProviderId::Openai,
        ProviderId::Anthropic,
        ProviderId::Gemini,
        ProviderId::AzureOpenai,
        ProviderId::Mistral,
        ProviderId::Groq,
        ProviderId::Openrouter,
        ProviderId::Together,
        ProviderId::Deepseek,
        ProviderId::Xai,
    ] {
        env.credential(&format!("{}-main", provider.as_str()), provider, ScopeInput::default()).await;
    }
    let token = env.token(&[]).await;
    for (provider, path, body, header, prefix) in table {
        env.mock.clear();
        let response = send(&env, provider, &token, path, body, &[("x-byok-call-id", "call-inject")]).await;
        assert!(response.headers()["x-byok-credential"].to_str().unwrap().starts_with("cred_"));
        let (status, _, body) = text_of(response).await;
        assert_eq!(status, 200, "{provider} {path}: {body}");
        let seen = env.mock.requests();
        assert_eq!(seen.len(), 1, "{provider}");
        let request = &seen[0];
        let expected = format!("{prefix}{}", env.keys.for_provider(provider));
        assert_eq!(request.header(header), Some(expected.as_str()), "{provider}: injected header");
        assert!(request.key_valid, "{provider}: the mock accepted the key");
        assert_eq!(request.path, path, "{provider}: upstream path and query pass through");
        for (name, value) in &request.headers {
            assert!(!value.contains("byok_"), "{provider}: workload token forwarded in {name}");
            assert!(!name.starts_with("x-byok-"), "{provider}: byok header {name} forwarded");
        }
        let credential_headers = ["authorization", "x-api-key", "api-key", "x-goog-api-key"];
        let present: Vec<&str> = credential_headers.iter().copied().filter(|h| request.has_header(h)).collect();
        assert_eq!(present, [header], "{provider}: exactly one credential header");
    }
    assert_no_key_in_logs();
    env.stop().await;
}

/// Each scope dimension refuses a mismatch, names itself, and nothing reaches the mock.
#[tokio::test]
async fn each_scope_dimension_denies_with_its_name_and_sends_nothing() {
    for_each_backend("each_scope_dimension_denies_with_its_name_and_sends_nothing", |t| async move {
        let env = Env::start(t).await;
        let org = env.org.id;
        let other_team = env.vault.create_team(&support::actor(), org, "other").await.unwrap();
        let wf = env.vault.create_workflow(&support::actor(), org, "summarize", None).await.unwrap();
        env.vault.create_workflow(&support::actor(), org, "translate", None).await.unwrap();
        let scope = |f: fn(&mut ScopeInput)| {
            let mut s = ScopeInput::default();
            f(&mut s);
            s
        };
        env.credential("families", ProviderId::Openai, scope(|s| s.model_families = vec!["gpt-4o".into()])).await;
        env.credential("capabilities", ProviderId::Openai, scope(|s| s.capabilities = vec![Capability::Embeddings]))
            .await;
        env.credential("modes", ProviderId::Openai, scope(|s| s.modes = vec![Mode::Stream])).await;
        env.credential("teams", ProviderId::Openai, scope(|s| s.teams = vec!["other".into()])).await;
        env.credential("workflows", ProviderId::Openai, scope(|s| s.workflows = vec!["summarize".into()])).await;
        env.credential("openai-only", ProviderId::Openai, ScopeInput::default()).await;
        env.vault
            .change_credential_state(&support::actor(), org, "openai-only", byok_vault::StateChange::Disable)
            .await
            .unwrap();
        let token = env.token(&[]).await;
        let _ = (other_team, wf);

        let chat = || Some(openai_chat("gpt-4o-mini", false));
        let cases: Vec<(&str, ProviderId, &str, Option<Value>, Vec<(&str, &str)>, &str)> = vec![
            ("families", ProviderId::Openai, "/v1/chat/completions", chat(), vec![], "model_family"),
            (
                "capabilities",
                ProviderId::Openai,
                "/v1/chat/completions",
                Some(openai_chat("gpt-4o", false)),
                vec![],
                "capability",
            ),
            ("modes", ProviderId::Openai, "/v1/chat/completions", Some(openai_chat("gpt-4o", false)), vec![], "mode"),
            ("teams", ProviderId::Openai, "/v1/chat/completions", chat(), vec![], "team"),
            (
                "workflows",
                ProviderId::Openai,
                "/v1/chat/completions",
                chat(),
                vec![("x-byok-workflow", "translate")],
                "workflow",
            ),
            (
                "openai-only",
                ProviderId::Anthropic,
                "/v1/messages",
                Some(anthropic_messages("claude-sonnet-4-5", false)),
                vec![],
                "provider",
            ),
        ];
        for (pin, provider, path, body, mut headers, dimension) in cases {
            headers.push(("x-byok-credential", pin));
            let call_id = format!("call-{pin}");
            headers.push(("x-byok-call-id", &call_id));
            let (status, _, text) = text_of(send(&env, provider, &token, path, body, &headers).await).await;
            assert_eq!(status, 403, "{pin}: {text}");
            let json: Value = serde_json::from_str(&text).unwrap();
            let error = &json["error"];
            assert_eq!(error["code"], "scope_denied", "{pin}: {text}");
            let message = error["message"].as_str().unwrap();
            assert!(message.starts_with(&format!("{dimension}:")), "{pin}: message {message:?} must name {dimension}");
            assert_eq!(env.mock.request_count(), 0, "{pin}: a denied call must not reach the provider");
            let rows = env.audit_rows(&call_id).await;
            assert_eq!(rows.len(), 1, "{pin}: exactly one audit row");
            assert_eq!(rows[0].outcome, Outcome::Denied);
            assert_eq!(rows[0].reason.as_deref(), Some("scope_denied"));
        }
        // The pinned OpenAI-only credential on the Anthropic route says so in the spec's words.
        let (_, _, text) = text_of(
            send(
                &env,
                ProviderId::Anthropic,
                &token,
                "/v1/messages",
                Some(anthropic_messages("claude-sonnet-4-5", false)),
                &[("x-byok-credential", "openai-only")],
            )
            .await,
        )
        .await;
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["type"], "error", "Anthropic's error shape");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is bound to provider openai; this call is to anthropic"),
            "{text}"
        );
        assert_eq!(env.mock.request_count(), 0);
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Denials of every kind: code, status, provider shape, an audit row, no upstream request.
#[tokio::test]
async fn denials_have_the_specs_codes_and_open_no_connection() {
    let env = Env::start(TestStore::sqlite().await.unwrap()).await;
    let org = env.org.id;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    env.credential(
        "gone",
        ProviderId::Openai,
        ScopeInput { model_families: vec!["o-series".into()], ..ScopeInput::default() },
    )
    .await;
    env.vault.change_credential_state(&support::actor(), org, "gone", byok_vault::StateChange::Revoke).await.unwrap();
    env.credential("off", ProviderId::Anthropic, ScopeInput::default()).await;
    env.vault.change_credential_state(&support::actor(), org, "off", byok_vault::StateChange::Disable).await.unwrap();
    let token = env.token(&[]).await;
    let revoked_token = env.token(&[]).await;
    let revoked_id = env.vault.list_workload_tokens(org).await.unwrap().last().unwrap().id;
    env.vault.revoke_workload_token(&support::actor(), org, revoked_id).await.unwrap();
    env.vault.create_workflow(&support::actor(), org, "wf1", None).await.unwrap();
    let restricted = env.token(&["wf1"]).await;

    let chat = Some(openai_chat("gpt-4o", false));
    let cases: Vec<(&str, ProviderId, &str, &str, Option<Value>, Vec<(&str, &str)>, u16, &str)> = vec![
        (
            "no token",
            ProviderId::Openai,
            "",
            "/v1/chat/completions",
            chat.clone(),
            vec![],
            401,
            "invalid_workload_token",
        ),
        (
            "provider key instead of token",
            ProviderId::Openai,
            "sk-real-provider-key-0000",
            "/v1/chat/completions",
            chat.clone(),
            vec![],
            401,
            "invalid_workload_token",
        ),
        (
            "unknown token",
            ProviderId::Openai,
            "byok_unknownunknownunknownunknownunknown00000",
            "/v1/chat/completions",
            chat.clone(),
            vec![],
            401,
            "invalid_workload_token",
        ),
        (
            "revoked token",
            ProviderId::Openai,
            &revoked_token,
            "/v1/chat/completions",
            chat.clone(),
            vec![],
            401,
            "invalid_workload_token",
        ),
        ("unknown provider", ProviderId::Openai, &token, "", None, vec![], 404, "unknown_provider"),
        (
            "no credential",
            ProviderId::Gemini,
            &token,
            "/v1beta/models/gemini-2.5-pro:generateContent",
            Some(json!({})),
            vec![],
            403,
            "no_credential",
        ),
        (
            "pinned unknown",
            ProviderId::Openai,
            &token,
            "/v1/chat/completions",
            chat.clone(),
            vec![("x-byok-credential", "nope")],
            403,
            "no_credential",
        ),
        (
            "revoked",
            ProviderId::Openai,
            &token,
            "/v1/chat/completions",
            Some(openai_chat("o3-mini", false)),
            vec![("x-byok-credential", "gone")],
            403,
            "credential_revoked",
        ),
        (
            "disabled",
            ProviderId::Anthropic,
            &token,
            "/v1/messages",
            Some(anthropic_messages("claude-haiku-4-5", false)),
            vec![],
            403,
            "credential_disabled",
        ),
        (
            "workflow required",
            ProviderId::Openai,
            &restricted,
            "/v1/chat/completions",
            chat.clone(),
            vec![],
            403,
            "scope_denied",
        ),
        (
            "unknown workflow",
            ProviderId::Openai,
            &token,
            "/v1/chat/completions",
            chat.clone(),
            vec![("x-byok-workflow", "ghost")],
            403,
            "scope_denied",
        ),
    ];
    for (what, provider, token, path, body, mut headers, status, code) in cases {
        let call_id = format!("call-{}", what.replace(' ', "-"));
        headers.push(("x-byok-call-id", &call_id));
        let response = if what == "unknown provider" {
            env.http.post(env.url("/not-a-provider/v1/chat/completions")).bearer_auth(token).send().await.unwrap()
        } else {
            send(&env, provider, token, path, body, &headers).await
        };
        let got_call_id = response.headers().get("x-byok-call-id").map(|v| v.to_str().unwrap().to_owned());
        let (got, _, text) = text_of(response).await;
        assert_eq!(got, status, "{what}: {text}");
        let json: Value = serde_json::from_str(&text).unwrap();
        let got_code = if provider == ProviderId::Gemini {
            &json["error"]["details"][0]["reason"]
        } else {
            &json["error"]["code"]
        };
        assert_eq!(got_code, code, "{what}: {text}");
        assert!(!text.contains("sk-real-provider-key"), "{what}: a presented key must never be echoed");
        assert_eq!(env.mock.request_count(), 0, "{what}: nothing may reach the provider");
        if what != "no token" && what != "unknown provider" {
            assert_eq!(got_call_id.as_deref(), Some(call_id.as_str()));
            let rows = env.audit_rows(&call_id).await;
            assert_eq!(rows.len(), 1, "{what}: exactly one audit row");
            assert_eq!(rows[0].outcome, Outcome::Denied, "{what}");
            assert_eq!(rows[0].reason.as_deref(), Some(code), "{what}");
        }
    }
    assert_no_key_in_logs();
    env.stop().await;
}

/// Every call has exactly one audit row with its call id; allowed rows carry the
/// credential version and fingerprint; completions carry status and usage.
#[tokio::test]
async fn every_call_has_one_audit_row_and_a_metered_completion() {
    for_each_backend("every_call_has_one_audit_row_and_a_metered_completion", |t| async move {
        let env = Env::start(t).await;
        let credential = env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
        env.credential("claude", ProviderId::Anthropic, ScopeInput::default()).await;
        let token = env.token(&[]).await;
        for (i, stream) in [false, true, false, true].into_iter().enumerate() {
            let call_id = format!("call-openai-{i}");
            let response = send(
                &env,
                ProviderId::Openai,
                &token,
                "/v1/chat/completions",
                Some(openai_chat("gpt-4o", stream)),
                &[("x-byok-call-id", &call_id)],
            )
            .await;
            let (status, _, body) = text_of(response).await;
            assert_eq!(status, 200, "{body}");
            if stream {
                assert!(body.contains("data: [DONE]"), "{body}");
            }
        }
        let response = send(
            &env,
            ProviderId::Anthropic,
            &token,
            "/v1/messages",
            Some(anthropic_messages("claude-sonnet-4-5", true)),
            &[("x-byok-call-id", "call-claude")],
        )
        .await;
        let (_, _, body) = text_of(response).await;
        assert!(body.contains("event: message_stop"), "{body}");
        // A generated call id comes back in the response.
        let response =
            send(&env, ProviderId::Openai, &token, "/v1/chat/completions", Some(openai_chat("gpt-4o", false)), &[])
                .await;
        let generated = response.headers()["x-byok-call-id"].to_str().unwrap().to_owned();
        assert_eq!(generated.len(), 26, "a ULID");
        text_of(response).await;

        let store = env.t.store();
        for call_id in
            ["call-openai-0", "call-openai-1", "call-openai-2", "call-openai-3", "call-claude", generated.as_str()]
        {
            let rows = env.audit_rows(call_id).await;
            assert_eq!(rows.len(), 1, "{call_id}");
            let row = &rows[0];
            assert_eq!(row.outcome, Outcome::Allowed);
            assert!(row.credential_id.is_some() && row.credential_version == Some(1) && row.fingerprint.is_some());
            assert_eq!(row.team_id, Some(env.team.id));
            // The completion is recorded shortly after the body ends.
            let mut completions = Vec::new();
            for _ in 0..200 {
                completions = store.list_completions(call_id).await.unwrap();
                if !completions.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(completions.len(), 1, "{call_id}: one completion");
            let done = &completions[0];
            assert_eq!(done.status, "completed");
            assert_eq!(done.upstream_status, Some(200));
            assert!(done.latency_us > 0);
            assert!(
                done.input_tokens.unwrap_or(0) > 0 && done.output_tokens.unwrap_or(0) > 0,
                "{call_id}: usage {done:?}"
            );
        }
        let row = &env.audit_rows("call-openai-1").await[0];
        assert_eq!(row.mode, Some(Mode::Stream));
        assert_eq!(row.model_family.as_deref(), Some("gpt-4o"));
        assert_eq!(row.credential_id, Some(credential.id));
        assert_eq!(row.fingerprint.as_deref(), Some(credential.fingerprint.as_str()));
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Revocation and rotation made through the vault take effect on the very next call.
#[tokio::test]
async fn revocation_and_rotation_take_effect_on_the_next_call() {
    for_each_backend("revocation_and_rotation_take_effect_on_the_next_call", |t| async move {
        let env = Env::start_with(t, MockConfig::default(), |_| {}).await;
        let org = env.org.id;
        env.credential_with_secret(
            "main",
            ProviderId::Openai,
            ScopeInput::default(),
            &format!("{CANARY_PREFIX}old-key-000000"),
        )
        .await;
        let token = env.token(&[]).await;
        let call =
            || send(&env, ProviderId::Openai, &token, "/v1/chat/completions", Some(openai_chat("gpt-4o", false)), &[]);
        // The old key is wrong for the mock: 401 from upstream, passed through, key redacted.
        let (status, _, _) = text_of(call().await).await;
        assert_eq!(status, 401);
        let secret = byok_crypto::ProviderSecret::new(env.keys.openai.clone()).unwrap();
        let rotated = env.vault.rotate_credential(&support::actor(), org, "main", secret).await.unwrap();
        let response = call().await;
        let (status, _, body) = text_of(response).await;
        assert_eq!(status, 200, "rotation applies to the next call: {body}");
        assert_eq!(
            env.mock.last_request().unwrap().header("authorization").unwrap(),
            format!("Bearer {}", env.keys.openai)
        );
        let rows = env.t.store().list_audit(Some(&env.org.id), &byok_store::AuditFilter::default()).await.unwrap();
        assert_eq!(rows.last().unwrap().credential_version, Some(2));
        assert_eq!(rows.last().unwrap().fingerprint.as_deref(), Some(rotated.fingerprint.as_str()));

        env.vault
            .change_credential_state(&support::actor(), org, "main", byok_vault::StateChange::Revoke)
            .await
            .unwrap();
        let before = env.mock.request_count();
        let (status, _, body) = text_of(call().await).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("credential_revoked"));
        assert_eq!(env.mock.request_count(), before);

        // Token revocation too.
        let id = env.vault.list_workload_tokens(org).await.unwrap()[0].id;
        env.vault.revoke_workload_token(&support::actor(), org, id).await.unwrap();
        let (status, _, _) = text_of(call().await).await;
        assert_eq!(status, 401);
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Fail closed: audit, store or KMS unavailable → 503 with the right code, nothing sent.
#[tokio::test]
async fn fails_closed_when_audit_store_or_kms_are_unavailable() {
    for_each_backend("fails_closed_when_audit_store_or_kms_are_unavailable", |t| async move {
        let env = Env::start_with(t, MockConfig::default(), |c| c.dek_cache_ttl = Duration::ZERO).await;
        env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
        let token = env.token(&[]).await;
        let call = || send(&env, ProviderId::Openai, &token, "/v1/chat/completions", Some(openai_chat("gpt-4o", false)), &[]);
        let (status, _, _) = text_of(call().await).await;
        assert_eq!(status, 200);
        env.mock.clear();

        // KMS down (the DEK cache keeps nothing in this test).
        env.kms.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let (status, _, body) = text_of(call().await).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("kms_unavailable"), "{body}");
        assert_eq!(env.mock.request_count(), 0);
        env.kms.down.store(false, std::sync::atomic::Ordering::SeqCst);

        // Audit unwritable: a trigger refuses every insert into the audit table.
        match env.t.backend() {
            byok_store::Backend::Sqlite => {
                env.t.execute("CREATE TRIGGER audit_down BEFORE INSERT ON resolution_audit BEGIN SELECT RAISE(ABORT, 'disk full'); END").await.unwrap();
            }
            byok_store::Backend::Postgres => {
                env.t.execute("CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$").await.unwrap();
                env.t.execute("CREATE TRIGGER audit_down BEFORE INSERT ON resolution_audit FOR EACH ROW EXECUTE FUNCTION audit_down()").await.unwrap();
            }
        }
        let (status, _, body) = text_of(call().await).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("audit_unavailable"), "{body}");
        assert_eq!(env.mock.request_count(), 0, "nothing is sent when the audit row cannot be written");

        // Store gone (caches are stale after a change, so the next call must read it).
        env.t.execute("DROP TRIGGER audit_down").await.ok();
        env.vault.create_team(&support::actor(), env.org.id, "bump").await.unwrap();
        env.t.store().close().await;
        let (status, _, body) = text_of(call().await).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("store_unavailable"), "{body}");
        assert_eq!(env.mock.request_count(), 0);
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Path and host tricks are refused before anything is sent; the Host header never
/// chooses the upstream.
#[tokio::test]
async fn path_and_host_tricks_are_refused() {
    let env = Env::start(TestStore::sqlite().await.unwrap()).await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    let tricks = [
        "/openai/v1/../../admin",
        "/openai/v1/./chat/completions",
        "/openai//evil.example/v1/chat/completions",
        "/openai/v1/chat/completions@evil.example",
        "/openai/v1%2fchat%2fcompletions",
        "/openai/v1/%2e%2e/admin",
        "/openai/v1/x%5c..",
    ];
    let addr = env.proxy.trim_start_matches("http://").to_owned();
    for trick in tricks {
        // Raw HTTP so that no client normalizes the path first.
        let raw = format!("POST {trick} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
        let answer = raw_http(&addr, &raw).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{trick}: {answer}");
        assert!(answer.contains("invalid_request"), "{trick}: {answer}");
    }
    let absolute = format!("POST http://evil.example/openai/v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {token}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    let answer = raw_http(&addr, &absolute).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "absolute target: {answer}");
    assert_eq!(env.mock.request_count(), 0);

    // A Host header naming another server changes nothing: the call goes to the configured upstream.
    let body = openai_chat("gpt-4o", false).to_string();
    let spoofed = format!("POST /openai/v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let answer = raw_http(&addr, &spoofed).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = env.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_ne!(seen[0].header("host"), Some("evil.example"));
    env.stop().await;
}

async fn raw_http(addr: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Redirects come back to the client; they are never followed (with or without the key).
#[tokio::test]
async fn a_redirect_is_returned_not_followed() {
    let env = Env::start(TestStore::sqlite().await.unwrap()).await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    env.mock.set_next_response(ScriptedResponse::redirect(format!("{}/v1/steal", env.mock.base_url())));
    let response =
        send(&env, ProviderId::Openai, &token, "/v1/chat/completions", Some(openai_chat("gpt-4o", false)), &[]).await;
    assert_eq!(response.status().as_u16(), 302);
    assert!(response.headers()["location"].to_str().unwrap().ends_with("/v1/steal"));
    text_of(response).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(env.mock.request_count(), 1, "the redirect target was not requested");
    env.stop().await;
}

/// An upstream that echoes the key (body or header) reaches the client redacted.
#[tokio::test]
async fn an_echoed_key_is_redacted() {
    let env = Env::start_with(
        TestStore::sqlite().await.unwrap(),
        MockConfig { echo_full_key_in_401: true, ..MockConfig::default() },
        |_| {},
    )
    .await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    env.credential_with_secret(
        "wrong",
        ProviderId::Mistral,
        ScopeInput::default(),
        &format!("{CANARY_PREFIX}wrong-key-123456"),
    )
    .await;
    let token = env.token(&[]).await;
    env.mock.set_next_response(ScriptedResponse::EchoKey);
    // text_of asserts that no canary is in the body or headers.
    let (status, headers, body) = text_of(
        send(&env, ProviderId::Openai, &token, "/v1/chat/completions", Some(openai_chat("gpt-4o", false)), &[]).await,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("****"), "{body}");
    assert!(headers.contains("x-mock-echo-key"));
    // A compatible server quoting the whole wrong key in its 401.
    let (status, _, body) = text_of(
        send(&env, ProviderId::Mistral, &token, "/v1/chat/completions", Some(openai_chat("mistral-large", false)), &[])
            .await,
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("Incorrect API key provided: ****"), "{body}");
    env.stop().await;
}

/// Streams are forwarded as they arrive, and a client that goes away cancels the
/// upstream request.
#[tokio::test]
async fn streams_pass_through_incrementally_and_cancel_upstream_on_disconnect() {
    let env = Env::start_with(
        TestStore::sqlite().await.unwrap(),
        MockConfig { stream_chunk_delay: Duration::from_millis(150), ..MockConfig::default() },
        |_| {},
    )
    .await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    let mut response = send(
        &env,
        ProviderId::Openai,
        &token,
        "/v1/chat/completions",
        Some(openai_chat("gpt-4o", true)),
        &[("x-byok-call-id", "call-stream")],
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    let upstream = env.mock.requests();
    assert!(!upstream[0].finished, "the first event arrived while the upstream was still streaming");
    drop(response);
    let settled = env.mock.wait_for(Duration::from_secs(10), |r| r.iter().all(|r| r.finished)).await.unwrap();
    assert!(!settled[0].completed, "the upstream request was cancelled");
    let mut completions = Vec::new();
    for _ in 0..200 {
        completions = env.t.store().list_completions("call-stream").await.unwrap();
        if !completions.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(completions[0].status, "client_cancelled");
    // One access line, said when the body was dropped.
    let line = access_line("call-stream");
    for field in ["outcome=\"cancelled\"", "code=\"client_cancelled\"", "mode=\"stream\"", "upstream_status=200"] {
        assert!(line.contains(field), "{field}: {line}");
    }
    env.stop().await;
}

/// Upstream failures map to 502/504 in the provider's shape.
#[tokio::test]
async fn upstream_timeouts_and_unreachable_upstreams() {
    let env = Env::start_with(TestStore::sqlite().await.unwrap(), MockConfig::default(), |c| {
        c.response_timeout = Duration::from_millis(300);
        c.upstreams.insert(ProviderId::Groq, byok_proxy::UpstreamBase::parse("http://127.0.0.1:9").unwrap());
    })
    .await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    env.credential("groq", ProviderId::Groq, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    env.mock.set_next_response(ScriptedResponse::Hang);
    let (status, _, body) = text_of(
        send(&env, ProviderId::Openai, &token, "/v1/chat/completions", Some(openai_chat("gpt-4o", false)), &[]).await,
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream_timeout"));
    let (status, _, body) = text_of(
        send(&env, ProviderId::Groq, &token, "/openai/v1/chat/completions", Some(openai_chat("llama", false)), &[])
            .await,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_unreachable"));
    env.stop().await;
}

/// Oversized bodies are refused with 413 before anything is sent.
#[tokio::test]
async fn oversized_requests_are_refused() {
    let env =
        Env::start_with(TestStore::sqlite().await.unwrap(), MockConfig::default(), |c| c.max_request_body = 1024).await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    let big = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (status, _, body) =
        text_of(send(&env, ProviderId::Openai, &token, "/v1/chat/completions", Some(big), &[]).await).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request_too_large"));
    assert_eq!(env.mock.request_count(), 0);
    env.stop().await;
}

/// Replay lists exactly the calls the provider saw for a credential, in order, with the
/// version and fingerprint in force, and never the secret.
#[tokio::test]
async fn replay_lists_exactly_the_calls_the_provider_saw() {
    for_each_backend("replay_lists_exactly_the_calls_the_provider_saw", |t| async move {
        let env = Env::start(t).await;
        let org = env.org.id;
        env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
        env.credential("other", ProviderId::Anthropic, ScopeInput::default()).await;
        let token = env.token(&[]).await;
        for i in 0..6 {
            let call_id = format!("replay-{i}");
            let (provider, path, body) = if i % 3 == 2 {
                (ProviderId::Anthropic, "/v1/messages", anthropic_messages("claude-sonnet-4-5", false))
            } else {
                (ProviderId::Openai, "/v1/chat/completions", openai_chat("gpt-4o", i % 2 == 1))
            };
            text_of(send(&env, provider, &token, path, Some(body), &[("x-byok-call-id", &call_id)]).await).await;
            if i == 3 {
                let secret = byok_crypto::ProviderSecret::new(env.keys.openai.clone()).unwrap();
                env.vault.rotate_credential(&support::actor(), org, "main", secret).await.unwrap();
            }
        }
        // A denied call pinned to the credential is part of its life too.
        let pinned = [("x-byok-credential", "main"), ("x-byok-call-id", "replay-denied")];
        let body = anthropic_messages("claude-sonnet-4-5", false);
        text_of(send(&env, ProviderId::Anthropic, &token, "/v1/messages", Some(body), &pinned).await).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let denied = env.audit_rows("replay-denied").await;
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert!(denied[0].credential_id.is_some(), "{denied:?}");

        let seen: Vec<String> = env
            .mock
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .map(|r| r.header("x-byok-call-id").unwrap_or("").to_owned())
            .collect();
        let (_, items, next) = env.vault.credential_timeline(org, "main", None, 1000).await.unwrap();
        assert!(next.is_none());
        let json = serde_json::to_string(&items).unwrap();
        assert!(!json.contains(CANARY_PREFIX), "no secret in a replay");
        let calls: Vec<&byok_domain::ResolutionAudit> = items
            .iter()
            .filter_map(|i| match i {
                byok_store::TimelineItem::Call { resolution, .. } if resolution.outcome == Outcome::Allowed => {
                    Some(resolution)
                }
                _ => None,
            })
            .collect();
        let replayed: Vec<&str> = calls.iter().map(|r| r.call_id.as_str()).collect();
        assert_eq!(replayed, ["replay-0", "replay-1", "replay-3", "replay-4"]);
        // The mock does not see x-byok-* headers, so compare by count and order of arrival.
        assert_eq!(seen.len(), replayed.len());
        assert_eq!(calls[2].credential_version, Some(1));
        assert_eq!(calls[3].credential_version, Some(2), "the rotation shows in the calls after it");
        // (Rotated to the same key the mock accepts: the fingerprint says so.)
        assert_eq!(calls[2].fingerprint, calls[3].fingerprint);
        let kinds: Vec<String> = items
            .iter()
            .map(|i| match i {
                byok_store::TimelineItem::Lifecycle(e) => e.kind.to_string(),
                byok_store::TimelineItem::Call { resolution, completion } => {
                    format!("call:{}:{}", resolution.outcome, completion.as_ref().map_or("-", |c| c.status.as_str()))
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "created",
                "call:allowed:completed",
                "call:allowed:completed",
                "call:allowed:completed",
                "rotated",
                "call:allowed:completed",
                "call:denied:-"
            ]
        );
        // Paging gives the same sequence.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let (_, page, next) = env.vault.credential_timeline(org, "main", after.as_deref(), 2).await.unwrap();
            paged.extend(page);
            match next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(paged, items);
        env.stop().await;
    })
    .await
    .unwrap();
}

/// A client that gives up before the upstream answers still leaves a completion
/// (`client_cancelled`) next to its allowed row.
#[tokio::test]
async fn a_call_abandoned_before_the_answer_is_recorded_as_cancelled() {
    let env = Env::start(TestStore::sqlite().await.unwrap()).await;
    env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
    let token = env.token(&[]).await;
    env.mock.set_next_response(ScriptedResponse::Hang);
    let gave_up = env
        .http
        .post(env.url("/openai/v1/chat/completions"))
        .bearer_auth(&token)
        .header("x-byok-call-id", "call-abandoned")
        .json(&openai_chat("gpt-4o", false))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    let mut completions = Vec::new();
    for _ in 0..300 {
        completions = env.t.store().list_completions("call-abandoned").await.unwrap();
        if !completions.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(env.audit_rows("call-abandoned").await.len(), 1);
    assert_eq!(completions.len(), 1, "the abandoned call has its completion");
    assert_eq!(completions[0].status, "client_cancelled");
    // One access line, said by the attempt's meter (not again by the handler).
    let line = access_line("call-abandoned");
    for field in ["outcome=\"cancelled\"", "code=\"client_cancelled\"", "attempts=1"] {
        assert!(line.contains(field), "{field}: {line}");
    }
    assert!(!line.contains("upstream_status"), "no answer came: {line}");
    env.stop().await;
}
