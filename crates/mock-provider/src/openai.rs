//! The OpenAI API (also serving the OpenAI-compatible providers and Azure OpenAI's
//! deployments): chat completions, legacy completions, embeddings, responses, models.

use std::iter;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::errors;
use crate::reply::{fixed_error_event, sse_data, sse_event, unix_now, Events, Reply, EVENT_STREAM};
use crate::routes::OpenAiEndpoint;
use crate::text::{content_text, count_tokens, embedding, embedding_base64, flag, number, reply_words, stream_pieces};

/// Dimensions of an embedding when the request does not ask for a number.
const DEFAULT_EMBEDDING_DIMENSIONS: u64 = 8;
/// The most dimensions the mock hands out, to keep a bad request cheap.
const MAX_EMBEDDING_DIMENSIONS: u64 = 4096;
/// The models `GET /v1/models` lists.
const MODELS: &[&str] =
    &["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini", "text-embedding-3-small", "text-embedding-3-large"];

/// The models Azure OpenAI's `GET /openai/models` lists: (id, created_at, embeddings model).
const AZURE_MODELS: &[(&str, u64, bool)] = &[
    ("gpt-4o-2024-08-06", 1_722_902_400, false),
    ("gpt-4o-mini-2024-07-18", 1_721_260_800, false),
    ("gpt-4.1-2025-04-14", 1_744_588_800, false),
    ("text-embedding-3-small", 1_705_968_000, true),
];

/// Serves an OpenAI-shaped endpoint. `deployment` is Azure's deployment name, which stands
/// for the model.
pub(crate) fn serve(endpoint: &OpenAiEndpoint, body: &[u8], deployment: Option<&str>, id: u64) -> Reply {
    let reply = match endpoint {
        OpenAiEndpoint::ListModels => list_models(),
        OpenAiEndpoint::GetModel(model) => Reply::json(StatusCode::OK, &model_object(model)),
        OpenAiEndpoint::ChatCompletions
        | OpenAiEndpoint::Completions
        | OpenAiEndpoint::Embeddings
        | OpenAiEndpoint::Responses => match request_with_model(body, deployment) {
            Err(reply) => reply,
            Ok((request, model)) => match endpoint {
                OpenAiEndpoint::ChatCompletions => chat_completions(&request, model, id),
                OpenAiEndpoint::Completions => completions(&request, model, id),
                OpenAiEndpoint::Embeddings => embeddings(&request, model),
                _ => responses(&request, model, id),
            },
        },
    };
    reply.with_header("x-request-id", format!("req_mock{id:08}"))
}

/// Parses the JSON body and finds its model (Azure: the deployment).
fn request_with_model(body: &[u8], deployment: Option<&str>) -> Result<(Map<String, Value>, String), Reply> {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return Err(errors::openai_invalid_json());
    };
    let model = match (deployment, request.get("model")) {
        (Some(deployment), _) => deployment.to_owned(),
        (None, Some(Value::String(model))) => model.clone(),
        (None, None | Some(Value::Null)) => {
            return Err(errors::openai(
                StatusCode::BAD_REQUEST,
                "you must provide a model parameter",
                "invalid_request_error",
                None,
                None,
            ))
        }
        (None, Some(_)) => return Err(errors::openai_invalid_type("model", "a string")),
    };
    Ok((request, model))
}

