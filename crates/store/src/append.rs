//! The audit write path: a whole batch of chained entries (resolution rows, completions)
//! and its usage rollup in one transaction, with as little work per entry as the
//! database allows. Everything else in the store goes through sqlx's `Any` driver; this
//! is the one hot write, once per call, so it gets a path of its own per backend:
//!
//! * **SQLite**: a connection of its own (`rusqlite`, linked to the same `libsqlite3-sys`
//!   as sqlx) on an OS thread of its own, with its statements prepared once and cached:
//!   `BEGIN IMMEDIATE`, one execution of a cached statement per entry and per rollup row,
//!   `COMMIT` — in-process calls into SQLite, no async driver round trip per statement.
//!   The connection has the store's settings (`synchronous = FULL`, `foreign_keys`,
//!   `busy_timeout`; the file is in WAL mode, which the store set on open and this
//!   checks), so a commit is as durable as every other write. After a failed batch the
//!   connection is closed (rolled back if SQLite had not already) and the next batch opens
//!   a fresh one and prepares its statements again: a connection in an unknown state is
//!   never reused.
//! * **PostgreSQL**: one statement per batch, one round trip — each table's values bound
//!   as typed arrays and inserted with `INSERT … SELECT … FROM UNNEST(…)`, the three
//!   inserts (resolution rows, completions, rollup upsert) joined as data-modifying CTEs.
//!   A single statement outside a transaction block is its own transaction: it commits as
//!   a whole or not at all, as durably as any commit on the server. It has a small pool
//!   of its own (typed arrays are PostgreSQL's, not the `Any` driver's), whose
//!   connections keep the prepared statement.
//!
//! Either way the caller learns the outcome only after the commit: `Ok` means every entry
//! of the batch is durable, an error that none is.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use byok_domain::chain::{columns, Column, COMPLETION, RESOLUTION};
use rusqlite::{Connection, OpenFlags};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::oneshot;

use crate::chain::{Chained, Field, COMPLETION_CHAIN_COLUMNS, RESOLUTION_CHAIN_COLUMNS};
use crate::error::{map_sqlx, StoreError};
use crate::store::WriteHealth;
use crate::usage::{RollupRow, ROLLUP_ADD, ROLLUP_KEY};

/// One batch, linked and ready to write: the entries of one writer segment.
#[derive(Default)]
pub(crate) struct Batch {
    /// The writer segment (a column of its rollup rows).
    pub(crate) segment: String,
    /// Resolution rows, in chain order.
    pub(crate) rows: Vec<Chained>,
    /// Completions, in chain order.
    pub(crate) completions: Vec<Chained>,
    /// The batch's rollup increments, keys in order.
    pub(crate) rollup: Vec<RollupRow>,
}

/// Where a store's audit batches go.
pub(crate) enum AuditSink {
    Sqlite(SqliteAppender),
    Postgres(PostgresAppender),
}

impl AuditSink {
    /// Write `batch` in one transaction.
    pub(crate) async fn append(&self, batch: Batch) -> Result<(), StoreError> {
        match self {
            AuditSink::Sqlite(sink) => sink.append(batch).await,
            AuditSink::Postgres(sink) => sink.append(batch).await,
        }
    }

