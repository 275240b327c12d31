//! Prometheus metrics (`GET /metrics` on the admin listener), one registry for the
//! process: how often and how fast each KMS is used (the KMS runtime); the data plane's
//! calls by provider, capability, outcome and code, the upstream's answers by status
//! class, how long calls take (in all, waiting for the upstream's first byte, and byok's
//! own share), the answers being streamed, how often the DEK and directory caches spare
//! the KMS and the store, how often calls fail over or are rate limited, and whether rate
//! limits are enforced per node; the audit writer's commits (latency, batch sizes).
//!
//! Nothing here carries a secret or an org's data: labels are KMS names, operation
//! kinds, cache results, and the data plane's closed vocabularies (provider ids,
//! capabilities, outcomes, byok's error codes, status classes) — never a call id, an
//! org, team, token or credential id, or a model name. Label sets are small structs of
//! `&'static str`, so counting a call allocates nothing once its series exists.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_crypto::CryptoError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A KMS operation, as a label value.
mod op {
    pub(super) const UNWRAP: &str = "unwrap";
    pub(super) const WRAP: &str = "wrap";
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    kms: String,
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsLabels {
    kms: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    /// `hit` or `miss`.
    result: &'static str,
}

/// A data-plane call's labels: `provider` and `capability` are the registry's ids (`none`
/// when the call was refused before they were known), `outcome` a [`CallOutcome`], `code`
/// byok's error code or the completion's status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    provider: &'static str,
    capability: &'static str,
    outcome: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    provider: &'static str,
    /// `1xx` … `5xx`, or `none` when no answer came.
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectoryLabels {
    /// `token`, `org` or `platform`.
    kind: &'static str,
    /// `hit` or `miss`.
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 µs … ~1.3 s: a local keyring answers in microseconds, an HSM in milliseconds.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
}

fn call_histogram() -> Histogram {
    // 1 ms … ~262 s: a refusal takes a millisecond, a long stream minutes.
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

fn overhead_histogram() -> Histogram {
    // 50 µs … ~6.6 s: byok's own share is a cache lookup or two, or an audit commit (an
    // fsync) and a KMS unwrap.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// How a data-plane call ended (the `outcome` label of `byok_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// Forwarded, and the upstream's answer (whatever its status) relayed to its end.
    Allowed,
    /// Refused before anything was sent upstream.
    Denied,
    /// Allowed, then failed: no usable answer (the upstream unreachable or timed out, the
    /// KMS unavailable, …), or the answer's body broke off.
    Failed,
    /// The client went away before the call ended.
    Cancelled,
}

impl CallOutcome {
    /// The outcome as a label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallOutcome::Allowed => "allowed",
            CallOutcome::Denied => "denied",
            CallOutcome::Failed => "failed",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

/// What one data-plane call came to, for [`Metrics::call_ended`].
#[derive(Debug, Clone, Copy)]
pub struct CallEnded {
    /// The provider's id (`none` when the route was not known).
    pub provider: &'static str,
    /// The capability (`none` when the call was refused before it was classified).
    pub capability: &'static str,
    /// How it ended.
    pub outcome: CallOutcome,
    /// byok's error code, or the completion's status (`completed`, `upstream_error`,
    /// `client_cancelled`).
    pub code: &'static str,
    /// From the request's arrival to the call's end (a streamed answer's last byte).
    pub total: Duration,
    /// Of that, the time spent on the upstream: waiting for each attempt's answer, and
    /// relaying the answer's body.
    pub upstream: Duration,
}

/// A cache of the data plane's directory (what spares the store a query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryCache {
    /// Workload tokens by hash.
    Token,
    /// Org snapshots (org, credentials, workflows) per provider.
    Org,
    /// The platform pool's snapshot per provider.
    Platform,
}

impl DirectoryCache {
    const ALL: [DirectoryCache; 3] = [DirectoryCache::Token, DirectoryCache::Org, DirectoryCache::Platform];

    fn as_str(self) -> &'static str {
        match self {
            DirectoryCache::Token => "token",
            DirectoryCache::Org => "org",
            DirectoryCache::Platform => "platform",
        }
    }

    fn index(self) -> usize {
        match self {
            DirectoryCache::Token => 0,
            DirectoryCache::Org => 1,
            DirectoryCache::Platform => 2,
        }
    }
}

/// The status class of an upstream answer (`none`: no answer).
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "none",
    }
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    kms_ops: Family<OpLabels, Counter>,
    kms_seconds: HistogramFamily<OpLabels>,
    kms_failures: Family<KmsLabels, Counter>,
    /// The two series of `dek_cache_lookups`, resolved once: every data-plane call counts one.
    dek_hits: Counter,
    dek_misses: Counter,
    /// Attempts superseded by another credential (failover).
    failovers: Counter,
    /// Calls refused `rate_limited` (a limit, or every candidate cooling down).
    rate_limited: Counter,
    /// 1 while the shared limit store is unreachable and this node enforces its share.
    limits_fallback: Gauge,
    /// The live nodes a limit is divided by while [`Self::limits_fallback`] is 1.
    limits_live_nodes: Gauge,
    /// Data-plane calls by provider, capability, outcome and code.
    requests: Family<RequestLabels, Counter>,
    /// Upstream answers (every attempt's) by provider and status class.
    upstream_responses: Family<UpstreamLabels, Counter>,
    request_seconds: HistogramFamily<ProviderLabels>,
    upstream_ttfb_seconds: HistogramFamily<ProviderLabels>,
    overhead_seconds: HistogramFamily<ProviderLabels>,
    /// Answers being relayed to clients now.
    open_streams: Gauge,
    /// `directory_cache_lookups` (hit, miss) per [`DirectoryCache`], resolved once.
    directory: [(Counter, Counter); 3],
    audit: AuditMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("byok");
        let kms_ops = Family::<OpLabels, Counter>::default();
        let kms_seconds = HistogramFamily::<OpLabels>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let kms_failures = Family::<KmsLabels, Counter>::default();
        let dek_cache = Family::<CacheLabels, Counter>::default();
        registry.register("kms_operations", "DEKs wrapped or unwrapped, by KMS", kms_ops.clone());
        registry.register("kms_operation_seconds", "Time of one wrap or unwrap, by KMS", kms_seconds.clone());
        registry.register("kms_failures", "KMS calls that failed, by KMS", kms_failures.clone());
        registry.register(
            "dek_cache_lookups",
            "Data-plane DEK cache lookups (a miss is one KMS unwrap)",
            dek_cache.clone(),
        );
        let dek_hits = dek_cache.get_or_create(&CacheLabels { result: "hit" }).clone();
        let dek_misses = dek_cache.get_or_create(&CacheLabels { result: "miss" }).clone();
        let failovers = Counter::default();
        let rate_limited = Counter::default();
        let limits_fallback = Gauge::default();
        let limits_live_nodes = Gauge::default();
        registry.register(
            "failovers",
            "Attempts answered 429/401/403/5xx or unreachable, retried with another credential",
            failovers.clone(),
        );
        registry.register(
            "rate_limited",
            "Calls refused rate_limited (a limit reached, or every candidate cooling down)",
            rate_limited.clone(),
        );
        registry.register(
            "limits_fallback",
            "1 while the shared limit store (Redis) is unreachable and this node enforces its share of each limit",
            limits_fallback.clone(),
        );
        registry.register(
            "limits_live_nodes",
            "Live nodes a limit is divided by while the shared limit store is unreachable",
            limits_live_nodes.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream_responses = Family::<UpstreamLabels, Counter>::default();
        let request_seconds =
            HistogramFamily::<ProviderLabels>::new_with_constructor(call_histogram as fn() -> Histogram);
        let upstream_ttfb_seconds =
            HistogramFamily::<ProviderLabels>::new_with_constructor(call_histogram as fn() -> Histogram);
        let overhead_seconds =
            HistogramFamily::<ProviderLabels>::new_with_constructor(overhead_histogram as fn() -> Histogram);
        let open_streams = Gauge::default();
        let directory_cache = Family::<DirectoryLabels, Counter>::default();
        registry.register(
            "requests",
            "Data-plane calls by provider, capability, outcome (allowed, denied, failed, cancelled) and code (byok's \
             error code, or completed, upstream_error, client_cancelled)",
            requests.clone(),
        );
        registry.register(
            "upstream_responses",
            "Upstream answers to each attempt by provider and status class (none: no answer)",
            upstream_responses.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Data-plane calls from arrival to end (a streamed answer's last byte), by provider",
            request_seconds.clone(),
        );
        registry.register(
            "upstream_ttfb_seconds",
            "Time from sending an attempt upstream to the answer's head, by provider",
            upstream_ttfb_seconds.clone(),
        );
        registry.register(
            "request_overhead_seconds",
            "byok's own share of a call: its duration less the time spent on the upstream (waiting for answers, \
             relaying the body), by provider",
            overhead_seconds.clone(),
        );
        registry.register("open_streams", "Upstream answers being relayed to clients now", open_streams.clone());
        registry.register(
            "directory_cache_lookups",
            "Data-plane directory cache lookups by kind (token, org, platform); a miss is a store query",
            directory_cache.clone(),
        );
        let directory = DirectoryCache::ALL.map(|kind| {
            let hits = directory_cache.get_or_create(&DirectoryLabels { kind: kind.as_str(), result: "hit" }).clone();
            let misses =
                directory_cache.get_or_create(&DirectoryLabels { kind: kind.as_str(), result: "miss" }).clone();
            (hits, misses)
        });
        let audit = AuditMetrics::register(&mut registry);
        Self {
            registry,
            kms_ops,
            kms_seconds,
            kms_failures,
            dek_hits,
            dek_misses,
            failovers,
            rate_limited,
            limits_fallback,
            limits_live_nodes,
            requests,
            upstream_responses,
            request_seconds,
            upstream_ttfb_seconds,
            overhead_seconds,
            open_streams,
            directory,
            audit,
        }
    }
}

