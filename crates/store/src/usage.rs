//! Metered usage: what statements and budgets are computed from.
//!
//! The audit's completions are the record of what was used (each carries the price in
//! force when its call was made); `usage_rollup` keeps their sums per org, hour, team and
//! price, updated inside the very transaction that appends the audit entries, so the two
//! can never disagree. A statement for any period reads whole hours from the rollup and
//! only its partial first and last hours from the raw rows (by the `(org_id, at_us)`
//! indexes); [`UsageSource::Audit`] recomputes a whole period from the raw rows, which is
//! how the rollup is checked and what the benchmark compares it with.

use std::collections::BTreeMap;

use byok_domain::{CredentialOwner, OrgId, Outcome, ProviderId, TeamId, Tier, Timestamp};
use sqlx::any::AnyRow;

use crate::chain::AuditEntry;
use crate::error::{map_sqlx, StoreError};
use crate::rows::Row;
use crate::sql::Sql;
use crate::store::{Backend, Store};

/// One hour in microseconds: the rollup's granularity.
pub const HOUR_US: i64 = 3_600_000_000;

/// Where [`Store::usage`] reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// Whole hours from the rollup, partial hours from the raw audit rows (fast).
    Rollup,
    /// Every raw completion and denied resolution row of the period (slow; the check).
    Audit,
}

/// Usage of one org, team and price over some period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The org.
    pub org_id: OrgId,
    /// The calling token's team.
    pub team_id: Option<TeamId>,
    /// The org's tier when the calls were made.
    pub tier: Option<Tier>,
    /// The provider.
    pub provider: Option<ProviderId>,
    /// The model family.
    pub model_family: Option<String>,
    /// Whose credential served the calls (`None` for denied calls).
    pub owner: Option<CredentialOwner>,
    /// The rate card code in force (`None` for denied calls).
    pub rate_card: Option<String>,
    /// The provider price code in force.
    pub provider_price: Option<String>,
    /// Calls the provider answered.
    pub calls: u64,
    /// Allowed calls the provider never answered.
    pub unanswered: u64,
    /// Refused calls.
    pub denied: u64,
    /// Input tokens of answered calls.
    pub input_tokens: u64,
    /// Output tokens of answered calls.
    pub output_tokens: u64,
}

/// A rollup row's key within one writer segment, borrowed from the batch's entries (no
/// allocation per entry); written as text, with empty text for "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RollupKey<'a> {
    org_id: OrgId,
    hour_us: i64,
    team_id: Option<TeamId>,
    tier: Option<Tier>,
    provider: Option<ProviderId>,
    model_family: Option<&'a str>,
    credential_owner: Option<CredentialOwner>,
    rate_card: Option<&'a str>,
    provider_price: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    calls: i64,
    unanswered: i64,
    denied: i64,
    input_tokens: i64,
    output_tokens: i64,
}

fn hour_of(at: Timestamp) -> i64 {
    at.as_micros().div_euclid(HOUR_US) * HOUR_US
}

