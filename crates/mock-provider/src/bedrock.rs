//! AWS Bedrock runtime: `POST /model/{modelId}/converse`, `/converse-stream`, `/invoke`,
//! `/invoke-with-response-stream`.
//!
//! Authentication is checked as AWS does: a SigV4 `Authorization` header is verified by
//! recomputing the signature (with `aws-sigv4`) from the request as received — method,
//! path exactly as sent (SigV4 encodes its segments once more), query, the signed
//! headers, the body's SHA-256 — with the secret the mock knows for the access key id;
//! a signature more than 15 minutes away from the mock's clock is expired. A Bedrock API
//! key is accepted as `Authorization: Bearer`. Refusals are Bedrock's: 403 with
//! `x-amzn-errortype` and `{"message": …}`.
//!
//! Answers are in the real shapes: Converse JSON with `usage.inputTokens/outputTokens`;
//! InvokeModel (Anthropic models) Anthropic's message JSON; ConverseStream and
//! InvokeModelWithResponseStream as `application/vnd.amazon.eventstream` frames (built
//! with the AWS SDK's own encoder), the former ending with a `metadata` event carrying
//! `usage`, the latter's `chunk` events carrying the model's own events as base64 `bytes`,
//! the last with `amazon-bedrock-invocationMetrics`.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use aws_smithy_types::event_stream::{Header, HeaderValue as FrameValue, Message};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::auth::{Auth, KeyCheck};
use crate::reply::Reply;
use crate::text::{content_text, count_tokens, reply_words, stream_pieces};
use crate::MockConfig;

/// The content type of AWS event streams.
pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// How far a signature's time may be from the mock's clock.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// An AWS access key the mock knows (as Bedrock knows the account's keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BedrockAccessKey {
    /// The access key id (`AKIA…`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token temporary credentials must present, if any.
    pub session_token: Option<String>,
}

/// A Bedrock runtime operation; the model id is decoded from the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BedrockEndpoint {
    Converse(String),
    ConverseStream(String),
    Invoke(String),
    InvokeStream(String),
}

/// The operation `POST /model/{modelId}/{action}` names (`rest` is after `/model/`).
pub(crate) fn endpoint(method: &Method, rest: &str) -> Option<BedrockEndpoint> {
    let (raw_id, action) = rest.split_once('/')?;
    let model = percent_decode(raw_id)?;
    if method != Method::POST || model.is_empty() {
        return None;
    }
    Some(match action {
        "converse" => BedrockEndpoint::Converse(model),
        "converse-stream" => BedrockEndpoint::ConverseStream(model),
        "invoke" => BedrockEndpoint::Invoke(model),
        "invoke-with-response-stream" => BedrockEndpoint::InvokeStream(model),
        _ => return None,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&b) = bytes.get(index) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(b);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Bedrock's error: `status`, `x-amzn-errortype: {kind}`, `{"message": …}`.
pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Reply {
    let mut reply = Reply::json(status, &json!({ "message": message }));
    if let Ok(value) = HeaderValue::from_str(&format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")) {
        reply.headers.push((axum::http::HeaderName::from_static("x-amzn-errortype"), value));
    }
    reply.with_header("x-amzn-requestid", "00000000-0000-4000-8000-000000000000".to_owned())
}

/// The error type of a Bedrock error status.
pub(crate) fn error_kind(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("ValidationException", "Malformed input request, please reformat your input and try again."),
        401 | 403 => ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
        404 => ("ResourceNotFoundException", "The requested resource could not be found."),
        408 => ("ModelTimeoutException", "The request took too long to process."),
        424 => ("ModelErrorException", "The model encountered an error processing the request."),
        429 => ("ThrottlingException", "Too many requests, please wait before trying again."),
        503 => ("ServiceUnavailableException", "Bedrock is unable to process your request."),
        _ => ("InternalServerException", "The server encountered an error processing your request."),
    }
}

/// The answer to a key the mock does not accept, in Bedrock's shape.
pub(crate) fn rejection(check: KeyCheck, detail: Option<&str>) -> Reply {
    let forbidden = StatusCode::FORBIDDEN;
    match check {
        KeyCheck::UnknownKeyId | KeyCheck::Wrong => {
            error(forbidden, "UnrecognizedClientException", "The security token included in the request is invalid.")
        }
        KeyCheck::BadSignature => error(
            forbidden,
            "InvalidSignatureException",
            detail.unwrap_or(
                "The request signature we calculated does not match the signature you provided. Check your AWS \
                 Secret Access Key and signing method. Consult the service documentation for details.",
            ),
        ),
        _ => error(forbidden, "MissingAuthenticationTokenException", "Missing Authentication Token"),
    }
}

/// The parts of a SigV4 `Authorization` header.
struct Presented<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Presented<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let mut scope = credential?.split('/');
    let presented = Presented {
        access_key_id: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    };
    (scope.next()? == "aws4_request").then_some(presented)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim).filter(|value| !value.is_empty())
}