impl Metrics {
    /// The counters of the KMS called `kms`.
    pub fn for_kms(&self, kms: &str) -> KmsMetrics {
        // One statement per lookup: a family's guard must be gone before the next
        // `get_or_create`, which may take the family's write lock.
        let op = |op| OpLabels { kms: kms.to_owned(), op };
        let unwraps = self.kms_ops.get_or_create(&op(op::UNWRAP)).clone();
        let wraps = self.kms_ops.get_or_create(&op(op::WRAP)).clone();
        let unwrap_seconds = self.kms_seconds.get_or_create(&op(op::UNWRAP)).clone();
        let wrap_seconds = self.kms_seconds.get_or_create(&op(op::WRAP)).clone();
        let failures = self.kms_failures.get_or_create(&KmsLabels { kms: kms.to_owned() }).clone();
        KmsMetrics { unwraps, wraps, unwrap_seconds, wrap_seconds, failures }
    }

    /// Count a data-plane DEK cache lookup.
    pub fn dek_cache_lookup(&self, hit: bool) {
        if hit { &self.dek_hits } else { &self.dek_misses }.inc();
    }

    /// Count an attempt superseded by another credential.
    pub fn failover(&self) {
        self.failovers.inc();
    }

    /// Count a call refused `rate_limited`.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Whether this node enforces its share of each limit (the shared store is
    /// unreachable), among `live_nodes`.
    pub fn limits_fallback(&self, fallback: bool, live_nodes: u64) {
        self.limits_fallback.set(i64::from(fallback));
        self.limits_live_nodes.set(if fallback { i64::try_from(live_nodes).unwrap_or(i64::MAX) } else { 0 });
    }

