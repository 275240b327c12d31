//! Orgs, teams and workflows.

use byok_crypto::WrappedDek;
use byok_domain::{
    Budget, KmsName, Name, Org, OrgControls, OrgId, OrgState, PricedCard, Team, TeamId, Tier, Timestamp, Workflow,
    WorkflowId,
};
use sqlx::any::AnyRow;
use sqlx::Any;

use crate::error::{map_insert, map_sqlx, StoreError};
use crate::events::{insert_event, NewEvent};
use crate::rows::{to_json, Row};
use crate::store::Store;

const ORG_COLUMNS: &str =
    "id, name, kind, tier, state, kek_version, kms, kms_moving_from, retention_days, rate_card, budget, controls, created_at, \
     limits";

/// `orgs.kind` of a tenant.
const TENANT: &str = "tenant";
/// `orgs.kind` of the platform credential pool (at most one row).
const PLATFORM: &str = "platform";
const TEAM_COLUMNS: &str = "id, org_id, name, created_at";
const WORKFLOW_COLUMNS: &str = "id, org_id, name, team_id, created_at";

fn org_state_text(state: OrgState) -> &'static str {
    match state {
        OrgState::Active => "active",
        OrgState::Deleted => "deleted",
    }
}

fn parse_org_state(text: &str) -> Result<OrgState, String> {
    match text {
        "active" => Ok(OrgState::Active),
        "deleted" => Ok(OrgState::Deleted),
        other => Err(format!("unknown org state '{other}'")),
    }
}

fn decode_org(row: &AnyRow) -> Result<Org, StoreError> {
    let r = Row::new(row, "orgs");
    let state_text = r.text("state")?;
    let state = parse_org_state(&state_text).map_err(|e| r.corrupt("state", e))?;
    let name = match r.text("kind")?.as_str() {
        PLATFORM => Name::platform(),
        _ => r.parse_name("name")?,
    };
    let rate_card = r
        .opt_text("rate_card")?
        .map(|code| PricedCard::parse_code(&code).map_err(|e| r.corrupt("rate_card", e)))
        .transpose()?;
    let budget: Budget = r.opt_json("budget")?.unwrap_or_default();
    let controls: OrgControls = r.opt_json("controls")?.unwrap_or_default();
    let limits: byok_domain::OrgLimits = r.opt_json("limits")?.unwrap_or_default();
    Ok(Org {
        id: r.parse("id")?,
        name,
        tier: r.parse("tier")?,
        state,
        kek_version: r.u32("kek_version")?,
        kms: r.parse("kms")?,
        kms_moving_from: r.opt_parse("kms_moving_from")?,
        retention_days: r.opt_u32("retention_days")?,
        rate_card,
        budget,
        controls,
        limits,
        created_at: r.ts("created_at")?,
    })
}

/// A change to an org's billing settings, with the event recording it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgChange {
    /// `from` → `to`; leaving katman-c also drops what only katman-c has (negotiated
    /// card and retention, controls). Refused as stale if the tier is no longer `from`.
    Tier {
        /// The tier the change was decided on.
        from: Tier,
        /// The new tier.
        to: Tier,
    },
    /// Set (`Some`) or remove the negotiated rate card.
    RateCard(Option<PricedCard>),
    /// Set or remove (empty) the budget.
    Budget(Budget),
    /// Set or remove (empty) the controls.
    Controls(OrgControls),
    /// Set or remove (empty) the rate limits.
    Limits(byok_domain::OrgLimits),
}

fn decode_team(row: &AnyRow) -> Result<Team, StoreError> {
    let r = Row::new(row, "teams");
    Ok(Team {
        id: r.parse("id")?,
        org_id: r.parse("org_id")?,
        name: r.parse_name("name")?,
        created_at: r.ts("created_at")?,
    })
}

fn decode_workflow(row: &AnyRow) -> Result<Workflow, StoreError> {
    let r = Row::new(row, "workflows");
    Ok(Workflow {
        id: r.parse("id")?,
        org_id: r.parse("org_id")?,
        name: r.parse_name("name")?,
        team_id: r.opt_parse("team_id")?,
        created_at: r.ts("created_at")?,
    })
}

impl Store {
    // ----- orgs -------------------------------------------------------------------------

    /// Create an org with its wrapped fingerprint key, and record `event`.
    /// [`StoreError::Conflict`] if the name is taken.
    pub async fn insert_org(
        &self,
        org: &Org,
        fingerprint_key: &WrappedDek,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        self.insert_org_row(org, TENANT, fingerprint_key, event).await
    }

