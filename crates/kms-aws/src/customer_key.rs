//! A customer's own key (`key_arn`): every KEK version of every org this KMS serves is
//! that one key; the encryption context (org, version) tells them apart.
//!
//! byok cannot create keys or aliases in the customer's account, so what it must
//! remember per org — which versions are live, whether the org was destroyed — is kept
//! in one tag on the key: `byok:org:<org id>` = `1 2 3` (the live versions, the last one
//! current) or `destroyed`.

use std::collections::BTreeSet;

use byok_crypto::{Dek, KmsError, WrappedDek};
use byok_domain::OrgId;

use crate::client::{Client, KeyDescription, KeyState};
use crate::errors::FailureKind;
use crate::{context, AWS_KMS_ALG};

/// The tag value of a destroyed org.
const DESTROYED: &str = "destroyed";
/// AWS's limit on a tag value.
const MAX_TAG_VALUE: usize = 256;

/// An org's record in the key's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OrgRecord {
    /// The live versions (never empty); the highest is current.
    Live(BTreeSet<u32>),
    /// Crypto-shredded: byok refuses it for good.
    Destroyed,
}

impl OrgRecord {
    fn parse(value: &str) -> Option<Self> {
        if value == DESTROYED {
            return Some(Self::Destroyed);
        }
        let versions: BTreeSet<u32> =
            value.split(' ').map(|part| part.parse().ok().filter(|v| *v > 0)).collect::<Option<_>>()?;
        (!versions.is_empty()).then_some(Self::Live(versions))
    }

    fn render(&self) -> String {
        match self {
            Self::Destroyed => DESTROYED.to_owned(),
            Self::Live(versions) => versions.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
        }
    }
}

/// A customer's key and the per-org records in its tags.
pub(crate) struct CustomerKey {
    pub(crate) client: Client,
    pub(crate) key_arn: String,
}

fn current(versions: &BTreeSet<u32>) -> u32 {
    versions.last().copied().unwrap_or_default()
}

impl CustomerKey {
    fn tag_name(org: &OrgId) -> String {
        format!("byok:org:{org}")
    }

    fn refused(&self, text: impl std::fmt::Display) -> KmsError {
        self.client.failure(FailureKind::Rejected, text).into_kms_error()
    }

    fn record(&self, org: &OrgId) -> Result<Option<OrgRecord>, KmsError> {
        let name = Self::tag_name(org);
        let tags = self.client.list_tags(&self.key_arn)?;
        let Some((_, value)) = tags.iter().find(|(key, _)| *key == name) else { return Ok(None) };
        OrgRecord::parse(value).map(Some).ok_or_else(|| {
            self.refused(format_args!(
                "the tag {name} of key {} holds '{value}', not byok's record (live KEK versions, or 'destroyed')",
                self.key_arn
            ))
        })
    }

    fn save(&self, org: &OrgId, record: &OrgRecord) -> Result<(), KmsError> {
        let value = record.render();
        if value.len() > MAX_TAG_VALUE {
            return Err(self.refused(format_args!(
                "{org} has too many live KEK versions to record on key {}: retire old versions first",
                self.key_arn
            )));
        }
        Ok(self.client.tag(&self.key_arn, &Self::tag_name(org), &value)?)
    }

    /// The org's live versions.
    fn live(&self, org: &OrgId) -> Result<BTreeSet<u32>, KmsError> {
        match self.record(org)? {
            Some(OrgRecord::Live(versions)) => Ok(versions),
            Some(OrgRecord::Destroyed) => Err(KmsError::Destroyed(*org)),
            None => Err(KmsError::UnknownOrg(*org)),
        }
    }

    /// The org's live versions, checked to include `version`.
    fn live_with(&self, org: &OrgId, version: u32) -> Result<BTreeSet<u32>, KmsError> {
        let versions = self.live(org)?;
        if !versions.contains(&version) {
            return Err(KmsError::UnknownVersion { org: *org, version });
        }
        Ok(versions)
    }

