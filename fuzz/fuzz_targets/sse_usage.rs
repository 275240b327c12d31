//! The usage tap (token usage read from JSON, SSE and AWS event-stream responses as they
//! stream by).
//!
//! Input: `[selector, chunk seed, chunk seed, max chunk]` then the response body. The
//! selector picks the API dialect (low 3 bits) and the content type (the rest).
//!
//! Properties: nothing panics; the usage read does not depend on how the body is cut
//! into chunks (whole, one byte at a time, or any cutting the seed makes).
#![no_main]

use byok_providers::{Api, Usage, UsageTap};
use libfuzzer_sys::fuzz_target;

const APIS: [Api; 5] = [Api::OpenAi, Api::AzureOpenAi, Api::Anthropic, Api::Gemini, Api::Bedrock];
const CONTENT_TYPES: [Option<&str>; 7] = [
    Some("application/vnd.amazon.eventstream"),
    Some("text/event-stream"),
    Some("text/event-stream; charset=utf-8"),
    Some("application/json"),
    None,
    Some("application/x-ndjson"),
    Some("text/event-streamx"),
];

/// Chunk lengths from a seed: a small xorshift generator, each length in `1..=max`.
fn cuts(len: usize, seed: u16, max: usize) -> Vec<usize> {
    let mut state = u32::from(seed) | 0x1_0000;
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = 1 + (state as usize) % max.max(1);
        out.push(size.min(len - at));
        at += size;
    }
    out
}

fn usage(api: Api, content_type: Option<&str>, body: &[u8], sizes: &[usize]) -> Usage {
    let mut tap = UsageTap::new(api, content_type);
    let mut at = 0;
    for size in sizes {
        tap.feed(&body[at..at + size]);
        at += size;
    }
    tap.feed(&body[at..]);
    tap.finish()
}

fuzz_target!(|data: &[u8]| {
    let Some((&[selector, seed_lo, seed_hi, max], body)) = data.split_first_chunk::<4>() else { return };
    let api = APIS[usize::from(selector & 7) % APIS.len()];
    let content_type = CONTENT_TYPES[usize::from(selector >> 3) % CONTENT_TYPES.len()];
    let whole = usage(api, content_type, body, &[]);
    let bytes = usage(api, content_type, body, &vec![1; body.len()]);
    assert_eq!(whole, bytes, "{api:?} {content_type:?}: one byte at a time reads other usage");
    let sizes = cuts(body.len(), u16::from_le_bytes([seed_lo, seed_hi]), usize::from(max));
    let cut = usage(api, content_type, body, &sizes);
    assert_eq!(whole, cut, "{api:?} {content_type:?}: chunks {sizes:?} read other usage");
});
