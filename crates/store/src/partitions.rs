//! PostgreSQL: the audit tables partitioned by month, partitions made ahead of time and
//! dropped whole once every org's retention has passed them.
//!
//! Layout (migration 0010): `resolution_audit` and `call_completions` are
//! RANGE-partitioned on `at_us`. `<table>_pYYYY_MM` holds one calendar month (UTC),
//! `[first µs of the month, first µs of the next)`; `<table>_default` holds whatever no
//! month covers, so an insert never fails for want of a partition. SQLite stays
//! unpartitioned: every function here does nothing there.
//!
//! * **Ahead of time.** [`Store::ensure_audit_partitions`] makes the partitions of the
//!   current month and the [`MONTHS_AHEAD`] next ones; the store calls it on open and the
//!   retention job ([`Store::maintain_audit_partitions`]) every time it runs. A partition
//!   is made as a plain table and then attached, which locks the parent only in
//!   `SHARE UPDATE EXCLUSIVE` mode (inserts and reads go on); rows the DEFAULT partition
//!   caught for that month move into it first.
//! * **Dropped whole.** [`Store::drop_expired_audit_partitions`] drops the oldest month —
//!   both tables' partitions of it, in one transaction — when every org with an entry in
//!   it has a retention cut at or after the month's end. A call chain (writer segment,
//!   org) loses a prefix, never a piece from its middle: for every chain with entries in
//!   the month the transaction records the anchor (position and hash of its last entry in
//!   the month) and deletes, row by row, the chain's entries up to that position that lie
//!   *outside* the month (an entry written late, or a clock that went back across the
//!   month's end) — and only if those are older than their org's cut too. Then the rest
//!   of each chain verifies from its anchor, exactly as after a row-wise purge. A month is
//!   *held* (kept, and the reason reported) while it has an entry of an org whose cut is
//!   before the month's end, of an org with no known retention, or a straggler an org
//!   must keep; newer months are then kept too. Orgs with a shorter retention than the
//!   longest still lose their entries row by row ([`Store::purge_audit`]).
//!
//! Several nodes run the same job: transaction-level advisory locks let one of them make
//! partitions at a time and keep a month drop apart from every row-wise purge (which
//! holds the retention lock shared), and every lock is taken with a short
//! `lock_timeout`, so a maintenance step waits at most that long for the audit writers
//! (and the writers queue behind it at most that long) before it gives up until the
//! next run (`busy`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use byok_domain::{OrgId, Timestamp};
use serde::Serialize;
use sqlx::{Any, Transaction};

use crate::error::{map_sqlx, StoreError};
use crate::rows::Row;
use crate::sql::Sql;
use crate::store::{Backend, Store};

/// Months after the current one whose partitions are made ahead of time.
pub const MONTHS_AHEAD: u32 = 2;

/// The partitioned tables, which are dropped month by month together.
const TABLES: [&str; 2] = ["resolution_audit", "call_completions"];

/// How long a maintenance step waits for a lock before it gives up until the next run.
const LOCK_TIMEOUT: &str = "3s";

/// The advisory lock that lets one node at a time make partitions.
const CREATE_LOCK: i64 = 0x6279_6f6b_5061_7274;

/// The advisory lock between retention steps: a month drop holds it exclusively, every
/// row-wise purge transaction ([`Store::purge_audit`]) shared, so the two never
/// interleave (a purge that read an anchor before a drop moved it could otherwise move it
/// back).
pub(crate) const RETENTION_LOCK: i64 = 0x6279_6f6b_5265_746e;

/// Chains per statement when anchors are read and written and stragglers looked for.
const CHAINS_PER_STATEMENT: usize = 2000;

const DAY_US: i64 = 86_400_000_000;

/// A calendar month (UTC): the unit of partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AuditMonth {
    year: i32,
    month: u32,
}

impl AuditMonth {
    /// The month `at` falls in.
    pub fn containing(at: Timestamp) -> Self {
        Self::containing_us(at.as_micros())
    }

