//! The secret of an AWS Bedrock credential: a JSON object holding either an AWS access key
//! (`access_key_id`, `secret_access_key`, optional `session_token`) or a Bedrock API key
//! (`api_key`), and the `region` whose runtime endpoint serves it.
//!
//! It is read when the credential is created or rotated (a wrong shape is refused, naming
//! the field, never quoting a value) and again by the data plane after each decryption.
//! The region picks the host `bedrock-runtime.{region}.amazonaws.com`, so it must be a
//! plain AWS region token: lower-case letters, digits and `-` only (no dot, no colon),
//! which cannot name any other host.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::secret::{ProviderSecret, MIN_SECRET_LEN};

/// The longest session token accepted, in bytes (real ones are 1–2 KiB).
const MAX_SESSION_TOKEN: usize = 8 * 1024;

/// Why a Bedrock secret was refused. Names the field; never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BedrockSecretError {
    /// Not a JSON object of strings with the known fields.
    #[error(
        "the bedrock secret must be a JSON object: {{\"access_key_id\", \"secret_access_key\", \"session_token\"?, \"region\"}} \
         or {{\"api_key\", \"region\"}} ({0})"
    )]
    Shape(String),
    /// A field is missing.
    #[error("{0}: missing")]
    Missing(&'static str),
    /// A field does not hold what it must.
    #[error("{field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it (never its value).
        why: &'static str,
    },
    /// Both kinds of key were given.
    #[error(
        "api_key: give either an AWS access key (access_key_id, secret_access_key) or a Bedrock api_key, not both"
    )]
    Both,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    access_key_id: Option<String>,
    secret_access_key: Option<SecretString>,
    session_token: Option<SecretString>,
    api_key: Option<SecretString>,
    region: Option<String>,
}

/// How a Bedrock request is authorized.
pub enum BedrockAuth {
    /// An AWS access key: the request is signed with SigV4.
    AccessKey {
        /// The access key id (`AKIA…`, `ASIA…`): not secret, but masked like the rest.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: SecretString,
        /// The session token of temporary credentials.
        session_token: Option<SecretString>,
    },
    /// A Bedrock API key, sent as `Authorization: Bearer`.
    ApiKey(SecretString),
}

/// A parsed Bedrock secret.
pub struct BedrockKey {
    /// The key.
    pub auth: BedrockAuth,
    /// The AWS region (`us-east-1`), already checked to be a region token.
    pub region: String,
}

impl fmt::Debug for BedrockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.auth {
            BedrockAuth::AccessKey { .. } => "access key",
            BedrockAuth::ApiKey(_) => "api key",
        };
        f.debug_struct("BedrockKey").field("kind", &kind).field("region", &self.region).finish_non_exhaustive()
    }
}

fn printable(field: &'static str, value: &str, min: usize) -> Result<(), BedrockSecretError> {
    if value.len() < min {
        return Err(BedrockSecretError::Invalid { field, why: "too short" });
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BedrockSecretError::Invalid {
            field,
            why: "must be printable ASCII without spaces (a stray newline or quote?)",
        });
    }
    Ok(())
}

/// Whether `region` is an AWS region token: `-`-separated parts, the first two letters,
/// the middle ones letters, the last a number (`us-east-1`, `us-gov-west-1`,
/// `ap-southeast-2`); at most 32 characters. It is one DNS label, so it cannot steer the
/// host it is put into.
pub fn is_aws_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else { return false };
    region.len() <= 32
        && parts.len() >= 3
        && first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && (1..=2).contains(&last.len())
        && last.bytes().all(|b| b.is_ascii_digit())
}

