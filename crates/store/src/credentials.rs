//! Credentials and their sealed versions.

use byok_crypto::{SealedSecret, WrappedDek};
use byok_domain::{Credential, CredentialId, CredentialVersion, KmsName, OrgId};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection};

use crate::error::{map_insert, map_sqlx, StoreError};
use crate::events::{insert_event, NewEvent};
use crate::rows::{to_json, Row};
use crate::sql::Sql;
use crate::store::Store;

/// A credential as stored, with its revision for optimistic concurrency.
///
/// `credential.state` is the *stored* state (`active`, `disabled`, `revoked`); callers
/// derive `expired` from `expires_at` (see `Credential::effective_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    /// The credential.
    pub credential: Credential,
    /// Starts at 1 and grows by one on every update or rotation; pass it back to
    /// [`Store::update_credential`] / [`Store::rotate_credential`].
    pub revision: i64,
}

/// Where one wrapped DEK lives (for rewrapping after a KEK rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDekRef {
    /// The credential.
    pub credential_id: CredentialId,
    /// The credential version whose DEK this is.
    pub version: u32,
    /// The DEK, wrapped by a KEK version of the org.
    pub wrapped_dek: WrappedDek,
    /// The fingerprint of that version's secret.
    pub fingerprint: String,
}

fn opt_i64(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The stored form of a credential's durable health: the status that made it failing.
fn failing_status(cred: &Credential) -> Option<i64> {
    cred.health.is_failing().then(|| i64::from(cred.health.last_status.unwrap_or(0)))
}

/// The revision a new credential starts with.
const FIRST_REVISION: i64 = 1;

const CREDENTIAL_COLUMNS: &str = "id, org_id, name, provider, scope, state, version, fingerprint, base_url, \
                                  expires_at, priority, created_at, updated_at, revision, version_at, weight, rpm, tpm, \
                                  failing_status";

fn decode_credential(row: &AnyRow) -> Result<CredentialRecord, StoreError> {
    let r = Row::new(row, "credentials");
    Ok(CredentialRecord {
        credential: Credential {
            id: r.parse("id")?,
            org_id: r.parse("org_id")?,
            name: r.parse_name("name")?,
            provider: r.parse("provider")?,
            scope: r.json("scope")?,
            state: r.parse("state")?,
            version: r.u32("version")?,
            fingerprint: r.text("fingerprint")?,
            base_url: r.opt_text("base_url")?,
            expires_at: r.opt_ts("expires_at")?,
            priority: r.i32("priority")?,
            created_at: r.ts("created_at")?,
            updated_at: r.ts("updated_at")?,
            version_created_at: match r.opt_ts("version_at")? {
                Some(at) => at,
                None => r.ts("updated_at")?,
            },
            owner: byok_domain::CredentialOwner::Org,
            rotate_by: None,
            weight: u16::try_from(r.int("weight")?).map_err(|_| r.corrupt("weight", "out of range"))?,
            rpm: r.opt_int("rpm")?.map(|v| u64::try_from(v).unwrap_or(0)),
            tpm: r.opt_int("tpm")?.map(|v| u64::try_from(v).unwrap_or(0)),
            health: match r.opt_int("failing_status")? {
                Some(status) => byok_domain::CredentialHealth::failing(u16::try_from(status).unwrap_or(0)),
                None => byok_domain::CredentialHealth::default(),
            },
        },
        revision: r.int("revision")?,
    })
}

fn decode_wrapped_dek(r: &Row<'_>) -> Result<WrappedDek, StoreError> {
    Ok(WrappedDek {
        kek_version: r.u32("kek_version")?,
        alg: r.text("dek_alg")?,
        bytes: r.blob("wrapped_dek")?,
        kms: r.parse("kek_kms")?,
    })
}

/// Insert one sealed version row for `cred` (its current `version` and `fingerprint`).
async fn insert_version(
    conn: &mut AnyConnection,
    cred: &Credential,
    sealed: &SealedSecret,
    created_at_us: i64,
) -> Result<(), StoreError> {
    sqlx::query::<Any>(
        "INSERT INTO credential_versions \
         (credential_id, version, org_id, aead, nonce, ciphertext, dek_alg, kek_version, wrapped_dek, fingerprint, created_at, kek_kms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(cred.id.to_string())
    .bind(i64::from(cred.version))
    .bind(cred.org_id.to_string())
    .bind(sealed.aead.as_str())
    .bind(sealed.nonce.as_slice())
    .bind(sealed.ciphertext.as_slice())
    .bind(sealed.wrapped_dek.alg.as_str())
    .bind(i64::from(sealed.wrapped_dek.kek_version))
    .bind(sealed.wrapped_dek.bytes.as_slice())
    .bind(cred.fingerprint.as_str())
    .bind(created_at_us)
    .bind(sealed.wrapped_dek.kms.as_str())
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        map_insert(
            e,
            |_| format!("version {} of credential {} already exists", cred.version, cred.id),
            |_| format!("credential {} does not exist in {}", cred.id, cred.org_id),
        )
    })?;
    Ok(())
}