    fn containing_us(at_us: i64) -> Self {
        let (year, month, _) = civil_from_days(at_us.div_euclid(DAY_US));
        Self { year, month }
    }

    /// `year`-`month` (1–12); `None` for a month outside 1–12.
    pub fn new(year: i32, month: u32) -> Option<Self> {
        (1..=12).contains(&month).then_some(Self { year, month })
    }

    /// Its first microsecond.
    pub fn start_us(self) -> i64 {
        days_from_civil(self.year, self.month, 1).saturating_mul(DAY_US)
    }

    /// The first microsecond of the next month (the partition's exclusive upper bound).
    pub fn end_us(self) -> i64 {
        self.next().start_us()
    }

    /// The month after it.
    pub fn next(self) -> Self {
        match self.month {
            12 => Self { year: self.year.saturating_add(1), month: 1 },
            m => Self { year: self.year, month: m + 1 },
        }
    }

    /// The name of `table`'s partition for this month: `<table>_pYYYY_MM`.
    pub fn partition(self, table: &str) -> String {
        format!("{table}_p{:04}_{:02}", self.year, self.month)
    }

    /// The month of a partition of `table` named by [`partition`](Self::partition).
    fn of_partition(table: &str, name: &str) -> Option<Self> {
        let rest = name.strip_prefix(table)?.strip_prefix("_p")?;
        let (year, month) = rest.split_once('_')?;
        if year.len() != 4 || month.len() != 2 || !year.bytes().chain(month.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::new(year.parse().ok()?, month.parse().ok()?)
    }

    /// Whether the migration and the store make a partition for it (1970 to 2099):
    /// anything else goes to the DEFAULT partition.
    fn partitioned(self) -> bool {
        (1970..2100).contains(&self.year)
    }
}

impl fmt::Display for AuditMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // In range for any i64 microsecond timestamp divided into days.
    (i32::try_from(year).unwrap_or(i32::MAX), month as u32, day as u32)
}

/// Each org's retention cut: its entries older than the cut may be removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionCuts {
    /// The cut of each org. An org with entries but no cut here holds every partition
    /// its entries are in (nothing is dropped for want of a known retention).
    pub orgs: HashMap<OrgId, Timestamp>,
    /// The cut of entries no org could be established for; `None` holds them.
    pub no_org: Option<Timestamp>,
}

impl RetentionCuts {
    /// The cut for a chain's org as stored (`None`: no org), or why there is none.
    fn cut(&self, org: Option<&str>) -> Result<i64, String> {
        match org {
            None => self.no_org.map(|t| t.as_micros()).ok_or_else(|| "entries without an org have no retention".into()),
            Some(text) => text
                .parse::<OrgId>()
                .ok()
                .and_then(|id| self.orgs.get(&id))
                .map(|t| t.as_micros())
                .ok_or_else(|| format!("org {} has no known retention", crate::error::clip(text))),
        }
    }

    /// The latest cut of all.
    fn latest(&self) -> Option<i64> {
        self.orgs.values().chain(self.no_org.iter()).map(|t| t.as_micros()).max()
    }
}

/// One month dropped from both audit tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroppedMonth {
    /// The month.
    pub month: AuditMonth,
    /// The partitions dropped.
    pub partitions: Vec<String>,
    /// Chain entries removed, per org (`None`: entries without an org): the positions
    /// from each chain's previous anchor up to its new one.
    pub removed: BTreeMap<Option<OrgId>, u64>,
    /// Of those, entries that lay outside the month (removed row by row with it).
    pub stragglers: u64,
    /// Chain anchors written or moved.
    pub anchors: u64,
}

/// What a partition maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// Partitions made (names).
    pub created: Vec<String>,
    /// Months dropped, oldest first.
    pub dropped: Vec<DroppedMonth>,
    /// Why the oldest month that some retention has passed was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Another node was maintaining the partitions, or a lock was not granted within the
    /// timeout: the rest waits for the next run.
    pub busy: bool,
}

