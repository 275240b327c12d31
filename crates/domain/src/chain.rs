//! The audit hash chain: canonical encoding, the fields each kind of entry hashes, and
//! links. Pure (no I/O): the store links entries with it as it writes them and
//! recomputes them with it when it verifies; the offline verifier of an audit export
//! ([`crate::export`]) recomputes them with it from the export alone.
//!
//! Every audit entry (lifecycle event, resolution row, call completion) is hashed as
//!
//! ```text
//! hash = SHA-256( "byok/audit-chain/v1" 0x00 kind 0x00 prev_hash(32 bytes) fields… )
//! ```
//!
//! where `kind` names the entry type (`event`, `resolution`, `completion`) and each
//! field, in a fixed order per kind ([`columns`]), is encoded as a presence byte (`0` for
//! absent, `1` for present) followed, when present, by its length as a big-endian `u32`
//! and its bytes (UTF-8 text; integers as their decimal text). The encoding is
//! unambiguous whatever the field contents, and it never depends on a serializer's
//! choices. A chain starts from 32 zero bytes (or, after a retention purge, from the
//! anchor kept for the last purged entry).
//!
//! The chains: one of lifecycle events per org (position `chain_seq`), and one of
//! resolution rows and call completions per (writer segment, org) (position
//! `segment_seq`, the two kinds interleaved as they were written).

use sha2::{Digest, Sha256};

use crate::audit::{CallCompletion, ResolutionAudit};

const LABEL: &[u8] = b"byok/audit-chain/v1\0";

/// A link hash.
pub type ChainHash = [u8; 32];

/// Where every chain starts.
pub const GENESIS: ChainHash = [0u8; 32];

/// Entry kind of a lifecycle event.
pub const EVENT: &str = "event";
/// Entry kind of a resolution row.
pub const RESOLUTION: &str = "resolution";
/// Entry kind of a call completion.
pub const COMPLETION: &str = "completion";

/// Builds the canonical encoding of one entry and hashes it with its predecessor.
#[derive(Debug)]
pub struct Link {
    hasher: Sha256,
}

impl Link {
    /// Start the link of an entry of `kind` that follows `prev`.
    pub fn new(kind: &str, prev: &ChainHash) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(LABEL);
        hasher.update(kind.as_bytes());
        hasher.update([0u8]);
        hasher.update(prev);
        Self { hasher }
    }

    /// Add an optional text field.
    pub fn text(mut self, value: Option<&str>) -> Self {
        match value {
            None => self.hasher.update([0u8]),
            Some(text) => {
                self.hasher.update([1u8]);
                let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
                self.hasher.update(len.to_be_bytes());
                self.hasher.update(text.as_bytes());
            }
        }
        self
    }

    /// Add an optional integer field (encoded as decimal text).
    pub fn int(self, value: Option<i64>) -> Self {
        match value {
            None => self.text(None),
            Some(n) => self.text(Some(&n.to_string())),
        }
    }

    /// The entry's hash.
    pub fn finish(self) -> ChainHash {
        self.hasher.finalize().into()
    }
}

/// Lower-case hex of a hash (for reports and exports).
pub fn hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash from its lower-case (or upper-case) hex; `None` unless exactly 64 hex digits.
pub fn parse_hex(text: &str) -> Option<ChainHash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// A chained field value, exactly as written to its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A text column.
    Text(Option<String>),
    /// An integer column.
    Int(Option<i64>),
}

impl Field {
    /// Whether the column is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Field::Text(None) | Field::Int(None))
    }
}

/// One chained column: its name and whether it holds an integer (else text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The column's name in the store (and its key in an export).
    pub name: &'static str,
    /// An integer column (else text).
    pub int: bool,
}

const fn text(name: &'static str) -> Column {
    Column { name, int: false }
}

const fn int(name: &'static str) -> Column {
    Column { name, int: true }
}

/// Chained columns of a lifecycle event, in hash order.
pub const EVENT_COLUMNS: &[Column] = &[
    int("chain_seq"),
    text("id"),
    text("org_id"),
    text("kind"),
    text("subject"),
    text("credential_id"),
    int("version"),
    text("fingerprint"),
    text("actor"),
    int("at_us"),
    text("details"),
];

