//! How a call ended, said once per call: one access line (`info`, target `byok::access`)
//! and the call's metrics (`byok_requests_total`, the duration and overhead histograms).
//!
//! Every call gets exactly one: an allowed call's from the meter of the attempt that
//! answered it (when its answer's body ends, breaks off or is dropped, or when the
//! attempt fails), a refused one's from the handler, one whose client went away before
//! any attempt held it from the handler's guard (`server.rs`), one whose head was refused
//! (414, 431) from the listener (`listen.rs`). Superseded attempts (failover) say nothing
//! of their own: the call's line counts its attempts.
//!
//! The line carries ids, closed vocabularies (provider, capability, mode, outcome, code)
//! and numbers — never a key, a token, a model name or a message. The model family is
//! the registry's name for it.

use std::time::Duration;

use byok_domain::{Capability, CredentialId, Mode, OrgId, ProviderId, ResolutionAudit, TeamId, TokenId};
use byok_metrics::{CallEnded, CallOutcome, Metrics};

/// The access log's target (filter it with `BYOK_LOG`, e.g. `info,byok::access=off`).
pub(crate) const TARGET: &str = "byok::access";

/// The label value of a provider or capability not known when the call ended.
const NONE: &str = "none";

/// What is known of a call when it ends (what its resolution row holds).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallFacts {
    pub(crate) org: Option<OrgId>,
    pub(crate) team: Option<TeamId>,
    pub(crate) token: Option<TokenId>,
    pub(crate) credential: Option<CredentialId>,
    pub(crate) provider: Option<ProviderId>,
    pub(crate) capability: Option<Capability>,
    pub(crate) mode: Option<Mode>,
    /// Attempts made (0: refused before a credential was tried).
    pub(crate) attempts: u32,
}

impl CallFacts {
    pub(crate) fn of(record: &ResolutionAudit) -> Self {
        Self {
            org: record.org_id,
            team: record.team_id,
            token: record.token_id,
            credential: record.credential_id,
            provider: record.provider,
            capability: record.capability,
            mode: record.mode,
            attempts: record.attempt.unwrap_or(0),
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ending {
    pub(crate) outcome: CallOutcome,
    /// byok's error code, or the completion's status (`completed`, `upstream_error`,
    /// `client_cancelled`).
    pub(crate) code: &'static str,
    /// The status of the upstream answer the client got, if one came.
    pub(crate) upstream_status: Option<u16>,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    /// From the request's arrival to the end.
    pub(crate) total: Duration,
    /// Of that, time spent on the upstream (waiting for answers, relaying the body).
    pub(crate) upstream: Duration,
}

/// The outcome of a completion recorded with `status`.
pub(crate) fn outcome_of(status: &str) -> CallOutcome {
    match status {
        "completed" => CallOutcome::Allowed,
        "client_cancelled" => CallOutcome::Cancelled,
        _ => CallOutcome::Failed,
    }
}

fn millis(duration: Duration) -> f64 {
    // Microsecond precision; a call lasting 2^53 µs is beyond concern.
    duration.as_micros() as f64 / 1000.0
}

/// Say how the call `call_id` ended: count and time it, and write its access line.
pub(crate) fn call_ended(metrics: &Metrics, call_id: &str, facts: &CallFacts, family: Option<&str>, end: &Ending) {
    metrics.call_ended(&CallEnded {
        provider: facts.provider.map_or(NONE, |p| p.as_str()),
        capability: facts.capability.map_or(NONE, |c| c.as_str()),
        outcome: end.outcome,
        code: end.code,
        total: end.total,
        upstream: end.upstream,
    });
    tracing::info!(
        target: TARGET,
        call_id,
        org_id = facts.org.map(tracing::field::display),
        team_id = facts.team.map(tracing::field::display),
        token_id = facts.token.map(tracing::field::display),
        credential_id = facts.credential.map(tracing::field::display),
        provider = facts.provider.map(|p| p.as_str()),
        family,
        capability = facts.capability.map(|c| c.as_str()),
        mode = facts.mode.map(|m| m.as_str()),
        attempts = facts.attempts,
        outcome = end.outcome.as_str(),
        code = end.code,
        upstream_status = end.upstream_status,
        latency_ms = millis(end.total),
        upstream_ms = millis(end.upstream),
        input_tokens = end.input_tokens,
        output_tokens = end.output_tokens,
        "call"
    );
}
