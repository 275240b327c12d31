//! The audit export's reading side on both backends: every chain of an org, each
//! resolution row with its completion, verifies from the export alone — from genesis,
//! from mid-chain (a range) and from a retention anchor — across page boundaries; and
//! an edit or a deletion made in the database shows in the export's verification.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use byok_crypto::WrappedDek;
use byok_domain::export::{self, Header, Problem, StartFrom, Summary};
use byok_domain::{
    Actor, CallCompletion, CredentialId, EventId, KmsName, LifecycleKind, Name, Org, OrgId, OrgState, Outcome,
    ResolutionAudit, Tier, Timestamp,
};
use byok_store::testing::{for_each_backend, TestStore};
use byok_store::{AuditEntry, ExportItem, NewEvent, Segment, Store};
use serde_json::Value;

const START: i64 = 1_767_225_600_000_000;

fn ts(at_us: i64) -> Timestamp {
    Timestamp::from_micros(START + at_us).unwrap()
}

fn event(org: OrgId, kind: LifecycleKind, at_us: i64) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        org_id: org,
        kind,
        subject: org.to_string(),
        credential_id: None,
        version: None,
        fingerprint: None,
        actor: Actor::System,
        at: ts(at_us),
        details: serde_json::json!({"b": 1, "a": [1, 2]}),
    }
}

async fn new_org(store: &Store, name: &str) -> OrgId {
    let org = Org {
        id: OrgId::generate(),
        name: Name::parse(name).unwrap(),
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
        created_at: ts(0),
    };
    let dek = WrappedDek { kek_version: 1, alg: "A256GCM-KW".to_owned(), bytes: vec![1; 60], kms: KmsName::default() };
    store.insert_org(&org, &dek, &event(org.id, LifecycleKind::OrgCreated, 0)).await.unwrap();
    org.id
}

fn row(org: OrgId, call: &str, at_us: i64, outcome: Outcome) -> ResolutionAudit {
    ResolutionAudit {
        at: ts(at_us),
        org_id: Some(org),
        credential_id: Some(CredentialId::generate()),
        outcome,
        ..ResolutionAudit::denied(call.to_owned())
    }
}

fn completion(org: OrgId, call: &str, at_us: i64) -> CallCompletion {
    CallCompletion {
        call_id: call.to_owned(),
        org_id: org,
        credential_id: CredentialId::generate(),
        at: ts(at_us),
        upstream_status: Some(200),
        latency_us: 1_000,
        input_tokens: Some(10),
        output_tokens: Some(5),
        status: "completed".to_owned(),
        metering: None,
    }
}

/// One allowed call: its row, then (in a later commit, as the writer does) its
/// completion bound to it.
async fn call(store: &Store, segment: &mut Segment, org: OrgId, call_id: &str, at_us: i64) {
    let row = [AuditEntry::Resolution(row(org, call_id, at_us, Outcome::Allowed))];
    let position = segment.positions(&row)[0];
    store.append_audit(segment, &row).await.unwrap();
    let bound = AuditEntry::BoundCompletion { completion: completion(org, call_id, at_us + 10), resolution: position };
    store.append_audit(segment, &[bound]).await.unwrap();
}

/// The export of `org` as the vault writes it.
async fn export_lines(store: &Store, org: &OrgId, since: Option<i64>, until: Option<i64>) -> Vec<String> {
    let (since, until) = (since.map(ts), until.map(ts));
    let mut slices = store.export_slices(org, since, until).await.unwrap();
    let header = Header {
        format: export::FORMAT.to_owned(),
        version: export::VERSION,
        org_id: org.to_string(),
        exported_at: Timestamp::now(),
        since,
        until,
        chains: slices.iter().map(|s| s.chain.clone()).collect(),
    };
    let mut lines = vec![export::header_line(&header)];
    let mut entries = 0;
    for slice in &mut slices {
        loop {
            let items = store.export_page(org, slice).await.unwrap();
            if items.is_empty() {
                break;
            }
            for item in items {
                lines.push(match &item {
                    ExportItem::Event(e) => export::lifecycle_line(e),
                    ExportItem::Call(r, c) => export::call_line(r, c.as_ref()),
                    ExportItem::Completion(c) => export::completion_line(c),
                });
                entries += match item {
                    ExportItem::Call(_, Some(_)) => 2,
                    _ => 1,
                };
            }
        }
    }
    lines.push(export::end_line(lines.len() as u64, entries));
    lines
}

fn verified(lines: &[String]) -> Summary {
    export::verify_lines(lines.iter().map(String::as_str))
        .unwrap_or_else(|e| panic!("{e}\n{}", lines.iter().take(40).cloned().collect::<Vec<_>>().join("\n")))
}

fn parsed(lines: &[String]) -> Vec<Value> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn starts(lines: &[String]) -> Vec<StartFrom> {
    let header: Header = {
        let mut value: Value = serde_json::from_str(&lines[0]).unwrap();
        value.as_object_mut().unwrap().remove("kind");
        serde_json::from_value(value).unwrap()
    };
    header.chains.iter().map(|c| c.after.from).collect()
}

