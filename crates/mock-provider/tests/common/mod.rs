//! Helpers shared by the integration tests: keys, a mock with them, an HTTP client, an SSE
//! parser and a small JSON shape matcher.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use byok_mock_provider::{MockConfig, MockProvider};
use serde_json::Value;

pub const OPENAI_KEY: &str = "sk-test-openai-0123456789abcdefghij";
pub const ANTHROPIC_KEY: &str = "sk-ant-test-0123456789abcdefghij";
pub const GEMINI_KEY: &str = "AIzaTest0123456789abcdefghij";
pub const AZURE_KEY: &str = "azure0123456789abcdefghij";

/// A configuration accepting the test keys above.
pub fn config() -> MockConfig {
    MockConfig {
        openai_keys: vec![OPENAI_KEY.to_owned()],
        anthropic_keys: vec![ANTHROPIC_KEY.to_owned()],
        gemini_keys: vec![GEMINI_KEY.to_owned()],
        azure_keys: vec![AZURE_KEY.to_owned()],
        ..MockConfig::default()
    }
}

pub async fn start() -> MockProvider {
    MockProvider::start(config()).await.expect("mock starts")
}

pub async fn start_with(configure: impl FnOnce(&mut MockConfig)) -> MockProvider {
    let mut config = config();
    configure(&mut config);
    MockProvider::start(config).await.expect("mock starts")
}

/// A client that neither follows redirects nor uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

/// One provider's minimal valid request, with its key in the right header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    OpenAi,
    Anthropic,
    Gemini,
    Azure,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::OpenAi, Family::Anthropic, Family::Gemini, Family::Azure];

    pub fn key(self) -> &'static str {
        match self {
            Family::OpenAi => OPENAI_KEY,
            Family::Anthropic => ANTHROPIC_KEY,
            Family::Gemini => GEMINI_KEY,
            Family::Azure => AZURE_KEY,
        }
    }

    /// The key header for `key`.
    pub fn key_header(self, key: &str) -> (&'static str, String) {
        match self {
            Family::OpenAi => ("authorization", format!("Bearer {key}")),
            Family::Anthropic => ("x-api-key", key.to_owned()),
            Family::Gemini => ("x-goog-api-key", key.to_owned()),
            Family::Azure => ("api-key", key.to_owned()),
        }
    }

    /// A chat request: path and body. `stream` asks for a streamed response.
    pub fn chat(self, prompt: &str, stream: bool) -> (String, Value) {
        let messages = serde_json::json!([{"role": "user", "content": prompt}]);
        match self {
            Family::OpenAi => (
                "/v1/chat/completions".into(),
                serde_json::json!({"model": "gpt-4o-mini", "messages": messages, "stream": stream}),
            ),
            Family::Anthropic => (
                "/v1/messages".into(),
                serde_json::json!({"model": "claude-sonnet-5", "max_tokens": 64, "messages": messages, "stream": stream}),
            ),
            Family::Gemini => (
                if stream {
                    "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse".into()
                } else {
                    "/v1beta/models/gemini-2.5-flash:generateContent".into()
                },
                serde_json::json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}]}),
            ),
            Family::Azure => (
                "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21".into(),
                serde_json::json!({"messages": messages, "stream": stream}),
            ),
        }
    }

    /// Headers every request of this family needs besides the key.
    pub fn extra_headers(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Family::Anthropic => vec![("anthropic-version", "2023-06-01")],
            _ => Vec::new(),
        }
    }

    /// Sends a chat request with `key` (none when `None`).
    pub async fn send_chat(
        self,
        mock: &MockProvider,
        key: Option<&str>,
        prompt: &str,
        stream: bool,
    ) -> reqwest::Response {
        let (path, body) = self.chat(prompt, stream);
        let mut request = client().post(format!("{}{path}", mock.base_url())).json(&body);
        for (name, value) in self.extra_headers() {
            request = request.header(name, value);
        }
        if let Some(key) = key {
            let (name, value) = self.key_header(key);
            request = request.header(name, value);
        }
        request.send().await.expect("request is sent")
    }
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|error| panic!("event data is JSON ({error}): {}", self.data))
    }
}

/// Splits an SSE body into events. Panics on a malformed one: every event of the mock must
/// be `event:`/`data:` lines ended by a blank line.
pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    assert!(body.ends_with("\n\n"), "an SSE body ends with a blank line: {body:?}");
    body.trim_end_matches('\n')
        .split("\n\n")
        .map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per event: {block:?}");
                    data = Some(value.to_owned());
                } else {
                    panic!("unexpected SSE line {line:?} in {block:?}");
                }
            }
            SseEvent { event, data: data.unwrap_or_else(|| panic!("event without data: {block:?}")) }
        })
        .collect()
}

/// Checks `actual` against `shape`:
/// - `"<string>"`, `"<number>"`, `"<integer>"`, `"<bool>"`, `"<null>"`, `"<array>"`,
///   `"<object>"`, `"<any>"` check the type;
/// - an object checks each of its keys (others may be present);
/// - an array of one shape checks that `actual` is a non-empty array of that shape; a longer
///   array checks element by element;
/// - anything else must be equal.
pub fn assert_shape(actual: &Value, shape: &Value, at: &str) {
    match shape {
        Value::String(kind) if kind.starts_with('<') && kind.ends_with('>') => {
            let ok = match kind.as_str() {
                "<string>" => actual.is_string(),
                "<number>" => actual.is_number(),
                "<integer>" => actual.is_u64() || actual.is_i64(),
                "<bool>" => actual.is_boolean(),
                "<null>" => actual.is_null(),
                "<array>" => actual.is_array(),
                "<object>" => actual.is_object(),
                "<any>" => true,
                other => panic!("unknown shape {other}"),
            };
            assert!(ok, "{at}: expected {kind}, got {actual}");
        }
        Value::Object(fields) => {
            let object = actual.as_object().unwrap_or_else(|| panic!("{at}: expected an object, got {actual}"));
            for (key, field_shape) in fields {
                let value = object.get(key).unwrap_or_else(|| panic!("{at}: missing field {key:?} in {actual}"));
                assert_shape(value, field_shape, &format!("{at}.{key}"));
            }
        }
        Value::Array(shapes) if shapes.len() == 1 => {
            let items = actual.as_array().unwrap_or_else(|| panic!("{at}: expected an array, got {actual}"));
            assert!(!items.is_empty(), "{at}: expected a non-empty array");
            for (index, item) in items.iter().enumerate() {
                assert_shape(item, &shapes[0], &format!("{at}[{index}]"));
            }
        }
        Value::Array(shapes) => {
            let items = actual.as_array().unwrap_or_else(|| panic!("{at}: expected an array, got {actual}"));
            assert_eq!(items.len(), shapes.len(), "{at}: array length of {actual}");
            for (index, (item, shape)) in items.iter().zip(shapes).enumerate() {
                assert_shape(item, shape, &format!("{at}[{index}]"));
            }
        }
        other => assert_eq!(actual, other, "{at}"),
    }
}
