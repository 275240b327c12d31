//! AWS Bedrock through the data plane: Converse, ConverseStream, InvokeModel and
//! InvokeModelWithResponseStream with an AWS access key (byok signs with SigV4 and the
//! mock verifies the signature by recomputing it) and with a Bedrock API key; usage read
//! from JSON and from event-stream frames into the audit completion; nothing the client
//! sent as a credential, and no workload token, reaches the mock; no key reaches the
//! client or the log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use byok_domain::{CallCompletion, Mode, Outcome, ProviderId, ScopeInput};
use byok_mock_provider::{decode_event_stream, BedrockAccessKey, MockConfig, Provider, ScriptedResponse};
use byok_store::testing::{for_each_backend, TestStore};
use serde_json::{json, Value};
use sha2::Digest as _;
use support::{log_buffer, Env, CANARY_PREFIX};

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
/// The model id as boto3 puts it in the path (`:` percent-encoded).
const HAIKU_PATH: &str = "anthropic.claude-3-haiku-20240307-v1%3A0";

struct Aws {
    key_id: String,
    secret: String,
    session_token: String,
    api_key: String,
}

impl Aws {
    fn new() -> Self {
        let id = ulid::Ulid::new().to_string();
        Self {
            key_id: format!("AKIA{id}"),
            secret: format!("{CANARY_PREFIX}aws-secret/{}", id.to_ascii_lowercase()),
            session_token: format!("{CANARY_PREFIX}aws-session+{}", id.to_ascii_lowercase()),
            api_key: format!("{CANARY_PREFIX}bedrock-api-{}", id.to_ascii_lowercase()),
        }
    }

    fn mock_config(&self) -> MockConfig {
        MockConfig {
            bedrock_access_keys: vec![
                BedrockAccessKey {
                    access_key_id: self.key_id.clone(),
                    secret_access_key: self.secret.clone(),
                    session_token: None,
                },
                BedrockAccessKey {
                    access_key_id: format!("{}T", self.key_id),
                    secret_access_key: self.secret.clone(),
                    session_token: Some(self.session_token.clone()),
                },
            ],
            bedrock_api_keys: vec![self.api_key.clone()],
            ..MockConfig::default()
        }
    }

    fn access_key_secret(&self) -> String {
        json!({"access_key_id": self.key_id, "secret_access_key": self.secret, "region": "us-east-1"}).to_string()
    }

    fn session_secret(&self) -> String {
        json!({
            "access_key_id": format!("{}T", self.key_id),
            "secret_access_key": self.secret,
            "session_token": self.session_token,
            "region": "us-west-2",
        })
        .to_string()
    }

    fn api_key_secret(&self) -> String {
        json!({"api_key": self.api_key, "region": "eu-central-1"}).to_string()
    }
}

fn converse_body() -> Value {
    json!({
        "messages": [{"role": "user", "content": [{"text": "hello there bedrock"}]}],
        "system": [{"text": "be brief"}],
        "inferenceConfig": {"maxTokens": 64},
    })
}

fn invoke_body() -> Value {
    json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello there bedrock"}],
    })
}

