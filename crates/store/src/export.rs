//! What an audit export reads: which slice of each of an org's chains it holds, and
//! those entries page by page, each resolution row with the completion bound to it (the
//! lines themselves are written by [`byok_domain::export`]).
//!
//! A slice is contiguous, so it verifies on its own: from the chain's first entry at or
//! after `since` (without `since`, the first after its retention anchor) to its last
//! entry before `until` (without `until`, its head when the export starts), whatever
//! the time of the entries in between.

use std::collections::{BTreeSet, HashMap};

use byok_domain::chain::hex;
use byok_domain::export::{calls_chain, ChainPoint, ChainStart, ExportedChain, StartFrom, StoredEntry, EVENTS_CHAIN};
use byok_domain::{OrgId, Timestamp};

use crate::chain::{on_chain, Entry, Page, COMPLETIONS, EVENTS, RESOLUTIONS};
use crate::error::{map_sqlx, StoreError};
use crate::rows::Row;
use crate::sql::Sql;
use crate::store::Store;

/// Entries read per table and page.
const EXPORT_PAGE: i64 = 2000;

/// One chain's slice in an export, and how far it has been read.
#[derive(Debug, Clone)]
pub struct ExportSlice {
    /// The chain as the export's header lists it.
    pub chain: ExportedChain,
    /// The writer segment (`None`: the lifecycle events).
    segment: Option<String>,
    /// The last position read.
    after: i64,
    /// Completions already carried by their row's line (their row ids), skipped when the
    /// walk reaches their own position.
    carried: BTreeSet<i64>,
}

/// The entries of one line of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportItem {
    /// A lifecycle event.
    Event(StoredEntry),
    /// A resolution row, with the completion bound to it when that is in the slice.
    Call(StoredEntry, Option<StoredEntry>),
    /// A completion no row of the slice carries.
    Completion(StoredEntry),
}

fn stored(entry: Entry) -> StoredEntry {
    StoredEntry {
        kind: entry.kind,
        row_seq: entry.row_seq,
        fields: entry.fields,
        prev_hash: entry.prev,
        hash: entry.hash,
    }
}

