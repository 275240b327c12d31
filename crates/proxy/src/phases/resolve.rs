//! Phase 4: resolve the credential.
//!
//! Candidates are the org's credentials for the call's provider. A pin
//! (`x-byok-credential`) must name one that is usable and admits the call, or the call
//! is refused naming why. Without a pin the most specific admitting, active, unexpired
//! credential wins: workflow-bound over team-bound over org-wide, then more restricted
//! dimensions, then higher priority, then newer, then the larger id — a total order,
//! so the choice is deterministic.

use std::cmp::Ordering;
use std::sync::Arc;

use byok_domain::{CallScope, Credential, CredentialId, CredentialState, Timestamp};

use super::{Code, Refusal};
use crate::cache::{CachedCredential, OrgSnapshot};

/// Header pinning a credential by id or name.
pub const CREDENTIAL_HEADER: &str = "x-byok-credential";

/// A refusal, with the credential it is about (for the audit row) when there is one.
#[derive(Debug)]
pub(crate) struct ResolveRefusal {
    pub(crate) refusal: Refusal,
    pub(crate) credential: Option<Arc<CachedCredential>>,
}

fn preference(a: &Credential, b: &Credential) -> Ordering {
    a.scope
        .specificity()
        .cmp(&b.scope.specificity())
        .then(a.priority.cmp(&b.priority))
        .then(a.created_at.cmp(&b.created_at))
        .then(a.id.cmp(&b.id))
}

fn state_refusal(credential: &Credential, now: Timestamp) -> Option<Refusal> {
    let state = Credential::effective_state(credential.state, credential.expires_at, now);
    let (code, what) = match state {
        CredentialState::Active => return None,
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

/// The pinned credential among the snapshot's, if it is there.
pub(crate) fn find_pinned<'a>(org: &'a OrgSnapshot, reference: &str) -> Option<&'a Arc<CachedCredential>> {
    let by_id = reference.parse::<CredentialId>().ok();
    org.credentials.iter().find(|c| Some(c.credential.id) == by_id || c.credential.name.as_str() == reference)
}

/// Choose the credential for `call` in `org`, honouring a pin. `pinned_elsewhere` is the
/// pinned credential when it is not among the snapshot's (another provider's).
pub(crate) fn resolve_credential(
    org: &OrgSnapshot,
    call: &CallScope,
    pin: Option<&str>,
    pinned_elsewhere: Option<&Arc<CachedCredential>>,
    now: Timestamp,
) -> Result<Arc<CachedCredential>, ResolveRefusal> {
    if let Some(reference) = pin {
        let pinned = find_pinned(org, reference).or(pinned_elsewhere).ok_or_else(|| ResolveRefusal {
            refusal: Refusal::new(Code::NoCredential, format!("no credential '{reference}' in org {}", org.org.id)),
            credential: None,
        })?;
        let refusal = scope_refusal(&pinned.credential, call).or_else(|| state_refusal(&pinned.credential, now));
        return match refusal {
            Some(refusal) => Err(ResolveRefusal { refusal, credential: Some(Arc::clone(pinned)) }),
            None => Ok(Arc::clone(pinned)),
        };
    }

    let mut candidates: Vec<&Arc<CachedCredential>> =
        org.credentials.iter().filter(|c| c.credential.provider == call.provider).collect();
    if candidates.is_empty() {
        return Err(ResolveRefusal {
            refusal: Refusal::new(
                Code::NoCredential,
                format!("org {} has no credential for provider {}", org.org.id, call.provider),
            ),
            credential: None,
        });
    }
    // Most preferred first.
    candidates.sort_by(|a, b| preference(&b.credential, &a.credential));
    let admitting: Vec<&Arc<CachedCredential>> =
        candidates.iter().copied().filter(|c| scope_refusal(&c.credential, call).is_none()).collect();
    if let Some(chosen) = admitting.iter().find(|c| state_refusal(&c.credential, now).is_none()) {
        return Ok(Arc::clone(chosen));
    }
    if let Some(best) = admitting.first() {
        // Every credential whose scope admits the call is unusable: say why for the best.
        let refusal = state_refusal(&best.credential, now)
            .unwrap_or_else(|| Refusal::new(Code::NoCredential, "no usable credential"));
        return Err(ResolveRefusal { refusal, credential: Some(Arc::clone(best)) });
    }
    let best = candidates[0];
    let refusal = scope_refusal(&best.credential, call).map_or_else(
        || Refusal::new(Code::NoCredential, "no credential admits this call"),
        |r| {
            Refusal::new(
                r.code,
                format!("no {} credential of org {} admits this call; {}", call.provider, org.org.id, r.message),
            )
        },
    );
    Err(ResolveRefusal { refusal, credential: Some(Arc::clone(best)) })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use byok_domain::{Capability, Mode, Name, Org, OrgId, OrgState, ProviderId, Scope, TeamId, Tier, WorkflowId};

    use super::*;

    struct Fixture {
        org: OrgSnapshot,
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
        }))
    }

    fn fixture(credentials: impl FnOnce(TeamId, WorkflowId) -> Vec<Arc<CachedCredential>>) -> Fixture {
        let team = TeamId::generate();
        let workflow = WorkflowId::generate();
        let org = Org {
            id: OrgId::generate(),
            name: Name::parse("acme").unwrap(),
            tier: Tier::KatmanA,
            state: OrgState::Active,
            kek_version: 1,
            kms: Default::default(),
            kms_moving_from: None,
            retention_days: None,
            created_at: Timestamp::now(),
        };
        Fixture {
            org: OrgSnapshot { org, credentials: credentials(team, workflow), workflows: HashMap::new() },
            team,
            workflow,
        }
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

    fn chosen(f: &Fixture, call: &CallScope, pin: Option<&str>) -> Result<String, Code> {
        resolve_credential(&f.org, call, pin, None, Timestamp::now())
            .map(|c| c.credential.name.as_str().to_owned())
            .map_err(|r| r.refusal.code)
    }

    #[test]
    fn most_specific_wins_then_priority_then_newest() {
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
        assert_eq!(chosen(&f, &other_model, None), Ok("new-high".into()));
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
            &call(&f, ProviderId::Anthropic, false),
            Some("openai-only"),
            None,
            Timestamp::now(),
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
}
