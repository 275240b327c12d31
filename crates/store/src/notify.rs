//! Change notices: what changed (org, kind, subject) and how other nodes hear of it.
//!
//! Every committed change writes a lifecycle event naming its org, kind and subject. On
//! PostgreSQL the transaction that writes it also sends
//! `NOTIFY byok_changes, '<org>:<kind>:<seq>:<subject>'`, which PostgreSQL delivers only
//! if and when that transaction commits; a node listening on [`CHANNEL`] can invalidate
//! at once what the change made stale. Notifications are transient (those sent while a
//! listener reconnects are lost), so a node also reads the events after the last `seq`
//! it saw ([`Store::changes_after`]) as the fallback. SQLite has no notifications: the
//! events are all there is (and a SQLite store has a single node anyway).

use std::sync::atomic::Ordering;

use byok_domain::{LifecycleKind, OrgId};
use sqlx::postgres::PgListener;
use sqlx::{Any, AnyConnection};

use crate::error::{map_sqlx, StoreError};
use crate::rows::Row;
use crate::store::Store;

/// The PostgreSQL notification channel changes are announced on.
pub const CHANNEL: &str = "byok_changes";

/// One committed change, as a lifecycle event or a notification names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNote {
    /// The event's `seq`.
    pub seq: i64,
    /// The org it happened in (the platform pool's own org for platform credentials).
    pub org: OrgId,
    /// What happened; `None` for a kind this build does not know, after which a reader
    /// must assume that anything may have changed.
    pub kind: Option<LifecycleKind>,
    /// The id of the thing it happened to (`tok_…`, `cred_…`, …).
    pub subject: String,
}

impl ChangeNote {
    /// The notification payload: `<org>:<kind>:<seq>:<subject>`. Only id-like subjects
    /// are carried (a subject with other characters is left empty).
    pub(crate) fn payload(org: &OrgId, kind: LifecycleKind, seq: i64, subject: &str) -> String {
        let plain = subject.len() <= 64 && subject.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        format!("{org}:{}:{seq}:{}", kind.as_str(), if plain { subject } else { "" })
    }

    /// A notification payload read back; `None` if it is not one byok sent.
    pub fn parse(payload: &str) -> Option<ChangeNote> {
        let mut parts = payload.splitn(4, ':');
        let org = parts.next()?.parse().ok()?;
        let kind = parts.next()?;
        let seq = parts.next()?.parse().ok()?;
        let subject = parts.next().unwrap_or("").to_owned();
        Some(ChangeNote { seq, org, kind: kind.parse().ok(), subject })
    }
}

/// What a [`ChangeListener`] heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A change committed.
    Change(ChangeNote),
    /// A notification on the channel that could not be read: something changed.
    Unreadable,
    /// The connection was lost and has been re-established: notifications sent
    /// meanwhile are lost, so the listener's owner must catch up from the events.
    Reconnected,
}

/// A dedicated PostgreSQL connection listening on [`CHANNEL`].
pub struct ChangeListener {
    inner: PgListener,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener").finish_non_exhaustive()
    }
}

impl ChangeListener {
    /// The next thing heard. An error means the connection is gone and could not be
    /// re-established; make a new listener (after catching up from the events).
    pub async fn next(&mut self) -> Result<Heard, StoreError> {
        match self.inner.try_recv().await.map_err(map_sqlx)? {
            Some(notification) => {
                Ok(ChangeNote::parse(notification.payload()).map_or(Heard::Unreadable, Heard::Change))
            }
            None => Ok(Heard::Reconnected),
        }
    }
}

/// Announce `note`'s change on `conn`, inside the transaction that records it (PostgreSQL
/// delivers it on commit, never for a rolled-back transaction).
pub(crate) async fn announce(
    conn: &mut AnyConnection,
    org: &OrgId,
    kind: LifecycleKind,
    seq: i64,
    subject: &str,
) -> Result<(), StoreError> {
    // The payload holds only ids, a kind name, digits and ':', so it can be a literal
    // (NOTIFY takes no parameters); quotes are doubled all the same.
    let payload = ChangeNote::payload(org, kind, seq, subject).replace('\'', "''");
    sqlx::query::<Any>(&format!("NOTIFY {CHANNEL}, '{payload}'")).execute(&mut *conn).await.map_err(map_sqlx)?;
    Ok(())
}

impl Store {
    /// The committed changes after `seq`, in `seq` order, at most `limit` of them (the
    /// fallback to notifications; `seq` order is commit order, see `insert_event`).
    pub async fn changes_after(&self, seq: i64, limit: u32) -> Result<Vec<ChangeNote>, StoreError> {
        let rows = sqlx::query::<Any>(
            "SELECT seq, org_id, kind, subject FROM lifecycle_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let r = Row::new(row, "lifecycle_events");
                Ok(ChangeNote {
                    seq: r.int("seq")?,
                    org: r.parse("org_id")?,
                    kind: r.text("kind")?.parse().ok(),
                    subject: r.text("subject")?,
                })
            })
            .collect()
    }

    /// A listener for changes committed by any node, or `None` when there is nothing to
    /// listen to (SQLite) or listening is off ([`Store::set_change_listening`]).
    pub async fn listen_for_changes(&self) -> Result<Option<ChangeListener>, StoreError> {
        let Some(url) = self.listen_url() else { return Ok(None) };
        if !self.listening().load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut inner = PgListener::connect(url).await.map_err(map_sqlx)?;
        inner.listen(CHANNEL).await.map_err(map_sqlx)?;
        Ok(Some(ChangeListener { inner }))
    }

    /// Whether [`listen_for_changes`](Self::listen_for_changes) connects (PostgreSQL; on
    /// by default). With it off, a node learns of other nodes' changes only from the
    /// events, at its next poll — the fallback, which tests use this to exercise.
    pub fn set_change_listening(&self, on: bool) {
        self.listening().store(on, Ordering::Release);
    }
}
