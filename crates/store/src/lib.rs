//! byok's persistence: one API over SQLite (the default: a single file in WAL mode) and
//! PostgreSQL (several sidecars sharing one store).
//!
//! * Every query is written once, in portable SQL, and runs through `sqlx`'s `Any` driver
//!   on either backend: fixed statements with `$1, $2, …` placeholders, statements whose
//!   shape depends on their input (filters, lists, multi-row inserts) built with each
//!   value bound where its placeholder is written (`sql.rs`). Only the DDL differs, so there are
//!   two migration directories (`migrations/sqlite`, `migrations/postgres`); migrations
//!   run on [`Store::open`].
//! * Every mutating method writes its entity *and* its lifecycle event in one
//!   transaction: nothing is ever half-written.
//! * Times are stored as microseconds since the epoch, ids as their prefixed text,
//!   hashes/nonces/ciphertexts/wrapped keys as blobs, scope and details as JSON text.
//! * No secret is stored in the clear: credential secrets arrive sealed
//!   ([`SealedSecret`](byok_crypto::SealedSecret)), tokens arrive as hashes.
//!
//! * On PostgreSQL the audit tables are partitioned by month; partitions are made ahead
//!   of time and dropped whole once every org's retention has passed them
//!   ([`Store::maintain_audit_partitions`]). SQLite stays unpartitioned.
//!
//! With the `testing` feature, [`testing`] offers fresh SQLite files and fresh
//! PostgreSQL databases for tests in this and other crates.
#![forbid(unsafe_code)]

mod append;
mod audit;
mod chain;
mod credentials;
mod directory;
mod error;
mod events;
mod export;
mod fleet;
mod notify;
mod partitions;
mod rows;
mod sql;
mod store;
mod timeline;
mod tokens;
mod usage;
mod view;

#[cfg(feature = "testing")]
pub mod testing;

pub use audit::AuditFilter;
pub use chain::{AuditEntry, BrokenLink, ChainHead, HeadRecord, Problem, Segment, VerifyReport};
pub use credentials::{CredentialRecord, WrappedDekRef};
pub use directory::OrgChange;
pub use error::StoreError;
pub use events::{EventFilter, NewEvent};
pub use export::{ExportItem, ExportSlice};
pub use fleet::SigningKeyRecord;
pub use notify::{ChangeListener, ChangeNote, Heard, CHANNEL as CHANGE_CHANNEL};
pub use partitions::{AuditMonth, DroppedMonth, PartitionReport, RetentionCuts, MONTHS_AHEAD};
pub use store::{Backend, Store};
pub use timeline::{TimelineCursor, TimelineItem};
pub use usage::{UsageRow, UsageSource};
pub use view::{AuditAppender, ResolutionView};