async fn scenario(t: TestStore) {
    let store = t.store();
    let org = new_org(store, "acme").await;
    let other = new_org(store, "other").await;
    store.record_event(&event(org, LifecycleKind::TierChanged, 1)).await.unwrap();

    // Writer A: calls of both orgs, a refusal, a completion bound to no row (written
    // before completions named theirs).
    let mut a = Segment::new();
    call(store, &mut a, org, "a-1", 100).await;
    call(store, &mut a, other, "other-1", 101).await;
    store.append_audit(&mut a, &[AuditEntry::Resolution(row(org, "a-denied", 200, Outcome::Denied))]).await.unwrap();
    store.append_audit(&mut a, &[AuditEntry::Completion(completion(org, "a-old", 250))]).await.unwrap();
    call(store, &mut a, org, "a-2", 300).await;
    // Two rows in flight: the second's completion comes first.
    let rows = [
        AuditEntry::Resolution(row(org, "a-3", 400, Outcome::Allowed)),
        AuditEntry::Resolution(row(org, "a-4", 401, Outcome::Allowed)),
    ];
    let positions = a.positions(&rows);
    store.append_audit(&mut a, &rows).await.unwrap();
    for (i, call_id) in [(1, "a-4"), (0, "a-3")] {
        let bound = AuditEntry::BoundCompletion { completion: completion(org, call_id, 450), resolution: positions[i] };
        store.append_audit(&mut a, &[bound]).await.unwrap();
    }
    // Writer B, and writer C with more calls than one page holds (segment ids are ULIDs:
    // a later millisecond sorts after).
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let mut b = Segment::new();
    call(store, &mut b, org, "b-1", 500).await;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let mut c = Segment::new();
    let many = 2_100;
    for first in (0..many).step_by(150) {
        let mut batch = Vec::new();
        for i in first..(first + 150).min(many) {
            let call_id = format!("c-{i}");
            batch.push(AuditEntry::Resolution(row(org, &call_id, 1_000 + i, Outcome::Allowed)));
            let resolution = *c.positions(&batch).last().unwrap();
            let completion = completion(org, &call_id, 1_000 + i + 10);
            batch.push(AuditEntry::BoundCompletion { completion, resolution });
        }
        store.append_audit(&mut c, &batch).await.unwrap();
    }
    store.record_event(&event(org, LifecycleKind::TierChanged, 10_000)).await.unwrap();

    // The whole audit: every chain from genesis.
    let lines = export_lines(store, &org, None, None).await;
    let summary = verified(&lines);
    assert_eq!(summary.chains, 4, "events and three writers");
    assert_eq!(summary.events, 3);
    assert_eq!(summary.calls, 5 + 1 + many as u64);
    assert_eq!(summary.completions, 5 + 1 + many as u64, "every completion once, the unbound one included");
    assert!(starts(&lines).iter().all(|s| *s == StartFrom::Genesis));
    let values = parsed(&lines);
    assert!(values.iter().all(|v| v["org_id"].is_null() || v["org_id"] == org.to_string().as_str()));
    let calls: Vec<&Value> = values.iter().filter(|v| v["kind"] == "call").collect();
    let ids: Vec<&str> = calls.iter().take(6).map(|v| v["call_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a-1", "a-denied", "a-2", "a-3", "a-4", "b-1"]);
    for (v, paired) in calls.iter().take(6).zip([true, false, true, true, true, true]) {
        assert_eq!(v["completion"].is_object(), paired, "{v}");
        if paired {
            assert_eq!(v["completion"]["call_id"], v["call_id"], "{v}");
        }
    }
    let unbound: Vec<&Value> = values.iter().filter(|v| v["kind"] == "completion").collect();
    assert_eq!(unbound.len(), 1);
    assert_eq!(unbound[0]["call_id"], "a-old");
    assert_eq!(values[1]["details"], serde_json::json!({"b": 1, "a": [1, 2]}), "{}", lines[1]);

    // A range: each chain from its first entry at or after `since`, to its last before
    // `until`.
    let ranged = export_lines(store, &org, Some(300), Some(1_500)).await;
    let summary = verified(&ranged);
    assert_eq!(starts(&ranged), [StartFrom::Range, StartFrom::Genesis, StartFrom::Genesis]);
    assert_eq!(summary.calls, 3 + 1 + 500, "{summary:?}");
    assert_eq!(summary.events, 0);
    assert!(export_lines(store, &org, Some(20_000), None).await.len() == 2, "nothing in range: header and end");

    // After a retention purge, the rest starts from its anchor.
    let removed = store.purge_audit(Some(&org), ts(400)).await.unwrap();
    assert!(removed > 0);
    let purged = export_lines(store, &org, None, None).await;
    verified(&purged);
    assert_eq!(starts(&purged)[..2], [StartFrom::Genesis, StartFrom::Anchor]);
    assert!(store.verify_audit(Some(&org)).await.unwrap().ok);

    // An edit behind byok's back: the export carries it, and its verification names it.
    t.execute("UPDATE call_completions SET input_tokens = 11 WHERE call_id = 'c-7'").await.unwrap();
    let edited = export_lines(store, &org, None, None).await;
    let line = edited.iter().position(|l| l.contains("\"call_id\":\"c-7\"")).unwrap() as u64 + 1;
    let broken = export::verify_lines(edited.iter().map(String::as_str)).unwrap_err();
    assert_eq!((broken.line, broken.problem), (line, Problem::Changed), "{broken}");
    // A deleted row: its chain has a gap where it was.
    t.execute("UPDATE call_completions SET input_tokens = 10 WHERE call_id = 'c-7'").await.unwrap();
    t.execute("DELETE FROM resolution_audit WHERE call_id = 'c-9'").await.unwrap();
    let gapped = export_lines(store, &org, None, None).await;
    let line = gapped.iter().position(|l| l.contains("\"call_id\":\"c-9\"")).unwrap() as u64 + 1;
    let broken = export::verify_lines(gapped.iter().map(String::as_str)).unwrap_err();
    assert_eq!((broken.line, broken.problem), (line, Problem::Missing), "{broken}");
}

#[tokio::test]
async fn an_export_verifies_on_its_own_and_shows_what_was_changed() {
    for_each_backend("an_export_verifies_on_its_own_and_shows_what_was_changed", scenario).await.unwrap();
}
