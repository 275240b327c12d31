//! Masking the key in everything an upstream sends back: body, header names and values,
//! trailers — in every form an upstream (or a library between it and its error message)
//! may have written it, not only its exact bytes.
//!
//! # What is searched
//!
//! The key is searched as a few *patterns*, each the text of one form, compared without
//! regard to ASCII case:
//!
//! * **the key itself** — case-insensitively, because error pages and log echoes upper-case
//!   what they quote (`SK-LIVE-…`), and a key in a header *name* is lower-cased on the wire;
//! * **its hex** — request dumps and debug bodies print bytes as hex, in either case;
//! * **its base64**, standard and URL-safe alphabet, at each of the three byte offsets a
//!   key can start at inside a longer base64 string — `base64(user:KEY)` of HTTP Basic
//!   credentials (`user:` is 5 bytes: offset 2), `base64(Bearer KEY)` (offset 1), the key
//!   alone (offset 0). A pattern is only the characters that carry key bits alone (the
//!   first one or two characters of an offset form mix the prefix's bits in, the last one
//!   the following bytes'), so at most 4 bits of the key's first and last byte can remain
//!   beside a mask; padding is irrelevant (it comes after the last such character).
//!   Base64 is case-sensitive, so matching it without regard to case only masks slightly
//!   more than needed (a 20-character match that differs in case is no accident).
//!
//! Each pattern is matched on a *decoded view* of the text rather than enumerated in its
//! encodings, since one occurrence may mix them (`s\u006b-\u0063anary`, `%73k-canary`):
//! at every position, one character of the pattern may be written as itself or as
//!
//! * a JSON string escape — `\uXXXX` (either hex case; a UTF-16 surrogate pair for
//!   characters beyond the BMP), `\/` (which PHP-style encoders write for every `/`, and
//!   standard base64 is full of them), `\\`, `\"` — because an upstream that quotes the key
//!   in a JSON string may escape any character it likes, and JSON clients read it back;
//! * a percent escape `%XX` (either case) — because keys echoed in URLs, redirect targets
//!   and form bodies are percent-encoded, any subset of their characters.
//!
//! Control escapes (`\n`, `\t`, …) decode to characters no key and no hex or base64 text
//! contains, so they never start or continue a match.
//!
//! # How
//!
//! Two scans, both cheap when nothing matches, find every occurrence:
//!
//! 1. occurrences whose first *m* characters are literal (*m* the shortest pattern's
//!    length — the key's own, at least 16 for keys byok accepts): a Wu–Manber scan, which
//!    looks at the last three bytes of an *m*-byte window and, unless they occur in some
//!    pattern's first *m* characters, moves the window on by *m* − 2 bytes — so it reads
//!    only a fraction of a clean chunk; where a pattern may start, it is followed
//!    forward, unit by unit (literal or escaped);
//! 2. occurrences with an escape: every `\` and `%` is decoded; if it decodes to a
//!    character some pattern contains (most escapes in real bodies — `\n`, `\"`,
//!    `\u00e9`, `%20` — do not), it is tried as the occurrence's first escape: the literal
//!    text just before it must be the pattern up to that character, and the rest is
//!    followed forward as in (1).
//!
//! Every occurrence is replaced by `*` of the occurrence's own length, so a body's length
//! never changes and `Content-Length` stays true. Over a stream, only a chunk tail that
//! could begin an occurrence (a prefix of a pattern, possibly with escapes, or a
//! half-written escape) is held back until the next chunk shows whether it is one; a
//! chunk that ends anywhere else (an SSE chunk ends with a blank line) is sent whole and at
//! once, so streaming keeps its latency. A chunk in which nothing is found or held is sent
//! as it came, without a copy.
//!
//! The patterns and the tables derived from them live in zeroizing memory, as does every
//! held tail; a copy made to mask is masked (or zeroed) before it is freed.
//!
//! This is not `aho-corasick`: its automaton would hold the key's patterns in memory that
//! cannot be zeroized, its case-insensitive mode has no fast prefilter for patterns like
//! these, and escaped occurrences need the decoded view anyway.

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::{Bytes, BytesMut};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Keys shorter than this (only ever stored before byok refused short secrets) are masked
/// in their textual forms only: the hex or base64 of a handful of bytes is short enough to
/// turn up in innocent text.
const MIN_KEY_FOR_ENCODED_FORMS: usize = 8;

/// ASCII lower-casing, as a table (the scans fold every byte they look at).
const FOLD: [u8; 256] = {
    let mut table = [0_u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = (i as u8).to_ascii_lowercase();
        i += 1;
    }
    table
};

fn fold(byte: u8) -> u8 {
    FOLD[usize::from(byte)]
}

/// Entries in the literal scan's shift table (8 to a word: zeroizing it is 512 writes).
const SHIFT_TABLE: usize = 4096;

/// The shift-table slot of three bytes, folded (a multiplicative hash: a few hundred
/// blocks of the patterns in 4096 slots leave most slots at the full shift).
fn block(a: u8, b: u8, c: u8) -> usize {
    let key = u32::from(fold(a)) << 16 | u32::from(fold(b)) << 8 | u32::from(fold(c));
    (key.wrapping_mul(0x9e37_79b1) >> 20) as usize
}

