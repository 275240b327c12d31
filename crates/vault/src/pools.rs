//! Several credentials for one call (SPEC 3.1), the control-plane side: an org's rate
//! limits, a credential's durable `failing` state after the provider rejected it, and
//! verification of a key against the provider.
//!
//! The vault does no upstream I/O: verification asks the data plane (a [`KeyProbe`] the
//! server installs with [`Vault::set_key_probe`]), which holds the upstream client and
//! its dial checks, audits the read and decrypts the key; the vault records the result.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use byok_crypto::ProviderSecret;
use byok_domain::{
    Actor, Credential, CredentialHealth, CredentialId, LifecycleKind, Org, OrgId, OrgLimits, ProviderId, RateLimit,
    TokenId,
};
use serde::{Deserialize, Serialize};

use crate::credentials::Owner;
use crate::error::VaultError;
use crate::events::{credential_event, event};
use crate::orgs::in_field;
use crate::Vault;

/// Why a Bedrock key is not verified: the runtime host has no free authenticated read (every
/// runtime call runs a model and is billed), and the model listing is on the control-plane
/// host (`bedrock.{region}.amazonaws.com`), which byok never calls.
const BEDROCK_UNVERIFIABLE: &str = "bedrock keys cannot be verified: the Bedrock runtime has no free \
     authenticated read (every call runs a model and is billed; the model listing is on the control-plane \
     host, which byok does not call); the first call through byok shows whether the key works";

/// A boxed future (the probe is a trait object).
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<Verification, VaultError>> + Send + 'a>>;

/// What the provider said of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyReason {
    /// The provider accepted the key.
    Ok,
    /// 401 or 403: the key is wrong, revoked, or lost access.
    InvalidKey,
    /// 429 (or 529): throttled; the key itself may be fine.
    RateLimited,
    /// No answer, or one that says nothing about the key (5xx, a timeout).
    Unreachable,
}

/// The result of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    /// Whether the provider accepted the key.
    pub ok: bool,
    /// The provider's status (`null` when it did not answer).
    #[schema(minimum = 100, maximum = 599)]
    pub status: Option<u16>,
    /// Why.
    pub reason: VerifyReason,
}

impl Verification {
    /// The verification of an answer with `status`.
    pub fn from_status(status: u16) -> Self {
        let reason = match status {
            200..=299 => VerifyReason::Ok,
            401 | 403 => VerifyReason::InvalidKey,
            429 | 529 => VerifyReason::RateLimited,
            _ => VerifyReason::Unreachable,
        };
        Self { ok: reason == VerifyReason::Ok, status: Some(status), reason }
    }

    /// No answer.
    pub fn unreachable() -> Self {
        Self { ok: false, status: None, reason: VerifyReason::Unreachable }
    }
}

/// The data plane's side of verification and health (installed by the server).
pub trait KeyProbe: Send + Sync {
    /// Make the provider's cheapest authenticated read with `credential`'s current key,
    /// audited as a credential read of `org`.
    fn probe_credential<'a>(&'a self, org: &'a Org, credential: &'a Credential) -> ProbeFuture<'a>;
    /// The same with a key that is not stored yet (a create with `"verify": true`).
    fn probe_secret<'a>(
        &'a self,
        provider: ProviderId,
        base_url: Option<&'a str>,
        secret: &'a ProviderSecret,
    ) -> ProbeFuture<'a>;
    /// This node's view of a credential's health (a cooldown), if it has one.
    fn local_health(&self, credential: &CredentialId) -> Option<CredentialHealth>;
    /// What the operator should know about how the data plane runs now (rate limits
    /// enforced per node because the shared store is unreachable, …): `/readyz` detail.
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Where the probe is installed (shared by the vault's clones).
pub(crate) type ProbeSlot = Arc<OnceLock<Arc<dyn KeyProbe>>>;

/// Rate limits as an admin writes them: teams by id or name, tokens by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsInput {
    /// The whole org's.
    #[serde(default, skip_serializing_if = "RateLimit::is_empty")]
    pub org: RateLimit,
    /// Per team, by name or id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<byok_domain::Name, RateLimit>)]
    pub teams: BTreeMap<String, RateLimit>,
    /// Per workload token, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<TokenId, RateLimit>)]
    pub tokens: BTreeMap<String, RateLimit>,
}

