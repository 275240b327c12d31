//! The sidecar: runs the phases for each request and renders refusals in the
//! provider's own error shape.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use axum::http::{HeaderMap, Response};
use axum::Router;
use byok_audit::AuditWriter;
use byok_domain::{
    CallScope, Credential, CredentialId, CredentialOwner, Metering, OrgId, OrgLimits, Outcome, PriceBook,
    ResolutionAudit, TeamId, Tier, Timestamp, TokenId,
};
use byok_kms::KmsHandle;
use byok_metrics::{CallOutcome, Metrics};
use byok_providers::{Api, UsageTap};
use byok_vault::Vault;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::{CallFacts, Ending};
use crate::body::{Meter, MeteredBody, PendingCompletion, Redactor, TokenTally};
use crate::cache::{DekCache, Directory};
use crate::config::{ConfigError, ProxyConfig};
use crate::error::{Code, Fault, Refusal};
use crate::health::{HealthBook, Observed};
use crate::limits::{Exceeded, Limit, LimitKey, Limiter};
use crate::phases::admit::{check_budget, check_source, source_address};
use crate::phases::authenticate::authenticate;
use crate::phases::authenticate::Caller;
use crate::phases::classify::classify;
use crate::phases::decrypt::decrypt;
use crate::phases::forward::{forward, upstream_client, UpstreamClient};
use crate::phases::inject::{build_upstream_request, connection_listed, is_hop_by_hop, upstream_base};
use crate::phases::resolve::{pinned_elsewhere, resolve_credential, Resolved, Selector, CREDENTIAL_HEADER};
use crate::phases::route::{route, Route};
use crate::pools::PoolBook;
use crate::spend::SpendBook;

/// Header carrying the call id (read from the request, or generated; always answered).
pub(crate) const CALL_ID_HEADER: &str = "x-byok-call-id";
/// Header saying how many attempts a call took (1 without failover).
const ATTEMPTS_HEADER: &str = "x-byok-attempts";

/// The data plane. Cheap to clone.
#[derive(Clone)]
pub struct Sidecar {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) vault: Vault,
    /// The KMS runtime (unwraps) and the process's metrics: the data plane's own handles
    /// on them, not reached through the vault.
    pub(crate) kms: KmsHandle,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) deks: DekCache,
    pub(crate) audit: AuditWriter,
    pub(crate) client: UpstreamClient,
    pub(crate) config: ProxyConfig,
    book: Arc<SpendBook>,
    codes: PriceCodes,
    pub(crate) health: HealthBook,
    pools: PoolBook,
    limiter: Arc<Limiter>,
    live_nodes: Arc<AtomicU64>,
}

/// The price book's rate card and provider price codes, formatted once (every completion
/// records the codes in force).
struct PriceCodes {
    cards: HashMap<Tier, String>,
    provider_prices: HashMap<String, String>,
}

impl PriceCodes {
    fn new(book: &PriceBook) -> Self {
        let tiers = [Tier::KatmanA, Tier::KatmanB, Tier::KatmanC];
        Self {
            cards: tiers.into_iter().map(|tier| (tier, book.card_for(tier, None).code())).collect(),
            provider_prices: book
                .provider_prices
                .keys()
                .filter_map(|family| Some((family.clone(), book.provider_price(Some(family))?.code())))
                .collect(),
        }
    }

    /// The code of the card an org of `tier` with `negotiated` card is billed with.
    fn card(&self, book: &PriceBook, tier: Tier, negotiated: Option<&byok_domain::PricedCard>) -> String {
        match (tier, negotiated) {
            (Tier::KatmanC, Some(card)) => card.code(),
            _ => self.cards.get(&tier).cloned().unwrap_or_else(|| book.card_for(tier, None).code()),
        }
    }
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar").finish_non_exhaustive()
    }
}

/// Where a refusal happened: before the resolution row (the call is recorded as
/// denied) or after it (the allowed row stands; the completion records the failure).
enum Failure {
    Denied(Refusal),
    AfterAudit(Refusal, Option<Box<Meter>>),
}

