//! Per-key faults: a key that is rate-limited, throttled, revoked, forbidden or failing gets
//! the provider's error (with the provider's rate-limit headers) instead of being served.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::auth::{self, Auth, KeyCheck};
use crate::errors;
use crate::record::Provider;
use crate::reply::Reply;
use crate::MockConfig;

/// The window a [`KeyFault::RateLimit`] counts requests and tokens in.
const WINDOW: Duration = Duration::from_secs(60);

/// What the mock does with requests presenting one key, instead of serving them.
///
/// Set with [`crate::MockProvider::set_key_fault`] (until cleared) or
/// [`crate::MockProvider::fail_key_times`] (for a number of requests). A fault applies to
/// every endpoint of every provider that accepts the key, streaming ones included (a faulted
/// streaming request gets the JSON error, never an event stream) and the model listings. It
/// is checked after the key: a key the configuration does not accept still gets the normal
/// wrong-key answer. Faults are part of the normal behaviour, so a queued or standing
/// [`crate::ScriptedResponse`] other than `Normal`/`BreakStream` is served instead. Faulted
/// requests are recorded and counted like every request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFault {
    /// A real per-key rate limit: at most `requests_per_minute` requests (and, if set,
    /// `tokens_per_minute` input+output tokens) in a sliding 60 s window; past it, 429 in the
    /// provider's shape with the provider's real headers.
    ///
    /// A request is refused when the window already holds `requests_per_minute` requests, or
    /// at least `tokens_per_minute` tokens. Refused requests do not count. A served request's
    /// tokens are the usage the mock computes for it (what it reports in `usage` /
    /// `usageMetadata`, prompt plus completion; zero for listings and token counting).
    /// Every response to an admitted request carries the rate-limit headers of the OpenAI
    /// family (`x-ratelimit-*`) or Anthropic (`anthropic-ratelimit-*`); Gemini has none.
    /// Setting the fault (again) starts with an empty window.
    RateLimit {
        /// Requests allowed in any 60 s window.
        requests_per_minute: u32,
        /// Input plus output tokens allowed in any 60 s window, if limited.
        tokens_per_minute: Option<u32>,
    },
    /// Always 429 with `Retry-After: <retry_after secs>` (rounded up, at least 1) and the
    /// provider's reset headers saying the same instant: a key that is throttled right now
    /// for that long. Once `retry_after` has passed since the fault was set, the key serves
    /// normally again (the fault clears itself). With
    /// [`crate::MockProvider::fail_key_times`] the hint is `retry_after` every time and the
    /// fault ends by count, not by time.
    Throttled {
        /// How long the key stays throttled.
        retry_after: Duration,
    },
    /// 429 like [`KeyFault::Throttled`], but without any `Retry-After` and without reset
    /// headers (for a client's default backoff). Does not clear itself.
    ThrottledNoHint,
    /// The key was revoked at the provider: the provider's wrong-key answer (OpenAI-family
    /// 401 `invalid_api_key`, Azure 401, Anthropic 401 `authentication_error`, Gemini 400
    /// `API_KEY_INVALID`).
    Revoked,
    /// The key lost access: 403 in the provider's shape (OpenAI `permission_denied`, Azure
    /// `PermissionDenied`, Anthropic `permission_error`, Gemini `PERMISSION_DENIED`).
    Forbidden,
    /// This status in the provider's error shape, e.g. 500, 502, 503, 504 (OpenAI
    /// `server_error`; Anthropic `api_error`, 504 `timeout_error`; Gemini `INTERNAL`,
    /// `UNAVAILABLE`, `DEADLINE_EXCEEDED`) or 529 (Anthropic `overloaded_error`; OpenAI's
    /// shape with its "overloaded" text). An invalid status becomes 500.
    Status(u16),
}

/// The per-key faults of one mock.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Whether any key has a fault: keeps the lock off the unfaulted hot path.
    armed: AtomicBool,
    keys: Mutex<HashMap<String, KeyState>>,
    /// Numbers the requests admitted under a rate limit.
    uses: AtomicU64,
}

#[derive(Debug, Default)]
struct KeyState {
    /// From `fail_key_times`: the fault and how many more requests get it.
    counted: Option<(KeyFault, u32)>,
    /// From `set_key_fault`.
    standing: Option<Standing>,
}

impl KeyState {
    fn is_empty(&self) -> bool {
        self.counted.is_none() && self.standing.is_none()
    }
}

