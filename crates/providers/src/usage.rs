//! Token usage read from a response as it streams past, without holding the stream.
//!
//! SSE responses are scanned line by line (only the current partial line is kept) and
//! only lines that mention usage are parsed. Plain JSON responses are kept up to a cap
//! and parsed at the end.

use memchr::memmem;

use crate::registry::Api;

/// The longest SSE line or JSON body the tap keeps; beyond it usage is not read.
const MAX_KEPT: usize = 4 * 1024 * 1024;

/// Tokens reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt / input tokens.
    pub input_tokens: Option<u64>,
    /// Completion / output tokens.
    pub output_tokens: Option<u64>,
}

/// Watches response bytes go by and picks out usage.
#[derive(Debug)]
pub struct UsageTap {
    api: Api,
    sse: bool,
    kept: Vec<u8>,
    overflow: bool,
    usage: Usage,
}

impl UsageTap {
    /// A tap for a response of `api` with `content_type`.
    pub fn new(api: Api, content_type: Option<&str>) -> Self {
        let sse = content_type.is_some_and(|ct| ct.starts_with("text/event-stream"));
        Self { api, sse, kept: Vec::new(), overflow: false, usage: Usage::default() }
    }

    /// Feed the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.sse {
            self.feed_sse(chunk);
        } else if !self.overflow {
            if self.kept.len() + chunk.len() > MAX_KEPT {
                self.overflow = true;
                self.kept = Vec::new();
            } else {
                self.kept.extend_from_slice(chunk);
            }
        }
    }

    fn feed_sse(&mut self, mut chunk: &[u8]) {
        while let Some(newline) = memchr::memchr(b'\n', chunk) {
            let (line, rest) = chunk.split_at(newline);
            if self.overflow {
                self.overflow = false;
            } else if self.kept.is_empty() {
                self.sse_line(line);
            } else {
                let mut full = std::mem::take(&mut self.kept);
                full.extend_from_slice(line);
                self.sse_line(&full);
            }
            chunk = rest.get(1..).unwrap_or(&[]);
        }
        if !chunk.is_empty() && !self.overflow {
            if self.kept.len() + chunk.len() > MAX_KEPT {
                self.overflow = true;
                self.kept.clear();
            } else {
                self.kept.extend_from_slice(chunk);
            }
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else { return };
        let mentions_usage = memmem::find(data, b"usage").is_some() || memmem::find(data, b"Usage").is_some();
        if !mentions_usage {
            return;
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) {
            self.absorb(&value);
        }
    }

    /// Take usage from one JSON document (a response, an SSE event or a Gemini chunk).
    fn absorb(&mut self, value: &serde_json::Value) {
        let number = |v: &serde_json::Value, key: &str| v.get(key).and_then(serde_json::Value::as_u64);
        match self.api {
            Api::OpenAi | Api::AzureOpenAi | Api::Bedrock => {
                if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                    self.usage.input_tokens =
                        number(usage, "prompt_tokens").or(number(usage, "input_tokens")).or(self.usage.input_tokens);
                    self.usage.output_tokens = number(usage, "completion_tokens")
                        .or(number(usage, "output_tokens"))
                        .or(self.usage.output_tokens);
                }
                // Responses API streams: {"type":"response.completed","response":{"usage":…}}
                if let Some(response) = value.get("response") {
                    self.absorb(response);
                }
            }
            Api::Anthropic => {
                // message_start: {"message":{"usage":{"input_tokens"}}}; message_delta: {"usage":{"output_tokens"}};
                // a plain response: {"usage":{"input_tokens","output_tokens"}}.
                for usage in
                    [value.get("usage"), value.get("message").and_then(|m| m.get("usage"))].into_iter().flatten()
                {
                    if let Some(n) = number(usage, "input_tokens") {
                        self.usage.input_tokens = Some(n);
                    }
                    if let Some(n) = number(usage, "output_tokens") {
                        self.usage.output_tokens = Some(n);
                    }
                }
            }
            Api::Gemini => {
                if let Some(items) = value.as_array() {
                    for item in items {
                        self.absorb(item);
                    }
                } else if let Some(usage) = value.get("usageMetadata") {
                    self.usage.input_tokens = number(usage, "promptTokenCount").or(self.usage.input_tokens);
                    self.usage.output_tokens = number(usage, "candidatesTokenCount").or(self.usage.output_tokens);
                }
            }
        }
    }

    /// The usage seen, once the body has ended.
    pub fn finish(mut self) -> Usage {
        if self.sse {
            if !self.kept.is_empty() && !self.overflow {
                let line = std::mem::take(&mut self.kept);
                self.sse_line(&line);
            }
        } else if !self.overflow && !self.kept.is_empty() {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&self.kept) {
                self.absorb(&value);
            }
        }
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap_in_pieces(api: Api, content_type: &str, body: &str, piece: usize) -> Usage {
        let mut tap = UsageTap::new(api, Some(content_type));
        for chunk in body.as_bytes().chunks(piece) {
            tap.feed(chunk);
        }
        tap.finish()
    }

    #[test]
    fn usage_from_every_shape_whatever_the_chunking() {
        let openai_sse = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19}}\n\ndata: [DONE]\n\n";
        let anthropic_sse = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let gemini_sse = "data: {\"candidates\":[]}\r\n\r\ndata: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":9,\"totalTokenCount\":13}}\r\n\r\n";
        let cases = [
            (
                Api::OpenAi,
                "application/json",
                r#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
                (3, 5),
            ),
            (
                Api::OpenAi,
                "application/json",
                r#"{"object":"response","usage":{"input_tokens":2,"output_tokens":4}}"#,
                (2, 4),
            ),
            (Api::OpenAi, "text/event-stream", openai_sse, (12, 7)),
            (
                Api::Anthropic,
                "application/json",
                r#"{"type":"message","usage":{"input_tokens":10,"output_tokens":20}}"#,
                (10, 20),
            ),
            (Api::Anthropic, "text/event-stream; charset=utf-8", anthropic_sse, (25, 15)),
            (
                Api::Gemini,
                "application/json",
                r#"{"candidates":[],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2}}"#,
                (1, 2),
            ),
            (
                Api::Gemini,
                "application/json",
                r#"[{"candidates":[]},{"usageMetadata":{"promptTokenCount":6,"candidatesTokenCount":8}}]"#,
                (6, 8),
            ),
            (Api::Gemini, "text/event-stream", gemini_sse, (4, 9)),
        ];
        for (api, ct, body, (input, output)) in cases {
            for piece in [1, 3, 7, 64, 100_000] {
                let usage = tap_in_pieces(api, ct, body, piece);
                assert_eq!(
                    (usage.input_tokens, usage.output_tokens),
                    (Some(input), Some(output)),
                    "{api:?} {ct} piece {piece}"
                );
            }
        }
    }

    #[test]
    fn no_usage_is_none_not_zero() {
        let usage = tap_in_pieces(Api::OpenAi, "text/event-stream", "data: {\"choices\":[]}\n\ndata: [DONE]\n\n", 5);
        assert_eq!(usage, Usage::default());
        let usage = tap_in_pieces(Api::OpenAi, "application/json", "not json", 5);
        assert_eq!(usage, Usage::default());
    }
}
