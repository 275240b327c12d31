//! Rate limits (SPEC 3.1): calls per minute and tokens per minute, for an org, its
//! teams and its workload tokens, and a credential's own (the provider account's).
//!
//! `rpm` counts calls admitted in the last 60 seconds; `tpm` counts input + output tokens
//! of the calls completed in the last 60 seconds. A call is admitted while every count
//! it is subject to is below its limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{TeamId, TokenId};

/// The largest `rpm` or `tpm` byok accepts (a billion per minute: beyond any provider).
pub const MAX_RATE: u64 = 1_000_000_000;

/// One subject's limits; `None`: no limit on that count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls admitted per 60 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000_000))]
    pub rpm: Option<u64>,
    /// Input + output tokens of calls completed per 60 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000_000))]
    pub tpm: Option<u64>,
}

impl RateLimit {
    /// Whether neither count is limited.
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    /// Why a figure is out of range (1 ..= [`MAX_RATE`]), naming it under `field`.
    pub fn check(&self, field: &str) -> Result<(), String> {
        for (name, value) in [("rpm", self.rpm), ("tpm", self.tpm)] {
            if let Some(value) = value {
                if !(1..=MAX_RATE).contains(&value) {
                    return Err(format!("{field}.{name}: must be a whole number from 1 to {MAX_RATE}, not {value}"));
                }
            }
        }
        Ok(())
    }
}

/// An org's limits, stored form (teams and tokens by id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrgLimits {
    /// The whole org's.
    #[serde(default, skip_serializing_if = "RateLimit::is_empty")]
    pub org: RateLimit,
    /// Per team.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<TeamId, RateLimit>,
    /// Per workload token.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<TokenId, RateLimit>,
}

impl OrgLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.org.is_empty()
            && self.teams.values().all(RateLimit::is_empty)
            && self.tokens.values().all(RateLimit::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_outside_the_range_are_named() {
        let limit = RateLimit { rpm: Some(0), tpm: None };
        assert_eq!(
            limit.check("teams.research").unwrap_err(),
            "teams.research.rpm: must be a whole number from 1 to 1000000000, not 0"
        );
        assert!(RateLimit { rpm: Some(1), tpm: Some(MAX_RATE) }.check("org").is_ok());
        assert!(RateLimit { rpm: None, tpm: Some(MAX_RATE + 1) }.check("org").is_err());
    }

    #[test]
    fn unknown_fields_and_fractions_are_refused() {
        assert!(serde_json::from_str::<RateLimit>(r#"{"rpm": 1.5}"#).is_err());
        assert!(serde_json::from_str::<RateLimit>(r#"{"rpm": -1}"#).is_err());
        assert!(serde_json::from_str::<RateLimit>(r#"{"rps": 1}"#).is_err());
    }
}
