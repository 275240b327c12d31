//! Billing tiers end to end over real HTTP: the platform pool, metering into
//! statements (checked against the SPEC's formula, computed here independently), tier
//! changes that never reprice the past, and the refusals of the admit phase (budget,
//! source allow-list, maximum credential age) — each on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use byok_domain::{
    Budget, Cidr, CredentialOwner, Money, Org, OrgControls, Outcome, PriceBook, ProviderId, ProviderPrice, RateCard,
    ScopeInput, Statement, Tier, Timestamp,
};
use byok_mock_provider::MockConfig;
use byok_store::testing::{for_each_backend, TestStore};
use byok_store::{AuditFilter, UsageSource};
use byok_vault::BudgetInput;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;
use support::{actor, anthropic_messages, openai_chat, Env, CANARY_PREFIX};

fn m(text: &str) -> Money {
    Money::parse(text).unwrap()
}

fn d(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

/// Cards that differ from the defaults, so the test proves the configuration is used.
fn prices() -> PriceBook {
    let mut book = PriceBook::default();
    book.cards.insert(
        Tier::KatmanA,
        RateCard { per_call: m("0.0030"), per_million_input_tokens: m("0.45"), per_million_output_tokens: m("1.75") },
    );
    book.cards.insert(
        Tier::KatmanB,
        RateCard { per_call: m("0.0007"), per_million_input_tokens: m("0.15"), per_million_output_tokens: m("0.55") },
    );
    book.cards.insert(
        Tier::KatmanC,
        RateCard {
            per_call: m("0.0011"),
            per_million_input_tokens: m("0.333333"),
            per_million_output_tokens: m("0.9"),
        },
    );
    book.provider_prices.insert("gpt-4o-mini".into(), ProviderPrice { input: m("0.15"), output: m("0.60") });
    book.provider_prices.insert("claude-haiku".into(), ProviderPrice { input: m("1.00"), output: m("5.00") });
    book
}

async fn start(t: TestStore) -> Env {
    Env::start_priced(t, MockConfig::default(), prices(), |_| {}).await
}

/// What one call returned.
struct Called {
    status: u16,
    credential: Option<String>,
    body: String,
    /// Tokens as the provider reported them (parsed here from the answer itself).
    input: u64,
    output: u64,
}

/// A chat call through the sidecar, OpenAI or Anthropic, JSON or streamed.
async fn chat(env: &Env, provider: ProviderId, token: &str, stream: bool, extra: &[(&str, &str)]) -> Called {
    let (path, body) = match provider {
        ProviderId::Anthropic => ("/anthropic/v1/messages", anthropic_messages("claude-3-5-haiku-latest", stream)),
        _ => ("/openai/v1/chat/completions", openai_chat("gpt-4o-mini", stream)),
    };
    let mut request = env.http.post(env.url(path)).json(&body);
    request = match provider {
        ProviderId::Anthropic => request.header("x-api-key", token).header("anthropic-version", "2023-06-01"),
        _ => request.bearer_auth(token),
    };
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let credential = response.headers().get("x-byok-credential").map(|v| v.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    assert!(!body.contains(CANARY_PREFIX), "a key leaked into an answer");
    let (input, output) = if status == 200 { reported_usage(provider, stream, &body) } else { (0, 0) };
    Called { status, credential, body, input, output }
}

/// The provider's own usage figures, read from its answer as its documentation defines
/// them (independently of byok's usage tap).
fn reported_usage(provider: ProviderId, stream: bool, body: &str) -> (u64, u64) {
    let num = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    if !stream {
        let json: Value = serde_json::from_str(body).unwrap();
        return match provider {
            ProviderId::Anthropic => (num(&json["usage"], "input_tokens"), num(&json["usage"], "output_tokens")),
            _ => (num(&json["usage"], "prompt_tokens"), num(&json["usage"], "completion_tokens")),
        };
    }
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    match provider {
        ProviderId::Anthropic => {
            let input = events
                .iter()
                .find(|e| e["type"] == "message_start")
                .map(|e| num(&e["message"]["usage"], "input_tokens"))
                .unwrap();
            let output = events
                .iter()
                .rev()
                .find(|e| e["type"] == "message_delta")
                .map(|e| num(&e["usage"], "output_tokens"))
                .unwrap();
            (input, output)
        }
        _ => {
            let usage = events.iter().rev().find(|e| e["usage"].is_object()).map(|e| e["usage"].clone()).unwrap();
            (num(&usage, "prompt_tokens"), num(&usage, "completion_tokens"))
        }
    }
}

/// The SPEC's formula, written out here on its own: `calls × per_call + input ×
/// per_million_input / 10⁶ + output × per_million_output / 10⁶`, rounded half-up to 6
/// decimals, printed with exactly 6.
fn expected_fee(calls: u64, input: u64, output: u64, rates: (&str, &str, &str)) -> String {
    let mut rounded =
        exact_fee(calls, input, output, rates).round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(6);
    rounded.to_string()
}

/// The same, before rounding.
fn exact_fee(calls: u64, input: u64, output: u64, rates: (&str, &str, &str)) -> Decimal {
    Decimal::from(calls) * d(rates.0)
        + Decimal::from(input) * d(rates.1) / Decimal::from(1_000_000u64)
        + Decimal::from(output) * d(rates.2) / Decimal::from(1_000_000u64)
}

fn sum_amounts<'a>(amounts: impl IntoIterator<Item = &'a str>) -> String {
    let mut total: Decimal = amounts.into_iter().map(d).sum();
    total.rescale(6);
    total.to_string()
}

/// The statement of `org` for this month, from the rollup, after every completion is
/// durable; it must equal the one recomputed from the raw audit rows.
async fn statement(env: &Env, org: &Org) -> Statement {
    // Completions are queued unawaited: wait until the audit holds one per allowed row.
    let store = env.t.store();
    for _ in 0..200 {
        let rows = store.list_audit(Some(&org.id), &AuditFilter::default()).await.unwrap();
        let allowed = rows.iter().filter(|r| r.outcome == Outcome::Allowed).count();
        let completed = store.usage(Some(&org.id), month(), next_month(), UsageSource::Audit).await.unwrap();
        let done: u64 = completed.iter().map(|r| r.calls + r.unanswered).sum();
        if done as usize >= allowed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let id = org.id;
    let fast = env.vault.statement(id, None, None, UsageSource::Rollup).await.unwrap();
    let slow = env.vault.statement(id, None, None, UsageSource::Audit).await.unwrap();
    assert_eq!(fast, slow, "the rollup and the raw audit rows must give the same statement");
    fast
}

fn month() -> Timestamp {
    byok_domain::billing::month_start(Timestamp::now())
}

fn next_month() -> Timestamp {
    byok_domain::billing::next_month_start(Timestamp::now())
}

fn line(s: &Statement, tier: Tier, provider: ProviderId, owner: CredentialOwner) -> &byok_domain::UsageLine {
    s.lines
        .iter()
        .find(|l| l.tier == tier && l.provider == provider && l.credential_owner == owner)
        .unwrap_or_else(|| panic!("no {tier} {provider} {owner} line in {s:?}"))
}

/// A katman-c org needs expiring, team-bound credentials.
fn in_a_year() -> Option<Timestamp> {
    Timestamp::from_micros(Timestamp::now().as_micros() + 365 * 86_400_000_000)
}

fn team_scope() -> ScopeInput {
    ScopeInput { teams: vec!["research".into()], ..ScopeInput::default() }
}

#[tokio::test]
async fn katman_a_falls_back_to_the_platform_pool_and_b_and_c_never_do() {
    for_each_backend("platform_pool", |t| async move {
        let env = start(t).await;
        let shared = env.credential_of(None, "shared-openai", ProviderId::Openai, ScopeInput::default(), None).await;
        let (a, _) = env.other_org(Tier::KatmanA).await;
        let (c, _) = env.other_org(Tier::KatmanC).await;
        let b = env.org.clone();
        let (ta, tb, tc) = (
            env.token_in(&a, "research").await,
            env.token_in(&b, "research").await,
            env.token_in(&c, "research").await,
        );

        // katman-a with no credential of its own: served by the platform's key.
        let served = chat(&env, ProviderId::Openai, &ta, false, &[]).await;
        assert_eq!(served.status, 200, "{}", served.body);
        assert_eq!(served.credential.as_deref(), Some(shared.id.to_string().as_str()));
        let request = env.mock.last_request().unwrap();
        assert_eq!(request.presented_key.as_deref(), Some(env.keys.openai.as_str()));
        let seen = env.mock.request_count();

        // katman-b and katman-c: never, also not when pinning it by id or by name.
        for (token, tier) in [(&tb, Tier::KatmanB), (&tc, Tier::KatmanC)] {
            let refused = chat(&env, ProviderId::Openai, token, false, &[]).await;
            assert_eq!(refused.status, 403, "{tier}: {}", refused.body);
            assert!(refused.body.contains("no_credential"), "{tier}: {}", refused.body);
            for pin in [shared.id.to_string(), "shared-openai".to_owned()] {
                let pinned = chat(&env, ProviderId::Openai, token, false, &[("x-byok-credential", &pin)]).await;
                assert_eq!(pinned.status, 403, "{tier} pin {pin}: {}", pinned.body);
                assert!(pinned.body.contains("tier_forbids"), "{tier} pin {pin}: {}", pinned.body);
            }
        }
        assert_eq!(env.mock.request_count(), seen, "a refused call opened no upstream connection");

        // Each audit row names the credential's owner.
        let rows = env.t.store().list_audit(Some(&a.id), &AuditFilter::default()).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].credential_owner, Some(CredentialOwner::Platform));
        assert_eq!(rows[0].tier, Some(Tier::KatmanA));
        let pinned_rows = env.t.store().list_audit(Some(&b.id), &AuditFilter::default()).await.unwrap();
        let forbidden: Vec<_> = pinned_rows.iter().filter(|r| r.reason.as_deref() == Some("tier_forbids")).collect();
        assert_eq!(forbidden.len(), 2);
        assert!(forbidden.iter().all(|r| r.credential_owner == Some(CredentialOwner::Platform)));

        // Its own credential wins as soon as it has one.
        let own = env.credential_of(Some(&a), "own", ProviderId::Openai, ScopeInput::default(), None).await;
        let served = chat(&env, ProviderId::Openai, &ta, false, &[]).await;
        assert_eq!(served.credential.as_deref(), Some(own.id.to_string().as_str()));

        // The platform credential's replay shows which orgs' calls it served.
        let (_, items, _) =
            env.vault.credential_timeline(byok_vault::Owner::Platform, "shared-openai", None, 100).await.unwrap();
        let calls: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                byok_store::TimelineItem::Call { resolution, completion } => Some((resolution, completion)),
                _ => None,
            })
            .collect();
        let served_orgs: Vec<_> =
            calls.iter().filter(|(r, _)| r.outcome == Outcome::Allowed).map(|(r, _)| r.org_id).collect();
        assert_eq!(served_orgs, vec![Some(a.id)]);
        assert!(calls.iter().any(|(r, _)| r.org_id == Some(b.id) && r.reason.as_deref() == Some("tier_forbids")));
        assert!(calls.iter().filter(|(r, _)| r.outcome == Outcome::Allowed).all(|(_, c)| c.is_some()));
        let verify = env.vault.verify_platform_audit().await.unwrap();
        assert!(verify.ok && verify.checked >= 2, "{verify:?}");
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Usage and fees for each tier, a negotiated card and the platform pool; OpenAI and
/// Anthropic, JSON and streamed: every line's calls and tokens are exactly what the
/// provider reported, every amount is the SPEC's formula to the last decimal.
#[tokio::test]
async fn statements_meter_every_call_exactly() {
    for_each_backend("statements", |t| async move {
        let env = start(t).await;
        let book = prices();
        env.credential_of(None, "shared-openai", ProviderId::Openai, ScopeInput::default(), None).await;
        env.credential_of(None, "shared-claude", ProviderId::Anthropic, ScopeInput::default(), None).await;
        // (org, tier, negotiated card?, own credentials?)
        let mut orgs: Vec<(Org, Tier, Option<RateCard>, bool)> = Vec::new();
        for (tier, negotiated, own) in [
            (Tier::KatmanA, None, false),
            (Tier::KatmanA, None, true),
            (Tier::KatmanB, None, true),
            (Tier::KatmanC, None, true),
            (
                Tier::KatmanC,
                Some(RateCard {
                    per_call: m("0.00015"),
                    per_million_input_tokens: m("0.123457"),
                    per_million_output_tokens: m("0.7"),
                }),
                true,
            ),
        ] {
            let (org, _) = env.other_org(tier).await;
            if own {
                let (scope, expiry) =
                    if tier == Tier::KatmanC { (team_scope(), in_a_year()) } else { (ScopeInput::default(), None) };
                env.credential_of(Some(&org), "oa", ProviderId::Openai, scope.clone(), expiry).await;
                env.credential_of(Some(&org), "an", ProviderId::Anthropic, scope, expiry).await;
            }
            if let Some(card) = negotiated {
                env.vault.set_rate_card(&actor(), org.id, Some(card)).await.unwrap();
            }
            orgs.push((org, tier, negotiated, own));
        }
        for (org, tier, negotiated, own) in &orgs {
            let token = env.token_in(org, "research").await;
            // (provider, stream) → (calls, input, output) as the provider reported them.
            let mut reported: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
            for (provider, stream, times) in [
                (ProviderId::Openai, false, 3),
                (ProviderId::Openai, true, 2),
                (ProviderId::Anthropic, false, 2),
                (ProviderId::Anthropic, true, 1),
            ] {
                for _ in 0..times {
                    let called = chat(&env, provider, &token, stream, &[]).await;
                    assert_eq!(called.status, 200, "{tier} {provider} stream={stream}: {}", called.body);
                    assert!(called.input > 0 && called.output > 0, "the mock reports usage");
                    let slot = reported.entry(provider.as_str()).or_default();
                    *slot = (slot.0 + 1, slot.1 + called.input, slot.2 + called.output);
                }
            }
            // One denied call: counted, never billed.
            let bad = env
                .http
                .post(env.url("/openai/v1/chat/completions"))
                .bearer_auth(&token)
                .json(&openai_chat("gpt-4o-mini", false))
                .header("x-byok-credential", "nope")
                .send()
                .await
                .unwrap();
            assert_eq!(bad.status(), 403);

            let s = statement(&env, org).await;
            let owner = if *own { CredentialOwner::Org } else { CredentialOwner::Platform };
            let card = match negotiated {
                Some(card) => *card,
                None => book.cards[tier],
            };
            let rates = (
                card.per_call.canonical(),
                card.per_million_input_tokens.canonical(),
                card.per_million_output_tokens.canonical(),
            );
            let rates = (rates.0.as_str(), rates.1.as_str(), rates.2.as_str());
            assert_eq!(s.lines.len(), 2, "{tier}: {s:?}");
            assert_eq!((s.calls, s.denied, s.unanswered), (8, 1, 0), "{tier}");
            for (provider, family, price) in [
                (ProviderId::Openai, "gpt-4o-mini", ("0.15", "0.60")),
                (ProviderId::Anthropic, "claude-haiku", ("1.00", "5.00")),
            ] {
                let (calls, input, output) = reported[provider.as_str()];
                let l = line(&s, *tier, provider, owner);
                assert_eq!(l.model_family, family);
                assert_eq!((l.calls, l.input_tokens, l.output_tokens), (calls, input, output), "{tier} {provider}");
                assert_eq!(l.platform_fee, expected_fee(calls, input, output, rates), "{tier} {provider}");
                let cost =
                    if *own { "0.000000".to_owned() } else { expected_fee(0, input, output, ("0", price.0, price.1)) };
                assert_eq!(l.provider_cost, cost, "{tier} {provider}");
            }
            let fees: Vec<&str> = s.lines.iter().map(|l| l.platform_fee.as_str()).collect();
            let costs: Vec<&str> = s.lines.iter().map(|l| l.provider_cost.as_str()).collect();
            assert_eq!(s.platform_fee, sum_amounts(fees.iter().copied()));
            assert_eq!(s.provider_cost, sum_amounts(costs.iter().copied()));
            assert_eq!(s.total, sum_amounts([s.platform_fee.as_str(), s.provider_cost.as_str()]));
            assert_eq!(s.unpriced_calls, 0);
        }
        // The operator's report: one line per org, each its statement's totals.
        let report = env.vault.usage_report(None, None).await.unwrap();
        assert_eq!(report.orgs.len(), orgs.len());
        for (org, ..) in &orgs {
            let s = env.vault.statement(org.id, None, None, UsageSource::Rollup).await.unwrap();
            let line = report.orgs.iter().find(|l| l.org_id == org.id).unwrap();
            assert_eq!((line.calls, line.denied, &line.total), (s.calls, s.denied, &s.total));
        }
        assert_eq!(report.calls, 8 * orgs.len() as u64);
        assert_eq!(report.total, sum_amounts(report.orgs.iter().map(|l| l.total.as_str())));
        assert_eq!(report.total, sum_amounts([report.platform_fee.as_str(), report.provider_cost.as_str()]));
        env.stop().await;
    })
    .await
    .unwrap();
}

/// A tier change mid-period splits the statement; neither it nor a later card change
/// (negotiated, or the operator's configuration) reprices calls already made.
#[tokio::test]
async fn a_tier_change_splits_the_statement_and_nothing_reprices_the_past() {
    for_each_backend("tier_change", |t| async move {
        let env = start(t).await;
        let org = env.org.clone();
        let id = org.id;
        // Compliant with katman-c from the start, so the change is allowed.
        env.credential_of(Some(&org), "oa", ProviderId::Openai, team_scope(), in_a_year()).await;
        let token = env.token(&[]).await;
        let mut tokens_b = (0, 0);
        for _ in 0..3 {
            let c = chat(&env, ProviderId::Openai, &token, false, &[]).await;
            tokens_b = (tokens_b.0 + c.input, tokens_b.1 + c.output);
        }
        let before = statement(&env, &org).await;
        assert_eq!(before.lines.len(), 1);

        env.vault.change_tier(&actor(), id, Tier::KatmanC).await.unwrap();
        let mut tokens_c = (0, 0);
        for _ in 0..2 {
            let c = chat(&env, ProviderId::Openai, &token, false, &[]).await;
            tokens_c = (tokens_c.0 + c.input, tokens_c.1 + c.output);
        }
        let negotiated =
            RateCard { per_call: m("0.5"), per_million_input_tokens: m("7"), per_million_output_tokens: m("9") };
        env.vault.set_rate_card(&actor(), id, Some(negotiated)).await.unwrap();
        let c = chat(&env, ProviderId::Openai, &token, false, &[]).await;
        let tokens_n = (c.input, c.output);

        let split = statement(&env, &org).await;
        assert_eq!(split.lines.len(), 3, "{split:?}");
        let by_card =
            |per_call: &str| split.lines.iter().find(|l| l.rate_card.per_call.canonical() == per_call).unwrap();
        let b = by_card("0.0007");
        assert_eq!((b.tier, b.calls), (Tier::KatmanB, 3));
        assert_eq!(b.platform_fee, expected_fee(3, tokens_b.0, tokens_b.1, ("0.0007", "0.15", "0.55")));
        assert_eq!(b, &before.lines[0], "the katman-b line is unchanged by the tier change");
        let c = by_card("0.0011");
        assert_eq!((c.tier, c.calls), (Tier::KatmanC, 2));
        assert_eq!(c.platform_fee, expected_fee(2, tokens_c.0, tokens_c.1, ("0.0011", "0.333333", "0.9")));
        let n = by_card("0.5");
        assert_eq!((n.tier, n.calls), (Tier::KatmanC, 1));
        assert_eq!(n.platform_fee, expected_fee(1, tokens_n.0, tokens_n.1, ("0.5", "7", "9")));

        // The negotiated card goes, the tier goes back, the operator changes every card:
        // the calls keep their prices.
        env.vault.set_rate_card(&actor(), id, None).await.unwrap();
        env.vault.change_tier(&actor(), id, Tier::KatmanB).await.unwrap();
        let repriced = env.vault.clone().with_price_book(PriceBook::default());
        let again = repriced.statement(id, None, None, UsageSource::Rollup).await.unwrap();
        assert_eq!(again.lines, split.lines);
        assert_eq!(again.total, split.total);

        // The tier changes are lifecycle events of the org.
        let events = env.t.store().list_events(&org.id, &Default::default()).await.unwrap();
        let kinds: Vec<_> =
            events.iter().map(|e| e.kind.as_str()).filter(|k| k.contains("tier") || k.contains("rate_card")).collect();
        assert_eq!(kinds, ["tier_changed", "rate_card_changed", "rate_card_changed", "tier_changed"]);
        env.stop().await;
    })
    .await
    .unwrap();
}

/// Over budget, outside the allow-list, past the maximum age: refused with the code,
/// audited as denied, and nothing reaches the provider.
#[tokio::test]
async fn refusals_of_the_admit_phase_send_nothing() {
    for_each_backend("admit_refusals", |t| async move {
        let env = Env::start_priced(t, MockConfig::default(), prices(), |config| {
            config.trusted_proxies = vec![Cidr::parse("127.0.0.1/32").unwrap()];
        })
        .await;
        let (org, _) = env.other_org(Tier::KatmanC).await;
        let id = org.id;
        env.credential_of(Some(&org), "oa", ProviderId::Openai, team_scope(), in_a_year()).await;
        let token = env.token_in(&org, "research").await;
        let first = chat(&env, ProviderId::Openai, &token, false, &[]).await;
        assert_eq!(first.status, 200);
        // One call costs 0.0011 + in × 0.333333/10⁶ + out × 0.9/10⁶.
        let one = exact_fee(1, first.input, first.output, ("0.0011", "0.333333", "0.9"));

        let refused = |code: &'static str, status: u16| {
            move |c: Called| {
                assert_eq!(c.status, status, "{code}: {}", c.body);
                assert!(c.body.contains(code), "{code}: {}", c.body);
            }
        };
        let mut expected_denials = Vec::new();

        // The org's budget: reached after the first call.
        let budget = BudgetInput {
            monthly_limit: Some(Money::from_decimal(one / Decimal::TWO).unwrap()),
            teams: BTreeMap::new(),
        };
        env.vault.set_budget(&actor(), id, budget).await.unwrap();
        let seen = env.mock.request_count();
        refused("budget_exceeded", 429)(chat(&env, ProviderId::Openai, &token, false, &[]).await);
        expected_denials.push("budget_exceeded");
        // A team's budget the same way.
        let budget = BudgetInput {
            monthly_limit: Some(m("1000")),
            teams: [("research".to_owned(), Money::from_decimal(one).unwrap())].into(),
        };
        let view = env.vault.set_budget(&actor(), id, budget).await.unwrap();
        assert_eq!(view.teams.keys().collect::<Vec<_>>(), ["research"]);
        refused("budget_exceeded", 429)(chat(&env, ProviderId::Openai, &token, false, &[]).await);
        expected_denials.push("budget_exceeded");
        env.vault.set_budget(&actor(), id, BudgetInput::default()).await.unwrap();
        assert_eq!(chat(&env, ProviderId::Openai, &token, false, &[]).await.status, 200);
        let seen_after_ok = env.mock.request_count();
        assert_eq!(seen_after_ok, seen + 1);

        // The source allow-list: the TCP peer (127.0.0.1) is not in it…
        let controls = OrgControls {
            max_credential_age_days: None,
            allowed_source_cidrs: vec![Cidr::parse("10.99.0.0/16").unwrap()],
        };
        env.vault.set_controls(&actor(), id, controls.into()).await.unwrap();
        refused("source_forbidden", 403)(chat(&env, ProviderId::Openai, &token, false, &[]).await);
        expected_denials.push("source_forbidden");
        // …a trusted proxy's X-Forwarded-For is believed…
        let via_proxy = chat(&env, ProviderId::Openai, &token, false, &[("x-forwarded-for", "10.99.3.4")]).await;
        assert_eq!(via_proxy.status, 200, "{}", via_proxy.body);
        refused("source_forbidden", 403)(
            chat(&env, ProviderId::Openai, &token, false, &[("x-forwarded-for", "10.99.3.4, 8.8.8.8")]).await,
        );
        expected_denials.push("source_forbidden");
        assert_eq!(env.mock.request_count(), seen_after_ok + 1);

        // Maximum credential age: the current version is two days old, the limit one day.
        let two_days_ago = Timestamp::now().as_micros() - 2 * 86_400_000_000;
        env.t
            .execute(&format!("UPDATE credentials SET version_at = {two_days_ago} WHERE org_id = '{id}'"))
            .await
            .unwrap();
        let controls = OrgControls { max_credential_age_days: Some(1), allowed_source_cidrs: Vec::new() };
        env.vault.set_controls(&actor(), id, controls.into()).await.unwrap();
        let listed = env.vault.list_credentials(id).await.unwrap();
        assert_eq!(
            listed[0].rotate_by.map(|t| t.as_micros()),
            Some(two_days_ago + 86_400_000_000),
            "rotate_by is shown"
        );
        let seen = env.mock.request_count();
        refused("rotation_required", 403)(chat(&env, ProviderId::Openai, &token, false, &[]).await);
        expected_denials.push("rotation_required");
        assert_eq!(env.mock.request_count(), seen);
        let secret = byok_crypto::ProviderSecret::new(env.keys.openai.clone()).unwrap();
        env.vault.rotate_credential(&actor(), id, "oa", secret).await.unwrap();
        assert_eq!(chat(&env, ProviderId::Openai, &token, false, &[]).await.status, 200);

        let rows = env.t.store().list_audit(Some(&org.id), &AuditFilter::default()).await.unwrap();
        let denials: Vec<&str> =
            rows.iter().filter(|r| r.outcome == Outcome::Denied).filter_map(|r| r.reason.as_deref()).collect();
        assert_eq!(denials, expected_denials);
        assert!(rows.iter().all(|r| r.tier == Some(Tier::KatmanC)));
        env.stop().await;
    })
    .await
    .unwrap();
}

