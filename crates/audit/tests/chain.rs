//! The audit hash chain: any edit, deletion, reordering or insertion made directly in
//! the database is found by verify at that entry; a retention purge leaves it verifiable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use byok_audit::{AuditConfig, AuditWriter};
use byok_crypto::{LocalKeyring, ProviderSecret};
use byok_domain::{
    Actor, CallCompletion, Capability, Credential, CredentialOwner, Metering, Mode, ModelFamilyRegistry, Org, Outcome,
    ProviderId, ResolutionAudit, ScopeInput, TeamId, Tier, Timestamp,
};
use byok_kms::KmsHandle;
use byok_store::testing::{for_each_backend, TestStore};
use byok_store::{Problem, VerifyReport};
use byok_vault::{NewCredential, Vault, VaultPolicy};

struct Env {
    t: TestStore,
    _dir: tempfile::TempDir,
    org: Org,
    credential: Credential,
}

const CALLS: usize = 20;

fn row(org: &Org, credential: &Credential, i: usize, at: Timestamp) -> ResolutionAudit {
    ResolutionAudit {
        seq: 0,
        at,
        call_id: format!("call-{i:03}"),
        org_id: Some(org.id),
        team_id: None,
        workflow_id: None,
        token_id: None,
        credential_id: Some(credential.id),
        credential_version: Some(1),
        fingerprint: Some(credential.fingerprint.clone()),
        provider: Some(ProviderId::Openai),
        model: Some("gpt-4o".into()),
        model_family: Some("gpt-4o".into()),
        capability: Some(Capability::Chat),
        mode: Some(Mode::Sync),
        outcome: Outcome::Allowed,
        reason: None,
        detail: None,
        // Even calls carry the billing fields, odd ones are as written before they existed:
        // both kinds verify side by side.
        tier: i.is_multiple_of(2).then_some(Tier::KatmanB),
        credential_owner: i.is_multiple_of(2).then_some(CredentialOwner::Org),
        attempt: None,
    }
}

fn metering(i: usize) -> Option<Metering> {
    i.is_multiple_of(2).then(|| Metering {
        team_id: TeamId::generate(),
        tier: Tier::KatmanB,
        credential_owner: CredentialOwner::Org,
        provider: ProviderId::Openai,
        model_family: Some("gpt-4o".into()),
        rate_card: "USD:0.0005:0.1:0.4".into(),
        provider_price: None,
    })
}

/// An org with a few lifecycle events and CALLS calls (row + completion each), written
/// through a real audit writer.
async fn env(t: TestStore, at: impl Fn(usize) -> Timestamp) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let kms = KmsHandle::new(Arc::new(LocalKeyring::open(dir.path().join("k.json")).unwrap()), 2);
    let vault = Vault::new(t.store().clone(), kms, ModelFamilyRegistry::seeded(), VaultPolicy::default());
    let org = vault.create_org(&Actor::System, "acme", Tier::KatmanB).await.unwrap();
    let new = NewCredential {
        name: "main".into(),
        provider: ProviderId::Openai,
        secret: ProviderSecret::new("sk-canary-chain-0123456789".into()).unwrap(),
        scope: ScopeInput::default(),
        base_url: None,
        expires_at: None,
        priority: None,
        weight: None,
        rpm: None,
        tpm: None,
        verify: false,
    };
    let credential = vault.create_credential(&Actor::System, org.id, new).await.unwrap();
    vault.change_credential_state(&Actor::System, org.id, "main", byok_vault::StateChange::Disable).await.unwrap();
    vault.change_credential_state(&Actor::System, org.id, "main", byok_vault::StateChange::Enable).await.unwrap();
    let (writer, task) = AuditWriter::spawn(t.store().clone(), AuditConfig::default());
    for i in 0..CALLS {
        let written = writer.append(row(&org, &credential, i, at(i))).await.unwrap();
        // Every fifth completion names its row; the others are as written before
        // completions did: both kinds verify side by side.
        let recorder = if bound(i) { writer.bound(&written) } else { writer.clone() };
        recorder.complete(CallCompletion {
            call_id: format!("call-{i:03}"),
            org_id: org.id,
            credential_id: credential.id,
            at: at(i),
            upstream_status: Some(200),
            latency_us: 1000,
            input_tokens: Some(3),
            output_tokens: Some(5),
            status: "completed".into(),
            metering: metering(i),
        });
    }
    drop(writer);
    task.await.unwrap();
    Env { t, _dir: dir, org, credential }
}

