//! Credentials: create, read, change scope, rotate, disable/enable/revoke.

use byok_crypto::{fingerprint, ProviderSecret, SecretContext};
use byok_domain::{
    Actor, Credential, CredentialId, CredentialOwner, CredentialState, CredentialVersion, LifecycleEvent,
    LifecycleKind, Name, Org, OrgId, ProviderId, Scope, ScopeInput, Tier, Timestamp,
};
use byok_store::{CredentialRecord, EventFilter};
use serde::Serialize;

use crate::error::VaultError;
use crate::events::credential_event;
use crate::orgs::in_field;
use crate::{validate, Vault};

/// What to create a credential from.
#[derive(Debug)]
pub struct NewCredential {
    /// Unique within the org.
    pub name: String,
    /// The one provider it serves.
    pub provider: ProviderId,
    /// The provider key.
    pub secret: ProviderSecret,
    /// Allow-lists (teams and workflows by id or name).
    pub scope: ScopeInput,
    /// Admin-set upstream base URL.
    pub base_url: Option<String>,
    /// When it stops resolving.
    pub expires_at: Option<Timestamp>,
    /// Tie-breaker; higher wins.
    pub priority: Option<i32>,
    /// Share of the calls within its pool (1–1000; default 1).
    pub weight: Option<u16>,
    /// The provider account's calls per minute, to pace the key.
    pub rpm: Option<u64>,
    /// The provider account's tokens per minute.
    pub tpm: Option<u64>,
    /// Verify the key against the provider before storing it; a key the provider
    /// rejects is refused (`credential_invalid`) and nothing is stored.
    pub verify: bool,
}

/// A change to a credential's scope, expiry or priority. `None` leaves a field alone;
/// `expires_at: Some(None)` removes the expiry.
#[derive(Debug, Clone, Default)]
pub struct CredentialPatch {
    /// New allow-lists (replacing the old ones whole).
    pub scope: Option<ScopeInput>,
    /// New expiry, or `Some(None)` to remove it.
    pub expires_at: Option<Option<Timestamp>>,
    /// New priority.
    pub priority: Option<i32>,
    /// New weight.
    pub weight: Option<u16>,
    /// New calls-per-minute pace, or `Some(None)` to remove it.
    pub rpm: Option<Option<u64>>,
    /// New tokens-per-minute pace, or `Some(None)` to remove it.
    pub tpm: Option<Option<u64>>,
}

impl CredentialPatch {
    fn is_empty(&self) -> bool {
        self.scope.is_none()
            && self.expires_at.is_none()
            && self.priority.is_none()
            && self.weight.is_none()
            && self.rpm.is_none()
            && self.tpm.is_none()
    }
}

/// Check a weight and the provider-account paces (400 naming the field).
fn check_pacing(weight: Option<u16>, rpm: Option<u64>, tpm: Option<u64>) -> Result<(), VaultError> {
    if let Some(weight) = weight {
        if !(1..=byok_domain::model::MAX_WEIGHT).contains(&weight) {
            return Err(VaultError::invalid(format!(
                "weight: must be a whole number from 1 to {}, not {weight}",
                byok_domain::model::MAX_WEIGHT
            )));
        }
    }
    byok_domain::RateLimit { rpm, tpm }
        .check("credential")
        .map_err(|e| VaultError::Invalid(e.trim_start_matches("credential.").to_owned()))
}

/// A state change requested by an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    /// active → disabled.
    Disable,
    /// disabled → active.
    Enable,
    /// any → revoked, for good.
    Revoke,
}

/// A credential with its versions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CredentialDetail {
    /// The credential.
    #[serde(flatten)]
    pub credential: Credential,
    /// Every version, oldest first.
    pub versions: Vec<CredentialVersion>,
}

/// Whose credentials an operation acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// An org's own (resolved from what a request names with [`Vault::org`]).
    Org(OrgId),
    /// The operator's platform pool (katman-a orgs fall back to it).
    Platform,
}

impl From<OrgId> for Owner {
    fn from(org: OrgId) -> Self {
        Owner::Org(org)
    }
}

/// The resolved owner: the org row (the platform pool is stored as one) and its kind.
struct Pool {
    org: Org,
    owner: CredentialOwner,
}

const DAY_MICROS: i64 = 86_400_000_000;

/// A credential as the API shows it: effective state, owner, and the katman-c rotation
/// deadline when the org has a maximum credential age.
pub(crate) fn present(mut credential: Credential, org: &Org, owner: CredentialOwner, now: Timestamp) -> Credential {
    credential.state = Credential::effective_state(credential.state, credential.expires_at, now);
    credential.owner = owner;
    credential.rotate_by = rotate_by(&credential, org);
    credential
}

