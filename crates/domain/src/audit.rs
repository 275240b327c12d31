//! `CredentialResolutionAudit`: one row per call, allowed or denied, written before the
//! credential is used; and the call's completion, recorded against the same call id.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{CredentialId, OrgId, TeamId, TokenId, WorkflowId};
use crate::model::Tier;
use crate::provider::ProviderId;
use crate::scope::{Capability, Mode};
use crate::time::Timestamp;

/// Whether a resolution let the call through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A credential was chosen and used.
    Allowed,
    /// The call was refused; nothing was sent upstream.
    Denied,
}

impl Outcome {
    /// The outcome as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allowed" => Ok(Outcome::Allowed),
            "denied" => Ok(Outcome::Denied),
            other => Err(format!("unknown outcome '{other}'; expected allowed or denied")),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose credential served a call: the org's own, or one of the platform's (katman-a
/// calls that none of the org's credentials admits).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CredentialOwner {
    /// The calling org's own credential.
    #[default]
    Org,
    /// A credential of the operator's platform pool.
    Platform,
}

impl CredentialOwner {
    /// The owner as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialOwner::Org => "org",
            CredentialOwner::Platform => "platform",
        }
    }
}

impl std::str::FromStr for CredentialOwner {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "org" => Ok(CredentialOwner::Org),
            "platform" => Ok(CredentialOwner::Platform),
            other => Err(format!("unknown credential owner '{other}'; expected org or platform")),
        }
    }
}

impl fmt::Display for CredentialOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resolution: who asked, for what, which credential answered, and the outcome.
/// Fields the sidecar could not establish (an unknown token has no org) are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResolutionAudit {
    /// Position in the store's audit order (assigned by the store; 0 before).
    pub seq: i64,
    /// When (UTC, microseconds).
    pub at: Timestamp,
    /// The call id (`x-byok-call-id` or a generated ULID).
    pub call_id: String,
    /// The org of the workload token.
    pub org_id: Option<OrgId>,
    /// The token's team.
    pub team_id: Option<TeamId>,
    /// The workflow named by `x-byok-workflow`.
    pub workflow_id: Option<WorkflowId>,
    /// The workload token.
    pub token_id: Option<TokenId>,
    /// The credential chosen (or pinned and refused).
    pub credential_id: Option<CredentialId>,
    /// Its version in force.
    pub credential_version: Option<u32>,
    /// Its fingerprint in force.
    pub fingerprint: Option<String>,
    /// The route's provider.
    pub provider: Option<ProviderId>,
    /// The model the request named.
    pub model: Option<String>,
    /// The model's family.
    pub model_family: Option<String>,
    /// From the endpoint.
    pub capability: Option<Capability>,
    /// sync / stream / batch.
    pub mode: Option<Mode>,
    /// allowed / denied.
    pub outcome: Outcome,
    /// The denial code (`scope_denied`, …); `None` when allowed.
    pub reason: Option<String>,
    /// The denial message (never a secret).
    pub detail: Option<String>,
    /// The org's billing tier when the call was made.
    #[serde(default)]
    pub tier: Option<Tier>,
    /// Whose credential it was (`org` or `platform`), when there was one.
    #[serde(default)]
    pub credential_owner: Option<CredentialOwner>,
}

/// How a call ended, recorded against its call id when it completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallCompletion {
    /// The call id of the resolution row.
    pub call_id: String,
    /// The org (for per-org queries).
    pub org_id: OrgId,
    /// The credential used.
    pub credential_id: CredentialId,
    /// When the call ended.
    pub at: Timestamp,
    /// The upstream's HTTP status, if it answered.
    pub upstream_status: Option<u16>,
    /// From receiving the request to the end of the response body, in microseconds.
    pub latency_us: i64,
    /// Input tokens reported by the provider.
    pub input_tokens: Option<u64>,
    /// Output tokens reported by the provider.
    pub output_tokens: Option<u64>,
    /// `completed`, `client_cancelled`, `upstream_error`, `upstream_unreachable`,
    /// `upstream_timeout`, `kms_unavailable`, `store_unavailable`.
    pub status: String,
    /// How the call is billed, fixed when it was made (absent on calls recorded before
    /// metering existed).
    #[serde(default)]
    pub metering: Option<Metering>,
}

impl CallCompletion {
    /// Whether the provider answered (only such calls are billed).
    pub fn answered(&self) -> bool {
        self.upstream_status.is_some_and(|s| s >= 100)
    }
}

/// What a completion records so that its call can be priced — and re-priced by anyone
/// holding the audit — exactly as it was when the call was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Metering {
    /// The calling token's team.
    pub team_id: TeamId,
    /// The org's tier when the call was made.
    pub tier: Tier,
    /// Whose credential served it.
    pub credential_owner: CredentialOwner,
    /// The route's provider.
    pub provider: ProviderId,
    /// The model family (`None`: the model is in no family).
    pub model_family: Option<String>,
    /// The rate card in force: `CUR:per_call:per_million_in:per_million_out`.
    pub rate_card: String,
    /// The provider price in force for platform-served calls: `CUR:per_million_in:per_million_out`.
    pub provider_price: Option<String>,
}
