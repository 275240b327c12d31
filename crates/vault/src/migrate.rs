//! Migrating an installation's own KMS from one backend to another (`byok kms migrate`:
//! the local keyring of a data directory into a PKCS#11 token).
//!
//! Per org, like a move between KMSs: the org's next KEK version is created in the
//! target and becomes current, every DEK is unwrapped with the source and wrapped in the
//! target (no credential secret is decrypted), each rewrap is a lifecycle event, and
//! then the org's KEKs are removed from the source. Every step can be repeated, so a run
//! that stops half-way is finished by running it again: the store says which version
//! is current, and everything below it is still to do.
//!
//! It runs offline (the caller holds the data directory's lock): the wrapped keys keep
//! the label `default` throughout, so a serving node could not tell which backend holds
//! a given version while the migration runs.

use std::sync::Arc;

use byok_crypto::{Kms, KmsError, WrappedDek};
use byok_domain::{Actor, KmsName, LifecycleKind, Org, OrgId, OrgState};
use byok_store::Store;
use serde::Serialize;

use crate::error::VaultError;
use crate::events::{event, rewrapped_batch};

/// Wrapped keys moved per transaction.
const BATCH: u32 = 500;

/// What happened (or, in a dry run, would happen) to one org.
#[derive(Debug, Clone, Serialize)]
pub struct OrgMigration {
    /// The org.
    pub org_id: OrgId,
    /// Its name.
    pub name: String,
    /// Its current KEK version before the migration.
    pub from_kek_version: u32,
    /// Its KEK version in the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_kek_version: Option<u32>,
    /// Wrapped keys (credential versions and the fingerprint key) moved or to move.
    pub wrapped_keys: u64,
    /// `migrated`, `would migrate`, `already migrated`, `deleted` (crypto-shredded:
    /// nothing to move) or `customer KMS '<name>'` (untouched).
    pub state: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Per org.
    pub orgs: Vec<OrgMigration>,
    /// Wrapped keys moved (or checked, in a dry run).
    pub wrapped_keys: u64,
    /// One line for people.
    pub summary: String,
}

/// The source and target backends of a migration, and how to report progress.
pub struct Migration {
    store: Store,
    source: Arc<dyn Kms>,
    target: Arc<dyn Kms>,
    progress: Box<dyn Fn(Progress) + Send + Sync>,
}

/// Progress of a migration.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// The run will move (or check) this many wrapped keys.
    Total(u64),
    /// This many more are done.
    Done(u64),
}

impl Migration {
    /// Migrate the orgs of `store` on the default KMS from `source` to `target`.
    pub fn new(store: Store, source: Arc<dyn Kms>, target: Arc<dyn Kms>) -> Self {
        Self { store, source, target, progress: Box::new(|_| {}) }
    }

    /// Report progress to `progress`.
    pub fn with_progress(mut self, progress: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Box::new(progress);
        self
    }

    /// Run it; with `dry_run`, only check that every wrapped key opens with the source
    /// and that the target answers, and report the plan.
    pub async fn run(&self, dry_run: bool) -> Result<MigrationReport, VaultError> {
        let target = Arc::clone(&self.target);
        blocking(move || target.check_health()).await?;
        let orgs = self.store.list_orgs().await?;
        let mut planned = Vec::with_capacity(orgs.len());
        let mut total = 0;
        for org in orgs {
            let keys = self.default_keys(&org).await?;
            let to = self.target_version(&org).await?;
            let pending: Vec<WrappedDek> = keys.iter().filter(|w| w.kek_version < to).cloned().collect();
            total += pending.len() as u64;
            planned.push((org, keys.len() as u64, to, pending));
        }
        (self.progress)(Progress::Total(total));
        let mut report = Vec::with_capacity(planned.len());
        let mut moved = 0;
        for (org, keys, to, pending) in planned {
            let mut line = OrgMigration {
                org_id: org.id,
                name: org.name.to_string(),
                from_kek_version: org.kek_version,
                to_kek_version: None,
                wrapped_keys: keys,
                state: String::new(),
            };
            if org.state == OrgState::Deleted {
                line.state = "deleted".into();
            } else if !org.kms.is_default() {
                line.state = format!("customer KMS '{}'", org.kms);
            } else if dry_run {
                self.check_keys(org.id, pending.clone()).await?;
                moved += pending.len() as u64;
                line.to_kek_version = Some(to);
                line.state = if pending.is_empty() { "already migrated".into() } else { "would migrate".into() };
            } else {
                let done = self.migrate_org(&org, to).await?;
                moved += done;
                line.to_kek_version = Some(to);
                line.state = if done == 0 { "already migrated".into() } else { "migrated".into() };
            }
            report.push(line);
        }
        let summary = if dry_run {
            let orgs = report.iter().filter(|o| o.state == "would migrate").count();
            format!("dry run: {moved} wrapped keys of {orgs} orgs open with the keyring and would move; nothing was changed")
        } else {
            format!("moved {moved} wrapped keys; the local keyring holds no key of a migrated org")
        };
        Ok(MigrationReport { dry_run, orgs: report, wrapped_keys: moved, summary })
    }

