//! Error responses in each provider's own shape.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::record::Provider;
use crate::reply::{sse_data, sse_event, Reply};

/// OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn openai(status: StatusCode, message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Reply {
    Reply::json(status, &openai_body(message, kind, param, code))
}

fn openai_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// OpenAI's 400 for a missing required body field.
pub(crate) fn openai_missing(param: &str) -> Reply {
    openai(
        StatusCode::BAD_REQUEST,
        &format!("Missing required parameter: '{param}'."),
        "invalid_request_error",
        Some(param),
        Some("missing_required_parameter"),
    )
}

/// OpenAI's 400 for a body field of the wrong type.
pub(crate) fn openai_invalid_type(param: &str, expected: &str) -> Reply {
    openai(
        StatusCode::BAD_REQUEST,
        &format!("Invalid type for '{param}': expected {expected}."),
        "invalid_request_error",
        Some(param),
        Some("invalid_type"),
    )
}

/// OpenAI's 400 for a body that is not JSON.
pub(crate) fn openai_invalid_json() -> Reply {
    openai(
        StatusCode::BAD_REQUEST,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't \
         using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was \
         sent was not valid JSON.)",
        "invalid_request_error",
        None,
        None,
    )
}

/// OpenAI's 404 for a path it does not serve.
pub(crate) fn openai_not_found(method: &str, path: &str) -> Reply {
    openai(StatusCode::NOT_FOUND, &format!("Invalid URL ({method} {path})"), "invalid_request_error", None, None)
}

/// Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.
pub(crate) fn anthropic(status: StatusCode, kind: &str, message: &str) -> Reply {
    Reply::json(status, &anthropic_body(kind, message))
}

fn anthropic_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Google's shape: `{"error": {"code", "message", "status"}}`.
pub(crate) fn gemini(status: StatusCode, message: &str, google_status: &str) -> Reply {
    Reply::json(status, &gemini_body(status, message, google_status))
}

fn gemini_body(status: StatusCode, message: &str, google_status: &str) -> Value {
    json!({"error": {"code": status.as_u16(), "message": message, "status": google_status}})
}

/// Google's 400 for a wrong API key, with the `ErrorInfo` detail Google adds.
pub(crate) fn gemini_invalid_key() -> Reply {
    Reply::json(
        StatusCode::BAD_REQUEST,
        &json!({"error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}
            }]
        }}),
    )
}

/// Azure's shape for gateway errors: `{"error": {"code": "401", "message"}}`.
pub(crate) fn azure(status: StatusCode, code: &str, message: &str) -> Reply {
    Reply::json(status, &json!({"error": {"code": code, "message": message}}))
}

/// A scripted error of `status` in `provider`'s shape.
pub(crate) fn scripted(provider: Provider, status: StatusCode) -> Reply {
    match provider {
        Provider::Bedrock => {
            let (kind, message) = crate::bedrock::error_kind(status);
            crate::bedrock::error(status, kind, message)
        }
        Provider::Anthropic => {
            let kind = anthropic_kind(status);
            anthropic(status, kind, anthropic_message(kind))
        }
        Provider::Gemini => {
            let google_status = google_status(status);
            gemini(status, google_message(google_status), google_status)
        }
        Provider::OpenAi | Provider::AzureOpenAi | Provider::Unknown => {
            let (message, kind, code) = openai_error(status);
            openai(status, message, kind, None, code)
        }
    }
}

fn openai_error(status: StatusCode) -> (&'static str, &'static str, Option<&'static str>) {
    match status.as_u16() {
        401 => ("Incorrect API key provided.", "invalid_request_error", Some("invalid_api_key")),
        403 => ("You are not allowed to sample from this model", "invalid_request_error", None),
        404 => (
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            Some("model_not_found"),
        ),
        429 => ("Rate limit reached for requests. Please try again later.", "requests", Some("rate_limit_exceeded")),
        503 | 529 => ("The engine is currently overloaded, please try again later.", "server_error", None),
        500..=599 => ("The server had an error while processing your request. Sorry about that!", "server_error", None),
        _ => ("byok-mock-provider: scripted error", "invalid_request_error", None),
    }
}

fn anthropic_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

fn anthropic_message(kind: &str) -> &'static str {
    match kind {
        "authentication_error" => "invalid x-api-key",
        "permission_error" => "Your API key does not have permission to use the specified resource.",
        "not_found_error" => "The requested resource could not be found.",
        "rate_limit_error" => "Number of requests has exceeded your rate limit.",
        "overloaded_error" => "Overloaded",
        "api_error" | "timeout_error" => "Internal server error",
        _ => "byok-mock-provider: scripted error",
    }
}

fn google_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

fn google_message(google_status: &str) -> &'static str {
    match google_status {
        "RESOURCE_EXHAUSTED" => "Resource has been exhausted (e.g. check quota).",
        "UNAVAILABLE" => "The model is overloaded. Please try again later.",
        "INTERNAL" => "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        _ => "byok-mock-provider: scripted error",
    }
}

/// OpenAI's mid-stream error: a `data:` event holding an error object (no `[DONE]` follows).
pub(crate) fn openai_stream_error() -> Bytes {
    let (message, kind, code) = openai_error(StatusCode::INTERNAL_SERVER_ERROR);
    sse_data(&openai_body(message, kind, None, code))
}

/// Anthropic's mid-stream error: `event: error` with an `overloaded_error`.
pub(crate) fn anthropic_stream_error() -> Bytes {
    sse_event("error", &anthropic_body("overloaded_error", "Overloaded"))
}

/// Gemini's mid-stream error as an SSE event.
pub(crate) fn gemini_stream_error() -> Value {
    gemini_body(StatusCode::INTERNAL_SERVER_ERROR, google_message("INTERNAL"), "INTERNAL")
}
