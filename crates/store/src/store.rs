//! Opening the store: URL parsing, connection pools, pragmas and migrations.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Connection as _, Executor as _, Transaction};

use crate::append::{sqlite_settings, AuditSink, PostgresAppender, SqliteAppender};
use crate::error::{map_sqlx, redact_url, StoreError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite connection waits for a lock held by another process.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// The page size of a new SQLite database. A commit writes every page it touched, whole,
/// to the WAL (and a checkpoint writes it again to the database), and an audit batch
/// touches the last page of each audit table and index to add a few hundred bytes to
/// each: with 1 KiB pages instead of SQLite's 4 KiB a proxied call sends 8.5 KiB to
/// storage instead of 13.8 (`bench/run.sh`, "byok audit writes"). An existing file keeps
/// its own page size.
const SQLITE_PAGE_SIZE: u32 = 1024;

/// Below this much free space on the SQLite database's filesystem the store is not
/// writable ([`Store::check_writable`]): the write probe's single page can still fit in
/// the WAL's slack when an audit batch no longer does.
const SQLITE_MIN_FREE_BYTES: u64 = 1024 * 1024;
/// Readers in the SQLite read pool (WAL lets them run beside the one writer).
const SQLITE_READERS: u32 = 4;
/// Connections in the PostgreSQL pool.
const POSTGRES_CONNECTIONS: u32 = 10;
/// How long a caller waits for a pooled connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the verdict of a write probe ([`Store::check_writable`]) stands: readiness
/// may be asked many times a second, and the probe writes, so it runs at most this often.
const WRITE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// `Err` when the filesystem holding `path` has less than [`SQLITE_MIN_FREE_BYTES`] free
/// for an unprivileged writer. (Not checked where the platform does not say.)
fn check_free_space(path: &Path) -> Result<(), StoreError> {
    #[cfg(target_os = "linux")]
    {
        let dir = path.parent().unwrap_or(path);
        let stat = rustix::fs::statvfs(dir)
            .map_err(|e| StoreError::unavailable_by(format!("cannot read the free space of {}", dir.display()), e))?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < SQLITE_MIN_FREE_BYTES {
            return Err(StoreError::unavailable(format!(
                "the database's filesystem ({}) has {free} bytes free; writing needs at least {SQLITE_MIN_FREE_BYTES}",
                dir.display()
            )));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
    Ok(())
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A single SQLite file in WAL mode.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handle on byok's database. Cheap to clone; all clones share the pools.
///
/// On SQLite, writes go through a single-connection writer pool and start with
/// `BEGIN IMMEDIATE`, so concurrent writers queue instead of failing with
/// `SQLITE_BUSY`; reads use a separate pool of read-only connections. On PostgreSQL one
/// pool serves both.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    reader: AnyPool,
    writer: AnyPool,
    /// Where the database is, with any password removed (for logs and `Debug`).
    location: String,
    /// Whether the store can write, as last seen (shared with the pools' hooks).
    health: Arc<WriteHealth>,
    /// PostgreSQL: the URL a change listener connects to (never logged).
    listen_url: Option<String>,
    /// Whether this node listens for change notifications (see `notify.rs`).
    listening: std::sync::atomic::AtomicBool,
    /// Where audit batches are written (see `append.rs`).
    audit: AuditSink,
    /// SQLite: the database file (its filesystem's free space is part of readiness).
    sqlite_path: Option<std::path::PathBuf>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("backend", &self.inner.backend).field("location", &self.inner.location).finish()
    }
}

impl Store {
    /// Open (and migrate) the database at `url`: `sqlite://path/to/byok.db` (also
    /// `sqlite:path`; the file is created if missing; percent-escapes in the path are
    /// decoded and query parameters are ignored) or `postgres://…` / `postgresql://…`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (path, _params) = rest.split_once('?').unwrap_or((rest, ""));
            if path.is_empty() || path == ":memory:" {
                return Err(StoreError::Config(
                    "an in-memory SQLite database is not supported; give a file path (sqlite://path/to/byok.db)"
                        .to_owned(),
                ));
            }
            let decoded = percent_decode(path)
                .ok_or_else(|| StoreError::Config(format!("the SQLite path in '{url}' is not valid UTF-8")))?;
            Self::open_sqlite(Path::new(&decoded)).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await
        } else {
            let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
            Err(StoreError::Config(format!(
                "unsupported database URL scheme '{scheme}': use sqlite://PATH or postgres://…"
            )))
        }
    }

    /// Open (and migrate) the SQLite database file at `path`, creating it if missing.
    /// The directory must exist.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let absolute = std::path::absolute(path)
            .map_err(|e| StoreError::Config(format!("cannot resolve '{}': {e}", path.display())))?;
        let text = absolute
            .to_str()
            .ok_or_else(|| StoreError::Config(format!("the path '{}' is not valid UTF-8", absolute.display())))?;
        let url = format!("sqlite://{}?mode=rwc", percent_encode(text));
        let location = format!("sqlite://{text}");
        create_private(&absolute);

        let health = Arc::new(WriteHealth::default());
        let writer =
            sqlite_pool_options(1, false, &health).connect(&url).await.map_err(|e| open_error(&location, e))?;
        // Only a database with no table yet takes it; an existing file keeps its own.
        sqlx::query(&format!("PRAGMA page_size = {SQLITE_PAGE_SIZE}"))
            .execute(&writer)
            .await
            .map_err(|e| open_error(&location, e))?;
        let mode = sqlx::query_scalar::<Any, String>("PRAGMA journal_mode = WAL")
            .fetch_one(&writer)
            .await
            .map_err(|e| open_error(&location, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::unavailable(format!("{location}: SQLite refused WAL journal mode (got '{mode}')")));
        }
        SQLITE_MIGRATIONS.run(&writer).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        let busy_timeout = Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS));
        let audit = AuditSink::Sqlite(SqliteAppender::start(sqlite_settings(&absolute, busy_timeout, &health))?);
        let reader = sqlite_pool_options(SQLITE_READERS, true, &health)
            .connect(&url)
            .await
            .map_err(|e| open_error(&location, e))?;
        tracing::info!(store = %location, "opened SQLite store");
        Ok(Store {
            inner: Arc::new(Inner {
                backend: Backend::Sqlite,
                reader,
                writer,
                location,
                health,
                listen_url: None,
                listening: std::sync::atomic::AtomicBool::new(false),
                audit,
                sqlite_path: Some(absolute),
            }),
        })
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let location = redact_url(url);
        let health = Arc::new(WriteHealth::default());
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .before_acquire(discard_if_in_transaction(&health))
            .connect(url)
            .await
            .map_err(|e| open_error(&location, e))?;
        POSTGRES_MIGRATIONS.run(&pool).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        let audit = AuditSink::Postgres(PostgresAppender::new(url, ACQUIRE_TIMEOUT)?);
        tracing::info!(store = %location, "opened PostgreSQL store");
        let store = Store {
            inner: Arc::new(Inner {
                backend: Backend::Postgres,
                reader: pool.clone(),
                writer: pool,
                location,
                health,
                listen_url: Some(url.to_owned()),
                listening: std::sync::atomic::AtomicBool::new(true),
                audit,
                sqlite_path: None,
            }),
        };
        // The audit partitions of this month and the next ones; if this fails, the DEFAULT
        // partition takes the rows until the retention job makes them.
        if let Err(err) = store.ensure_audit_partitions(byok_domain::Timestamp::now()).await {
            tracing::warn!(error = %byok_domain::error::Report(&err), "cannot create the audit partitions ahead of time");
        }
        Ok(store)
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Where the database is (a path or a URL without its password).
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// Check that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<Any, i64>("SELECT CAST(1 AS BIGINT)")
            .fetch_one(&self.inner.reader)
            .await
            .map(|_| ())
            .map_err(map_sqlx)
    }

    /// Check that the store can write (for `/readyz`): [`ping`](Self::ping) reads, and a
    /// store whose disk is full still answers reads.
    ///
    /// Two signals. A write probe — a write transaction that changes nothing but is
    /// really written and synced: on SQLite it rewrites `user_version` (page 1 goes to
    /// the WAL, which fails when the disk is full), on PostgreSQL it takes a transaction
    /// id (which fails on a read-only standby; a primary that cannot write its WAL stops).
    /// Its verdict stands for a second (`WRITE_PROBE_INTERVAL`), so frequent readiness
    /// checks cost at most one small transaction a second; while a probe runs, other
    /// callers get the last verdict. And the real writes: one that failed so badly that
    /// its connection had to be replaced (see `discard_if_in_transaction`) keeps the
    /// store not ready for a second after it, even if the probe squeezes into WAL space
    /// that a failed commit left allocated — so under load the answer follows the real
    /// writes.
    ///
    /// The error says `store cannot write: …` and why.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let health = &self.inner.health;
        let probed = match health.verdict_or_claim() {
            Verdict::Known(verdict) => verdict,
            Verdict::Probe { claimed } => {
                // Releases the claim however the probe ends, also if this future is dropped.
                let _claim = ProbeClaim { health, claimed };
                let outcome = self.probe_write().await.map_err(|err| match err {
                    // The verdict is kept and shared by every caller until the next
                    // probe: it keeps the cause as text.
                    StoreError::Unavailable { reason, source } => match source {
                        Some(source) => format!("{reason}: {}", byok_domain::error::report(source.as_ref())),
                        None => reason,
                    },
                    other => byok_domain::error::report(&other),
                });
                if let Err(why) = &outcome {
                    tracing::warn!(store = %self.inner.location, error = %why, "the store cannot write");
                }
                health.record_probe(outcome.clone());
                outcome
            }
        };
        probed.and_then(|()| health.recent_failed_write()).map_err(cannot_write)
    }

    /// One write transaction that changes nothing but is written (see
    /// [`check_writable`](Self::check_writable)).
    async fn probe_write(&self) -> Result<(), StoreError> {
        if let Some(path) = &self.inner.sqlite_path {
            check_free_space(path)?;
        }
        let mut tx = self.begin_write().await?;
        match self.inner.backend {
            Backend::Sqlite => {
                // Rewriting the same value dirties page 1: the commit appends it to the
                // WAL and syncs, like any write. Nothing in byok reads `user_version`.
                let version = sqlx::query_scalar::<Any, i64>("PRAGMA user_version")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                tx.execute(format!("PRAGMA user_version = {version}").as_str()).await.map_err(map_sqlx)?;
            }
            Backend::Postgres => {
                tx.execute("SELECT txid_current()").await.map_err(map_sqlx)?;
            }
        }
        tx.commit().await.map_err(map_sqlx)
    }

    /// Close every connection; later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.inner.audit.close().await;
        self.inner.reader.close().await;
        self.inner.writer.close().await;
    }

    /// Tests: run `sql` on SQLite's audit connection (per-connection settings such as
    /// `max_page_count` apply to it alone); on PostgreSQL on the writer pool.
    #[cfg(feature = "testing")]
    pub(crate) async fn execute_on_audit_connection(&self, sql: &str) -> Result<(), StoreError> {
        match &self.inner.audit {
            AuditSink::Sqlite(sink) => sink.execute_raw(sql).await,
            AuditSink::Postgres(_) => self.execute_raw(sql).await.map(|_| ()),
        }
    }

    /// Where audit batches are written (see `append.rs`).
    pub(crate) fn audit_sink(&self) -> &AuditSink {
        &self.inner.audit
    }

    /// PostgreSQL: the URL a change listener connects to.
    pub(crate) fn listen_url(&self) -> Option<&str> {
        self.inner.listen_url.as_deref()
    }

    /// Whether this node listens for change notifications (see `notify.rs`).
    pub(crate) fn listening(&self) -> &std::sync::atomic::AtomicBool {
        &self.inner.listening
    }

    /// The pool for reads outside a transaction.
    pub(crate) fn reader(&self) -> &AnyPool {
        &self.inner.reader
    }

    /// Begin a write transaction (`BEGIN IMMEDIATE` on SQLite, so the write lock is
    /// taken up front and a concurrent writer waits instead of failing later).
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        match self.inner.backend {
            Backend::Sqlite => self.inner.writer.begin_with("BEGIN IMMEDIATE").await.map_err(map_sqlx),
            Backend::Postgres => self.inner.writer.begin().await.map_err(map_sqlx),
        }
    }

    /// The pool for writes (tests edit rows directly through it).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn writer(&self) -> &AnyPool {
        &self.inner.writer
    }

    /// Run one raw statement on the writer (tests edit rows directly with this).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) async fn execute_raw(&self, sql: &str) -> Result<AnyQueryResult, StoreError> {
        self.inner.writer.execute(sql).await.map_err(map_sqlx)
    }
}

