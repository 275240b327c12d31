//! The `pkcs11` KMS backend: byok's per-org KEKs live in a PKCS#11 token (a hardware
//! security module, or SoftHSM2 in tests) and never leave it.
//!
//! ```no_run
//! use byok_crypto::{Dek, Kms};
//! use byok_kms_pkcs11::{Pkcs11Config, Pkcs11Kms};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: Pkcs11Config = toml::from_str(
//!     r#"
//!     module = "/usr/lib/softhsm/libsofthsm2.so"
//!     token_label = "byok"
//!     pin_file = "/run/secrets/byok-hsm-pin"
//!     "#,
//! )?;
//! let kms = Pkcs11Kms::open(&config)?;
//! let org = byok_domain::OrgId::generate();
//! kms.create_org_kek(&org)?;
//! let wrapped = kms.wrap_dek(&org, &Dek::generate())?; // alg "A256KWP", 40 bytes
//! let dek = kms.unwrap_dek(&org, &wrapped)?;
//! # drop(dek);
//! # Ok(())
//! # }
//! ```
//!
//! # What is in the token
//!
//! | object | class | label | notes |
//! | --- | --- | --- | --- |
//! | KEK version *n* of an org | `CKO_SECRET_KEY`, `CKK_AES`, 256 bits | `byok:<org id>:v<n>` | `CKA_ID` = `byok:<org id>` (shared by the org's versions); generated in the token by `C_GenerateKey`; `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` = true; `CKA_EXTRACTABLE` = false; `CKA_WRAP`/`CKA_UNWRAP` = true; `CKA_ENCRYPT`/`CKA_DECRYPT`/`CKA_SIGN`/`CKA_DERIVE` = false; `CKA_MODIFIABLE` = false |
//! | "org destroyed" marker | `CKO_DATA` | `byok:<org id>:destroyed` | `CKA_TOKEN`, `CKA_PRIVATE` = true; written *before* the KEKs are destroyed |
//!
//! The current KEK version is the highest live version label of the org. Rotation
//! generates version n+1; retiring destroys one (non-current) version object; destroying an
//! org writes the marker, then destroys every version, so [`KmsError::Destroyed`] is
//! reported across restarts and a half-finished destruction already reads as destroyed.
//!
//! # Wrapping
//!
//! DEKs are wrapped and unwrapped *by the token*:
//!
//! * `wrap_dek` imports the DEK as a session object (`CKA_TOKEN` = false, sensitive,
//!   extractable only by wrapping), calls `C_WrapKey` with the KEK, and destroys the object.
//! * `unwrap_dek` calls `C_UnwrapKey` into a session object that is extractable and not
//!   sensitive, reads its `CKA_VALUE` into a [`byok_crypto::Dek`], wipes the intermediate
//!   buffers and destroys the object.
//!
//! A DEK leaving the token is inherent to envelope encryption with a host-side AEAD; the
//! KEK never does. (cryptoki copies an attribute value once internally when reading it;
//! that buffer is freed, not wiped, and is out of reach of safe code.)
//!
//! # Choosing the mechanism
//!
//! `mechanism` in [`Pkcs11Config`]; both are deterministic, authenticated key-wrap modes
//! that turn a 32-byte DEK into 40 bytes:
//!
//! * `aes-key-wrap-pad` (default): `CKM_AES_KEY_WRAP_PAD`, AES Key Wrap with Padding
//!   (RFC 5649, NIST SP 800-38F KWP), recorded as `alg = "A256KWP"`.
//! * `aes-key-wrap`: `CKM_AES_KEY_WRAP`, AES Key Wrap (RFC 3394, SP 800-38F KW), recorded
//!   as `alg = "A256KW"`. A 256-bit DEK is a whole number of 64-bit blocks, so it needs no
//!   padding.
//!
//! AES-GCM key wrapping is not offered: SoftHSM2 (and several HSMs) cannot do it through
//! `C_WrapKey`.
//!
//! For a real HSM, **`aes-key-wrap` is the portable choice.** RFC 3394 means the same on
//! every token, while `CKM_AES_KEY_WRAP_PAD` (0x210A) does not: PKCS#11 2.40 defines it
//! as PKCS#7 padding followed by RFC 3394, SoftHSM2 and Entrust nShield implement RFC 5649
//! under it, PKCS#11 3.0 moved RFC 5649 to `CKM_AES_KEY_WRAP_KWP` (0x210B), and Thales
//! Luna offers RFC 5649 under a vendor mechanism (`CKM_LUNA_AES_KWP`) that this backend
//! does not use. AWS CloudHSM and YubiHSM 2 have their own vendor wrap mechanisms too.
//! List what a token offers with `pkcs11-tool --module <lib.so> --list-mechanisms`; pick
//! `aes-key-wrap-pad` only where RFC 5649 is wanted and the token's 0x210A is RFC 5649.
//!
//! [`Pkcs11Kms::open`] checks before any DEK is wrapped: it refuses a token that cannot
//! generate AES keys or cannot wrap and unwrap with the configured mechanism, and it runs
//! a known-answer test (a 256-bit test KEK wrapping a 32-byte test key, compared with
//! RFC 3394 §4.6 or its RFC 5649 counterpart), so a token whose `CKM_AES_KEY_WRAP_PAD` is
//! the PKCS#7 variant fails at startup instead of writing records no other token can
//! open. (SoftHSM2 2.6 zero-pads keys whose length is not a multiple of 8 before RFC 5649;
//! DEKs never are.)
//!
//! Unwrapping follows the record's `alg`, not the configuration, so changing `mechanism`
//! keeps existing records readable (rewrap them with a KEK rotation). A record whose
//! `alg` is neither `A256KWP` nor `A256KW`, or one the token cannot unwrap, is refused with
//! [`KmsError::UnsupportedAlgorithm`].
//!
//! # Lookups, sessions and threads
//!
//! [`Kms`] methods block; callers run them on a blocking thread (see `byok-vault`'s
//! `KmsHandle`, whose concurrency limit should not exceed `max_sessions`). The library is
//! loaded and initialized once per process per module (`CKF_OS_LOCKING_OK`); the backend
//! keeps a pool of at most `max_sessions` read/write sessions, logged in as the user
//! (login state belongs to the application in PKCS#11, so the PIN is presented once — and
//! a second backend on the same token in the same process shares that login). Each call
//! takes a session of its own. A session that fails because it or the token is gone is
//! closed and replaced on a later call; a refused PIN is not retried, so a wrong PIN
//! cannot lock the token.
//!
//! PKCS#11 finds objects only by exact attribute values. Wrapping looks up the org's
//! destruction marker and its KEK versions (by the shared `CKA_ID`) on every call, so a
//! rotation by another process is seen at once. Unwrapping names its version, and the
//! backend caches `(org, version) → object handle`; a cached handle is used only after its
//! `CKA_LABEL` is read back and matches, otherwise the full lookup (marker included) runs
//! again. On SoftHSM2 a lookup costs time linear in the number of objects in the token
//! (it decrypts each private object's label), so the cache is what keeps unwrapping flat.
//!
//! Within a process, creating or destroying token objects excludes every other call on
//! the same token (a read/write lock): SoftHSM2's file store fails `C_GenerateKey` and
//! loses objects when they are written while other threads search (SoftHSMv2 #573). Such
//! changes are rare (org creation, rotation, retirement, destruction). PKCS#11 has no
//! cross-process lock: run one org's rotation from one process at a time.
//!
//! # Errors
//!
//! Library, session, login and device failures are [`KmsError::Unavailable`], with the
//! operation and the `CKR_…` code; bad wrapped data (`CKR_WRAPPED_KEY_INVALID`,
//! `CKR_WRAPPED_KEY_LEN_RANGE`, `CKR_ENCRYPTED_DATA_INVALID`…) is
//! [`KmsError::Integrity`]. SoftHSM2 reports a failed unwrap check as
//! `CKR_GENERAL_ERROR`; `C_UnwrapKey` failing that way counts as an integrity failure if
//! the session still answers `C_GetSessionInfo` right after. The PIN is held in a
//! [`secrecy::SecretString`] and appears in no message and no `Debug` output.
//!
//! [`KmsError::Destroyed`]: byok_crypto::KmsError::Destroyed
//! [`KmsError::Integrity`]: byok_crypto::KmsError::Integrity
//! [`KmsError::UnsupportedAlgorithm`]: byok_crypto::KmsError::UnsupportedAlgorithm
//! [`KmsError::Unavailable`]: byok_crypto::KmsError::Unavailable
//! [`Kms`]: byok_crypto::Kms
#![forbid(unsafe_code)]

mod backend;
mod config;
mod errors;
mod pool;
mod selftest;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{KekProtection, Pkcs11Kms, ValueAccess};
pub use config::{Pkcs11Config, WrapMechanism, DEFAULT_MAX_SESSIONS};

use byok_crypto::KmsError;

/// Why [`Pkcs11Kms::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration cannot work (missing PIN source, unknown token label, a
    /// mechanism the token lacks…); retrying will not help.
    #[error("pkcs11 KMS configuration: {0}")]
    Config(String),
    /// The module or token could not be used (retry may help).
    #[error(transparent)]
    Kms(#[from] KmsError),
}
