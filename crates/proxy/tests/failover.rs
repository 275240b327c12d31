//! Several credentials for one call (SPEC 3.1), end to end: failover on the listed
//! statuses and on a failed or timed-out connection, never on client errors nor for a
//! pin, cooldowns that honour the provider's hints, the circuit breaker and its probe,
//! the durable fleet-wide `failing` state, weighted pools, and failover that never goes
//! where resolution would not. Every answer is checked for keys.
//!
//! Which credential is tried first is pinned down by priority where it matters: `a` has
//! priority 1 and `b` priority 0, so `a` is always first while healthy and `b` is the
//! next rank. Each case runs in an org of its own (fresh credentials, fresh health).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_crypto::{Kms, ProviderSecret};
use byok_domain::{
    CallCompletion, Credential, HealthState, LifecycleKind, ModelFamilyRegistry, Org, OrgId, Outcome, ProviderId,
    ResolutionAudit, ScopeInput, Tier,
};
use byok_kms::KmsHandle;
use byok_mock_provider::{KeyFault, MockConfig, ScriptedResponse};
use byok_store::testing::{for_each_backend, TestStore};
use byok_store::{AuditFilter, UsageSource};
use byok_vault::{HostPattern, NewCredential, Owner, StateChange, Vault, VaultPolicy, VerifyReason};
use serde_json::Value;
use support::{access_line, actor, anthropic_messages, openai_chat, Env, CANARY_PREFIX};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A fresh key (a canary, so any leak is found by prefix too).
fn new_key(tag: &str) -> String {
    format!("{CANARY_PREFIX}{tag}-{}", ulid::Ulid::new().to_string().to_ascii_lowercase())
}

/// A mock configuration accepting these extra keys.
fn mock_accepting(openai: &[String], anthropic: &[String]) -> MockConfig {
    MockConfig { openai_keys: openai.to_vec(), anthropic_keys: anthropic.to_vec(), ..MockConfig::default() }
}

/// How to create a credential.
#[derive(Default)]
struct Opts {
    priority: i32,
    weight: Option<u16>,
    scope: ScopeInput,
    base_url: Option<String>,
}

fn prio(priority: i32) -> Opts {
    Opts { priority, ..Opts::default() }
}

async fn add(vault: &Vault, owner: Owner, name: &str, provider: ProviderId, secret: &str, opts: Opts) -> Credential {
    let new = NewCredential {
        name: name.to_owned(),
        provider,
        secret: ProviderSecret::new(secret.to_owned()).unwrap(),
        scope: opts.scope,
        base_url: opts.base_url,
        expires_at: None,
        priority: Some(opts.priority),
        weight: opts.weight,
        rpm: None,
        tpm: None,
        verify: false,
    };
    vault.create_credential(&actor(), owner, new).await.unwrap()
}

/// An org credential.
async fn add_own(env: &Env, org: &Org, name: &str, provider: ProviderId, secret: &str, opts: Opts) -> Credential {
    add(&env.vault, Owner::Org(org.id), name, provider, secret, opts).await
}

/// A vault on the env's store and KMS whose policy lets credentials of OpenAI and
/// Anthropic name a plain-http loopback `base_url` (to point one at a closed port).
fn loopback_vault(env: &Env) -> Vault {
    let policy = VaultPolicy { allow_plain_http_base_url: true, ..VaultPolicy::default() }
        .allow_host(ProviderId::Openai, HostPattern::parse("127.0.0.1").unwrap())
        .allow_host(ProviderId::Anthropic, HostPattern::parse("127.0.0.1").unwrap());
    Vault::new(
        env.t.store().clone(),
        KmsHandle::new(Arc::clone(&env.kms) as Arc<dyn Kms>, 4).with_timeout(support::KMS_TIMEOUT),
        ModelFamilyRegistry::seeded(),
        policy,
    )
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A new katman-b (or `tier`) org with a `research` team and a token of that team.
async fn org_with_token(env: &Env, tier: Tier) -> (Org, String) {
    let (org, _) = env.other_org(tier).await;
    let token = env.token_in(&org, "research").await;
    (org, token)
}

/// A response, read whole.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
    call_id: String,
    took: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn attempts(&self) -> Option<u32> {
        self.header("x-byok-attempts").and_then(|v| v.parse().ok())
    }

    fn credential(&self) -> Option<&str> {
        self.header("x-byok-credential")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The error code of a provider-shaped error body (OpenAI `error.code`, Anthropic
    /// `error.type`).
    fn error_code(&self) -> Option<String> {
        let json: Value = serde_json::from_str(&self.body).ok()?;
        json["error"]["code"].as_str().or_else(|| json["error"]["type"].as_str()).map(str::to_owned)
    }

    fn describe(&self) -> String {
        format!("{} {:?} {}", self.status, self.headers, self.body)
    }
}

/// One chat call through `proxy` with `token`, optionally pinned.
async fn call_via(
    env: &Env,
    proxy: &str,
    token: &str,
    provider: ProviderId,
    stream: bool,
    pin: Option<&str>,
) -> Answer {
    let call_id = format!("fo-{}", ulid::Ulid::new());
    let request = match provider {
        ProviderId::Anthropic => env
            .http
            .post(format!("{proxy}/anthropic/v1/messages"))
            .header("x-api-key", token)
            .header("anthropic-version", "2023-06-01")
            .json(&anthropic_messages("claude-sonnet-4-5", stream)),
        _ => env
            .http
            .post(format!("{proxy}/openai/v1/chat/completions"))
            .bearer_auth(token)
            .json(&openai_chat("gpt-4o", stream)),
    };
    let mut request = request.header("x-byok-call-id", &call_id);
    if let Some(pin) = pin {
        request = request.header("x-byok-credential", pin);
    }
    let started = Instant::now();
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    let took = started.elapsed();
    Answer { status, headers, body, call_id, took }
}

async fn call(env: &Env, token: &str, provider: ProviderId, stream: bool) -> Answer {
    call_via(env, &env.proxy, token, provider, stream, None).await
}

/// Nothing the client received contains a key: neither any of `keys` nor any canary.
fn assert_no_key(answer: &Answer, keys: &[String]) {
    let mut texts = vec![answer.body.clone()];
    for (name, value) in &answer.headers {
        texts.push(format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())));
    }
    for text in &texts {
        assert!(!text.contains(CANARY_PREFIX), "a key leaked to the client: {text}");
        for key in keys {
            let tail = &key[key.len() - 16..];
            assert!(!text.contains(key.as_str()) && !text.contains(tail), "key {key} leaked to the client: {text}");
        }
    }
}

