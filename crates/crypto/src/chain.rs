//! The audit hash chain: canonical encoding and links.
//!
//! The encoding lives in [`byok_domain::chain`] (pure, so the offline verifier of an
//! audit export uses exactly the same code); it is re-exported here for the crates that
//! have always found it here.

pub use byok_domain::chain::{hex, parse_hex, ChainHash, Link, GENESIS};
