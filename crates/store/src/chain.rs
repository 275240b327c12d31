//! The audit hash chain in the store: links are computed as entries are written, and
//! recomputed by [`Store::verify_audit`].
//!
//! * Lifecycle events: one chain per org, serialized by the write transaction
//!   (`chain_seq` 1, 2, …; SQLite has one writer, PostgreSQL holds the table lock).
//! * Resolution rows and call completions: one chain per (segment, org). Each sidecar's
//!   audit writer owns a [`Segment`] and is its only appender, so appending needs no
//!   cross-node lock and no read of the previous row: the head is in memory.
//!
//! The fields hashed are exactly the values written, in a fixed order (see
//! [`byok_domain::chain`] for the encoding and each kind's fields). After a retention
//! purge — row by row here, or a whole month's partition on PostgreSQL (`partitions.rs`)
//! — an anchor keeps the position and hash of the last purged entry of each chain, so the
//! rest still verifies.

use std::collections::HashMap;
use std::sync::LazyLock;

pub(crate) use byok_domain::chain::Field;
use byok_domain::chain::{
    column_list, completion_fields, hex, link, resolution_fields, ChainHash, Column, COMPLETION, EVENT, GENESIS,
    RESOLUTION,
};
use byok_domain::{CallCompletion, OrgId, ResolutionAudit, Timestamp};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Any;

use crate::error::{map_sqlx, StoreError};
use crate::rows::Row;
use crate::sql::{Separated, Sql};
use crate::store::{Backend, Store};

/// Rows read per page while verifying.
const VERIFY_PAGE: i64 = 5000;

/// A chain's latest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Its position (1 for the first entry).
    pub seq: i64,
    /// Its hash.
    pub hash: ChainHash,
}

impl ChainHead {
    const START: ChainHead = ChainHead { seq: 0, hash: GENESIS };
}

/// One audit writer's segment: its id and the head of its chain for each org.
#[derive(Debug, Clone)]
pub struct Segment {
    id: String,
    heads: HashMap<Option<OrgId>, ChainHead>,
}

impl Segment {
    /// A new segment with a fresh id (a writer starts one per process).
    pub fn new() -> Self {
        Self { id: ulid::Ulid::new().to_string(), heads: HashMap::new() }
    }

    /// The segment id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn next(&mut self, org: Option<OrgId>) -> (i64, ChainHash) {
        let head = self.heads.get(&org).copied().unwrap_or(ChainHead::START);
        (head.seq + 1, head.hash)
    }

    fn advance(&mut self, org: Option<OrgId>, seq: i64, hash: ChainHash) {
        self.heads.insert(org, ChainHead { seq, hash });
    }
}

impl Default for Segment {
    fn default() -> Self {
        Self::new()
    }
}

/// One entry for [`Store::append_audit`], in chain order.
#[derive(Debug, Clone)]
pub enum AuditEntry {
    /// A resolution row.
    Resolution(ResolutionAudit),
    /// A call completion bound to no row: replay pairs it with a row of its call id, org,
    /// segment and credential (as it pairs completions written before bindings existed).
    Completion(CallCompletion),
    /// A call completion bound to its own resolution row, which replay pairs it with
    /// whatever other row shares its call id: `resolution` is that row's position in
    /// this segment's chain of the completion's org (see [`Segment::positions`]).
    BoundCompletion {
        /// The completion.
        completion: CallCompletion,
        /// Its resolution row's position.
        resolution: i64,
    },
}

impl AuditEntry {
    /// The org whose chain the entry extends.
    fn org(&self) -> Option<OrgId> {
        match self {
            AuditEntry::Resolution(row) => row.org_id,
            AuditEntry::Completion(c) | AuditEntry::BoundCompletion { completion: c, .. } => Some(c.org_id),
        }
    }
}