impl Sidecar {
    /// A sidecar over `vault`, writing audit rows through `audit`.
    pub fn new(vault: Vault, audit: AuditWriter, config: ProxyConfig) -> Result<Self, ConfigError> {
        config.connections.check()?;
        let client = upstream_client(&config)?;
        let deks = DekCache::new(config.dek_cache_ttl, config.dek_cache_max_uses, config.dek_cache_capacity);
        let directory = Arc::new(Directory::new(vault.clone()));
        let book = Arc::new(SpendBook::new(vault.resolution_view(), audit.segment_id(), config.spend_refresh));
        let codes = PriceCodes::new(vault.price_book());
        let live_nodes = Arc::new(AtomicU64::new(1));
        let limiter = Limiter::new(config.limits.clone(), Arc::clone(&live_nodes)).map_err(ConfigError::Limits)?;
        let sidecar = Self {
            inner: Arc::new(Inner {
                kms: vault.kms().clone(),
                metrics: Arc::clone(vault.kms().metrics()),
                vault,
                directory,
                deks,
                audit,
                client,
                config,
                book,
                codes,
                health: HealthBook::default(),
                pools: PoolBook::default(),
                limiter,
                live_nodes,
            }),
        };
        sidecar.inner.vault.set_key_probe(Arc::new(crate::verify::ProbeHandle::new(&sidecar.inner)));
        Ok(sidecar)
    }

    /// Keep this node's entry in the fleet's node list fresh (every 5 s) until `stop`
    /// is set, and with it the count of live nodes a rate limit is shared by when the
    /// shared limit store is unreachable.
    pub fn spawn_fleet_heartbeat(&self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut stop = stop;
            let node = inner.audit.segment_id().to_owned();
            loop {
                match inner.directory.store().node_heartbeat(&node, NODE_LIVE_WINDOW_US).await {
                    Ok(live) => inner.live_nodes.store(live, Ordering::Relaxed),
                    Err(err) => tracing::debug!(error = %byok_domain::error::Report(&err), "fleet heartbeat failed"),
                }
                let fallback = match inner.limiter.backend() {
                    crate::limits::Backend::RedisUnreachable { live_nodes } => Some(live_nodes),
                    _ => None,
                };
                inner.metrics.limits_fallback(fallback.is_some(), fallback.unwrap_or(0));
                tokio::select! {
                    _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
            }
        })
    }

    /// What enforces rate limits now, for `/readyz` and metrics: `None` when all is as
    /// configured, else a sentence for the operator.
    pub fn limits_notice(&self) -> Option<String> {
        match self.inner.limiter.backend() {
            crate::limits::Backend::RedisUnreachable { live_nodes } => Some(format!(
                "limits: the shared limit store (Redis) is unreachable; this node enforces its share of each limit \
                 (1/{live_nodes})"
            )),
            _ => None,
        }
    }
}

impl Sidecar {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

/// How often a node says it is alive.
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// A node not heard from for this long is not counted as live.
const NODE_LIVE_WINDOW_US: i64 = 15_000_000;

impl Sidecar {
    /// Poll the store for changes made through other nodes until `stop` is set.
    pub fn spawn_change_watcher(&self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let directory = Arc::clone(&self.inner.directory);
        tokio::spawn(directory.watch_remote_changes(self.inner.config.change_poll_interval, stop))
    }

    /// The router serving every path.
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }
}

/// Serve the data plane on `listener` until `shutdown` completes; in-flight calls,
/// streams included, are drained. Connections and request heads are bounded by the
/// config's [`ConnectionLimits`](crate::ConnectionLimits); a refused head is answered in
/// the error shape of the provider its path names.
pub async fn serve(
    listener: TcpListener,
    sidecar: Sidecar,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_tls(listener, sidecar, None, shutdown).await
}

/// [`serve`], over TLS only when `tls` is given (see [`ListenerTls`](crate::ListenerTls)):
/// a connection that does not complete a TLS handshake within the head's time bound is
/// closed without an answer.
pub async fn serve_with_tls(
    listener: TcpListener,
    sidecar: Sidecar,
    tls: Option<crate::ListenerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = sidecar.inner.config.connections;
    let front = crate::listen::Front {
        shape: crate::listen::provider_shape,
        calls: Some(Arc::clone(&sidecar.inner.metrics)),
        tls,
    };
    crate::listen::serve_with(listener, sidecar.router(), limits, front, shutdown).await
}

