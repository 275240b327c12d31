//! The response redactor: a provider key echoed back in any encoded form, anywhere in a
//! body that arrives in any chunks, never reaches the application.
//!
//! Input: `[form, key length, chunk seed, chunk seed, max chunk, variation seed,
//! variation seed, position]`, then the key (16 + `key length` % 64 bytes, made printable
//! ASCII as byok accepts, without `*`), then the surrounding text. The key is written in
//! the chosen form (raw, upper- or mixed-case, JSON `\u`-escaped, `\/`, percent-encoded,
//! mixed escapes, hex, base64 standard or URL-safe of the key, of `user:key` and of
//! `Bearer key`) and put into the text at `position`.
//!
//! Properties, for the body cut into chunks by the seed and for the whole body at once:
//! * the output has the input's length and differs from it only by `*`;
//! * no form of the key survives: a reference matcher written from the redactor's
//!   documentation (the key, its hex and its base64 at each offset, compared without
//!   regard to case, each character literal or escaped as `\uXXXX`, `\/`, `\\`, `\"` or
//!   `%XX`) finds nothing in the output;
//! * the output does not depend on the chunking;
//! * the surrounding text alone, when the reference finds nothing in it, passes
//!   unchanged.
#![no_main]

use byok_proxy::fuzzing::redact_chunks;
use libfuzzer_sys::fuzz_target;

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// A small xorshift generator: chunk sizes and per-character choices.
struct Rng(u32);

impl Rng {
    fn new(lo: u8, hi: u8) -> Self {
        Rng(u32::from(u16::from_le_bytes([lo, hi])) | 0x1_0000)
    }
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0 as usize
    }
}

fn base64(data: &[u8], table: &[u8; 64], pad: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for group in data.chunks(3) {
        let n = u32::from(group[0]) << 16
            | u32::from(*group.get(1).unwrap_or(&0)) << 8
            | u32::from(*group.get(2).unwrap_or(&0));
        for k in 0..=group.len() {
            out.push(table[((n >> (18 - 6 * k)) & 63) as usize]);
        }
        if pad {
            out.extend(std::iter::repeat_n(b'=', 3 - group.len()));
        }
    }
    out
}

fn hex(data: &[u8], upper: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for byte in data {
        for nibble in [byte >> 4, byte & 15] {
            let c = HEX[usize::from(nibble)];
            out.push(if upper { c.to_ascii_uppercase() } else { c });
        }
    }
    out
}

fn u_escape(c: u8, upper: bool) -> Vec<u8> {
    let text = if upper { format!("\\u{:04X}", c) } else { format!("\\u{:04x}", c) };
    text.into_bytes()
}

fn percent(c: u8, upper: bool) -> Vec<u8> {
    let text = if upper { format!("%{c:02X}") } else { format!("%{c:02x}") };
    text.into_bytes()
}

/// One character written literally or in any escape that decodes to it.
fn mixed_char(c: u8, rng: &mut Rng) -> Vec<u8> {
    match rng.next() % 6 {
        0 => u_escape(c, false),
        1 => u_escape(c, true),
        2 => percent(c, rng.next() & 1 == 0),
        3 if matches!(c, b'/' | b'\\' | b'"') => vec![b'\\', c],
        4 if c.is_ascii_alphabetic() => vec![c ^ 0x20],
        _ => vec![c],
    }
}

/// The key written in form `selector`.
fn encode(key: &[u8], selector: u8, rng: &mut Rng) -> Vec<u8> {
    let with = |prefix: &[u8]| [prefix, key].concat();
    match selector % 18 {
        0 => key.to_vec(),
        1 => key.to_ascii_uppercase(),
        2 => key.iter().map(|c| if rng.next() & 1 == 0 { c.to_ascii_uppercase() } else { *c }).collect(),
        3 => key.iter().flat_map(|c| u_escape(*c, false)).collect(),
        4 => key.iter().flat_map(|c| u_escape(*c, true)).collect(),
        5 => key.iter().flat_map(|c| mixed_char(*c, rng)).collect(),
        6 => key.iter().flat_map(|c| percent(*c, true)).collect(),
        // As a JSON encoder that escapes `/` writes it inside a string.
        7 => key
            .iter()
            .flat_map(|c| match c {
                b'/' | b'\\' | b'"' => vec![b'\\', *c],
                _ => vec![*c],
            })
            .collect(),
        8 => hex(key, false),
        9 => hex(key, true),
        10 => base64(key, STANDARD, true),
        11 => base64(&with(b"user:"), STANDARD, true),
        12 => base64(&with(b"Bearer "), STANDARD, true),
        13 => base64(key, URL_SAFE, false),
        14 => base64(&with(b"user:"), URL_SAFE, false),
        15 => base64(&with(b"Bearer "), URL_SAFE, false),
        16 => base64(&with(b"user:"), STANDARD, true)
            .into_iter()
            .flat_map(|c| if c == b'/' { b"\\/".to_vec() } else { vec![c] })
            .collect(),
        _ => base64(key, STANDARD, false)
            .into_iter()
            .flat_map(|c| match c {
                b'/' => b"%2F".to_vec(),
                b'+' => b"%2b".to_vec(),
                _ => vec![c],
            })
            .collect(),
    }
}

