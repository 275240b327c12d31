//! Billing: exact money, rate cards, provider prices, budgets, and how metered usage
//! becomes a statement.
//!
//! Money is a decimal (`rust_decimal`), never floating point. Prices are parsed from
//! decimal strings only. A call's price is fixed when it is made: the data plane records
//! the *code* of the rate card and provider price in force ([`PricedCard::code`],
//! [`PricedProviderPrice::code`]), which carries the currency and every rate, so a later
//! change of tier, configuration or negotiated card never reprices the past and a
//! statement can be re-derived from the audit alone.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::audit::CredentialOwner;
use crate::ids::{OrgId, TeamId};
use crate::model::Tier;
use crate::provider::ProviderId;
use crate::time::Timestamp;

/// Most digits after the point a price or limit may have.
pub const MAX_PRICE_SCALE: u32 = 12;
/// Most digits before the point a price or limit may have.
pub const MAX_PRICE_INTEGER_DIGITS: usize = 12;
/// Statement amounts are rounded half-up to this many decimals.
pub const AMOUNT_SCALE: u32 = 6;
/// Prices are per this many tokens.
pub const TOKENS_PER_PRICE_UNIT: u64 = 1_000_000;

/// Why a text is not an amount of money, or an amount could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// Not a plain non-negative decimal (`12`, `0.40`).
    #[error("'{0}' is not a decimal amount: write digits with an optional '.' and fraction, e.g. \"0.40\" (no sign, exponent or spaces)")]
    Malformed(String),
    /// Negative.
    #[error("'{0}' is negative; amounts are zero or more")]
    Negative(String),
    /// Too many digits after the point.
    #[error("'{0}' has more than {MAX_PRICE_SCALE} digits after the point")]
    TooPrecise(String),
    /// Too large.
    #[error("'{0}' is too large (at most {MAX_PRICE_INTEGER_DIGITS} digits before the point)")]
    TooLarge(String),
    /// A JSON number or another non-string value where an amount was expected.
    #[error("amounts are decimal strings, e.g. \"0.40\", not JSON numbers (which may be inexact)")]
    NotAString,
    /// A computation exceeded the decimal range.
    #[error("amount out of range while computing {0}")]
    Overflow(&'static str),
}

/// A non-negative, exact amount in a currency's units (a price, a fee, a limit).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(Decimal);

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// Parse a plain decimal string: digits, an optional `.` and fraction; no sign,
    /// exponent, spaces or thousands separators.
    pub fn parse(text: &str) -> Result<Money, MoneyError> {
        if let Some(rest) = text.strip_prefix('-') {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(MoneyError::Negative(clip(text)));
            }
        }
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || (text.contains('.') && frac.is_empty()) {
            return Err(MoneyError::Malformed(clip(text)));
        }
        if frac.len() > MAX_PRICE_SCALE as usize {
            return Err(MoneyError::TooPrecise(clip(text)));
        }
        if int.trim_start_matches('0').len() > MAX_PRICE_INTEGER_DIGITS {
            return Err(MoneyError::TooLarge(clip(text)));
        }
        Decimal::from_str_exact(text).map(Money).map_err(|_| MoneyError::Malformed(clip(text)))
    }

    /// An exact decimal that is zero or more.
    pub fn from_decimal(value: Decimal) -> Option<Money> {
        (!value.is_sign_negative() || value.is_zero()).then(|| Money(value.normalize()))
    }

    /// The value.
    pub fn decimal(&self) -> Decimal {
        self.0
    }

    /// Shortest exact text: no trailing zeros (`0.4`, `2`, `0`).
    pub fn canonical(&self) -> String {
        self.0.normalize().to_string()
    }

    /// Rounded half-up to [`AMOUNT_SCALE`] decimals, with exactly that many digits
    /// (`0.041000`): how statements show amounts.
    pub fn rounded(&self) -> String {
        round_amount(self.0)
    }

    /// `self + other`, exactly.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.0.checked_add(other.0).map(Money).ok_or(MoneyError::Overflow("a sum"))
    }
}

