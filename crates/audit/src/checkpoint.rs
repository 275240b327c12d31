//! Signed checkpoints: the heads of an org's audit chains at a moment, signed with the
//! server's Ed25519 key. An auditor keeps a checkpoint outside byok; verifying it later
//! proves nothing before it changed (each head must still be there with the same hash,
//! which the chain ties to everything before it).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use base64::Engine;
use byok_domain::{OrgId, Timestamp};
use byok_store::HeadRecord;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What a checkpoint states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointBody {
    /// The org whose chains these are.
    pub org_id: OrgId,
    /// When it was taken.
    pub at: Timestamp,
    /// Every chain's head.
    pub heads: Vec<HeadRecord>,
    /// The signing key's id (`ed25519:<hex>`).
    pub key_id: String,
}

/// A checkpoint and its signature over the JSON of `checkpoint` (as serialized by byok:
/// fields in declaration order, no whitespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The statement.
    pub checkpoint: CheckpointBody,
    /// Ed25519 signature, base64.
    pub signature: String,
}

/// The server's public key, for auditors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PublicKey {
    /// `ed25519:<hex of the first 8 bytes of SHA-256(public key)>`.
    pub key_id: String,
    /// The 32-byte Ed25519 public key, base64.
    pub public_key: String,
    /// `ed25519`.
    pub algorithm: &'static str,
}

/// Why a signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("audit signing key {path}: {why}")]
pub struct KeyError {
    path: String,
    why: String,
}

/// The server's checkpoint signing key.
pub struct AuditSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

fn key_id(public: &VerifyingKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    format!("ed25519:{}", byok_crypto::chain::hex(&digest[..8]))
}

impl AuditSigner {
    /// Load the key from `path` (32 raw bytes, mode 0600), creating it if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let fail = |why: String| KeyError { path: path.display().to_string(), why };
        let seed = if path.exists() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = fs::metadata(path).map_err(|e| fail(e.to_string()))?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(fail(format!("readable by group or others (mode {:o}); run chmod 600", mode & 0o777)));
                }
            }
            let bytes = Zeroizing::new(fs::read(path).map_err(|e| fail(e.to_string()))?);
            let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| fail("must hold exactly 32 bytes".into()))?;
            Zeroizing::new(seed)
        } else {
            let mut seed = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(seed.as_mut());
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(|e| fail(e.to_string()))?;
            file.write_all(seed.as_ref()).and_then(|()| file.sync_all()).map_err(|e| fail(e.to_string()))?;
            seed
        };
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id(&key.verifying_key());
        Ok(Self { key, key_id })
    }

    /// The public half, for auditors.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id.clone(),
            public_key: base64::engine::general_purpose::STANDARD.encode(self.key.verifying_key().as_bytes()),
            algorithm: "ed25519",
        }
    }

    /// Sign a checkpoint of `heads`.
    pub fn sign(&self, org_id: OrgId, heads: Vec<HeadRecord>) -> SignedCheckpoint {
        let checkpoint = CheckpointBody { org_id, at: Timestamp::now(), heads, key_id: self.key_id.clone() };
        let bytes = serde_json::to_vec(&checkpoint).unwrap_or_default();
        let signature = base64::engine::general_purpose::STANDARD.encode(self.key.sign(&bytes).to_bytes());
        SignedCheckpoint { checkpoint, signature }
    }

    /// Whether `signed` carries this key's valid signature.
    pub fn verify(&self, signed: &SignedCheckpoint) -> bool {
        verify_with(&self.key.verifying_key(), signed)
    }
}

/// Check a checkpoint's signature with a public key given as [`PublicKey::public_key`]
/// shows it (base64 of the 32 bytes): another node's, as the store lists them.
pub fn verify_with_encoded(public_key: &str, signed: &SignedCheckpoint) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(public_key) else { return false };
    let Ok(raw) = <[u8; 32]>::try_from(raw.as_slice()) else { return false };
    VerifyingKey::from_bytes(&raw).is_ok_and(|public| verify_with(&public, signed))
}

/// Check a checkpoint's signature with a public key (what an auditor does offline).
pub fn verify_with(public: &VerifyingKey, signed: &SignedCheckpoint) -> bool {
    if signed.checkpoint.key_id != key_id(public) {
        return false;
    }
    let Ok(bytes) = serde_json::to_vec(&signed.checkpoint) else { return false };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&signed.signature) else { return false };
    let Ok(raw) = <[u8; 64]>::try_from(raw.as_slice()) else { return false };
    public.verify(&bytes, &Signature::from_bytes(&raw)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_detect_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-signing.key");
        let signer = AuditSigner::load_or_create(&path).unwrap();
        let again = AuditSigner::load_or_create(&path).unwrap();
        assert_eq!(signer.public_key(), again.public_key());
        let heads = vec![HeadRecord { chain: "events".into(), seq: 7, hash: "ab".repeat(32) }];
        let signed = signer.sign(OrgId::generate(), heads);
        assert!(signer.verify(&signed));
        let mut forged = signed.clone();
        forged.checkpoint.heads[0].seq = 6;
        assert!(!signer.verify(&forged));
        let other = AuditSigner::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(!other.verify(&signed));
        // Another node checks it with the public key the store lists.
        assert!(verify_with_encoded(&signer.public_key().public_key, &signed));
        assert!(!verify_with_encoded(&other.public_key().public_key, &signed));
        assert!(!verify_with_encoded(&signer.public_key().public_key, &forged));
        assert!(!verify_with_encoded("not base64", &signed));
        assert!(!format!("{signer:?}").contains(&signed.signature));
    }
}
