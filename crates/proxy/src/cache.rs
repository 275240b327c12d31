//! What the hot path keeps so that a call costs neither a database query nor a KMS
//! round trip when nothing changed.
//!
//! * Workload tokens and per-org snapshots (org, credentials, workflows) are stamped
//!   with the invalidation generations of their org (and token) at load time; a
//!   committed change makes stale only what its lifecycle event names — one token, or
//!   one org — and that is reloaded on next use (see [`Directory`]).
//! * Unwrapped DEKs are kept for a bounded time and number of uses, in zeroizing
//!   memory, and dropped (zeroized) on eviction. Plaintext keys are never cached.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use byok_crypto::{Dek, SealedSecret, TokenHash};
use byok_domain::{
    Credential, CredentialId, CredentialOwner, LifecycleKind, Org, OrgId, ProviderId, TokenId, WorkflowId,
    WorkloadToken,
};
use byok_metrics::{DirectoryCache, Metrics};
use byok_store::ResolutionView;
use byok_store::{ChangeNote, Heard, StoreError};
use byok_vault::Vault;
use tokio::sync::OnceCell;

use crate::phases::inject::WireKey;
use crate::redact::Forms;

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
    /// Its credentials for the provider, most preferred first (the resolution order:
    /// specificity, priority, newest, id). Read-only: [`OrgSnapshot::new`] indexes them.
    credentials: Vec<Arc<CachedCredential>>,
    /// Workflows by id, with their name and owning team.
    pub workflows: HashMap<WorkflowId, (String, Option<byok_domain::TeamId>)>,
    /// Which credentials a call of a given team and workflow can be admitted by.
    index: ScopeIndex,
}

/// Positions in [`OrgSnapshot::credentials`] by the team or workflow their scope is
/// bound to, so that resolving a call looks only at the credentials its team and
/// workflow could be admitted by: the cost of a call does not grow with the number of
/// other teams' keys. Each list is in preference order.
#[derive(Debug, Default)]
struct ScopeIndex {
    /// Workflow-bound credentials (whatever their team list), by each workflow they name.
    by_workflow: HashMap<WorkflowId, Vec<u32>>,
    /// Team-bound credentials with no workflow list, by each team they name.
    by_team: HashMap<byok_domain::TeamId, Vec<u32>>,
    /// Credentials with neither list.
    open: Vec<u32>,
    /// Every credential by id and by name (pins).
    by_id: HashMap<CredentialId, u32>,
    by_name: HashMap<String, u32>,
}

impl OrgSnapshot {
    /// The snapshot of `org` holding `credentials` (one provider's) and `workflows`.
    pub(crate) fn new(
        org: Org,
        mut credentials: Vec<Arc<CachedCredential>>,
        workflows: HashMap<WorkflowId, (String, Option<byok_domain::TeamId>)>,
    ) -> Self {
        credentials.sort_by(|a, b| crate::phases::resolve::preference(&b.credential, &a.credential));
        let mut index = ScopeIndex::default();
        for (position, cached) in credentials.iter().enumerate() {
            let Ok(position) = u32::try_from(position) else { break };
            let scope = &cached.credential.scope;
            if !scope.workflows.is_empty() {
                for workflow in &scope.workflows {
                    index.by_workflow.entry(*workflow).or_default().push(position);
                }
            } else if !scope.teams.is_empty() {
                for team in &scope.teams {
                    index.by_team.entry(*team).or_default().push(position);
                }
            } else {
                index.open.push(position);
            }
            index.by_id.entry(cached.credential.id).or_insert(position);
            index.by_name.entry(cached.credential.name.as_str().to_owned()).or_insert(position);
        }
        Self { org, credentials, workflows, index }
    }

