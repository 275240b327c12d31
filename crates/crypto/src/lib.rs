//! byok's cryptography: the only crate that ever sees a plaintext provider key or a DEK.
//!
//! * [`secret`]: types for secrets that cannot be printed or serialized by accident.
//! * [`envelope`]: seal/open a credential version (AES-256-GCM under a fresh DEK, with
//!   associated data binding org, credential, version and provider).
//! * [`kms`]: the KMS interface (DEKs are wrapped and unwrapped *inside* a backend) and
//!   the `local` keyring backend.
//! * [`fingerprint`]: keyed hashes that identify a secret without revealing it.
//! * [`token`]: workload and admin token text and their stored hashes.
//! * [`bedrock`]: the JSON secret of an AWS Bedrock credential (access key or API key,
//!   and region), read and checked.
#![forbid(unsafe_code)]

pub mod bedrock;
pub mod chain;
pub mod envelope;
pub mod fingerprint;
pub mod kms;
pub mod secret;
pub mod token;

pub use bedrock::{BedrockAuth, BedrockKey, BedrockSecretError};
pub use envelope::{open, seal, CryptoError, SealedSecret, SecretContext, AEAD_AES_256_GCM};
pub use fingerprint::{fingerprint, FingerprintKey};
pub use kms::{local::LocalKeyring, Kms, KmsError, WrappedDek};
pub use secret::{Dek, ProviderSecret, SecretError};
pub use token::{TokenHash, TokenKind, TokenText};
