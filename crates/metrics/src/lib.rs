//! Prometheus metrics (`GET /metrics` on the admin listener), one registry for the
//! process: how often and how fast each KMS is used (the KMS runtime), how often the
//! data plane's DEK cache spares it, how often calls fail over or are rate limited, and
//! whether rate limits are enforced per node (the data plane).
//!
//! Nothing here carries a secret or an org's data: labels are KMS names, operation
//! kinds and cache results.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

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

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 µs … ~1.3 s: a local keyring answers in microseconds, an HSM in milliseconds.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
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
}
