//! SQL whose shape depends on its input (optional filters, lists, multi-row inserts),
//! built with each value bound where its placeholder is written.
//!
//! This is `sqlx::QueryBuilder` with its `push` / `push_bind` / `separated` /
//! `push_tuples`, but with placeholders each backend takes: `QueryBuilder<Any>` writes
//! `?` for every value whatever the database (`AnyArguments` keeps the default
//! placeholder), which PostgreSQL rejects. Here PostgreSQL gets `$1, $2, …` and SQLite
//! anonymous `?` (sqlx looks every `$N` up by name on SQLite, which costs more than a
//! large insert itself).

use std::fmt::Display;

use sqlx::any::AnyArguments;
use sqlx::error::BoxDynError;
use sqlx::query::{Query, QueryScalar};
use sqlx::{Any, Arguments as _, Encode, Type};

use crate::error::{map_sqlx, StoreError};
use crate::store::Backend;

/// A statement being built: its text and its values, in placeholder order.
pub(crate) struct Sql<'q> {
    backend: Backend,
    sql: String,
    args: AnyArguments<'q>,
    /// The first value that did not encode; [`Sql::query`] reports it.
    failed: Option<BoxDynError>,
}

impl<'q> Sql<'q> {
    /// A statement for `backend` starting with `init`.
    pub(crate) fn new(backend: Backend, init: impl Into<String>) -> Self {
        Self { backend, sql: init.into(), args: AnyArguments::default(), failed: None }
    }

    /// Append SQL text (never a value: values go through [`Sql::push_bind`]).
    pub(crate) fn push(&mut self, sql: impl Display) -> &mut Self {
        use std::fmt::Write as _;
        let _ = write!(self.sql, "{sql}");
        self
    }

    /// Append a placeholder and bind `value` to it.
    pub(crate) fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        if let Err(err) = self.args.add(value) {
            self.failed.get_or_insert(err);
        }
        match self.backend {
            Backend::Sqlite => self.sql.push('?'),
            Backend::Postgres => {
                let n = self.args.len();
                self.push(format_args!("${n}"));
            }
        }
        self
    }

    /// `column = <value>`, or `column IS NULL` when `value` is `None`.
    pub(crate) fn push_eq_or_null<T>(&mut self, column: &str, value: Option<T>) -> &mut Self
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        match value {
            Some(value) => self.push(format_args!("{column} = ")).push_bind(value),
            None => self.push(format_args!("{column} IS NULL")),
        }
    }

    /// A list of values separated by `separator` (`a, b, c` for `IN (…)`).
    pub(crate) fn separated<'b>(&'b mut self, separator: &'static str) -> Separated<'b, 'q> {
        Separated { sql: self, separator, first: true }
    }

    /// `(…), (…), …`: one parenthesized tuple per item, whose values `push_tuple` binds
    /// (the rows of a multi-row `VALUES`).
    pub(crate) fn push_tuples<I, F>(&mut self, items: I, mut push_tuple: F) -> &mut Self
    where
        I: IntoIterator,
        F: FnMut(&mut Separated<'_, 'q>, I::Item),
    {
        for (i, item) in items.into_iter().enumerate() {
            self.push(if i == 0 { "(" } else { ", (" });
            push_tuple(&mut self.separated(", "), item);
            self.push(")");
        }
        self
    }

    /// The statement with its values, to run. Takes the values: call it once.
    pub(crate) fn query(&mut self) -> Result<Query<'_, Any, AnyArguments<'_>>, StoreError> {
        let args = self.take_args()?;
        Ok(sqlx::query_with(&self.sql, args))
    }

    /// The statement with its values, to run for one column. Takes the values: call it once.
    pub(crate) fn query_scalar<O>(&mut self) -> Result<QueryScalar<'_, Any, O, AnyArguments<'_>>, StoreError>
    where
        (O,): for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        let args = self.take_args()?;
        Ok(sqlx::query_scalar_with(&self.sql, args))
    }

    fn take_args(&mut self) -> Result<AnyArguments<'q>, StoreError> {
        if let Some(err) = self.failed.take() {
            return Err(map_sqlx(sqlx::Error::Encode(err)));
        }
        Ok(std::mem::take(&mut self.args))
    }

    /// The text built so far.
    #[cfg(test)]
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }
}

/// Values (or SQL) separated by a fixed separator; see [`Sql::separated`].
pub(crate) struct Separated<'b, 'q> {
    sql: &'b mut Sql<'q>,
    separator: &'static str,
    first: bool,
}

impl<'q> Separated<'_, 'q> {
    /// The separator (but before the first item), then a placeholder bound to `value`.
    pub(crate) fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        if !std::mem::take(&mut self.first) {
            self.sql.push(self.separator);
        }
        self.sql.push_bind(value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(backend: Backend) -> String {
        let mut sql = Sql::new(backend, "SELECT a FROM t WHERE ");
        sql.push_eq_or_null("org_id", Some("org")).push(" AND ").push_eq_or_null::<i64>("team_id", None);
        sql.push(" AND seq IN (");
        let mut list = sql.separated(", ");
        for seq in [1_i64, 2, 3] {
            list.push_bind(seq);
        }
        sql.push(") AND (x, y) IN (").push_tuples([(1_i64, 2_i64), (3, 4)], |values, (x, y)| {
            values.push_bind(x).push_bind(y);
        });
        sql.push(")");
        sql.sql().to_owned()
    }

    #[test]
    fn placeholders_per_backend() {
        assert_eq!(
            build(Backend::Postgres),
            "SELECT a FROM t WHERE org_id = $1 AND team_id IS NULL AND seq IN ($2, $3, $4) \
             AND (x, y) IN (($5, $6), ($7, $8))"
        );
        assert_eq!(
            build(Backend::Sqlite),
            "SELECT a FROM t WHERE org_id = ? AND team_id IS NULL AND seq IN (?, ?, ?) AND (x, y) IN ((?, ?), (?, ?))"
        );
    }

    /// The values reach their placeholders on both backends (PostgreSQL when
    /// `BYOK_TEST_POSTGRES_URL` is set), including after a list and in tuples.
    #[tokio::test]
    async fn binds_where_written_on_both_backends() {
        crate::testing::for_each_backend("sql_binds_where_written", |t| async move {
            let store = t.store();
            let mut sql = Sql::new(store.backend(), "SELECT CASE WHEN CAST(");
            sql.push_bind(2_i64).push(" AS BIGINT) IN (");
            let mut list = sql.separated(", ");
            for value in [1_i64, 2, 3] {
                list.push_bind(value);
            }
            sql.push(") AND (CAST(");
            sql.push_bind("a").push(" AS TEXT), CAST(").push_bind(7_i64).push(" AS BIGINT)) IN (");
            sql.push_tuples([("b", 7_i64), ("a", 7)], |values, (text, number)| {
                values.push_bind(text).push_bind(number);
            });
            sql.push(") AND ").push_eq_or_null::<&str>("CAST(NULL AS TEXT)", None);
            sql.push(" THEN CAST(").push_bind("yes").push(" AS TEXT) ELSE CAST(").push_bind("no").push(" AS TEXT) END");
            let answer = sql.query_scalar::<String>().unwrap().fetch_one(store.reader()).await.unwrap();
            assert_eq!(answer, "yes", "{:?}", store.backend());
        })
        .await
        .unwrap();
    }
}