/// Chained columns of a resolution row, in hash order (see [`byok_domain::chain`]).
pub(crate) static RESOLUTION_CHAIN_COLUMNS: LazyLock<String> = LazyLock::new(|| column_list(RESOLUTION));

/// Chained columns of a call completion, in hash order.
pub(crate) static COMPLETION_CHAIN_COLUMNS: LazyLock<String> = LazyLock::new(|| column_list(COMPLETION));

/// Chained columns of a lifecycle event, in hash order.
pub(crate) static EVENT_CHAIN_COLUMNS: LazyLock<String> = LazyLock::new(|| column_list(EVENT));

/// A chained entry ready to insert: its values, position and link.
pub(crate) struct Chained {
    pub(crate) fields: Vec<Field>,
    pub(crate) prev: ChainHash,
    pub(crate) hash: ChainHash,
}

impl Chained {
    /// Bind the entry's values in column order: its fields, then `prev_hash` and `hash`.
    pub(crate) fn push_values<'q>(&'q self, values: &mut Separated<'_, 'q>) {
        for field in &self.fields {
            match field {
                Field::Text(value) => values.push_bind(value.as_deref()),
                Field::Int(value) => values.push_bind(*value),
            };
        }
        values.push_bind(self.prev.as_slice()).push_bind(self.hash.as_slice());
    }
}

/// Link `fields` of `kind` after `prev`.
pub(crate) fn chain(kind: &str, prev: ChainHash, fields: Vec<Field>) -> Chained {
    let hash = link(kind, &prev, &fields);
    Chained { fields, prev, hash }
}

impl Segment {
    /// The position each of `entries` takes in its org's chain of this segment when they
    /// are appended next, in order ([`Store::append_audit`] assigns exactly these).
    pub fn positions(&self, entries: &[AuditEntry]) -> Vec<i64> {
        let mut heads: HashMap<Option<OrgId>, i64> = HashMap::new();
        entries
            .iter()
            .map(|entry| {
                let org = entry.org();
                let head = heads.entry(org).or_insert_with(|| self.heads.get(&org).map_or(0, |h| h.seq));
                *head += 1;
                *head
            })
            .collect()
    }

    /// Number and link `entries` in order; returns the resolution rows and completions
    /// to insert. The segment's heads move only in the copy returned, which the caller
    /// keeps once the transaction has committed.
    pub(crate) fn link_entries(&self, entries: &[AuditEntry]) -> (Segment, Vec<Chained>, Vec<Chained>) {
        let mut next = self.clone();
        let mut rows = Vec::new();
        let mut completions = Vec::new();
        for entry in entries {
            let org = entry.org();
            let (seq, prev) = next.next(org);
            let chained = match entry {
                AuditEntry::Resolution(row) => chain(RESOLUTION, prev, resolution_fields(&next.id, seq, row)),
                AuditEntry::Completion(c) => chain(COMPLETION, prev, completion_fields(&next.id, seq, c, None)),
                AuditEntry::BoundCompletion { completion, resolution } => {
                    chain(COMPLETION, prev, completion_fields(&next.id, seq, completion, Some(*resolution)))
                }
            };
            next.advance(org, seq, chained.hash);
            match entry {
                AuditEntry::Resolution(_) => rows.push(chained),
                AuditEntry::Completion(_) | AuditEntry::BoundCompletion { .. } => completions.push(chained),
            }
        }
        (next, rows, completions)
    }
}

/// What is wrong at the first broken link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The entry's content no longer matches its hash.
    Changed,
    /// Entries are missing before this one.
    Missing,
    /// The entry is out of its chain order.
    Reordered,
    /// The entry was not written by byok (no or duplicate position, or a link to
    /// nothing byok wrote).
    Inserted,
}

