//! Billing tiers: the platform credential pool, tier changes, negotiated rate cards,
//! budgets, katman-c controls, and statements.

use std::collections::BTreeMap;

use byok_domain::billing::{month_start, next_month_start};
use byok_domain::{
    Actor, Budget, Cidr, CredentialState, KmsName, LifecycleKind, Money, Name, Org, OrgControls, OrgId, OrgState,
    PricedCard, RateCard, Statement, Tier, Timestamp, UsageCounts, UsageKey,
};
use byok_store::{OrgChange, UsageRow, UsageSource};
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::events::event;
use crate::orgs::in_field;
use crate::Vault;

/// Longest maximum credential age accepted, in days (100 years).
pub const MAX_CREDENTIAL_AGE_DAYS: u32 = 36_500;

/// Most networks in a source allow-list.
const MAX_SOURCE_CIDRS: usize = 1000;

/// The rate card an org is billed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RateCardView {
    /// The org.
    pub org_id: OrgId,
    /// Its tier.
    pub tier: Tier,
    /// Whether this is the org's negotiated card (katman-c) rather than its tier's.
    pub negotiated: bool,
    /// The currency of every rate.
    #[schema(value_type = String, example = "USD")]
    pub currency: byok_domain::Currency,
    /// The rates.
    #[serde(flatten)]
    pub card: RateCard,
}

/// A budget as an admin writes it: team limits by team id or name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetInput {
    /// The org's limit per calendar month (UTC).
    #[serde(default)]
    pub monthly_limit: Option<Money>,
    /// Per-team limits per calendar month, by team id or name.
    #[serde(default)]
    #[schema(value_type = BTreeMap<byok_domain::Name, Money>)]
    pub teams: BTreeMap<String, Money>,
}

/// Controls as an admin writes them: networks as text, checked (and listed once each)
/// when set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlsInput {
    /// A credential whose current version is older than this many days is refused with
    /// `rotation_required` until it is rotated.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 36500)]
    pub max_credential_age_days: Option<u32>,
    /// Data-plane calls are accepted only from these networks (the TCP peer address, or
    /// the forwarded-for address from a trusted proxy); empty: from anywhere. A network
    /// listed twice counts once.
    #[serde(default)]
    #[schema(value_type = Vec<byok_domain::Cidr>, max_items = 1000)]
    pub allowed_source_cidrs: Vec<String>,
}

impl ControlsInput {
    /// The controls, or what is wrong with them: a network that is not one (or has host
    /// bits set) is well-formed text breaking a rule, 422.
    fn parse(&self) -> Result<OrgControls, VaultError> {
        if let Some(days) = self.max_credential_age_days {
            if days == 0 || days > MAX_CREDENTIAL_AGE_DAYS {
                return Err(VaultError::invalid(format!(
                    "max_credential_age_days: {days} is out of range; give 1 to {MAX_CREDENTIAL_AGE_DAYS}"
                )));
            }
        }
        if self.allowed_source_cidrs.len() > MAX_SOURCE_CIDRS {
            return Err(VaultError::invalid(format!("allowed_source_cidrs: at most {MAX_SOURCE_CIDRS} networks")));
        }
        let mut networks = Vec::with_capacity(self.allowed_source_cidrs.len());
        for (i, text) in self.allowed_source_cidrs.iter().enumerate() {
            // Text of the documented shape that is still no network (`10.0.0.0/33`, host
            // bits set) is 422; anything else breaks the schema, 400.
            let shaped = text.split_once('/').is_some_and(|(addr, prefix)| {
                (2..=45).contains(&addr.len())
                    && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                    && (1..=3).contains(&prefix.len())
                    && prefix.bytes().all(|b| b.is_ascii_digit())
            });
            let network = Cidr::parse(text).map_err(|e| {
                let message = format!("allowed_source_cidrs[{i}]: {e}");
                if shaped {
                    VaultError::unprocessable(message)
                } else {
                    VaultError::invalid(message)
                }
            })?;
            if !networks.contains(&network) {
                networks.push(network);
            }
        }
        Ok(OrgControls { max_credential_age_days: self.max_credential_age_days, allowed_source_cidrs: networks })
    }
}

impl From<OrgControls> for ControlsInput {
    fn from(controls: OrgControls) -> Self {
        Self {
            max_credential_age_days: controls.max_credential_age_days,
            allowed_source_cidrs: controls.allowed_source_cidrs.iter().map(ToString::to_string).collect(),
        }
    }
}