#[derive(Debug)]
struct Standing {
    fault: KeyFault,
    since: Instant,
    /// The requests admitted in the last 60 s (rate limits only), oldest first.
    window: VecDeque<Use>,
}

#[derive(Clone, Copy, Debug)]
struct Use {
    at: Instant,
    seq: u64,
    tokens: u64,
}

/// What to do with a request presenting a key.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// No fault: serve normally.
    Serve,
    /// Under a rate limit with room left: serve, then [`Faults::charge`] the reply.
    Admitted(Admission),
    /// Answer this instead of serving.
    Refuse(Refusal),
}

/// A request admitted under a rate limit, to be charged once its usage is known.
#[derive(Debug)]
pub(crate) struct Admission {
    key: String,
    seq: u64,
}

/// Why a request is not served.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Over a [`KeyFault::RateLimit`].
    RateLimited {
        exceeded: Exceeded,
        quota: Quota,
        retry_after: Duration,
    },
    /// [`KeyFault::Throttled`] (with its remaining time) or [`KeyFault::ThrottledNoHint`].
    Throttled {
        retry_after: Option<Duration>,
    },
    Revoked,
    Forbidden,
    Status(u16),
}

/// Which limit a refused request ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Requests,
    Tokens,
}

/// The state of a key's rate limit, for the headers.
#[derive(Clone, Debug)]
pub(crate) struct Quota {
    requests: Limit,
    tokens: Option<Limit>,
}

/// One limit: its size, what the window holds, what is left and when the window is empty.
#[derive(Clone, Copy, Debug)]
struct Limit {
    limit: u32,
    used: u64,
    remaining: u64,
    /// Time until the limit is fully replenished.
    reset: Duration,
}

impl Faults {
    fn keys(&self) -> MutexGuard<'_, HashMap<String, KeyState>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rearm(&self, keys: &HashMap<String, KeyState>) {
        self.armed.store(!keys.is_empty(), Ordering::SeqCst);
    }

    pub(crate) fn set(&self, key: &str, fault: KeyFault) {
        let mut keys = self.keys();
        keys.entry(key.to_owned()).or_default().standing =
            Some(Standing { fault, since: Instant::now(), window: VecDeque::new() });
        self.rearm(&keys);
    }

    pub(crate) fn clear(&self, key: &str) {
        let mut keys = self.keys();
        keys.remove(key);
        self.rearm(&keys);
    }

    pub(crate) fn fail_times(&self, key: &str, fault: KeyFault, times: u32) {
        let mut keys = self.keys();
        let state = keys.entry(key.to_owned()).or_default();
        state.counted = (times > 0).then_some((fault, times));
        if state.is_empty() {
            keys.remove(key);
        }
        self.rearm(&keys);
    }

    /// Decides what to do with a request presenting `key`.
    pub(crate) fn check(&self, key: &str) -> Verdict {
        if !self.armed.load(Ordering::SeqCst) {
            return Verdict::Serve;
        }
        let now = Instant::now();
        let mut keys = self.keys();
        let Some(state) = keys.get_mut(key) else {
            return Verdict::Serve;
        };
        let verdict = if let Some((fault, left)) = state.counted.take() {
            if left > 1 {
                state.counted = Some((fault.clone(), left - 1));
            }
            Verdict::Refuse(counted_refusal(fault))
        } else {
            match state.standing.as_mut() {
                None => Verdict::Serve,
                Some(standing) => match standing_verdict(standing, key, now, &self.uses) {
                    Some(verdict) => verdict,
                    None => {
                        // A throttle whose time is up clears itself.
                        state.standing = None;
                        Verdict::Serve
                    }
                },
            }
        };
        if state.is_empty() {
            keys.remove(key);
            self.rearm(&keys);
        }
        verdict
    }

    /// Charges a served request's `tokens` to its key's rate limit; returns the limit's
    /// state for the response headers (`None` if the fault changed meanwhile).
    pub(crate) fn charge(&self, admission: &Admission, tokens: u64) -> Option<Quota> {
        let now = Instant::now();
        let mut keys = self.keys();
        let standing = keys.get_mut(&admission.key)?.standing.as_mut()?;
        let KeyFault::RateLimit { requests_per_minute, tokens_per_minute } = standing.fault else {
            return None;
        };
        if let Some(entry) = standing.window.iter_mut().rev().find(|entry| entry.seq == admission.seq) {
            entry.tokens = tokens;
        }
        Some(quota(requests_per_minute, tokens_per_minute, &standing.window, now))
    }
}

