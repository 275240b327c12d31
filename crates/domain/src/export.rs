//! The audit export: an org's audit as one JSON Lines stream that verifies on its own,
//! and the verifier that checks it without a server.
//!
//! The stream (format `byok-audit-export`, version [`VERSION`]):
//!
//! 1. A `header` line: format, version, org, export time, the range asked for, and every
//!    chain the export holds, in the order their lines follow — for each, the position
//!    and hash the exported slice starts after (`from`: `genesis`, the `anchor` a
//!    retention purge left, or the entry just before the `range`) and its last position
//!    and hash.
//! 2. The entries, chain by chain (the org's lifecycle events first, then each writer
//!    segment's calls), each chain in position order:
//!    * `lifecycle`: one lifecycle event;
//!    * `call`: one resolution row, with under `completion` the completion bound to it
//!      when the call has ended (the completion's own position comes later in the
//!      chain; the next lines fill the positions in between);
//!    * `completion`: a completion not carried by a `call` line (its row lies before the
//!      range, or it was written before completions named their row).
//! 3. An `end` line: how many lines came before it and how many chain entries.
//!
//! Every chained entry carries each column its hash covers under the column's name
//! ([`crate::chain::columns`]; a completion's metering columns inside `metering`, an
//! event's `kind` as `event`), plus `prev_hash` and `hash` (hex). `seq` (the store's row
//! id) and `at` (`at_us` as RFC 3339) are there for readers and are not chained; `at`
//! must agree with `at_us`. The verifier recomputes every hash with the store's own
//! encoding ([`crate::chain::link`]) and checks that each chain runs from its start
//! without a gap, a repeat or a line out of order to its last entry.
//!
//! What an export cannot prove by itself: that whoever holds it did not rewrite it
//! whole, recomputing every hash. Compare its chain ends with a signed checkpoint for
//! that.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chain::{self, hex, link, parse_hex, ChainHash, Column, Field, COMPLETION, EVENT, GENESIS, RESOLUTION};
use crate::time::Timestamp;

/// The format's name, in the header.
pub const FORMAT: &str = "byok-audit-export";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// The chain of an org's lifecycle events.
pub const EVENTS_CHAIN: &str = "events";
/// The MIME type of an export.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// The chain of a writer segment's resolution rows and completions.
pub fn calls_chain(segment: &str) -> String {
    format!("calls/{segment}")
}

/// Where the exported slice of a chain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The chain's beginning (position 0, 32 zero bytes).
    Genesis,
    /// The anchor a retention purge kept for the last entry it removed.
    Anchor,
    /// The entry just before the range asked for (not exported).
    Range,
    /// The entry before the first exported one is missing from the store (the export
    /// does not verify).
    Missing,
}

/// A position in a chain and the hash of the entry there (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPoint {
    /// The position.
    pub position: i64,
    /// The entry's hash, hex (`null` when the store has none).
    pub hash: Option<String>,
}

/// Where a chain's slice starts: the position and hash it follows, and why there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainStart {
    /// The position before the first exported entry.
    pub position: i64,
    /// The hash the first exported entry must link to, hex.
    pub hash: Option<String>,
    /// Where that hash comes from.
    pub from: StartFrom,
}

/// One chain of the export, as the header lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedChain {
    /// `events`, or `calls/<segment>`.
    pub chain: String,
    /// What the first exported entry follows.
    pub after: ChainStart,
    /// The last exported entry.
    pub last: ChainPoint,
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The org whose audit this is.
    pub org_id: String,
    /// When the export was made.
    pub exported_at: Timestamp,
    /// The range asked for: from each chain's first entry at or after `since`…
    pub since: Option<Timestamp>,
    /// …to its last entry before `until`.
    pub until: Option<Timestamp>,
    /// The chains, in the order their lines follow.
    pub chains: Vec<ExportedChain>,
}

#[derive(Serialize)]
struct Tagged<'a, T> {
    kind: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

/// A chained entry as the store holds it: its kind ([`chain::EVENT`],
/// [`chain::RESOLUTION`], [`chain::COMPLETION`]), row id, chained columns in hash order,
/// and link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The entry kind.
    pub kind: &'static str,
    /// Its row id in its table (not chained).
    pub row_seq: i64,
    /// Its chained columns, in hash order.
    pub fields: Vec<Field>,
    /// The stored previous hash.
    pub prev_hash: Option<Vec<u8>>,
    /// The stored hash.
    pub hash: Option<Vec<u8>>,
}

/// The header line (no line break).
pub fn header_line(header: &Header) -> String {
    serde_json::to_string(&Tagged { kind: "header", body: header }).unwrap_or_default()
}

/// The `end` line: `lines` lines came before it, holding `entries` chained entries.
pub fn end_line(lines: u64, entries: u64) -> String {
    format!("{{\"kind\":\"end\",\"lines\":{lines},\"entries\":{entries}}}")
}

/// The `lifecycle` line of an event.
pub fn lifecycle_line(event: &StoredEntry) -> String {
    let mut out = String::from("{\"kind\":\"lifecycle\",");
    write_entry(&mut out, event);
    out.push('}');
    out
}

/// The `call` line of a resolution row, with the completion bound to it if any.
pub fn call_line(resolution: &StoredEntry, completion: Option<&StoredEntry>) -> String {
    let mut out = String::from("{\"kind\":\"call\",");
    write_entry(&mut out, resolution);
    if let Some(completion) = completion {
        out.push_str(",\"completion\":{");
        write_entry(&mut out, completion);
        out.push('}');
    }
    out.push('}');
    out
}

/// The `completion` line of a completion no `call` line carries.
pub fn completion_line(completion: &StoredEntry) -> String {
    let mut out = String::from("{\"kind\":\"completion\",");
    write_entry(&mut out, completion);
    out.push('}');
    out
}

/// Where a column goes in a line: inside `metering` for a completion's metering
/// columns; an event's `kind` is `event` (the line's `kind` says what the line is).
fn key_of(kind: &str, column: &Column) -> (Option<&'static str>, &'static str) {
    match (kind, column.name) {
        (EVENT, "kind") => (None, "event"),
        (
            COMPLETION,
            "team_id" | "tier" | "credential_owner" | "provider" | "model_family" | "rate_card" | "provider_price",
        ) => (Some("metering"), column.name),
        _ => (None, column.name),
    }
}