/// An org's budget with this month's spend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    /// The org.
    pub org_id: OrgId,
    /// The currency of every amount.
    #[schema(value_type = String, example = "USD")]
    pub currency: byok_domain::Currency,
    /// The org's monthly limit, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_limit: Option<Money>,
    /// Team limits by team name.
    pub teams: BTreeMap<String, Money>,
    /// The current UTC month's spend so far (platform fees plus provider costs, exact),
    /// as of the last committed calls.
    pub spent_this_month: String,
    /// The same per team (by name), for teams with a limit.
    pub team_spent_this_month: BTreeMap<String, String>,
}

/// One org's line in the operator-wide report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrgUsageSummary {
    /// The org.
    pub org_id: OrgId,
    /// Its name.
    pub name: Name,
    /// Its tier now.
    pub tier: Tier,
    /// Billed calls.
    pub calls: u64,
    /// Refused calls.
    pub denied: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Platform fees.
    pub platform_fee: String,
    /// Provider costs.
    pub provider_cost: String,
    /// Both.
    pub total: String,
}

/// Every org's usage in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// Start (inclusive).
    pub from: Timestamp,
    /// End (exclusive).
    pub to: Timestamp,
    /// The currency.
    #[schema(value_type = String, example = "USD")]
    pub currency: byok_domain::Currency,
    /// One line per org with any usage, by name.
    pub orgs: Vec<OrgUsageSummary>,
    /// Billed calls of every org.
    pub calls: u64,
    /// Refused calls of every org.
    pub denied: u64,
    /// Input tokens of every org.
    pub input_tokens: u64,
    /// Output tokens of every org.
    pub output_tokens: u64,
    /// The sum of every org's platform fee.
    pub platform_fee: String,
    /// The sum of every org's provider cost.
    pub provider_cost: String,
    /// The sum of every org's total.
    pub total: String,
}

/// The price groups and counts of some usage rows.
pub fn usage_groups(rows: &[UsageRow]) -> (u64, u64, Vec<(UsageKey, UsageCounts)>) {
    let (mut denied, mut unanswered) = (0u64, 0u64);
    let mut groups = Vec::new();
    for row in rows {
        denied = denied.saturating_add(row.denied);
        unanswered = unanswered.saturating_add(row.unanswered);
        let (Some(tier), Some(provider), Some(owner), Some(card)) = (row.tier, row.provider, row.owner, &row.rate_card)
        else {
            continue;
        };
        groups.push((
            UsageKey {
                tier,
                provider,
                model_family: row.model_family.clone(),
                owner,
                rate_card: card.clone(),
                provider_price: row.provider_price.clone(),
            },
            UsageCounts { calls: row.calls, input_tokens: row.input_tokens, output_tokens: row.output_tokens },
        ));
    }
    (denied, unanswered, groups)
}

impl Vault {
    /// The operator's price book in force.
    pub fn price_book(&self) -> &byok_domain::PriceBook {
        &self.prices
    }

    /// The platform credential pool, made (with its own KEK in the default KMS) if it
    /// does not exist yet.
    pub async fn platform_pool(&self, actor: &Actor) -> Result<Org, VaultError> {
        if let Some(org) = self.store.platform_org().await? {
            return Ok(org);
        }
        let id = OrgId::generate();
        let kek_version = self.kms.create_org_kek(id).await?;
        let made = async {
            let (_key, wrapped) = self.kms.new_fingerprint_key(id).await?;
            let org = Org {
                id,
                name: Name::platform(),
                // Not a tenant: the tier is never read for the pool.
                tier: Tier::KatmanA,
                state: OrgState::Active,
                kek_version,
                kms: KmsName::default_kms(),
                kms_moving_from: None,
                retention_days: None,
                rate_card: None,
                budget: Budget::default(),
                controls: OrgControls::default(),
                limits: Default::default(),
                created_at: Timestamp::now(),
            };
            let mut created = event(id, LifecycleKind::OrgCreated, id, actor);
            created.details = serde_json::json!({ "platform_pool": true, "kek_version": kek_version });
            self.store.insert_platform_org(&org, &wrapped, &created).await?;
            Ok::<_, VaultError>(org)
        }
        .await;
        match made {
            Ok(org) => {
                self.epoch.bump();
                Ok(org)
            }
            Err(err) => {
                if let Err(destroy) = self.kms.destroy_org_keks(&KmsName::default_kms(), id).await {
                    tracing::warn!(error = %byok_domain::error::Report(&destroy), "could not destroy the KEK of a platform pool that was not made");
                }
                // Another node may have made it meanwhile.
                match self.store.platform_org().await? {
                    Some(org) => Ok(org),
                    None => Err(err),
                }
            }
        }
    }

