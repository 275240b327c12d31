//! Configuration of the `pkcs11` backend, as the server reads it from TOML.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::OpenError;

/// How many sessions the backend keeps open by default.
pub const DEFAULT_MAX_SESSIONS: usize = 4;

/// Where the backend finds its token and how it logs in.
///
/// ```toml
/// [kms.pkcs11]
/// module = "/usr/lib/softhsm/libsofthsm2.so"
/// token_label = "byok"
/// pin_file = "/run/secrets/byok-hsm-pin"   # or: pin_env = "BYOK_HSM_PIN"
/// mechanism = "aes-key-wrap-pad"            # or "aes-key-wrap"
/// max_sessions = 4
/// ```
///
/// The PIN itself is never part of the configuration: exactly one of `pin_file` and
/// `pin_env` names where it is read from when the backend opens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the vendor's PKCS#11 library (`.so`).
    pub module: PathBuf,
    /// Label of the token holding byok's KEKs.
    pub token_label: String,
    /// A file holding the user PIN (one trailing newline is ignored). It must not be
    /// readable or writable by others.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// An environment variable holding the user PIN.
    #[serde(default)]
    pub pin_env: Option<String>,
    /// The key-wrap mechanism used to wrap new DEKs.
    #[serde(default)]
    pub mechanism: WrapMechanism,
    /// The most PKCS#11 sessions the backend opens at once (at least 1).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

fn default_max_sessions() -> usize {
    DEFAULT_MAX_SESSIONS
}

/// The key-wrap mechanism with which DEKs are wrapped under a KEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WrapMechanism {
    /// `CKM_AES_KEY_WRAP_PAD`: AES Key Wrap with Padding (RFC 5649), recorded as `A256KWP`.
    #[default]
    AesKeyWrapPad,
    /// `CKM_AES_KEY_WRAP`: AES Key Wrap (RFC 3394), recorded as `A256KW`.
    AesKeyWrap,
}

impl WrapMechanism {
    /// Every mechanism this backend implements.
    pub const ALL: [WrapMechanism; 2] = [WrapMechanism::AesKeyWrapPad, WrapMechanism::AesKeyWrap];

    /// The algorithm name stored in [`byok_crypto::WrappedDek::alg`].
    pub fn alg(self) -> &'static str {
        match self {
            WrapMechanism::AesKeyWrapPad => "A256KWP",
            WrapMechanism::AesKeyWrap => "A256KW",
        }
    }

    /// The mechanism that produced a record with algorithm name `alg`, if this backend
    /// implements it.
    pub fn from_alg(alg: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mechanism| mechanism.alg() == alg)
    }

    /// The PKCS#11 name, for messages.
    pub fn pkcs11_name(self) -> &'static str {
        match self {
            WrapMechanism::AesKeyWrapPad => "CKM_AES_KEY_WRAP_PAD",
            WrapMechanism::AesKeyWrap => "CKM_AES_KEY_WRAP",
        }
    }

    /// The standard it implements (`RFC 5649`, `RFC 3394`).
    pub fn standard(self) -> &'static str {
        match self {
            WrapMechanism::AesKeyWrapPad => "RFC 5649",
            WrapMechanism::AesKeyWrap => "RFC 3394",
        }
    }

    /// The configuration spelling (`aes-key-wrap-pad`, `aes-key-wrap`).
    pub fn config_name(self) -> &'static str {
        match self {
            WrapMechanism::AesKeyWrapPad => "aes-key-wrap-pad",
            WrapMechanism::AesKeyWrap => "aes-key-wrap",
        }
    }
}

impl fmt::Display for WrapMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.config_name())
    }
}

impl Pkcs11Config {
    /// Read the user PIN from the configured source. Errors name the source, never the
    /// PIN.
    pub(crate) fn load_pin(&self) -> Result<SecretString, OpenError> {
        let text = match (&self.pin_file, &self.pin_env) {
            (Some(_), Some(_)) => {
                return Err(OpenError::Config("set only one of `pin_file` and `pin_env`, not both".into()));
            }
            (None, None) => {
                return Err(OpenError::Config(
                    "the token PIN source is missing: set `pin_file` or `pin_env` (a PIN is never written in the configuration)"
                        .into(),
                ));
            }
            (Some(path), None) => read_pin_file(path)?,
            (None, Some(name)) => Zeroizing::new(std::env::var(name).map_err(|_| {
                OpenError::Config(format!(
                    "the environment variable `{name}` named by `pin_env` is not set or not UTF-8"
                ))
            })?),
        };
        let pin = text.strip_suffix("\r\n").or_else(|| text.strip_suffix('\n')).unwrap_or(&text);
        if pin.is_empty() {
            return Err(OpenError::Config("the token PIN is empty".into()));
        }
        Ok(SecretString::from(pin.to_owned()))
    }