impl Store {
    /// The slices of `org`'s chains an export from `since` to `until` holds: its
    /// lifecycle events, then each writer segment's calls (in segment order, which is
    /// the order the segments were started). Chains with nothing in the range are left
    /// out.
    pub async fn export_slices(
        &self,
        org: &OrgId,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Vec<ExportSlice>, StoreError> {
        let mut slices = Vec::new();
        if let Some(slice) = self.event_slice(org, since, until).await? {
            slices.push(slice);
        }
        for segment in self.segments(Some(org)).await? {
            if let Some(slice) = self.call_slice(org, &segment, since, until).await? {
                slices.push(slice);
            }
        }
        Ok(slices)
    }

    async fn event_slice(
        &self,
        org: &OrgId,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Option<ExportSlice>, StoreError> {
        let bound = |aggregate: &str, condition: Option<(&str, i64)>| {
            let mut sql = Sql::new(
                self.backend(),
                format!(
                    "SELECT {aggregate}(chain_seq) FROM lifecycle_events WHERE chain_seq IS NOT NULL AND org_id = "
                ),
            );
            sql.push_bind(org.to_string());
            if let Some((condition, at)) = condition {
                sql.push(format_args!(" AND at_us {condition} ")).push_bind(at);
            }
            sql
        };
        let first = match since {
            None => Some(1),
            Some(since) => scalar(bound("MIN", Some((">=", since.as_micros()))), self).await?,
        };
        let last = scalar(bound("MAX", until.map(|until| ("<", until.as_micros()))), self).await?;
        let (Some(first), Some(last)) = (first, last) else { return Ok(None) };
        if first > last {
            return Ok(None);
        }
        let hash_at = |position: i64| async move {
            let mut sql = Sql::new(self.backend(), "SELECT hash FROM lifecycle_events WHERE org_id = ");
            sql.push_bind(org.to_string()).push(" AND chain_seq = ").push_bind(position);
            let found = sql.query_scalar::<Option<Vec<u8>>>()?.fetch_all(self.reader()).await.map_err(map_sqlx)?;
            Ok::<_, StoreError>(found.into_iter().flatten().next())
        };
        let after = match first - 1 {
            0 => ChainStart { position: 0, hash: Some(hex(&byok_domain::chain::GENESIS)), from: StartFrom::Genesis },
            before => start_at(before, hash_at(before).await?),
        };
        let chain = ExportedChain {
            chain: EVENTS_CHAIN.to_owned(),
            after,
            last: ChainPoint { position: last, hash: hash_at(last).await?.map(|h| hex(&h)) },
        };
        Ok(Some(ExportSlice { after: first - 1, chain, segment: None, carried: BTreeSet::new() }))
    }

    async fn call_slice(
        &self,
        org: &OrgId,
        segment: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<Option<ExportSlice>, StoreError> {
        let anchor = self.anchor(Some(org), segment).await?;
        // The bound over both tables: `aggregate` of the positions meeting `condition`.
        let bound = |aggregate: &'static str, condition: Option<(&'static str, i64)>| async move {
            let mut found: Option<i64> = None;
            for table in [RESOLUTIONS.table, COMPLETIONS.table] {
                let select = format!("SELECT {aggregate}(segment_seq) FROM {table}");
                let mut sql = on_chain(self.backend(), &select, Some(org), segment);
                if let Some((condition, at)) = condition {
                    sql.push(format_args!(" AND at_us {condition} ")).push_bind(at);
                }
                if let Some(position) = scalar(sql, self).await? {
                    found = Some(match (found, aggregate) {
                        (Some(other), "MIN") => other.min(position),
                        (Some(other), _) => other.max(position),
                        (None, _) => position,
                    });
                }
            }
            Ok::<_, StoreError>(found)
        };
        let first = match since {
            None => Some(anchor.seq + 1),
            Some(since) => bound("MIN", Some((">=", since.as_micros()))).await?,
        };
        let last = bound("MAX", until.map(|until| ("<", until.as_micros()))).await?;
        let (Some(first), Some(last)) = (first, last) else { return Ok(None) };
        if first > last {
            return Ok(None);
        }
        let hash_at = |position: i64| async move {
            for table in [RESOLUTIONS.table, COMPLETIONS.table] {
                let mut sql = on_chain(self.backend(), &format!("SELECT hash FROM {table}"), Some(org), segment);
                sql.push(" AND segment_seq = ").push_bind(position);
                let found = sql.query_scalar::<Option<Vec<u8>>>()?.fetch_all(self.reader()).await.map_err(map_sqlx)?;
                if let Some(hash) = found.into_iter().flatten().next() {
                    return Ok::<_, StoreError>(Some(hash));
                }
            }
            Ok(None)
        };
        let before = first - 1;
        let after = if before == 0 {
            ChainStart { position: 0, hash: Some(hex(&byok_domain::chain::GENESIS)), from: StartFrom::Genesis }
        } else if before == anchor.seq {
            ChainStart { position: before, hash: Some(hex(&anchor.hash)), from: StartFrom::Anchor }
        } else {
            start_at(before, hash_at(before).await?)
        };
        let chain = ExportedChain {
            chain: calls_chain(segment),
            after,
            last: ChainPoint { position: last, hash: hash_at(last).await?.map(|h| hex(&h)) },
        };
        Ok(Some(ExportSlice { after: before, chain, segment: Some(segment.to_owned()), carried: BTreeSet::new() }))
    }

    /// The next entries of `slice`, one item per line, in chain order; empty once the
    /// slice has been read to its end.
    pub async fn export_page(&self, org: &OrgId, slice: &mut ExportSlice) -> Result<Vec<ExportItem>, StoreError> {
        let last = slice.chain.last.position;
        let Some(segment) = slice.segment.clone() else {
            let page = Page {
                filter: "chain_seq IS NOT NULL",
                order: "chain_seq",
                segment: None,
                after: slice.after,
                upto: Some(last),
                limit: EXPORT_PAGE,
            };
            let events = self.page(&EVENTS, Some(org), page).await?;
            if let Some(position) = events.iter().filter_map(|e| e.seq).max() {
                slice.after = position;
            }
            return Ok(events.into_iter().map(|e| ExportItem::Event(stored(e))).collect());
        };
        let page = |after| Page {
            filter: "segment_seq IS NOT NULL",
            order: "segment_seq",
            segment: Some(segment.as_str()),
            after,
            upto: Some(last),
            limit: EXPORT_PAGE,
        };
        let rows = self.page(&RESOLUTIONS, Some(org), page(slice.after)).await?;
        let completions = self.page(&COMPLETIONS, Some(org), page(slice.after)).await?;
        // Up to where both pages reach.
        let full =
            |entries: &[Entry]| (entries.len() as i64 == EXPORT_PAGE).then(|| entries.last().and_then(|e| e.seq));
        let limit = match (full(&rows), full(&completions)) {
            (Some(a), Some(b)) => Some(a.min(b).unwrap_or(slice.after)),
            (Some(a), None) | (None, Some(a)) => Some(a.unwrap_or(slice.after)),
            (None, None) => None,
        };
        let mut merged: Vec<Entry> = rows
            .into_iter()
            .chain(completions)
            .filter(|e| limit.is_none_or(|limit| e.seq.unwrap_or(0) <= limit))
            .collect();
        merged.sort_by_key(|e| (e.seq, e.table == COMPLETIONS.table, e.row_seq));
        let positions: Vec<i64> =
            merged.iter().filter(|e| e.table == RESOLUTIONS.table).filter_map(|e| e.seq).collect();
        let mut bound = self.bound_to(org, &segment, &positions, last).await?;
        let mut items = Vec::with_capacity(merged.len());
        for entry in merged {
            let position = entry.seq.unwrap_or(0);
            slice.after = slice.after.max(position);
            if entry.table == RESOLUTIONS.table {
                let completion = bound.remove(&position).map(stored);
                if let Some(completion) = &completion {
                    slice.carried.insert(completion.row_seq);
                }
                items.push(ExportItem::Call(stored(entry), completion));
            } else if !slice.carried.remove(&entry.row_seq) {
                items.push(ExportItem::Completion(stored(entry)));
            }
        }
        Ok(items)
    }

    /// For each of `positions` (resolution rows of `segment`), the first completion of
    /// the chain bound to it that lies after it and no later than `last`.
    async fn bound_to(
        &self,
        org: &OrgId,
        segment: &str,
        positions: &[i64],
        last: i64,
    ) -> Result<HashMap<i64, Entry>, StoreError> {
        let mut found: HashMap<i64, Entry> = HashMap::new();
        let columns = &*crate::chain::COMPLETION_CHAIN_COLUMNS;
        for chunk in positions.chunks(500) {
            let select = format!("SELECT seq, prev_hash, hash, {columns} FROM {}", COMPLETIONS.table);
            let mut sql = on_chain(self.backend(), &select, Some(org), segment);
            sql.push(" AND segment_seq <= ").push_bind(last).push(" AND resolution_seq IN (");
            let mut list = sql.separated(", ");
            for position in chunk {
                list.push_bind(*position);
            }
            sql.push(") ORDER BY segment_seq");
            for row in sql.query()?.fetch_all(self.reader()).await.map_err(map_sqlx)? {
                let entry = crate::chain::entry_of(&row, &COMPLETIONS)?;
                let r = Row::new(&row, COMPLETIONS.table);
                let (Some(resolution), Some(position)) = (r.opt_int("resolution_seq")?, entry.seq) else { continue };
                if position > resolution && !found.contains_key(&resolution) {
                    found.insert(resolution, entry);
                }
            }
        }
        Ok(found)
    }
}

/// Where a slice starts that begins after the first entry of its chain: the stored hash
/// of the entry before it (which the export does not hold), if the store has it.
fn start_at(position: i64, hash: Option<Vec<u8>>) -> ChainStart {
    match hash {
        Some(hash) => ChainStart { position, hash: Some(hex(&hash)), from: StartFrom::Range },
        None => ChainStart { position, hash: None, from: StartFrom::Missing },
    }
}

async fn scalar(mut sql: Sql<'_>, store: &Store) -> Result<Option<i64>, StoreError> {
    sql.query_scalar::<Option<i64>>()?.fetch_one(store.reader()).await.map_err(map_sqlx)
}
