//! The entities of the product contract as the API shows them. None carries a secret:
//! sealed key material lives in the store's own records, tokens only as hashes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audit::CredentialOwner;
use crate::billing::{Budget, PricedCard};
use crate::ids::{AdminTokenId, CredentialId, OrgId, TeamId, TokenId, WorkflowId};
use crate::name::{KmsName, Name};
use crate::provider::ProviderId;
use crate::scope::Scope;
use crate::time::Timestamp;

/// A billing tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Tier {
    /// Full platform features at full cost.
    #[serde(rename = "katman-a")]
    KatmanA,
    /// Discounted fees for routing through the org's own provider account.
    #[serde(rename = "katman-b")]
    KatmanB,
    /// Enterprise: negotiated rates, audit retention, SOC2-aligned controls.
    #[serde(rename = "katman-c")]
    KatmanC,
}

impl Tier {
    /// The tier as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::KatmanA => "katman-a",
            Tier::KatmanB => "katman-b",
            Tier::KatmanC => "katman-c",
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "katman-a" => Ok(Tier::KatmanA),
            "katman-b" => Ok(Tier::KatmanB),
            "katman-c" => Ok(Tier::KatmanC),
            other => Err(format!("unknown tier '{other}'; known tiers: katman-a, katman-b, katman-c")),
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an org is live or has been crypto-shredded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrgState {
    /// Normal operation.
    Active,
    /// Its KEKs are destroyed; its credentials can never be opened again.
    Deleted,
}

/// An organization (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Org {
    /// `org_…`
    pub id: OrgId,
    /// Unique across the installation.
    pub name: Name,
    /// Billing tier.
    pub tier: Tier,
    /// Live or shredded.
    pub state: OrgState,
    /// The org's current KEK version.
    pub kek_version: u32,
    /// The KMS holding the current KEK: `default`, or a customer-managed KMS (katman-c).
    #[serde(default)]
    pub kms: KmsName,
    /// While the org moves to `kms`: the KMS it is leaving, whose KEKs still open the
    /// DEKs not yet rewrapped. `None` when no move is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_moving_from: Option<KmsName>,
    /// Negotiated audit retention in days (katman-c); `None`: the tier's default.
    pub retention_days: Option<u32>,
    /// The negotiated rate card (katman-c); `None`: the tier's card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_card: Option<PricedCard>,
    /// Monthly spending limits of the org and its teams.
    #[serde(default, skip_serializing_if = "Budget::is_empty")]
    pub budget: Budget,
    /// katman-c controls: maximum credential age, data-plane source allow-list.
    #[serde(default, skip_serializing_if = "OrgControls::is_empty")]
    pub controls: OrgControls,
    /// Rate limits of the org, its teams and tokens (stored form; the API shows them
    /// at `/v1/orgs/{org}/limits`).
    #[serde(default, skip)]
    pub limits: crate::limits::OrgLimits,
    /// When it was created.
    pub created_at: Timestamp,
}

/// The SOC2-aligned controls a katman-c org may set (`PUT /v1/orgs/{org}/controls`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrgControls {
    /// A credential whose current version is older than this many days is refused with
    /// `rotation_required` until it is rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 36500))]
    pub max_credential_age_days: Option<u32>,
    /// Data-plane calls are accepted only from these networks (the TCP peer address, or
    /// the forwarded-for address from a trusted proxy); empty: from anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_source_cidrs: Vec<Cidr>,
}

impl OrgControls {
    /// Whether no control is set.
    pub fn is_empty(&self) -> bool {
        self.max_credential_age_days.is_none() && self.allowed_source_cidrs.is_empty()
    }

    /// Whether `addr` may make data-plane calls (an empty list admits every address).
    pub fn admits_source(&self, addr: std::net::IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.allowed_source_cidrs.is_empty() || self.allowed_source_cidrs.iter().any(|net| net.contains(addr))
    }
}

/// A network in CIDR notation (`10.20.0.0/16`, `fd00::/8`). The address must be the
/// network's first address: `10.20.0.1/16` is refused rather than silently widened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(ipnet::IpNet);

