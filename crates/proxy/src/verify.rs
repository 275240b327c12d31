//! Verification (SPEC 3.1): the provider's cheapest authenticated read with a key —
//! `GET /v1/models` (OpenAI, the OpenAI-compatible providers, Anthropic), `GET
//! /openai/models` (Azure), `GET /v1beta/models` (Gemini) — made by the data plane,
//! through the same upstream choice, dial checks and key injection as a call. A stored
//! credential's verification is a credential read: it has its audit row, durable before
//! the key is decrypted, and a completion (unbilled) with the provider's status. The
//! vault records the result (`verified`, and `failing` on 401/403).

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use byok_crypto::{KmsError, ProviderSecret};
use byok_domain::{
    Capability, Credential, CredentialHealth, CredentialId, CredentialOwner, Mode, Org, Outcome, ProviderId,
    ResolutionAudit, Timestamp,
};
use byok_store::StoreError;
use byok_vault::{KeyProbe, ProbeFuture, VaultError, Verification, VerifyReason};
use http_body_util::BodyExt;

use crate::cache::CachedCredential;
use crate::phases::decrypt::decrypt;
use crate::phases::forward::forward;
use crate::phases::inject::{base_for, build_upstream_request, WireKey};
use crate::phases::route::{route, Route};
use std::sync::{Arc, Weak};

use crate::server::{Inner, Sidecar};

/// The path (after `/{provider}`) of each provider's model listing.
fn models_path(provider: ProviderId) -> Option<&'static str> {
    Some(match provider {
        ProviderId::Openai | ProviderId::Mistral | ProviderId::Together | ProviderId::Xai => "/v1/models",
        ProviderId::Anthropic => "/v1/models",
        ProviderId::Gemini => "/v1beta/models",
        ProviderId::AzureOpenai => "/openai/models?api-version=2024-10-21",
        ProviderId::Groq => "/openai/v1/models",
        ProviderId::Openrouter => "/api/v1/models",
        ProviderId::Deepseek => "/models",
        ProviderId::Bedrock => return None,
    })
}

/// The call that verifies a key of `provider` (its model listing), routed as a call.
fn verification_route(provider: ProviderId) -> Result<Route, VaultError> {
    let path = models_path(provider)
        .ok_or_else(|| VaultError::Unprocessable(format!("verification of {provider} keys is not supported yet")))?;
    let uri: Uri = format!("/{provider}{path}")
        .parse()
        .map_err(|e| VaultError::internal_by(format!("verification path of {provider}"), e))?;
    route(&uri).map_err(|r| VaultError::internal(format!("verification route: {}", r.message)))
}

