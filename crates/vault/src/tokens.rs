//! Admin tokens and workload tokens: issued once, stored as hashes.

use byok_crypto::{TokenHash, TokenKind, TokenText};
use byok_domain::{
    Actor, AdminToken, AdminTokenId, AdminTokenScope, LifecycleKind, Name, OrgId, Timestamp, TokenId, WorkloadToken,
};
use byok_store::NewEvent;

use crate::error::VaultError;
use crate::events::event;
use crate::orgs::in_field;
use crate::{validate, Vault};

/// A freshly issued admin token: the only time its text exists outside the holder.
#[derive(Debug)]
pub struct IssuedAdminToken {
    /// The stored token.
    pub token: AdminToken,
    /// Its text, to show once.
    pub text: TokenText,
}

/// A freshly issued workload token.
#[derive(Debug)]
pub struct IssuedWorkloadToken {
    /// The stored token.
    pub token: WorkloadToken,
    /// Its text, to show once.
    pub text: TokenText,
}

/// What to issue a workload token for.
#[derive(Debug, Clone, Default)]
pub struct NewWorkloadToken {
    /// The team (id or name) whose calls it makes.
    pub team: String,
    /// Workflows (ids or names) it is restricted to; empty = unrestricted.
    pub workflows: Vec<String>,
    /// When it stops working.
    pub expires_at: Option<Timestamp>,
    /// Its name, unique in the org (optional).
    pub name: Option<String>,
    /// What it is for (optional, at most 500 characters).
    pub description: Option<String>,
}

impl Vault {
    pub(crate) async fn insert_admin_token(
        &self,
        token: AdminToken,
        issued: Option<&NewEvent>,
    ) -> Result<IssuedAdminToken, VaultError> {
        let text = TokenText::generate(TokenKind::Admin);
        self.store.insert_admin_token(&token, &text.hash(), issued).await?;
        Ok(IssuedAdminToken { token, text })
    }

    /// Make sure `text` is a valid operator token (registering it if this store has not
    /// seen it, as on first start or a fresh database).
    pub async fn register_operator_token(&self, text: &TokenText) -> Result<AdminToken, VaultError> {
        if !text.expose().starts_with(TokenKind::Admin.prefix()) {
            return Err(VaultError::invalid("the operator token file does not hold a byok admin token"));
        }
        let hash = text.hash();
        if let Some(existing) = self.store.find_admin_token_by_hash(&hash).await? {
            if !existing.is_operator() {
                return Err(VaultError::invalid("the operator token file holds an org-admin token"));
            }
            return Ok(existing);
        }
        let token = AdminToken {
            id: AdminTokenId::generate(),
            scope: AdminTokenScope::Operator,
            expires_at: None,
            revoked_at: None,
            created_at: Timestamp::now(),
            last_used_at: None,
        };
        self.store.insert_admin_token(&token, &hash, None).await?;
        Ok(token)
    }

