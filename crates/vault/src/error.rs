//! The vault's error: whose fault it was, and what to tell them.

use byok_crypto::{CryptoError, KmsError};
use byok_domain::error::{context, BoxError};
use byok_store::StoreError;

/// Why a vault operation did not happen. Messages never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The request is malformed or breaks a rule; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// Well-formed input that breaks a rule no schema can state (an expiry in the past,
    /// a model family the registry does not know, a cursor from no previous page).
    #[error("{0}")]
    Unprocessable(String),
    /// A referenced thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (duplicate name, revoked credential).
    #[error("{0}")]
    Conflict(String),
    /// The configuration keeps this org from it (a KMS reserved for other orgs).
    #[error("{0}")]
    Forbidden(String),
    /// The provider rejected the key of a credential being created with `verify`
    /// (`credential_invalid`); nothing was stored.
    #[error("{0}")]
    CredentialInvalid(String),
    /// The org's tier forbids it.
    #[error("{0}")]
    TierForbids(String),
    /// The store cannot be reached (the store's error says why).
    #[error(transparent)]
    StoreUnavailable(StoreError),
    /// The KMS cannot be reached, or answers and refuses (the KMS error says which).
    #[error(transparent)]
    KmsUnavailable(KmsError),
    /// Something that should not happen (corrupt row, failed integrity check); the
    /// source says what.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl VaultError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    pub(crate) fn unprocessable(message: impl Into<String>) -> Self {
        Self::Unprocessable(message.into())
    }

    /// Something that should not happen: `what`, with no further cause.
    pub fn internal(what: impl Into<String>) -> Self {
        Self::Internal(what.into().into())
    }

    /// Something that should not happen: `what`, because of `source`.
    pub fn internal_by(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal(Box::new(context(what, source)))
    }

    /// Whether a later retry of the same request may succeed: the store or the KMS could
    /// not be used (as opposed to a request that is wrong, or a KMS that refused).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::StoreUnavailable(err) => err.is_unavailable(),
            Self::KmsUnavailable(err) => err.is_transient(),
            _ => false,
        }
    }
}

impl From<StoreError> for VaultError {
    fn from(err: StoreError) -> Self {
        match err {
            err @ StoreError::Unavailable { .. } => VaultError::StoreUnavailable(err),
            StoreError::Conflict { what } => VaultError::Conflict(what),
            StoreError::NotFound { what } => VaultError::NotFound(what),
            StoreError::Stale { what } => {
                VaultError::Conflict(format!("{what} was changed concurrently; read it again and retry"))
            }
            other => VaultError::Internal(Box::new(other)),
        }
    }
}

impl From<KmsError> for VaultError {
    fn from(err: KmsError) -> Self {
        match err {
            // The KMS answers but will not use the key (access denied, key disabled or
            // pending deletion outside byok): unusable until an operator acts, 503 too.
            err @ (KmsError::Unavailable { .. } | KmsError::Refused { .. }) => VaultError::KmsUnavailable(err),
            KmsError::Destroyed(org) => VaultError::Conflict(format!("{org} was deleted (its keys are destroyed)")),
            other => VaultError::internal_by("KMS", other),
        }
    }
}

impl From<CryptoError> for VaultError {
    fn from(err: CryptoError) -> Self {
        match err {
            CryptoError::Kms(kms) => kms.into(),
            other => VaultError::Internal(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever keeps a key from being used fails closed as `kms_unavailable` (503), never
    /// as an internal error: an unreachable KMS, and one that answers but refuses.
    #[test]
    fn kms_refusals_are_unavailability() {
        for err in [KmsError::unavailable("down"), KmsError::refused("AccessDenied")] {
            assert!(matches!(VaultError::from(err), VaultError::KmsUnavailable(_)));
        }
    }
}
