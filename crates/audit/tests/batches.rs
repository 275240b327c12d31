//! The audit write path takes a whole batch at once (a dedicated SQLite connection with
//! cached statements; one `UNNEST` statement on PostgreSQL): a batch of several orgs'
//! chains is linked exactly as entry by entry, a failing batch fails every caller and
//! leaves nothing, and a lost or refused connection is replaced.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use byok_audit::{AuditConfig, AuditError, AuditWriter};
use byok_crypto::LocalKeyring;
use byok_domain::{
    Actor, CallCompletion, CredentialId, CredentialOwner, Metering, ModelFamilyRegistry, OrgId, Outcome, ProviderId,
    ResolutionAudit, TeamId, Tier, Timestamp,
};
use byok_kms::KmsHandle;
use byok_store::testing::{for_each_backend, TestStore};
use byok_store::{AuditEntry, Backend, Segment, Store};
use byok_vault::{Vault, VaultPolicy};

fn resolution(org: Option<OrgId>, call: &str, outcome: Outcome) -> ResolutionAudit {
    let mut row = ResolutionAudit::denied(call.to_owned());
    row.org_id = org;
    row.outcome = outcome;
    row.provider = Some(ProviderId::Openai);
    row.tier = Some(Tier::KatmanB);
    if outcome == Outcome::Allowed {
        row.credential_id = Some(CredentialId::generate());
        row.credential_owner = Some(CredentialOwner::Org);
        row.reason = None;
    }
    row
}

fn completion(org: OrgId, call: &str, team: TeamId) -> CallCompletion {
    CallCompletion {
        call_id: call.to_owned(),
        org_id: org,
        credential_id: CredentialId::generate(),
        at: Timestamp::now(),
        upstream_status: Some(200),
        latency_us: 1000,
        input_tokens: Some(7),
        output_tokens: Some(11),
        status: "completed".into(),
        metering: Some(Metering {
            team_id: team,
            tier: Tier::KatmanB,
            credential_owner: CredentialOwner::Org,
            provider: ProviderId::Openai,
            model_family: Some("gpt-4o".into()),
            rate_card: "USD:0.0005:0.1:0.4".into(),
            provider_price: None,
        }),
    }
}

async fn orgs(t: &TestStore, dir: &tempfile::TempDir) -> (OrgId, OrgId) {
    let kms = KmsHandle::new(Arc::new(LocalKeyring::open(dir.path().join("k.json")).unwrap()), 2);
    let vault = Vault::new(t.store().clone(), kms, ModelFamilyRegistry::seeded(), VaultPolicy::default());
    let a = vault.create_org(&Actor::System, "alpha", Tier::KatmanB).await.unwrap();
    let b = vault.create_org(&Actor::System, "beta", Tier::KatmanB).await.unwrap();
    (a.id, b.id)
}

/// Rows of both orgs and of no org, completions bound and unbound, metered: one batch.
fn mixed_batch(a: OrgId, b: OrgId, tag: &str, segment: &Segment, team: TeamId) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    for i in 0..6 {
        let org = if i % 2 == 0 { a } else { b };
        entries.push(AuditEntry::Resolution(resolution(Some(org), &format!("{tag}-{i}"), Outcome::Allowed)));
    }
    entries.push(AuditEntry::Resolution(resolution(None, &format!("{tag}-anon"), Outcome::Denied)));
    entries.push(AuditEntry::Resolution(resolution(Some(b), &format!("{tag}-denied"), Outcome::Denied)));
    let positions = segment.positions(&entries);
    for (i, position) in positions.into_iter().take(6).enumerate() {
        let org = if i % 2 == 0 { a } else { b };
        let c = completion(org, &format!("{tag}-{i}"), team);
        entries.push(if i < 3 {
            AuditEntry::BoundCompletion { completion: c, resolution: position }
        } else {
            AuditEntry::Completion(c)
        });
    }
    entries
}

