//! [`AwsKms`]: the [`Kms`] implementation over AWS KMS.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use aws_sdk_kms::config::Credentials;
use byok_crypto::{Dek, Kms, KmsError, WrappedDek};
use byok_domain::OrgId;

use crate::client::{Client, KeyDescription};
use crate::config::AwsKmsConfig;
use crate::customer_key::CustomerKey;
use crate::own_keys::OwnKeys;
use crate::{OpenError, AWS_KMS_ALG};

/// The largest ciphertext KMS accepts (`CiphertextBlob`, 6144 bytes).
const MAX_CIPHERTEXT: usize = 6144;

/// The `aws-kms` KMS backend: each org's KEK versions are AWS KMS keys (or labels on a
/// customer's key), and DEKs are wrapped and unwrapped by KMS.
///
/// `Send + Sync`: calls may come from any thread, each blocking until KMS answers.
pub struct AwsKms {
    keys: Keys,
    /// Held by every call that changes what keys or versions exist (create, rotate, move
    /// in, retire, remove, destroy), so two threads of this process cannot race through
    /// the read-then-write steps. (Nothing spans processes: run one org's rotation from
    /// one process at a time.)
    changes: Mutex<()>,
    region: String,
    endpoint_url: Option<String>,
}

enum Keys {
    /// byok's own keys, one per org and version.
    Own(OwnKeys),
    /// A customer's key.
    Customer(CustomerKey),
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("AwsKms");
        out.field("region", &self.region).field("endpoint_url", &self.endpoint_url);
        match &self.keys {
            Keys::Own(own) => out.field("alias_prefix", &own.prefix),
            Keys::Customer(customer) => out.field("key_arn", &customer.key_arn),
        };
        out.finish_non_exhaustive()
    }
}

impl AwsKms {
    /// Check the configuration and set up the client; credentials come from the standard
    /// AWS chain. Nothing is sent to AWS yet: [`Kms::check_health`] tells whether KMS
    /// answers and accepts the credentials.
    pub fn open(config: &AwsKmsConfig) -> Result<Self, OpenError> {
        Self::open_with(config, None)
    }

    /// [`AwsKms::open`] with fixed credentials instead of the AWS chain (test support).
    pub(crate) fn open_with(config: &AwsKmsConfig, credentials: Option<Credentials>) -> Result<Self, OpenError> {
        let resolved = config.resolve()?;
        let client = Client::new(&resolved, credentials)?;
        let keys = match &resolved.customer_key {
            Some(key_arn) => Keys::Customer(CustomerKey { client, key_arn: key_arn.clone() }),
            None => Keys::Own(OwnKeys {
                client,
                prefix: resolved.alias_prefix.clone(),
                pending_window_days: resolved.pending_window_days,
            }),
        };
        Ok(Self { keys, changes: Mutex::new(()), region: resolved.region, endpoint_url: resolved.endpoint_url })
    }

    /// The customer's key, if this backend uses one.
    pub fn customer_key_arn(&self) -> Option<&str> {
        match &self.keys {
            Keys::Own(_) => None,
            Keys::Customer(customer) => Some(&customer.key_arn),
        }
    }

    /// The AWS region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The KMS key that holds KEK `version` of `org` (for a customer's key: that key,
    /// whatever the version).
    pub fn kek_key(&self, org: &OrgId, version: u32) -> Result<KeyDescription, KmsError> {
        match &self.keys {
            Keys::Own(own) => own.kek_key(org, version),
            Keys::Customer(customer) => customer.kek_key(),
        }
    }

    fn changing(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data: a panic while holding it left nothing half-changed here.
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Refuse records this backend did not make before sending them to KMS.
fn check_record(wrapped: &WrappedDek) -> Result<(), KmsError> {
    if wrapped.alg != AWS_KMS_ALG {
        return Err(KmsError::UnsupportedAlgorithm(wrapped.alg.clone()));
    }
    if wrapped.bytes.is_empty() || wrapped.bytes.len() > MAX_CIPHERTEXT {
        return Err(KmsError::Integrity);
    }
    Ok(())
}

impl Kms for AwsKms {
    fn backend_name(&self) -> &'static str {
        "aws-kms"
    }

    fn create_org_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        let _changing = self.changing();
        match &self.keys {
            Keys::Own(own) => own.create_org_kek(org),
            Keys::Customer(customer) => customer.create_org_kek(org),
        }
    }

    fn current_kek_version(&self, org: &OrgId) -> Result<u32, KmsError> {
        match &self.keys {
            Keys::Own(own) => own.current_kek_version(org),
            Keys::Customer(customer) => customer.current_kek_version(org),
        }
    }

    fn rotate_kek(&self, org: &OrgId) -> Result<u32, KmsError> {
        let _changing = self.changing();
        match &self.keys {
            Keys::Own(own) => own.rotate_kek(org),
            Keys::Customer(customer) => customer.rotate_kek(org),
        }
    }

    fn wrap_dek(&self, org: &OrgId, dek: &Dek) -> Result<WrappedDek, KmsError> {
        match &self.keys {
            Keys::Own(own) => own.wrap_dek(org, dek),
            Keys::Customer(customer) => customer.wrap_dek(org, dek),
        }
    }

    fn unwrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<Dek, KmsError> {
        check_record(wrapped)?;
        match &self.keys {
            Keys::Own(own) => own.unwrap_dek(org, wrapped),
            Keys::Customer(customer) => customer.unwrap_dek(org, wrapped),
        }
    }

    /// `ReEncrypt`: the DEK is decrypted and encrypted again inside KMS and never reaches
    /// byok.
    fn rewrap_dek(&self, org: &OrgId, wrapped: &WrappedDek) -> Result<WrappedDek, KmsError> {
        check_record(wrapped)?;
        match &self.keys {
            Keys::Own(own) => own.rewrap_dek(org, wrapped),
            Keys::Customer(customer) => customer.rewrap_dek(org, wrapped),
        }
    }

    fn create_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        let _changing = self.changing();
        match &self.keys {
            Keys::Own(own) => own.create_kek_version(org, version),
            Keys::Customer(customer) => customer.create_kek_version(org, version),
        }
    }

    fn remove_org(&self, org: &OrgId) -> Result<(), KmsError> {
        let _changing = self.changing();
        match &self.keys {
            Keys::Own(own) => own.remove_org(org),
            Keys::Customer(customer) => customer.remove_org(org),
        }
    }

    fn retire_kek_version(&self, org: &OrgId, version: u32) -> Result<(), KmsError> {
        let _changing = self.changing();
        match &self.keys {
            Keys::Own(own) => own.retire_kek_version(org, version),
            Keys::Customer(customer) => customer.retire_kek_version(org, version),
        }
    }

    fn destroy_org_keks(&self, org: &OrgId) -> Result<(), KmsError> {
        let _changing = self.changing();
        match &self.keys {
            Keys::Own(own) => own.destroy_org_keks(org),
            Keys::Customer(customer) => customer.destroy_org_keks(org),
        }
    }

    fn check_health(&self) -> Result<(), KmsError> {
        match &self.keys {
            Keys::Own(own) => own.check_health(),
            Keys::Customer(customer) => customer.check_health(),
        }
    }

    /// `aws-kms:<key ARN>` for a customer's key; `aws-kms:<region>:<alias prefix>` for
    /// byok's own keys (the account is not known without asking AWS).
    fn identity(&self) -> Option<String> {
        Some(match &self.keys {
            Keys::Own(own) => format!("aws-kms:{}:{}", self.region, own.prefix),
            Keys::Customer(customer) => format!("aws-kms:{}", customer.key_arn),
        })
    }
}