fn usage(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// The fields every chunk of one stream shares.
struct ChunkTemplate {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    include_usage: bool,
}

impl ChunkTemplate {
    /// One `data:` event. With `include_usage`, OpenAI puts `"usage": null` in every chunk
    /// but the last.
    fn chunk(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        sse_data(&chunk)
    }
}

/// A stream of chunks: the first from `first`, one per piece, a final one with the finish
/// reason, the usage chunk when asked for, then `[DONE]`.
fn chunk_stream(
    template: ChunkTemplate,
    first: Option<Value>,
    pieces: Vec<String>,
    piece_choice: fn(String) -> Value,
    last: Value,
    usage: Value,
) -> Events {
    let template = Arc::new(template);
    let first = first.into_iter().map({
        let template = Arc::clone(&template);
        move |choice| template.chunk(json!([choice]), None)
    });
    let pieces = pieces.into_iter().map({
        let template = Arc::clone(&template);
        move |piece| template.chunk(json!([piece_choice(piece)]), None)
    });
    let last = iter::once_with({
        let template = Arc::clone(&template);
        move || template.chunk(json!([last]), None)
    });
    let usage =
        template.include_usage.then_some(usage).into_iter().map(move |usage| template.chunk(json!([]), Some(usage)));
    let done = iter::once_with(|| Bytes::from_static(b"data: [DONE]\n\n"));
    Box::new(first.chain(pieces).chain(last).chain(usage).chain(done))
}

fn chat_completions(request: &Map<String, Value>, model: String, id: u64) -> Reply {
    let messages = match request.get("messages") {
        None | Some(Value::Null) => return errors::openai_missing("messages"),
        Some(Value::Array(messages)) => messages,
        Some(_) => return errors::openai_invalid_type("messages", "an array"),
    };
    let text_of = |message: &Value| content_text(message.get("content").unwrap_or(&Value::Null));
    let prompt_tokens: u64 = messages.iter().map(|message| count_tokens(&text_of(message))).sum();
    let prompt = messages
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        .map(text_of)
        .unwrap_or_default();
    let max_tokens = number(request, &["max_completion_tokens", "max_tokens"]);
    let (words, cut) = reply_words(&prompt, max_tokens);
    let finish_reason = if cut { "length" } else { "stop" };
    let tokens = prompt_tokens + words.len() as u64;
    let usage = usage(prompt_tokens, words.len() as u64);
    let id = format!("chatcmpl-mock{id:08}");
    let created = unix_now();

    if !flag(request, &["stream"]) {
        return Reply::json(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "service_tier": "default",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": words.join(" "),
                        "refusal": null,
                        "annotations": []
                    },
                    "logprobs": null,
                    "finish_reason": finish_reason
                }],
                "usage": usage
            }),
        )
        .with_tokens(tokens);
    }
    let template = ChunkTemplate {
        id,
        object: "chat.completion.chunk",
        created,
        model,
        include_usage: flag(request, &["stream_options", "include_usage"]),
    };
    let first = json!({
        "index": 0,
        "delta": {"role": "assistant", "content": "", "refusal": null},
        "logprobs": null,
        "finish_reason": null
    });
    let last = json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason});
    let events = chunk_stream(
        template,
        Some(first),
        stream_pieces(&words),
        |piece| json!({"index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}),
        last,
        usage,
    );
    Reply::stream(EVENT_STREAM, events, fixed_error_event(errors::openai_stream_error())).with_tokens(tokens)
}

fn completions(request: &Map<String, Value>, model: String, id: u64) -> Reply {
    let prompt = match request.get("prompt") {
        None | Some(Value::Null) => String::new(),
        Some(prompt @ (Value::String(_) | Value::Array(_))) => content_text(prompt),
        Some(_) => return errors::openai_invalid_type("prompt", "a string or an array"),
    };
    let (words, cut) = reply_words(&prompt, number(request, &["max_tokens"]));
    let finish_reason = if cut { "length" } else { "stop" };
    let tokens = count_tokens(&prompt) + words.len() as u64;
    let usage = usage(count_tokens(&prompt), words.len() as u64);
    let id = format!("cmpl-mock{id:08}");
    let created = unix_now();

    if !flag(request, &["stream"]) {
        return Reply::json(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [{
                    "text": words.join(" "),
                    "index": 0,
                    "logprobs": null,
                    "finish_reason": finish_reason
                }],
                "usage": usage
            }),
        )
        .with_tokens(tokens);
    }
    let template = ChunkTemplate {
        id,
        object: "text_completion",
        created,
        model,
        include_usage: flag(request, &["stream_options", "include_usage"]),
    };
    let last = json!({"text": "", "index": 0, "logprobs": null, "finish_reason": finish_reason});
    let events = chunk_stream(
        template,
        None,
        stream_pieces(&words),
        |piece| json!({"text": piece, "index": 0, "logprobs": null, "finish_reason": null}),
        last,
        usage,
    );
    Reply::stream(EVENT_STREAM, events, fixed_error_event(errors::openai_stream_error())).with_tokens(tokens)
}

