//! Key health (SPEC 3.1), this node's view: cooldowns after a provider throttled a key,
//! the circuit breaker after repeated 5xx or connection failures, and the bridge for a
//! key the provider rejected until its durable `failing` state reaches the snapshot.
//!
//! | upstream answer | state | until |
//! | --- | --- | --- |
//! | 429 / 529 | cooling down | `Retry-After` (seconds or HTTP date), else the provider's reset headers for the exhausted limit (OpenAI `x-ratelimit-reset-*` durations, Anthropic `anthropic-ratelimit-*-reset` instants), else 5 s doubling per repeat up to 60 s |
//! | 3rd consecutive 5xx / connection failure | cooling down (circuit open) | 10 s, then one probe call decides |
//! | 401 / 403 | failing | durable: the vault records `provider_rejected`; this node skips the key at once |
//!
//! A hint from the upstream is capped at [`MAX_COOLDOWN`], so a hostile or broken upstream
//! cannot park a key for days. Cooldowns are per node (a throttled key is throttled for
//! every node, and each learns it from its own 429); `failing` is fleet-wide because it is
//! durable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::http::HeaderMap;
use byok_domain::{CredentialHealth, CredentialId, HealthState, Timestamp};

/// The cooldown after a 429 without any hint, doubled on each repeat …
pub(crate) const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);
/// … up to this.
pub(crate) const MAX_DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);
/// Consecutive 5xx or connection failures that open the circuit.
pub(crate) const CIRCUIT_THRESHOLD: u32 = 3;
/// How long an open circuit stays open before one probe call is let through.
pub(crate) const CIRCUIT_OPEN: Duration = Duration::from_secs(10);
/// The longest cooldown an upstream's hint can impose.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(3600);
/// A probe call that has not reported back after this long is presumed lost (its client
/// went away); another call may probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long this node skips a key the provider rejected while the durable state is on
/// its way to the snapshot (it normally arrives within milliseconds).
const REJECTION_BRIDGE: Duration = Duration::from_secs(30);

/// What the upstream did with an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    /// Any answer that says nothing against the key (2xx, 4xx other than those below).
    Served,
    /// 429 or 529, cooling down until the given instant (from the answer's hints).
    Throttled(Option<Duration>),
    /// 5xx (500, 502, 503, 504) or no answer at all.
    Failed,
    /// 401 or 403.
    Rejected(u16),
}

/// Whether a credential may be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Availability {
    /// Use it.
    Ready,
    /// Its circuit is half-open: the one call that [claims](HealthBook::claim) the probe
    /// may use it.
    ProbeDue,
    /// Skip it until `until` (wall clock, for `Retry-After`).
    Cooling { until: Timestamp },
    /// The provider rejected it: skip it.
    Failing,
}

#[derive(Debug, Clone, Copy)]
struct Rejection {
    status: u16,
    at: Instant,
    version: u32,
}

#[derive(Debug, Default)]
struct Entry {
    /// Cooling down until this instant (a throttle or an open circuit).
    until: Option<(Instant, Timestamp)>,
    /// The last throttle's default cooldown (doubles per repeat without hint).
    backoff: Option<Duration>,
    /// Consecutive 5xx / connection failures.
    failures: u32,
    /// The circuit is open (cooling came from failures, not a throttle).
    circuit_open: bool,
    /// A probe call is in flight since.
    probing: Option<Instant>,
    /// The provider rejected this version of it (until the durable state takes over).
    rejected: Option<Rejection>,
    /// The status that last changed the state.
    last_status: Option<u16>,
}

impl Entry {
    fn is_idle(&self) -> bool {
        self.until.is_none() && self.failures == 0 && self.rejected.is_none() && self.backoff.is_none()
    }
}

/// Every credential's health on this node.
#[derive(Debug, Default)]
pub(crate) struct HealthBook {
    entries: Mutex<HashMap<CredentialId, Entry>>,
}

