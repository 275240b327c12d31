//! The AWS KMS operations byok uses, as blocking calls that return classified failures.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{Credentials, Region, SharedCredentialsProvider};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{EncryptionAlgorithmSpec, KeySpec, KeyUsageType, Tag};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use byok_crypto::KmsError;
use zeroize::Zeroizing;

use crate::bridge::{Bridge, Stalled};
use crate::config::Resolved;
use crate::errors::{classify, failure, Failure, FailureKind};

/// Connecting to KMS may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt (connect, send, answer) may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// One call, retries and backoff included, may take this long: just under the vault's
/// default deadline for a KMS call (10 s), so a call that AWS does not answer frees its
/// blocking thread about when its caller gives up.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(9);
/// The backstop on waiting for a call: the SDK's own timeout should always end it first.
const WAIT_LIMIT: Duration = Duration::from_secs(12);

/// A key as `DescribeKey` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyDescription {
    /// The key id (a UUID, or `mrk-…`).
    pub key_id: String,
    /// The key's ARN.
    pub arn: String,
    /// Whether it can be used.
    pub state: KeyState,
    /// The description it was created with.
    pub description: String,
    /// When AWS deletes it, if it is pending deletion.
    pub deletion_date: Option<SystemTime>,
    /// `ENCRYPT_DECRYPT` for keys that can wrap DEKs.
    pub key_usage: String,
    /// `SYMMETRIC_DEFAULT` for keys that can wrap DEKs.
    pub key_spec: String,
}

/// The state of a KMS key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Disabled: refuses every cryptographic operation until enabled again.
    Disabled,
    /// Scheduled for deletion: refuses every cryptographic operation; deleted for good at
    /// the deletion date unless the deletion is cancelled.
    PendingDeletion,
    /// Any other state (`Creating`, `PendingImport`, `Unavailable`…), as AWS names it.
    Other(String),
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyState::Enabled => f.write_str("enabled"),
            KeyState::Disabled => f.write_str("disabled"),
            KeyState::PendingDeletion => f.write_str("pending deletion"),
            KeyState::Other(state) => write!(f, "in state {state}"),
        }
    }
}

/// An encryption context.
pub(crate) type Context = HashMap<String, String>;

/// An SDK client for one region (and endpoint), driven from blocking threads.
pub(crate) struct Client {
    bridge: Bridge,
    sdk: aws_sdk_kms::Client,
    /// "region eu-central-1" or "region us-east-1, endpoint http://127.0.0.1:5000", for
    /// messages.
    place: String,
}

impl Client {
    /// A client for `config`'s region and endpoint. Credentials come from the standard
    /// AWS chain unless `credentials` are given (tests against a local server).
    pub(crate) fn new(config: &Resolved, credentials: Option<Credentials>) -> Result<Self, KmsError> {
        let place = match &config.endpoint_url {
            Some(endpoint) => format!("region {}, endpoint {endpoint}", config.region),
            None => format!("region {}", config.region),
        };
        let bridge = Bridge::new()
            .map_err(|e| KmsError::unavailable_by(format!("AWS KMS ({place}): cannot start the SDK's runtime"), e))?;
        let http_client =
            aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
        let region = Region::new(config.region.clone());
        let credentials = match credentials {
            Some(credentials) => SharedCredentialsProvider::new(credentials),
            None => {
                // Only the credentials are taken from the shared configuration: the
                // endpoint, retries and timeouts are byok's own, whatever the environment
                // or a profile says.
                let loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(region.clone())
                    .http_client(http_client.clone());
                let shared = bridge.run(WAIT_LIMIT, loader.load()).map_err(|_| {
                    KmsError::unavailable(format!("AWS KMS ({place}): loading the AWS configuration did not finish"))
                })?;
                shared.credentials_provider().ok_or_else(|| {
                    KmsError::refused(format!("AWS KMS ({place}): no AWS credentials provider could be set up"))
                })?
            }
        };
        let mut builder = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(credentials)
            .http_client(http_client)
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        let sdk = aws_sdk_kms::Client::from_conf(builder.build());
        Ok(Self { bridge, sdk, place })
    }

    /// "region eu-central-1[, endpoint …]".
    #[cfg(feature = "testing")]
    pub(crate) fn place(&self) -> &str {
        &self.place
    }

    /// A failure byok decided itself.
    pub(crate) fn failure(&self, kind: FailureKind, text: impl std::fmt::Display) -> Failure {
        failure(kind, &self.place, text)
    }

