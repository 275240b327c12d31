//! Errors in each provider's own shape, so the provider's SDK surfaces byok's message.

use serde_json::json;

use crate::registry::Api;

/// A rendered error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// Always `application/json`.
    pub content_type: &'static str,
    /// The JSON bytes.
    pub body: Vec<u8>,
    /// For AWS APIs, the exception name sent as `x-amzn-errortype` (the header the AWS
    /// SDKs read an error's code from, so boto3 raises its own exception class, e.g.
    /// `AccessDeniedException` for a scope denial).
    pub aws_error_type: Option<&'static str>,
}

/// The Bedrock runtime exception an error of `status` is (its API reference's names).
fn aws_error_type(status: u16) -> &'static str {
    match status {
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        429 => "ThrottlingException",
        400..=499 => "ValidationException",
        503 => "ServiceUnavailableException",
        504 => "ModelTimeoutException",
        _ => "InternalServerException",
    }
}

fn openai_type(status: u16, code: &str) -> &'static str {
    match (status, code) {
        (401, _) => "authentication_error",
        (403, _) => "permission_error",
        (404, _) => "not_found_error",
        // OpenAI's own 429s: a spent quota, or a rate limit.
        (429, "budget_exceeded") => "insufficient_quota",
        (429, _) => "requests",
        (400..=499, _) => "invalid_request_error",
        _ => "api_error",
    }
}

fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

fn google_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        413 | 414 | 431 => "INVALID_ARGUMENT",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// byok's error `code` with `message`, as `api` would shape an error of `status`.
/// The code is also carried in a machine-readable field of each shape.
pub fn error_body(api: Api, status: u16, code: &str, message: &str) -> ErrorBody {
    let value = match api {
        // Bedrock's `{"message"}`, with byok's code beside it for raw clients; the SDKs
        // take the exception name from the `x-amzn-errortype` header.
        Api::Bedrock => json!({ "message": message, "code": code }),
        Api::OpenAi | Api::AzureOpenAi => json!({
            "error": { "message": message, "type": openai_type(status, code), "param": null, "code": code }
        }),
        Api::Anthropic => json!({
            "type": "error",
            "error": { "type": anthropic_type(status), "message": message, "code": code }
        }),
        Api::Gemini => json!({
            "error": {
                "code": status,
                "message": message,
                "status": google_status(status),
                "details": [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code, "domain": "byok" }]
            }
        }),
    };
    let aws_error_type = (api == Api::Bedrock).then(|| aws_error_type(status));
    ErrorBody { content_type: "application/json", body: value.to_string().into_bytes(), aws_error_type }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &ErrorBody) -> serde_json::Value {
        serde_json::from_slice(&body.body).unwrap()
    }

    #[test]
    fn shapes_match_each_provider() {
        let openai = parse(&error_body(Api::OpenAi, 403, "scope_denied", "no"));
        assert_eq!(openai["error"]["code"], "scope_denied");
        assert_eq!(openai["error"]["message"], "no");
        assert_eq!(openai["error"]["type"], "permission_error");
        let anthropic = parse(&error_body(Api::Anthropic, 401, "invalid_workload_token", "bad"));
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "authentication_error");
        assert_eq!(anthropic["error"]["message"], "bad");
        let spent = parse(&error_body(Api::OpenAi, 429, "budget_exceeded", "spent"));
        assert_eq!(spent["error"]["type"], "insufficient_quota");
        let limited = parse(&error_body(Api::Anthropic, 429, "budget_exceeded", "spent"));
        assert_eq!(limited["error"]["type"], "rate_limit_error");
        let gemini = parse(&error_body(Api::Gemini, 503, "audit_unavailable", "down"));
        assert_eq!(gemini["error"]["code"], 503);
        assert_eq!(gemini["error"]["status"], "UNAVAILABLE");
        assert_eq!(gemini["error"]["details"][0]["reason"], "audit_unavailable");
        let bedrock = parse(&error_body(Api::Bedrock, 403, "scope_denied", "no"));
        assert_eq!(bedrock, json!({"message": "no", "code": "scope_denied"}));
        assert_eq!(error_body(Api::Bedrock, 403, "scope_denied", "no").aws_error_type, Some("AccessDeniedException"));
        assert_eq!(error_body(Api::Bedrock, 429, "rate_limited", "no").aws_error_type, Some("ThrottlingException"));
        assert_eq!(error_body(Api::Bedrock, 400, "invalid_request", "no").aws_error_type, Some("ValidationException"));
        assert_eq!(error_body(Api::OpenAi, 403, "scope_denied", "no").aws_error_type, None);
    }
}
