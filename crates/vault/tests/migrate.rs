//! Migrating the installation's KMS from one backend to another: a dry run changes
//! nothing, a run stopped half-way is finished by running it again, and afterwards every
//! secret opens with the target alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use byok_crypto::{Dek, Kms, KmsError, LocalKeyring, ProviderSecret, SecretContext, WrappedDek};
use byok_domain::{Actor, LifecycleKind, OrgId, ProviderId, ScopeInput, Tier};
use byok_kms::KmsHandle;
use byok_store::testing::{for_each_backend, TestStore};
use byok_store::EventFilter;
use byok_vault::migrate::Migration;
use byok_vault::{NewCredential, Vault, VaultPolicy};

/// A keyring that stops wrapping after a budget (a token that goes away mid-run).
struct Flaky {
    inner: LocalKeyring,
    wraps_left: AtomicI64,
}

impl Kms for Flaky {
    fn backend_name(&self) -> &'static str {
        "pkcs11"
    }
    fn create_org_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        self.inner.create_org_kek(org)
    }
    fn current_kek_version(&self, org: &OrgId) -> Result<u32, KmsError> {
        self.inner.current_kek_version(org)
    }
    fn rotate_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        self.inner.rotate_kek(org)
    }
    fn wrap_dek(&self, org: &OrgId, dek: &Dek) -> Result<WrappedDek, KmsError> {
        if self.wraps_left.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(KmsError::unavailable("token removed"));
        }
        self.inner.wrap_dek(org, dek)
    }
    fn unwrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<Dek, KmsError> {
        self.inner.unwrap_dek(org, wrapped)
    }
    fn create_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        self.inner.create_kek_version(org, version)
    }
    fn remove_org(&self, org: &OrgId) -> Result<(), KmsError> {
        self.inner.remove_org(org)
    }
    fn retire_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        self.inner.retire_kek_version(org, version)
    }
    fn destroy_org_keks(&self, org: &OrgId) -> Result<(), KmsError> {
        self.inner.destroy_org_keks(org)
    }
    fn check_health(&self) -> Result<(), KmsError> {
        self.inner.check_health()
    }
}

fn secret(i: usize, version: u32) -> String {
    format!("sk-canary-migrate-{i:03}-v{version}-0123456789")
}

