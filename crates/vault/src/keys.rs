//! Org keys: KEK rotation with a background, resumable rewrap, and crypto-shredding.
//!
//! Rotation makes a new KEK version current at once (new DEKs are wrapped under it),
//! then a job rewraps every older DEK of the org in batches — inside the KMS, without
//! decrypting any credential secret — recording a `rewrapped` event per credential
//! version. The job's progress is derived from the store (how many DEKs are still under
//! an older version), so it survives restarts: `resume_rewraps` picks up where a
//! stopped job left off. When nothing uses an old version any more it is retired in
//! the KMS, after a grace period that lets every sidecar reload what it caches.
//!
//! Moving an org to another KMS (a katman-c org's own token, or back to the default) is
//! the same job: the org's next KEK version is created in the target KMS and becomes
//! current, every DEK is rewrapped into it, and when nothing is left under the KMS the
//! org left, its KEKs there are removed. Versions are numbered per org across KMSs, so
//! "under an older version" still finds exactly what is left to do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_domain::{Actor, KmsName, LifecycleKind, Org, OrgId, OrgState, Tier, Timestamp};
use serde::Serialize;

use crate::error::VaultError;
use crate::events::{credential_event, event, rewrapped_batch};
use crate::Vault;

/// DEKs rewrapped per transaction.
const REWRAP_BATCH: u32 = 500;
/// Wait between the last rewrap and retiring old KEK versions, so that every node has
/// reloaded its cached sealed records (nodes poll for changes every 250 ms).
const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// Where an org's KEK stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KekStatus {
    /// The org.
    pub org_id: OrgId,
    /// The current KEK version.
    pub kek_version: u32,
    /// The KMS holding the current KEK (`default` or a customer-managed KMS).
    pub kms: KmsName,
    /// While a move between KMSs is in progress: the KMS being left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moving_from: Option<KmsName>,
    /// `idle` (nothing to rewrap), `running`, or `failed` (see `error`; rotate again or
    /// restart to resume).
    pub state: &'static str,
    /// Wrapped keys (credential versions and the fingerprint key) still under an older
    /// KEK version.
    pub remaining: u64,
    /// Wrapped keys rewrapped by the current job.
    pub rewrapped: u64,
    /// KEK versions still in use.
    pub versions_in_use: Vec<u32>,
    /// Why the last job failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Job {
    running: bool,
    rewrapped: u64,
    error: Option<String>,
}

/// Rewrap jobs by org (one at a time per org).
#[derive(Debug, Default, Clone)]
pub(crate) struct Jobs(Arc<Mutex<HashMap<OrgId, Job>>>);

impl Jobs {
    fn with<T>(&self, org: OrgId, f: impl FnOnce(&mut Job) -> T) -> T {
        let mut jobs = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(jobs.entry(org).or_default())
    }
}

impl Vault {
    /// Rotate the org's KEK: a new version becomes current now, and a background job
    /// rewraps every older DEK.
    pub async fn rotate_kek(&self, actor: &Actor, org: OrgId) -> Result<KekStatus, VaultError> {
        let org = self.live_org(org).await?;
        let from = org.kek_version;
        let to = self.kms.rotate_kek(&org.kms, org.id).await?;
        let mut rotated = event(org.id, LifecycleKind::KekRotated, org.id, actor);
        rotated.details = serde_json::json!({ "from_kek_version": from, "to_kek_version": to });
        self.store.set_org_kek_version_with_event(&org.id, to, &rotated).await?;
        self.epoch.bump();
        self.spawn_rewrap(org.id);
        self.kek_status(org.id).await
    }

    /// The org's KEK version and rewrap progress.
    pub async fn kek_status(&self, org: OrgId) -> Result<KekStatus, VaultError> {
        let org = self.org_by_id(org).await?;
        let versions_in_use = self.store.kek_versions_in_use(&org.id).await?;
        let remaining = self.store.count_wrapped_below(&org.id, org.kek_version).await?;
        let (running, rewrapped, error) = self.jobs.with(org.id, |job| (job.running, job.rewrapped, job.error.clone()));
        let state = if running {
            "running"
        } else if error.is_some() && (remaining > 0 || org.kms_moving_from.is_some()) {
            "failed"
        } else {
            "idle"
        };
        Ok(KekStatus {
            org_id: org.id,
            kek_version: org.kek_version,
            kms: org.kms,
            moving_from: org.kms_moving_from,
            state,
            remaining,
            rewrapped,
            versions_in_use,
            error,
        })
    }

