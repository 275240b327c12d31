//! Human names for orgs, teams, workflows and credentials.
//!
//! Path segments accept an id or a name, so a name must never be readable as an id.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{AdminTokenId, CredentialId, EventId, OrgId, TeamId, TokenId, WorkflowId};

/// The longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Why a string is not an acceptable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty or only whitespace.
    #[error("name must not be empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("name '{0}…' is too long (at most {MAX_NAME_LEN} characters)")]
    TooLong(String),
    /// Contains a character outside `[A-Za-z0-9._-]` or does not start with a letter or digit.
    #[error("name '{0}' may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit")]
    BadCharacter(String),
    /// Reads as a prefixed id, which would make `{org}` path segments ambiguous.
    #[error("name '{0}' looks like an id; choose a name that does not start with an id prefix")]
    LooksLikeId(String),
}

/// A validated name: 1–64 characters of `[A-Za-z0-9._-]`, starting with a letter or digit,
/// never readable as an id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// Validate `text` as a name.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        if text.trim().is_empty() {
            return Err(NameError::Empty);
        }
        if text.chars().count() > MAX_NAME_LEN {
            let head: String = text.chars().take(MAX_NAME_LEN).collect();
            return Err(NameError::TooLong(head));
        }
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !first_ok || !rest_ok {
            return Err(NameError::BadCharacter(text.to_owned()));
        }
        if looks_like_id(text) {
            return Err(NameError::LooksLikeId(text.to_owned()));
        }
        Ok(Self(text.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the operator's platform pool (stored like an org). It starts with
    /// `_`, which no [`Name::parse`]d name can, so no org can ever take it.
    pub fn platform() -> Self {
        Self("_platform".to_owned())
    }
}

fn looks_like_id(text: &str) -> bool {
    text.parse::<OrgId>().is_ok()
        || text.parse::<TeamId>().is_ok()
        || text.parse::<WorkflowId>().is_ok()
        || text.parse::<CredentialId>().is_ok()
        || text.parse::<TokenId>().is_ok()
        || text.parse::<AdminTokenId>().is_ok()
        || text.parse::<EventId>().is_ok()
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Name::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Name {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Name {}

/// The name of a KMS that holds KEKs: [`KmsName::DEFAULT`] for the installation's own
/// (`[kms]` in the configuration), or the name of a customer-managed KMS
/// (`[kms.customer.<name>]`). Same rules as [`Name`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct KmsName(String);

impl KmsName {
    /// The installation's own KMS.
    pub const DEFAULT: &'static str = "default";

    /// Validate `text` as a KMS name.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        Name::parse(text).map(|name| Self(name.0))
    }

    /// The installation's own KMS.
    pub fn default_kms() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    /// Whether this is the installation's own KMS.
    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for KmsName {
    fn default() -> Self {
        Self::default_kms()
    }
}

impl fmt::Display for KmsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KmsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for KmsName {
    type Err = NameError;
    fn from_str(text: &str) -> Result<Self, NameError> {
        Self::parse(text)
    }
}

impl<'de> Deserialize<'de> for KmsName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        KmsName::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for KmsName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <Name as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for KmsName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["acme", "prod-openai", "team.a_1", "A", &"x".repeat(64)] {
            assert_eq!(Name::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        let cases: &[(&str, fn(&NameError) -> bool)] = &[
            ("", |e| matches!(e, NameError::Empty)),
            ("   ", |e| matches!(e, NameError::Empty)),
            ("-lead", |e| matches!(e, NameError::BadCharacter(_))),
            ("has space", |e| matches!(e, NameError::BadCharacter(_))),
            ("tab\there", |e| matches!(e, NameError::BadCharacter(_))),
            ("ünïcode", |e| matches!(e, NameError::BadCharacter(_))),
            ("org_01JD7X3M5Q8V6N2K4T9R1B0C7E", |e| matches!(e, NameError::LooksLikeId(_))),
            ("cred_01JD7X3M5Q8V6N2K4T9R1B0C7E", |e| matches!(e, NameError::LooksLikeId(_))),
        ];
        for (text, check) in cases {
            let err = Name::parse(text).unwrap_err();
            assert!(check(&err), "{text:?} gave {err:?}");
        }
        assert!(matches!(Name::parse(&"y".repeat(65)), Err(NameError::TooLong(_))));
    }
}
