//! The audit as admins see it: query, replay, verify, checkpoints, retention.

use byok_audit::{PublicKey, SignedCheckpoint};
use byok_domain::export::{self, Header};
use byok_domain::{Actor, CredentialId, LifecycleKind, Org, OrgId, OrgState, ResolutionAudit, Tier, Timestamp};
use byok_store::{AuditFilter, ExportItem, ExportSlice, Store, TimelineCursor, TimelineItem, VerifyReport};
use serde::Serialize;

use crate::error::VaultError;
use crate::events::event;
use crate::Vault;

/// Most rows one page of the audit returns.
pub const MAX_PAGE: u32 = 10_000;

/// Audit retention by tier (operator configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// katman-a.
    pub katman_a_days: u32,
    /// katman-b.
    pub katman_b_days: u32,
    /// katman-c, unless the org has a negotiated period.
    pub katman_c_days: u32,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self { katman_a_days: 30, katman_b_days: 90, katman_c_days: 365 }
    }
}

impl RetentionPolicy {
    /// The retention of `org`, in days.
    pub fn days_for(&self, org: &Org) -> u32 {
        match org.tier {
            Tier::KatmanA => self.katman_a_days,
            Tier::KatmanB => self.katman_b_days,
            Tier::KatmanC => org.retention_days.unwrap_or(self.katman_c_days),
        }
    }
}

/// One page of audit rows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The rows, in `seq` order.
    pub rows: Vec<AuditRow>,
    /// Pass as `after_seq` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after_seq: Option<i64>,
}

/// A resolution row with, for an allowed one whose call has ended, its completion: the
/// upstream status of that attempt, its tokens and how it ended (`failed_over` when
/// another credential took the call over).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// The resolution row.
    #[serde(flatten)]
    pub resolution: ResolutionAudit,
    /// Its completion, once the call ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<byok_domain::CallCompletion>,
}

impl std::ops::Deref for AuditRow {
    type Target = ResolutionAudit;

    fn deref(&self) -> &ResolutionAudit {
        &self.resolution
    }
}

/// The result of checking a checkpoint against the audit as it is now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckpointCheck {
    /// Signature valid and every head still present with the same hash.
    pub ok: bool,
    /// Whether the signature is this server's and valid.
    pub signature_valid: bool,
    /// Chains whose head at the checkpoint is gone or changed.
    pub heads_changed: Vec<String>,
    /// The full chain verification.
    pub verify: VerifyReport,
}

/// What a retention purge did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PurgeReport {
    /// The org.
    pub org_id: OrgId,
    /// Entries older than this were removed.
    pub before: Timestamp,
    /// How many resolution rows and completions were removed.
    pub removed: u64,
}

/// An org's audit as an export (see [`byok_domain::export`]), produced a chunk of lines
/// at a time ([`AuditExport::next_chunk`]), so memory stays flat however long the audit.
#[derive(Debug)]
pub struct AuditExport {
    store: Store,
    org: OrgId,
    header: Option<Header>,
    slices: Vec<ExportSlice>,
    /// The slice being read.
    current: usize,
    lines: u64,
    entries: u64,
    done: bool,
}

impl AuditExport {
    /// The next lines (each ending in `\n`), or `None` after the end line.
    pub async fn next_chunk(&mut self) -> Result<Option<String>, VaultError> {
        if self.done {
            return Ok(None);
        }
        if let Some(header) = self.header.take() {
            self.lines += 1;
            return Ok(Some(export::header_line(&header) + "\n"));
        }
        while let Some(slice) = self.slices.get_mut(self.current) {
            let items = self.store.export_page(&self.org, slice).await?;
            if items.is_empty() {
                self.current += 1;
                continue;
            }
            let mut chunk = String::new();
            for item in &items {
                let (line, entries) = match item {
                    ExportItem::Event(event) => (export::lifecycle_line(event), 1),
                    ExportItem::Call(row, completion) => {
                        (export::call_line(row, completion.as_ref()), 1 + u64::from(completion.is_some()))
                    }
                    ExportItem::Completion(completion) => (export::completion_line(completion), 1),
                };
                chunk.push_str(&line);
                chunk.push('\n');
                self.lines += 1;
                self.entries += entries;
            }
            return Ok(Some(chunk));
        }
        self.done = true;
        Ok(Some(export::end_line(self.lines, self.entries) + "\n"))
    }
}