/// After an update matched no row: tell a missing credential from a moved revision.
async fn stale_or_missing(
    conn: &mut AnyConnection,
    cred: &Credential,
    expected_revision: i64,
) -> Result<StoreError, StoreError> {
    let current = sqlx::query_scalar::<Any, i64>("SELECT revision FROM credentials WHERE org_id = $1 AND id = $2")
        .bind(cred.org_id.to_string())
        .bind(cred.id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    Ok(match current {
        None => StoreError::NotFound { what: format!("credential {} does not exist in {}", cred.id, cred.org_id) },
        Some(current) => StoreError::Stale {
            what: format!(
                "credential {} was changed concurrently (revision {current}, expected {expected_revision}); \
                 read it again and retry",
                cred.id
            ),
        },
    })
}

impl Store {
    /// Create a credential: its row (revision 1), its first sealed version row (version
    /// `cred.version`, fingerprint `cred.fingerprint`, KEK version from the wrapped DEK)
    /// and `event`, in one transaction. [`StoreError::Conflict`] if the org already has a
    /// credential of that name; [`StoreError::NotFound`] if the org does not exist.
    pub async fn insert_credential(
        &self,
        cred: &Credential,
        sealed: &SealedSecret,
        event: &NewEvent,
    ) -> Result<(), StoreError> {
        let scope = to_json(&cred.scope, "credential scope")?;
        let mut tx = self.begin_write().await?;
        sqlx::query::<Any>(
            "INSERT INTO credentials \
             (id, org_id, name, provider, scope, state, version, fingerprint, base_url, expires_at, priority, \
              created_at, updated_at, revision, version_at, weight, rpm, tpm, failing_status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        )
        .bind(cred.id.to_string())
        .bind(cred.org_id.to_string())
        .bind(cred.name.as_str())
        .bind(cred.provider.as_str())
        .bind(scope)
        .bind(cred.state.as_str())
        .bind(i64::from(cred.version))
        .bind(cred.fingerprint.as_str())
        .bind(cred.base_url.as_deref())
        .bind(cred.expires_at.map(|t| t.as_micros()))
        .bind(i64::from(cred.priority))
        .bind(cred.created_at.as_micros())
        .bind(cred.updated_at.as_micros())
        .bind(FIRST_REVISION)
        .bind(cred.version_created_at.as_micros())
        .bind(i64::from(cred.weight))
        .bind(opt_i64(cred.rpm))
        .bind(opt_i64(cred.tpm))
        .bind(failing_status(cred))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            map_insert(
                e,
                |about| {
                    if about.contains("name") {
                        format!("a credential named '{}' already exists in {}", cred.name, cred.org_id)
                    } else {
                        format!("a credential with id {} already exists", cred.id)
                    }
                },
                |_| format!("org {} does not exist", cred.org_id),
            )
        })?;
        insert_version(&mut tx, cred, sealed, cred.created_at.as_micros()).await?;
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// The credential with this id in `org`.
    pub async fn get_credential(&self, org: &OrgId, id: &CredentialId) -> Result<Option<CredentialRecord>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE org_id = $1 AND id = $2"))
            .bind(org.to_string())
            .bind(id.to_string())
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_credential)
            .transpose()
    }

    /// The credential with this (exact) name in `org`.
    pub async fn find_credential_by_name(
        &self,
        org: &OrgId,
        name: &str,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        sqlx::query::<Any>(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE org_id = $1 AND name = $2"))
            .bind(org.to_string())
            .bind(name)
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?
            .as_ref()
            .map(decode_credential)
            .transpose()
    }

    /// The org's credentials, ordered by name (byte order).
    pub async fn list_credentials(&self, org: &OrgId) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows = sqlx::query::<Any>(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE org_id = $1"))
            .bind(org.to_string())
            .fetch_all(self.reader())
            .await
            .map_err(map_sqlx)?;
        let mut records = rows.iter().map(decode_credential).collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.credential.name.as_str().cmp(b.credential.name.as_str()));
        Ok(records)
    }

    /// The org's credentials for one provider (what the data plane resolves among).
    pub async fn list_credentials_for_provider(
        &self,
        org: &OrgId,
        provider: byok_domain::ProviderId,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows = sqlx::query::<Any>(&format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE org_id = $1 AND provider = $2"
        ))
        .bind(org.to_string())
        .bind(provider.as_str())
        .fetch_all(self.reader())
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(decode_credential).collect()
    }

    /// Save the mutable fields of `cred` (scope, state, base URL, expiry, priority,
    /// weight, rpm, tpm, `updated_at`; not its health — see
    /// [`Store::set_credential_failing`]) and record `event`, in one transaction, if the stored revision is
    /// still `expected_revision`; returns the new revision. Id, org, name, provider,
    /// version, fingerprint and `created_at` are not changed.
    ///
    /// [`StoreError::Stale`] if the revision moved (nothing is written);
    /// [`StoreError::NotFound`] if the credential does not exist.
    pub async fn update_credential(
        &self,
        cred: &Credential,
        expected_revision: i64,
        event: &NewEvent,
    ) -> Result<i64, StoreError> {
        let scope = to_json(&cred.scope, "credential scope")?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query::<Any>(
            "UPDATE credentials SET scope = $1, state = $2, base_url = $3, expires_at = $4, priority = $5, \
             updated_at = $6, revision = revision + 1, weight = $10, rpm = $11, tpm = $12 \
             WHERE org_id = $7 AND id = $8 AND revision = $9",
        )
        .bind(scope)
        .bind(cred.state.as_str())
        .bind(cred.base_url.as_deref())
        .bind(cred.expires_at.map(|t| t.as_micros()))
        .bind(i64::from(cred.priority))
        .bind(cred.updated_at.as_micros())
        .bind(cred.org_id.to_string())
        .bind(cred.id.to_string())
        .bind(expected_revision)
        .bind(i64::from(cred.weight))
        .bind(opt_i64(cred.rpm))
        .bind(opt_i64(cred.tpm))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(stale_or_missing(&mut tx, cred, expected_revision).await?);
        }
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(expected_revision + 1)
    }

    /// Mark the credential `failing` after the provider answered `status` to its version
    /// `version` (`Some((status, version))`), or
    /// clear it (`None`), recording `event` (if any) in the same transaction — only if that
    /// changes something (a second node's rejection of an already failing key records
    /// nothing). Revoked credentials are left alone. Returns whether it changed. Health is
    /// not an admin's edit: the revision does not move, so an admin's change read before a
    /// rejection still applies.
    pub async fn set_credential_failing(
        &self,
        org: &OrgId,
        id: &CredentialId,
        status: Option<(u16, u32)>,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // A rejection names the version the provider rejected: once rotated, a late report
        // about the old key changes nothing.
        let (sql, value, version) = match status {
            Some((status, version)) => (
                "UPDATE credentials SET failing_status = $1 \
                 WHERE org_id = $2 AND id = $3 AND failing_status IS NULL AND state <> 'revoked' AND version = $4",
                Some(i64::from(status)),
                i64::from(version),
            ),
            None => (
                "UPDATE credentials SET failing_status = $1 \
                 WHERE org_id = $2 AND id = $3 AND failing_status IS NOT NULL AND state <> 'revoked' AND $4 >= 0",
                None,
                0,
            ),
        };
        let done = sqlx::query::<Any>(sql)
            .bind(value)
            .bind(org.to_string())
            .bind(id.to_string())
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(event) = event {
            insert_event(&mut tx, self.backend(), event).await?;
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(true)
    }

    /// Record `event` about a credential (a verification) and nothing else.
    pub async fn record_credential_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    /// Make a new sealed version current: insert its version row (version
    /// `cred.version`, fingerprint `cred.fingerprint`, created at `cred.updated_at`),
    /// update the credential row (version, fingerprint, `updated_at`,
    /// `version_created_at`) and record `event`,
    /// in one transaction, if the stored revision is still `expected_revision`; returns
    /// the new revision. Older versions are kept.
    ///
    /// [`StoreError::Stale`] if the revision moved; [`StoreError::NotFound`] if the
    /// credential does not exist; [`StoreError::Conflict`] if that version exists.
    pub async fn rotate_credential(
        &self,
        cred: &Credential,
        expected_revision: i64,
        sealed: &SealedSecret,
        event: &NewEvent,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query::<Any>(
            "UPDATE credentials SET version = $1, fingerprint = $2, updated_at = $3, version_at = $7, \
             failing_status = NULL, revision = revision + 1 WHERE org_id = $4 AND id = $5 AND revision = $6",
        )
        .bind(i64::from(cred.version))
        .bind(cred.fingerprint.as_str())
        .bind(cred.updated_at.as_micros())
        .bind(cred.org_id.to_string())
        .bind(cred.id.to_string())
        .bind(expected_revision)
        .bind(cred.version_created_at.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(stale_or_missing(&mut tx, cred, expected_revision).await?);
        }
        insert_version(&mut tx, cred, sealed, cred.updated_at.as_micros()).await?;
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(expected_revision + 1)
    }

    /// The sealed secret of one version of a credential.
    pub async fn get_sealed_version(
        &self,
        cred: &CredentialId,
        version: u32,
    ) -> Result<Option<SealedSecret>, StoreError> {
        let row = sqlx::query::<Any>(
            "SELECT aead, nonce, ciphertext, dek_alg, kek_version, wrapped_dek, kek_kms FROM credential_versions \
             WHERE credential_id = $1 AND version = $2",
        )
        .bind(cred.to_string())
        .bind(i64::from(version))
        .fetch_optional(self.reader())
        .await
        .map_err(map_sqlx)?;
        let Some(row) = row else { return Ok(None) };
        let r = Row::new(&row, "credential_versions");
        Ok(Some(SealedSecret {
            aead: r.text("aead")?,
            nonce: r.blob("nonce")?,
            ciphertext: r.blob("ciphertext")?,
            wrapped_dek: decode_wrapped_dek(&r)?,
        }))
    }

    /// Every version of a credential (without ciphertexts), oldest first.
    pub async fn list_credential_versions(&self, cred: &CredentialId) -> Result<Vec<CredentialVersion>, StoreError> {
        let rows = sqlx::query::<Any>(
            "SELECT version, fingerprint, kek_version, created_at FROM credential_versions \
             WHERE credential_id = $1 ORDER BY version",
        )
        .bind(cred.to_string())
        .fetch_all(self.reader())
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let r = Row::new(row, "credential_versions");
                Ok(CredentialVersion {
                    version: r.u32("version")?,
                    fingerprint: r.text("fingerprint")?,
                    kek_version: r.u32("kek_version")?,
                    created_at: r.ts("created_at")?,
                })
            })
            .collect()
    }

    /// Every wrapped DEK of the org, by credential and version.
    pub async fn list_wrapped_deks(&self, org: &OrgId) -> Result<Vec<WrappedDekRef>, StoreError> {
        self.wrapped_deks(org, u32::MAX, None).await
    }

    /// Up to `limit` wrapped DEKs of the org under a KEK version older than `version`
    /// (what a rewrap job still has to do).
    pub async fn list_wrapped_deks_below(
        &self,
        org: &OrgId,
        version: u32,
        limit: u32,
    ) -> Result<Vec<WrappedDekRef>, StoreError> {
        self.wrapped_deks(org, version, Some(limit)).await
    }

    async fn wrapped_deks(
        &self,
        org: &OrgId,
        below: u32,
        limit: Option<u32>,
    ) -> Result<Vec<WrappedDekRef>, StoreError> {
        let mut sql = Sql::new(
            self.backend(),
            "SELECT credential_id, version, dek_alg, kek_version, wrapped_dek, kek_kms, fingerprint FROM credential_versions \
             WHERE org_id = ",
        );
        sql.push_bind(org.to_string()).push(" AND kek_version < ").push_bind(i64::from(below));
        sql.push(" ORDER BY credential_id, version");
        if let Some(limit) = limit {
            sql.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = sql.query()?.fetch_all(self.reader()).await.map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let r = Row::new(row, "credential_versions");
                Ok(WrappedDekRef {
                    credential_id: r.parse("credential_id")?,
                    version: r.u32("version")?,
                    wrapped_dek: decode_wrapped_dek(&r)?,
                    fingerprint: r.text("fingerprint")?,
                })
            })
            .collect()
    }

    /// Replace the wrapped DEKs of many credential versions and record `events`, in one
    /// transaction (a KEK rotation's rewrap job commits in batches). Every item must
    /// exist, or nothing changes.
    pub async fn rewrap_batch(
        &self,
        org: &OrgId,
        items: &[(CredentialId, u32, WrappedDek)],
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for (cred, version, wrapped_dek) in items {
            let done = sqlx::query::<Any>(
                "UPDATE credential_versions SET dek_alg = $1, kek_version = $2, wrapped_dek = $3, kek_kms = $7 \
                 WHERE org_id = $4 AND credential_id = $5 AND version = $6",
            )
            .bind(wrapped_dek.alg.as_str())
            .bind(i64::from(wrapped_dek.kek_version))
            .bind(wrapped_dek.bytes.as_slice())
            .bind(org.to_string())
            .bind(cred.to_string())
            .bind(i64::from(*version))
            .bind(wrapped_dek.kms.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: format!("version {version} of credential {cred} does not exist in {org}"),
                });
            }
        }
        for event in events {
            insert_event(&mut tx, self.backend(), event).await?;
        }
        tx.commit().await.map_err(map_sqlx)
    }

    /// The KEK versions still in use in `org` (by credential versions or the
    /// fingerprint key), ascending.
    pub async fn kek_versions_in_use(&self, org: &OrgId) -> Result<Vec<u32>, StoreError> {
        let mut versions: Vec<u32> = self.keks_in_use(org).await?.into_iter().map(|(_, version)| version).collect();
        versions.dedup();
        Ok(versions)
    }

    /// The (KMS, KEK version) pairs still in use in `org`, by version.
    pub async fn keks_in_use(&self, org: &OrgId) -> Result<Vec<(KmsName, u32)>, StoreError> {
        let rows = sqlx::query::<Any>(
            "SELECT kek_kms AS kms, kek_version AS version FROM credential_versions WHERE org_id = $1 \
             UNION SELECT fpk_kms AS kms, fpk_kek_version AS version FROM orgs WHERE id = $1",
        )
        .bind(org.to_string())
        .fetch_all(self.reader())
        .await
        .map_err(map_sqlx)?;
        let mut keks = rows
            .iter()
            .map(|row| {
                let r = Row::new(row, "credential_versions");
                Ok((r.parse::<KmsName>("kms")?, r.u32("version")?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        keks.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        keks.dedup();
        Ok(keks)
    }
}