impl HealthBook {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<CredentialId, Entry>) -> R) -> R {
        let mut entries = match self.entries.lock() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut entries)
    }

    /// Whether version `version` of `credential` may be tried now; `durable_failing` is
    /// the snapshot's state (which, once there, replaces this node's bridge). Nothing is
    /// claimed here: a call [claims](Self::claim) the probe of a half-open circuit only
    /// when it is about to use that credential.
    pub(crate) fn availability(&self, credential: &CredentialId, version: u32, durable_failing: bool) -> Availability {
        let now = Instant::now();
        self.with(|entries| {
            let Some(entry) = entries.get_mut(credential) else {
                return if durable_failing { Availability::Failing } else { Availability::Ready };
            };
            if durable_failing {
                entry.rejected = None;
                return Availability::Failing;
            }
            if let Some(rejection) = entry.rejected {
                if rejection.version == version && now.duration_since(rejection.at) < REJECTION_BRIDGE {
                    return Availability::Failing;
                }
                entry.rejected = None;
            }
            match entry.until {
                Some((until, wall)) if now < until => Availability::Cooling { until: wall },
                Some(_) if entry.circuit_open => {
                    if entry.probing.is_some_and(|since| now.duration_since(since) < PROBE_TIMEOUT) {
                        // Another call is probing: wait for its verdict.
                        Availability::Cooling { until: Timestamp::now() }
                    } else {
                        Availability::ProbeDue
                    }
                }
                Some(_) => {
                    entry.until = None;
                    Availability::Ready
                }
                None => Availability::Ready,
            }
        })
    }

    /// A call is about to use `credential`: if its circuit is half-open, this call takes
    /// the one probe, or — when another call holds it — may not use it (`false`).
    pub(crate) fn claim(&self, credential: &CredentialId) -> bool {
        let now = Instant::now();
        self.with(|entries| {
            let Some(entry) = entries.get_mut(credential) else { return true };
            let half_open = entry.circuit_open && entry.until.is_some_and(|(until, _)| now >= until);
            if !half_open {
                return true;
            }
            if entry.probing.is_some_and(|since| now.duration_since(since) < PROBE_TIMEOUT) {
                return false;
            }
            entry.probing = Some(now);
            true
        })
    }

    /// The durable state reached the snapshot (or was cleared there): the local bridge
    /// for a rejection is no longer needed.
    pub(crate) fn forget_rejection(&self, credential: &CredentialId) {
        self.with(|entries| {
            if let Some(entry) = entries.get_mut(credential) {
                entry.rejected = None;
            }
        });
    }

    /// Record what the upstream did with an attempt on version `version` of `credential`.
    /// Returns `true` when this is a rejection the durable state must learn.
    pub(crate) fn observe(
        &self,
        credential: &CredentialId,
        version: u32,
        observed: Observed,
        status: Option<u16>,
    ) -> bool {
        let now = Instant::now();
        self.with(|entries| {
            let entry = entries.entry(*credential).or_default();
            entry.probing = None;
            match observed {
                Observed::Served => {
                    entry.failures = 0;
                    entry.circuit_open = false;
                    entry.backoff = None;
                    entry.until = None;
                    if status.is_some_and(|s| (200..300).contains(&s)) {
                        entry.last_status = None;
                    }
                    if entry.is_idle() {
                        entries.remove(credential);
                    }
                    false
                }
                Observed::Throttled(hint) => {
                    entry.failures = 0;
                    entry.circuit_open = false;
                    let wait = match hint {
                        Some(hint) => {
                            entry.backoff = None;
                            hint.min(MAX_COOLDOWN)
                        }
                        None => {
                            let next = entry.backoff.map_or(DEFAULT_COOLDOWN, |b| (b * 2).min(MAX_DEFAULT_COOLDOWN));
                            entry.backoff = Some(next);
                            next
                        }
                    };
                    entry.until = Some(deadline(now, wait));
                    entry.last_status = status;
                    false
                }
                Observed::Failed => {
                    entry.failures = entry.failures.saturating_add(1);
                    entry.last_status = status;
                    if entry.circuit_open || entry.failures >= CIRCUIT_THRESHOLD {
                        entry.circuit_open = true;
                        entry.until = Some(deadline(now, CIRCUIT_OPEN));
                    }
                    false
                }
                Observed::Rejected(status) => {
                    let first = entry.rejected.is_none_or(|r| r.version != version);
                    entry.rejected = Some(Rejection { status, at: now, version });
                    entry.last_status = Some(status);
                    first
                }
            }
        })
    }

    /// This node's view of `credential`'s health, when it is not `ok`.
    pub(crate) fn view(&self, credential: &CredentialId) -> Option<CredentialHealth> {
        let now = Instant::now();
        self.with(|entries| {
            let entry = entries.get(credential)?;
            if let Some(rejection) = entry.rejected {
                if now.duration_since(rejection.at) < REJECTION_BRIDGE {
                    return Some(CredentialHealth::failing(rejection.status));
                }
            }
            match entry.until {
                Some((until, wall)) if now < until || entry.circuit_open => Some(CredentialHealth {
                    state: HealthState::CoolingDown,
                    until: Some(wall),
                    last_status: entry.last_status,
                }),
                _ => None,
            }
        })
    }
}