/// `value` rounded half-up to [`AMOUNT_SCALE`] decimals, with exactly that many digits.
pub fn round_amount(value: Decimal) -> String {
    let mut rounded = value.round_dp_with_strategy(AMOUNT_SCALE, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(AMOUNT_SCALE);
    rounded.to_string()
}

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({})", self.canonical())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse(s)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.canonical())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string such as \"0.40\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Money, E> {
                Money::parse(v).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Money, E> {
                Err(E::custom(MoneyError::NotAString))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Money, E> {
                Err(E::custom(MoneyError::NotAString))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Money, E> {
                Err(E::custom(MoneyError::NotAString))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^[0-9]{1,12}(\.[0-9]{1,12})?$"))
            .description(Some("A non-negative decimal amount, as a string (exact; never a JSON number)."))
            .examples([serde_json::json!("0.40")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Money {}

/// A currency code: three upper-case letters (ISO 4217 style, e.g. `USD`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    /// Validate a currency code.
    pub fn parse(text: &str) -> Result<Currency, String> {
        if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(text.to_owned()))
        } else {
            Err(format!("currency '{}' is not a three-letter upper-case code such as USD", clip(text)))
        }
    }

    /// US dollars, the default.
    pub fn usd() -> Currency {
        Currency("USD".to_owned())
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Currency {
    fn default() -> Self {
        Self::usd()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Currency::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A platform rate card: what the platform charges per call and per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateCard {
    /// Platform fee per allowed call the provider answered.
    pub per_call: Money,
    /// Platform fee per million input tokens.
    pub per_million_input_tokens: Money,
    /// Platform fee per million output tokens.
    pub per_million_output_tokens: Money,
}

impl RateCard {
    /// The default card of `tier` when the configuration names none.
    pub fn default_for(tier: Tier) -> RateCard {
        let card = |call: i64, input: i64, output: i64| RateCard {
            per_call: Money(Decimal::new(call, 4)),
            per_million_input_tokens: Money(Decimal::new(input, 2)),
            per_million_output_tokens: Money(Decimal::new(output, 2)),
        };
        match tier {
            Tier::KatmanA => card(20, 40, 160),
            Tier::KatmanB => card(5, 10, 40),
            Tier::KatmanC => card(10, 20, 80),
        }
    }

    /// `calls × per_call + input × per_million_input / 10⁶ + output × per_million_output / 10⁶`,
    /// exactly (not rounded).
    pub fn fee(&self, calls: u64, input_tokens: u64, output_tokens: u64) -> Result<Decimal, MoneyError> {
        let calls = mul(self.per_call.0, calls)?;
        let input = per_million(self.per_million_input_tokens.0, input_tokens)?;
        let output = per_million(self.per_million_output_tokens.0, output_tokens)?;
        calls.checked_add(input).and_then(|s| s.checked_add(output)).ok_or(MoneyError::Overflow("a platform fee"))
    }
}

/// A provider's price for a model family, per million tokens (what the platform pays and
/// bills on for calls served by its own credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProviderPrice {
    /// Per million input tokens.
    pub input: Money,
    /// Per million output tokens.
    pub output: Money,
}

impl ProviderPrice {
    /// `input × input_price / 10⁶ + output × output_price / 10⁶`, exactly.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> Result<Decimal, MoneyError> {
        per_million(self.input.0, input_tokens)?
            .checked_add(per_million(self.output.0, output_tokens)?)
            .ok_or(MoneyError::Overflow("a provider cost"))
    }
}

fn mul(price: Decimal, count: u64) -> Result<Decimal, MoneyError> {
    price.checked_mul(Decimal::from(count)).ok_or(MoneyError::Overflow("a product"))
}

fn per_million(price: Decimal, tokens: u64) -> Result<Decimal, MoneyError> {
    mul(price, tokens)?.checked_div(Decimal::from(TOKENS_PER_PRICE_UNIT)).ok_or(MoneyError::Overflow("a quotient"))
}

/// A rate card in a currency, as recorded on each call: its [`code`](Self::code) holds
/// every rate, so the call's price needs nothing else to be known again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PricedCard {
    /// The currency of every rate.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "USD"))]
    pub currency: Currency,
    /// The rates.
    pub card: RateCard,
}

impl PricedCard {
    /// `USD:0.002:0.4:1.6` — currency, per call, per million input, per million output.
    pub fn code(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.currency, self.card.per_call, self.card.per_million_input_tokens, self.card.per_million_output_tokens
        )
    }

    /// Parse [`PricedCard::code`]'s form.
    pub fn parse_code(code: &str) -> Result<PricedCard, String> {
        let bad = || format!("'{}' is not a rate card code (CUR:per_call:per_million_in:per_million_out)", clip(code));
        let mut parts = code.split(':');
        let (Some(currency), Some(call), Some(input), Some(output), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(PricedCard {
            currency: Currency::parse(currency).map_err(|_| bad())?,
            card: RateCard {
                per_call: Money::parse(call).map_err(|_| bad())?,
                per_million_input_tokens: Money::parse(input).map_err(|_| bad())?,
                per_million_output_tokens: Money::parse(output).map_err(|_| bad())?,
            },
        })
    }
}

/// A provider price in a currency, as recorded on each platform-served call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedProviderPrice {
    /// The currency.
    pub currency: Currency,
    /// The price.
    pub price: ProviderPrice,
}

impl PricedProviderPrice {
    /// `USD:2.5:10` — currency, per million input, per million output.
    pub fn code(&self) -> String {
        format!("{}:{}:{}", self.currency, self.price.input, self.price.output)
    }

    /// Parse [`PricedProviderPrice::code`]'s form.
    pub fn parse_code(code: &str) -> Result<PricedProviderPrice, String> {
        let bad = || format!("'{}' is not a provider price code (CUR:per_million_in:per_million_out)", clip(code));
        let mut parts = code.split(':');
        let (Some(currency), Some(input), Some(output), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(PricedProviderPrice {
            currency: Currency::parse(currency).map_err(|_| bad())?,
            price: ProviderPrice {
                input: Money::parse(input).map_err(|_| bad())?,
                output: Money::parse(output).map_err(|_| bad())?,
            },
        })
    }
}

/// The operator's price book: currency, a card per tier, provider prices by family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceBook {
    /// The currency of every price.
    pub currency: Currency,
    /// The card of each tier (negotiated katman-c cards are per org).
    pub cards: BTreeMap<Tier, RateCard>,
    /// Provider cost per million tokens, by model family.
    pub provider_prices: BTreeMap<String, ProviderPrice>,
}

impl Default for PriceBook {
    fn default() -> Self {
        Self {
            currency: Currency::usd(),
            cards: [Tier::KatmanA, Tier::KatmanB, Tier::KatmanC]
                .into_iter()
                .map(|t| (t, RateCard::default_for(t)))
                .collect(),
            provider_prices: BTreeMap::new(),
        }
    }
}

impl PriceBook {
    /// The card in force for an org of `tier` with `negotiated` card (katman-c only).
    pub fn card_for(&self, tier: Tier, negotiated: Option<&PricedCard>) -> PricedCard {
        match negotiated {
            Some(card) if tier == Tier::KatmanC => card.clone(),
            _ => PricedCard {
                currency: self.currency.clone(),
                card: self.cards.get(&tier).copied().unwrap_or_else(|| RateCard::default_for(tier)),
            },
        }
    }

    /// The provider price of `family`, if the operator set one.
    pub fn provider_price(&self, family: Option<&str>) -> Option<PricedProviderPrice> {
        let price = self.provider_prices.get(family?)?;
        Some(PricedProviderPrice { currency: self.currency.clone(), price: *price })
    }
}

/// How the price of one call is fixed at call time: recorded on its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPricing {
    /// The org's tier when the call was made.
    pub tier: Tier,
    /// Whose credential served it.
    pub owner: CredentialOwner,
    /// The rate card in force ([`PricedCard::code`]).
    pub rate_card: PricedCard,
    /// The provider price in force, for platform-served calls of a priced family.
    pub provider_price: Option<PricedProviderPrice>,
}

impl CallPricing {
    /// What one answered call with this usage costs the org, exactly: platform fee plus,
    /// for platform-served calls, provider cost.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> Result<Decimal, MoneyError> {
        let fee = self.rate_card.card.fee(1, input_tokens, output_tokens)?;
        let provider = match (&self.owner, &self.provider_price) {
            (CredentialOwner::Platform, Some(price)) => price.price.cost(input_tokens, output_tokens)?,
            _ => Decimal::ZERO,
        };
        fee.checked_add(provider).ok_or(MoneyError::Overflow("a call's cost"))
    }
}

/// One group of metered calls with the same price: what statements are built from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsageKey {
    /// The org's tier at call time.
    pub tier: Tier,
    /// The provider.
    pub provider: ProviderId,
    /// The model family (`None`: the model is in no family — shown as `unknown`).
    pub model_family: Option<String>,
    /// Whose credential served the calls.
    pub owner: CredentialOwner,
    /// [`PricedCard::code`] of the card in force.
    pub rate_card: String,
    /// [`PricedProviderPrice::code`] of the provider price in force, if any.
    pub provider_price: Option<String>,
}

