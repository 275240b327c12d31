//! The official provider SDKs (Python `openai` and `anthropic`, unchanged but for base
//! URL and key, `max_retries=0`) against the real `byok serve` while some of the org's
//! keys misbehave at the provider (SPEC 3.1): a throttled OpenAI key (429 with
//! `Retry-After: 30`) and an overloaded Anthropic key (529). The SDK never sees the
//! 429/529: byok fails over to the next credential before any byte reaches it, says so in
//! `x-byok-attempts` / `x-byok-credential`, and keeps off the cooling key for the next
//! calls. When every key is throttled the SDK raises `RateLimitError` with byok's
//! `rate_limited` and a `Retry-After`; when the provider rejects every key,
//! `PermissionDeniedError` with `credential_failing`.
//!
//! Needs a Python with both packages: `BYOK_PYTHON` names it, else `python3`. Without them
//! the test says it was skipped — unless `BYOK_REQUIRE_SDK_TESTS=1`, when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use byok_mock_provider::{KeyFault, MockConfig, MockProvider};
use reqwest::Method;
use serde_json::{json, Value};
use support::{admin_json, operator_token, Server};

// Canaries: any of these in an output is a leak.
const KEY_A: &str = "sk-canary-failover-openai-a-7d1c2b3a4f5e6d7c";
const KEY_B: &str = "sk-canary-failover-openai-b-0e9f8a7b6c5d4e3f";
const KEY_C: &str = "sk-ant-canary-failover-c-1a2b3c4d5e6f7a8b";
const KEY_D: &str = "sk-ant-canary-failover-d-9c8b7a6f5e4d3c2b";
const KEYS: [&str; 4] = [KEY_A, KEY_B, KEY_C, KEY_D];

/// The SDK side, one phase per run (`python - PHASE`); the Rust side changes the mock's
/// faults between phases. Prints one JSON object with what it saw; exits non-zero (with
/// the reason on stderr) on the first unexpected thing.
const SCRIPT: &str = r#"
import json
import os
import sys

import anthropic
import openai

phase = sys.argv[1]
proxy = os.environ["BYOK_PROXY"]
token = os.environ["BYOK_TOKEN"]
prefix = os.environ["BYOK_CALL_PREFIX"]
cred = {k: os.environ["BYOK_CRED_" + k] for k in "ABCD"}
seen = {"phase": phase, "openai_version": openai.__version__, "anthropic_version": anthropic.__version__}


def check(condition, message):
    if not condition:
        print(json.dumps(seen, indent=2))
        print(f"FAILED ({phase}): {message}", file=sys.stderr)
        sys.exit(1)


def served(name, raw, want_attempts, want_credential):
    got = {
        "attempts": raw.headers.get("x-byok-attempts"),
        "credential": raw.headers.get("x-byok-credential"),
        "call_id": raw.headers.get("x-byok-call-id"),
        "status": raw.status_code,
    }
    seen[name] = got
    check(raw.status_code == 200, f"{name}: status {raw.status_code}")
    check(got["attempts"] == str(want_attempts), f"{name}: x-byok-attempts {got['attempts']}, want {want_attempts}")
    check(got["credential"] == cred[want_credential],
          f"{name}: x-byok-credential {got['credential']}, want {want_credential} = {cred[want_credential]}")
    return got


oai = openai.OpenAI(base_url=f"{proxy}/openai/v1", api_key=token, max_retries=0)
ant = anthropic.Anthropic(base_url=f"{proxy}/anthropic", api_key=token, max_retries=0)


def openai_sync(name, attempts, credential):
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"hello from {name}"}],
        extra_headers={"x-byok-call-id": f"{prefix}-{name}"},
    )
    served(name, raw, attempts, credential)
    chat = raw.parse()
    check(chat.choices[0].message.content == f"mock reply to: hello from {name}",
          f"{name}: content {chat.choices[0].message.content!r}")
    check(chat.usage is not None and chat.usage.prompt_tokens > 0, f"{name}: no usage")