impl BedrockKey {
    /// Read and check a Bedrock secret.
    pub fn parse(secret: &ProviderSecret) -> Result<Self, BedrockSecretError> {
        let fields: Fields = serde_json::from_str(secret.expose()).map_err(|e| {
            // serde's message for an unknown field names the field (a key, not a value);
            // any other message might quote a value, so only its position is kept.
            let text = e.to_string();
            let shown = match text.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')) {
                Some((field, _)) if field.len() <= 64 && field.bytes().all(|b| b.is_ascii_graphic()) => {
                    format!("unknown field '{field}'")
                }
                _ => format!("not such an object of strings at line {} column {}", e.line(), e.column()),
            };
            BedrockSecretError::Shape(shown)
        })?;
        let region = fields.region.ok_or(BedrockSecretError::Missing("region"))?;
        if !is_aws_region(&region) {
            return Err(BedrockSecretError::Invalid {
                field: "region",
                why: "must be an AWS region such as us-east-1 (lower-case letters, digits and '-')",
            });
        }
        let has_access_key = fields.access_key_id.is_some() || fields.secret_access_key.is_some();
        let auth = match (fields.api_key, has_access_key) {
            (Some(_), true) => return Err(BedrockSecretError::Both),
            (Some(api_key), false) => {
                if fields.session_token.is_some() {
                    return Err(BedrockSecretError::Invalid {
                        field: "session_token",
                        why: "only goes with an access key, not with an api_key",
                    });
                }
                printable("api_key", api_key.expose_secret(), MIN_SECRET_LEN)?;
                BedrockAuth::ApiKey(api_key)
            }
            (None, _) => {
                let access_key_id = fields.access_key_id.ok_or(BedrockSecretError::Missing("access_key_id"))?;
                if !(16..=128).contains(&access_key_id.len())
                    || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(BedrockSecretError::Invalid {
                        field: "access_key_id",
                        why: "must be 16 to 128 letters and digits (as AKIA…)",
                    });
                }
                let secret_access_key =
                    fields.secret_access_key.ok_or(BedrockSecretError::Missing("secret_access_key"))?;
                printable("secret_access_key", secret_access_key.expose_secret(), MIN_SECRET_LEN)?;
                if let Some(token) = &fields.session_token {
                    printable("session_token", token.expose_secret(), 1)?;
                    if token.expose_secret().len() > MAX_SESSION_TOKEN {
                        return Err(BedrockSecretError::Invalid { field: "session_token", why: "too long" });
                    }
                }
                BedrockAuth::AccessKey { access_key_id, secret_access_key, session_token: fields.session_token }
            }
        };
        Ok(Self { auth, region })
    }

    /// The runtime host of the region: `bedrock-runtime.{region}.amazonaws.com`.
    pub fn runtime_origin(&self) -> String {
        format!("https://bedrock-runtime.{}.amazonaws.com", self.region)
    }

    /// Every secret text of the key (what the data plane masks in answers): the access key
    /// id, the secret access key, the session token, or the API key.
    pub fn secret_texts(&self) -> Vec<&str> {
        match &self.auth {
            BedrockAuth::AccessKey { access_key_id, secret_access_key, session_token } => {
                let mut texts = vec![access_key_id.as_str(), secret_access_key.expose_secret()];
                texts.extend(session_token.as_ref().map(|t| t.expose_secret()));
                texts
            }
            BedrockAuth::ApiKey(key) => vec![key.expose_secret()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BedrockKey, BedrockSecretError> {
        BedrockKey::parse(&ProviderSecret::new(text.to_owned()).unwrap())
    }

    #[test]
    fn both_shapes_are_read() {
        let key = parse(
            r#"{"access_key_id":"AKIAIOSFODNN7EXAMPLE","secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","region":"us-east-1"}"#,
        )
        .unwrap();
        assert!(matches!(key.auth, BedrockAuth::AccessKey { session_token: None, .. }));
        assert_eq!(key.runtime_origin(), "https://bedrock-runtime.us-east-1.amazonaws.com");
        assert_eq!(key.secret_texts().len(), 2);
        let key = parse(
            r#"{"access_key_id":"ASIAIOSFODNN7EXAMPLE","secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","session_token":"FwoGZXIvYXdzEXAMPLE//token=","region":"us-gov-west-1"}"#,
        )
        .unwrap();
        assert!(matches!(key.auth, BedrockAuth::AccessKey { session_token: Some(_), .. }));
        assert_eq!(key.secret_texts().len(), 3);
        let key = parse(r#"{"api_key":"ABSKQmVkcm9ja0FQSUtleS1leGFtcGxl","region":"eu-central-1"}"#).unwrap();
        assert!(matches!(key.auth, BedrockAuth::ApiKey(_)));
        assert!(!format!("{key:?}").contains("ABSK"));
    }

    #[test]
    fn bad_shapes_name_the_field_and_never_the_value() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let cases = [
            (
                format!(r#"{{"access_key_id":"AKIAIOSFODNN7EXAMPLE","secret_access_key":"{secret}"}}"#),
                "region: missing",
            ),
            (
                format!(
                    r#"{{"access_key_id":"AKIAIOSFODNN7EXAMPLE","secret_access_key":"{secret}","region":"evil.example/x"}}"#
                ),
                "region:",
            ),
            (format!(r#"{{"secret_access_key":"{secret}","region":"us-east-1"}}"#), "access_key_id: missing"),
            (
                r#"{"access_key_id":"AKIAIOSFODNN7EXAMPLE","region":"us-east-1"}"#.to_owned(),
                "secret_access_key: missing",
            ),
            (
                format!(
                    r#"{{"access_key_id":"AKIAIOSFODNN7EXAMPLE","secret_access_key":"{secret}","api_key":"{secret}","region":"us-east-1"}}"#
                ),
                "not both",
            ),
            (format!(r#"{{"api_key":"{secret}","region":"us-east-1","extra":"{secret}"}}"#), "unknown field 'extra'"),
            (format!(r#"{{"api_key":"{secret} x","region":"us-east-1"}}"#), "api_key: must be printable"),
            (format!(r#"{{"api_key":"{secret}","region":7}}"#), "line 1"),
            (format!("{secret}-not-json"), "JSON object"),
            (
                format!(
                    r#"{{"access_key_id":"AKIA-bad-{secret}","secret_access_key":"{secret}","region":"us-east-1"}}"#
                ),
                "access_key_id:",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).err().unwrap().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains(secret), "{err}");
        }
    }

    #[test]
    fn regions() {
        for ok in ["us-east-1", "us-gov-west-1", "ap-southeast-2", "eu-central-1", "il-central-1", "us-isob-east-1"] {
            assert!(is_aws_region(ok), "{ok}");
        }
        for bad in [
            "",
            "us",
            "us-east",
            "US-EAST-1",
            "us-east-1.evil",
            "us-east-1/x",
            "us..east-1",
            "us--1",
            "u-east-1",
            "us-east-123",
            "us-east-1:80",
        ] {
            assert!(!is_aws_region(bad), "{bad}");
        }
    }
}
