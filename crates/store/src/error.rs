//! The store's error type and the mapping from `sqlx` errors onto it.
//!
//! Messages never contain a secret: no bound values are echoed, database URLs are shown
//! with their password removed, and decoded values are echoed only from non-secret
//! columns (ids, names, enum text), cut to a short length.

use byok_domain::BoxError;
use sqlx::error::ErrorKind;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or used right now (connection, I/O, pool, busy,
    /// disk full). Callers answer `503 store_unavailable`; a retry may succeed.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What could not be done.
        reason: String,
        /// The driver's or the system's error, if there was one.
        #[source]
        source: Option<BoxError>,
    },
    /// A uniqueness rule was violated; `what` is a readable sentence naming the thing,
    /// e.g. "an org named 'acme' already exists".
    #[error("{what}")]
    Conflict {
        /// What already exists.
        what: String,
    },
    /// The thing operated on (or one it refers to) does not exist.
    #[error("{what}")]
    NotFound {
        /// What is missing.
        what: String,
    },
    /// Optimistic concurrency failure: the row changed since the caller read it.
    #[error("{what}")]
    Stale {
        /// What changed.
        what: String,
    },
    /// A stored row does not decode (bad id text, unknown enum value, bad JSON, out of
    /// range number). Never a panic.
    #[error("corrupt store row: {0}")]
    Corrupt(String),
    /// Schema migrations failed or the database holds a schema this build does not know.
    #[error("store migration failed: {0}")]
    Migration(String),
    /// The database URL or path is not usable (unknown scheme, not UTF-8, in-memory).
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether this error means "the store is down" (as opposed to a problem with the
    /// request or the data).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// The store cannot be used: `reason`, with no further cause.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable { reason: reason.into(), source: None }
    }

    /// The store cannot be used: `reason`, because of `source`.
    pub fn unavailable_by(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable { reason: reason.into(), source: Some(source.into()) }
    }
}

/// What a constraint violation is about, as reported by the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// A unique or primary-key constraint.
    Unique,
    /// A foreign-key constraint.
    ForeignKey,
}

/// The violated constraint (if the error is one) and the database's own description of
/// it (constraint name on PostgreSQL, "UNIQUE constraint failed: t.col" on SQLite),
/// lower-cased, for the caller to tell which rule it was.
pub(crate) fn violation(err: &sqlx::Error) -> Option<(Violation, String)> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let kind = match db.kind() {
        ErrorKind::UniqueViolation => Violation::Unique,
        ErrorKind::ForeignKeyViolation => Violation::ForeignKey,
        _ => return None,
    };
    let mut about = db.constraint().unwrap_or_default().to_ascii_lowercase();
    about.push(' ');
    about.push_str(&db.message().to_ascii_lowercase());
    Some((kind, about))
}

/// Map an error with no constraint-specific meaning at this call site.
pub(crate) fn map_sqlx(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match db.kind() {
                ErrorKind::UniqueViolation => {
                    StoreError::Conflict { what: format!("already exists ({})", db.message()) }
                }
                ErrorKind::ForeignKeyViolation => {
                    StoreError::NotFound { what: format!("a referenced row does not exist ({})", db.message()) }
                }
                _ if code.is_empty() => StoreError::unavailable(format!("database error: {}", db.message())),
                _ => StoreError::unavailable(format!("database error {code}: {}", db.message())),
            }
        }
        sqlx::Error::ColumnDecode { index, source } => {
            StoreError::Corrupt(format!("column {index} does not decode: {source}"))
        }
        sqlx::Error::Decode(source) => StoreError::Corrupt(format!("a value does not decode: {source}")),
        sqlx::Error::ColumnNotFound(col) => StoreError::Corrupt(format!("column '{col}' is missing")),
        sqlx::Error::ColumnIndexOutOfBounds { index, len } => {
            StoreError::Corrupt(format!("column index {index} out of bounds ({len} columns)"))
        }
        sqlx::Error::TypeNotFound { type_name } => StoreError::Corrupt(format!("unknown database type '{type_name}'")),
        sqlx::Error::Migrate(e) => StoreError::Migration(e.to_string()),
        sqlx::Error::Configuration(e) => StoreError::Config(e.to_string()),
        sqlx::Error::PoolTimedOut => StoreError::unavailable("timed out waiting for a database connection"),
        sqlx::Error::PoolClosed => StoreError::unavailable("the store is closed"),
        // I/O, TLS, protocol: the driver's error is the cause, kept whole.
        other => StoreError::unavailable_by("cannot use the database", other),
    }
}

/// Map an insert's error: a unique violation becomes `Conflict` with the message chosen
/// by `conflict` (given the database's description of the rule), a foreign-key violation
/// becomes `NotFound` with the message from `missing`.
pub(crate) fn map_insert(
    err: sqlx::Error,
    conflict: impl FnOnce(&str) -> String,
    missing: impl FnOnce(&str) -> String,
) -> StoreError {
    match violation(&err) {
        Some((Violation::Unique, about)) => StoreError::Conflict { what: conflict(&about) },
        Some((Violation::ForeignKey, about)) => StoreError::NotFound { what: missing(&about) },
        None => map_sqlx(err),
    }
}

/// `text` cut to a length that is safe to echo in an error message.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// `url` with any password replaced by `***`, for logs and messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db?x=1"), "postgres://u:***@h:5432/db?x=1");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }

    #[test]
    fn clips_long_text() {
        assert_eq!(clip("short"), "short");
        assert!(clip(&"x".repeat(500)).chars().count() <= 81);
    }
}
