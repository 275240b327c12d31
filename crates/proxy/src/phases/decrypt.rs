//! Phase 6: decrypt. The DEK comes from the bounded cache or is unwrapped inside the
//! KMS; the secret is opened with it for this call only and never cached (the response
//! redactor's forms of it are kept with the cached DEK: `cache::CachedDek`).

use byok_crypto::envelope::open_with_dek;
use byok_crypto::{ProviderSecret, SealedSecret, SecretContext};
use byok_domain::error::Report;
use byok_domain::Credential;
use byok_kms::KmsHandle;

use super::{Code, Refusal};
use std::sync::Arc;

use crate::cache::{CachedDek, DekCache};

/// Open the credential's current version.
pub(crate) async fn decrypt(
    deks: &DekCache,
    kms: &KmsHandle,
    credential: &Credential,
    sealed: &SealedSecret,
) -> Result<(ProviderSecret, Arc<CachedDek>), Refusal> {
    let key = (credential.id, credential.version);
    let (dek, hit) =
        deks.get_or_load(key, || kms.unwrap_dek(credential.org_id, sealed.wrapped_dek.clone())).await.map_err(|e| {
            Refusal::failed(
                Code::KmsUnavailable,
                format_args!("cannot unwrap the key of credential {}", credential.id),
                e,
            )
        })?;
    kms.metrics().dek_cache_lookup(hit);
    let context = SecretContext {
        org: credential.org_id,
        credential: credential.id,
        version: credential.version,
        provider: credential.provider,
    };
    let secret = open_with_dek(&dek.dek, &context, sealed).map_err(|e| {
        tracing::error!(credential = %credential.id, error = %Report(&e), "sealed credential failed to open");
        Refusal::new(Code::KmsUnavailable, format!("credential {} could not be opened", credential.id)).caused_by(e)
    })?;
    Ok((secret, dek))
}