fn push_pair(out: &mut String, first: &mut bool, key: &str, value: &Value) {
    push_raw(out, first, key, &value.to_string());
}

/// Add `"key":json` (`json` already encoded).
fn push_raw(out: &mut String, first: &mut bool, key: &str, json: &str) {
    if !std::mem::take(first) {
        out.push(',');
    }
    out.push_str(&Value::from(key).to_string());
    out.push(':');
    out.push_str(json);
}

/// An event's details as exported: the stored JSON text as an object when writing that
/// object back gives the very same text, else the text itself.
fn details_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value) if value.is_object() && value.to_string().as_str() == text => value,
        _ => Value::from(text),
    }
}

fn field_value(kind: &str, column: &Column, field: &Field) -> Value {
    match field {
        Field::Int(value) => value.map_or(Value::Null, Value::from),
        Field::Text(Some(text)) if kind == EVENT && column.name == "details" => details_value(text),
        Field::Text(value) => value.as_deref().map_or(Value::Null, Value::from),
    }
}

fn hash_value(hash: Option<&[u8]>) -> Value {
    hash.map_or(Value::Null, |h| Value::from(hex(h)))
}

/// The members of an entry's object: its chained columns in hash order, its link, then
/// `seq` and `at`.
fn write_entry(out: &mut String, entry: &StoredEntry) {
    let columns = chain::columns(entry.kind);
    let mut first = true;
    let mut nested: Option<(&'static str, String, bool)> = None;
    let mut at = None;
    for (column, field) in columns.iter().zip(&entry.fields) {
        let value = field_value(entry.kind, column, field);
        if column.name == "at_us" {
            at = value.as_i64().and_then(Timestamp::from_micros);
        }
        match key_of(entry.kind, column) {
            (None, key) => {
                if let Some((parent, body, any)) = nested.take() {
                    push_raw(out, &mut first, parent, &nested_json(&body, any));
                }
                push_pair(out, &mut first, key, &value);
            }
            (Some(parent), key) => {
                let (_, body, any) = nested.get_or_insert_with(|| (parent, String::new(), false));
                let mut inner_first = body.is_empty();
                *any |= !value.is_null();
                push_pair(body, &mut inner_first, key, &value);
            }
        }
    }
    if let Some((parent, body, any)) = nested.take() {
        push_raw(out, &mut first, parent, &nested_json(&body, any));
    }
    push_pair(out, &mut first, "prev_hash", &hash_value(entry.prev_hash.as_deref()));
    push_pair(out, &mut first, "hash", &hash_value(entry.hash.as_deref()));
    push_pair(out, &mut first, "seq", &Value::from(entry.row_seq));
    push_pair(out, &mut first, "at", &at.map_or(Value::Null, |at| Value::from(at.to_rfc3339())));
}

/// A nested object from its members (encoded), `null` when none of them is set.
fn nested_json(body: &str, any: bool) -> String {
    if any {
        format!("{{{body}}}")
    } else {
        "null".to_owned()
    }
}

/// What is wrong at the first line that does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// The line is not what an export holds (not JSON, a field missing or of the wrong
    /// type, an unknown field or kind).
    Malformed,
    /// The export is of a format or version this build does not read.
    Unsupported,
    /// The line's content no longer matches its hash.
    Changed,
    /// Entries are missing before this line.
    Missing,
    /// The line is out of its chain's order.
    Reordered,
    /// The line was not written by byok for this export (a repeated position, a link to
    /// nothing before it, an entry of another org or chain).
    Inserted,
    /// The export was cut short (no `end` line, or fewer lines than it says).
    Truncated,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::Malformed => "malformed",
            Problem::Unsupported => "unsupported",
            Problem::Changed => "changed",
            Problem::Missing => "missing",
            Problem::Reordered => "reordered",
            Problem::Inserted => "inserted",
            Problem::Truncated => "truncated",
        })
    }
}

/// The first line that does not verify (boxed: it travels in every `Err`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Broken(Box<BrokenLine>);

impl std::ops::Deref for Broken {
    type Target = BrokenLine;

    fn deref(&self) -> &BrokenLine {
        &self.0
    }
}

/// What [`Broken`] says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLine {
    /// The line (1 for the header).
    pub line: u64,
    /// What is wrong.
    pub problem: Problem,
    /// The chain, when the line is one of a chain's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// The entry's position in its chain, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// What the chain called for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What the line holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// Details for a person.
    pub detail: String,
}

impl Broken {
    /// Line `line` is wrong: `problem`, with `detail` for a person.
    pub fn new(line: u64, problem: Problem, detail: impl Into<String>) -> Self {
        Self(Box::new(BrokenLine {
            line,
            problem,
            chain: None,
            position: None,
            expected: None,
            found: None,
            detail: detail.into(),
        }))
    }

    fn at(mut self, chain: &str, position: Option<i64>) -> Self {
        self.0.chain = Some(chain.to_owned());
        self.0.position = position;
        self
    }

    fn expected_found(mut self, expected: impl Into<String>, found: impl Into<String>) -> Self {
        self.0.expected = Some(expected.into());
        self.0.found = Some(found.into());
        self
    }

