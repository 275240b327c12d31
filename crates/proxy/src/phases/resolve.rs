//! Phase 4: resolve the credential.
//!
//! Candidates are the org's credentials for the call's provider. A pin
//! (`x-byok-credential`) must name one that is usable and admits the call, or the call
//! is refused naming why. Without a pin the most specific admitting, active, unexpired
//! credentials win: workflow-bound over team-bound over org-wide, then more restricted
//! dimensions, then higher priority. Credentials of equal rank form a pool that shares
//! the calls by weight (deterministic given the pool's rotation state); keys cooling down
//! or failing are skipped, and the rest follow in order, for failover.
//!
//! Tiers: a katman-a call that *no* credential of its org admits by scope resolves among
//! the platform pool's credentials the same way (their model-family, capability and
//! mode lists apply; they have no team or workflow lists). An own credential that
//! admits the call but cannot be used (revoked, disabled, expired, past the katman-c
//! maximum age) refuses the call with its reason — byok never moves a call silently
//! from the org's own key to the platform's. katman-b and katman-c calls never use a
//! platform credential; pinning one from them is `tier_forbids`.

use std::cmp::Ordering;
use std::sync::Arc;

use byok_domain::{CallScope, Credential, CredentialId, CredentialOwner, CredentialState, Tier, Timestamp};

use super::{Code, Refusal};
use crate::cache::{CachedCredential, Directory, OrgSnapshot};
use crate::health::{Availability, HealthBook};
use crate::pools::PoolBook;

/// Header pinning a credential by id or name.
pub const CREDENTIAL_HEADER: &str = "x-byok-credential";

const DAY_MICROS: i64 = 86_400_000_000;

/// The chosen credential and whose it is.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) credential: Arc<CachedCredential>,
    pub(crate) owner: CredentialOwner,
}

/// A refusal, with the credential it is about (for the audit row) when there is one.
#[derive(Debug)]
pub(crate) struct ResolveRefusal {
    pub(crate) refusal: Refusal,
    pub(crate) credential: Option<Resolved>,
}

/// How `a` compares with `b` in the resolution order (greater is preferred).
pub(crate) fn preference(a: &Credential, b: &Credential) -> Ordering {
    a.scope
        .specificity()
        .cmp(&b.scope.specificity())
        .then(a.priority.cmp(&b.priority))
        .then(a.created_at.cmp(&b.created_at))
        .then(a.id.cmp(&b.id))
}

/// Why a credential cannot be used now: its state, or (katman-c) the age of its current
/// version beyond `max_age_days`.
fn state_refusal(credential: &Credential, max_age_days: Option<u32>, now: Timestamp) -> Option<Refusal> {
    let state = Credential::effective_state(credential.state, credential.expires_at, now);
    let (code, what) = match state {
        CredentialState::Active => {
            let days = max_age_days?;
            let deadline = credential.version_created_at.as_micros().saturating_add(i64::from(days) * DAY_MICROS);
            if now.as_micros() < deadline {
                return None;
            }
            return Some(Refusal::new(
                Code::RotationRequired,
                format!(
                    "credential {} ({}) must be rotated: its current version {} is from {}, older than the org's \
                     maximum credential age of {days} days",
                    credential.id, credential.name, credential.version, credential.version_created_at
                ),
            ));
        }
        CredentialState::Revoked => (Code::CredentialRevoked, "revoked"),
        CredentialState::Disabled => (Code::CredentialDisabled, "disabled"),
        CredentialState::Expired => (Code::CredentialExpired, "expired"),
    };
    Some(Refusal::new(code, format!("credential {} ({}) is {what}", credential.id, credential.name)))
}

fn scope_refusal(credential: &Credential, call: &CallScope) -> Option<Refusal> {
    credential.scope.admits(credential.provider, call).err().map(|denied| {
        Refusal::new(Code::ScopeDenied, format!("{}: credential {} {denied}", denied.dimension, credential.id))
    })
}

/// A pinned credential that is in neither snapshot (another provider's, to be refused by
/// name rather than as unknown): the org's own first, then the platform pool's.
pub(crate) async fn pinned_elsewhere(
    directory: &Directory,
    org: &OrgSnapshot,
    platform: Option<&OrgSnapshot>,
    reference: &str,
) -> Result<Option<(Arc<CachedCredential>, CredentialOwner)>, byok_store::StoreError> {
    if org.pinned(reference).is_some() || platform.is_some_and(|p| p.pinned(reference).is_some()) {
        return Ok(None);
    }
    if let Some(own) = directory.credential_anywhere(&org.org.id, reference).await? {
        return Ok(Some((own, CredentialOwner::Org)));
    }
    let Some(platform) = platform else { return Ok(None) };
    Ok(directory.credential_anywhere(&platform.org.id, reference).await?.map(|c| (c, CredentialOwner::Platform)))
}

