//! Anthropic's Messages API: messages (whole and streamed), token counting, models.

use std::iter;

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::errors;
use crate::reply::{fixed_error_event, sse_event, Reply, EVENT_STREAM};
use crate::routes::AnthropicEndpoint;
use crate::text::{content_text, count_tokens, flag, number, reply_words, stream_pieces};

/// The models `GET /v1/models` lists: (id, display name, release date).
const MODELS: &[(&str, &str, &str)] = &[
    ("claude-sonnet-5", "Claude Sonnet 5", "2026-05-01T00:00:00Z"),
    ("claude-opus-5", "Claude Opus 5", "2026-05-01T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
];

/// Serves an Anthropic endpoint (key and `anthropic-version` already checked).
pub(crate) fn serve(endpoint: &AnthropicEndpoint, body: &[u8], id: u64) -> Reply {
    let reply = match endpoint {
        AnthropicEndpoint::ListModels => list_models(),
        AnthropicEndpoint::Messages => match parse(body) {
            Ok(request) => messages(&request, id),
            Err(reply) => reply,
        },
        AnthropicEndpoint::CountTokens => match parse(body) {
            Ok(request) => count(&request),
            Err(reply) => reply,
        },
    };
    reply.with_header("request-id", format!("req_mock{id:08}"))
}

fn invalid(message: &str) -> Reply {
    errors::anthropic(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

fn parse(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(request)) => Ok(request),
        _ => Err(invalid(
            "There was an error parsing the body of your request. Please check that it is \
             valid JSON.",
        )),
    }
}

/// The model and the messages, which every request needs.
fn model_and_messages(request: &Map<String, Value>) -> Result<(String, &Vec<Value>), Reply> {
    let model = match request.get("model") {
        Some(Value::String(model)) => model.clone(),
        None | Some(Value::Null) => return Err(invalid("model: Field required")),
        Some(_) => return Err(invalid("model: Input should be a valid string")),
    };
    match request.get("messages") {
        Some(Value::Array(messages)) => Ok((model, messages)),
        None | Some(Value::Null) => Err(invalid("messages: Field required")),
        Some(_) => Err(invalid("messages: Input should be a valid list")),
    }
}

/// Input tokens: the words of the system prompt and of every message.
fn input_tokens(request: &Map<String, Value>, messages: &[Value]) -> u64 {
    let system = request.get("system").map(content_text).unwrap_or_default();
    count_tokens(&system)
        + messages
            .iter()
            .map(|message| count_tokens(&content_text(message.get("content").unwrap_or(&Value::Null))))
            .sum::<u64>()
}

fn messages(request: &Map<String, Value>, id: u64) -> Reply {
    let (model, messages) = match model_and_messages(request) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let Some(max_tokens) = number(request, &["max_tokens"]) else {
        return invalid("max_tokens: Field required");
    };
    let input_tokens = input_tokens(request, messages);
    let prompt = messages
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        .map(|message| content_text(message.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let (words, cut) = reply_words(&prompt, Some(max_tokens));
    let stop_reason = if cut { "max_tokens" } else { "end_turn" };
    let output_tokens = words.len() as u64;
    let tokens = input_tokens + output_tokens;
    let id = format!("msg_mock{id:08}");
    let message = |content: Value, stop_reason: Value, output_tokens: u64| {
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": output_tokens,
                "service_tier": "standard"
            }
        })
    };

    if !flag(request, &["stream"]) {
        return Reply::json(
            StatusCode::OK,
            &message(json!([{"type": "text", "text": words.join(" ")}]), json!(stop_reason), output_tokens),
        )
        .with_tokens(tokens);
    }
    // Like the real API, `message_start` carries a provisional output count; the final one
    // is in `message_delta`.
    let start = message(json!([]), Value::Null, output_tokens.min(1));
    let head = [
        ("message_start", json!({"message": start})),
        ("content_block_start", json!({"index": 0, "content_block": {"type": "text", "text": ""}})),
        ("ping", json!({})),
    ];
    let deltas = stream_pieces(&words)
        .into_iter()
        .map(|piece| ("content_block_delta", json!({"index": 0, "delta": {"type": "text_delta", "text": piece}})));
    let tail = iter::once_with(|| ("content_block_stop", json!({"index": 0})))
        .chain(iter::once_with(move || {
            (
                "message_delta",
                json!({
                    "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": {"output_tokens": output_tokens}
                }),
            )
        }))
        .chain(iter::once_with(|| ("message_stop", json!({}))));
    let events = head.into_iter().chain(deltas).chain(tail).map(|(name, mut event)| {
        event["type"] = json!(name);
        sse_event(name, &event)
    });
    Reply::stream(EVENT_STREAM, Box::new(events), fixed_error_event(errors::anthropic_stream_error()))
        .with_tokens(tokens)
}

fn count(request: &Map<String, Value>) -> Reply {
    match model_and_messages(request) {
        Ok((_, messages)) => Reply::json(StatusCode::OK, &json!({"input_tokens": input_tokens(request, messages)})),
        Err(reply) => reply,
    }
}

fn list_models() -> Reply {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, display_name, created_at)| {
            json!({"type": "model", "id": id, "display_name": display_name, "created_at": created_at})
        })
        .collect();
    Reply::json(
        StatusCode::OK,
        &json!({
            "data": data,
            "has_more": false,
            "first_id": MODELS.first().map(|model| model.0),
            "last_id": MODELS.last().map(|model| model.0)
        }),
    )
}
