//! A request whose scope byok cannot read with certainty is refused, not guessed: each
//! trick below would let a provider read a request differently from byok (another model,
//! another endpoint, streaming) and so let a restricted credential serve what its scope
//! does not admit. Each is answered 400 `invalid_request` in the provider's error shape,
//! audited as denied, and nothing reaches the provider. Legitimate requests still pass,
//! and what is sent upstream is exactly the normal form byok classified.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::time::Duration;

use byok_domain::{Capability, Mode, Outcome, ProviderId, ScopeInput};
use byok_store::testing::TestStore;
use serde_json::{json, Value};
use support::{anthropic_messages, openai_chat, Env, CANARY_PREFIX};

/// Credentials restricted the way an org restricts them: the cheap model families, and
/// no streaming where it matters.
async fn restricted_env() -> (Env, String) {
    let env = Env::start(TestStore::sqlite().await.unwrap()).await;
    let scope = |families: &[&str], modes: &[Mode]| ScopeInput {
        model_families: families.iter().map(|f| (*f).to_owned()).collect(),
        modes: modes.to_vec(),
        ..ScopeInput::default()
    };
    env.credential("openai-mini", ProviderId::Openai, scope(&["gpt-4o-mini"], &[Mode::Sync])).await;
    env.credential("claude-haiku", ProviderId::Anthropic, scope(&["claude-haiku"], &[Mode::Sync])).await;
    env.credential("gemini-flash", ProviderId::Gemini, scope(&["gemini-flash"], &[])).await;
    env.credential("azure-mini", ProviderId::AzureOpenai, scope(&["gpt-4o-mini"], &[])).await;
    let token = env.token(&[]).await;
    (env, token)
}

