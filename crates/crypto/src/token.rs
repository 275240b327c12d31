//! Bearer tokens: workload tokens (`byok_…`) and admin tokens (`byokadm_…`).
//!
//! A token is 256 random bits; only its SHA-256 hash is stored. Because the token is
//! uniformly random, a fast hash is enough: there is nothing to brute-force.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const HASH_LABEL: &[u8] = b"byok/token/v1\0";

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Held by applications instead of a provider key.
    Workload,
    /// Operator and org-admin tokens for the admin API.
    Admin,
}

impl TokenKind {
    /// The visible prefix of this kind's tokens.
    pub fn prefix(&self) -> &'static str {
        match self {
            TokenKind::Workload => "byok_",
            TokenKind::Admin => "byokadm_",
        }
    }
}

/// A token's text: shown once, then only its hash is kept.
pub struct TokenText(SecretString);

impl TokenText {
    /// A fresh token of `kind`.
    pub fn generate(kind: TokenKind) -> Self {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref());
        Self(SecretString::from(format!("{}{body}", kind.prefix())))
    }

    /// Wrap text read from a file or header.
    pub fn from_text(text: String) -> Self {
        Self(SecretString::from(text))
    }

    /// The token text, to show once or send as a bearer.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Its stored hash.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.expose())
    }
}

impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenText([REDACTED])")
    }
}

/// SHA-256 of a token, domain-separated.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hash presented token text.
    pub fn of(text: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(HASH_LABEL);
        hasher.update(text.as_bytes());
        Self(hasher.finalize().into())
    }

    /// The raw hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hash_stably() {
        let a = TokenText::generate(TokenKind::Workload);
        let b = TokenText::generate(TokenKind::Workload);
        assert!(a.expose().starts_with("byok_"));
        assert_eq!(a.expose().len(), 5 + 43);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash(), TokenHash::of(a.expose()));
        assert_ne!(a.hash(), b.hash());
        assert!(TokenText::generate(TokenKind::Admin).expose().starts_with("byokadm_"));
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