/// When `credential` must be rotated by under `org`'s maximum credential age (katman-c).
pub fn rotate_by(credential: &Credential, org: &Org) -> Option<Timestamp> {
    let days = org.controls.max_credential_age_days.filter(|_| org.tier == Tier::KatmanC)?;
    Timestamp::from_micros(credential.version_created_at.as_micros().saturating_add(i64::from(days) * DAY_MICROS))
}

impl Vault {
    /// The owner's row: a live org, or the platform pool (made on first use when
    /// `create`). `None` only for a platform pool that does not exist yet.
    async fn pool(&self, owner: Owner, live: bool, create: bool) -> Result<Option<Pool>, VaultError> {
        match owner {
            Owner::Org(id) => {
                let org = if live { self.live_org(id).await? } else { self.org_by_id(id).await? };
                Ok(Some(Pool { org, owner: CredentialOwner::Org }))
            }
            Owner::Platform => {
                let org = if create {
                    Some(self.platform_pool(&Actor::System).await?)
                } else {
                    self.store.platform_org().await?
                };
                Ok(org.map(|org| Pool { org, owner: CredentialOwner::Platform }))
            }
        }
    }

    async fn existing_pool(&self, owner: Owner, live: bool) -> Result<Pool, VaultError> {
        self.pool(owner, live, false)
            .await?
            .ok_or_else(|| VaultError::NotFound("the platform pool has no credentials yet".to_owned()))
    }

    /// Platform credentials serve every katman-a org: teams and workflows do not apply.
    fn check_platform_scope(owner: CredentialOwner, scope: &ScopeInput) -> Result<(), VaultError> {
        if owner == CredentialOwner::Platform && (!scope.teams.is_empty() || !scope.workflows.is_empty()) {
            return Err(VaultError::unprocessable(
                "scope: a platform credential serves every katman-a org, so scope.teams and scope.workflows do not \
                 apply to it; restrict it by model_families, capabilities or modes",
            ));
        }
        Ok(())
    }

    /// Resolve a scope as written by an admin into stored form, checking every reference.
    async fn resolve_scope(&self, org: &Org, input: &ScopeInput) -> Result<Scope, VaultError> {
        let mut teams = Vec::with_capacity(input.teams.len());
        for reference in &input.teams {
            teams.push(self.team(org, reference).await.map_err(in_field("scope.teams"))?.id);
        }
        let mut workflows = Vec::with_capacity(input.workflows.len());
        for reference in &input.workflows {
            workflows.push(self.workflow(org, reference).await.map_err(in_field("scope.workflows"))?.id);
        }
        Ok(Scope {
            model_families: validate::model_families(&self.families, &input.model_families)?,
            capabilities: validate::dedup_sorted(&input.capabilities),
            modes: validate::dedup_sorted(&input.modes),
            teams: validate::dedup_sorted(&teams),
            workflows: validate::dedup_sorted(&workflows),
        })
    }

    /// Tier controls on a credential's shape (katman-c: expiry required, no org-wide scope).
    fn check_tier_controls(org: &Org, scope: &Scope, expires_at: Option<Timestamp>) -> Result<(), VaultError> {
        if org.tier != Tier::KatmanC {
            return Ok(());
        }
        if expires_at.is_none() {
            return Err(VaultError::TierForbids(format!(
                "org {} is on katman-c, which requires every credential to have expires_at",
                org.id
            )));
        }
        if scope.teams.is_empty() && scope.workflows.is_empty() {
            return Err(VaultError::TierForbids(format!(
                "org {} is on katman-c, which forbids org-wide credentials; bind it to scope.teams or scope.workflows",
                org.id
            )));
        }
        Ok(())
    }

    async fn fingerprint_of(&self, org: &Org, secret: &ProviderSecret) -> Result<String, VaultError> {
        let wrapped = self
            .store
            .org_fingerprint_key(&org.id)
            .await?
            .ok_or_else(|| VaultError::internal(format!("org {} has no fingerprint key", org.id)))?;
        let key = self.kms.unwrap_fingerprint_key(org.id, wrapped).await?;
        Ok(fingerprint(&key, secret))
    }