fn sqlite_pool_options(max: u32, read_only: bool, health: &Arc<WriteHealth>) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str()).await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                if read_only {
                    conn.execute("PRAGMA query_only = ON").await?;
                }
                Ok(())
            })
        })
        .before_acquire(discard_if_in_transaction(health))
}

/// The pools' `before_acquire` hook: a pooled connection that sqlx still counts as
/// inside a transaction is closed (which rolls back whatever is open on it) and the pool
/// opens a fresh one, instead of every later `begin` failing with "attempted to call
/// begin_with at non-zero transaction depth".
///
/// Why it happens. When a write fails with `SQLITE_FULL` (disk full) or `SQLITE_IOERR`
/// at `COMMIT` — or in a statement that has no statement journal — SQLite rolls the
/// whole transaction back by itself and returns to autocommit. sqlx does not notice:
/// its transaction depth stays 1, the `Transaction` is dropped, the `ROLLBACK` it queues
/// fails ("cannot rollback - no transaction is active") and only a successful
/// `COMMIT`/`ROLLBACK` lowers the depth. The connection goes back to the pool at depth
/// 1, and on SQLite the writer pool has only that one connection: every write failed
/// until a restart.
///
/// Why here and this way. The depth cannot be repaired from outside sqlx (a raw
/// `ROLLBACK` fails the same way and does not touch the counter), so the connection is
/// replaced. Checking before a connection is handed out covers every caller in one
/// place and costs one atomic load: by then the pool's own release check has flushed the
/// rollback a dropped transaction queued, so the depth is settled, and a transaction
/// that merely failed and was rolled back normally (a conflict, a stale revision) keeps
/// its connection. On PostgreSQL sqlx lowers the depth when it queues the rollback of a
/// dropped transaction (a failed `COMMIT` ends the transaction there anyway) and a
/// broken connection fails the pool's ping, so this is a safety net there.
///
/// A replaced connection means a write failed for want of a working disk: readiness
/// says the store cannot write for a while after it (see [`Store::check_writable`]).
fn discard_if_in_transaction(
    health: &Arc<WriteHealth>,
) -> impl for<'c> Fn(
    &'c mut sqlx::AnyConnection,
    sqlx::pool::PoolConnectionMetadata,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, sqlx::Error>> + Send + 'c>>
       + Send
       + Sync
       + 'static {
    let health = Arc::clone(health);
    move |conn, _meta| {
        let usable = !conn.is_in_transaction();
        if !usable {
            tracing::warn!(
                "a store connection was left inside a failed transaction (the database ended it on its own, e.g. \
                 disk full); replacing the connection"
            );
            health.record_failed_write();
        }
        Box::pin(std::future::ready(Ok(usable)))
    }
}