/// Append a [`mixed_batch`] to `segment`.
async fn append_mixed(
    store: &Store,
    segment: &mut Segment,
    (a, b): (OrgId, OrgId),
    tag: &str,
    team: TeamId,
) -> Result<(), byok_store::StoreError> {
    let entries = mixed_batch(a, b, tag, segment, team);
    store.append_audit(segment, &entries).await
}

async fn verify_all(store: &Store, a: OrgId, b: OrgId) -> u64 {
    let mut checked = 0;
    for org in [Some(a), Some(b), None] {
        let report = store.verify_audit(org.as_ref()).await.unwrap();
        assert!(report.ok, "{org:?}: {report:?}");
        checked += report.checked;
    }
    checked
}

/// Batches of several orgs' chains, from two writer segments in turn, are numbered and
/// linked exactly as entry by entry would be, and their usage reaches the rollup.
#[tokio::test]
async fn a_batch_of_mixed_orgs_and_segments_chains_right() {
    for_each_backend("a_batch_of_mixed_orgs_and_segments_chains_right", |t| async move {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = orgs(&t, &dir).await;
        let store = t.store();
        let team = TeamId::generate();
        let mut segments = [Segment::new(), Segment::new()];
        let mut expected = Vec::new();
        for round in 0..3 {
            for (s, segment) in segments.iter_mut().enumerate() {
                let tag = format!("r{round}-s{s}");
                let entries = mixed_batch(a, b, &tag, segment, team);
                let positions = segment.positions(&entries);
                store.append_audit(segment, &entries).await.unwrap();
                for (entry, position) in entries.iter().zip(positions) {
                    if let AuditEntry::Resolution(row) = entry {
                        expected.push((segment.id().to_owned(), row.call_id.clone(), position));
                    }
                }
            }
        }
        // Each resolution row is where `positions` said, in its own segment.
        for (segment, call, position) in &expected {
            let found = t
                .query_i64(&format!(
                    "SELECT segment_seq FROM resolution_audit WHERE call_id = '{call}' AND segment = '{segment}'"
                ))
                .await
                .unwrap();
            assert_eq!(found, *position, "{call} in {segment}");
        }
        // Per segment: org a has 3 rows + 3 completions a batch, b 4 + 3, no org 1.
        let checked = verify_all(store, a, b).await;
        let events = t.count("lifecycle_events").await.unwrap() as u64;
        assert_eq!(checked, events + 2 * 3 * (6 + 7 + 1));
        assert_eq!(t.count("resolution_audit").await.unwrap(), 2 * 3 * 8);
        assert_eq!(t.count("call_completions").await.unwrap(), 2 * 3 * 6);
        // Every metered completion counted once, every denial of an org once.
        let calls = t.query_i64("SELECT CAST(SUM(calls) AS BIGINT) FROM usage_rollup").await.unwrap();
        let denied = t.query_i64("SELECT CAST(SUM(denied) AS BIGINT) FROM usage_rollup").await.unwrap();
        let tokens = t.query_i64("SELECT CAST(SUM(output_tokens) AS BIGINT) FROM usage_rollup").await.unwrap();
        assert_eq!((calls, denied, tokens), (2 * 3 * 6, 2 * 3, 2 * 3 * 6 * 11));
        // The completions bound in the batch name their own rows.
        let bound = t
            .query_i64(
                "SELECT COUNT(*) FROM call_completions c JOIN resolution_audit r ON r.org_id = c.org_id \
                 AND r.segment = c.segment AND r.segment_seq = c.resolution_seq AND r.call_id = c.call_id",
            )
            .await
            .unwrap();
        assert_eq!(bound, 2 * 3 * 3);
    })
    .await
    .unwrap();
}