/// The katman-c maximum credential age of the org, in days.
fn max_age(org: &OrgSnapshot) -> Option<u32> {
    org.org.controls.max_credential_age_days.filter(|_| org.org.tier == Tier::KatmanC)
}

/// Why no credential of a pool was chosen.
enum Unresolved {
    /// The pool has no credential for the provider, or none admits the call by scope.
    NoneAdmits(Refusal, Option<Arc<CachedCredential>>),
    /// Some admit the call by scope, but none can be used now (state, age), or every
    /// usable one is cooling down or failing (health), or was tried already.
    Unusable(Refusal, Arc<CachedCredential>),
}

/// What resolution needs besides the snapshot: this node's key health and pool rotation,
/// and the credentials this call already tried (failover).
pub(crate) struct Selector<'a> {
    pub(crate) health: &'a HealthBook,
    pub(crate) pools: &'a PoolBook,
    pub(crate) tried: &'a [CredentialId],
}

/// A rank: specificity, then priority. Credentials of equal rank form a pool.
fn rank(credential: &Credential) -> (byok_domain::Specificity, i32) {
    (credential.scope.specificity(), credential.priority)
}

/// The usable credentials of `pool` that admit `call`, in the order they should be
/// tried: the most specific rank first, and in it the pool's weighted pick first, then
/// the rest of that rank; then the next rank. Cooling, failing and already tried
/// credentials are left out; when that leaves none, the refusal says why
/// (`rate_limited` with the soonest end of a cooldown, `credential_failing`).
fn choose(
    pool: &OrgSnapshot,
    call: &CallScope,
    max_age_days: Option<u32>,
    now: Timestamp,
    selector: &Selector<'_>,
) -> Result<Vec<Arc<CachedCredential>>, Unresolved> {
    // The snapshot is in preference order: the provider's first credential is the most
    // preferred, the one a refusal names when none admits the call.
    let Some(most_preferred) = pool.credentials().iter().find(|c| c.credential.provider == call.provider) else {
        return Err(Unresolved::NoneAdmits(
            Refusal::new(Code::NoCredential, format!("no credential for provider {}", call.provider)),
            None,
        ));
    };
    // Only the credentials the call's team and workflow could be admitted by, most
    // preferred first; the scope check builds no refusal.
    let admitting: Vec<&Arc<CachedCredential>> = pool
        .candidates(call.team, call.workflow)
        .filter(|c| c.credential.scope.admits_call(c.credential.provider, call))
        .collect();
    let usable: Vec<&Arc<CachedCredential>> =
        admitting.iter().copied().filter(|c| state_refusal(&c.credential, max_age_days, now).is_none()).collect();
    if usable.is_empty() {
        if let Some(best) = admitting.first() {
            // Every credential whose scope admits the call is unusable: say why for the best.
            let refusal = state_refusal(&best.credential, max_age_days, now)
                .unwrap_or_else(|| Refusal::new(Code::NoCredential, "no usable credential"));
            return Err(Unresolved::Unusable(refusal, Arc::clone(best)));
        }
        let refusal = scope_refusal(&most_preferred.credential, call)
            .unwrap_or_else(|| Refusal::new(Code::NoCredential, "no credential admits this call"));
        return Err(Unresolved::NoneAdmits(refusal, Some(Arc::clone(most_preferred))));
    }
    let untried: Vec<&Arc<CachedCredential>> =
        usable.iter().copied().filter(|c| !selector.tried.contains(&c.credential.id)).collect();
    let Some(first_untried) = untried.first() else {
        return Err(Unresolved::Unusable(
            Refusal::new(Code::NoCredential, "every credential that admits this call was tried"),
            Arc::clone(usable[0]),
        ));
    };
    let first_untried = Arc::clone(first_untried);

    let mut ordered = Vec::with_capacity(untried.len());
    let mut soonest: Option<Timestamp> = None;
    let mut failing = Vec::new();
    let mut start = 0;
    while start < untried.len() {
        let this_rank = rank(&untried[start].credential);
        let end =
            untried[start..].iter().position(|c| rank(&c.credential) != this_rank).map_or(untried.len(), |n| start + n);
        // This rank's members in a fixed order (the pool's identity), with whether each
        // may be tried now.
        let mut members: Vec<&Arc<CachedCredential>> = untried[start..end].to_vec();
        members.sort_by_key(|c| c.credential.id);
        let mut ready = Vec::with_capacity(members.len());
        for member in members {
            let credential = &member.credential;
            match selector.health.availability(&credential.id, credential.version, credential.health.is_failing()) {
                Availability::Ready | Availability::ProbeDue => ready.push(member),
                Availability::Cooling { until } => soonest = Some(soonest.map_or(until, |s| s.min(until))),
                Availability::Failing => failing.push(member),
            }
        }
        let weights: Vec<(CredentialId, u16)> =
            ready.iter().map(|c| (c.credential.id, c.credential.weight.max(1))).collect();
        if let Some(pick) = selector.pools.pick(&weights) {
            ordered.push(Arc::clone(ready[pick]));
            // The others of the rank follow, heaviest first (the order a failover or a
            // paced key moves on in).
            let mut rest: Vec<&Arc<CachedCredential>> =
                ready.iter().enumerate().filter(|(i, _)| *i != pick).map(|(_, c)| *c).collect();
            rest.sort_by_key(|c| std::cmp::Reverse(c.credential.weight));
            ordered.extend(rest.into_iter().map(Arc::clone));
        }
        start = end;
    }
    if !ordered.is_empty() {
        return Ok(ordered);
    }
    let refusal = match soonest {
        Some(until) => {
            let wait = until.as_micros().saturating_sub(Timestamp::now().as_micros());
            let secs = u64::try_from(wait).unwrap_or(0).div_ceil(1_000_000).max(1);
            Refusal::new(
                Code::RateLimited,
                format!(
                    "every {} credential that admits this call is cooling down after the provider throttled it; \
                     retry in {secs} s",
                    call.provider
                ),
            )
            .with_retry_after(secs)
        }
        None => {
            let names: Vec<String> =
                failing.iter().map(|c| format!("{} ({})", c.credential.id, c.credential.name)).collect();
            Refusal::new(
                Code::CredentialFailing,
                format!(
                    "the provider rejected every credential that admits this call: {}; rotate or verify them",
                    names.join(", ")
                ),
            )
        }
    };
    Err(Unresolved::Unusable(refusal, first_untried))
}

