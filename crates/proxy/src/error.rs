//! Refusals: byok's error codes, whose fault they are, and their HTTP status.

use axum::http::StatusCode;

/// A byok error code from the product contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 401: the workload token is missing, unknown, expired or revoked.
    InvalidWorkloadToken,
    /// 403: a scope dimension does not match (the message names it).
    ScopeDenied,
    /// 403: no credential serves this call.
    NoCredential,
    /// 403: the credential is revoked.
    CredentialRevoked,
    /// 403: the credential is disabled.
    CredentialDisabled,
    /// 403: the credential has expired.
    CredentialExpired,
    /// 403: the credential's current version is older than the org's maximum age.
    RotationRequired,
    /// 403: the org's tier does not allow this (a platform credential from katman-b/c).
    TierForbids,
    /// 403: the caller's address is outside the org's source allow-list.
    SourceForbidden,
    /// 429: the org's or team's monthly budget is spent.
    BudgetExceeded,
    /// 429: a rate limit is reached, or every candidate credential is cooling down.
    RateLimited,
    /// 403: the provider rejected every candidate credential.
    CredentialFailing,
    /// 404: no such provider route.
    UnknownProvider,
    /// 400: the request target is malformed or tries a path trick.
    InvalidRequest,
    /// 413: the request body is too large.
    RequestTooLarge,
    /// 414: the request target is longer than the listener accepts.
    UriTooLong,
    /// 431: the request's header block is larger than the listener accepts.
    HeadersTooLarge,
    /// 503: the audit row could not be made durable.
    AuditUnavailable,
    /// 503: the KMS cannot be used.
    KmsUnavailable,
    /// 503: the store cannot be used.
    StoreUnavailable,
    /// 502: the upstream could not be reached.
    UpstreamUnreachable,
    /// 504: the upstream did not answer in time.
    UpstreamTimeout,
    /// 500: a bug or corrupt data.
    Internal,
}

impl Code {
    /// The code as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Code::InvalidWorkloadToken => "invalid_workload_token",
            Code::ScopeDenied => "scope_denied",
            Code::NoCredential => "no_credential",
            Code::CredentialRevoked => "credential_revoked",
            Code::CredentialDisabled => "credential_disabled",
            Code::CredentialExpired => "credential_expired",
            Code::RotationRequired => "rotation_required",
            Code::TierForbids => "tier_forbids",
            Code::SourceForbidden => "source_forbidden",
            Code::BudgetExceeded => "budget_exceeded",
            Code::RateLimited => "rate_limited",
            Code::CredentialFailing => "credential_failing",
            Code::UnknownProvider => "unknown_provider",
            Code::InvalidRequest => "invalid_request",
            Code::RequestTooLarge => "request_too_large",
            Code::UriTooLong => "uri_too_long",
            Code::HeadersTooLarge => "headers_too_large",
            Code::AuditUnavailable => "audit_unavailable",
            Code::KmsUnavailable => "kms_unavailable",
            Code::StoreUnavailable => "store_unavailable",
            Code::UpstreamUnreachable => "upstream_unreachable",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::Internal => "internal_error",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Code::InvalidWorkloadToken => StatusCode::UNAUTHORIZED,
            Code::ScopeDenied
            | Code::NoCredential
            | Code::CredentialRevoked
            | Code::CredentialDisabled
            | Code::CredentialExpired
            | Code::RotationRequired
            | Code::TierForbids
            | Code::SourceForbidden
            | Code::CredentialFailing => StatusCode::FORBIDDEN,
            Code::BudgetExceeded | Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::UnknownProvider => StatusCode::NOT_FOUND,
            Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UriTooLong => StatusCode::URI_TOO_LONG,
            Code::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Code::AuditUnavailable | Code::KmsUnavailable | Code::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A call byok will not (or could not) complete, with a message for the application.
/// Messages never contain a key or a token.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The code.
    pub code: Code,
    /// What happened, for a person: the application receives it.
    pub message: String,
    /// What the operator's log gets besides the message, never the application (why an
    /// upstream could not be reached: resolver, socket and TLS errors, addresses).
    pub detail: Option<String>,
    /// Whole seconds the caller should wait (`Retry-After`), for `rate_limited`.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), detail: None, retry_after: None }
    }

    /// This refusal with a `Retry-After` of `secs` (at least 1).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// This refusal with `detail` for the log only.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}
