//! Envelope encryption of one credential version.
//!
//! `seal`: fresh DEK → AES-256-GCM(secret, nonce, aad) → DEK wrapped by the org's current
//! KEK inside the KMS. `open` reverses it. The associated data binds the ciphertext to
//! its org, credential, version and provider, so a ciphertext copied to another row, or
//! a row whose provider was edited, fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use byok_domain::{CredentialId, OrgId, ProviderId};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::kms::{Kms, KmsError, WrappedDek};
use crate::secret::{Dek, ProviderSecret};

/// Name of the only AEAD in use, recorded with each sealed secret.
pub const AEAD_AES_256_GCM: &str = "A256GCM";

/// Domain separator of the associated-data encoding; bump with the format.
const AAD_LABEL: &[u8] = b"byok/credential-secret/v1";

/// Why sealing or opening failed. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The KMS refused or is unreachable.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The ciphertext, its associated data or its DEK do not belong together.
    #[error(
        "sealed secret failed its integrity check (wrong key, or it belongs to another credential, version or org)"
    )]
    Integrity,
    /// The record names an algorithm this build cannot open.
    #[error("unsupported AEAD '{0}'")]
    UnsupportedAlgorithm(String),
}

/// What a sealed secret is bound to; becomes the AEAD's associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretContext {
    /// Owning org.
    pub org: OrgId,
    /// Owning credential.
    pub credential: CredentialId,
    /// Version number.
    pub version: u32,
    /// The credential's provider.
    pub provider: ProviderId,
}

impl SecretContext {
    /// Length-prefixed fields after a label: unambiguous whatever the field contents.
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(96);
        for field in [
            AAD_LABEL.to_vec(),
            self.org.to_string().into_bytes(),
            self.credential.to_string().into_bytes(),
            self.version.to_be_bytes().to_vec(),
            self.provider.as_str().as_bytes().to_vec(),
        ] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(&field);
        }
        aad
    }
}

/// A sealed credential version, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// The AEAD (`A256GCM`).
    pub aead: String,
    /// 96-bit nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext with its 128-bit tag.
    pub ciphertext: Vec<u8>,
    /// The DEK, wrapped by the org's KEK.
    pub wrapped_dek: WrappedDek,
}

/// Seal `secret` for `context` under a fresh DEK wrapped by the org's current KEK.
pub fn seal(kms: &dyn Kms, context: &SecretContext, secret: &ProviderSecret) -> Result<SealedSecret, CryptoError> {
    let dek = Dek::generate();
    let wrapped_dek = kms.wrap_dek(&context.org, &dek)?;
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new(dek.expose().into());
    let aad = context.associated_data();
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret.expose().as_bytes(), aad: &aad })
        .map_err(|_| CryptoError::Integrity)?;
    Ok(SealedSecret { aead: AEAD_AES_256_GCM.to_owned(), nonce: nonce.to_vec(), ciphertext, wrapped_dek })
}

/// Open a sealed secret: unwrap its DEK in the KMS, then decrypt and authenticate.
pub fn open(kms: &dyn Kms, context: &SecretContext, sealed: &SealedSecret) -> Result<ProviderSecret, CryptoError> {
    let dek = kms.unwrap_dek(&context.org, &sealed.wrapped_dek)?;
    open_with_dek(&dek, context, sealed)
}

/// Open with an already-unwrapped DEK (the data plane's bounded DEK cache uses this).
pub fn open_with_dek(dek: &Dek, context: &SecretContext, sealed: &SealedSecret) -> Result<ProviderSecret, CryptoError> {
    if sealed.aead != AEAD_AES_256_GCM {
        return Err(CryptoError::UnsupportedAlgorithm(sealed.aead.clone()));
    }
    if sealed.nonce.len() != 12 {
        return Err(CryptoError::Integrity);
    }
    let cipher = Aes256Gcm::new(dek.expose().into());
    let aad = context.associated_data();
    let plaintext = cipher
        .decrypt(Nonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: &aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Integrity)?;
    ProviderSecret::from_opened(plaintext).map_err(|_| CryptoError::Integrity)
}