    /// Change an org's tier (operator only; the caller checks). A change to katman-c is
    /// refused while a credential breaks its rules (naming them); leaving katman-c needs
    /// the org back on the default KMS and drops its negotiated card, retention and
    /// controls (recorded in the event).
    pub async fn change_tier(&self, actor: &Actor, org: OrgId, tier: Tier) -> Result<Org, VaultError> {
        let org = self.live_org(org).await?;
        if org.tier == tier {
            return Ok(org);
        }
        if tier == Tier::KatmanC {
            let mut violations = Vec::new();
            for record in self.store.list_credentials(&org.id).await? {
                let c = &record.credential;
                if c.state == CredentialState::Revoked {
                    continue;
                }
                if c.expires_at.is_none() {
                    violations.push(format!("{} ({}) has no expires_at", c.id, c.name));
                }
                if c.scope.teams.is_empty() && c.scope.workflows.is_empty() {
                    violations.push(format!("{} ({}) is org-wide (bind it to teams or workflows)", c.id, c.name));
                }
            }
            if !violations.is_empty() {
                return Err(VaultError::TierForbids(format!(
                    "org {} cannot move to katman-c, which requires an expiry on every credential and forbids \
                     org-wide ones: {}; change or revoke them first",
                    org.id,
                    violations.join("; ")
                )));
            }
        }
        if org.tier == Tier::KatmanC && (!org.kms.is_default() || org.kms_moving_from.is_some()) {
            return Err(VaultError::TierForbids(format!(
                "org {} keeps its KEK in the customer-managed KMS '{}', which only katman-c may; move it back first \
                 (byok kek move --org {} --kms default)",
                org.id, org.kms, org.name
            )));
        }
        let leaving_c = org.tier == Tier::KatmanC;
        let mut changed = event(org.id, LifecycleKind::TierChanged, org.id, actor);
        changed.details = serde_json::json!({
            "from": org.tier,
            "to": tier,
            "dropped": if leaving_c {
                serde_json::json!({
                    "rate_card": org.rate_card,
                    "retention_days": org.retention_days,
                    "controls": org.controls,
                })
            } else {
                serde_json::Value::Null
            },
        });
        let updated = self.store.update_org(&org.id, &OrgChange::Tier { from: org.tier, to: tier }, &changed).await?;
        self.epoch.bump();
        Ok(updated)
    }

    /// The card an org is billed with now.
    pub async fn rate_card(&self, org: OrgId) -> Result<RateCardView, VaultError> {
        let org = self.org_by_id(org).await?;
        Ok(self.rate_card_view(&org))
    }

    fn rate_card_view(&self, org: &Org) -> RateCardView {
        let priced = self.prices.card_for(org.tier, org.rate_card.as_ref());
        RateCardView {
            org_id: org.id,
            tier: org.tier,
            negotiated: org.tier == Tier::KatmanC && org.rate_card.is_some(),
            currency: priced.currency,
            card: priced.card,
        }
    }

    /// Set (`Some`) a katman-c org's negotiated card, or return it to the default
    /// (operator only; the caller checks). Calls made before keep their price.
    pub async fn set_rate_card(
        &self,
        actor: &Actor,
        org: OrgId,
        card: Option<RateCard>,
    ) -> Result<RateCardView, VaultError> {
        let org = self.live_org(org).await?;
        if card.is_some() && org.tier != Tier::KatmanC {
            return Err(VaultError::TierForbids(format!(
                "org {} is on {}: a negotiated rate card is for katman-c orgs; it is billed with the {} card",
                org.id, org.tier, org.tier
            )));
        }
        let after = card.map(|card| PricedCard { currency: self.prices.currency.clone(), card });
        if after == org.rate_card {
            return Ok(self.rate_card_view(&org));
        }
        let mut changed = event(org.id, LifecycleKind::RateCardChanged, org.id, actor);
        changed.details = serde_json::json!({ "before": org.rate_card, "after": after });
        let updated = self.store.update_org(&org.id, &OrgChange::RateCard(after), &changed).await?;
        self.epoch.bump();
        Ok(self.rate_card_view(&updated))
    }