    /// Create a credential: validate everything, seal the secret, write credential,
    /// version 1 and its `created` event together. The platform pool (and its KEK) is
    /// made with its first credential.
    pub async fn create_credential(
        &self,
        actor: &Actor,
        owner: impl Into<Owner>,
        new: NewCredential,
    ) -> Result<Credential, VaultError> {
        let owner = owner.into();
        let now = Timestamp::now();
        // Everything that needs no pool is checked before the platform pool is made, so
        // a refused request leaves nothing behind.
        let name = validate::name("name", &new.name)?;
        validate::secret(new.provider, &new.secret)?;
        let base_url = match &new.base_url {
            Some(url) => Some(validate::base_url(url, new.provider, &self.policy)?),
            None if new.provider.requires_base_url() => {
                return Err(VaultError::unprocessable(format!(
                    "base_url: provider {} has no public endpoint; give the resource URL (e.g. https://NAME.openai.azure.com)",
                    new.provider
                )))
            }
            None => None,
        };
        validate::expiry("expires_at", new.expires_at, now)?;
        check_pacing(new.weight, new.rpm, new.tpm)?;
        if owner == Owner::Platform {
            Self::check_platform_scope(CredentialOwner::Platform, &new.scope)?;
            validate::model_families(&self.families, &new.scope.model_families)?;
        }
        // The pool if it exists (the platform pool is made only once nothing else can
        // refuse the request, verification included).
        let existing = self.pool(owner, true, false).await?;
        if let Some(pool) = &existing {
            self.check_new_credential(pool, &name, &new).await?;
        }
        let verification = if new.verify {
            let result = self.verify_new_secret(new.provider, base_url.as_deref(), &new.secret).await?;
            if result.reason == crate::VerifyReason::InvalidKey {
                return Err(VaultError::CredentialInvalid(format!(
                    "the provider rejected the key (status {}); nothing was stored",
                    result.status.map_or_else(|| "none".to_owned(), |s| s.to_string())
                )));
            }
            Some(result)
        } else {
            None
        };
        let pool = match existing {
            Some(pool) => pool,
            None => {
                let pool = self.pool(owner, true, true).await?.ok_or_else(|| VaultError::internal("no pool"))?;
                self.check_new_credential(&pool, &name, &new).await?;
                pool
            }
        };
        let org = &pool.org;
        let scope = self.resolve_scope(org, &new.scope).await?;
        let id = CredentialId::generate();
        let fingerprint = self.fingerprint_of(org, &new.secret).await?;
        let context = SecretContext { org: org.id, credential: id, version: 1, provider: new.provider };
        let sealed = self.kms.seal(&org.kms, context, new.secret).await?;
        let credential = Credential {
            id,
            org_id: org.id,
            name,
            provider: new.provider,
            scope,
            state: CredentialState::Active,
            version: 1,
            fingerprint,
            base_url,
            expires_at: new.expires_at,
            priority: new.priority.unwrap_or(0),
            created_at: now,
            updated_at: now,
            version_created_at: now,
            owner: pool.owner,
            rotate_by: None,
            weight: new.weight.unwrap_or(byok_domain::model::DEFAULT_WEIGHT),
            rpm: new.rpm,
            tpm: new.tpm,
            health: byok_domain::CredentialHealth::default(),
        };
        let created = credential_event(
            org.id,
            LifecycleKind::Created,
            id,
            1,
            &credential.fingerprint,
            actor,
            serde_json::json!({
                "name": credential.name,
                "provider": credential.provider,
                "scope": credential.scope,
                "base_url": credential.base_url,
                "expires_at": credential.expires_at,
                "priority": credential.priority,
                "weight": credential.weight,
                "rpm": credential.rpm,
                "tpm": credential.tpm,
                "kek_version": sealed.wrapped_dek.kek_version,
            }),
        );
        self.store.insert_credential(&credential, &sealed, &created).await?;
        if let Some(result) = verification {
            let verified = credential_event(
                org.id,
                LifecycleKind::Verified,
                id,
                1,
                &credential.fingerprint,
                actor,
                serde_json::to_value(result).unwrap_or_default(),
            );
            self.store.record_credential_event(&verified).await?;
        }
        self.epoch.bump();
        Ok(present(credential, org, pool.owner, now))
    }

    /// What a new credential must satisfy in its pool: its scope's references, the tier's
    /// controls, a name not taken.
    async fn check_new_credential(&self, pool: &Pool, name: &Name, new: &NewCredential) -> Result<(), VaultError> {
        let scope = self.resolve_scope(&pool.org, &new.scope).await?;
        if pool.owner == CredentialOwner::Org {
            Self::check_tier_controls(&pool.org, &scope, new.expires_at)?;
        }
        if self.store.find_credential_by_name(&pool.org.id, name.as_str()).await?.is_some() {
            return Err(VaultError::Conflict(format!(
                "a credential named '{name}' already exists in {}",
                describe_pool(pool)
            )));
        }
        Ok(())
    }

