//! Verification end to end (SPEC 3.1 "Verification"): the provider's cheapest authenticated
//! read with a stored key, through the data plane; audited like a call (an allowed
//! resolution row `verify-…` with capability `models`, and an unbilled completion
//! `verified`); a `verified` event; 401/403 makes the credential `failing` (a
//! `provider_rejected` event), a success clears it; a create with `"verify": true` whose
//! key the provider rejects stores nothing; and the key goes to the provider's key header
//! only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use byok_crypto::ProviderSecret;
use byok_domain::{
    Capability, Credential, CredentialHealth, HealthState, LifecycleEvent, LifecycleKind, Outcome, ProviderId,
    ResolutionAudit, ScopeInput,
};
use byok_mock_provider::KeyFault;
use byok_store::testing::for_each_backend;
use byok_store::{AuditFilter, EventFilter};
use byok_vault::{NewCredential, VaultError, Verification, VerifyReason};
use serde_json::Value;
use support::{actor, log_buffer, openai_chat, Env};

fn ok() -> Verification {
    Verification { ok: true, status: Some(200), reason: VerifyReason::Ok }
}

fn failed(status: u16, reason: VerifyReason) -> Verification {
    Verification { ok: false, status: Some(status), reason }
}

/// The lifecycle events of `credential` (oldest first).
async fn events_of(env: &Env, credential: &Credential) -> Vec<LifecycleEvent> {
    let filter = EventFilter { credential: Some(credential.id), ..EventFilter::default() };
    env.t.store().list_events(&env.org.id, &filter).await.unwrap()
}

fn of_kind(events: &[LifecycleEvent], kind: LifecycleKind) -> Vec<&LifecycleEvent> {
    events.iter().filter(|e| e.kind == kind).collect()
}

/// Every event of the env's org.
async fn org_events(env: &Env) -> Vec<LifecycleEvent> {
    env.t.store().list_events(&env.org.id, &EventFilter::default()).await.unwrap()
}

/// The verification rows of `credential` (call id `verify-…`), oldest first.
async fn verify_rows(env: &Env, credential: &Credential) -> Vec<ResolutionAudit> {
    let filter = AuditFilter { credential: Some(credential.id), ..AuditFilter::default() };
    let rows = env.t.store().list_audit(Some(&env.org.id), &filter).await.unwrap();
    rows.into_iter().filter(|r| r.call_id.starts_with("verify-")).collect()
}

/// Every audit row the env's org (or no org) holds.
async fn every_row(env: &Env) -> Vec<ResolutionAudit> {
    let mut rows = env.t.store().list_audit(Some(&env.org.id), &AuditFilter::default()).await.unwrap();
    rows.extend(env.t.store().list_audit(None, &AuditFilter::default()).await.unwrap());
    rows
}

async fn health(env: &Env, name: &str) -> CredentialHealth {
    env.vault.credential(env.org.id, name).await.unwrap().credential.health
}

/// The provider's key header and the exact value byok must put there, and the listing path.
fn key_header(provider: ProviderId, key: &str) -> (&'static str, String, &'static str) {
    match provider {
        ProviderId::Anthropic => ("x-api-key", key.to_owned(), "/v1/models"),
        ProviderId::Gemini => ("x-goog-api-key", key.to_owned(), "/v1beta/models"),
        ProviderId::AzureOpenai => ("api-key", key.to_owned(), "/openai/models?api-version=2024-10-21"),
        _ => ("authorization", format!("Bearer {key}"), "/v1/models"),
    }
}

