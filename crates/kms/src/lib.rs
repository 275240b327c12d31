//! byok's KMS runtime: async access to the configured KMSs.
//!
//! The `Kms` trait and the local keyring live in `byok-crypto`, each other backend in a
//! crate of its own (`byok-kms-pkcs11`, `byok-kms-aws`); this crate is what every caller
//! goes through — the vault for wraps, rotations and moves, the data plane for unwraps.
//!
//! A node has the installation's own KMS (`default`) and any number of customer-managed
//! ones (a katman-c org's own PKCS#11 token). Every wrapped key records which KMS holds
//! its KEK, so an unwrap goes to that KMS whatever the org's current one is; wraps go to
//! the KMS the caller names (the org's current one).
//!
//! PKCS#11 calls block and sessions are not `Sync`, so every KMS call runs on the
//! blocking thread pool, and a semaphore *per KMS* bounds how many run at once: a burst
//! cannot exhaust an HSM's sessions or the blocking pool, and a slow or hung customer
//! token holds only its own permits, never the other orgs' KMS.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use byok_crypto::{
    CryptoError, Dek, FingerprintKey, Kms, KmsError, ProviderSecret, SealedSecret, SecretContext, WrappedDek,
};
use byok_domain::{KmsName, OrgId};
use tokio::sync::Semaphore;

use byok_metrics::{KmsMetrics, Metrics};

struct Entry {
    backend: Arc<dyn Kms>,
    /// The orgs (by name or id) this KMS may hold KEKs for; `None`: any org.
    orgs: Option<Vec<String>>,
    permits: Arc<Semaphore>,
    metrics: KmsMetrics,
}

/// The configured KMSs with bounded, off-executor access.
#[derive(Clone)]
pub struct KmsHandle {
    kmss: Arc<BTreeMap<KmsName, Arc<Entry>>>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

/// How long a KMS call may take, waiting for its turn included, before it fails as
/// unavailable (`[kms] timeout_secs`).
pub const DEFAULT_KMS_TIMEOUT: Duration = Duration::from_secs(10);

/// Batches (a rewrap job's 500 keys) get this many times the single-call timeout.
const BATCH_TIMEOUT_FACTOR: u32 = 30;

impl std::fmt::Debug for KmsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.kmss.iter().map(|(name, entry)| (name, entry.backend.backend_name()))).finish()
    }
}

/// One configured KMS, as `GET /v1/kms` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KmsInfo {
    /// `default` or the customer-managed KMS's name.
    pub name: KmsName,
    /// `local`, `pkcs11` or `aws-kms`.
    pub backend: &'static str,
    /// The orgs it is reserved for (names or ids), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_for: Option<Vec<String>>,
    /// Whether it answered a health check just now.
    pub healthy: bool,
    /// Why it is not healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// DEKs unwrapped since the process started.
    pub unwraps: u64,
    /// DEKs wrapped (sealing and rewrapping) since the process started.
    pub wraps: u64,
    /// Operations that failed since the process started.
    pub failures: u64,
}

fn not_configured(name: &KmsName) -> CryptoError {
    CryptoError::Kms(KmsError::unavailable(format!(
        "KMS '{name}' is not configured on this node (add [kms.customer.{name}] to its configuration)"
    )))
}

impl KmsHandle {
    /// The installation's own KMS, allowing at most `max_concurrency` calls at once.
    pub fn new(backend: Arc<dyn Kms>, max_concurrency: usize) -> Self {
        Self { kmss: Arc::new(BTreeMap::new()), metrics: Arc::new(Metrics::default()), timeout: DEFAULT_KMS_TIMEOUT }
            .with_kms(KmsName::default_kms(), backend, max_concurrency)
    }

    /// Add (or replace) the KMS called `name`, with its own concurrency bound.
    pub fn with_kms(self, name: KmsName, backend: Arc<dyn Kms>, max_concurrency: usize) -> Self {
        self.with_reserved_kms(name, backend, max_concurrency, None)
    }

    /// The same, reserved for `orgs` (names or ids) when given: a customer's token holds
    /// that customer's KEKs and nobody else's.
    pub fn with_reserved_kms(
        mut self,
        name: KmsName,
        backend: Arc<dyn Kms>,
        max_concurrency: usize,
        orgs: Option<Vec<String>>,
    ) -> Self {
        let entry = Entry {
            metrics: self.metrics.for_kms(name.as_str()),
            orgs,
            backend,
            permits: Arc::new(Semaphore::new(max_concurrency.max(1))),
        };
        Arc::make_mut(&mut self.kmss).insert(name, Arc::new(entry));
        self
    }