/// Where the next `\` or `%` at or after `from` is. Dense escapes (JSON prose) are found
/// by looking at a few words; sparse ones by `memchr2`, whose setup is paid once per call.
fn next_escape(text: &[u8], from: usize) -> Option<usize> {
    let near = text.len().min(from + 32);
    let mut at = from;
    while let Some(word) = text.get(at..at + 8).filter(|_| at + 8 <= near) {
        let word = u64::from_le_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
        if has_byte(word, b'\\') || has_byte(word, b'%') {
            break;
        }
        at += 8;
    }
    while at < near {
        if text[at] == b'\\' || text[at] == b'%' {
            return Some(at);
        }
        at += 1;
    }
    memchr::memchr2(b'\\', b'%', text.get(near..)?).map(|offset| near + offset)
}

/// Whether some byte of `word` is `byte`.
fn has_byte(word: u64, byte: u8) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zeroed = word ^ (ONES * u64::from(byte));
    zeroed.wrapping_sub(ONES) & !zeroed & HIGHS != 0
}

/// A set of bytes.
#[derive(Clone, Default, Zeroize)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert(&mut self, byte: u8) {
        self.0[usize::from(byte >> 6)] |= 1 << (byte & 63);
    }

    fn contains(&self, byte: u8) -> bool {
        self.0[usize::from(byte >> 6)] & (1 << (byte & 63)) != 0
    }
}

/// What one escape at a position decodes to.
enum Unit {
    /// Not an escape (or one that decodes to nothing a pattern has).
    None,
    /// An escape cut off by the end of the text: it may still become one.
    Incomplete,
    /// An escape of `len` bytes decoding to `bytes[..n]` (a character's UTF-8).
    Complete { bytes: [u8; 4], n: usize, len: usize },
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The `\uXXXX` at `at`: `Ok(Some(unit))`, `Ok(None)` when cut off by the end of `text`
/// (with what is there consistent with one), `Err(())` when it is not one.
fn u_escape(text: &[u8], at: usize) -> Result<Option<u32>, ()> {
    let mut value = 0_u32;
    for k in 0..6 {
        let Some(&byte) = text.get(at + k) else { return Ok(None) };
        match k {
            0 if byte == b'\\' => {}
            1 if byte == b'u' => {}
            2..=5 => value = (value << 4) | u32::from(hex_value(byte).ok_or(())?),
            _ => return Err(()),
        }
    }
    Ok(Some(value))
}

/// Decodes the escape (JSON or percent) starting at `at`, if there is one.
fn decode_unit(text: &[u8], at: usize) -> Unit {
    match text[at] {
        b'%' => {
            let Some(&high) = text.get(at + 1) else { return Unit::Incomplete };
            let Some(high) = hex_value(high) else { return Unit::None };
            let Some(&low) = text.get(at + 2) else { return Unit::Incomplete };
            let Some(low) = hex_value(low) else { return Unit::None };
            Unit::Complete { bytes: [(high << 4) | low, 0, 0, 0], n: 1, len: 3 }
        }
        b'\\' => {
            let Some(&kind) = text.get(at + 1) else { return Unit::Incomplete };
            match kind {
                b'/' | b'\\' | b'"' => Unit::Complete { bytes: [kind, 0, 0, 0], n: 1, len: 2 },
                b'u' => {
                    let first = match u_escape(text, at) {
                        Ok(Some(unit)) => unit,
                        Ok(None) => return Unit::Incomplete,
                        Err(()) => return Unit::None,
                    };
                    let (code, len) = match first {
                        0xd800..=0xdbff => match u_escape(text, at + 6) {
                            Ok(Some(low @ 0xdc00..=0xdfff)) => {
                                (0x10000 + ((first - 0xd800) << 10) + (low - 0xdc00), 12)
                            }
                            Ok(None) => return Unit::Incomplete,
                            Ok(Some(_)) | Err(()) => return Unit::None,
                        },
                        0xdc00..=0xdfff => return Unit::None,
                        code => (code, 6),
                    };
                    let Some(ch) = char::from_u32(code) else { return Unit::None };
                    let mut bytes = [0_u8; 4];
                    let n = ch.encode_utf8(&mut bytes).len();
                    Unit::Complete { bytes, n, len }
                }
                // Control escapes (\n, \t, \r, \b, \f) decode to nothing a pattern holds.
                _ => Unit::None,
            }
        }
        _ => Unit::None,
    }
}

/// How following a pattern from a position went.
enum Follow {
    /// The whole pattern, ending (exclusive) here.
    Full(usize),
    /// The whole pattern, ending here at the latest; another reading was cut off by the
    /// end of the text and may still end later.
    FullAndPartial(usize),
    /// The text ended while it still matched.
    Partial,
    Fail,
}

/// The key's forms and the tables that find them. Built once per unwrapped DEK
/// (`cache::CachedDek`) and shared by the calls it serves.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Forms {
    /// Every pattern, ASCII-lower-cased, distinct, none empty.
    patterns: Vec<Vec<u8>>,
    /// The window of the literal scan: the shortest pattern's length (at most 255).
    window: usize,
    /// The literal scan's shifts (Wu–Manber), one byte per slot, eight slots to a word: for
    /// each (hashed) pair of folded bytes, how far a window ending with it can move on
    /// without skipping the first `window` characters of some pattern. They tell a lot
    /// about the key: zeroized like it.
    shifts: Vec<u64>,
    /// Folded bytes some pattern starts with.
    firsts: ByteSet,
    /// Folded bytes some pattern contains.
    members: ByteSet,
}

