//! The data plane's view of the store: what resolving, authenticating and metering a
//! call read, and nothing that changes an org's data. The sidecar holds this, not a
//! [`Store`], so "every change goes through the vault" is kept by the types: the data
//! plane can read credentials, tokens, orgs and change events, and write only its
//! node's liveness (for rate-limit shares) — its audit rows go through the audit
//! writer, which holds an [`AuditAppender`], its health reports through the vault.

use byok_crypto::SealedSecret;
use byok_crypto::TokenHash;
use byok_domain::{CredentialId, Org, OrgId, ProviderId, Timestamp, Workflow, WorkloadToken};

use crate::chain::{AuditEntry, Segment};
use crate::credentials::CredentialRecord;
use crate::error::StoreError;
use crate::notify::{ChangeListener, ChangeNote};
use crate::store::{Backend, Store};
use crate::usage::UsageRow;

/// Read-only access for the data plane (cheap to clone).
#[derive(Debug, Clone)]
pub struct ResolutionView {
    store: Store,
}

impl Store {
    /// The data plane's read-only view of this store.
    pub fn resolution_view(&self) -> ResolutionView {
        ResolutionView { store: self.clone() }
    }

    /// The audit writer's view of this store: appending to its chain segment, nothing else.
    pub fn audit_appender(&self) -> AuditAppender {
        AuditAppender { store: self.clone() }
    }
}

/// What the audit writer may do with the store: append a batch of entries to its writer
/// segment (cheap to clone).
#[derive(Debug, Clone)]
pub struct AuditAppender {
    store: Store,
}

impl AuditAppender {
    /// Append `entries` to `segment` in one transaction (see [`Store::append_audit`]).
    pub async fn append_audit(&self, segment: &mut Segment, entries: &[AuditEntry]) -> Result<(), StoreError> {
        self.store.append_audit(segment, entries).await
    }
}

impl ResolutionView {
    /// SQLite or PostgreSQL.
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// A workload token by the hash of its text.
    pub async fn find_workload_token_by_hash(&self, hash: &TokenHash) -> Result<Option<WorkloadToken>, StoreError> {
        self.store.find_workload_token_by_hash(hash).await
    }

    /// A tenant org by id.
    pub async fn get_org(&self, id: &OrgId) -> Result<Option<Org>, StoreError> {
        self.store.get_org(id).await
    }

    /// The platform credential pool's org row, if it exists.
    pub async fn platform_org(&self) -> Result<Option<Org>, StoreError> {
        self.store.platform_org().await
    }

    /// An org's credentials for one provider.
    pub async fn list_credentials_for_provider(
        &self,
        org: &OrgId,
        provider: ProviderId,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        self.store.list_credentials_for_provider(org, provider).await
    }

    /// An org's workflows.
    pub async fn list_workflows(&self, org: &OrgId) -> Result<Vec<Workflow>, StoreError> {
        self.store.list_workflows(org).await
    }

    /// The sealed secret of one version of a credential.
    pub async fn get_sealed_version(
        &self,
        cred: &CredentialId,
        version: u32,
    ) -> Result<Option<SealedSecret>, StoreError> {
        self.store.get_sealed_version(cred, version).await
    }

    /// A credential by id.
    pub async fn get_credential(&self, org: &OrgId, id: &CredentialId) -> Result<Option<CredentialRecord>, StoreError> {
        self.store.get_credential(org, id).await
    }

    /// A credential by name.
    pub async fn find_credential_by_name(
        &self,
        org: &OrgId,
        name: &str,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        self.store.find_credential_by_name(org, name).await
    }

    /// What changed after event `seq` (at most `limit` changes).
    pub async fn changes_after(&self, seq: i64, limit: u32) -> Result<Vec<ChangeNote>, StoreError> {
        self.store.changes_after(seq, limit).await
    }

    /// The last lifecycle event's position.
    pub async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        self.store.latest_event_seq().await
    }

    /// A listener for change notifications (PostgreSQL), if the store has them.
    pub async fn listen_for_changes(&self) -> Result<Option<ChangeListener>, StoreError> {
        self.store.listen_for_changes().await
    }

    /// The org's usage recorded by the other audit writers in `[from, to)`.
    pub async fn usage_of_other_writers(
        &self,
        org: &OrgId,
        from: Timestamp,
        to: Timestamp,
        segment: &str,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.store.usage_of_other_writers(org, from, to, segment).await
    }

    /// Record this node as alive and count the live nodes (see
    /// [`Store::node_heartbeat`]): the one write the data plane makes itself.
    pub async fn node_heartbeat(&self, node_id: &str, window_us: i64) -> Result<u64, StoreError> {
        self.store.node_heartbeat(node_id, window_us).await
    }
}
