//! Building lifecycle events.

use byok_domain::{Actor, CredentialId, EventId, LifecycleKind, OrgId, Timestamp};
use byok_store::NewEvent;

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