/// The first broken link found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BrokenLink {
    /// `events`, or `calls/<segment>` for a writer segment's resolutions and completions.
    pub chain: String,
    /// The entry's position in its chain (`chain_seq` / `segment_seq`).
    pub seq: i64,
    /// The entry's row: `lifecycle_events.seq`, `resolution_audit.seq` or
    /// `call_completions.seq`, with the table.
    pub row: String,
    /// What is wrong.
    pub problem: Problem,
    /// Details for a person.
    pub detail: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    /// Whether every chain verified.
    pub ok: bool,
    /// Entries checked.
    pub checked: u64,
    /// The first broken link, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<BrokenLink>,
}

/// A chain's head as of now (for checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HeadRecord {
    /// `events` or `calls/<segment>`.
    pub chain: String,
    /// Position of the last entry.
    pub seq: i64,
    /// Its hash, hex.
    pub hash: String,
}

/// A chained table: its name and entry kind (which gives its hashed columns).
#[derive(Clone, Copy)]
pub(crate) struct ChainTable {
    pub(crate) table: &'static str,
    pub(crate) kind: &'static str,
}

impl ChainTable {
    /// The hashed columns, in order.
    fn columns(&self) -> &'static [Column] {
        byok_domain::chain::columns(self.kind)
    }

    /// The hashed columns as a SQL column list.
    fn column_list(&self) -> &'static str {
        match self.kind {
            EVENT => &EVENT_CHAIN_COLUMNS,
            RESOLUTION => &RESOLUTION_CHAIN_COLUMNS,
            _ => &COMPLETION_CHAIN_COLUMNS,
        }
    }
}

pub(crate) const EVENTS: ChainTable = ChainTable { table: "lifecycle_events", kind: EVENT };
pub(crate) const RESOLUTIONS: ChainTable = ChainTable { table: "resolution_audit", kind: RESOLUTION };
pub(crate) const COMPLETIONS: ChainTable = ChainTable { table: "call_completions", kind: COMPLETION };

/// Which rows of a chained table to read: those matching `filter`, in `order`, after
/// `after` (and up to `upto`, if given), of `segment` if given, at most `limit`.
pub(crate) struct Page<'a> {
    pub(crate) filter: &'a str,
    pub(crate) order: &'a str,
    pub(crate) segment: Option<&'a str>,
    pub(crate) after: i64,
    pub(crate) upto: Option<i64>,
    pub(crate) limit: i64,
}

impl<'a> Page<'a> {
    /// Up to [`VERIFY_PAGE`] rows matching `filter` after `after`, in `order`.
    fn new(filter: &'a str, order: &'a str, segment: Option<&'a str>, after: i64) -> Self {
        Self { filter, order, segment, after, upto: None, limit: VERIFY_PAGE }
    }
}

/// A chained entry as stored.
pub(crate) struct Entry {
    pub(crate) table: &'static str,
    /// Its row id (`seq`) in its table.
    pub(crate) row_seq: i64,
    /// Its position in its chain.
    pub(crate) seq: Option<i64>,
    /// Its chained columns, in hash order.
    pub(crate) fields: Vec<Field>,
    pub(crate) kind: &'static str,
    pub(crate) prev: Option<Vec<u8>>,
    pub(crate) hash: Option<Vec<u8>>,
}

/// A chained entry from a row that selected `seq, prev_hash, hash` and the chained
/// columns of `source`.
pub(crate) fn entry_of(row: &AnyRow, source: &ChainTable) -> Result<Entry, StoreError> {
    let (table, kind) = (source.table, source.kind);
    let r = Row::new(row, table);
    let fields = read_fields(&r, source.columns())?;
    let seq = match fields.first() {
        Some(Field::Int(seq)) if kind == EVENT => *seq,
        _ => match fields.get(1) {
            Some(Field::Int(seq)) => *seq,
            _ => None,
        },
    };
    Ok(Entry {
        table,
        row_seq: r.int("seq")?,
        seq,
        fields,
        kind,
        prev: r.opt_blob("prev_hash")?,
        hash: r.opt_blob("hash")?,
    })
}

