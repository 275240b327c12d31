//! The `aws-kms` KMS backend: byok's per-org KEKs are AWS KMS keys, and DEKs are wrapped
//! with `Encrypt` and unwrapped with `Decrypt` by KMS, under an encryption context that
//! names the org and the KEK version.
//!
//! ```no_run
//! use byok_crypto::{Dek, Kms};
//! use byok_kms_aws::{AwsKms, AwsKmsConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Credentials come from the standard AWS chain (environment, profile, role).
//! let kms = AwsKms::open(&AwsKmsConfig::for_region("eu-central-1"))?;
//! kms.check_health()?;
//! let org = byok_domain::OrgId::generate();
//! kms.create_org_kek(&org)?; // a KMS key, alias/byok/<org id>
//! let wrapped = kms.wrap_dek(&org, &Dek::generate())?; // alg "AWS-KMS-SYMMETRIC-DEFAULT"
//! let dek = kms.unwrap_dek(&org, &wrapped)?;
//! # drop(dek);
//! # Ok(())
//! # }
//! ```
//!
//! # byok's own keys
//!
//! Without `key_arn`, every KEK version of an org is a KMS key of its own
//! (`SYMMETRIC_DEFAULT`, `ENCRYPT_DECRYPT`, created in KMS, never leaving it), found by
//! alias:
//!
//! | alias | points at |
//! | --- | --- |
//! | `alias/byok/<org id>` | the key of the org's current KEK version |
//! | `alias/byok/<org id>/v<n>` | the key of KEK version n |
//!
//! Each key's description is `byok KEK v<n> of <org id>` — the current version is read
//! from it, so wrapping costs one `DescribeKey` of the org's alias and one `Encrypt` by key
//! ARN — and it is tagged `byok:org` and `byok:kek-version`. Unwrapping is one `Decrypt`
//! through the version's alias. The prefix `alias/byok` is `alias_prefix` in
//! [`AwsKmsConfig`].
//!
//! * Rotation creates version n+1's key and alias and moves the org's alias to it; a
//!   rotation interrupted between the two, or run by two nodes at once, converges on
//!   one key (an existing version alias is taken over, the spare key discarded).
//! * Rewrapping is `ReEncrypt` from version n's context to the current one: the DEK is
//!   decrypted and encrypted again inside KMS and never reaches byok.
//! * Retiring version n schedules its key's deletion (the key refuses every operation at
//!   once) and deletes its alias.
//! * Deleting an org (crypto-shredding) schedules the deletion of the current key first,
//!   then of every version's key, deleting the version aliases: nothing unwraps any
//!   more, and the org's alias, left pointing at a key pending deletion, makes the org
//!   read as [`KmsError::Destroyed`] until AWS deletes the key (`pending_window_days`,
//!   7 by default, AWS's minimum); after that AWS removes the alias too and the org
//!   reads as unknown. Within the window the deletion can be cancelled in AWS — that is
//!   the only undo there is.
//! * An org moving out (`remove_org`) loses its aliases before its keys are scheduled for
//!   deletion, so it never reads as destroyed and may move back in.
//!
//! The platform's role needs `kms:CreateKey` and `kms:TagResource` (tags given at
//! creation) on `*`, and on byok's keys and aliases `kms:DescribeKey`, `kms:CreateAlias`,
//! `kms:UpdateAlias`, `kms:DeleteAlias`, `kms:Encrypt`, `kms:Decrypt`,
//! `kms:ReEncryptFrom`, `kms:ReEncryptTo` and `kms:ScheduleKeyDeletion`.
//!
//! # A customer's key (`key_arn`)
//!
//! A katman-c org can keep its KEK in its own AWS account: the customer creates a
//! symmetric key and grants the platform's role `kms:DescribeKey`, `kms:Encrypt`,
//! `kms:Decrypt`, `kms:ReEncryptFrom`, `kms:ReEncryptTo`, `kms:ListResourceTags`,
//! `kms:TagResource` and `kms:UntagResource` on it. Every KEK version of the orgs this KMS
//! serves is then that one key: the version is only in the encryption context, and what
//! byok must remember per org lives in one tag on the key, `byok:org:<org id>` = the
//! live versions (`3 4`, the last current) or `destroyed` (AWS allows 50 tags per key,
//! so one key serves at most about 50 orgs).
//!
//! * Rotation makes a new version *label* current and rewraps every DEK under it with
//!   `ReEncrypt` — which also moves them to the key's newest key material if the customer
//!   rotated it (AWS keeps older material for decryption). The key's material is the
//!   customer's to rotate; byok cannot.
//! * Retiring a version makes byok refuse it; nothing is deleted, since the key serves
//!   the other versions. The guarantee is byok's, not the key's: a party holding both the
//!   wrapped DEK and the key can still decrypt it with the old context.
//! * Deleting an org marks it destroyed in the tag, and byok refuses it from then on.
//!   byok never deletes or disables a customer's key: crypto-shredding is completed by
//!   the customer, by scheduling the key's deletion or revoking the platform's access.
//! * The customer disabling the key, scheduling its deletion or revoking access makes
//!   every call fail with [`KmsError::Refused`], at once and without any action by the
//!   platform, and every `Encrypt`/`Decrypt` byok does appears in the customer's
//!   CloudTrail with the org and version in its encryption context.
//!
//! # The encryption context
//!
//! `{"byok:org": "<org id>", "byok:kek-version": "<n>"}` on every `Encrypt`, `Decrypt` and
//! `ReEncrypt`. KMS authenticates it with the ciphertext, so a wrapped DEK copied to
//! another org, or relabelled with another version, fails to decrypt even where the key
//! is the same (a customer's key) — [`KmsError::Integrity`]. The context is not secret:
//! it appears in CloudTrail, which lets the key's owner audit every use per org.
//!
//! # Credentials, endpoint, threads
//!
//! Credentials come only from the standard AWS chain (environment, profile, web
//! identity, the ECS task's or EC2 instance's role) and are never part of the
//! configuration. Only the credentials are taken from the shared AWS configuration: the
//! endpoint (`endpoint_url`, `https://`, or `http://` on loopback only, since DEKs travel
//! in these requests), retries (`max_attempts`, standard mode with backoff) and timeouts
//! (3 s to connect, 5 s per attempt, 9 s per call — under the vault's 10 s deadline) are
//! byok's. TLS is rustls on ring with the platform's root certificates; no OpenSSL.
//!
//! The SDK is async and [`Kms`] methods block: the backend owns a two-thread tokio runtime,
//! and each method spawns its SDK call onto it and waits on a channel. It never calls
//! `block_on`, so it neither panics nor deadlocks from a blocking-pool thread (how the
//! vault calls it), a plain thread, or an async task; dropping the backend anywhere is
//! fine. The SDK copies a DEK into its request and response buffers (base64 in the JSON
//! bodies) and frees them without wiping them; byok wipes its own copies. At trace level
//! the SDK logs whole requests — an `Encrypt`'s body holds the DEK — so whoever sets up
//! logging keeps the `aws_*` crates at debug or quieter (`byok serve` does, whatever
//! `BYOK_LOG` says).
//!
//! # Errors
//!
//! * No answer (DNS, connection refused, TLS, timeout), throttling and server errors
//!   (5xx, `KMSInternalException`, `DependencyTimeoutException`,
//!   `KeyUnavailableException`) are [`KmsError::Unavailable`] — `kms_unavailable` — with a
//!   message that names the KMS (`AWS KMS (region …, endpoint …)`), the operation and
//!   AWS's error code.
//! * Access denied (or credentials refused), a key disabled or pending deletion by
//!   someone other than byok, and other refusals are [`KmsError::Refused`].
//! * A ciphertext KMS does not accept under the key and context
//!   (`InvalidCiphertextException`, `IncorrectKeyException`) is [`KmsError::Integrity`].
//! * A missing alias is [`KmsError::UnknownOrg`] or [`KmsError::UnknownVersion`]; the
//!   org's key pending deletion is [`KmsError::Destroyed`].
//!
//! [`Kms`]: byok_crypto::Kms
//! [`KmsError::Destroyed`]: byok_crypto::KmsError::Destroyed
//! [`KmsError::Integrity`]: byok_crypto::KmsError::Integrity
//! [`KmsError::Refused`]: byok_crypto::KmsError::Refused
//! [`KmsError::Unavailable`]: byok_crypto::KmsError::Unavailable
//! [`KmsError::UnknownOrg`]: byok_crypto::KmsError::UnknownOrg
//! [`KmsError::UnknownVersion`]: byok_crypto::KmsError::UnknownVersion
#![forbid(unsafe_code)]