impl Cidr {
    /// Parse and check a CIDR.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let net: ipnet::IpNet = text.parse().map_err(|_| {
            format!(
                "'{}' is not a CIDR network (e.g. 10.20.0.0/16 or fd00::/8)",
                text.chars().take(60).collect::<String>()
            )
        })?;
        if net.network() != net.addr() {
            return Err(format!("'{text}' has host bits set; did you mean {}?", net.trunc()));
        }
        Ok(Cidr(net))
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        self.0.contains(&addr.to_canonical())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Cidr::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Cidr {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A network in CIDR notation, its first address (10.20.0.0/16, fd00::/8)."))
            .pattern(Some(r"^[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}$"))
            .examples([serde_json::json!("10.20.0.0/16")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Cidr {}

/// A team inside an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Team {
    /// `team_…`
    pub id: TeamId,
    /// The owning org.
    pub org_id: OrgId,
    /// Unique within the org.
    pub name: Name,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A workflow inside an org, optionally owned by a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Workflow {
    /// `wf_…`
    pub id: WorkflowId,
    /// The owning org.
    pub org_id: OrgId,
    /// Unique within the org.
    pub name: Name,
    /// The owning team, if any.
    pub team_id: Option<TeamId>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A credential's stored state. `expired` is derived from `expires_at` when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    /// Usable.
    Active,
    /// Temporarily unusable; can be enabled again.
    Disabled,
    /// Permanently unusable.
    Revoked,
    /// Past its `expires_at`.
    Expired,
}

impl CredentialState {
    /// The state as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialState::Active => "active",
            CredentialState::Disabled => "disabled",
            CredentialState::Revoked => "revoked",
            CredentialState::Expired => "expired",
        }
    }
}

impl std::str::FromStr for CredentialState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            "revoked" => Ok(Self::Revoked),
            "expired" => Ok(Self::Expired),
            other => Err(format!("unknown credential state '{other}'")),
        }
    }
}

impl fmt::Display for CredentialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider credential as the API shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Credential {
    /// `cred_…`
    pub id: CredentialId,
    /// The owning org.
    pub org_id: OrgId,
    /// Unique within the org.
    pub name: Name,
    /// The one provider it serves.
    pub provider: ProviderId,
    /// Allow-lists.
    pub scope: Scope,
    /// Effective state (an active credential past `expires_at` shows `expired`).
    pub state: CredentialState,
    /// The version in use (1 at creation, +1 per rotation).
    pub version: u32,
    /// Keyed hash of the current version's secret (per-org key): identifies, never reveals.
    pub fingerprint: String,
    /// Admin-set upstream base URL (Azure resource, self-hosted gateway).
    pub base_url: Option<String>,
    /// After this instant the credential resolves as `expired`.
    pub expires_at: Option<Timestamp>,
    /// Tie-breaker among equally specific credentials; higher wins.
    pub priority: i32,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When its current version was created (creation or last rotation).
    pub version_created_at: Timestamp,
    /// Whose pool it belongs to: an org's, or the operator's platform pool.
    #[serde(default)]
    pub owner: CredentialOwner,
    /// Under a katman-c maximum credential age: when it must be rotated by (after that
    /// it is refused with `rotation_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_by: Option<Timestamp>,
    /// Its share of the calls among credentials of equal rank (a pool), 1–1000.
    #[serde(default = "default_weight")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub weight: u16,
    /// The provider account's own calls-per-minute limit: byok paces the key to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000_000))]
    pub rpm: Option<u64>,
    /// The provider account's own tokens-per-minute limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000_000))]
    pub tpm: Option<u64>,
    /// Whether the provider accepts it: `failing` (durable, fleet-wide) after the provider
    /// rejected it with 401/403, `cooling_down` (this node's view) while it is throttled.
    #[serde(default)]
    pub health: CredentialHealth,
}

/// The weight a credential gets when none is given.
pub const DEFAULT_WEIGHT: u16 = 1;
/// The largest weight.
pub const MAX_WEIGHT: u16 = 1000;

fn default_weight() -> u16 {
    DEFAULT_WEIGHT
}

/// A credential's health state (SPEC 3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Used normally.
    #[default]
    Ok,
    /// Throttled (429/529) or its circuit is open after repeated 5xx: skipped until `until`.
    CoolingDown,
    /// The provider rejected it (401/403): skipped until it is rotated, enabled again or
    /// verified.
    Failing,
}

impl HealthState {
    /// The state as text.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthState::Ok => "ok",
            HealthState::CoolingDown => "cooling_down",
            HealthState::Failing => "failing",
        }
    }
}