/// The call id: the caller's `x-byok-call-id` when it is short, plain text (letters,
/// digits, `-_.:`), else a fresh ULID. A caller's id is kept as given even when other
/// calls used it (an SDK's retry, another team's call): each completion is bound to its
/// own resolution row, so a shared id never pairs one call's row with another's outcome.
pub(crate) fn call_id(headers: &HeaderMap) -> String {
    headers
        .get(CALL_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= byok_domain::audit::CALL_ID_MAX_LEN
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_owned)
}

async fn handle(State(sidecar): State<Sidecar>, request: Request) -> Response<Body> {
    let started = Instant::now();
    let call_id = call_id(request.headers());
    let inner = sidecar.inner.as_ref();
    let mut call = CallEnd {
        inner,
        call_id: &call_id,
        record: ResolutionAudit::denied(call_id.clone()),
        started,
        progress: Progress::default(),
        refused: None,
    };
    let mut api = crate::listen::provider_shape(request.uri());
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let result = inner.process(request, peer, &mut call.record, &mut call.progress, &mut api, started).await;
    let mut response = match result {
        // The answer's meter says how the call ended, when its body ends.
        Ok(response) => response,
        Err(Failure::Denied(refusal)) => {
            if refusal.code == Code::RateLimited {
                inner.metrics.rate_limited();
            }
            call.record.outcome = Outcome::Denied;
            call.record.reason = Some(refusal.code.as_str().to_owned());
            call.record.detail = Some(refusal.message.clone());
            let row = call.refuse(refusal.code);
            if refusal.code != Code::AuditUnavailable {
                if let Err(err) = inner.audit.append(row).await {
                    tracing::error!(call_id = %call_id, error = %byok_domain::error::Report(&err), "could not audit a denied call");
                }
            }
            tracing::debug!(
                call_id = %call_id,
                code = refusal.code.as_str(),
                fault = ?refusal.fault(),
                retryable = refusal.retryable(),
                "call refused"
            );
            call.end(CallOutcome::Denied, refusal.code.as_str());
            refusal_response(api, &refusal)
        }
        Err(Failure::AfterAudit(refusal, meter)) => {
            tracing::warn!(
                call_id = %call_id,
                code = refusal.code.as_str(),
                message = %refusal.message,
                detail = refusal.detail.as_deref().unwrap_or(""),
                fault = ?refusal.fault(),
                retryable = refusal.retryable(),
                "call failed after resolution"
            );
            match meter {
                Some(meter) => meter.record(refusal.code.as_str(), None),
                None => {
                    call.progress.metered = false;
                    call.end(CallOutcome::Failed, refusal.code.as_str());
                }
            }
            refusal_response(api, &refusal)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&call_id) {
        response.headers_mut().insert(HeaderName::from_static(CALL_ID_HEADER), value);
    }
    response
}

/// How far a call got, as the phases tell it (for saying how it ended).
#[derive(Debug, Default)]
struct Progress {
    /// Time spent on the upstream by attempts superseded by a failover.
    upstream: Duration,
    /// An attempt's meter holds the call — it says how the call ended (when the answer's
    /// body ends, or the attempt fails or is dropped) — or the end was said already.
    metered: bool,
}

/// Says how a call ended — its access line and metrics ([`crate::access`]) — when no
/// attempt's meter holds it: for a refusal, or, on drop, when the client went away before
/// the call ended. Said at most once.
struct CallEnd<'a> {
    inner: &'a Inner,
    call_id: &'a str,
    /// The call's resolution row as the phases fill it (until a refusal sends it to the
    /// audit).
    record: ResolutionAudit,
    started: Instant,
    progress: Progress,
    /// The refusal's code, and what the line says of the call, once its row is taken.
    refused: Option<(Code, CallFacts, Option<String>)>,
}