def openai_stream(name, attempts, credential):
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"stream a greeting for {name}"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-byok-call-id": f"{prefix}-{name}"},
    )
    served(name, raw, attempts, credential)
    pieces, usage = [], None
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    seen[name]["text"] = "".join(pieces)
    check(len(pieces) > 1, f"{name}: the stream came in fewer than two pieces")
    check("".join(pieces).startswith("mock reply to:"), f"{name}: streamed text {''.join(pieces)!r}")
    check(usage is not None and usage.completion_tokens > 0, f"{name}: the stream carried no usage")


def anthropic_sync(name, attempts, credential):
    raw = ant.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": f"hello from {name}"}],
        extra_headers={"x-byok-call-id": f"{prefix}-{name}"},
    )
    served(name, raw, attempts, credential)
    message = raw.parse()
    check(message.content[0].text == f"mock reply to: hello from {name}", f"{name}: text {message.content[0].text!r}")
    check(message.usage.input_tokens > 0 and message.usage.output_tokens > 0, f"{name}: no usage")


def anthropic_stream(name, attempts, credential):
    raw = ant.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": f"stream a greeting for {name}"}],
        stream=True,
        extra_headers={"x-byok-call-id": f"{prefix}-{name}"},
    )
    served(name, raw, attempts, credential)
    texts, types, output_tokens = [], [], 0
    for event in raw.parse():
        types.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            texts.append(event.delta.text)
        if event.type == "message_delta":
            output_tokens = event.usage.output_tokens
    seen[name]["text"] = "".join(texts)
    check(types[0] == "message_start" and types[-1] == "message_stop", f"{name}: events {types}")
    check(len(texts) > 1, f"{name}: the stream came in fewer than two pieces")
    check(output_tokens > 0, f"{name}: the stream carried no usage")


def error_code(error):
    body = error.body if isinstance(error.body, dict) else {}
    return body.get("error", body).get("code") if isinstance(body.get("error", body), dict) else None


def refused(name, error):
    response = error.response
    got = {
        "status": error.status_code,
        "code": error_code(error),
        "message": str(error),
        "retry_after": response.headers.get("retry-after"),
        "attempts": response.headers.get("x-byok-attempts"),
        "credential": response.headers.get("x-byok-credential"),
        "call_id": response.headers.get("x-byok-call-id"),
    }
    seen[name] = got
    check(got["call_id"] == f"{prefix}-{name}", f"{name}: x-byok-call-id {got['call_id']!r}")
    return got


if phase in ("failover-sync-first", "failover-stream-first"):
    # A (priority 1) is throttled for 30 s, C (priority 1) answers 529: the first call of
    # each provider is served by B / D after two attempts; the next ones go straight there.
    if phase == "failover-sync-first":
        openai_sync("openai-sync-1", 2, "B")
        openai_stream("openai-stream-2", 1, "B")
        openai_sync("openai-sync-3", 1, "B")
        anthropic_sync("anthropic-sync-1", 2, "D")
        anthropic_stream("anthropic-stream-2", 1, "D")
        anthropic_sync("anthropic-sync-3", 1, "D")
    else:
        openai_stream("openai-stream-1", 2, "B")
        openai_sync("openai-sync-2", 1, "B")
        anthropic_stream("anthropic-stream-1", 2, "D")
        anthropic_sync("anthropic-sync-2", 1, "D")

elif phase == "after-c-cooled":
    # C's default 5 s cooldown is over (it is still overloaded: tried again, 529, D
    # serves), while A's 30 s Retry-After still keeps every call off it.
    openai_sync("openai-sync-4", 1, "B")
    anthropic_sync("anthropic-sync-4", 2, "D")
    anthropic_stream("anthropic-stream-5", 1, "D")
    openai_stream("openai-stream-5", 1, "B")