    /// Stop writing: later batches fail with [`StoreError::Unavailable`].
    pub(crate) async fn close(&self) {
        match self {
            AuditSink::Sqlite(sink) => sink.close(),
            AuditSink::Postgres(sink) => sink.pool.close().await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

/// Statements the SQLite connection keeps prepared (a few spare).
const SQLITE_STATEMENT_CACHE: usize = 8;

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// Work for the SQLite audit thread.
enum Job {
    /// Write a batch.
    Batch(Batch),
    /// Tests: run SQL on the audit connection (e.g. a per-connection `PRAGMA`).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Raw(String),
}

/// The handle on the SQLite audit thread: batches go to it over a channel; the thread
/// ends when the handle is closed or dropped.
pub(crate) struct SqliteAppender {
    jobs: Mutex<Option<std::sync::mpsc::Sender<(Job, Reply)>>>,
}

/// What the SQLite audit connection is opened with.
pub(crate) struct SqliteSettings {
    pub(crate) path: PathBuf,
    pub(crate) busy_timeout: Duration,
    pub(crate) health: Arc<WriteHealth>,
}

impl SqliteAppender {
    /// Start the audit thread for the database file `settings.path` (which the store has
    /// opened and migrated; the thread connects on its first batch).
    pub(crate) fn start(settings: SqliteSettings) -> Result<Self, StoreError> {
        let (jobs, queue) = std::sync::mpsc::channel::<(Job, Reply)>();
        std::thread::Builder::new()
            .name("byok-audit-sqlite".into())
            .spawn(move || {
                let mut writer = SqliteWriter { settings, conn: None };
                while let Ok((job, reply)) = queue.recv() {
                    let outcome = match job {
                        Job::Batch(batch) => writer.write(&batch),
                        Job::Raw(sql) => writer.raw(&sql),
                    };
                    // A caller that went away has nobody to tell.
                    let _ = reply.send(outcome);
                }
            })
            .map_err(|e| StoreError::unavailable_by("cannot start the SQLite audit writer thread", e))?;
        Ok(Self { jobs: Mutex::new(Some(jobs)) })
    }

    async fn append(&self, batch: Batch) -> Result<(), StoreError> {
        self.run(Job::Batch(batch)).await
    }

    /// Tests: run `sql` on the audit connection (opened if need be).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        self.run(Job::Raw(sql.to_owned())).await
    }

    async fn run(&self, job: Job) -> Result<(), StoreError> {
        let (reply, outcome) = oneshot::channel();
        let sent = match &*self.jobs.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(jobs) => jobs.send((job, reply)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::unavailable("the store is closed (SQLite audit writer stopped)"));
        }
        outcome.await.map_err(|_| StoreError::unavailable("the SQLite audit writer thread ended before committing"))?
    }

    fn close(&self) {
        // The thread finishes the batch in hand, then its queue reports the end.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// The audit thread's state: the settings and, between batches that succeeded, the open
/// connection (with its cached statements).
struct SqliteWriter {
    settings: SqliteSettings,
    conn: Option<Connection>,
}

/// `INSERT INTO table (columns…, prev_hash, hash) VALUES (?1, …)`.
fn sqlite_insert(table: &str, columns: &str, count: usize) -> String {
    let placeholders: Vec<String> = (1..=count + 2).map(|n| format!("?{n}")).collect();
    format!("INSERT INTO {table} ({columns}, prev_hash, hash) VALUES ({})", placeholders.join(", "))
}

static SQLITE_INSERT_RESOLUTION: LazyLock<String> =
    LazyLock::new(|| sqlite_insert("resolution_audit", &RESOLUTION_CHAIN_COLUMNS, columns(RESOLUTION).len()));
static SQLITE_INSERT_COMPLETION: LazyLock<String> =
    LazyLock::new(|| sqlite_insert("call_completions", &COMPLETION_CHAIN_COLUMNS, columns(COMPLETION).len()));
static SQLITE_UPSERT_ROLLUP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO usage_rollup ({ROLLUP_KEY}, calls, unanswered, denied, input_tokens, output_tokens) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
         ON CONFLICT ({ROLLUP_KEY}) DO UPDATE SET {ROLLUP_ADD}"
    )
});

/// A SQLite error as the store reports one: a database's refusal by its code and message
/// (as `map_sqlx` does for the other writes), anything else with the error as its source.
fn sqlite_error(what: &str, err: rusqlite::Error) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(failure, message) => StoreError::unavailable(format!(
            "audit write ({what}): database error {}: {}",
            failure.extended_code,
            message.unwrap_or_else(|| failure.to_string())
        )),
        other => StoreError::unavailable_by(format!("audit write ({what})"), other),
    }
}

impl SqliteWriter {
    fn connection(&mut self) -> Result<&mut Connection, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.open()?);
        }
        self.conn.as_mut().ok_or_else(|| StoreError::unavailable("SQLite audit connection missing"))
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.settings.path, flags)
            .map_err(|e| sqlite_error("cannot open the database", e))?;
        conn.busy_timeout(self.settings.busy_timeout).map_err(|e| sqlite_error("busy_timeout", e))?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
            .map_err(|e| sqlite_error("connection settings", e))?;
        let mode: String =
            conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).map_err(|e| sqlite_error("journal mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::unavailable(format!(
                "SQLite audit write refused: the database is not in WAL journal mode (got '{mode}')"
            )));
        }
        conn.set_prepared_statement_cache_capacity(SQLITE_STATEMENT_CACHE);
        Ok(conn)
    }

    /// Tests: run `sql` on the connection.
    fn raw(&mut self, sql: &str) -> Result<(), StoreError> {
        self.connection()?.execute_batch(sql).map_err(|e| sqlite_error("raw statement", e))
    }

    /// Write `batch` in one transaction; on failure the connection is rolled back and
    /// closed, so the next batch starts on a fresh one.
    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let outcome = self.connection().and_then(|conn| write_sqlite(conn, batch));
        if outcome.is_err() {
            if let Some(conn) = self.conn.take() {
                if !conn.is_autocommit() {
                    // SQLite may have rolled back on its own (disk full, I/O error).
                    let _ = conn.execute_batch("ROLLBACK");
                }
                drop(conn);
            }
            self.settings.health.record_failed_write();
        }
        outcome
    }
}

