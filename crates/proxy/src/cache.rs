//! What the hot path keeps so that a call costs neither a database query nor a KMS
//! round trip when nothing changed.
//!
//! * Workload tokens and per-org snapshots (org, credentials, workflows) are stamped
//!   with the change epoch they were loaded at; any committed change (this node's
//!   vault bumps the epoch at once, other nodes' changes are seen by polling the
//!   store's event sequence) makes them stale, and they are reloaded on next use.
//! * Unwrapped DEKs are kept for a bounded time and number of uses, in zeroizing
//!   memory, and dropped (zeroized) on eviction. Plaintext keys are never cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use byok_crypto::{Dek, SealedSecret, TokenHash};
use byok_domain::{Credential, CredentialId, CredentialOwner, Org, OrgId, ProviderId, WorkflowId, WorkloadToken};
use byok_store::StoreError;
use byok_vault::Vault;
use tokio::sync::OnceCell;

/// Entries kept per map before the whole map is dropped (bounds memory under abuse).
const MAX_ENTRIES: usize = 100_000;

/// A credential as the resolver sees it, with its current sealed version loaded once.
#[derive(Debug)]
pub struct CachedCredential {
    /// The credential (stored state; expiry is checked per call).
    pub credential: Credential,
    sealed: OnceCell<Arc<SealedSecret>>,
}

impl CachedCredential {
    pub(crate) fn new(credential: Credential) -> Self {
        Self { credential, sealed: OnceCell::new() }
    }
}

/// Everything about one org that resolving a call to one provider needs.
#[derive(Debug)]
pub struct OrgSnapshot {
    /// The org.
    pub org: Org,
    /// Its credentials for the provider.
    pub credentials: Vec<Arc<CachedCredential>>,
    /// Workflows by id, with their name and owning team.
    pub workflows: HashMap<WorkflowId, (String, Option<byok_domain::TeamId>)>,
}

impl OrgSnapshot {
    /// A workflow by id or name.
    pub fn workflow(&self, reference: &str) -> Option<(WorkflowId, Option<byok_domain::TeamId>)> {
        if let Ok(id) = reference.parse::<WorkflowId>() {
            return self.workflows.get(&id).map(|(_, team)| (id, *team));
        }
        self.workflows.iter().find(|(_, (name, _))| name == reference).map(|(id, (_, team))| (*id, *team))
    }
}

/// Cached directory data, invalidated by change epoch.
pub(crate) struct Directory {
    vault: Vault,
    remote_epoch: AtomicU64,
    tokens: RwLock<HashMap<TokenHash, (u64, Arc<WorkloadToken>)>>,
    orgs: RwLock<HashMap<(OrgId, ProviderId), (u64, Arc<OrgSnapshot>)>>,
    /// The platform pool's snapshot per provider (`None`: there is no pool yet).
    platform: RwLock<HashMap<ProviderId, (u64, Option<Arc<OrgSnapshot>>)>>,
}

impl Directory {
    pub(crate) fn new(vault: Vault) -> Self {
        Self {
            vault,
            remote_epoch: AtomicU64::new(0),
            tokens: RwLock::default(),
            orgs: RwLock::default(),
            platform: RwLock::default(),
        }
    }

    fn epoch(&self) -> u64 {
        self.vault.epoch().current().wrapping_add(self.remote_epoch.load(Ordering::Acquire))
    }