/// Counts of one [`UsageKey`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    /// Calls the provider answered.
    pub calls: u64,
    /// Input tokens the provider reported.
    pub input_tokens: u64,
    /// Output tokens the provider reported.
    pub output_tokens: u64,
}

impl UsageCounts {
    /// Add `other` (saturating: a count never wraps).
    pub fn add(&mut self, other: UsageCounts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
    }
}

/// The family name a statement shows for a model in no family.
pub const UNKNOWN_FAMILY: &str = "unknown";

/// One line of a statement: calls of one (tier, provider, model family, credential owner)
/// priced under one rate card (and provider price).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageLine {
    /// The org's tier when the calls were made.
    pub tier: Tier,
    /// The provider.
    pub provider: ProviderId,
    /// The model family (`unknown` for a model in no family).
    pub model_family: String,
    /// `org` or `platform`.
    pub credential_owner: CredentialOwner,
    /// Calls the provider answered.
    pub calls: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// `calls × per_call + input_tokens × per_million_input_tokens / 10⁶ + output_tokens ×
    /// per_million_output_tokens / 10⁶`, rounded half-up to 6 decimals.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0.041000"))]
    pub platform_fee: String,
    /// The same from the provider prices (platform-served lines only), rounded likewise.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0.000000"))]
    pub provider_cost: String,
    /// The rate card the calls were priced with (fixed when each call was made).
    pub rate_card: RateCard,
    /// The provider price applied, for platform-served lines of a priced family.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_price: Option<ProviderPrice>,
}