fn write_sqlite(conn: &mut Connection, batch: &Batch) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| sqlite_error("BEGIN", e))?;
    insert_sqlite(conn, &SQLITE_INSERT_RESOLUTION, &batch.rows).map_err(|e| sqlite_error("resolution rows", e))?;
    insert_sqlite(conn, &SQLITE_INSERT_COMPLETION, &batch.completions).map_err(|e| sqlite_error("completions", e))?;
    upsert_rollup_sqlite(conn, &batch.segment, &batch.rollup).map_err(|e| sqlite_error("usage rollup", e))?;
    conn.execute_batch("COMMIT").map_err(|e| sqlite_error("COMMIT", e))
}

fn insert_sqlite(conn: &Connection, sql: &str, entries: &[Chained]) -> Result<(), rusqlite::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut statement = conn.prepare_cached(sql)?;
    for entry in entries {
        let mut index = 1;
        for field in &entry.fields {
            match field {
                Field::Text(value) => statement.raw_bind_parameter(index, value.as_deref())?,
                Field::Int(value) => statement.raw_bind_parameter(index, *value)?,
            }
            index += 1;
        }
        statement.raw_bind_parameter(index, entry.prev.as_slice())?;
        statement.raw_bind_parameter(index + 1, entry.hash.as_slice())?;
        statement.raw_execute()?;
    }
    Ok(())
}