#[tokio::test]
async fn a_keyring_migrates_into_another_backend_resumably() {
    for_each_backend("keyring_migration", |t: TestStore| async move {
        let dir = tempfile::tempdir().unwrap();
        let source = Arc::new(LocalKeyring::open(dir.path().join("keyring.json")).unwrap());
        let vault = Vault::new(
            t.store().clone(),
            KmsHandle::new(Arc::clone(&source) as Arc<dyn Kms>, 2),
            byok_domain::ModelFamilyRegistry::seeded(),
            VaultPolicy::default(),
        );
        let org = vault.create_org(&Actor::System, "acme", Tier::KatmanB).await.unwrap();
        let mut creds = Vec::new();
        for i in 0..7 {
            let new = NewCredential {
                name: format!("key-{i}"),
                provider: ProviderId::Openai,
                secret: ProviderSecret::new(secret(i, 1)).unwrap(),
                scope: ScopeInput::default(),
                base_url: None,
                expires_at: None,
                priority: None,
                weight: None,
                rpm: None,
                tpm: None,
                verify: false,
            };
            creds.push(vault.create_credential(&Actor::System, org.id, new).await.unwrap());
        }
        let rotated = ProviderSecret::new(secret(0, 2)).unwrap();
        vault.rotate_credential(&Actor::System, org.id, "key-0", rotated).await.unwrap();
        let shredded = vault.create_org(&Actor::System, "gone", Tier::KatmanA).await.unwrap();
        vault.delete_org(&Actor::System, shredded.id).await.unwrap();
        let store = t.store().clone();
        let versions = 8; // 7 credentials, one of them with two versions
        let wrapped_keys = versions + 1; // and the fingerprint key

        let target = Arc::new(Flaky {
            inner: LocalKeyring::open(dir.path().join("token.json")).unwrap(),
            wraps_left: AtomicI64::new(i64::MAX),
        });
        let migration =
            || Migration::new(store.clone(), Arc::clone(&source) as Arc<dyn Kms>, Arc::clone(&target) as Arc<dyn Kms>);

        // A dry run checks every key and changes nothing.
        let before = store.list_wrapped_deks(&org.id).await.unwrap();
        let plan = migration().run(true).await.unwrap();
        assert!(plan.dry_run);
        assert_eq!(plan.wrapped_keys, wrapped_keys);
        let acme = plan.orgs.iter().find(|o| o.org_id == org.id).unwrap();
        assert_eq!((acme.state.as_str(), acme.to_kek_version), ("would migrate", Some(2)));
        let gone = plan.orgs.iter().find(|o| o.org_id == shredded.id).unwrap();
        assert_eq!(gone.state, "deleted");
        assert_eq!(store.list_wrapped_deks(&org.id).await.unwrap(), before);
        assert_eq!(store.get_org(&org.id).await.unwrap().unwrap().kek_version, 1);
        assert!(matches!(target.current_kek_version(&org.id), Err(KmsError::UnknownOrg(_))));

        // The token goes away after 3 wraps: the run fails and leaves a consistent state.
        target.wraps_left.store(3, Ordering::SeqCst);
        let err = migration().run(false).await.unwrap_err();
        assert!(err.to_string().contains("token removed"), "{err}");
        assert_eq!(store.get_org(&org.id).await.unwrap().unwrap().kek_version, 2);
        assert_eq!(source.current_kek_version(&org.id).unwrap(), 1, "the keyring keeps the org until it is done");

        // Running again finishes the job.
        target.wraps_left.store(i64::MAX, Ordering::SeqCst);
        let report = migration().run(false).await.unwrap();
        let acme = report.orgs.iter().find(|o| o.org_id == org.id).unwrap();
        assert_eq!(acme.state, "migrated");
        assert!(store.list_wrapped_deks(&org.id).await.unwrap().iter().all(|r| r.wrapped_dek.kek_version == 2));
        assert_eq!(store.org_fingerprint_key(&org.id).await.unwrap().unwrap().kek_version, 2);
        assert!(matches!(source.current_kek_version(&org.id), Err(KmsError::UnknownOrg(_))));
        assert_eq!(source.orgs_with_keys().unwrap(), 0);

        // Every secret opens with the target alone.
        for (i, cred) in creds.iter().enumerate() {
            for version in 1..=if i == 0 { 2 } else { 1 } {
                let sealed = store.get_sealed_version(&cred.id, version).await.unwrap().unwrap();
                let context = SecretContext { org: org.id, credential: cred.id, version, provider: ProviderId::Openai };
                let opened = byok_crypto::open(target.as_ref(), &context, &sealed).unwrap();
                assert_eq!(opened.expose(), secret(i, version));
            }
        }
        // One rewrap event per credential version, across both runs.
        let events = store.list_events(&org.id, &EventFilter::default()).await.unwrap();
        let rewrapped = events.iter().filter(|e| e.kind == LifecycleKind::Rewrapped).count();
        assert_eq!(rewrapped as u64, versions);
        assert_eq!(events.iter().filter(|e| e.kind == LifecycleKind::KmsMoved).count(), 1);
        let verify = vault.verify_audit(org.id).await.unwrap();
        assert!(verify.ok, "{verify:?}");

        // A third run has nothing left to do.
        let again = migration().run(false).await.unwrap();
        assert_eq!(again.wrapped_keys, 0);
        assert_eq!(again.orgs.iter().find(|o| o.org_id == org.id).unwrap().state, "already migrated");
    })
    .await
    .unwrap();
}