/// Many callers through one writer, several orgs at once: each gets its own position and
/// every chain verifies.
#[tokio::test]
async fn concurrent_callers_of_several_orgs_each_get_their_row() {
    for_each_backend("concurrent_callers_of_several_orgs_each_get_their_row", |t| async move {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = orgs(&t, &dir).await;
        let (writer, task) = AuditWriter::spawn(t.store().clone(), AuditConfig::default());
        let mut calls = Vec::new();
        for i in 0..200 {
            let writer = writer.clone();
            let org = match i % 3 {
                0 => Some(a),
                1 => Some(b),
                _ => None,
            };
            calls.push(tokio::spawn(async move {
                let row = writer.append(resolution(org, &format!("c-{i}"), Outcome::Allowed)).await.unwrap();
                if let Some(org) = org {
                    writer.bound(&row).complete(completion(org, &format!("c-{i}"), TeamId::generate()));
                }
                (org, row.position())
            }));
        }
        let mut positions = std::collections::HashMap::<Option<OrgId>, Vec<i64>>::new();
        for call in calls {
            let (org, position) = call.await.unwrap();
            positions.entry(org).or_default().push(position);
        }
        drop(writer);
        task.await.unwrap();
        for (org, mut got) in positions {
            got.sort_unstable();
            // Rows and completions share the chain: the rows' positions are distinct.
            got.dedup();
            let rows = if org.is_none() { 66 } else { 67 };
            assert_eq!(got.len(), rows, "{org:?}");
        }
        assert_eq!(t.count("call_completions").await.unwrap(), 134);
        verify_all(t.store(), a, b).await;
    })
    .await
    .unwrap();
}

/// Rows, completions and rollup increments in the store.
async fn counts(t: &TestStore) -> (i64, i64, i64) {
    (
        t.count("resolution_audit").await.unwrap(),
        t.count("call_completions").await.unwrap(),
        t.query_i64("SELECT CAST(COALESCE(SUM(calls + denied), 0) AS BIGINT) FROM usage_rollup").await.unwrap(),
    )
}

async fn install_poison(t: &TestStore, when: &str) {
    match t.backend() {
        Backend::Sqlite => {
            t.execute(&format!(
                "CREATE TRIGGER poison BEFORE INSERT ON resolution_audit WHEN {when} \
                 BEGIN SELECT RAISE(ABORT, 'poisoned batch'); END"
            ))
            .await
            .unwrap();
        }
        Backend::Postgres => {
            t.execute(&format!(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF {when} THEN RAISE EXCEPTION 'poisoned batch'; END IF; RETURN NEW; END $$"
            ))
            .await
            .unwrap();
            t.execute("CREATE TRIGGER poison BEFORE INSERT ON resolution_audit FOR EACH ROW EXECUTE FUNCTION poison()")
                .await
                .unwrap();
        }
    }
}

async fn remove_poison(t: &TestStore) {
    t.execute("DROP TRIGGER poison").await.ok();
    t.execute("DROP TRIGGER poison ON resolution_audit").await.ok();
}

/// A batch whose last row the database refuses leaves nothing — no row, no completion,
/// no rollup increment — and its segment does not move: the next batch links on.
#[tokio::test]
async fn a_failing_batch_writes_nothing_half() {
    for_each_backend("a_failing_batch_writes_nothing_half", |t| async move {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = orgs(&t, &dir).await;
        let store = t.store();
        let team = TeamId::generate();
        let mut segment = Segment::new();
        append_mixed(store, &mut segment, (a, b), "first", team).await.unwrap();
        let before = counts(&t).await;
        install_poison(&t, "NEW.call_id = 'poison'").await;
        let mut entries = mixed_batch(a, b, "second", &segment, team);
        entries.push(AuditEntry::Resolution(resolution(Some(a), "poison", Outcome::Allowed)));
        let heads = segment.positions(&entries);
        let err = store.append_audit(&mut segment, &entries).await.unwrap_err();
        assert!(err.is_unavailable() && err.to_string().contains("poisoned batch"), "{err}");
        assert_eq!(counts(&t).await, before, "a failed batch left something behind");
        assert_eq!(segment.positions(&entries), heads, "the segment moved");
        remove_poison(&t).await;
        append_mixed(store, &mut segment, (a, b), "third", team).await.unwrap();
        assert!(counts(&t).await.0 > before.0);
        verify_all(store, a, b).await;
    })
    .await
    .unwrap();
}

