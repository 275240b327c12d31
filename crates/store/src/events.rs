//! Lifecycle events: written inside the transaction of the change they record, read
//! back in `seq` order. On PostgreSQL each one is also announced to other nodes on
//! commit (`notify.rs`).

use byok_domain::{Actor, CredentialId, EventId, LifecycleEvent, LifecycleKind, OrgId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection};

use byok_domain::chain::{EVENT, GENESIS};

use crate::chain::{chain, Field, EVENT_CHAIN_COLUMNS};
use crate::error::{map_insert, map_sqlx, StoreError};
use crate::notify::announce;
use crate::rows::{to_json, Row};
use crate::sql::Sql;
use crate::store::{Backend, Store};

/// A lifecycle event to record; the store assigns its `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// `evt_…`, chosen by the caller.
    pub id: EventId,
    /// The org it happened in.
    pub org_id: OrgId,
    /// What happened.
    pub kind: LifecycleKind,
    /// The id of the thing it happened to (`cred_…`, `tok_…`, `team_…`, `org_…`).
    pub subject: String,
    /// The credential, when the subject is one.
    pub credential_id: Option<CredentialId>,
    /// The credential version in force after the event.
    pub version: Option<u32>,
    /// The fingerprint in force after the event.
    pub fingerprint: Option<String>,
    /// Who did it.
    pub actor: Actor,
    /// When.
    pub at: Timestamp,
    /// Event-specific facts; never a secret.
    pub details: serde_json::Value,
}