/// Chained columns of a resolution row, in hash order: the first
/// [`RESOLUTION_BASE_FIELDS`], then the extensions (see [`extensions`]).
pub const RESOLUTION_COLUMNS: &[Column] = &[
    text("segment"),
    int("segment_seq"),
    int("at_us"),
    text("call_id"),
    text("org_id"),
    text("team_id"),
    text("workflow_id"),
    text("token_id"),
    text("credential_id"),
    int("credential_version"),
    text("fingerprint"),
    text("provider"),
    text("model"),
    text("model_family"),
    text("capability"),
    text("mode"),
    text("outcome"),
    text("reason"),
    text("detail"),
    text("tier"),
    text("credential_owner"),
    int("attempt"),
];

/// How many of [`RESOLUTION_COLUMNS`] every resolution row hashes.
pub const RESOLUTION_BASE_FIELDS: usize = 19;

/// Chained columns of a call completion, in hash order: the first
/// [`COMPLETION_BASE_FIELDS`], then the extensions (see [`extensions`]): metering, then
/// the position of the resolution row the completion is bound to.
pub const COMPLETION_COLUMNS: &[Column] = &[
    text("segment"),
    int("segment_seq"),
    text("call_id"),
    text("org_id"),
    text("credential_id"),
    int("at_us"),
    int("upstream_status"),
    int("latency_us"),
    int("input_tokens"),
    int("output_tokens"),
    text("status"),
    text("team_id"),
    text("tier"),
    text("credential_owner"),
    text("provider"),
    text("model_family"),
    text("rate_card"),
    text("provider_price"),
    int("resolution_seq"),
];

/// How many of [`COMPLETION_COLUMNS`] every completion hashes.
pub const COMPLETION_BASE_FIELDS: usize = 11;

/// The chained columns of entries of `kind`, in hash order (none for an unknown kind).
pub fn columns(kind: &str) -> &'static [Column] {
    match kind {
        EVENT => EVENT_COLUMNS,
        RESOLUTION => RESOLUTION_COLUMNS,
        COMPLETION => COMPLETION_COLUMNS,
        _ => &[],
    }
}

/// The columns of `kind` as a SQL column list (`a, b, c`).
pub fn column_list(kind: &str) -> String {
    columns(kind).iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

/// Where each extension of a kind's fields starts: the columns added to it after it was
/// first written, in the order they were added (each extension runs to the next one's
/// start, the last to the end). An extension is hashed only when a field of it or of a
/// later extension is set, so entries written before it existed still verify — and
/// setting or clearing an extension field of any entry changes what is hashed, so it is
/// caught like any other change.
pub fn extensions(kind: &str) -> &'static [usize] {
    match kind {
        // The billing fields (2), then the failover attempt.
        RESOLUTION => &[RESOLUTION_BASE_FIELDS, RESOLUTION_BASE_FIELDS + 2],
        // Metering (7 fields), then the position of the resolution row it is bound to.
        COMPLETION => &[COMPLETION_BASE_FIELDS, COMPLETION_BASE_FIELDS + 7],
        _ => &[],
    }
}

/// The prefix of `fields` (an entry of `kind`, in column order) that its hash covers.
pub fn hashed_fields<'f>(kind: &str, fields: &'f [Field]) -> &'f [Field] {
    let mut end = fields.len();
    for &start in extensions(kind).iter().rev() {
        match fields.get(start..end) {
            Some(extension) if extension.iter().all(Field::is_null) => end = start,
            _ => break,
        }
    }
    &fields[..end]
}

/// The hash of an entry of `kind` with `fields` (in column order) that follows `prev`.
pub fn link(kind: &str, prev: &ChainHash, fields: &[Field]) -> ChainHash {
    hashed_fields(kind, fields)
        .iter()
        .fold(Link::new(kind, prev), |link, field| match field {
            Field::Text(value) => link.text(value.as_deref()),
            Field::Int(value) => link.int(*value),
        })
        .finish()
}

fn text_of(value: Option<impl ToString>) -> Field {
    Field::Text(value.map(|v| v.to_string()))
}