    /// Set an org's budget (replacing it whole; an empty one removes every limit).
    pub async fn set_budget(&self, actor: &Actor, org: OrgId, input: BudgetInput) -> Result<BudgetView, VaultError> {
        let org = self.live_org(org).await?;
        let mut budget = Budget { monthly_limit: input.monthly_limit, teams: BTreeMap::new() };
        for (reference, limit) in &input.teams {
            let team = self.team(&org, reference).await.map_err(in_field("teams"))?;
            budget.teams.insert(team.id, *limit);
        }
        if budget != org.budget {
            let mut changed = event(org.id, LifecycleKind::BudgetChanged, org.id, actor);
            changed.details =
                serde_json::json!({ "before": org.budget, "after": budget, "currency": self.prices.currency });
            self.store.update_org(&org.id, &OrgChange::Budget(budget), &changed).await?;
            self.epoch.bump();
        }
        self.budget(org.id).await
    }

    /// An org's budget and this month's spend.
    pub async fn budget(&self, org: OrgId) -> Result<BudgetView, VaultError> {
        let org = self.org_by_id(org).await?;
        let now = Timestamp::now();
        let rows =
            self.store.usage(Some(&org.id), month_start(now), next_month_start(now), UsageSource::Rollup).await?;
        let spend = byok_domain::billing::spend(rows.iter().filter_map(row_cost_input))
            .map_err(|e| VaultError::internal_by("cannot price this month's usage", e))?;
        let mut teams = BTreeMap::new();
        let mut team_spent = BTreeMap::new();
        for (team_id, limit) in &org.budget.teams {
            let name = match self.store.get_team(&org.id, team_id).await? {
                Some(team) => team.name.as_str().to_owned(),
                None => team_id.to_string(),
            };
            let spent = spend.teams.get(team_id).copied().unwrap_or_default();
            team_spent.insert(name.clone(), byok_domain::billing::round_amount(spent));
            teams.insert(name, *limit);
        }
        Ok(BudgetView {
            org_id: org.id,
            currency: self.prices.currency.clone(),
            monthly_limit: org.budget.monthly_limit,
            teams,
            spent_this_month: byok_domain::billing::round_amount(spend.total),
            team_spent_this_month: team_spent,
        })
    }

    /// Set a katman-c org's controls (replacing them whole; empty removes them).
    pub async fn set_controls(&self, actor: &Actor, org: OrgId, input: ControlsInput) -> Result<Org, VaultError> {
        let org = self.live_org(org).await?;
        let controls = input.parse()?;
        if org.tier != Tier::KatmanC && !controls.is_empty() {
            return Err(VaultError::TierForbids(format!(
                "org {} is on {}: credential age limits and source allow-lists are katman-c controls",
                org.id, org.tier
            )));
        }
        if let Some(days) = controls.max_credential_age_days {
            if days == 0 || days > MAX_CREDENTIAL_AGE_DAYS {
                return Err(VaultError::invalid(format!(
                    "max_credential_age_days: {days} is out of range; give 1 to {MAX_CREDENTIAL_AGE_DAYS}"
                )));
            }
        }
        if controls == org.controls {
            return Ok(org);
        }
        let mut changed = event(org.id, LifecycleKind::ControlsChanged, org.id, actor);
        changed.details = serde_json::json!({ "before": org.controls, "after": controls });
        let updated = self.store.update_org(&org.id, &OrgChange::Controls(controls), &changed).await?;
        self.epoch.bump();
        Ok(updated)
    }