    async fn credential_record(&self, pool: &Pool, reference: &str) -> Result<CredentialRecord, VaultError> {
        let org = &pool.org;
        let found = match reference.parse::<CredentialId>() {
            Ok(id) => self.store.get_credential(&org.id, &id).await?,
            Err(_) => self.store.find_credential_by_name(&org.id, reference).await?,
        };
        found.ok_or_else(|| VaultError::NotFound(format!("no credential '{reference}' in {}", describe_pool(pool))))
    }

    /// One credential with its versions.
    pub async fn credential(&self, owner: impl Into<Owner>, reference: &str) -> Result<CredentialDetail, VaultError> {
        let pool = self.existing_pool(owner.into(), false).await?;
        let record = self.credential_record(&pool, reference).await?;
        let versions = self.store.list_credential_versions(&record.credential.id).await?;
        Ok(CredentialDetail {
            credential: self.with_local_health(present(record.credential, &pool.org, pool.owner, Timestamp::now())),
            versions,
        })
    }

    /// The owner's credentials.
    pub async fn list_credentials(&self, owner: impl Into<Owner>) -> Result<Vec<Credential>, VaultError> {
        let Some(pool) = self.pool(owner.into(), false, false).await? else { return Ok(Vec::new()) };
        let now = Timestamp::now();
        Ok(self
            .store
            .list_credentials(&pool.org.id)
            .await?
            .into_iter()
            .map(|r| self.with_local_health(present(r.credential, &pool.org, pool.owner, now)))
            .collect())
    }

    /// Change scope, expiry or priority.
    pub async fn update_credential(
        &self,
        actor: &Actor,
        owner: impl Into<Owner>,
        reference: &str,
        patch: CredentialPatch,
    ) -> Result<Credential, VaultError> {
        let pool = self.existing_pool(owner.into(), true).await?;
        let org = &pool.org;
        let record = self.credential_record(&pool, reference).await?;
        let before = record.credential.clone();
        if before.state == CredentialState::Revoked {
            return Err(VaultError::Conflict(format!("credential {} is revoked; revocation is final", before.id)));
        }
        check_pacing(patch.weight, patch.rpm.flatten(), patch.tpm.flatten())?;
        if patch.is_empty() {
            // An empty patch changes nothing (as a JSON merge patch of `{}` would).
            return Ok(before);
        }
        let now = Timestamp::now();
        let mut after = before.clone();
        if let Some(scope) = &patch.scope {
            Self::check_platform_scope(pool.owner, scope)?;
            after.scope = self.resolve_scope(org, scope).await?;
        }
        if let Some(expires_at) = patch.expires_at {
            validate::expiry("expires_at", expires_at, now)?;
            after.expires_at = expires_at;
        }
        if let Some(priority) = patch.priority {
            after.priority = priority;
        }
        if let Some(weight) = patch.weight {
            after.weight = weight;
        }
        if let Some(rpm) = patch.rpm {
            after.rpm = rpm;
        }
        if let Some(tpm) = patch.tpm {
            after.tpm = tpm;
        }
        if pool.owner == CredentialOwner::Org {
            Self::check_tier_controls(org, &after.scope, after.expires_at)?;
        }
        after.updated_at = now;
        let changed = credential_event(
            org.id,
            LifecycleKind::ScopeChanged,
            after.id,
            after.version,
            &after.fingerprint,
            actor,
            serde_json::json!({
                "before": {
                    "scope": before.scope, "expires_at": before.expires_at, "priority": before.priority,
                    "weight": before.weight, "rpm": before.rpm, "tpm": before.tpm,
                },
                "after": {
                    "scope": after.scope, "expires_at": after.expires_at, "priority": after.priority,
                    "weight": after.weight, "rpm": after.rpm, "tpm": after.tpm,
                },
            }),
        );
        self.store.update_credential(&after, record.revision, &changed).await?;
        self.epoch.bump();
        Ok(present(after, org, pool.owner, now))
    }