    /// Start the rewrap job of `org` unless one is running.
    fn spawn_rewrap(&self, org: OrgId) {
        let start = self.jobs.with(org, |job| {
            if job.running {
                return false;
            }
            *job = Job { running: true, rewrapped: 0, error: None };
            true
        });
        if !start {
            return;
        }
        let vault = self.clone();
        tokio::spawn(async move {
            let result = vault.rewrap_org(org).await;
            if let Err(err) = &result {
                tracing::error!(%org, error = %byok_domain::error::Report(err), "KEK rewrap failed; it resumes on the next rotation or restart");
            }
            vault.jobs.with(org, |job| {
                job.running = false;
                job.error = result.err().map(|e| e.to_string());
            });
        });
    }

    /// Resume the rewrap of every org that still has DEKs under an old KEK version
    /// (after a restart mid-job). Returns the orgs resumed.
    pub async fn resume_rewraps(&self) -> Result<Vec<OrgId>, VaultError> {
        let mut resumed = Vec::new();
        for org in self.store.list_orgs().await? {
            let unfinished =
                org.kms_moving_from.is_some() || self.store.count_wrapped_below(&org.id, org.kek_version).await? > 0;
            if org.state == OrgState::Active && unfinished {
                self.spawn_rewrap(org.id);
                resumed.push(org.id);
            }
        }
        Ok(resumed)
    }

    /// Rewrap everything of `org` below its current KEK version, then retire the old
    /// versions nothing uses.
    async fn rewrap_org(&self, org_id: OrgId) -> Result<(), VaultError> {
        loop {
            let org = self.org_by_id(org_id).await?;
            if org.state == OrgState::Deleted {
                return Ok(());
            }
            let current = org.kek_version;
            let pending = self.store.list_wrapped_deks_below(&org.id, current, REWRAP_BATCH).await?;
            let fingerprint_key = self.store.org_fingerprint_key(&org.id).await?.filter(|w| w.kek_version < current);
            if pending.is_empty() && fingerprint_key.is_none() {
                break;
            }
            if let Some(wrapped) = fingerprint_key {
                let mut rewrapped = self.kms.rewrap_deks(org.id, &org.kms, vec![wrapped]).await?;
                if let Some(new) = rewrapped.pop() {
                    self.store.set_org_fingerprint_key(&org.id, &new).await?;
                    self.jobs.with(org.id, |job| job.rewrapped += 1);
                }
            }
            if pending.is_empty() {
                continue;
            }
            let old: Vec<_> = pending.iter().map(|r| r.wrapped_dek.clone()).collect();
            let new = self.kms.rewrap_deks(org.id, &org.kms, old).await?;
            let (items, events) = rewrapped_batch(org.id, &pending, new, |old, new| {
                serde_json::json!({
                    "from_kek_version": old.kek_version, "to_kek_version": new.kek_version,
                    "from_kms": old.kms, "to_kms": new.kms,
                })
            });
            // No epoch bump per batch: the DEKs are the same, and what sidecars cache stays
            // openable until the old version is retired (after the bump below).
            self.store.rewrap_batch(&org.id, &items, &events).await?;
            self.jobs.with(org.id, |job| job.rewrapped += items.len() as u64);
        }
        self.retire_unused_keks(org_id).await
    }

    async fn retire_unused_keks(&self, org_id: OrgId) -> Result<(), VaultError> {
        self.epoch.bump();
        tokio::time::sleep(RETIRE_GRACE).await;
        let org = self.org_by_id(org_id).await?;
        let in_use = self.store.keks_in_use(&org.id).await?;
        if let Some(left) = &org.kms_moving_from {
            if in_use.iter().any(|(kms, _)| kms == left) {
                return Err(VaultError::internal(format!(
                    "org {} still has keys under KMS '{left}' after its rewrap; it resumes on restart",
                    org.id
                )));
            }
            self.kms.remove_org(left, org.id).await?;
            self.store.finish_org_kms_move(&org.id).await?;
            tracing::info!(org = %org.id, from = %left, to = %org.kms, "org moved to another KMS; its KEKs in the old one are removed");
        }
        for version in 1..org.kek_version {
            if in_use.iter().any(|(kms, v)| *v == version && *kms == org.kms) {
                continue;
            }
            // Versions retired earlier, or that lived in another KMS, are gone already.
            if let Err(err) = self.kms.retire_kek_version(&org.kms, org.id, version).await {
                tracing::debug!(org = %org.id, version, error = %byok_domain::error::Report(&err), "KEK version not retired");
            }
        }
        Ok(())
    }