    /// The credentials whose team and workflow lists could admit a call from `team` in
    /// `workflow`, most preferred first. (Their other dimensions are still to check.)
    pub(crate) fn candidates(
        &self,
        team: byok_domain::TeamId,
        workflow: Option<WorkflowId>,
    ) -> impl Iterator<Item = &Arc<CachedCredential>> {
        let mut positions: Vec<u32> = self.index.open.clone();
        if let Some(list) = self.index.by_team.get(&team) {
            positions.extend_from_slice(list);
        }
        if let Some(list) = workflow.and_then(|w| self.index.by_workflow.get(&w)) {
            positions.extend_from_slice(list);
        }
        positions.sort_unstable();
        positions.dedup();
        positions.into_iter().filter_map(|p| self.credentials.get(usize::try_from(p).ok()?))
    }

    /// Its credentials for the provider, most preferred first.
    pub fn credentials(&self) -> &[Arc<CachedCredential>] {
        &self.credentials
    }

    /// The credential a pin names, by id or by name.
    pub(crate) fn pinned(&self, reference: &str) -> Option<&Arc<CachedCredential>> {
        let position = reference
            .parse::<CredentialId>()
            .ok()
            .and_then(|id| self.index.by_id.get(&id))
            .or_else(|| self.index.by_name.get(reference))?;
        self.credentials.get(usize::try_from(*position).ok()?)
    }

    /// A workflow by id or name.
    pub fn workflow(&self, reference: &str) -> Option<(WorkflowId, Option<byok_domain::TeamId>)> {
        if let Ok(id) = reference.parse::<WorkflowId>() {
            return self.workflows.get(&id).map(|(_, team)| (id, *team));
        }
        self.workflows.iter().find(|(_, (name, _))| name == reference).map(|(id, (_, team))| (*id, *team))
    }
}

/// What a change can make stale: everything cached about one org, or one workload token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Org(OrgId),
    Token(TokenId),
}

/// Invalidation generations. A cached entry is stamped with the generations in force
/// before it was read from the store and is used only while they are still current, so
/// an invalidation that happens while a load is in flight is never lost.
#[derive(Default)]
struct Generations {
    /// Bumped when anything may have changed (a gap in what the poll read, an unknown
    /// kind, the generation map overflowing).
    all: AtomicU64,
    /// Bumped, before any generation moves, on every invalidation of any scope.
    changes: AtomicU64,
    /// Per scope; a scope never invalidated is at 0.
    by_scope: RwLock<HashMap<Scope, u64>>,
}

/// The generations an entry was loaded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    all: u64,
    org: u64,
    token: u64,
}

impl Generations {
    fn of(&self, scope: Scope) -> u64 {
        self.by_scope.read().map_or(u64::MAX, |gens| gens.get(&scope).copied().unwrap_or(0))
    }

    fn stamp(&self, org: OrgId, token: Option<TokenId>) -> Stamp {
        Stamp {
            all: self.all.load(Ordering::SeqCst),
            org: self.of(Scope::Org(org)),
            token: token.map_or(0, |t| self.of(Scope::Token(t))),
        }
    }