const DAY_MICROS: i64 = 86_400_000_000;

/// How far behind their retention the row-wise purge follows the orgs whose entries leave
/// with whole months (PostgreSQL): a month is dropped up to a month after its first day's
/// retention has passed, plus a month of slack.
const WHOLE_MONTHS_LAG_DAYS: u32 = 62;

impl Vault {
    /// Resolution rows of `org` matching `filter` (at most [`MAX_PAGE`]), each with its
    /// completion once its call ended.
    pub async fn audit_rows(&self, org: OrgId, mut filter: AuditFilter) -> Result<AuditPage, VaultError> {
        let org = self.org_by_id(org).await?;
        let limit = filter.limit.unwrap_or(1000).clamp(1, MAX_PAGE);
        filter.limit = Some(limit);
        let rows: Vec<AuditRow> = self
            .store
            .list_audit_with_completions(Some(&org.id), &filter)
            .await?
            .into_iter()
            .map(|(resolution, completion)| AuditRow { resolution, completion })
            .collect();
        let next_after_seq = (rows.len() as u32 == limit).then(|| rows.last().map(|r| r.seq)).flatten();
        Ok(AuditPage { rows, next_after_seq })
    }

    /// `org`'s audit as one export that verifies on its own: every lifecycle event and
    /// every call (its resolution row with its completion) of each chain's slice from
    /// `since` to `until` (see [`byok_store::ExportSlice`]), with every chain field.
    pub async fn export_audit(
        &self,
        org: OrgId,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<AuditExport, VaultError> {
        let org = self.org_by_id(org).await?;
        if let (Some(since), Some(until)) = (since, until) {
            if since >= until {
                // Each is a valid time; only together do they make no range (as a
                // statement's `from`/`to`): well-formed, so 422, not 400.
                return Err(VaultError::unprocessable(format!("since ({since}) must be before until ({until})")));
            }
        }
        let exported_at = Timestamp::now();
        let slices = self.store.export_slices(&org.id, since, until).await?;
        let header = Header {
            format: export::FORMAT.to_owned(),
            version: export::VERSION,
            org_id: org.id.to_string(),
            exported_at,
            since,
            until,
            chains: slices.iter().map(|s| s.chain.clone()).collect(),
        };
        Ok(AuditExport {
            store: self.store.clone(),
            org: org.id,
            header: Some(header),
            slices,
            current: 0,
            lines: 0,
            entries: 0,
            done: false,
        })
    }

    /// Recompute every audit chain of `org`.
    pub async fn verify_audit(&self, org: OrgId) -> Result<VerifyReport, VaultError> {
        let org = self.org_by_id(org).await?;
        Ok(self.store.verify_audit(Some(&org.id)).await?)
    }

    /// Recompute the platform pool's lifecycle-event chain (its credentials' calls are
    /// in the chains of the orgs they served).
    pub async fn verify_platform_audit(&self) -> Result<VerifyReport, VaultError> {
        match self.store.platform_org().await? {
            Some(pool) => Ok(self.store.verify_audit(Some(&pool.id)).await?),
            None => Ok(VerifyReport { ok: true, checked: 0, first_bad: None }),
        }
    }

    /// A page of a credential's life: lifecycle events and calls, in time order.
    pub async fn credential_timeline(
        &self,
        owner: impl Into<crate::Owner>,
        credential: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(byok_domain::Credential, Vec<TimelineItem>, Option<String>), VaultError> {
        let (credential, pool, owner) = self.credential_pool_of(owner.into(), credential).await?;
        let after =
            match after {
                Some(text) => Some(TimelineCursor::decode(text).ok_or_else(|| {
                    VaultError::invalid(format!("after: '{text}' is not a cursor from a previous page"))
                })?),
                None => None,
            };
        let id: CredentialId = credential.id;
        // A platform credential serves many orgs: its replay shows every org's calls.
        let calls_of = match owner {
            byok_domain::CredentialOwner::Org => Some(&pool.id),
            byok_domain::CredentialOwner::Platform => None,
        };
        let (items, next) =
            self.store.credential_timeline(&pool.id, calls_of, &id, after, limit.clamp(1, MAX_PAGE)).await?;
        Ok((credential, items, next.map(|c| c.encode())))
    }

    fn signer(&self) -> Result<&byok_audit::AuditSigner, VaultError> {
        self.signer.as_deref().ok_or_else(|| VaultError::internal("no audit signing key is configured"))
    }

    /// The public key that signs checkpoints.
    pub fn audit_public_key(&self) -> Result<PublicKey, VaultError> {
        Ok(self.signer()?.public_key())
    }

    /// Register this node's checkpoint key in the store, so that every node sharing it
    /// verifies this node's checkpoints.
    pub async fn register_audit_key(&self) -> Result<(), VaultError> {
        let key = self.audit_public_key()?;
        Ok(self.store.register_signing_key(&key.key_id, &key.public_key).await?)
    }

    /// Every node's checkpoint key (the fleet's), oldest first.
    pub async fn audit_public_keys(&self) -> Result<Vec<PublicKey>, VaultError> {
        Ok(self
            .store
            .signing_keys()
            .await?
            .into_iter()
            .map(|key| PublicKey { key_id: key.key_id, public_key: key.public_key, algorithm: "ed25519" })
            .collect())
    }

    /// A signed checkpoint of `org`'s audit chains as they are now.
    pub async fn audit_checkpoint(&self, org: OrgId) -> Result<SignedCheckpoint, VaultError> {
        let org = self.org_by_id(org).await?;
        let heads = self.store.chain_heads(Some(&org.id)).await?;
        Ok(self.signer()?.sign(org.id, heads))
    }

    /// Check `signed` (a checkpoint kept by an auditor) against the audit now.
    pub async fn verify_checkpoint(
        &self,
        org: OrgId,
        signed: &SignedCheckpoint,
    ) -> Result<CheckpointCheck, VaultError> {
        let org = self.org_by_id(org).await?;
        if signed.checkpoint.org_id != org.id {
            return Err(VaultError::unprocessable(format!(
                "the checkpoint is for {}, not for {}",
                signed.checkpoint.org_id, org.id
            )));
        }
        // This node's key, or another node's of the fleet (each registers its own).
        let signature_valid = self.signer()?.verify(signed)
            || self.store.signing_keys().await?.iter().any(|key| {
                key.key_id == signed.checkpoint.key_id && byok_audit::verify_with_encoded(&key.public_key, signed)
            });
        let mut heads_changed = Vec::new();
        for head in &signed.checkpoint.heads {
            if !self.store.head_intact(Some(&org.id), head).await? {
                heads_changed.push(head.chain.clone());
            }
        }
        let verify = self.store.verify_audit(Some(&org.id)).await?;
        let ok = signature_valid && heads_changed.is_empty() && verify.ok;
        Ok(CheckpointCheck { ok, signature_valid, heads_changed, verify })
    }

    /// Remove `org`'s audit entries older than its retention (or than `before`). An
    /// earlier cut than the retention is refused for katman-c (retention lock).
    pub async fn purge_audit(
        &self,
        actor: &Actor,
        org: OrgId,
        before: Option<Timestamp>,
    ) -> Result<PurgeReport, VaultError> {
        let org = self.org_by_id(org).await?;
        let days = self.policy.retention.days_for(&org);
        let retention_cut = Timestamp::from_micros(Timestamp::now().as_micros() - i64::from(days) * DAY_MICROS)
            .unwrap_or_else(Timestamp::now);
        if before.is_some_and(|at| at > Timestamp::now()) {
            return Err(VaultError::unprocessable(
                "before: must not be in the future (nothing newer than now can be purged)",
            ));
        }
        let before = before.unwrap_or(retention_cut);
        if before > retention_cut && org.tier == Tier::KatmanC {
            return Err(VaultError::TierForbids(format!(
                "org {} is on katman-c with a {days}-day audit retention lock: entries after {retention_cut} cannot be deleted",
                org.id
            )));
        }
        let removed = self.store.purge_audit(Some(&org.id), before).await?;
        if removed > 0 && org.state == OrgState::Active {
            let mut purged = event(org.id, LifecycleKind::AuditPurged, org.id, actor);
            purged.details = serde_json::json!({ "before": before, "removed": removed, "retention_days": days });
            self.store.record_event(&purged).await?;
        }
        Ok(PurgeReport { org_id: org.id, before, removed })
    }

    /// Purge every org by its retention (the periodic job); rows no org could be
    /// established for follow the shortest tier retention. On PostgreSQL the audit months
    /// that every org's retention has passed are dropped whole first (and the partitions
    /// of the coming months made); then the entries of orgs with a shorter retention than
    /// the longest go row by row.
    pub async fn purge_all_by_retention(&self) -> Result<u64, VaultError> {
        let mut removed = 0;
        let now = Timestamp::now();
        let cut_after =
            |days: u32| Timestamp::from_micros(now.as_micros() - i64::from(days) * DAY_MICROS).unwrap_or(now);
        let orgs = self.store.list_orgs().await?;
        let shortest = self.policy.retention.katman_a_days.min(self.policy.retention.katman_b_days);
        let mut cuts = byok_store::RetentionCuts { no_org: Some(cut_after(shortest)), ..Default::default() };
        for org in &orgs {
            cuts.orgs.insert(org.id, cut_after(self.policy.retention.days_for(org)));
        }
        // A failure here must not stop the row-wise purges below.
        let partitions = self.store.maintain_audit_partitions(now, &cuts).await.unwrap_or_else(|err| {
            tracing::warn!(error = %byok_domain::error::Report(&err), "audit partition maintenance failed");
            byok_store::PartitionReport::default()
        });
        for dropped in &partitions.dropped {
            for (org_id, count) in &dropped.removed {
                removed += count;
                let Some(org) = orgs.iter().find(|o| Some(o.id) == *org_id && o.state == OrgState::Active) else {
                    continue;
                };
                let mut purged = event(org.id, LifecycleKind::AuditPurged, org.id, &Actor::System);
                purged.details = serde_json::json!({
                    "before": Timestamp::from_micros(dropped.month.end_us()), "removed": count,
                    "retention_days": self.policy.retention.days_for(org), "month": dropped.month.to_string(),
                });
                self.store.record_event(&purged).await?;
            }
        }
        if let Some(held) = &partitions.held {
            tracing::info!(reason = %held, "audit partition kept");
        }
        // On PostgreSQL the orgs with the longest retention lose their entries with whole
        // months (above), at most a month after their retention; row by row they are
        // purged only two months behind it, should a month be held. Everyone else, and
        // SQLite, row by row at the retention.
        let partitioned = self.store.backend() == byok_store::Backend::Postgres;
        let days_for = |org: &Org| self.policy.retention.days_for(org);
        let longest = orgs.iter().map(days_for).max().unwrap_or(0).max(shortest);
        let lag =
            |days: u32| if partitioned && days >= longest { days.saturating_add(WHOLE_MONTHS_LAG_DAYS) } else { days };
        for org in orgs {
            let days = days_for(&org);
            let before = (lag(days) != days).then(|| cut_after(lag(days)));
            removed += self.purge_audit(&Actor::System, org.id, before).await?.removed;
        }
        removed += self.store.purge_audit(None, cut_after(lag(shortest))).await?;
        Ok(removed)
    }
}