fn upsert_rollup_sqlite(conn: &Connection, segment: &str, rows: &[RollupRow]) -> Result<(), rusqlite::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut statement = conn.prepare_cached(&SQLITE_UPSERT_ROLLUP)?;
    for row in rows {
        statement.execute(rusqlite::params![
            row.org_id,
            row.hour_us,
            segment,
            row.team_id,
            row.tier,
            row.provider,
            row.model_family,
            row.credential_owner,
            row.rate_card,
            row.provider_price,
            row.calls,
            row.unanswered,
            row.denied,
            row.input_tokens,
            row.output_tokens,
        ])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// Connections of the audit pool: one audit writer per process, a second for whatever
/// else appends (tests, benchmarks, a writer overlapping its successor at shutdown).
const POSTGRES_AUDIT_CONNECTIONS: u32 = 2;

/// The PostgreSQL audit path: its own small pool, one statement per batch.
pub(crate) struct PostgresAppender {
    pool: PgPool,
}

/// `UNNEST($a::type[], …)` for `cols` starting at placeholder `first`, and the column
/// names in order.
fn unnest(cols: &[Column], first: usize) -> String {
    let mut arrays: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", first + i, if c.int { "bigint" } else { "text" }))
        .collect();
    arrays.push(format!("${}::bytea[]", first + cols.len()));
    arrays.push(format!("${}::bytea[]", first + cols.len() + 1));
    format!("UNNEST({})", arrays.join(", "))
}

/// The batch statement: resolution rows, completions, rollup upsert.
static POSTGRES_APPEND: LazyLock<String> = LazyLock::new(|| {
    let resolution = columns(RESOLUTION);
    let completion = columns(COMPLETION);
    let completions_from = 1 + resolution.len() + 2;
    let rollup_from = completions_from + completion.len() + 2;
    // The rollup's arrays: the key without `segment` (one value for the batch), then the counts.
    let rollup_arrays = [
        "text", "bigint", "text", "text", "text", "text", "text", "text", "text", "bigint", "bigint", "bigint",
        "bigint", "bigint",
    ]
    .iter()
    .enumerate()
    .map(|(i, ty)| format!("${}::{ty}[]", rollup_from + 1 + i))
    .collect::<Vec<_>>()
    .join(", ");
    format!(
        "WITH rows AS (INSERT INTO resolution_audit ({rcols}, prev_hash, hash) SELECT * FROM {runnest}), \
         completions AS (INSERT INTO call_completions ({ccols}, prev_hash, hash) SELECT * FROM {cunnest}) \
         INSERT INTO usage_rollup ({ROLLUP_KEY}, calls, unanswered, denied, input_tokens, output_tokens) \
         SELECT u.org_id, u.hour_us, ${segment}, u.team_id, u.tier, u.provider, u.model_family, u.credential_owner, \
         u.rate_card, u.provider_price, u.calls, u.unanswered, u.denied, u.input_tokens, u.output_tokens \
         FROM UNNEST({rollup_arrays}) AS u(org_id, hour_us, team_id, tier, provider, model_family, credential_owner, \
         rate_card, provider_price, calls, unanswered, denied, input_tokens, output_tokens) \
         ON CONFLICT ({ROLLUP_KEY}) DO UPDATE SET {ROLLUP_ADD}",
        rcols = RESOLUTION_CHAIN_COLUMNS.as_str(),
        runnest = unnest(resolution, 1),
        ccols = COMPLETION_CHAIN_COLUMNS.as_str(),
        cunnest = unnest(completion, completions_from),
        segment = rollup_from,
    )
});

/// One column of a table's entries, as a typed array.
enum ColumnArray {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
}

/// The entries' columns as arrays (each entry's fields in column order), then `prev_hash`
/// and `hash`.
fn column_arrays(cols: &[Column], entries: &[Chained]) -> Result<(Vec<ColumnArray>, [Vec<Vec<u8>>; 2]), StoreError> {
    let mut arrays: Vec<ColumnArray> = cols
        .iter()
        .map(|c| {
            if c.int {
                ColumnArray::Int(Vec::with_capacity(entries.len()))
            } else {
                ColumnArray::Text(Vec::with_capacity(entries.len()))
            }
        })
        .collect();
    let mut links = [Vec::with_capacity(entries.len()), Vec::with_capacity(entries.len())];
    for entry in entries {
        if entry.fields.len() != arrays.len() {
            return Err(StoreError::Corrupt(format!(
                "an audit entry has {} fields for {} columns",
                entry.fields.len(),
                arrays.len()
            )));
        }
        for (array, field) in arrays.iter_mut().zip(&entry.fields) {
            match (array, field) {
                (ColumnArray::Text(values), Field::Text(value)) => values.push(value.clone()),
                (ColumnArray::Int(values), Field::Int(value)) => values.push(*value),
                _ => return Err(StoreError::Corrupt("an audit entry's field has the wrong type".into())),
            }
        }
        links[0].push(entry.prev.to_vec());
        links[1].push(entry.hash.to_vec());
    }
    Ok((arrays, links))
}

impl PostgresAppender {
    /// A lazily connecting pool for `url` (the store's).
    pub(crate) fn new(url: &str, acquire_timeout: Duration) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_AUDIT_CONNECTIONS)
            .acquire_timeout(acquire_timeout)
            .connect_lazy(url)
            .map_err(map_sqlx)?;
        Ok(Self { pool })
    }

    async fn append(&self, batch: Batch) -> Result<(), StoreError> {
        let (rows, row_links) = column_arrays(columns(RESOLUTION), &batch.rows)?;
        let (completions, completion_links) = column_arrays(columns(COMPLETION), &batch.completions)?;
        let mut query = sqlx::query::<sqlx::Postgres>(&POSTGRES_APPEND);
        for array in rows {
            query = match array {
                ColumnArray::Text(values) => query.bind(values),
                ColumnArray::Int(values) => query.bind(values),
            };
        }
        let [prev, hash] = row_links;
        query = query.bind(prev).bind(hash);
        for array in completions {
            query = match array {
                ColumnArray::Text(values) => query.bind(values),
                ColumnArray::Int(values) => query.bind(values),
            };
        }
        let [prev, hash] = completion_links;
        query = query.bind(prev).bind(hash);
        let rollup = &batch.rollup;
        let text = |f: fn(&RollupRow) -> &String| rollup.iter().map(|r| f(r).clone()).collect::<Vec<String>>();
        let int = |f: fn(&RollupRow) -> i64| rollup.iter().map(f).collect::<Vec<i64>>();
        query = query
            .bind(batch.segment.as_str())
            .bind(text(|r| &r.org_id))
            .bind(int(|r| r.hour_us))
            .bind(text(|r| &r.team_id))
            .bind(text(|r| &r.tier))
            .bind(text(|r| &r.provider))
            .bind(text(|r| &r.model_family))
            .bind(text(|r| &r.credential_owner))
            .bind(text(|r| &r.rate_card))
            .bind(text(|r| &r.provider_price))
            .bind(int(|r| r.calls))
            .bind(int(|r| r.unanswered))
            .bind(int(|r| r.denied))
            .bind(int(|r| r.input_tokens))
            .bind(int(|r| r.output_tokens));
        query.execute(&self.pool).await.map_err(map_sqlx)?;
        Ok(())
    }
}

/// The SQLite settings for `path` (see [`SqliteAppender::start`]).
pub(crate) fn sqlite_settings(path: &Path, busy_timeout: Duration, health: &Arc<WriteHealth>) -> SqliteSettings {
    SqliteSettings { path: path.to_owned(), busy_timeout, health: Arc::clone(health) }
}