    pub(crate) fn create_org_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        match self.record(org)? {
            Some(OrgRecord::Destroyed) => Err(KmsError::Destroyed(*org)),
            Some(OrgRecord::Live(_)) => Err(KmsError::OrgExists(*org)),
            None => {
                self.save(org, &OrgRecord::Live(BTreeSet::from([1])))?;
                Ok(1)
            }
        }
    }

    pub(crate) fn current_kek_version(&self, org: &OrgId) -> Result<u32, KmsError> {
        Ok(current(&self.live(org)?))
    }

    /// A new label in the encryption context; the key stays the same (its material is
    /// the customer's to rotate).
    pub(crate) fn rotate_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        let mut versions = self.live(org)?;
        let next = current(&versions)
            .checked_add(1)
            .ok_or_else(|| self.refused(format_args!("{org} is at the last possible KEK version")))?;
        versions.insert(next);
        self.save(org, &OrgRecord::Live(versions))?;
        Ok(next)
    }

    pub(crate) fn wrap_dek(&self, org: &OrgId, dek: &Dek) -> Result<WrappedDek, KmsError> {
        let version = self.current_kek_version(org)?;
        let bytes = self.client.encrypt(&self.key_arn, dek.expose(), context(org, version))?;
        Ok(WrappedDek { kek_version: version, alg: AWS_KMS_ALG.to_owned(), bytes, kms: Default::default() })
    }

    pub(crate) fn unwrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<Dek, KmsError> {
        let version = wrapped.kek_version;
        self.live_with(org, version)?;
        let plaintext = self.client.decrypt(&self.key_arn, &wrapped.bytes, context(org, version))?;
        Dek::from_bytes(&plaintext).ok_or(KmsError::Integrity)
    }

    pub(crate) fn rewrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<WrappedDek, KmsError> {
        let version = wrapped.kek_version;
        let target = current(&self.live_with(org, version)?);
        let bytes = self.client.re_encrypt(
            &wrapped.bytes,
            &self.key_arn,
            context(org, version),
            &self.key_arn,
            context(org, target),
        )?;
        Ok(WrappedDek { kek_version: target, alg: AWS_KMS_ALG.to_owned(), bytes, kms: Default::default() })
    }

    pub(crate) fn create_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        let versions = match self.record(org)? {
            Some(OrgRecord::Destroyed) => return Err(KmsError::Destroyed(*org)),
            Some(OrgRecord::Live(versions)) => versions,
            None => BTreeSet::new(),
        };
        let here = current(&versions);
        if here == version {
            return Ok(());
        }
        if here > version {
            return Err(self
                .refused(format_args!("{org} already has KEK version {here} here; cannot create version {version}")));
        }
        let mut versions = versions;
        versions.insert(version);
        self.save(org, &OrgRecord::Live(versions))
    }

    pub(crate) fn remove_org(&self, org: &OrgId) -> Result<(), KmsError> {
        match self.record(org)? {
            None => Ok(()),
            Some(OrgRecord::Destroyed) => Err(KmsError::Destroyed(*org)),
            Some(OrgRecord::Live(_)) => Ok(self.client.untag(&self.key_arn, &Self::tag_name(org))?),
        }
    }

    /// byok stops accepting the version; the key itself serves the org's other versions
    /// (and perhaps other orgs), so nothing is deleted.
    pub(crate) fn retire_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        let mut versions = self.live(org)?;
        if version == current(&versions) {
            return Err(self.refused(format_args!("KEK version {version} of {org} is current and cannot be retired")));
        }
        if versions.remove(&version) {
            self.save(org, &OrgRecord::Live(versions))?;
        }
        Ok(())
    }

    /// byok marks the org destroyed and refuses it from then on. The key is the
    /// customer's: deleting it (or revoking byok's access) is theirs to do.
    pub(crate) fn destroy_org_keks(&self, org: &OrgId) -> Result<(), KmsError> {
        match self.record(org)? {
            None => Err(KmsError::UnknownOrg(*org)),
            Some(OrgRecord::Destroyed) => Ok(()),
            Some(OrgRecord::Live(_)) => self.save(org, &OrgRecord::Destroyed),
        }
    }

    /// The key is reachable, enabled and a symmetric encryption key.
    pub(crate) fn check_health(&self) -> Result<(), KmsError> {
        let key = self.kek_key()?;
        if key.state != KeyState::Enabled {
            return Err(self.refused(format_args!(
                "the customer's key {} is {}; only its owner can change that",
                self.key_arn, key.state
            )));
        }
        if key.key_usage != "ENCRYPT_DECRYPT" || key.key_spec != "SYMMETRIC_DEFAULT" {
            return Err(self.refused(format_args!(
                "the customer's key {} is a {} key for {}, not a SYMMETRIC_DEFAULT key for ENCRYPT_DECRYPT",
                self.key_arn, key.key_spec, key.key_usage
            )));
        }
        Ok(())
    }

    /// The customer's key.
    pub(crate) fn kek_key(&self) -> Result<KeyDescription, KmsError> {
        Ok(self.client.describe_key(&self.key_arn)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        for record in
            [OrgRecord::Destroyed, OrgRecord::Live(BTreeSet::from([1])), OrgRecord::Live(BTreeSet::from([4, 5, 9]))]
        {
            assert_eq!(OrgRecord::parse(&record.render()), Some(record));
        }
        assert_eq!(OrgRecord::Live(BTreeSet::from([2, 10])).render(), "2 10");
        for garbage in ["", "0", "1,2", "1  2", "x", "DESTROYED", "-1"] {
            assert_eq!(OrgRecord::parse(garbage), None, "{garbage:?}");
        }
    }
}