/// The verdict of a standing fault, or `None` when it has cleared itself.
fn standing_verdict(standing: &mut Standing, key: &str, now: Instant, uses: &AtomicU64) -> Option<Verdict> {
    Some(match standing.fault {
        KeyFault::RateLimit { requests_per_minute, tokens_per_minute } => {
            let window = &mut standing.window;
            while window.front().is_some_and(|entry| expires_in(entry.at, now).is_zero()) {
                window.pop_front();
            }
            match over_limit(requests_per_minute, tokens_per_minute, window, now) {
                Some((exceeded, retry_after)) => Verdict::Refuse(Refusal::RateLimited {
                    exceeded,
                    quota: quota(requests_per_minute, tokens_per_minute, window, now),
                    retry_after,
                }),
                None => {
                    let seq = uses.fetch_add(1, Ordering::Relaxed);
                    window.push_back(Use { at: now, seq, tokens: 0 });
                    Verdict::Admitted(Admission { key: key.to_owned(), seq })
                }
            }
        }
        KeyFault::Throttled { retry_after } => {
            let left = standing
                .since
                .checked_add(retry_after)
                .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
            if left.is_zero() {
                return None;
            }
            Verdict::Refuse(Refusal::Throttled { retry_after: Some(left) })
        }
        ref fault => Verdict::Refuse(counted_refusal(fault.clone())),
    })
}

/// The refusal for one request of a `fail_key_times` fault (and of the standing faults that
/// do not depend on time). A rate limit answers as one that was just used up.
fn counted_refusal(fault: KeyFault) -> Refusal {
    match fault {
        KeyFault::RateLimit { requests_per_minute, tokens_per_minute } => {
            let full = |limit: u32| Limit { limit, used: u64::from(limit), remaining: 0, reset: WINDOW };
            Refusal::RateLimited {
                exceeded: Exceeded::Requests,
                quota: Quota { requests: full(requests_per_minute), tokens: tokens_per_minute.map(full) },
                retry_after: WINDOW,
            }
        }
        KeyFault::Throttled { retry_after } => Refusal::Throttled { retry_after: Some(retry_after) },
        KeyFault::ThrottledNoHint => Refusal::Throttled { retry_after: None },
        KeyFault::Revoked => Refusal::Revoked,
        KeyFault::Forbidden => Refusal::Forbidden,
        KeyFault::Status(status) => Refusal::Status(status),
    }
}

/// How long until a use made at `at` leaves the window.
fn expires_in(at: Instant, now: Instant) -> Duration {
    at.checked_add(WINDOW).map_or(Duration::ZERO, |expiry| expiry.saturating_duration_since(now))
}

/// Which limit the window is at, and how long until a request would be admitted again.
fn over_limit(
    requests_per_minute: u32,
    tokens_per_minute: Option<u32>,
    window: &VecDeque<Use>,
    now: Instant,
) -> Option<(Exceeded, Duration)> {
    let held = u64::try_from(window.len()).unwrap_or(u64::MAX);
    let requests_wait = (held >= u64::from(requests_per_minute)).then(|| {
        // The window must drop to one below the limit: wait for its oldest surplus use.
        let surplus = window.len().saturating_sub(usize::try_from(requests_per_minute).unwrap_or(usize::MAX));
        window.get(surplus).map_or(WINDOW, |entry| expires_in(entry.at, now))
    });
    let tokens_wait = tokens_per_minute.and_then(|limit| {
        let limit = u64::from(limit);
        let mut used: u64 = window.iter().map(|entry| entry.tokens).sum();
        if used < limit {
            return None;
        }
        // Wait until enough tokens have left the window to get below the limit.
        for entry in window {
            used = used.saturating_sub(entry.tokens);
            if used < limit {
                return Some(expires_in(entry.at, now));
            }
        }
        Some(WINDOW)
    });
    match (requests_wait, tokens_wait) {
        (None, None) => None,
        (Some(requests), None) => Some((Exceeded::Requests, requests)),
        (None, Some(tokens)) => Some((Exceeded::Tokens, tokens)),
        (Some(requests), Some(tokens)) => Some((Exceeded::Requests, requests.max(tokens))),
    }
}