impl CallEnd<'_> {
    /// The call is refused with `code`: its row, to be audited (what the access line
    /// needs of it is kept).
    fn refuse(&mut self, code: Code) -> ResolutionAudit {
        self.refused = Some((code, CallFacts::of(&self.record), self.record.model_family.clone()));
        std::mem::replace(&mut self.record, ResolutionAudit::denied(String::new()))
    }

    /// Say that the call ended with `outcome` and `code`, unless a meter holds it or it
    /// was said already.
    fn end(&mut self, outcome: CallOutcome, code: &'static str) {
        if std::mem::replace(&mut self.progress.metered, true) {
            return;
        }
        let (facts, family) = match &self.refused {
            Some((_, facts, family)) => (*facts, family.as_deref()),
            None => (CallFacts::of(&self.record), self.record.model_family.as_deref()),
        };
        let ending = Ending {
            outcome,
            code,
            upstream_status: None,
            input_tokens: None,
            output_tokens: None,
            total: self.started.elapsed(),
            upstream: self.progress.upstream,
        };
        crate::access::call_ended(&self.inner.metrics, self.call_id, &facts, family, &ending);
    }
}

impl Drop for CallEnd<'_> {
    fn drop(&mut self) {
        // Dropped before its end was said: the client went away (the handler's future
        // was dropped) while no attempt's meter held the call.
        match self.refused {
            Some((code, ..)) => self.end(CallOutcome::Denied, code.as_str()),
            None => self.end(CallOutcome::Cancelled, "client_cancelled"),
        }
    }
}

