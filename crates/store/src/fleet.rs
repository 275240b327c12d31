//! What the nodes sharing one database must agree on: which KMS holds the keys (claimed
//! by name by the first node), and every node's audit checkpoint key.

use byok_domain::Timestamp;
use sqlx::Any;

use crate::error::{map_sqlx, StoreError};
use crate::rows::Row;
use crate::Store;

/// A node's audit checkpoint key, as registered in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// `ed25519:<hex>`.
    pub key_id: String,
    /// The public key, base64.
    pub public_key: String,
    /// When a node first registered it.
    pub registered_at: Timestamp,
}

impl Store {
    /// Record that `node_id` is alive now and count the nodes seen within `window_us`
    /// (this one included): what a node's share of a rate limit is divided by when the
    /// shared limit store is unreachable.
    pub async fn node_heartbeat(&self, node_id: &str, window_us: i64) -> Result<u64, StoreError> {
        let now = Timestamp::now().as_micros();
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>(
            "INSERT INTO fleet_nodes (node_id, last_seen_us) VALUES ($1, $2) \
             ON CONFLICT (node_id) DO UPDATE SET last_seen_us = excluded.last_seen_us",
        )
        .bind(node_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        // Nodes gone for a day are forgotten.
        sqlx::query::<Any>("DELETE FROM fleet_nodes WHERE last_seen_us < $1")
            .bind(now.saturating_sub(86_400_000_000))
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        let live = sqlx::query_scalar::<Any, i64>("SELECT COUNT(*) FROM fleet_nodes WHERE last_seen_us >= $1")
            .bind(now.saturating_sub(window_us))
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(u64::try_from(live).unwrap_or(1).max(1))
    }

    /// Claim `kms_name` for `identity` unless another node claimed it first; the identity
    /// that stands (this one, or the earlier claim).
    pub async fn claim_kms(&self, kms_name: &str, identity: &str) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>(
            "INSERT INTO fleet_kms (kms_name, identity, claimed_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (kms_name) DO NOTHING",
        )
        .bind(kms_name)
        .bind(identity)
        .bind(Timestamp::now().as_micros())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let standing = sqlx::query_scalar::<Any, String>("SELECT identity FROM fleet_kms WHERE kms_name = $1")
            .bind(kms_name)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(standing)
    }

    /// Who claimed `kms_name`, if anyone did.
    pub async fn kms_claim(&self, kms_name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar::<Any, String>("SELECT identity FROM fleet_kms WHERE kms_name = $1")
            .bind(kms_name)
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)
    }

    /// Hand `kms_name` over to `identity` (after every key moved there: `byok kms
    /// migrate`).
    pub async fn reclaim_kms(&self, kms_name: &str, identity: &str) -> Result<(), StoreError> {
        sqlx::query::<Any>(
            "INSERT INTO fleet_kms (kms_name, identity, claimed_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (kms_name) DO UPDATE SET identity = excluded.identity, claimed_at_us = excluded.claimed_at_us",
        )
        .bind(kms_name)
        .bind(identity)
        .bind(Timestamp::now().as_micros())
        .execute(self.writer())
        .await
        .map(|_| ())
        .map_err(map_sqlx)
    }

    /// Register a node's checkpoint key (idempotent).
    pub async fn register_signing_key(&self, key_id: &str, public_key: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>(
            "INSERT INTO audit_signing_keys (key_id, public_key, registered_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key_id)
        .bind(public_key)
        .bind(Timestamp::now().as_micros())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// Every node's checkpoint key, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = sqlx::query::<Any>(
            "SELECT key_id, public_key, registered_at_us FROM audit_signing_keys ORDER BY registered_at_us, key_id",
        )
        .fetch_all(self.reader())
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let r = Row::new(row, "audit_signing_keys");
                Ok(SigningKeyRecord {
                    key_id: r.text("key_id")?,
                    public_key: r.text("public_key")?,
                    registered_at: r.ts("registered_at_us")?,
                })
            })
            .collect()
    }
}