impl PartitionReport {
    fn merge(&mut self, other: PartitionReport) {
        self.created.extend(other.created);
        self.dropped.extend(other.dropped);
        self.held = self.held.take().or(other.held);
        self.busy |= other.busy;
    }
}

/// Why a maintenance step stopped.
enum Fail {
    /// A lock was not granted in time, or a deadlock was broken: try again later.
    Busy,
    Store(StoreError),
}

impl From<sqlx::Error> for Fail {
    fn from(err: sqlx::Error) -> Self {
        // 55P03 lock_not_available (lock_timeout), 40P01 deadlock_detected.
        match &err {
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("55P03" | "40P01")) => Fail::Busy,
            _ => Fail::Store(map_sqlx(err)),
        }
    }
}

impl From<StoreError> for Fail {
    fn from(err: StoreError) -> Self {
        Fail::Store(err)
    }
}

/// What happened to one month.
enum MonthOutcome {
    Dropped(DroppedMonth),
    Held(String),
    Busy,
}

/// A chain with entries in a month: its org as stored and its writer segment.
type ChainKey = (Option<String>, String);

/// Where a chain's entries in the month end.
struct ChainEnd {
    seq: i64,
    hash: Vec<u8>,
}

impl Store {
    /// PostgreSQL: make the audit partitions of the month of `now` and the
    /// [`MONTHS_AHEAD`] next months where they are missing (and the DEFAULT partitions);
    /// idempotent. SQLite: nothing.
    pub async fn ensure_audit_partitions(&self, now: Timestamp) -> Result<PartitionReport, StoreError> {
        let mut report = PartitionReport::default();
        if self.backend() != Backend::Postgres {
            return Ok(report);
        }
        let mut months = vec![AuditMonth::containing(now)];
        for _ in 0..MONTHS_AHEAD {
            let last = months[months.len() - 1];
            months.push(last.next());
        }
        months.retain(|m| m.partitioned());
        // Most runs find everything in place and need no lock at all.
        let mut missing = false;
        for table in TABLES {
            let existing = self.partition_names(table).await?;
            missing |= !existing.contains(&format!("{table}_default"))
                || months.iter().any(|m| !existing.contains(&m.partition(table)));
        }
        if !missing {
            return Ok(report);
        }
        match self.create_partitions(&months).await {
            Ok(Some(created)) => report.created = created,
            Ok(None) | Err(Fail::Busy) => report.busy = true,
            Err(Fail::Store(err)) => return Err(err),
        }
        Ok(report)
    }

    /// The partitions of `table` (names), as attached now.
    async fn partition_names(&self, table: &str) -> Result<BTreeSet<String>, StoreError> {
        let sql = format!(
            "SELECT CAST(c.relname AS TEXT) FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid \
             WHERE i.inhparent = CAST('{table}' AS regclass)"
        );
        let names = sqlx::query_scalar::<Any, String>(&sql).fetch_all(self.reader()).await.map_err(map_sqlx)?;
        Ok(names.into_iter().collect())
    }