/// A refusal in `api`'s own error shape (status, body, `Retry-After`, and for AWS APIs
/// `x-amzn-errortype`).
pub(crate) fn refusal_response(api: Api, refusal: &Refusal) -> Response<Body> {
    let status = refusal.code.status();
    let rendered = byok_providers::error_body(api, status.as_u16(), refusal.code.as_str(), &refusal.message);
    let mut response = Response::new(Body::from(rendered.body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(rendered.content_type));
    if let Some(name) = rendered.aws_error_type {
        response.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static(name));
    }
    if let Some(secs) = refusal.retry_after {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

impl Inner {
    async fn process(
        &self,
        request: Request,
        peer: Option<SocketAddr>,
        record: &mut ResolutionAudit,
        progress: &mut Progress,
        api: &mut Api,
        started: Instant,
    ) -> Result<Response<Body>, Failure> {
        let (parts, body) = request.into_parts();

        // 1. route
        let route = route(&parts.uri).map_err(Failure::Denied)?;
        *api = route.spec.api;
        record.provider = Some(route.spec.id);

        // 2. authenticate
        let caller = authenticate(&self.directory, &parts.headers, route.spec).await.map_err(Failure::Denied)?;
        record.org_id = Some(caller.token.org_id);
        record.team_id = Some(caller.token.team_id);
        record.token_id = Some(caller.token.id);
        let org = &caller.org.org;
        record.tier = Some(org.tier);

        let body = read_body(body, &parts.headers, self.config.max_request_body).await.map_err(Failure::Denied)?;

        // 3. classify
        let call = classify(&route, &caller, &parts.headers, &body, self.vault.families());
        let call = call.map_err(Failure::Denied)?;
        record.model = call.model.clone();
        record.model_family = call.model_family.clone();
        record.capability = Some(call.capability);
        record.mode = Some(call.mode);
        record.workflow_id = call.workflow;

        // 3b. admit: the org's source allow-list and budgets.
        let source = source_address(peer, &parts.headers, &self.config.trusted_proxies).map_err(Failure::Denied)?;
        check_source(org, source).map_err(Failure::Denied)?;
        let prices = self.vault.price_book();
        check_budget(&self.book, org, caller.token.team_id, prices.currency.as_str()).await.map_err(Failure::Denied)?;

        // 3c. admit: the org's, team's and token's rate limits (known from the snapshot;
        // nothing is asked of the store).
        let limited = limit_subjects(&org.limits, org.id, caller.token.team_id, caller.token.id);
        if !limited.is_empty() {
            self.limiter.admit(&limited).await.map_err(|exceeded| Failure::Denied(rate_limited(&exceeded)))?;
        }

        // 4. resolve, and on a throttled, rejected or failed upstream answer, resolve again
        // among the candidates not tried yet (failover; never for a pin).
        let store_down = |e: byok_store::StoreError| {
            Failure::Denied(Refusal::failed(Code::StoreUnavailable, "cannot look up credentials", e))
        };
        let pin = parts.headers.get(CREDENTIAL_HEADER).and_then(|v| v.to_str().ok()).map(str::trim);
        let platform = if org.tier == Tier::KatmanA || pin.is_some() {
            self.directory.platform(route.spec.id).await.map_err(store_down)?
        } else {
            None
        };
        let elsewhere = match pin {
            Some(reference) => pinned_elsewhere(&self.directory, &caller.org, platform.as_deref(), reference)
                .await
                .map_err(store_down)?,
            None => None,
        };
        let attempts_allowed = if pin.is_some() { 1 } else { 1 + self.config.failover_attempts };
        let mut tried: Vec<CredentialId> = Vec::new();
        let mut carried: Option<Carried> = None;
        let mut attempt: u32 = 0;
        loop {
            let selector = Selector { health: &self.health, pools: &self.pools, tried: &tried };
            let now = Timestamp::now();
            let resolved =
                resolve_credential(&caller.org, platform.as_deref(), &call, pin, elsewhere.clone(), now, &selector)
                    .map_err(|refused| (refused.refusal, refused.credential));
            let chosen = match resolved {
                Ok(candidates) => self.paced(candidates).await,
                Err(refused) => Err(refused),
            };
            let chosen = match chosen {
                Ok(chosen) => chosen,
                // Nothing else to try: the last answer goes to the client as it is.
                Err(_) if carried.is_some() => {
                    return match carried.take() {
                        Some(carried) => self.deliver_carried(carried, &parts.method, route.spec.api, attempt),
                        None => Err(Failure::Denied(Refusal::new(Code::Internal, "no answer to deliver"))),
                    };
                }
                Err((refusal, credential)) => {
                    if let Some(resolved) = &credential {
                        note_credential(record, resolved);
                    }
                    return Err(Failure::Denied(refusal));
                }
            };
            if let Some(previous) = carried.take() {
                // The superseded attempt's wait counts for the call (its meter carried the
                // earlier attempts' too).
                progress.upstream = previous.supersede();
                progress.metered = false;
                self.metrics.failover();
            }
            attempt += 1;
            tried.push(chosen.credential.credential.id);
            record.attempt = Some(attempt);
            let outcome =
                self.attempt(&chosen, &route, &parts, &body, &caller, &call, record, progress, started).await?;
            let more = attempt < attempts_allowed;
            match outcome {
                Attempted::Answer(answer) if more && crate::health::fails_over(answer.response.status().as_u16()) => {
                    carried = Some(Carried::Answer(answer));
                }
                Attempted::Answer(answer) => return self.deliver(answer, &parts.method, route.spec.api, attempt),
                Attempted::Unreachable(refusal, pending) if more => carried = Some(Carried::Refusal(refusal, pending)),
                Attempted::Unreachable(refusal, mut pending) => {
                    return Err(Failure::AfterAudit(refusal, pending.take(0).map(Box::new)));
                }
            }
        }
    }

    /// The first of `candidates` (in resolution order) that may be used now — its circuit's
    /// probe, if half-open, taken by this call — and whose own rpm/tpm pace has room;
    /// `rate_limited` when none has.
    async fn paced(&self, candidates: Vec<Resolved>) -> Result<Resolved, (Refusal, Option<Resolved>)> {
        let mut soonest: Option<Exceeded> = None;
        let mut first: Option<Resolved> = None;
        for candidate in candidates {
            let credential = &candidate.credential.credential;
            if credential.rpm.is_some() || credential.tpm.is_some() {
                let limit = Limit { rpm: credential.rpm, tpm: credential.tpm };
                if let Err(exceeded) = self.limiter.admit(&[(credential_limit_key(&credential.id), limit)]).await {
                    if soonest.as_ref().is_none_or(|s| exceeded.retry_after_secs < s.retry_after_secs) {
                        soonest = Some(exceeded);
                    }
                    first.get_or_insert(candidate);
                    continue;
                }
            }
            // A half-open circuit lets one call probe; another call moves on. (Claimed last,
            // so a probe is never taken by a call that then does not use the key.)
            if self.health.claim(&credential.id) {
                return Ok(candidate);
            }
            first.get_or_insert(candidate);
        }
        match (soonest, first) {
            (Some(exceeded), Some(first)) => {
                let refusal = Refusal::new(
                    Code::RateLimited,
                    format!(
                        "every credential that admits this call is at its provider account's pace ({} {}); retry \
                         in {} s",
                        exceeded.metric.as_str(),
                        exceeded.limit,
                        exceeded.retry_after_secs
                    ),
                )
                .with_retry_after(exceeded.retry_after_secs);
                Err((refusal, Some(first)))
            }
            (None, Some(first)) => {
                let refusal = Refusal::new(
                    Code::RateLimited,
                    "every credential that admits this call is cooling down while another call probes it; retry in 1 s",
                )
                .with_retry_after(1);
                Err((refusal, Some(first)))
            }
            _ => Err((Refusal::new(Code::NoCredential, "no credential admits this call"), None)),
        }
    }

    /// One attempt with `chosen`: its durable audit row, the key, the upstream request.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        chosen: &Resolved,
        route: &Route,
        parts: &axum::http::request::Parts,
        body: &bytes::Bytes,
        caller: &Caller,
        call: &CallScope,
        record: &mut ResolutionAudit,
        progress: &mut Progress,
        started: Instant,
    ) -> Result<Attempted, Failure> {
        let org = &caller.org.org;
        note_credential(record, chosen);
        let owner = chosen.owner;
        let credential = &chosen.credential.credential;
        let base = upstream_base(credential, route.spec.id, route.spec.default_upstream, &self.config)
            .map_err(Failure::Denied)?
            .map(str::to_owned);
        let sealed = self.directory.sealed(&chosen.credential).await.map_err(|e| {
            Failure::Denied(Refusal::failed(
                Code::StoreUnavailable,
                format_args!("cannot load credential {}", credential.id),
                e,
            ))
        })?;

        // 5. audit: durable before the credential is read.
        record.outcome = Outcome::Allowed;
        record.at = Timestamp::now();
        let row = self
            .audit
            .append(record.clone())
            .await
            .map_err(|e| Failure::Denied(Refusal::failed(Code::AuditUnavailable, "the call was not made", e)))?;
        // From here on the attempt has its allowed row; whatever happens, it gets a
        // completion, priced by the tier and cards in force now.
        let prices = self.vault.price_book();
        let rate_card = self.codes.card(prices, org.tier, org.rate_card.as_ref());
        let provider_price = match (owner, call.model_family.as_deref()) {
            (CredentialOwner::Platform, Some(family)) => self.codes.provider_prices.get(family).cloned(),
            _ => None,
        };
        let mut tally = token_keys(&org.limits, org.id, caller.token.team_id, caller.token.id);
        if credential.tpm.is_some() {
            tally.push(credential_limit_key(&credential.id));
        }
        // The completion names this row: the call id is the caller's and may be shared by
        // other calls (another team's, a retry), so it cannot pair the two on its own.
        let mut pending = PendingCompletion::new(Meter {
            audit: self.audit.bound(&row),
            call_id: record.call_id.clone(),
            org_id: org.id,
            credential_id: credential.id,
            started,
            upstream_status: 0,
            metering: Metering {
                team_id: caller.token.team_id,
                tier: org.tier,
                credential_owner: owner,
                provider: route.spec.id,
                model_family: call.model_family.clone(),
                rate_card,
                provider_price,
            },
            book: Arc::clone(&self.book),
            tokens: (!tally.is_empty()).then(|| TokenTally { limiter: Arc::clone(&self.limiter), keys: tally }),
            facts: CallFacts::of(record),
            upstream_time: progress.upstream,
            upstream_since: None,
            metrics: Arc::clone(&self.metrics),
        });
        // From here on this attempt's meter says how the call ended (unless a later
        // attempt supersedes it).
        progress.metered = true;

        // 6. decrypt
        let opened = match decrypt(&self.deks, &self.kms, credential, &sealed, route).await {
            Ok(opened) => opened,
            Err(refusal) => return Err(Failure::AfterAudit(refusal, pending.take(0).map(Box::new))),
        };

        // 7. inject
        let upstream = match build_upstream_request(
            base.as_deref(),
            route,
            &parts.method,
            &parts.headers,
            body.clone(),
            &opened.wire,
        ) {
            Ok(request) => request,
            Err(refusal) => return Err(Failure::AfterAudit(refusal, pending.take(0).map(Box::new))),
        };
        let redactor = Redactor::with_forms(Arc::clone(&opened.forms));
        drop(opened);

        // 8. forward
        let sent = Instant::now();
        pending.on_upstream(true);
        let forwarded = forward(&self.client, upstream, self.config.response_timeout).await;
        pending.on_upstream(false);
        let waited = sent.elapsed();
        let status = forwarded.as_ref().ok().map(|response| response.status().as_u16());
        self.metrics.upstream_answered(route.spec.id.as_str(), status, waited);
        match forwarded {
            Ok(response) => {
                let status = response.status().as_u16();
                self.observe(credential, record, crate::health::observed(status, response.headers()), Some(status));
                Ok(Attempted::Answer(Answer { response, pending, redactor, credential: credential.id }))
            }
            // No answer from the upstream (unreachable, timed out): another key may do.
            Err(refusal) if refusal.fault() == Fault::Upstream && refusal.retryable() => {
                self.observe(credential, record, Observed::Failed, None);
                Ok(Attempted::Unreachable(refusal, pending))
            }
            Err(refusal) => Err(Failure::AfterAudit(refusal, pending.take(0).map(Box::new))),
        }
    }

    /// Learn from an upstream answer; a rejection becomes the credential's durable
    /// `failing` state (recorded by the vault in the background, once).
    fn observe(&self, credential: &Credential, record: &ResolutionAudit, observed: Observed, status: Option<u16>) {
        if !self.health.observe(&credential.id, credential.version, observed, status) {
            return;
        }
        let Observed::Rejected(status) = observed else { return };
        let vault = self.vault.clone();
        let credential = credential.clone();
        let call_id = record.call_id.clone();
        tracing::warn!(credential = %credential.id, status, call_id = %call_id, "the provider rejected a credential");
        tokio::spawn(async move {
            if let Err(err) = vault.credential_rejected(credential.org_id, &credential, status, &call_id).await {
                tracing::error!(credential = %credential.id, error = %byok_domain::error::Report(&err), "could not record that the provider rejected a credential");
            }
        });
    }

    /// A carried answer after the next resolution found nothing else to try.
    fn deliver_carried(
        &self,
        carried: Carried,
        method: &axum::http::Method,
        api: Api,
        attempts: u32,
    ) -> Result<Response<Body>, Failure> {
        match carried {
            Carried::Answer(answer) => self.deliver(answer, method, api, attempts),
            Carried::Refusal(refusal, mut pending) => Err(Failure::AfterAudit(refusal, pending.take(0).map(Box::new))),
        }
    }

    /// 9. stream and meter: the answer goes to the client, masked and metered.
    fn deliver(
        &self,
        answer: Answer,
        method: &axum::http::Method,
        api: Api,
        attempts: u32,
    ) -> Result<Response<Body>, Failure> {
        let Answer { response, mut pending, redactor, credential } = answer;
        let (mut head, incoming) = response.into_parts();
        // Of the upstream's head only the status, version and headers go on: hyper keeps a
        // non-canonical reason phrase (which may quote the key) in the extensions and would
        // write it out again; the client gets the canonical one.
        head.extensions.clear();
        let listed = connection_listed(&head.headers);
        let names: Vec<HeaderName> = head.headers.keys().filter(|n| is_hop_by_hop(n, &listed)).cloned().collect();
        for name in names {
            head.headers.remove(&name);
        }
        // A compressed answer is decoded before it is masked; one byok cannot decode is
        // refused before anything reaches the client.
        let has_body = *method != axum::http::Method::HEAD
            && !head.status.is_informational()
            && !matches!(head.status.as_u16(), 204 | 304);
        let coding = match crate::body::take_coding(&mut head.headers, has_body) {
            Ok(coding) => coding,
            Err(refusal) => return Err(Failure::AfterAudit(refusal, pending.take(head.status.as_u16()).map(Box::new))),
        };
        redactor.headers(&mut head.headers);
        if let Ok(value) = HeaderValue::from_str(&credential.to_string()) {
            head.headers.insert(HeaderName::from_static(CREDENTIAL_HEADER), value);
        }
        head.headers.insert(HeaderName::from_static(ATTEMPTS_HEADER), HeaderValue::from(attempts));
        let content_type = head.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let tap = UsageTap::new(api, content_type);
        let body = MeteredBody::new(incoming, coding, tap, redactor, pending.take(head.status.as_u16()));
        Ok(Response::from_parts(head, Body::new(body)))
    }
}

/// An upstream answer not delivered yet.
struct Answer {
    response: axum::http::Response<hyper::body::Incoming>,
    pending: PendingCompletion,
    redactor: Redactor,
    credential: CredentialId,
}

/// What one attempt came to. (One per call, moved a few times: not worth a box.)
#[allow(clippy::large_enum_variant)]
enum Attempted {
    /// The upstream answered (any status).
    Answer(Answer),
    /// No answer: the connection failed or timed out.
    Unreachable(Refusal, PendingCompletion),
}

/// An attempt's outcome kept while the next candidate is resolved: delivered if there is
/// none, superseded (recorded as `failed_over`, never forwarded) if there is.
#[allow(clippy::large_enum_variant)]
enum Carried {
    Answer(Answer),
    Refusal(Refusal, PendingCompletion),
}

impl Carried {
    /// Record this attempt as superseded; the time it waited for the upstream (with the
    /// earlier attempts').
    fn supersede(self) -> Duration {
        let (mut pending, status) = match self {
            // Dropping the response closes it: nothing of it reaches the client.
            Carried::Answer(mut answer) => {
                let status = answer.response.status().as_u16();
                (std::mem::replace(&mut answer.pending, PendingCompletion::empty()), status)
            }
            Carried::Refusal(_, pending) => (pending, 0),
        };
        pending.take(status).map_or(Duration::ZERO, Meter::superseded)
    }
}

/// The `rate_limited` refusal for a limit that is reached.
fn rate_limited(exceeded: &Exceeded) -> Refusal {
    let (kind, _) = exceeded.key.as_str().split_once(':').unwrap_or(("", ""));
    let subject = match kind {
        "org" => "the org's",
        "team" => "the team's",
        "tok" => "the workload token's",
        _ => "a",
    };
    Refusal::new(
        Code::RateLimited,
        format!(
            "{subject} rate limit of {} {} is reached; retry in {} s",
            exceeded.limit,
            exceeded.metric.as_str(),
            exceeded.retry_after_secs
        ),
    )
    .with_retry_after(exceeded.retry_after_secs)
}

fn credential_limit_key(id: &CredentialId) -> LimitKey {
    LimitKey::new(format!("cred:{id}"))
}

/// The limit subjects of a call by `team` with `token` (only those with a limit).
fn limit_subjects(limits: &OrgLimits, org: OrgId, team: TeamId, token: TokenId) -> Vec<(LimitKey, Limit)> {
    if limits.is_empty() {
        return Vec::new();
    }
    let mut subjects = Vec::with_capacity(3);
    let mut push = |key: String, limit: &byok_domain::RateLimit| {
        if !limit.is_empty() {
            subjects.push((LimitKey::new(key), Limit { rpm: limit.rpm, tpm: limit.tpm }));
        }
    };
    push(format!("org:{org}"), &limits.org);
    if let Some(limit) = limits.teams.get(&team) {
        push(format!("team:{team}"), limit);
    }
    if let Some(limit) = limits.tokens.get(&token) {
        push(format!("tok:{token}"), limit);
    }
    subjects
}

/// The subjects whose token counts a completion adds to (those with a `tpm`).
fn token_keys(limits: &OrgLimits, org: OrgId, team: TeamId, token: TokenId) -> Vec<LimitKey> {
    limit_subjects(limits, org, team, token).into_iter().filter(|(_, l)| l.tpm.is_some()).map(|(k, _)| k).collect()
}

fn note_credential(record: &mut ResolutionAudit, resolved: &Resolved) {
    let credential = &resolved.credential.credential;
    record.credential_id = Some(credential.id);
    record.credential_version = Some(credential.version);
    record.fingerprint = Some(credential.fingerprint.clone());
    record.credential_owner = Some(resolved.owner);
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<bytes::Bytes, Refusal> {
    let too_large = || Refusal::new(Code::RequestTooLarge, format!("the request body is larger than {limit} bytes"));
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(Refusal::new(Code::InvalidRequest, format!("cannot read the request body: {err}"))),
    }
}