fn embeddings(request: &Map<String, Value>, model: String) -> Reply {
    // Each input is a text, or a list of token ids (one token each).
    let inputs: Vec<(String, u64)> = match request.get("input") {
        None | Some(Value::Null) => return errors::openai_missing("input"),
        Some(Value::String(text)) => vec![(text.clone(), count_tokens(text))],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![(Value::Array(items.clone()).to_string(), items.len() as u64)]
        }
        Some(Value::Array(items)) => {
            let mut inputs = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(text) => inputs.push((text.clone(), count_tokens(text))),
                    Value::Array(tokens) => {
                        inputs.push((item.to_string(), tokens.len() as u64));
                    }
                    _ => {
                        return errors::openai_invalid_type(
                            "input",
                            "a string, an array of strings or an array of token arrays",
                        )
                    }
                }
            }
            inputs
        }
        Some(_) => return errors::openai_invalid_type("input", "a string or an array"),
    };
    let dimensions =
        number(request, &["dimensions"]).unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS).clamp(1, MAX_EMBEDDING_DIMENSIONS);
    let dimensions = usize::try_from(dimensions).unwrap_or(1);
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, (text, _))| {
            let values = embedding(text, dimensions);
            let encoded = if base64 { Value::String(embedding_base64(&values)) } else { json!(values) };
            json!({"object": "embedding", "index": index, "embedding": encoded})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|(_, tokens)| tokens).sum();
    Reply::json(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
        }),
    )
    .with_tokens(tokens)
}