/// The base64 characters (alphabet `table`) that depend only on `key`'s bits when `key`
/// starts `offset` bytes into a 3-byte group.
fn base64_core(key: &[u8], offset: usize, table: &[u8; 64]) -> Zeroizing<Vec<u8>> {
    // Byte `index` of the group-aligned stream: `offset` zero bytes, then the key.
    let byte =
        |index: usize| -> u16 { index.checked_sub(offset).and_then(|i| key.get(i)).map_or(0, |b| u16::from(*b)) };
    // Characters whose 6 bits lie wholly inside the key's bits.
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + key.len()) / 6;
    let mut out = Zeroizing::new(Vec::with_capacity(end.saturating_sub(first)));
    for char_index in first..end {
        let bit = 6 * char_index;
        let pair = byte(bit / 8) << 8 | byte(bit / 8 + 1);
        out.push(table[usize::from((pair >> (10 - bit % 8)) & 63)]);
    }
    out
}

const BASE64_STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Forms {
    /// The forms of every key of `keys` (a Bedrock secret has several: its access key id,
    /// secret access key and session token, or its API key).
    pub(crate) fn new(keys: &[&[u8]]) -> Self {
        let mut forms = Forms {
            patterns: Vec::new(),
            window: 0,
            shifts: Vec::new(),
            firsts: ByteSet::default(),
            members: ByteSet::default(),
        };
        for key in keys {
            forms.add_key(key);
        }
        let window = forms.patterns.iter().map(Vec::len).min().unwrap_or(0).min(255);
        // A window ending with three bytes not found in any pattern's first `window`
        // characters moves on by `window - 2`; one ending with three that end at index `j`
        // there, by `window - 1 - j`.
        let default = u64::from(u8::try_from(window.saturating_sub(2)).unwrap_or(u8::MAX));
        let mut shifts = vec![default * 0x0101_0101_0101_0101; SHIFT_TABLE / 8];
        for pattern in &forms.patterns {
            forms.firsts.insert(pattern[0]);
            for &byte in pattern.iter() {
                forms.members.insert(byte);
            }
            for j in 2..window {
                let shift = u64::try_from(window - 1 - j).unwrap_or(u64::MAX);
                let slot = block(pattern[j - 2], pattern[j - 1], pattern[j]);
                let (word, at) = (&mut shifts[slot >> 3], 8 * (slot & 7));
                if shift < (*word >> at) & 0xff {
                    *word = (*word & !(0xff << at)) | shift << at;
                }
            }
        }
        forms.window = window;
        forms.shifts = shifts;
        forms
    }

    fn add_key(&mut self, key: &[u8]) {
        self.add(key);
        if key.len() >= MIN_KEY_FOR_ENCODED_FORMS {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut hex = Zeroizing::new(Vec::with_capacity(2 * key.len()));
            for byte in key {
                hex.push(HEX[usize::from(byte >> 4)]);
                hex.push(HEX[usize::from(byte & 15)]);
            }
            self.add(&hex);
            for offset in 0..3 {
                for table in [BASE64_STANDARD, BASE64_URL_SAFE] {
                    self.add(&base64_core(key, offset, table));
                }
            }
        }
    }

    fn add(&mut self, form: &[u8]) {
        if form.is_empty() {
            return;
        }
        let folded: Vec<u8> = form.iter().map(|b| fold(*b)).collect();
        if self.patterns.contains(&folded) {
            let mut duplicate = folded;
            duplicate.zeroize();
        } else {
            self.patterns.push(folded);
        }
    }

    /// Tries the escape at `text[at]` as an occurrence's first escape.
    fn try_escape(&self, text: &[u8], at: usize, found: &mut Vec<(usize, usize)>, partial: &mut dyn FnMut(usize)) {
        match decode_unit(text, at) {
            Unit::None => {}
            Unit::Incomplete => {
                // A half-written escape at the very end, and the pattern text before it.
                let mut start = at;
                for pattern in &self.patterns {
                    let longest = (pattern.len() - 1).min(at);
                    if let Some(i) = (1..=longest).rev().find(|i| Self::literal_eq(&text[at - i..at], &pattern[..*i])) {
                        start = start.min(at - i);
                    }
                }
                partial(start);
            }
            Unit::Complete { bytes, .. } => {
                let decoded = fold(bytes[0]);
                if !self.members.contains(decoded) {
                    return;
                }
                for pattern in &self.patterns {
                    for i in 0..pattern.len().min(at + 1) {
                        if pattern[i] != decoded || !Self::literal_eq(&text[at - i..at], &pattern[..i]) {
                            continue;
                        }
                        match Self::follow(text, at, pattern, i) {
                            Follow::Full(end) => found.push((at - i, end)),
                            Follow::FullAndPartial(end) => {
                                found.push((at - i, end));
                                partial(at - i);
                            }
                            Follow::Partial => partial(at - i),
                            Follow::Fail => {}
                        }
                    }
                }
            }
        }
    }

    /// Follows every pattern that starts with `text[start]` from there.
    fn try_start(&self, text: &[u8], start: usize, found: &mut Vec<(usize, usize)>, partial: &mut dyn FnMut(usize)) {
        let first = fold(text[start]);
        for pattern in &self.patterns {
            if pattern[0] == first {
                match Self::follow(text, start, pattern, 0) {
                    Follow::Full(end) => found.push((start, end)),
                    Follow::FullAndPartial(end) => {
                        found.push((start, end));
                        partial(start);
                    }
                    Follow::Partial => partial(start),
                    Follow::Fail => {}
                }
            }
        }
    }

    /// Follows `pattern` from its character `from` at `text[at..]`, each character literal
    /// or escaped. An escape that decodes to the very character it starts with (`%25` is
    /// `%`, `\\` and `\u005c` are `\`) can also be read literally, and a half-written one
    /// at the end of the text may be literal too: every reading is followed (escapes
    /// first; each state once) and the longest match wins. A key holding `%25` or `\\`,
    /// or ending in `%` or `\`, is thus found as it is written, not only escaped.
    fn follow(text: &[u8], at: usize, pattern: &[u8], from: usize) -> Follow {
        let (mut full, mut partial) = (None, false);
        // The other readings still to follow; nothing is allocated unless an escape can be
        // read two ways.
        let mut others: Vec<(usize, usize)> = Vec::new();
        let mut queued: Option<HashSet<(usize, usize)>> = None;
        let mut next = Some((at, from));
        while let Some((mut at, mut i)) = next.take().or_else(|| others.pop()) {
            let mut literal_too = |at: usize, i: usize| {
                if queued.get_or_insert_with(HashSet::new).insert((at, i)) {
                    others.push((at, i));
                }
            };
            let reading = loop {
                if i == pattern.len() {
                    break Follow::Full(at);
                }
                let Some(&byte) = text.get(at) else { break Follow::Partial };
                if byte == b'\\' || byte == b'%' {
                    match decode_unit(text, at) {
                        Unit::Complete { bytes, n, len } => {
                            let fits = pattern.len() - i >= n && (0..n).all(|k| fold(bytes[k]) == pattern[i + k]);
                            if fits {
                                if byte == pattern[i] {
                                    literal_too(at + 1, i + 1);
                                }
                                at += len;
                                i += n;
                                continue;
                            }
                        }
                        // It may become this character's escape.
                        Unit::Incomplete => {
                            partial = true;
                            if byte != pattern[i] {
                                break Follow::Fail;
                            }
                        }
                        Unit::None => {}
                    }
                }
                if fold(byte) != pattern[i] {
                    break Follow::Fail;
                }
                at += 1;
                i += 1;
            };
            match reading {
                Follow::Full(end) => full = full.max(Some(end)),
                Follow::Partial => partial = true,
                Follow::FullAndPartial(_) | Follow::Fail => {}
            }
        }
        match (full, partial) {
            (Some(end), false) => Follow::Full(end),
            (Some(end), true) => Follow::FullAndPartial(end),
            (None, true) => Follow::Partial,
            (None, false) => Follow::Fail,
        }
    }

    /// Whether `text` is `prefix`, literally and without regard to case.
    fn literal_eq(text: &[u8], prefix: &[u8]) -> bool {
        text.len() == prefix.len() && text.iter().zip(prefix).all(|(a, b)| fold(*a) == *b)
    }

    /// Finds every occurrence in `text` (pushed to `found` as `[start, end)`), and returns
    /// where the earliest tail that could begin an occurrence starts (`text.len()` if
    /// none); with `at_end`, nothing more follows `text`, so no tail is held.
    fn scan(&self, text: &[u8], at_end: bool, found: &mut Vec<(usize, usize)>) -> usize {
        let mut hold = text.len();
        let mut partial = |start: usize| {
            if !at_end {
                hold = hold.min(start);
            }
        };
        let len = text.len();
        let window = self.window;
        // 1. Occurrences whose first `window` characters are literal: Wu–Manber. A window
        //    is `window` bytes; the three bytes it ends with say how far it may move on;
        //    only where that is 0 can an occurrence start at the window's first byte.
        if window >= 3 {
            let mut end = window - 1;
            while end < len {
                let slot = block(text[end - 2], text[end - 1], text[end]);
                let shift = (self.shifts[slot >> 3] >> (8 * (slot & 7))) as u8;
                if shift > 0 {
                    end += usize::from(shift);
                    continue;
                }
                self.try_start(text, end + 1 - window, found, &mut partial);
                end += 1;
            }
            // Occurrences starting in the last `window - 1` bytes fill no window: they can
            // only be partial, and then the text ends with a character of some pattern.
            if text.last().is_some_and(|last| self.members.contains(fold(*last))) {
                for start in len.saturating_sub(window - 1)..len {
                    if self.firsts.contains(fold(text[start])) {
                        self.try_start(text, start, found, &mut partial);
                    }
                }
            }
        } else {
            // One- and two-byte patterns (a key stored before short ones were refused).
            for start in 0..len {
                if self.firsts.contains(fold(text[start])) {
                    self.try_start(text, start, found, &mut partial);
                }
            }
        }
        // 2. Occurrences with an escape: each escape that decodes to a character of some
        //    pattern is tried as an occurrence's first escape.
        let mut from = 0;
        while let Some(at) = next_escape(text, from) {
            self.try_escape(text, at, found, &mut partial);
            from = at + 1;
        }
        hold
    }
}