fn tokens(value: Option<u64>) -> i64 {
    value.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The rollup increments of a batch of audit entries, keys in order (a writer segment's
/// rows are its own, so writers never contend on them; the order keeps the statement
/// deterministic).
fn deltas(entries: &[AuditEntry]) -> Vec<(RollupKey<'_>, Counts)> {
    let mut out: BTreeMap<RollupKey<'_>, Counts> = BTreeMap::new();
    for entry in entries {
        match entry {
            AuditEntry::Resolution(row) if row.outcome == Outcome::Denied => {
                let Some(org_id) = row.org_id else { continue };
                let key = RollupKey {
                    org_id,
                    hour_us: hour_of(row.at),
                    team_id: row.team_id,
                    tier: row.tier,
                    provider: row.provider,
                    model_family: row.model_family.as_deref(),
                    credential_owner: None,
                    rate_card: None,
                    provider_price: None,
                };
                out.entry(key).or_default().denied += 1;
            }
            AuditEntry::Resolution(_) => {}
            AuditEntry::Completion(c) | AuditEntry::BoundCompletion { completion: c, .. } => {
                let Some(m) = c.metering.as_ref() else { continue };
                let key = RollupKey {
                    org_id: c.org_id,
                    hour_us: hour_of(c.at),
                    team_id: Some(m.team_id),
                    tier: Some(m.tier),
                    provider: Some(m.provider),
                    model_family: m.model_family.as_deref(),
                    credential_owner: Some(m.credential_owner),
                    rate_card: Some(&m.rate_card),
                    provider_price: m.provider_price.as_deref(),
                };
                let slot = out.entry(key).or_default();
                if c.answered() {
                    slot.calls += 1;
                    slot.input_tokens = slot.input_tokens.saturating_add(tokens(c.input_tokens));
                    slot.output_tokens = slot.output_tokens.saturating_add(tokens(c.output_tokens));
                } else {
                    slot.unanswered += 1;
                }
            }
        }
    }
    out.into_iter().collect()
}

/// One row of a batch's rollup increments, owned (it travels to the audit write path:
/// a thread of its own on SQLite), its key written as text with empty text for "none".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RollupRow {
    pub(crate) org_id: String,
    pub(crate) hour_us: i64,
    pub(crate) team_id: String,
    pub(crate) tier: String,
    pub(crate) provider: String,
    pub(crate) model_family: String,
    pub(crate) credential_owner: String,
    pub(crate) rate_card: String,
    pub(crate) provider_price: String,
    pub(crate) calls: i64,
    pub(crate) unanswered: i64,
    pub(crate) denied: i64,
    pub(crate) input_tokens: i64,
    pub(crate) output_tokens: i64,
}

/// The rollup increments of a batch, one row per key, keys in order (so concurrent
/// writers would lock rows in the same order; each writer segment's rows are its own).
pub(crate) fn rollup_rows(entries: &[AuditEntry]) -> Vec<RollupRow> {
    let text = |value: Option<&str>| value.unwrap_or_default().to_owned();
    deltas(entries)
        .into_iter()
        .map(|(key, counts)| RollupRow {
            org_id: key.org_id.to_string(),
            hour_us: key.hour_us,
            team_id: key.team_id.map(|t| t.to_string()).unwrap_or_default(),
            tier: text(key.tier.map(|t| t.as_str())),
            provider: text(key.provider.map(|p| p.as_str())),
            model_family: text(key.model_family),
            credential_owner: text(key.credential_owner.map(|o| o.as_str())),
            rate_card: text(key.rate_card),
            provider_price: text(key.provider_price),
            calls: counts.calls,
            unanswered: counts.unanswered,
            denied: counts.denied,
            input_tokens: counts.input_tokens,
            output_tokens: counts.output_tokens,
        })
        .collect()
}

/// The rollup's key columns (its unique index) and counted columns, in the order the
/// audit write path binds them (after `segment`).
pub(crate) const ROLLUP_KEY: &str =
    "org_id, hour_us, segment, team_id, tier, provider, model_family, credential_owner, rate_card, provider_price";

/// What an upsert of a rollup row adds to the row already there.
pub(crate) const ROLLUP_ADD: &str = "calls = usage_rollup.calls + excluded.calls, \
     unanswered = usage_rollup.unanswered + excluded.unanswered, \
     denied = usage_rollup.denied + excluded.denied, \
     input_tokens = usage_rollup.input_tokens + excluded.input_tokens, \
     output_tokens = usage_rollup.output_tokens + excluded.output_tokens";

const GROUP_COLUMNS: &str =
    "org_id, team_id, tier, provider, model_family, credential_owner, rate_card, provider_price";

fn decode(row: &AnyRow, table: &'static str) -> Result<UsageRow, StoreError> {
    // Empty text is the rollup's "none".
    let r = Row::new(row, table);
    Ok(UsageRow {
        org_id: r.parse("org_id")?,
        team_id: r.nonempty_parse("team_id")?,
        tier: r.nonempty_parse("tier")?,
        provider: r.nonempty_parse("provider")?,
        model_family: r.nonempty_text("model_family")?,
        owner: r.nonempty_parse("credential_owner")?,
        rate_card: r.nonempty_text("rate_card")?,
        provider_price: r.nonempty_text("provider_price")?,
        calls: r.u64("calls")?,
        unanswered: r.u64("unanswered")?,
        denied: r.u64("denied")?,
        input_tokens: r.u64("input_tokens")?,
        output_tokens: r.u64("output_tokens")?,
    })
}

/// `{select} WHERE [org_id = … AND ]{column} >= from AND {column} < to`: `org`'s rows (every
/// org's when `None`) in `[from, to)`.
fn in_period(backend: Backend, select: &str, org: Option<&OrgId>, column: &str, from: i64, to: i64) -> Sql<'static> {
    let mut sql = Sql::new(backend, format!("{select} WHERE "));
    if let Some(org) = org {
        sql.push("org_id = ").push_bind(org.to_string()).push(" AND ");
    }
    sql.push(format_args!("{column} >= ")).push_bind(from).push(format_args!(" AND {column} < ")).push_bind(to);
    sql
}