elif phase == "openai-all-throttled":
    # B is throttled now too. The first call still reaches B (byok does not know yet) and
    # the provider's 429 is all there is to answer with; after it byok refuses by itself.
    try:
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-byok-call-id": f"{prefix}-openai-throttled-1"},
        )
        check(False, "a call was served although both keys are throttled")
    except openai.RateLimitError as error:
        got = refused("openai-throttled-1", error)
        check(got["credential"] == cred["B"], f"the provider's 429 did not come from B: {got}")
    for name, stream in (("openai-throttled-2", False), ("openai-throttled-3", True)):
        try:
            oai.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=stream,
                extra_headers={"x-byok-call-id": f"{prefix}-{name}"},
            )
            check(False, f"{name}: served although both keys are cooling down")
        except openai.RateLimitError as error:
            got = refused(name, error)
            check(got["status"] == 429 and got["code"] == "rate_limited", f"{name}: {got}")
            check(error.code == "rate_limited", f"{name}: RateLimitError.code {error.code!r}")
            check(got["retry_after"] is not None and got["retry_after"].isdigit()
                  and 1 <= int(got["retry_after"]) <= 31, f"{name}: retry-after {got['retry_after']!r}")
            check("cooling down" in got["message"], f"{name}: the message does not say why: {got['message']}")

elif phase == "anthropic-all-revoked":
    # C and D are revoked at the provider. The first call tries both (each 401 marks its
    # credential failing); the provider's last 401 is what the SDK gets. After it byok
    # refuses by itself, naming both credentials.
    try:
        ant.messages.create(
            model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-byok-call-id": f"{prefix}-anthropic-revoked-1"},
        )
        check(False, "a call was served although both keys are revoked")
    except anthropic.AuthenticationError as error:
        got = refused("anthropic-revoked-1", error)
        check(got["attempts"] == "2" and got["credential"] == cred["D"], f"anthropic-revoked-1: {got}")
    for name, stream in (("anthropic-revoked-2", False), ("anthropic-revoked-3", True)):
        try:
            ant.messages.create(
                model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}], stream=stream,
                extra_headers={"x-byok-call-id": f"{prefix}-{name}"},
            )
            check(False, f"{name}: served although both keys are failing")
        except anthropic.PermissionDeniedError as error:
            got = refused(name, error)
            check(got["status"] == 403 and got["code"] == "credential_failing", f"{name}: {got}")
            check(cred["C"] in got["message"] and cred["D"] in got["message"],
                  f"{name}: the message does not name both credentials: {got['message']}")

else:
    check(False, f"unknown phase {phase}")

print(json.dumps(seen, indent=2))
"#;

