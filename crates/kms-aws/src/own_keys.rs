//! byok's own keys: one KMS key per org and KEK version, found by alias.
//!
//! | alias | points at |
//! | --- | --- |
//! | `<prefix>/<org id>` | the org's current KEK version's key |
//! | `<prefix>/<org id>/v<n>` | the key of KEK version n |
//!
//! Each key is created with the description `byok KEK v<n> of <org id>` (from which the
//! current version is read: one `DescribeKey` of the org's alias) and tagged
//! `byok:org` / `byok:kek-version`, so operators can find an org's keys.

use byok_crypto::{Dek, KmsError, WrappedDek};
use byok_domain::OrgId;

use crate::client::{Client, KeyDescription, KeyState};
use crate::errors::{Failure, FailureKind};
use crate::{context, AWS_KMS_ALG};

/// byok's keys in the installation's own AWS account.
pub(crate) struct OwnKeys {
    pub(crate) client: Client,
    pub(crate) prefix: String,
    pub(crate) pending_window_days: u32,
}

/// An org's current KEK.
struct Current {
    version: u32,
    key: KeyDescription,
}

impl OwnKeys {
    fn current_alias(&self, org: &OrgId) -> String {
        format!("{}/{org}", self.prefix)
    }

    fn version_alias(&self, org: &OrgId, version: u32) -> String {
        format!("{}/{org}/v{version}", self.prefix)
    }

    fn description(org: &OrgId, version: u32) -> String {
        format!("byok KEK v{version} of {org}")
    }

    /// The version a key's description names, if it is a KEK of `org`.
    fn version_of(org: &OrgId, key: &KeyDescription) -> Option<u32> {
        let rest = key.description.strip_prefix("byok KEK v")?;
        let (version, owner) = rest.split_once(" of ")?;
        (owner == org.to_string()).then_some(())?;
        version.parse().ok().filter(|version| *version > 0)
    }

    fn refused(&self, text: impl std::fmt::Display) -> KmsError {
        self.client.failure(FailureKind::Rejected, text).into_kms_error()
    }

    /// The key behind the org's alias, whatever its state; `None` if there is no alias.
    fn lookup(&self, org: &OrgId) -> Result<Option<KeyDescription>, KmsError> {
        match self.client.describe_key(&self.current_alias(org)) {
            Ok(key) => Ok(Some(key)),
            Err(failure) if failure.is(FailureKind::NotFound) => Ok(None),
            Err(failure) => Err(failure.into()),
        }
    }

    /// The version of the org's current key (read from its description).
    fn version_behind_alias(&self, org: &OrgId, key: &KeyDescription) -> Result<u32, KmsError> {
        Self::version_of(org, key).ok_or_else(|| {
            self.refused(format_args!(
                "the key {} behind {} has the description '{}', not 'byok KEK v<n> of {org}': byok reads the KEK \
                 version from it; restore it (UpdateKeyDescription)",
                key.arn,
                self.current_alias(org),
                key.description
            ))
        })
    }

    /// The org's current, usable KEK.
    fn current(&self, org: &OrgId) -> Result<Current, KmsError> {
        let key = self.lookup(org)?.ok_or(KmsError::UnknownOrg(*org))?;
        match &key.state {
            KeyState::Enabled => Ok(Current { version: self.version_behind_alias(org, &key)?, key }),
            KeyState::PendingDeletion => Err(KmsError::Destroyed(*org)),
            other => Err(self.refused(format_args!(
                "the current KEK of {org} ({}, key {}) is {other}; enable it (EnableKey) to use it",
                self.current_alias(org),
                key.arn
            ))),
        }
    }

    /// Create the key of KEK version `version` and its version alias. A version alias
    /// that already exists (left by an interrupted call, or made by another node at the
    /// same moment) is taken over if it is that version's key, and the new key discarded.
    fn create_version_key(&self, org: &OrgId, version: u32) -> Result<KeyDescription, KmsError> {
        let tags = [("byok:org", org.to_string()), ("byok:kek-version", version.to_string())];
        let key = self.client.create_key(&Self::description(org, version), &tags)?;
        let alias = self.version_alias(org, version);
        match self.client.create_alias(&alias, &key.key_id) {
            Ok(()) => Ok(key),
            Err(failure) => {
                self.discard(&key);
                if !failure.is(FailureKind::AlreadyExists) {
                    return Err(failure.into());
                }
                let existing = self.client.describe_key(&alias)?;
                if existing.state == KeyState::Enabled && Self::version_of(org, &existing) == Some(version) {
                    Ok(existing)
                } else {
                    Err(self.refused(format_args!(
                        "{alias} already points at key {} ({}, description '{}'), which is not a usable KEK v{version} \
                         of {org}",
                        existing.arn, existing.state, existing.description
                    )))
                }
            }
        }
    }

