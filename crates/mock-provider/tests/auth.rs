//! Keys: each provider × (right, wrong, missing) key → status and error shape, and what the
//! mock records about the key; plus each provider's other header and query rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use byok_mock_provider::Provider;
use common::{assert_shape, client, start, start_with, Family};
use serde_json::{json, Value};

const WRONG_KEY: &str = "sk-wrong-key-ABCDEFGHIJKLMNOPQRSTUVWXYZ";

#[derive(Clone, Copy, Debug)]
enum KeyCase {
    Right,
    Wrong,
    Missing,
}

#[tokio::test]
async fn each_provider_answers_right_wrong_and_missing_keys_in_its_own_shape() {
    let cases: Vec<(Family, KeyCase, u16, Value)> = vec![
        (Family::OpenAi, KeyCase::Right, 200, json!({"object": "chat.completion"})),
        (
            Family::OpenAi,
            KeyCase::Wrong,
            401,
            json!({"error": {
                "message": format!(
                    "Incorrect API key provided: sk-wrong{}WXYZ. You can find your API key at https://platform.openai.com/account/api-keys.",
                    "*".repeat(WRONG_KEY.len() - 12)
                ),
                "type": "invalid_request_error",
                "param": null,
                "code": "invalid_api_key"
            }}),
        ),
        (
            Family::OpenAi,
            KeyCase::Missing,
            401,
            json!({"error": {"message": "<string>", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
        (Family::Anthropic, KeyCase::Right, 200, json!({"type": "message"})),
        (
            Family::Anthropic,
            KeyCase::Wrong,
            401,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        ),
        (
            Family::Anthropic,
            KeyCase::Missing,
            401,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "x-api-key header is required"}}),
        ),
        (Family::Gemini, KeyCase::Right, 200, json!({"candidates": "<array>"})),
        (
            Family::Gemini,
            KeyCase::Wrong,
            400,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}),
        ),
        (
            Family::Gemini,
            KeyCase::Missing,
            403,
            json!({"error": {"code": 403, "message": "<string>", "status": "PERMISSION_DENIED"}}),
        ),
        (Family::Azure, KeyCase::Right, 200, json!({"object": "chat.completion", "model": "my-gpt"})),
        (
            Family::Azure,
            KeyCase::Wrong,
            401,
            json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}),
        ),
        (Family::Azure, KeyCase::Missing, 401, json!({"error": {"code": "401", "message": "<string>"}})),
    ];
    let mock = start().await;
    for (family, key_case, status, shape) in cases {
        mock.clear();
        let key = match key_case {
            KeyCase::Right => Some(family.key()),
            KeyCase::Wrong => Some(WRONG_KEY),
            KeyCase::Missing => None,
        };
        let response = family.send_chat(&mock, key, "hello", false).await;
        let label = format!("{family:?} with {key_case:?} key");
        assert_eq!(response.status().as_u16(), status, "{label}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{label}");
        let body: Value = response.json().await.unwrap();
        assert_shape(&body, &shape, &label);

        let recorded = mock.last_request().expect("request recorded");
        assert_eq!(recorded.presented_key.as_deref(), key, "{label}");
        assert_eq!(recorded.key_valid, matches!(key_case, KeyCase::Right), "{label}");
        let provider = match family {
            Family::OpenAi => Provider::OpenAi,
            Family::Anthropic => Provider::Anthropic,
            Family::Gemini => Provider::Gemini,
            Family::Azure => Provider::AzureOpenAi,
        };
        assert_eq!(recorded.provider, provider, "{label}");
        assert_eq!(recorded.status, Some(status), "{label}");
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn a_key_for_one_provider_is_not_accepted_by_another() {
    let mock = start().await;
    for family in Family::ALL {
        for other in Family::ALL.into_iter().filter(|other| *other != family) {
            let response = family.send_chat(&mock, Some(other.key()), "hi", false).await;
            assert_ne!(response.status().as_u16(), 200, "{family:?} accepted {other:?}'s key");
            assert!(!mock.last_request().unwrap().key_valid);
        }
    }
}

#[tokio::test]
async fn openai_masks_wrong_keys_unless_configured_to_echo_them() {
    let cases = [
        (false, "sk-live-0123456789abcdefXYZW", "sk-live-****************XYZW"),
        // Like OpenAI, a short key is quoted whole.
        (false, "sk-short", "sk-short"),
        (true, "sk-live-0123456789abcdefXYZW", "sk-live-0123456789abcdefXYZW"),
    ];
    for (echo_full_key, key, quoted) in cases {
        let mock = start_with(|config| config.echo_full_key_in_401 = echo_full_key).await;
        let response = Family::OpenAi.send_chat(&mock, Some(key), "hi", false).await;
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert_eq!(
            message,
            format!(
                "Incorrect API key provided: {quoted}. You can find your API key at https://platform.openai.com/account/api-keys."
            ),
            "echo_full_key_in_401={echo_full_key}"
        );
        mock.shutdown().await;
    }
}

#[tokio::test]
async fn anthropic_takes_the_key_only_from_x_api_key() {
    let mock = start().await;
    let (path, body) = Family::Anthropic.chat("hi", false);
    let response = client()
        .post(format!("{}{path}", mock.base_url()))
        .header("anthropic-version", "2023-06-01")
        .bearer_auth(common::ANTHROPIC_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.presented_key, None);
    assert!(!recorded.key_valid);
}

#[tokio::test]
async fn provider_specific_request_rules() {
    let mock = start().await;
    let anthropic_body = Family::Anthropic.chat("hi", false).1;
    let gemini_body = Family::Gemini.chat("hi", false).1;
    let azure_body = Family::Azure.chat("hi", false).1;
    // (what, method, path, headers, body, status, error shape)
    type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, String)>, Value, u16, Value);
    let cases: Vec<Case> = vec![
        (
            "anthropic without anthropic-version",
            "POST",
            "/v1/messages".into(),
            vec![("x-api-key", common::ANTHROPIC_KEY.into())],
            anthropic_body.clone(),
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "<string>"}}),
        ),
        (
            "gemini key in the URL, valid header too",
            "POST",
            format!("/v1beta/models/gemini-2.5-flash:generateContent?key={}", common::GEMINI_KEY),
            vec![("x-goog-api-key", common::GEMINI_KEY.into())],
            gemini_body.clone(),
            400,
            json!({"error": {"code": 400, "message": "<string>", "status": "INVALID_ARGUMENT"}}),
        ),
        (
            "gemini key only in the URL",
            "POST",
            format!("/v1beta/models/gemini-2.5-flash:generateContent?alt=json&key={}", common::GEMINI_KEY),
            vec![],
            gemini_body,
            400,
            json!({"error": {"code": 400, "message": "<string>", "status": "INVALID_ARGUMENT"}}),
        ),
        (
            "azure without api-version",
            "POST",
            "/openai/deployments/my-gpt/chat/completions".into(),
            vec![("api-key", common::AZURE_KEY.into())],
            azure_body,
            400,
            json!({"error": {"code": "MissingApiVersionParameter", "message": "<string>"}}),
        ),
        (
            "openai without model",
            "POST",
            "/v1/chat/completions".into(),
            vec![("authorization", format!("Bearer {}", common::OPENAI_KEY))],
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            400,
            json!({"error": {"message": "you must provide a model parameter", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
        (
            "openai without messages",
            "POST",
            "/v1/chat/completions".into(),
            vec![("authorization", format!("Bearer {}", common::OPENAI_KEY))],
            json!({"model": "gpt-4o"}),
            400,
            json!({"error": {"message": "Missing required parameter: 'messages'.", "type": "invalid_request_error", "param": "messages", "code": "missing_required_parameter"}}),
        ),
        (
            "openai embeddings without input",
            "POST",
            "/v1/embeddings".into(),
            vec![("authorization", format!("Bearer {}", common::OPENAI_KEY))],
            json!({"model": "text-embedding-3-small"}),
            400,
            json!({"error": {"param": "input", "type": "invalid_request_error"}}),
        ),
        (
            "anthropic without max_tokens",
            "POST",
            "/v1/messages".into(),
            vec![("x-api-key", common::ANTHROPIC_KEY.into()), ("anthropic-version", "2023-06-01".into())],
            json!({"model": "claude-sonnet-5", "messages": []}),
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}),
        ),
        (
            "unknown path",
            "GET",
            "/nothing/here".into(),
            vec![],
            Value::Null,
            404,
            json!({"error": {"message": "Invalid URL (GET /nothing/here)", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
        (
            "unknown OpenAI endpoint, right key",
            "POST",
            "/v1/frobnicate".into(),
            vec![("authorization", format!("Bearer {}", common::OPENAI_KEY))],
            json!({}),
            404,
            json!({"error": {"message": "Invalid URL (POST /v1/frobnicate)", "type": "invalid_request_error"}}),
        ),
        (
            "body that is not JSON",
            "POST",
            "/v1/chat/completions".into(),
            vec![("authorization", format!("Bearer {}", common::OPENAI_KEY))],
            json!("not an object"),
            400,
            json!({"error": {"type": "invalid_request_error", "message": "<string>"}}),
        ),
    ];
    for (what, method, path, headers, body, status, shape) in cases {
        let mut request = client().request(method.parse().unwrap(), format!("{}{path}", mock.base_url()));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_shape(&body, &shape, what);
        assert_eq!(mock.last_request().unwrap().path, path, "{what}");
    }
    let key_in_url = &mock.requests()[2];
    assert_eq!(key_in_url.provider, Provider::Gemini);
    assert_eq!(key_in_url.presented_key.as_deref(), Some(common::GEMINI_KEY));
    assert!(!key_in_url.key_valid);
    assert_eq!(key_in_url.query_param("key"), Some(common::GEMINI_KEY));
}

#[tokio::test]
async fn openai_compatible_prefixes_reach_the_openai_handlers() {
    let mock = start().await;
    for prefix in ["", "/openai", "/api", "/mistral/v0"] {
        let response = client()
            .post(format!("{}{prefix}/v1/chat/completions", mock.base_url()))
            .bearer_auth(common::OPENAI_KEY)
            .json(&json!({"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "prefix {prefix:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["model"], "llama-3.3-70b");
        let recorded = mock.last_request().unwrap();
        assert_eq!(recorded.provider, Provider::OpenAi);
        assert_eq!(recorded.path, format!("{prefix}/v1/chat/completions"));
        assert!(recorded.key_valid);
    }
}

#[tokio::test]
async fn models_listing_is_told_apart_by_anthropic_headers() {
    let mock = start().await;
    let openai: Value = client()
        .get(format!("{}/v1/models", mock.base_url()))
        .bearer_auth(common::OPENAI_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape(
        &openai,
        &json!({"object": "list", "data": [{"id": "<string>", "object": "model", "created": "<integer>", "owned_by": "<string>"}]}),
        "openai models",
    );
    let anthropic: Value = client()
        .get(format!("{}/v1/models", mock.base_url()))
        .header("x-api-key", common::ANTHROPIC_KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape(
        &anthropic,
        &json!({"data": [{"type": "model", "id": "<string>", "display_name": "<string>", "created_at": "<string>"}], "has_more": false}),
        "anthropic models",
    );
    let providers: Vec<Provider> = mock.requests().iter().map(|r| r.provider).collect();
    assert_eq!(providers, [Provider::OpenAi, Provider::Anthropic]);
}
