//! A credential's whole life in time order: lifecycle events and the calls it served or
//! refused (with their completions), paged by a cursor so it stays fast for millions of
//! calls (both sources are read by index in `(credential_id, at_us, seq)` order).

use byok_domain::{CallCompletion, CredentialId, LifecycleEvent, OrgId, ResolutionAudit};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::store::Store;

/// One point in a credential's life.
// Items live only for one page of a replay; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimelineItem {
    /// A lifecycle event (created, rotated, revoked, …).
    Lifecycle(LifecycleEvent),
    /// A call the credential served or refused, with how it ended.
    Call {
        /// The resolution row.
        resolution: ResolutionAudit,
        /// The call's completion, once it ended (bound to this row, not merely to its call
        /// id, which another call may share).
        completion: Option<CallCompletion>,
    },
}

impl TimelineItem {
    fn cursor(&self) -> TimelineCursor {
        match self {
            TimelineItem::Lifecycle(e) => TimelineCursor { at_us: e.at.as_micros(), kind: 0, seq: e.seq },
            TimelineItem::Call { resolution, .. } => {
                TimelineCursor { at_us: resolution.at.as_micros(), kind: 1, seq: resolution.seq }
            }
        }
    }
}

/// Where a page of a timeline ends: `at_us`, source (0 events, 1 calls), row `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimelineCursor {
    /// Time of the item.
    pub at_us: i64,
    /// 0 for a lifecycle event, 1 for a call (events first at equal times).
    pub kind: u8,
    /// The row's `seq`.
    pub seq: i64,
}

impl TimelineCursor {
    /// `at_us.kind.seq`, for URLs.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.at_us, self.kind, self.seq)
    }

    /// Parse [`TimelineCursor::encode`]'s form.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let cursor = Self {
            at_us: parts.next()?.parse().ok()?,
            kind: parts.next()?.parse().ok().filter(|kind| *kind <= 1)?,
            seq: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(cursor)
    }
}

impl Store {
    /// Up to `limit` items of the credential's life after `after`, in order, and the
    /// cursor of the last one when more may follow. `org` owns the credential (its
    /// events); the calls are those of `calls_of` (`None`: of every org — a platform
    /// credential serves many).
    pub async fn credential_timeline(
        &self,
        org: &OrgId,
        calls_of: Option<&OrgId>,
        credential: &CredentialId,
        after: Option<TimelineCursor>,
        limit: u32,
    ) -> Result<(Vec<TimelineItem>, Option<TimelineCursor>), StoreError> {
        let after = after.unwrap_or(TimelineCursor { at_us: i64::MIN, kind: 0, seq: i64::MIN });
        let limit = limit.clamp(1, 10_000);
        // Rows strictly after the cursor within each source: for the source of the cursor
        // compare (at, seq); for the other source compare (at, kind).
        let event_seq_floor = if after.kind == 0 { after.seq } else { i64::MAX };
        let call_seq_floor = if after.kind == 1 { after.seq } else { i64::MIN };
        let events = self.timeline_events(org, credential, after.at_us, event_seq_floor, i64::from(limit)).await?;
        let calls =
            self.list_calls_for_timeline(calls_of, credential, after.at_us, call_seq_floor, i64::from(limit)).await?;
        let full = events.len() as u32 == limit || calls.len() as u32 == limit;
        let mut items: Vec<TimelineItem> = events
            .into_iter()
            .map(TimelineItem::Lifecycle)
            .chain(calls.into_iter().map(|(resolution, completion)| TimelineItem::Call { resolution, completion }))
            .collect();
        items.sort_by_key(TimelineItem::cursor);
        items.truncate(limit as usize);
        let next = if full { items.last().map(TimelineItem::cursor) } else { None };
        Ok((items, next))
    }

    async fn list_calls_for_timeline(
        &self,
        org: Option<&OrgId>,
        credential: &CredentialId,
        at_us: i64,
        seq_floor: i64,
        limit: i64,
    ) -> Result<Vec<(ResolutionAudit, Option<CallCompletion>)>, StoreError> {
        let rows = self.audit_rows_for_timeline(org, credential, at_us, seq_floor, limit).await?;
        let completions = self.completions_for(&rows).await?;
        Ok(rows.into_iter().map(|row| row.resolution).zip(completions).collect())
    }
}
