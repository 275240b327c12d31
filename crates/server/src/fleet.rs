//! Joining the fleet: the nodes that share one database must share its KMSs, and each
//! node's checkpoint key is registered so that every node verifies every checkpoint.
//!
//! Each configured KMS is claimed by name in the database with its identity
//! ([`byok_crypto::Kms::identity`]); the first claim stands. A node whose KMS of the same
//! name is another one (typically its own local keyring, next to another node's) would
//! create KEKs the other nodes cannot open and fail on theirs: it refuses to start and
//! says what to change.

use anyhow::Context;
use byok_domain::KmsName;
use byok_store::Store;
use byok_vault::Vault;

/// Refuse to start when another KMS of the same name serves the database already
/// (before anything else is checked: the refusal names the real problem).
pub(crate) async fn check(vault: &Vault, store: &Store) -> anyhow::Result<()> {
    for name in vault.kms().names() {
        let Some(identity) = vault.kms().identity(&name) else { continue };
        let claimed = store.kms_claim(name.as_str()).await.context("cannot read the fleet's KMSs")?;
        if let Some(standing) = claimed.filter(|standing| *standing != identity) {
            return Err(conflict(store, &name, &identity, &standing));
        }
    }
    Ok(())
}

/// Claim every configured KMS for this node's identity of it (the first claim stands,
/// so a node racing another on a new database learns here that it lost); then register
/// this node's checkpoint key.
pub(crate) async fn join(vault: &Vault, store: &Store) -> anyhow::Result<()> {
    for name in vault.kms().names() {
        let Some(identity) = vault.kms().identity(&name) else { continue };
        let standing = store
            .claim_kms(name.as_str(), &identity)
            .await
            .with_context(|| format!("cannot record which KMS '{name}' is"))?;
        if standing != identity {
            return Err(conflict(store, &name, &identity, &standing));
        }
    }
    vault.register_audit_key().await.context("cannot register this node's audit checkpoint key")?;
    Ok(())
}

fn conflict(store: &Store, name: &KmsName, identity: &str, standing: &str) -> anyhow::Error {
    let section = if name.is_default() { "[kms]".to_owned() } else { format!("[kms.customer.{name}]") };
    anyhow::anyhow!(
        "this node's KMS '{name}' is {identity}, but the database {} is already served with {standing}: the \
         KEKs one of them creates are missing in the other. Every node sharing a database must reach the same \
         KMS ({section}: one PKCS#11 token or AWS KMS that every node reaches; a local keyring is a file on one \
         host and serves a single node). See \"Running several sidecars\" in the README, or give this node its \
         own database.",
        store.location()
    )
}
