//! Test support (feature `testing`): a fresh store per test, on SQLite and — when
//! `BYOK_TEST_POSTGRES_URL` is set — on a freshly created PostgreSQL database that is
//! dropped again when the [`TestStore`] is dropped, also when the test fails.
//!
//! ```no_run
//! use byok_store::testing::for_each_backend;
//!
//! # async fn my_test() {
//! // inside a #[tokio::test] async fn:
//! for_each_backend("my_test", |t| async move {
//!     let store = t.store();
//!     assert!(store.list_orgs().await.unwrap().is_empty());
//!     // `t.sqlite_path()` / `t.url()` name the raw database; `t.execute(sql)` and
//!     // `t.pool()` edit rows behind the store's back.
//! })
//! .await
//! .unwrap();
//! # }
//! ```
//!
//! `sqlx` is re-exported as [`testing::sqlx`](sqlx) so that tests can bind parameters
//! (`$1, $2, …` work on both backends) without depending on it themselves.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use byok_domain::OrgId;
use sqlx::{Any, Connection as _, Executor as _};

pub use sqlx;

use crate::error::{map_sqlx, StoreError};
use crate::store::{Backend, Store};

/// The environment variable naming a PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`. Each test creates its own database
/// through it.
pub const POSTGRES_URL_VAR: &str = "BYOK_TEST_POSTGRES_URL";

/// A store on a fresh database, plus what a test needs to look at the raw database.
#[derive(Debug)]
pub struct TestStore {
    store: Store,
    url: String,
    place: Place,
}

#[derive(Debug)]
enum Place {
    Sqlite { _dir: tempfile::TempDir, path: PathBuf },
    Postgres { _guard: DropDatabase },
}

impl TestStore {
    /// A store on a new SQLite file in a new temporary directory (removed on drop).
    pub async fn sqlite() -> Result<TestStore, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::unavailable_by("cannot create a temp dir", e))?;
        let path = dir.path().join("byok.db");
        let store = Store::open_sqlite(&path).await?;
        let url = format!("sqlite://{}", path.display());
        Ok(TestStore { store, url, place: Place::Sqlite { _dir: dir, path } })
    }

    /// A store on a new PostgreSQL database `byok_test_<ulid>` created through
    /// [`POSTGRES_URL_VAR`]; `Ok(None)` when that variable is unset or empty. The
    /// database is dropped (`WITH (FORCE)`) when the `TestStore` is dropped.
    pub async fn postgres() -> Result<Option<TestStore>, StoreError> {
        let Some(admin_url) = std::env::var(POSTGRES_URL_VAR).ok().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        sqlx::any::install_default_drivers();
        let name = format!("byok_test_{}", OrgId::generate().ulid().to_string().to_ascii_lowercase());
        let mut admin = sqlx::AnyConnection::connect(&admin_url).await.map_err(map_sqlx)?;
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await.map_err(map_sqlx)?;
        let _ = admin.close().await;
        // From here on the guard drops the database, whatever happens.
        let guard = DropDatabase { admin_url: admin_url.clone(), name: name.clone() };
        let url = with_database(&admin_url, &name);
        let store = Store::open(&url).await?;
        Ok(Some(TestStore { store, url, place: Place::Postgres { _guard: guard } }))
    }

    /// A fresh store on `backend`; `Ok(None)` for PostgreSQL when it is not configured.
    pub async fn new(backend: Backend) -> Result<Option<TestStore>, StoreError> {
        match backend {
            Backend::Sqlite => Self::sqlite().await.map(Some),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Which backend it runs on.
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// The database URL (`sqlite:///tmp/…/byok.db` or `postgres://…/byok_test_…`), for
    /// [`Store::open`] or a raw connection.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The SQLite database file (search its raw bytes); `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.place {
            Place::Sqlite { path, .. } => Some(path),
            Place::Postgres { .. } => None,
        }
    }

    /// Open a second, independent [`Store`] on the same database (runs the migrations
    /// again).
    pub async fn reopen(&self) -> Result<Store, StoreError> {
        match &self.place {
            Place::Sqlite { path, .. } => Store::open_sqlite(path).await,
            Place::Postgres { .. } => Store::open(&self.url).await,
        }
    }

    /// Run one raw SQL statement (to edit rows behind the store's back); returns the
    /// number of rows affected. Placeholders are not supported: inline literals.
    pub async fn execute(&self, sql: &str) -> Result<u64, StoreError> {
        self.store.execute_raw(sql).await.map(|r| r.rows_affected())
    }

    /// Run `sql` on the connection audit batches are written on (SQLite: the audit
    /// writer's own connection, so a per-connection `PRAGMA` such as `max_page_count`
    /// reaches it; it lasts until a batch fails, when the writer opens a fresh one).
    pub async fn execute_on_audit_connection(&self, sql: &str) -> Result<(), StoreError> {
        self.store.execute_on_audit_connection(sql).await
    }

    /// The store's writer pool, for raw parameterized SQL, e.g.
    /// `sqlx::query("UPDATE credential_versions SET ciphertext = $1").bind(bytes).execute(t.pool())`.
    pub fn pool(&self) -> &sqlx::AnyPool {
        self.store.writer()
    }

    /// Run a raw query that returns one integer (e.g. `SELECT COUNT(*) FROM …`).
    pub async fn query_i64(&self, sql: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar::<Any, i64>(sql).fetch_one(self.store.reader()).await.map_err(map_sqlx)
    }

    /// The number of rows in `table`.
    pub async fn count(&self, table: &str) -> Result<i64, StoreError> {
        self.query_i64(&format!("SELECT COUNT(*) FROM {table}")).await
    }
}

/// Run `test` on a fresh SQLite store, then on a fresh PostgreSQL store when
/// [`POSTGRES_URL_VAR`] is set; when it is not, print
/// `skipped <name> on postgres: BYOK_TEST_POSTGRES_URL is not set` and go on.
///
/// Errors only if a test store cannot be set up (a failing assertion inside `test`
/// panics as usual, and the PostgreSQL database is still dropped).
pub async fn for_each_backend<F, Fut>(name: &str, mut test: F) -> Result<(), StoreError>
where
    F: FnMut(TestStore) -> Fut,
    Fut: Future<Output = ()>,
{
    test(TestStore::sqlite().await?).await;
    match TestStore::postgres().await? {
        Some(store) => test(store).await,
        None => {
            let _ = writeln!(std::io::stderr(), "skipped {name} on postgres: {POSTGRES_URL_VAR} is not set");
        }
    }
    Ok(())
}

/// `url` with its database (path) replaced by `database`, query string kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split_once('/').map_or(rest, |(authority, _)| authority);
    match query {
        Some(query) => format!("{scheme}://{authority}/{database}?{query}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

/// Drops a test database when dropped, from a thread of its own (so it works inside
/// or outside an async runtime, and during a panic).
#[derive(Debug)]
struct DropDatabase {
    admin_url: String,
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let name = self.name.clone();
        let worker = std::thread::spawn(move || -> Result<(), String> {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = sqlx::AnyConnection::connect(&admin_url).await.map_err(|e| e.to_string())?;
                conn.execute(sql.as_str()).await.map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok(())
            })
        });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => eprintln!("could not drop test database {name}: {why}"),
            Err(_) => {
                eprintln!("could not drop test database {name}: the dropping thread panicked")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_a_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
        assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
    }
}