    /// Run one SDK call to its end (or the wait limit), classifying its failure.
    fn call<T, E, F>(&self, doing: &'static str, request: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: Future<Output = Result<T, SdkError<E>>> + Send + 'static,
    {
        let place = self.place.clone();
        let classified = async move { request.await.map_err(|error| classify(&place, doing, &error)) };
        match self.bridge.run(WAIT_LIMIT, classified) {
            Ok(result) => result,
            Err(Stalled::TimedOut) => Err(self.failure(
                FailureKind::Unavailable,
                format_args!("cannot {doing}: no answer within {} s", WAIT_LIMIT.as_secs()),
            )),
            Err(Stalled::Lost) => {
                Err(self.failure(FailureKind::Unavailable, format_args!("cannot {doing}: the SDK's runtime stopped")))
            }
        }
    }

    /// `DescribeKey` of a key id, key ARN or alias.
    pub(crate) fn describe_key(&self, key: &str) -> Result<KeyDescription, Failure> {
        let request = self.sdk.describe_key().key_id(key).send();
        let output = self.call("describe a key", request)?;
        let metadata = output
            .key_metadata()
            .ok_or_else(|| self.failure(FailureKind::Unavailable, "DescribeKey answered without key metadata"))?;
        Ok(KeyDescription {
            key_id: metadata.key_id().to_owned(),
            arn: metadata.arn().unwrap_or(metadata.key_id()).to_owned(),
            state: match metadata.key_state().map(|state| state.as_str()) {
                Some("Enabled") => KeyState::Enabled,
                Some("Disabled") => KeyState::Disabled,
                Some("PendingDeletion") => KeyState::PendingDeletion,
                Some(other) => KeyState::Other(other.to_owned()),
                None if metadata.enabled() => KeyState::Enabled,
                None => KeyState::Other("unknown".to_owned()),
            },
            description: metadata.description().unwrap_or_default().to_owned(),
            deletion_date: metadata.deletion_date().and_then(|date| SystemTime::try_from(*date).ok()),
            key_usage: metadata.key_usage().map(|usage| usage.as_str().to_owned()).unwrap_or_default(),
            key_spec: metadata.key_spec().map(|spec| spec.as_str().to_owned()).unwrap_or_default(),
        })
    }

    /// `CreateKey`: a symmetric encryption key with `description` and `tags`.
    pub(crate) fn create_key(&self, description: &str, tags: &[(&str, String)]) -> Result<KeyDescription, Failure> {
        let mut request = self
            .sdk
            .create_key()
            .description(description)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .key_spec(KeySpec::SymmetricDefault);
        for (key, value) in tags {
            let tag = Tag::builder()
                .tag_key(*key)
                .tag_value(value)
                .build()
                .map_err(|e| self.failure(FailureKind::Rejected, format_args!("cannot tag a new key: {e}")))?;
            request = request.tags(tag);
        }
        let output = self.call("create a key", request.send())?;
        let metadata = output
            .key_metadata()
            .ok_or_else(|| self.failure(FailureKind::Unavailable, "CreateKey answered without key metadata"))?;
        let key_id = metadata.key_id().to_owned();
        Ok(KeyDescription {
            arn: metadata.arn().unwrap_or(&key_id).to_owned(),
            key_id,
            state: KeyState::Enabled,
            description: description.to_owned(),
            deletion_date: None,
            key_usage: "ENCRYPT_DECRYPT".to_owned(),
            key_spec: "SYMMETRIC_DEFAULT".to_owned(),
        })
    }

    /// `CreateAlias` `alias` → `key_id`.
    pub(crate) fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), Failure> {
        let request = self.sdk.create_alias().alias_name(alias).target_key_id(key_id).send();
        self.call("create an alias", request).map(drop)
    }

    /// `UpdateAlias` `alias` → `key_id`.
    pub(crate) fn update_alias(&self, alias: &str, key_id: &str) -> Result<(), Failure> {
        let request = self.sdk.update_alias().alias_name(alias).target_key_id(key_id).send();
        self.call("point an alias at a new key", request).map(drop)
    }

    /// `DeleteAlias`; an alias that does not exist is fine.
    pub(crate) fn delete_alias(&self, alias: &str) -> Result<(), Failure> {
        let request = self.sdk.delete_alias().alias_name(alias).send();
        match self.call("delete an alias", request) {
            Ok(_) => Ok(()),
            Err(failure) if failure.is(FailureKind::NotFound) => Ok(()),
            Err(failure) => Err(failure),
        }
    }