    /// The admin token presented as a bearer, if it is valid now.
    pub async fn authenticate_admin(&self, presented: &str) -> Result<Option<AdminToken>, VaultError> {
        if !presented.starts_with(TokenKind::Admin.prefix()) {
            return Ok(None);
        }
        // Read on every request, never cached: a revocation through any node applies to
        // the very next request everywhere.
        let token = self.store.find_admin_token_by_hash(&TokenHash::of(presented)).await?;
        let now = Timestamp::now();
        let Some(token) = token.filter(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now)) else {
            return Ok(None);
        };
        if let Err(err) = self.store.touch_admin_token(&token, now).await {
            // Knowing when a token was last used is not worth refusing the request.
            tracing::warn!(token = %token.id, error = %byok_domain::error::Report(&err), "could not record an admin token's use");
        }
        Ok(Some(token))
    }

    /// The org's admin tokens (never their text).
    pub async fn list_admin_tokens(&self, org: OrgId) -> Result<Vec<AdminToken>, VaultError> {
        let org = self.org_by_id(org).await?;
        Ok(self.store.list_admin_tokens(&org.id).await?)
    }

    /// Revoke an org-admin token of `org` (idempotent); it stops working at once, on
    /// every node.
    pub async fn revoke_admin_token(
        &self,
        actor: &Actor,
        org: OrgId,
        id: AdminTokenId,
    ) -> Result<AdminToken, VaultError> {
        let org = self.org_by_id(org).await?;
        let revoked = event(org.id, LifecycleKind::AdminTokenRevoked, id, actor);
        Ok(self.store.revoke_admin_token(&org.id, &id, Timestamp::now(), &revoked).await?)
    }

    /// Issue a workload token bound to a team (and optionally workflows).
    pub async fn issue_workload_token(
        &self,
        actor: &Actor,
        org: OrgId,
        request: NewWorkloadToken,
    ) -> Result<IssuedWorkloadToken, VaultError> {
        let org = self.live_org(org).await?;
        validate::expiry("expires_at", request.expires_at, Timestamp::now())?;
        let name = request.name.as_deref().map(|name| validate::name("name", name)).transpose()?;
        let description =
            request.description.as_deref().map(|text| validate::description("description", text)).transpose()?;
        if let Some(name) = &name {
            if self.store.find_workload_token_by_name(&org.id, name).await?.is_some() {
                return Err(VaultError::Conflict(format!(
                    "a workload token named '{name}' already exists in org '{}'",
                    org.name
                )));
            }
        }
        let team = self.team(&org, &request.team).await.map_err(in_field("team"))?;
        let mut workflows = Vec::with_capacity(request.workflows.len());
        for reference in &request.workflows {
            let workflow = self.workflow(&org, reference).await.map_err(in_field("workflows"))?;
            if let Some(owner) = workflow.team_id.filter(|owner| *owner != team.id) {
                return Err(VaultError::unprocessable(format!(
                    "workflows: workflow '{}' belongs to another team ({owner}), not to team '{}'",
                    workflow.name, team.name
                )));
            }
            workflows.push(workflow.id);
        }
        let token = WorkloadToken {
            id: TokenId::generate(),
            name,
            description,
            org_id: org.id,
            team_id: team.id,
            workflows: validate::dedup_sorted(&workflows),
            expires_at: request.expires_at,
            revoked_at: None,
            created_at: Timestamp::now(),
        };
        let text = TokenText::generate(TokenKind::Workload);
        let mut issued = event(org.id, LifecycleKind::TokenIssued, token.id, actor);
        issued.details = serde_json::json!({
            "team_id": token.team_id, "workflows": token.workflows, "expires_at": token.expires_at,
            "name": token.name, "description": token.description,
        });
        self.store.insert_workload_token(&token, &text.hash(), &issued).await?;
        self.epoch.bump();
        Ok(IssuedWorkloadToken { token, text })
    }

    /// Revoke a workload token (idempotent).
    pub async fn revoke_workload_token(
        &self,
        actor: &Actor,
        org: OrgId,
        id: TokenId,
    ) -> Result<WorkloadToken, VaultError> {
        let org = self.org_by_id(org).await?;
        let revoked = event(org.id, LifecycleKind::TokenRevoked, id, actor);
        let token = self.store.revoke_workload_token(&org.id, &id, Timestamp::now(), &revoked).await?;
        self.epoch.bump();
        Ok(token)
    }

    /// The id of the org's workload token `reference` (its id, or its name).
    pub async fn workload_token_id(&self, org: OrgId, reference: &str) -> Result<TokenId, VaultError> {
        if let Ok(id) = reference.parse::<TokenId>() {
            return Ok(id);
        }
        let missing = || VaultError::NotFound(format!("no workload token '{reference}' (by id tok_… or name)"));
        let Ok(name) = Name::parse(reference) else {
            return Err(missing());
        };
        match self.store.find_workload_token_by_name(&org, &name).await? {
            Some(token) => Ok(token.id),
            None => Err(missing()),
        }
    }

    /// The org's workload tokens (never their text).
    pub async fn list_workload_tokens(&self, org: OrgId) -> Result<Vec<WorkloadToken>, VaultError> {
        let org = self.org_by_id(org).await?;
        Ok(self.store.list_workload_tokens(&org.id).await?)
    }
}
