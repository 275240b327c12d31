//! Rate limits on the data plane's hot path: `rpm` and `tpm` per limit subject.
//!
//! # Semantics
//!
//! * `rpm` counts the calls **admitted** in the last 60 seconds; `tpm` counts the input +
//!   output tokens of the calls **completed** in the last 60 seconds (reported with
//!   [`Limiter::add_tokens`]). A call is admitted while every count is below its limit.
//! * The window is a **sliding window at one-second granularity**: each (key, metric) keeps
//!   a ring of 60 one-second buckets, and "the last 60 seconds" is the current second plus
//!   the 59 before it. Memory is O(1) per key (two rings of 60 counters); a key whose
//!   buckets have all left the window is dropped within a minute.
//! * A refused call gets `retry_after_secs` (>= 1, <= 60): the number of whole seconds
//!   until enough of the oldest buckets have left the window for the blocking count to be
//!   below its limit again. A limit of 0 refuses everything with a `retry_after_secs` of 60.
//! * [`Limiter::admit`] is all-or-nothing over its subjects: it counts one call against
//!   every `rpm` only if every limit has room, and otherwise counts nothing.
//!
//! # Backends
//!
//! * **Local** (no `redis_url`): the rings live in this process behind one mutex whose
//!   critical section is a few hash lookups and at most 60 additions per ring; no I/O and
//!   no allocation per call beyond the first sighting of a key.
//! * **Redis** (`redis_url` set, "fleet mode"): one limit shared by every node. `admit` runs
//!   one Lua script (EVALSHA) that, atomically for all subjects, reads each key's buckets,
//!   checks every limit and only if all have room increments the `rpm` buckets. The bucket
//!   second is Redis's `TIME`, read inside the script, so that clock skew between nodes
//!   does not move the window (Redis >= 5 replicates scripts by effect, so `TIME` is
//!   allowed). Each (key, metric) is one hash `<prefix><key>:rpm` / `<prefix><key>:tpm`
//!   whose fields are unix seconds; fields older than the window are deleted when read and
//!   every write sets `EXPIRE 61`, so nothing grows forever. The script touches several
//!   keys, so this is for a single Redis (or a primary with replicas), not Redis Cluster.
//!   `add_tokens` is fire-and-forget: a spawned script (`HINCRBY` + `EXPIRE`), at most
//!   [`MAX_TOKEN_WRITES_IN_FLIGHT`] at a time; beyond that a write is dropped (logged).
//! * **Redis unreachable**: when a Redis operation fails or takes longer than
//!   `op_timeout`, the limiter falls back to the local rings, enforcing each limit's share
//!   `max(1, limit / live_nodes)` (a live-node count of 0 is taken as 1), logs the
//!   transition once, and re-probes Redis in the background at most once per second (calls
//!   meanwhile do not touch Redis). When a probe succeeds it goes back to Redis and logs
//!   that. No call waits on Redis longer than `op_timeout`. The local rings also count the
//!   calls and tokens seen while Redis enforces, so the fallback starts from this node's
//!   own recent traffic rather than from zero; tokens reported while Redis is unreachable
//!   are counted locally only.
//!
//! # Accuracy
//!
//! * `rpm` is exact: with Redis, concurrent admissions on any number of nodes never admit
//!   more than the limit (the check and the increment are one atomic script).
//! * `tpm` can overshoot: tokens are counted when a call completes, so every call admitted
//!   while others are in flight sees a window without their tokens, and with Redis a
//!   completed call's fire-and-forget token write may not have landed yet either. The
//!   overshoot is bounded by the tokens of the calls in flight when the limit is crossed
//!   plus those of the writes still pending (roughly 2 × concurrency × tokens per call).
//!   `tests/limits_redis.rs` measures it: 16 concurrent calls of 100 tokens (50 ms each,
//!   all started together, two nodes) against a 1,000 tpm limit end at 2,800–3,200 tokens
//!   counted, i.e. 1,800–2,200 over. `rpm` is not affected (it counts at admission).
//! * A Redis script that times out on this side may still have run on the server; its
//!   `rpm` increment then counts against the limit although the call was decided locally,
//!   which errs on the side of refusing.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

/// Width of the sliding window, in one-second buckets.
const WINDOW_SECS: u64 = 60;
/// How long a Redis hash outlives its last write (one second more than the window).
const REDIS_TTL_SECS: u64 = WINDOW_SECS + 1;
/// Token writes to Redis that may be pending at once; further ones are dropped.
pub const MAX_TOKEN_WRITES_IN_FLIGHT: usize = 1024;
/// Minimum time between two probes of an unreachable Redis.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A limit subject's key, e.g. `"org:<id>"`, `"team:<id>"`, `"tok:<id>"`, `"cred:<id>"`
/// (built by the caller). Cloning is cheap (a shared string).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LimitKey(pub Arc<str>);

