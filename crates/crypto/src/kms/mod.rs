//! The KMS interface.
//!
//! Designed for PKCS#11 first: a backend holds each org's versioned KEKs, and DEKs are
//! wrapped and unwrapped *inside* the backend, so a KEK never leaves it. Methods are
//! blocking (a PKCS#11 session is); async callers run them on a blocking thread.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod local;

use byok_domain::{BoxError, KmsName, OrgId};
use serde::{Deserialize, Serialize};

use crate::secret::Dek;

/// Why a KMS operation failed. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// The backend cannot be reached or used right now (retry may help).
    #[error("KMS unavailable: {reason}")]
    Unavailable {
        /// What could not be done.
        reason: String,
        /// The error that stopped it (I/O, the SDK's, the token's), if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The org has no KEK in this backend.
    #[error("no KEK for {0}")]
    UnknownOrg(OrgId),
    /// The org already has KEKs (creating them twice would orphan data).
    #[error("{0} already has a KEK")]
    OrgExists(OrgId),
    /// The KEK version needed to unwrap is not in the backend.
    #[error("KEK version {version} of {org} does not exist")]
    UnknownVersion {
        /// The org.
        org: OrgId,
        /// The missing version.
        version: u32,
    },
    /// The org's KEKs were destroyed (crypto-shredded).
    #[error("the KEKs of {0} were destroyed; its data can no longer be opened")]
    Destroyed(OrgId),
    /// The wrapped key failed its integrity check (wrong KEK, tampered bytes).
    #[error("wrapped key failed its integrity check")]
    Integrity,
    /// The wrapping algorithm named in the record is not one this backend implements.
    #[error("unsupported key-wrap algorithm '{0}'")]
    UnsupportedAlgorithm(String),
    /// The KMS answered and refused: access denied, or a key disabled or scheduled for
    /// deletion by someone other than byok. Retrying will not help until the KMS's
    /// policy or the key's state is changed.
    #[error("KMS refused: {reason}")]
    Refused {
        /// What was refused.
        reason: String,
        /// The KMS's answer, if it came as an error value.
        #[source]
        source: Option<BoxError>,
    },
}

impl KmsError {
    /// The backend cannot be used right now: `reason`, with no further cause.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable { reason: reason.into(), source: None }
    }

    /// The backend cannot be used right now: `reason`, because of `source`.
    pub fn unavailable_by(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable { reason: reason.into(), source: Some(source.into()) }
    }

    /// The KMS answered and refused: `reason`.
    pub fn refused(reason: impl Into<String>) -> Self {
        Self::Refused { reason: reason.into(), source: None }
    }

    /// The KMS answered and refused: `reason`, with its answer as `source`.
    pub fn refused_by(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Refused { reason: reason.into(), source: Some(source.into()) }
    }

    /// Whether a later retry may succeed (the KMS could not be used, as opposed to a
    /// refusal or a key that is missing, destroyed or corrupt).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A DEK wrapped by a KEK: what the store keeps next to a ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedDek {
    /// The KEK version that wrapped it.
    pub kek_version: u32,
    /// The wrapping algorithm, e.g. `A256GCM-KW` (local) or `A256KWP` (RFC 5649).
    pub alg: String,
    /// The wrapped bytes.
    pub bytes: Vec<u8>,
    /// Which configured KMS holds the KEK. Backends leave it at `default`; the caller
    /// that routes between several KMSs records the one it used.
    #[serde(default)]
    pub kms: KmsName,
}

/// A KMS backend: holds per-org, versioned KEKs and wraps/unwraps DEKs with them.
pub trait Kms: Send + Sync + 'static {
    /// A short name (`local`, `pkcs11`).
    fn backend_name(&self) -> &'static str;

    /// Create version 1 of a new org's KEK. Fails with [`KmsError::OrgExists`] if the
    /// org already has one.
    fn create_org_kek(&self, org: &OrgId) -> Result<u32, KmsError>;

    /// The org's current KEK version.
    fn current_kek_version(&self, org: &OrgId) -> Result<u32, KmsError>;

    /// Make a new KEK version current; returns it. Older versions still unwrap.
    fn rotate_kek(&self, org: &OrgId) -> Result<u32, KmsError>;

    /// Wrap `dek` under the org's current KEK.
    fn wrap_dek(&self, org: &OrgId, dek: &Dek) -> Result<WrappedDek, KmsError>;

    /// Unwrap a DEK wrapped under any live version of the org's KEK.
    fn unwrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<Dek, KmsError>;

    /// Re-wrap a DEK under the org's current KEK version, without anything but the DEK
    /// being unwrapped (a credential's secret is never decrypted for this). Backends that
    /// can keep the DEK inside (PKCS#11: unwrap to a non-extractable session object,
    /// wrap it again) override this; the default unwraps and wraps.
    fn rewrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<WrappedDek, KmsError> {
        let dek = self.unwrap_dek(org, wrapped)?;
        self.wrap_dek(org, &dek)
    }

    /// Create KEK `version` of an org moving in from another KMS and make it current
    /// here. Versions are numbered per org across every KMS, so the caller names it.
    /// Idempotent when `version` is already this backend's current version; fails if the
    /// backend holds a later one or the org was destroyed here.
    fn create_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError>;

    /// Destroy every KEK version of an org that has moved to another KMS. Unlike
    /// [`Kms::destroy_org_keks`] nothing marks the org destroyed, so it may move back
    /// later. Idempotent: an org the backend does not know is fine.
    fn remove_org(&self, org: &OrgId) -> Result<(), KmsError>;

    /// Destroy one old KEK version (nothing may still be wrapped under it).
    fn retire_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError>;

    /// Destroy every KEK version of the org (crypto-shredding). Idempotent.
    fn destroy_org_keks(&self, org: &OrgId) -> Result<(), KmsError>;

    /// Whether the backend is usable (for `/readyz`).
    fn check_health(&self) -> Result<(), KmsError>;

    /// Which KMS this is, in a form every node that reaches the same keys derives alike
    /// (`local:<keyring id>`, `pkcs11:<token label>:<serial>`): the nodes sharing a
    /// database must agree on it, or one node's KEKs are missing on another. `None`: the
    /// backend cannot tell (nothing is checked).
    fn identity(&self) -> Option<String> {
        None
    }
}