fn refused(presented: Option<&str>, check: KeyCheck, why: &str) -> Auth {
    Auth { presented: presented.map(str::to_owned), check, detail: Some(why.to_owned()) }
}

/// Who a Bedrock request is from: a verified SigV4 signature (presented key: the access
/// key id) or a known Bedrock API key as a bearer token.
pub(crate) fn authenticate(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8], config: &MockConfig) -> Auth {
    let Some(authorization) = header(headers, "authorization") else {
        return Auth { presented: None, check: KeyCheck::Missing, detail: None };
    };
    if let Some(token) = authorization.strip_prefix("Bearer ").map(str::trim) {
        let check = if config.bedrock_api_keys.iter().any(|k| k == token) { KeyCheck::Valid } else { KeyCheck::Wrong };
        return Auth { presented: Some(token.to_owned()), check, detail: None };
    }
    let Some(presented) = parse_authorization(authorization) else {
        return refused(None, KeyCheck::BadSignature, "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters (AWS4-HMAC-SHA256).");
    };
    let key_id = presented.access_key_id;
    let Some(key) = config.bedrock_access_keys.iter().find(|k| k.access_key_id == key_id) else {
        return refused(Some(key_id), KeyCheck::UnknownKeyId, "unknown access key id");
    };
    if presented.service != "bedrock" {
        return refused(
            Some(key_id),
            KeyCheck::BadSignature,
            "Credential should be scoped to correct service: 'bedrock'.",
        );
    }
    let Some(amz_date) = header(headers, "x-amz-date") else {
        return refused(Some(key_id), KeyCheck::BadSignature, "Missing x-amz-date header.");
    };
    let Ok(at) = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ") else {
        return refused(Some(key_id), KeyCheck::BadSignature, "x-amz-date is not a date.");
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.and_utc().timestamp()).unwrap_or(0));
    let now = SystemTime::now();
    let skew = now.duration_since(at).unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        let message = format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            chrono::DateTime::<chrono::Utc>::from(now - MAX_SKEW).format("%Y%m%dT%H%M%SZ"),
            chrono::DateTime::<chrono::Utc>::from(now).format("%Y%m%dT%H%M%SZ"),
        );
        return refused(Some(key_id), KeyCheck::BadSignature, &message);
    }
    if !amz_date.starts_with(presented.date) || presented.date.len() != 8 {
        return refused(Some(key_id), KeyCheck::BadSignature, "Credential should be scoped to a valid date.");
    }
    let token = header(headers, "x-amz-security-token");
    if key.session_token.as_deref() != token {
        return refused(Some(key_id), KeyCheck::UnknownKeyId, "session token");
    }
    if !presented.signed_headers.contains(&"host") || !presented.signed_headers.contains(&"x-amz-date") {
        return refused(Some(key_id), KeyCheck::BadSignature, "Signed headers must include host and x-amz-date.");
    }
    match recompute(method, uri, headers, body, key, &presented, at) {
        Some(signature) if constant_time_eq(signature.as_bytes(), presented.signature.as_bytes()) => {
            Auth { presented: Some(key_id.to_owned()), check: KeyCheck::Valid, detail: None }
        }
        _ => refused(Some(key_id), KeyCheck::BadSignature, "signature mismatch"),
    }
}