    /// The period a statement covers: `[from, to)`, by default the current UTC month;
    /// with only `from`, up to the end of its month; with only `to`, from the start of
    /// the month before it.
    pub fn statement_period(
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<(Timestamp, Timestamp), VaultError> {
        // Without `from`: the month holding the last instant before `to` (or now).
        let last = to.and_then(|to| Timestamp::from_micros(to.as_micros() - 1)).unwrap_or_else(Timestamp::now);
        let from = from.unwrap_or_else(|| month_start(last));
        let to = to.unwrap_or_else(|| next_month_start(from));
        if from >= to {
            return Err(VaultError::unprocessable(format!("from ({from}) must be before to ({to})")));
        }
        Ok((from, to))
    }

    /// An org's statement for `[from, to)`.
    pub async fn statement(
        &self,
        org: OrgId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        source: UsageSource,
    ) -> Result<Statement, VaultError> {
        let org = self.org_by_id(org).await?;
        let (from, to) = Self::statement_period(from, to)?;
        let rows = self.store.usage(Some(&org.id), from, to, source).await?;
        let (denied, unanswered, groups) = usage_groups(&rows);
        byok_domain::billing::statement(org.id, from, to, self.prices.currency.clone(), denied, unanswered, groups)
            .map_err(|e| VaultError::internal_by(format!("cannot price org {}'s usage", org.id), e))
    }

    /// Every org's usage for `[from, to)`, one line per org (operator only).
    pub async fn usage_report(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<UsageReport, VaultError> {
        let (from, to) = Self::statement_period(from, to)?;
        let rows = self.store.usage(None, from, to, UsageSource::Rollup).await?;
        let mut by_org: BTreeMap<OrgId, Vec<UsageRow>> = BTreeMap::new();
        for row in rows {
            by_org.entry(row.org_id).or_default().push(row);
        }
        let orgs: BTreeMap<OrgId, Org> = self.store.list_orgs().await?.into_iter().map(|o| (o.id, o)).collect();
        let amount = |text: &str| {
            rust_decimal::Decimal::from_str_exact(text).map_err(|e| VaultError::internal_by("statement amount", e))
        };
        let mut lines = Vec::new();
        let (mut fee, mut cost) = (rust_decimal::Decimal::ZERO, rust_decimal::Decimal::ZERO);
        for (org_id, rows) in by_org {
            // Usage rows only ever name orgs; one that is not a tenant would be a bug.
            let Some(org) = orgs.get(&org_id) else {
                tracing::warn!(org = %org_id, "usage of an unknown org left out of the report");
                continue;
            };
            let (denied, unanswered, groups) = usage_groups(&rows);
            let s = byok_domain::billing::statement(
                org_id,
                from,
                to,
                self.prices.currency.clone(),
                denied,
                unanswered,
                groups,
            )
            .map_err(|e| VaultError::internal_by(format!("cannot price org {org_id}'s usage"), e))?;
            fee += amount(&s.platform_fee)?;
            cost += amount(&s.provider_cost)?;
            lines.push(OrgUsageSummary {
                org_id,
                name: org.name.clone(),
                tier: org.tier,
                calls: s.calls,
                denied: s.denied,
                input_tokens: s.input_tokens,
                output_tokens: s.output_tokens,
                platform_fee: s.platform_fee,
                provider_cost: s.provider_cost,
                total: s.total,
            });
        }
        lines.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        let sum = |f: fn(&OrgUsageSummary) -> u64| lines.iter().map(f).fold(0u64, u64::saturating_add);
        Ok(UsageReport {
            from,
            to,
            currency: self.prices.currency.clone(),
            calls: sum(|l| l.calls),
            denied: sum(|l| l.denied),
            input_tokens: sum(|l| l.input_tokens),
            output_tokens: sum(|l| l.output_tokens),
            platform_fee: byok_domain::billing::round_amount(fee),
            provider_cost: byok_domain::billing::round_amount(cost),
            total: byok_domain::billing::round_amount(fee + cost),
            orgs: lines,
        })
    }
}

/// The cost inputs of a usage row (billed calls only).
pub fn row_cost_input(row: &UsageRow) -> Option<byok_domain::billing::CostInput> {
    Some(byok_domain::billing::CostInput {
        team: row.team_id,
        owner: row.owner?,
        rate_card: row.rate_card.clone()?,
        provider_price: row.provider_price.clone(),
        counts: UsageCounts { calls: row.calls, input_tokens: row.input_tokens, output_tokens: row.output_tokens },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_periods_default_to_calendar_months() {
        let t = |text: &str| Timestamp::parse_rfc3339(text).unwrap();
        let period = |from: Option<&str>, to: Option<&str>| {
            Vault::statement_period(from.map(t), to.map(t)).map(|(a, b)| (a.to_string(), b.to_string()))
        };
        assert_eq!(
            period(Some("2026-11-15T10:00:00Z"), None).unwrap(),
            ("2026-11-15T10:00:00.000000Z".into(), "2026-12-01T00:00:00.000000Z".into())
        );
        assert_eq!(
            period(None, Some("2026-12-01T00:00:00Z")).unwrap(),
            ("2026-11-01T00:00:00.000000Z".into(), "2026-12-01T00:00:00.000000Z".into())
        );
        assert_eq!(
            period(None, Some("2026-12-01T00:00:00.000001Z")).unwrap().0,
            "2026-12-01T00:00:00.000000Z".to_owned()
        );
        assert!(period(Some("2026-12-01T00:00:00Z"), Some("2026-12-01T00:00:00Z")).is_err());
        let (from, to) = Vault::statement_period(None, None).unwrap();
        assert!(from <= Timestamp::now() && Timestamp::now() < to);
    }
}