    /// Count a data-plane call that ended, and time it.
    pub fn call_ended(&self, call: &CallEnded) {
        let labels = RequestLabels {
            provider: call.provider,
            capability: call.capability,
            outcome: call.outcome.as_str(),
            code: call.code,
        };
        self.requests.get_or_create(&labels).inc();
        let provider = ProviderLabels { provider: call.provider };
        self.request_seconds.get_or_create(&provider).observe(call.total.as_secs_f64());
        self.overhead_seconds.get_or_create(&provider).observe(call.total.saturating_sub(call.upstream).as_secs_f64());
    }

    /// Count an attempt's upstream answer (`status`; `None`: none came), and time the
    /// wait for its head (`waited`) when there was one.
    pub fn upstream_answered(&self, provider: &'static str, status: Option<u16>, waited: Duration) {
        self.upstream_responses.get_or_create(&UpstreamLabels { provider, class: status_class(status) }).inc();
        if status.is_some() {
            self.upstream_ttfb_seconds.get_or_create(&ProviderLabels { provider }).observe(waited.as_secs_f64());
        }
    }

    /// An answer starts being relayed: counted in `byok_open_streams` until the guard is
    /// dropped.
    pub fn stream_opened(&self) -> OpenStream {
        self.open_streams.inc();
        OpenStream(self.open_streams.clone())
    }