/// What the store last learned about whether it can write.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// The last probe's verdict and when it was reached.
    probe: Option<(Instant, Result<(), String>)>,
    /// Whether a probe is running.
    probing: bool,
    /// When a write last failed so that its connection had to be replaced.
    failed_write: Option<Instant>,
}

enum Verdict {
    /// Use this probe verdict.
    Known(Result<(), String>),
    /// Probe now; `claimed` when this caller holds the probe claim.
    Probe { claimed: bool },
}

impl WriteHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn verdict_or_claim(&self) -> Verdict {
        let mut state = self.state();
        match (&state.probe, state.probing) {
            (Some((at, verdict)), _) if at.elapsed() < WRITE_PROBE_INTERVAL => Verdict::Known(verdict.clone()),
            // Another caller is probing; until its verdict is in, the last one stands.
            (Some((_, verdict)), true) => Verdict::Known(verdict.clone()),
            (None, true) => Verdict::Probe { claimed: false },
            (_, false) => {
                state.probing = true;
                Verdict::Probe { claimed: true }
            }
        }
    }

    fn record_probe(&self, verdict: Result<(), String>) {
        self.state().probe = Some((Instant::now(), verdict));
    }

    pub(crate) fn record_failed_write(&self) {
        self.state().failed_write = Some(Instant::now());
    }

    /// `Err` while a write failed (its connection replaced) within the last interval.
    fn recent_failed_write(&self) -> Result<(), String> {
        match self.state().failed_write {
            Some(at) if at.elapsed() < WRITE_PROBE_INTERVAL => Err(format!(
                "a write transaction failed {} ms ago and its connection had to be replaced (disk full or I/O error)",
                at.elapsed().as_millis()
            )),
            _ => Ok(()),
        }
    }
}