    fn invalidate(&self, scope: Scope) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        match self.by_scope.write() {
            Ok(mut gens) if gens.len() < MAX_ENTRIES => *gens.entry(scope).or_default() += 1,
            Ok(mut gens) => {
                // Dropping the map resets every scope to 0: only a new `all` keeps old
                // stamps from matching again.
                gens.clear();
                self.all.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                self.all.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn invalidate_all(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.all.fetch_add(1, Ordering::SeqCst);
    }
}

/// Events read per poll; a full page means the poll fell behind and cannot tell what
/// changed cheaply, so everything is invalidated instead.
const CHANGES_PAGE: u32 = 1_000;
/// Seqs remembered as already applied from notifications (beyond this, the poll applies
/// them again: harmless).
const MAX_HEARD: usize = 10_000;
/// How long the listener waits before connecting again after losing its connection.
const LISTEN_RETRY: Duration = Duration::from_millis(500);

/// Cached directory data, invalidated per org (and per token) as changes are heard of.
///
/// Every committed change has a lifecycle event naming its org, kind and subject. This
/// node's vault bumps its [`byok_vault::ChangeEpoch`] after each commit; the next lookup
/// that sees the epoch moved first reads the events since the last one applied (one
/// query per change, not per call), so a change through this node applies to the very
/// next call. Other nodes' changes arrive as PostgreSQL notifications and, as the
/// fallback, by polling the same events. A token event drops that token; any other
/// event of an org drops what is cached about that org; an unknown kind or a gap drops
/// everything.
pub(crate) struct Directory {
    vault: Vault,
    /// What the directory reads: the store's read-only view (changes go through the vault).
    store: ResolutionView,
    gens: Generations,
    tokens: RwLock<HashMap<TokenHash, (Stamp, Arc<WorkloadToken>)>>,
    orgs: RwLock<HashMap<(OrgId, ProviderId), (Stamp, Arc<OrgSnapshot>)>>,
    /// The platform pool's snapshot per provider (`None`: there is no pool yet).
    platform: RwLock<HashMap<ProviderId, (Stamp, Option<Arc<OrgSnapshot>>)>>,
    /// Serializes reading the events (the poll, catching up after a local change).
    catching_up: tokio::sync::Mutex<()>,
    /// The last event `seq` applied (-1: not read yet).
    last_seq: AtomicI64,
    /// The local change epoch the events have been read up to.
    synced_epoch: AtomicU64,
    /// Seqs above `last_seq` already applied from notifications.
    heard: Mutex<BTreeSet<i64>>,
    /// Where hits and misses are counted (`byok_directory_cache_lookups_total`).
    metrics: Arc<Metrics>,
}

impl Directory {
    pub(crate) fn new(vault: Vault) -> Self {
        let synced_epoch = AtomicU64::new(vault.epoch().current());
        Self {
            metrics: Arc::clone(vault.kms().metrics()),
            store: vault.resolution_view(),
            vault,
            gens: Generations::default(),
            tokens: RwLock::default(),
            orgs: RwLock::default(),
            platform: RwLock::default(),
            catching_up: tokio::sync::Mutex::new(()),
            last_seq: AtomicI64::new(-1),
            synced_epoch,
            heard: Mutex::default(),
        }
    }

    /// Drop what `change` made stale.
    fn apply(&self, change: &ChangeNote) {
        match change.kind {
            None => self.gens.invalidate_all(),
            Some(LifecycleKind::TokenIssued | LifecycleKind::TokenRevoked) => match change.subject.parse::<TokenId>() {
                Ok(token) => self.gens.invalidate(Scope::Token(token)),
                Err(_) => self.gens.invalidate(Scope::Org(change.org)),
            },
            // Admin tokens and audit retention are nothing this directory holds.
            Some(LifecycleKind::AdminTokenIssued | LifecycleKind::AdminTokenRevoked | LifecycleKind::AuditPurged) => {}
            // Anything else about the org (its tier, controls, KMS, credentials,
            // workflows, …); the platform pool is an org of its own.
            Some(_) => self.gens.invalidate(Scope::Org(change.org)),
        }
    }

    /// Apply the events committed since the last one applied. The caller holds
    /// `catching_up`.
    async fn read_changes(&self) -> Result<(), StoreError> {
        let epoch = self.vault.epoch().current();
        let store = &self.store;
        let last = self.last_seq.load(Ordering::SeqCst);
        if last < 0 {
            // Whatever was cached before the first read may be stale.
            let latest = store.latest_event_seq().await?;
            self.gens.invalidate_all();
            self.last_seq.store(latest, Ordering::SeqCst);
            self.synced_epoch.store(epoch, Ordering::SeqCst);
            return Ok(());
        }
        let changes = store.changes_after(last, CHANGES_PAGE).await?;
        let mut applied = last;
        if changes.len() >= CHANGES_PAGE as usize {
            let latest = store.latest_event_seq().await?;
            tracing::debug!(behind = changes.len(), "change poll fell behind; invalidating every cache");
            self.gens.invalidate_all();
            applied = latest.max(last);
        } else {
            let heard =
                self.heard.lock().map(|mut heard| changes.iter().map(|c| heard.remove(&c.seq)).collect::<Vec<_>>());
            for (i, change) in changes.iter().enumerate() {
                let already = heard.as_ref().is_ok_and(|h| h.get(i).copied().unwrap_or(false));
                if !already {
                    self.apply(change);
                }
                applied = applied.max(change.seq);
            }
        }
        self.last_seq.store(applied, Ordering::SeqCst);
        if let Ok(mut heard) = self.heard.lock() {
            heard.retain(|seq| *seq > applied);
        }
        self.synced_epoch.store(epoch, Ordering::SeqCst);
        Ok(())
    }

    /// Read the events now (the poll's tick, a listener's reconnection).
    async fn catch_up(&self) {
        let _turn = self.catching_up.lock().await;
        if let Err(err) = self.read_changes().await {
            tracing::debug!(error = %byok_domain::error::Report(&err), "change poll failed");
        }
    }

    /// Before a lookup: if this node's vault committed a change since the events were
    /// last read, read them (so the change applies to this very call).
    async fn sync_local(&self) {
        if self.synced_epoch.load(Ordering::SeqCst) == self.vault.epoch().current() {
            return;
        }
        let _turn = self.catching_up.lock().await;
        if self.synced_epoch.load(Ordering::SeqCst) == self.vault.epoch().current() {
            return;
        }
        if let Err(err) = self.read_changes().await {
            // Cannot tell what changed: everything is stale.
            tracing::debug!(error = %byok_domain::error::Report(&err), "reading changes failed; invalidating every cache");
            self.gens.invalidate_all();
        }
    }

    /// A change notification from another node (or this one).
    fn heard(&self, change: &ChangeNote) {
        if change.seq <= self.last_seq.load(Ordering::SeqCst) {
            return; // the poll was first
        }
        self.apply(change);
        if let Ok(mut heard) = self.heard.lock() {
            if heard.len() >= MAX_HEARD {
                heard.clear();
            }
            heard.insert(change.seq);
        }
    }

    /// The workload token with this hash, if it exists (valid or not).
    pub(crate) async fn token(&self, hash: &TokenHash) -> Result<Option<Arc<WorkloadToken>>, StoreError> {
        self.sync_local().await;
        if let Ok(tokens) = self.tokens.read() {
            if let Some((at, token)) = tokens.get(hash) {
                if *at == self.gens.stamp(token.org_id, Some(token.id)) {
                    self.metrics.directory_cache_lookup(DirectoryCache::Token, true);
                    return Ok(Some(Arc::clone(token)));
                }
            }
        }
        self.metrics.directory_cache_lookup(DirectoryCache::Token, false);
        // The token's org and id are known only once it is read: it is cached only if
        // nothing was invalidated meanwhile (else its stamp could postdate its data).
        let changes = self.gens.changes.load(Ordering::SeqCst);
        let Some(token) = self.store.find_workload_token_by_hash(hash).await? else {
            return Ok(None);
        };
        tracing::debug!(org = %token.org_id, token = %token.id, "directory loaded a workload token");
        let token = Arc::new(token);
        let stamp = self.gens.stamp(token.org_id, Some(token.id));
        if self.gens.changes.load(Ordering::SeqCst) == changes {
            if let Ok(mut tokens) = self.tokens.write() {
                if tokens.len() >= MAX_ENTRIES {
                    tokens.clear();
                }
                tokens.insert(*hash, (stamp, Arc::clone(&token)));
            }
        }
        Ok(Some(token))
    }

    /// The org's snapshot for `provider`, loading it if stale.
    pub(crate) async fn org(&self, id: &OrgId, provider: ProviderId) -> Result<Option<Arc<OrgSnapshot>>, StoreError> {
        self.sync_local().await;
        let stamp = self.gens.stamp(*id, None);
        if let Ok(orgs) = self.orgs.read() {
            if let Some((at, snapshot)) = orgs.get(&(*id, provider)) {
                if *at == stamp {
                    self.metrics.directory_cache_lookup(DirectoryCache::Org, true);
                    return Ok(Some(Arc::clone(snapshot)));
                }
            }
        }
        self.metrics.directory_cache_lookup(DirectoryCache::Org, false);
        let store = &self.store;
        tracing::debug!(org = %id, provider = %provider.as_str(), "directory loads an org snapshot");
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
        let snapshot = Arc::new(OrgSnapshot::new(org, credentials, workflows));
        if let Ok(mut orgs) = self.orgs.write() {
            if orgs.len() >= MAX_ENTRIES {
                orgs.clear();
            }
            orgs.insert((*id, provider), (stamp, Arc::clone(&snapshot)));
        }
        Ok(Some(snapshot))
    }

    /// The platform pool's snapshot for `provider`, loading it if stale; `None` when
    /// there is no platform pool.
    pub(crate) async fn platform(&self, provider: ProviderId) -> Result<Option<Arc<OrgSnapshot>>, StoreError> {
        self.sync_local().await;
        // "No pool" has no org to key on: any change at all makes it stale.
        let no_pool = Stamp {
            all: self.gens.all.load(Ordering::SeqCst),
            org: self.gens.changes.load(Ordering::SeqCst),
            token: 0,
        };
        if let Ok(platform) = self.platform.read() {
            if let Some((at, snapshot)) = platform.get(&provider) {
                let current = snapshot.as_ref().map_or(no_pool, |s| self.gens.stamp(s.org.id, None));
                if *at == current {
                    self.metrics.directory_cache_lookup(DirectoryCache::Platform, true);
                    return Ok(snapshot.clone());
                }
            }
        }
        self.metrics.directory_cache_lookup(DirectoryCache::Platform, false);
        let store = &self.store;
        // The pool's org is unknown until read: stamped like a token (see `token`).
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
                Some(Arc::new(OrgSnapshot::new(org, credentials, HashMap::new())))
            }
        };
        let stamp = snapshot.as_ref().map_or(no_pool, |s| self.gens.stamp(s.org.id, None));
        if self.gens.changes.load(Ordering::SeqCst) == no_pool.org {
            if let Ok(mut platform) = self.platform.write() {
                platform.insert(provider, (stamp, snapshot.clone()));
            }
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
        let store = &self.store;
        let record = match reference.parse::<CredentialId>() {
            Ok(id) => store.get_credential(org, &id).await?,
            Err(_) => store.find_credential_by_name(org, reference).await?,
        };
        Ok(record.map(|r| Arc::new(CachedCredential::new(r.credential))))
    }

    /// The store's read-only view this directory reads.
    pub(crate) fn store(&self) -> &ResolutionView {
        &self.store
    }

    /// The sealed current version of a cached credential (loaded once per snapshot).
    pub(crate) async fn sealed(&self, cached: &CachedCredential) -> Result<Arc<SealedSecret>, StoreError> {
        let credential = &cached.credential;
        cached
            .sealed
            .get_or_try_init(|| async {
                self.store.get_sealed_version(&credential.id, credential.version).await?.map(Arc::new).ok_or_else(
                    || StoreError::NotFound {
                        what: format!("version {} of credential {}", credential.version, credential.id),
                    },
                )
            })
            .await
            .cloned()
    }

    /// Follow changes made through other nodes until `stop` fires: PostgreSQL
    /// notifications as they come, and the store's events every `every` (the fallback,
    /// which also catches what a listener missed while it reconnected).
    pub(crate) async fn watch_remote_changes(
        self: Arc<Self>,
        every: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        tokio::join!(Arc::clone(&self).listen(stop.clone()), self.poll(every, stop));
    }

    async fn poll(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.catch_up().await;
        }
    }