    /// Make a new secret version current.
    pub async fn rotate_credential(
        &self,
        actor: &Actor,
        owner: impl Into<Owner>,
        reference: &str,
        secret: ProviderSecret,
    ) -> Result<Credential, VaultError> {
        let pool = self.existing_pool(owner.into(), true).await?;
        let org = &pool.org;
        let record = self.credential_record(&pool, reference).await?;
        let mut credential = record.credential;
        if credential.state == CredentialState::Revoked {
            return Err(VaultError::Conflict(format!("credential {} is revoked; revocation is final", credential.id)));
        }
        validate::secret(credential.provider, &secret)?;
        let previous = (credential.version, credential.fingerprint.clone());
        let version = credential
            .version
            .checked_add(1)
            .ok_or_else(|| VaultError::Conflict(format!("credential {} has no versions left", credential.id)))?;
        let fingerprint = self.fingerprint_of(org, &secret).await?;
        let context = SecretContext { org: org.id, credential: credential.id, version, provider: credential.provider };
        let sealed = self.kms.seal(&org.kms, context, secret).await?;
        let now = Timestamp::now();
        credential.version = version;
        credential.fingerprint = fingerprint;
        credential.updated_at = now;
        credential.version_created_at = now;
        // A new key: whatever the provider said of the old one no longer applies.
        credential.health = byok_domain::CredentialHealth::default();
        let rotated = credential_event(
            org.id,
            LifecycleKind::Rotated,
            credential.id,
            version,
            &credential.fingerprint,
            actor,
            serde_json::json!({
                "previous_version": previous.0,
                "previous_fingerprint": previous.1,
                "kek_version": sealed.wrapped_dek.kek_version,
            }),
        );
        self.store.rotate_credential(&credential, record.revision, &sealed, &rotated).await?;
        self.epoch.bump();
        Ok(present(credential, org, pool.owner, now))
    }

    /// Disable, enable or revoke. Asking for the state a credential already has changes
    /// nothing and records nothing; revocation is final.
    pub async fn change_credential_state(
        &self,
        actor: &Actor,
        owner: impl Into<Owner>,
        reference: &str,
        change: StateChange,
    ) -> Result<Credential, VaultError> {
        let pool = self.existing_pool(owner.into(), true).await?;
        let org = &pool.org;
        let record = self.credential_record(&pool, reference).await?;
        let mut credential = record.credential;
        let now = Timestamp::now();
        let (target, kind) = match change {
            StateChange::Disable => (CredentialState::Disabled, LifecycleKind::Disabled),
            StateChange::Enable => (CredentialState::Active, LifecycleKind::Enabled),
            StateChange::Revoke => (CredentialState::Revoked, LifecycleKind::Revoked),
        };
        // Enabling a credential the provider rejected clears `failing` (the admin says the
        // key works again); otherwise asking for the state it has changes nothing.
        let clears_failing = change == StateChange::Enable && credential.health.is_failing();
        if credential.state == target && !clears_failing {
            return Ok(present(credential, org, pool.owner, now));
        }
        if credential.state == CredentialState::Revoked {
            return Err(VaultError::Conflict(format!("credential {} is revoked; revocation is final", credential.id)));
        }
        let from = credential.state;
        credential.state = target;
        credential.updated_at = now;
        let mut details = serde_json::json!({ "from": from, "to": target });
        if clears_failing {
            details["cleared"] = serde_json::json!("failing");
            credential.health = byok_domain::CredentialHealth::default();
        }
        let changed =
            credential_event(org.id, kind, credential.id, credential.version, &credential.fingerprint, actor, details);
        if from == target {
            // Only `failing` is cleared: the event says so.
            self.store.set_credential_failing(&org.id, &credential.id, None, Some(&changed)).await?;
        } else {
            self.store.update_credential(&credential, record.revision, &changed).await?;
            if clears_failing {
                self.store.set_credential_failing(&org.id, &credential.id, None, None).await?;
            }
        }
        self.epoch.bump();
        Ok(present(credential, org, pool.owner, now))
    }

    /// A credential and its lifecycle events, in order.
    pub async fn credential_lifecycle(
        &self,
        owner: impl Into<Owner>,
        reference: &str,
    ) -> Result<(Credential, Vec<LifecycleEvent>), VaultError> {
        let pool = self.existing_pool(owner.into(), false).await?;
        let record = self.credential_record(&pool, reference).await?;
        let filter = EventFilter { credential: Some(record.credential.id), ..EventFilter::default() };
        let events = self.store.list_events(&pool.org.id, &filter).await?;
        Ok((present(record.credential, &pool.org, pool.owner, Timestamp::now()), events))
    }

    /// The owner row of a credential (for replays) and whether it is the platform pool.
    pub(crate) async fn credential_pool_of(
        &self,
        owner: Owner,
        reference: &str,
    ) -> Result<(Credential, Org, CredentialOwner), VaultError> {
        let pool = self.existing_pool(owner, false).await?;
        let record = self.credential_record(&pool, reference).await?;
        let credential = present(record.credential, &pool.org, pool.owner, Timestamp::now());
        Ok((credential, pool.org, pool.owner))
    }
}

fn describe_pool(pool: &Pool) -> String {
    match pool.owner {
        CredentialOwner::Platform => "the platform pool".to_owned(),
        CredentialOwner::Org => pool.org.id.to_string(),
    }
}
