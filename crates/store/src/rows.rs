//! Decoding stored rows into domain values without ever panicking.
//!
//! Every read goes through [`Row`], which turns a missing column, a wrong storage type,
//! an unparsable id, an unknown enum text, bad JSON or an out-of-range number into
//! [`StoreError::Corrupt`] naming the table and column.

use std::fmt::Display;
use std::str::FromStr;

use byok_crypto::chain::ChainHash;
use byok_domain::{Name, Timestamp};
use serde::de::DeserializeOwned;
use sqlx::any::AnyRow;
use sqlx::Row as _;

use crate::error::{clip, StoreError};

/// A row of `table`, read column by column.
pub(crate) struct Row<'r> {
    row: &'r AnyRow,
    table: &'r str,
}

impl<'r> Row<'r> {
    /// Wrap `row`, which came from `table` (for messages).
    pub(crate) fn new(row: &'r AnyRow, table: &'r str) -> Self {
        Self { row, table }
    }

    /// The error for a value of `col` that is wrong for another reason than those
    /// caught here (a check across columns, a parser of its own).
    pub(crate) fn corrupt(&self, col: &str, why: impl Display) -> StoreError {
        StoreError::Corrupt(format!("{}.{col}: {why}", self.table))
    }

    fn get<T>(&self, col: &str) -> Result<T, StoreError>
    where
        T: for<'a> sqlx::Decode<'a, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.row.try_get::<T, _>(col).map_err(|e| self.corrupt(col, e))
    }

    /// A non-null text column.
    pub(crate) fn text(&self, col: &str) -> Result<String, StoreError> {
        self.get::<String>(col)
    }

    /// A nullable text column.
    pub(crate) fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.get::<Option<String>>(col)
    }

    /// A non-null integer column.
    pub(crate) fn int(&self, col: &str) -> Result<i64, StoreError> {
        self.get::<i64>(col)
    }

    /// A nullable integer column.
    pub(crate) fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        self.get::<Option<i64>>(col)
    }

    /// A non-null blob column.
    pub(crate) fn blob(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        self.get::<Vec<u8>>(col)
    }

    /// A nullable blob column.
    pub(crate) fn opt_blob(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get::<Option<Vec<u8>>>(col)
    }

    /// A non-null blob column holding a chain hash (32 bytes).
    pub(crate) fn chain_hash(&self, col: &str) -> Result<ChainHash, StoreError> {
        let bytes = self.blob(col)?;
        ChainHash::try_from(bytes.as_slice()).map_err(|_| self.corrupt(col, "is not 32 bytes"))
    }

    /// A text column parsed with `FromStr` (ids, enums).
    pub(crate) fn parse<T>(&self, col: &str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text = self.text(col)?;
        text.parse().map_err(|e| self.corrupt(col, format!("'{}' does not parse: {e}", clip(&text))))
    }

    /// A text column holding a validated [`Name`].
    pub(crate) fn parse_name(&self, col: &str) -> Result<Name, StoreError> {
        let text = self.text(col)?;
        Name::parse(&text).map_err(|e| self.corrupt(col, e))
    }

    /// A nullable text column holding a validated [`Name`].
    pub(crate) fn opt_name(&self, col: &str) -> Result<Option<Name>, StoreError> {
        match self.opt_text(col)? {
            Some(text) => Name::parse(&text).map(Some).map_err(|e| self.corrupt(col, e)),
            None => Ok(None),
        }
    }

    /// A nullable text column parsed with `FromStr`.
    pub(crate) fn opt_parse<T>(&self, col: &str) -> Result<Option<T>, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.opt_text(col)? {
            None => Ok(None),
            Some(text) => {
                text.parse().map(Some).map_err(|e| self.corrupt(col, format!("'{}' does not parse: {e}", clip(&text))))
            }
        }
    }

    /// A nullable text column in which empty text also means none (the usage rollup's
    /// keys).
    pub(crate) fn nonempty_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.opt_text(col)?.filter(|text| !text.is_empty()))
    }

    /// A [`nonempty_text`](Self::nonempty_text) column parsed with `FromStr`.
    pub(crate) fn nonempty_parse<T>(&self, col: &str) -> Result<Option<T>, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.nonempty_text(col)? {
            None => Ok(None),
            Some(text) => {
                text.parse().map(Some).map_err(|e| self.corrupt(col, format!("'{}' does not parse: {e}", clip(&text))))
            }
        }
    }

    /// A non-null integer column that must not be negative.
    pub(crate) fn u64(&self, col: &str) -> Result<u64, StoreError> {
        let value = self.int(col)?;
        u64::try_from(value).map_err(|_| self.corrupt(col, format!("{value} is negative")))
    }

    /// A non-null integer column that must fit a `u32`.
    pub(crate) fn u32(&self, col: &str) -> Result<u32, StoreError> {
        let value = self.int(col)?;
        u32::try_from(value).map_err(|_| self.corrupt(col, format!("{value} is out of range")))
    }

    /// A nullable integer column that must fit a `u32`.
    pub(crate) fn opt_u32(&self, col: &str) -> Result<Option<u32>, StoreError> {
        match self.opt_int(col)? {
            None => Ok(None),
            Some(value) => {
                u32::try_from(value).map(Some).map_err(|_| self.corrupt(col, format!("{value} is out of range")))
            }
        }
    }

    /// A non-null integer column that must fit an `i32`.
    pub(crate) fn i32(&self, col: &str) -> Result<i32, StoreError> {
        let value = self.int(col)?;
        i32::try_from(value).map_err(|_| self.corrupt(col, format!("{value} is out of range")))
    }

    /// A non-null microsecond timestamp column.
    pub(crate) fn ts(&self, col: &str) -> Result<Timestamp, StoreError> {
        let micros = self.int(col)?;
        Timestamp::from_micros(micros).ok_or_else(|| self.corrupt(col, format!("{micros} is not a valid time")))
    }

    /// A nullable microsecond timestamp column.
    pub(crate) fn opt_ts(&self, col: &str) -> Result<Option<Timestamp>, StoreError> {
        match self.opt_int(col)? {
            None => Ok(None),
            Some(micros) => Timestamp::from_micros(micros)
                .map(Some)
                .ok_or_else(|| self.corrupt(col, format!("{micros} is not a valid time"))),
        }
    }

    /// A non-null JSON text column.
    pub(crate) fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError> {
        let text = self.text(col)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(col, format!("bad JSON: {e}")))
    }

    /// A nullable JSON text column.
    pub(crate) fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError> {
        match self.opt_text(col)? {
            None => Ok(None),
            Some(text) => {
                serde_json::from_str(&text).map(Some).map_err(|e| self.corrupt(col, format!("bad JSON: {e}")))
            }
        }
    }
}

/// Encode a value as JSON text for a column.
pub(crate) fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode {what} as JSON: {e}")))
}