fn read_fields(row: &Row<'_>, columns: &[Column]) -> Result<Vec<Field>, StoreError> {
    columns
        .iter()
        .map(|column| {
            if column.int {
                row.opt_int(column.name).map(Field::Int)
            } else {
                row.opt_text(column.name).map(Field::Text)
            }
        })
        .collect()
}

/// Walks one chain in order and remembers the first break.
struct Walker {
    chain: String,
    expected: ChainHead,
    /// The last row id seen per table: within a chain, rows are written in order.
    last_row: HashMap<&'static str, i64>,
    seen: HashMap<Vec<u8>, i64>,
    checked: u64,
    first_bad: Option<BrokenLink>,
}

impl Walker {
    fn new(chain: String, start: ChainHead) -> Self {
        Self { chain, expected: start, last_row: HashMap::new(), seen: HashMap::new(), checked: 0, first_bad: None }
    }

    fn bad(&mut self, entry: &Entry, seq: i64, problem: Problem, detail: String) {
        if self.first_bad.is_none() {
            self.first_bad = Some(BrokenLink {
                chain: self.chain.clone(),
                seq,
                row: format!("{}.seq = {}", entry.table, entry.row_seq),
                problem,
                detail,
            });
        }
    }

    fn step(&mut self, entry: &Entry) {
        self.checked += 1;
        if self.first_bad.is_some() {
            return;
        }
        let (Some(seq), Some(prev), Some(hash)) = (entry.seq, entry.prev.as_deref(), entry.hash.as_deref()) else {
            let seq = entry.seq.unwrap_or(0);
            self.bad(entry, seq, Problem::Inserted, "the row carries no chain position or hash".into());
            return;
        };
        let Ok(prev_array) = <ChainHash>::try_from(prev) else {
            self.bad(entry, seq, Problem::Changed, "the stored previous hash is malformed".into());
            return;
        };
        let recomputed = link(entry.kind, &prev_array, &entry.fields);
        if recomputed.as_slice() != hash {
            self.bad(entry, seq, Problem::Changed, "the entry's content does not match its hash".into());
            return;
        }
        let expected_seq = self.expected.seq + 1;
        if seq == self.expected.seq || self.seen.contains_key(hash) {
            self.bad(entry, seq, Problem::Inserted, format!("position {seq} appears twice"));
            return;
        }
        if seq > expected_seq {
            self.bad(entry, seq, Problem::Missing, format!("entries {expected_seq}..{} are missing", seq - 1));
            return;
        }
        if prev != self.expected.hash.as_slice() {
            let problem = if self.seen.contains_key(prev) { Problem::Reordered } else { Problem::Inserted };
            self.bad(
                entry,
                seq,
                problem,
                format!("it links to {}, but the entry before it is {}", hex(prev), hex(&self.expected.hash)),
            );
            return;
        }
        if self.last_row.get(entry.table).is_some_and(|last| *last > entry.row_seq) {
            self.bad(entry, seq, Problem::Reordered, "the entry's row comes before an earlier entry's row".into());
            return;
        }
        self.last_row.insert(entry.table, entry.row_seq);
        self.seen.insert(hash.to_vec(), seq);
        self.expected = ChainHead { seq, hash: recomputed };
    }
}

/// `{statement} WHERE org_id = … AND segment = …`: a statement on the entries (or the
/// anchor) of one chain, `org`'s (`None`: entries without an org) in `segment`.
pub(crate) fn on_chain<'q>(backend: Backend, statement: &str, org: Option<&OrgId>, segment: &'q str) -> Sql<'q> {
    let mut sql = Sql::new(backend, format!("{statement} WHERE "));
    sql.push_eq_or_null("org_id", org.map(OrgId::to_string)).push(" AND segment = ").push_bind(segment);
    sql
}