    /// Count a data-plane directory cache lookup.
    pub fn directory_cache_lookup(&self, cache: DirectoryCache, hit: bool) {
        let (hits, misses) = &self.directory[cache.index()];
        if hit { hits } else { misses }.inc();
    }

    /// (hits, misses) of one directory cache since the process started.
    pub fn directory_cache_counts(&self, cache: DirectoryCache) -> (u64, u64) {
        let (hits, misses) = &self.directory[cache.index()];
        (hits.get(), misses.get())
    }

    /// The audit writer's counters.
    pub fn audit(&self) -> AuditMetrics {
        self.audit.clone()
    }

    /// (hits, misses) of the data-plane DEK cache since the process started.
    pub fn dek_cache_counts(&self) -> (u64, u64) {
        (self.dek_hits.get(), self.dek_misses.get())
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// One KMS's counters.
#[derive(Clone)]
pub struct KmsMetrics {
    unwraps: Counter,
    wraps: Counter,
    unwrap_seconds: Histogram,
    wrap_seconds: Histogram,
    failures: Counter,
}

impl KmsMetrics {
    fn time<T>(
        counter: &Counter,
        histogram: &Histogram,
        op: impl FnOnce() -> Result<T, CryptoError>,
    ) -> Result<T, CryptoError> {
        let start = Instant::now();
        let out = op();
        if out.is_ok() {
            counter.inc();
            histogram.observe(start.elapsed().as_secs_f64());
        }
        out
    }

    /// Run and count an unwrap.
    pub fn unwrap<T>(&self, op: impl FnOnce() -> Result<T, CryptoError>) -> Result<T, CryptoError> {
        Self::time(&self.unwraps, &self.unwrap_seconds, op)
    }

    /// Run and count a wrap.
    pub fn wrap<T>(&self, op: impl FnOnce() -> Result<T, CryptoError>) -> Result<T, CryptoError> {
        Self::time(&self.wraps, &self.wrap_seconds, op)
    }

    /// Count a failed call.
    pub fn failed(&self) {
        self.failures.inc();
    }

    /// (unwraps, wraps, failures) since the process started.
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.unwraps.get(), self.wraps.get(), self.failures.get())
    }
}

/// Shared metrics.
pub type SharedMetrics = Arc<Metrics>;

/// One answer being relayed (see [`Metrics::stream_opened`]); dropping it ends it.
#[derive(Debug)]
pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The audit writer's metrics: how long each group commit takes, how many entries it
/// carries, how many fail, and how many completions were dropped for want of room.
#[derive(Debug, Clone)]
pub struct AuditMetrics {
    commit_seconds: Histogram,
    batch_entries: Histogram,
    commit_failures: Counter,
    dropped_completions: Counter,
}

impl AuditMetrics {
    fn register(registry: &mut Registry) -> Self {
        // 100 µs … ~3.3 s: an fsync on a fast disk, a PostgreSQL round trip, a slow disk.
        let commit_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        // 1 … 1024 entries (the writer's default most per commit).
        let batch_entries = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let commit_failures = Counter::default();
        let dropped_completions = Counter::default();
        registry.register(
            "audit_commit_seconds",
            "Time of one audit group commit (resolution rows and completions in one transaction)",
            commit_seconds.clone(),
        );
        registry.register(
            "audit_batch_entries",
            "Entries (rows and completions) per audit commit",
            batch_entries.clone(),
        );
        registry.register("audit_commit_failures", "Audit commits that failed", commit_failures.clone());
        registry.register(
            "audit_dropped_completions",
            "Call completions dropped because the audit queue was full and too many waited for room",
            dropped_completions.clone(),
        );
        Self { commit_seconds, batch_entries, commit_failures, dropped_completions }
    }

