//! Token usage read from a response as it streams past, without holding the stream.
//!
//! SSE responses are scanned line by line (only the current partial line is kept) and
//! only lines that mention usage are parsed. Plain JSON responses are kept up to a cap
//! and parsed at the end. Bedrock's streams (`application/vnd.amazon.eventstream`) are
//! binary frames, decoded with the AWS SDK's own frame decoder as they arrive (only the
//! current partial frame is kept): a ConverseStream `metadata` event carries `usage`, and
//! an InvokeModelWithResponseStream `chunk` carries the model's own event as base64
//! `bytes`, the last with `amazon-bedrock-invocationMetrics`.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use base64::Engine as _;
use bytes::BytesMut;
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
    /// Set for an AWS event stream: its frame decoder and the partial frame.
    frames: Option<Frames>,
}

/// The state of an AWS event-stream reading.
#[derive(Debug, Default)]
struct Frames {
    decoder: MessageFrameDecoder,
    buffer: BytesMut,
    /// A frame did not decode (or was too long): nothing more is read.
    broken: bool,
}

/// The content type of AWS event streams.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

impl UsageTap {
    /// A tap for a response of `api` with `content_type`.
    pub fn new(api: Api, content_type: Option<&str>) -> Self {
        let sse = content_type.is_some_and(|ct| ct.starts_with("text/event-stream"));
        let frames = content_type.is_some_and(|ct| ct.starts_with(EVENT_STREAM)).then(Frames::default);
        Self { api, sse, kept: Vec::new(), overflow: false, usage: Usage::default(), frames }
    }

    /// Feed the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if let Some(mut frames) = self.frames.take() {
            self.feed_frames(&mut frames, chunk);
            self.frames = Some(frames);
        } else if self.sse {
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

    fn feed_frames(&mut self, frames: &mut Frames, chunk: &[u8]) {
        if frames.broken {
            return;
        }
        frames.buffer.extend_from_slice(chunk);
        loop {
            match frames.decoder.decode_frame(&mut frames.buffer) {
                Ok(DecodedFrame::Complete(message)) => self.event(&message),
                Ok(DecodedFrame::Incomplete) => break,
                Err(_) => {
                    frames.broken = true;
                    frames.buffer = BytesMut::new();
                    return;
                }
            }
        }
        if frames.buffer.len() > MAX_KEPT {
            frames.broken = true;
            frames.buffer = BytesMut::new();
        }
    }

    /// One event-stream message: usage from a ConverseStream `metadata` event, or from the
    /// model's own event inside an InvokeModelWithResponseStream `chunk`.
    fn event(&mut self, message: &Message) {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok())
                .map(|v| v.as_str().to_owned())
        };
        if header(":message-type").as_deref() != Some("event") {
            return;
        }
        let Ok(payload) = serde_json::from_slice::<serde_json::Value>(message.payload()) else { return };
        match header(":event-type").as_deref() {
            Some("metadata") => self.absorb(&payload),
            Some("chunk") => {
                let Some(bytes) = payload.get("bytes").and_then(serde_json::Value::as_str) else { return };
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(bytes) else { return };
                let Ok(inner) = serde_json::from_slice::<serde_json::Value>(&decoded) else { return };
                let number = |v: &serde_json::Value, key: &str| v.get(key).and_then(serde_json::Value::as_u64);
                if let Some(metrics) = inner.get("amazon-bedrock-invocationMetrics") {
                    self.usage.input_tokens = number(metrics, "inputTokenCount").or(self.usage.input_tokens);
                    self.usage.output_tokens = number(metrics, "outputTokenCount").or(self.usage.output_tokens);
                } else {
                    // The model's own stream events (Anthropic's message_start/message_delta).
                    let api = std::mem::replace(&mut self.api, Api::Anthropic);
                    self.absorb(&inner);
                    self.api = api;
                }
            }
            _ => {}
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else { return };
        let mentions_usage = memmem::find(data, b"usage").is_some() || memmem::find(data, b"Usage").is_some();
        if !mentions_usage {
            return;
        }
        if let Ok(Sparse(value)) = serde_json::from_slice::<Sparse>(data.trim_ascii()) {
            self.absorb(&value);
        }
    }

    /// Take usage from one JSON document (a response, an SSE event or a Gemini chunk),
    /// as [`Sparse`] keeps it: only the top-level keys of [`USAGE_KEYS`] are there.
    fn absorb(&mut self, value: &serde_json::Value) {
        let number = |v: &serde_json::Value, key: &str| v.get(key).and_then(serde_json::Value::as_u64);
        match self.api {
            Api::Bedrock => {
                // Converse (`usage.inputTokens`), a ConverseStream `metadata` event, or an
                // InvokeModel answer in the model's own shape (Anthropic's `usage.input_tokens`).
                if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                    self.usage.input_tokens =
                        number(usage, "inputTokens").or(number(usage, "input_tokens")).or(self.usage.input_tokens);
                    self.usage.output_tokens =
                        number(usage, "outputTokens").or(number(usage, "output_tokens")).or(self.usage.output_tokens);
                }
                // Other models' InvokeModel answers (Meta, Mistral) carry their counts at the top.
                if let Some(n) = number(value, "prompt_token_count") {
                    self.usage.input_tokens = Some(n);
                }
                if let Some(n) = number(value, "generation_token_count") {
                    self.usage.output_tokens = Some(n);
                }
            }
            Api::OpenAi | Api::AzureOpenAi => {
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
                    // A thinking model's thoughts are billed as output: they are counted
                    // apart from the candidates (`totalTokenCount` includes both).
                    let output = match (number(usage, "candidatesTokenCount"), number(usage, "thoughtsTokenCount")) {
                        (None, None) => None,
                        (candidates, thoughts) => Some(candidates.unwrap_or(0).saturating_add(thoughts.unwrap_or(0))),
                    };
                    self.usage.output_tokens = output.or(self.usage.output_tokens);
                }
            }
        }
    }

    /// The usage seen, once the body has ended.
    pub fn finish(mut self) -> Usage {
        if self.frames.is_some() {
            return self.usage;
        }
        if self.sse {
            if !self.kept.is_empty() && !self.overflow {
                let line = std::mem::take(&mut self.kept);
                self.sse_line(&line);
            }
        } else if !self.overflow && !self.kept.is_empty() {
            if let Ok(Sparse(value)) = serde_json::from_slice::<Sparse>(&self.kept) {
                self.absorb(&value);
            }
        }
        self.usage
    }
}