/// The text of a Responses API `input`: a string, or items with a `content`.
fn response_inputs(input: &Value) -> Vec<(Option<&str>, String)> {
    match input {
        Value::String(text) => vec![(Some("user"), text.clone())],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let role = item.get("role").and_then(Value::as_str);
                let text = match item.get("content") {
                    Some(content) => content_text(content),
                    None => item.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
                };
                (role, text)
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn responses(request: &Map<String, Value>, model: String, id: u64) -> Reply {
    let inputs = match request.get("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(input @ (Value::String(_) | Value::Array(_))) => response_inputs(input),
        Some(_) => return errors::openai_invalid_type("input", "a string or an array"),
    };
    let instructions = request.get("instructions").and_then(Value::as_str).unwrap_or_default();
    let input_tokens = count_tokens(instructions) + inputs.iter().map(|(_, text)| count_tokens(text)).sum::<u64>();
    let prompt =
        inputs.iter().rev().find(|(role, _)| *role == Some("user")).map(|(_, text)| text.clone()).unwrap_or_default();
    let (words, cut) = reply_words(&prompt, number(request, &["max_output_tokens"]));
    let output_tokens = words.len() as u64;
    let tokens = input_tokens + output_tokens;
    let text = words.join(" ");
    let response_id = format!("resp_mock{id:08}");
    let item_id = format!("msg_mock{id:08}");
    let created_at = unix_now();
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens
    });
    let output_part = json!({"type": "output_text", "text": text, "annotations": []});
    let output_item = |status: &str, content: Value| {
        json!({
            "type": "message",
            "id": item_id,
            "status": status,
            "role": "assistant",
            "content": content
        })
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "status": status,
            "error": null,
            "incomplete_details": if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
            "instructions": request.get("instructions").cloned().unwrap_or(Value::Null),
            "model": model,
            "output": output,
            "parallel_tool_calls": true,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage
        })
    };
    let final_status = if cut { "incomplete" } else { "completed" };
    let done_item = output_item("completed", json!([output_part]));
    let done_response = response(final_status, json!([done_item]), usage);

    if !flag(request, &["stream"]) {
        return Reply::json(StatusCode::OK, &done_response).with_tokens(tokens);
    }
    let started = response("in_progress", json!([]), Value::Null);
    let located = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
    let with = |mut base: Value, extra: Value| {
        if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
            base.extend(extra);
        }
        base
    };
    let head: Vec<(&'static str, Value)> = vec![
        ("response.created", json!({"response": started.clone()})),
        ("response.in_progress", json!({"response": started})),
        ("response.output_item.added", json!({"output_index": 0, "item": output_item("in_progress", json!([]))})),
        (
            "response.content_part.added",
            with(located.clone(), json!({"part": {"type": "output_text", "text": "", "annotations": []}})),
        ),
    ];
    let tail: Vec<(&'static str, Value)> = vec![
        ("response.output_text.done", with(located.clone(), json!({"text": text}))),
        ("response.content_part.done", with(located.clone(), json!({"part": output_part}))),
        ("response.output_item.done", json!({"output_index": 0, "item": done_item})),
        (if cut { "response.incomplete" } else { "response.completed" }, json!({"response": done_response})),
    ];
    let deltas = stream_pieces(&words).into_iter().map(move |piece| {
        let mut delta = located.clone();
        delta["delta"] = Value::String(piece);
        ("response.output_text.delta", delta)
    });
    let events = head.into_iter().chain(deltas).chain(tail).enumerate().map(|(sequence_number, (name, mut event))| {
        event["type"] = json!(name);
        event["sequence_number"] = json!(sequence_number);
        sse_event(name, &event)
    });
    let error_event = sse_event(
        "error",
        &json!({
            "type": "error",
            "code": "server_error",
            "message": "The server had an error while processing your request. Sorry about that!",
            "param": null
        }),
    );
    Reply::stream(EVENT_STREAM, Box::new(events), fixed_error_event(error_event)).with_tokens(tokens)
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 1_715_367_049, "owned_by": "openai"})
}

fn list_models() -> Reply {
    let data: Vec<Value> = MODELS.iter().map(|id| model_object(id)).collect();
    Reply::json(StatusCode::OK, &json!({"object": "list", "data": data}))
}

fn azure_model_object((id, created_at, embeddings): &(&str, u64, bool)) -> Value {
    json!({
        "status": "succeeded",
        "capabilities": {
            "fine_tune": false,
            "inference": true,
            "completion": false,
            "chat_completion": !embeddings,
            "embeddings": embeddings
        },
        "lifecycle_status": "generally-available",
        "deprecation": {"inference": 1_830_297_600},
        "id": id,
        "created_at": created_at,
        "object": "model"
    })
}

/// Azure OpenAI's resource-level model listing: `GET /openai/models` and
/// `GET /openai/models/{id}` (other endpoints need a deployment and get Azure's 404).
pub(crate) fn serve_azure_models(endpoint: &OpenAiEndpoint, id: u64) -> Reply {
    let reply = match endpoint {
        OpenAiEndpoint::ListModels => {
            let data: Vec<Value> = AZURE_MODELS.iter().map(azure_model_object).collect();
            Reply::json(StatusCode::OK, &json!({"data": data, "object": "list"}))
        }
        OpenAiEndpoint::GetModel(model) => match AZURE_MODELS.iter().find(|(known, _, _)| known == model) {
            Some(found) => Reply::json(StatusCode::OK, &azure_model_object(found)),
            None => errors::azure(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("The specified model '{model}' does not exist in this resource."),
            ),
        },
        _ => errors::azure(StatusCode::NOT_FOUND, "404", "Resource not found"),
    };
    reply.with_header("x-request-id", format!("req_mock{id:08}"))
}
