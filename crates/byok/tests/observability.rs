//! Observability end to end, against the real `byok serve` with the mock provider as
//! upstream: after calls that are allowed (whole and streamed), denied (scope, an unknown
//! token) and failed (the upstream unreachable), `GET /metrics` has the data plane's series
//! labelled by closed vocabularies only — never a token, key, call id or org id —; and with
//! `BYOK_LOG_FORMAT=json` at `BYOK_LOG=debug` every line the process writes is a JSON
//! object, each call has exactly one access line with its fields, and no key, workload
//! token or admin token appears anywhere, in any encoding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use byok_domain::{Capability, Mode, ProviderId};
use byok_mock_provider::{MockConfig, MockProvider};
use serde_json::{json, Value};
use support::{admin_json, free_port, operator_token, Server};

const OPENAI_KEY: &str = "sk-canary-obs-openai-2b7d9e41c0a35f86";
const ANTHROPIC_KEY: &str = "sk-ant-canary-obs-6c1f0e9d8b7a5432";
/// The (caller-chosen) model; its family in the registry is `gpt-4o-mini`.
const MODEL: &str = "gpt-4o-mini-2024-07-18";

/// One server with an org `acme`: an OpenAI key for team `agents` (served by the mock), an
/// Anthropic key for the same team whose upstream nothing listens on, a token of `agents`
/// and one of `outsiders`.
struct Setup {
    server: Server,
    _mock: MockProvider,
    http: reqwest::Client,
    operator: String,
    org_id: String,
    agents_id: String,
    openai_credential: String,
    anthropic_credential: String,
    agent_token: String,
    outsider_token: String,
}

async fn setup(env: &[(&str, &str)]) -> Setup {
    let mock = MockProvider::start(MockConfig { openai_keys: vec![OPENAI_KEY.to_owned()], ..MockConfig::default() })
        .await
        .unwrap();
    let upstream = mock.base_url();
    // An operator-configured upstream nothing listens on: calls to it fail unreachable.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut all = vec![("BYOK_UPSTREAM_OPENAI", upstream.as_str()), ("BYOK_UPSTREAM_ANTHROPIC", nowhere.as_str())];
    all.extend_from_slice(env);
    let server = Server::start_with(&all);
    let operator = operator_token(&server);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        admin_json(&http, reqwest::Method::POST, format!("{}{path}", server.admin_url), &operator, Some(body))
    };
    let org = post("/v1/orgs", json!({"name": "acme", "tier": "katman-b"})).await;
    let agents = post("/v1/orgs/acme/teams", json!({"name": "agents"})).await;
    post("/v1/orgs/acme/teams", json!({"name": "outsiders"})).await;
    let scope = json!({"teams": ["agents"]});
    let openai = post(
        "/v1/orgs/acme/credentials",
        json!({"name": "openai", "provider": "openai", "secret": OPENAI_KEY, "scope": scope}),
    )
    .await;
    let anthropic = post(
        "/v1/orgs/acme/credentials",
        json!({"name": "claude", "provider": "anthropic", "secret": ANTHROPIC_KEY, "scope": scope}),
    )
    .await;
    let agent_token =
        post("/v1/orgs/acme/tokens", json!({"team": "agents"})).await["token"].as_str().unwrap().to_owned();
    let outsider_token =
        post("/v1/orgs/acme/tokens", json!({"team": "outsiders"})).await["token"].as_str().unwrap().to_owned();
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    Setup {
        org_id: id(&org),
        agents_id: id(&agents),
        openai_credential: id(&openai),
        anthropic_credential: id(&anthropic),
        server,
        _mock: mock,
        http,
        operator,
        agent_token,
        outsider_token,
    }
}

/// A workload token of the right shape that byok never issued.
const UNKNOWN_TOKEN: &str = "byok_wl_obsUnknownToken0123456789abcdefABCDEF";

/// The calls both tests make: (call id, expected status).
const CALLS: [(&str, u16); 6] = [
    ("obs-allowed-sync-1", 200),
    ("obs-allowed-sync-2", 200),
    ("obs-allowed-stream", 200),
    ("obs-denied-scope", 403),
    ("obs-denied-token", 401),
    ("obs-failed-unreachable", 502),
];