    fn prefixed(mut self, prefix: &str) -> Self {
        self.0.detail = format!("{prefix}{}", self.0.detail);
        self
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)?;
        match (&self.chain, self.position) {
            (Some(chain), Some(position)) => write!(f, " (chain {chain}, position {position})")?,
            (Some(chain), None) => write!(f, " (chain {chain})")?,
            _ => {}
        }
        write!(f, ": {}", self.detail)?;
        if let (Some(expected), Some(found)) = (&self.expected, &self.found) {
            write!(f, "; expected {expected}, found {found}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Broken {}

/// What a verified export holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The org.
    pub org_id: String,
    /// When it was exported.
    pub exported_at: Timestamp,
    /// The range asked for.
    pub since: Option<Timestamp>,
    /// The range asked for.
    pub until: Option<Timestamp>,
    /// Lines, header and end line included.
    pub lines: u64,
    /// Chains verified.
    pub chains: u64,
    /// Chains that start from a retention purge's anchor.
    pub anchored_chains: u64,
    /// Chained entries verified.
    pub entries: u64,
    /// Lifecycle events.
    pub events: u64,
    /// Resolution rows (calls and refusals).
    pub calls: u64,
    /// Completions.
    pub completions: u64,
}

/// An entry read back from a line.
#[derive(Debug, Clone)]
struct LineEntry {
    kind: &'static str,
    chain: String,
    position: i64,
    fields: Vec<Field>,
    prev: ChainHash,
    hash: ChainHash,
    resolution_seq: Option<i64>,
}

/// Where a chain stands while its lines are read.
#[derive(Debug)]
struct ChainState {
    name: String,
    /// The next position expected, and the hash it must link to.
    next: i64,
    head: ChainHash,
    last: i64,
    last_hash: Option<ChainHash>,
    /// Completions carried by `call` lines, waiting for their position: position →
    /// (line, entry).
    pending: BTreeMap<i64, (u64, LineEntry)>,
}

/// Verifies an export line by line ([`ExportVerifier::line`]), keeping only what the
/// chains need (their heads, and the completions carried ahead of their position).
#[derive(Debug, Default)]
pub struct ExportVerifier {
    line: u64,
    header: Option<Header>,
    chains: Vec<ChainState>,
    /// The chain whose lines are being read (an index into `chains`).
    current: Option<usize>,
    ended: bool,
    entries: u64,
    events: u64,
    calls: u64,
    completions: u64,
}

/// Verify a whole export given as lines.
pub fn verify_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Summary, Broken> {
    let mut verifier = ExportVerifier::new();
    for line in lines {
        verifier.line(line)?;
    }
    verifier.finish()
}

impl ExportVerifier {
    /// A verifier before the first line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.line
    }

    /// Check the next line (without its line break). After an error, stop.
    pub fn line(&mut self, text: &str) -> Result<(), Broken> {
        self.line += 1;
        let n = self.line;
        let text = text.strip_suffix('\r').unwrap_or(text);
        if self.ended {
            return Err(Broken::new(n, Problem::Inserted, "a line after the end line"));
        }
        if text.trim().is_empty() {
            return Err(Broken::new(n, Problem::Malformed, "an empty line"));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Broken::new(n, Problem::Malformed, format!("not a JSON object ({e})")))?;
        let Value::Object(mut object) = value else {
            return Err(Broken::new(n, Problem::Malformed, "not a JSON object"));
        };
        let kind = match object.remove("kind") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err(Broken::new(n, Problem::Malformed, "\"kind\" is not a string")),
            None => return Err(Broken::new(n, Problem::Malformed, "no \"kind\": what is this line?")),
        };
        if self.header.is_none() {
            if kind != "header" {
                return Err(Broken::new(
                    n,
                    Problem::Malformed,
                    format!(
                        "the first line must be the export's header, not a \"{kind}\" line; \
                         is this a byok audit export?"
                    ),
                ));
            }
            return self.header(object);
        }
        match kind.as_str() {
            "lifecycle" => {
                let entry = read_entry(n, EVENT, &mut object)?;
                no_more(n, &object)?;
                self.events += 1;
                self.step(entry, None)
            }
            "call" => {
                let completion = match object.remove("completion") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(mut inner)) => {
                        let entry = read_entry(n, COMPLETION, &mut inner)?;
                        no_more(n, &inner).map_err(|e| e.prefixed("completion: "))?;
                        Some(entry)
                    }
                    Some(_) => return Err(Broken::new(n, Problem::Malformed, "\"completion\" is not an object")),
                };
                let entry = read_entry(n, RESOLUTION, &mut object)?;
                no_more(n, &object)?;
                self.calls += 1;
                self.completions += u64::from(completion.is_some());
                self.step(entry, completion)
            }
            "completion" => {
                let entry = read_entry(n, COMPLETION, &mut object)?;
                no_more(n, &object)?;
                self.completions += 1;
                self.step(entry, None)
            }
            "end" => self.end(object),
            "header" => Err(Broken::new(n, Problem::Inserted, "a second header")),
            other => Err(Broken::new(
                n,
                Problem::Malformed,
                format!("unknown kind \"{other}\" (expected lifecycle, call, completion or end)"),
            )),
        }
    }

    fn header(&mut self, mut object: Map<String, Value>) -> Result<(), Broken> {
        let n = self.line;
        match object.get("format").and_then(Value::as_str) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Broken::new(n, Problem::Unsupported, format!("format \"{other}\" is not {FORMAT}")))
            }
            None => return Err(Broken::new(n, Problem::Malformed, "the header has no \"format\"")),
        }
        match object.get("version").and_then(Value::as_u64) {
            Some(version) if version == u64::from(VERSION) => {}
            Some(version) => {
                return Err(Broken::new(
                    n,
                    Problem::Unsupported,
                    format!("export format version {version}; this byok reads version {VERSION}"),
                ))
            }
            None => return Err(Broken::new(n, Problem::Malformed, "the header has no numeric \"version\"")),
        }
        let header: Header = serde_json::from_value(Value::Object(std::mem::take(&mut object)))
            .map_err(|e| Broken::new(n, Problem::Malformed, format!("the header is not valid ({e})")))?;
        let mut chains: Vec<ChainState> = Vec::with_capacity(header.chains.len());
        for listed in &header.chains {
            let name = &listed.chain;
            let is_calls = name.strip_prefix("calls/").is_some_and(|segment| !segment.is_empty());
            if name != EVENTS_CHAIN && !is_calls {
                return Err(Broken::new(
                    n,
                    Problem::Malformed,
                    format!("the header lists an unknown chain \"{name}\""),
                ));
            }
            if chains.iter().any(|c| &c.name == name) {
                return Err(Broken::new(n, Problem::Malformed, format!("the header lists chain {name} twice")));
            }
            let after = &listed.after;
            let start_hash = match (after.from, after.hash.as_deref().map(parse_hex)) {
                (StartFrom::Missing, _) => {
                    return Err(Broken::new(
                        n,
                        Problem::Missing,
                        format!(
                            "the entry before the first exported one (position {}) is missing from the store",
                            after.position
                        ),
                    )
                    .at(name, Some(after.position)))
                }
                (StartFrom::Genesis, Some(Some(hash))) if after.position == 0 && hash == GENESIS => hash,
                (StartFrom::Genesis, _) => {
                    return Err(Broken::new(
                        n,
                        Problem::Malformed,
                        "a chain from genesis starts at position 0, zero hash",
                    )
                    .at(name, Some(after.position)))
                }
                (_, Some(Some(hash))) if after.position > 0 => hash,
                _ => {
                    return Err(Broken::new(n, Problem::Malformed, "the chain's start has no valid position and hash")
                        .at(name, Some(after.position)))
                }
            };
            let last_hash = match listed.last.hash.as_deref() {
                None => None,
                Some(text) => Some(parse_hex(text).ok_or_else(|| {
                    Broken::new(n, Problem::Malformed, "the chain's last hash is not 64 hex digits").at(name, None)
                })?),
            };
            if listed.last.position <= after.position {
                return Err(Broken::new(n, Problem::Malformed, "the chain ends before it starts").at(name, None));
            }
            chains.push(ChainState {
                name: name.clone(),
                next: after.position + 1,
                head: start_hash,
                last: listed.last.position,
                last_hash,
                pending: BTreeMap::new(),
            });
        }
        self.chains = chains;
        self.header = Some(header);
        Ok(())
    }

    fn org_id(&self) -> &str {
        self.header.as_ref().map_or("", |h| h.org_id.as_str())
    }

    /// Check one line's entry (and the completion a `call` line carries).
    fn step(&mut self, entry: LineEntry, completion: Option<LineEntry>) -> Result<(), Broken> {
        let n = self.line;
        let org = self.org_id().to_owned();
        for e in std::iter::once(&entry).chain(completion.iter()) {
            check_content(n, e)?;
            let org_of = org_field(e);
            if org_of != Some(org.as_str()) {
                return Err(Broken::new(n, Problem::Inserted, "an entry of another org")
                    .at(&e.chain, Some(e.position))
                    .expected_found(org.clone(), org_of.unwrap_or("none").to_owned()));
            }
        }
        let index = self.enter(&entry.chain)?;
        let state = &mut self.chains[index];
        drain(state)?;
        if state.pending.contains_key(&entry.position) {
            return Err(Broken::new(n, Problem::Inserted, "this position is already held by a completion above")
                .at(&state.name, Some(entry.position)));
        }
        advance(state, n, &entry)?;
        let mut stepped = 1;
        if let Some(completion) = completion {
            if completion.chain != entry.chain {
                return Err(Broken::new(n, Problem::Inserted, "the call's completion is of another chain")
                    .at(&entry.chain, Some(entry.position))
                    .expected_found(entry.chain.clone(), completion.chain.clone()));
            }
            if completion.resolution_seq != Some(entry.position) {
                return Err(Broken::new(n, Problem::Reordered, "the completion is not bound to this line's row")
                    .at(&entry.chain, Some(completion.position))
                    .expected_found(
                        format!("resolution_seq {}", entry.position),
                        completion.resolution_seq.map_or_else(|| "none".to_owned(), |r| format!("resolution_seq {r}")),
                    ));
            }
            if completion.position <= entry.position || state.pending.contains_key(&completion.position) {
                return Err(Broken::new(n, Problem::Reordered, "the completion's position is taken or before its row")
                    .at(&entry.chain, Some(completion.position)));
            }
            state.pending.insert(completion.position, (n, completion));
            stepped += 1;
        }
        drain(state)?;
        self.entries += stepped;
        Ok(())
    }

    /// Enter the chain `name`'s lines: the one being read, or the next the header lists
    /// (the one before must then be complete).
    fn enter(&mut self, name: &str) -> Result<usize, Broken> {
        let n = self.line;
        if let Some(current) = self.current {
            if self.chains[current].name == name {
                return Ok(current);
            }
        }
        let next = self.current.map_or(0, |c| c + 1);
        if let Some(current) = self.current {
            close(&mut self.chains[current], n)?;
        }
        match self.chains.iter().position(|c| c.name == name) {
            Some(index) if index == next => {
                self.current = Some(index);
                Ok(index)
            }
            Some(index) if index < next => Err(Broken::new(
                n,
                Problem::Reordered,
                "an entry of a chain whose lines ended above (the header lists each chain's lines together)",
            )
            .at(name, None)),
            Some(_) => {
                let skipped = &self.chains[next];
                Err(Broken::new(n, Problem::Missing, format!("chain {} has no lines before this one", skipped.name))
                    .at(&skipped.name, Some(skipped.next))
                    .expected_found(format!("chain {}", skipped.name), format!("chain {name}")))
            }
            None => {
                Err(Broken::new(n, Problem::Inserted, "an entry of a chain the header does not list").at(name, None))
            }
        }
    }

    fn end(&mut self, mut object: Map<String, Value>) -> Result<(), Broken> {
        let n = self.line;
        let count = |object: &mut Map<String, Value>, key: &str| {
            object
                .remove(key)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| Broken::new(n, Problem::Malformed, format!("the end line has no count \"{key}\"")))
        };
        let lines = count(&mut object, "lines")?;
        let entries = count(&mut object, "entries")?;
        no_more(n, &object)?;
        if let Some(current) = self.current {
            close(&mut self.chains[current], n)?;
        }
        let next = self.current.map_or(0, |c| c + 1);
        if let Some(skipped) = self.chains.get(next) {
            return Err(Broken::new(n, Problem::Missing, format!("chain {} has no lines", skipped.name))
                .at(&skipped.name, Some(skipped.next)));
        }
        if lines != n - 1 {
            return Err(Broken::new(n, Problem::Missing, "the end line counts another number of lines before it")
                .expected_found(lines.to_string(), (n - 1).to_string()));
        }
        if entries != self.entries {
            return Err(Broken::new(n, Problem::Missing, "the end line counts another number of entries")
                .expected_found(entries.to_string(), self.entries.to_string()));
        }
        self.ended = true;
        Ok(())
    }

    /// After the last line: the summary, or why the export is incomplete.
    pub fn finish(self) -> Result<Summary, Broken> {
        let Some(header) = self.header else {
            return Err(Broken::new(self.line.max(1), Problem::Truncated, "the export is empty: no header"));
        };
        if !self.ended {
            return Err(Broken::new(
                self.line + 1,
                Problem::Truncated,
                format!("the export stops after line {} without its end line: it was cut short", self.line),
            ));
        }
        let anchored_chains = header.chains.iter().filter(|c| c.after.from == StartFrom::Anchor).count() as u64;
        Ok(Summary {
            org_id: header.org_id,
            exported_at: header.exported_at,
            since: header.since,
            until: header.until,
            lines: self.line,
            chains: header.chains.len() as u64,
            anchored_chains,
            entries: self.entries,
            events: self.events,
            calls: self.calls,
            completions: self.completions,
        })
    }
}

