//! Orgs, teams, workflows and admin tokens.

use byok_domain::{
    Actor, AdminToken, AdminTokenId, AdminTokenScope, KmsName, LifecycleKind, Org, OrgId, OrgState, Team, TeamId, Tier,
    Timestamp, Workflow, WorkflowId,
};

use crate::error::VaultError;
use crate::events::event;
use crate::tokens::IssuedAdminToken;
use crate::{validate, Vault};

/// The longest negotiated audit retention, in days (a century).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl Vault {
    /// Create an org with its first KEK and its fingerprint key.
    ///
    /// The KEK is created before the row is written; if the write fails the KEK is
    /// destroyed again, so a refused org leaves nothing in the KMS either.
    pub async fn create_org(&self, actor: &Actor, name: &str, tier: Tier) -> Result<Org, VaultError> {
        self.create_org_with_retention(actor, name, tier, None).await
    }

    /// Create an org; `retention_days` is the negotiated audit retention (katman-c only).
    pub async fn create_org_with_retention(
        &self,
        actor: &Actor,
        name: &str,
        tier: Tier,
        retention_days: Option<u32>,
    ) -> Result<Org, VaultError> {
        let name = validate::name("name", name)?;
        if retention_days.is_some() && tier != Tier::KatmanC {
            return Err(VaultError::TierForbids(format!(
                "retention_days is negotiated on katman-c only; {tier} keeps its tier's retention"
            )));
        }
        if retention_days.is_some_and(|days| days == 0 || days > MAX_RETENTION_DAYS) {
            return Err(VaultError::invalid(format!("retention_days must be from 1 to {MAX_RETENTION_DAYS}")));
        }
        if self.store.find_org_by_name(name.as_str()).await?.is_some() {
            return Err(VaultError::Conflict(format!("an org named '{name}' already exists")));
        }
        let id = OrgId::generate();
        let kek_version = self.kms.create_org_kek(id).await?;
        let result = async {
            let (_key, wrapped) = self.kms.new_fingerprint_key(id).await?;
            let org = Org {
                id,
                name,
                tier,
                state: OrgState::Active,
                kek_version,
                kms: KmsName::default_kms(),
                kms_moving_from: None,
                retention_days,
                rate_card: None,
                budget: Default::default(),
                controls: Default::default(),
                limits: Default::default(),
                created_at: Timestamp::now(),
            };
            let mut created = event(id, LifecycleKind::OrgCreated, id, actor);
            created.details = serde_json::json!({
                "name": org.name, "tier": tier, "kek_version": kek_version, "retention_days": retention_days,
            });
            self.store.insert_org(&org, &wrapped, &created).await?;
            Ok::<_, VaultError>(org)
        }
        .await;
        if result.is_err() {
            if let Err(err) = self.kms.destroy_org_keks(&KmsName::default_kms(), id).await {
                tracing::warn!(org = %id, error = %byok_domain::error::Report(&err), "could not destroy the KEK of an org that was not created");
            }
        }
        result
    }

    /// An org by id or name: what a request names is resolved here, once; every other
    /// org operation takes the org's [`OrgId`].
    pub async fn org(&self, reference: &str) -> Result<Org, VaultError> {
        let found = match reference.parse::<OrgId>() {
            Ok(id) => self.store.get_org(&id).await?,
            Err(_) => self.store.find_org_by_name(reference).await?,
        };
        found.ok_or_else(|| VaultError::NotFound(format!("no org '{reference}'")))
    }

    /// An org by id (the admin API resolves what a request names to an id first, with
    /// [`Vault::org`]). A missing one is reported as [`Vault::org`] reports an id.
    pub(crate) async fn org_by_id(&self, id: OrgId) -> Result<Org, VaultError> {
        self.store.get_org(&id).await?.ok_or_else(|| VaultError::NotFound(format!("no org '{id}'")))
    }

    /// An org that may still be changed (not crypto-shredded).
    pub(crate) async fn live_org(&self, id: OrgId) -> Result<Org, VaultError> {
        let org = self.org_by_id(id).await?;
        if org.state == OrgState::Deleted {
            return Err(VaultError::Conflict(format!("org '{}' was deleted; it can no longer be changed", org.name)));
        }
        Ok(org)
    }

    /// All orgs (the caller filters by what the admin token may see).
    pub async fn list_orgs(&self) -> Result<Vec<Org>, VaultError> {
        Ok(self.store.list_orgs().await?)
    }

    /// Create a team.
    pub async fn create_team(&self, actor: &Actor, org: OrgId, name: &str) -> Result<Team, VaultError> {
        let org = self.live_org(org).await?;
        let name = validate::name("name", name)?;
        if self.store.find_team_by_name(&org.id, name.as_str()).await?.is_some() {
            return Err(VaultError::Conflict(format!("a team named '{name}' already exists in org '{}'", org.name)));
        }
        let team = Team { id: TeamId::generate(), org_id: org.id, name, created_at: Timestamp::now() };
        let mut created = event(org.id, LifecycleKind::TeamCreated, team.id, actor);
        created.details = serde_json::json!({ "name": team.name });
        self.store.insert_team(&team, &created).await?;
        self.epoch.bump();
        Ok(team)
    }

    /// A team of `org` by id or name.
    pub async fn team(&self, org: &Org, reference: &str) -> Result<Team, VaultError> {
        let found = match reference.parse::<TeamId>() {
            Ok(id) => self.store.get_team(&org.id, &id).await?,
            Err(_) => self.store.find_team_by_name(&org.id, reference).await?,
        };
        found.ok_or_else(|| VaultError::NotFound(format!("no team '{reference}' in org '{}'", org.name)))
    }

    /// The org's teams.
    pub async fn list_teams(&self, org: OrgId) -> Result<Vec<Team>, VaultError> {
        let org = self.org_by_id(org).await?;
        Ok(self.store.list_teams(&org.id).await?)
    }

    /// Create a workflow, optionally owned by a team.
    pub async fn create_workflow(
        &self,
        actor: &Actor,
        org: OrgId,
        name: &str,
        team: Option<&str>,
    ) -> Result<Workflow, VaultError> {
        let org = self.live_org(org).await?;
        let name = validate::name("name", name)?;
        let team_id = match team {
            Some(reference) => Some(self.team(&org, reference).await.map_err(in_field("team"))?.id),
            None => None,
        };
        if self.store.find_workflow_by_name(&org.id, name.as_str()).await?.is_some() {
            return Err(VaultError::Conflict(format!(
                "a workflow named '{name}' already exists in org '{}'",
                org.name
            )));
        }
        let workflow =
            Workflow { id: WorkflowId::generate(), org_id: org.id, name, team_id, created_at: Timestamp::now() };
        let mut created = event(org.id, LifecycleKind::WorkflowCreated, workflow.id, actor);
        created.details = serde_json::json!({ "name": workflow.name, "team_id": team_id });
        self.store.insert_workflow(&workflow, &created).await?;
        self.epoch.bump();
        Ok(workflow)
    }

    /// A workflow of `org` by id or name.
    pub async fn workflow(&self, org: &Org, reference: &str) -> Result<Workflow, VaultError> {
        let found = match reference.parse::<WorkflowId>() {
            Ok(id) => self.store.get_workflow(&org.id, &id).await?,
            Err(_) => self.store.find_workflow_by_name(&org.id, reference).await?,
        };
        found.ok_or_else(|| VaultError::NotFound(format!("no workflow '{reference}' in org '{}'", org.name)))
    }

    /// The org's workflows.
    pub async fn list_workflows(&self, org: OrgId) -> Result<Vec<Workflow>, VaultError> {
        let org = self.org_by_id(org).await?;
        Ok(self.store.list_workflows(&org.id).await?)
    }

    /// Issue an org-admin token confined to `org`, by `issuer`. The text is returned once.
    /// An org admin's new token expires no later than its own (by default, with it).
    pub async fn issue_org_admin_token(
        &self,
        issuer: &AdminToken,
        org: OrgId,
        expires_at: Option<Timestamp>,
    ) -> Result<IssuedAdminToken, VaultError> {
        let org = self.live_org(org).await?;
        validate::expiry("expires_at", expires_at, Timestamp::now())?;
        let expires_at = match (issuer.is_operator(), issuer.expires_at, expires_at) {
            (false, Some(limit), None) => Some(limit),
            (false, Some(limit), Some(at)) if at > limit => {
                return Err(VaultError::unprocessable(format!(
                    "expires_at: {at} is later than this admin token's own expiry ({limit}); an org admin's new \
                     token expires no later than its own"
                )))
            }
            (_, _, at) => at,
        };
        let token = AdminToken {
            id: AdminTokenId::generate(),
            scope: AdminTokenScope::Org { org_id: org.id },
            expires_at,
            revoked_at: None,
            created_at: Timestamp::now(),
            last_used_at: None,
        };
        let mut issued = event(org.id, LifecycleKind::AdminTokenIssued, token.id, &Actor::AdminToken { id: issuer.id });
        issued.details = serde_json::json!({ "expires_at": expires_at });
        self.insert_admin_token(token, Some(&issued)).await
    }
}

/// A reference inside a request body that does not resolve answers 404 like one in the
/// path, its message naming the field.
pub(crate) fn in_field(field: &'static str) -> impl Fn(VaultError) -> VaultError {
    move |err| match err {
        VaultError::NotFound(message) => VaultError::NotFound(format!("{field}: {message}")),
        other => other,
    }
}
