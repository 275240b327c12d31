//! Prefixed ULID identifiers (`org_01J…`, `cred_01J…`).
//!
//! Every id type knows its prefix, so an id of one kind can never be parsed as another
//! and a name can never be mistaken for an id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string does not start with the kind's prefix.
    #[error("'{value}' is not a {kind} id (expected the prefix '{prefix}')")]
    WrongPrefix {
        /// What kind of id was expected.
        kind: &'static str,
        /// The expected prefix.
        prefix: &'static str,
        /// The string that was given.
        value: String,
    },
    /// The part after the prefix is not a ULID.
    #[error("'{value}' is not a valid {kind} id: the part after '{prefix}' must be a 26-character ULID")]
    BadUlid {
        /// What kind of id was expected.
        kind: &'static str,
        /// The expected prefix.
        prefix: &'static str,
        /// The string that was given.
        value: String,
    },
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            /// The textual prefix of this kind of id, including the underscore.
            pub const PREFIX: &'static str = $prefix;
            /// A human name for this kind of id, used in error messages.
            pub const KIND: &'static str = $kind;

            /// A fresh id (time-ordered, random in its low bits).
            pub fn generate() -> Self {
                Self(Ulid::new())
            }

            /// The underlying ULID.
            pub fn ulid(&self) -> Ulid {
                self.0
            }

            /// Whether `text` has this kind's prefix (it may still fail to parse).
            pub fn has_prefix(text: &str) -> bool {
                text.starts_with($prefix)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let rest = s.strip_prefix($prefix).ok_or_else(|| IdError::WrongPrefix {
                    kind: $kind,
                    prefix: $prefix,
                    value: s.to_owned(),
                })?;
                if rest.len() != 26 {
                    return Err(IdError::BadUlid { kind: $kind, prefix: $prefix, value: s.to_owned() });
                }
                Ulid::from_string(rest).map(Self).map_err(|_| IdError::BadUlid {
                    kind: $kind,
                    prefix: $prefix,
                    value: s.to_owned(),
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!("A ", $kind, " id: '", $prefix, "' followed by a ULID.")))
                    .pattern(Some(concat!("^", $prefix, "[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")))
                    .examples([serde_json::json!(concat!($prefix, "01JD7X3M5Q8V6N2K4T9R1B0C7E"))])
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

prefixed_id!(
    /// An organization (tenant).
    OrgId, "org_", "organization"
);
prefixed_id!(
    /// A team inside an organization.
    TeamId, "team_", "team"
);
prefixed_id!(
    /// A workflow inside an organization.
    WorkflowId, "wf_", "workflow"
);
prefixed_id!(
    /// A provider credential.
    CredentialId, "cred_", "credential"
);
prefixed_id!(
    /// A workload token (what an application holds instead of a provider key).
    TokenId, "tok_", "workload token"
);
prefixed_id!(
    /// An admin token (the operator token or an org-admin token).
    AdminTokenId, "adm_", "admin token"
);
prefixed_id!(
    /// A lifecycle event.
    EventId, "evt_", "event"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let id = CredentialId::generate();
        let text = id.to_string();
        assert!(text.starts_with("cred_"));
        assert_eq!(text.len(), 5 + 26);
        assert_eq!(text.parse::<CredentialId>().unwrap(), id);
    }

    #[test]
    fn refuses_other_kinds_and_garbage() {
        let org = OrgId::generate().to_string();
        assert!(matches!(org.parse::<TeamId>(), Err(IdError::WrongPrefix { .. })));
        assert!(matches!("org_nope".parse::<OrgId>(), Err(IdError::BadUlid { .. })));
        assert!(matches!("org_UUUUUUUUUUUUUUUUUUUUUUUUUU".parse::<OrgId>(), Err(IdError::BadUlid { .. })));
    }

    #[test]
    fn serializes_as_a_string() {
        let id = OrgId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: OrgId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<OrgId>("\"team_01JD7X3M5Q8V6N2K4T9R1B0C7E\"").is_err());
    }
}