    /// One commit of `entries` entries took `took`; `ok` whether it committed.
    pub fn committed(&self, entries: usize, took: Duration, ok: bool) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.batch_entries.observe(entries as f64);
        if !ok {
            self.commit_failures.inc();
        }
    }

    /// A completion was dropped.
    pub fn completion_dropped(&self) {
        self.dropped_completions.inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn counters_are_rendered_by_kms_and_cache_result() {
        let metrics = Metrics::default();
        let default = metrics.for_kms("default");
        let customer = metrics.for_kms("acme-hsm");
        default.unwrap(|| Ok(())).unwrap();
        default.unwrap(|| Ok(())).unwrap();
        customer.wrap(|| Ok(())).unwrap();
        let failed: Result<(), CryptoError> =
            customer.unwrap(|| Err(CryptoError::Kms(byok_crypto::KmsError::Integrity)));
        assert!(failed.is_err());
        customer.failed();
        metrics.dek_cache_lookup(true);
        metrics.dek_cache_lookup(false);
        metrics.dek_cache_lookup(true);
        assert_eq!(default.counts(), (2, 0, 0));
        assert_eq!(customer.counts(), (0, 1, 1));
        assert_eq!(metrics.dek_cache_counts(), (2, 1));
        let text = metrics.render().unwrap();
        assert!(text.contains(r#"byok_kms_operations_total{kms="default",op="unwrap"} 2"#), "{text}");
        assert!(text.contains(r#"byok_kms_failures_total{kms="acme-hsm"} 1"#), "{text}");
        assert!(text.contains(r#"byok_dek_cache_lookups_total{result="hit"} 2"#), "{text}");
        assert!(text.contains("byok_kms_operation_seconds_bucket"), "{text}");
    }

    #[test]
    fn data_plane_series_are_labelled_by_closed_vocabularies() {
        let metrics = Metrics::default();
        let call = |outcome, code, total_ms, upstream_ms| CallEnded {
            provider: "openai",
            capability: "chat",
            outcome,
            code,
            total: Duration::from_millis(total_ms),
            upstream: Duration::from_millis(upstream_ms),
        };
        metrics.call_ended(&call(CallOutcome::Allowed, "completed", 30, 25));
        metrics.call_ended(&call(CallOutcome::Allowed, "completed", 40, 35));
        metrics.call_ended(&CallEnded {
            provider: "none",
            capability: "none",
            ..call(CallOutcome::Denied, "invalid_workload_token", 1, 0)
        });
        metrics.upstream_answered("openai", Some(200), Duration::from_millis(20));
        metrics.upstream_answered("openai", Some(503), Duration::from_millis(20));
        metrics.upstream_answered("openai", None, Duration::from_millis(20));
        metrics.directory_cache_lookup(DirectoryCache::Token, false);
        metrics.directory_cache_lookup(DirectoryCache::Token, true);
        metrics.directory_cache_lookup(DirectoryCache::Org, true);
        assert_eq!(metrics.directory_cache_counts(DirectoryCache::Token), (1, 1));
        let audit = metrics.audit();
        audit.committed(3, Duration::from_millis(2), true);
        audit.committed(1, Duration::from_millis(2), false);
        let stream = metrics.stream_opened();
        let text = metrics.render().unwrap();
        assert!(
            text.contains(
                r#"byok_requests_total{provider="openai",capability="chat",outcome="allowed",code="completed"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"byok_requests_total{provider="none",capability="none",outcome="denied",code="invalid_workload_token"} 1"#
            ),
            "{text}"
        );
        for class in ["2xx", "5xx", "none"] {
            let series = format!(r#"byok_upstream_responses_total{{provider="openai",class="{class}"}} 1"#);
            assert!(text.contains(&series), "{series}: {text}");
        }
        assert!(text.contains(r#"byok_upstream_ttfb_seconds_count{provider="openai"} 2"#), "{text}");
        assert!(text.contains(r#"byok_request_duration_seconds_count{provider="openai"} 2"#), "{text}");
        // byok's own share of the two allowed calls: 5 ms each.
        assert!(text.contains(r#"byok_request_overhead_seconds_sum{provider="openai"} 0.01"#), "{text}");
        assert!(text.contains("byok_open_streams 1"), "{text}");
        drop(stream);
        let text = metrics.render().unwrap();
        assert!(text.contains("byok_open_streams 0"), "{text}");
        assert!(text.contains(r#"byok_directory_cache_lookups_total{kind="token",result="miss"} 1"#), "{text}");
        assert!(text.contains(r#"byok_directory_cache_lookups_total{kind="platform",result="hit"} 0"#), "{text}");
        assert!(text.contains("byok_audit_commit_seconds_count 2"), "{text}");
        assert!(text.contains("byok_audit_batch_entries_sum 4.0"), "{text}");
        assert!(text.contains("byok_audit_commit_failures_total 1"), "{text}");
    }
}