/// A credential's health as the API shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialHealth {
    /// `ok`, `cooling_down` or `failing`.
    pub state: HealthState,
    /// When a cooldown ends (`null` otherwise).
    pub until: Option<Timestamp>,
    /// The provider's last status that changed the state (`null` when `ok` from the start).
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 599))]
    pub last_status: Option<u16>,
}

impl CredentialHealth {
    /// Failing since the provider answered `status`.
    pub fn failing(status: u16) -> Self {
        Self { state: HealthState::Failing, until: None, last_status: Some(status) }
    }

    /// Whether the durable state is `failing`.
    pub fn is_failing(&self) -> bool {
        self.state == HealthState::Failing
    }
}

impl Credential {
    /// The state as of `now` (an active credential past its expiry is `expired`).
    pub fn effective_state(stored: CredentialState, expires_at: Option<Timestamp>, now: Timestamp) -> CredentialState {
        match (stored, expires_at) {
            (CredentialState::Active, Some(at)) if at <= now => CredentialState::Expired,
            (state, _) => state,
        }
    }
}

/// One version of a credential's secret, without the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialVersion {
    /// 1, 2, …
    pub version: u32,
    /// Keyed hash of this version's secret.
    pub fingerprint: String,
    /// The KEK version its DEK is wrapped under.
    pub kek_version: u32,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A workload token as the API shows it (never its text or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkloadToken {
    /// `tok_…`
    pub id: TokenId,
    /// Its name, unique in the org, if it was given one (a token can be named where its
    /// id is asked for).
    #[serde(default)]
    pub name: Option<Name>,
    /// What it is for, if said.
    #[serde(default)]
    pub description: Option<String>,
    /// The owning org.
    pub org_id: OrgId,
    /// The team whose calls it makes.
    pub team_id: TeamId,
    /// If non-empty, the only workflows it may name (and it must name one).
    pub workflows: Vec<WorkflowId>,
    /// When it stops working.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// When it was issued.
    pub created_at: Timestamp,
}

/// What an admin token may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdminTokenScope {
    /// Every org (the operator token).
    Operator,
    /// One org only.
    Org {
        /// The org it is confined to.
        org_id: OrgId,
    },
}

/// An admin token as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminToken {
    /// `adm_…`
    pub id: AdminTokenId,
    /// Operator or confined to one org.
    pub scope: AdminTokenScope,
    /// When it stops working.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// When it was issued.
    pub created_at: Timestamp,
    /// When it last authenticated a request (to the minute).
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
}

impl AdminToken {
    /// Whether this token may act on `org`.
    pub fn may_access(&self, org: &OrgId) -> bool {
        match self.scope {
            AdminTokenScope::Operator => true,
            AdminTokenScope::Org { org_id } => org_id == *org,
        }
    }

    /// Whether this is the operator token.
    pub fn is_operator(&self) -> bool {
        matches!(self.scope, AdminTokenScope::Operator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_text_round_trips_and_unknown_is_named() {
        for tier in [Tier::KatmanA, Tier::KatmanB, Tier::KatmanC] {
            assert_eq!(tier.as_str().parse::<Tier>().unwrap(), tier);
            assert_eq!(serde_json::to_value(tier).unwrap(), tier.as_str());
        }
        assert!("katman-d".parse::<Tier>().unwrap_err().contains("katman-d"));
    }

    #[test]
    fn expiry_turns_active_into_expired_only() {
        let now = Timestamp::now();
        let past = Timestamp::from_micros(now.as_micros() - 1).unwrap();
        let future = Timestamp::from_micros(now.as_micros() + 1_000_000).unwrap();
        assert_eq!(Credential::effective_state(CredentialState::Active, Some(past), now), CredentialState::Expired);
        assert_eq!(Credential::effective_state(CredentialState::Active, Some(future), now), CredentialState::Active);
        assert_eq!(Credential::effective_state(CredentialState::Revoked, Some(past), now), CredentialState::Revoked);
        assert_eq!(Credential::effective_state(CredentialState::Active, None, now), CredentialState::Active);
    }

    #[test]
    fn org_admin_is_confined() {
        let mine = OrgId::generate();
        let token = AdminToken {
            id: AdminTokenId::generate(),
            scope: AdminTokenScope::Org { org_id: mine },
            expires_at: None,
            revoked_at: None,
            created_at: Timestamp::now(),
            last_used_at: None,
        };
        assert!(token.may_access(&mine));
        assert!(!token.may_access(&OrgId::generate()));
    }
}