impl LimitKey {
    /// A key from its text.
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        Self(key.into())
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for LimitKey {
    fn from(key: &str) -> Self {
        Self(key.into())
    }
}

impl From<String> for LimitKey {
    fn from(key: String) -> Self {
        Self(key.into())
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subject's limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limit {
    /// Calls admitted in the last 60 seconds.
    pub rpm: Option<u64>,
    /// Input + output tokens of the calls completed in the last 60 seconds.
    pub tpm: Option<u64>,
}

impl Limit {
    /// Whether any limit is set (subjects without one are skipped).
    pub fn is_limited(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }
}

/// Which count refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Calls admitted in the window.
    Rpm,
    /// Tokens of the calls completed in the window.
    Tpm,
}

impl Metric {
    /// `"rpm"` or `"tpm"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Rpm => "rpm",
            Metric::Tpm => "tpm",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: which subject and count blocked the call, and when to retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{metric} limit of {limit} for {key} reached; retry after {retry_after_secs} s")]
pub struct Exceeded {
    /// The subject whose limit blocked the call.
    pub key: LimitKey,
    /// The count that blocked it.
    pub metric: Metric,
    /// The limit enforced: the configured one, or this node's share of it while Redis is
    /// unreachable.
    pub limit: u64,
    /// Whole seconds (1..=60) until the count will have dropped below the limit; the
    /// value for a `Retry-After` header.
    pub retry_after_secs: u64,
}

/// What is enforcing the limits now (for `/readyz` and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// No Redis configured: this node's own counts.
    Local,
    /// Redis: one limit shared by the fleet.
    Redis,
    /// Redis is configured but unreachable: this node enforces its share of each limit.
    RedisUnreachable {
        /// The live-node count the shares are computed with (at least 1).
        live_nodes: u64,
    },
}

/// How the limiter is set up.
#[derive(Clone)]
pub struct LimiterConfig {
    /// Redis for fleet-wide limits (`redis://[user:password@]host[:port][/db]`); `None`
    /// keeps the limits per node.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, e.g. `"byok:limits:"`.
    pub key_prefix: String,
    /// The longest a call waits on Redis before falling back (default 200 ms).
    pub op_timeout: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self { redis_url: None, key_prefix: "byok:limits:".to_owned(), op_timeout: Duration::from_millis(200) }
    }
}

impl fmt::Debug for LimiterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimiterConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("key_prefix", &self.key_prefix)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// Why a [`Limiter`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimiterError {
    /// `redis_url` is not a usable Redis URL (the password, if any, is not shown).
    #[error("invalid rate-limit redis_url {url:?}")]
    InvalidRedisUrl {
        /// The URL, with any password replaced.
        url: String,
        /// What the Redis client said.
        #[source]
        source: redis::RedisError,
    },
}

/// The rate limiter: shared by every request via `Arc`, `Send + Sync`.
pub struct Limiter {
    local: Mutex<LocalState>,
    clock: Clock,
    live_nodes: Arc<AtomicU64>,
    fleet: Option<Arc<Fleet>>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").field("backend", &self.backend_state()).finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter; with `redis_url`, fleet-wide through Redis. `live_nodes` is the number of
    /// live nodes, kept up to date by the caller (used for the fallback shares). Does not
    /// connect: when called inside a Tokio runtime it starts connecting in the background,
    /// otherwise the first call connects. A `redis_url` the client rejects is an error.
    pub fn new(config: LimiterConfig, live_nodes: Arc<AtomicU64>) -> Result<Arc<Self>, LimiterError> {
        Self::with_clock(config, live_nodes, Clock::monotonic())
    }

