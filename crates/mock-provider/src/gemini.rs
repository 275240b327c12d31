//! Google's Gemini API: generate (whole, SSE, streamed JSON array), embed, count, models.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::errors;
use crate::reply::{fixed_error_event, sse_data, Reply};
use crate::routes::GeminiEndpoint;
use crate::text::{content_text, count_tokens, embedding, reply_words, stream_pieces};

/// Dimensions of an embedding when the request does not ask for a number.
const DEFAULT_EMBEDDING_DIMENSIONS: u64 = 8;
/// The most dimensions the mock hands out, to keep a bad request cheap.
const MAX_EMBEDDING_DIMENSIONS: u64 = 4096;
/// The models `GET /v1beta/models` lists: (name, display name, methods).
const MODELS: &[(&str, &str, &[&str])] = &[
    ("gemini-2.5-pro", "Gemini 2.5 Pro", &["generateContent", "streamGenerateContent", "countTokens"]),
    ("gemini-2.5-flash", "Gemini 2.5 Flash", &["generateContent", "streamGenerateContent", "countTokens"]),
    ("text-embedding-004", "Text Embedding 004", &["embedContent", "batchEmbedContents"]),
];

/// Serves a Gemini endpoint (key already checked). `sse` is the `alt=sse` query flag.
pub(crate) fn serve(endpoint: &GeminiEndpoint, body: &[u8], sse: bool, id: u64) -> Reply {
    match endpoint {
        GeminiEndpoint::ListModels => {
            let models: Vec<Value> = MODELS.iter().map(model_object).collect();
            Reply::json(StatusCode::OK, &json!({"models": models}))
        }
        GeminiEndpoint::GetModel(name) => match MODELS.iter().find(|(model, _, _)| model == name) {
            Some(model) => Reply::json(StatusCode::OK, &model_object(model)),
            None => errors::gemini(
                StatusCode::NOT_FOUND,
                &format!("models/{name} is not found for API version v1beta."),
                "NOT_FOUND",
            ),
        },
        GeminiEndpoint::GenerateContent(model)
        | GeminiEndpoint::StreamGenerateContent(model)
        | GeminiEndpoint::EmbedContent(model)
        | GeminiEndpoint::BatchEmbedContents(model)
        | GeminiEndpoint::CountTokens(model) => {
            let request = match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(request)) => request,
                _ => return invalid("Invalid JSON payload received. The request body must be a JSON object."),
            };
            match endpoint {
                GeminiEndpoint::GenerateContent(_) => generate(&request, model, None, id),
                GeminiEndpoint::StreamGenerateContent(_) => generate(&request, model, Some(sse), id),
                GeminiEndpoint::EmbedContent(_) => embed(&request),
                GeminiEndpoint::BatchEmbedContents(_) => batch_embed(&request),
                _ => count(&request),
            }
        }
    }
}

