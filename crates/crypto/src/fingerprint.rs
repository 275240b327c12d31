//! Fingerprints: a keyed hash (HMAC-SHA-256 under a per-org key) of a secret.
//!
//! The key makes a fingerprint useless for guessing a key offline, and different orgs'
//! fingerprints of the same key unrelated. The per-org key is a random 256-bit key
//! wrapped by the org's KEK like any DEK, so crypto-shredding an org also ends its
//! ability to fingerprint.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::{Dek, ProviderSecret};

const LABEL: &[u8] = b"byok/fingerprint/v1\0";

/// A per-org fingerprint key.
#[derive(Debug)]
pub struct FingerprintKey(Dek);

impl FingerprintKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(Dek::generate())
    }

    /// From an unwrapped key.
    pub fn from_dek(dek: Dek) -> Self {
        Self(dek)
    }

    /// The key as a DEK, for wrapping.
    pub fn as_dek(&self) -> &Dek {
        &self.0
    }
}

/// `fp_` followed by 128 bits of HMAC-SHA-256 in lowercase hex.
pub fn fingerprint(key: &FingerprintKey, secret: &ProviderSecret) -> String {
    // HMAC accepts keys of any length: new_from_slice cannot fail for 32 bytes.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.0.expose()) else {
        return String::from("fp_unavailable");
    };
    mac.update(LABEL);
    mac.update(secret.expose().as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(35);
    text.push_str("fp_");
    for byte in &digest[..16] {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_secret_same_fingerprint_only() {
        let key = FingerprintKey::generate();
        let other = FingerprintKey::generate();
        let a = ProviderSecret::new("sk-a-0123456789abcdef".into()).unwrap();
        let b = ProviderSecret::new("sk-b-0123456789abcdef".into()).unwrap();
        let fa = fingerprint(&key, &a);
        assert_eq!(fa.len(), 35);
        assert!(fa.starts_with("fp_"));
        assert_eq!(fa, fingerprint(&key, &ProviderSecret::new("sk-a-0123456789abcdef".into()).unwrap()));
        assert_ne!(fa, fingerprint(&key, &b));
        assert_ne!(fa, fingerprint(&other, &a));
    }
}
