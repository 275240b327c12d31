//! The store suite: every test runs on SQLite and, when `BYOK_TEST_POSTGRES_URL` is set,
//! on a fresh PostgreSQL database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use byok_crypto::{SealedSecret, TokenHash, WrappedDek};
use byok_domain::{
    Actor, AdminToken, AdminTokenId, AdminTokenScope, Capability, Credential, CredentialId, CredentialState, EventId,
    KmsName, LifecycleKind, Mode, Name, Org, OrgId, OrgState, ProviderId, Scope, Team, TeamId, Tier, Timestamp,
    TokenId, Workflow, WorkflowId, WorkloadToken,
};
use byok_store::testing::{for_each_backend, TestStore};
use byok_store::{Backend, EventFilter, NewEvent, Store, StoreError};
use serde_json::json;
use std::io::Write as _;

// ----- fixtures -------------------------------------------------------------------------

/// A fixed instant plus `offset_us`, so tests compare exact values.
fn at(offset_us: i64) -> Timestamp {
    Timestamp::from_micros(1_767_225_600_123_456 + offset_us).unwrap()
}

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

fn admin_actor() -> Actor {
    Actor::AdminToken { id: AdminTokenId::generate() }
}

fn event(org: OrgId, kind: LifecycleKind, subject: impl Into<String>) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        org_id: org,
        kind,
        subject: subject.into(),
        credential_id: None,
        version: None,
        fingerprint: None,
        actor: admin_actor(),
        at: at(7),
        details: json!({"note": "test"}),
    }
}

fn cred_event(cred: &Credential, kind: LifecycleKind) -> NewEvent {
    NewEvent {
        credential_id: Some(cred.id),
        version: Some(cred.version),
        fingerprint: Some(cred.fingerprint.clone()),
        ..event(cred.org_id, kind, cred.id.to_string())
    }
}

fn wrapped(kek_version: u32, fill: u8) -> WrappedDek {
    WrappedDek { kek_version, alg: "A256GCM-KW".to_owned(), bytes: vec![fill; 60], kms: KmsName::default() }
}

fn sealed(kek_version: u32, fill: u8) -> SealedSecret {
    SealedSecret {
        aead: "A256GCM".to_owned(),
        nonce: vec![fill; 12],
        ciphertext: (0..48u8).map(|i| i ^ fill).collect(),
        wrapped_dek: wrapped(kek_version, fill.wrapping_add(1)),
    }
}

async fn new_org(store: &Store, org_name: &str) -> Org {
    let org = Org {
        id: OrgId::generate(),
        name: name(org_name),
        tier: Tier::KatmanB,
        state: OrgState::Active,
        kek_version: 1,
        kms: KmsName::default(),
        kms_moving_from: None,
        retention_days: None,
        rate_card: None,
        budget: Default::default(),
        controls: Default::default(),
        limits: Default::default(),
        created_at: at(0),
    };
    store
        .insert_org(&org, &wrapped(1, 0xAA), &event(org.id, LifecycleKind::OrgCreated, org.id.to_string()))
        .await
        .unwrap();
    org
}

async fn new_team(store: &Store, org: &Org, team_name: &str) -> Team {
    let team = Team { id: TeamId::generate(), org_id: org.id, name: name(team_name), created_at: at(1) };
    store.insert_team(&team, &event(org.id, LifecycleKind::TeamCreated, team.id.to_string())).await.unwrap();
    team
}

fn credential(org: &Org, cred_name: &str) -> Credential {
    Credential {
        id: CredentialId::generate(),
        org_id: org.id,
        name: name(cred_name),
        provider: ProviderId::Openai,
        scope: Scope {
            model_families: vec!["gpt-4o".to_owned(), "o3".to_owned()],
            capabilities: vec![Capability::Chat, Capability::Embeddings],
            modes: vec![Mode::Stream],
            teams: vec![TeamId::generate()],
            workflows: vec![WorkflowId::generate(), WorkflowId::generate()],
        },
        state: CredentialState::Active,
        version: 1,
        fingerprint: "fp1:0123456789abcdef".to_owned(),
        base_url: Some("https://example.openai.azure.com".to_owned()),
        expires_at: Some(at(86_400_000_000)),
        priority: -3,
        created_at: at(2),
        updated_at: at(2),
        version_created_at: at(2),
        owner: Default::default(),
        rotate_by: None,
        weight: 1,
        rpm: None,
        tpm: None,
        health: Default::default(),
    }
}

async fn new_credential(store: &Store, org: &Org, cred_name: &str) -> Credential {
    let cred = credential(org, cred_name);
    store.insert_credential(&cred, &sealed(1, 0x11), &cred_event(&cred, LifecycleKind::Created)).await.unwrap();
    cred
}

async fn count(t: &TestStore, table: &str) -> i64 {
    t.count(table).await.unwrap()
}