/// Held while a probe runs; lets the next caller probe when it goes.
struct ProbeClaim<'a> {
    health: &'a WriteHealth,
    claimed: bool,
}

impl Drop for ProbeClaim<'_> {
    fn drop(&mut self) {
        if self.claimed {
            self.health.state().probing = false;
        }
    }
}

fn cannot_write(why: String) -> StoreError {
    StoreError::unavailable(format!("store cannot write: {why}"))
}

/// Create the SQLite file `path` empty with mode 0600 if it does not exist yet. SQLite
/// creates a missing database with 0644 (less the umask), and gives `-wal` and `-shm`
/// the database file's permission bits, so creating it first keeps all three private.
/// An empty file is a new database to SQLite. Any failure is left for SQLite's own open
/// to report.
fn create_private(path: &Path) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    if let Err(err) = options.open(path) {
        if err.kind() != std::io::ErrorKind::AlreadyExists {
            tracing::debug!(path = %path.display(), error = %byok_domain::error::Report(&err), "cannot create the SQLite file ahead of SQLite");
        }
    }
}

fn open_error(location: &str, err: sqlx::Error) -> StoreError {
    match map_sqlx(err) {
        StoreError::Unavailable { reason, source } => {
            StoreError::Unavailable { reason: format!("cannot open {location}: {reason}"), source }
        }
        StoreError::Config(why) => StoreError::Config(format!("{location}: {why}")),
        other => other,
    }
}

/// Percent-encode a path for a `sqlite://` URL: everything but unreserved characters
/// and `/` is escaped, so spaces, `?`, `#` and `%` in file names survive.
fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Undo `%XX` escapes; `None` if the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        for path in ["/tmp/a b/c?d#e%f.db", "/plain/path.db", "/ünï/x.db"] {
            assert_eq!(percent_decode(&percent_encode(path)).unwrap(), path);
        }
        assert_eq!(percent_decode("a%2"), Some("a%2".to_owned()));
    }
}
