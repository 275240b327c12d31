#![doc = include_str!("manual/index.md")]
// Documentation only: each module below is one page of `manual/`, rendered by rustdoc.

pub mod tamper_evidence {
    #![doc = include_str!("manual/tamper_evidence.md")]
}