    fn with_clock(config: LimiterConfig, live_nodes: Arc<AtomicU64>, clock: Clock) -> Result<Arc<Self>, LimiterError> {
        let fleet = match &config.redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|source| LimiterError::InvalidRedisUrl { url: redact_url(url), source })?;
                Some(Arc::new(Fleet::new(client, redact_url(url), &config)))
            }
        };
        if let Some(fleet) = &fleet {
            fleet.start_probe();
        }
        Ok(Arc::new(Self { local: Mutex::new(LocalState::default()), clock, live_nodes, fleet }))
    }

    /// All-or-nothing: if every (key, limit) has room, counts one call against each `rpm`
    /// and returns `Ok`; otherwise counts nothing and returns the [`Exceeded`] with the
    /// longest `retry_after_secs` among the exceeded limits. Subjects without limits are
    /// skipped; a `tpm`-only subject is checked but counts nothing here.
    pub async fn admit(&self, subjects: &[(LimitKey, Limit)]) -> Result<(), Exceeded> {
        if !subjects.iter().any(|(_, limit)| limit.is_limited()) {
            return Ok(());
        }
        let Some(fleet) = &self.fleet else {
            return self.admit_local(subjects, 1);
        };
        if fleet.is_down() {
            fleet.maybe_probe();
        } else {
            match fleet.admit(subjects).await {
                Ok(outcome) => {
                    if outcome.is_ok() {
                        self.record_calls_local(subjects);
                    }
                    return outcome;
                }
                Err(reason) => fleet.mark_down(&reason),
            }
        }
        self.admit_local(subjects, self.live_nodes())
    }

    /// Counts `tokens` (a completed call's input + output) against each key's `tpm` window.
    /// Never blocks: with Redis, the write is spawned (and dropped if
    /// [`MAX_TOKEN_WRITES_IN_FLIGHT`] are already pending).
    pub fn add_tokens(&self, keys: &[LimitKey], tokens: u64) {
        if tokens == 0 || keys.is_empty() {
            return;
        }
        let now = self.clock.now_secs();
        {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            for key in keys {
                local.entry(key, now).tpm.add(now, tokens);
            }
        }
        if let Some(fleet) = &self.fleet {
            fleet.add_tokens(keys, tokens);
        }
    }

    /// What is enforcing the limits now. While Redis is unreachable this also lets a
    /// probe start (at most one per second), so that a polled `/readyz` sees recovery.
    pub fn backend(&self) -> Backend {
        if let Some(fleet) = &self.fleet {
            if fleet.is_down() {
                fleet.maybe_probe();
            }
        }
        self.backend_state()
    }

    fn backend_state(&self) -> Backend {
        match &self.fleet {
            None => Backend::Local,
            Some(fleet) if fleet.is_down() => Backend::RedisUnreachable { live_nodes: self.live_nodes() },
            Some(_) => Backend::Redis,
        }
    }

    fn live_nodes(&self) -> u64 {
        self.live_nodes.load(Ordering::Relaxed).max(1)
    }

    /// Checks every limit (divided among `nodes`) against the local rings and, if all
    /// have room, counts the call.
    fn admit_local(&self, subjects: &[(LimitKey, Limit)], nodes: u64) -> Result<(), Exceeded> {
        let now = self.clock.now_secs();
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        local.sweep(now);
        let mut worst: Option<Exceeded> = None;
        for (key, limit) in subjects {
            if !limit.is_limited() {
                continue;
            }
            let Some(state) = local.keys.get_mut(key) else {
                // Nothing counted yet: only a limit of 0 refuses.
                for (metric, value) in [(Metric::Rpm, limit.rpm), (Metric::Tpm, limit.tpm)] {
                    if value.map(|v| share(v, nodes)) == Some(0) {
                        note_worst(&mut worst, key, metric, 0, WINDOW_SECS);
                    }
                }
                continue;
            };
            for (metric, value, ring) in
                [(Metric::Rpm, limit.rpm, &mut state.rpm), (Metric::Tpm, limit.tpm, &mut state.tpm)]
            {
                let Some(value) = value else { continue };
                let enforced = share(value, nodes);
                ring.advance(now);
                if ring.total() >= enforced {
                    note_worst(&mut worst, key, metric, enforced, ring.retry_after(enforced));
                }
            }
        }
        if let Some(exceeded) = worst {
            return Err(exceeded);
        }
        for (key, limit) in subjects {
            if limit.rpm.is_some() {
                local.entry(key, now).rpm.add(now, 1);
            }
        }
        Ok(())
    }

    /// Mirrors a call Redis admitted into the local rings.
    fn record_calls_local(&self, subjects: &[(LimitKey, Limit)]) {
        let now = self.clock.now_secs();
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        local.sweep(now);
        for (key, limit) in subjects {
            if limit.rpm.is_some() {
                local.entry(key, now).rpm.add(now, 1);
            }
        }
    }
}

/// A limit's share on one of `nodes` nodes: `max(1, limit / nodes)`, and 0 for 0.
fn share(limit: u64, nodes: u64) -> u64 {
    if limit == 0 {
        0
    } else {
        (limit / nodes.max(1)).max(1)
    }
}