    /// Fail KMS calls that take longer than `timeout` (a hung token must not hang the
    /// calls of its org: they fail closed as `kms_unavailable`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The default KMS's backend name (`local`, `pkcs11`).
    pub fn backend_name(&self) -> &'static str {
        self.kmss.get(&KmsName::default_kms()).map_or("none", |entry| entry.backend.backend_name())
    }

    /// Which KMS `name` is ([`Kms::identity`]), if it is configured and can tell.
    pub fn identity(&self, name: &KmsName) -> Option<String> {
        self.kmss.get(name).and_then(|entry| entry.backend.identity())
    }

    /// The process's metrics (KMS counters, DEK cache counters).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The orgs the KMS `name` is reserved for, if it is.
    pub fn reserved_for(&self, name: &KmsName) -> Option<&[String]> {
        self.kmss.get(name).and_then(|entry| entry.orgs.as_deref())
    }

    /// Whether a KMS of that name is configured.
    pub fn contains(&self, name: &KmsName) -> bool {
        self.kmss.contains_key(name)
    }

    /// The names of the configured KMSs.
    pub fn names(&self) -> Vec<KmsName> {
        self.kmss.keys().cloned().collect()
    }

    fn entry(&self, name: &KmsName) -> Result<Arc<Entry>, CryptoError> {
        self.kmss.get(name).cloned().ok_or_else(|| not_configured(name))
    }

    async fn run<T: Send + 'static>(
        &self,
        name: &KmsName,
        job: impl FnOnce(&dyn Kms, &KmsMetrics) -> Result<T, CryptoError> + Send + 'static,
    ) -> Result<T, CryptoError> {
        self.run_within(name, self.timeout, job).await
    }

    /// Run `job` on the blocking pool once the KMS has a free permit, failing as
    /// unavailable after `timeout`. The permit goes with the job, not with the caller: a
    /// caller that gave up does not free a slot while its job still occupies the token.
    async fn run_within<T: Send + 'static>(
        &self,
        name: &KmsName,
        timeout: Duration,
        job: impl FnOnce(&dyn Kms, &KmsMetrics) -> Result<T, CryptoError> + Send + 'static,
    ) -> Result<T, CryptoError> {
        let entry = self.entry(name)?;
        let worker = Arc::clone(&entry);
        let call = async move {
            let permit = Arc::clone(&worker.permits)
                .acquire_owned()
                .await
                .map_err(|_| CryptoError::Kms(KmsError::unavailable("KMS handle closed")))?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                job(worker.backend.as_ref(), &worker.metrics)
            })
            .await
            .map_err(|e| CryptoError::Kms(KmsError::unavailable_by("KMS worker failed", e)))?
        };
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CryptoError::Kms(KmsError::unavailable(format!(
                "KMS '{name}' did not answer within {} ms",
                timeout.as_millis()
            )))),
        };
        if result.is_err() {
            entry.metrics.failed();
        }
        result
    }

    /// Create an org's first KEK (in the default KMS).
    pub async fn create_org_kek(&self, org: OrgId) -> Result<u32, CryptoError> {
        self.run(&KmsName::default_kms(), move |kms, _| Ok(kms.create_org_kek(&org)?)).await
    }

    /// Destroy all of an org's KEKs in the KMS `name`.
    pub async fn destroy_org_keks(&self, name: &KmsName, org: OrgId) -> Result<(), CryptoError> {
        self.run(name, move |kms, _| Ok(kms.destroy_org_keks(&org)?)).await
    }

    /// Seal a secret for `context` under a fresh DEK wrapped in the KMS `name`.
    pub async fn seal(
        &self,
        name: &KmsName,
        context: SecretContext,
        secret: ProviderSecret,
    ) -> Result<SealedSecret, CryptoError> {
        let label = name.clone();
        self.run(name, move |kms, metrics| {
            let mut sealed = metrics.wrap(|| byok_crypto::seal(kms, &context, &secret))?;
            sealed.wrapped_dek.kms = label;
            Ok(sealed)
        })
        .await
    }

    /// Open a sealed secret (in the KMS its record names).
    pub async fn open(&self, context: SecretContext, sealed: SealedSecret) -> Result<ProviderSecret, CryptoError> {
        let name = sealed.wrapped_dek.kms.clone();
        self.run(&name, move |kms, metrics| metrics.unwrap(|| byok_crypto::open(kms, &context, &sealed))).await
    }

    /// Make a fresh fingerprint key for a new org and wrap it (in the default KMS).
    pub async fn new_fingerprint_key(&self, org: OrgId) -> Result<(FingerprintKey, WrappedDek), CryptoError> {
        self.run(&KmsName::default_kms(), move |kms, metrics| {
            let key = FingerprintKey::generate();
            let wrapped = metrics.wrap(|| Ok(kms.wrap_dek(&org, key.as_dek())?))?;
            Ok((key, wrapped))
        })
        .await
    }

    /// Unwrap an org's fingerprint key.
    pub async fn unwrap_fingerprint_key(&self, org: OrgId, wrapped: WrappedDek) -> Result<FingerprintKey, CryptoError> {
        let dek = self.unwrap_dek(org, wrapped).await?;
        Ok(FingerprintKey::from_dek(dek))
    }

    /// Unwrap a DEK in the KMS its record names (the data plane caches the result).
    pub async fn unwrap_dek(&self, org: OrgId, wrapped: WrappedDek) -> Result<Dek, CryptoError> {
        let name = wrapped.kms.clone();
        self.run(&name, move |kms, metrics| metrics.unwrap(|| Ok(kms.unwrap_dek(&org, &wrapped)?))).await
    }

    /// Make a new KEK version current in the KMS `name`.
    pub async fn rotate_kek(&self, name: &KmsName, org: OrgId) -> Result<u32, CryptoError> {
        self.run(name, move |kms, _| Ok(kms.rotate_kek(&org)?)).await
    }

    /// Create KEK `version` of an org moving into the KMS `name`.
    pub async fn create_kek_version(&self, name: &KmsName, org: OrgId, version: u32) -> Result<(), CryptoError> {
        self.run(name, move |kms, _| Ok(kms.create_kek_version(&org, version)?)).await
    }

    /// Remove the KEKs of an org that moved away from the KMS `name`.
    pub async fn remove_org(&self, name: &KmsName, org: OrgId) -> Result<(), CryptoError> {
        self.run(name, move |kms, _| Ok(kms.remove_org(&org)?)).await
    }

    /// The org's current KEK version in the KMS `name`.
    pub async fn current_kek_version(&self, name: &KmsName, org: OrgId) -> Result<u32, CryptoError> {
        self.run(name, move |kms, _| Ok(kms.current_kek_version(&org)?)).await
    }

    /// Re-wrap DEKs under the current KEK version of the KMS `to`. Keys already in `to`
    /// are rewrapped inside it; keys in another KMS (an org moving between KMSs) are
    /// unwrapped there and wrapped in `to` — the DEK crosses between the two, the
    /// credential secrets are never decrypted. Returns the new wrappings in order.
    pub async fn rewrap_deks(
        &self,
        org: OrgId,
        to: &KmsName,
        wrapped: Vec<WrappedDek>,
    ) -> Result<Vec<WrappedDek>, CryptoError> {
        let mut out: Vec<Option<WrappedDek>> = vec![None; wrapped.len()];
        let mut by_kms: BTreeMap<KmsName, Vec<(usize, WrappedDek)>> = BTreeMap::new();
        for (index, item) in wrapped.into_iter().enumerate() {
            by_kms.entry(item.kms.clone()).or_default().push((index, item));
        }
        let batch_timeout = self.timeout.saturating_mul(BATCH_TIMEOUT_FACTOR);
        for (from, items) in by_kms {
            let (indexes, items): (Vec<usize>, Vec<WrappedDek>) = items.into_iter().unzip();
            let rewrapped = if &from == to {
                self.run_within(to, batch_timeout, move |kms, metrics| {
                    items.iter().map(|item| metrics.wrap(|| Ok(kms.rewrap_dek(&org, item)?))).collect()
                })
                .await?
            } else {
                let deks: Vec<Dek> = self
                    .run_within(&from, batch_timeout, move |kms, metrics| {
                        items.iter().map(|item| metrics.unwrap(|| Ok(kms.unwrap_dek(&org, item)?))).collect()
                    })
                    .await?;
                self.run_within(to, batch_timeout, move |kms, metrics| {
                    deks.iter().map(|dek| metrics.wrap(|| Ok(kms.wrap_dek(&org, dek)?))).collect()
                })
                .await?
            };
            for (index, mut new) in indexes.into_iter().zip::<Vec<WrappedDek>>(rewrapped) {
                new.kms = to.clone();
                if let Some(slot) = out.get_mut(index) {
                    *slot = Some(new);
                }
            }
        }
        out.into_iter()
            .map(|item| item.ok_or_else(|| CryptoError::Kms(KmsError::unavailable("a DEK was not rewrapped"))))
            .collect()
    }

    /// Destroy an old KEK version in the KMS `name`.
    pub async fn retire_kek_version(&self, name: &KmsName, org: OrgId, version: u32) -> Result<(), CryptoError> {
        self.run(name, move |kms, _| Ok(kms.retire_kek_version(&org, version)?)).await
    }

    /// Whether the default KMS is usable (readiness: a customer's KMS being down must
    /// not take the node out of service for every other org).
    pub async fn check_health(&self) -> Result<(), CryptoError> {
        self.check_health_of(&KmsName::default_kms()).await
    }

    /// Whether the KMS `name` is usable.
    pub async fn check_health_of(&self, name: &KmsName) -> Result<(), CryptoError> {
        self.run(name, |kms, _| Ok(kms.check_health()?)).await
    }

    /// Every configured KMS with its health and counters.
    pub async fn describe(&self) -> Vec<KmsInfo> {
        let mut out = Vec::with_capacity(self.kmss.len());
        for (name, entry) in self.kmss.iter() {
            let quick = self.timeout.min(Duration::from_secs(2));
            let health = self.run_within(name, quick, |kms, _| Ok(kms.check_health()?)).await;
            let (unwraps, wraps, failures) = entry.metrics.counts();
            out.push(KmsInfo {
                name: name.clone(),
                backend: entry.backend.backend_name(),
                reserved_for: entry.orgs.clone(),
                healthy: health.is_ok(),
                error: health.err().map(|e| e.to_string()),
                unwraps,
                wraps,
                failures,
            });
        }
        out
    }
}