/// An org's rate limits as the API shows them: teams by name, tokens by id.
pub type LimitsView = LimitsInput;

impl Vault {
    /// Install the data plane's probe (once; later calls change nothing).
    pub fn set_key_probe(&self, probe: Arc<dyn KeyProbe>) {
        let _ = self.probe.set(probe);
    }

    /// The data plane's notices for `/readyz` (empty when all runs as configured).
    pub fn data_plane_notices(&self) -> Vec<String> {
        self.probe.get().map(|p| p.notices()).unwrap_or_default()
    }

    pub(crate) fn local_health(&self, credential: &CredentialId) -> Option<CredentialHealth> {
        self.probe.get().and_then(|p| p.local_health(credential))
    }

    /// A credential as the API shows it, with this node's cooldown when it has one (the
    /// durable `failing` state wins).
    pub(crate) fn with_local_health(&self, mut credential: Credential) -> Credential {
        if !credential.health.is_failing() {
            if let Some(health) = self.local_health(&credential.id) {
                credential.health = health;
            }
        }
        credential
    }

    /// An org's rate limits.
    pub async fn limits(&self, org: OrgId) -> Result<LimitsView, VaultError> {
        let org = self.org_by_id(org).await?;
        let mut view = LimitsView { org: org.limits.org, ..LimitsView::default() };
        for (team_id, limit) in &org.limits.teams {
            let name = match self.store.get_team(&org.id, team_id).await? {
                Some(team) => team.name.as_str().to_owned(),
                None => team_id.to_string(),
            };
            view.teams.insert(name, *limit);
        }
        for (token, limit) in &org.limits.tokens {
            view.tokens.insert(token.to_string(), *limit);
        }
        Ok(view)
    }

    /// Set an org's rate limits, replacing them whole (an empty body removes them).
    pub async fn set_limits(&self, actor: &Actor, org: OrgId, input: LimitsInput) -> Result<LimitsView, VaultError> {
        let org = self.live_org(org).await?;
        input.org.check("org").map_err(VaultError::Invalid)?;
        for (name, limit) in &input.teams {
            limit.check(&format!("teams.{name}")).map_err(VaultError::Invalid)?;
        }
        for (id, limit) in &input.tokens {
            limit.check(&format!("tokens.{id}")).map_err(VaultError::Invalid)?;
        }
        let mut limits = OrgLimits { org: input.org, ..OrgLimits::default() };
        for (reference, limit) in &input.teams {
            let team = self.team(&org, reference).await.map_err(in_field("teams"))?;
            limits.teams.insert(team.id, *limit);
        }
        for (reference, limit) in &input.tokens {
            let id: TokenId = reference.parse().map_err(|_| {
                VaultError::Invalid(format!("tokens: '{reference}' is not a workload token id (tok_…)"))
            })?;
            match self.store.get_workload_token(&org.id, &id).await? {
                Some(_) => {}
                None => {
                    return Err(VaultError::NotFound(format!("tokens: no workload token {id} in org '{}'", org.name)))
                }
            }
            limits.tokens.insert(id, *limit);
        }
        self.write_limits(actor, &org, limits).await?;
        self.limits(org.id).await
    }

    /// Remove every rate limit of the org.
    pub async fn clear_limits(&self, actor: &Actor, org: OrgId) -> Result<(), VaultError> {
        let org = self.live_org(org).await?;
        self.write_limits(actor, &org, OrgLimits::default()).await
    }