/// Keeps the refusal with the longest retry (the first on a tie).
fn note_worst(worst: &mut Option<Exceeded>, key: &LimitKey, metric: Metric, limit: u64, retry: u64) {
    if worst.as_ref().is_none_or(|w| retry > w.retry_after_secs) {
        *worst = Some(Exceeded { key: key.clone(), metric, limit, retry_after_secs: retry });
    }
}

// ----------------------------------------------------------------------------------------
// Local rings
// ----------------------------------------------------------------------------------------

/// The limiter's time source, in whole seconds.
#[derive(Clone, Debug)]
enum Clock {
    /// Seconds since the limiter was built (monotonic).
    Monotonic(Instant),
    /// A second set by tests.
    #[cfg(test)]
    Manual(Arc<AtomicU64>),
}

impl Clock {
    fn monotonic() -> Self {
        Clock::Monotonic(Instant::now())
    }

    fn now_secs(&self) -> u64 {
        match self {
            Clock::Monotonic(start) => start.elapsed().as_secs(),
            #[cfg(test)]
            Clock::Manual(now) => now.load(Ordering::SeqCst),
        }
    }
}

/// 60 one-second buckets; `head` is the latest second the ring has advanced to.
#[derive(Clone, Debug)]
struct Ring {
    counts: [u64; WINDOW_SECS as usize],
    head: u64,
}

impl Default for Ring {
    fn default() -> Self {
        Self { counts: [0; WINDOW_SECS as usize], head: 0 }
    }
}

impl Ring {
    fn slot(second: u64) -> usize {
        // `second % 60` is below 60, so the cast is lossless.
        (second % WINDOW_SECS) as usize
    }

    /// Moves the window to `now`, emptying the buckets of the seconds that left it. A
    /// clock that went backwards is taken as standing still.
    fn advance(&mut self, now: u64) {
        if now <= self.head {
            return;
        }
        if now - self.head >= WINDOW_SECS {
            self.counts = [0; WINDOW_SECS as usize];
        } else {
            for second in self.head + 1..=now {
                self.counts[Self::slot(second)] = 0;
            }
        }
        self.head = now;
    }

    /// The count in the window (after [`Ring::advance`]).
    fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |sum, c| sum.saturating_add(*c))
    }

    fn add(&mut self, now: u64, n: u64) {
        self.advance(now);
        let slot = &mut self.counts[Self::slot(self.head)];
        *slot = slot.saturating_add(n);
    }

    /// Whole seconds until the count is below `limit` (after [`Ring::advance`]): the
    /// bucket of second `head - age` leaves the window in `60 - age` seconds.
    fn retry_after(&self, limit: u64) -> u64 {
        let total = self.total();
        let mut gone = 0u64;
        for age in (0..WINDOW_SECS).rev() {
            let second = self.head + WINDOW_SECS - age; // ≡ head - age (mod 60)
            gone = gone.saturating_add(self.counts[Self::slot(second)]);
            if total - gone < limit {
                return WINDOW_SECS - age;
            }
        }
        WINDOW_SECS
    }
}

#[derive(Clone, Debug, Default)]
struct KeyState {
    rpm: Ring,
    tpm: Ring,
    /// The last second anything was counted; a key idle for a whole window is dropped.
    last_write: u64,
}

#[derive(Debug, Default)]
struct LocalState {
    keys: HashMap<LimitKey, KeyState>,
    last_sweep: u64,
}

impl LocalState {
    fn entry(&mut self, key: &LimitKey, now: u64) -> &mut KeyState {
        // Cloning the key is a reference-count increment, not an allocation.
        let state = self.keys.entry(key.clone()).or_default();
        state.last_write = state.last_write.max(now);
        state
    }

    /// At most once a window, drops the keys with nothing left in it.
    fn sweep(&mut self, now: u64) {
        if now < self.last_sweep + WINDOW_SECS {
            return;
        }
        self.last_sweep = now;
        self.keys.retain(|_, state| now.saturating_sub(state.last_write) < WINDOW_SECS);
    }
}

// ----------------------------------------------------------------------------------------
// Redis
// ----------------------------------------------------------------------------------------