/// Masks every form of the key in a stream of chunks (see the module documentation),
/// holding back only a chunk tail that could begin one.
pub(crate) struct Redactor {
    forms: Arc<Forms>,
    /// Bytes received but not sent yet, as received.
    held: Zeroizing<Vec<u8>>,
    /// How many leading bytes of `held` belong to an occurrence found already (whose
    /// start went out masked): they are masked when sent.
    held_masked: usize,
    /// Scratch for the occurrences of one scan.
    found: Vec<(usize, usize)>,
}

impl Redactor {
    pub(crate) fn new(key: &[u8]) -> Self {
        Self::for_keys(&[key])
    }

    /// A redactor masking each of `keys`.
    pub(crate) fn for_keys(keys: &[&[u8]]) -> Self {
        Self::with_forms(Arc::new(Forms::new(keys)))
    }

    /// A redactor masking the keys `forms` were built from.
    pub(crate) fn with_forms(forms: Arc<Forms>) -> Self {
        Self { forms, held: Zeroizing::new(Vec::new()), held_masked: 0, found: Vec::new() }
    }

    /// The part of `chunk` (after anything held) that can be sent now.
    pub(crate) fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.held.is_empty() {
            self.found.clear();
            let hold = self.forms.scan(&chunk, false, &mut self.found);
            if self.found.is_empty() && hold == chunk.len() {
                // The fast path: nothing found, nothing held, nothing copied.
                return chunk;
            }
            // Mask in place when the chunk's memory is ours alone.
            let buf = chunk.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            return self.emit(buf, hold, 0);
        }
        if chunk.is_empty() {
            return chunk;
        }
        let mut buf = BytesMut::with_capacity(self.held.len() + chunk.len());
        buf.extend_from_slice(&self.held);
        buf.extend_from_slice(&chunk);
        self.held.zeroize();
        self.found.clear();
        let hold = self.forms.scan(&buf, false, &mut self.found);
        // The end of an occurrence whose start went out masked: masked like one found now
        // (and, if still held, kept as received so the scan sees what really came).
        let carried = std::mem::take(&mut self.held_masked);
        self.emit(buf, hold, carried)
    }

    /// Masks what was found in `buf` (and its first `carried` bytes, the end of an
    /// occurrence whose start went out already), keeps `buf[hold..]` as received and
    /// returns the rest.
    fn emit(&mut self, mut buf: BytesMut, hold: usize, carried: usize) -> Bytes {
        buf[..carried.min(hold)].fill(b'*');
        let mut carry = carried.saturating_sub(hold);
        for &(start, end) in &self.found {
            if start < hold {
                buf[start..end.min(hold)].fill(b'*');
                carry = carry.max(end.saturating_sub(hold));
            }
            // An occurrence inside the held tail is found again with the next chunk.
        }
        if hold < buf.len() {
            let tail = &mut buf[hold..];
            if self.held.capacity() < tail.len() {
                self.held = Zeroizing::new(Vec::with_capacity(tail.len().max(64)));
            }
            self.held.extend_from_slice(tail);
            // The tail stays in `buf`'s allocation beyond what is sent: zero it there.
            tail.fill(0);
            buf.truncate(hold);
        }
        self.held_masked = carry;
        buf.freeze()
    }

    /// Whatever is still held, at the end of the body.
    pub(crate) fn finish(&mut self) -> Bytes {
        if self.held.is_empty() {
            return Bytes::new();
        }
        let mut buf = BytesMut::from(&self.held[..]);
        self.held.zeroize();
        self.found.clear();
        self.forms.scan(&buf, true, &mut self.found);
        let carried = std::mem::take(&mut self.held_masked);
        buf[..carried].fill(b'*');
        for &(start, end) in &self.found {
            buf[start..end].fill(b'*');
        }
        buf.freeze()
    }

    /// `text` with every occurrence masked, or `None` when there is none.
    fn masked(&self, text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let mut found = Vec::new();
        self.forms.scan(text, true, &mut found);
        if found.is_empty() {
            return None;
        }
        let mut out = Zeroizing::new(text.to_vec());
        for (start, end) in found {
            out[start..end].fill(b'*');
        }
        Some(out)
    }

    /// Masks the key in header names and values (of a response head or its trailers). A
    /// header whose name holds the key is renamed to the masked name (`*` is a valid name
    /// character), or dropped if that is not a valid name.
    pub(crate) fn headers(&self, headers: &mut HeaderMap) {
        let rename = headers.keys().any(|name| self.masked(name.as_str().as_bytes()).is_some());
        if !rename {
            for value in headers.values_mut() {
                self.mask_value(value);
            }
            return;
        }
        let mut current: Option<HeaderName> = None;
        for (name, mut value) in std::mem::take(headers) {
            if let Some(name) = name {
                current = match self.masked(name.as_str().as_bytes()) {
                    None => Some(name),
                    Some(masked) => HeaderName::from_bytes(&masked).ok(),
                };
            }
            if let Some(name) = &current {
                self.mask_value(&mut value);
                headers.append(name.clone(), value);
            }
        }
    }

    fn mask_value(&self, value: &mut HeaderValue) {
        if let Some(masked) = self.masked(value.as_bytes()) {
            let sensitive = value.is_sensitive();
            // `*` for visible characters keeps a valid value valid; should it not be, the
            // value goes (never the unmasked one).
            let mut replacement = HeaderValue::from_bytes(&masked).unwrap_or(HeaderValue::from_static(""));
            replacement.set_sensitive(sensitive);
            *value = replacement;
        }
    }
}