fn assert_conflict(err: StoreError, needle: &str) {
    match err {
        StoreError::Conflict { what } => assert!(what.contains(needle), "conflict message {what:?} lacks {needle:?}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
}

// ----- tests ----------------------------------------------------------------------------

#[tokio::test]
async fn orgs_round_trip() {
    for_each_backend("orgs_round_trip", |t| async move {
        let store = t.store();
        store.ping().await.unwrap();
        let org = new_org(store, "acme").await;
        let other = new_org(store, "Beta").await;

        assert_eq!(store.get_org(&org.id).await.unwrap(), Some(org.clone()));
        assert_eq!(store.find_org_by_name("acme").await.unwrap(), Some(org.clone()));
        assert_eq!(store.find_org_by_name("ACME").await.unwrap(), None);
        assert_eq!(store.get_org(&OrgId::generate()).await.unwrap(), None);
        assert_eq!(store.list_orgs().await.unwrap(), vec![other.clone(), org.clone()]);
        assert_eq!(store.org_fingerprint_key(&org.id).await.unwrap(), Some(wrapped(1, 0xAA)));
        assert_eq!(store.org_fingerprint_key(&OrgId::generate()).await.unwrap(), None);

        let rotated = event(org.id, LifecycleKind::KekRotated, org.id.to_string());
        store.set_org_kek_version_with_event(&org.id, 2, &rotated).await.unwrap();
        store.set_org_fingerprint_key(&org.id, &wrapped(2, 0xBB)).await.unwrap();
        let got = store.get_org(&org.id).await.unwrap().unwrap();
        assert_eq!(got.kek_version, 2);
        assert_eq!(store.org_fingerprint_key(&org.id).await.unwrap(), Some(wrapped(2, 0xBB)));
        let elsewhere = event(OrgId::generate(), LifecycleKind::KekRotated, "x");
        let err = store.set_org_kek_version_with_event(&elsewhere.org_id, 2, &elsewhere).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }));

        let deleted = store
            .mark_org_deleted(&org.id, at(99), &[event(org.id, LifecycleKind::Deleted, org.id.to_string())])
            .await
            .unwrap();
        assert_eq!(deleted.state, OrgState::Deleted);
        let again = store
            .mark_org_deleted(&org.id, at(100), &[event(org.id, LifecycleKind::Deleted, org.id.to_string())])
            .await
            .unwrap();
        assert_eq!(again, deleted);
        let kinds: Vec<_> =
            store.list_events(&org.id, &EventFilter::default()).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![LifecycleKind::OrgCreated, LifecycleKind::KekRotated, LifecycleKind::Deleted]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn teams_and_workflows_round_trip() {
    for_each_backend("teams_and_workflows_round_trip", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let other_org = new_org(store, "other").await;
        let team_b = new_team(store, &org, "b-team").await;
        let team_a = new_team(store, &org, "a-team").await;

        assert_eq!(store.get_team(&org.id, &team_a.id).await.unwrap(), Some(team_a.clone()));
        assert_eq!(store.get_team(&other_org.id, &team_a.id).await.unwrap(), None, "teams are per org");
        assert_eq!(store.find_team_by_name(&org.id, "b-team").await.unwrap(), Some(team_b.clone()));
        assert_eq!(store.find_team_by_name(&other_org.id, "b-team").await.unwrap(), None);
        assert_eq!(store.list_teams(&org.id).await.unwrap(), vec![team_a.clone(), team_b.clone()]);
        assert!(store.list_teams(&other_org.id).await.unwrap().is_empty());

        let owned = Workflow {
            id: WorkflowId::generate(),
            org_id: org.id,
            name: name("nightly"),
            team_id: Some(team_a.id),
            created_at: at(5),
        };
        let free = Workflow { id: WorkflowId::generate(), name: name("adhoc"), team_id: None, ..owned.clone() };
        for wf in [&owned, &free] {
            store.insert_workflow(wf, &event(org.id, LifecycleKind::WorkflowCreated, wf.id.to_string())).await.unwrap();
        }
        assert_eq!(store.get_workflow(&org.id, &owned.id).await.unwrap(), Some(owned.clone()));
        assert_eq!(store.find_workflow_by_name(&org.id, "adhoc").await.unwrap(), Some(free.clone()));
        assert_eq!(store.get_workflow(&other_org.id, &owned.id).await.unwrap(), None);
        assert_eq!(store.list_workflows(&org.id).await.unwrap(), vec![free, owned]);

        // the same names are fine in another org
        new_team(store, &other_org, "a-team").await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn references_must_exist_within_the_org() {
    for_each_backend("references_must_exist_within_the_org", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let other = new_org(store, "other").await;
        let foreign_team = new_team(store, &other, "theirs").await;
        let teams_before = count(&t, "teams").await;
        let events_before = count(&t, "lifecycle_events").await;

        let ghost = OrgId::generate();
        let team = Team { id: TeamId::generate(), org_id: ghost, name: name("x"), created_at: at(0) };
        let err = store.insert_team(&team, &event(org.id, LifecycleKind::TeamCreated, "x")).await.unwrap_err();
        assert!(matches!(&err, StoreError::NotFound { what } if what.contains(&ghost.to_string())), "{err:?}");

        let wf = Workflow {
            id: WorkflowId::generate(),
            org_id: org.id,
            name: name("wf"),
            team_id: Some(foreign_team.id),
            created_at: at(0),
        };
        let err = store.insert_workflow(&wf, &event(org.id, LifecycleKind::WorkflowCreated, "wf")).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

        let token = WorkloadToken {
            id: TokenId::generate(),
            name: None,
            description: None,
            org_id: org.id,
            team_id: foreign_team.id,
            workflows: vec![],
            expires_at: None,
            revoked_at: None,
            created_at: at(0),
        };
        let err = store
            .insert_workload_token(&token, &TokenHash::of("byok_x"), &event(org.id, LifecycleKind::TokenIssued, "t"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

        assert_eq!(count(&t, "teams").await, teams_before);
        assert_eq!(count(&t, "workflows").await, 0);
        assert_eq!(count(&t, "workload_tokens").await, 0);
        assert_eq!(count(&t, "lifecycle_events").await, events_before);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn credentials_round_trip() {
    for_each_backend("credentials_round_trip", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let other = new_org(store, "other").await;
        let prod = new_credential(store, &org, "prod").await;
        let mut minimal = credential(&org, "dev");
        minimal.scope = Scope::default();
        minimal.base_url = None;
        minimal.expires_at = None;
        minimal.priority = i32::MAX;
        minimal.provider = ProviderId::AzureOpenai;
        minimal.state = CredentialState::Disabled;
        store
            .insert_credential(&minimal, &sealed(1, 0x22), &cred_event(&minimal, LifecycleKind::Created))
            .await
            .unwrap();

        let got = store.get_credential(&org.id, &prod.id).await.unwrap().unwrap();
        assert_eq!(got.credential, prod);
        assert_eq!(got.revision, 1);
        assert_eq!(store.get_credential(&other.id, &prod.id).await.unwrap(), None);
        assert_eq!(store.find_credential_by_name(&org.id, "dev").await.unwrap().unwrap().credential, minimal);
        assert_eq!(store.find_credential_by_name(&other.id, "dev").await.unwrap(), None);
        let listed: Vec<_> = store.list_credentials(&org.id).await.unwrap().into_iter().map(|r| r.credential).collect();
        assert_eq!(listed, vec![minimal.clone(), prod.clone()]);

        assert_eq!(store.get_sealed_version(&prod.id, 1).await.unwrap(), Some(sealed(1, 0x11)));
        assert_eq!(store.get_sealed_version(&prod.id, 2).await.unwrap(), None);
        let versions = store.list_credential_versions(&prod.id).await.unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].version, 1);
        assert_eq!(versions[0].fingerprint, prod.fingerprint);
        assert_eq!(versions[0].kek_version, 1);
        assert_eq!(versions[0].created_at, prod.created_at);

        let events = store
            .list_events(&org.id, &EventFilter { credential: Some(prod.id), ..EventFilter::default() })
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, LifecycleKind::Created);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn conflicts_are_named_and_leave_nothing_behind() {
    for_each_backend("conflicts_are_named_and_leave_nothing_behind", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let team = new_team(store, &org, "core").await;
        let cred = new_credential(store, &org, "prod").await;
        let wf =
            Workflow { id: WorkflowId::generate(), org_id: org.id, name: name("wf"), team_id: None, created_at: at(0) };
        store.insert_workflow(&wf, &event(org.id, LifecycleKind::WorkflowCreated, "wf")).await.unwrap();
        let token = WorkloadToken {
            id: TokenId::generate(),
            name: None,
            description: None,
            org_id: org.id,
            team_id: team.id,
            workflows: vec![],
            expires_at: None,
            revoked_at: None,
            created_at: at(0),
        };
        let hash = TokenHash::of("byok_same");
        store.insert_workload_token(&token, &hash, &event(org.id, LifecycleKind::TokenIssued, "t")).await.unwrap();
        let admin = AdminToken {
            id: AdminTokenId::generate(),
            scope: AdminTokenScope::Operator,
            expires_at: None,
            revoked_at: None,
            created_at: at(0),
            last_used_at: None,
        };
        let admin_hash = TokenHash::of("byokadm_same");
        store.insert_admin_token(&admin, &admin_hash, None).await.unwrap();

        let tables = [
            "orgs",
            "teams",
            "workflows",
            "credentials",
            "credential_versions",
            "workload_tokens",
            "admin_tokens",
            "lifecycle_events",
        ];
        let mut before = Vec::new();
        for table in tables {
            before.push(count(&t, table).await);
        }

        let dup_org = Org { id: OrgId::generate(), ..org.clone() };
        let err = store
            .insert_org(&dup_org, &wrapped(1, 1), &event(dup_org.id, LifecycleKind::OrgCreated, "o"))
            .await
            .unwrap_err();
        assert_conflict(err, "an org named 'acme' already exists");

        let dup_team = Team { id: TeamId::generate(), ..team.clone() };
        let err = store.insert_team(&dup_team, &event(org.id, LifecycleKind::TeamCreated, "t")).await.unwrap_err();
        assert_conflict(err, &format!("a team named 'core' already exists in {}", org.id));

        let dup_wf = Workflow { id: WorkflowId::generate(), ..wf.clone() };
        let err =
            store.insert_workflow(&dup_wf, &event(org.id, LifecycleKind::WorkflowCreated, "w")).await.unwrap_err();
        assert_conflict(err, "a workflow named 'wf' already exists");

        let dup_cred = Credential { id: CredentialId::generate(), ..cred.clone() };
        let err = store
            .insert_credential(&dup_cred, &sealed(1, 3), &cred_event(&dup_cred, LifecycleKind::Created))
            .await
            .unwrap_err();
        assert_conflict(err, &format!("a credential named 'prod' already exists in {}", org.id));

        let same_id = Credential { name: name("other-name"), ..cred.clone() };
        let err = store
            .insert_credential(&same_id, &sealed(1, 3), &cred_event(&same_id, LifecycleKind::Created))
            .await
            .unwrap_err();
        assert_conflict(err, &format!("a credential with id {} already exists", cred.id));

        let dup_token = WorkloadToken { id: TokenId::generate(), ..token.clone() };
        let err = store
            .insert_workload_token(&dup_token, &hash, &event(org.id, LifecycleKind::TokenIssued, "t"))
            .await
            .unwrap_err();
        assert_conflict(err, "same hash");

        let dup_admin = AdminToken { id: AdminTokenId::generate(), ..admin.clone() };
        let err = store.insert_admin_token(&dup_admin, &admin_hash, None).await.unwrap_err();
        assert_conflict(err, "same hash");

        // a duplicate event id rolls back the entity written before it
        let mut reused = event(org.id, LifecycleKind::TeamCreated, "t2");
        let first = store.list_events(&org.id, &EventFilter::default()).await.unwrap();
        reused.id = first[0].id;
        let fresh_team = Team { id: TeamId::generate(), org_id: org.id, name: name("fresh"), created_at: at(0) };
        let err = store.insert_team(&fresh_team, &reused).await.unwrap_err();
        assert_conflict(err, "an event with id");
        assert_eq!(store.find_team_by_name(&org.id, "fresh").await.unwrap(), None);

        for (table, expected) in tables.iter().zip(before) {
            assert_eq!(count(&t, table).await, expected, "{table} changed");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn stale_updates_change_nothing() {
    for_each_backend("stale_updates_change_nothing", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let cred = new_credential(store, &org, "prod").await;

        let mut changed = cred.clone();
        changed.scope = Scope { modes: vec![Mode::Sync, Mode::Batch], ..Scope::default() };
        changed.state = CredentialState::Disabled;
        changed.expires_at = None;
        changed.priority = 10;
        changed.base_url = None;
        changed.updated_at = at(500);
        let rev = store.update_credential(&changed, 1, &cred_event(&changed, LifecycleKind::Disabled)).await.unwrap();
        assert_eq!(rev, 2);
        let got = store.get_credential(&org.id, &cred.id).await.unwrap().unwrap();
        assert_eq!(got.credential, changed);
        assert_eq!(got.revision, 2);

        let events_before = count(&t, "lifecycle_events").await;
        let mut late = cred.clone();
        late.priority = 99;
        late.state = CredentialState::Revoked;
        let err = store.update_credential(&late, 1, &cred_event(&late, LifecycleKind::Revoked)).await.unwrap_err();
        match err {
            StoreError::Stale { what } => assert!(what.contains(&cred.id.to_string()), "{what}"),
            other => panic!("expected Stale, got {other:?}"),
        }
        assert_eq!(store.get_credential(&org.id, &cred.id).await.unwrap().unwrap(), got);
        assert_eq!(count(&t, "lifecycle_events").await, events_before);

        let ghost = credential(&org, "ghost");
        let err = store.update_credential(&ghost, 1, &cred_event(&ghost, LifecycleKind::Disabled)).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        let err = store
            .rotate_credential(&ghost, 1, &sealed(1, 9), &cred_event(&ghost, LifecycleKind::Rotated))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert_eq!(count(&t, "lifecycle_events").await, events_before);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn rotation_adds_a_version_and_keeps_the_old_one() {
    for_each_backend("rotation_adds_a_version_and_keeps_the_old_one", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let cred = new_credential(store, &org, "prod").await;

        let mut rotated = cred.clone();
        rotated.version = 2;
        rotated.fingerprint = "fp1:fedcba9876543210".to_owned();
        rotated.updated_at = at(1_000);
        rotated.version_created_at = at(1_000);
        let rev = store
            .rotate_credential(&rotated, 1, &sealed(2, 0x33), &cred_event(&rotated, LifecycleKind::Rotated))
            .await
            .unwrap();
        assert_eq!(rev, 2);
        let got = store.get_credential(&org.id, &cred.id).await.unwrap().unwrap();
        assert_eq!(got.credential, rotated);
        assert_eq!(store.get_sealed_version(&cred.id, 1).await.unwrap(), Some(sealed(1, 0x11)));
        assert_eq!(store.get_sealed_version(&cred.id, 2).await.unwrap(), Some(sealed(2, 0x33)));
        let versions = store.list_credential_versions(&cred.id).await.unwrap();
        let summary: Vec<_> = versions.iter().map(|v| (v.version, v.fingerprint.as_str(), v.kek_version)).collect();
        assert_eq!(summary, vec![(1, cred.fingerprint.as_str(), 1), (2, "fp1:fedcba9876543210", 2)]);
        assert_eq!(versions[1].created_at, at(1_000));

        // a stale rotation writes no version row and no event
        let versions_before = count(&t, "credential_versions").await;
        let events_before = count(&t, "lifecycle_events").await;
        let mut late = rotated.clone();
        late.version = 3;
        let err = store
            .rotate_credential(&late, 1, &sealed(2, 0x44), &cred_event(&late, LifecycleKind::Rotated))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Stale { .. }), "{err:?}");
        // re-using an existing version number is a conflict, and rolls back the row update
        let mut reuse = rotated.clone();
        reuse.version = 1;
        let err = store
            .rotate_credential(&reuse, 2, &sealed(2, 0x55), &cred_event(&reuse, LifecycleKind::Rotated))
            .await
            .unwrap_err();
        assert_conflict(err, "version 1 of credential");
        assert_eq!(count(&t, "credential_versions").await, versions_before);
        assert_eq!(count(&t, "lifecycle_events").await, events_before);
        assert_eq!(store.get_credential(&org.id, &cred.id).await.unwrap().unwrap(), got);

        // rewrap (KEK rotation) replaces only the wrapped DEK
        let deks = store.list_wrapped_deks(&org.id).await.unwrap();
        assert_eq!(deks.len(), 2);
        assert_eq!((deks[0].credential_id, deks[0].version), (cred.id, 1));
        assert_eq!(deks[0].wrapped_dek, sealed(1, 0x11).wrapped_dek);
        store.rewrap_batch(&org.id, &[(cred.id, 1, wrapped(3, 0x77))], &[]).await.unwrap();
        let reread = store.get_sealed_version(&cred.id, 1).await.unwrap().unwrap();
        assert_eq!(reread.wrapped_dek, wrapped(3, 0x77));
        assert_eq!(reread.ciphertext, sealed(1, 0x11).ciphertext);
        // a batch naming a missing version changes nothing
        let batch = [(cred.id, 2, wrapped(4, 0x78)), (cred.id, 9, wrapped(4, 0x79))];
        let err = store.rewrap_batch(&org.id, &batch, &[]).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }));
        assert_eq!(
            store.get_sealed_version(&cred.id, 2).await.unwrap().unwrap().wrapped_dek,
            sealed(2, 0x33).wrapped_dek
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_org_moves_between_kmss_with_every_key_labelled() {
    for_each_backend("an_org_moves_between_kmss_with_every_key_labelled", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let cred = new_credential(store, &org, "main").await;
        let default = KmsName::default();
        let hsm = KmsName::parse("acme-hsm").unwrap();
        assert_eq!(store.keks_in_use(&org.id).await.unwrap(), vec![(default.clone(), 1)]);

        let moved = event(org.id, LifecycleKind::KmsMoved, org.id.to_string());
        store.begin_org_kms_move(&org.id, &default, &hsm, 2, &moved).await.unwrap();
        let got = store.get_org(&org.id).await.unwrap().unwrap();
        assert_eq!(
            (got.kms.clone(), got.kms_moving_from.clone(), got.kek_version),
            (hsm.clone(), Some(default.clone()), 2)
        );
        // a second move while one is in progress is refused, and writes nothing
        let events_before = count(&t, "lifecycle_events").await;
        let err = store.begin_org_kms_move(&org.id, &hsm, &default, 3, &moved).await.unwrap_err();
        assert_conflict(err, "already moving");
        assert_eq!(count(&t, "lifecycle_events").await, events_before);

        let rewrapped = WrappedDek { kms: hsm.clone(), ..wrapped(2, 0x42) };
        store.rewrap_batch(&org.id, &[(cred.id, 1, rewrapped.clone())], &[]).await.unwrap();
        assert_eq!(store.get_sealed_version(&cred.id, 1).await.unwrap().unwrap().wrapped_dek, rewrapped);
        assert_eq!(store.keks_in_use(&org.id).await.unwrap(), vec![(default.clone(), 1), (hsm.clone(), 2)]);
        store.set_org_fingerprint_key(&org.id, &rewrapped).await.unwrap();
        assert_eq!(store.org_fingerprint_key(&org.id).await.unwrap().unwrap().kms, hsm);
        assert_eq!(store.keks_in_use(&org.id).await.unwrap(), vec![(hsm.clone(), 2)]);
        store.finish_org_kms_move(&org.id).await.unwrap();
        let got = store.get_org(&org.id).await.unwrap().unwrap();
        assert_eq!((got.kms, got.kms_moving_from), (hsm, None));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn workload_tokens_round_trip_and_revoke_once() {
    for_each_backend("workload_tokens_round_trip_and_revoke_once", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let other = new_org(store, "other").await;
        let team = new_team(store, &org, "core").await;
        let token = WorkloadToken {
            id: TokenId::generate(),
            name: Some(Name::parse("summarizer").unwrap()),
            description: Some("nightly summary job".to_owned()),
            org_id: org.id,
            team_id: team.id,
            workflows: vec![WorkflowId::generate(), WorkflowId::generate()],
            expires_at: Some(at(3_600_000_000)),
            revoked_at: None,
            created_at: at(10),
        };
        let plain = WorkloadToken {
            id: TokenId::generate(),
            name: None,
            description: None,
            workflows: vec![],
            expires_at: None,
            created_at: at(20),
            ..token.clone()
        };
        let hash = TokenHash::of("byok_first");
        store
            .insert_workload_token(&token, &hash, &event(org.id, LifecycleKind::TokenIssued, token.id.to_string()))
            .await
            .unwrap();
        store
            .insert_workload_token(
                &plain,
                &TokenHash::of("byok_second"),
                &event(org.id, LifecycleKind::TokenIssued, "x"),
            )
            .await
            .unwrap();

        assert_eq!(store.find_workload_token_by_hash(&hash).await.unwrap(), Some(token.clone()));
        assert_eq!(store.find_workload_token_by_hash(&TokenHash::of("byok_nope")).await.unwrap(), None);
        // A name is unique in its org (unnamed tokens never collide), and finds its token.
        let name = Name::parse("summarizer").unwrap();
        assert_eq!(store.find_workload_token_by_name(&org.id, &name).await.unwrap(), Some(token.clone()));
        assert_eq!(store.find_workload_token_by_name(&other.id, &name).await.unwrap(), None);
        let twin = WorkloadToken { id: TokenId::generate(), ..token.clone() };
        let err = store
            .insert_workload_token(&twin, &TokenHash::of("byok_twin"), &event(org.id, LifecycleKind::TokenIssued, "y"))
            .await
            .unwrap_err();
        assert!(matches!(&err, StoreError::Conflict { what } if what.contains("named 'summarizer'")), "{err:?}");
        assert_eq!(store.get_workload_token(&org.id, &token.id).await.unwrap(), Some(token.clone()));
        assert_eq!(store.get_workload_token(&other.id, &token.id).await.unwrap(), None);
        assert_eq!(store.list_workload_tokens(&org.id).await.unwrap(), vec![token.clone(), plain.clone()]);

        let revoke_event = || event(org.id, LifecycleKind::TokenRevoked, token.id.to_string());
        let revoked = store.revoke_workload_token(&org.id, &token.id, at(5_000), &revoke_event()).await.unwrap();
        assert_eq!(revoked, WorkloadToken { revoked_at: Some(at(5_000)), ..token.clone() });
        let events_after_first = count(&t, "lifecycle_events").await;
        let again = store.revoke_workload_token(&org.id, &token.id, at(9_000), &revoke_event()).await.unwrap();
        assert_eq!(again, revoked, "a second revoke changes nothing");
        assert_eq!(count(&t, "lifecycle_events").await, events_after_first, "and writes no event");
        assert_eq!(store.find_workload_token_by_hash(&hash).await.unwrap(), Some(revoked));

        let err = store.revoke_workload_token(&other.id, &token.id, at(1), &revoke_event()).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        let subject_events = store
            .list_events(&org.id, &EventFilter { subject: Some(token.id.to_string()), ..EventFilter::default() })
            .await
            .unwrap();
        let kinds: Vec<_> = subject_events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![LifecycleKind::TokenIssued, LifecycleKind::TokenRevoked]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn admin_tokens_round_trip() {
    for_each_backend("admin_tokens_round_trip", |t| async move {
        let store = t.store();
        assert!(store.find_admin_token_by_hash(&TokenHash::of("byokadm_op")).await.unwrap().is_none());
        let operator = AdminToken {
            id: AdminTokenId::generate(),
            scope: AdminTokenScope::Operator,
            expires_at: None,
            revoked_at: None,
            created_at: at(0),
            last_used_at: None,
        };
        store.insert_admin_token(&operator, &TokenHash::of("byokadm_op"), None).await.unwrap();
        let found = store.find_admin_token_by_hash(&TokenHash::of("byokadm_op")).await.unwrap().unwrap();
        assert_eq!((found.id, found.scope), (operator.id, AdminTokenScope::Operator));

        let org = new_org(store, "acme").await;
        let org_admin = AdminToken {
            id: AdminTokenId::generate(),
            scope: AdminTokenScope::Org { org_id: org.id },
            expires_at: Some(at(1_000_000)),
            revoked_at: None,
            created_at: at(3),
            last_used_at: None,
        };
        store
            .insert_admin_token(
                &org_admin,
                &TokenHash::of("byokadm_org"),
                Some(&event(org.id, LifecycleKind::AdminTokenIssued, org_admin.id.to_string())),
            )
            .await
            .unwrap();
        assert_eq!(store.find_admin_token_by_hash(&TokenHash::of("byokadm_op")).await.unwrap(), Some(operator.clone()));
        assert_eq!(
            store.find_admin_token_by_hash(&TokenHash::of("byokadm_org")).await.unwrap(),
            Some(org_admin.clone())
        );
        assert_eq!(store.find_admin_token_by_hash(&TokenHash::of("byokadm_no")).await.unwrap(), None);

        assert_eq!(store.list_admin_tokens(&org.id).await.unwrap(), vec![org_admin.clone()]);
        // A use is recorded, then not again within the minute.
        store.touch_admin_token(&org_admin, at(10)).await.unwrap();
        let used = store.list_admin_tokens(&org.id).await.unwrap().remove(0);
        assert_eq!(used.last_used_at, Some(at(10)));
        store.touch_admin_token(&used, at(20)).await.unwrap();
        assert_eq!(store.list_admin_tokens(&org.id).await.unwrap()[0].last_used_at, Some(at(10)));
        store.touch_admin_token(&org_admin, at(61_000_000)).await.unwrap();
        assert_eq!(store.list_admin_tokens(&org.id).await.unwrap()[0].last_used_at, Some(at(61_000_000)));

        let events_before = store.list_events(&org.id, &EventFilter::default()).await.unwrap().len();
        let revoke_event = event(org.id, LifecycleKind::AdminTokenRevoked, org_admin.id.to_string());
        let revoked = store.revoke_admin_token(&org.id, &org_admin.id, at(77), &revoke_event).await.unwrap();
        assert_eq!(revoked.revoked_at, Some(at(77)));
        let again = event(org.id, LifecycleKind::AdminTokenRevoked, org_admin.id.to_string());
        assert_eq!(store.revoke_admin_token(&org.id, &org_admin.id, at(88), &again).await.unwrap(), revoked);
        let events = store.list_events(&org.id, &EventFilter::default()).await.unwrap();
        assert_eq!(events.len(), events_before + 1, "a second revocation records nothing");
        // The operator token belongs to no org: not revocable through one.
        let err = store.revoke_admin_token(&org.id, &operator.id, at(90), &again).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

        let ghost_org = AdminToken {
            id: AdminTokenId::generate(),
            scope: AdminTokenScope::Org { org_id: OrgId::generate() },
            ..operator.clone()
        };
        let err = store.insert_admin_token(&ghost_org, &TokenHash::of("byokadm_ghost"), None).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn events_are_ordered_with_every_field_intact() {
    for_each_backend("events_are_ordered_with_every_field_intact", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let other = new_org(store, "other").await;
        let mut cred = new_credential(store, &org, "prod").await;
        new_credential(store, &other, "prod").await;

        let mut written = Vec::new();
        for i in 0..5u32 {
            cred.priority = i32::try_from(i).unwrap();
            cred.updated_at = at(1_000 + i64::from(i));
            let mut ev = cred_event(&cred, LifecycleKind::ScopeChanged);
            ev.actor = if i % 2 == 0 { Actor::System } else { admin_actor() };
            ev.details = json!({"step": i, "nested": {"list": [1, 2, 3], "text": "ü ✓"}});
            ev.at = at(2_000 + i64::from(i));
            store.update_credential(&cred, i64::from(i) + 1, &ev).await.unwrap();
            written.push(ev);
        }

        let all = store.list_events(&org.id, &EventFilter::default()).await.unwrap();
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "strictly increasing seq");
        assert!(all.iter().all(|e| e.org_id == org.id), "only this org's events");
        assert_eq!(all.len(), 2 + written.len(), "org created, credential created, 5 updates");

        let for_cred = store
            .list_events(&org.id, &EventFilter { credential: Some(cred.id), ..EventFilter::default() })
            .await
            .unwrap();
        assert_eq!(for_cred.len(), 6);
        for (got, want) in for_cred[1..].iter().zip(&written) {
            assert_eq!(got.id, want.id);
            assert_eq!(got.org_id, want.org_id);
            assert_eq!(got.kind, want.kind);
            assert_eq!(got.subject, want.subject);
            assert_eq!(got.credential_id, want.credential_id);
            assert_eq!(got.version, want.version);
            assert_eq!(got.fingerprint, want.fingerprint);
            assert_eq!(got.actor, want.actor);
            assert_eq!(got.at, want.at);
            assert_eq!(got.details, want.details);
        }

        let after = for_cred[2].seq;
        let page = store
            .list_events(
                &org.id,
                &EventFilter {
                    subject: Some(cred.id.to_string()),
                    credential: Some(cred.id),
                    after_seq: Some(after),
                    limit: Some(2),
                },
            )
            .await
            .unwrap();
        assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), vec![for_cred[3].id, for_cred[4].id]);
        let none = store
            .list_events(&org.id, &EventFilter { subject: Some("tok_nothing".to_owned()), ..EventFilter::default() })
            .await
            .unwrap();
        assert!(none.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn undecodable_rows_are_corrupt_not_panics() {
    for_each_backend("undecodable_rows_are_corrupt_not_panics", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let team = new_team(store, &org, "core").await;
        let cred = new_credential(store, &org, "prod").await;

        t.execute(&format!("UPDATE orgs SET tier = 'katman-z' WHERE id = '{}'", org.id)).await.unwrap();
        let err = store.get_org(&org.id).await.unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("orgs.tier") && m.contains("katman-z")), "{err:?}");
        assert!(matches!(store.list_orgs().await, Err(StoreError::Corrupt(_))));

        t.execute(&format!("UPDATE teams SET name = 'bad name!' WHERE id = '{}'", team.id)).await.unwrap();
        assert!(matches!(store.get_team(&org.id, &team.id).await, Err(StoreError::Corrupt(_))));

        t.execute(&format!("UPDATE credentials SET scope = '{{\"bogus\": 1}}' WHERE id = '{}'", cred.id))
            .await
            .unwrap();
        let err = store.get_credential(&org.id, &cred.id).await.unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("credentials.scope")), "{err:?}");

        t.execute(&format!("UPDATE credentials SET scope = '{{}}', state = 'melted' WHERE id = '{}'", cred.id))
            .await
            .unwrap();
        assert!(matches!(store.get_credential(&org.id, &cred.id).await, Err(StoreError::Corrupt(_))));

        t.execute(&format!("UPDATE credentials SET state = 'active', version = -1 WHERE id = '{}'", cred.id))
            .await
            .unwrap();
        assert!(matches!(store.get_credential(&org.id, &cred.id).await, Err(StoreError::Corrupt(_))));

        t.execute(&format!("UPDATE credentials SET version = 1 WHERE id = '{}'", cred.id)).await.unwrap();
        t.execute("UPDATE lifecycle_events SET actor = 'nobody'").await.unwrap();
        assert!(matches!(store.list_events(&org.id, &EventFilter::default()).await, Err(StoreError::Corrupt(_))));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn migrations_are_idempotent_and_data_survives_reopen() {
    for_each_backend("migrations_are_idempotent_and_data_survives_reopen", |t| async move {
        let org = new_org(t.store(), "acme").await;
        let first = t.reopen().await.unwrap();
        let second = t.reopen().await.unwrap();
        assert_eq!(first.get_org(&org.id).await.unwrap(), Some(org.clone()));
        assert_eq!(second.list_orgs().await.unwrap(), vec![org]);
        let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap().count();
        assert_eq!(t.count("_sqlx_migrations").await.unwrap(), migrations as i64, "each migration applied once");
        first.close().await;
        second.close().await;
        assert!(matches!(first.ping().await, Err(StoreError::Unavailable { .. })));
        t.store().ping().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn concurrent_writers_all_succeed() {
    for_each_backend("concurrent_writers_all_succeed", |t| async move {
        let org = new_org(t.store(), "acme").await;
        // two independent stores on the same database, as two processes would be
        let stores = [t.store().clone(), t.reopen().await.unwrap()];
        let mut tasks = Vec::new();
        for i in 0..24 {
            let store = stores[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let team =
                    Team { id: TeamId::generate(), org_id: org.id, name: name(&format!("t{i}")), created_at: at(0) };
                store.insert_team(&team, &event(org.id, LifecycleKind::TeamCreated, team.id.to_string())).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(t.store().list_teams(&org.id).await.unwrap().len(), 24);
        let events = t.store().list_events(&org.id, &EventFilter::default()).await.unwrap();
        assert_eq!(events.len(), 25);
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sqlite_urls_and_bad_urls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("with space?#%.db");
    assert!(!path.exists());
    let url =
        format!("sqlite://{}", path.display().to_string().replace('%', "%25").replace('?', "%3F").replace('#', "%23"));
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store.ping().await.unwrap();
    assert!(path.exists(), "the file is created at the decoded path");
    let mode = std::fs::metadata(dir.path().join("with space?#%.db-wal"));
    assert!(mode.is_ok(), "WAL mode leaves a -wal file beside the database");
    store.close().await;

    assert!(matches!(Store::open("mysql://localhost/x").await, Err(StoreError::Config(_))));
    assert!(matches!(Store::open("sqlite::memory:").await, Err(StoreError::Config(_))));
    let missing_dir = dir.path().join("no/such/dir/byok.db");
    assert!(matches!(Store::open_sqlite(&missing_dir).await, Err(StoreError::Unavailable { .. })));
}

#[tokio::test]
async fn a_new_sqlite_database_has_small_pages_and_an_existing_one_keeps_its_own() {
    let t = TestStore::sqlite().await.unwrap();
    assert_eq!(t.query_i64("PRAGMA page_size").await.unwrap(), 1024, "a new database: 1 KiB pages");
    t.store().close().await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("existing.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 4096; CREATE TABLE before_byok (x INTEGER); INSERT INTO before_byok VALUES (1);",
        )
        .unwrap();
    }
    let store = Store::open_sqlite(&path).await.unwrap();
    let org = new_org(&store, "kept-pages").await;
    assert_eq!(store.get_org(&org.id).await.unwrap().unwrap().name.as_str(), "kept-pages");
    store.check_writable().await.unwrap();
    store.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0)).unwrap();
    assert_eq!(size, 4096, "an existing database keeps its page size");
    let kept: i64 = conn.query_row("SELECT x FROM before_byok", [], |row| row.get(0)).unwrap();
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn test_store_exposes_the_raw_database() {
    let t = TestStore::sqlite().await.unwrap();
    let org = new_org(t.store(), "canary-org").await;
    assert_eq!(t.query_i64("PRAGMA synchronous").await.unwrap(), 2, "synchronous = FULL");
    assert_eq!(t.query_i64("PRAGMA foreign_keys").await.unwrap(), 1);
    t.store().close().await;
    let path = t.sqlite_path().unwrap().to_owned();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    let needle = org.id.to_string();
    assert!(bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
    assert!(t.url().starts_with("sqlite://"));

    if let Some(pg) = TestStore::postgres().await.unwrap() {
        assert!(pg.sqlite_path().is_none());
        assert!(pg.url().contains("/byok_test_"));
        assert_eq!(pg.backend(), Backend::Postgres);
        let db = pg.url().rsplit('/').next().unwrap().to_owned();
        drop(pg);
        // the guard dropped the database
        let admin = TestStore::postgres().await.unwrap().unwrap();
        let left = admin.query_i64(&format!("SELECT COUNT(*) FROM pg_database WHERE datname = '{db}'")).await.unwrap();
        assert_eq!(left, 0);
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped test_store_exposes_the_raw_database on postgres: BYOK_TEST_POSTGRES_URL is not set"
        );
    }
}

#[tokio::test]
async fn test_databases_are_removed_when_a_test_panics() {
    // SQLite: the temporary directory goes with the TestStore
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let sender = tx.clone();
    let outcome = tokio::spawn(async move {
        let t = TestStore::sqlite().await.unwrap();
        sender.send(t.sqlite_path().unwrap().display().to_string()).unwrap();
        panic!("deliberate failure");
    })
    .await;
    assert!(outcome.unwrap_err().is_panic());
    let path = rx.recv().unwrap();
    assert!(!std::path::Path::new(&path).exists(), "{path} survived the panic");

    // PostgreSQL: the database is dropped by the guard during unwinding
    if TestStore::postgres().await.unwrap().is_none() {
        eprintln!(
            "skipped test_databases_are_removed_when_a_test_panics on postgres: BYOK_TEST_POSTGRES_URL is not set"
        );
        return;
    }
    let outcome = tokio::spawn(async move {
        let t = TestStore::postgres().await.unwrap().unwrap();
        new_org(t.store(), "doomed").await;
        tx.send(t.url().rsplit('/').next().unwrap().to_owned()).unwrap();
        panic!("deliberate failure");
    })
    .await;
    assert!(outcome.unwrap_err().is_panic());
    let db = rx.recv().unwrap();
    let probe = TestStore::postgres().await.unwrap().unwrap();
    let left = probe.query_i64(&format!("SELECT COUNT(*) FROM pg_database WHERE datname = '{db}'")).await.unwrap();
    assert_eq!(left, 0, "{db} survived the panic");
}

#[tokio::test]
async fn raw_parameterized_edits() {
    use byok_store::testing::sqlx;
    for_each_backend("raw_parameterized_edits", |t| async move {
        let store = t.store();
        let org = new_org(store, "acme").await;
        let cred = new_credential(store, &org, "prod").await;
        let done =
            sqlx::query("UPDATE credential_versions SET ciphertext = $1 WHERE credential_id = $2 AND version = $3")
                .bind(vec![0xFFu8; 5])
                .bind(cred.id.to_string())
                .bind(1i64)
                .execute(t.pool())
                .await
                .unwrap();
        assert_eq!(done.rows_affected(), 1);
        assert_eq!(store.get_sealed_version(&cred.id, 1).await.unwrap().unwrap().ciphertext, vec![0xFF; 5]);
    })
    .await
    .unwrap();
}

// ----- metered usage ----------------------------------------------------------------------

mod usage {
    use byok_domain::{CallCompletion, CredentialOwner, Metering, Outcome, ResolutionAudit};
    use byok_store::{AuditEntry, Segment, UsageRow, UsageSource};

    use super::*;

    const HOUR: i64 = 3_600_000_000;

    fn completion(org: OrgId, team: TeamId, at_us: i64, i: i64, status: u16) -> CallCompletion {
        CallCompletion {
            call_id: format!("call-{i}"),
            org_id: org,
            credential_id: CredentialId::generate(),
            at: Timestamp::from_micros(at_us).unwrap(),
            upstream_status: Some(status),
            latency_us: 10,
            input_tokens: (status == 200).then_some(10 + i as u64 % 7),
            output_tokens: (status == 200).then_some(3 + i as u64 % 5),
            status: "completed".into(),
            metering: Some(Metering {
                team_id: team,
                tier: if i % 3 == 0 { Tier::KatmanA } else { Tier::KatmanB },
                credential_owner: if i % 4 == 0 { CredentialOwner::Platform } else { CredentialOwner::Org },
                provider: if i % 2 == 0 { ProviderId::Openai } else { ProviderId::Anthropic },
                model_family: (i % 5 != 0).then(|| "gpt-4o".to_owned()),
                rate_card: "USD:0.001:0.2:0.8".into(),
                provider_price: (i % 4 == 0).then(|| "USD:2.5:10".to_owned()),
            }),
        }
    }

    fn denied(org: OrgId, team: TeamId, at_us: i64, i: i64) -> ResolutionAudit {
        ResolutionAudit {
            seq: 0,
            at: Timestamp::from_micros(at_us).unwrap(),
            call_id: format!("denied-{i}"),
            org_id: Some(org),
            team_id: Some(team),
            workflow_id: None,
            token_id: None,
            credential_id: None,
            credential_version: None,
            fingerprint: None,
            provider: Some(ProviderId::Openai),
            model: None,
            model_family: None,
            capability: None,
            mode: None,
            outcome: Outcome::Denied,
            reason: Some("no_credential".into()),
            detail: None,
            tier: Some(Tier::KatmanB),
            credential_owner: None,
            attempt: None,
        }
    }

    /// Sums of rows, keyed without the segment, for comparing sources.
    fn totals(rows: &[UsageRow]) -> std::collections::BTreeMap<String, (u64, u64, u64, u64, u64)> {
        let mut out = std::collections::BTreeMap::new();
        for r in rows {
            let key = format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
                r.team_id, r.tier, r.provider, r.model_family, r.owner, r.rate_card, r.provider_price
            );
            let slot: &mut (u64, u64, u64, u64, u64) = out.entry(key).or_default();
            *slot = (
                slot.0 + r.calls,
                slot.1 + r.unanswered,
                slot.2 + r.denied,
                slot.3 + r.input_tokens,
                slot.4 + r.output_tokens,
            );
        }
        out.retain(|_, v| *v != (0, 0, 0, 0, 0));
        out
    }

    /// Calls spread over hours by two writers; for periods with ragged and aligned edges,
    /// the rollup plus raw edges gives exactly what the raw rows alone give.
    #[tokio::test]
    async fn the_rollup_agrees_with_the_raw_audit_for_any_period() {
        for_each_backend("rollup_agrees", |t| async move {
            let store = t.store();
            let org = new_org(store, "acme").await;
            let other = new_org(store, "other").await;
            let (team_a, team_b) = (TeamId::generate(), TeamId::generate());
            let base = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z
            let (mut one, mut two) = (Segment::new(), Segment::new());
            let mut i = 0i64;
            for hour in 0..6 {
                let mut batch = Vec::new();
                for k in 0..9 {
                    i += 1;
                    let at = base + hour * HOUR + k * 397_000_000 + i;
                    let team = if i % 2 == 0 { team_a } else { team_b };
                    let status = if i % 11 == 0 { 0 } else { 200 };
                    batch.push(AuditEntry::Completion(completion(org.id, team, at, i, status)));
                    batch.push(AuditEntry::Completion(completion(other.id, team, at, i, 200)));
                    if i % 5 == 0 {
                        batch.push(AuditEntry::Resolution(denied(org.id, team, at + 1, i)));
                    }
                }
                let segment = if hour % 2 == 0 { &mut one } else { &mut two };
                store.append_audit(segment, &batch).await.unwrap();
            }
            let at = |us: i64| Timestamp::from_micros(base + us).unwrap();
            let periods = [
                (at(0), at(6 * HOUR)),
                (at(0), at(3 * HOUR)),
                (at(HOUR / 3), at(5 * HOUR + 7)),
                (at(HOUR + 1), at(HOUR + 2_000_000_000)),
                (at(2 * HOUR - 1), at(4 * HOUR + 1)),
                (at(-HOUR), at(10 * HOUR)),
            ];
            for (from, to) in periods {
                let fast = store.usage(Some(&org.id), from, to, UsageSource::Rollup).await.unwrap();
                let slow = store.usage(Some(&org.id), from, to, UsageSource::Audit).await.unwrap();
                assert_eq!(totals(&fast), totals(&slow), "{from}..{to}");
                assert!(fast.iter().all(|r| r.org_id == org.id));
            }
            let all = store.usage(Some(&org.id), at(-HOUR), at(10 * HOUR), UsageSource::Audit).await.unwrap();
            let sums = totals(&all).values().fold((0, 0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1, acc.2 + v.2));
            assert_eq!(sums, (54 - 4, 4, 10), "calls answered, unanswered (no upstream status), denied");
            // What each writer wrote can be told apart: the other writers' hours only.
            let others = store.usage_of_other_writers(&org.id, at(0), at(6 * HOUR), one.id()).await.unwrap();
            let calls: u64 = others.iter().map(|r| r.calls + r.unanswered).sum();
            assert_eq!(calls, 27, "three hours of nine calls were written by the other segment");
            // Both orgs, for the operator's report.
            let every = store.usage(None, at(0), at(6 * HOUR), UsageSource::Rollup).await.unwrap();
            assert!(every.iter().any(|r| r.org_id == other.id) && every.iter().any(|r| r.org_id == org.id));
        })
        .await
        .unwrap();
    }
}

mod replay {
    use byok_domain::{CallCompletion, CredentialOwner, Metering, Outcome, ResolutionAudit};
    use byok_store::{AuditEntry, Segment, TimelineItem};

    use super::*;

    fn row(cred: &Credential, team: TeamId, call_id: &str, offset: i64, outcome: Outcome) -> ResolutionAudit {
        ResolutionAudit {
            seq: 0,
            at: at(1_000 + offset),
            call_id: call_id.to_owned(),
            org_id: Some(cred.org_id),
            team_id: Some(team),
            workflow_id: None,
            token_id: None,
            credential_id: Some(cred.id),
            credential_version: Some(1),
            fingerprint: Some(cred.fingerprint.clone()),
            provider: Some(ProviderId::Openai),
            model: Some("gpt-4o".into()),
            model_family: Some("gpt-4o".into()),
            capability: Some(Capability::Chat),
            mode: Some(Mode::Sync),
            outcome,
            reason: (outcome == Outcome::Denied).then(|| "scope_denied".to_owned()),
            detail: None,
            tier: Some(Tier::KatmanB),
            credential_owner: Some(CredentialOwner::Org),
            attempt: None,
        }
    }

    fn completion(row: &ResolutionAudit, status: u16) -> CallCompletion {
        CallCompletion {
            call_id: row.call_id.clone(),
            org_id: row.org_id.unwrap(),
            credential_id: row.credential_id.unwrap(),
            at: at(5_000),
            upstream_status: Some(status),
            latency_us: 10,
            input_tokens: None,
            output_tokens: None,
            status: "completed".into(),
            metering: Some(Metering {
                team_id: row.team_id.unwrap(),
                tier: Tier::KatmanB,
                credential_owner: CredentialOwner::Org,
                provider: ProviderId::Openai,
                model_family: Some("gpt-4o".into()),
                rate_card: "USD:0.001:0.2:0.8".into(),
                provider_price: None,
            }),
        }
    }

    /// Calls sharing a call id — two teams', a retry's — each replay with their own
    /// completion; completions written before they named their row are still paired by
    /// call id, team and writer segment; a denied row or a call still running has none.
    #[tokio::test]
    async fn a_completion_pairs_with_its_own_row_whatever_its_call_id() {
        for_each_backend("a_completion_pairs_with_its_own_row_whatever_its_call_id", |t| async move {
            let store = t.store();
            let org = new_org(store, "acme").await;
            let (a, b) = (new_team(store, &org, "alpha").await.id, new_team(store, &org, "beta").await.id);
            let cred = new_credential(store, &org, "main").await;

            // A segment written the old way: completions name no row.
            let mut old = Segment::new();
            let l1 = row(&cred, a, "legacy", 1, Outcome::Allowed);
            let l2 = row(&cred, b, "legacy", 2, Outcome::Allowed);
            let l3 = row(&cred, a, "legacy", 3, Outcome::Denied);
            let entries = [l1.clone(), l2.clone(), l3].map(AuditEntry::Resolution);
            store.append_audit(&mut old, &entries).await.unwrap();
            let entries = [completion(&l2, 202), completion(&l1, 201)].map(AuditEntry::Completion);
            store.append_audit(&mut old, &entries).await.unwrap();

            // A segment whose completions name their rows.
            let mut new = Segment::new();
            let n1 = row(&cred, a, "shared", 11, Outcome::Allowed);
            let n2 = row(&cred, b, "shared", 12, Outcome::Allowed);
            let n3 = row(&cred, a, "shared", 13, Outcome::Allowed);
            // Still running, with the id of the old segment's calls.
            let n4 = row(&cred, a, "legacy", 14, Outcome::Allowed);
            let entries = [n1.clone(), n2.clone(), n3.clone(), n4].map(AuditEntry::Resolution);
            let positions = new.positions(&entries);
            store.append_audit(&mut new, &entries).await.unwrap();
            let bound = |row: &ResolutionAudit, status: u16, i: usize| AuditEntry::BoundCompletion {
                completion: completion(row, status),
                resolution: positions[i],
            };
            let entries = [bound(&n3, 503, 2), bound(&n1, 200, 0), bound(&n2, 429, 1)];
            store.append_audit(&mut new, &entries).await.unwrap();

            let (items, next) = store.credential_timeline(&org.id, Some(&org.id), &cred.id, None, 100).await.unwrap();
            assert!(next.is_none());
            let calls: Vec<(String, bool, Outcome, Option<u16>)> = items
                .iter()
                .filter_map(|item| match item {
                    TimelineItem::Call { resolution, completion } => Some((
                        resolution.call_id.clone(),
                        resolution.team_id == Some(a),
                        resolution.outcome,
                        completion.as_ref().and_then(|c| c.upstream_status),
                    )),
                    TimelineItem::Lifecycle(_) => None,
                })
                .collect();
            let expected = [
                ("legacy", true, Outcome::Allowed, Some(201)),
                ("legacy", false, Outcome::Allowed, Some(202)),
                ("legacy", true, Outcome::Denied, None),
                ("shared", true, Outcome::Allowed, Some(200)),
                ("shared", false, Outcome::Allowed, Some(429)),
                ("shared", true, Outcome::Allowed, Some(503)),
                ("legacy", true, Outcome::Allowed, None),
            ]
            .map(|(id, team_a, outcome, status)| (id.to_owned(), team_a, outcome, status));
            assert_eq!(calls, expected);
            // Every completion is of its row's team.
            for item in &items {
                if let TimelineItem::Call { resolution, completion: Some(c) } = item {
                    assert_eq!(c.metering.as_ref().map(|m| m.team_id), resolution.team_id, "{resolution:?}");
                }
            }
            let report = store.verify_audit(Some(&org.id)).await.unwrap();
            assert!(report.ok, "{report:?}");
        })
        .await
        .unwrap();
    }
}