/// One client at a time spends a budget exactly: the call that reaches the limit is
/// the last one admitted. Concurrent clients can overshoot by at most the calls in
/// flight when the limit is reached (each client has one in flight).
#[tokio::test]
async fn a_budget_is_exact_sequentially_and_bounded_under_concurrency() {
    for_each_backend("budget_concurrency", |t| async move {
        let env = start(t).await;
        let org = env.org.clone();
        let id = org.id;
        env.credential_of(Some(&org), "oa", ProviderId::Openai, ScopeInput::default(), None).await;
        let token = Arc::new(env.token(&[]).await);
        let probe = chat(&env, ProviderId::Openai, &token, false, &[]).await;
        let one = exact_fee(1, probe.input, probe.output, ("0.0007", "0.15", "0.55"));

        // Sequential: the limit allows exactly 10 more calls (the probe spent one).
        let limit = one * Decimal::from(11) - Decimal::new(1, 12);
        let budget = BudgetInput { monthly_limit: Some(Money::from_decimal(limit).unwrap()), teams: BTreeMap::new() };
        env.vault.set_budget(&actor(), id, budget).await.unwrap();
        let mut admitted = 0;
        loop {
            let c = chat(&env, ProviderId::Openai, &token, false, &[]).await;
            if c.status != 200 {
                assert!(c.body.contains("budget_exceeded"), "{}", c.body);
                break;
            }
            admitted += 1;
            assert!(admitted <= 10, "more calls than the budget allows");
        }
        assert_eq!(admitted, 10, "a budget is exact for one client");

        // Concurrent: 8 clients, each calling until refused, with 20 more calls' worth.
        let clients = 8;
        let raised = limit + one * Decimal::from(20);
        let budget = BudgetInput { monthly_limit: Some(Money::from_decimal(raised).unwrap()), teams: BTreeMap::new() };
        env.vault.set_budget(&actor(), id, budget).await.unwrap();
        let env = Arc::new(env);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (env, token) = (Arc::clone(&env), Arc::clone(&token));
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while chat(&env, ProviderId::Openai, &token, false, &[]).await.status == 200 {
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        assert!(total >= 20, "the budget's calls are all served ({total})");
        assert!(total < 20 + clients, "overshoot is at most the calls in flight: {total} ≥ 20 + {clients}");
        statement(&env, &org).await; // every completion durable
        let view = env.vault.budget(id).await.unwrap();
        let spent = d(&view.spent_this_month);
        assert!(spent >= raised.round_dp(6) - Decimal::new(1, 6), "spent {spent}, limit {raised}");
        assert!(spent < raised + one * Decimal::from(clients as u64), "spent {spent} overshoots by < {clients} calls");
        let stats = Arc::try_unwrap(env).ok().unwrap();
        stats.stop().await;
    })
    .await
    .unwrap();
}

#[test]
fn budget_input_refuses_numbers() {
    let err = serde_json::from_str::<BudgetInput>(r#"{"monthly_limit": 50}"#).unwrap_err().to_string();
    assert!(err.contains("decimal strings"), "{err}");
    let _ = Budget::default();
}
