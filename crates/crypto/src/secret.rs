//! Secret-holding types. None implements `Display` or `Serialize`; `Debug` prints a
//! placeholder; memory is zeroized on drop.

use std::fmt;

use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

/// The shortest provider key accepted, in bytes. Every real provider key is longer (OpenAI
/// `sk-…` 51+, Anthropic ~108, Gemini 39, Azure 32, Mistral 32, Groq 56, AWS secret keys
/// 40). Below this a key cannot be masked safely when an upstream echoes it: the sidecar
/// masks its raw text without regard to case, and its hex and base64 forms; those of a
/// short key (a few characters of base64) turn up in ordinary text, so either innocent
/// text is mangled or a form is let through. A key that short is also guessable.
pub const MIN_SECRET_LEN: usize = 16;

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
    /// Shorter than [`MIN_SECRET_LEN`].
    #[error(
        "secret is too short: provider keys are at least {MIN_SECRET_LEN} bytes (byok cannot reliably mask a shorter key \
         when a provider echoes it, and a key that short is guessable)"
    )]
    TooShort,
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
    /// Opened bytes that are not UTF-8 (a corrupt or foreign record: what was sealed was
    /// validated text).
    #[error("the opened secret is not UTF-8 (invalid at byte {position})")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        position: usize,
    },
}

/// A provider API key in plaintext. Exists only while sealing, and inside the data
/// plane's injection step.
pub struct ProviderSecret(SecretString);

impl ProviderSecret {
    /// Validate and wrap. A single trailing newline (as `echo` or a file adds) is removed
    /// before validation; anything else is refused rather than silently altered. A secret
    /// shorter than [`MIN_SECRET_LEN`] is refused.
    pub fn new(text: String) -> Result<Self, SecretError> {
        Self::validated(text, MIN_SECRET_LEN)
    }

    /// Rebuild from opened plaintext bytes (already validated when sealed). The minimum
    /// length is not applied: a secret sealed before it existed still opens (the sidecar
    /// still masks its echoes, in their textual forms).
    pub(crate) fn from_opened(bytes: Zeroizing<Vec<u8>>) -> Result<Self, SecretError> {
        // Read in place: the only copy is the one `validated` wraps (zeroized on drop).
        let text = std::str::from_utf8(&bytes).map_err(|e| SecretError::NotUtf8 { position: e.valid_up_to() })?;
        Self::validated(text.to_owned(), 1)
    }

    fn validated(text: String, min_len: usize) -> Result<Self, SecretError> {
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
        if trimmed.len() < min_len {
            return Err(SecretError::TooShort);
        }
        Ok(Self(SecretString::from(trimmed.to_owned())))
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
        let secret = ProviderSecret::new("sk-canary-0123456789".into()).unwrap();
        assert!(!format!("{secret:?}").contains("canary"));
        let dek = Dek::generate();
        assert_eq!(format!("{dek:?}"), "Dek([REDACTED])");
    }

    #[test]
    fn validation_names_the_problem_without_the_secret() {
        assert_eq!(ProviderSecret::new(String::new()).unwrap_err(), SecretError::Empty);
        assert_eq!(ProviderSecret::new(" \n".into()).unwrap_err(), SecretError::Empty);
        let err = ProviderSecret::new("sk-abc-0123456789\ndef".into()).unwrap_err();
        assert_eq!(err, SecretError::ControlCharacter { position: 17 });
        assert!(!err.to_string().contains("sk-abc"));
        assert!(matches!(ProviderSecret::new("x".repeat(MAX_SECRET_LEN + 1)), Err(SecretError::TooLong { .. })));
        assert_eq!(ProviderSecret::new("sk-ok-0123456789\n".into()).unwrap().expose(), "sk-ok-0123456789");
        assert_eq!(ProviderSecret::new("sk-ok-0123456789\r\n".into()).unwrap().expose(), "sk-ok-0123456789");
    }

    /// Opened bytes are read in place; bytes that are not UTF-8 are said to be so (not
    /// mistaken for a control character), and a short secret sealed before the minimum
    /// still opens.
    #[test]
    fn opened_bytes_are_checked_as_they_are() {
        let opened = ProviderSecret::from_opened(Zeroizing::new(b"sk-old".to_vec())).unwrap();
        assert_eq!(opened.expose(), "sk-old");
        let err = ProviderSecret::from_opened(Zeroizing::new(b"sk-\xff\xfe-0123456789".to_vec())).unwrap_err();
        assert_eq!(err, SecretError::NotUtf8 { position: 3 });
        assert!(!err.to_string().contains("sk-"), "{err}");
        let err = ProviderSecret::from_opened(Zeroizing::new(b"sk-a\x01b".to_vec())).unwrap_err();
        assert_eq!(err, SecretError::ControlCharacter { position: 4 });
    }

    /// Short secrets are refused at creation, with the minimum in the message; the limit
    /// counts the secret without the trailing newline that is removed.
    #[test]
    fn short_secrets_are_refused_with_the_minimum_in_the_message() {
        for short in ["x", "sk-x", "sk-x-123456789", "sk-0123456789ab", "sk-0123456789ab\n", "sk-0123456789ab\r\n"] {
            let err = ProviderSecret::new(short.into()).unwrap_err();
            assert_eq!(err, SecretError::TooShort, "{short:?}");
            let message = err.to_string();
            assert!(message.contains(&format!("at least {MIN_SECRET_LEN} bytes")), "{message}");
            assert!(!message.contains("sk-"), "{message}");
        }
        assert_eq!(MIN_SECRET_LEN, 16);
        assert!(ProviderSecret::new("sk-0123456789abc".into()).is_ok(), "exactly the minimum");
        // Emptiness and control characters are named before length.
        assert_eq!(ProviderSecret::new("a\tb".into()).unwrap_err(), SecretError::ControlCharacter { position: 1 });
    }

    /// A secret sealed before the minimum existed still opens.
    #[test]
    fn short_secrets_sealed_before_still_open() {
        let opened = ProviderSecret::from_opened(Zeroizing::new(b"sk-x".to_vec())).unwrap();
        assert_eq!(opened.expose(), "sk-x");
        assert!(ProviderSecret::from_opened(Zeroizing::new(Vec::new())).is_err());
    }

    #[test]
    fn deserializes_with_validation() {
        let ok: ProviderSecret = serde_json::from_str("\"sk-1-0123456789abcdef\"").unwrap();
        assert_eq!(ok.expose(), "sk-1-0123456789abcdef");
        let err = serde_json::from_str::<ProviderSecret>("\"a\\u0007b\"").unwrap_err();
        assert!(err.to_string().contains("control character"));
        let err = serde_json::from_str::<ProviderSecret>("\"sk-1\"").unwrap_err();
        assert!(err.to_string().contains("at least 16 bytes"), "{err}");
    }
}