impl Setup {
    /// Make [`CALLS`], each read to its end.
    async fn make_calls(&self) {
        let proxy = &self.server.proxy_url;
        let chat = |token: &str, call_id: &str, stream: bool| {
            let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream});
            if stream {
                body["stream_options"] = json!({"include_usage": true});
            }
            self.http
                .post(format!("{proxy}/openai/v1/chat/completions"))
                .bearer_auth(token)
                .header("x-byok-call-id", call_id)
                .json(&body)
        };
        let anthropic = self
            .http
            .post(format!("{proxy}/anthropic/v1/messages"))
            .header("x-api-key", &self.agent_token)
            .header("anthropic-version", "2023-06-01")
            .header("x-byok-call-id", "obs-failed-unreachable")
            .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}));
        let requests = [
            chat(&self.agent_token, "obs-allowed-sync-1", false),
            chat(&self.agent_token, "obs-allowed-sync-2", false),
            chat(&self.agent_token, "obs-allowed-stream", true),
            chat(&self.outsider_token, "obs-denied-scope", false),
            chat(UNKNOWN_TOKEN, "obs-denied-token", false),
            anthropic,
        ];
        for ((call_id, expected), request) in CALLS.iter().zip(requests) {
            let response = request.timeout(Duration::from_secs(30)).send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_eq!(status, *expected, "{call_id}: {text}");
        }
    }

    async fn scrape(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.server.admin_url)).send().await.unwrap();
        assert!(response.status().is_success());
        response.text().await.unwrap()
    }

    /// Every secret the process knows, in the forms it could leak in: the provider keys
    /// (raw, base64 in each alphabet, hex), the workload tokens (and the one it never
    /// issued), the operator's admin token.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        for key in [OPENAI_KEY, ANTHROPIC_KEY] {
            secrets.push(key.to_owned());
            for engine in [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ] {
                secrets.push(engine.encode(key));
                // `user:key` (basic auth) carries it too.
                secrets.push(engine.encode(format!(":{key}")));
            }
            let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
            secrets.push(hex.to_ascii_uppercase());
            secrets.push(hex);
        }
        for token in [&self.agent_token, &self.outsider_token, &self.operator] {
            secrets.push(token.clone());
        }
        secrets.push(UNKNOWN_TOKEN.to_owned());
        secrets
    }
}