impl Store {
    /// Link and append `entries` (in chain order) for `segment` in ONE transaction (the
    /// resolution rows, the completions and their usage rollup; see `append.rs` for how
    /// each backend writes it); when this returns `Ok`, every entry is durable and the
    /// segment's heads have moved, when it fails nothing of the batch was written.
    pub async fn append_audit(&self, segment: &mut Segment, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (next, rows, completions) = segment.link_entries(entries);
        let batch = crate::append::Batch {
            segment: segment.id.clone(),
            rows,
            completions,
            rollup: crate::usage::rollup_rows(entries),
        };
        self.audit_sink().append(batch).await?;
        *segment = next;
        Ok(())
    }

    pub(crate) async fn anchor(&self, org: Option<&OrgId>, segment: &str) -> Result<ChainHead, StoreError> {
        let mut sql = on_chain(self.backend(), "SELECT last_seq, last_hash FROM audit_anchors", org, segment);
        let row = sql.query()?.fetch_optional(self.reader()).await.map_err(map_sqlx)?;
        match row {
            None => Ok(ChainHead::START),
            Some(row) => {
                let r = Row::new(&row, "audit_anchors");
                Ok(ChainHead { seq: r.int("last_seq")?, hash: r.chain_hash("last_hash")? })
            }
        }
    }

    /// The segments with entries (or anchors) for `org`.
    ///
    /// Found by skipping through the chain index `(org_id, segment, segment_seq)`: one
    /// probe per segment (per partition on PostgreSQL), where `SELECT DISTINCT` would read
    /// every entry of the org — this runs on every purge and every verify.
    pub(crate) async fn segments(&self, org: Option<&OrgId>) -> Result<Vec<String>, StoreError> {
        let mut segments = std::collections::BTreeSet::new();
        for table in ["resolution_audit", "call_completions"] {
            let mut sql = Sql::new(
                self.backend(),
                format!("WITH RECURSIVE found (segment) AS ( SELECT (SELECT segment FROM {table} WHERE "),
            );
            sql.push_eq_or_null("org_id", org.map(OrgId::to_string));
            sql.push(format_args!(
                " AND segment IS NOT NULL ORDER BY segment LIMIT 1) \
                 UNION ALL \
                   SELECT (SELECT t.segment FROM {table} AS t WHERE "
            ));
            sql.push_eq_or_null("t.org_id", org.map(OrgId::to_string));
            sql.push(
                " AND t.segment > found.segment ORDER BY t.segment LIMIT 1) \
                   FROM found WHERE found.segment IS NOT NULL \
                 ) \
                 SELECT segment FROM found WHERE segment IS NOT NULL",
            );
            segments.extend(sql.query_scalar::<String>()?.fetch_all(self.reader()).await.map_err(map_sqlx)?);
        }
        let mut sql = Sql::new(self.backend(), "SELECT segment FROM audit_anchors WHERE ");
        sql.push_eq_or_null("org_id", org.map(OrgId::to_string));
        segments.extend(sql.query_scalar::<String>()?.fetch_all(self.reader()).await.map_err(map_sqlx)?);
        Ok(segments.into_iter().collect())
    }

    pub(crate) async fn page(
        &self,
        source: &ChainTable,
        org: Option<&OrgId>,
        page: Page<'_>,
    ) -> Result<Vec<Entry>, StoreError> {
        let (table, columns) = (source.table, source.column_list());
        let Page { filter: chain_filter, order, segment, after, upto, limit } = page;
        let mut sql = Sql::new(self.backend(), format!("SELECT seq, prev_hash, hash, {columns} FROM {table} WHERE "));
        sql.push_eq_or_null("org_id", org.map(OrgId::to_string));
        if let Some(segment) = segment {
            sql.push(" AND segment = ").push_bind(segment);
        }
        sql.push(format_args!(" AND {chain_filter} AND {order} > ")).push_bind(after);
        if let Some(upto) = upto {
            sql.push(format_args!(" AND {order} <= ")).push_bind(upto);
        }
        sql.push(format_args!(" ORDER BY {order} LIMIT ")).push_bind(limit);
        let rows = sql.query()?.fetch_all(self.reader()).await.map_err(map_sqlx)?;
        rows.iter().map(|row| entry_of(row, source)).collect()
    }