impl Store {
    /// Usage of `org` (every org when `None`) in `[from, to)`, per org, team and price.
    /// Calls count at their completion's time, denials at their resolution's.
    pub async fn usage(
        &self,
        org: Option<&OrgId>,
        from: Timestamp,
        to: Timestamp,
        source: UsageSource,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let (from, to) = (from.as_micros(), to.as_micros());
        if from >= to {
            return Ok(Vec::new());
        }
        match source {
            UsageSource::Audit => self.usage_from_audit(org, from, to).await,
            UsageSource::Rollup => {
                let first_full =
                    from.div_euclid(HOUR_US) * HOUR_US + if from.rem_euclid(HOUR_US) == 0 { 0 } else { HOUR_US };
                let last_full = to.div_euclid(HOUR_US) * HOUR_US;
                if first_full >= last_full {
                    return self.usage_from_audit(org, from, to).await;
                }
                let mut rows = self.usage_from_audit(org, from, first_full).await?;
                rows.extend(self.usage_from_rollup(org, first_full, last_full, None).await?);
                rows.extend(self.usage_from_audit(org, last_full, to).await?);
                Ok(rows)
            }
        }
    }

    /// The org's usage in whole hours `[from, to)` (both rounded down to the hour) from
    /// the rollup, leaving out what the audit writer `segment` wrote: a node counts its
    /// own calls itself and reads only the other nodes'.
    pub async fn usage_of_other_writers(
        &self,
        org: &OrgId,
        from: Timestamp,
        to: Timestamp,
        segment: &str,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.usage_from_rollup(Some(org), hour_of(from), hour_of(to), Some(segment)).await
    }

    async fn usage_from_rollup(
        &self,
        org: Option<&OrgId>,
        from: i64,
        to: i64,
        except_segment: Option<&str>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let select = format!(
            "SELECT {GROUP_COLUMNS}, CAST(SUM(calls) AS BIGINT) AS calls, CAST(SUM(unanswered) AS BIGINT) AS unanswered, \
             CAST(SUM(denied) AS BIGINT) AS denied, CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens FROM usage_rollup"
        );
        let mut sql = in_period(self.backend(), &select, org, "hour_us", from, to);
        if let Some(segment) = except_segment {
            sql.push(" AND segment <> ").push_bind(segment.to_owned());
        }
        sql.push(format_args!(" GROUP BY {GROUP_COLUMNS}"));
        let rows = sql.query()?.fetch_all(self.reader()).await.map_err(map_sqlx)?;
        rows.iter().map(|row| decode(row, "usage_rollup")).collect()
    }

    async fn usage_from_audit(&self, org: Option<&OrgId>, from: i64, to: i64) -> Result<Vec<UsageRow>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let answered = "upstream_status >= 100";
        let completions = format!(
            "SELECT {GROUP_COLUMNS}, \
             CAST(COALESCE(SUM(CASE WHEN {answered} THEN 1 ELSE 0 END), 0) AS BIGINT) AS calls, \
             CAST(COALESCE(SUM(CASE WHEN {answered} THEN 0 ELSE 1 END), 0) AS BIGINT) AS unanswered, \
             CAST(0 AS BIGINT) AS denied, \
             CAST(COALESCE(SUM(CASE WHEN {answered} THEN COALESCE(input_tokens, 0) ELSE 0 END), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(CASE WHEN {answered} THEN COALESCE(output_tokens, 0) ELSE 0 END), 0) AS BIGINT) AS output_tokens \
             FROM call_completions"
        );
        let mut completions = in_period(self.backend(), &completions, org, "at_us", from, to);
        completions.push(format_args!(" AND rate_card IS NOT NULL GROUP BY {GROUP_COLUMNS}"));
        let denied = "SELECT org_id, team_id, tier, provider, model_family, CAST(NULL AS TEXT) AS credential_owner, \
             CAST(NULL AS TEXT) AS rate_card, CAST(NULL AS TEXT) AS provider_price, CAST(0 AS BIGINT) AS calls, \
             CAST(0 AS BIGINT) AS unanswered, CAST(COUNT(*) AS BIGINT) AS denied, CAST(0 AS BIGINT) AS input_tokens, \
             CAST(0 AS BIGINT) AS output_tokens FROM resolution_audit";
        let mut denied = in_period(self.backend(), denied, org, "at_us", from, to);
        denied.push(
            " AND org_id IS NOT NULL AND outcome = 'denied' GROUP BY org_id, team_id, tier, provider, model_family",
        );
        let mut out = Vec::new();
        for (mut sql, table) in [(completions, "call_completions"), (denied, "resolution_audit")] {
            let rows = sql.query()?.fetch_all(self.reader()).await.map_err(map_sqlx)?;
            for row in &rows {
                out.push(decode(row, table)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_floor_including_before_the_epoch() {
        assert_eq!(hour_of(Timestamp::from_micros(HOUR_US + 5).unwrap()), HOUR_US);
        assert_eq!(hour_of(Timestamp::from_micros(-5).unwrap()), -HOUR_US);
    }
}