    /// Another node changed something: everything cached is stale.
    pub(crate) fn remote_change(&self) {
        self.remote_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The workload token with this hash, if it exists (valid or not).
    pub(crate) async fn token(&self, hash: &TokenHash) -> Result<Option<Arc<WorkloadToken>>, StoreError> {
        let epoch = self.epoch();
        if let Ok(tokens) = self.tokens.read() {
            if let Some((at, token)) = tokens.get(hash) {
                if *at == epoch {
                    return Ok(Some(Arc::clone(token)));
                }
            }
        }
        let Some(token) = self.vault.store().find_workload_token_by_hash(hash).await? else {
            return Ok(None);
        };
        let token = Arc::new(token);
        if let Ok(mut tokens) = self.tokens.write() {
            if tokens.len() >= MAX_ENTRIES {
                tokens.clear();
            }
            tokens.insert(*hash, (epoch, Arc::clone(&token)));
        }
        Ok(Some(token))
    }

    /// The org's snapshot for `provider`, loading it if stale.
    pub(crate) async fn org(&self, id: &OrgId, provider: ProviderId) -> Result<Option<Arc<OrgSnapshot>>, StoreError> {
        let epoch = self.epoch();
        if let Ok(orgs) = self.orgs.read() {
            if let Some((at, snapshot)) = orgs.get(&(*id, provider)) {
                if *at == epoch {
                    return Ok(Some(Arc::clone(snapshot)));
                }
            }
        }
        let store = self.vault.store();
        let Some(org) = store.get_org(id).await? else {
            return Ok(None);
        };
        let credentials = store
            .list_credentials_for_provider(id, provider)
            .await?
            .into_iter()
            .map(|record| Arc::new(CachedCredential::new(record.credential)))
            .collect();
        let workflows = store
            .list_workflows(id)
            .await?
            .into_iter()
            .map(|w| (w.id, (w.name.as_str().to_owned(), w.team_id)))
            .collect();
        let snapshot = Arc::new(OrgSnapshot { org, credentials, workflows });
        if let Ok(mut orgs) = self.orgs.write() {
            if orgs.len() >= MAX_ENTRIES {
                orgs.clear();
            }
            orgs.insert((*id, provider), (epoch, Arc::clone(&snapshot)));
        }
        Ok(Some(snapshot))
    }

    /// The platform pool's snapshot for `provider`, loading it if stale; `None` when
    /// there is no platform pool.
    pub(crate) async fn platform(&self, provider: ProviderId) -> Result<Option<Arc<OrgSnapshot>>, StoreError> {
        let epoch = self.epoch();
        if let Ok(platform) = self.platform.read() {
            if let Some((at, snapshot)) = platform.get(&provider) {
                if *at == epoch {
                    return Ok(snapshot.clone());
                }
            }
        }
        let store = self.vault.store();
        let snapshot = match store.platform_org().await? {
            None => None,
            Some(org) => {
                let credentials = store
                    .list_credentials_for_provider(&org.id, provider)
                    .await?
                    .into_iter()
                    .map(|record| {
                        let mut credential = record.credential;
                        credential.owner = CredentialOwner::Platform;
                        Arc::new(CachedCredential::new(credential))
                    })
                    .collect();
                Some(Arc::new(OrgSnapshot { org, credentials, workflows: HashMap::new() }))
            }
        };
        if let Ok(mut platform) = self.platform.write() {
            platform.insert(provider, (epoch, snapshot.clone()));
        }
        Ok(snapshot)
    }

    /// A credential of the org by id or name, whatever its provider (a pin that names
    /// another provider's credential must be refused by name, not as unknown).
    pub(crate) async fn credential_anywhere(
        &self,
        org: &OrgId,
        reference: &str,
    ) -> Result<Option<Arc<CachedCredential>>, StoreError> {
        let store = self.vault.store();
        let record = match reference.parse::<CredentialId>() {
            Ok(id) => store.get_credential(org, &id).await?,
            Err(_) => store.find_credential_by_name(org, reference).await?,
        };
        Ok(record.map(|r| Arc::new(CachedCredential::new(r.credential))))
    }

    /// The sealed current version of a cached credential (loaded once per snapshot).
    pub(crate) async fn sealed(&self, cached: &CachedCredential) -> Result<Arc<SealedSecret>, StoreError> {
        let credential = &cached.credential;
        cached
            .sealed
            .get_or_try_init(|| async {
                self.vault
                    .store()
                    .get_sealed_version(&credential.id, credential.version)
                    .await?
                    .map(Arc::new)
                    .ok_or_else(|| StoreError::NotFound {
                        what: format!("version {} of credential {}", credential.version, credential.id),
                    })
            })
            .await
            .cloned()
    }

    /// Poll the store for changes made by other nodes until `stop` fires.
    pub(crate) async fn watch_remote_changes(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut last = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.vault.store().latest_event_seq().await {
                Ok(seq) => {
                    if last.is_some_and(|l| l != seq) {
                        self.remote_change();
                    }
                    last = Some(seq);
                }
                Err(err) => tracing::debug!(error = %err, "change poll failed"),
            }
        }
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

struct DekEntry {
    dek: Arc<Dek>,
    loaded: Instant,
    uses: u64,
}

type DekKey = (CredentialId, u32);

/// Unwrapped DEKs by (credential, version), bounded in time, uses and count.
pub(crate) struct DekCache {
    entries: Mutex<HashMap<DekKey, DekEntry>>,
    /// One gate per key being unwrapped: calls that miss while another call is unwrapping
    /// the same DEK wait for it instead of asking the KMS again (an HSM sees one unwrap
    /// per refresh, not one per call in flight).
    loading: Mutex<HashMap<DekKey, Arc<tokio::sync::Mutex<()>>>>,
    ttl: Duration,
    max_uses: u64,
    capacity: usize,
}

impl DekCache {
    pub(crate) fn new(ttl: Duration, max_uses: u64, capacity: usize) -> Self {
        Self { entries: Mutex::default(), loading: Mutex::default(), ttl, max_uses, capacity: capacity.max(1) }
    }

    /// The cached DEK, or the one `load` unwraps — by one caller per key at a time.
    /// Returns the DEK and whether it came from the cache (`false`: this call unwrapped).
    pub(crate) async fn get_or_load<E, Fut>(
        &self,
        key: DekKey,
        load: impl FnOnce() -> Fut,
    ) -> Result<(Arc<Dek>, bool), E>
    where
        Fut: std::future::Future<Output = Result<Dek, E>>,
    {
        if let Some(dek) = self.get(&key) {
            return Ok((dek, true));
        }
        if self.ttl.is_zero() || self.max_uses == 0 {
            // Caching is off: every call unwraps, concurrently.
            return load().await.map(|dek| (Arc::new(dek), false));
        }
        let gate = self.loading.lock().ok().map(|mut loading| Arc::clone(loading.entry(key).or_default()));
        let Some(gate) = gate else {
            return load().await.map(|dek| (Arc::new(dek), false));
        };
        let turn = gate.lock().await;
        let result = match self.get(&key) {
            // Unwrapped by the call we waited for.
            Some(dek) => Ok((dek, true)),
            None => load().await.map(|dek| {
                let dek = Arc::new(dek);
                self.insert(key, Arc::clone(&dek));
                (dek, false)
            }),
        };
        drop(turn);
        if let Ok(mut loading) = self.loading.lock() {
            // Only the map and this call hold the gate: nobody is waiting on it.
            if loading.get(&key).is_some_and(|held| Arc::ptr_eq(held, &gate) && Arc::strong_count(&gate) == 2) {
                loading.remove(&key);
            }
        }
        result
    }

    /// A cached DEK, counting one use; expired or used-up entries are dropped.
    pub(crate) fn get(&self, key: &(CredentialId, u32)) -> Option<Arc<Dek>> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get_mut(key)?;
        if entry.loaded.elapsed() >= self.ttl || entry.uses >= self.max_uses {
            entries.remove(key);
            return None;
        }
        entry.uses += 1;
        Some(Arc::clone(&entry.dek))
    }

    pub(crate) fn insert(&self, key: (CredentialId, u32), dek: Arc<Dek>) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, e| e.loaded.elapsed() < ttl);
            if entries.len() >= self.capacity {
                if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.loaded).map(|(k, _)| *k) {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, DekEntry { dek, loaded: Instant::now(), uses: 1 });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_unwrap_once() {
        let cache = Arc::new(DekCache::new(Duration::from_secs(60), 1000, 16));
        let key = (CredentialId::generate(), 1);
        let unwraps = Arc::new(AtomicU64::new(0));
        let mut calls = Vec::new();
        for _ in 0..16 {
            let (cache, unwraps) = (Arc::clone(&cache), Arc::clone(&unwraps));
            calls.push(tokio::spawn(async move {
                cache
                    .get_or_load(key, || async {
                        unwraps.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(Dek::generate())
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut loaded = 0;
        for call in calls {
            let (_, hit) = call.await.unwrap();
            loaded += usize::from(!hit);
        }
        assert_eq!(unwraps.load(Ordering::SeqCst), 1, "one unwrap for 16 concurrent misses");
        assert_eq!(loaded, 1);
        assert!(cache.loading.lock().unwrap().is_empty(), "no gate is left behind");

        // A failed unwrap is not cached: the next call tries again.
        let other = (CredentialId::generate(), 1);
        assert!(cache.get_or_load(other, || async { Err::<Dek, _>("KMS down") }).await.is_err());
        assert!(cache.get_or_load(other, || async { Ok::<_, ()>(Dek::generate()) }).await.is_ok());

        // With caching off every call unwraps.
        let off = DekCache::new(Duration::ZERO, 1000, 16);
        for _ in 0..3 {
            let (_, hit) = off.get_or_load(key, || async { Ok::<_, ()>(Dek::generate()) }).await.unwrap();
            assert!(!hit);
        }
    }

    #[test]
    fn dek_cache_bounds_time_uses_and_size() {
        let key = (CredentialId::generate(), 1);
        let cache = DekCache::new(Duration::from_secs(60), 3, 2);
        cache.insert(key, Arc::new(Dek::generate()));
        assert!(cache.get(&key).is_some());
        assert!(cache.get(&key).is_some());
        assert!(cache.get(&key).is_none(), "a DEK serves at most max_uses calls");
        let expired = DekCache::new(Duration::ZERO, 100, 2);
        expired.insert(key, Arc::new(Dek::generate()));
        assert!(expired.get(&key).is_none(), "a DEK is dropped after its time");
        for _ in 0..5 {
            cache.insert((CredentialId::generate(), 1), Arc::new(Dek::generate()));
        }
        assert!(cache.len() <= 2);
    }
}