    /// `ScheduleKeyDeletion`: the key is unusable at once and deleted after `days`. A key
    /// already pending deletion is fine.
    pub(crate) fn schedule_key_deletion(&self, key_id: &str, days: u32) -> Result<(), Failure> {
        let days = i32::try_from(days).unwrap_or(30);
        let request = self.sdk.schedule_key_deletion().key_id(key_id).pending_window_in_days(days).send();
        match self.call("schedule a key's deletion", request) {
            Ok(_) => Ok(()),
            Err(failure) if failure.is(FailureKind::KeyState) => match self.describe_key(key_id) {
                Ok(key) if key.state == KeyState::PendingDeletion => Ok(()),
                _ => Err(failure),
            },
            Err(failure) => Err(failure),
        }
    }

    /// `Encrypt` a DEK under `key` and `context`.
    pub(crate) fn encrypt(&self, key: &str, plaintext: &[u8], context: Context) -> Result<Vec<u8>, Failure> {
        // The SDK keeps the plaintext in its request (and base64 in the JSON body) and
        // frees those buffers without wiping them: out of reach from here.
        let request = self
            .sdk
            .encrypt()
            .key_id(key)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(Some(context))
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .send();
        let output = self.call("wrap a DEK (Encrypt)", request)?;
        output
            .ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| self.failure(FailureKind::Unavailable, "Encrypt answered without a ciphertext"))
    }

    /// `Decrypt` a wrapped DEK that `key` made under `context`.
    pub(crate) fn decrypt(
        &self,
        key: &str,
        ciphertext: &[u8],
        context: Context,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let request = self
            .sdk
            .decrypt()
            .key_id(key)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(context))
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .send();
        let mut output = self.call("unwrap a DEK (Decrypt)", request)?;
        output
            .plaintext
            .take()
            .map(|blob| Zeroizing::new(blob.into_inner()))
            .ok_or_else(|| self.failure(FailureKind::Unavailable, "Decrypt answered without a plaintext"))
    }

    /// `ReEncrypt`: decrypt under (`source`, `source_context`) and encrypt under
    /// (`destination`, `destination_context`) inside KMS; the DEK never leaves it.
    pub(crate) fn re_encrypt(
        &self,
        ciphertext: &[u8],
        source: &str,
        source_context: Context,
        destination: &str,
        destination_context: Context,
    ) -> Result<Vec<u8>, Failure> {
        let request = self
            .sdk
            .re_encrypt()
            .ciphertext_blob(Blob::new(ciphertext))
            .source_key_id(source)
            .set_source_encryption_context(Some(source_context))
            .source_encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .destination_key_id(destination)
            .set_destination_encryption_context(Some(destination_context))
            .destination_encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .send();
        let output = self.call("rewrap a DEK (ReEncrypt)", request)?;
        output
            .ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| self.failure(FailureKind::Unavailable, "ReEncrypt answered without a ciphertext"))
    }

    /// `ListResourceTags`: every tag of `key`.
    pub(crate) fn list_tags(&self, key: &str) -> Result<Vec<(String, String)>, Failure> {
        let mut tags = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let request = self.sdk.list_resource_tags().key_id(key).limit(50).set_marker(marker.take()).send();
            let output = self.call("read a key's tags", request)?;
            tags.extend(output.tags().iter().map(|tag| (tag.tag_key().to_owned(), tag.tag_value().to_owned())));
            match output.next_marker() {
                Some(next) if output.truncated() => marker = Some(next.to_owned()),
                _ => return Ok(tags),
            }
        }
    }

    /// `TagResource`: set one tag of `key`.
    pub(crate) fn tag(&self, key: &str, name: &str, value: &str) -> Result<(), Failure> {
        let tag = Tag::builder()
            .tag_key(name)
            .tag_value(value)
            .build()
            .map_err(|e| self.failure(FailureKind::Rejected, format_args!("cannot build a tag: {e}")))?;
        let request = self.sdk.tag_resource().key_id(key).tags(tag).send();
        self.call("tag a key", request).map(drop)
    }

    /// `UntagResource`: remove one tag of `key`.
    pub(crate) fn untag(&self, key: &str, name: &str) -> Result<(), Failure> {
        let request = self.sdk.untag_resource().key_id(key).tag_keys(name).send();
        self.call("untag a key", request).map(drop)
    }

    /// `EnableKey` (test support: a customer re-enabling a key).
    #[cfg(feature = "testing")]
    pub(crate) fn enable_key(&self, key: &str) -> Result<(), Failure> {
        let request = self.sdk.enable_key().key_id(key).send();
        self.call("enable a key", request).map(drop)
    }

    /// `DisableKey` (test support: a customer disabling a key).
    #[cfg(feature = "testing")]
    pub(crate) fn disable_key(&self, key: &str) -> Result<(), Failure> {
        let request = self.sdk.disable_key().key_id(key).send();
        self.call("disable a key", request).map(drop)
    }
}