/// Send `method target` over a raw connection, so that no client library normalizes the
/// target first. Answers the status and the body.
async fn raw(env: &Env, method: &str, target: &[u8], headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = env.proxy.trim_start_matches("http://");
    let mut request = Vec::new();
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(target);
    write!(request, " HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len()).unwrap();
    for (name, value) in headers {
        write!(request, "{name}: {value}\r\n").unwrap();
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(!answer.contains(CANARY_PREFIX), "a key leaked into an answer: {answer}");
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// The headers carrying `token` the way `provider`'s SDK sends its key, and a call id.
fn auth(provider: ProviderId, token: &str, call_id: &str) -> Vec<(&'static str, String)> {
    let mut headers = match provider {
        ProviderId::Anthropic => vec![("x-api-key", token.to_owned()), ("anthropic-version", "2023-06-01".to_owned())],
        ProviderId::Gemini => vec![("x-goog-api-key", token.to_owned())],
        ProviderId::AzureOpenai => vec![("api-key", token.to_owned())],
        _ => vec![("authorization", format!("Bearer {token}"))],
    };
    headers.push(("x-byok-call-id", call_id.to_owned()));
    headers
}

/// The byok code of a refusal in `provider`'s own error shape, or `None` when the body
/// is not in that shape.
fn code_in_shape_of(provider: ProviderId, body: &str) -> Option<String> {
    let json: Value = serde_json::from_str(body).ok()?;
    let code = match provider {
        ProviderId::Anthropic => (json["type"] == "error" && json["error"]["type"] == "invalid_request_error")
            .then(|| &json["error"]["code"]),
        ProviderId::Gemini => (json["error"]["code"] == 400 && json["error"]["status"] == "INVALID_ARGUMENT")
            .then(|| &json["error"]["details"][0]["reason"]),
        _ => (json["error"]["type"] == "invalid_request_error" && json["error"]["param"].is_null())
            .then(|| &json["error"]["code"]),
    };
    code.and_then(Value::as_str).map(str::to_owned)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Where the refusal comes from: the route (before the caller is known) or the
/// classification of an authenticated call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Route,
    Classify,
}

struct Trick {
    what: &'static str,
    provider: ProviderId,
    target: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    stage: Stage,
    /// A fragment the refusal's message must contain.
    says: &'static str,
}

fn trick(what: &'static str, provider: ProviderId, target: &str, body: impl Into<Vec<u8>>, stage: Stage) -> Trick {
    Trick {
        what,
        provider,
        target: target.as_bytes().to_vec(),
        headers: vec![("content-type", "application/json".to_owned())],
        body: body.into(),
        stage,
        says: "",
    }
}

impl Trick {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn says(mut self, fragment: &'static str) -> Self {
        self.says = fragment;
        self
    }
}

#[tokio::test]
async fn ambiguous_requests_are_refused_before_anything_is_sent() {
    let (env, token) = restricted_env().await;
    let chat = |model: &str| openai_chat(model, false).to_string();
    let mini = chat("gpt-4o-mini");
    let long_model = format!("gpt-4o-mini-{}", "x".repeat(300));
    let gemini_body = json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string();
    use ProviderId::{Anthropic, AzureOpenai, Gemini, Openai};
    use Stage::{Classify, Route};
    let tricks = vec![
        // Bodies byok cannot read as the upstream will.
        trick("gzip body", Openai, "/openai/v1/chat/completions", gzip(mini.as_bytes()), Classify)
            .header("content-encoding", "gzip")
            .says("compressed"),
        trick("content-encoding claimed", Openai, "/openai/v1/chat/completions", mini.clone(), Classify)
            .header("content-encoding", "br")
            .says("compressed"),
        trick("gzip body, no header", Openai, "/openai/v1/chat/completions", gzip(mini.as_bytes()), Classify)
            .says("JSON object"),
        trick(
            "BOM",
            Openai,
            "/openai/v1/chat/completions",
            [b"\xEF\xBB\xBF".as_slice(), mini.as_bytes()].concat(),
            Classify,
        )
        .says("byte-order mark"),
        trick(
            "BOM, anthropic",
            Anthropic,
            "/anthropic/v1/messages",
            [b"\xEF\xBB\xBF".as_slice(), anthropic_messages("claude-haiku-4-5", false).to_string().as_bytes()].concat(),
            Classify,
        ),
        trick(
            "stream as a string",
            Openai,
            "/openai/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","messages":[],"stream":"true"}"#,
            Classify,
        )
        .says("\\\"stream\\\" must be true or false"),
        trick(
            "duplicate model",
            Openai,
            "/openai/v1/chat/completions",
            r#"{"model":"o1-pro","messages":[],"model":"gpt-4o-mini"}"#,
            Classify,
        )
        .says("'model' more than once"),
        trick(
            "duplicate model, escaped",
            Openai,
            "/openai/v1/chat/completions",
            r#"{"mod\u0065l":"o1-pro","messages":[],"model":"gpt-4o-mini"}"#,
            Classify,
        ),
        trick(
            "duplicate stream",
            Anthropic,
            "/anthropic/v1/messages",
            r#"{"model":"claude-haiku-4-5","stream":true,"max_tokens":5,"messages":[],"stream":false}"#,
            Classify,
        )
        .says("'stream' more than once"),
        trick(
            "not JSON",
            Openai,
            "/openai/v1/chat/completions",
            "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o\r\n--b--\r\n",
            Classify,
        )
        .header("content-type", "multipart/form-data; boundary=b")
        .says("JSON object"),
        trick("not JSON, gemini", Gemini, "/gemini/v1beta/models/gemini-2.5-flash:generateContent", "hi", Classify),
        // A JSON array where an object is required, a model that is not a string.
        trick("JSON array", Openai, "/openai/v1/chat/completions", format!("[{mini}]"), Classify).says("JSON object"),
        trick(
            "JSON array, anthropic",
            Anthropic,
            "/anthropic/v1/messages",
            format!("[{}]", anthropic_messages("claude-haiku-4-5", false)),
            Classify,
        )
        .says("JSON object"),
        trick("model a number", Openai, "/openai/v1/chat/completions", r#"{"model":4,"messages":[]}"#, Classify)
            .says("must be a string"),
        trick(
            "model a list",
            Openai,
            "/openai/v1/chat/completions",
            r#"{"model":["gpt-4o-mini"],"messages":[]}"#,
            Classify,
        )
        .says("must be a string"),
        // Path keywords in another letter case: Azure routes DEPLOYMENTS like deployments.
        trick(
            "DEPLOYMENTS",
            AzureOpenai,
            "/azure-openai/openai/DEPLOYMENTS/gpt-4o/chat/completions?api-version=2024-10-21",
            mini.clone(),
            Classify,
        )
        .says("only in letter case"),
        trick(
            "Gemini method case",
            Gemini,
            "/gemini/v1beta/models/gemini-2.5-flash:StreamGenerateContent",
            gemini_body.clone(),
            Classify,
        ),
        trick(
            "Gemini query name that does not decode",
            Gemini,
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent?%zzey=AIza",
            gemini_body.clone(),
            Classify,
        ),
        // Model names.
        trick(
            "model with a newline",
            Openai,
            "/openai/v1/chat/completions",
            json!({"model": "gpt-4o-mini\nallowed gpt-4o-mini", "messages": []}).to_string(),
            Classify,
        )
        .says("control or invisible character"),
        trick(
            "model with a NUL",
            Anthropic,
            "/anthropic/v1/messages",
            json!({"model": "claude-haiku-4-5\u{0}", "max_tokens": 5, "messages": []}).to_string(),
            Classify,
        ),
        trick(
            "model with a bidi override",
            Openai,
            "/openai/v1/chat/completions",
            json!({"model": "gpt-4o-mini\u{202e}", "messages": []}).to_string(),
            Classify,
        ),
        trick("model too long", Openai, "/openai/v1/chat/completions", chat(&long_model), Classify)
            .says("at most 256 are accepted"),
        // Paths with no single reading.
        trick(
            "encoded ':' before a Gemini method",
            Gemini,
            "/gemini/v1beta/models/gemini-2.5-flash%3AgenerateContent",
            gemini_body.clone(),
            Route,
        )
        .says("percent-encoded ':'"),
        trick("'..;' segment", Openai, "/openai/v1/models/..;/chat/completions", mini.clone(), Route).says("';'"),
        trick(
            "overlong UTF-8 dots",
            Openai,
            "/openai/v1/embeddings/%c0%ae%c0%ae/chat/completions",
            mini.clone(),
            Route,
        )
        .says("overlong UTF-8"),
        trick(
            "encoded fullwidth dots",
            Openai,
            "/openai/v1/embeddings/%EF%BC%8E%EF%BC%8E/chat/completions",
            mini.clone(),
            Route,
        ),
        trick(
            "raw fullwidth dots",
            Openai,
            "/openai/v1/embeddings/\u{ff0e}\u{ff0e}/chat/completions",
            mini.clone(),
            Route,
        )
        .says("non-ASCII"),
        trick("encoded '?'", Openai, "/openai/v1/chat/completions%3F/x", mini.clone(), Route).says("'?'"),
        trick(
            "encoded '#'",
            Gemini,
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent%23",
            gemini_body.clone(),
            Route,
        )
        .says("'#'"),
        trick(
            "encoded '?' in an Anthropic path",
            Anthropic,
            "/anthropic/v1/messages%3Fbeta=true",
            anthropic_messages("claude-haiku-4-5", false).to_string(),
            Route,
        ),
        trick("encoded dot segment", Openai, "/openai/v1/models/%2e%2e/chat/completions", mini.clone(), Route),
    ];
    for (index, trick) in tricks.into_iter().enumerate() {
        let call_id = format!("ambiguous-{index}");
        let mut headers = auth(trick.provider, &token, &call_id);
        headers.extend(trick.headers.iter().cloned());
        let (status, body) = raw(&env, "POST", &trick.target, &headers, &trick.body).await;
        let what = trick.what;
        assert_eq!(status, 400, "{what}: {body}");
        // Route refusals too are answered in the shape of the provider the path names.
        let code = code_in_shape_of(trick.provider, &body);
        assert_eq!(code.as_deref(), Some("invalid_request"), "{what}: not in the provider's shape: {body}");
        assert!(body.contains(trick.says), "{what}: the message should say {:?}: {body}", trick.says);
        assert_eq!(env.mock.request_count(), 0, "{what}: nothing may reach the provider");
        let rows = env.audit_rows(&call_id).await;
        assert_eq!(rows.len(), 1, "{what}: exactly one audit row");
        let row = &rows[0];
        assert_eq!(row.outcome, Outcome::Denied, "{what}");
        assert_eq!(row.reason.as_deref(), Some("invalid_request"), "{what}");
        assert!(row.credential_id.is_none(), "{what}: no credential was chosen");
        assert!(row.model.is_none(), "{what}: nothing unread reaches the audit");
        if trick.stage == Stage::Classify {
            assert_eq!(row.org_id, Some(env.org.id), "{what}: the denial is the caller's org's");
        }
        assert!(row.detail.as_deref().is_some_and(|d| d.len() < 300), "{what}: {:?}", row.detail);
    }
    env.stop().await;
}

/// The same restricted credentials serve the legitimate forms, and the upstream receives
/// exactly the normal form byok classified: decoded unreserved characters, no client
/// key in the query (by its decoded name), no routing headers.
#[tokio::test]
async fn legitimate_requests_pass_in_their_normal_form() {
    let (env, token) = restricted_env().await;
    let mini = openai_chat("gpt-4o-mini", false).to_string();
    let gemini_body = json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string();
    let routing = [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-prefix", "/admin"),
        ("x-original-url", "/v1/fine_tuning/jobs"),
        ("x-rewrite-url", "/v1/fine_tuning/jobs"),
        ("x-http-method-override", "DELETE"),
        ("forwarded", "host=evil.example"),
        ("x-envoy-original-path", "/admin"),
    ];
    let cases: Vec<(ProviderId, &str, String, &str, Capability, Mode, &str)> = vec![
        (
            ProviderId::Openai,
            "/openai/v1/chat/%63ompletions",
            mini.clone(),
            "/v1/chat/completions",
            Capability::Chat,
            Mode::Sync,
            "gpt-4o-mini",
        ),
        (
            ProviderId::Anthropic,
            "/anthropic/v1/messages",
            anthropic_messages("claude-haiku-4-5", false).to_string(),
            "/v1/messages",
            Capability::Chat,
            Mode::Sync,
            "claude-haiku-4-5",
        ),
        (
            ProviderId::Gemini,
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&%6Bey=AIza-client&ke%79=x&key&KEY=y&access_token=z",
            gemini_body.clone(),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            Capability::Chat,
            Mode::Stream,
            "gemini-2.5-flash",
        ),
        (
            ProviderId::Gemini,
            "/gemini/v1beta/models/gemini-2%2E5-flash:generateContent",
            gemini_body.clone(),
            "/v1beta/models/gemini-2.5-flash:generateContent",
            Capability::Chat,
            Mode::Sync,
            "gemini-2.5-flash",
        ),
        (
            ProviderId::AzureOpenai,
            "/azure-openai/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
            openai_chat("ignored", false).to_string(),
            "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
            Capability::Chat,
            Mode::Sync,
            "gpt-4o-mini",
        ),
    ];
    for (index, (provider, target, body, upstream, capability, mode, model)) in cases.into_iter().enumerate() {
        env.mock.clear();
        let call_id = format!("legitimate-{index}");
        let mut headers = auth(provider, &token, &call_id);
        headers.push(("content-type", "application/json".to_owned()));
        headers.extend(routing.iter().map(|(name, value)| (*name, (*value).to_owned())));
        let (status, answer) = raw(&env, "POST", target.as_bytes(), &headers, body.as_bytes()).await;
        assert_eq!(status, 200, "{target}: {answer}");
        let seen = env.mock.requests();
        assert_eq!(seen.len(), 1, "{target}");
        assert_eq!(seen[0].path, upstream, "{target}: the upstream gets the normal form");
        assert!(seen[0].key_valid, "{target}: the stored key, and only it, authenticated the call");
        for (name, _) in routing {
            assert!(seen[0].header(name).is_none(), "{target}: routing header {name} was forwarded");
        }
        let rows = env.audit_rows(&call_id).await;
        let row = rows.iter().find(|row| row.outcome == Outcome::Allowed).unwrap();
        assert_eq!((row.capability, row.mode, row.model.as_deref()), (Some(capability), Some(mode), Some(model)));
    }
    env.stop().await;
}