fn owned(list: Vec<Arc<CachedCredential>>, owner: CredentialOwner) -> Vec<Resolved> {
    list.into_iter().map(|credential| Resolved { credential, owner }).collect()
}

fn refused(refusal: Refusal, credential: Option<Arc<CachedCredential>>, owner: CredentialOwner) -> ResolveRefusal {
    ResolveRefusal { refusal, credential: credential.map(|credential| Resolved { credential, owner }) }
}

/// Choose the credential for `call` of `org`, honouring a pin. `platform` is the
/// platform pool's snapshot for the provider (needed for katman-a calls and for pins);
/// `pinned_elsewhere` is the pinned credential when it is in neither snapshot (another
/// provider's), with its owner.
pub(crate) fn resolve_credential(
    org: &OrgSnapshot,
    platform: Option<&OrgSnapshot>,
    call: &CallScope,
    pin: Option<&str>,
    pinned_elsewhere: Option<(Arc<CachedCredential>, CredentialOwner)>,
    now: Timestamp,
    selector: &Selector<'_>,
) -> Result<Vec<Resolved>, ResolveRefusal> {
    let tier = org.org.tier;
    if let Some(reference) = pin {
        let (pinned, owner) = org
            .pinned(reference)
            .map(|c| (Arc::clone(c), CredentialOwner::Org))
            .or_else(|| platform.and_then(|p| p.pinned(reference)).map(|c| (Arc::clone(c), CredentialOwner::Platform)))
            .or(pinned_elsewhere)
            .ok_or_else(|| {
                refused(
                    Refusal::new(Code::NoCredential, format!("no credential '{reference}' in org {}", org.org.id)),
                    None,
                    CredentialOwner::Org,
                )
            })?;
        if owner == CredentialOwner::Platform && tier != Tier::KatmanA {
            let refusal = Refusal::new(
                Code::TierForbids,
                format!(
                    "credential {} is a platform credential; org {} is on {tier}, whose calls use only the org's own \
                     credentials",
                    pinned.credential.id, org.org.id
                ),
            );
            return Err(refused(refusal, Some(pinned), owner));
        }
        let age = if owner == CredentialOwner::Org { max_age(org) } else { None };
        let refusal = scope_refusal(&pinned.credential, call).or_else(|| state_refusal(&pinned.credential, age, now));
        // A pin is used whatever its health, and never fails over.
        return match refusal {
            Some(refusal) => Err(refused(refusal, Some(pinned), owner)),
            None => Ok(vec![Resolved { credential: pinned, owner }]),
        };
    }

    let own = match choose(org, call, max_age(org), now, selector) {
        Ok(list) => return Ok(owned(list, CredentialOwner::Org)),
        Err(Unresolved::Unusable(refusal, best)) => return Err(refused(refusal, Some(best), CredentialOwner::Org)),
        Err(Unresolved::NoneAdmits(refusal, best)) => (refusal, best),
    };
    let own_refusal = |(refusal, best): (Refusal, Option<Arc<CachedCredential>>)| {
        let message =
            format!("no {} credential of org {} admits this call; {}", call.provider, org.org.id, refusal.message);
        refused(Refusal::new(refusal.code, message), best, CredentialOwner::Org)
    };
    if tier != Tier::KatmanA {
        return Err(own_refusal(own));
    }
    let Some(platform) = platform else { return Err(own_refusal(own)) };
    match choose(platform, call, None, now, selector) {
        Ok(list) => Ok(owned(list, CredentialOwner::Platform)),
        Err(Unresolved::Unusable(refusal, best)) | Err(Unresolved::NoneAdmits(refusal, Some(best))) => {
            let message = format!(
                "no {} credential of org {} admits this call ({}), nor does the platform pool: {}",
                call.provider, org.org.id, own.0.message, refusal.message
            );
            Err(refused(Refusal::new(refusal.code, message), Some(best), CredentialOwner::Platform))
        }
        Err(Unresolved::NoneAdmits(_, None)) => Err(own_refusal(own)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use byok_domain::{
        Capability, KmsName, Mode, Name, Org, OrgControls, OrgId, OrgState, ProviderId, Scope, TeamId, WorkflowId,
    };

    use super::*;

    /// A fresh node's health and pools, nothing tried yet.
    fn selector() -> Selector<'static> {
        Selector { health: Box::leak(Box::default()), pools: Box::leak(Box::default()), tried: &[] }
    }

    struct Fixture {
        org: OrgSnapshot,
        platform: OrgSnapshot,
        team: TeamId,
        workflow: WorkflowId,
    }

    fn credential(name: &str, provider: ProviderId, scope: Scope, priority: i32, age: i64) -> Arc<CachedCredential> {
        let created = Timestamp::from_micros(1_700_000_000_000_000 + age).unwrap();
        Arc::new(CachedCredential::new(Credential {
            id: CredentialId::generate(),
            org_id: OrgId::generate(),
            name: Name::parse(name).unwrap(),
            provider,
            scope,
            state: CredentialState::Active,
            version: 1,
            fingerprint: "fp_x".into(),
            base_url: None,
            expires_at: None,
            priority,
            created_at: created,
            updated_at: created,
            version_created_at: created,
            owner: CredentialOwner::Org,
            rotate_by: None,
            weight: 1,
            rpm: None,
            tpm: None,
            health: Default::default(),
        }))
    }

    fn org(tier: Tier) -> Org {
        Org {
            id: OrgId::generate(),
            name: Name::parse("acme").unwrap(),
            tier,
            state: OrgState::Active,
            kek_version: 1,
            kms: KmsName::default_kms(),
            kms_moving_from: None,
            retention_days: None,
            rate_card: None,
            budget: Default::default(),
            controls: OrgControls::default(),
            limits: Default::default(),
            created_at: Timestamp::now(),
        }
    }

    fn fixture_with(
        tier: Tier,
        credentials: impl FnOnce(TeamId, WorkflowId) -> Vec<Arc<CachedCredential>>,
        platform: Vec<Arc<CachedCredential>>,
    ) -> Fixture {
        let team = TeamId::generate();
        let workflow = WorkflowId::generate();
        Fixture {
            org: OrgSnapshot::new(org(tier), credentials(team, workflow), HashMap::new()),
            platform: OrgSnapshot::new(org(Tier::KatmanA), platform, HashMap::new()),
            team,
            workflow,
        }
    }

    fn fixture(credentials: impl FnOnce(TeamId, WorkflowId) -> Vec<Arc<CachedCredential>>) -> Fixture {
        fixture_with(Tier::KatmanA, credentials, Vec::new())
    }

    fn call(f: &Fixture, provider: ProviderId, workflow: bool) -> CallScope {
        CallScope {
            provider,
            model: Some("gpt-4o".into()),
            model_family: Some("gpt-4o".into()),
            capability: Capability::Chat,
            mode: Mode::Sync,
            team: f.team,
            workflow: workflow.then_some(f.workflow),
        }
    }

    /// The chosen credential's name and owner, or the refusal's code.
    fn resolve(f: &Fixture, call: &CallScope, pin: Option<&str>) -> Result<(String, CredentialOwner), Code> {
        resolve_credential(&f.org, Some(&f.platform), call, pin, None, Timestamp::now(), &selector())
            .map(|r| (r[0].credential.credential.name.as_str().to_owned(), r[0].owner))
            .map_err(|r| r.refusal.code)
    }

    fn chosen(f: &Fixture, call: &CallScope, pin: Option<&str>) -> Result<String, Code> {
        resolve(f, call, pin).map(|(name, _)| name)
    }

    #[test]
    fn most_specific_wins_then_priority_then_the_pool_shares() {
        let f = fixture(|team, wf| {
            vec![
                credential("org-wide", ProviderId::Openai, Scope::default(), 100, 0),
                credential("team", ProviderId::Openai, Scope { teams: vec![team], ..Scope::default() }, 0, 0),
                credential("workflow", ProviderId::Openai, Scope { workflows: vec![wf], ..Scope::default() }, 0, 0),
                credential("anthropic", ProviderId::Anthropic, Scope { workflows: vec![wf], ..Scope::default() }, 0, 0),
            ]
        });
        assert_eq!(chosen(&f, &call(&f, ProviderId::Openai, true), None), Ok("workflow".into()));
        assert_eq!(chosen(&f, &call(&f, ProviderId::Openai, false), None), Ok("team".into()));

        let f = fixture(|_, _| {
            vec![
                credential("old-low", ProviderId::Openai, Scope::default(), 0, 0),
                credential("old-high", ProviderId::Openai, Scope::default(), 5, 0),
                credential("new-high", ProviderId::Openai, Scope::default(), 5, 10),
                credential(
                    "family",
                    ProviderId::Openai,
                    Scope { model_families: vec!["gpt-4o".into()], ..Scope::default() },
                    -1,
                    0,
                ),
            ]
        });
        assert_eq!(chosen(&f, &call(&f, ProviderId::Openai, false), None), Ok("family".into()));
        let mut other_model = call(&f, ProviderId::Openai, false);
        other_model.model_family = None;
        // old-high and new-high are of equal rank: a pool, sharing the calls (the
        // selector is fresh per call here, so share with one selector instead).
        let sel = selector();
        let picks: Vec<String> = (0..4)
            .map(|_| {
                resolve_credential(&f.org, Some(&f.platform), &other_model, None, None, Timestamp::now(), &sel).unwrap()
                    [0]
                .credential
                .credential
                .name
                .as_str()
                .to_owned()
            })
            .collect();
        assert_eq!(picks.iter().filter(|p| *p == "old-high").count(), 2, "{picks:?}");
        assert_eq!(picks.iter().filter(|p| *p == "new-high").count(), 2, "{picks:?}");
    }

    fn weighted(name: &str, weight: u16, scope: Scope) -> Arc<CachedCredential> {
        let cached = credential(name, ProviderId::Openai, scope, 0, 0);
        let mut credential = cached.credential.clone();
        credential.weight = weight;
        Arc::new(CachedCredential::new(credential))
    }

    fn names(list: &[Resolved]) -> Vec<&str> {
        list.iter().map(|r| r.credential.credential.name.as_str()).collect()
    }

    #[test]
    fn a_pool_shares_calls_by_weight_and_lists_the_rest_for_failover() {
        let f = fixture(|team, _| {
            vec![
                weighted("a", 3, Scope::default()),
                weighted("b", 1, Scope::default()),
                weighted("team", 1, Scope { teams: vec![team], ..Scope::default() }),
            ]
        });
        let mut scope = call(&f, ProviderId::Openai, false);
        scope.team = TeamId::generate(); // not the team: only the org-wide pool admits
        let sel = selector();
        let mut counts = HashMap::new();
        for _ in 0..100 {
            let list = resolve_credential(&f.org, None, &scope, None, None, Timestamp::now(), &sel).unwrap();
            assert_eq!(list.len(), 2);
            *counts.entry(names(&list)[0].to_owned()).or_insert(0) += 1;
        }
        assert_eq!(counts["a"], 75);
        assert_eq!(counts["b"], 25);
    }

    #[test]
    fn cooling_and_failing_keys_are_skipped_and_named_when_none_is_left() {
        let f = fixture(|_, _| {
            vec![weighted("a", 1, Scope::default()), credential("low", ProviderId::Openai, Scope::default(), -5, 0)]
        });
        let scope = call(&f, ProviderId::Openai, false);
        let sel = selector();
        let id =
            |name: &str| f.org.credentials().iter().find(|c| c.credential.name.as_str() == name).unwrap().credential.id;
        sel.health.observe(
            &id("a"),
            1,
            crate::health::Observed::Throttled(Some(std::time::Duration::from_secs(30))),
            Some(429),
        );
        // The throttled key is skipped: the next rank serves.
        let list = resolve_credential(&f.org, None, &scope, None, None, Timestamp::now(), &sel).unwrap();
        assert_eq!(names(&list), ["low"]);
        // Both cooling: rate_limited with the soonest end.
        sel.health.observe(
            &id("low"),
            1,
            crate::health::Observed::Throttled(Some(std::time::Duration::from_secs(7))),
            Some(429),
        );
        let refused = resolve_credential(&f.org, None, &scope, None, None, Timestamp::now(), &sel).unwrap_err();
        assert_eq!(refused.refusal.code, Code::RateLimited);
        let retry = refused.refusal.retry_after.unwrap();
        assert!((6..=7).contains(&retry), "{retry}");
        // Both rejected by the provider: credential_failing naming them.
        let sel = selector();
        sel.health.observe(&id("a"), 1, crate::health::Observed::Rejected(401), Some(401));
        sel.health.observe(&id("low"), 1, crate::health::Observed::Rejected(403), Some(403));
        let refused = resolve_credential(&f.org, None, &scope, None, None, Timestamp::now(), &sel).unwrap_err();
        assert_eq!(refused.refusal.code, Code::CredentialFailing);
        assert!(refused.refusal.message.contains("(a)") && refused.refusal.message.contains("(low)"));
        // A pin is used whatever its health.
        let pinned = resolve_credential(&f.org, None, &scope, Some("a"), None, Timestamp::now(), &sel).unwrap();
        assert_eq!(names(&pinned), ["a"]);
    }

    #[test]
    fn failover_follows_the_same_rule() {
        // The only other key is bound to another team, another family, or (katman-b) in the
        // platform pool: after the first is tried, nothing is left.
        let f = fixture_with(
            Tier::KatmanB,
            |_, _| {
                vec![
                    credential("mine", ProviderId::Openai, Scope::default(), 0, 0),
                    credential(
                        "other-team",
                        ProviderId::Openai,
                        Scope { teams: vec![TeamId::generate()], ..Scope::default() },
                        9,
                        0,
                    ),
                    credential(
                        "other-family",
                        ProviderId::Openai,
                        Scope { model_families: vec!["o1".into()], ..Scope::default() },
                        9,
                        0,
                    ),
                ]
            },
            vec![credential("platform", ProviderId::Openai, Scope::default(), 0, 0)],
        );
        let scope = call(&f, ProviderId::Openai, false);
        let first =
            resolve_credential(&f.org, Some(&f.platform), &scope, None, None, Timestamp::now(), &selector()).unwrap();
        assert_eq!(names(&first), ["mine"]);
        let tried = [first[0].credential.credential.id];
        let sel = Selector { tried: &tried, ..selector() };
        let refused =
            resolve_credential(&f.org, Some(&f.platform), &scope, None, None, Timestamp::now(), &sel).unwrap_err();
        assert_eq!(refused.refusal.code, Code::NoCredential);
        // katman-a: the platform pool serves only when no own credential admits the call,
        // so a tried own key does not move the call to the platform either.
        let mut f = f;
        f.org.org.tier = Tier::KatmanA;
        let refused =
            resolve_credential(&f.org, Some(&f.platform), &scope, None, None, Timestamp::now(), &sel).unwrap_err();
        assert_eq!(refused.refusal.code, Code::NoCredential);
    }

    #[test]
    fn pins_and_refusals() {
        let f = fixture(|team, _| {
            vec![
                credential("openai-only", ProviderId::Openai, Scope::default(), 0, 0),
                credential(
                    "team-bound",
                    ProviderId::Anthropic,
                    Scope { teams: vec![TeamId::generate()], ..Scope::default() },
                    0,
                    0,
                ),
                credential("mine", ProviderId::Gemini, Scope { teams: vec![team], ..Scope::default() }, 0, 0),
            ]
        });
        // A pinned OpenAI-only credential on the Anthropic route is refused, naming the provider.
        let refused = resolve_credential(
            &f.org,
            None,
            &call(&f, ProviderId::Anthropic, false),
            Some("openai-only"),
            None,
            Timestamp::now(),
            &selector(),
        )
        .unwrap_err();
        assert_eq!(refused.refusal.code, Code::ScopeDenied);
        assert!(
            refused.refusal.message.contains("is bound to provider openai; this call is to anthropic"),
            "{}",
            refused.refusal.message
        );
        assert_eq!(chosen(&f, &call(&f, ProviderId::Openai, false), Some("nope")), Err(Code::NoCredential));
        assert_eq!(chosen(&f, &call(&f, ProviderId::Anthropic, false), None), Err(Code::ScopeDenied));
        assert_eq!(chosen(&f, &call(&f, ProviderId::Mistral, false), None), Err(Code::NoCredential));
        assert_eq!(chosen(&f, &call(&f, ProviderId::Gemini, false), Some("mine")), Ok("mine".into()));
    }

    #[test]
    fn unusable_states_are_named() {
        for (state, code) in
            [(CredentialState::Revoked, Code::CredentialRevoked), (CredentialState::Disabled, Code::CredentialDisabled)]
        {
            let f = fixture(|_, _| {
                let mut c = credential("only", ProviderId::Openai, Scope::default(), 0, 0);
                Arc::get_mut(&mut c).unwrap().credential.state = state;
                vec![c]
            });
            assert_eq!(chosen(&f, &call(&f, ProviderId::Openai, false), None), Err(code));
            assert_eq!(chosen(&f, &call(&f, ProviderId::Openai, false), Some("only")), Err(code));
        }
        let f = fixture(|_, _| {
            let mut c = credential("only", ProviderId::Openai, Scope::default(), 0, 0);
            Arc::get_mut(&mut c).unwrap().credential.expires_at = Timestamp::from_micros(1);
            vec![c]
        });
        assert_eq!(chosen(&f, &call(&f, ProviderId::Openai, false), None), Err(Code::CredentialExpired));
    }

    /// Who serves a call, by tier, own credentials and pin: the platform pool only for
    /// katman-a, only when no own credential admits the call by scope, never by pin from
    /// katman-b/c.
    #[test]
    fn tiers_decide_whether_the_platform_pool_serves() {
        use CredentialOwner::{Org as Own, Platform};
        let family = |f: &str| Scope { model_families: vec![f.into()], ..Scope::default() };
        let platform = || {
            vec![
                credential("shared", ProviderId::Openai, Scope::default(), 0, 0),
                credential("shared-claude", ProviderId::Anthropic, Scope::default(), 0, 0),
            ]
        };
        let disabled = |name: &str, scope: Scope| {
            let mut c = credential(name, ProviderId::Openai, scope, 0, 0);
            Arc::get_mut(&mut c).unwrap().credential.state = CredentialState::Disabled;
            c
        };
        type Case = (
            &'static str,
            Tier,
            fn() -> Vec<Arc<CachedCredential>>,
            Option<&'static str>,
            Result<(&'static str, CredentialOwner), Code>,
        );
        let _ = disabled;
        let cases: Vec<Case> = vec![
            ("a: no own credential -> platform", Tier::KatmanA, Vec::new, None, Ok(("shared", Platform))),
            ("b: no own credential -> refused", Tier::KatmanB, Vec::new, None, Err(Code::NoCredential)),
            ("c: no own credential -> refused", Tier::KatmanC, Vec::new, None, Err(Code::NoCredential)),
            (
                "a: own credential wins",
                Tier::KatmanA,
                || vec![credential("mine", ProviderId::Openai, Scope::default(), 0, 0)],
                None,
                Ok(("mine", Own)),
            ),
            (
                "a: own scope excludes the call -> platform",
                Tier::KatmanA,
                || {
                    vec![credential(
                        "mini",
                        ProviderId::Openai,
                        Scope { model_families: vec!["gpt-4o-mini".into()], ..Scope::default() },
                        0,
                        0,
                    )]
                },
                None,
                Ok(("shared", Platform)),
            ),
            (
                "b: own scope excludes the call -> scope_denied",
                Tier::KatmanB,
                || {
                    vec![credential(
                        "mini",
                        ProviderId::Openai,
                        Scope { model_families: vec!["gpt-4o-mini".into()], ..Scope::default() },
                        0,
                        0,
                    )]
                },
                None,
                Err(Code::ScopeDenied),
            ),
            (
                "a: own admitting but disabled -> refused, not moved to platform",
                Tier::KatmanA,
                || {
                    let mut c = credential("off", ProviderId::Openai, Scope::default(), 0, 0);
                    Arc::get_mut(&mut c).unwrap().credential.state = CredentialState::Disabled;
                    vec![c]
                },
                None,
                Err(Code::CredentialDisabled),
            ),
            ("a: pin a platform credential", Tier::KatmanA, Vec::new, Some("shared"), Ok(("shared", Platform))),
            (
                "b: pin a platform credential -> tier_forbids",
                Tier::KatmanB,
                Vec::new,
                Some("shared"),
                Err(Code::TierForbids),
            ),
            (
                "c: pin a platform credential -> tier_forbids",
                Tier::KatmanC,
                Vec::new,
                Some("shared"),
                Err(Code::TierForbids),
            ),
            (
                "a: pin another provider's platform credential -> scope_denied",
                Tier::KatmanA,
                Vec::new,
                Some("shared-claude"),
                Err(Code::ScopeDenied),
            ),
            (
                "a: an own name shadows the platform's",
                Tier::KatmanA,
                || vec![credential("shared", ProviderId::Openai, Scope::default(), 0, 0)],
                Some("shared"),
                Ok(("shared", Own)),
            ),
        ];
        for (what, tier, own, pin, expected) in cases {
            let f = fixture_with(tier, |_, _| own(), platform());
            let got = resolve(&f, &call(&f, ProviderId::Openai, false), pin);
            let expected = expected.map(|(name, owner)| (name.to_owned(), owner));
            assert_eq!(got, expected, "{what}");
        }
        // The platform pool's own scope applies.
        let f = fixture_with(
            Tier::KatmanA,
            |_, _| Vec::new(),
            vec![credential("minis", ProviderId::Openai, family("gpt-4o-mini"), 0, 0)],
        );
        let refused = resolve_credential(
            &f.org,
            Some(&f.platform),
            &call(&f, ProviderId::Openai, false),
            None,
            None,
            Timestamp::now(),
            &selector(),
        )
        .unwrap_err();
        assert_eq!(refused.refusal.code, Code::ScopeDenied);
        assert!(refused.refusal.message.contains("nor does the platform pool"), "{}", refused.refusal.message);
        assert_eq!(refused.credential.map(|c| c.owner), Some(Platform));
    }

    #[test]
    fn the_scope_index_finds_exactly_what_a_full_scan_admits_in_order() {
        let teams: Vec<TeamId> = (0..3).map(|_| TeamId::generate()).collect();
        let workflows: Vec<WorkflowId> = (0..3).map(|_| WorkflowId::generate()).collect();
        // Every mix of team list, workflow list and family list, with priorities and ages
        // that tie and differ.
        let list: Vec<Arc<CachedCredential>> = (0..300usize)
            .map(|i| {
                let pick = |n: usize, k: usize| -> Vec<usize> { (0..k).filter(|b| (n >> b) & 1 == 1).collect() };
                let scope = Scope {
                    teams: pick(i % 8, 3).into_iter().map(|t| teams[t]).collect(),
                    workflows: pick((i / 8) % 8, 3).into_iter().map(|w| workflows[w]).collect(),
                    model_families: if i % 5 == 0 { vec!["gpt-4o-mini".into()] } else { vec![] },
                    ..Scope::default()
                };
                let priority = i32::try_from(i % 3).unwrap();
                credential(&format!("k{i}"), ProviderId::Openai, scope, priority, i64::try_from(i % 7).unwrap())
            })
            .collect();
        let snapshot = OrgSnapshot::new(org(Tier::KatmanB), list.clone(), HashMap::new());
        for team in teams.iter().copied().chain([TeamId::generate()]) {
            for workflow in workflows.iter().copied().map(Some).chain([None, Some(WorkflowId::generate())]) {
                for family in ["gpt-4o", "gpt-4o-mini"] {
                    let call = CallScope {
                        provider: ProviderId::Openai,
                        model: Some(family.into()),
                        model_family: Some(family.into()),
                        capability: Capability::Chat,
                        mode: Mode::Sync,
                        team,
                        workflow,
                    };
                    let indexed: Vec<CredentialId> = snapshot
                        .candidates(call.team, call.workflow)
                        .filter(|c| c.credential.scope.admits_call(c.credential.provider, &call))
                        .map(|c| c.credential.id)
                        .collect();
                    let mut scanned: Vec<&Arc<CachedCredential>> = list
                        .iter()
                        .filter(|c| c.credential.scope.admits(c.credential.provider, &call).is_ok())
                        .collect();
                    scanned.sort_by(|a, b| preference(&b.credential, &a.credential));
                    let scanned: Vec<CredentialId> = scanned.iter().map(|c| c.credential.id).collect();
                    assert_eq!(indexed, scanned, "team {team} workflow {workflow:?} family {family}");
                }
            }
        }
        // Pins find any credential by id and by name.
        for c in &list {
            assert_eq!(snapshot.pinned(&c.credential.id.to_string()).map(|p| p.credential.id), Some(c.credential.id));
            assert_eq!(snapshot.pinned(c.credential.name.as_str()).map(|p| p.credential.id), Some(c.credential.id));
        }
        assert!(snapshot.pinned("no-such-key").is_none());
    }

    #[test]
    fn past_the_maximum_age_a_credential_must_be_rotated() {
        let now = Timestamp::now();
        let days = |n: i64| Timestamp::from_micros(now.as_micros() - n * DAY_MICROS).unwrap();
        let mut f = fixture_with(Tier::KatmanC, |_, _| Vec::new(), Vec::new());
        f.org.org.controls.max_credential_age_days = Some(30);
        let aged = |name: &str, age: i64| {
            let mut c = credential(name, ProviderId::Openai, Scope::default(), 0, 0);
            Arc::get_mut(&mut c).unwrap().credential.version_created_at = days(age);
            c
        };
        f.org = OrgSnapshot::new(f.org.org.clone(), vec![aged("old", 31)], HashMap::new());
        let refused =
            resolve_credential(&f.org, None, &call(&f, ProviderId::Openai, false), None, None, now, &selector())
                .unwrap_err();
        assert_eq!(refused.refusal.code, Code::RotationRequired);
        assert!(refused.refusal.message.contains("30 days"), "{}", refused.refusal.message);
        // A fresh one of equal rank serves instead; the same limit on katman-b does nothing.
        f.org = OrgSnapshot::new(f.org.org.clone(), vec![aged("old", 31), aged("fresh", 29)], HashMap::new());
        assert_eq!(chosen(&f, &call(&f, ProviderId::Openai, false), None), Ok("fresh".into()));
        f.org.org.tier = Tier::KatmanB;
        f.org = OrgSnapshot::new(f.org.org.clone(), vec![aged("old", 31)], HashMap::new());
        assert_eq!(chosen(&f, &call(&f, ProviderId::Openai, false), None), Ok("old".into()));
    }
}