/// The org column of an entry.
fn org_field(entry: &LineEntry) -> Option<&str> {
    let index = chain::columns(entry.kind).iter().position(|c| c.name == "org_id")?;
    match entry.fields.get(index) {
        Some(Field::Text(Some(org))) => Some(org.as_str()),
        _ => None,
    }
}

/// The entry's hash, recomputed from its fields, is the one it carries.
fn check_content(n: u64, entry: &LineEntry) -> Result<(), Broken> {
    let recomputed = link(entry.kind, &entry.prev, &entry.fields);
    if recomputed != entry.hash {
        let what = if entry.kind == COMPLETION { "the completion's content" } else { "the line's content" };
        return Err(Broken::new(n, Problem::Changed, format!("{what} does not match its hash (a field was edited)"))
            .at(&entry.chain, Some(entry.position))
            .expected_found(format!("hash {}", hex(&recomputed)), format!("hash {}", hex(&entry.hash))));
    }
    Ok(())
}

/// Take `entry` as the next entry of `state`'s chain.
fn advance(state: &mut ChainState, n: u64, entry: &LineEntry) -> Result<(), Broken> {
    let found = entry.position;
    if found > state.last {
        return Err(Broken::new(n, Problem::Inserted, "a position past the chain's last one in the header")
            .at(&state.name, Some(found))
            .expected_found(format!("at most position {}", state.last), format!("position {found}")));
    }
    if found < state.next {
        return Err(Broken::new(n, Problem::Reordered, "a position that came already (out of order or repeated)")
            .at(&state.name, Some(found))
            .expected_found(format!("position {}", state.next), format!("position {found}")));
    }
    if found > state.next {
        // Up to the next position a completion carried above holds, if that comes first.
        let end = state.pending.keys().next().map_or(found, |&held| held.min(found)) - 1;
        let range =
            if end == state.next { format!("entry {}", state.next) } else { format!("entries {}..{end}", state.next) };
        return Err(Broken::new(
            n,
            Problem::Missing,
            format!("{range} of the chain should come here (deleted, or out of order)"),
        )
        .at(&state.name, Some(found))
        .expected_found(format!("position {}", state.next), format!("position {found}")));
    }
    if entry.prev != state.head {
        return Err(Broken::new(n, Problem::Inserted, "the entry does not link to the one before it")
            .at(&state.name, Some(found))
            .expected_found(format!("prev_hash {}", hex(&state.head)), format!("prev_hash {}", hex(&entry.prev))));
    }
    state.head = entry.hash;
    state.next = found + 1;
    Ok(())
}