    /// The version the org has (or will have) in the target: its current one when the
    /// target holds it already (a resumed run), else the next. A target that fails to
    /// answer is an error, not "the org is not there yet".
    async fn target_version(&self, org: &Org) -> Result<u32, VaultError> {
        let next = org.kek_version.saturating_add(1);
        if org.state == OrgState::Deleted || !org.kms.is_default() {
            return Ok(next);
        }
        let (target, id) = (Arc::clone(&self.target), org.id);
        match blocking(move || match target.current_kek_version(&id) {
            Err(KmsError::UnknownOrg(_)) => Ok(None),
            other => other.map(Some),
        })
        .await?
        {
            Some(version) if version == org.kek_version => Ok(version),
            _ => Ok(next),
        }
    }

    /// Every wrapped key (credential versions and the fingerprint key) of a live org on
    /// the default KMS.
    async fn default_keys(&self, org: &Org) -> Result<Vec<WrappedDek>, VaultError> {
        if org.state == OrgState::Deleted || !org.kms.is_default() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<WrappedDek> =
            self.store.list_wrapped_deks(&org.id).await?.into_iter().map(|r| r.wrapped_dek).collect();
        keys.extend(self.store.org_fingerprint_key(&org.id).await?);
        keys.retain(|w| w.kms.is_default());
        Ok(keys)
    }

    /// Dry run: every key still to move opens with the source.
    async fn check_keys(&self, org: OrgId, pending: Vec<WrappedDek>) -> Result<(), VaultError> {
        for chunk in pending.chunks(BATCH as usize) {
            let (source, chunk) = (Arc::clone(&self.source), chunk.to_vec());
            let count = chunk.len() as u64;
            blocking(move || chunk.iter().try_for_each(|w| source.unwrap_dek(&org, w).map(drop))).await.map_err(
                |e| {
                    VaultError::internal_by(format!("org {org}: a wrapped key does not open with the local keyring"), e)
                },
            )?;
            (self.progress)(Progress::Done(count));
        }
        Ok(())
    }

    /// Migrate one org to KEK version `to` in the target; the keys moved.
    async fn migrate_org(&self, org: &Org, to: u32) -> Result<u64, VaultError> {
        let from = org.kek_version;
        if to != org.kek_version {
            // Fresh: create the next version in the target (idempotent if a run stopped
            // right after it), then make it current in the store.
            let (target, id) = (Arc::clone(&self.target), org.id);
            blocking(move || target.create_kek_version(&id, to)).await?;
            let mut moved = event(org.id, LifecycleKind::KmsMoved, org.id, &Actor::System);
            moved.details = serde_json::json!({
                "from_kms": KmsName::default_kms(), "to_kms": KmsName::default_kms(),
                "from_backend": self.source.backend_name(), "to_backend": self.target.backend_name(),
                "from_kek_version": from, "to_kek_version": to, "migration": true,
            });
            self.store.set_org_kek_version_with_event(&org.id, to, &moved).await?;
        }
        let mut done = 0;
        loop {
            let pending = self.store.list_wrapped_deks_below(&org.id, to, BATCH).await?;
            let fingerprint_key = self.store.org_fingerprint_key(&org.id).await?.filter(|w| w.kek_version < to);
            if pending.is_empty() && fingerprint_key.is_none() {
                break;
            }
            if let Some(wrapped) = fingerprint_key {
                let new = self.move_keys(org.id, vec![wrapped]).await?;
                if let Some(new) = new.into_iter().next() {
                    self.store.set_org_fingerprint_key(&org.id, &new).await?;
                }
                done += 1;
                (self.progress)(Progress::Done(1));
            }
            if pending.is_empty() {
                continue;
            }
            let new = self.move_keys(org.id, pending.iter().map(|r| r.wrapped_dek.clone()).collect()).await?;
            let (from_backend, to_backend) = (self.source.backend_name(), self.target.backend_name());
            let (items, events) = rewrapped_batch(org.id, &pending, new, |old, new| {
                serde_json::json!({
                    "from_kek_version": old.kek_version, "to_kek_version": new.kek_version,
                    "from_backend": from_backend, "to_backend": to_backend,
                })
            });
            self.store.rewrap_batch(&org.id, &items, &events).await?;
            done += items.len() as u64;
            (self.progress)(Progress::Done(items.len() as u64));
        }
        let (source, id) = (Arc::clone(&self.source), org.id);
        blocking(move || source.remove_org(&id)).await?;
        Ok(done)
    }

    /// Unwrap with the source, wrap in the target.
    async fn move_keys(&self, org: OrgId, wrapped: Vec<WrappedDek>) -> Result<Vec<WrappedDek>, VaultError> {
        let (source, target) = (Arc::clone(&self.source), Arc::clone(&self.target));
        blocking(move || {
            wrapped
                .iter()
                .map(|w| {
                    let dek = source.unwrap_dek(&org, w)?;
                    target.wrap_dek(&org, &dek)
                })
                .collect::<Result<Vec<_>, KmsError>>()
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, KmsError> + Send + 'static,
) -> Result<T, VaultError> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| VaultError::internal_by("KMS worker failed", e))?
        .map_err(|e| VaultError::from(byok_crypto::CryptoError::Kms(e)))
}