/// The value of the series `series` (name and labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Each series' labels: (metric name, [(label, value)]).
fn labelled(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else { continue };
        let Some((labels, _)) = rest.rsplit_once('}') else { continue };
        let mut pairs = Vec::new();
        let mut rest = labels;
        while let Some((label, after)) = rest.split_once("=\"") {
            let end = after.find('"').unwrap();
            pairs.push((label.trim_start_matches(',').to_owned(), after[..end].to_owned()));
            rest = &after[end + 1..];
        }
        out.push((name.to_owned(), pairs));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_calls_by_provider_capability_outcome_and_code() {
    let setup = setup(&[]).await;
    setup.make_calls().await;

    // A streamed answer is counted when its body ends: wait until every stream closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = setup.scrape().await;
        if value(&text, "byok_open_streams") == Some(0.0) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expect = |series: &str, expected: f64| {
        assert_eq!(value(&text, series), Some(expected), "{series}:\n{text}");
    };
    let at_least = |series: &str, least: f64| {
        let found = value(&text, series).unwrap_or_else(|| panic!("no {series}:\n{text}"));
        assert!(found >= least, "{series} = {found} < {least}:\n{text}");
    };
    expect("byok_open_streams", 0.0);
    expect(r#"byok_requests_total{provider="openai",capability="chat",outcome="allowed",code="completed"}"#, 3.0);
    expect(r#"byok_requests_total{provider="openai",capability="chat",outcome="denied",code="scope_denied"}"#, 1.0);
    expect(
        r#"byok_requests_total{provider="openai",capability="none",outcome="denied",code="invalid_workload_token"}"#,
        1.0,
    );
    expect(
        r#"byok_requests_total{provider="anthropic",capability="chat",outcome="failed",code="upstream_unreachable"}"#,
        1.0,
    );
    expect(r#"byok_upstream_responses_total{provider="openai",class="2xx"}"#, 3.0);
    expect(r#"byok_upstream_responses_total{provider="anthropic",class="none"}"#, 1.0);
    expect(r#"byok_request_duration_seconds_count{provider="openai"}"#, 5.0);
    expect(r#"byok_request_duration_seconds_count{provider="anthropic"}"#, 1.0);
    expect(r#"byok_request_overhead_seconds_count{provider="openai"}"#, 5.0);
    expect(r#"byok_upstream_ttfb_seconds_count{provider="openai"}"#, 3.0);
    // No answer, no time to a first byte.
    assert!(value(&text, r#"byok_upstream_ttfb_seconds_count{provider="anthropic"}"#).is_none(), "{text}");
    // The audit writer committed the rows (one per call) and the completions.
    at_least("byok_audit_commit_seconds_count", 1.0);
    at_least("byok_audit_batch_entries_sum", 6.0);
    expect("byok_audit_commit_failures_total", 0.0);
    // The first call of a token loads it; the next ones find it cached.
    at_least(r#"byok_directory_cache_lookups_total{kind="token",result="miss"}"#, 2.0);
    at_least(r#"byok_directory_cache_lookups_total{kind="token",result="hit"}"#, 2.0);
    at_least(r#"byok_directory_cache_lookups_total{kind="org",result="hit"}"#, 1.0);
    at_least(r#"byok_dek_cache_lookups_total{result="hit"}"#, 1.0);

    // Labels are closed vocabularies, never an id, a model, a token or a key.
    let providers: Vec<&str> = ProviderId::ALL.iter().map(|p| p.as_str()).chain(["none"]).collect();
    let capabilities: Vec<&str> = Capability::ALL.iter().map(|c| c.as_str()).chain(["none"]).collect();
    let vocabulary = |label: &str, value: &str| match label {
        "provider" => providers.contains(&value),
        "capability" => capabilities.contains(&value),
        "outcome" => ["allowed", "denied", "failed", "cancelled"].contains(&value),
        "class" => ["1xx", "2xx", "3xx", "4xx", "5xx", "none"].contains(&value),
        "kind" => ["token", "org", "platform"].contains(&value),
        "result" => ["hit", "miss"].contains(&value),
        "op" => ["wrap", "unwrap"].contains(&value),
        "kms" => value == "default",
        "code" => !value.is_empty() && value.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "le" => value == "+Inf" || value.parse::<f64>().is_ok(),
        _ => false,
    };
    let mut forbidden = setup.secrets();
    forbidden.extend(CALLS.iter().map(|(call_id, _)| (*call_id).to_owned()));
    forbidden.extend([
        setup.org_id.clone(),
        setup.agents_id.clone(),
        setup.openai_credential.clone(),
        setup.anthropic_credential.clone(),
        "acme".to_owned(),
        "gpt-4o".to_owned(),
        "claude".to_owned(),
    ]);
    let series = labelled(&text);
    assert!(series.len() > 20, "{text}");
    for (name, labels) in &series {
        for (label, value) in labels {
            assert!(vocabulary(label, value), "{name}: {label}=\"{value}\" is not in its vocabulary");
        }
    }
    for needle in &forbidden {
        assert!(!text.contains(needle.as_str()), "/metrics holds {needle}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_have_one_access_line_per_call_and_no_secret() {
    let setup = setup(&[("BYOK_LOG_FORMAT", "json"), ("BYOK_LOG", "debug")]).await;
    setup.make_calls().await;
    // A few admin reads with the admin token, at debug.
    for path in ["/v1/orgs/acme/credentials", "/v1/orgs/acme/tokens", "/v1/orgs/acme/audit"] {
        let url = format!("{}{path}", setup.server.admin_url);
        admin_json(&setup.http, reqwest::Method::GET, url, &setup.operator, None).await;
    }

    // The streamed call's line is written when its body ends: wait for every call's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (access, stdout, stderr) = loop {
        let (stdout, stderr) = setup.server.output();
        let mut access: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for line in stdout.lines().chain(stderr.lines()).filter(|l| !l.trim().is_empty()) {
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}\n{}", setup.server.logs()));
            assert!(parsed.is_object(), "{line}");
            for field in ["timestamp", "level", "target"] {
                assert!(parsed[field].is_string(), "no {field}: {line}");
            }
            if parsed["target"] == "byok::access" {
                let call_id = parsed["call_id"].as_str().unwrap_or_else(|| panic!("no call id: {line}")).to_owned();
                access.entry(call_id).or_default().push(parsed);
            }
        }
        if access.len() >= CALLS.len() || Instant::now() > deadline {
            break (access, stdout, stderr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let logs = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stderr.lines().count() > 20, "BYOK_LOG=debug logs more than a few lines:\n{logs}");

    // Exactly one access line per call, at info, with its fields.
    assert_eq!(access.len(), CALLS.len(), "{access:#?}");
    let line = |call_id: &str| -> &Value {
        let lines = &access[call_id];
        assert_eq!(lines.len(), 1, "{call_id}: {lines:#?}");
        let line = &lines[0];
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["message"], "call", "{line}");
        for field in ["latency_ms", "upstream_ms"] {
            assert!(line[field].as_f64().is_some_and(|ms| ms >= 0.0), "{field}: {line}");
        }
        assert!(line["attempts"].is_u64(), "{line}");
        assert!(line.get("model").is_none(), "the model string is not logged: {line}");
        line
    };
    for (call_id, mode) in
        [("obs-allowed-sync-1", Mode::Sync), ("obs-allowed-sync-2", Mode::Sync), ("obs-allowed-stream", Mode::Stream)]
    {
        let line = line(call_id);
        assert_eq!(line["org_id"], setup.org_id.as_str(), "{line}");
        assert_eq!(line["team_id"], setup.agents_id.as_str(), "{line}");
        assert!(line["token_id"].as_str().is_some_and(|t| t.starts_with("tok_")), "{line}");
        assert_eq!(line["credential_id"], setup.openai_credential.as_str(), "{line}");
        assert_eq!(line["provider"], "openai", "{line}");
        assert_eq!(line["family"], "gpt-4o-mini", "{line}");
        assert_eq!(line["capability"], "chat", "{line}");
        assert_eq!(line["mode"], mode.as_str(), "{line}");
        assert_eq!(line["attempts"], 1, "{line}");
        assert_eq!(line["outcome"], "allowed", "{line}");
        assert_eq!(line["code"], "completed", "{line}");
        assert_eq!(line["upstream_status"], 200, "{line}");
        assert!(line["input_tokens"].as_u64().is_some_and(|n| n > 0), "{line}");
        assert!(line["output_tokens"].as_u64().is_some_and(|n| n > 0), "{line}");
        assert!(line["latency_ms"].as_f64() >= line["upstream_ms"].as_f64(), "{line}");
    }
    let denied = line("obs-denied-scope");
    assert_eq!(denied["outcome"], "denied", "{denied}");
    assert_eq!(denied["code"], "scope_denied", "{denied}");
    assert_eq!(denied["org_id"], setup.org_id.as_str(), "{denied}");
    assert_eq!(denied["capability"], "chat", "{denied}");
    assert_eq!(denied["attempts"], 0, "{denied}");
    assert!(denied.get("upstream_status").is_none(), "nothing was sent upstream: {denied}");
    let unknown = line("obs-denied-token");
    assert_eq!(unknown["outcome"], "denied", "{unknown}");
    assert_eq!(unknown["code"], "invalid_workload_token", "{unknown}");
    assert_eq!(unknown["provider"], "openai", "{unknown}");
    assert!(unknown.get("org_id").is_none(), "no org is known: {unknown}");
    let failed = line("obs-failed-unreachable");
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert_eq!(failed["code"], "upstream_unreachable", "{failed}");
    assert_eq!(failed["provider"], "anthropic", "{failed}");
    assert_eq!(failed["credential_id"], setup.anthropic_credential.as_str(), "{failed}");
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert!(failed.get("upstream_status").is_none(), "no answer came: {failed}");

    // No secret, in any form, at any level, on either stream.
    for secret in setup.secrets() {
        assert!(!logs.contains(&secret), "the log holds a secret ({} bytes):\n{logs}", secret.len());
    }
}