/// Take the carried completions whose turn has come.
fn drain(state: &mut ChainState) -> Result<(), Broken> {
    while let Some((n, entry)) = state.pending.remove(&state.next) {
        advance(state, n, &entry)?;
    }
    Ok(())
}

/// The chain's lines have ended (at line `n`): it must have reached its last entry.
fn close(state: &mut ChainState, n: u64) -> Result<(), Broken> {
    drain(state)?;
    if let Some((&position, &(line, _))) = state.pending.iter().next() {
        return Err(Broken::new(
            line,
            Problem::Missing,
            "the chain's lines end before the position of the completion this line carries",
        )
        .at(&state.name, Some(position))
        .expected_found(format!("position {}", state.next), format!("position {position}")));
    }
    let reached = state.next - 1;
    if reached != state.last {
        return Err(Broken::new(n, Problem::Missing, "the chain's lines end before its last entry in the header")
            .at(&state.name, Some(state.next))
            .expected_found(format!("last position {}", state.last), format!("last position {reached}")));
    }
    if let Some(last) = state.last_hash {
        if last != state.head {
            return Err(Broken::new(n, Problem::Changed, "the chain's last hash is not the one in the header")
                .at(&state.name, Some(reached))
                .expected_found(hex(&last), hex(&state.head)));
        }
    }
    Ok(())
}

/// No member is left that the line should not have.
fn no_more(n: u64, object: &Map<String, Value>) -> Result<(), Broken> {
    match object.keys().next() {
        Some(key) => Err(Broken::new(n, Problem::Malformed, format!("unknown field \"{key}\""))),
        None => Ok(()),
    }
}

