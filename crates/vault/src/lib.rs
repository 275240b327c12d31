//! The vault: byok's control-plane service.
//!
//! Every change to orgs, teams, workflows, credentials and tokens goes through here. The
//! vault validates the whole request first, then does the KMS work (creating a KEK,
//! sealing a secret), then writes the entity and its lifecycle event in one store
//! transaction, so a refused or failed change leaves nothing behind.
//!
//! Invariants:
//! * a provider secret is only ever held as [`byok_crypto::ProviderSecret`] and leaves
//!   this crate sealed;
//! * every mutation records exactly one lifecycle event naming its actor;
//! * org confinement of admin tokens is checked by the caller (the admin API) before
//!   any vault call, using [`byok_domain::AdminToken::may_access`].
#![forbid(unsafe_code)]

mod audit;
mod billing;
mod credentials;
mod error;
mod events;
mod keys;
pub mod migrate;
mod orgs;
mod pools;
mod tokens;
mod validate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use byok_domain::{ModelFamilyRegistry, PriceBook, ProviderId};
use byok_kms::KmsHandle;
use byok_store::{ResolutionView, Store};

pub use byok_providers::HostPattern;

pub use audit::{AuditExport, AuditPage, AuditRow, CheckpointCheck, PurgeReport, RetentionPolicy, MAX_PAGE};
pub use billing::{
    row_cost_input, usage_groups, BudgetInput, BudgetView, ControlsInput, OrgUsageSummary, RateCardView, UsageReport,
    MAX_CREDENTIAL_AGE_DAYS,
};
pub use credentials::{rotate_by, CredentialDetail, CredentialPatch, NewCredential, Owner, StateChange};
pub use error::VaultError;
pub use keys::KekStatus;
pub use pools::{KeyProbe, LimitsInput, LimitsView, ProbeFuture, Verification, VerifyReason};
pub use tokens::{IssuedAdminToken, IssuedWorkloadToken, NewWorkloadToken};

/// Operator policy the vault enforces on admin input.
#[derive(Debug, Clone, Default)]
pub struct VaultPolicy {
    /// Accept `http://` credential base URLs (local model servers, tests). Off by default;
    /// the host rules apply to them all the same.
    pub allow_plain_http_base_url: bool,
    /// Hosts a credential's `base_url` may name beyond the provider's own (the registry's
    /// [`byok_providers::ProviderSpec::credential_hosts`]), per provider:
    /// `[upstreams.<id>] allowed_hosts`. An IP address is accepted only if it is listed
    /// here as such.
    pub allowed_hosts: HashMap<ProviderId, Vec<HostPattern>>,
    /// Audit retention by tier.
    pub retention: RetentionPolicy,
}

impl VaultPolicy {
    /// This policy, also accepting base URLs for `provider` whose host matches `pattern`.
    pub fn allow_host(mut self, provider: ProviderId, pattern: HostPattern) -> Self {
        self.allowed_hosts.entry(provider).or_default().push(pattern);
        self
    }
}

/// A counter bumped after every committed change, so caches of the data plane in the
/// same process can tell, with one atomic load, that something changed. What changed is
/// in the lifecycle event each change commits first (org, kind, subject): on seeing the
/// epoch move, the data plane reads the events since the last one it applied
/// ([`Store::changes_after`]) and drops only what they name, before serving its next
/// call. (Changes made by other nodes arrive as PostgreSQL notifications, with polling
/// the same events as the fallback.)
#[derive(Debug, Default)]
pub struct ChangeEpoch(AtomicU64);

impl ChangeEpoch {
    /// The current epoch.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Mark that something changed.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// The control-plane service. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    store: Store,
    kms: KmsHandle,
    families: Arc<ModelFamilyRegistry>,
    policy: Arc<VaultPolicy>,
    epoch: Arc<ChangeEpoch>,
    jobs: keys::Jobs,
    signer: Option<Arc<byok_audit::AuditSigner>>,
    prices: Arc<PriceBook>,
    probe: pools::ProbeSlot,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("kms", &self.kms.backend_name()).finish_non_exhaustive()
    }
}

impl Vault {
    /// A vault over `store` and `kms`, validating model families against `families`.
    pub fn new(store: Store, kms: KmsHandle, families: ModelFamilyRegistry, policy: VaultPolicy) -> Self {
        Self {
            store,
            kms,
            families: Arc::new(families),
            policy: Arc::new(policy),
            epoch: Arc::default(),
            jobs: keys::Jobs::default(),
            signer: None,
            prices: Arc::new(PriceBook::default()),
            probe: pools::ProbeSlot::default(),
        }
    }

    /// Bill with `prices` (the `[billing]` configuration) instead of the defaults.
    pub fn with_price_book(mut self, prices: PriceBook) -> Self {
        self.prices = Arc::new(prices);
        self
    }

    /// Sign audit checkpoints with `signer`.
    pub fn with_audit_signer(mut self, signer: Arc<byok_audit::AuditSigner>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The data plane's read-only view of the store: every change goes through the
    /// vault, so what the sidecar holds cannot make one.
    pub fn resolution_view(&self) -> ResolutionView {
        self.store.resolution_view()
    }

    /// The KMS handle.
    pub fn kms(&self) -> &KmsHandle {
        &self.kms
    }

    /// The model-family registry in force.
    pub fn families(&self) -> &ModelFamilyRegistry {
        &self.families
    }

    /// The change epoch (bumped after every change this vault commits).
    pub fn epoch(&self) -> &Arc<ChangeEpoch> {
        &self.epoch
    }

    /// Whether the store and the KMS are both usable: the store answers a read and can
    /// write (a store whose disk is full still answers reads, but every call would fail
    /// closed on its audit row). The write check is a small write transaction at most
    /// once a second (see [`Store::check_writable`]); its error says
    /// `store cannot write: …`.
    pub async fn check_ready(&self) -> Result<(), VaultError> {
        self.store.ping().await?;
        self.store.check_writable().await?;
        self.kms.check_health().await?;
        Ok(())
    }
}
