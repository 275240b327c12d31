//! Opening the store: URL parsing, connection pools, pragmas and migrations.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor as _, Transaction};

use crate::error::{map_sqlx, redact_url, StoreError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite connection waits for a lock held by another process.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;
/// Readers in the SQLite read pool (WAL lets them run beside the one writer).
const SQLITE_READERS: u32 = 4;
/// Connections in the PostgreSQL pool.
const POSTGRES_CONNECTIONS: u32 = 10;
/// How long a caller waits for a pooled connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

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

        let writer = sqlite_pool_options(1, false).connect(&url).await.map_err(|e| open_error(&location, e))?;
        let mode = sqlx::query_scalar::<Any, String>("PRAGMA journal_mode = WAL")
            .fetch_one(&writer)
            .await
            .map_err(|e| open_error(&location, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!("{location}: SQLite refused WAL journal mode (got '{mode}')")));
        }
        SQLITE_MIGRATIONS.run(&writer).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        let reader =
            sqlite_pool_options(SQLITE_READERS, true).connect(&url).await.map_err(|e| open_error(&location, e))?;
        tracing::info!(store = %location, "opened SQLite store");
        Ok(Store { inner: Arc::new(Inner { backend: Backend::Sqlite, reader, writer, location }) })
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let location = redact_url(url);
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|e| open_error(&location, e))?;
        POSTGRES_MIGRATIONS.run(&pool).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        tracing::info!(store = %location, "opened PostgreSQL store");
        Ok(Store {
            inner: Arc::new(Inner { backend: Backend::Postgres, reader: pool.clone(), writer: pool, location }),
        })
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

    /// Close every connection; later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.inner.reader.close().await;
        self.inner.writer.close().await;
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

fn sqlite_pool_options(max: u32, read_only: bool) -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(max).acquire_timeout(ACQUIRE_TIMEOUT).after_connect(move |conn, _meta| {
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
}

fn open_error(location: &str, err: sqlx::Error) -> StoreError {
    match map_sqlx(err) {
        StoreError::Unavailable(why) => StoreError::Unavailable(format!("cannot open {location}: {why}")),
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
