//! Workload tokens and admin tokens. Only a token's hash is ever stored.

use byok_crypto::TokenHash;
use byok_domain::{AdminToken, AdminTokenScope, Name, OrgId, Timestamp, TokenId, WorkflowId, WorkloadToken};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection};

use crate::error::{map_insert, map_sqlx, StoreError};
use crate::events::{insert_event, NewEvent};
use crate::rows::{to_json, Row};
use crate::store::Store;

const WORKLOAD_COLUMNS: &str = "id, name, description, org_id, team_id, workflows, expires_at, revoked_at, created_at";
const ADMIN_COLUMNS: &str = "id, org_id, expires_at, revoked_at, created_at, last_used_at";

/// How stale an admin token's `last_used_at` may get before a use records it again (a
/// write per request would cost every admin call a transaction).
const LAST_USED_GRANULARITY_US: i64 = 60_000_000;

fn decode_workload(row: &AnyRow) -> Result<WorkloadToken, StoreError> {
    let r = Row::new(row, "workload_tokens");
    Ok(WorkloadToken {
        id: r.parse("id")?,
        name: r.opt_name("name")?,
        description: r.opt_text("description")?,
        org_id: r.parse("org_id")?,
        team_id: r.parse("team_id")?,
        workflows: r.json::<Vec<WorkflowId>>("workflows")?,
        expires_at: r.opt_ts("expires_at")?,
        revoked_at: r.opt_ts("revoked_at")?,
        created_at: r.ts("created_at")?,
    })
}

fn decode_admin(row: &AnyRow) -> Result<AdminToken, StoreError> {
    let r = Row::new(row, "admin_tokens");
    let scope = match r.opt_parse::<OrgId>("org_id")? {
        None => AdminTokenScope::Operator,
        Some(org_id) => AdminTokenScope::Org { org_id },
    };
    Ok(AdminToken {
        id: r.parse("id")?,
        scope,
        expires_at: r.opt_ts("expires_at")?,
        revoked_at: r.opt_ts("revoked_at")?,
        created_at: r.ts("created_at")?,
        last_used_at: r.opt_ts("last_used_at")?,
    })
}