    /// Schedule the deletion of a key byok made and will not use; a failure only costs
    /// the key's upkeep, so it is logged, not returned.
    fn discard(&self, key: &KeyDescription) {
        if let Err(failure) = self.client.schedule_key_deletion(&key.key_id, self.pending_window_days) {
            tracing::warn!(key = %key.arn, error = %failure.message, "could not schedule the deletion of an unused KMS key");
        }
    }

    /// Retire one version: its key is scheduled for deletion (unusable at once), then its
    /// alias goes. Both steps tolerate having been done before.
    fn delete_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        let alias = self.version_alias(org, version);
        let key = match self.client.describe_key(&alias) {
            Ok(key) => key,
            Err(failure) if failure.is(FailureKind::NotFound) => return Ok(()),
            Err(failure) => return Err(failure.into()),
        };
        self.client.schedule_key_deletion(&key.key_id, self.pending_window_days)?;
        self.client.delete_alias(&alias)?;
        Ok(())
    }

    /// Why unwrapping under `version` failed with `failure`: the org or version is gone,
    /// the org destroyed, or the key refuses.
    fn explain(&self, org: &OrgId, version: u32, failure: Failure) -> KmsError {
        if !failure.is(FailureKind::NotFound) && !failure.is(FailureKind::KeyState) {
            return failure.into();
        }
        match self.lookup(org) {
            Ok(None) => KmsError::UnknownOrg(*org),
            Ok(Some(key)) if key.state == KeyState::PendingDeletion => KmsError::Destroyed(*org),
            Ok(Some(_)) if failure.is(FailureKind::NotFound) => KmsError::UnknownVersion { org: *org, version },
            Ok(Some(_)) => failure.into(),
            Err(err) => err,
        }
    }

    pub(crate) fn create_org_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        if let Some(key) = self.lookup(org)? {
            return Err(match key.state {
                KeyState::PendingDeletion => KmsError::Destroyed(*org),
                _ => KmsError::OrgExists(*org),
            });
        }
        let key = self.create_version_key(org, 1)?;
        match self.client.create_alias(&self.current_alias(org), &key.key_id) {
            Ok(()) => Ok(1),
            Err(failure) if failure.is(FailureKind::AlreadyExists) => Err(KmsError::OrgExists(*org)),
            Err(failure) => Err(failure.into()),
        }
    }

    pub(crate) fn current_kek_version(&self, org: &OrgId) -> Result<u32, KmsError> {
        Ok(self.current(org)?.version)
    }

    pub(crate) fn rotate_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        let current = self.current(org)?;
        let next = current
            .version
            .checked_add(1)
            .ok_or_else(|| self.refused(format_args!("{org} is at the last possible KEK version")))?;
        let key = self.create_version_key(org, next)?;
        self.client.update_alias(&self.current_alias(org), &key.key_id)?;
        Ok(next)
    }

    pub(crate) fn wrap_dek(&self, org: &OrgId, dek: &Dek) -> Result<WrappedDek, KmsError> {
        let current = self.current(org)?;
        // By ARN, not alias: the key whose version was just read is the one that wraps,
        // even if a rotation moves the alias in between.
        let bytes = self.client.encrypt(&current.key.arn, dek.expose(), context(org, current.version))?;
        Ok(WrappedDek { kek_version: current.version, alg: AWS_KMS_ALG.to_owned(), bytes, kms: Default::default() })
    }

    pub(crate) fn unwrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<Dek, KmsError> {
        let version = wrapped.kek_version;
        let alias = self.version_alias(org, version);
        let plaintext = self
            .client
            .decrypt(&alias, &wrapped.bytes, context(org, version))
            .map_err(|failure| self.explain(org, version, failure))?;
        Dek::from_bytes(&plaintext).ok_or(KmsError::Integrity)
    }

    pub(crate) fn rewrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<WrappedDek, KmsError> {
        let version = wrapped.kek_version;
        let current = self.current(org)?;
        let bytes = self
            .client
            .re_encrypt(
                &wrapped.bytes,
                &self.version_alias(org, version),
                context(org, version),
                &current.key.arn,
                context(org, current.version),
            )
            .map_err(|failure| self.explain(org, version, failure))?;
        Ok(WrappedDek { kek_version: current.version, alg: AWS_KMS_ALG.to_owned(), bytes, kms: Default::default() })
    }

    pub(crate) fn create_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        match self.lookup(org)? {
            Some(key) if key.state == KeyState::PendingDeletion => Err(KmsError::Destroyed(*org)),
            Some(key) => {
                let current = self.version_behind_alias(org, &key)?;
                if current == version {
                    return Ok(());
                }
                if current > version {
                    return Err(self.refused(format_args!(
                        "{org} already has KEK version {current} here; cannot create version {version}"
                    )));
                }
                let key = self.create_version_key(org, version)?;
                self.client.update_alias(&self.current_alias(org), &key.key_id)?;
                Ok(())
            }
            None => {
                let key = self.create_version_key(org, version)?;
                match self.client.create_alias(&self.current_alias(org), &key.key_id) {
                    Ok(()) => Ok(()),
                    // Another node moved the org in at the same moment: fine if it made
                    // the same version current.
                    Err(failure) if failure.is(FailureKind::AlreadyExists) => match self.current_kek_version(org)? {
                        current if current == version => Ok(()),
                        current => Err(self.refused(format_args!(
                            "{org} already has KEK version {current} here; cannot create version {version}"
                        ))),
                    },
                    Err(failure) => Err(failure.into()),
                }
            }
        }
    }

    /// Versions 1 to one past the current one: an interrupted rotation can leave the
    /// next version's key behind.
    fn versions_up_to(current: u32) -> std::ops::RangeInclusive<u32> {
        1..=current.saturating_add(1)
    }

    pub(crate) fn remove_org(&self, org: &OrgId) -> Result<(), KmsError> {
        let Some(key) = self.lookup(org)? else { return Ok(()) };
        if key.state == KeyState::PendingDeletion {
            return Err(KmsError::Destroyed(*org));
        }
        let current = self.version_behind_alias(org, &key)?;
        for version in Self::versions_up_to(current).filter(|version| *version != current) {
            self.delete_version(org, version)?;
        }
        // The current key's aliases go before the key is scheduled for deletion: a key
        // pending deletion behind the org's alias reads as a destroyed org.
        self.client.delete_alias(&self.version_alias(org, current))?;
        self.client.delete_alias(&self.current_alias(org))?;
        self.client.schedule_key_deletion(&key.key_id, self.pending_window_days)?;
        Ok(())
    }

    pub(crate) fn retire_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        let current = self.current(org)?;
        if version == current.version {
            return Err(self.refused(format_args!("KEK version {version} of {org} is current and cannot be retired")));
        }
        self.delete_version(org, version)
    }

    /// Crypto-shredding. The current key is scheduled for deletion first: from then on
    /// the org reads as destroyed (its alias stays, pointing at a key pending deletion,
    /// until AWS deletes the key); then every version's key, and its alias.
    pub(crate) fn destroy_org_keks(&self, org: &OrgId) -> Result<(), KmsError> {
        let key = self.lookup(org)?.ok_or(KmsError::UnknownOrg(*org))?;
        self.client.schedule_key_deletion(&key.key_id, self.pending_window_days)?;
        let current = self.version_behind_alias(org, &key)?;
        for version in Self::versions_up_to(current) {
            self.delete_version(org, version)?;
        }
        Ok(())
    }

    /// KMS answers a lookup of an alias that does not exist: the endpoint is reachable,
    /// the credentials are accepted and `DescribeKey` is allowed.
    pub(crate) fn check_health(&self) -> Result<(), KmsError> {
        match self.client.describe_key(&format!("{}/health-check", self.prefix)) {
            Ok(_) => Ok(()),
            Err(failure) if failure.is(FailureKind::NotFound) => Ok(()),
            Err(failure) => Err(failure.into()),
        }
    }

    /// The key of one KEK version.
    pub(crate) fn kek_key(&self, org: &OrgId, version: u32) -> Result<KeyDescription, KmsError> {
        self.client
            .describe_key(&self.version_alias(org, version))
            .map_err(|failure| self.explain(org, version, failure))
    }
}