/// A 200 answer carrying the mock's reply, JSON or streamed.
fn assert_served(answer: &Answer, provider: ProviderId, stream: bool) {
    assert_eq!(answer.status, 200, "{}", answer.describe());
    if stream {
        let end = if provider == ProviderId::Anthropic { "message_stop" } else { "data: [DONE]" };
        assert!(answer.body.contains(end), "a whole stream: {}", answer.body);
        assert!(answer.body.contains("mock"), "{}", answer.body);
    } else {
        let json = answer.json();
        let text = if provider == ProviderId::Anthropic {
            json["content"][0]["text"].as_str().map(str::to_owned)
        } else {
            json["choices"][0]["message"]["content"].as_str().map(str::to_owned)
        };
        assert!(text.unwrap_or_default().starts_with("mock reply to"), "{}", answer.body);
    }
}

/// Requests the mock received presenting `key`.
fn seen(env: &Env, key: &str) -> usize {
    env.mock.requests().iter().filter(|r| r.presented_key.as_deref() == Some(key)).count()
}

/// Resolution rows of `org` for `call_id`, in order.
async fn audit_of(env: &Env, org: &OrgId, call_id: &str) -> Vec<ResolutionAudit> {
    let filter = AuditFilter { call_id: Some(call_id.to_owned()), ..AuditFilter::default() };
    let mut rows = env.t.store().list_audit(Some(org), &filter).await.unwrap();
    rows.sort_by_key(|r| r.seq);
    rows
}

