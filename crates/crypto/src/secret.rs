//! Secret-holding types. None implements `Display` or `Serialize`; `Debug` prints a
//! placeholder; memory is zeroized on drop.

use std::fmt;

use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

/// The longest provider key accepted, in bytes. Real keys are well under 1 KiB; AWS
/// session tokens and service-account JSON can be a few KiB.
pub const MAX_SECRET_LEN: usize = 16 * 1024;

/// Why a provider secret was refused. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Empty or only whitespace.
    #[error("secret must not be empty")]
    Empty,
    /// Longer than [`MAX_SECRET_LEN`].
    #[error("secret is too long ({len} bytes; at most {MAX_SECRET_LEN})")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Contains a control character (a pasted newline would corrupt the injected header).
    #[error("secret contains a control character at byte {position} (a stray newline or tab?); provider keys are printable text")]
    ControlCharacter {
        /// Byte offset of the first control character.
        position: usize,
    },
}

/// A provider API key in plaintext. Exists only while sealing, and inside the data
/// plane's injection step.
pub struct ProviderSecret(SecretString);

impl ProviderSecret {
    /// Validate and wrap. A single trailing newline (as `echo` or a file adds) is removed
    /// before validation; anything else is refused rather than silently altered.
    pub fn new(text: String) -> Result<Self, SecretError> {
        let text = Zeroizing::new(text);
        let trimmed = text.strip_suffix("\r\n").or_else(|| text.strip_suffix('\n')).unwrap_or(&text);
        if trimmed.trim().is_empty() {
            return Err(SecretError::Empty);
        }
        if trimmed.len() > MAX_SECRET_LEN {
            return Err(SecretError::TooLong { len: trimmed.len() });
        }
        if let Some(position) = trimmed.bytes().position(|b| b.is_ascii_control()) {
            return Err(SecretError::ControlCharacter { position });
        }
        Ok(Self(SecretString::from(trimmed.to_owned())))
    }

    /// Rebuild from opened plaintext bytes (already validated when sealed).
    pub(crate) fn from_opened(bytes: Zeroizing<Vec<u8>>) -> Result<Self, SecretError> {
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| SecretError::ControlCharacter { position: 0 })?;
        Self::new(text)
    }

    /// The key, for the one place that must use it (sealing, header injection).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ProviderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderSecret([REDACTED])")
    }
}

impl<'de> Deserialize<'de> for ProviderSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ProviderSecret::new(text).map_err(serde::de::Error::custom)
    }
}

/// A 256-bit data-encryption key.
pub struct Dek(SecretBox<[u8; 32]>);

impl Dek {
    /// A fresh random key from the OS generator.
    pub fn generate() -> Self {
        let mut bytes = Box::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self(SecretBox::new(bytes))
    }

    /// From raw bytes (inside a KMS backend, after unwrapping).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(SecretBox::new(Box::new(array))))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = ProviderSecret::new("sk-canary-123".into()).unwrap();
        assert!(!format!("{secret:?}").contains("canary"));
        let dek = Dek::generate();
        assert_eq!(format!("{dek:?}"), "Dek([REDACTED])");
    }

    #[test]
    fn validation_names_the_problem_without_the_secret() {
        assert_eq!(ProviderSecret::new(String::new()).unwrap_err(), SecretError::Empty);
        assert_eq!(ProviderSecret::new(" \n".into()).unwrap_err(), SecretError::Empty);
        let err = ProviderSecret::new("sk-abc\ndef".into()).unwrap_err();
        assert_eq!(err, SecretError::ControlCharacter { position: 6 });
        assert!(!err.to_string().contains("sk-abc"));
        assert!(matches!(ProviderSecret::new("x".repeat(MAX_SECRET_LEN + 1)), Err(SecretError::TooLong { .. })));
        assert_eq!(ProviderSecret::new("sk-ok\n".into()).unwrap().expose(), "sk-ok");
        assert_eq!(ProviderSecret::new("sk-ok\r\n".into()).unwrap().expose(), "sk-ok");
    }

    #[test]
    fn deserializes_with_validation() {
        let ok: ProviderSecret = serde_json::from_str("\"sk-1\"").unwrap();
        assert_eq!(ok.expose(), "sk-1");
        let err = serde_json::from_str::<ProviderSecret>("\"a\\u0007b\"").unwrap_err();
        assert!(err.to_string().contains("control character"));
    }
}