    /// Recompute every chain of `org` (`None`: entries no org could be established
    /// for) and report the first broken link.
    pub async fn verify_audit(&self, org: Option<&OrgId>) -> Result<VerifyReport, StoreError> {
        let mut checked = 0;
        // Lifecycle events.
        if let Some(org_id) = org {
            let mut walker = Walker::new("events".into(), ChainHead::START);
            let unchained = self.page(&EVENTS, Some(org_id), Page::new("chain_seq IS NULL", "seq", None, 0)).await?;
            let mut after = 0;
            loop {
                let page = Page::new("chain_seq IS NOT NULL", "chain_seq", None, after);
                let entries = self.page(&EVENTS, Some(org_id), page).await?;
                let Some(last) = entries.last() else { break };
                after = last.seq.unwrap_or(i64::MAX);
                for entry in &entries {
                    walker.step(entry);
                }
            }
            if let Some(entry) = unchained.first() {
                walker.checked += 1;
                walker.bad(entry, 0, Problem::Inserted, "an event carries no chain position".into());
            }
            checked += walker.checked;
            if walker.first_bad.is_some() {
                return Ok(VerifyReport { ok: false, checked, first_bad: walker.first_bad });
            }
        }
        // Resolution rows without a segment were not written by an audit writer.
        for source in [&RESOLUTIONS, &COMPLETIONS] {
            let stray = self.page(source, org, Page::new("segment IS NULL", "seq", None, 0)).await?;
            if let Some(entry) = stray.first() {
                let mut walker = Walker::new("calls".into(), ChainHead::START);
                walker.bad(entry, 0, Problem::Inserted, "the row carries no chain position".into());
                return Ok(VerifyReport { ok: false, checked: checked + 1, first_bad: walker.first_bad });
            }
        }
        for segment in self.segments(org).await? {
            let start = self.anchor(org, &segment).await?;
            let mut walker = Walker::new(format!("calls/{segment}"), start);
            let mut after = (start.seq, start.seq);
            loop {
                let page = |after| Page::new("segment_seq IS NOT NULL", "segment_seq", Some(segment.as_str()), after);
                let rows = self.page(&RESOLUTIONS, org, page(after.0)).await?;
                let completions = self.page(&COMPLETIONS, org, page(after.1)).await?;
                if rows.is_empty() && completions.is_empty() {
                    break;
                }
                // Merge the two pages by position, up to where both pages reach.
                let limit = match (rows.len() as i64 == VERIFY_PAGE, completions.len() as i64 == VERIFY_PAGE) {
                    (true, true) => rows.last().and_then(|r| r.seq).min(completions.last().and_then(|c| c.seq)),
                    (true, false) => rows.last().and_then(|r| r.seq),
                    (false, true) => completions.last().and_then(|c| c.seq),
                    (false, false) => None,
                };
                let mut merged: Vec<&Entry> = rows.iter().chain(completions.iter()).collect();
                merged.sort_by_key(|e| (e.seq, e.row_seq));
                for entry in merged.into_iter().filter(|e| limit.is_none_or(|l| e.seq.unwrap_or(0) <= l)) {
                    walker.step(entry);
                    if entry.table == "resolution_audit" {
                        after.0 = after.0.max(entry.seq.unwrap_or(0));
                    } else {
                        after.1 = after.1.max(entry.seq.unwrap_or(0));
                    }
                }
                if limit.is_none() {
                    break;
                }
            }
            checked += walker.checked;
            if walker.first_bad.is_some() {
                return Ok(VerifyReport { ok: false, checked, first_bad: walker.first_bad });
            }
        }
        Ok(VerifyReport { ok: true, checked, first_bad: None })
    }

