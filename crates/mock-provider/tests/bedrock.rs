//! The mock's Bedrock runtime checks what AWS checks: a SigV4 signature recomputed from
//! the request as received (a wrong secret, an altered body, a stale or missing signature
//! and an unknown key id are refused in Bedrock's shape), or a Bedrock API key as a bearer
//! token; and it answers in Bedrock's shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use byok_mock_provider::{decode_event_stream, BedrockAccessKey, MockConfig, MockProvider};
use serde_json::{json, Value};

const KEY_ID: &str = "AKIAMOCKTEST00000001";
const SECRET: &str = "mock/secret/key+0123456789abcdefghij";
const API_KEY: &str = "ABSKbW9jay1iZWRyb2NrLWFwaS1rZXk=";
const PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";

async fn mock() -> MockProvider {
    MockProvider::start(MockConfig {
        bedrock_access_keys: vec![BedrockAccessKey {
            access_key_id: KEY_ID.to_owned(),
            secret_access_key: SECRET.to_owned(),
            session_token: None,
        }],
        bedrock_api_keys: vec![API_KEY.to_owned()],
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// The headers a SigV4 signature of `body` to `url` adds, by `key_id`/`secret` at `time`.
fn signed_headers(url: &str, body: &[u8], key_id: &str, secret: &str, time: SystemTime) -> Vec<(String, String)> {
    let identity = aws_credential_types::Credentials::new(key_id, secret, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let headers = [("content-type", "application/json")];
    let request = SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    instructions.headers().map(|(n, v)| (n.to_owned(), v.to_owned())).collect()
}

fn body() -> Vec<u8> {
    json!({"messages": [{"role": "user", "content": [{"text": "hello mock"}]}], "inferenceConfig": {"maxTokens": 8}})
        .to_string()
        .into_bytes()
}

async fn post(url: &str, body: Vec<u8>, headers: &[(String, String)]) -> (u16, Option<String>, Vec<u8>) {
    let mut request = reqwest::Client::new().post(url).header("content-type", "application/json").body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let kind = response.headers().get("x-amzn-errortype").map(|v| v.to_str().unwrap().to_owned());
    (status, kind, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn signatures_are_verified_as_aws_verifies_them() {
    let mock = mock().await;
    let url = format!("{}{PATH}", mock.base_url());
    let now = SystemTime::now();

    let good = signed_headers(&url, &body(), KEY_ID, SECRET, now);
    let (status, _, answer) = post(&url, body(), &good).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["output"]["message"]["content"][0]["text"], "mock reply to: hello mock");
    assert_eq!(answer["usage"], json!({"inputTokens": 2, "outputTokens": 5, "totalTokens": 7}));
    let seen = mock.last_request().unwrap();
    assert!(seen.key_valid);
    assert_eq!(seen.presented_key.as_deref(), Some(KEY_ID));

    let refused = [
        (
            "wrong secret",
            signed_headers(&url, &body(), KEY_ID, "not-the-secret-0123456789", now),
            body(),
            "InvalidSignatureException",
        ),
        ("altered body", good.clone(), b"{\"messages\":[]}".to_vec(), "InvalidSignatureException"),
        (
            "stale",
            signed_headers(&url, &body(), KEY_ID, SECRET, now - Duration::from_secs(16 * 60)),
            body(),
            "InvalidSignatureException",
        ),
        (
            "unknown key id",
            signed_headers(&url, &body(), "AKIAUNKNOWN000000000", SECRET, now),
            body(),
            "UnrecognizedClientException",
        ),
        ("no signature", Vec::new(), body(), "MissingAuthenticationTokenException"),
        (
            "wrong api key",
            vec![("authorization".to_owned(), "Bearer ABSKnot-a-key".to_owned())],
            body(),
            "UnrecognizedClientException",
        ),
    ];
    for (what, headers, sent, expected) in refused {
        let (status, kind, answer) = post(&url, sent, &headers).await;
        assert_eq!(status, 403, "{what}");
        assert!(kind.as_deref().is_some_and(|k| k.starts_with(expected)), "{what}: {kind:?}");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert!(answer["message"].is_string(), "{what}: {answer}");
        if what == "stale" {
            assert!(answer["message"].as_str().unwrap().starts_with("Signature expired"), "{answer}");
        }
        assert!(!mock.last_request().unwrap().key_valid, "{what}");
    }

    // A Bedrock API key as a bearer token; a stream in event-stream framing.
    let bearer = [("authorization".to_owned(), format!("Bearer {API_KEY}"))];
    let stream_url = url.replace("/converse", "/converse-stream");
    let response =
        reqwest::Client::new().post(&stream_url).header(&bearer[0].0, &bearer[0].1).body(body()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/vnd.amazon.eventstream");
    let frames = decode_event_stream(&response.bytes().await.unwrap()).unwrap();
    let kinds: Vec<&str> = frames.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"messageStart"));
    assert_eq!(&kinds[kinds.len() - 3..], ["contentBlockStop", "messageStop", "metadata"]);
    let metadata: Value = serde_json::from_slice(&frames.last().unwrap().1).unwrap();
    assert_eq!(metadata["usage"]["outputTokens"], 5);
    mock.shutdown().await;
}
