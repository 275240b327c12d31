//! Timestamps: UTC with microsecond precision, the resolution the audit promises.

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// A point in time, UTC, truncated to microseconds.
///
/// Stored as microseconds since the Unix epoch; shown as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now().trunc_subsecs(6))
    }

    /// From microseconds since the Unix epoch; `None` if out of range.
    pub fn from_micros(micros: i64) -> Option<Self> {
        Utc.timestamp_micros(micros).single().map(Self)
    }

    /// Microseconds since the Unix epoch.
    pub fn as_micros(&self) -> i64 {
        self.0.timestamp_micros()
    }

    /// The wrapped `chrono` value.
    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// Parse RFC 3339 (`2026-01-01T00:00:00Z`).
    pub fn parse_rfc3339(text: &str) -> Result<Self, chrono::ParseError> {
        DateTime::parse_from_rfc3339(text).map(|t| Self::from(t.with_timezone(&Utc)))
    }

    /// RFC 3339 with microseconds and a `Z` suffix.
    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value.trunc_subsecs(6))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(|_| {
            serde::de::Error::custom(format!("'{text}' is not an RFC 3339 time (expected e.g. 2030-01-01T00:00:00Z)"))
        })
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime)))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip() {
        let now = Timestamp::now();
        assert_eq!(Timestamp::from_micros(now.as_micros()), Some(now));
        let parsed = Timestamp::parse_rfc3339(&now.to_rfc3339()).unwrap();
        assert_eq!(parsed, now);
    }
}
