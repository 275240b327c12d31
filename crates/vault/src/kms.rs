//! Async access to a blocking KMS backend.
//!
//! PKCS#11 calls block and sessions are not `Sync`, so every KMS call runs on the
//! blocking thread pool, and a semaphore bounds how many run at once so a burst cannot
//! exhaust the HSM's sessions or the blocking pool.

use std::sync::Arc;

use byok_crypto::{
    CryptoError, Dek, FingerprintKey, Kms, KmsError, ProviderSecret, SealedSecret, SecretContext, WrappedDek,
};
use byok_domain::OrgId;
use tokio::sync::Semaphore;

/// A shared KMS backend with bounded, off-executor access.
#[derive(Clone)]
pub struct KmsHandle {
    backend: Arc<dyn Kms>,
    permits: Arc<Semaphore>,
}

impl KmsHandle {
    /// Wrap `backend`, allowing at most `max_concurrency` calls at once.
    pub fn new(backend: Arc<dyn Kms>, max_concurrency: usize) -> Self {
        Self { backend, permits: Arc::new(Semaphore::new(max_concurrency.max(1))) }
    }

    /// The backend's name (`local`, `pkcs11`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.backend_name()
    }

    /// The backend itself, for synchronous callers already off the executor.
    pub fn backend(&self) -> &Arc<dyn Kms> {
        &self.backend
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&dyn Kms) -> Result<T, CryptoError> + Send + 'static,
    ) -> Result<T, CryptoError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| CryptoError::Kms(KmsError::Unavailable("KMS handle closed".into())))?;
        let backend = Arc::clone(&self.backend);
        tokio::task::spawn_blocking(move || job(backend.as_ref()))
            .await
            .map_err(|e| CryptoError::Kms(KmsError::Unavailable(format!("KMS worker failed: {e}"))))?
    }

    /// Create an org's first KEK.
    pub async fn create_org_kek(&self, org: OrgId) -> Result<u32, CryptoError> {
        self.run(move |kms| Ok(kms.create_org_kek(&org)?)).await
    }

    /// Destroy all of an org's KEKs.
    pub async fn destroy_org_keks(&self, org: OrgId) -> Result<(), CryptoError> {
        self.run(move |kms| Ok(kms.destroy_org_keks(&org)?)).await
    }

    /// Seal a secret for `context` under a fresh DEK.
    pub async fn seal(&self, context: SecretContext, secret: ProviderSecret) -> Result<SealedSecret, CryptoError> {
        self.run(move |kms| byok_crypto::seal(kms, &context, &secret)).await
    }

    /// Open a sealed secret.
    pub async fn open(&self, context: SecretContext, sealed: SealedSecret) -> Result<ProviderSecret, CryptoError> {
        self.run(move |kms| byok_crypto::open(kms, &context, &sealed)).await
    }

    /// Make a fresh fingerprint key for an org and wrap it.
    pub async fn new_fingerprint_key(&self, org: OrgId) -> Result<(FingerprintKey, WrappedDek), CryptoError> {
        self.run(move |kms| {
            let key = FingerprintKey::generate();
            let wrapped = kms.wrap_dek(&org, key.as_dek())?;
            Ok((key, wrapped))
        })
        .await
    }

    /// Unwrap an org's fingerprint key.
    pub async fn unwrap_fingerprint_key(&self, org: OrgId, wrapped: WrappedDek) -> Result<FingerprintKey, CryptoError> {
        self.run(move |kms| Ok(FingerprintKey::from_dek(kms.unwrap_dek(&org, &wrapped)?))).await
    }

    /// Unwrap a DEK (the data plane caches the result).
    pub async fn unwrap_dek(&self, org: OrgId, wrapped: WrappedDek) -> Result<Dek, CryptoError> {
        self.run(move |kms| Ok(kms.unwrap_dek(&org, &wrapped)?)).await
    }

    /// Make a new KEK version current.
    pub async fn rotate_kek(&self, org: OrgId) -> Result<u32, CryptoError> {
        self.run(move |kms| Ok(kms.rotate_kek(&org)?)).await
    }

    /// The org's current KEK version.
    pub async fn current_kek_version(&self, org: OrgId) -> Result<u32, CryptoError> {
        self.run(move |kms| Ok(kms.current_kek_version(&org)?)).await
    }

    /// Re-wrap DEKs under the current KEK version, in one trip to the blocking pool.
    pub async fn rewrap_deks(&self, org: OrgId, wrapped: Vec<WrappedDek>) -> Result<Vec<WrappedDek>, CryptoError> {
        self.run(move |kms| wrapped.iter().map(|w| kms.rewrap_dek(&org, w).map_err(CryptoError::from)).collect()).await
    }

    /// Destroy an old KEK version.
    pub async fn retire_kek_version(&self, org: OrgId, version: u32) -> Result<(), CryptoError> {
        self.run(move |kms| Ok(kms.retire_kek_version(&org, version)?)).await
    }

    /// Whether the backend is usable.
    pub async fn check_health(&self) -> Result<(), CryptoError> {
        self.run(|kms| Ok(kms.check_health()?)).await
    }
}
