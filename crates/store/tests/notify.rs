//! Change notices: every committed change can be read back after a `seq` (both backends),
//! and on PostgreSQL is announced with `NOTIFY` on commit, naming org, kind, seq and
//! subject.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use byok_crypto::WrappedDek;
use byok_domain::{Actor, KmsName, LifecycleKind, Name, Org, OrgId, OrgState, Tier, Timestamp, TokenId};
use byok_store::testing::{for_each_backend, TestStore};
use byok_store::{ChangeListener, ChangeNote, Heard, NewEvent, Store};

async fn new_org(store: &Store) -> Org {
    let org = Org {
        id: OrgId::generate(),
        name: Name::parse(&format!("org-{}", OrgId::generate().ulid().to_string().to_ascii_lowercase())).unwrap(),
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
        created_at: Timestamp::now(),
    };
    let wrapped =
        WrappedDek { kek_version: 1, alg: "A256GCM-KW".to_owned(), bytes: vec![7; 60], kms: KmsName::default() };
    let created = NewEvent::new(org.id, LifecycleKind::OrgCreated, org.id.to_string(), Actor::System, Timestamp::now());
    store.insert_org(&org, &wrapped, &created).await.unwrap();
    org
}

fn revoked(org: &Org, token: TokenId) -> NewEvent {
    NewEvent::new(org.id, LifecycleKind::TokenRevoked, token.to_string(), Actor::System, Timestamp::now())
}

#[tokio::test]
async fn changes_after_a_seq_name_org_kind_and_subject_in_order() {
    for_each_backend("changes_after", |t| async move {
        let store = t.store();
        let start = store.latest_event_seq().await.unwrap();
        let a = new_org(store).await;
        let b = new_org(store).await;
        let token = TokenId::generate();
        store.record_event(&revoked(&b, token)).await.unwrap();

        let changes = store.changes_after(start, 100).await.unwrap();
        let seen: Vec<_> = changes.iter().map(|c| (c.org, c.kind, c.subject.clone())).collect();
        assert_eq!(
            seen,
            vec![
                (a.id, Some(LifecycleKind::OrgCreated), a.id.to_string()),
                (b.id, Some(LifecycleKind::OrgCreated), b.id.to_string()),
                (b.id, Some(LifecycleKind::TokenRevoked), token.to_string()),
            ]
        );
        assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq), "seq order");
        // Paging: after the first, at most one.
        let page = store.changes_after(changes[0].seq, 1).await.unwrap();
        assert_eq!(page, vec![changes[1].clone()]);
        // SQLite has nothing to listen to.
        if t.backend() == byok_store::Backend::Sqlite {
            assert!(store.listen_for_changes().await.unwrap().is_none());
        }
    })
    .await
    .unwrap();
}

async fn next_change(listener: &mut ChangeListener) -> ChangeNote {
    match tokio::time::timeout(Duration::from_secs(5), listener.next()).await.expect("no notification").unwrap() {
        Heard::Change(change) => change,
        other => panic!("expected a change, heard {other:?}"),
    }
}

#[tokio::test]
async fn a_committed_change_is_announced_with_its_org_kind_seq_and_subject() {
    let Some(t) = TestStore::postgres().await.unwrap() else { return };
    let store = t.store();
    let mut listener = store.listen_for_changes().await.unwrap().expect("PostgreSQL can listen");
    let org = new_org(store).await;
    let created = next_change(&mut listener).await;
    assert_eq!((created.org, created.kind), (org.id, Some(LifecycleKind::OrgCreated)));

    let token = TokenId::generate();
    store.record_event(&revoked(&org, token)).await.unwrap();
    let heard = next_change(&mut listener).await;
    let latest = store.latest_event_seq().await.unwrap();
    assert_eq!(
        heard,
        ChangeNote { seq: latest, org: org.id, kind: Some(LifecycleKind::TokenRevoked), subject: token.to_string() }
    );
    // The notice is exactly what the poll reads for that seq.
    assert_eq!(store.changes_after(latest - 1, 10).await.unwrap(), vec![heard]);

    // A refused change is not announced: an event for an org that does not exist fails
    // inside its transaction.
    let ghost = Org { id: OrgId::generate(), ..org.clone() };
    assert!(store.record_event(&revoked(&ghost, token)).await.is_err());
    store.record_event(&revoked(&org, token)).await.unwrap();
    assert_eq!(next_change(&mut listener).await.org, org.id, "the failed change was not announced");

    // Listening can be turned off (the poll is then the only source).
    store.set_change_listening(false);
    assert!(store.listen_for_changes().await.unwrap().is_none());
}

#[test]
fn notification_payloads_parse_and_refuse_what_byok_did_not_send() {
    let org = OrgId::generate();
    let token = TokenId::generate();
    let note = ChangeNote::parse(&format!("{org}:token_revoked:42:{token}")).unwrap();
    assert_eq!(note, ChangeNote { seq: 42, org, kind: Some(LifecycleKind::TokenRevoked), subject: token.to_string() });
    let unknown = ChangeNote::parse(&format!("{org}:made_up_kind:43:")).unwrap();
    assert_eq!(unknown.kind, None, "an unknown kind is kept as unknown (the reader invalidates everything)");
    for bad in ["", "nonsense", &format!("{org}:token_revoked:notanumber:x"), "org_x:created:1:y"] {
        assert!(ChangeNote::parse(bad).is_none(), "{bad}");
    }
}