fn python() -> Option<String> {
    let python = std::env::var("BYOK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok =
        Command::new(&python).args(["-c", "import openai, anthropic"]).output().is_ok_and(|out| out.status.success());
    ok.then_some(python)
}

fn python_or_skip(test: &str) -> Option<String> {
    let python = python();
    if python.is_none() {
        if std::env::var("BYOK_REQUIRE_SDK_TESTS").is_ok_and(|v| v == "1") {
            panic!("BYOK_REQUIRE_SDK_TESTS=1 but no Python with the openai and anthropic packages (set BYOK_PYTHON)");
        }
        let _ = writeln!(std::io::stderr(), "skipped {test}: python openai/anthropic packages not installed");
    }
    python
}

/// One org as the SDK sees it: its token and its four credentials' ids.
struct Org {
    name: &'static str,
    token: String,
    /// "A".."D" → credential id.
    creds: BTreeMap<&'static str, String>,
}

impl Org {
    fn cred(&self, letter: &str) -> &str {
        &self.creds[letter]
    }
}

struct Harness {
    server: Server,
    http: reqwest::Client,
    operator: String,
    python: String,
    script: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Harness {
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        admin_json(&self.http, method, format!("{}{path}", self.server.admin_url), &self.operator, body).await
    }

    /// An org with a team, OpenAI credentials A (priority 1) and B (priority 0),
    /// Anthropic credentials C (priority 1) and D (priority 0), and a token of the team.
    async fn org(&self, name: &'static str) -> Org {
        self.admin(Method::POST, "/v1/orgs", Some(json!({"name": name, "tier": "katman-b"}))).await;
        self.admin(Method::POST, &format!("/v1/orgs/{name}/teams"), Some(json!({"name": "agents"}))).await;
        let mut creds = BTreeMap::new();
        for (letter, provider, secret, priority) in [
            ("A", "openai", KEY_A, 1),
            ("B", "openai", KEY_B, 0),
            ("C", "anthropic", KEY_C, 1),
            ("D", "anthropic", KEY_D, 0),
        ] {
            let body =
                json!({"name": format!("key-{letter}"), "provider": provider, "secret": secret, "priority": priority});
            let created = self.admin(Method::POST, &format!("/v1/orgs/{name}/credentials"), Some(body)).await;
            creds.insert(letter, created["id"].as_str().unwrap().to_owned());
        }
        let token = self.admin(Method::POST, &format!("/v1/orgs/{name}/tokens"), Some(json!({"team": "agents"}))).await
            ["token"]
            .as_str()
            .unwrap()
            .to_owned();
        Org { name, token, creds }
    }

    /// Runs the SDK script's `phase` as `org`'s workload; its JSON report.
    async fn sdk(&self, org: &Org, phase: &str) -> Value {
        let mut command = Command::new(&self.python);
        command
            .arg(&self.script)
            .arg(phase)
            .env("BYOK_PROXY", &self.server.proxy_url)
            .env("BYOK_TOKEN", &org.token)
            .env("BYOK_CALL_PREFIX", org.name);
        for (letter, id) in &org.creds {
            command.env(format!("BYOK_CRED_{letter}"), id);
        }
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        for text in [&stdout, &stderr] {
            for key in KEYS {
                assert!(!text.contains(key), "a key reached the SDK ({phase}):\n{text}");
            }
        }
        assert!(
            output.status.success(),
            "SDK phase {phase} ({}) failed:\n{stdout}\n{stderr}\n{}",
            org.name,
            self.server.logs()
        );
        eprintln!("{phase} ({}): {stdout}", org.name);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{phase}: not JSON ({e}): {stdout}"))
    }

    /// The org's audit rows of one call, via the admin API.
    async fn audit(&self, org: &Org, call: &str) -> Vec<Value> {
        let page =
            self.admin(Method::GET, &format!("/v1/orgs/{}/audit?call_id={}-{call}", org.name, org.name), None).await;
        page["rows"].as_array().unwrap().clone()
    }

    /// A credential's `health` as the admin API shows it.
    async fn health(&self, org: &Org, letter: &str) -> Value {
        self.admin(Method::GET, &format!("/v1/orgs/{}/credentials/{}", org.name, org.cred(letter)), None).await
            ["health"]
            .clone()
    }

    /// Waits until `letter`'s cooldown is over (its `health` no longer `cooling_down`).
    async fn wait_cooled(&self, org: &Org, letter: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let health = self.health(org, letter).await;
            if health["state"] != "cooling_down" {
                return;
            }
            assert!(Instant::now() < deadline, "{} {letter} still cooling after {within:?}: {health}", org.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many requests presenting each key the mock saw since `from` (an index into its log).
fn per_key(mock: &MockProvider, from: usize) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for request in mock.requests().iter().skip(from) {
        let key = request.presented_key.as_deref().unwrap_or("<none>");
        let letter = match key {
            KEY_A => "A",
            KEY_B => "B",
            KEY_C => "C",
            KEY_D => "D",
            other => {
                panic!("the mock saw a key that is not a stored one: {other:?} on {} {}", request.method, request.path)
            }
        };
        *counts.entry(letter).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
    pairs.iter().copied().collect()
}

/// `(attempt, credential, outcome)` of each audit row, in order.
fn attempts(rows: &[Value]) -> Vec<(u64, String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["attempt"].as_u64().unwrap_or(0),
                r["credential_id"].as_str().unwrap_or("").to_owned(),
                r["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn allowed(org: &Org, list: &[(u64, &str)]) -> Vec<(u64, String, String)> {
    list.iter().map(|(n, letter)| (*n, org.cred(letter).to_owned(), "allowed".to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn official_sdks_never_see_a_throttled_or_overloaded_key() {
    let Some(python) = python_or_skip("official_sdks_never_see_a_throttled_or_overloaded_key") else { return };

    let mock = MockProvider::start(MockConfig {
        openai_keys: vec![KEY_A.to_owned(), KEY_B.to_owned()],
        anthropic_keys: vec![KEY_C.to_owned(), KEY_D.to_owned()],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let upstream = mock.base_url();
    let server = Server::start_with(&[
        ("BYOK_UPSTREAM_OPENAI", upstream.as_str()),
        ("BYOK_UPSTREAM_ANTHROPIC", upstream.as_str()),
    ]);
    let scratch = tempfile::tempdir().unwrap();
    let script = scratch.path().join("sdk_failover.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let h = Harness {
        operator: operator_token(&server),
        server,
        http: reqwest::Client::new(),
        python,
        script,
        _scratch: scratch,
    };

    // Two orgs with the same four keys (health is per credential, so each org's first
    // calls fail over): one whose first calls are plain, one whose first calls stream.
    let first = h.org("sync-first").await;
    let second = h.org("stream-first").await;

    // A is throttled at the provider for 30 s; C is overloaded (529, no hint).
    mock.set_key_fault(KEY_A, KeyFault::Throttled { retry_after: Duration::from_secs(30) });
    mock.set_key_fault(KEY_C, KeyFault::Status(529));

    // --- Failover: the SDK is served by B / D; the next calls go straight there. ---------
    let mark = mock.request_count();
    let seen = h.sdk(&first, "failover-sync-first").await;
    assert_eq!(seen["openai-sync-1"]["attempts"], "2", "{seen}");
    // A and C were each tried once; every other call went straight to B / D.
    assert_eq!(per_key(&mock, mark), counts(&[("A", 1), ("B", 3), ("C", 1), ("D", 3)]));
    let mark = mock.request_count();
    h.sdk(&second, "failover-stream-first").await;
    assert_eq!(per_key(&mock, mark), counts(&[("A", 1), ("B", 2), ("C", 1), ("D", 2)]));

    // The failed-over calls have an attempt-1 row (the throttled/overloaded key) and an
    // attempt-2 row (the one that answered), both allowed, same call id; the others one row.
    for (org, provider, mode) in [
        (&first, "openai", "sync"),
        (&first, "anthropic", "sync"),
        (&second, "openai", "stream"),
        (&second, "anthropic", "stream"),
    ] {
        let (tried, answered) = if provider == "openai" { ("A", "B") } else { ("C", "D") };
        let rows = h.audit(org, &format!("{provider}-{mode}-1")).await;
        assert_eq!(
            attempts(&rows),
            allowed(org, &[(1, tried), (2, answered)]),
            "{} {provider} {mode}: {rows:?}",
            org.name
        );
        // Each attempt's row carries its completion: the upstream status of the attempt
        // that was taken over, and the one that answered (completions are written with a
        // later group commit: wait for them).
        let throttled = if provider == "openai" { 429 } else { 529 };
        let mut rows = rows;
        for _ in 0..100 {
            if rows.iter().all(|r| r.get("completion").is_some()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            rows = h.audit(org, &format!("{provider}-{mode}-1")).await;
        }
        let completion = |i: usize| {
            let c = &rows[i]["completion"];
            (c["status"].as_str().unwrap_or("").to_owned(), c["upstream_status"].as_u64())
        };
        assert_eq!(completion(0), ("failed_over".to_owned(), Some(throttled)), "{rows:?}");
        assert_eq!(completion(1).1, Some(200), "{rows:?}");
        let later = if mode == "sync" { "stream" } else { "sync" };
        let rows = h.audit(org, &format!("{provider}-{later}-2")).await;
        assert_eq!(attempts(&rows), allowed(org, &[(1, answered)]), "{} {provider} {later}: {rows:?}", org.name);
    }

    // The admin API shows the cooldowns: A for the provider's 30 s, C for the default 5 s.
    let until = |health: &Value| {
        let text = health["until"].as_str().unwrap_or_else(|| panic!("no until: {health}"));
        let until = chrono::DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&chrono::Utc);
        (until - chrono::Utc::now()).num_milliseconds() as f64 / 1000.0
    };
    let a = h.health(&first, "A").await;
    assert_eq!((a["state"].as_str(), a["last_status"].as_u64()), (Some("cooling_down"), Some(429)), "{a}");
    assert!((10.0..=31.0).contains(&until(&a)), "A cools down for the provider's 30 s: {a}");
    let c = h.health(&first, "C").await;
    assert_eq!((c["state"].as_str(), c["last_status"].as_u64()), (Some("cooling_down"), Some(529)), "{c}");
    assert!(until(&c) <= 5.5, "C cools down for the default 5 s: {c}");
    for letter in ["B", "D"] {
        assert_eq!(h.health(&first, letter).await["state"], "ok", "{letter}");
    }

    // --- C's 5 s are over, A's 30 s are not. ---------------------------------------------
    h.wait_cooled(&first, "C", Duration::from_secs(10)).await;
    assert_eq!(h.health(&first, "A").await["state"], "cooling_down");
    let mark = mock.request_count();
    h.sdk(&first, "after-c-cooled").await;
    assert_eq!(per_key(&mock, mark), counts(&[("B", 2), ("C", 1), ("D", 2)]), "C tried again once, A not at all");
    let rows = h.audit(&first, "anthropic-sync-4").await;
    assert_eq!(attempts(&rows), allowed(&first, &[(1, "C"), (2, "D")]), "{rows:?}");
    // A second 529 without a hint doubles C's cooldown.
    let c = h.health(&first, "C").await;
    assert!((5.5..=10.5).contains(&until(&c)), "the repeat doubles C's cooldown: {c}");

    // --- Every OpenAI key throttled: byok's own rate_limited, nothing sent. --------------
    mock.set_key_fault(KEY_B, KeyFault::Throttled { retry_after: Duration::from_secs(30) });
    let mark = mock.request_count();
    let seen = h.sdk(&first, "openai-all-throttled").await;
    assert_eq!(per_key(&mock, mark), counts(&[("B", 1)]), "only the call that found B throttled reached the provider");
    let retry_after: u64 = seen["openai-throttled-2"]["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((1..=31).contains(&retry_after), "{seen}");
    for call in ["openai-throttled-2", "openai-throttled-3"] {
        let rows = h.audit(&first, call).await;
        assert_eq!(rows.len(), 1, "{call}: {rows:?}");
        assert_eq!((rows[0]["outcome"].as_str(), rows[0]["reason"].as_str()), (Some("denied"), Some("rate_limited")));
    }

    // --- Every Anthropic key revoked: credential_failing, nothing sent. ------------------
    // (The second org's C cooled down once, from its first call; D never did.)
    h.wait_cooled(&second, "C", Duration::from_secs(10)).await;
    mock.set_key_fault(KEY_C, KeyFault::Revoked);
    mock.set_key_fault(KEY_D, KeyFault::Revoked);
    let mark = mock.request_count();
    h.sdk(&second, "anthropic-all-revoked").await;
    assert_eq!(per_key(&mock, mark), counts(&[("C", 1), ("D", 1)]), "each revoked key was tried once, then no more");
    let rows = h.audit(&second, "anthropic-revoked-1").await;
    assert_eq!(attempts(&rows), allowed(&second, &[(1, "C"), (2, "D")]), "{rows:?}");
    for call in ["anthropic-revoked-2", "anthropic-revoked-3"] {
        let rows = h.audit(&second, call).await;
        assert_eq!(rows.len(), 1, "{call}: {rows:?}");
        assert_eq!(
            (rows[0]["outcome"].as_str(), rows[0]["reason"].as_str()),
            (Some("denied"), Some("credential_failing")),
            "{call}"
        );
    }
    for letter in ["C", "D"] {
        let health = h.health(&second, letter).await;
        assert_eq!(
            (health["state"].as_str(), health["last_status"].as_u64()),
            (Some("failing"), Some(401)),
            "{letter}"
        );
    }

    // What reached the provider: the stored keys (checked per request above), never the
    // workload token nor any byok header.
    let requests = mock.requests();
    assert_eq!(requests.len(), 1 + 3 + 1 + 3 + 1 + 2 + 1 + 2 + 2 + 1 + 2 + 1 + 2);
    for request in &requests {
        assert!(request.key_valid, "{} {} carried a wrong key", request.method, request.path);
        for (name, value) in &request.headers {
            assert!(
                !value.contains(&first.token) && !value.contains(&second.token) && !value.contains("byok_"),
                "workload token forwarded in {name}"
            );
            assert!(!name.starts_with("x-byok-"), "byok header {name} forwarded");
        }
    }
    let logs = h.server.logs();
    for key in KEYS {
        assert!(!logs.contains(key), "a key leaked into the server's logs");
    }
    drop(h);
    mock.shutdown().await;
}