/// Read an entry of `kind` from a line's members (removing what it reads).
fn read_entry(n: u64, kind: &'static str, object: &mut Map<String, Value>) -> Result<LineEntry, Broken> {
    let malformed = |detail: String| Broken::new(n, Problem::Malformed, detail);
    let mut nested: BTreeMap<&'static str, Option<Map<String, Value>>> = BTreeMap::new();
    let mut fields = Vec::new();
    for column in chain::columns(kind) {
        let (parent, key) = key_of(kind, column);
        let value = match parent {
            None => object.remove(key).ok_or_else(|| malformed(format!("missing field \"{key}\"")))?,
            Some(parent) => {
                if !nested.contains_key(parent) {
                    let inner = match object.remove(parent) {
                        Some(Value::Object(inner)) => Some(inner),
                        Some(Value::Null) => None,
                        Some(_) => return Err(malformed(format!("\"{parent}\" is neither an object nor null"))),
                        None => return Err(malformed(format!("missing field \"{parent}\""))),
                    };
                    nested.insert(parent, inner);
                }
                match nested.get_mut(parent) {
                    Some(Some(inner)) => {
                        inner.remove(key).ok_or_else(|| malformed(format!("missing field \"{parent}.{key}\"")))?
                    }
                    _ => Value::Null,
                }
            }
        };
        let field = match (column.int, value) {
            (true, Value::Null) => Field::Int(None),
            (true, Value::Number(number)) => {
                Field::Int(Some(number.as_i64().ok_or_else(|| malformed(format!("\"{key}\" is not a whole number")))?))
            }
            (true, _) => return Err(malformed(format!("\"{key}\" must be a whole number or null"))),
            (false, Value::Null) => Field::Text(None),
            (false, Value::String(text)) => Field::Text(Some(text)),
            (false, value) if kind == EVENT && column.name == "details" => Field::Text(Some(value.to_string())),
            (false, _) => return Err(malformed(format!("\"{key}\" must be text or null"))),
        };
        fields.push(field);
    }
    for (parent, inner) in nested {
        if let Some(key) = inner.as_ref().and_then(|inner| inner.keys().next()) {
            return Err(malformed(format!("unknown field \"{parent}.{key}\"")));
        }
    }
    let hash_of = |object: &mut Map<String, Value>, key: &str| match object.remove(key) {
        Some(Value::String(text)) => {
            parse_hex(&text).ok_or_else(|| malformed(format!("\"{key}\" is not 64 hex digits")))
        }
        Some(Value::Null) => {
            Err(Broken::new(n, Problem::Inserted, format!("the entry has no {key}: byok did not write it")))
        }
        Some(_) => Err(malformed(format!("\"{key}\" is not text"))),
        None => Err(malformed(format!("missing field \"{key}\""))),
    };
    let prev = hash_of(object, "prev_hash")?;
    let hash = hash_of(object, "hash")?;
    match object.remove("seq") {
        Some(Value::Number(number)) if number.is_i64() => {}
        Some(_) => return Err(malformed("\"seq\" is not a whole number".to_owned())),
        None => return Err(malformed("missing field \"seq\"".to_owned())),
    }
    let int_at = |name: &str| {
        let index = chain::columns(kind).iter().position(|c| c.name == name)?;
        match fields.get(index) {
            Some(Field::Int(value)) => *value,
            _ => None,
        }
    };
    let text_at = |name: &str| {
        let index = chain::columns(kind).iter().position(|c| c.name == name)?;
        match fields.get(index) {
            Some(Field::Text(value)) => value.clone(),
            _ => None,
        }
    };
    let (chain_name, position) = if kind == EVENT {
        (EVENTS_CHAIN.to_owned(), int_at("chain_seq"))
    } else {
        let segment =
            text_at("segment").filter(|s| !s.is_empty()).ok_or_else(|| malformed("no \"segment\"".to_owned()))?;
        (calls_chain(&segment), int_at("segment_seq"))
    };
    let position = position.ok_or_else(|| {
        Broken::new(n, Problem::Inserted, "the entry has no chain position: byok did not write it")
            .at(&chain_name, None)
    })?;
    let at = match object.remove("at") {
        None | Some(Value::Null) => None,
        Some(Value::String(at)) => Some(at),
        Some(_) => return Err(malformed("\"at\" is not text".to_owned())),
    };
    let at_us = int_at("at_us");
    if let Some(at) = at {
        let agrees = Timestamp::parse_rfc3339(&at).ok().map(|t| t.as_micros()) == at_us;
        if !agrees {
            return Err(Broken::new(n, Problem::Changed, "\"at\" does not agree with \"at_us\" (a field was edited)")
                .at(&chain_name, Some(position))
                .expected_found(
                    at_us.and_then(Timestamp::from_micros).map_or_else(|| "none".to_owned(), |t| t.to_rfc3339()),
                    at,
                ));
        }
    }
    let resolution_seq = if kind == COMPLETION { int_at("resolution_seq") } else { None };
    Ok(LineEntry { kind, chain: chain_name, position, fields, prev, hash, resolution_seq })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::audit::{CallCompletion, CredentialOwner, Metering, Outcome, ResolutionAudit};
    use crate::chain::{completion_fields, resolution_fields};
    use crate::ids::{CredentialId, OrgId, TeamId};
    use crate::model::Tier;
    use crate::provider::ProviderId;

    const SEGMENT: &str = "01JSEGMENT0000000000000000";

    struct Chain {
        head: ChainHash,
        position: i64,
    }

    impl Chain {
        fn new() -> Self {
            Self { head: GENESIS, position: 0 }
        }

        fn push(&mut self, kind: &'static str, row_seq: i64, fields: Vec<Field>) -> StoredEntry {
            self.position += 1;
            let hash = link(kind, &self.head, &fields);
            let entry =
                StoredEntry { kind, row_seq, fields, prev_hash: Some(self.head.to_vec()), hash: Some(hash.to_vec()) };
            self.head = hash;
            entry
        }
    }

    fn event_fields(org: &OrgId, position: i64, kind: &str, details: &str) -> Vec<Field> {
        vec![
            Field::Int(Some(position)),
            Field::Text(Some(format!("evt_{position}"))),
            Field::Text(Some(org.to_string())),
            Field::Text(Some(kind.to_owned())),
            Field::Text(Some("cred_x".to_owned())),
            Field::Text(Some("cred_x".to_owned())),
            Field::Int(Some(position)),
            Field::Text(Some("fp_x".to_owned())),
            Field::Text(Some("operator".to_owned())),
            Field::Int(Some(1_767_225_600_000_000 + position)),
            Field::Text(Some(details.to_owned())),
        ]
    }

    fn row(org: OrgId, call: &str, at_us: i64, outcome: Outcome) -> ResolutionAudit {
        ResolutionAudit {
            org_id: Some(org),
            at: Timestamp::from_micros(at_us).unwrap(),
            outcome,
            credential_owner: Some(CredentialOwner::Org),
            tier: Some(Tier::KatmanB),
            ..ResolutionAudit::denied(call.to_owned())
        }
    }

    fn completion(org: OrgId, call: &str, at_us: i64, metered: bool) -> CallCompletion {
        CallCompletion {
            call_id: call.to_owned(),
            org_id: org,
            credential_id: CredentialId::generate(),
            at: Timestamp::from_micros(at_us).unwrap(),
            upstream_status: Some(200),
            latency_us: 1234,
            input_tokens: Some(10),
            output_tokens: Some(20),
            status: "completed".to_owned(),
            metering: metered.then(|| Metering {
                team_id: TeamId::generate(),
                tier: Tier::KatmanB,
                credential_owner: CredentialOwner::Org,
                provider: ProviderId::Openai,
                model_family: None,
                rate_card: "USD:0.002:0.4:1.6".to_owned(),
                provider_price: None,
            }),
        }
    }

    /// An export: two events, then a segment whose chain runs R1 R2 C1(→1) C-unbound R3
    /// C3(→3); R2 is denied. `since_position` cuts the calls chain after that position.
    fn export(since_position: i64) -> Vec<String> {
        let org = OrgId::generate();
        let mut events = Chain::new();
        let e1 = events.push(EVENT, 1, event_fields(&org, 1, "created", "{\"name\":\"openai-prod\"}"));
        let e2 = events.push(EVENT, 2, event_fields(&org, 2, "rotated", "{\"b\": 1, \"a\": 2}"));
        let mut calls = Chain::new();
        let at = 1_767_225_600_000_000;
        let r1 = calls.push(RESOLUTION, 1, resolution_fields(SEGMENT, 1, &row(org, "c1", at, Outcome::Allowed)));
        let r2 = calls.push(RESOLUTION, 2, resolution_fields(SEGMENT, 2, &row(org, "c2", at + 1, Outcome::Denied)));
        let c1 =
            calls.push(COMPLETION, 1, completion_fields(SEGMENT, 3, &completion(org, "c1", at + 5, true), Some(1)));
        let c0 = calls.push(COMPLETION, 2, completion_fields(SEGMENT, 4, &completion(org, "c0", at + 6, false), None));
        let r3 = calls.push(RESOLUTION, 3, resolution_fields(SEGMENT, 5, &row(org, "c3", at + 7, Outcome::Allowed)));
        let c3 =
            calls.push(COMPLETION, 3, completion_fields(SEGMENT, 6, &completion(org, "c3", at + 9, true), Some(5)));
        let entries = [&r1, &r2, &c1, &c0, &r3, &c3];
        let after = since_position;
        let after_hash = match after {
            0 => GENESIS.to_vec(),
            p => entries[usize::try_from(p - 1).unwrap()].hash.clone().unwrap(),
        };
        let header = Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            org_id: org.to_string(),
            exported_at: Timestamp::from_micros(at + 100).unwrap(),
            since: None,
            until: None,
            chains: vec![
                ExportedChain {
                    chain: EVENTS_CHAIN.to_owned(),
                    after: ChainStart { position: 0, hash: Some(hex(&GENESIS)), from: StartFrom::Genesis },
                    last: ChainPoint { position: 2, hash: Some(hex(&events.head)) },
                },
                ExportedChain {
                    chain: calls_chain(SEGMENT),
                    after: ChainStart {
                        position: after,
                        hash: Some(hex(&after_hash)),
                        from: if after == 0 { StartFrom::Genesis } else { StartFrom::Range },
                    },
                    last: ChainPoint { position: 6, hash: Some(hex(&calls.head)) },
                },
            ],
        };
        let mut lines = vec![header_line(&header), lifecycle_line(&e1), lifecycle_line(&e2)];
        let mut entries_count = 2;
        // What the store's exporter does: a row carries the first completion bound to
        // it; every other completion has a line of its own.
        if after < 1 {
            lines.push(call_line(&r1, Some(&c1)));
            entries_count += 2;
        }
        if after < 2 {
            lines.push(call_line(&r2, None));
            entries_count += 1;
        }
        if (1..3).contains(&after) {
            lines.push(completion_line(&c1));
            entries_count += 1;
        }
        if after < 4 {
            lines.push(completion_line(&c0));
            entries_count += 1;
        }
        if after < 5 {
            lines.push(call_line(&r3, Some(&c3)));
            entries_count += 2;
        } else {
            lines.push(completion_line(&c3));
            entries_count += 1;
        }
        let count = lines.len() as u64;
        lines.push(end_line(count, entries_count));
        lines
    }

    fn verify(lines: &[String]) -> Result<Summary, Broken> {
        verify_lines(lines.iter().map(String::as_str))
    }

    fn edit(lines: &[String], index: usize, change: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut lines = lines.to_vec();
        let mut value: Value = serde_json::from_str(&lines[index]).unwrap();
        change(&mut value);
        lines[index] = value.to_string();
        lines
    }

    #[test]
    fn an_export_verifies_from_the_start_and_from_mid_chain() {
        let lines = export(0);
        let summary = verify(&lines).unwrap_or_else(|e| panic!("{e}\n{}", lines.join("\n")));
        assert_eq!((summary.entries, summary.events, summary.calls, summary.completions), (8, 2, 3, 3));
        assert_eq!((summary.lines, summary.chains), (8, 2));
        for since in 1..6 {
            let lines = export(since);
            verify(&lines).unwrap_or_else(|e| panic!("from {since}: {e}\n{}", lines.join("\n")));
        }
        // The lines carry what the old export's rows did.
        let call: Value = serde_json::from_str(&lines[3]).unwrap();
        assert_eq!(call["call_id"], "c1");
        assert_eq!(call["outcome"], "allowed");
        assert_eq!(call["completion"]["upstream_status"], 200);
        assert_eq!(call["completion"]["metering"]["rate_card"], "USD:0.002:0.4:1.6");
        assert!(call["at"].as_str().unwrap().ends_with('Z'), "{call}");
        // Details kept as an object when that writes back the same text, else as text.
        let created: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(created["details"]["name"], "openai-prod", "{created}");
        assert_eq!(created["event"], "created");
        let rotated: Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(rotated["details"], "{\"b\": 1, \"a\": 2}", "{rotated}");
    }

    #[test]
    fn an_edited_field_is_caught_on_its_line() {
        let lines = export(0);
        let cases: Vec<(usize, Box<dyn Fn(&mut Value)>)> = vec![
            (3, Box::new(|v| v["completion"]["input_tokens"] = Value::from(11))),
            (3, Box::new(|v| v["completion"]["upstream_status"] = Value::from(500))),
            (3, Box::new(|v| v["completion"]["metering"]["rate_card"] = Value::from("USD:0:0:0"))),
            (3, Box::new(|v| v["model"] = Value::from("gpt-4o"))),
            (4, Box::new(|v| v["outcome"] = Value::from("allowed"))),
            (1, Box::new(|v| v["details"]["name"] = Value::from("other"))),
            (2, Box::new(|v| v["details"] = Value::from("{\"b\":1,\"a\":2}"))),
            (5, Box::new(|v| v["latency_us"] = Value::from(1))),
        ];
        for (index, change) in cases {
            let broken = verify(&edit(&lines, index, change)).unwrap_err();
            assert_eq!((broken.line, broken.problem), (index as u64 + 1, Problem::Changed), "{broken}");
            assert!(broken.expected.is_some() && broken.found.is_some(), "{broken}");
        }
        // `at` must agree with `at_us`.
        let broken = verify(&edit(&lines, 4, |v| v["at"] = Value::from("2020-01-01T00:00:00Z"))).unwrap_err();
        assert_eq!((broken.line, broken.problem), (5, Problem::Changed), "{broken}");
    }

    #[test]
    fn deleted_reordered_and_inserted_lines_are_caught() {
        let lines = export(0);
        let without = |index: usize| {
            let mut lines = lines.clone();
            lines.remove(index);
            lines
        };
        // A deleted call line: the next line's position is not the one expected.
        let broken = verify(&without(4)).unwrap_err();
        assert_eq!((broken.line, broken.problem), (5, Problem::Missing), "{broken}");
        assert!(broken.detail.starts_with("entry 2 "), "{broken}");
        assert_eq!(broken.chain.as_deref(), Some(calls_chain(SEGMENT).as_str()));
        assert_eq!((broken.expected.as_deref(), broken.found.as_deref()), (Some("position 2"), Some("position 4")));
        // A deleted event.
        let broken = verify(&without(1)).unwrap_err();
        assert_eq!((broken.line, broken.problem), (2, Problem::Missing), "{broken}");
        // The last line of a chain, and the end line.
        let broken = verify(&without(6)).unwrap_err();
        assert_eq!((broken.line, broken.problem), (7, Problem::Missing), "{broken}");
        let broken = verify(&without(7)).unwrap_err();
        assert_eq!((broken.line, broken.problem), (8, Problem::Truncated), "{broken}");
        // Two lines swapped.
        let mut swapped = lines.clone();
        swapped.swap(4, 5);
        let broken = verify(&swapped).unwrap_err();
        assert_eq!((broken.line, broken.problem), (5, Problem::Missing), "{broken}");
        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        let broken = verify(&swapped).unwrap_err();
        assert_eq!(broken.line, 2, "{broken}");
        // An event moved among the calls.
        let mut moved = lines.clone();
        let event = moved.remove(2);
        moved.insert(4, event);
        let broken = verify(&moved).unwrap_err();
        assert_eq!((broken.line, broken.problem), (3, Problem::Missing), "{broken}");
        // A repeated line.
        let mut repeated = lines.clone();
        repeated.insert(4, lines[3].clone());
        let broken = verify(&repeated).unwrap_err();
        assert_eq!((broken.line, broken.problem), (5, Problem::Reordered), "{broken}");
        // A line made up with a correct-looking position and hash.
        let mut made_up = lines.clone();
        let forged = edit(&lines, 5, |v| {
            v["call_id"] = Value::from("forged");
        });
        made_up[5] = forged[5].clone();
        let broken = verify(&made_up).unwrap_err();
        assert_eq!((broken.line, broken.problem), (6, Problem::Changed), "{broken}");
        // A line after the end.
        let mut after = lines.clone();
        after.push(lines[3].clone());
        assert_eq!(verify(&after).unwrap_err().problem, Problem::Inserted);
    }

    #[test]
    fn bad_input_is_named_by_line() {
        let lines = export(0);
        let replaced = |index: usize, text: &str| {
            let mut lines = lines.clone();
            lines[index] = text.to_owned();
            lines
        };
        let cases: Vec<(Vec<String>, u64, Problem, &str)> = vec![
            (replaced(3, "not json"), 4, Problem::Malformed, "not a JSON object"),
            (replaced(3, "[1]"), 4, Problem::Malformed, "not a JSON object"),
            (replaced(3, ""), 4, Problem::Malformed, "empty line"),
            (replaced(3, "{\"kind\":\"rows\"}"), 4, Problem::Malformed, "unknown kind"),
            (
                edit(&lines, 3, |v| v.as_object_mut().unwrap().retain(|k, _| k != "token_id")),
                4,
                Problem::Malformed,
                "token_id",
            ),
            (edit(&lines, 3, |v| v["extra"] = Value::from(1)), 4, Problem::Malformed, "unknown field \"extra\""),
            (edit(&lines, 3, |v| v["segment_seq"] = Value::from("1")), 4, Problem::Malformed, "segment_seq"),
            (edit(&lines, 3, |v| v["hash"] = Value::from("zz")), 4, Problem::Malformed, "hash"),
            (edit(&lines, 0, |v| v["version"] = Value::from(2)), 1, Problem::Unsupported, "version 2"),
            (edit(&lines, 0, |v| v["format"] = Value::from("csv")), 1, Problem::Unsupported, "csv"),
            (replaced(0, &lines[1]), 1, Problem::Malformed, "header"),
            (
                edit(&lines, 0, |v| v["chains"][1]["after"]["from"] = Value::from("missing")),
                1,
                Problem::Missing,
                "missing",
            ),
        ];
        for (lines, line, problem, needle) in cases {
            let broken = verify(&lines).unwrap_err();
            assert_eq!((broken.line, broken.problem), (line, problem), "{broken}");
            assert!(broken.to_string().contains(needle), "'{needle}' missing from: {broken}");
            assert!(broken.to_string().starts_with(&format!("line {line}: ")), "{broken}");
        }
        assert_eq!(verify(&[]).unwrap_err().problem, Problem::Truncated);
    }

    #[test]
    fn an_entry_of_another_org_is_refused() {
        let lines = export(0);
        let other = export(0);
        // Another org's (correctly hashed) event in place of this one's.
        let mut mixed = lines.clone();
        mixed[1] = other[1].clone();
        let broken = verify(&mixed).unwrap_err();
        assert_eq!((broken.line, broken.problem), (2, Problem::Inserted), "{broken}");
    }
}