/// The top-level keys [`UsageTap::absorb`] reads, in any provider's shape: the rest of a
/// document (the answer's text, a stream event's delta) is checked as JSON but never built.
const USAGE_KEYS: [&str; 6] =
    ["usage", "usageMetadata", "response", "message", "prompt_token_count", "generation_token_count"];

/// A JSON document with only what usage can be read from: an object keeps the keys of
/// [`USAGE_KEYS`] (their values whole), an array its elements read the same way (Gemini's
/// streamed array), anything else is kept as it is.
struct Sparse(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Sparse {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        use serde_json::Value;

        struct SparseVisitor;
        impl<'de> Visitor<'de> for SparseVisitor {
            type Value = Sparse;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Sparse, A::Error> {
                let mut kept = serde_json::Map::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if USAGE_KEYS.contains(&key.as_ref()) {
                        kept.insert(key.into_owned(), map.next_value::<Value>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Sparse(Value::Object(kept)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sparse, A::Error> {
                let mut items = Vec::new();
                while let Some(Sparse(item)) = seq.next_element::<Sparse>()? {
                    items.push(item);
                }
                Ok(Sparse(Value::Array(items)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Sparse, E> {
                Ok(Sparse(Value::Null))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Sparse, E> {
                Ok(Sparse(Value::Bool(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Sparse, E> {
                Ok(Sparse(Value::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Sparse, E> {
                Ok(Sparse(Value::from(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Sparse, E> {
                Ok(Sparse(Value::from(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sparse, E> {
                Ok(Sparse(Value::from(v)))
            }
        }
        deserializer.deserialize_any(SparseVisitor)
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

    /// Every way `body` can arrive: whole, a byte at a time, and cut in two at every
    /// split point (so every line, JSON document and UTF-8 character is cut somewhere).
    fn every_chunking(body: &[u8]) -> impl Iterator<Item = Vec<&[u8]>> {
        let whole = std::iter::once(vec![body]);
        let bytes = std::iter::once(body.chunks(1).collect());
        let splits = (1..body.len()).map(move |at| {
            let (head, tail) = body.split_at(at);
            vec![head, tail]
        });
        whole.chain(bytes).chain(splits)
    }

    /// One row: a provider and mode, the response as the provider sends it, and the
    /// tokens byok must record from it.
    struct Row {
        name: &'static str,
        api: Api,
        content_type: &'static str,
        body: String,
        expected: (Option<u64>, Option<u64>),
    }

    fn row(
        name: &'static str,
        api: Api,
        content_type: &'static str,
        body: &str,
        expected: (Option<u64>, Option<u64>),
    ) -> Row {
        Row { name, api, content_type, body: body.to_owned(), expected }
    }

    /// SSE events (`event:` line when named, `data:` line, blank line) with `newline`.
    fn sse(events: &[(Option<&str>, &str)], newline: &str) -> String {
        let mut out = String::new();
        for (event, data) in events {
            if let Some(event) = event {
                out.push_str(&format!("event: {event}{newline}"));
            }
            out.push_str(&format!("data: {data}{newline}{newline}"));
        }
        out
    }

    fn table() -> Vec<Row> {
        const JSON: &str = "application/json";
        const SSE: &str = "text/event-stream; charset=utf-8";
        let both = |input: u64, output: u64| (Some(input), Some(output));
        let chunk = |content: &str, usage: &str| {
            format!(
                r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{content}],"usage":{usage}}}"#
            )
        };
        let openai_stream = |with_usage: bool| {
            let mut events = vec![
                chunk(r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#, "null"),
                chunk(r#"{"index":0,"delta":{"content":"usage: ünïcödé ✓"},"finish_reason":null}"#, "null"),
                chunk(r#"{"index":0,"delta":{},"finish_reason":"stop"}"#, "null"),
            ];
            if with_usage {
                events.push(chunk(
                    "",
                    r#"{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}"#,
                ));
            }
            let mut events: Vec<(Option<&str>, &str)> = events.iter().map(|e| (None, e.as_str())).collect();
            events.push((None, "[DONE]"));
            sse(&events, "\n")
        };
        let azure_stream = sse(
            &[
                (
                    None,
                    r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
                ),
                (
                    None,
                    r#"{"choices":[{"content_filter_results":{},"delta":{"content":"Hi","role":"assistant"},"finish_reason":null,"index":0}],"created":1,"id":"chatcmpl-2","model":"gpt-4o-mini-2024-07-18","object":"chat.completion.chunk","usage":null}"#,
                ),
                (
                    None,
                    r#"{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0}],"created":1,"id":"chatcmpl-2","model":"gpt-4o-mini-2024-07-18","object":"chat.completion.chunk","usage":null}"#,
                ),
                (
                    None,
                    r#"{"choices":[],"created":1,"id":"chatcmpl-2","model":"gpt-4o-mini-2024-07-18","object":"chat.completion.chunk","usage":{"completion_tokens":9,"prompt_tokens":14,"total_tokens":23}}"#,
                ),
                (None, "[DONE]"),
            ],
            "\n",
        );
        let responses_stream = |last: &str| {
            let usage = r#"{"input_tokens":21,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":32}"#;
            let created = r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","output":[],"usage":null}}"#;
            let in_progress = r#"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","object":"response","status":"in_progress","output":[],"usage":null}}"#;
            let delta = r#"{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"the usage of \"usage\""}"#;
            let done = r#"{"type":"response.output_text.done","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"text":"the usage of \"usage\""}"#;
            let completed = format!(
                r#"{{"type":"{last}","sequence_number":4,"response":{{"id":"resp_1","object":"response","status":"completed","output":[{{"type":"message","content":[{{"type":"output_text","text":"the usage of \"usage\""}}]}}],"usage":{usage}}}}}"#
            );
            sse(
                &[
                    (Some("response.created"), created),
                    (Some("response.in_progress"), in_progress),
                    (Some("response.output_text.delta"), delta),
                    (Some("response.output_text.done"), done),
                    (Some(last), &completed),
                ],
                "\n",
            )
        };
        let anthropic_stream = sse(
            &[
                (
                    Some("message_start"),
                    r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
                ),
                (
                    Some("content_block_start"),
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                ),
                (Some("ping"), r#"{"type": "ping"}"#),
                (
                    Some("content_block_delta"),
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"usage ✓"}}"#,
                ),
                (Some("content_block_stop"), r#"{"type":"content_block_stop","index":0}"#),
                (
                    Some("message_delta"),
                    r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
                ),
                (Some("message_stop"), r#"{"type":"message_stop"}"#),
            ],
            "\n",
        );
        let gemini_chunk = |text: &str, usage: &str| {
            format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":"{text}"}}],"role":"model"}},"index":0}}],"usageMetadata":{usage},"modelVersion":"gemini-2.5-flash","responseId":"r1"}}"#
            )
        };
        // Google repeats usageMetadata in every chunk; candidatesTokenCount grows, and is
        // absent from the first chunks of some models.
        let gemini_chunks = [
            gemini_chunk("Hel", r#"{"promptTokenCount":4,"totalTokenCount":4}"#),
            gemini_chunk("lo ✓", r#"{"promptTokenCount":4,"candidatesTokenCount":5,"totalTokenCount":9}"#),
            gemini_chunk(
                "!",
                r#"{"promptTokenCount":4,"candidatesTokenCount":9,"totalTokenCount":13,"promptTokensDetails":[{"modality":"TEXT","tokenCount":4}]}"#,
            ),
        ];
        let gemini_sse = sse(&gemini_chunks.iter().map(|c| (None, c.as_str())).collect::<Vec<_>>(), "\r\n");
        let gemini_array = format!("[{}]", gemini_chunks.join(",\r\n"));
        let gemini_thinking = gemini_chunk(
            "ok",
            r#"{"promptTokenCount":10,"candidatesTokenCount":2,"thoughtsTokenCount":30,"totalTokenCount":42}"#,
        );
        let gemini_thinking_sse = sse(
            &[
                (None, &gemini_chunk("o", r#"{"promptTokenCount":10,"thoughtsTokenCount":30,"totalTokenCount":40}"#)),
                (None, &gemini_thinking),
            ],
            "\r\n",
        );

        vec![
            // OpenAI and the OpenAI-compatible providers.
            row(
                "openai chat json",
                Api::OpenAi,
                JSON,
                r#"{"id":"x","object":"chat.completion","choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
                both(3, 5),
            ),
            row("openai chat sse with include_usage", Api::OpenAi, SSE, &openai_stream(true), both(12, 7)),
            row("openai chat sse without include_usage", Api::OpenAi, SSE, &openai_stream(false), (None, None)),
            row(
                "openai completions json",
                Api::OpenAi,
                JSON,
                r#"{"id":"cmpl-1","object":"text_completion","choices":[{"text":"hi"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#,
                both(2, 1),
            ),
            row(
                "openai embeddings json",
                Api::OpenAi,
                JSON,
                r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#,
                (Some(8), None),
            ),
            row(
                "openai responses json",
                Api::OpenAi,
                JSON,
                r#"{"id":"resp_1","object":"response","status":"completed","output":[],"usage":{"input_tokens":2,"input_tokens_details":{"cached_tokens":0},"output_tokens":4,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":6}}"#,
                both(2, 4),
            ),
            row("openai responses sse", Api::OpenAi, SSE, &responses_stream("response.completed"), both(21, 11)),
            row(
                "openai responses sse, incomplete",
                Api::OpenAi,
                SSE,
                &responses_stream("response.incomplete"),
                both(21, 11),
            ),
            // Azure OpenAI: OpenAI's shapes with content filter results.
            row(
                "azure chat json",
                Api::AzureOpenAi,
                JSON,
                r#"{"choices":[{"content_filter_results":{},"finish_reason":"stop","index":0,"message":{"content":"Hi","role":"assistant"}}],"id":"chatcmpl-2","model":"gpt-4o-mini-2024-07-18","object":"chat.completion","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}],"usage":{"completion_tokens":9,"prompt_tokens":14,"total_tokens":23}}"#,
                both(14, 9),
            ),
            row("azure chat sse", Api::AzureOpenAi, SSE, &azure_stream, both(14, 9)),
            row(
                "azure embeddings json",
                Api::AzureOpenAi,
                JSON,
                r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":6,"total_tokens":6}}"#,
                (Some(6), None),
            ),
            row("azure responses sse", Api::AzureOpenAi, SSE, &responses_stream("response.completed"), both(21, 11)),
            // Anthropic.
            row(
                "anthropic messages json",
                Api::Anthropic,
                JSON,
                r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"usage"}],"usage":{"input_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":20}}"#,
                both(10, 20),
            ),
            row("anthropic messages sse", Api::Anthropic, SSE, &anthropic_stream, both(25, 15)),
            // Gemini: whole, SSE (`alt=sse`, CRLF), and the streamed JSON array.
            row(
                "gemini generateContent json",
                Api::Gemini,
                JSON,
                r#"{"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2,"totalTokenCount":3}}"#,
                both(1, 2),
            ),
            row("gemini streamGenerateContent sse", Api::Gemini, "text/event-stream", &gemini_sse, both(4, 9)),
            row(
                "gemini streamGenerateContent json array",
                Api::Gemini,
                "application/json; charset=UTF-8",
                &gemini_array,
                both(4, 9),
            ),
            // Thinking models bill their thoughts as output (totalTokenCount includes them).
            row("gemini thinking json", Api::Gemini, JSON, &gemini_thinking, both(10, 32)),
            row("gemini thinking sse", Api::Gemini, "text/event-stream", &gemini_thinking_sse, both(10, 32)),
            row("gemini embedContent json", Api::Gemini, JSON, r#"{"embedding":{"values":[0.1,0.2]}}"#, (None, None)),
        ]
    }

    #[test]
    fn usage_for_every_provider_and_mode_whatever_the_chunking() {
        for row in table() {
            for chunks in every_chunking(row.body.as_bytes()) {
                let mut tap = UsageTap::new(row.api, Some(row.content_type));
                for chunk in &chunks {
                    tap.feed(chunk);
                }
                let usage = tap.finish();
                let lengths: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
                assert_eq!(
                    (usage.input_tokens, usage.output_tokens),
                    row.expected,
                    "{}: chunks of {:?}",
                    row.name,
                    if lengths.len() > 2 { vec![1] } else { lengths }
                );
            }
        }
    }

    fn frame(event_type: &str, payload: &[u8]) -> Vec<u8> {
        use aws_smithy_types::event_stream::{Header, HeaderValue};
        let message = Message::new_from_parts(
            vec![
                Header::new(":event-type", HeaderValue::String(event_type.to_owned().into())),
                Header::new(":content-type", HeaderValue::String("application/json".into())),
                Header::new(":message-type", HeaderValue::String("event".into())),
            ],
            payload.to_vec(),
        );
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
        out
    }

    fn chunk(inner: &serde_json::Value) -> Vec<u8> {
        let bytes = base64::engine::general_purpose::STANDARD.encode(inner.to_string());
        frame("chunk", serde_json::json!({ "bytes": bytes, "p": "abcd" }).to_string().as_bytes())
    }

    #[test]
    fn bedrock_usage_from_json_and_event_streams_split_anywhere() {
        let converse_stream: Vec<u8> = [
            frame("messageStart", br#"{"role":"assistant","p":"abc"}"#),
            frame("contentBlockDelta", br#"{"contentBlockIndex":0,"delta":{"text":"usage inputTokens"},"p":"a"}"#),
            frame("messageStop", br#"{"stopReason":"end_turn","p":"ab"}"#),
            frame(
                "metadata",
                br#"{"usage":{"inputTokens":11,"outputTokens":4,"totalTokens":15},"metrics":{"latencyMs":9},"p":"x"}"#,
            ),
        ]
        .concat();
        let invoke_stream: Vec<u8> = [
            chunk(&serde_json::json!({"type":"message_start","message":{"usage":{"input_tokens":30,"output_tokens":1}}})),
            chunk(&serde_json::json!({"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}})),
            chunk(&serde_json::json!({"type":"message_delta","usage":{"output_tokens":6}})),
            chunk(&serde_json::json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":31,"outputTokenCount":7,"invocationLatency":5,"firstByteLatency":2}})),
        ]
        .concat();
        // Without the invocation metrics, the model's own events still count.
        let invoke_without_metrics: Vec<u8> = [
            chunk(
                &serde_json::json!({"type":"message_start","message":{"usage":{"input_tokens":30,"output_tokens":1}}}),
            ),
            chunk(&serde_json::json!({"type":"message_delta","usage":{"output_tokens":6}})),
        ]
        .concat();
        let ct = "application/vnd.amazon.eventstream";
        for (body, (input, output)) in
            [(&converse_stream, (11, 4)), (&invoke_stream, (31, 7)), (&invoke_without_metrics, (30, 6))]
        {
            for piece in [1, 2, 5, 11, 12, 13, 64, 100_000] {
                let mut tap = UsageTap::new(Api::Bedrock, Some(ct));
                for part in body.chunks(piece) {
                    tap.feed(part);
                }
                let usage = tap.finish();
                assert_eq!((usage.input_tokens, usage.output_tokens), (Some(input), Some(output)), "piece {piece}");
            }
        }
        // A corrupt frame stops the reading; it never panics.
        let mut corrupt = converse_stream.clone();
        corrupt[20] ^= 0xff;
        let mut tap = UsageTap::new(Api::Bedrock, Some(ct));
        tap.feed(&corrupt);
        assert_eq!(tap.finish(), Usage::default());
        for (body, (input, output)) in [
            (
                r#"{"output":{},"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":3,"totalTokens":8}}"#,
                (5, 3),
            ),
            (r#"{"type":"message","usage":{"input_tokens":10,"output_tokens":20}}"#, (10, 20)),
            (r#"{"generation":"x","prompt_token_count":8,"generation_token_count":2}"#, (8, 2)),
        ] {
            let usage = tap_in_pieces(Api::Bedrock, "application/json", body, 3);
            assert_eq!((usage.input_tokens, usage.output_tokens), (Some(input), Some(output)), "{body}");
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