    /// The head of every chain of `org`, for a checkpoint.
    pub async fn chain_heads(&self, org: Option<&OrgId>) -> Result<Vec<HeadRecord>, StoreError> {
        let mut heads = Vec::new();
        if let Some(org_id) = org {
            let row = sqlx::query::<Any>(
                "SELECT chain_seq, hash FROM lifecycle_events WHERE org_id = $1 AND chain_seq IS NOT NULL \
                 ORDER BY chain_seq DESC LIMIT 1",
            )
            .bind(org_id.to_string())
            .fetch_optional(self.reader())
            .await
            .map_err(map_sqlx)?;
            if let Some(row) = row {
                let r = Row::new(&row, "lifecycle_events");
                heads.push(HeadRecord {
                    chain: "events".into(),
                    seq: r.opt_int("chain_seq")?.unwrap_or(0),
                    hash: hex(&r.opt_blob("hash")?.unwrap_or_default()),
                });
            }
        }
        for segment in self.segments(org).await? {
            let mut best = self.anchor(org, &segment).await?;
            for table in ["resolution_audit", "call_completions"] {
                let select = format!("SELECT segment_seq, hash FROM {table}");
                let mut sql = on_chain(self.backend(), &select, org, &segment);
                sql.push(" ORDER BY segment_seq DESC LIMIT 1");
                if let Some(row) = sql.query()?.fetch_optional(self.reader()).await.map_err(map_sqlx)? {
                    let r = Row::new(&row, table);
                    let (seq, hash) = (r.opt_int("segment_seq")?, r.opt_blob("hash")?);
                    if let (Some(seq), Some(hash)) = (seq, hash.and_then(|h| ChainHash::try_from(h.as_slice()).ok())) {
                        if seq > best.seq {
                            best = ChainHead { seq, hash };
                        }
                    }
                }
            }
            heads.push(HeadRecord { chain: format!("calls/{segment}"), seq: best.seq, hash: hex(&best.hash) });
        }
        Ok(heads)
    }