    /// Move the org's KEK to the KMS `to` (`default`, or a customer-managed KMS, which
    /// only a katman-c org may use): its next KEK version is created there and becomes
    /// current at once; a background job rewraps every DEK into it, then removes the
    /// org's KEKs from the KMS it left. Calls keep working throughout. Moving to the KMS
    /// the org is already on (with no move in progress) changes nothing.
    pub async fn move_kms(&self, actor: &Actor, org: OrgId, to: &str) -> Result<KekStatus, VaultError> {
        let org = self.live_org(org).await?;
        let to = KmsName::parse(to).map_err(|e| VaultError::invalid(format!("kms: {e}")))?;
        if !self.kms.contains(&to) {
            let names: Vec<String> = self.kms.names().iter().map(ToString::to_string).collect();
            return Err(VaultError::NotFound(format!(
                "kms: no KMS named '{to}' is configured (configured: {}); add [kms.customer.{to}] to the configuration",
                names.join(", ")
            )));
        }
        if !to.is_default() && org.tier != Tier::KatmanC {
            return Err(VaultError::TierForbids(format!(
                "org {} is on {}; a customer-managed KMS is a katman-c control",
                org.id, org.tier
            )));
        }
        if let Some(reserved) = self.kms.reserved_for(&to) {
            let (id, name) = (org.id.to_string(), org.name.to_string());
            if !reserved.iter().any(|o| *o == id || *o == name) {
                return Err(VaultError::Forbidden(format!(
                    "kms: '{to}' is reserved for {} ([kms.customer.{to}] orgs); org {} ({name}) may not use it",
                    reserved.join(", "),
                    org.id
                )));
            }
        }
        if let Some(from) = &org.kms_moving_from {
            return Err(VaultError::Conflict(format!(
                "org {} is still moving from KMS '{from}' to '{}'; wait until `byok kek status` shows it idle",
                org.id, org.kms
            )));
        }
        if org.kms == to {
            return self.kek_status(org.id).await;
        }
        self.kms.check_health_of(&to).await?;
        let version = org
            .kek_version
            .checked_add(1)
            .ok_or_else(|| VaultError::Conflict(format!("org {} has run out of KEK version numbers", org.id)))?;
        self.kms.create_kek_version(&to, org.id, version).await?;
        let mut moved = event(org.id, LifecycleKind::KmsMoved, org.id, actor);
        moved.details = serde_json::json!({
            "from_kms": org.kms, "to_kms": to,
            "from_kek_version": org.kek_version, "to_kek_version": version,
        });
        self.store.begin_org_kms_move(&org.id, &org.kms, &to, version, &moved).await?;
        self.epoch.bump();
        self.spawn_rewrap(org.id);
        self.kek_status(org.id).await
    }

    /// Crypto-shred an org: mark it deleted (every sidecar stops using it), then destroy
    /// its KEKs in the KMS. Its credentials can never be opened again; its audit and
    /// lifecycle stay readable. Idempotent.
    pub async fn delete_org(&self, actor: &Actor, org: OrgId) -> Result<Org, VaultError> {
        let org = self.org_by_id(org).await?;
        let now = Timestamp::now();
        let mut events = Vec::new();
        let mut deleted = event(org.id, LifecycleKind::Deleted, org.id, actor);
        deleted.details = serde_json::json!({ "crypto_shredded": true, "kek_version": org.kek_version });
        events.push(deleted);
        for record in self.store.list_credentials(&org.id).await? {
            let c = record.credential;
            events.push(credential_event(
                org.id,
                LifecycleKind::Deleted,
                c.id,
                c.version,
                &c.fingerprint,
                actor,
                serde_json::json!({ "crypto_shredded": true }),
            ));
        }
        let marked = self.store.mark_org_deleted(&org.id, now, &events).await?;
        self.epoch.bump();
        if let Some(left) = &org.kms_moving_from {
            // Mid-move, the KMS being left still holds older versions: destroy them too.
            match self.kms.destroy_org_keks(left, org.id).await {
                Ok(()) | Err(byok_crypto::CryptoError::Kms(byok_crypto::KmsError::UnknownOrg(_))) => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.kms.destroy_org_keks(&org.kms, org.id).await?;
        Ok(marked)
    }
}