/// Whether call `i`'s completion is bound to its row.
fn bound(i: usize) -> bool {
    i.is_multiple_of(5)
}

async fn verify(env: &Env) -> VerifyReport {
    env.t.store().verify_audit(Some(&env.org.id)).await.unwrap()
}

fn now(_: usize) -> Timestamp {
    Timestamp::now()
}

#[tokio::test]
async fn an_untouched_audit_verifies() {
    for_each_backend("an_untouched_audit_verifies", |t| async move {
        let env = env(t, now).await;
        let report = verify(&env).await;
        assert!(report.ok, "{report:?}");
        // 5 events (org, created, disabled, enabled… and the team-less org has no more) + 2 per call.
        let events = env.t.count("lifecycle_events").await.unwrap() as u64;
        assert_eq!(report.checked, events + 2 * CALLS as u64);
        let _ = &env.credential;
    })
    .await
    .unwrap();
}

/// A bound completion names its row's position; the others name none.
#[tokio::test]
async fn a_bound_completion_names_its_rows_position() {
    for_each_backend("a_bound_completion_names_its_rows_position", |t| async move {
        let env = env(t, now).await;
        for i in 0..CALLS {
            let named = env
                .t
                .query_i64(&format!(
                    "SELECT CAST(COALESCE(MAX(c.resolution_seq), -1) AS BIGINT) FROM call_completions c \
                     WHERE c.call_id = 'call-{i:03}'"
                ))
                .await
                .unwrap();
            let position = env
                .t
                .query_i64(&format!("SELECT segment_seq FROM resolution_audit WHERE call_id = 'call-{i:03}'"))
                .await
                .unwrap();
            assert_eq!(named, if bound(i) { position } else { -1 }, "call {i}");
        }
    })
    .await
    .unwrap();
}