/// An org's usage and fees for a period (`from` inclusive, `to` exclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Statement {
    /// The org.
    pub org: OrgId,
    /// Start (inclusive).
    pub from: Timestamp,
    /// End (exclusive).
    pub to: Timestamp,
    /// The currency of every amount.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "USD"))]
    pub currency: Currency,
    /// Calls the provider answered (each billed).
    pub calls: u64,
    /// Calls refused by byok (never billed).
    pub denied: u64,
    /// Allowed calls the provider never answered (byok or the network failed; never billed).
    pub unanswered: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Sum of the lines' platform fees.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0.041000"))]
    pub platform_fee: String,
    /// Sum of the lines' provider costs.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0.000000"))]
    pub provider_cost: String,
    /// `platform_fee + provider_cost`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "0.041000"))]
    pub total: String,
    /// Platform-served calls of a family without a provider price (provider cost 0).
    pub unpriced_calls: u64,
    /// One line per (tier, provider, model family, credential owner, rate card).
    pub lines: Vec<UsageLine>,
}

/// Why usage could not be turned into a statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// A recorded rate card or provider price does not parse.
    #[error("a recorded price does not parse: {0}")]
    BadPrice(String),
    /// The period's calls were priced in more than one currency.
    #[error("the period's calls were priced in {0} and {1}; ask for periods that do not span the currency change")]
    MixedCurrency(Currency, Currency),
    /// An amount left the decimal range.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// A priced group's exact platform fee and provider cost (the cost only for
/// platform-served calls of a priced family; `None` when that family has no price).
pub fn group_amounts(
    owner: CredentialOwner,
    rate_card: &str,
    provider_price: Option<&str>,
    counts: UsageCounts,
) -> Result<(Decimal, Option<Decimal>), StatementError> {
    let card = PricedCard::parse_code(rate_card).map_err(StatementError::BadPrice)?;
    let fee = card.card.fee(counts.calls, counts.input_tokens, counts.output_tokens)?;
    let cost = match owner {
        CredentialOwner::Org => Some(Decimal::ZERO),
        CredentialOwner::Platform => match provider_price {
            Some(code) => {
                let price = PricedProviderPrice::parse_code(code).map_err(StatementError::BadPrice)?;
                Some(price.price.cost(counts.input_tokens, counts.output_tokens)?)
            }
            None => None,
        },
    };
    Ok((fee, cost))
}