/// Verify `credential` and check everything one verification leaves behind: exactly one
/// request at the provider (the listing, with the stored key in the provider's header), a
/// `verified` event with the result, an allowed `verify-…` row (capability `models`) and
/// its unbilled `verified` completion with the provider's status.
async fn verify_and_check(env: &Env, credential: &Credential, key: &str, expected: Verification) {
    let name = credential.name.as_str();
    let org = env.org.id;
    let (events_before, rows_before) = (events_of(env, credential).await, verify_rows(env, credential).await);
    env.mock.clear();
    let result = env.vault.verify_credential(&actor(), org, name).await.unwrap();
    assert_eq!(result, expected, "{name}");

    let seen = env.mock.requests();
    assert_eq!(seen.len(), 1, "{name}: one request at the provider: {seen:?}");
    let (header, value, path) = key_header(credential.provider, key);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", path), "{name}");
    assert_eq!(seen[0].header(header), Some(value.as_str()), "{name}");
    assert_eq!(seen[0].presented_key.as_deref(), Some(key), "{name}");
    assert_eq!(seen[0].status, expected.status, "{name}");

    let events = events_of(env, credential).await;
    let verified = of_kind(&events, LifecycleKind::Verified);
    assert_eq!(verified.len(), of_kind(&events_before, LifecycleKind::Verified).len() + 1, "{name}: {events:?}");
    let details = &verified.last().unwrap().details;
    assert_eq!(details["ok"], expected.ok, "{details}");
    assert_eq!(details["status"], expected.status.map_or(Value::Null, Value::from), "{details}");
    assert_eq!(details["reason"], serde_json::to_value(expected.reason).unwrap(), "{details}");

    let rows = verify_rows(env, credential).await;
    assert_eq!(rows.len(), rows_before.len() + 1, "{name}: one audit row per verification: {rows:?}");
    let row = rows.last().unwrap();
    assert_eq!(row.outcome, Outcome::Allowed, "{row:?}");
    assert_eq!(row.capability, Some(Capability::Models), "{row:?}");
    assert_eq!(row.provider, Some(credential.provider), "{row:?}");
    assert_eq!(row.credential_version, Some(credential.version), "{row:?}");
    assert_eq!(row.fingerprint.as_deref(), Some(credential.fingerprint.as_str()), "{row:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let completion = loop {
        if let Some(done) = env.t.store().list_completions(&row.call_id).await.unwrap().pop() {
            break done;
        }
        assert!(Instant::now() < deadline, "{}: no completion after 10 s", row.call_id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(completion.status, "verified", "{completion:?}");
    assert_eq!(completion.upstream_status, expected.status, "{completion:?}");
    assert_eq!(completion.credential_id, credential.id, "{completion:?}");
    assert!(completion.metering.is_none(), "a verification is not billed: {completion:?}");
    assert_eq!((completion.input_tokens, completion.output_tokens), (None, None), "{completion:?}");
}

/// A chat call through the sidecar: status and error code.
async fn chat(env: &Env, token: &str) -> (u16, String) {
    let response = env
        .http
        .post(env.url("/openai/v1/chat/completions"))
        .bearer_auth(token)
        .json(&openai_chat("gpt-4o", false))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
}

/// A key the mock accepts for no provider.
fn unknown_key() -> String {
    format!("sk-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// OpenAI and Anthropic: a good key verifies ok; throttled and failing answers say so
/// without marking the key; revoked (401) and forbidden (403) keys are `invalid_key` and
/// make the credential `failing` (a `provider_rejected` event, calls refused); a later
/// successful verification clears it.
#[tokio::test]
async fn verify_ok_and_invalid_key() {
    for_each_backend("verify_ok_and_invalid_key", |t| async move {
        let started = Instant::now();
        let backend = format!("{:?}", t.store().backend());
        let env = Env::start(t).await;
        let openai = env.credential("main", ProviderId::Openai, ScopeInput::default()).await;
        let key = env.keys.openai.clone();
        let token = env.token(&[]).await;

        verify_and_check(&env, &openai, &key, ok()).await;
        assert_eq!(health(&env, "main").await.state, HealthState::Ok);

        // Throttled or failing at the provider: not the key's fault, nothing marked.
        env.mock.set_key_fault(&key, KeyFault::Throttled { retry_after: Duration::from_secs(30) });
        verify_and_check(&env, &openai, &key, failed(429, VerifyReason::RateLimited)).await;
        env.mock.set_key_fault(&key, KeyFault::Status(503));
        verify_and_check(&env, &openai, &key, failed(503, VerifyReason::Unreachable)).await;
        env.mock.clear_key_fault(&key);
        assert_ne!(health(&env, "main").await.state, HealthState::Failing);
        assert!(of_kind(&events_of(&env, &openai).await, LifecycleKind::ProviderRejected).is_empty());

        // Revoked at the provider: invalid_key, failing, provider_rejected; calls refused.
        env.mock.set_key_fault(&key, KeyFault::Revoked);
        verify_and_check(&env, &openai, &key, failed(401, VerifyReason::InvalidKey)).await;
        let health_now = health(&env, "main").await;
        assert_eq!((health_now.state, health_now.last_status), (HealthState::Failing, Some(401)), "{health_now:?}");
        let events = events_of(&env, &openai).await;
        let rejected = of_kind(&events, LifecycleKind::ProviderRejected);
        assert_eq!(rejected.len(), 1, "{events:?}");
        assert_eq!(rejected[0].details["upstream_status"], 401, "{:?}", rejected[0]);
        let before = env.mock.request_count();
        assert_eq!(chat(&env, &token).await, (403, "credential_failing".to_owned()));
        assert_eq!(env.mock.request_count(), before, "a failing credential is not used");

        // Fixed at the provider: verifying again clears it.
        env.mock.clear_key_fault(&key);
        verify_and_check(&env, &openai, &key, ok()).await;
        assert_eq!(health(&env, "main").await.state, HealthState::Ok);
        assert_eq!(chat(&env, &token).await, (200, String::new()));

        // Forbidden (403) is invalid_key too.
        env.mock.set_key_fault(&key, KeyFault::Forbidden);
        verify_and_check(&env, &openai, &key, failed(403, VerifyReason::InvalidKey)).await;
        let health_now = health(&env, "main").await;
        assert_eq!((health_now.state, health_now.last_status), (HealthState::Failing, Some(403)), "{health_now:?}");
        assert_eq!(of_kind(&events_of(&env, &openai).await, LifecycleKind::ProviderRejected).len(), 2);
        env.mock.clear_key_fault(&key);
        verify_and_check(&env, &openai, &key, ok()).await;
        assert_eq!(health(&env, "main").await.state, HealthState::Ok);

        // Anthropic: the key goes in x-api-key.
        let claude = env.credential("claude", ProviderId::Anthropic, ScopeInput::default()).await;
        let key = env.keys.anthropic.clone();
        verify_and_check(&env, &claude, &key, ok()).await;
        assert!(!env.mock.requests()[0].has_header("authorization"), "Anthropic gets x-api-key only");
        env.mock.set_key_fault(&key, KeyFault::Revoked);
        verify_and_check(&env, &claude, &key, failed(401, VerifyReason::InvalidKey)).await;
        let health_now = health(&env, "claude").await;
        assert_eq!((health_now.state, health_now.last_status), (HealthState::Failing, Some(401)), "{health_now:?}");
        let events = events_of(&env, &claude).await;
        assert_eq!(of_kind(&events, LifecycleKind::ProviderRejected).len(), 1, "{events:?}");
        env.mock.clear_key_fault(&key);
        verify_and_check(&env, &claude, &key, ok()).await;
        assert_eq!(health(&env, "claude").await.state, HealthState::Ok);

        println!("verify_ok_and_invalid_key on {backend}: {:?}", started.elapsed());
        env.stop().await;
    })
    .await
    .unwrap();
}

fn new_credential(name: &str, provider: ProviderId, secret: &str, verify: bool) -> NewCredential {
    NewCredential {
        name: name.to_owned(),
        provider,
        secret: ProviderSecret::new(secret.to_owned()).unwrap(),
        scope: ScopeInput::default(),
        base_url: None,
        expires_at: None,
        priority: None,
        weight: None,
        rpm: None,
        tpm: None,
        verify,
    }
}

/// A create with `"verify": true` whose key the provider rejects is refused
/// (`CredentialInvalid`) and stores nothing: no credential, no event. With a good key it is
/// created, with a `verified` event after `created`.
#[tokio::test]
async fn create_with_verify_refuses_a_rejected_key_and_stores_nothing() {
    for_each_backend("create_with_verify_refuses_a_rejected_key_and_stores_nothing", |t| async move {
        let started = Instant::now();
        let backend = format!("{:?}", t.store().backend());
        let env = Env::start(t).await;
        let org = env.org.id;
        for provider in [ProviderId::Openai, ProviderId::Anthropic] {
            let name = format!("checked-{}", provider.as_str());
            let bad = unknown_key();
            let (credentials, events) = (env.vault.list_credentials(org).await.unwrap(), org_events(&env).await);
            env.mock.clear();
            let refused = env.vault.create_credential(&actor(), org, new_credential(&name, provider, &bad, true)).await;
            match refused {
                Err(VaultError::CredentialInvalid(message)) => {
                    assert!(message.contains("401"), "{message}");
                    assert!(!message.contains(&bad), "the refusal does not quote the key: {message}");
                }
                other => panic!("{provider}: a rejected key must be refused with CredentialInvalid: {other:?}"),
            }
            // The provider was asked (and said no).
            let seen = env.mock.requests();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_eq!(seen[0].presented_key.as_deref(), Some(bad.as_str()));
            assert_eq!((seen[0].key_valid, seen[0].status), (false, Some(401)));
            // Nothing stored.
            assert_eq!(env.vault.list_credentials(org).await.unwrap(), credentials, "{provider}");
            assert!(matches!(env.vault.credential(org, &name).await, Err(VaultError::NotFound(_))));
            assert_eq!(org_events(&env).await, events, "{provider}: no event");

            // A good key: created and verified.
            let good = env.keys.for_provider(provider).to_owned();
            let created =
                env.vault.create_credential(&actor(), org, new_credential(&name, provider, &good, true)).await.unwrap();
            assert_eq!(env.mock.requests().len(), 2);
            let kinds: Vec<LifecycleKind> = events_of(&env, &created).await.iter().map(|e| e.kind).collect();
            assert_eq!(kinds, [LifecycleKind::Created, LifecycleKind::Verified], "{provider}");
            let events = events_of(&env, &created).await;
            assert_eq!(events[1].details["ok"], true, "{:?}", events[1]);
            assert_eq!(events[1].details["reason"], "ok", "{:?}", events[1]);
            assert_eq!(env.vault.list_credentials(org).await.unwrap().len(), credentials.len() + 1);
        }
        println!("create_with_verify_refuses_a_rejected_key_and_stores_nothing on {backend}: {:?}", started.elapsed());
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Every verification request (stored keys of four providers, a revoked one, a create
/// with `"verify": true`, accepted and rejected) carries exactly the key in the provider's
/// own header and nowhere else in the request; the key is in no audit row, completion,
/// event or log line.
#[tokio::test]
async fn verification_never_sends_the_key_anywhere_else() {
    for_each_backend("verification_never_sends_the_key_anywhere_else", |t| async move {
        let started = Instant::now();
        let backend = format!("{:?}", t.store().backend());
        let env = Env::start(t).await;
        let org = env.org.id;
        let providers = [ProviderId::Openai, ProviderId::Anthropic, ProviderId::Gemini, ProviderId::AzureOpenai];
        let mut keys: Vec<String> = Vec::new();
        let mut requests = Vec::new();
        for provider in providers {
            let name = format!("{}-main", provider.as_str());
            env.credential(&name, provider, ScopeInput::default()).await;
            let key = env.keys.for_provider(provider).to_owned();
            env.mock.clear();
            let result = env.vault.verify_credential(&actor(), org, &name).await.unwrap();
            assert_eq!(result, ok(), "{provider}");
            let seen = env.mock.requests();
            assert_eq!(seen.len(), 1, "{provider}: {seen:?}");
            requests.push((provider, key.clone(), seen[0].clone()));
            keys.push(key);
        }
        // A revoked key's verification (the provider's 401 answer is dropped unread).
        env.mock.set_key_fault(&env.keys.openai, KeyFault::Revoked);
        env.mock.clear();
        let result = env.vault.verify_credential(&actor(), org, "openai-main").await.unwrap();
        assert_eq!(result, failed(401, VerifyReason::InvalidKey));
        requests.push((ProviderId::Openai, env.keys.openai.clone(), env.mock.requests()[0].clone()));
        env.mock.clear_key_fault(&env.keys.openai);
        // A create with "verify": true, of a key the provider rejects and of a good one.
        let bad = unknown_key();
        for (name, secret) in [("new-bad", bad.clone()), ("new-good", env.keys.openai.clone())] {
            env.mock.clear();
            let _ = env
                .vault
                .create_credential(&actor(), org, new_credential(name, ProviderId::Openai, &secret, true))
                .await;
            let seen = env.mock.requests();
            assert_eq!(seen.len(), 1, "{name}: {seen:?}");
            requests.push((ProviderId::Openai, secret, seen[0].clone()));
        }
        keys.push(bad);

        for (provider, key, request) in &requests {
            let (header, value, path) = key_header(*provider, key);
            assert_eq!(request.path, path, "{provider}");
            assert_eq!(request.method, "GET", "{provider}");
            let carrying: Vec<&(String, String)> =
                request.headers.iter().filter(|(_, v)| v.contains(key.as_str())).collect();
            assert_eq!(carrying, [&(header.to_owned(), value.clone())], "{provider}: the key in exactly one header");
            assert!(request.body.is_empty(), "{provider}: {:?}", request.body_text());
            assert!(!request.path.contains(key.as_str()), "{provider}: key in the URL");
            for other in &keys {
                if other != key {
                    assert!(
                        !request.headers.iter().any(|(_, v)| v.contains(other.as_str())),
                        "{provider}: another credential's key was sent"
                    );
                }
            }
        }

        // Nowhere in the records.
        let rows = serde_json::to_string(&every_row(&env).await).unwrap();
        let events = serde_json::to_string(&org_events(&env).await).unwrap();
        let mut completions = String::new();
        for row in every_row(&env).await.iter().filter(|r| r.call_id.starts_with("verify-")) {
            completions.push_str(
                &serde_json::to_string(&env.t.store().list_completions(&row.call_id).await.unwrap()).unwrap(),
            );
        }
        assert!(rows.contains("verify-") && events.contains("verified"), "the verifications were recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let logs = String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned();
        for key in &keys {
            assert!(!rows.contains(key.as_str()), "a key in an audit row");
            assert!(!completions.contains(key.as_str()), "a key in a completion");
            assert!(!events.contains(key.as_str()), "a key in an event");
            assert!(!logs.contains(key.as_str()), "a key in the log");
        }
        println!(
            "verification_never_sends_the_key_anywhere_else on {backend}: {} requests checked, {:?}",
            requests.len(),
            started.elapsed()
        );
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Gemini answers a key it does not accept with 400 `API_KEY_INVALID` (not 401/403): that
/// is the provider rejecting the key, so verification must say `invalid_key` and a create
/// with `"verify": true` must store nothing.
#[tokio::test]
async fn a_key_gemini_rejects_is_an_invalid_key() {
    let env = Env::start(byok_store::testing::TestStore::sqlite().await.unwrap()).await;
    let org = env.org.id;
    let gemini = env.credential("gem", ProviderId::Gemini, ScopeInput::default()).await;
    verify_and_check(&env, &gemini, &env.keys.gemini, ok()).await;
    env.mock.set_key_fault(&env.keys.gemini, KeyFault::Revoked);
    env.mock.clear();
    let result = env.vault.verify_credential(&actor(), org, "gem").await.unwrap();
    let answered = env.mock.requests()[0].status;
    println!("gemini revoked key: the provider answered {answered:?}; verification says {result:?}");
    assert_eq!((result.ok, result.reason), (false, VerifyReason::InvalidKey), "{result:?}");
    env.mock.clear_key_fault(&env.keys.gemini);

    let bad = unknown_key();
    let refused =
        env.vault.create_credential(&actor(), org, new_credential("gem-bad", ProviderId::Gemini, &bad, true)).await;
    assert!(matches!(refused, Err(VaultError::CredentialInvalid(_))), "{refused:?}");
    assert!(env.vault.credential(org, "gem-bad").await.is_err(), "nothing stored");
    env.stop().await;
}