fn deadline(now: Instant, wait: Duration) -> (Instant, Timestamp) {
    let wall = Timestamp::now().as_micros().saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
    (now + wait, Timestamp::from_micros(wall).unwrap_or_else(Timestamp::now))
}

/// What an upstream answer with `status` says about the key.
pub(crate) fn observed(status: u16, headers: &HeaderMap) -> Observed {
    match status {
        429 | 529 => Observed::Throttled(cooldown_hint(headers)),
        401 | 403 => Observed::Rejected(status),
        500 | 502 | 503 | 504 => Observed::Failed,
        _ => Observed::Served,
    }
}

/// Whether an answer with `status` moves the call to the next candidate.
pub(crate) fn fails_over(status: u16) -> bool {
    matches!(status, 429 | 401 | 403 | 500 | 502 | 503 | 504 | 529)
}

/// How long the provider asks us to wait: `Retry-After` (seconds or an HTTP date), else
/// the latest reset among the limits it says are exhausted (OpenAI
/// `x-ratelimit-reset-{requests,tokens}` with `x-ratelimit-remaining-*` = 0; Anthropic
/// `anthropic-ratelimit-*-reset` with `-remaining` = 0), else the latest reset given.
pub(crate) fn cooldown_hint(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(value) = text("retry-after") {
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO));
        }
    }
    let mut exhausted: Option<Duration> = None;
    let mut any: Option<Duration> = None;
    let openai = ["requests", "tokens"]
        .map(|what| (format!("x-ratelimit-reset-{what}"), format!("x-ratelimit-remaining-{what}"), true));
    let anthropic = ["requests", "tokens", "input-tokens", "output-tokens"].map(|what| {
        (format!("anthropic-ratelimit-{what}-reset"), format!("anthropic-ratelimit-{what}-remaining"), false)
    });
    for (reset, remaining, is_duration) in openai.iter().chain(anthropic.iter()) {
        let Some(value) = text(reset) else { continue };
        let wait = if *is_duration { parse_go_duration(value) } else { until_rfc3339(value) };
        let Some(wait) = wait else { continue };
        any = Some(any.map_or(wait, |a| a.max(wait)));
        if text(remaining).is_some_and(|r| r == "0") {
            exhausted = Some(exhausted.map_or(wait, |e| e.max(wait)));
        }
    }
    exhausted.or(any)
}

/// An OpenAI reset duration: Go's `time.Duration` text (`6m0s`, `1s`, `20ms`, `1h2m3.5s`).
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    // Whole milliseconds, rounded up: a cooldown never ends before the provider's reset.
    let millis = (total * 1000.0).ceil();
    (millis.is_finite() && millis >= 0.0).then(|| Duration::from_millis(millis.min(u64::MAX as f64) as u64))
}

