//! Entry points for the hot-path benchmark in `bench/hot` (instruction counts under
//! callgrind, a regression guard in CI): not an API, no stability promise. Each runs one
//! piece of the data plane exactly as a call does, on data built here once.

use std::collections::HashMap;
use std::sync::Arc;

use byok_domain::{
    CallScope, Capability, Credential, CredentialId, CredentialOwner, CredentialState, KmsName, Mode, Name, Org,
    OrgControls, OrgId, OrgState, ProviderId, Scope, TeamId, Tier, Timestamp,
};
use bytes::Bytes;

use crate::cache::{CachedCredential, OrgSnapshot};
use crate::health::HealthBook;
use crate::phases::resolve::{resolve_credential, Selector};
use crate::pools::PoolBook;

/// One org's snapshot for OpenAI and a call to resolve against it.
pub struct Resolution {
    org: OrgSnapshot,
    call: CallScope,
    health: HealthBook,
    pools: PoolBook,
    now: Timestamp,
}

impl std::fmt::Debug for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolution").field("credentials", &self.org.credentials().len()).finish_non_exhaustive()
    }
}

impl Resolution {
    /// An org holding `credentials` OpenAI credentials the way a large org does: each bound
    /// to a team of its own, plus two org-wide ones (a pool of equal rank) as the fallback;
    /// the call comes from the team in the middle, for `gpt-4o`.
    pub fn new(credentials: usize) -> Result<Self, byok_domain::NameError> {
        let teams: Vec<TeamId> = (0..credentials.max(1)).map(|_| TeamId::generate()).collect();
        let mut list: Vec<Arc<CachedCredential>> = Vec::with_capacity(credentials + 2);
        for (i, team) in teams.iter().enumerate().take(credentials) {
            let scope = Scope { teams: vec![*team], ..Scope::default() };
            list.push(credential(&format!("team-key-{i}"), scope, i64::try_from(i).unwrap_or(0))?);
        }
        for i in 0..2 {
            list.push(credential(&format!("org-key-{i}"), Scope::default(), i)?);
        }
        let team = teams.get(credentials / 2).copied().unwrap_or_else(TeamId::generate);
        let call = CallScope {
            provider: ProviderId::Openai,
            model: Some("gpt-4o".into()),
            model_family: Some("gpt-4o".into()),
            capability: Capability::Chat,
            mode: Mode::Sync,
            team,
            workflow: None,
        };
        Ok(Self {
            org: OrgSnapshot::new(org()?, list, HashMap::new()),
            call,
            health: HealthBook::default(),
            pools: PoolBook::default(),
            now: Timestamp::now(),
        })
    }

    /// Resolve the call: how many credentials it may try, in order (0 on a refusal).
    pub fn run(&self) -> usize {
        let selector = Selector { health: &self.health, pools: &self.pools, tried: &[] };
        resolve_credential(&self.org, None, &self.call, None, None, self.now, &selector).map_or(0, |list| list.len())
    }
}

/// The response redactor for `key` over a body arriving as `chunks`: how many bytes it
/// lets out.
pub fn redact(key: &[u8], chunks: &[Bytes]) -> usize {
    let mut redactor = crate::redact::Redactor::new(key);
    let mut out = 0;
    for chunk in chunks {
        out += redactor.push(chunk.clone()).len();
    }
    out + redactor.finish().len()
}

fn credential(name: &str, scope: Scope, age: i64) -> Result<Arc<CachedCredential>, byok_domain::NameError> {
    let created = Timestamp::from_micros(1_700_000_000_000_000 + age).unwrap_or_else(Timestamp::now);
    let name = Name::parse(name)?;
    Ok(Arc::new(CachedCredential::new(Credential {
        id: CredentialId::generate(),
        org_id: OrgId::generate(),
        name,
        provider: ProviderId::Openai,
        scope,
        state: CredentialState::Active,
        version: 1,
        fingerprint: "fp_bench".into(),
        base_url: None,
        expires_at: None,
        priority: 0,
        created_at: created,
        updated_at: created,
        version_created_at: created,
        owner: CredentialOwner::Org,
        rotate_by: None,
        weight: 1,
        rpm: None,
        tpm: None,
        health: Default::default(),
    })))
}

fn org() -> Result<Org, byok_domain::NameError> {
    Ok(Org {
        id: OrgId::generate(),
        name: Name::parse("bench")?,
        tier: Tier::KatmanB,
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
    })
}