    /// Create the platform credential pool's row (`org.name` is [`Name::platform`]).
    /// [`StoreError::Conflict`] if it exists already (another node made it first).
    pub async fn insert_platform_org(
        &self,
        org: &Org,
        fingerprint_key: &WrappedDek,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        self.insert_org_row(org, PLATFORM, fingerprint_key, event).await
    }

    async fn insert_org_row(
        &self,
        org: &Org,
        kind: &str,
        fingerprint_key: &WrappedDek,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>(
            "INSERT INTO orgs (id, name, tier, state, kek_version, fpk_kek_version, fpk_alg, fpk_wrapped, created_at, deleted_at, retention_days, kms, fpk_kms, kind) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11, $12, $13)",
        )
        .bind(org.id.to_string())
        .bind(org.name.as_str())
        .bind(org.tier.as_str())
        .bind(org_state_text(org.state))
        .bind(i64::from(org.kek_version))
        .bind(i64::from(fingerprint_key.kek_version))
        .bind(fingerprint_key.alg.as_str())
        .bind(fingerprint_key.bytes.as_slice())
        .bind(org.created_at.as_micros())
        .bind(org.retention_days.map(i64::from))
        .bind(org.kms.as_str())
        .bind(fingerprint_key.kms.as_str())
        .bind(kind)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            map_insert(
                e,
                |about| {
                    if kind == PLATFORM {
                        "the platform credential pool exists already".to_owned()
                    } else if about.contains("name") {
                        format!("an org named '{}' already exists", org.name)
                    } else {
                        format!("an org with id {} already exists", org.id)
                    }
                },
                |_| format!("org {} refers to a missing row", org.id),
            )
        })?;
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// The org (a tenant, never the platform pool) with this id.
    pub async fn get_org(&self, id: &OrgId) -> Result<Option<Org>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {ORG_COLUMNS} FROM orgs WHERE id = $1 AND kind = $2"))
            .bind(id.to_string())
            .bind(TENANT)
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_org)
            .transpose()
    }

    /// The org (a tenant) with this (exact) name.
    pub async fn find_org_by_name(&self, name: &str) -> Result<Option<Org>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {ORG_COLUMNS} FROM orgs WHERE name = $1 AND kind = $2"))
            .bind(name)
            .bind(TENANT)
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_org)
            .transpose()
    }

    /// The platform credential pool's row, once it exists.
    pub async fn platform_org(&self) -> Result<Option<Org>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {ORG_COLUMNS} FROM orgs WHERE kind = $1"))
            .bind(PLATFORM)
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_org)
            .transpose()
    }

    /// Every org (tenants, deleted ones included), ordered by name (byte order).
    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        let rows = sqlx::query::<Any>(&format!("SELECT {ORG_COLUMNS} FROM orgs WHERE kind = $1"))
            .bind(TENANT)
            .fetch_all(self.reader())
            .await
            .map_err(map_sqlx)?;
        let mut orgs = rows.iter().map(decode_org).collect::<Result<Vec<_>, _>>()?;
        orgs.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(orgs)
    }

    /// The org's fingerprint key, wrapped by its KEK.
    pub async fn org_fingerprint_key(&self, id: &OrgId) -> Result<Option<WrappedDek>, StoreError> {
        let row = sqlx::query::<Any>("SELECT fpk_kek_version, fpk_alg, fpk_wrapped, fpk_kms FROM orgs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?;
        let Some(row) = row else { return Ok(None) };
        let r = Row::new(&row, "orgs");
        Ok(Some(WrappedDek {
            kek_version: r.u32("fpk_kek_version")?,
            alg: r.text("fpk_alg")?,
            bytes: r.blob("fpk_wrapped")?,
            kms: r.parse("fpk_kms")?,
        }))
    }

    /// Replace the org's wrapped fingerprint key (after rewrapping it under a new KEK
    /// version). [`StoreError::NotFound`] if the org does not exist.
    pub async fn set_org_fingerprint_key(&self, id: &OrgId, fingerprint_key: &WrappedDek) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query::<Any>(
            "UPDATE orgs SET fpk_kek_version = $1, fpk_alg = $2, fpk_wrapped = $3, fpk_kms = $5 WHERE id = $4",
        )
        .bind(i64::from(fingerprint_key.kek_version))
        .bind(fingerprint_key.alg.as_str())
        .bind(fingerprint_key.bytes.as_slice())
        .bind(id.to_string())
        .bind(fingerprint_key.kms.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: format!("org {id} does not exist") });
        }
        tx.commit().await.map_err(map_sqlx)
    }

    /// Record the org's current KEK version and the rotation's `event`, in one
    /// transaction.
    pub async fn set_org_kek_version_with_event(
        &self,
        id: &OrgId,
        kek_version: u32,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query::<Any>("UPDATE orgs SET kek_version = $1 WHERE id = $2")
            .bind(i64::from(kek_version))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: format!("org {id} does not exist") });
        }
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// Start moving the org to another KMS: its new current KEK `kek_version` lives in
    /// `to`, and `from` (the KMS it is leaving) is remembered until the move ends; record
    /// `event`. [`StoreError::Conflict`] if a move is already in progress.
    pub async fn begin_org_kms_move(
        &self,
        id: &OrgId,
        from: &KmsName,
        to: &KmsName,
        kek_version: u32,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query::<Any>(
            "UPDATE orgs SET kms = $1, kms_moving_from = $2, kek_version = $3 \
             WHERE id = $4 AND kms = $2 AND kms_moving_from IS NULL",
        )
        .bind(to.as_str())
        .bind(from.as_str())
        .bind(i64::from(kek_version))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict {
                what: format!("org {id} is not on KMS '{from}' or is already moving to another KMS"),
            });
        }
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// End the org's move between KMSs (every key is rewrapped and the KMS it left no
    /// longer holds its KEKs).
    pub async fn finish_org_kms_move(&self, id: &OrgId) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>("UPDATE orgs SET kms_moving_from = NULL WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// How many wrapped keys of the org (credential versions and the fingerprint key)
    /// are under a KEK version older than `version`.
    pub async fn count_wrapped_below(&self, id: &OrgId, version: u32) -> Result<u64, StoreError> {
        let count = sqlx::query_scalar::<Any, i64>(
            "SELECT CAST((SELECT COUNT(*) FROM credential_versions WHERE org_id = $1 AND kek_version < $2) \
             + (SELECT COUNT(*) FROM orgs WHERE id = $1 AND fpk_kek_version < $2) AS BIGINT)",
        )
        .bind(id.to_string())
        .bind(i64::from(version))
        .fetch_one(self.reader())
        .await
        .map_err(map_sqlx)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Mark the org deleted (crypto-shredded) at `at` and record `events` (the org's and
    /// one per credential); returns the org as it is now. Idempotent: an org already
    /// deleted is returned unchanged and no event is written. [`StoreError::NotFound`] if
    /// the org does not exist.
    pub async fn mark_org_deleted(&self, id: &OrgId, at: Timestamp, events: &[NewEvent]) -> Result<Org, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query::<Any>("UPDATE orgs SET state = $1, deleted_at = $2 WHERE id = $3 AND state <> $1")
            .bind(org_state_text(OrgState::Deleted))
            .bind(at.as_micros())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if done.rows_affected() > 0 {
            for event in events {
                insert_event(&mut tx, self.backend(), event).await?;
            }
        }
        let org = sqlx::query::<Any>(&format!("SELECT {ORG_COLUMNS} FROM orgs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_org)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound { what: format!("org {id} does not exist") })?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(org)
    }

    /// Apply `change` to the org and record `event`, in one transaction; returns the org
    /// as it is now. [`StoreError::NotFound`] if the org does not exist or is deleted;
    /// [`StoreError::Stale`] if a tier change finds another tier than it was decided on.
    pub async fn update_org(&self, id: &OrgId, change: &OrgChange, event: &NewEvent) -> Result<Org, StoreError> {
        let mut tx = self.begin_write().await?;
        let live = "kind = 'tenant' AND state = 'active'";
        let done = match change {
            OrgChange::Tier { from, to } => {
                let clear = if *from == Tier::KatmanC && *to != Tier::KatmanC {
                    ", rate_card = NULL, controls = NULL, retention_days = NULL"
                } else {
                    ""
                };
                sqlx::query::<Any>(&format!("UPDATE orgs SET tier = $1{clear} WHERE id = $2 AND tier = $3 AND {live}"))
                    .bind(to.as_str())
                    .bind(id.to_string())
                    .bind(from.as_str())
                    .execute(&mut *tx)
                    .await
            }
            setting => {
                // Each other change sets one nullable text column (cleared when empty).
                let (column, value) = match setting {
                    OrgChange::RateCard(card) => ("rate_card", card.as_ref().map(PricedCard::code)),
                    OrgChange::Budget(budget) => {
                        ("budget", (!budget.is_empty()).then(|| to_json(budget, "budget")).transpose()?)
                    }
                    OrgChange::Controls(controls) => {
                        ("controls", (!controls.is_empty()).then(|| to_json(controls, "controls")).transpose()?)
                    }
                    OrgChange::Limits(limits) => {
                        ("limits", (!limits.is_empty()).then(|| to_json(limits, "limits")).transpose()?)
                    }
                    // Matched above; here only for exhaustiveness.
                    OrgChange::Tier { to, .. } => ("tier", Some(to.as_str().to_owned())),
                };
                sqlx::query::<Any>(&format!("UPDATE orgs SET {column} = $1 WHERE id = $2 AND {live}"))
                    .bind(value)
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
            }
        }
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            let what = match change {
                OrgChange::Tier { from, .. } => {
                    format!("org {id} does not exist, is deleted, or is no longer on {from}; read it again and retry")
                }
                _ => format!("org {id} does not exist or is deleted"),
            };
            return Err(match change {
                OrgChange::Tier { .. } => StoreError::Stale { what },
                _ => StoreError::NotFound { what },
            });
        }
        insert_event(&mut tx, self.backend(), event).await?;
        let org = sqlx::query::<Any>(&format!("SELECT {ORG_COLUMNS} FROM orgs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx)
            .and_then(|row| decode_org(&row))?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(org)
    }

    // ----- teams ------------------------------------------------------------------------

    /// Create a team and record `event`. [`StoreError::Conflict`] if its org already has
    /// a team of that name; [`StoreError::NotFound`] if the org does not exist.
    pub async fn insert_team(&self, team: &Team, event: &NewEvent) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>("INSERT INTO teams (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(team.id.to_string())
            .bind(team.org_id.to_string())
            .bind(team.name.as_str())
            .bind(team.created_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                map_insert(
                    e,
                    |about| {
                        if about.contains("name") {
                            format!("a team named '{}' already exists in {}", team.name, team.org_id)
                        } else {
                            format!("a team with id {} already exists", team.id)
                        }
                    },
                    |_| format!("org {} does not exist", team.org_id),
                )
            })?;
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// The team with this id in `org`.
    pub async fn get_team(&self, org: &OrgId, id: &TeamId) -> Result<Option<Team>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE org_id = $1 AND id = $2"))
            .bind(org.to_string())
            .bind(id.to_string())
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_team)
            .transpose()
    }

    /// The team with this (exact) name in `org`.
    pub async fn find_team_by_name(&self, org: &OrgId, name: &str) -> Result<Option<Team>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE org_id = $1 AND name = $2"))
            .bind(org.to_string())
            .bind(name)
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_team)
            .transpose()
    }

    /// The org's teams, ordered by name (byte order).
    pub async fn list_teams(&self, org: &OrgId) -> Result<Vec<Team>, StoreError> {
        let rows = sqlx::query::<Any>(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE org_id = $1"))
            .bind(org.to_string())
            .fetch_all(self.reader())
            .await
            .map_err(map_sqlx)?;
        let mut teams = rows.iter().map(decode_team).collect::<Result<Vec<_>, _>>()?;
        teams.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(teams)
    }

    // ----- workflows --------------------------------------------------------------------

    /// Create a workflow and record `event`. [`StoreError::Conflict`] if its org already
    /// has a workflow of that name; [`StoreError::NotFound`] if the org, or the owning
    /// team within that org, does not exist.
    pub async fn insert_workflow(&self, workflow: &Workflow, event: &NewEvent) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>("INSERT INTO workflows (id, org_id, name, team_id, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(workflow.id.to_string())
            .bind(workflow.org_id.to_string())
            .bind(workflow.name.as_str())
            .bind(workflow.team_id.map(|t| t.to_string()))
            .bind(workflow.created_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                map_insert(
                    e,
                    |about| {
                        if about.contains("name") {
                            format!("a workflow named '{}' already exists in {}", workflow.name, workflow.org_id)
                        } else {
                            format!("a workflow with id {} already exists", workflow.id)
                        }
                    },
                    |_| match workflow.team_id {
                        Some(team) => format!("org {} or its team {team} does not exist", workflow.org_id),
                        None => format!("org {} does not exist", workflow.org_id),
                    },
                )
            })?;
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// The workflow with this id in `org`.
    pub async fn get_workflow(&self, org: &OrgId, id: &WorkflowId) -> Result<Option<Workflow>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE org_id = $1 AND id = $2"))
            .bind(org.to_string())
            .bind(id.to_string())
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_workflow)
            .transpose()
    }

    /// The workflow with this (exact) name in `org`.
    pub async fn find_workflow_by_name(&self, org: &OrgId, name: &str) -> Result<Option<Workflow>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE org_id = $1 AND name = $2"))
            .bind(org.to_string())
            .bind(name)
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_workflow)
            .transpose()
    }

    /// The org's workflows, ordered by name (byte order).
    pub async fn list_workflows(&self, org: &OrgId) -> Result<Vec<Workflow>, StoreError> {
        let rows = sqlx::query::<Any>(&format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE org_id = $1"))
            .bind(org.to_string())
            .fetch_all(self.reader())
            .await
            .map_err(map_sqlx)?;
        let mut workflows = rows.iter().map(decode_workflow).collect::<Result<Vec<_>, _>>()?;
        workflows.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(workflows)
    }
}