#[cfg(test)]
mod tests {
    use byok_mock_provider::KeyForm;

    use super::*;

    /// Shaped like a real key and like the sidecar tests' canaries; with `/` and `+` so
    /// that standard and URL-safe base64 and JSON's `\/` all matter.
    const KEY: &str = "sk-live-0123456789abcdefGHIJ/kl+mn";

    fn run_in_chunks(key: &str, body: &[u8], size: usize) -> Vec<u8> {
        let mut redactor = Redactor::new(key.as_bytes());
        let mut out = Vec::new();
        for chunk in body.chunks(size) {
            out.extend_from_slice(&redactor.push(Bytes::copy_from_slice(chunk)));
        }
        out.extend_from_slice(&redactor.finish());
        out
    }

    fn mask_once(key: &str, body: &[u8]) -> Vec<u8> {
        run_in_chunks(key, body, body.len().max(1))
    }

    fn stars(n: usize) -> String {
        "*".repeat(n)
    }

    fn b64(data: &[u8], table: &[u8; 64], pad: bool) -> String {
        let mut out = String::new();
        for group in data.chunks(3) {
            let n = u32::from(group[0]) << 16
                | u32::from(*group.get(1).unwrap_or(&0)) << 8
                | u32::from(*group.get(2).unwrap_or(&0));
            for k in 0..=group.len() {
                out.push(char::from(table[((n >> (18 - 6 * k)) & 63) as usize]));
            }
            if pad {
                out.push_str(&"=".repeat(3 - group.len()));
            }
        }
        out
    }