impl NewEvent {
    /// A fresh event with a generated id, no credential fields and empty details.
    pub fn new(org_id: OrgId, kind: LifecycleKind, subject: impl Into<String>, actor: Actor, at: Timestamp) -> Self {
        Self {
            id: EventId::generate(),
            org_id,
            kind,
            subject: subject.into(),
            credential_id: None,
            version: None,
            fingerprint: None,
            actor,
            at,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

/// Which events [`Store::list_events`] returns (all conditions must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events about this subject (`cred_…`, `tok_…`, …).
    pub subject: Option<String>,
    /// Only events whose `credential_id` is this credential.
    pub credential: Option<CredentialId>,
    /// Only events after this `seq` (for paging and tailing).
    pub after_seq: Option<i64>,
    /// At most this many events.
    pub limit: Option<u32>,
}

const EVENT_COLUMNS: &str =
    "seq, id, org_id, kind, subject, credential_id, version, fingerprint, actor, at_us, details";

/// Record `event` on `conn`, which is inside the transaction of the change it describes.
///
/// On PostgreSQL the event table is locked (against other writers only; readers go on)
/// until the transaction ends, so `seq` order is commit order: a reader paging with
/// `after_seq` never skips an event that commits late with a smaller `seq`, and a later
/// hash chain can link events in `seq` order.
pub(crate) async fn insert_event(
    conn: &mut AnyConnection,
    backend: Backend,
    event: &NewEvent,
) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query::<Any>("LOCK TABLE lifecycle_events IN EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
    }
    let details = to_json(&event.details, "event details")?;
    // The org's chain head; the lock above (PostgreSQL) or the single writer (SQLite)
    // keeps it from moving until this transaction ends.
    let head = sqlx::query::<Any>(
        "SELECT chain_seq, hash FROM lifecycle_events WHERE org_id = $1 AND chain_seq IS NOT NULL \
         ORDER BY chain_seq DESC LIMIT 1",
    )
    .bind(event.org_id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    let (chain_seq, prev) = match head {
        None => (1, GENESIS),
        Some(row) => {
            let r = Row::new(&row, "lifecycle_events");
            (r.int("chain_seq")? + 1, r.chain_hash("hash")?)
        }
    };
    let fields = vec![
        Field::Int(Some(chain_seq)),
        Field::Text(Some(event.id.to_string())),
        Field::Text(Some(event.org_id.to_string())),
        Field::Text(Some(event.kind.as_str().to_owned())),
        Field::Text(Some(event.subject.clone())),
        Field::Text(event.credential_id.map(|c| c.to_string())),
        Field::Int(event.version.map(i64::from)),
        Field::Text(event.fingerprint.clone()),
        Field::Text(Some(event.actor.to_string())),
        Field::Int(Some(event.at.as_micros())),
        Field::Text(Some(details)),
    ];
    let chained = chain(EVENT, prev, fields);
    let columns: &str = &EVENT_CHAIN_COLUMNS;
    let mut sql = Sql::new(backend, format!("INSERT INTO lifecycle_events ({columns}, prev_hash, hash) VALUES "));
    sql.push_tuples([&chained], |values, chained| chained.push_values(values));
    if backend == Backend::Postgres {
        // The new `seq` is read back for the change notification.
        sql.push(" RETURNING seq");
    }
    let inserted = sql.query()?.fetch_optional(&mut *conn).await;
    let inserted = inserted.map_err(|e| {
        map_insert(
            e,
            |_| format!("an event with id {} already exists", event.id),
            |_| format!("org {} does not exist", event.org_id),
        )
    })?;
    if let Some(row) = inserted {
        // Other nodes hear of the change when (and only if) this transaction commits.
        let seq = Row::new(&row, "lifecycle_events").int("seq")?;
        announce(conn, &event.org_id, event.kind, seq, &event.subject).await?;
    }
    Ok(())
}

fn decode_event(row: &AnyRow) -> Result<LifecycleEvent, StoreError> {
    let r = Row::new(row, "lifecycle_events");
    Ok(LifecycleEvent {
        id: r.parse("id")?,
        seq: r.int("seq")?,
        org_id: r.parse("org_id")?,
        kind: r.parse("kind")?,
        subject: r.text("subject")?,
        credential_id: r.opt_parse("credential_id")?,
        version: r.opt_u32("version")?,
        fingerprint: r.opt_text("fingerprint")?,
        actor: r.parse::<Actor>("actor")?,
        at: r.ts("at_us")?,
        details: r.json("details")?,
    })
}

impl Store {
    /// The org's lifecycle events that match `filter`, in `seq` order.
    pub async fn list_events(&self, org: &OrgId, filter: &EventFilter) -> Result<Vec<LifecycleEvent>, StoreError> {
        let mut sql = Sql::new(self.backend(), format!("SELECT {EVENT_COLUMNS} FROM lifecycle_events WHERE org_id = "));
        sql.push_bind(org.to_string());
        if let Some(subject) = &filter.subject {
            sql.push(" AND subject = ").push_bind(subject.as_str());
        }
        if let Some(credential) = &filter.credential {
            sql.push(" AND credential_id = ").push_bind(credential.to_string());
        }
        if let Some(after) = filter.after_seq {
            sql.push(" AND seq > ").push_bind(after);
        }
        sql.push(" ORDER BY seq");
        if let Some(limit) = filter.limit {
            sql.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = sql.query()?.fetch_all(self.reader()).await.map_err(map_sqlx)?;
        rows.iter().map(decode_event).collect()
    }
}

impl Store {
    /// The credential's events after (`at_us`, `seq_floor`) in time order (timeline).
    pub(crate) async fn timeline_events(
        &self,
        org: &OrgId,
        credential: &CredentialId,
        at_us: i64,
        seq_floor: i64,
        limit: i64,
    ) -> Result<Vec<LifecycleEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM lifecycle_events WHERE credential_id = $1 \
             AND (at_us, seq) > ($2, $3) ORDER BY at_us, seq LIMIT $4"
        );
        let rows = sqlx::query::<Any>(&sql)
            .bind(credential.to_string())
            .bind(at_us)
            .bind(seq_floor)
            .bind(limit)
            .fetch_all(self.reader())
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(decode_event).filter(|e| e.as_ref().map_or(true, |e| e.org_id == *org)).collect()
    }
}

impl Store {
    /// Record an event on its own (one that changes nothing else, such as a purge).
    pub async fn record_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_event(&mut tx, self.backend(), event).await?;
        tx.commit().await.map_err(map_sqlx)
    }
}