fn quota(requests_per_minute: u32, tokens_per_minute: Option<u32>, window: &VecDeque<Use>, now: Instant) -> Quota {
    let held = u64::try_from(window.len()).unwrap_or(u64::MAX);
    let requests = Limit {
        limit: requests_per_minute,
        used: held,
        remaining: u64::from(requests_per_minute).saturating_sub(held),
        reset: window.back().map_or(Duration::ZERO, |entry| expires_in(entry.at, now)),
    };
    let tokens = tokens_per_minute.map(|limit| {
        let used: u64 = window.iter().map(|entry| entry.tokens).sum();
        Limit {
            limit,
            used,
            remaining: u64::from(limit).saturating_sub(used),
            reset: window
                .iter()
                .rev()
                .find(|entry| entry.tokens > 0)
                .map_or(Duration::ZERO, |entry| expires_in(entry.at, now)),
        }
    });
    Quota { requests, tokens }
}

/// The provider's answer to a refused request presenting the key in `auth`.
pub(crate) fn reply(provider: Provider, refusal: &Refusal, auth: &Auth, config: &MockConfig) -> Reply {
    match refusal {
        Refusal::Revoked => {
            let revoked = Auth { presented: auth.presented.clone(), check: KeyCheck::Wrong, detail: None };
            auth::rejection(provider, &revoked, config)
                .unwrap_or_else(|| errors::scripted(provider, StatusCode::UNAUTHORIZED))
        }
        Refusal::Forbidden => forbidden(provider),
        Refusal::Status(status) => {
            errors::scripted(provider, StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        }
        Refusal::Throttled { retry_after } => rate_limited(provider, None, *retry_after),
        Refusal::RateLimited { exceeded, quota, retry_after } => {
            rate_limited(provider, Some((*exceeded, quota)), Some(*retry_after))
        }
    }
}

fn forbidden(provider: Provider) -> Reply {
    let status = StatusCode::FORBIDDEN;
    match provider {
        Provider::OpenAi | Provider::Unknown => errors::openai(
            status,
            "You are not allowed to make this request with this API key: it has lost access to \
             its organization or project.",
            "invalid_request_error",
            None,
            Some("permission_denied"),
        ),
        Provider::AzureOpenAi => {
            errors::azure(status, "PermissionDenied", "Principal does not have access to API/Operation.")
        }
        Provider::Anthropic => errors::anthropic(
            status,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        Provider::Gemini => errors::gemini(status, "The caller does not have permission", "PERMISSION_DENIED"),
        Provider::Bedrock => crate::bedrock::error(
            status,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
    }
}

/// A 429: over a rate limit (`limit`), or throttled (`limit` is `None`); `retry_after` is the
/// hint, if any.
fn rate_limited(provider: Provider, limit: Option<(Exceeded, &Quota)>, retry_after: Option<Duration>) -> Reply {
    let status = StatusCode::TOO_MANY_REQUESTS;
    let seconds = retry_after.map(whole_seconds);
    let mut reply = match provider {
        Provider::OpenAi | Provider::Unknown => {
            let (message, kind) = openai_message(limit, retry_after);
            errors::openai(status, &message, kind, None, Some("rate_limit_exceeded"))
        }
        Provider::AzureOpenAi => {
            let kind = match limit {
                Some((Exceeded::Tokens, _)) => "token",
                _ => "call",
            };
            let retry = match seconds {
                Some(seconds) => format!("Please retry after {seconds} second{}.", if seconds == 1 { "" } else { "s" }),
                None => "Please retry later.".to_owned(),
            };
            errors::azure(
                status,
                "429",
                &format!(
                    "Requests to the Azure OpenAI API have exceeded {kind} rate limit of your current \
                     pricing tier. {retry} Please go here: https://aka.ms/oai/quotaincrease if you \
                     would like to further increase the default rate limit."
                ),
            )
        }
        Provider::Anthropic => {
            let message = match limit {
                Some((exceeded, quota)) => {
                    let (size, unit) = match (exceeded, quota.tokens) {
                        (Exceeded::Tokens, Some(tokens)) => (tokens.limit, "input and output tokens"),
                        _ => (quota.requests.limit, "requests"),
                    };
                    format!(
                        "This request would exceed your organization's rate limit of {size} {unit} per \
                         minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You \
                         can see the response headers for current usage. Please reduce the prompt \
                         length or the maximum tokens requested, or try again later."
                    )
                }
                None => "Number of requests has exceeded your rate limit \
                         (https://docs.claude.com/en/api/rate-limits). Please try again later or \
                         contact sales at https://www.anthropic.com/contact-sales to discuss your \
                         options for a rate limit increase."
                    .to_owned(),
            };
            errors::anthropic(status, "rate_limit_error", &message)
        }
        Provider::Gemini => Reply::json(status, &gemini_body(limit, seconds)),
        Provider::Bedrock => {
            crate::bedrock::error(status, "ThrottlingException", "Too many requests, please wait before trying again.")
        }
    };
    if let (Some(after), Some(seconds)) = (retry_after, seconds) {
        reply = reply.with_header("retry-after", seconds.to_string());
        if provider == Provider::AzureOpenAi {
            let millis = after.as_millis().max(1);
            reply = reply.with_header("retry-after-ms", millis.to_string());
        }
    }
    match (limit, retry_after) {
        (Some((_, quota)), _) => with_quota(reply, provider, quota),
        // A throttled key: out of requests until the hint's instant.
        (None, Some(after)) => match provider {
            Provider::OpenAi | Provider::AzureOpenAi | Provider::Unknown => reply
                .with_header("x-ratelimit-remaining-requests", "0".to_owned())
                .with_header("x-ratelimit-reset-requests", go_duration(after)),
            Provider::Anthropic => reply
                .with_header("anthropic-ratelimit-requests-remaining", "0".to_owned())
                .with_header("anthropic-ratelimit-requests-reset", rfc3339_after(after)),
            Provider::Gemini | Provider::Bedrock => reply,
        },
        (None, None) => reply,
    }
}

fn openai_message(limit: Option<(Exceeded, &Quota)>, retry_after: Option<Duration>) -> (String, &'static str) {
    let retry = match retry_after {
        Some(after) => format!("Please try again in {}.", go_duration(after)),
        None => "Please try again later.".to_owned(),
    };
    let visit = "Visit https://platform.openai.com/account/rate-limits to learn more.";
    match limit {
        Some((Exceeded::Tokens, Quota { tokens: Some(tokens), .. })) => (
            format!(
                "Rate limit reached for tokens per min (TPM) in organization org-mock: Limit {}, Used \
                 {}. {retry} {visit}",
                tokens.limit, tokens.used
            ),
            "tokens",
        ),
        Some((_, quota)) => (
            format!(
                "Rate limit reached for requests per min (RPM) in organization org-mock: Limit {}, \
                 Used {}, Requested 1. {retry} {visit}",
                quota.requests.limit, quota.requests.used
            ),
            "requests",
        ),
        None => (format!("Rate limit reached for requests in organization org-mock. {retry} {visit}"), "requests"),
    }
}

/// Google's 429 `RESOURCE_EXHAUSTED` with its `QuotaFailure` and `RetryInfo` details.
fn gemini_body(limit: Option<(Exceeded, &Quota)>, seconds: Option<u64>) -> Value {
    let mut message = "You exceeded your current quota, please check your plan and billing details. For \
                       more information on this error, head to: \
                       https://ai.google.dev/gemini-api/docs/rate-limits."
        .to_owned();
    let mut details = Vec::new();
    if let Some((exceeded, quota)) = limit {
        let (metric, id, value) = match (exceeded, quota.tokens) {
            (Exceeded::Tokens, Some(tokens)) => (
                "generativelanguage.googleapis.com/generate_content_token_count",
                "GenerateContentTokensPerModelPerMinute",
                tokens.limit,
            ),
            _ => (
                "generativelanguage.googleapis.com/generate_content_requests",
                "GenerateRequestsPerMinutePerProjectPerModel",
                quota.requests.limit,
            ),
        };
        message.push_str(&format!("\n* Quota exceeded for metric: {metric}, limit: {value}"));
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": metric, "quotaId": id, "quotaValue": value.to_string()}]
        }));
    }
    details.push(json!({
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
        }]
    }));
    if let Some(seconds) = seconds {
        message.push_str(&format!("\nPlease retry in {seconds}s."));
        details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{seconds}s")}));
    }
    json!({"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}})
}

/// Adds the provider's rate-limit headers for `quota` (none for Gemini, which sends none).
pub(crate) fn with_quota(reply: Reply, provider: Provider, quota: &Quota) -> Reply {
    let requests = quota.requests;
    match provider {
        Provider::OpenAi | Provider::AzureOpenAi | Provider::Unknown => {
            let reply = reply
                .with_header("x-ratelimit-limit-requests", requests.limit.to_string())
                .with_header("x-ratelimit-remaining-requests", requests.remaining.to_string())
                .with_header("x-ratelimit-reset-requests", go_duration(requests.reset));
            match quota.tokens {
                Some(tokens) => reply
                    .with_header("x-ratelimit-limit-tokens", tokens.limit.to_string())
                    .with_header("x-ratelimit-remaining-tokens", tokens.remaining.to_string())
                    .with_header("x-ratelimit-reset-tokens", go_duration(tokens.reset)),
                None => reply,
            }
        }
        Provider::Anthropic => {
            let reply = reply
                .with_header("anthropic-ratelimit-requests-limit", requests.limit.to_string())
                .with_header("anthropic-ratelimit-requests-remaining", requests.remaining.to_string())
                .with_header("anthropic-ratelimit-requests-reset", rfc3339_after(requests.reset));
            match quota.tokens {
                Some(tokens) => reply
                    .with_header("anthropic-ratelimit-tokens-limit", tokens.limit.to_string())
                    .with_header("anthropic-ratelimit-tokens-remaining", tokens.remaining.to_string())
                    .with_header("anthropic-ratelimit-tokens-reset", rfc3339_after(tokens.reset)),
                None => reply,
            }
        }
        Provider::Gemini | Provider::Bedrock => reply,
    }
}

/// Whole seconds, rounded up, at least 1: a `Retry-After` value.
fn whole_seconds(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

/// A duration as OpenAI writes its `x-ratelimit-reset-*` headers (Go's `time.Duration`
/// format), to the millisecond rounded up: `20ms`, `1s`, `8.64s`, `6m0s`, `1h2m3.004s`.
pub(crate) fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis() + u128::from(!duration.subsec_nanos().is_multiple_of(1_000_000));
    if millis == 0 {
        return "0s".to_owned();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let hours = millis / 3_600_000;
    let minutes = millis / 60_000 % 60;
    let seconds = millis / 1000 % 60;
    let fraction = millis % 1000;
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&seconds.to_string());
    if fraction > 0 {
        let fraction = format!("{fraction:03}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('s');
    text
}

/// The instant `after` from now as an RFC 3339 UTC timestamp to the second (rounded up), as
/// Anthropic writes its `anthropic-ratelimit-*-reset` headers.
fn rfc3339_after(after: Duration) -> String {
    let at = SystemTime::now().checked_add(after).unwrap_or_else(SystemTime::now);
    rfc3339(at.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// `since_epoch` as `YYYY-MM-DDTHH:MM:SSZ`, rounded up to the second.
pub(crate) fn rfc3339(since_epoch: Duration) -> String {
    let seconds = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
    let (year, month, day) = civil_from_days(i64::try_from(seconds / 86_400).unwrap_or(0));
    let of_day = seconds % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", of_day / 3600, of_day / 60 % 60, of_day % 60)
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_like_go() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_micros(1), "1ms"),
            (Duration::from_millis(20), "20ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(8_640), "8.64s"),
            (Duration::from_millis(59_200), "59.2s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_millis(3_723_004), "1h2m3.004s"),
        ] {
            assert_eq!(go_duration(duration), text, "{duration:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(Duration::from_millis(1_767_225_599_001)), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(Duration::from_secs(1_709_251_199)), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1_500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(60)), 60);
    }

    #[test]
    fn a_rate_limit_refuses_past_its_requests_and_tokens() {
        let faults = Faults::default();
        faults.set("k", KeyFault::RateLimit { requests_per_minute: 2, tokens_per_minute: Some(10) });
        let Verdict::Admitted(first) = faults.check("k") else { panic!("first request admitted") };
        let quota = faults.charge(&first, 4).unwrap_or_else(|| panic!("charged"));
        assert_eq!((quota.requests.remaining, quota.tokens.map(|tokens| tokens.remaining)), (1, Some(6)));
        let Verdict::Admitted(second) = faults.check("k") else { panic!("second request admitted") };
        faults.charge(&second, 4);
        let Verdict::Refuse(Refusal::RateLimited { exceeded, retry_after, .. }) = faults.check("k") else {
            panic!("third request refused")
        };
        assert_eq!(exceeded, Exceeded::Requests);
        assert!(retry_after > Duration::from_secs(59) && retry_after <= WINDOW);

        faults.set("k", KeyFault::RateLimit { requests_per_minute: 10, tokens_per_minute: Some(10) });
        let Verdict::Admitted(big) = faults.check("k") else { panic!("admitted") };
        faults.charge(&big, 12);
        let Verdict::Refuse(Refusal::RateLimited { exceeded, .. }) = faults.check("k") else { panic!("refused") };
        assert_eq!(exceeded, Exceeded::Tokens);
        assert!(matches!(faults.check("other"), Verdict::Serve));
    }
}