    /// Begin a maintenance transaction with the lock timeout set and the advisory lock
    /// `lock` held exclusively: taken if free (`None` when another node holds it) for
    /// [`CREATE_LOCK`]; waited for (within the lock timeout, as row-wise purges finish)
    /// for [`RETENTION_LOCK`].
    async fn begin_maintenance(&self, lock: i64) -> Result<Option<Transaction<'static, Any>>, Fail> {
        let mut tx = self.writer().begin().await?;
        sqlx::query::<Any>(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).execute(&mut *tx).await?;
        if lock == RETENTION_LOCK {
            sqlx::query::<Any>("SELECT pg_advisory_xact_lock(CAST($1 AS BIGINT))").bind(lock).execute(&mut *tx).await?;
            return Ok(Some(tx));
        }
        let locked = sqlx::query_scalar::<Any, bool>("SELECT pg_try_advisory_xact_lock(CAST($1 AS BIGINT))")
            .bind(lock)
            .fetch_one(&mut *tx)
            .await?;
        Ok(locked.then_some(tx))
    }

    async fn create_partitions(&self, months: &[AuditMonth]) -> Result<Option<Vec<String>>, Fail> {
        let Some(mut tx) = self.begin_maintenance(CREATE_LOCK).await? else { return Ok(None) };
        let mut created = Vec::new();
        for table in TABLES {
            let existing = partition_names_in(&mut tx, table).await?;
            let default = format!("{table}_default");
            if !existing.contains(&default) {
                sqlx::query::<Any>(&format!("CREATE TABLE {default} PARTITION OF {table} DEFAULT"))
                    .execute(&mut *tx)
                    .await?;
                created.push(default.clone());
            }
            let columns = table_columns(&mut tx, table).await?;
            for month in months {
                let name = month.partition(table);
                if existing.contains(&name) {
                    continue;
                }
                let (lo, hi) = (month.start_us(), month.end_us());
                // A plain table, attached afterwards: ATTACH locks the parent in SHARE
                // UPDATE EXCLUSIVE mode only, where CREATE TABLE … PARTITION OF would stop
                // every insert until the end of the transaction.
                sqlx::query::<Any>(&format!("CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)"))
                    .execute(&mut *tx)
                    .await?;
                // Rows the DEFAULT partition caught for this month move over first (ATTACH
                // refuses while DEFAULT holds rows of the new range).
                sqlx::query::<Any>(&format!(
                    "WITH moved AS (DELETE FROM {default} WHERE at_us >= {lo} AND at_us < {hi} RETURNING {columns}) \
                     INSERT INTO {name} ({columns}) SELECT {columns} FROM moved"
                ))
                .execute(&mut *tx)
                .await?;
                sqlx::query::<Any>(&format!(
                    "ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
                ))
                .execute(&mut *tx)
                .await?;
                created.push(name);
            }
        }
        tx.commit().await?;
        if !created.is_empty() {
            tracing::info!(partitions = ?created, "created audit partitions");
        }
        Ok(Some(created))
    }

    /// PostgreSQL: drop, oldest first, every month of the audit tables that all retention
    /// cuts in `cuts` have passed (see the module documentation), writing the anchors
    /// that keep the rest of every chain verifiable in the same transaction. SQLite:
    /// nothing (row-wise purges do it all).
    pub async fn drop_expired_audit_partitions(&self, cuts: &RetentionCuts) -> Result<PartitionReport, StoreError> {
        let mut report = PartitionReport::default();
        if self.backend() != Backend::Postgres {
            return Ok(report);
        }
        let Some(latest) = cuts.latest() else { return Ok(report) };
        let mut months: BTreeMap<AuditMonth, Vec<String>> = BTreeMap::new();
        for table in TABLES {
            for name in self.partition_names(table).await? {
                if let Some(month) = AuditMonth::of_partition(table, &name) {
                    months.entry(month).or_default().push(name);
                }
            }
        }
        for (month, partitions) in months {
            if month.end_us() > latest {
                break;
            }
            match self.drop_month(month, &partitions, cuts).await {
                Ok(MonthOutcome::Dropped(dropped)) => {
                    tracing::info!(month = %month, partitions = ?dropped.partitions, anchors = dropped.anchors,
                        stragglers = dropped.stragglers, "dropped an audit month past every retention");
                    report.dropped.push(dropped);
                }
                Ok(MonthOutcome::Held(why)) => {
                    report.held = Some(format!("audit month {month} is kept: {why}"));
                    break;
                }
                Ok(MonthOutcome::Busy) | Err(Fail::Busy) => {
                    report.busy = true;
                    break;
                }
                Err(Fail::Store(err)) => return Err(err),
            }
        }
        Ok(report)
    }

    /// [`ensure_audit_partitions`](Self::ensure_audit_partitions) for `now`, then
    /// [`drop_expired_audit_partitions`](Self::drop_expired_audit_partitions): what the
    /// periodic retention job runs before the row-wise purges.
    pub async fn maintain_audit_partitions(
        &self,
        now: Timestamp,
        cuts: &RetentionCuts,
    ) -> Result<PartitionReport, StoreError> {
        let mut report = self.ensure_audit_partitions(now).await?;
        report.merge(self.drop_expired_audit_partitions(cuts).await?);
        Ok(report)
    }

    /// The partitions of the audit tables, per table (PostgreSQL; empty on SQLite).
    pub async fn audit_partitions(&self) -> Result<BTreeMap<&'static str, Vec<String>>, StoreError> {
        let mut out = BTreeMap::new();
        if self.backend() == Backend::Postgres {
            for table in TABLES {
                out.insert(table, self.partition_names(table).await?.into_iter().collect());
            }
        }
        Ok(out)
    }

    async fn drop_month(
        &self,
        month: AuditMonth,
        partitions: &[String],
        cuts: &RetentionCuts,
    ) -> Result<MonthOutcome, Fail> {
        let (lo, hi) = (month.start_us(), month.end_us());
        let Some(mut tx) = self.begin_maintenance(RETENTION_LOCK).await? else { return Ok(MonthOutcome::Busy) };
        // Nothing is written into the month while it is examined (nothing should be: it
        // ended before every retention cut); inserts into other months go on.
        sqlx::query::<Any>(&format!("LOCK TABLE {} IN SHARE MODE", partitions.join(", "))).execute(&mut *tx).await?;

        // Every chain with entries in the month, and its last position there.
        let mut chains: BTreeMap<ChainKey, ChainEnd> = BTreeMap::new();
        for partition in partitions {
            for (key, end) in chain_ends(&mut tx, partition).await? {
                match chains.get(&key) {
                    Some(known) if known.seq >= end.seq => {}
                    _ => {
                        chains.insert(key, end);
                    }
                }
            }
        }
        let mut org_cuts: HashMap<Option<String>, i64> = HashMap::new();
        for (org, _) in chains.keys() {
            if org_cuts.contains_key(org) {
                continue;
            }
            let cut = match cuts.cut(org.as_deref()) {
                Ok(cut) => cut,
                Err(why) => return Ok(MonthOutcome::Held(why)),
            };
            if cut < hi {
                let who = org.as_deref().map_or_else(|| "entries without an org".to_owned(), |o| format!("org {o}"));
                let until = Timestamp::from_micros(cut).map_or_else(|| cut.to_string(), |t| t.to_rfc3339());
                return Ok(MonthOutcome::Held(format!("{who}: entries from {until} on must be kept")));
            }
            org_cuts.insert(org.clone(), cut);
        }
        let keys: Vec<(&ChainKey, i64)> = chains.iter().map(|(key, end)| (key, end.seq)).collect();

        // Entries of those chains up to their last position in the month, outside it.
        let mut stragglers: Vec<(ChainKey, u64)> = Vec::new();
        for table in TABLES {
            for (key, count, newest) in find_stragglers(&mut tx, table, &keys, lo, hi).await? {
                let cut = org_cuts.get(&key.0).copied().unwrap_or(i64::MIN);
                if newest >= cut {
                    return Ok(MonthOutcome::Held(format!(
                        "chain {} of {} has an entry written outside the month that its org keeps",
                        key.1,
                        key.0.as_deref().unwrap_or("no org")
                    )));
                }
                stragglers.push((key, count));
            }
        }
        // Anchors: each chain resumes after its last entry in the month.
        let previous = previous_anchors(&mut tx, &keys).await?;
        let now = Timestamp::now().as_micros();
        let mut removed: BTreeMap<Option<OrgId>, u64> = BTreeMap::new();
        let mut moved: Vec<(&ChainKey, &ChainEnd)> = Vec::new();
        for (key, end) in &chains {
            let before = previous.get(key).copied().unwrap_or(0);
            if end.seq <= before {
                continue;
            }
            let org = match &key.0 {
                Some(text) => Some(
                    text.parse::<OrgId>()
                        .map_err(|e| StoreError::Corrupt(format!("audit org id {}: {e}", crate::error::clip(text))))?,
                ),
                None => None,
            };
            *removed.entry(org).or_default() += u64::try_from(end.seq - before).unwrap_or(0);
            moved.push((key, end));
        }
        for chunk in moved.chunks(CHAINS_PER_STATEMENT) {
            let json = serde_json::Value::Array(
                chunk
                    .iter()
                    .map(|((org, segment), end)| {
                        serde_json::json!({ "org_id": org, "segment": segment, "last_seq": end.seq,
                            "last_hash": byok_crypto::chain::hex(&end.hash) })
                    })
                    .collect(),
            );
            sqlx::query::<Any>(
                "INSERT INTO audit_anchors (org_id, segment, last_seq, last_hash, purged_at) \
                 SELECT c.org_id, c.segment, c.last_seq, decode(c.last_hash, 'hex'), CAST($2 AS BIGINT) \
                 FROM json_to_recordset(CAST($1 AS json)) AS c(org_id TEXT, segment TEXT, last_seq BIGINT, last_hash TEXT) \
                 ON CONFLICT ((COALESCE(org_id, '')), segment) DO UPDATE SET last_seq = EXCLUDED.last_seq, \
                 last_hash = EXCLUDED.last_hash, purged_at = EXCLUDED.purged_at \
                 WHERE audit_anchors.last_seq < EXCLUDED.last_seq",
            )
            .bind(json.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // The stragglers go row by row; the month goes whole.
        let mut straggler_rows = 0;
        for ((org, segment), _) in &stragglers {
            let Some(end) = chains.get(&(org.clone(), segment.clone())) else { continue };
            for table in TABLES {
                let mut sql = Sql::new(self.backend(), format!("DELETE FROM {table} WHERE "));
                sql.push_eq_or_null("org_id", org.as_deref()).push(" AND segment = ").push_bind(segment.as_str());
                sql.push(" AND segment_seq <= ").push_bind(end.seq);
                sql.push(format_args!(" AND (at_us < {lo} OR at_us >= {hi})"));
                straggler_rows += sql.query()?.execute(&mut *tx).await?.rows_affected();
            }
        }
        sqlx::query::<Any>(&format!("DROP TABLE {}", partitions.join(", "))).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(MonthOutcome::Dropped(DroppedMonth {
            month,
            partitions: partitions.to_vec(),
            removed,
            stragglers: straggler_rows,
            anchors: moved.len() as u64,
        }))
    }
}

/// The partitions of `table`, inside a transaction.
async fn partition_names_in(tx: &mut Transaction<'static, Any>, table: &str) -> Result<BTreeSet<String>, Fail> {
    let sql = format!(
        "SELECT CAST(c.relname AS TEXT) FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid \
         WHERE i.inhparent = CAST('{table}' AS regclass)"
    );
    Ok(sqlx::query_scalar::<Any, String>(&sql).fetch_all(&mut **tx).await?.into_iter().collect())
}

/// `table`'s columns, in order, comma-separated.
async fn table_columns(tx: &mut Transaction<'static, Any>, table: &str) -> Result<String, Fail> {
    let sql = format!(
        "SELECT CAST(attname AS TEXT) FROM pg_attribute WHERE attrelid = CAST('{table}' AS regclass) \
         AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    );
    let columns = sqlx::query_scalar::<Any, String>(&sql).fetch_all(&mut **tx).await?;
    if columns.is_empty() {
        return Err(Fail::Store(StoreError::Corrupt(format!("table {table} has no columns"))));
    }
    Ok(columns.join(", "))
}

/// Every chain with entries in `partition` and the position and hash of its last one
/// there. The chains are found by skipping through the chain index, `(org_id, segment,
/// segment_seq)`, one probe per chain, not by reading the month's rows.
async fn chain_ends(tx: &mut Transaction<'static, Any>, partition: &str) -> Result<Vec<(ChainKey, ChainEnd)>, Fail> {
    let with_org = format!(
        "WITH RECURSIVE chains (org_id, segment) AS ( \
             (SELECT org_id, segment FROM {partition} WHERE org_id IS NOT NULL AND segment IS NOT NULL \
              ORDER BY org_id, segment LIMIT 1) \
           UNION ALL \
             SELECT step.org_id, step.segment FROM chains CROSS JOIN LATERAL ( \
                 SELECT t.org_id, t.segment FROM {partition} AS t \
                 WHERE (t.org_id, t.segment) > (chains.org_id, chains.segment) AND t.segment IS NOT NULL \
                 ORDER BY t.org_id, t.segment LIMIT 1) AS step \
         ) \
         SELECT chains.org_id, chains.segment, head.segment_seq, head.hash FROM chains CROSS JOIN LATERAL ( \
             SELECT t.segment_seq, t.hash FROM {partition} AS t \
             WHERE t.org_id = chains.org_id AND t.segment = chains.segment AND t.segment_seq IS NOT NULL \
             ORDER BY t.segment_seq DESC LIMIT 1) AS head"
    );
    let without_org = format!(
        "WITH RECURSIVE chains (segment) AS ( \
             SELECT (SELECT segment FROM {partition} WHERE org_id IS NULL AND segment IS NOT NULL \
                     ORDER BY segment LIMIT 1) \
           UNION ALL \
             SELECT (SELECT t.segment FROM {partition} AS t WHERE t.org_id IS NULL AND t.segment > chains.segment \
                     ORDER BY t.segment LIMIT 1) \
             FROM chains WHERE chains.segment IS NOT NULL \
         ) \
         SELECT CAST(NULL AS TEXT) AS org_id, chains.segment, head.segment_seq, head.hash \
         FROM chains CROSS JOIN LATERAL ( \
             SELECT t.segment_seq, t.hash FROM {partition} AS t \
             WHERE t.org_id IS NULL AND t.segment = chains.segment AND t.segment_seq IS NOT NULL \
             ORDER BY t.segment_seq DESC LIMIT 1) AS head \
         WHERE chains.segment IS NOT NULL"
    );
    let mut out = Vec::new();
    for sql in [with_org, without_org] {
        for row in sqlx::query::<Any>(&sql).fetch_all(&mut **tx).await? {
            let r = Row::new(&row, partition);
            let (org, segment, seq, hash) =
                (r.opt_text("org_id")?, r.text("segment")?, r.int("segment_seq")?, r.opt_blob("hash")?);
            let Some(hash) = hash.filter(|h| h.len() == 32) else {
                return Err(Fail::Store(StoreError::Corrupt(format!(
                    "{partition}: entry {seq} of chain {segment} has no valid hash; verify the audit"
                ))));
            };
            out.push(((org, segment), ChainEnd { seq, hash }));
        }
    }
    Ok(out)
}

/// For each chain (up to its position `cut`), the entries of `table` at or before `cut`
/// that lie outside `[lo, hi)`: how many, and the newest one's time.
async fn find_stragglers(
    tx: &mut Transaction<'static, Any>,
    table: &str,
    chains: &[(&ChainKey, i64)],
    lo: i64,
    hi: i64,
) -> Result<Vec<(ChainKey, u64, i64)>, Fail> {
    let mut out = Vec::new();
    // With and without an org apart: each probe must be an index range scan.
    for with_org in [true, false] {
        let org_clause = if with_org { "t.org_id = c.org_id" } else { "t.org_id IS NULL" };
        let sql = format!(
            "SELECT c.org_id, c.segment, s.n, s.newest \
             FROM json_to_recordset(CAST($1 AS json)) AS c(org_id TEXT, segment TEXT, cut BIGINT) \
             CROSS JOIN LATERAL ( \
                 SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(MAX(t.at_us), 0) AS BIGINT) AS newest \
                 FROM {table} AS t \
                 WHERE {org_clause} AND t.segment = c.segment AND t.segment_seq <= c.cut \
                 AND (t.at_us < {lo} OR t.at_us >= {hi})) AS s \
             WHERE s.n > 0"
        );
        let selected: Vec<&(&ChainKey, i64)> = chains.iter().filter(|(key, _)| key.0.is_some() == with_org).collect();
        for chunk in selected.chunks(CHAINS_PER_STATEMENT) {
            let json = serde_json::Value::Array(
                chunk
                    .iter()
                    .map(|((org, segment), cut)| serde_json::json!({ "org_id": org, "segment": segment, "cut": cut }))
                    .collect(),
            );
            for row in sqlx::query::<Any>(&sql).bind(json.to_string()).fetch_all(&mut **tx).await? {
                let r = Row::new(&row, table);
                let (org, segment, n, newest) =
                    (r.opt_text("org_id")?, r.text("segment")?, r.int("n")?, r.int("newest")?);
                out.push(((if with_org { org } else { None }, segment), u64::try_from(n).unwrap_or(0), newest));
            }
        }
    }
    Ok(out)
}

/// The anchors the chains have now (their last purged position).
async fn previous_anchors(
    tx: &mut Transaction<'static, Any>,
    chains: &[(&ChainKey, i64)],
) -> Result<HashMap<ChainKey, i64>, Fail> {
    let mut out = HashMap::new();
    for chunk in chains.chunks(CHAINS_PER_STATEMENT) {
        let json = serde_json::Value::Array(
            chunk.iter().map(|((org, segment), _)| serde_json::json!({ "org_id": org, "segment": segment })).collect(),
        );
        let rows = sqlx::query::<Any>(
            "SELECT c.org_id, c.segment, a.last_seq \
             FROM json_to_recordset(CAST($1 AS json)) AS c(org_id TEXT, segment TEXT) \
             JOIN audit_anchors AS a ON COALESCE(a.org_id, '') = COALESCE(c.org_id, '') AND a.segment = c.segment",
        )
        .bind(json.to_string())
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let r = Row::new(&row, "audit_anchors");
            out.insert((r.opt_text("org_id")?, r.text("segment")?), r.int("last_seq")?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_their_bounds() {
        // 2024-02-29T12:00:00Z
        let leap = AuditMonth::containing_us(1_709_208_000_000_000);
        assert_eq!(leap.to_string(), "2024-02");
        assert_eq!(leap.start_us(), 1_706_745_600_000_000);
        assert_eq!(leap.end_us(), 1_709_251_200_000_000);
        assert_eq!(AuditMonth::containing_us(leap.end_us()).to_string(), "2024-03");
        assert_eq!(AuditMonth::containing_us(leap.end_us() - 1), leap);
        assert_eq!(AuditMonth::containing_us(0).start_us(), 0);
        assert_eq!(AuditMonth::containing_us(-1).to_string(), "1969-12");
        let december = AuditMonth::new(2025, 12).unwrap();
        assert_eq!(december.next(), AuditMonth::new(2026, 1).unwrap());
        assert_eq!(december.end_us(), 1_767_225_600_000_000);
        assert!(AuditMonth::new(2025, 13).is_none());
        // Every month boundary over two centuries round-trips.
        let mut month = AuditMonth::new(1970, 1).unwrap();
        while month.year < 2170 {
            assert_eq!(AuditMonth::containing_us(month.start_us()), month);
            assert_eq!(AuditMonth::containing_us(month.end_us() - 1), month);
            month = month.next();
        }
    }

    #[test]
    fn partition_names_round_trip() {
        let month = AuditMonth::new(2025, 3).unwrap();
        assert_eq!(month.partition("resolution_audit"), "resolution_audit_p2025_03");
        assert_eq!(AuditMonth::of_partition("resolution_audit", "resolution_audit_p2025_03"), Some(month));
        for other in [
            "resolution_audit_default",
            "resolution_audit_p2025_3",
            "call_completions_p2025_03",
            "resolution_audit_p2025_13",
        ] {
            assert_eq!(AuditMonth::of_partition("resolution_audit", other), None, "{other}");
        }
    }
}
