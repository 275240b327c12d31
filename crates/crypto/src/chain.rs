//! The audit hash chain: canonical encoding and links.
//!
//! Every audit entry (lifecycle event, resolution row, call completion) is hashed as
//!
//! ```text
//! hash = SHA-256( "byok/audit-chain/v1" 0x00 kind 0x00 prev_hash(32 bytes) fields… )
//! ```
//!
//! where `kind` names the entry type (`event`, `resolution`, `completion`) and each
//! field, in a fixed order per kind, is encoded as a presence byte (`0` for absent, `1`
//! for present) followed, when present, by its length as a big-endian `u32` and its
//! bytes (UTF-8 text; integers as their decimal text). The encoding is unambiguous
//! whatever the field contents, and it never depends on a serializer's choices. A chain
//! starts from 32 zero bytes (or, after a retention purge, from the anchor kept for the
//! last purged entry).

use sha2::{Digest, Sha256};

const LABEL: &[u8] = b"byok/audit-chain/v1\0";

/// A link hash.
pub type ChainHash = [u8; 32];

/// Where every chain starts.
pub const GENESIS: ChainHash = [0u8; 32];

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

/// Lower-case hex of a hash (for reports).
pub fn hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
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
}
