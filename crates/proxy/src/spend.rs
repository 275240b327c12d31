//! What each org (and team) has spent this UTC month, known on the hot path without a
//! query per call — for budgets.
//!
//! An org's spend is `base + (committed - committed_at_base) + pending`:
//! * `base`: the month's spend in the store (the usage rollup, every node's calls) when
//!   it was last read; it is read on the org's first budgeted call of the month and again
//!   in the background when older than the refresh interval;
//! * `committed`: this node's metered calls the audit writer has made durable since
//!   (told by its commit hook), `committed_at_base` its value when the last read began;
//! * `pending`: this node's calls that completed but are not yet durable.
//!
//! A call is counted the moment it completes (before the next call on the same
//! connection can start), so on one node the spend a budget sees is exact for every
//! completed call. A read overlapping a commit may count that commit twice until the
//! next read: the error is an over-estimate, never an under-estimate. Calls of other
//! nodes are seen at the next read (the refresh interval).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byok_domain::billing::{group_amounts, month_start, next_month_start, Spend};
use byok_domain::{OrgId, TeamId, Timestamp, UsageCounts};
use byok_store::{AuditEntry, Store, StoreError, UsageSource};
use rust_decimal::Decimal;

#[derive(Debug, Default)]
struct OrgSpend {
    /// The month these figures are for.
    month: Option<Timestamp>,
    base: Option<Spend>,
    loaded_at: Option<Instant>,
    committed: Spend,
    committed_at_base: Spend,
    pending: Spend,
    refreshing: bool,
}

impl OrgSpend {
    fn reset_if_new_month(&mut self, month: Timestamp) {
        if self.month != Some(month) {
            *self = OrgSpend { month: Some(month), ..OrgSpend::default() };
        }
    }

    fn current(&self) -> Option<Spend> {
        let base = self.base.as_ref()?;
        let mut out = base.clone();
        merge(&mut out, &self.committed, Decimal::ONE);
        merge(&mut out, &self.committed_at_base, Decimal::NEGATIVE_ONE);
        merge(&mut out, &self.pending, Decimal::ONE);
        Some(out)
    }
}

fn merge(into: &mut Spend, other: &Spend, sign: Decimal) {
    into.total = (into.total + other.total * sign).max(Decimal::ZERO);
    for (team, amount) in &other.teams {
        let slot = into.teams.entry(*team).or_default();
        *slot = (*slot + *amount * sign).max(Decimal::ZERO);
    }
}

fn subtract(from: &mut Spend, team: Option<TeamId>, amount: Decimal) {
    from.total = (from.total - amount).max(Decimal::ZERO);
    if let Some(team) = team {
        if let Some(slot) = from.teams.get_mut(&team) {
            *slot = (*slot - amount).max(Decimal::ZERO);
        }
    }
}

/// Spend per org for the current month, shared by every call of this node.
pub(crate) struct SpendBook {
    store: Store,
    refresh: Duration,
    orgs: Mutex<HashMap<OrgId, Arc<Entry>>>,
}

struct Entry {
    spend: Mutex<OrgSpend>,
    /// One first read at a time per org.
    loading: tokio::sync::Mutex<()>,
}

/// The cost of one metered completion, exactly as a statement prices it.
fn cost_of(completion: &byok_domain::CallCompletion) -> Option<(TeamId, Decimal)> {
    let metering = completion.metering.as_ref()?;
    if !completion.answered() {
        return None;
    }
    let counts = UsageCounts {
        calls: 1,
        input_tokens: completion.input_tokens.unwrap_or(0),
        output_tokens: completion.output_tokens.unwrap_or(0),
    };
    let (fee, cost) =
        group_amounts(metering.credential_owner, &metering.rate_card, metering.provider_price.as_deref(), counts)
            .ok()?;
    Some((metering.team_id, fee + cost.unwrap_or_default()))
}

impl SpendBook {
    pub(crate) fn new(store: Store, refresh: Duration) -> Self {
        Self { store, refresh, orgs: Mutex::default() }
    }

    fn entry(&self, org: OrgId) -> Arc<Entry> {
        let mut orgs = self.orgs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            orgs.entry(org)
                .or_insert_with(|| Arc::new(Entry { spend: Mutex::default(), loading: tokio::sync::Mutex::new(()) })),
        )
    }

    /// A completed call's usage, the moment it completes.
    pub(crate) fn completed(&self, completion: &byok_domain::CallCompletion) {
        let Some((team, amount)) = cost_of(completion) else { return };
        let entry = self.entry(completion.org_id);
        let mut spend = entry.spend.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        spend.reset_if_new_month(month_start(completion.at));
        spend.pending.add(Some(team), amount);
    }

    /// The audit writer made these entries durable.
    pub(crate) fn committed(&self, entries: &[AuditEntry]) {
        for entry in entries {
            let AuditEntry::Completion(completion) = entry else { continue };
            let Some((team, amount)) = cost_of(completion) else { continue };
            let Some(org) = self.orgs.lock().ok().and_then(|orgs| orgs.get(&completion.org_id).cloned()) else {
                continue;
            };
            let mut spend = org.spend.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if spend.month != Some(month_start(completion.at)) {
                continue;
            }
            subtract(&mut spend.pending, Some(team), amount);
            spend.committed.add(Some(team), amount);
        }
    }

    /// The org's spend this month (reading it from the store first if this node has not
    /// yet; refreshing it in the background when it is older than the refresh interval).
    pub(crate) async fn spend(self: &Arc<Self>, org: OrgId) -> Result<Spend, StoreError> {
        let month = month_start(Timestamp::now());
        let entry = self.entry(org);
        {
            let mut spend = entry.spend.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            spend.reset_if_new_month(month);
            if let Some(current) = spend.current() {
                let stale = spend.loaded_at.is_none_or(|at| at.elapsed() >= self.refresh);
                if stale && !spend.refreshing {
                    spend.refreshing = true;
                    let book = Arc::clone(self);
                    let entry = Arc::clone(&entry);
                    tokio::spawn(async move {
                        if let Err(err) = book.read(org, &entry, month).await {
                            tracing::debug!(org = %org, error = %err, "budget spend refresh failed");
                        }
                    });
                }
                return Ok(current);
            }
        }
        let _turn = entry.loading.lock().await;
        if let Some(current) =
            entry.spend.lock().ok().and_then(|s| (s.month == Some(month)).then(|| s.current()).flatten())
        {
            return Ok(current);
        }
        self.read(org, &entry, month).await?;
        let spend = entry.spend.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(spend.current().unwrap_or_default())
    }

    /// Read the month's spend from the store into `entry`.
    async fn read(&self, org: OrgId, entry: &Entry, month: Timestamp) -> Result<(), StoreError> {
        let committed_at_start = {
            let spend = entry.spend.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            spend.committed.clone()
        };
        let result = self.store.usage(Some(&org), month, next_month_start(month), UsageSource::Rollup).await;
        let mut spend = entry.spend.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        spend.refreshing = false;
        let rows = result?;
        let base = byok_domain::billing::spend(rows.iter().filter_map(byok_vault::row_cost_input))
            .map_err(|e| StoreError::Corrupt(format!("cannot price org {org}'s usage: {e}")))?;
        if spend.month == Some(month) {
            spend.base = Some(base);
            spend.committed_at_base = committed_at_start;
            spend.loaded_at = Some(Instant::now());
        }
        Ok(())
    }
}

impl std::fmt::Debug for SpendBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendBook").finish_non_exhaustive()
    }
}