/// One priced group of usage, for [`spend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostInput {
    /// The calling team.
    pub team: Option<TeamId>,
    /// Whose credentials served the calls.
    pub owner: CredentialOwner,
    /// [`PricedCard::code`].
    pub rate_card: String,
    /// [`PricedProviderPrice::code`].
    pub provider_price: Option<String>,
    /// The counts.
    pub counts: UsageCounts,
}

/// What an org spent, exactly (unrounded): in all and per team.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spend {
    /// Platform fees plus provider costs.
    pub total: Decimal,
    /// The same per team.
    pub teams: BTreeMap<TeamId, Decimal>,
}

impl Spend {
    /// Add `amount` spent by `team`.
    pub fn add(&mut self, team: Option<TeamId>, amount: Decimal) {
        self.total = self.total.saturating_add(amount);
        if let Some(team) = team {
            let slot = self.teams.entry(team).or_default();
            *slot = slot.saturating_add(amount);
        }
    }
}

/// The exact spend of priced usage groups (what budgets compare with their limits).
pub fn spend(inputs: impl IntoIterator<Item = CostInput>) -> Result<Spend, StatementError> {
    let mut out = Spend::default();
    for input in inputs {
        let (fee, cost) = group_amounts(input.owner, &input.rate_card, input.provider_price.as_deref(), input.counts)?;
        out.add(input.team, fee.checked_add(cost.unwrap_or_default()).ok_or(MoneyError::Overflow("a spend"))?);
    }
    Ok(out)
}

/// Turn metered groups into a statement: each group is a line, each line's amounts are
/// rounded half-up to 6 decimals, and the totals are the sums of the lines.
pub fn statement(
    org: OrgId,
    from: Timestamp,
    to: Timestamp,
    currency: Currency,
    denied: u64,
    unanswered: u64,
    groups: impl IntoIterator<Item = (UsageKey, UsageCounts)>,
) -> Result<Statement, StatementError> {
    let mut merged: BTreeMap<UsageKey, UsageCounts> = BTreeMap::new();
    for (key, counts) in groups {
        merged.entry(key).or_default().add(counts);
    }
    let mut seen_currency: Option<Currency> = None;
    let mut lines = Vec::with_capacity(merged.len());
    let (mut fee_total, mut cost_total) = (Decimal::ZERO, Decimal::ZERO);
    let mut totals = UsageCounts::default();
    let mut unpriced_calls = 0u64;
    for (key, counts) in merged {
        if counts.calls == 0 && counts.input_tokens == 0 && counts.output_tokens == 0 {
            continue;
        }
        let card = PricedCard::parse_code(&key.rate_card).map_err(StatementError::BadPrice)?;
        let price = key
            .provider_price
            .as_deref()
            .map(PricedProviderPrice::parse_code)
            .transpose()
            .map_err(StatementError::BadPrice)?;
        for currency in std::iter::once(&card.currency).chain(price.as_ref().map(|p| &p.currency)) {
            match &seen_currency {
                Some(seen) if seen != currency => {
                    return Err(StatementError::MixedCurrency(seen.clone(), currency.clone()))
                }
                _ => seen_currency = Some(currency.clone()),
            }
        }
        let (fee, cost) = group_amounts(key.owner, &key.rate_card, key.provider_price.as_deref(), counts)?;
        let cost = cost.unwrap_or_else(|| {
            unpriced_calls = unpriced_calls.saturating_add(counts.calls);
            Decimal::ZERO
        });
        let fee_text = round_amount(fee);
        let cost_text = round_amount(cost);
        // Totals are sums of the rounded lines.
        fee_total = fee_total
            .checked_add(Decimal::from_str_exact(&fee_text).map_err(|_| MoneyError::Overflow("a total"))?)
            .ok_or(MoneyError::Overflow("a total"))?;
        cost_total = cost_total
            .checked_add(Decimal::from_str_exact(&cost_text).map_err(|_| MoneyError::Overflow("a total"))?)
            .ok_or(MoneyError::Overflow("a total"))?;
        totals.add(counts);
        lines.push(UsageLine {
            tier: key.tier,
            provider: key.provider,
            model_family: key.model_family.unwrap_or_else(|| UNKNOWN_FAMILY.to_owned()),
            credential_owner: key.owner,
            calls: counts.calls,
            input_tokens: counts.input_tokens,
            output_tokens: counts.output_tokens,
            platform_fee: fee_text,
            provider_cost: cost_text,
            rate_card: card.card,
            provider_price: match key.owner {
                CredentialOwner::Platform => price.map(|p| p.price),
                CredentialOwner::Org => None,
            },
        });
    }
    let total = fee_total.checked_add(cost_total).ok_or(MoneyError::Overflow("the total"))?;
    Ok(Statement {
        org,
        from,
        to,
        currency: seen_currency.unwrap_or(currency),
        calls: totals.calls,
        denied,
        unanswered,
        input_tokens: totals.input_tokens,
        output_tokens: totals.output_tokens,
        platform_fee: round_amount(fee_total),
        provider_cost: round_amount(cost_total),
        total: round_amount(total),
        unpriced_calls,
        lines,
    })
}