mod backend;
mod bridge;
mod client;
mod config;
mod customer_key;
mod errors;
mod own_keys;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::AwsKms;
pub use client::{KeyDescription, KeyState};
pub use config::{
    is_credential_setting, AwsKmsConfig, CREDENTIALS_COME_FROM, CREDENTIAL_SETTINGS, DEFAULT_ALIAS_PREFIX,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_PENDING_WINDOW_DAYS,
};

use byok_crypto::KmsError;
use byok_domain::OrgId;

/// The algorithm name recorded in [`byok_crypto::WrappedDek::alg`]: a KMS ciphertext of
/// a `SYMMETRIC_DEFAULT` key (AES-256-GCM inside KMS).
pub const AWS_KMS_ALG: &str = "AWS-KMS-SYMMETRIC-DEFAULT";
/// The encryption-context key naming the org.
pub const CONTEXT_ORG: &str = "byok:org";
/// The encryption-context key naming the KEK version.
pub const CONTEXT_KEK_VERSION: &str = "byok:kek-version";

/// The encryption context of a DEK wrapped for `org` under KEK `version`.
pub(crate) fn context(org: &OrgId, version: u32) -> client::Context {
    client::Context::from([
        (CONTEXT_ORG.to_owned(), org.to_string()),
        (CONTEXT_KEK_VERSION.to_owned(), version.to_string()),
    ])
}

/// Why [`AwsKms::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration cannot work (missing region, malformed key ARN, plain http to a
    /// remote endpoint…); retrying will not help.
    #[error("aws-kms configuration: {0}")]
    Config(String),
    /// The backend could not be set up.
    #[error(transparent)]
    Kms(#[from] KmsError),
}