/// The admission script. KEYS: per subject, its rpm hash then its tpm hash. ARGV: per
/// subject, its rpm limit then its tpm limit, `-1` for none. Hash fields are unix seconds
/// (Redis `TIME`), values the counts of that second. Returns `{1}` when admitted (rpm
/// buckets incremented), or `{0, subject (1-based), metric (0 rpm, 1 tpm), retry secs}` for
/// the exceeded limit with the longest retry (nothing incremented). With no keys it only
/// answers `{1}` (the probe).
const ADMIT_LUA: &str = r#"
local t = redis.call('TIME')
local now_field = t[1]
local now = tonumber(now_field)
local lo = now - 59
local ttl = tonumber(ARGV[#ARGV])

-- Sums a hash's buckets in the window, deletes the stale ones, and returns 0 if the sum is
-- below the limit, else the seconds until it will be.
local function check(key, limit)
  local flat = redis.call('HGETALL', key)
  local counts = {}
  local total = 0
  local stale = {}
  for j = 1, #flat, 2 do
    local sec = tonumber(flat[j])
    local v = tonumber(flat[j + 1])
    if sec == nil or v == nil or sec < lo then
      stale[#stale + 1] = flat[j]
    else
      if sec > now then sec = now end
      total = total + v
      counts[sec] = (counts[sec] or 0) + v
    end
  end
  for j = 1, #stale, 500 do
    redis.call('HDEL', key, unpack(stale, j, math.min(j + 499, #stale)))
  end
  if total < limit then return 0 end
  local gone = 0
  for s = lo, now do
    local c = counts[s]
    if c then
      gone = gone + c
      if total - gone < limit then return s + 60 - now end
    end
  end
  return 60
end

local n = (#KEYS) / 2
local worst, worst_i, worst_m = 0, 0, 0
for i = 1, n do
  local rpm = tonumber(ARGV[2 * i - 1])
  local tpm = tonumber(ARGV[2 * i])
  if rpm >= 0 then
    local r = check(KEYS[2 * i - 1], rpm)
    if r > worst then worst, worst_i, worst_m = r, i, 0 end
  end
  if tpm >= 0 then
    local r = check(KEYS[2 * i], tpm)
    if r > worst then worst, worst_i, worst_m = r, i, 1 end
  end
end
if worst > 0 then
  return {0, worst_i, worst_m, worst}
end
for i = 1, n do
  if tonumber(ARGV[2 * i - 1]) >= 0 then
    redis.call('HINCRBY', KEYS[2 * i - 1], now_field, 1)
    redis.call('EXPIRE', KEYS[2 * i - 1], ttl)
  end
end
return {1}
"#;

/// The token script. KEYS: tpm hashes. ARGV: tokens, TTL. Adds the tokens to the current
/// second's bucket of each hash; a hash that only gets tokens (never checked) is pruned
/// here once it holds more than two windows of fields.
const TOKENS_LUA: &str = r#"
local t = redis.call('TIME')
local now_field = t[1]
local lo = tonumber(now_field) - 59
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], now_field, ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
  if redis.call('HLEN', KEYS[i]) > 120 then
    local fields = redis.call('HKEYS', KEYS[i])
    for _, f in ipairs(fields) do
      local sec = tonumber(f)
      if sec == nil or sec < lo then redis.call('HDEL', KEYS[i], f) end
    end
  end
end
return 1
"#;

/// Why a Redis operation did not give an answer.
#[derive(Debug, thiserror::Error)]
enum FleetError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("unexpected script reply {0:?}")]
    BadReply(Vec<i64>),
    #[error("not inside a Tokio runtime")]
    NoRuntime,
}

/// The Redis side: connection, scripts and the reachable/unreachable state.
struct Fleet {
    client: redis::Client,
    /// The URL for logs, without password.
    url: String,
    manager: OnceLock<ConnectionManager>,
    prefix: String,
    op_timeout: Duration,
    admit_script: Script,
    tokens_script: Script,
    down: AtomicBool,
    probing: AtomicBool,
    /// Milliseconds since `started` of the last probe (or of going down).
    last_probe_ms: AtomicU64,
    started: Instant,
    token_writes: AtomicUsize,
    dropping_tokens: AtomicBool,
}

/// Decrements the pending token writes when a spawned write ends (or is dropped).
struct TokenWrite(Arc<Fleet>);

impl Drop for TokenWrite {
    fn drop(&mut self) {
        self.0.token_writes.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Fleet {
    fn new(client: redis::Client, url: String, config: &LimiterConfig) -> Self {
        Self {
            client,
            url,
            manager: OnceLock::new(),
            prefix: config.key_prefix.clone(),
            op_timeout: config.op_timeout,
            admit_script: Script::new(ADMIT_LUA),
            tokens_script: Script::new(TOKENS_LUA),
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            last_probe_ms: AtomicU64::new(0),
            started: Instant::now(),
            token_writes: AtomicUsize::new(0),
            dropping_tokens: AtomicBool::new(false),
        }
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn key(&self, key: &LimitKey, metric: Metric) -> String {
        format!("{}{}:{}", self.prefix, key, metric)
    }

    /// The connection manager, made on first use (it needs the runtime). It connects
    /// lazily and reconnects after a failure on its own; every use is bounded by
    /// `op_timeout` here.
    fn manager(&self) -> Result<ConnectionManager, FleetError> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(FleetError::NoRuntime);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }

    async fn admit(&self, subjects: &[(LimitKey, Limit)]) -> Result<Result<(), Exceeded>, FleetError> {
        let active = || subjects.iter().filter(|(_, limit)| limit.is_limited());
        let mut invocation = self.admit_script.prepare_invoke();
        for (key, limit) in active() {
            invocation.key(self.key(key, Metric::Rpm)).key(self.key(key, Metric::Tpm));
            invocation.arg(limit.rpm.map_or(-1, saturating_i64)).arg(limit.tpm.map_or(-1, saturating_i64));
        }
        invocation.arg(REDIS_TTL_SECS);
        let mut manager = self.manager()?;
        let reply: Vec<i64> = tokio::time::timeout(self.op_timeout, invocation.invoke_async(&mut manager))
            .await
            .map_err(|_| FleetError::Timeout(self.op_timeout))??;
        match reply.as_slice() {
            [1] => Ok(Ok(())),
            &[0, index, metric, retry] => {
                let subject = usize::try_from(index).ok().and_then(|i| i.checked_sub(1)).and_then(|i| active().nth(i));
                let (metric, limit) = match (metric, subject) {
                    (0, Some((_, limit))) => (Metric::Rpm, limit.rpm),
                    (1, Some((_, limit))) => (Metric::Tpm, limit.tpm),
                    _ => (Metric::Rpm, None),
                };
                match (subject, limit) {
                    (Some((key, _)), Some(limit)) => Ok(Err(Exceeded {
                        key: key.clone(),
                        metric,
                        limit,
                        retry_after_secs: u64::try_from(retry).unwrap_or(WINDOW_SECS).clamp(1, WINDOW_SECS),
                    })),
                    _ => Err(FleetError::BadReply(reply)),
                }
            }
            _ => Err(FleetError::BadReply(reply)),
        }
    }

    /// Spawns the Redis write of a completed call's tokens, unless Redis is down (then the
    /// local count is all there is) or too many writes are pending.
    fn add_tokens(self: &Arc<Self>, keys: &[LimitKey], tokens: u64) {
        if self.is_down() {
            self.maybe_probe();
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.token_writes.fetch_add(1, Ordering::AcqRel) >= MAX_TOKEN_WRITES_IN_FLIGHT {
            self.token_writes.fetch_sub(1, Ordering::AcqRel);
            if !self.dropping_tokens.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    max_in_flight = MAX_TOKEN_WRITES_IN_FLIGHT,
                    "rate limits: too many token writes pending on Redis; dropping some (tpm undercounts)"
                );
            }
            return;
        }
        if self.dropping_tokens.swap(false, Ordering::AcqRel) {
            tracing::info!("rate limits: token writes to Redis keep up again");
        }
        let guard = TokenWrite(Arc::clone(self));
        let keys: Vec<String> = keys.iter().map(|key| self.key(key, Metric::Tpm)).collect();
        runtime.spawn(async move {
            let fleet = Arc::clone(&guard.0);
            if let Err(reason) = fleet.write_tokens(&keys, tokens).await {
                fleet.mark_down(&reason);
            }
            drop(guard);
        });
    }

    async fn write_tokens(&self, keys: &[String], tokens: u64) -> Result<(), FleetError> {
        let mut invocation = self.tokens_script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation.arg(saturating_i64(tokens)).arg(REDIS_TTL_SECS);
        let mut manager = self.manager()?;
        let _: i64 = tokio::time::timeout(self.op_timeout, invocation.invoke_async(&mut manager))
            .await
            .map_err(|_| FleetError::Timeout(self.op_timeout))??;
        Ok(())
    }

    /// Goes to the local fallback (logged on the transition only).
    fn mark_down(&self, reason: &FleetError) {
        if !self.down.swap(true, Ordering::AcqRel) {
            self.last_probe_ms.store(self.now_ms(), Ordering::Release);
            tracing::warn!(
                redis = %self.url,
                error = %reason,
                "rate limits: Redis unreachable; enforcing each limit's per-node share locally"
            );
        }
    }

    /// Back to Redis (logged on the transition only).
    fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(redis = %self.url, "rate limits: Redis reachable again; limits are fleet-wide");
        }
    }

    /// Starts a background probe if none ran in the last second and none is running.
    fn maybe_probe(self: &Arc<Self>) {
        let now = self.now_ms();
        let last = self.last_probe_ms.load(Ordering::Acquire);
        if now < last.saturating_add(millis(PROBE_INTERVAL)) {
            return;
        }
        if self.last_probe_ms.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return;
        }
        self.start_probe();
    }

    /// Spawns one probe (if inside a runtime and none is running): the admission script
    /// with no keys, bounded by `op_timeout`.
    fn start_probe(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let fleet = Arc::clone(self);
        runtime.spawn(async move {
            let outcome = fleet.probe().await;
            fleet.probing.store(false, Ordering::Release);
            match outcome {
                Ok(()) => fleet.mark_up(),
                Err(reason) => fleet.mark_down(&reason),
            }
        });
    }

    async fn probe(&self) -> Result<(), FleetError> {
        let mut manager = self.manager()?;
        let attempt = async {
            // After a failure the manager reconnects in the background, so a first error
            // may be the stale one: one more try picks up the fresh connection.
            let mut outcome = self.admit_script.arg(REDIS_TTL_SECS).invoke_async::<Vec<i64>>(&mut manager).await;
            if outcome.is_err() {
                outcome = self.admit_script.arg(REDIS_TTL_SECS).invoke_async::<Vec<i64>>(&mut manager).await;
            }
            outcome
        };
        let reply = tokio::time::timeout(self.op_timeout, attempt)
            .await
            .map_err(|_| FleetError::Timeout(self.op_timeout))??;
        if reply == [1] {
            Ok(())
        } else {
            Err(FleetError::BadReply(reply))
        }
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `scheme://user:password@host/…` → `scheme://user:***@host/…`; a userinfo without
/// `:` is masked whole (it may be a token).
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:***{host}"),
        None => format!("{scheme}***{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_limiter() -> (Arc<Limiter>, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_000));
        let limiter =
            Limiter::with_clock(LimiterConfig::default(), Arc::new(AtomicU64::new(1)), Clock::Manual(Arc::clone(&now)))
                .unwrap();
        (limiter, now)
    }

    fn rpm(n: u64) -> Limit {
        Limit { rpm: Some(n), tpm: None }
    }

    fn tpm(n: u64) -> Limit {
        Limit { rpm: None, tpm: Some(n) }
    }

    fn key(s: &str) -> LimitKey {
        LimitKey::from(s)
    }

    #[tokio::test]
    async fn admits_exactly_rpm_then_refuses() {
        let (limiter, _) = local_limiter();
        let subjects = [(key("org:a"), rpm(5))];
        for _ in 0..5 {
            limiter.admit(&subjects).await.unwrap();
        }
        let refused = limiter.admit(&subjects).await.unwrap_err();
        assert_eq!(refused.key, key("org:a"));
        assert_eq!(refused.metric, Metric::Rpm);
        assert_eq!(refused.limit, 5);
        assert!((1..=60).contains(&refused.retry_after_secs), "{refused:?}");
        // All five in the current second: they leave the window together in 60 s.
        assert_eq!(refused.retry_after_secs, 60);
        assert_eq!(limiter.backend(), Backend::Local);
    }

    #[tokio::test]
    async fn refusal_counts_nothing_on_other_subjects() {
        let (limiter, _) = local_limiter();
        let org = (key("org:a"), rpm(10));
        let team = (key("team:t"), rpm(2));
        limiter.admit(std::slice::from_ref(&team)).await.unwrap();
        limiter.admit(std::slice::from_ref(&team)).await.unwrap();
        // The team is full: the org must not be charged for the refused calls.
        for _ in 0..20 {
            let refused = limiter.admit(&[org.clone(), team.clone()]).await.unwrap_err();
            assert_eq!(refused.key, key("team:t"));
        }
        for _ in 0..10 {
            limiter.admit(std::slice::from_ref(&org)).await.unwrap();
        }
        assert_eq!(limiter.admit(std::slice::from_ref(&org)).await.unwrap_err().key, key("org:a"));
    }

    #[tokio::test]
    async fn longest_retry_wins() {
        let (limiter, now) = local_limiter();
        let a = (key("tok:a"), rpm(1));
        let b = (key("tok:b"), rpm(1));
        limiter.admit(std::slice::from_ref(&a)).await.unwrap(); // t = 1000: a's call leaves at 1060
        now.store(1_030, Ordering::SeqCst);
        limiter.admit(std::slice::from_ref(&b)).await.unwrap(); // t = 1030: b's leaves at 1090
        let refused = limiter.admit(&[a.clone(), b.clone()]).await.unwrap_err();
        assert_eq!(refused.key, key("tok:b"));
        assert_eq!(refused.retry_after_secs, 60);
        let refused = limiter.admit(std::slice::from_ref(&a)).await.unwrap_err();
        assert_eq!(refused.retry_after_secs, 30);
    }

    #[tokio::test]
    async fn window_slides_one_second_at_a_time() {
        let (limiter, now) = local_limiter();
        let subjects = [(key("org:a"), rpm(3))];
        for t in [1_000, 1_010, 1_020] {
            now.store(t, Ordering::SeqCst);
            limiter.admit(&subjects).await.unwrap();
        }
        now.store(1_030, Ordering::SeqCst);
        // The oldest call (second 1000) leaves the window at 1060.
        assert_eq!(limiter.admit(&subjects).await.unwrap_err().retry_after_secs, 30);
        now.store(1_059, Ordering::SeqCst);
        assert_eq!(limiter.admit(&subjects).await.unwrap_err().retry_after_secs, 1);
        now.store(1_060, Ordering::SeqCst);
        limiter.admit(&subjects).await.unwrap();
        // Full again: next to leave is second 1010, at 1070.
        assert_eq!(limiter.admit(&subjects).await.unwrap_err().retry_after_secs, 10);
        // Long idle: everything left the window.
        now.store(5_000, Ordering::SeqCst);
        for _ in 0..3 {
            limiter.admit(&subjects).await.unwrap();
        }
        assert!(limiter.admit(&subjects).await.is_err());
    }

    #[tokio::test]
    async fn tokens_past_tpm_refuse_the_next_call() {
        let (limiter, now) = local_limiter();
        let subjects = [(key("org:a"), tpm(1_000))];
        limiter.admit(&subjects).await.unwrap();
        limiter.add_tokens(&[key("org:a")], 600);
        limiter.admit(&subjects).await.unwrap(); // 600 < 1000
        now.store(1_005, Ordering::SeqCst);
        limiter.add_tokens(&[key("org:a")], 600); // 1200 >= 1000
        let refused = limiter.admit(&subjects).await.unwrap_err();
        assert_eq!(refused.metric, Metric::Tpm);
        assert_eq!(refused.limit, 1_000);
        // Dropping the 600 of second 1000 (at 1060) brings it to 600 < 1000.
        assert_eq!(refused.retry_after_secs, 55);
        // A tpm-only subject counts no call: admitting did not touch any rpm.
        now.store(1_065, Ordering::SeqCst);
        limiter.admit(&subjects).await.unwrap();
        // One call's tokens above the limit by itself block for the whole window.
        limiter.add_tokens(&[key("org:a")], 5_000);
        assert_eq!(limiter.admit(&subjects).await.unwrap_err().retry_after_secs, 60);
    }

    #[tokio::test]
    async fn unlimited_subjects_are_skipped() {
        let (limiter, _) = local_limiter();
        let free = (key("org:free"), Limit::default());
        for _ in 0..1_000 {
            limiter.admit(std::slice::from_ref(&free)).await.unwrap();
        }
        let zero = (key("org:zero"), rpm(0));
        let refused = limiter.admit(&[free, zero]).await.unwrap_err();
        assert_eq!((refused.limit, refused.retry_after_secs), (0, 60));
        assert!(limiter.local.lock().unwrap().keys.is_empty(), "nothing was counted");
    }

    #[tokio::test]
    async fn idle_keys_are_dropped() {
        let (limiter, now) = local_limiter();
        for i in 0..100 {
            limiter.admit(&[(LimitKey::from(format!("tok:{i}")), rpm(10))]).await.unwrap();
        }
        assert_eq!(limiter.local.lock().unwrap().keys.len(), 100);
        now.store(1_200, Ordering::SeqCst);
        limiter.admit(&[(key("tok:new"), rpm(10))]).await.unwrap();
        assert_eq!(limiter.local.lock().unwrap().keys.len(), 1);
    }

    #[test]
    fn shares() {
        assert_eq!(share(10, 2), 5);
        assert_eq!(share(1, 5), 1);
        assert_eq!(share(0, 5), 0);
        assert_eq!(share(7, 0), 7);
    }

    #[test]
    fn bad_redis_url_is_named_without_password() {
        let config = LimiterConfig { redis_url: Some("nope://user:secret@host/".into()), ..Default::default() };
        let err = Limiter::new(config, Arc::new(AtomicU64::new(1))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nope://user:***@host/"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
    }

    #[test]
    fn limiter_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Limiter>();
    }
}