/// The completions of `call_id` once `n` are durable (completions are queued unawaited).
async fn completions(env: &Env, call_id: &str, n: usize) -> Vec<CallCompletion> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = env.t.store().list_completions(call_id).await.unwrap();
        if list.len() >= n || Instant::now() > deadline {
            assert_eq!(list.len(), n, "completions of {call_id}: {list:?}");
            return list;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `org`'s statement for this month: billed calls and unanswered ones (the rollup and
/// the raw audit must agree).
async fn billed(env: &Env, org: &OrgId) -> (u64, u64) {
    let fast = env.vault.statement(*org, None, None, UsageSource::Rollup).await.unwrap();
    let slow = env.vault.statement(*org, None, None, UsageSource::Audit).await.unwrap();
    assert_eq!(fast, slow, "the rollup and the raw audit rows must give the same statement");
    (fast.calls, fast.unanswered)
}

/// Poll `check` every 20 ms until it holds or `within` passes; whether it held.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the credential is `failing` in the store (the durable, fleet-wide state).
async fn durably_failing(env: &Env, org: &OrgId, credential: &Credential) -> bool {
    let record = env.t.store().get_credential(org, &credential.id).await.unwrap().unwrap();
    record.credential.health.state == HealthState::Failing
}

/// The PostgreSQL store for a PostgreSQL-only test; `None` (after saying so) when
/// `BYOK_TEST_POSTGRES_URL` is unset, unless `BYOK_REQUIRE_POSTGRES` is set.
async fn postgres_only(test: &str) -> Option<TestStore> {
    let store = TestStore::postgres().await.unwrap();
    if store.is_none() {
        let required = std::env::var("BYOK_REQUIRE_POSTGRES").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(!required, "BYOK_REQUIRE_POSTGRES is set but BYOK_TEST_POSTGRES_URL is not");
        let _ = writeln!(std::io::stderr(), "skipped {test}: BYOK_TEST_POSTGRES_URL is not set");
    }
    store
}

// ---------------------------------------------------------------------------------------
// 1. Failover on each listed status and on a failed or timed-out connection
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Fault {
    /// The key's next request is answered with this status (via this mock fault).
    Answer(u16, KeyFault),
    /// The key's credential points at a closed port: the connection is refused.
    Refused,
    /// The upstream never answers (the sidecar's response timeout ends the attempt).
    Hang,
}

struct Case {
    fault: Fault,
    provider: ProviderId,
    stream: bool,
    key_a: String,
    key_b: String,
}

fn cases(faults: &[Fault]) -> Vec<Case> {
    let mut out = Vec::new();
    for fault in faults {
        for provider in [ProviderId::Openai, ProviderId::Anthropic] {
            for stream in [false, true] {
                out.push(Case { fault: fault.clone(), provider, stream, key_a: new_key("a"), key_b: new_key("b") });
            }
        }
    }
    out
}

fn keys_of(cases: &[Case], provider: ProviderId) -> Vec<String> {
    cases.iter().filter(|c| c.provider == provider).flat_map(|c| [c.key_a.clone(), c.key_b.clone()]).collect()
}

fn all_keys(env: &Env, cases: &[Case]) -> Vec<String> {
    let mut keys: Vec<String> = cases.iter().flat_map(|c| [c.key_a.clone(), c.key_b.clone()]).collect();
    keys.push(env.keys.openai.clone());
    keys.push(env.keys.anthropic.clone());
    keys
}

/// One case: `a` (priority 1) fails as `case.fault` says, `b` (priority 0) serves; the
/// client sees `b`'s answer after two attempts, each audited, billed once.
async fn failover_case(env: &Env, loopback: &Vault, case: &Case, keys: &[String]) {
    let what = format!("{:?} {} stream={}", case.fault, case.provider, case.stream);
    let (org, token) = org_with_token(env, Tier::KatmanB).await;
    let a = match case.fault {
        Fault::Refused => {
            let opts =
                Opts { priority: 1, base_url: Some(format!("http://127.0.0.1:{}", closed_port())), ..Opts::default() };
            add(loopback, Owner::Org(org.id), "a", case.provider, &case.key_a, opts).await
        }
        _ => add_own(env, &org, "a", case.provider, &case.key_a, prio(1)).await,
    };
    let b = add_own(env, &org, "b", case.provider, &case.key_b, prio(0)).await;
    let upstream_status = match &case.fault {
        Fault::Answer(status, fault) => {
            env.mock.fail_key_times(&case.key_a, fault.clone(), 1);
            Some(*status)
        }
        Fault::Hang => {
            env.mock.set_next_response(ScriptedResponse::Hang);
            None
        }
        Fault::Refused => None,
    };

    let answer = call(env, &token, case.provider, case.stream).await;
    assert_served(&answer, case.provider, case.stream);
    assert_eq!(answer.attempts(), Some(2), "{what}: {}", answer.describe());
    assert_eq!(answer.credential(), Some(b.id.to_string().as_str()), "{what}: answered by b");
    assert_no_key(&answer, keys);
    if matches!(case.fault, Fault::Hang) {
        assert!(answer.took >= Duration::from_millis(950), "{what}: a waited for its response timeout");
    }

    // The provider saw the request once with each key (none with a when its connection
    // was refused).
    let expected_a = usize::from(!matches!(case.fault, Fault::Refused));
    assert_eq!(seen(env, &case.key_a), expected_a, "{what}: requests with a");
    assert_eq!(seen(env, &case.key_b), 1, "{what}: requests with b");

    // Two allowed rows: attempt 1 with a, attempt 2 with b, same call id.
    let rows = audit_of(env, &org.id, &answer.call_id).await;
    let summary: Vec<_> = rows.iter().map(|r| (r.outcome, r.attempt, r.credential_id)).collect();
    assert_eq!(
        summary,
        vec![(Outcome::Allowed, Some(1), Some(a.id)), (Outcome::Allowed, Some(2), Some(b.id))],
        "{what}: audit rows"
    );

    // a's completion is `failed_over` with the upstream's status and no metering; b's is
    // the billed one.
    let done = completions(env, &answer.call_id, 2).await;
    let of_a = done.iter().find(|c| c.credential_id == a.id).unwrap();
    let of_b = done.iter().find(|c| c.credential_id == b.id).unwrap();
    assert_eq!(of_a.status, "failed_over", "{what}: {of_a:?}");
    assert_eq!(of_a.upstream_status, upstream_status, "{what}: {of_a:?}");
    assert!(of_a.metering.is_none(), "{what}: a superseded attempt is not billed: {of_a:?}");
    assert_eq!(of_b.status, "completed", "{what}: {of_b:?}");
    assert_eq!(of_b.upstream_status, Some(200), "{what}: {of_b:?}");
    assert!(of_b.metering.is_some(), "{what}: {of_b:?}");
    assert!(of_b.input_tokens.unwrap_or(0) > 0, "{what}: usage of the answering attempt: {of_b:?}");

    // The statement counts the call once.
    assert_eq!(billed(env, &org.id).await, (1, 0), "{what}: billed calls, unanswered");

    // One access line for the call (none for the superseded attempt), naming b.
    let line = access_line(&answer.call_id);
    let credential = format!("credential_id={}", b.id);
    for field in ["attempts=2", "outcome=\"allowed\"", "code=\"completed\"", "upstream_status=200", &credential] {
        assert!(line.contains(field), "{what}: {field}: {line}");
    }
}

/// 429, 401, 403, 500, 502, 503, 504, 529 and a refused connection, on OpenAI and
/// Anthropic, JSON and streamed: the client gets `b`'s 200 after two attempts.
#[tokio::test]
async fn fails_over_on_each_listed_status() {
    for_each_backend("fails_over_on_each_listed_status", |t| async move {
        let mut faults: Vec<Fault> = vec![
            Fault::Answer(429, KeyFault::Throttled { retry_after: Duration::from_secs(30) }),
            Fault::Answer(401, KeyFault::Revoked),
            Fault::Answer(403, KeyFault::Forbidden),
        ];
        faults.extend([500, 502, 503, 504, 529].map(|s| Fault::Answer(s, KeyFault::Status(s))));
        faults.push(Fault::Refused);
        let cases = cases(&faults);
        let mock = mock_accepting(&keys_of(&cases, ProviderId::Openai), &keys_of(&cases, ProviderId::Anthropic));
        // The operator lets upstream connections go to loopback, so the closed port is
        // really dialled (and refused) rather than refused by the address check.
        let env = Env::start_with(t, mock, |config| config.allow_private_upstreams = true).await;
        let loopback = loopback_vault(&env);
        let keys = all_keys(&env, &cases);
        for case in &cases {
            failover_case(&env, &loopback, case, &keys).await;
        }
        env.stop().await;
    })
    .await
    .unwrap();
}

/// An upstream that does not answer within the response timeout is failed over too.
#[tokio::test]
async fn fails_over_when_the_upstream_does_not_answer_in_time() {
    for_each_backend("fails_over_when_the_upstream_does_not_answer_in_time", |t| async move {
        let cases = cases(&[Fault::Hang]);
        let mock = mock_accepting(&keys_of(&cases, ProviderId::Openai), &keys_of(&cases, ProviderId::Anthropic));
        let env = Env::start_with(t, mock, |config| config.response_timeout = Duration::from_secs(1)).await;
        let loopback = loopback_vault(&env);
        let keys = all_keys(&env, &cases);
        for case in &cases {
            failover_case(&env, &loopback, case, &keys).await;
        }
        env.stop().await;
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// 2. No failover on client errors, nor for a pin
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn no_failover_on_client_errors_or_for_a_pin() {
    for_each_backend("no_failover_on_client_errors_or_for_a_pin", |t| async move {
        let statuses = [400u16, 404, 413, 422];
        let providers = [ProviderId::Openai, ProviderId::Anthropic];
        let mut openai = Vec::new();
        let mut anthropic = Vec::new();
        let mut plan = Vec::new();
        for status in statuses {
            for provider in providers {
                let (a, b) = (new_key("a"), new_key("b"));
                let list = if provider == ProviderId::Openai { &mut openai } else { &mut anthropic };
                list.extend([a.clone(), b.clone()]);
                plan.push((status, provider, a, b));
            }
        }
        let (pin_a, pin_b) = (new_key("pin-a"), new_key("pin-b"));
        openai.extend([pin_a.clone(), pin_b.clone()]);
        let env = Env::start_with(t, mock_accepting(&openai, &anthropic), |_| {}).await;
        let mut keys = openai.clone();
        keys.extend(anthropic.clone());
        keys.push(env.keys.openai.clone());
        keys.push(env.keys.anthropic.clone());

        for (status, provider, key_a, key_b) in &plan {
            let what = format!("{status} on {provider}");
            let (org, token) = org_with_token(&env, Tier::KatmanB).await;
            let a = add_own(&env, &org, "a", *provider, key_a, prio(1)).await;
            add_own(&env, &org, "b", *provider, key_b, prio(0)).await;
            env.mock.fail_key_times(key_a, KeyFault::Status(*status), 1);
            let answer = call(&env, &token, *provider, false).await;
            assert_eq!(answer.status, *status, "{what}: passed through: {}", answer.describe());
            assert_eq!(answer.attempts(), Some(1), "{what}");
            assert_eq!(answer.credential(), Some(a.id.to_string().as_str()), "{what}");
            assert_no_key(&answer, &keys);
            assert_eq!((seen(&env, key_a), seen(&env, key_b)), (1, 0), "{what}: one request, with a only");
            let rows = audit_of(&env, &org.id, &answer.call_id).await;
            let summary: Vec<_> = rows.iter().map(|r| (r.outcome, r.attempt, r.credential_id)).collect();
            assert_eq!(summary, vec![(Outcome::Allowed, Some(1), Some(a.id))], "{what}");
            let done = completions(&env, &answer.call_id, 1).await;
            assert_eq!(done[0].upstream_status, Some(*status), "{what}: {:?}", done[0]);
            assert_ne!(done[0].status, "failed_over", "{what}");
            assert!(done[0].metering.is_some(), "{what}: the answer the client got is the billed one");
            assert_eq!(billed(&env, &org.id).await, (1, 0), "{what}");
        }

        // A pin never fails over: a pinned `a` answering 429 (or 401) is passed through,
        // and a pinned key is used whatever its health.
        let (org, token) = org_with_token(&env, Tier::KatmanB).await;
        let a = add_own(&env, &org, "a", ProviderId::Openai, &pin_a, prio(1)).await;
        let b = add_own(&env, &org, "b", ProviderId::Openai, &pin_b, prio(0)).await;
        env.mock.set_key_fault(&pin_a, KeyFault::Throttled { retry_after: Duration::from_secs(30) });
        let a_id = a.id.to_string();
        for (n, pin) in [a_id.as_str(), "a"].into_iter().enumerate() {
            let answer = call_via(&env, &env.proxy, &token, ProviderId::Openai, false, Some(pin)).await;
            assert_eq!(answer.status, 429, "pinned {pin}: {}", answer.describe());
            assert_eq!(answer.error_code().as_deref(), Some("rate_limit_exceeded"), "the provider's own 429");
            assert!(answer.header("retry-after").is_some(), "the provider's hint is passed on");
            assert_eq!(answer.attempts(), Some(1));
            assert_eq!(answer.credential(), Some(a_id.as_str()));
            assert_no_key(&answer, &keys);
            assert_eq!(seen(&env, &pin_a), n + 1, "the pinned key is used even while cooling down");
            assert_eq!(seen(&env, &pin_b), 0, "b never sees a pinned call");
            let rows = audit_of(&env, &org.id, &answer.call_id).await;
            assert_eq!(rows.len(), 1, "{rows:?}");
            assert_eq!(rows[0].attempt, Some(1));
        }
        // Unpinned, the cooling `a` is skipped and `b` serves at once.
        let answer = call(&env, &token, ProviderId::Openai, false).await;
        assert_served(&answer, ProviderId::Openai, false);
        assert_eq!((answer.attempts(), answer.credential()), (Some(1), Some(b.id.to_string().as_str())));
        // A pinned key the provider rejects: the 401 is passed through (redacted), no failover.
        env.mock.set_key_fault(&pin_a, KeyFault::Revoked);
        let answer = call_via(&env, &env.proxy, &token, ProviderId::Openai, true, Some(&a_id)).await;
        assert_eq!(answer.status, 401, "{}", answer.describe());
        assert_eq!(answer.attempts(), Some(1));
        assert_no_key(&answer, &keys);
        assert_eq!(seen(&env, &pin_b), 1, "only the unpinned call reached b");
        env.stop().await;
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// 3. Cooldowns honour Retry-After; all cooling is `rate_limited`
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn cooldown_honours_retry_after() {
    for_each_backend("cooldown_honours_retry_after", |t| async move {
        let (key_a, key_b) = (new_key("a"), new_key("b"));
        let env = Env::start_with(t, mock_accepting(&[key_a.clone(), key_b.clone()], &[]), |_| {}).await;
        let keys = vec![key_a.clone(), key_b.clone(), env.keys.openai.clone(), env.keys.anthropic.clone()];
        let (org, token) = org_with_token(&env, Tier::KatmanB).await;
        let a = add_own(&env, &org, "a", ProviderId::Openai, &key_a, prio(1)).await;
        let b = add_own(&env, &org, "b", ProviderId::Openai, &key_b, prio(0)).await;

        env.mock.set_key_fault(&key_a, KeyFault::Throttled { retry_after: Duration::from_secs(2) });
        let started = Instant::now();
        let first = call(&env, &token, ProviderId::Openai, false).await;
        assert_served(&first, ProviderId::Openai, false);
        assert_eq!((first.attempts(), first.credential()), (Some(2), Some(b.id.to_string().as_str())));
        assert_no_key(&first, &keys);
        assert_eq!(seen(&env, &key_a), 1);

        // The node shows a cooling down until about two seconds from now.
        let shown = env.vault.credential(Owner::Org(org.id), "a").await.unwrap().credential.health;
        assert_eq!(shown.state, HealthState::CoolingDown, "{shown:?}");
        assert_eq!(shown.last_status, Some(429), "{shown:?}");
        assert!(shown.until.is_some(), "{shown:?}");

        // While the provider's Retry-After lasts, every call goes to b at once.
        let mut during = 0;
        while started.elapsed() < Duration::from_millis(1800) {
            let answer = call(&env, &token, ProviderId::Openai, false).await;
            assert_served(&answer, ProviderId::Openai, false);
            assert_eq!(
                (answer.attempts(), answer.credential()),
                (Some(1), Some(b.id.to_string().as_str())),
                "at {:?}",
                started.elapsed()
            );
            during += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(during >= 5, "only {during} calls during the cooldown");
        assert_eq!(seen(&env, &key_a), 1, "no request with a while it cools down");

        // After it, a serves again.
        env.mock.clear_key_fault(&key_a);
        let wait = Duration::from_millis(2300).saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
        let mut by_a = 0;
        for _ in 0..3 {
            let answer = call(&env, &token, ProviderId::Openai, false).await;
            assert_served(&answer, ProviderId::Openai, false);
            if answer.credential() == Some(a.id.to_string().as_str()) {
                by_a += 1;
            }
        }
        assert!(by_a >= 1, "a is used again once its cooldown ended");
        assert!(seen(&env, &key_a) >= 2);

        // Every candidate throttled: the provider's last 429 goes to the client ...
        env.mock.set_key_fault(&key_a, KeyFault::Throttled { retry_after: Duration::from_secs(4) });
        env.mock.set_key_fault(&key_b, KeyFault::Throttled { retry_after: Duration::from_secs(4) });
        let both = call(&env, &token, ProviderId::Openai, false).await;
        assert_eq!(both.status, 429, "{}", both.describe());
        assert_eq!(both.error_code().as_deref(), Some("rate_limit_exceeded"), "the provider's own 429");
        assert_eq!((both.attempts(), both.credential()), (Some(2), Some(b.id.to_string().as_str())));
        assert_no_key(&both, &keys);
        let done = completions(&env, &both.call_id, 2).await;
        assert_eq!(done.iter().filter(|c| c.status == "failed_over").count(), 1, "{done:?}");

        // ... and then, both cooling down, byok refuses at once: rate_limited with
        // Retry-After, audited as denied, nothing sent.
        let before = env.mock.request_count();
        let refused = call(&env, &token, ProviderId::Openai, false).await;
        assert_eq!(refused.status, 429, "{}", refused.describe());
        assert_eq!(refused.error_code().as_deref(), Some("rate_limited"), "byok's refusal: {}", refused.body);
        let retry: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!((1..=4).contains(&retry), "Retry-After {retry}");
        assert!(refused.header("x-byok-credential").is_none());
        assert_no_key(&refused, &keys);
        assert_eq!(env.mock.request_count(), before, "nothing is sent");
        let rows = audit_of(&env, &org.id, &refused.call_id).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].outcome, Outcome::Denied);
        assert_eq!(rows[0].reason.as_deref(), Some("rate_limited"));
        env.stop().await;
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// 4. The circuit breaker
// ---------------------------------------------------------------------------------------

/// `a` answers 503 until three of its attempts failed (each call served by `b`); then `a`
/// gets nothing for 10 s; then a probe reaches it, succeeds, and `a` serves again.
/// `pooled`: `a` and `b` form one pool (same rank, weight 1 each) and share the calls;
/// else `a` is preferred (priority 1 over 0) and serves every call once closed again.
async fn circuit_scenario(t: TestStore, pooled: bool) {
    let (key_a, key_b) = (new_key("a"), new_key("b"));
    let env = Env::start_with(t, mock_accepting(&[key_a.clone(), key_b.clone()], &[]), |_| {}).await;
    let keys = vec![key_a.clone(), key_b.clone(), env.keys.openai.clone()];
    let (org, token) = org_with_token(&env, Tier::KatmanB).await;
    let a = add_own(&env, &org, "a", ProviderId::Openai, &key_a, prio(i32::from(!pooled))).await;
    let b = add_own(&env, &org, "b", ProviderId::Openai, &key_b, prio(0)).await;
    let (a_id, b_id) = (a.id.to_string(), b.id.to_string());
    let what = if pooled { "pooled" } else { "preferred" };

    env.mock.set_key_fault(&key_a, KeyFault::Status(503));
    let mut calls = 0;
    while seen(&env, &key_a) < 3 {
        calls += 1;
        assert!(calls <= 12, "{what}: a was tried {} times in {calls} calls", seen(&env, &key_a));
        let before = seen(&env, &key_a);
        let answer = call(&env, &token, ProviderId::Openai, false).await;
        assert_served(&answer, ProviderId::Openai, false);
        assert_eq!(answer.credential(), Some(b_id.as_str()), "{what}");
        let tried_a = seen(&env, &key_a) > before;
        assert_eq!(answer.attempts(), Some(if tried_a { 2 } else { 1 }), "{what}: {}", answer.describe());
        assert_no_key(&answer, &keys);
    }
    if !pooled {
        assert_eq!(calls, 3, "the preferred a is tried first on every call");
    }
    let opened = Instant::now();
    let shown = env.vault.credential(Owner::Org(org.id), "a").await.unwrap().credential.health;
    assert_eq!((shown.state, shown.last_status), (HealthState::CoolingDown, Some(503)), "{what}: {shown:?}");

    // Open: no request with a for 10 s, every call served by b at once.
    while opened.elapsed() < Duration::from_millis(9500) {
        let answer = call(&env, &token, ProviderId::Openai, false).await;
        assert_served(&answer, ProviderId::Openai, false);
        assert_eq!((answer.attempts(), answer.credential()), (Some(1), Some(b_id.as_str())), "{what}");
        assert_eq!(
            seen(&env, &key_a),
            3,
            "{what}: a request with a while its circuit is open ({:?})",
            opened.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    env.mock.clear_key_fault(&key_a);
    tokio::time::sleep(Duration::from_millis(10_300).saturating_sub(opened.elapsed())).await;

    // One probe call reaches a within the next few calls (the very next one when a is
    // preferred), and succeeds.
    let mut probed = None;
    for n in 0..4 {
        let answer = call(&env, &token, ProviderId::Openai, false).await;
        assert_served(&answer, ProviderId::Openai, false);
        if answer.credential() == Some(a_id.as_str()) {
            assert_eq!(answer.attempts(), Some(1), "{what}");
            probed = Some(n);
            break;
        }
    }
    let health = env.vault.credential(Owner::Org(org.id), "a").await.unwrap().credential.health;
    assert!(
        probed.is_some(),
        "{what}: none of 4 calls made {:?} after a's circuit opened reached a (the mock saw {} requests with a, \
         the last 3 before the circuit opened; a's health on the node: {health:?})",
        opened.elapsed(),
        seen(&env, &key_a)
    );
    if !pooled {
        assert_eq!(probed, Some(0), "the first call after the open period probes the preferred a");
    }
    assert_eq!(seen(&env, &key_a), 4, "{what}: exactly one probe");

    // Closed again: a serves again (sharing the calls with b when pooled).
    let mut by_a = 0;
    for _ in 0..6 {
        let answer = call(&env, &token, ProviderId::Openai, false).await;
        assert_served(&answer, ProviderId::Openai, false);
        assert_eq!(answer.attempts(), Some(1), "{what}");
        by_a += usize::from(answer.credential() == Some(a_id.as_str()));
    }
    assert_eq!(by_a, if pooled { 3 } else { 6 }, "{what}: calls a served of 6 once its circuit closed");
    let shown = env.vault.credential(Owner::Org(org.id), "a").await.unwrap().credential.health;
    assert_eq!(shown.state, HealthState::Ok, "{what}: {shown:?}");
    env.stop().await;
}

/// The circuit of a pool member (SPEC 3.1: "10 s, then one probe call decides").
#[tokio::test]
async fn three_5xx_open_the_circuit_and_a_probe_closes_it() {
    for_each_backend("three_5xx_open_the_circuit_and_a_probe_closes_it", |t| circuit_scenario(t, true)).await.unwrap();
}

/// The same for a preferred credential (a rank of its own).
#[tokio::test]
async fn the_circuit_of_a_preferred_key_opens_and_its_probe_closes_it() {
    for_each_backend("the_circuit_of_a_preferred_key_opens_and_its_probe_closes_it", |t| circuit_scenario(t, false))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// 5. A key the provider rejects is failing on every node until verified (or rotated)
// ---------------------------------------------------------------------------------------

/// What the fleet test's steps act on: one org with `a` (priority 1) and `b`.
struct Leg<'a> {
    env: &'a Env,
    org: Org,
    token: String,
    /// Node 1 (the env's, whose vault the test drives) and node 2.
    nodes: &'a [String; 2],
    a: Credential,
    b_id: String,
    keys: &'a [String],
}

impl<'a> Leg<'a> {
    async fn new(env: &'a Env, nodes: &'a [String; 2], keys: &'a [String], key_a: &str, key_b: &str) -> Leg<'a> {
        let (org, token) = org_with_token(env, Tier::KatmanB).await;
        let a = add_own(env, &org, "a", ProviderId::Openai, key_a, prio(1)).await;
        let b = add_own(env, &org, "b", ProviderId::Openai, key_b, prio(0)).await;
        let leg = Leg { env, org, token, nodes, a, b_id: b.id.to_string(), keys };
        // Both nodes use a.
        for node in nodes {
            let answer = call_via(env, node, &leg.token, ProviderId::Openai, false, None).await;
            assert_served(&answer, ProviderId::Openai, false);
            assert_eq!(answer.credential(), Some(leg.a.id.to_string().as_str()), "{node}");
        }
        leg
    }

    /// The provider rejects `key` (a's current key): a call through node 1 fails over to
    /// b; a is durably failing within 1.5 s; 1.5 s later node 2 — which never saw the
    /// rejection itself — skips a (and so does node 1).
    async fn reject(&self, key: &str) {
        let env = self.env;
        env.mock.set_key_fault(key, KeyFault::Revoked);
        let answer = call_via(env, &self.nodes[0], &self.token, ProviderId::Openai, false, None).await;
        assert_served(&answer, ProviderId::Openai, false);
        assert_eq!((answer.attempts(), answer.credential()), (Some(2), Some(self.b_id.as_str())), "node 1 fails over");
        assert_no_key(&answer, self.keys);
        let failing = eventually(Duration::from_millis(1500), || durably_failing(env, &self.org.id, &self.a)).await;
        assert!(failing, "a is not durably failing 1.5 s after the provider rejected it");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = seen(env, key);
        for node in self.nodes {
            for _ in 0..3 {
                let answer = call_via(env, node, &self.token, ProviderId::Openai, false, None).await;
                assert_served(&answer, ProviderId::Openai, false);
                assert_eq!((answer.attempts(), answer.credential()), (Some(1), Some(self.b_id.as_str())), "{node}");
            }
        }
        assert_eq!(seen(env, key), before, "a node used a after it was marked failing");
    }

    /// Both nodes use a again (within ~1.5 s), with `key`; else what went wrong.
    async fn used_again(&self, key: &str, what: &str) -> Result<(), String> {
        let env = self.env;
        let a_id = self.a.id.to_string();
        let mut problems = Vec::new();
        let durable = env.t.store().get_credential(&self.org.id, &self.a.id).await.unwrap().unwrap().credential.health;
        if durable.state != HealthState::Ok {
            problems.push(format!("durable health is still {durable:?}"));
        }
        for (n, node) in self.nodes.iter().enumerate() {
            let before = seen(env, key);
            let ok = eventually(Duration::from_millis(1500), || async {
                let answer = call_via(env, node, &self.token, ProviderId::Openai, false, None).await;
                assert_served(&answer, ProviderId::Openai, false);
                assert_no_key(&answer, self.keys);
                answer.credential() == Some(a_id.as_str())
            })
            .await;
            if !ok || seen(env, key) <= before {
                problems.push(format!("node {} does not use a within 1.5 s", n + 1));
            }
        }
        let shown = env.vault.credential(Owner::Org(self.org.id), "a").await.unwrap().credential.health;
        if shown.state != HealthState::Ok {
            problems.push(format!("GET credential on node 1 shows {shown:?}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("after {what}: {}", problems.join("; ")))
        }
    }
}

/// PostgreSQL only (two nodes on one database). Three legs, each with an org of its own:
/// the failing state is cleared by a successful verification, by a rotation, and by
/// enabling the credential again.
#[tokio::test]
async fn a_rejected_key_fails_on_every_node_until_verified() {
    const TEST: &str = "a_rejected_key_fails_on_every_node_until_verified";
    let Some(t) = postgres_only(TEST).await else { return };
    let legs: Vec<[String; 2]> = (0..3).map(|_| [new_key("a"), new_key("b")]).collect();
    let rotated = new_key("a2");
    let mut accepted: Vec<String> = legs.iter().flatten().cloned().collect();
    accepted.push(rotated.clone());
    let env = Env::start_with(t, mock_accepting(&accepted, &[]), |_| {}).await;
    let (node2, _) = env.second_node(|_| {}).await;
    let mut keys = accepted.clone();
    keys.push(env.keys.openai.clone());
    let nodes = [env.proxy.clone(), node2];
    let mut problems = Vec::new();

    // Verification.
    let [key_a, key_b] = &legs[0];
    let leg = Leg::new(&env, &nodes, &keys, key_a, key_b).await;
    leg.reject(key_a).await;
    let health = env.vault.credential(Owner::Org(leg.org.id), "a").await.unwrap().credential.health;
    assert_eq!((health.state, health.last_status), (HealthState::Failing, Some(401)), "{health:?}");
    let (_, events) = env.vault.credential_lifecycle(Owner::Org(leg.org.id), "a").await.unwrap();
    let rejected: Vec<_> = events.iter().filter(|e| e.kind == LifecycleKind::ProviderRejected).collect();
    assert_eq!(rejected.len(), 1, "one provider_rejected event: {events:?}");
    assert_eq!(rejected[0].details["upstream_status"], 401, "{:?}", rejected[0]);
    // Verified while the provider still rejects the key: still failing.
    let verdict = env.vault.verify_credential(&actor(), Owner::Org(leg.org.id), "a").await.unwrap();
    assert!(!verdict.ok && verdict.reason == VerifyReason::InvalidKey, "{verdict:?}");
    assert!(durably_failing(&env, &leg.org.id, &leg.a).await);
    // The key works again at the provider and is verified: a serves on both nodes.
    env.mock.clear_key_fault(key_a);
    let verdict = env.vault.verify_credential(&actor(), Owner::Org(leg.org.id), "a").await.unwrap();
    assert!(verdict.ok && verdict.status == Some(200), "{verdict:?}");
    problems.extend(leg.used_again(key_a, "a successful verification").await.err());

    // Rotation (to a key the provider accepts).
    let [key_a, key_b] = &legs[1];
    let leg = Leg::new(&env, &nodes, &keys, key_a, key_b).await;
    leg.reject(key_a).await;
    let secret = ProviderSecret::new(rotated.clone()).unwrap();
    env.vault.rotate_credential(&actor(), Owner::Org(leg.org.id), "a", secret).await.unwrap();
    problems.extend(leg.used_again(&rotated, "a rotation").await.err());

    // Enabling it again (the admin says the key works).
    let [key_a, key_b] = &legs[2];
    let leg = Leg::new(&env, &nodes, &keys, key_a, key_b).await;
    leg.reject(key_a).await;
    env.mock.clear_key_fault(key_a);
    env.vault.change_credential_state(&actor(), Owner::Org(leg.org.id), "a", StateChange::Enable).await.unwrap();
    problems.extend(leg.used_again(key_a, "enabling it again").await.err());

    assert!(problems.is_empty(), "failing was not cleared everywhere:\n{}", problems.join("\n"));
    env.stop().await;
}

/// Every admitting credential rejected by the provider: the last 401 goes to the client
/// (redacted), then calls are refused with `credential_failing` naming them, nothing sent.
#[tokio::test]
async fn every_rejected_key_is_credential_failing() {
    for_each_backend("every_rejected_key_is_credential_failing", |t| async move {
        let (key_a, key_b) = (new_key("a"), new_key("b"));
        let env = Env::start_with(t, mock_accepting(&[key_a.clone(), key_b.clone()], &[]), |_| {}).await;
        let keys = vec![key_a.clone(), key_b.clone(), env.keys.openai.clone()];
        let (org, token) = org_with_token(&env, Tier::KatmanB).await;
        let a = add_own(&env, &org, "a", ProviderId::Openai, &key_a, prio(1)).await;
        let b = add_own(&env, &org, "b", ProviderId::Openai, &key_b, prio(0)).await;
        env.mock.set_key_fault(&key_a, KeyFault::Revoked);
        env.mock.set_key_fault(&key_b, KeyFault::Forbidden);

        let last = call(&env, &token, ProviderId::Openai, false).await;
        assert_eq!(last.status, 403, "b's own 403: {}", last.describe());
        assert_eq!((last.attempts(), last.credential()), (Some(2), Some(b.id.to_string().as_str())));
        assert_ne!(last.error_code().as_deref(), Some("credential_failing"), "the provider's answer");
        assert_no_key(&last, &keys);
        for credential in [&a, &b] {
            let failing = eventually(Duration::from_secs(3), || durably_failing(&env, &org.id, credential)).await;
            assert!(failing, "{} is not durably failing", credential.name);
        }

        let before = env.mock.request_count();
        let refused = call(&env, &token, ProviderId::Openai, true).await;
        assert_eq!(refused.status, 403, "{}", refused.describe());
        assert_eq!(refused.error_code().as_deref(), Some("credential_failing"), "{}", refused.body);
        let message = refused.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(&a.id.to_string()) && message.contains(&b.id.to_string()), "{message}");
        assert_no_key(&refused, &keys);
        assert_eq!(env.mock.request_count(), before, "nothing is sent");
        let rows = audit_of(&env, &org.id, &refused.call_id).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].outcome, rows[0].reason.as_deref()), (Outcome::Denied, Some("credential_failing")));

        // Verified once the provider accepts the keys again: served.
        env.mock.clear_key_fault(&key_a);
        env.mock.clear_key_fault(&key_b);
        for name in ["a", "b"] {
            let verdict = env.vault.verify_credential(&actor(), Owner::Org(org.id), name).await.unwrap();
            assert!(verdict.ok, "{name}: {verdict:?}");
        }
        let answer = call(&env, &token, ProviderId::Openai, false).await;
        assert_served(&answer, ProviderId::Openai, false);
        assert_eq!((answer.attempts(), answer.credential()), (Some(1), Some(a.id.to_string().as_str())));
        env.stop().await;
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// 6. Weighted pools
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn weights_share_calls_within_tolerance() {
    for_each_backend("weights_share_calls_within_tolerance", |t| async move {
        let (key_a, key_b) = (new_key("a"), new_key("b"));
        let env = Env::start_with(t, mock_accepting(&[key_a.clone(), key_b.clone()], &[]), |_| {}).await;
        let keys = vec![key_a.clone(), key_b.clone(), env.keys.openai.clone()];
        let (org, token) = org_with_token(&env, Tier::KatmanB).await;
        let a = add_own(&env, &org, "a", ProviderId::Openai, &key_a, Opts { weight: Some(3), ..Opts::default() }).await;
        // b's weight set by PATCH (default 1 at create).
        let b = add_own(&env, &org, "b", ProviderId::Openai, &key_b, Opts::default()).await;
        let patch = byok_vault::CredentialPatch { weight: Some(1), ..Default::default() };
        env.vault.update_credential(&actor(), Owner::Org(org.id), "b", patch).await.unwrap();

        let mut answered_by_a = 0;
        for n in 0..100 {
            let answer = call(&env, &token, ProviderId::Openai, n % 4 == 0).await;
            assert_served(&answer, ProviderId::Openai, n % 4 == 0);
            assert_eq!(answer.attempts(), Some(1));
            assert_no_key(&answer, &keys);
            let by = answer.credential().unwrap();
            assert!(by == a.id.to_string() || by == b.id.to_string(), "{by}");
            answered_by_a += usize::from(by == a.id.to_string());
        }
        let (at_a, at_b) = (seen(&env, &key_a), seen(&env, &key_b));
        assert_eq!(at_a + at_b, 100);
        assert_eq!(at_a, answered_by_a, "x-byok-credential names the key that answered");
        assert!((65..=85).contains(&at_a), "a (weight 3) got {at_a} of 100, b (weight 1) {at_b}");
        env.stop().await;
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// 7. Failover follows the resolution rule
// ---------------------------------------------------------------------------------------

/// The only other key does not admit the call (another team, another model family), or
/// is in the platform pool (katman-b never uses it; katman-a only when no own credential
/// admits the call): a 429 from `a` reaches the client as the provider's own.
#[tokio::test]
async fn failover_never_goes_where_resolution_would_not() {
    for_each_backend("failover_never_goes_where_resolution_would_not", |t| async move {
        let cases = ["other team", "other family", "katman-b and the platform pool", "katman-a and the platform pool"];
        let plan: Vec<(&str, String, String)> = cases.iter().map(|c| (*c, new_key("a"), new_key("other"))).collect();
        let accepted: Vec<String> = plan.iter().flat_map(|(_, a, o)| [a.clone(), o.clone()]).collect();
        let env = Env::start_with(t, mock_accepting(&accepted, &[]), |_| {}).await;
        let mut keys = accepted.clone();
        keys.push(env.keys.openai.clone());

        for (what, key_a, key_other) in &plan {
            let tier = if what.starts_with("katman-a") { Tier::KatmanA } else { Tier::KatmanB };
            let (org, token) = org_with_token(&env, tier).await;
            let a = add_own(&env, &org, "a", ProviderId::Openai, key_a, prio(0)).await;
            match *what {
                "other team" => {
                    env.vault.create_team(&actor(), org.id, "ops").await.unwrap();
                    let scope = ScopeInput { teams: vec!["ops".into()], ..ScopeInput::default() };
                    let opts = Opts { priority: 5, scope, ..Opts::default() };
                    add_own(&env, &org, "other", ProviderId::Openai, key_other, opts).await;
                }
                "other family" => {
                    let scope = ScopeInput { model_families: vec!["gpt-4o-mini".into()], ..ScopeInput::default() };
                    let opts = Opts { priority: 5, scope, ..Opts::default() };
                    add_own(&env, &org, "other", ProviderId::Openai, key_other, opts).await;
                }
                _ => {
                    let name = format!("shared-{}", ulid::Ulid::new().to_string().to_ascii_lowercase());
                    add(&env.vault, Owner::Platform, &name, ProviderId::Openai, key_other, prio(5)).await;
                }
            }
            env.mock.fail_key_times(key_a, KeyFault::Throttled { retry_after: Duration::from_secs(30) }, 1);
            let answer = call(&env, &token, ProviderId::Openai, false).await;
            assert_eq!(answer.status, 429, "{what}: {}", answer.describe());
            assert_eq!(answer.error_code().as_deref(), Some("rate_limit_exceeded"), "{what}: the provider's own 429");
            assert!(answer.body.contains("org-mock"), "{what}: the provider's body: {}", answer.body);
            assert_eq!(answer.attempts(), Some(1), "{what}");
            assert_eq!(answer.credential(), Some(a.id.to_string().as_str()), "{what}");
            assert_no_key(&answer, &keys);
            assert_eq!(seen(&env, key_a), 1, "{what}");
            assert_eq!(seen(&env, key_other), 0, "{what}: the other key is never used");
            let rows = audit_of(&env, &org.id, &answer.call_id).await;
            let summary: Vec<_> = rows.iter().map(|r| (r.outcome, r.attempt, r.credential_id)).collect();
            assert_eq!(summary, vec![(Outcome::Allowed, Some(1), Some(a.id))], "{what}");
            let done = completions(&env, &answer.call_id, 1).await;
            assert_eq!((done[0].status.as_str(), done[0].upstream_status), ("completed", Some(429)), "{what}");
            assert_eq!(billed(&env, &org.id).await, (1, 0), "{what}: the 429 the client got is the call");
        }
        env.stop().await;
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// `[proxy] failover_attempts`
// ---------------------------------------------------------------------------------------

/// Three candidates of descending priority, the first two answering 503: with the
/// default (2 further attempts) the third serves; with 1 the second's 503 reaches the
/// client and the third is never asked; with 0 the first's 503 does.
#[tokio::test]
async fn failover_attempts_bound_the_retries() {
    for_each_backend("failover_attempts_bound_the_retries", |t| async move {
        let plan: Vec<[String; 3]> = (0..3).map(|_| [new_key("a"), new_key("b"), new_key("c")]).collect();
        let accepted: Vec<String> = plan.iter().flatten().cloned().collect();
        let env = Env::start_with(t, mock_accepting(&accepted, &[]), |_| {}).await;
        let (one, _) = env.second_node(|config| config.failover_attempts = 1).await;
        let (none, _) = env.second_node(|config| config.failover_attempts = 0).await;
        let mut keys = accepted.clone();
        keys.push(env.keys.openai.clone());

        let nodes = [(env.proxy.clone(), 2u32), (one, 1), (none, 0)];
        for ((node, further), [key_a, key_b, key_c]) in nodes.iter().zip(&plan) {
            let (org, token) = org_with_token(&env, Tier::KatmanB).await;
            let creds = [
                add_own(&env, &org, "a", ProviderId::Openai, key_a, prio(2)).await,
                add_own(&env, &org, "b", ProviderId::Openai, key_b, prio(1)).await,
                add_own(&env, &org, "c", ProviderId::Openai, key_c, prio(0)).await,
            ];
            env.mock.fail_key_times(key_a, KeyFault::Status(503), 1);
            env.mock.fail_key_times(key_b, KeyFault::Status(503), 1);
            let answer = call_via(&env, node, &token, ProviderId::Openai, false, None).await;
            let attempts = further + 1;
            assert_eq!(answer.attempts(), Some(attempts), "failover_attempts = {further}: {}", answer.describe());
            let last = &creds[usize::try_from(*further).unwrap()];
            assert_eq!(answer.credential(), Some(last.id.to_string().as_str()), "failover_attempts = {further}");
            assert_eq!(answer.status, if *further == 2 { 200 } else { 503 }, "failover_attempts = {further}");
            assert_no_key(&answer, &keys);
            let expected: Vec<usize> = (0..3).map(|i| usize::from(i <= *further as usize)).collect();
            let got: Vec<usize> = [key_a, key_b, key_c].iter().map(|k| seen(&env, k)).collect();
            assert_eq!(got, expected, "failover_attempts = {further}: requests per key");
            let rows = audit_of(&env, &org.id, &answer.call_id).await;
            let attempts_seen: Vec<Option<u32>> = rows.iter().map(|r| r.attempt).collect();
            assert_eq!(attempts_seen, (1..=attempts).map(Some).collect::<Vec<_>>(), "failover_attempts = {further}");
            let done = completions(&env, &answer.call_id, attempts as usize).await;
            assert_eq!(done.iter().filter(|c| c.status == "failed_over").count(), *further as usize);
            assert_eq!(billed(&env, &org.id).await, (1, 0), "failover_attempts = {further}");
        }
        env.stop().await;
    })
    .await
    .unwrap();
}
