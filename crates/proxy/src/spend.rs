//! What each org (and team) has spent this UTC month, known on the hot path without a
//! query per call — for budgets.
//!
//! An org's spend is `mine + others`:
//! * `mine`: every metered call this node completed this month, counted the moment it
//!   completes — before the next call on the same connection can start, and whether or
//!   not its completion is durable yet. (A process counts from its start: what this
//!   node wrote before a restart belongs to an older audit writer segment and is read
//!   as the others'.)
//! * `others`: the month's spend of every *other* audit writer segment, read from the
//!   usage rollup — on the org's first budgeted call of the month, then again in the
//!   background whenever it is older than the refresh interval.
//!
//! Rollup rows carry the segment that wrote them, so nothing is counted twice and
//! nothing is missed: on one node a budget sees exactly the cost of every completed
//! call; other nodes' calls are seen within the refresh interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use byok_domain::billing::{month_start, next_month_start, Spend};
use byok_domain::{CallCompletion, CallPricing, OrgId, PricedCard, PricedProviderPrice, TeamId, Timestamp};
use byok_store::{ResolutionView, StoreError};
use rust_decimal::Decimal;

#[derive(Debug, Default)]
struct OrgSpend {
    /// The month these figures are for.
    month: Option<Timestamp>,
    mine: Spend,
    others: Option<Spend>,
    read_at: Option<Instant>,
    reading: bool,
}

impl OrgSpend {
    fn for_month(&mut self, month: Timestamp) -> &mut Self {
        if self.month != Some(month) {
            *self = OrgSpend { month: Some(month), ..OrgSpend::default() };
        }
        self
    }

    /// The org's and `team`'s spend, once the other writers' has been read.
    fn current(&self, team: TeamId) -> Option<(Decimal, Decimal)> {
        let others = self.others.as_ref()?;
        let of_team = |spend: &Spend| spend.teams.get(&team).copied().unwrap_or_default();
        Some((others.total.saturating_add(self.mine.total), of_team(others).saturating_add(of_team(&self.mine))))
    }
}

struct Entry {
    spend: Mutex<OrgSpend>,
    /// One first read at a time per org.
    first_read: tokio::sync::Mutex<()>,
}

/// Spend per org for the current month, shared by every call of this node.
pub(crate) struct SpendBook {
    store: ResolutionView,
    /// This node's audit writer segment: its rows are `mine`, counted here.
    segment: String,
    refresh: Duration,
    orgs: Mutex<HashMap<OrgId, Arc<Entry>>>,
    /// Rate cards and provider prices by their code, parsed once (there are a handful).
    cards: Mutex<HashMap<String, PricedCard>>,
    provider_prices: Mutex<HashMap<String, PricedProviderPrice>>,
}

/// A parsed price by its code, parsing it the first time.
fn parsed<T: Clone>(cache: &Mutex<HashMap<String, T>>, code: &str, parse: fn(&str) -> Result<T, String>) -> Option<T> {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = cache.get(code) {
        return Some(found.clone());
    }
    let value = parse(code).ok()?;
    cache.insert(code.to_owned(), value.clone());
    Some(value)
}

impl SpendBook {
    pub(crate) fn new(store: ResolutionView, segment: &str, refresh: Duration) -> Self {
        Self {
            store,
            segment: segment.to_owned(),
            refresh,
            orgs: Mutex::default(),
            cards: Mutex::default(),
            provider_prices: Mutex::default(),
        }
    }

    /// The cost of one metered, answered call, exactly as a statement prices it.
    fn cost_of(&self, completion: &CallCompletion) -> Option<(TeamId, Decimal)> {
        let metering = completion.metering.as_ref()?;
        if !completion.answered() {
            return None;
        }
        let pricing = CallPricing {
            tier: metering.tier,
            owner: metering.credential_owner,
            rate_card: parsed(&self.cards, &metering.rate_card, PricedCard::parse_code)?,
            provider_price: match &metering.provider_price {
                Some(code) => Some(parsed(&self.provider_prices, code, PricedProviderPrice::parse_code)?),
                None => None,
            },
        };
        let cost = pricing.cost(completion.input_tokens.unwrap_or(0), completion.output_tokens.unwrap_or(0)).ok()?;
        Some((metering.team_id, cost))
    }

    fn entry(&self, org: OrgId) -> Arc<Entry> {
        let mut orgs = self.orgs.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            orgs.entry(org).or_insert_with(|| {
                Arc::new(Entry { spend: Mutex::default(), first_read: tokio::sync::Mutex::new(()) })
            }),
        )
    }

    /// A call of this node completed.
    pub(crate) fn completed(&self, completion: &CallCompletion) {
        let Some((team, amount)) = self.cost_of(completion) else { return };
        let entry = self.entry(completion.org_id);
        let mut spend = entry.spend.lock().unwrap_or_else(PoisonError::into_inner);
        spend.for_month(month_start(completion.at)).mine.add(Some(team), amount);
    }

    /// The org's and `team`'s spend this month (reading the other writers' from the
    /// store first if this node has not yet this month; refreshing it in the background
    /// when stale).
    pub(crate) async fn spent(self: &Arc<Self>, org: OrgId, team: TeamId) -> Result<(Decimal, Decimal), StoreError> {
        let month = month_start(Timestamp::now());
        let entry = self.entry(org);
        if let Some(current) = self.current_or_refresh(org, team, &entry, month) {
            return Ok(current);
        }
        let _turn = entry.first_read.lock().await;
        if let Some(current) = self.current_or_refresh(org, team, &entry, month) {
            return Ok(current);
        }
        self.read_others(org, &entry, month).await?;
        let mut spend = entry.spend.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(spend.for_month(month).current(team).unwrap_or_default())
    }

    fn current_or_refresh(
        self: &Arc<Self>,
        org: OrgId,
        team: TeamId,
        entry: &Arc<Entry>,
        month: Timestamp,
    ) -> Option<(Decimal, Decimal)> {
        let mut spend = entry.spend.lock().unwrap_or_else(PoisonError::into_inner);
        let spend = spend.for_month(month);
        let current = spend.current(team)?;
        if spend.read_at.is_none_or(|at| at.elapsed() >= self.refresh) && !spend.reading {
            spend.reading = true;
            let (book, entry) = (Arc::clone(self), Arc::clone(entry));
            tokio::spawn(async move {
                if let Err(err) = book.read_others(org, &entry, month).await {
                    tracing::debug!(org = %org, error = %byok_domain::error::Report(&err), "budget spend refresh failed");
                }
            });
        }
        Some(current)
    }

    /// Read the other writers' spend this month into `entry`.
    async fn read_others(&self, org: OrgId, entry: &Entry, month: Timestamp) -> Result<(), StoreError> {
        let rows = self.store.usage_of_other_writers(&org, month, next_month_start(month), &self.segment).await;
        let mut spend = entry.spend.lock().unwrap_or_else(PoisonError::into_inner);
        spend.reading = false;
        let others = byok_domain::billing::spend(rows?.iter().filter_map(byok_vault::row_cost_input))
            .map_err(|e| StoreError::Corrupt(format!("cannot price org {org}'s usage: {e}")))?;
        if spend.month == Some(month) {
            spend.others = Some(others);
            spend.read_at = Some(Instant::now());
        }
        Ok(())
    }
}

impl std::fmt::Debug for SpendBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendBook").finish_non_exhaustive()
    }
}