    fn json_escape_all(key: &str, upper: bool) -> String {
        key.chars()
            .map(|c| if upper { format!("\\u{:04X}", c as u32) } else { format!("\\u{:04x}", c as u32) })
            .collect()
    }

    /// Forms whose whole text is the key's: the mask covers exactly the form.
    fn whole_forms(key: &str) -> Vec<(String, String)> {
        let mut forms: Vec<(String, String)> = KeyForm::ALL
            .into_iter()
            .filter(|f| {
                !matches!(f, KeyForm::Base64 | KeyForm::Base64Url | KeyForm::Base64Basic | KeyForm::Base64Bearer)
            })
            .map(|f| (format!("{f:?}"), f.render(key)))
            .collect();
        forms.push(("json all \\u, lower".into(), json_escape_all(key, false)));
        forms.push(("json all \\u, upper".into(), json_escape_all(key, true)));
        forms.push(("json \\/ only".into(), key.replace('/', "\\/")));
        forms.push(("percent all".into(), key.bytes().map(|b| format!("%{b:02X}")).collect()));
        forms.push(("percent one".into(), key.replacen('-', "%2d", 1)));
        forms.push((
            "hex mixed case".into(),
            key.bytes()
                .enumerate()
                .map(|(i, b)| if i % 2 == 0 { format!("{b:02X}") } else { format!("{b:02x}") })
                .collect(),
        ));
        forms.push((
            "mixed case".into(),
            key.chars().enumerate().map(|(i, c)| if i % 3 == 0 { c.to_ascii_uppercase() } else { c }).collect(),
        ));
        forms
    }

    #[test]
    fn every_whole_form_is_masked_exactly_at_every_chunk_size() {
        for (name, form) in whole_forms(KEY) {
            let body = format!(
                "{{\"error\":{{\"message\":\"Incorrect API key provided: {form}. See https:\\/\\/x.\"}}}} tail"
            );
            let expected = body.replace(&form, &stars(form.len()));
            assert_ne!(expected, body, "{name}");
            for size in 1..=body.len() {
                let out = run_in_chunks(KEY, body.as_bytes(), size);
                assert_eq!(String::from_utf8(out).unwrap(), expected, "{name}, chunks of {size}");
            }
        }
    }

    /// Base64 at each offset, standard and URL-safe, padded or not, embedded in longer base64
    /// (HTTP Basic, Bearer) and with `/` JSON-escaped or percent-encoded.
    #[test]
    fn base64_forms_are_masked_at_every_offset_and_chunk_size() {
        let mut cases = Vec::new();
        for prefix in ["", "u:", "user:", "Bearer ", "ab", "x"] {
            let data = format!("{prefix}{KEY}");
            for (table, alphabet) in [(BASE64_STANDARD, "standard"), (BASE64_URL_SAFE, "url-safe")] {
                for pad in [true, false] {
                    let text = b64(data.as_bytes(), table, pad);
                    cases.push((format!("{alphabet} of {prefix:?}+key, pad {pad}"), text.clone(), data.clone()));
                    cases.push((format!("{alphabet} of {prefix:?}+key, JSON"), text.replace('/', "\\/"), data.clone()));
                    cases.push((
                        format!("{alphabet} of {prefix:?}+key, percent"),
                        text.replace('/', "%2F").replace('+', "%2b"),
                        data.clone(),
                    ));
                }
            }
        }
        for (name, text, _) in &cases {
            let body = format!("Authorization: Basic {text}\r\n");
            let once = mask_once(KEY, body.as_bytes());
            assert_eq!(once.len(), body.len(), "{name}");
            // No decoding of the masked text, at any alignment, yields the key.
            let masked = String::from_utf8(once.clone()).unwrap();
            let run = masked.trim_start_matches("Authorization: Basic ").trim_end();
            assert!(run.contains("*****"), "{name}: {masked}");
            let plain = run.replace("\\/", "/").replace("%2F", "/").replace("%2b", "+");
            for piece in plain.split('*') {
                for offset in 0..4.min(piece.len()) {
                    let decoded = lenient_base64(&piece[offset..]);
                    assert!(!decoded.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "{name}");
                }
            }
            // At most one base64 character on each side of the mask mixes key bits in.
            let unmasked_key_chars = run.len() - run.matches('*').count();
            assert!(unmasked_key_chars <= text.len() - (4 * KEY.len() / 3 - 2), "{name}: {masked}");
            for size in 1..=body.len() {
                assert_eq!(run_in_chunks(KEY, body.as_bytes(), size), once, "{name}, chunks of {size}");
            }
        }
    }