/// The signature `key` makes over the request as received (only the headers it says it
/// signed), or `None` when it cannot be computed.
fn recompute(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    key: &BedrockAccessKey,
    presented: &Presented<'_>,
    at: SystemTime,
) -> Option<String> {
    // aws-sigv4 adds these itself (from the time, the body and the credentials).
    let added = ["x-amz-date", "x-amz-content-sha256", "x-amz-security-token"];
    let mut signed = Vec::new();
    for name in &presented.signed_headers {
        if added.contains(name) {
            continue;
        }
        for value in headers.get_all(*name) {
            signed.push((*name, value.to_str().ok()?));
        }
    }
    let host = header(headers, "host")?;
    let target = format!("http://{host}{}", uri.path_and_query().map_or("/", |pq| pq.as_str()));
    let identity = aws_credential_types::Credentials::new(
        key.access_key_id.clone(),
        key.secret_access_key.clone(),
        key.session_token.clone(),
        None,
        "mock",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(Vec::new());
    if presented.signed_headers.contains(&"x-amz-content-sha256") {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(presented.region)
        .name("bedrock")
        .time(at)
        .settings(settings)
        .build()
        .ok()?
        .into();
    let request = SignableRequest::new(method.as_str(), &target, signed.into_iter(), SignableBody::Bytes(body)).ok()?;
    let (_, signature) = sign(request, &params).ok()?.into_parts();
    Some(signature)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One event-stream frame.
fn frame(headers: Vec<Header>, payload: Vec<u8>) -> Bytes {
    let mut out = Vec::new();
    // Writing to a Vec fails only for headers or payloads beyond the format's limits,
    // which the mock's small JSON events never reach.
    let _ = aws_smithy_eventstream::frame::write_message_to(&Message::new_from_parts(headers, payload), &mut out);
    Bytes::from(out)
}

fn event(event_type: &str, payload: &Value) -> Bytes {
    frame(
        vec![
            Header::new(":event-type", FrameValue::String(event_type.to_owned().into())),
            Header::new(":content-type", FrameValue::String("application/json".into())),
            Header::new(":message-type", FrameValue::String("event".into())),
        ],
        payload.to_string().into_bytes(),
    )
}

/// A mid-stream exception frame (`:message-type: exception`).
pub(crate) fn exception_frame() -> Bytes {
    frame(
        vec![
            Header::new(":exception-type", FrameValue::String("internalServerException".into())),
            Header::new(":content-type", FrameValue::String("application/json".into())),
            Header::new(":message-type", FrameValue::String("exception".into())),
        ],
        json!({"message": "The server encountered an error processing your request."}).to_string().into_bytes(),
    )
}

fn invalid(message: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

fn parse(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(request)) => Ok(request),
        _ => Err(invalid("Malformed input request, please reformat your input and try again.")),
    }
}

/// Serves a Bedrock operation (the caller was authenticated).
pub(crate) fn serve(endpoint: &BedrockEndpoint, body: &[u8], id: u64) -> Reply {
    let request = match parse(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let reply = match endpoint {
        // Converse answers do not name the model.
        BedrockEndpoint::Converse(_) => converse(&request, false),
        BedrockEndpoint::ConverseStream(_) => converse(&request, true),
        BedrockEndpoint::Invoke(model) => invoke(model, &request, id, false),
        BedrockEndpoint::InvokeStream(model) => invoke(model, &request, id, true),
    };
    reply.with_header("x-amzn-requestid", format!("00000000-0000-4000-8000-{id:012}"))
}

/// The prompt (the last user message's text), input tokens and the reply words.
fn exchange(system: Option<&Value>, messages: &[Value], max_tokens: Option<u64>) -> (u64, Vec<String>, bool) {
    let system = system.map(content_text).unwrap_or_default();
    let input = count_tokens(&system)
        + messages.iter().map(|m| count_tokens(&content_text(m.get("content").unwrap_or(&Value::Null)))).sum::<u64>();
    let prompt = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let (words, truncated) = reply_words(&prompt, max_tokens);
    (input, words, truncated)
}

fn converse(request: &Map<String, Value>, stream: bool) -> Reply {
    let Some(Value::Array(messages)) = request.get("messages") else {
        return invalid("The model returned the following errors: messages: field required");
    };
    let max_tokens = request.get("inferenceConfig").and_then(|c| c.get("maxTokens")).and_then(Value::as_u64);
    let (input, words, truncated) = exchange(request.get("system"), messages, max_tokens);
    let output = words.len() as u64;
    let stop = if truncated { "max_tokens" } else { "end_turn" };
    let usage = json!({"inputTokens": input, "outputTokens": output, "totalTokens": input + output});
    if !stream {
        let mut reply = Reply::json(
            StatusCode::OK,
            &json!({
                "output": {"message": {"role": "assistant", "content": [{"text": words.join(" ")}]}},
                "stopReason": stop,
                "usage": usage,
                "metrics": {"latencyMs": 1},
            }),
        );
        reply.tokens = input + output;
        return reply;
    }
    let mut events = vec![event("messageStart", &json!({"role": "assistant"}))];
    for piece in stream_pieces(&words) {
        events.push(event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": piece}})));
    }
    events.push(event("contentBlockStop", &json!({"contentBlockIndex": 0})));
    events.push(event("messageStop", &json!({"stopReason": stop})));
    events.push(event("metadata", &json!({"usage": usage, "metrics": {"latencyMs": 1}})));
    event_stream(events, input + output)
}

fn event_stream(events: Vec<Bytes>, tokens: u64) -> Reply {
    let mut reply = Reply::stream(EVENT_STREAM, Box::new(events.into_iter()), Box::new(|_| exception_frame()));
    reply.tokens = tokens;
    reply
}

/// A `chunk` event carrying the model's own event.
fn chunk(inner: &Value) -> Bytes {
    let bytes = base64::engine::general_purpose::STANDARD.encode(inner.to_string());
    event("chunk", &json!({ "bytes": bytes }))
}

fn invoke(model: &str, request: &Map<String, Value>, id: u64, stream: bool) -> Reply {
    if !model.contains("anthropic.claude") {
        return invalid("byok-mock-provider serves InvokeModel for Anthropic models only; use Converse");
    }
    if request.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
        return invalid("anthropic_version: must be bedrock-2023-05-31");
    }
    let Some(Value::Array(messages)) = request.get("messages") else {
        return invalid("messages: field required");
    };
    let Some(max_tokens) = request.get("max_tokens").and_then(Value::as_u64) else {
        return invalid("max_tokens: field required");
    };
    let (input, words, truncated) = exchange(request.get("system"), messages, Some(max_tokens));
    let output = words.len() as u64;
    let stop = if truncated { "max_tokens" } else { "end_turn" };
    let message_id = format!("msg_bdrk_mock{id:08}");
    if !stream {
        let mut reply = Reply::json(
            StatusCode::OK,
            &json!({
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": "claude-mock",
                "content": [{"type": "text", "text": words.join(" ")}],
                "stop_reason": stop,
                "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output},
            }),
        )
        .with_header("x-amzn-bedrock-input-token-count", input.to_string())
        .with_header("x-amzn-bedrock-output-token-count", output.to_string())
        .with_header("x-amzn-bedrock-invocation-latency", "1".to_owned());
        reply.tokens = input + output;
        return reply;
    }
    let mut events = vec![chunk(&json!({
        "type": "message_start",
        "message": {"id": message_id, "type": "message", "role": "assistant", "model": "claude-mock",
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input, "output_tokens": 1}},
    }))];
    events.push(chunk(
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    for piece in stream_pieces(&words) {
        events.push(chunk(
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(chunk(&json!({"type": "content_block_stop", "index": 0})));
    events.push(chunk(&json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output}})));
    events.push(chunk(&json!({
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": input, "outputTokenCount": output, "invocationLatency": 1, "firstByteLatency": 1,
        },
    })));
    event_stream(events, input + output)
}

/// A whole body's frames, decoded (for tests): each message's `:event-type` (or
/// `:exception-type`) and its payload.
pub fn decode_event_stream(mut body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let message = aws_smithy_eventstream::frame::read_message_from(&mut body).map_err(|e| e.to_string())?;
        let kind = message
            .headers()
            .iter()
            .find(|h| matches!(h.name().as_str(), ":event-type" | ":exception-type"))
            .and_then(|h| h.value().as_string().ok())
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((kind, message.payload().to_vec()));
    }
    Ok(out)
}