fn invalid(message: &str) -> Reply {
    errors::gemini(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT")
}

fn model_object((name, display_name, methods): &(&str, &str, &[&str])) -> Value {
    json!({
        "name": format!("models/{name}"),
        "version": "001",
        "displayName": display_name,
        "description": "byok-mock-provider model",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": methods
    })
}

/// The words of every content's parts, plus the system instruction.
fn prompt_tokens(request: &Map<String, Value>, contents: &[Value]) -> u64 {
    let system = request
        .get("systemInstruction")
        .or_else(|| request.get("system_instruction"))
        .and_then(|instruction| instruction.get("parts"))
        .map(content_text)
        .unwrap_or_default();
    count_tokens(&system) + contents.iter().map(|content| count_tokens(&parts_text(content))).sum::<u64>()
}

fn parts_text(content: &Value) -> String {
    content.get("parts").map(content_text).unwrap_or_default()
}

fn contents(request: &Map<String, Value>) -> Result<&Vec<Value>, Reply> {
    match request.get("contents") {
        Some(Value::Array(contents)) => Ok(contents),
        _ => Err(invalid("* GenerateContentRequest.contents: contents is not specified\n")),
    }
}

/// One streamed or whole response. The `last` chunk carries the finish reason and the
/// whole usage; as Google streams, every earlier chunk carries `usageMetadata` too, with
/// the candidates' tokens so far.
struct Candidate {
    model: String,
    response_id: String,
    finish_reason: &'static str,
    prompt_tokens: u64,
    usage: Value,
}

impl Candidate {
    fn response(&self, text: String, tokens_so_far: u64, last: bool) -> Value {
        let mut candidate = json!({
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0
        });
        let mut response = json!({"modelVersion": self.model, "responseId": self.response_id});
        if last {
            candidate["finishReason"] = json!(self.finish_reason);
            response["usageMetadata"] = self.usage.clone();
        } else {
            response["usageMetadata"] = json!({
                "promptTokenCount": self.prompt_tokens,
                "candidatesTokenCount": tokens_so_far,
                "totalTokenCount": self.prompt_tokens + tokens_so_far
            });
        }
        response["candidates"] = json!([candidate]);
        response
    }
}

/// `generateContent` (`stream: None`) or `streamGenerateContent` (`Some(sse)`).
fn generate(request: &Map<String, Value>, model: &str, stream: Option<bool>, id: u64) -> Reply {
    let contents = match contents(request) {
        Ok(contents) => contents,
        Err(reply) => return reply,
    };
    let prompt_token_count = prompt_tokens(request, contents);
    // A content without a role is the user's.
    let prompt = contents
        .iter()
        .rev()
        .find(|content| matches!(content.get("role").and_then(Value::as_str), None | Some("user")))
        .map(parts_text)
        .unwrap_or_default();
    let max_tokens =
        request.get("generationConfig").and_then(|config| config.get("maxOutputTokens")).and_then(Value::as_u64);
    let (words, cut) = reply_words(&prompt, max_tokens);
    let candidates_token_count = words.len() as u64;
    let tokens = prompt_token_count + candidates_token_count;
    let candidate = Candidate {
        model: model.to_owned(),
        response_id: format!("mock{id:08}"),
        finish_reason: if cut { "MAX_TOKENS" } else { "STOP" },
        prompt_tokens: prompt_token_count,
        usage: json!({
            "promptTokenCount": prompt_token_count,
            "candidatesTokenCount": candidates_token_count,
            "totalTokenCount": prompt_token_count + candidates_token_count,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_token_count}]
        }),
    };
    let Some(sse) = stream else {
        return Reply::json(StatusCode::OK, &candidate.response(words.join(" "), candidates_token_count, true))
            .with_tokens(tokens);
    };
    let mut pieces = stream_pieces(&words);
    if pieces.is_empty() {
        pieces.push(String::new());
    }
    let count = pieces.len();
    let candidate = Arc::new(candidate);
    let chunks = pieces
        .into_iter()
        .enumerate()
        // One word per piece: the candidates' tokens so far are the pieces so far.
        .map(move |(index, piece)| (index, candidate.response(piece, index as u64 + 1, index + 1 == count)));
    if sse {
        let events = chunks.map(|(_, chunk)| sse_data(&chunk));
        Reply::stream(
            "text/event-stream",
            Box::new(events),
            fixed_error_event(sse_data(&errors::gemini_stream_error())),
        )
        .with_tokens(tokens)
    } else {
        // A JSON array written element by element, as Google streams it.
        let events = chunks
            .map(move |(index, chunk)| {
                let opening = if index == 0 { "[" } else { ",\r\n" };
                Bytes::from(format!("{opening}{chunk}"))
            })
            .chain(std::iter::once_with(|| Bytes::from_static(b"]")));
        Reply::stream(
            "application/json; charset=UTF-8",
            Box::new(events),
            Box::new(|written| {
                let opening = if written == 0 { "[" } else { ",\r\n" };
                Bytes::from(format!("{opening}{}]", errors::gemini_stream_error()))
            }),
        )
        .with_tokens(tokens)
    }
}

fn dimensions(request: &Value) -> usize {
    let dimensions = request
        .get("outputDimensionality")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS)
        .clamp(1, MAX_EMBEDDING_DIMENSIONS);
    usize::try_from(dimensions).unwrap_or(1)
}

/// The embedding of one `EmbedContentRequest`.
fn embed_one(request: &Value) -> Result<Value, Reply> {
    let Some(content) = request.get("content") else {
        return Err(invalid("* EmbedContentRequest.content: content is not specified\n"));
    };
    Ok(json!({"values": embedding(&parts_text(content), dimensions(request))}))
}

fn embed(request: &Map<String, Value>) -> Reply {
    match embed_one(&Value::Object(request.clone())) {
        Ok(values) => Reply::json(StatusCode::OK, &json!({"embedding": values})),
        Err(reply) => reply,
    }
}

fn batch_embed(request: &Map<String, Value>) -> Reply {
    let Some(Value::Array(requests)) = request.get("requests") else {
        return invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n");
    };
    match requests.iter().map(embed_one).collect::<Result<Vec<_>, _>>() {
        Ok(embeddings) => Reply::json(StatusCode::OK, &json!({"embeddings": embeddings})),
        Err(reply) => reply,
    }
}

fn count(request: &Map<String, Value>) -> Reply {
    // Either `contents` or a whole `generateContentRequest`.
    let request = match request.get("generateContentRequest") {
        Some(Value::Object(inner)) => inner,
        _ => request,
    };
    match contents(request) {
        Ok(contents) => {
            let total = prompt_tokens(request, contents);
            Reply::json(
                StatusCode::OK,
                &json!({
                    "totalTokens": total,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]
                }),
            )
        }
        Err(reply) => reply,
    }
}