    fn lenient_base64(text: &str) -> Vec<u8> {
        let (mut acc, mut bits, mut out) = (0_u32, 0, Vec::new());
        for c in text.bytes() {
            let Some(v) =
                BASE64_STANDARD.iter().position(|x| *x == c).or_else(|| BASE64_URL_SAFE.iter().position(|x| *x == c))
            else {
                continue;
            };
            acc = (acc << 6) | v as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push(((acc >> bits) & 0xff) as u8);
            }
        }
        out
    }

    #[test]
    fn a_partial_key_at_the_very_end_is_not_the_key() {
        let body = format!("{{\"error\":\"{KEY}. again {}\"}} sk-li", KEY.to_ascii_uppercase());
        let expected = body.replace(KEY, &stars(KEY.len())).replace(&KEY.to_ascii_uppercase(), &stars(KEY.len()));
        for size in 1..=body.len() {
            assert_eq!(
                String::from_utf8(run_in_chunks(KEY, body.as_bytes(), size)).unwrap(),
                expected,
                "chunks of {size}"
            );
        }
        // Half-written escapes at the end are sent as they are once the body ends.
        for tail in ["sk-live-\\u00", "sk-li%7", "\\", "%", "\\uD83D"] {
            let body = format!("x {tail}");
            assert_eq!(run_in_chunks(KEY, body.as_bytes(), 1), body.as_bytes(), "{tail}");
        }
    }

    /// A key whose end is also its start: occurrences overlap, and one found across a held
    /// tail keeps being masked.
    #[test]
    fn overlapping_occurrences_across_chunks() {
        let key = "abcab-0123456789-abcab";
        let body = "x abcab-0123456789-abcab-0123456789-abcab y";
        let expected = format!("x {} y", stars(body.len() - 4));
        for size in 1..=body.len() {
            assert_eq!(
                String::from_utf8(run_in_chunks(key, body.as_bytes(), size)).unwrap(),
                expected,
                "chunks of {size}"
            );
        }
    }

    /// The end of an occurrence stays masked while it is held as the start of what might
    /// be another, and after that turns out not to be one.
    #[test]
    fn a_held_occurrence_end_stays_masked() {
        let key = "abcab-0123456789-abcab";
        let body = "x abcab-0123456789-abcab-0123X y";
        let expected = format!("x {}-0123X y", stars(key.len()));
        for size in 1..=body.len() {
            assert_eq!(
                String::from_utf8(run_in_chunks(key, body.as_bytes(), size)).unwrap(),
                expected,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn non_ascii_keys_and_surrogate_escapes() {
        let key = "sk-caf\u{e9}-\u{1f600}-0123456789";
        let json: String = key
            .chars()
            .map(|c| c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("\\u{u:04x}")).collect::<String>())
            .collect();
        let body = format!("\"{json}\" and \"{key}\"");
        let expected = format!("\"{}\" and \"{}\"", stars(json.len()), stars(key.len()));
        for size in 1..=body.len() {
            assert_eq!(
                String::from_utf8(run_in_chunks(key, body.as_bytes(), size)).unwrap(),
                expected,
                "chunks of {size}"
            );
        }
    }

    /// A key holding `%25` or `\\`, or ending in `%` or `\`, is found as it is written (an
    /// escape that decodes to its own first character is read both ways), at the very end
    /// of a body too, and escaped.
    #[test]
    fn keys_with_escape_characters_are_found_as_written() {
        for key in ["sk-ab%25cdefghijklmn", "sk-ab\\\\cdefghijklmn", "sk-abcdefghijklmn%", "sk-abcdefghijklmn\\"] {
            let escaped = key.replace('%', "%25");
            for body in [format!("key: {key}"), format!("key: {key} tail"), format!("x {escaped} y")] {
                let masked = mask_once(key, body.as_bytes());
                assert!(!masked.windows(key.len()).any(|w| w == key.as_bytes()), "{key} in {body}");
                assert!(String::from_utf8(masked.clone()).unwrap().contains("*****"), "{key} in {body}");
                for size in 1..=body.len() {
                    assert_eq!(run_in_chunks(key, body.as_bytes(), size), masked, "{key} in {body}, chunks of {size}");
                }
            }
        }
    }

    /// Keys stored before short secrets were refused are still masked (their text forms).
    #[test]
    fn short_legacy_keys_are_masked() {
        assert_eq!(mask_once("sk-x", b"key sk-x, SK-X, sk\\u002dx"), b"key ****, ****, *********");
        assert_eq!(mask_once("x", b"a x y"), b"a * y");
    }

    #[test]
    fn passes_clean_chunks_through_untouched() {
        let mut redactor = Redactor::new(KEY.as_bytes());
        for clean in [
            &b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\\n\\\"there\\\" caf\\u00e9 50%20off sk-\"}}]}\n\n"[..],
            b"{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"url\":\"https:\\/\\/example.com\\/a\"}",
            b"",
        ] {
            let chunk = Bytes::copy_from_slice(clean);
            let out = redactor.push(chunk.clone());
            assert_eq!(out, chunk);
            assert_eq!(out.as_ptr(), chunk.as_ptr(), "no copy on the fast path");
        }
        assert!(redactor.finish().is_empty());
    }

    #[test]
    fn masks_header_values_in_every_form() {
        let redactor = Redactor::new(KEY.as_bytes());
        let mut headers = HeaderMap::new();
        for (n, (_, form)) in whole_forms(KEY).into_iter().enumerate() {
            let mut value = HeaderValue::from_str(&format!("key={form}")).unwrap();
            value.set_sensitive(n % 2 == 0);
            headers.insert(HeaderName::from_bytes(format!("x-form-{n}").as_bytes()).unwrap(), value);
        }
        headers.append("x-form-0", HeaderValue::from_static("second value"));
        let bearer = b64(format!("Bearer {KEY}").as_bytes(), BASE64_STANDARD, true);
        headers.insert("www-authenticate", HeaderValue::from_str(&bearer).unwrap());
        headers.insert("x-clean", HeaderValue::from_static("nothing here"));
        redactor.headers(&mut headers);
        for (n, (name, form)) in whole_forms(KEY).into_iter().enumerate() {
            let value = &headers[format!("x-form-{n}").as_str()];
            assert_eq!(value.to_str().unwrap(), format!("key={}", stars(form.len())), "{name}");
            assert_eq!(value.is_sensitive(), n % 2 == 0, "{name}: sensitivity kept");
        }
        assert_eq!(headers.get_all("x-form-0").iter().count(), 2);
        assert!(headers["www-authenticate"].to_str().unwrap().contains("*****"));
        assert_eq!(headers["x-clean"], "nothing here");
    }

    #[test]
    fn a_header_named_after_the_key_is_renamed_with_the_mask() {
        let key = "sk-live-0123456789abcdefGHIJ";
        let redactor = Redactor::new(key.as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for form in [KeyForm::Raw, KeyForm::Hex, KeyForm::PercentEncoded] {
            let name = HeaderName::from_bytes(format!("x-{}", form.render(key)).as_bytes()).unwrap();
            headers.append(name.clone(), HeaderValue::from_static("one"));
            headers.append(name, HeaderValue::from_str(&format!("two {key}")).unwrap());
        }
        redactor.headers(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(headers["content-type"], "application/json");
        for name in names.iter().filter(|n| **n != "content-type") {
            assert!(name.starts_with("x-****") && name.trim_start_matches("x-").bytes().all(|b| b == b'*'), "{name}");
            let values: Vec<_> = headers.get_all(*name).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
            assert_eq!(values, ["one".to_owned(), format!("two {}", stars(key.len()))], "{name}");
        }
    }

    /// What the clean path costs per chunk. Not run by default (timings need a release
    /// build): `cargo test --release -p byok-proxy --lib redact::tests::clean_path_cost --
    /// --ignored --nocapture`.
    /// Nanoseconds this thread has spent on a CPU (Linux): timings that other processes on a
    /// busy machine do not inflate.
    fn cpu_ns() -> u128 {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        stat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    struct Clock(u128);

    impl Clock {
        fn now() -> Self {
            Clock(cpu_ns())
        }
        fn elapsed(&self) -> std::time::Duration {
            std::time::Duration::from_nanos(u64::try_from(cpu_ns() - self.0).unwrap_or(u64::MAX))
        }
    }

    #[test]
    #[ignore]
    fn clean_path_cost() {
        let key = "sk-canary-openai-01jabcdefghjkmnpqrstvwxyz0";
        let event = b"data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the answer\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
        let mut json = b"{\"choices\":[{\"message\":{\"content\":\"".to_vec();
        while json.len() < 16 * 1024 {
            json.extend_from_slice(b"Some prose, with \\\"quotes\\\", a line break\\n and caf\\u00e9 in it. ");
        }
        json.extend_from_slice(b"\"}}]}");
        let started = Clock::now();
        for _ in 0..10_000 {
            std::hint::black_box(Redactor::new(key.as_bytes()));
        }
        eprintln!("Redactor::new: {:?} per call", started.elapsed() / 10_000);
        for (name, chunk, rounds) in [("SSE event", &event[..], 200_000_u32), ("16 KiB JSON", &json[..], 5_000)] {
            let mut redactor = Redactor::new(key.as_bytes());
            let chunk = Bytes::copy_from_slice(chunk);
            let started = Clock::now();
            for _ in 0..rounds {
                let out = redactor.push(chunk.clone());
                assert_eq!(out.as_ptr(), chunk.as_ptr());
                std::hint::black_box(out);
            }
            let per = started.elapsed() / rounds;
            eprintln!(
                "{name} ({} bytes): {per:?} per chunk, {:.2} ns/byte",
                chunk.len(),
                per.as_nanos() as f64 / chunk.len() as f64
            );
        }
    }
}