fn until_rfc3339(text: &str) -> Option<Duration> {
    let at = Timestamp::parse_rfc3339(text).ok()?;
    let wait = at.as_micros().saturating_sub(Timestamp::now().as_micros());
    Some(Duration::from_micros(u64::try_from(wait).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn openai_durations_parse() {
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(parse_go_duration("59.2s"), Some(Duration::from_millis(59_200)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration("s"), None);
    }

    #[test]
    fn retry_after_wins_then_the_exhausted_limit() {
        assert_eq!(cooldown_hint(&headers(&[("retry-after", "7")])), Some(Duration::from_secs(7)));
        let openai = headers(&[
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-tokens", "1000"),
        ]);
        assert_eq!(cooldown_hint(&openai), Some(Duration::from_secs(2)));
        let at = Timestamp::from_micros(Timestamp::now().as_micros() + 3_000_000).unwrap();
        let anthropic = headers(&[
            ("anthropic-ratelimit-requests-reset", &at.to_rfc3339()),
            ("anthropic-ratelimit-requests-remaining", "0"),
        ]);
        let hint = cooldown_hint(&anthropic).unwrap();
        assert!(hint <= Duration::from_secs(3) && hint >= Duration::from_secs(2), "{hint:?}");
        assert_eq!(cooldown_hint(&HeaderMap::new()), None);
    }

    #[test]
    fn throttles_cool_down_and_back_off() {
        let book = HealthBook::default();
        let id = CredentialId::generate();
        assert_eq!(book.availability(&id, 1, false), Availability::Ready);
        book.observe(&id, 1, Observed::Throttled(None), Some(429));
        assert!(matches!(book.availability(&id, 1, false), Availability::Cooling { .. }));
        assert_eq!(book.with(|e| e[&id].backoff), Some(DEFAULT_COOLDOWN));
        book.observe(&id, 1, Observed::Throttled(None), Some(429));
        assert_eq!(book.with(|e| e[&id].backoff), Some(DEFAULT_COOLDOWN * 2));
        book.observe(&id, 1, Observed::Throttled(Some(Duration::from_secs(u64::MAX / 4))), Some(429));
        let until = book.with(|e| e[&id].until.unwrap().0);
        assert!(until <= Instant::now() + MAX_COOLDOWN);
        assert_eq!(book.view(&id).unwrap().state, HealthState::CoolingDown);
        book.observe(&id, 1, Observed::Served, Some(200));
        assert_eq!(book.availability(&id, 1, false), Availability::Ready);
        assert!(book.view(&id).is_none());
    }

    #[test]
    fn three_failures_open_the_circuit_and_one_probe_decides() {
        let book = HealthBook::default();
        let id = CredentialId::generate();
        for _ in 0..2 {
            book.observe(&id, 1, Observed::Failed, Some(503));
            assert_eq!(book.availability(&id, 1, false), Availability::Ready);
        }
        book.observe(&id, 1, Observed::Failed, Some(503));
        assert!(matches!(book.availability(&id, 1, false), Availability::Cooling { .. }));
        // The open period ends: one call probes, the others wait for it.
        book.with(|e| e.get_mut(&id).unwrap().until = Some((Instant::now(), Timestamp::now())));
        // Looking does not take the probe; the first call to use it does.
        assert_eq!(book.availability(&id, 1, false), Availability::ProbeDue);
        assert_eq!(book.availability(&id, 1, false), Availability::ProbeDue);
        assert!(book.claim(&id));
        assert!(!book.claim(&id));
        assert!(matches!(book.availability(&id, 1, false), Availability::Cooling { .. }));
        // The probe fails: open again.
        book.observe(&id, 1, Observed::Failed, Some(503));
        assert!(matches!(book.availability(&id, 1, false), Availability::Cooling { .. }));
        book.with(|e| e.get_mut(&id).unwrap().until = Some((Instant::now(), Timestamp::now())));
        assert_eq!(book.availability(&id, 1, false), Availability::ProbeDue);
        assert!(book.claim(&id));
        book.observe(&id, 1, Observed::Served, Some(200));
        assert_eq!(book.availability(&id, 1, false), Availability::Ready);
    }

    #[test]
    fn a_rejection_is_failing_at_once_and_reported_once() {
        let book = HealthBook::default();
        let id = CredentialId::generate();
        assert!(book.observe(&id, 1, Observed::Rejected(401), Some(401)));
        assert!(!book.observe(&id, 1, Observed::Rejected(401), Some(401)));
        assert_eq!(book.availability(&id, 1, false), Availability::Failing);
        // A new version (a rotation) is not the rejected key.
        assert_eq!(book.availability(&id, 2, false), Availability::Ready);
        assert!(book.observe(&id, 2, Observed::Rejected(401), Some(401)));
        // Once the durable state is in the snapshot it rules, and clearing it there
        // (verify, enable) makes the key ready again.
        assert_eq!(book.availability(&id, 2, true), Availability::Failing);
        assert_eq!(book.availability(&id, 2, false), Availability::Ready);
        book.observe(&id, 2, Observed::Rejected(401), Some(401));
        book.forget_rejection(&id);
        assert_eq!(book.availability(&id, 2, false), Availability::Ready);
    }

    #[test]
    fn statuses_that_fail_over() {
        for status in [429, 401, 403, 500, 502, 503, 504, 529] {
            assert!(fails_over(status), "{status}");
        }
        for status in [200, 400, 404, 413, 422, 501] {
            assert!(!fails_over(status), "{status}");
        }
    }
}
