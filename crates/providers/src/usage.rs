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
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) {
            self.absorb(&value);
        }
    }

    /// Take usage from one JSON document (a response, an SSE event or a Gemini chunk).
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
                    self.usage.output_tokens = number(usage, "candidatesTokenCount").or(self.usage.output_tokens);
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
