//! Phase 6: decrypt. The DEK comes from the bounded cache or is unwrapped inside the
//! KMS; the secret is opened with it once per cached DEK, and what calls need of it — the
//! header that carries it (or the Bedrock key that signs) and the response redactor's
//! forms of it — is kept with the DEK (`cache::CachedDek`); the opened secret is not.

use byok_crypto::envelope::open_with_dek;
use byok_crypto::{SealedSecret, SecretContext};
use byok_domain::error::Report;
use byok_domain::Credential;
use byok_kms::KmsHandle;

use super::inject::{secret_texts, WireKey};
use super::route::Route;
use super::{Code, Refusal};
use std::sync::Arc;

use crate::cache::{DekCache, OpenedKey};
use crate::redact::Forms;

/// Open the credential's current version for a call on `route`.
pub(crate) async fn decrypt(
    deks: &DekCache,
    kms: &KmsHandle,
    credential: &Credential,
    sealed: &SealedSecret,
    route: &Route,
) -> Result<Arc<OpenedKey>, Refusal> {
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
    dek.opened(|dek| {
        let context = SecretContext {
            org: credential.org_id,
            credential: credential.id,
            version: credential.version,
            provider: credential.provider,
        };
        let secret = open_with_dek(dek, &context, sealed).map_err(|e| {
            tracing::error!(credential = %credential.id, error = %Report(&e), "sealed credential failed to open");
            Refusal::new(Code::KmsUnavailable, format!("credential {} could not be opened", credential.id)).caused_by(e)
        })?;
        let wire = WireKey::new(route.spec.injection, &secret)?;
        // A Bedrock secret is masked as a whole and key by key.
        let forms = Arc::new(Forms::new(&secret_texts(route.spec.api, &secret, wire.bedrock())));
        Ok(OpenedKey { wire, forms })
    })
}