/// The patterns the redactor documents: the key, its hex, and the base64 characters that
/// carry only key bits at each of the three offsets, in both alphabets; lower-cased.
fn patterns(key: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![key.to_vec(), hex(key, false)];
    for offset in 0..3 {
        let mut data = vec![0_u8; offset];
        data.extend_from_slice(key);
        let first = (8 * offset).div_ceil(6);
        let end = 8 * (offset + key.len()) / 6;
        for table in [STANDARD, URL_SAFE] {
            out.push(base64(&data, table, false)[first..end].to_vec());
        }
    }
    for pattern in &mut out {
        pattern.make_ascii_lowercase();
    }
    out
}

fn hex_value(c: u8) -> Option<u32> {
    char::from(c).to_digit(16)
}

/// The ASCII character an escape at `text[at..]` decodes to, with the escape's length.
fn decode(text: &[u8], at: usize) -> Option<(u8, usize)> {
    match (text.get(at)?, text.get(at + 1)?) {
        (b'%', &high) => {
            let value = hex_value(high)? << 4 | hex_value(*text.get(at + 2)?)?;
            u8::try_from(value).ok().filter(u8::is_ascii).map(|c| (c, 3))
        }
        (b'\\', &kind @ (b'/' | b'\\' | b'"')) => Some((kind, 2)),
        (b'\\', b'u') => {
            let digits = text.get(at + 2..at + 6)?;
            let value = digits.iter().try_fold(0_u32, |acc, d| Some(acc << 4 | hex_value(*d)?))?;
            u8::try_from(value).ok().filter(u8::is_ascii).map(|c| (c, 6))
        }
        _ => None,
    }
}

/// Where some pattern occurs in `text` (each character literal or escaped, without regard
/// to case): every way of reading the text is followed, not only the greedy one.
fn reference_find(text: &[u8], patterns: &[Vec<u8>]) -> Option<(usize, usize)> {
    for start in 0..text.len() {
        for pattern in patterns {
            let mut states = vec![start];
            for &want in pattern {
                let mut next = Vec::new();
                for &at in &states {
                    if text.get(at).is_some_and(|c| c.to_ascii_lowercase() == want) {
                        next.push(at + 1);
                    }
                    if let Some((c, len)) = decode(text, at) {
                        if c.to_ascii_lowercase() == want {
                            next.push(at + len);
                        }
                    }
                }
                next.sort_unstable();
                next.dedup();
                states = next;
                if states.is_empty() {
                    break;
                }
            }
            if let Some(end) = states.first() {
                return Some((start, *end));
            }
        }
    }
    None
}

fn chunked<'a>(text: &'a [u8], rng: &mut Rng, max: usize) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let size = (1 + rng.next() % max.max(1)).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

fn check(key: &[u8], input: &[u8], patterns: &[Vec<u8>], rng: &mut Rng, max: usize) -> Vec<u8> {
    let whole = redact_chunks(key, [input]);
    assert_eq!(whole.len(), input.len(), "the length changed");
    for (i, (out, inp)) in whole.iter().zip(input).enumerate() {
        assert!(out == inp || *out == b'*', "byte {i} became {out:#x}, not the input's or '*'");
    }
    if let Some((start, end)) = reference_find(&whole, patterns) {
        panic!(
            "a form of the key survived at {start}..{end}: {:?}\nin: {:?}",
            String::from_utf8_lossy(&whole[start..end]),
            String::from_utf8_lossy(&whole)
        );
    }
    let chunks = chunked(input, rng, max);
    let pieces = redact_chunks(key, chunks.iter().copied());
    assert!(
        pieces == whole,
        "chunks {:?} masked otherwise than the whole body:\n{:?}\n{:?}",
        chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&pieces),
        String::from_utf8_lossy(&whole)
    );
    whole
}

fuzz_target!(|data: &[u8]| {
    let Some((&[form, key_len, chunk_lo, chunk_hi, max_chunk, var_lo, var_hi, position], rest)) =
        data.split_first_chunk::<8>()
    else {
        return;
    };
    let key_len = 16 + usize::from(key_len % 64);
    if rest.len() < key_len {
        return;
    }
    let (key, text) = rest.split_at(key_len);
    // Printable ASCII, as byok accepts; `*` (the mask) left out, so that a mask next to
    // text cannot read as the key.
    let key: Vec<u8> = key
        .iter()
        .map(|&b| if (0x20..=0x7e).contains(&b) { b } else { 0x21 + b % 94 })
        .map(|b| if b == b'*' { b'+' } else { b })
        .collect();
    if key.iter().all(|b| *b == b' ') {
        return;
    }
    let patterns = patterns(&key);
    let mut variation = Rng::new(var_lo, var_hi);
    let mut chunking = Rng::new(chunk_lo, chunk_hi);
    let max = usize::from(max_chunk);

    let form_text = encode(&key, form, &mut variation);
    let at = usize::from(position) * (text.len() + 1) / 256;
    let body = [&text[..at], &form_text, &text[at..]].concat();
    assert!(reference_find(&body, &patterns).is_some(), "the reference misses the {form}th form {form_text:?}");
    check(&key, &body, &patterns, &mut chunking, max);

    // The text alone: unchanged unless it holds a form of the key itself.
    let clean = redact_chunks(&key, [text]);
    if reference_find(text, &patterns).is_none() {
        assert!(clean == text, "clean text was changed: {:?}", String::from_utf8_lossy(&clean));
    } else {
        check(&key, text, &patterns, &mut chunking, max);
    }
});