/// Each tampering, done with raw SQL, and where verify must find it.
#[tokio::test]
async fn every_kind_of_tampering_is_found_at_its_entry() {
    // (what, SQL statements, problem, chain prefix, position)
    let cases: Vec<(&str, Vec<&str>, Problem, &str, i64)> = vec![
        (
            "edit a resolution row",
            vec!["UPDATE resolution_audit SET model = 'gpt-3.5-turbo' WHERE call_id = 'call-004'"],
            Problem::Changed,
            "calls/",
            9,
        ),
        (
            "edit a completion's usage",
            vec!["UPDATE call_completions SET output_tokens = 1 WHERE call_id = 'call-010'"],
            Problem::Changed,
            "calls/",
            22,
        ),
        (
            "reprice a completion",
            vec!["UPDATE call_completions SET rate_card = 'USD:0:0:0' WHERE call_id = 'call-010'"],
            Problem::Changed,
            "calls/",
            22,
        ),
        (
            "strip a completion's billing fields",
            vec!["UPDATE call_completions SET team_id = NULL, tier = NULL, credential_owner = NULL, provider = NULL, \
                  model_family = NULL, rate_card = NULL, provider_price = NULL WHERE call_id = 'call-010'"],
            Problem::Changed,
            "calls/",
            22,
        ),
        (
            "add billing fields to an older completion",
            vec!["UPDATE call_completions SET tier = 'katman-a' WHERE call_id = 'call-011'"],
            Problem::Changed,
            "calls/",
            24,
        ),
        (
            "pair a completion with another row",
            vec!["UPDATE call_completions SET resolution_seq = 1 WHERE call_id = 'call-010'"],
            Problem::Changed,
            "calls/",
            22,
        ),
        (
            "unbind a completion from its row",
            vec!["UPDATE call_completions SET resolution_seq = NULL WHERE call_id = 'call-005'"],
            Problem::Changed,
            "calls/",
            12,
        ),
        (
            "bind an older completion to a row",
            vec!["UPDATE call_completions SET resolution_seq = 23 WHERE call_id = 'call-011'"],
            Problem::Changed,
            "calls/",
            24,
        ),
        (
            "claim a platform credential served a call",
            vec!["UPDATE resolution_audit SET credential_owner = 'platform' WHERE call_id = 'call-004'"],
            Problem::Changed,
            "calls/",
            9,
        ),
        (
            "delete a resolution row",
            vec!["DELETE FROM resolution_audit WHERE call_id = 'call-006'"],
            Problem::Missing,
            "calls/",
            14,
        ),
        (
            "reorder two resolution rows",
            // call-007 gets a row id after call-008's: its row now comes later than the
            // next entry of its chain.
            vec!["UPDATE resolution_audit SET seq = {NEXT_SEQ} WHERE call_id = 'call-007'"],
            Problem::Reordered,
            "calls/",
            17,
        ),
        (
            "insert a row without a chain position",
            vec!["INSERT INTO resolution_audit (at_us, call_id, org_id, outcome) SELECT at_us, 'forged', org_id, 'allowed' FROM resolution_audit WHERE call_id = 'call-001'"],
            Problem::Inserted,
            "calls",
            0,
        ),
        (
            "insert a copy at a used position",
            vec!["INSERT INTO resolution_audit (at_us, call_id, org_id, outcome, segment, segment_seq, prev_hash, hash) \
                  SELECT at_us, call_id, org_id, outcome, segment, segment_seq, prev_hash, hash FROM resolution_audit WHERE call_id = 'call-002'"],
            Problem::Changed,
            "calls/",
            5,
        ),
        (
            "edit a lifecycle event",
            vec!["UPDATE lifecycle_events SET details = '{}' WHERE kind = 'disabled'"],
            Problem::Changed,
            "events",
            3,
        ),
        (
            "delete a lifecycle event",
            vec!["DELETE FROM lifecycle_events WHERE kind = 'disabled'"],
            Problem::Missing,
            "events",
            4,
        ),
    ];
    for (what, statements, problem, chain, position) in cases {
        for_each_backend(what, |t| {
            let statements = statements.clone();
            async move {
                let env = env(t, now).await;
                assert!(verify(&env).await.ok, "{what}: clean before tampering");
                // A fresh row id: PostgreSQL identity columns only take DEFAULT.
                let next_seq = match env.t.backend() {
                    byok_store::Backend::Sqlite => "(SELECT MAX(seq) + 1 FROM resolution_audit)",
                    byok_store::Backend::Postgres => "DEFAULT",
                };
                for sql in &statements {
                    let sql = sql.replace("{NEXT_SEQ}", next_seq);
                    env.t.execute(&sql).await.unwrap_or_else(|e| panic!("{what}: {sql}: {e}"));
                }
                let report = verify(&env).await;
                assert!(!report.ok, "{what}: verify must fail");
                let bad = report.first_bad.unwrap();
                assert_eq!(bad.problem, problem, "{what}: {bad:?}");
                assert!(bad.chain.starts_with(chain), "{what}: {bad:?}");
                assert_eq!(bad.seq, position, "{what}: {bad:?}");
            }
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_retention_purge_leaves_the_rest_verifiable() {
    for_each_backend("a_retention_purge_leaves_the_rest_verifiable", |t| async move {
        let base = Timestamp::now().as_micros() - 100 * 86_400_000_000;
        // Calls 0..10 are 100 days old minus i days; the rest are recent.
        let env = env(t, |i| {
            if i < 10 {
                Timestamp::from_micros(base + i as i64 * 86_400_000_000).unwrap()
            } else {
                Timestamp::now()
            }
        })
        .await;
        let before = verify(&env).await;
        assert!(before.ok);
        let cutoff = Timestamp::from_micros(base + 5 * 86_400_000_000).unwrap();
        let removed = env.t.store().purge_audit(Some(&env.org.id), cutoff).await.unwrap();
        assert_eq!(removed, 10, "calls 0..5, rows and completions");
        let after = verify(&env).await;
        assert!(after.ok, "{after:?}");
        assert_eq!(after.checked, before.checked - 10);
        // Purging again at the same cut removes nothing; tampering after the cut is still found.
        assert_eq!(env.t.store().purge_audit(Some(&env.org.id), cutoff).await.unwrap(), 0);
        env.t.execute("UPDATE resolution_audit SET detail = 'x' WHERE call_id = 'call-012'").await.unwrap();
        assert_eq!(verify(&env).await.first_bad.unwrap().problem, Problem::Changed);
    })
    .await
    .unwrap();
}