async fn fetch_workload(
    conn: &mut AnyConnection,
    org: &OrgId,
    id: &TokenId,
) -> Result<Option<WorkloadToken>, StoreError> {
    sqlx::query::<Any>(&format!("SELECT {WORKLOAD_COLUMNS} FROM workload_tokens WHERE org_id = $1 AND id = $2"))
        .bind(org.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?
        .as_ref()
        .map(decode_workload)
        .transpose()
}

impl Store {
    // ----- workload tokens --------------------------------------------------------------

    /// Store a workload token by its hash and record `event`, in one transaction.
    /// [`StoreError::Conflict`] if the hash or id is already stored;
    /// [`StoreError::NotFound`] if the org, or the team within that org, does not exist.
    pub async fn insert_workload_token(
        &self,
        token: &WorkloadToken,
        hash: &TokenHash,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        let workflows = to_json(&token.workflows, "token workflows")?;
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>(
            "INSERT INTO workload_tokens \
             (id, org_id, team_id, token_hash, workflows, expires_at, revoked_at, created_at, name, description) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(token.id.to_string())
        .bind(token.org_id.to_string())
        .bind(token.team_id.to_string())
        .bind(hash.as_bytes().as_slice())
        .bind(workflows)
        .bind(token.expires_at.map(|t| t.as_micros()))
        .bind(token.revoked_at.map(|t| t.as_micros()))
        .bind(token.created_at.as_micros())
        .bind(token.name.as_ref().map(|name| name.to_string()))
        .bind(token.description.clone())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            map_insert(
                e,
                |about| {
                    if about.contains("hash") {
                        "a workload token with the same hash already exists".to_owned()
                    } else if about.contains("name") {
                        let name = token.name.as_ref().map(ToString::to_string).unwrap_or_default();
                        format!("a workload token named '{name}' already exists in this org")
                    } else {
                        format!("a workload token with id {} already exists", token.id)
                    }
                },
                |_| format!("team {} does not exist in {}", token.team_id, token.org_id),
            )
        })?;
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// The workload token whose hash is `hash` (revoked and expired ones included: the
    /// caller decides).
    pub async fn find_workload_token_by_hash(&self, hash: &TokenHash) -> Result<Option<WorkloadToken>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {WORKLOAD_COLUMNS} FROM workload_tokens WHERE token_hash = $1"))
            .bind(hash.as_bytes().as_slice())
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_workload)
            .transpose()
    }

    /// The workload token with this id in `org`.
    pub async fn get_workload_token(&self, org: &OrgId, id: &TokenId) -> Result<Option<WorkloadToken>, StoreError> {
        let mut conn = self.reader().acquire().await.map_err(map_sqlx)?;
        fetch_workload(&mut conn, org, id).await
    }

    /// The workload token named `name` in `org`.
    pub async fn find_workload_token_by_name(
        &self,
        org: &OrgId,
        name: &Name,
    ) -> Result<Option<WorkloadToken>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {WORKLOAD_COLUMNS} FROM workload_tokens WHERE org_id = $1 AND name = $2"))
            .bind(org.to_string())
            .bind(name.to_string())
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_workload)
            .transpose()
    }

    /// The org's workload tokens, oldest first.
    pub async fn list_workload_tokens(&self, org: &OrgId) -> Result<Vec<WorkloadToken>, StoreError> {
        let rows = sqlx::query::<Any>(&format!(
            "SELECT {WORKLOAD_COLUMNS} FROM workload_tokens WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org.to_string())
        .fetch_all(self.reader())
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(decode_workload).collect()
    }

    /// Revoke a workload token at `at` and record `event`, in one transaction; returns
    /// the token as it is now. Idempotent: a token already revoked is returned unchanged
    /// and no event is written. [`StoreError::NotFound`] if there is no such token in
    /// `org`.
    pub async fn revoke_workload_token(
        &self,
        org: &OrgId,
        id: &TokenId,
        at: Timestamp,
        event: &NewEvent,
    ) -> Result<WorkloadToken, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query::<Any>(
            "UPDATE workload_tokens SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(at.as_micros())
        .bind(org.to_string())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() > 0 {
            insert_event(&mut tx, self.backend(), event).await?;
        }
        let token = fetch_workload(&mut tx, org, id)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: format!("workload token {id} does not exist in {org}") })?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(token)
    }

    // ----- admin tokens -----------------------------------------------------------------

    /// Store an admin token by its hash (the operator token has no org) and record
    /// `event` if given, in one transaction. [`StoreError::Conflict`] if the hash or id is
    /// already stored; [`StoreError::NotFound`] if its org does not exist.
    pub async fn insert_admin_token(
        &self,
        token: &AdminToken,
        hash: &TokenHash,
        event: Option<&NewEvent>,
    ) -> Result<(), StoreError> {
        let org_id = match token.scope {
            AdminTokenScope::Operator => None,
            AdminTokenScope::Org { org_id } => Some(org_id),
        };
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>(
            "INSERT INTO admin_tokens (id, org_id, token_hash, expires_at, revoked_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token.id.to_string())
        .bind(org_id.map(|o| o.to_string()))
        .bind(hash.as_bytes().as_slice())
        .bind(token.expires_at.map(|t| t.as_micros()))
        .bind(token.revoked_at.map(|t| t.as_micros()))
        .bind(token.created_at.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            map_insert(
                e,
                |about| {
                    if about.contains("hash") {
                        "an admin token with the same hash already exists".to_owned()
                    } else {
                        format!("an admin token with id {} already exists", token.id)
                    }
                },
                |_| match org_id {
                    Some(org) => format!("org {org} does not exist"),
                    None => "a referenced row does not exist".to_owned(),
                },
            )
        })?;
        if let Some(event) = event {
            insert_event(&mut tx, self.backend(), event).await?;
        }
        tx.commit().await.map_err(map_sqlx)
    }

    /// The admin token whose hash is `hash` (revoked and expired ones included: the
    /// caller decides).
    pub async fn find_admin_token_by_hash(&self, hash: &TokenHash) -> Result<Option<AdminToken>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {ADMIN_COLUMNS} FROM admin_tokens WHERE token_hash = $1"))
            .bind(hash.as_bytes().as_slice())
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_admin)
            .transpose()
    }

    /// The org's admin tokens, oldest first (never their hashes).
    pub async fn list_admin_tokens(&self, org: &OrgId) -> Result<Vec<AdminToken>, StoreError> {
        let rows = sqlx::query::<Any>(&format!(
            "SELECT {ADMIN_COLUMNS} FROM admin_tokens WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org.to_string())
        .fetch_all(self.reader())
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(decode_admin).collect()
    }

    /// Record that `token` was used at `at`, unless its last use is already recorded as
    /// less than a minute before (at most one write per token and minute).
    pub async fn touch_admin_token(&self, token: &AdminToken, at: Timestamp) -> Result<(), StoreError> {
        if token.last_used_at.is_some_and(|last| at.as_micros() - last.as_micros() < LAST_USED_GRANULARITY_US) {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>(
            "UPDATE admin_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(at.as_micros())
        .bind(token.id.to_string())
        .bind(at.as_micros() - LAST_USED_GRANULARITY_US)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// Revoke an org-admin token of `org` at `at` and record `event`, in one
    /// transaction; returns the token as it is now. Idempotent like
    /// [`revoke_workload_token`](Self::revoke_workload_token). [`StoreError::NotFound`]
    /// if `org` has no such token (the operator token belongs to no org: it cannot be
    /// revoked this way).
    pub async fn revoke_admin_token(
        &self,
        org: &OrgId,
        id: &byok_domain::AdminTokenId,
        at: Timestamp,
        event: &NewEvent,
    ) -> Result<AdminToken, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query::<Any>(
            "UPDATE admin_tokens SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(at.as_micros())
        .bind(org.to_string())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() > 0 {
            insert_event(&mut tx, self.backend(), event).await?;
        }
        let token =
            sqlx::query::<Any>(&format!("SELECT {ADMIN_COLUMNS} FROM admin_tokens WHERE org_id = $1 AND id = $2"))
                .bind(org.to_string())
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_sqlx)?
                .as_ref()
                .map(decode_admin)
                .transpose()?
                .ok_or_else(|| StoreError::NotFound { what: format!("admin token {id} does not exist in {org}") })?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(token)
    }
}