    async fn write_limits(&self, actor: &Actor, org: &Org, limits: OrgLimits) -> Result<(), VaultError> {
        if limits == org.limits {
            return Ok(());
        }
        let mut changed = event(org.id, LifecycleKind::LimitsChanged, org.id, actor);
        changed.details = serde_json::json!({ "before": org.limits, "after": limits });
        self.store.update_org(&org.id, &byok_store::OrgChange::Limits(limits), &changed).await?;
        self.epoch.bump();
        Ok(())
    }

    /// The provider rejected `credential` of `org` with `status` (401/403) on a call:
    /// it is `failing` on every node until rotated, enabled again or verified. Recorded
    /// once (a second rejection of a failing key records nothing); returns whether this
    /// call recorded it.
    pub async fn credential_rejected(
        &self,
        org: OrgId,
        credential: &Credential,
        status: u16,
        call_id: &str,
    ) -> Result<bool, VaultError> {
        let rejected = credential_event(
            org,
            LifecycleKind::ProviderRejected,
            credential.id,
            credential.version,
            &credential.fingerprint,
            &Actor::System,
            serde_json::json!({ "upstream_status": status, "call_id": call_id }),
        );
        let changed = self
            .store
            .set_credential_failing(&org, &credential.id, Some((status, credential.version)), Some(&rejected))
            .await?;
        if changed {
            self.epoch.bump();
        }
        Ok(changed)
    }

    /// Verify a stored credential against its provider: audited as a credential read,
    /// recorded as a `verified` event; a 401/403 makes it `failing`, a success clears it.
    pub async fn verify_credential(
        &self,
        actor: &Actor,
        owner: impl Into<Owner>,
        reference: &str,
    ) -> Result<Verification, VaultError> {
        let (credential, org, _) = self.credential_pool_of(owner.into(), reference).await?;
        if credential.state == byok_domain::CredentialState::Revoked {
            return Err(VaultError::Conflict(format!("credential {} is revoked; revocation is final", credential.id)));
        }
        if credential.provider == ProviderId::Bedrock {
            return Err(VaultError::unprocessable(format!("credential {}: {BEDROCK_UNVERIFIABLE}", credential.id)));
        }
        let probe = self.probe.get().ok_or_else(|| VaultError::internal("no data plane is running to verify with"))?;
        let result = probe.probe_credential(&org, &credential).await?;
        let verified = credential_event(
            org.id,
            LifecycleKind::Verified,
            credential.id,
            credential.version,
            &credential.fingerprint,
            actor,
            serde_json::to_value(result).unwrap_or_default(),
        );
        match (result.reason, result.status) {
            (VerifyReason::Ok, _) => {
                if !self.store.set_credential_failing(&org.id, &credential.id, None, Some(&verified)).await? {
                    self.store.record_credential_event(&verified).await?;
                }
            }
            (VerifyReason::InvalidKey, Some(status)) => {
                self.store.record_credential_event(&verified).await?;
                let rejected = credential_event(
                    org.id,
                    LifecycleKind::ProviderRejected,
                    credential.id,
                    credential.version,
                    &credential.fingerprint,
                    actor,
                    serde_json::json!({ "upstream_status": status, "verification": true }),
                );
                self.store
                    .set_credential_failing(
                        &org.id,
                        &credential.id,
                        Some((status, credential.version)),
                        Some(&rejected),
                    )
                    .await?;
            }
            _ => self.store.record_credential_event(&verified).await?,
        }
        self.epoch.bump();
        Ok(result)
    }

    /// Verify a key that is not stored yet (create with `"verify": true`).
    pub(crate) async fn verify_new_secret(
        &self,
        provider: ProviderId,
        base_url: Option<&str>,
        secret: &ProviderSecret,
    ) -> Result<Verification, VaultError> {
        if provider == ProviderId::Bedrock {
            return Err(VaultError::unprocessable(format!("verify: {BEDROCK_UNVERIFIABLE}")));
        }
        let probe = self.probe.get().ok_or_else(|| VaultError::internal("no data plane is running to verify with"))?;
        probe.probe_secret(provider, base_url, secret).await
    }
}