    pub(crate) fn validate(&self) -> Result<(), OpenError> {
        if self.max_sessions == 0 {
            return Err(OpenError::Config("`max_sessions` must be at least 1".into()));
        }
        if self.token_label.trim().is_empty() {
            return Err(OpenError::Config("`token_label` must not be empty".into()));
        }
        Ok(())
    }
}

fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, OpenError> {
    check_pin_file_permissions(path)?;
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| OpenError::Config(format!("cannot read the PIN file {}: {e}", path.display())))
}

#[cfg(unix)]
fn check_pin_file_permissions(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path)
        .map_err(|e| OpenError::Config(format!("cannot read the PIN file {}: {e}", path.display())))?;
    let mode = metadata.permissions().mode();
    if mode & 0o007 != 0 {
        return Err(OpenError::Config(format!(
            "the PIN file {} is accessible to every user (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_pin_file_permissions(_path: &Path) -> Result<(), OpenError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use secrecy::ExposeSecret;

    use super::*;

    fn parse(text: &str) -> Result<Pkcs11Config, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn parses_with_defaults() {
        let config = parse("module = \"/lib/p11.so\"\ntoken_label = \"byok\"\npin_env = \"PIN\"\n").unwrap();
        assert_eq!(config.mechanism, WrapMechanism::AesKeyWrapPad);
        assert_eq!(config.max_sessions, DEFAULT_MAX_SESSIONS);
        assert_eq!(config.pin_env.as_deref(), Some("PIN"));
    }

    #[test]
    fn parses_every_mechanism_and_rejects_others() {
        for mechanism in WrapMechanism::ALL {
            let text = format!(
                "module = \"m.so\"\ntoken_label = \"t\"\npin_env = \"P\"\nmechanism = \"{}\"\nmax_sessions = 2\n",
                mechanism.config_name()
            );
            let config = parse(&text).unwrap();
            assert_eq!(config.mechanism, mechanism);
            assert_eq!(config.max_sessions, 2);
            assert_eq!(WrapMechanism::from_alg(mechanism.alg()), Some(mechanism));
        }
        assert!(parse("module = \"m.so\"\ntoken_label = \"t\"\nmechanism = \"aes-gcm\"\n").is_err());
        assert_eq!(WrapMechanism::from_alg("A256GCM-KW"), None);
    }

    #[test]
    fn a_plain_pin_is_not_a_config_field() {
        let err = parse("module = \"m.so\"\ntoken_label = \"t\"\npin = \"1234\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn pin_source_must_be_exactly_one() {
        let neither = parse("module = \"m.so\"\ntoken_label = \"t\"\n").unwrap();
        assert!(matches!(neither.load_pin(), Err(OpenError::Config(m)) if m.contains("pin_file")));
        let both = parse("module = \"m.so\"\ntoken_label = \"t\"\npin_file = \"/x\"\npin_env = \"X\"\n").unwrap();
        assert!(matches!(both.load_pin(), Err(OpenError::Config(m)) if m.contains("only one")));
    }

    #[cfg(unix)]
    #[test]
    fn pin_file_is_read_trimmed_and_errors_do_not_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "s3cret-pin\n").unwrap();
        set_mode(&path, 0o600);
        let mut config = parse("module = \"m.so\"\ntoken_label = \"t\"\n").unwrap();
        config.pin_file = Some(path.clone());
        assert_eq!(config.load_pin().unwrap().expose_secret(), "s3cret-pin");

        set_mode(&path, 0o644);
        let err = config.load_pin().unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("s3cret"));
        assert!(!format!("{err:?}").contains("s3cret"));
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn validation_refuses_zero_sessions() {
        let mut config = parse("module = \"m.so\"\ntoken_label = \"t\"\npin_env = \"P\"\n").unwrap();
        config.max_sessions = 0;
        assert!(matches!(config.validate(), Err(OpenError::Config(_))));
    }
}