    async fn listen(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let connected = tokio::select! {
                connected = self.store.listen_for_changes() => connected,
                _ = stop.wait_for(|s| *s) => return,
            };
            match connected {
                Ok(None) => return, // nothing to listen to: the poll alone
                Ok(Some(mut listener)) => {
                    // Whatever committed before the listener was up.
                    self.catch_up().await;
                    loop {
                        let heard = tokio::select! {
                            heard = listener.next() => heard,
                            _ = stop.wait_for(|s| *s) => return,
                        };
                        match heard {
                            Ok(Heard::Change(change)) => self.heard(&change),
                            Ok(Heard::Unreadable | Heard::Reconnected) => self.catch_up().await,
                            Err(err) => {
                                tracing::debug!(error = %byok_domain::error::Report(&err), "change listener lost its connection");
                                break;
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %byok_domain::error::Report(&err), "change listener cannot connect; polling meanwhile")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(LISTEN_RETRY) => {}
                _ = stop.wait_for(|s| *s) => return,
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
    dek: Arc<CachedDek>,
    loaded: Instant,
    uses: u64,
}

/// An unwrapped DEK, with what is derived once from the secret it opens ([`OpenedKey`]):
/// the key as the wire takes it and the response redactor's forms of it. They live
/// exactly as long as the DEK they came with — the entry's time and use bounds, and then
/// the last call still using them — instead of the secret being opened, and its header
/// and forms built, for every call. The opened secret itself is not kept.
pub(crate) struct CachedDek {
    pub(crate) dek: Dek,
    opened: std::sync::OnceLock<Arc<OpenedKey>>,
}

/// What a call needs of a credential's secret, derived from it once.
pub(crate) struct OpenedKey {
    /// The header carrying the key (sensitive, zeroized with its last holder), or the
    /// Bedrock key that signs.
    pub(crate) wire: WireKey,
    /// The key in each encoding an answer could echo it in (zeroized when dropped).
    pub(crate) forms: Arc<Forms>,
}

impl std::fmt::Debug for OpenedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedKey").field("wire", &self.wire).finish_non_exhaustive()
    }
}

impl CachedDek {
    pub(crate) fn new(dek: Dek) -> Self {
        Self { dek, opened: std::sync::OnceLock::new() }
    }

    /// What `open` derives from the secret this DEK opens, on first use; later calls get
    /// the same. A failure is not kept: the next call opens again.
    pub(crate) fn opened<E>(&self, open: impl FnOnce(&Dek) -> Result<OpenedKey, E>) -> Result<Arc<OpenedKey>, E> {
        if let Some(opened) = self.opened.get() {
            return Ok(Arc::clone(opened));
        }
        let opened = Arc::new(open(&self.dek)?);
        // Two first calls may both open; the first one kept serves every later call.
        Ok(Arc::clone(self.opened.get_or_init(|| opened)))
    }
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
    ) -> Result<(Arc<CachedDek>, bool), E>
    where
        Fut: std::future::Future<Output = Result<Dek, E>>,
    {
        if let Some(dek) = self.get(&key) {
            return Ok((dek, true));
        }
        if self.ttl.is_zero() || self.max_uses == 0 {
            // Caching is off: every call unwraps, concurrently.
            return load().await.map(|dek| (Arc::new(CachedDek::new(dek)), false));
        }
        let gate = self.loading.lock().ok().map(|mut loading| Arc::clone(loading.entry(key).or_default()));
        let Some(gate) = gate else {
            return load().await.map(|dek| (Arc::new(CachedDek::new(dek)), false));
        };
        let turn = gate.lock().await;
        let result = match self.get(&key) {
            // Unwrapped by the call we waited for.
            Some(dek) => Ok((dek, true)),
            None => load().await.map(|dek| {
                let dek = Arc::new(CachedDek::new(dek));
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
    pub(crate) fn get(&self, key: &(CredentialId, u32)) -> Option<Arc<CachedDek>> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get_mut(key)?;
        if entry.loaded.elapsed() >= self.ttl || entry.uses >= self.max_uses {
            entries.remove(key);
            return None;
        }
        entry.uses += 1;
        Some(Arc::clone(&entry.dek))
    }

    pub(crate) fn insert(&self, key: (CredentialId, u32), dek: Arc<CachedDek>) {
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

    #[tokio::test]
    async fn a_cached_dek_opens_its_secret_once() {
        let opens = AtomicU64::new(0);
        let secret = byok_crypto::ProviderSecret::new("sk-opened-once-0123456789abcdef".to_owned()).unwrap();
        let open = |_: &Dek| {
            opens.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(OpenedKey {
                wire: WireKey::new(byok_providers::Injection::Bearer, &secret).unwrap(),
                forms: Arc::new(Forms::new(&[secret.expose().as_bytes()])),
            })
        };
        let cache = DekCache::new(Duration::from_secs(60), 1000, 16);
        let key = (CredentialId::generate(), 1);
        for _ in 0..3 {
            let (dek, _) = cache.get_or_load(key, || async { Ok::<_, ()>(Dek::generate()) }).await.unwrap();
            drop(dek.opened(open).unwrap());
        }
        assert_eq!(opens.load(Ordering::SeqCst), 1, "one opening for the calls a cached DEK serves");
        // Another version of the credential (a rotation) is another DEK: opened anew.
        let (dek, _) = cache.get_or_load((key.0, 2), || async { Ok::<_, ()>(Dek::generate()) }).await.unwrap();
        drop(dek.opened(open).unwrap());
        assert_eq!(opens.load(Ordering::SeqCst), 2);
        // A failed opening is not kept: the next call tries again.
        let (dek, _) = cache.get_or_load((key.0, 3), || async { Ok::<_, ()>(Dek::generate()) }).await.unwrap();
        assert!(dek.opened(|_| Err::<OpenedKey, _>("broken")).is_err());
        drop(dek.opened(open).unwrap());
        assert_eq!(opens.load(Ordering::SeqCst), 3);
        // With the cache off, every call unwraps and opens.
        let off = DekCache::new(Duration::ZERO, 1000, 16);
        for _ in 0..2 {
            let (dek, _) = off.get_or_load(key, || async { Ok::<_, ()>(Dek::generate()) }).await.unwrap();
            drop(dek.opened(open).unwrap());
        }
        assert_eq!(opens.load(Ordering::SeqCst), 5);
    }

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
    fn invalidation_moves_only_the_stamps_it_names() {
        let gens = Generations::default();
        let (a, b) = (OrgId::generate(), OrgId::generate());
        let (t1, t2) = (TokenId::generate(), TokenId::generate());
        let (a_t1, a_t2, b_org) = (gens.stamp(a, Some(t1)), gens.stamp(a, Some(t2)), gens.stamp(b, None));
        gens.invalidate(Scope::Token(t1));
        assert_ne!(gens.stamp(a, Some(t1)), a_t1, "the revoked token is stale");
        assert_eq!(gens.stamp(a, Some(t2)), a_t2, "another token of the org is not");
        gens.invalidate(Scope::Org(a));
        assert_ne!(gens.stamp(a, Some(t2)), a_t2, "an org change makes its tokens stale");
        assert_eq!(gens.stamp(b, None), b_org, "another org is untouched");
        gens.invalidate_all();
        assert_ne!(gens.stamp(b, None), b_org, "invalidating everything reaches every org");
        // A full generation map is dropped, and with it every stamp.
        let b_org = gens.stamp(b, None);
        for _ in 0..MAX_ENTRIES {
            gens.invalidate(Scope::Token(TokenId::generate()));
        }
        assert_ne!(gens.stamp(b, None), b_org);
    }

    #[test]
    fn dek_cache_bounds_time_uses_and_size() {
        let key = (CredentialId::generate(), 1);
        let cache = DekCache::new(Duration::from_secs(60), 3, 2);
        cache.insert(key, Arc::new(CachedDek::new(Dek::generate())));
        assert!(cache.get(&key).is_some());
        assert!(cache.get(&key).is_some());
        assert!(cache.get(&key).is_none(), "a DEK serves at most max_uses calls");
        let expired = DekCache::new(Duration::ZERO, 100, 2);
        expired.insert(key, Arc::new(CachedDek::new(Dek::generate())));
        assert!(expired.get(&key).is_none(), "a DEK is dropped after its time");
        for _ in 0..5 {
            cache.insert((CredentialId::generate(), 1), Arc::new(CachedDek::new(Dek::generate())));
        }
        assert!(cache.len() <= 2);
    }
}
