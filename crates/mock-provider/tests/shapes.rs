//! The JSON every endpoint answers: fields present with the right types, deterministic
//! content and token counts (a token is a whitespace-separated word).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{assert_shape, client, start, ANTHROPIC_KEY, AZURE_KEY, GEMINI_KEY, OPENAI_KEY};
use serde_json::{json, Value};

fn openai_auth() -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {OPENAI_KEY}"))]
}

fn anthropic_auth() -> Vec<(&'static str, String)> {
    vec![("x-api-key", ANTHROPIC_KEY.to_owned()), ("anthropic-version", "2023-06-01".to_owned())]
}

fn gemini_auth() -> Vec<(&'static str, String)> {
    vec![("x-goog-api-key", GEMINI_KEY.to_owned())]
}

fn azure_auth() -> Vec<(&'static str, String)> {
    vec![("api-key", AZURE_KEY.to_owned())]
}

#[tokio::test]
async fn every_endpoint_answers_in_its_documented_shape() {
    // (what, headers, method, path, body, shape)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str, &'a str, Value, Value);
    let cases: Vec<Case> = vec![
        (
            "openai chat completion",
            openai_auth(),
            "POST",
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "two words"}]},
                {"role": "assistant", "content": "ignored here"}
            ]}),
            json!({
                "id": "<string>",
                "object": "chat.completion",
                "created": "<integer>",
                "model": "gpt-4o-mini",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "mock reply to: two words", "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": {"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}
            }),
        ),
        (
            "openai chat completion cut by max_tokens",
            openai_auth(),
            "POST",
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "max_tokens": 2, "messages": [{"role": "user", "content": "a b c d e"}]}),
            json!({
                "choices": [{"message": {"content": "mock reply"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
            }),
        ),
        (
            "openai legacy completion",
            openai_auth(),
            "POST",
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "say this"}),
            json!({
                "id": "<string>",
                "object": "text_completion",
                "model": "gpt-3.5-turbo-instruct",
                "choices": [{"text": "mock reply to: say this", "index": 0, "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
            }),
        ),
        (
            "openai embeddings (floats)",
            openai_auth(),
            "POST",
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["one two", "three"], "dimensions": 4}),
            json!({
                "object": "list",
                "model": "text-embedding-3-small",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": ["<number>"]},
                    {"object": "embedding", "index": 1, "embedding": ["<number>"]}
                ],
                "usage": {"prompt_tokens": 3, "total_tokens": 3}
            }),
        ),
        (
            "openai embeddings (base64)",
            openai_auth(),
            "POST",
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "one", "encoding_format": "base64"}),
            json!({
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": "<string>"}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}
            }),
        ),
        (
            "openai responses",
            openai_auth(),
            "POST",
            "/v1/responses",
            json!({"model": "gpt-4.1", "instructions": "be nice", "input": "hello there"}),
            json!({
                "id": "<string>",
                "object": "response",
                "status": "completed",
                "model": "gpt-4.1",
                "output": [{
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "mock reply to: hello there"}]
                }],
                "usage": {"input_tokens": 4, "output_tokens": 5, "total_tokens": 9}
            }),
        ),
        (
            "openai models",
            openai_auth(),
            "GET",
            "/v1/models",
            Value::Null,
            json!({"object": "list", "data": [{"id": "<string>", "object": "model"}]}),
        ),
        (
            "openai model",
            openai_auth(),
            "GET",
            "/v1/models/gpt-4o",
            Value::Null,
            json!({"id": "gpt-4o", "object": "model", "owned_by": "<string>"}),
        ),
        (
            "anthropic message",
            anthropic_auth(),
            "POST",
            "/v1/messages",
            json!({"model": "claude-opus-5", "max_tokens": 100, "system": "one two",
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "three"}]}]}),
            json!({
                "id": "<string>",
                "type": "message",
                "role": "assistant",
                "model": "claude-opus-5",
                "content": [{"type": "text", "text": "mock reply to: three"}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 3, "output_tokens": 4}
            }),
        ),
        (
            "anthropic message cut by max_tokens",
            anthropic_auth(),
            "POST",
            "/v1/messages",
            json!({"model": "claude-opus-5", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
            json!({"content": [{"type": "text", "text": "mock"}], "stop_reason": "max_tokens", "usage": {"output_tokens": 1}}),
        ),
        (
            "anthropic count_tokens",
            anthropic_auth(),
            "POST",
            "/v1/messages/count_tokens",
            json!({"model": "claude-opus-5", "messages": [{"role": "user", "content": "a b c"}]}),
            json!({"input_tokens": 3}),
        ),
        (
            "gemini generateContent",
            gemini_auth(),
            "POST",
            "/v1beta/models/gemini-2.5-pro:generateContent",
            json!({
                "systemInstruction": {"parts": [{"text": "sys"}]},
                "contents": [{"role": "user", "parts": [{"text": "what is up"}]}]
            }),
            json!({
                "candidates": [{
                    "content": {"parts": [{"text": "mock reply to: what is up"}], "role": "model"},
                    "finishReason": "STOP",
                    "index": 0
                }],
                "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6, "totalTokenCount": 10},
                "modelVersion": "gemini-2.5-pro"
            }),
        ),
        (
            "gemini generateContent cut by maxOutputTokens",
            gemini_auth(),
            "POST",
            "/v1beta/models/gemini-2.5-pro:generateContent",
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 2}}),
            json!({"candidates": [{"finishReason": "MAX_TOKENS", "content": {"parts": [{"text": "mock reply"}]}}]}),
        ),
        (
            "gemini embedContent",
            gemini_auth(),
            "POST",
            "/v1beta/models/text-embedding-004:embedContent",
            json!({"content": {"parts": [{"text": "embed me"}]}, "outputDimensionality": 3}),
            json!({"embedding": {"values": ["<number>", "<number>", "<number>"]}}),
        ),
        (
            "gemini batchEmbedContents",
            gemini_auth(),
            "POST",
            "/v1beta/models/text-embedding-004:batchEmbedContents",
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}}
            ]}),
            json!({"embeddings": [{"values": ["<number>"]}, {"values": ["<number>"]}]}),
        ),
        (
            "gemini countTokens",
            gemini_auth(),
            "POST",
            "/v1beta/models/gemini-2.5-flash:countTokens",
            json!({"contents": [{"parts": [{"text": "one two three four"}]}]}),
            json!({"totalTokens": 4}),
        ),
        (
            "gemini models",
            gemini_auth(),
            "GET",
            "/v1beta/models",
            Value::Null,
            json!({"models": [{"name": "<string>", "displayName": "<string>", "supportedGenerationMethods": ["<string>"]}]}),
        ),
        (
            "azure chat completion",
            azure_auth(),
            "POST",
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
            json!({"messages": [{"role": "user", "content": "a b"}]}),
            json!({
                "object": "chat.completion",
                "model": "prod-4o",
                "choices": [{"message": {"role": "assistant", "content": "mock reply to: a b"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
            }),
        ),
        (
            "azure embeddings",
            azure_auth(),
            "POST",
            "/openai/deployments/embedder/embeddings?api-version=2024-10-21",
            json!({"input": "x y"}),
            json!({"object": "list", "model": "embedder", "data": [{"embedding": ["<number>"]}], "usage": {"prompt_tokens": 2}}),
        ),
    ];
    let mock = start().await;
    for (what, headers, method, path, body, shape) in cases {
        let mut request = client().request(method.parse().unwrap(), format!("{}{path}", mock.base_url()));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{what}");
        assert_eq!(response.headers()["content-type"], "application/json", "{what}");
        assert!(response.headers().contains_key("content-length"), "{what}: whole bodies have a length");
        let body: Value = response.json().await.unwrap();
        assert_shape(&body, &shape, what);
    }
}

#[tokio::test]
async fn embeddings_are_deterministic_and_base64_matches_floats() {
    let mock = start().await;
    let embed = |format: &'static str| {
        let url = format!("{}/v1/embeddings", mock.base_url());
        async move {
            let body: Value = client()
                .post(url)
                .bearer_auth(OPENAI_KEY)
                .json(&json!({"model": "m", "input": "same text", "encoding_format": format}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["data"][0]["embedding"].clone()
        }
    };
    let floats = embed("float").await;
    assert_eq!(floats, embed("float").await);
    let encoded = embed("base64").await;
    let bytes = decode_base64(encoded.as_str().unwrap());
    let decoded: Vec<f64> =
        bytes.chunks_exact(4).map(|chunk| f64::from(f32::from_le_bytes(chunk.try_into().unwrap()))).collect();
    let floats: Vec<f64> = floats.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(decoded, floats);
}

/// Standard base64 without padding checks (test-only; the library has its own encoder).
fn decode_base64(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = alphabet.iter().position(|a| *a == byte).unwrap() as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}