/// POST `body` to `/bedrock/model/{model}/{action}` with the workload token as boto3 sends
/// it (`Authorization: Bearer`), plus `extra` headers.
async fn call(
    env: &Env,
    token: &str,
    model: &str,
    action: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = env
        .http
        .post(env.url(&format!("/bedrock/model/{model}/{action}")))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn completion(env: &Env, call_id: &str) -> CallCompletion {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut list = env.t.store().list_completions(call_id).await.unwrap();
        if let Some(done) = list.pop() {
            return done;
        }
        assert!(Instant::now() < deadline, "no completion for {call_id}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_no_secret(aws: &Aws, what: &str, text: &str) {
    assert!(!text.contains(CANARY_PREFIX), "a key leaked into {what}: {text}");
    assert!(!text.contains(&aws.secret) && !text.contains(&aws.api_key), "a key leaked into {what}");
}

fn assert_no_key_in_logs() {
    let logs = log_buffer();
    let logs = logs.lock().unwrap();
    let text = String::from_utf8_lossy(&logs);
    assert!(!text.contains(CANARY_PREFIX), "a key leaked into the trace log");
}

/// The client's own credential headers, which must never reach the provider.
const CLIENT_CREDENTIALS: [(&str, &str); 5] = [
    ("x-amz-date", "20200101T000000Z"),
    ("x-amz-security-token", "client-session-token"),
    ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
    ("x-amz-signature", "0000"),
    ("x-amz-user-agent", "client"),
];

/// Every operation, signed with an access key (with and without a session token) and
/// carried with a Bedrock API key: the mock verifies what it received; usage reaches the
/// completion; the streamed answers arrive as event-stream frames.
#[tokio::test]
async fn every_operation_with_every_kind_of_key() {
    for_each_backend("bedrock_every_operation", |t| async move {
        let aws = Aws::new();
        let env = Env::start_with(t, aws.mock_config(), |_| {}).await;
        let token = env.token(&[]).await;
        let kinds = [
            ("access-key", aws.access_key_secret(), aws.key_id.clone()),
            ("session", aws.session_secret(), format!("{}T", aws.key_id)),
            ("api-key", aws.api_key_secret(), aws.api_key.clone()),
        ];
        for (name, secret, presented) in kinds {
            let credential =
                env.credential_with_secret(name, ProviderId::Bedrock, ScopeInput::default(), &secret).await;
            for (action, stream) in [
                ("converse", false),
                ("converse-stream", true),
                ("invoke", false),
                ("invoke-with-response-stream", true),
            ] {
                let body = if action.starts_with("converse") { converse_body() } else { invoke_body() };
                let call_id = format!("{name}-{action}-{}", ulid::Ulid::new());
                let mut extra = vec![("x-byok-call-id", call_id.as_str()), ("x-byok-credential", name)];
                extra.extend(CLIENT_CREDENTIALS);
                let response = call(&env, &token, HAIKU_PATH, action, &body, &extra).await;
                let status = response.status().as_u16();
                let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
                let headers = format!("{:?}", response.headers());
                let bytes = response.bytes().await.unwrap();
                assert_eq!(status, 200, "{name} {action}: {}", String::from_utf8_lossy(&bytes));
                assert_no_secret(&aws, "response headers", &headers);
                assert_no_secret(&aws, "a response body", &String::from_utf8_lossy(&bytes));
                let (input, output) = if stream {
                    assert_eq!(content_type.as_deref(), Some("application/vnd.amazon.eventstream"), "{name} {action}");
                    let frames = decode_event_stream(&bytes).unwrap();
                    if action == "converse-stream" {
                        let kinds: Vec<&str> = frames.iter().map(|(kind, _)| kind.as_str()).collect();
                        assert_eq!(kinds.first(), Some(&"messageStart"));
                        assert_eq!(kinds.last(), Some(&"metadata"));
                        let metadata: Value = serde_json::from_slice(&frames.last().unwrap().1).unwrap();
                        (metadata["usage"]["inputTokens"].as_u64(), metadata["usage"]["outputTokens"].as_u64())
                    } else {
                        assert!(frames.iter().all(|(kind, _)| kind == "chunk"), "{frames:?}");
                        let last: Value = serde_json::from_slice(&frames.last().unwrap().1).unwrap();
                        use base64::Engine as _;
                        let inner =
                            base64::engine::general_purpose::STANDARD.decode(last["bytes"].as_str().unwrap()).unwrap();
                        let inner: Value = serde_json::from_slice(&inner).unwrap();
                        let metrics = &inner["amazon-bedrock-invocationMetrics"];
                        (metrics["inputTokenCount"].as_u64(), metrics["outputTokenCount"].as_u64())
                    }
                } else {
                    let json: Value = serde_json::from_slice(&bytes).unwrap();
                    if action == "converse" {
                        (json["usage"]["inputTokens"].as_u64(), json["usage"]["outputTokens"].as_u64())
                    } else {
                        (json["usage"]["input_tokens"].as_u64(), json["usage"]["output_tokens"].as_u64())
                    }
                };
                assert!(input.is_some_and(|n| n > 0) && output.is_some_and(|n| n > 0), "{name} {action}");

                // What reached the provider.
                let seen = env.mock.last_request().unwrap();
                assert_eq!(seen.provider, Provider::Bedrock);
                assert_eq!(seen.path, format!("/model/{HAIKU_PATH}/{action}"));
                assert!(seen.key_valid, "{name} {action}: the mock refused what byok sent: {:?}", seen.headers);
                assert_eq!(seen.presented_key.as_deref(), Some(presented.as_str()));
                for (header, value) in &seen.headers {
                    assert!(!value.contains(&token), "the workload token reached the provider in {header}");
                }
                for (header, value) in CLIENT_CREDENTIALS {
                    assert_ne!(seen.header(header), Some(value), "the client's {header} reached the provider");
                }
                assert!(!seen.has_header("x-amz-signature") && !seen.has_header("x-amz-user-agent"));
                let authorization = seen.header("authorization").unwrap();
                if name == "api-key" {
                    assert_eq!(authorization, format!("Bearer {}", aws.api_key));
                    assert!(!seen.has_header("x-amz-date") && !seen.has_header("x-amz-content-sha256"));
                } else {
                    let region = if name == "session" { "us-west-2" } else { "us-east-1" };
                    let scope = format!("AWS4-HMAC-SHA256 Credential={presented}/");
                    assert!(authorization.starts_with(&scope), "{authorization}");
                    assert!(authorization.contains(&format!("/{region}/bedrock/aws4_request, SignedHeaders=")));
                    assert!(!authorization.contains(&aws.secret));
                    let body_hash = hex(&sha2::Sha256::digest(&seen.body));
                    assert_eq!(seen.header("x-amz-content-sha256"), Some(body_hash.as_str()));
                    let session = (name == "session").then_some(aws.session_token.as_str());
                    assert_eq!(seen.header("x-amz-security-token"), session);
                }

                // The audit: the model from the path, its family, the mode, the usage.
                let rows = env.audit_rows(&call_id).await;
                let allowed = rows.iter().find(|r| r.outcome == Outcome::Allowed).unwrap();
                assert_eq!(allowed.model.as_deref(), Some(HAIKU));
                assert_eq!(allowed.model_family.as_deref(), Some("claude-haiku"));
                assert_eq!(allowed.mode, Some(if stream { Mode::Stream } else { Mode::Sync }));
                assert_eq!(allowed.credential_id, Some(credential.id));
                let done = completion(&env, &call_id).await;
                assert_eq!((done.input_tokens, done.output_tokens), (input, output), "{name} {action}");
                assert_eq!(done.upstream_status, Some(200));
            }
        }
        assert_no_key_in_logs();
        env.stop().await;
    })
    .await
    .unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A wrong secret access key: the mock recomputes the signature, it does not match, and
/// the client gets Bedrock's 403 InvalidSignatureException. An unknown key id is
/// UnrecognizedClientException. Verification can fail.
#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_provider() {
    let aws = Aws::new();
    let env = Env::start_with(TestStore::sqlite().await.unwrap(), aws.mock_config(), |_| {}).await;
    let token = env.token(&[]).await;
    let wrong = json!({
        "access_key_id": aws.key_id,
        "secret_access_key": format!("{CANARY_PREFIX}not-the-secret-key"),
        "region": "us-east-1",
    });
    env.credential_with_secret("wrong", ProviderId::Bedrock, ScopeInput::default(), &wrong.to_string()).await;
    let response =
        call(&env, &token, HAIKU_PATH, "converse", &converse_body(), &[("x-byok-credential", "wrong")]).await;
    assert_eq!(response.status().as_u16(), 403);
    let kind = response.headers().get("x-amzn-errortype").unwrap().to_str().unwrap().to_owned();
    assert!(kind.starts_with("InvalidSignatureException"), "{kind}");
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("signature"), "{body}");
    let seen = env.mock.last_request().unwrap();
    assert!(!seen.key_valid);
    assert_eq!(seen.presented_key.as_deref(), Some(aws.key_id.as_str()));

    let unknown =
        json!({"access_key_id": "AKIAUNKNOWNUNKNOWN00", "secret_access_key": aws.secret, "region": "us-east-1"});
    env.credential_with_secret("unknown", ProviderId::Bedrock, ScopeInput::default(), &unknown.to_string()).await;
    let response =
        call(&env, &token, HAIKU_PATH, "converse", &converse_body(), &[("x-byok-credential", "unknown")]).await;
    assert_eq!(response.status().as_u16(), 403);
    let kind = response.headers().get("x-amzn-errortype").unwrap().to_str().unwrap().to_owned();
    assert!(kind.starts_with("UnrecognizedClientException"), "{kind}");
    env.stop().await;
}

/// A scope that does not admit the model is refused before any connection upstream; an
/// echo of the secret (the whole JSON or any of its keys) is masked.
#[tokio::test]
async fn scope_denials_never_connect_and_echoes_are_masked() {
    let aws = Aws::new();
    let env = Env::start_with(TestStore::sqlite().await.unwrap(), aws.mock_config(), |_| {}).await;
    let token = env.token(&[]).await;
    let scope = ScopeInput { model_families: vec!["claude-sonnet".to_owned()], ..ScopeInput::default() };
    env.credential_with_secret("sonnet-only", ProviderId::Bedrock, scope, &aws.session_secret()).await;
    let response = call(&env, &token, HAIKU_PATH, "converse", &converse_body(), &[]).await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert!(status == 403 || status == 404, "{status} {body}");
    assert_eq!(env.mock.request_count(), 0, "a denied call reached the provider");

    // A Sonnet call is admitted; the provider echoes every part of the secret.
    let sonnet = "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0";
    env.mock.set_next_response(ScriptedResponse::json(
        200,
        &json!({
            "secret": aws.secret,
            "token": aws.session_token,
            "json": aws.session_secret(),
            "usage": {"inputTokens": 1, "outputTokens": 2},
        }),
    ));
    let response = call(&env, &token, sonnet, "converse", &converse_body(), &[]).await;
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.unwrap();
    assert_no_secret(&aws, "an echoed body", &body);
    assert!(!body.contains(&aws.session_token));
    let seen = env.mock.last_request().unwrap();
    assert!(seen.key_valid, "{:?}", seen.headers);
    assert_eq!(seen.path, format!("/model/{sonnet}/converse"));
    assert_no_key_in_logs();
    env.stop().await;
}

/// The model id in any of the encodings a client may use reaches the provider in the one
/// the signature covers; ARNs keep their `/` encoded.
#[tokio::test]
async fn model_ids_in_every_encoding_are_signed_as_sent() {
    let aws = Aws::new();
    let env = Env::start_with(TestStore::sqlite().await.unwrap(), aws.mock_config(), |_| {}).await;
    let token = env.token(&[]).await;
    env.credential_with_secret("aws", ProviderId::Bedrock, ScopeInput::default(), &aws.access_key_secret()).await;
    let arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0";
    for (sent, upstream, model) in [
        (HAIKU, HAIKU_PATH, HAIKU),
        ("anthropic.claude-3-haiku-20240307-v1%3a0", HAIKU_PATH, HAIKU),
        (
            arn,
            arn,
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0",
        ),
    ] {
        let call_id = ulid::Ulid::new().to_string();
        // The headers boto3 1.44 sends with AWS_BEARER_TOKEN_BEDROCK set (besides
        // `Authorization: Bearer <token>`): all of them are signed as they are passed on.
        let boto3 = [
            ("x-byok-call-id", call_id.as_str()),
            ("user-agent", "Boto3/1.44.18 md/Botocore#1.44.18 ua/2.1 os/linux lang/python#3.11.7 Botocore/1.44.18"),
            ("amz-sdk-invocation-id", "28bf628e-ffb4-4033-827f-01bfc87c0bb1"),
            ("amz-sdk-request", "attempt=1; max=3"),
        ];
        let response = call(&env, &token, sent, "converse", &converse_body(), &boto3).await;
        assert_eq!(response.status().as_u16(), 200, "{sent}");
        let seen = env.mock.last_request().unwrap();
        assert_eq!(seen.path, format!("/model/{upstream}/converse"));
        assert!(seen.key_valid, "{sent}");
        assert_eq!(seen.header("amz-sdk-request"), Some("attempt=1; max=3"));
        assert!(seen.header("authorization").unwrap().contains("amz-sdk-invocation-id;amz-sdk-request;"));
        let rows = env.audit_rows(&call_id).await;
        assert_eq!(rows[0].model.as_deref(), Some(model));
        assert_eq!(rows[0].model_family.as_deref(), Some("claude-haiku"));
    }
    // A model id that decodes to something else is refused before anything is sent.
    env.mock.clear();
    let response = call(&env, &token, "a%2F..%2Fb", "converse", &converse_body(), &[]).await;
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(env.mock.request_count(), 0);
    env.stop().await;
}

/// An event stream is passed on frame by frame as the provider sends it: the first frames
/// reach the client long before the provider has finished.
#[tokio::test]
async fn event_streams_reach_the_client_as_they_arrive() {
    let aws = Aws::new();
    let config = MockConfig { stream_chunk_delay: Duration::from_millis(300), ..aws.mock_config() };
    let env = Env::start_with(TestStore::sqlite().await.unwrap(), config, |_| {}).await;
    let token = env.token(&[]).await;
    env.credential_with_secret("aws", ProviderId::Bedrock, ScopeInput::default(), &aws.access_key_secret()).await;
    for action in ["converse-stream", "invoke-with-response-stream"] {
        let body = if action == "converse-stream" { converse_body() } else { invoke_body() };
        let started = Instant::now();
        let mut response = call(&env, &token, HAIKU_PATH, action, &body, &[]).await;
        assert_eq!(response.status().as_u16(), 200);
        let first = response.chunk().await.unwrap().unwrap();
        let first_at = started.elapsed();
        let mut rest = first.to_vec();
        while let Some(chunk) = response.chunk().await.unwrap() {
            rest.extend_from_slice(&chunk);
        }
        let total = started.elapsed();
        let frames = decode_event_stream(&rest).unwrap();
        assert!(frames.len() >= 6, "{action}: {} frames", frames.len());
        // The provider spends (frames - 1) × 300 ms; the first frame came well before.
        assert!(first_at < Duration::from_millis(900), "{action}: first bytes after {first_at:?}");
        assert!(total > first_at + Duration::from_millis(1200), "{action}: {first_at:?} then {total:?}");
    }
    env.stop().await;
}
