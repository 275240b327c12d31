//! Building lifecycle events.

use byok_crypto::WrappedDek;
use byok_domain::{Actor, CredentialId, EventId, LifecycleKind, OrgId, Timestamp};
use byok_store::{NewEvent, WrappedDekRef};

/// A new event about `subject` in `org`, by `actor`, now.
pub(crate) fn event(org: OrgId, kind: LifecycleKind, subject: impl ToString, actor: &Actor) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        org_id: org,
        kind,
        subject: subject.to_string(),
        credential_id: None,
        version: None,
        fingerprint: None,
        actor: actor.clone(),
        at: Timestamp::now(),
        details: serde_json::Value::Object(serde_json::Map::new()),
    }
}

/// A new event about a credential, carrying the version and fingerprint in force after it.
pub(crate) fn credential_event(
    org: OrgId,
    kind: LifecycleKind,
    credential: CredentialId,
    version: u32,
    fingerprint: &str,
    actor: &Actor,
    details: serde_json::Value,
) -> NewEvent {
    NewEvent {
        credential_id: Some(credential),
        version: Some(version),
        fingerprint: Some(fingerprint.to_owned()),
        details,
        ..event(org, kind, credential, actor)
    }
}

/// A rewrapped batch as the store takes it: the new wrappings by credential version, and
/// one `rewrapped` event each (by the system), whose details `details` makes from the old
/// and the new wrapping.
pub(crate) fn rewrapped_batch(
    org: OrgId,
    pending: &[WrappedDekRef],
    new: Vec<WrappedDek>,
    details: impl Fn(&WrappedDek, &WrappedDek) -> serde_json::Value,
) -> (Vec<(CredentialId, u32, WrappedDek)>, Vec<NewEvent>) {
    let mut items = Vec::with_capacity(pending.len());
    let mut events = Vec::with_capacity(pending.len());
    for (record, wrapped) in pending.iter().zip(new) {
        events.push(credential_event(
            org,
            LifecycleKind::Rewrapped,
            record.credential_id,
            record.version,
            &record.fingerprint,
            &Actor::System,
            details(&record.wrapped_dek, &wrapped),
        ));
        items.push((record.credential_id, record.version, wrapped));
    }
    (items, events)
}
