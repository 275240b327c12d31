//! Refusals: the data plane's one error type. Its code says what the application is
//! told, whose fault it was and whether a retry can help; its cause, when there is one,
//! is the error that made it (kept whole, for the operator's log), and the code of a
//! failure is read off that cause by walking its chain.

use std::error::Error;
use std::sync::Arc;

use axum::http::StatusCode;
use byok_audit::AuditError;
use byok_crypto::{CryptoError, KmsError};
use byok_domain::error::{chain, report};
use byok_store::StoreError;
use byok_vault::VaultError;

/// Whose fault a refusal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The caller's: its token, its request, or what its org's configuration allows.
    Caller,
    /// The provider's, or the network's between byok and the provider.
    Upstream,
    /// byok's own, or one of what it depends on (audit, store, KMS).
    Byok,
}

/// A byok error code from the product contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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

impl Code {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            Code::AuditUnavailable | Code::KmsUnavailable | Code::StoreUnavailable | Code::Internal => Fault::Byok,
            Code::UpstreamUnreachable | Code::UpstreamTimeout | Code::CredentialFailing => Fault::Upstream,
            _ => Fault::Caller,
        }
    }

    /// Whether the same call, sent again unchanged, may succeed later: a limit that
    /// resets, or a dependency or upstream that may come back. A refusal for what the
    /// call is (scope, tier, token, input) stays a refusal.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Code::RateLimited
                | Code::AuditUnavailable
                | Code::KmsUnavailable
                | Code::StoreUnavailable
                | Code::UpstreamUnreachable
                | Code::UpstreamTimeout
        )
    }
}

/// The code a failure stands for, read off its chain (outermost first): the audit
/// writer's error is `audit_unavailable` even when a store error lies under it; a KMS
/// error, or a crypto error that is one, `kms_unavailable`; a store that cannot be used
/// `store_unavailable`; the vault's errors by their kind. `None` when nothing in the
/// chain is one of byok's dependencies.
pub fn classify(err: &(dyn Error + 'static)) -> Option<Code> {
    chain(err).find_map(|layer| {
        if layer.is::<AuditError>() {
            Some(Code::AuditUnavailable)
        } else if layer.is::<KmsError>() || matches!(layer.downcast_ref::<CryptoError>(), Some(CryptoError::Kms(_))) {
            Some(Code::KmsUnavailable)
        } else if let Some(err) = layer.downcast_ref::<StoreError>() {
            Some(if err.is_unavailable() { Code::StoreUnavailable } else { Code::Internal })
        } else if let Some(err) = layer.downcast_ref::<VaultError>() {
            match err {
                VaultError::StoreUnavailable(_) => Some(Code::StoreUnavailable),
                VaultError::KmsUnavailable(_) => Some(Code::KmsUnavailable),
                _ => None,
            }
        } else {
            None
        }
    })
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
    /// The error that made it, if one did (shared: a refusal is cloned into the audit).
    cause: Option<Arc<dyn Error + Send + Sync>>,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), detail: None, retry_after: None, cause: None }
    }

    /// A failure while `doing` something, caused by `cause`: its code is read off the
    /// cause's chain ([`classify`]; `fallback` when nothing there says), and the
    /// message is `doing: ` and the whole chain. Use only with causes whose text may
    /// reach the application (byok's own errors: they never hold a secret).
    pub fn failed(fallback: Code, doing: impl std::fmt::Display, cause: impl Error + Send + Sync + 'static) -> Self {
        let code = classify(&cause).unwrap_or(fallback);
        let message = format!("{doing}: {}", report(&cause));
        Self { cause: Some(Arc::new(cause)), ..Self::new(code, message) }
    }

    /// This refusal with `cause` kept for the log (its text is never sent to the
    /// application: an upstream's resolver, socket and TLS errors).
    pub fn caused_by(mut self, cause: impl Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// The error that made this refusal, if one did.
    pub fn cause(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|cause| cause as &(dyn Error + 'static))
    }

    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        self.code.fault()
    }

    /// Whether the same call may succeed later (see [`Code::retryable`]).
    pub fn retryable(&self) -> bool {
        self.code.retryable()
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

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl Error for Refusal {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code comes from the cause's chain: an audit failure over a store error is
    /// the audit's, whatever the call site guessed.
    #[test]
    fn failures_are_classified_by_their_chain() {
        let store = StoreError::unavailable_by("cannot use the database", std::io::Error::other("connection reset"));
        let audit = AuditError::Unavailable(Arc::new(store));
        let refusal = Refusal::failed(Code::Internal, "the call was not made", audit);
        assert_eq!(refusal.code, Code::AuditUnavailable);
        assert_eq!(
            refusal.message,
            "the call was not made: audit store unavailable: store unavailable: cannot use the database: connection reset"
        );
        assert!(refusal.retryable() && refusal.fault() == Fault::Byok);
        assert!(byok_domain::error::find::<std::io::Error>(&refusal).is_some(), "the root cause is kept");

        let kms = CryptoError::Kms(KmsError::refused("AccessDeniedException"));
        assert_eq!(Refusal::failed(Code::Internal, "cannot unwrap", kms).code, Code::KmsUnavailable);
        let corrupt = StoreError::Corrupt("bad row".into());
        assert_eq!(Refusal::failed(Code::StoreUnavailable, "cannot read", corrupt).code, Code::Internal);
        let plain = std::io::Error::other("x");
        assert_eq!(Refusal::failed(Code::UpstreamUnreachable, "cannot reach", plain).code, Code::UpstreamUnreachable);
    }

    #[test]
    fn faults_and_retries() {
        assert_eq!(Code::ScopeDenied.fault(), Fault::Caller);
        assert!(!Code::ScopeDenied.retryable());
        assert_eq!(Code::UpstreamTimeout.fault(), Fault::Upstream);
        assert!(Code::UpstreamTimeout.retryable() && Code::RateLimited.retryable());
        assert!(!Code::BudgetExceeded.retryable(), "a monthly budget does not come back on a retry");
    }
}