fn opt_u64(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The values of a resolution row's chained columns ([`RESOLUTION_COLUMNS`]), in order,
/// at position `seq` of `segment`.
pub fn resolution_fields(segment: &str, seq: i64, row: &ResolutionAudit) -> Vec<Field> {
    vec![
        Field::Text(Some(segment.to_owned())),
        Field::Int(Some(seq)),
        Field::Int(Some(row.at.as_micros())),
        Field::Text(Some(row.call_id.clone())),
        text_of(row.org_id),
        text_of(row.team_id),
        text_of(row.workflow_id),
        text_of(row.token_id),
        text_of(row.credential_id),
        Field::Int(row.credential_version.map(i64::from)),
        Field::Text(row.fingerprint.clone()),
        text_of(row.provider.map(|p| p.as_str())),
        Field::Text(row.model.clone()),
        Field::Text(row.model_family.clone()),
        text_of(row.capability.map(|c| c.as_str())),
        text_of(row.mode.map(|m| m.as_str())),
        Field::Text(Some(row.outcome.as_str().to_owned())),
        Field::Text(row.reason.clone()),
        Field::Text(row.detail.clone()),
        text_of(row.tier.map(|t| t.as_str())),
        text_of(row.credential_owner.map(|o| o.as_str())),
        Field::Int(row.attempt.map(i64::from)),
    ]
}

/// The values of a completion's chained columns ([`COMPLETION_COLUMNS`]), in order, at
/// position `seq` of `segment`; `resolution` is the position of the row it is bound to.
pub fn completion_fields(segment: &str, seq: i64, c: &CallCompletion, resolution: Option<i64>) -> Vec<Field> {
    vec![
        Field::Text(Some(segment.to_owned())),
        Field::Int(Some(seq)),
        Field::Text(Some(c.call_id.clone())),
        Field::Text(Some(c.org_id.to_string())),
        Field::Text(Some(c.credential_id.to_string())),
        Field::Int(Some(c.at.as_micros())),
        Field::Int(c.upstream_status.map(i64::from)),
        Field::Int(Some(c.latency_us)),
        Field::Int(opt_u64(c.input_tokens)),
        Field::Int(opt_u64(c.output_tokens)),
        Field::Text(Some(c.status.clone())),
        text_of(c.metering.as_ref().map(|m| m.team_id)),
        text_of(c.metering.as_ref().map(|m| m.tier.as_str())),
        text_of(c.metering.as_ref().map(|m| m.credential_owner.as_str())),
        text_of(c.metering.as_ref().map(|m| m.provider.as_str())),
        Field::Text(c.metering.as_ref().and_then(|m| m.model_family.clone())),
        Field::Text(c.metering.as_ref().map(|m| m.rate_card.clone())),
        Field::Text(c.metering.as_ref().and_then(|m| m.provider_price.clone())),
        Field::Int(resolution),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_unambiguous_and_order_sensitive() {
        let a = Link::new("event", &GENESIS).text(Some("ab")).text(Some("c")).finish();
        let b = Link::new("event", &GENESIS).text(Some("a")).text(Some("bc")).finish();
        let c = Link::new("event", &GENESIS).text(None).text(Some("abc")).finish();
        let d = Link::new("event", &GENESIS).text(Some("")).text(Some("abc")).finish();
        let e = Link::new("resolution", &GENESIS).text(Some("ab")).text(Some("c")).finish();
        let f = Link::new("event", &a).text(Some("ab")).text(Some("c")).finish();
        let all = [a, b, c, d, e, f];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(a, Link::new("event", &GENESIS).text(Some("ab")).text(Some("c")).finish());
        assert_eq!(Link::new("k", &GENESIS).int(Some(42)).finish(), Link::new("k", &GENESIS).text(Some("42")).finish());
    }

    #[test]
    fn hex_round_trips() {
        let hash = Link::new("event", &GENESIS).finish();
        assert_eq!(parse_hex(&hex(&hash)), Some(hash));
        assert_eq!(parse_hex(&hex(&hash).to_uppercase()), Some(hash));
        for bad in ["", "00", &"0".repeat(63), &"g".repeat(64), &"é".repeat(32)] {
            assert_eq!(parse_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn unset_extensions_are_not_hashed_and_set_ones_are() {
        let base: Vec<Field> = COMPLETION_COLUMNS
            .iter()
            .enumerate()
            .map(|(i, c)| match (i < COMPLETION_BASE_FIELDS, c.int) {
                (true, true) => Field::Int(Some(i as i64)),
                (true, false) => Field::Text(Some(c.name.to_owned())),
                (false, true) => Field::Int(None),
                (false, false) => Field::Text(None),
            })
            .collect();
        assert_eq!(hashed_fields(COMPLETION, &base).len(), COMPLETION_BASE_FIELDS);
        let mut bound = base.clone();
        bound[COMPLETION_COLUMNS.len() - 1] = Field::Int(Some(1));
        assert_eq!(hashed_fields(COMPLETION, &bound).len(), COMPLETION_COLUMNS.len());
        assert_ne!(link(COMPLETION, &GENESIS, &base), link(COMPLETION, &GENESIS, &bound));
        assert_eq!(column_list(EVENT).split(", ").count(), EVENT_COLUMNS.len());
        assert_eq!(columns("nothing"), &[] as &[Column]);
    }
}