/// Monthly spending limits of an org and its teams (in the price book's currency).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Budget {
    /// The org's limit per calendar month (UTC); `None`: no org-wide limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_limit: Option<Money>,
    /// Per-team limits per calendar month, by team id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<TeamId, Money>,
}

impl Budget {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.monthly_limit.is_none() && self.teams.is_empty()
    }
}

/// The start of the UTC calendar month holding `at`.
pub fn month_start(at: Timestamp) -> Timestamp {
    use chrono::{Datelike, TimeZone, Utc};
    let t = at.as_datetime();
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).single().map(Timestamp::from).unwrap_or(at)
}

/// The start of the UTC calendar month after the one holding `at`.
pub fn next_month_start(at: Timestamp) -> Timestamp {
    use chrono::{Datelike, TimeZone, Utc};
    let t = at.as_datetime();
    let (year, month) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().map(Timestamp::from).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Money {
        Money::parse(text).unwrap()
    }

    #[test]
    fn money_parses_plain_decimals_only() {
        assert_eq!(m("0.40").canonical(), "0.4");
        assert_eq!(m("12").canonical(), "12");
        assert_eq!(m("0").canonical(), "0");
        assert_eq!(m("007.50").canonical(), "7.5");
        for (bad, why) in [
            ("-1", "negative"),
            ("-0.5", "negative"),
            ("1e3", "not a decimal"),
            ("", "not a decimal"),
            (".5", "not a decimal"),
            ("5.", "not a decimal"),
            ("1,000", "not a decimal"),
            (" 1", "not a decimal"),
            ("+1", "not a decimal"),
            ("NaN", "not a decimal"),
            ("0.0000000000001", "more than 12 digits"),
            ("1234567890123", "too large"),
        ] {
            let err = Money::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(serde_json::from_str::<Money>("0.4").unwrap_err().to_string().contains("decimal strings"));
        assert_eq!(serde_json::from_str::<Money>("\"0.40\"").unwrap(), m("0.4"));
    }

    #[test]
    fn rounding_is_half_up_to_six_places() {
        let cases = [
            ("0.0000005", "0.000001"),
            ("0.00000049", "0.000000"),
            ("1.2345675", "1.234568"),
            ("2", "2.000000"),
            ("0", "0.000000"),
        ];
        for (value, expected) in cases {
            assert_eq!(round_amount(Decimal::from_str_exact(value).unwrap()), expected, "{value}");
        }
    }

    #[test]
    fn codes_round_trip_and_refuse_garbage() {
        let card = PricedCard { currency: Currency::usd(), card: RateCard::default_for(Tier::KatmanA) };
        assert_eq!(card.code(), "USD:0.002:0.4:1.6");
        assert_eq!(PricedCard::parse_code(&card.code()).unwrap(), card);
        let price = PricedProviderPrice {
            currency: Currency::usd(),
            price: ProviderPrice { input: m("2.50"), output: m("10.00") },
        };
        assert_eq!(price.code(), "USD:2.5:10");
        assert_eq!(PricedProviderPrice::parse_code(&price.code()).unwrap(), price);
        for bad in ["", "USD", "USD:1:2", "usd:1:2:3", "USD:1:2:3:4", "USD:-1:2:3", "USD:1e2:2:3"] {
            assert!(PricedCard::parse_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_spec_example_prices_to_the_last_decimal() {
        // 20 katman-b calls, 100 input and 100 output tokens: 20 × 0.0005 + 100 × 0.10/10⁶
        // + 100 × 0.40/10⁶ = 0.01 + 0.00001 + 0.00004 = 0.01005.
        let book = PriceBook::default();
        let key = UsageKey {
            tier: Tier::KatmanB,
            provider: ProviderId::Openai,
            model_family: Some("gpt-4o".into()),
            owner: CredentialOwner::Org,
            rate_card: book.card_for(Tier::KatmanB, None).code(),
            provider_price: None,
        };
        let counts = UsageCounts { calls: 20, input_tokens: 100, output_tokens: 100 };
        let s =
            statement(OrgId::generate(), Timestamp::now(), Timestamp::now(), Currency::usd(), 3, 0, [(key, counts)])
                .unwrap();
        assert_eq!(s.platform_fee, "0.010050");
        assert_eq!(s.total, "0.010050");
        assert_eq!(s.provider_cost, "0.000000");
        assert_eq!((s.calls, s.denied, s.lines.len()), (20, 3, 1));
    }

    #[test]
    fn platform_lines_carry_provider_cost_and_unpriced_calls() {
        let book = PriceBook {
            provider_prices: [("gpt-4o".to_owned(), ProviderPrice { input: m("2.50"), output: m("10.00") })].into(),
            ..PriceBook::default()
        };
        let card = book.card_for(Tier::KatmanA, None).code();
        let priced = UsageKey {
            tier: Tier::KatmanA,
            provider: ProviderId::Openai,
            model_family: Some("gpt-4o".into()),
            owner: CredentialOwner::Platform,
            rate_card: card.clone(),
            provider_price: book.provider_price(Some("gpt-4o")).map(|p| p.code()),
        };
        let unpriced = UsageKey { model_family: None, provider_price: None, ..priced.clone() };
        let groups = [
            (priced, UsageCounts { calls: 3, input_tokens: 1_000_000, output_tokens: 333_333 }),
            (unpriced, UsageCounts { calls: 2, input_tokens: 7, output_tokens: 9 }),
        ];
        let s =
            statement(OrgId::generate(), Timestamp::now(), Timestamp::now(), Currency::usd(), 0, 0, groups).unwrap();
        // 3 × 0.002 + 1 000 000 × 0.4/10⁶ + 333 333 × 1.6/10⁶ = 0.006 + 0.4 + 0.5333328 → 0.939333
        let line = |family: &str| s.lines.iter().find(|l| l.model_family == family).unwrap();
        assert_eq!(line("gpt-4o").platform_fee, "0.939333");
        // 2.5 + 333 333 × 10/10⁶ = 2.5 + 3.33333 → 5.833330
        assert_eq!(line("gpt-4o").provider_cost, "5.833330");
        assert_eq!(line(UNKNOWN_FAMILY).provider_cost, "0.000000");
        assert_eq!(s.unpriced_calls, 2);
        // Totals are the sums of the rounded lines: 0.939333 + 5.833330 + 0.004017 (2 × 0.002
        // + 7 × 0.4/10⁶ + 9 × 1.6/10⁶ = 0.0040172).
        assert_eq!(s.total, "6.776680");
    }

    #[test]
    fn mixed_currencies_are_refused() {
        let key = |code: &str| UsageKey {
            tier: Tier::KatmanB,
            provider: ProviderId::Openai,
            model_family: None,
            owner: CredentialOwner::Org,
            rate_card: code.to_owned(),
            provider_price: None,
        };
        let one = UsageCounts { calls: 1, ..UsageCounts::default() };
        let err = statement(
            OrgId::generate(),
            Timestamp::now(),
            Timestamp::now(),
            Currency::usd(),
            0,
            0,
            [(key("USD:1:1:1"), one), (key("EUR:1:1:1"), one)],
        )
        .unwrap_err();
        assert!(matches!(err, StatementError::MixedCurrency(..)));
    }

    #[test]
    fn months() {
        let at = Timestamp::parse_rfc3339("2026-12-05T10:00:00Z").unwrap();
        assert_eq!(month_start(at).to_rfc3339(), "2026-12-01T00:00:00.000000Z");
        assert_eq!(next_month_start(at).to_rfc3339(), "2027-01-01T00:00:00.000000Z");
    }
}