impl Sidecar {
    /// Ask the provider with `key` on its verification `route` ([`verification_route`]):
    /// what it said, or `None` when it did not answer.
    async fn ask(
        &self,
        provider: ProviderId,
        base_url: Option<&str>,
        route: &Route,
        key: &WireKey,
    ) -> Result<Option<Verification>, VaultError> {
        let inner = self.inner();
        let base = base_for(base_url, provider, route.spec.default_upstream, &inner.config)
            .map_err(|r| VaultError::Unprocessable(r.message))?;
        let mut headers = HeaderMap::new();
        if provider == ProviderId::Anthropic {
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        let request = build_upstream_request(Some(base), route, &Method::GET, &headers, bytes::Bytes::new(), key)
            .map_err(|r| VaultError::internal(format!("cannot build the verification request: {}", r.message)))?;
        let timeout = inner.config.response_timeout.min(std::time::Duration::from_secs(30));
        match forward(&inner.client, request, timeout).await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Gemini answers a key it does not know with 400 `API_KEY_INVALID`, not 401:
                // only then is the body read (bounded); otherwise the status says it all.
                if provider == ProviderId::Gemini && status == 400 {
                    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    if memchr::memmem::find(&body, b"API_KEY_INVALID").is_some() {
                        return Ok(Some(Verification {
                            ok: false,
                            status: Some(status),
                            reason: VerifyReason::InvalidKey,
                        }));
                    }
                }
                Ok(Some(Verification::from_status(status)))
            }
            Err(refusal) => {
                tracing::info!(provider = %provider, reason = refusal.detail.as_deref().unwrap_or(""), "verification got no answer");
                Ok(None)
            }
        }
    }

    async fn verify_stored(&self, org: &Org, credential: &Credential) -> Result<Verification, VaultError> {
        let inner = self.inner();
        let cached = CachedCredential::new(credential.clone());
        let sealed = inner.directory.sealed(&cached).await.map_err(VaultError::from)?;
        let mut record = ResolutionAudit::denied(format!("verify-{}", ulid::Ulid::new()));
        record.org_id = Some(org.id);
        record.tier = Some(org.tier);
        record.provider = Some(credential.provider);
        record.capability = Some(Capability::Models);
        record.mode = Some(Mode::Sync);
        record.credential_id = Some(credential.id);
        record.credential_version = Some(credential.version);
        record.fingerprint = Some(credential.fingerprint.clone());
        record.credential_owner =
            Some(if credential.org_id == org.id { CredentialOwner::Org } else { CredentialOwner::Platform });
        record.outcome = Outcome::Allowed;
        record.at = Timestamp::now();
        let started = std::time::Instant::now();
        let row = inner.audit.append(record.clone()).await.map_err(|e| {
            VaultError::StoreUnavailable(StoreError::unavailable_by("the verification was not made", e))
        })?;
        let writer = inner.audit.bound(&row);
        let status = match verification_route(credential.provider) {
            Ok(route) => match decrypt(&inner.deks, &inner.kms, credential, &sealed, &route).await {
                Ok(opened) => self.ask(credential.provider, credential.base_url.as_deref(), &route, &opened.wire).await,
                Err(refusal) => Err(VaultError::KmsUnavailable(KmsError::unavailable(refusal.message))),
            },
            Err(unsupported) => Err(unsupported),
        };
        let answered = status.as_ref().ok().copied().flatten().and_then(|v| v.status);
        writer.complete(byok_domain::CallCompletion {
            call_id: record.call_id.clone(),
            org_id: org.id,
            credential_id: credential.id,
            at: Timestamp::now(),
            upstream_status: answered,
            latency_us: i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
            input_tokens: None,
            output_tokens: None,
            status: if status.is_ok() { "verified".to_owned() } else { "verify_failed".to_owned() },
            metering: None,
        });
        let result = status?.unwrap_or_else(Verification::unreachable);
        // What the provider said counts for this node's health at once.
        match result.status {
            Some(200..=299) => {
                inner.health.observe(
                    &credential.id,
                    credential.version,
                    crate::health::Observed::Served,
                    result.status,
                );
                inner.health.forget_rejection(&credential.id);
            }
            Some(status) if result.reason == VerifyReason::InvalidKey => {
                inner.health.observe(
                    &credential.id,
                    credential.version,
                    crate::health::Observed::Rejected(status),
                    Some(status),
                );
            }
            _ => {}
        }
        Ok(result)
    }
}

/// The data plane as the vault sees it: a weak handle, so that the vault (which the
/// sidecar holds) does not keep the sidecar — and its audit writer — alive for ever;
/// shutdown waits for the last audit writer handle to go.
pub(crate) struct ProbeHandle(Weak<Inner>);

impl ProbeHandle {
    pub(crate) fn new(inner: &Arc<Inner>) -> Self {
        Self(Arc::downgrade(inner))
    }

    fn sidecar(&self) -> Result<Sidecar, VaultError> {
        self.0.upgrade().map(Sidecar::from_inner).ok_or_else(|| VaultError::internal("the data plane has stopped"))
    }
}

impl KeyProbe for ProbeHandle {
    fn probe_credential<'a>(&'a self, org: &'a Org, credential: &'a Credential) -> ProbeFuture<'a> {
        Box::pin(async move { self.sidecar()?.verify_stored(org, credential).await })
    }

    fn probe_secret<'a>(
        &'a self,
        provider: ProviderId,
        base_url: Option<&'a str>,
        secret: &'a ProviderSecret,
    ) -> ProbeFuture<'a> {
        Box::pin(async move {
            let route = verification_route(provider)?;
            let key = WireKey::new(route.spec.injection, secret)
                .map_err(|r| VaultError::internal(format!("cannot build the verification request: {}", r.message)))?;
            let sidecar = self.sidecar()?;
            Ok(sidecar.ask(provider, base_url, &route, &key).await?.unwrap_or_else(Verification::unreachable))
        })
    }

    fn local_health(&self, credential: &CredentialId) -> Option<CredentialHealth> {
        self.0.upgrade().and_then(|inner| inner.health.view(credential))
    }

    fn notices(&self) -> Vec<String> {
        self.sidecar().ok().and_then(|sidecar| sidecar.limits_notice()).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_but_bedrock_has_a_listing() {
        for provider in ProviderId::ALL {
            assert_eq!(models_path(provider).is_none(), provider == ProviderId::Bedrock, "{provider}");
        }
    }
}
