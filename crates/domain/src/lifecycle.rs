//! Lifecycle events: every change to a credential, token or org, with who did it.
//!
//! Events never carry a secret. They carry what a later audit needs to replay a
//! credential's life and to hash-chain the record: the subject, the version and
//! fingerprint in force, and a small JSON object of details.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{AdminTokenId, CredentialId, EventId, OrgId};
use crate::time::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LifecycleKind {
    /// An org was created (its first KEK with it).
    OrgCreated,
    /// A team was created.
    TeamCreated,
    /// A workflow was created.
    WorkflowCreated,
    /// An org-admin token was issued.
    AdminTokenIssued,
    /// An org-admin token was revoked.
    AdminTokenRevoked,
    /// A credential was created (version 1).
    Created,
    /// Scope, expiry or priority changed.
    ScopeChanged,
    /// A new secret version became current.
    Rotated,
    /// State → disabled.
    Disabled,
    /// State → active again.
    Enabled,
    /// State → revoked (final).
    Revoked,
    /// Reached its expiry.
    Expired,
    /// The org's KEK was rotated (a new version is current).
    KekRotated,
    /// Its DEK was rewrapped under a new KEK version.
    Rewrapped,
    /// The org's KEK moved to another KMS (a new version, current, in that KMS).
    KmsMoved,
    /// Its org was crypto-shredded.
    Deleted,
    /// A workload token was issued.
    TokenIssued,
    /// A workload token was revoked.
    TokenRevoked,
    /// Audit entries past their retention were purged.
    AuditPurged,
    /// The org's billing tier changed.
    TierChanged,
    /// The org's negotiated rate card was set or removed.
    RateCardChanged,
    /// The org's monthly budget was set or removed.
    BudgetChanged,
    /// The org's katman-c controls were set or removed.
    ControlsChanged,
    /// The provider rejected the credential (401/403): it is `failing` until rotated,
    /// enabled again or verified.
    ProviderRejected,
    /// The credential was verified against the provider (the result in the details).
    Verified,
    /// The org's rate limits were set or removed.
    LimitsChanged,
}

impl LifecycleKind {
    /// The kind as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            LifecycleKind::OrgCreated => "org_created",
            LifecycleKind::TeamCreated => "team_created",
            LifecycleKind::WorkflowCreated => "workflow_created",
            LifecycleKind::AdminTokenIssued => "admin_token_issued",
            LifecycleKind::AdminTokenRevoked => "admin_token_revoked",
            LifecycleKind::Created => "created",
            LifecycleKind::ScopeChanged => "scope_changed",
            LifecycleKind::Rotated => "rotated",
            LifecycleKind::Disabled => "disabled",
            LifecycleKind::Enabled => "enabled",
            LifecycleKind::Revoked => "revoked",
            LifecycleKind::Expired => "expired",
            LifecycleKind::KekRotated => "kek_rotated",
            LifecycleKind::Rewrapped => "rewrapped",
            LifecycleKind::KmsMoved => "kms_moved",
            LifecycleKind::Deleted => "deleted",
            LifecycleKind::TokenIssued => "token_issued",
            LifecycleKind::TokenRevoked => "token_revoked",
            LifecycleKind::AuditPurged => "audit_purged",
            LifecycleKind::TierChanged => "tier_changed",
            LifecycleKind::RateCardChanged => "rate_card_changed",
            LifecycleKind::BudgetChanged => "budget_changed",
            LifecycleKind::ControlsChanged => "controls_changed",
            LifecycleKind::ProviderRejected => "provider_rejected",
            LifecycleKind::Verified => "verified",
            LifecycleKind::LimitsChanged => "limits_changed",
        }
    }

    const ALL: [LifecycleKind; 26] = [
        LifecycleKind::OrgCreated,
        LifecycleKind::TeamCreated,
        LifecycleKind::WorkflowCreated,
        LifecycleKind::AdminTokenIssued,
        LifecycleKind::AdminTokenRevoked,
        LifecycleKind::Created,
        LifecycleKind::ScopeChanged,
        LifecycleKind::Rotated,
        LifecycleKind::Disabled,
        LifecycleKind::Enabled,
        LifecycleKind::Revoked,
        LifecycleKind::Expired,
        LifecycleKind::KekRotated,
        LifecycleKind::Rewrapped,
        LifecycleKind::KmsMoved,
        LifecycleKind::Deleted,
        LifecycleKind::TokenIssued,
        LifecycleKind::TokenRevoked,
        LifecycleKind::AuditPurged,
        LifecycleKind::TierChanged,
        LifecycleKind::RateCardChanged,
        LifecycleKind::BudgetChanged,
        LifecycleKind::ControlsChanged,
        LifecycleKind::ProviderRejected,
        LifecycleKind::Verified,
        LifecycleKind::LimitsChanged,
    ];
}

impl std::str::FromStr for LifecycleKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LifecycleKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown lifecycle event kind '{s}'"))
    }
}

impl fmt::Display for LifecycleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// An admin token (operator or org-admin), by id.
    AdminToken {
        /// The token's id.
        id: AdminTokenId,
    },
    /// byok itself (expiry sweeps, background rewrap).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::AdminToken { id } => write!(f, "{id}"),
            Actor::System => f.write_str("system"),
        }
    }
}

impl std::str::FromStr for Actor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "system" {
            return Ok(Actor::System);
        }
        s.parse::<AdminTokenId>().map(|id| Actor::AdminToken { id }).map_err(|e| e.to_string())
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleEvent {
    /// `evt_…`
    pub id: EventId,
    /// Position in the store's event order (strictly increasing).
    pub seq: i64,
    /// The org it happened in.
    pub org_id: OrgId,
    /// What happened.
    pub kind: LifecycleKind,
    /// The id of the thing it happened to (`cred_…`, `tok_…`, `team_…`, `org_…`).
    pub subject: String,
    /// The credential, when the subject is one.
    pub credential_id: Option<CredentialId>,
    /// The credential version in force after the event.
    pub version: Option<u32>,
    /// The fingerprint in force after the event.
    pub fingerprint: Option<String>,
    /// Who did it.
    pub actor: Actor,
    /// When.
    pub at: Timestamp,
    /// Event-specific facts (old and new scope, state, KEK versions); never a secret.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in LifecycleKind::ALL {
            assert_eq!(kind.as_str().parse::<LifecycleKind>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn actor_round_trips() {
        let id = AdminTokenId::generate();
        for actor in [Actor::System, Actor::AdminToken { id }] {
            assert_eq!(actor.to_string().parse::<Actor>().unwrap(), actor);
        }
    }
}