    /// Whether the entry at `head` still exists with the same hash (or lies before a
    /// purge anchor that covers it).
    pub async fn head_intact(&self, org: Option<&OrgId>, head: &HeadRecord) -> Result<bool, StoreError> {
        let (table, order, segment) = match head.chain.strip_prefix("calls/") {
            Some(segment) => ("resolution_audit", "segment_seq", Some(segment.to_owned())),
            None => ("lifecycle_events", "chain_seq", None),
        };
        if let Some(segment) = &segment {
            let anchor = self.anchor(org, segment).await?;
            if anchor.seq > head.seq || (anchor.seq == head.seq && hex(&anchor.hash) == head.hash) {
                return Ok(true);
            }
        }
        let tables: &[&str] = if segment.is_some() { &[table, "call_completions"] } else { &[table] };
        for table in tables {
            let mut sql = Sql::new(self.backend(), format!("SELECT hash FROM {table} WHERE "));
            sql.push_eq_or_null("org_id", org.map(OrgId::to_string));
            if let Some(segment) = &segment {
                sql.push(" AND segment = ").push_bind(segment.as_str());
            }
            sql.push(format_args!(" AND {order} = ")).push_bind(head.seq);
            let found = sql.query_scalar::<Option<Vec<u8>>>()?.fetch_all(self.reader()).await.map_err(map_sqlx)?;
            if found.into_iter().flatten().any(|hash| hex(&hash) == head.hash) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Delete the org's resolution rows and completions older than `before`, keeping
    /// every chain verifiable: per segment, the longest prefix whose entries are all
    /// older than `before` is removed and an anchor records the last removed entry.
    /// Lifecycle events are never purged. Returns how many entries were removed.
    ///
    /// This is the row-wise purge. On PostgreSQL, months that every org's retention has
    /// passed are dropped whole first ([`Store::drop_expired_audit_partitions`], with the
    /// same anchors); this removes what an org with a shorter retention than the longest
    /// must lose before its month goes.
    pub async fn purge_audit(&self, org: Option<&OrgId>, before: Timestamp) -> Result<u64, StoreError> {
        let mut removed = 0u64;
        for segment in self.segments(org).await? {
            let mut tx = self.begin_write().await?;
            if self.backend() == crate::store::Backend::Postgres {
                // Never beside a month drop (which moves anchors too); purges share it.
                sqlx::query::<Any>("SELECT pg_advisory_xact_lock_shared(CAST($1 AS BIGINT))")
                    .bind(crate::partitions::RETENTION_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
            }
            // The first position that must stay: the oldest entry at or after `before`.
            let mut keep_from: Option<i64> = None;
            let mut last: i64 = 0;
            for table in ["resolution_audit", "call_completions"] {
                // Two plain MIN/MAX queries: each is one walk along the chain index (on
                // PostgreSQL the first skips the months before `before`); a single pass
                // computing both would read every entry of the chain.
                let select = format!("SELECT MIN(segment_seq) FROM {table}");
                let mut keep = on_chain(self.backend(), &select, org, &segment);
                keep.push(" AND at_us >= ").push_bind(before.as_micros());
                let keep = keep.query_scalar::<Option<i64>>()?.fetch_one(&mut *tx).await.map_err(map_sqlx)?;
                let select = format!("SELECT MAX(segment_seq) FROM {table}");
                let mut table_last = on_chain(self.backend(), &select, org, &segment);
                let table_last =
                    table_last.query_scalar::<Option<i64>>()?.fetch_one(&mut *tx).await.map_err(map_sqlx)?;
                if let Some(keep) = keep {
                    keep_from = Some(keep_from.map_or(keep, |k| k.min(keep)));
                }
                last = last.max(table_last.unwrap_or(0));
            }
            let cut = keep_from.map_or(last, |k| k - 1);
            let anchor = self.anchor(org, &segment).await?;
            if cut <= anchor.seq {
                tx.rollback().await.map_err(map_sqlx)?;
                continue;
            }
            // The hash of the entry at `cut` becomes the anchor.
            let mut cut_hash: Option<Vec<u8>> = None;
            for table in ["resolution_audit", "call_completions"] {
                let mut sql = on_chain(self.backend(), &format!("SELECT hash FROM {table}"), org, &segment);
                sql.push(" AND segment_seq = ").push_bind(cut);
                let query = sql.query_scalar::<Option<Vec<u8>>>()?;
                if let Some(hash) = query.fetch_optional(&mut *tx).await.map_err(map_sqlx)?.flatten() {
                    cut_hash = Some(hash);
                }
            }
            let Some(cut_hash) = cut_hash else {
                tx.rollback().await.map_err(map_sqlx)?;
                return Err(StoreError::Corrupt(format!(
                    "audit segment {segment}: entry {cut} is missing; verify the audit"
                )));
            };
            for table in ["resolution_audit", "call_completions"] {
                let mut sql = on_chain(self.backend(), &format!("DELETE FROM {table}"), org, &segment);
                sql.push(" AND segment_seq <= ").push_bind(cut);
                removed += sql.query()?.execute(&mut *tx).await.map_err(map_sqlx)?.rows_affected();
            }
            let mut delete = on_chain(self.backend(), "DELETE FROM audit_anchors", org, &segment);
            delete.query()?.execute(&mut *tx).await.map_err(map_sqlx)?;
            sqlx::query::<Any>(
                "INSERT INTO audit_anchors (org_id, segment, last_seq, last_hash, purged_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(org.map(|o| o.to_string()))
            .bind(segment.clone())
            .bind(cut)
            .bind(cut_hash)
            .bind(Timestamp::now().as_micros())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            tx.commit().await.map_err(map_sqlx)?;
        }
        Ok(removed)
    }
}
