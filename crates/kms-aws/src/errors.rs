//! How AWS KMS failures become [`KmsError`]s.
//!
//! A failed call is classified once, from the SDK's error and the service's error code
//! (`NotFoundException`, `ThrottlingException`…, the names operators look up), into a
//! [`Failure`]. Its message names the KMS (region and endpoint), what byok was doing and
//! what AWS answered; never a DEK, a ciphertext or a credential (the SDK's errors hold
//! neither).

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use byok_crypto::KmsError;

/// What kind of failure a call ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Not reached, timed out, throttled, or a server error: retrying may help.
    Unavailable,
    /// `NotFoundException`: no such key or alias.
    NotFound,
    /// `AlreadyExistsException`: the alias exists.
    AlreadyExists,
    /// `DisabledException`, `KMSInvalidStateException`: the key is disabled or pending
    /// deletion.
    KeyState,
    /// Access denied, or the credentials were not accepted.
    Denied,
    /// `InvalidCiphertextException`, `IncorrectKeyException`: the ciphertext is not one
    /// this key made under this encryption context.
    BadCiphertext,
    /// Any other answer (a validation error, a quota): AWS refused the request as sent.
    Rejected,
}

/// A classified failure of one AWS KMS call.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn is(&self, kind: FailureKind) -> bool {
        self.kind == kind
    }

    /// The [`KmsError`] a caller that has no better explanation reports.
    pub(crate) fn into_kms_error(self) -> KmsError {
        match self.kind {
            FailureKind::Unavailable => KmsError::unavailable(self.message),
            FailureKind::BadCiphertext => KmsError::Integrity,
            FailureKind::NotFound
            | FailureKind::AlreadyExists
            | FailureKind::KeyState
            | FailureKind::Denied
            | FailureKind::Rejected => KmsError::refused(self.message),
        }
    }
}

impl From<Failure> for KmsError {
    fn from(failure: Failure) -> Self {
        failure.into_kms_error()
    }
}

/// The kind of a service error, from its code (and HTTP status: every 5xx is a server
/// error, whatever its code).
pub(crate) fn kind_of(code: Option<&str>, status: Option<u16>) -> FailureKind {
    if status.is_some_and(|status| status >= 500) {
        return FailureKind::Unavailable;
    }
    match code.unwrap_or_default() {
        "NotFoundException" => FailureKind::NotFound,
        "AlreadyExistsException" => FailureKind::AlreadyExists,
        "DisabledException" | "KMSInvalidStateException" => FailureKind::KeyState,
        "InvalidCiphertextException" | "IncorrectKeyException" => FailureKind::BadCiphertext,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredTokenException" => FailureKind::Denied,
        "ThrottlingException"
        | "Throttling"
        | "ThrottledException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "ProvisionedThroughputExceededException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException" => FailureKind::Unavailable,
        _ if status == Some(429) => FailureKind::Unavailable,
        _ => FailureKind::Rejected,
    }
}

/// Classify a failed call. `place` names the KMS ("region eu-central-1"), `doing` the
/// operation ("unwrap a DEK").
pub(crate) fn classify<E>(place: &str, doing: &str, error: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let err = service.err();
            let code = err.code();
            let kind = kind_of(code, Some(status));
            let mut detail = format!("{} (HTTP {status})", code.unwrap_or("an error without a code"));
            if let Some(message) = err.message() {
                detail.push_str(": ");
                detail.push_str(message);
            }
            if let Some(request) = service.raw().headers().get("x-amzn-requestid").or_else(|| error.request_id()) {
                detail.push_str(&format!(" [request id {request}]"));
            }
            Failure { kind, message: format!("AWS KMS ({place}): cannot {doing}: {detail}") }
        }
        // Not reached (DNS, connection refused or reset, TLS), timed out, an answer that
        // is not one, or a request that could not be signed (no credentials found, the
        // role's credentials could not be fetched): KMS answered nothing, so it is
        // unavailable for this call.
        other => Failure {
            kind: FailureKind::Unavailable,
            message: format!("AWS KMS ({place}): cannot {doing}: {}", causes(other)),
        },
    }
}

/// An error and its sources on one line (`dispatch failure: io error: Connection
/// refused`), without the `Debug` dump that `DisplayErrorContext` appends.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        // Wrappers often repeat their source's text.
        if !text.is_empty() && !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    if parts.is_empty() {
        return DisplayErrorContext(error).to_string();
    }
    parts.join(": ")
}

/// A failure byok itself decided (not an answer from AWS), with the KMS named.
pub(crate) fn failure(kind: FailureKind, place: &str, text: impl std::fmt::Display) -> Failure {
    Failure { kind, message: format!("AWS KMS ({place}): {text}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_are_classified_by_code_and_status() {
        let table = [
            (Some("NotFoundException"), 400, FailureKind::NotFound),
            (Some("AlreadyExistsException"), 400, FailureKind::AlreadyExists),
            (Some("DisabledException"), 400, FailureKind::KeyState),
            (Some("KMSInvalidStateException"), 400, FailureKind::KeyState),
            (Some("InvalidCiphertextException"), 400, FailureKind::BadCiphertext),
            (Some("IncorrectKeyException"), 400, FailureKind::BadCiphertext),
            (Some("AccessDeniedException"), 400, FailureKind::Denied),
            (Some("UnrecognizedClientException"), 400, FailureKind::Denied),
            (Some("ExpiredTokenException"), 400, FailureKind::Denied),
            (Some("ThrottlingException"), 400, FailureKind::Unavailable),
            (Some("KMSInternalException"), 500, FailureKind::Unavailable),
            (Some("DependencyTimeoutException"), 503, FailureKind::Unavailable),
            (Some("KeyUnavailableException"), 500, FailureKind::Unavailable),
            (Some("ValidationException"), 400, FailureKind::Rejected),
            (Some("LimitExceededException"), 400, FailureKind::Rejected),
            (Some("InvalidKeyUsageException"), 400, FailureKind::Rejected),
            (Some("SomethingNew"), 502, FailureKind::Unavailable),
            (None, 503, FailureKind::Unavailable),
            (None, 429, FailureKind::Unavailable),
            (None, 400, FailureKind::Rejected),
        ];
        for (code, status, kind) in table {
            assert_eq!(kind_of(code, Some(status)), kind, "{code:?} {status}");
        }
    }

    #[test]
    fn failures_become_kms_errors() {
        let make = |kind| Failure { kind, message: "AWS KMS (region r): cannot x: y".into() };
        assert!(
            matches!(make(FailureKind::Unavailable).into_kms_error(), KmsError::Unavailable { reason: m, .. } if m.contains("AWS KMS"))
        );
        assert!(matches!(make(FailureKind::BadCiphertext).into_kms_error(), KmsError::Integrity));
        for kind in [FailureKind::Denied, FailureKind::KeyState, FailureKind::Rejected, FailureKind::NotFound] {
            assert!(
                matches!(make(kind).into_kms_error(), KmsError::Refused { reason: m, .. } if m.contains("AWS KMS"))
            );
        }
    }
}