/// When a commit fails, every caller whose row was in it gets the error (and none is
/// told its row is durable); the writer goes on once the store takes writes again.
#[tokio::test]
async fn a_failed_commit_fails_every_caller_of_the_batch() {
    for_each_backend("a_failed_commit_fails_every_caller_of_the_batch", |t| async move {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = orgs(&t, &dir).await;
        let (writer, task) = AuditWriter::spawn(t.store().clone(), AuditConfig::default());
        writer.append(resolution(Some(a), "warm", Outcome::Allowed)).await.unwrap();
        install_poison(&t, "NEW.call_id <> ''").await;
        let mut calls = Vec::new();
        for i in 0..50 {
            let writer = writer.clone();
            let org = if i % 2 == 0 { a } else { b };
            calls.push(tokio::spawn(async move {
                writer.append(resolution(Some(org), &format!("down-{i}"), Outcome::Allowed)).await
            }));
        }
        for call in calls {
            match call.await.unwrap() {
                Err(AuditError::Unavailable(err)) => assert!(err.to_string().contains("poisoned"), "{err}"),
                other => panic!("a caller of a failed batch was told {other:?}"),
            }
        }
        assert_eq!(t.count("resolution_audit").await.unwrap(), 1);
        remove_poison(&t).await;
        let row = writer.append(resolution(Some(a), "back", Outcome::Allowed)).await.unwrap();
        assert_eq!(row.position(), 2, "the failed batches moved the chain");
        drop(writer);
        task.await.unwrap();
        verify_all(t.store(), a, b).await;
    })
    .await
    .unwrap();
}

/// A connection that refuses writes or is gone is replaced: the batch on it fails closed,
/// the next one is written on a fresh connection with its statements prepared again.
#[tokio::test]
async fn a_broken_audit_connection_fails_closed_and_is_replaced() {
    for_each_backend("a_broken_audit_connection_fails_closed_and_is_replaced", |t| async move {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = orgs(&t, &dir).await;
        let store = t.store();
        let team = TeamId::generate();
        let mut segment = Segment::new();
        append_mixed(store, &mut segment, (a, b), "first", team).await.unwrap();
        for round in 0..2 {
            let before = t.count("resolution_audit").await.unwrap();
            match t.backend() {
                Backend::Sqlite => {
                    // The audit connection (and only it) turns read-only: the batch fails.
                    t.execute_on_audit_connection("PRAGMA query_only = ON").await.unwrap();
                    let entries = mixed_batch(a, b, &format!("refused-{round}"), &segment, team);
                    let err = store.append_audit(&mut segment, &entries).await.unwrap_err();
                    assert!(err.is_unavailable(), "{err}");
                    assert_eq!(t.count("resolution_audit").await.unwrap(), before);
                }
                Backend::Postgres => {
                    // Every other connection to the database is killed (the audit pool's too):
                    // the next batch fails closed or runs on a fresh connection.
                    t.execute(
                        "SELECT CAST(COUNT(pg_terminate_backend(pid)) AS BIGINT) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                    .await
                    .unwrap();
                    let entries = mixed_batch(a, b, &format!("cut-{round}"), &segment, team);
                    if let Err(err) = store.append_audit(&mut segment, &entries).await {
                        assert!(err.is_unavailable(), "{err}");
                        assert_eq!(t.count("resolution_audit").await.unwrap(), before);
                    }
                }
            }
            append_mixed(store, &mut segment, (a, b), &format!("after-{round}"), team).await.unwrap();
        }
        verify_all(store, a, b).await;
    })
    .await
    .unwrap();
}
