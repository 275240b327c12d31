//! `byok audit …`, and the credential timeline shared with `byok credential lifecycle`.
//!
//! Most audit commands are one request and one answer, like every other command. Three
//! are not: `replay` and `export` page through (or stream) answers of any length to
//! stdout as they arrive (memory stays flat), and `verify` sets the exit code from the
//! answer so scripts can gate on it. `verify --export` needs no server at all: it checks
//! an export file's chains offline ([`byok_domain::export`]).

use std::borrow::Cow;
use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use byok_domain::export::Broken;
use reqwest::Method;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{org_path, owner_path, Planned};
use crate::api::{ApiRequest, Body, PurgeAudit};
use crate::cli::{AuditCommand, AuditExportArgs, AuditFilterFlags, AuditQueryArgs, TimelineArgs};
use crate::client::AdminClient;
use crate::error::CliError;
use crate::output::{
    checkpoint_written, emit, render_for, render_json, timeline_entry, timeline_header, StdoutStream, View, NO_EVENTS,
};

/// The largest checkpoint file accepted: a head per writer segment is small, so anything
/// near this is the wrong file.
const MAX_CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;

/// The request for an audit command (for `replay` and `export`, the first page's).
pub fn plan(command: &AuditCommand) -> Result<Planned, CliError> {
    check(command)?;
    Ok(match command {
        AuditCommand::Verify { export: Some(_), .. } => {
            return Err(CliError::Usage(
                "`byok audit verify --export` reads the file offline; it sends no request".to_owned(),
            ))
        }
        AuditCommand::Verify { org: Some(org), platform: false, checkpoint: None, .. } => {
            Planned { request: ApiRequest::get(&org_path(org, &["audit", "verify"])), view: View::AuditVerify }
        }
        AuditCommand::Verify { org: Some(org), platform: false, checkpoint: Some(path), .. } => Planned {
            request: ApiRequest::post(&org_path(org, &["audit", "verify"]), Body::Checkpoint(read_checkpoint(path)?)),
            view: View::CheckpointCheck,
        },
        AuditCommand::Verify { org: None, platform: true, checkpoint: None, .. } => Planned {
            request: ApiRequest::get(&["v1", "platform", "audit", "verify"]),
            view: View::PlatformAuditVerify,
        },
        AuditCommand::Verify { .. } => {
            return Err(CliError::Usage(
                "give either --org ORG or --platform (a checkpoint is an org's, so --checkpoint needs --org)"
                    .to_owned(),
            ))
        }
        AuditCommand::Replay(args) => Planned { request: timeline_request(args)?, view: View::Lifecycle },
        AuditCommand::Export(args) if !selects_rows(&args.filters) => {
            Planned { request: export_request(args), view: View::AuditRows }
        }
        AuditCommand::Export(AuditExportArgs { org, filters, page_size }) => {
            Planned { request: filtered_rows(org, filters).with_query("limit", page_size), view: View::AuditRows }
        }
        AuditCommand::Query(AuditQueryArgs { org, filters, limit, after_seq }) => Planned {
            request: filtered_rows(org, filters)
                .with_query("limit", limit)
                .with_optional_query("after_seq", *after_seq),
            view: View::AuditRows,
        },
        AuditCommand::Checkpoint { org, .. } => Planned {
            request: ApiRequest::new(Method::POST, &org_path(org, &["audit", "checkpoints"]), None),
            view: View::Checkpoint,
        },
        AuditCommand::Purge { org, before, .. } => Planned {
            request: ApiRequest::post(
                &org_path(org, &["audit", "purge"]),
                Body::PurgeAudit(PurgeAudit { before: before.clone().unwrap_or_else(|| "retention".to_owned()) }),
            ),
            view: View::AuditPurged,
        },
        AuditCommand::PublicKey => {
            Planned { request: ApiRequest::get(&["v1", "audit", "public-key"]), view: View::AuditPublicKey }
        }
    })
}

/// Refuse an audit command that cannot be right, before a token is looked for.
pub fn check(command: &AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::Purge { org, before: Some(before), yes: false } => Err(CliError::Usage(format!(
            "purging the audit of org '{org}' before {before} may remove entries still inside its retention \
             period, and there is no undo; add --yes to confirm (without --before, only entries past \
             retention are removed)"
        ))),
        AuditCommand::Checkpoint { out: Some(path), .. } if path.exists() => Err(CliError::Usage(format!(
            "{} already exists; a checkpoint is never written over an existing file (an older checkpoint \
             may be the one that proves something); choose another name",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// `GET …/credentials/{cred}/lifecycle[?limit=N]`: the first page of a timeline.
pub fn timeline_request(args: &TimelineArgs) -> Result<ApiRequest, CliError> {
    Ok(ApiRequest::get(&owner_path(&args.owner, &["credentials", &args.cred, "lifecycle"])?)
        .with_optional_query("limit", args.limit))
}

/// Whether an export selects rows (`--credential`, `--call-id`, `--outcome`) rather than
/// exporting every chain whole.
fn selects_rows(filters: &AuditFilterFlags) -> bool {
    filters.credential.is_some() || filters.call_id.is_some() || filters.outcome.is_some()
}

/// `GET /v1/orgs/{org}/audit/export` for the range given.
fn export_request(args: &AuditExportArgs) -> ApiRequest {
    ApiRequest::get(&org_path(&args.org, &["audit", "export"]))
        .with_optional_query("since", args.filters.since.as_deref())
        .with_optional_query("until", args.filters.until.as_deref())
}

/// `GET /v1/orgs/{org}/audit` with the filters given.
fn filtered_rows(org: &str, filters: &AuditFilterFlags) -> ApiRequest {
    let AuditFilterFlags { credential, call_id, outcome, since, until } = filters;
    ApiRequest::get(&org_path(org, &["audit"]))
        .with_optional_query("credential", credential.as_deref())
        .with_optional_query("call_id", call_id.as_deref())
        .with_optional_query("outcome", outcome.as_deref())
        .with_optional_query("since", since.as_deref())
        .with_optional_query("until", until.as_deref())
}

/// Read a checkpoint file (or standard input for `-`) as `byok audit checkpoint` wrote it.
fn read_checkpoint(path: &Path) -> Result<Value, CliError> {
    let read_error = |source| CliError::ReadFile { what: "the checkpoint", path: path.to_owned(), source };
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().take(MAX_CHECKPOINT_BYTES + 1).read_to_string(&mut text).map_err(read_error)?;
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_CHECKPOINT_BYTES + 1).read_to_string(&mut text))
            .map_err(read_error)?;
    }
    if text.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Err(CliError::Usage(format!(
            "{} is larger than {} MiB; that is not a checkpoint",
            path.display(),
            MAX_CHECKPOINT_BYTES / (1024 * 1024)
        )));
    }
    let not_a_checkpoint = |why: String| {
        CliError::Usage(format!(
            "{} is not a byok audit checkpoint ({why}); give the file `byok audit checkpoint --out FILE` wrote",
            path.display()
        ))
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| not_a_checkpoint(format!("not JSON: {e}")))?;
    let has = |field: &str| value.get(field).is_some_and(|v| !v.is_null());
    if !(value.is_object() && has("checkpoint") && has("signature")) {
        return Err(not_a_checkpoint("expected an object with \"checkpoint\" and \"signature\"".to_owned()));
    }
    Ok(value)
}

/// Run an audit command against `client`.
pub async fn run(client: &AdminClient, command: &AuditCommand, json: bool) -> Result<(), CliError> {
    if let AuditCommand::Replay(args) = command {
        return replay(client, args, json).await;
    }
    let planned = plan(command)?;
    match command {
        AuditCommand::Export(args) if !selects_rows(&args.filters) => {
            stream_export(client, planned.request, &mut StdoutStream::default()).await
        }
        AuditCommand::Export(_) => export(client, planned.request).await,
        AuditCommand::Verify { org, .. } => {
            let answer = client.send(&planned.request).await?;
            let rendered = if json { render_json(&answer) } else { render_for(planned.view, org.as_deref(), &answer) };
            emit(&rendered)?;
            let whose = org.as_ref().map_or_else(|| "the platform pool".to_owned(), |org| format!("org {org}"));
            verdict(&whose, planned.view, &answer)
        }
        AuditCommand::Checkpoint { out: Some(path), .. } => {
            let answer = client.send(&planned.request).await?;
            write_checkpoint(path, &answer)?;
            let mut rendered = checkpoint_written(&answer, path);
            if json {
                rendered.stdout = render_json(&answer).stdout;
            }
            emit(&rendered)
        }
        _ => {
            let answer = client.send(&planned.request).await?;
            emit(&if json { render_json(&answer) } else { render_for(planned.view, None, &answer) })
        }
    }
}

/// `Ok` when a verification answer says `ok`, else [`CliError::AuditNotVerified`]
/// saying in a few words what failed. `whose` names the audit: `org acme`, `the
/// platform pool`.
pub fn verdict(whose: &str, view: View, answer: &Value) -> Result<(), CliError> {
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    let broken_link = |report: &Value| {
        report.get("first_bad").filter(|bad| bad.is_object()).map(|bad| {
            let text = |field: &str| bad.get(field).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
            format!(
                "{} entry at position {} of chain {} ({})",
                text("problem").unwrap_or_default(),
                text("seq").unwrap_or_default(),
                text("chain").unwrap_or_default(),
                text("row").unwrap_or_default()
            )
        })
    };
    let mut reasons = Vec::new();
    if view == View::CheckpointCheck {
        if answer.get("signature_valid").and_then(Value::as_bool) != Some(true) {
            reasons.push("the checkpoint's signature is not valid".to_owned());
        }
        if let Some(heads) = answer.get("heads_changed").and_then(Value::as_array).filter(|h| !h.is_empty()) {
            let names: Vec<&str> = heads.iter().filter_map(Value::as_str).collect();
            reasons.push(format!("chain heads gone or changed since the checkpoint: {}", names.join(", ")));
        }
        reasons.extend(answer.get("verify").and_then(broken_link));
    } else {
        reasons.extend(broken_link(answer));
    }
    if reasons.is_empty() {
        reasons.push("the admin API did not say ok".to_owned());
    }
    Err(CliError::AuditNotVerified { whose: whose.to_owned(), why: reasons.join("; ") })
}

/// Write a signed checkpoint to a new file (never over an existing one).
fn write_checkpoint(path: &Path, signed: &Value) -> Result<(), CliError> {
    use std::io::Write;
    let write_error =
        |e: std::io::Error| CliError::Local(format!("cannot write the checkpoint to {}: {e}", path.display()));
    let text = serde_json::to_string_pretty(signed)
        .map_err(|e| CliError::Local(format!("cannot encode the checkpoint: {e}")))?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(write_error)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(write_error)
}

/// One page of `GET …/lifecycle`, its items kept as the server wrote them.
#[derive(Deserialize)]
struct TimelinePage<'a> {
    #[serde(borrow)]
    credential: &'a RawValue,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    next: Option<String>,
}

/// One page of `GET /v1/orgs/{org}/audit`, its rows kept as the server wrote them.
#[derive(Deserialize)]
struct RowsPage<'a> {
    #[serde(borrow)]
    rows: Vec<&'a RawValue>,
    next_after_seq: Option<i64>,
}

/// Where streamed output goes: standard output in the CLI, a buffer in tests.
pub trait Sink {
    /// Write `text`; `Ok(false)` once the reader has gone away (stop quietly).
    fn write(&mut self, text: &str) -> Result<bool, CliError>;
}

impl Sink for StdoutStream {
    fn write(&mut self, text: &str) -> Result<bool, CliError> {
        StdoutStream::write(self, text)
    }
}

/// Page through a credential's timeline, printing each page as it arrives: as text, or
/// (`json`) as one document `{"credential", "events":[every page's events]}`.
pub async fn replay(client: &AdminClient, args: &TimelineArgs, json: bool) -> Result<(), CliError> {
    replay_to(client, args, json, &mut StdoutStream::default()).await
}

/// [`replay`], writing to `out`.
pub(super) async fn replay_to(
    client: &AdminClient,
    args: &TimelineArgs,
    json: bool,
    out: &mut dyn Sink,
) -> Result<(), CliError> {
    let mut request = timeline_request(args)?;
    let progress = Progress::start("events");
    let mut count: u64 = 0;
    loop {
        let text = client.send_for_text(&request).await?;
        let page: TimelinePage<'_> = client.parse_answer(&text)?;
        let mut chunk = String::new();
        if count == 0 && request.query_value("after").is_none() {
            if json {
                chunk.push_str(&format!("{{\"credential\":{},\"events\":[", one_line(page.credential)?));
            } else {
                chunk.push_str(&timeline_header(&parse(page.credential)?));
            }
        }
        for event in &page.events {
            if json {
                chunk.push_str(if count == 0 { "\n" } else { ",\n" });
                chunk.push_str(&one_line(event)?);
            } else {
                chunk.push_str(&timeline_entry(&parse(event)?));
            }
            count += 1;
        }
        if page.next.is_none() {
            if json {
                chunk.push_str("\n]}\n");
            } else if count == 0 {
                chunk.push_str(NO_EVENTS);
            }
        }
        if !progress.write(out, &chunk)? {
            return Ok(());
        }
        progress.set(count);
        match page.next {
            None => break,
            Some(next) => {
                if page.events.is_empty() || request.query_value("after") == Some(next.as_str()) {
                    return Err(stuck_paging("after", &next));
                }
                request = request.replacing_query("after", next);
            }
        }
    }
    progress.finish(&format!("{count} events"));
    Ok(())
}

/// Stream every row matching `first`'s filters to stdout as JSON Lines, page by page.
async fn export(client: &AdminClient, first: ApiRequest) -> Result<(), CliError> {
    export_to(client, first, &mut StdoutStream::default()).await
}

/// [`export`], writing to `out`.
pub(super) async fn export_to(client: &AdminClient, first: ApiRequest, out: &mut dyn Sink) -> Result<(), CliError> {
    let mut request = first;
    let progress = Progress::start("rows written");
    let mut written: u64 = 0;
    loop {
        let text = client.send_for_text(&request).await?;
        let page: RowsPage<'_> = client.parse_answer(&text)?;
        let mut lines = String::with_capacity(text.len() + page.rows.len());
        for row in &page.rows {
            lines.push_str(&one_line(row)?);
            lines.push('\n');
        }
        if !progress.write(out, &lines)? {
            return Ok(());
        }
        written += page.rows.len() as u64;
        progress.set(written);
        match page.next_after_seq {
            None => break,
            Some(next) => {
                let previous = request.query_value("after_seq").and_then(|v| v.parse::<i64>().ok());
                if page.rows.is_empty() || previous.is_some_and(|previous| next <= previous) {
                    return Err(stuck_paging("after_seq", &next.to_string()));
                }
                request = request.replacing_query("after_seq", next);
            }
        }
    }
    progress.finish(&format!("{written} audit rows exported"));
    Ok(())
}

/// Stream a whole export (`GET …/audit/export`) to `out` as it arrives, complete lines
/// at a time; an answer that stops before its `end` line is an error (what was written
/// is incomplete, and `byok audit verify --export` will say so too).
pub(super) async fn stream_export(
    client: &AdminClient,
    request: ApiRequest,
    out: &mut dyn Sink,
) -> Result<(), CliError> {
    let mut response = client.open_stream(&request).await?;
    let progress = Progress::start("lines written");
    let mut pending: Vec<u8> = Vec::new();
    let mut written: u64 = 0;
    let mut last_line = String::new();
    while let Some(chunk) = client.next_chunk(&mut response, crate::client::ANSWER_TIMEOUT).await? {
        pending.extend_from_slice(&chunk);
        let Some(end) = pending.iter().rposition(|&b| b == b'\n') else { continue };
        let complete: Vec<u8> = pending.drain(..=end).collect();
        let text = String::from_utf8(complete)
            .map_err(|_| CliError::Local("the admin API sent an export that is not UTF-8".to_owned()))?;
        written += text.matches('\n').count() as u64;
        if let Some(line) = text.trim_end_matches('\n').rsplit('\n').next() {
            line.clone_into(&mut last_line);
        }
        if !progress.write(out, &text)? {
            return Ok(());
        }
        progress.set(written);
    }
    if !pending.is_empty() || !last_line.starts_with("{\"kind\":\"end\"") {
        return Err(CliError::Local(format!(
            "the export stopped after {written} lines, before its end line: the output is incomplete"
        )));
    }
    progress.finish(&format!("{written} lines exported"));
    Ok(())
}

/// `byok audit verify --export FILE`: check an export offline, from the file alone
/// (`-`: standard input). Prints the summary or the first broken line; exits 1 when the
/// export does not verify.
pub fn verify_export(path: &Path, json: bool) -> Result<(), CliError> {
    let source = if path.as_os_str() == "-" { "on standard input".to_owned() } else { path.display().to_string() };
    let read_error = |source| CliError::ReadFile { what: "the audit export", path: path.to_owned(), source };
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(read_error)?))
    };
    let outcome = verify_reader(reader).map_err(read_error)?;
    let report = match &outcome {
        Ok(summary) => {
            let mut report = serde_json::to_value(summary).unwrap_or_default();
            if let Value::Object(object) = &mut report {
                object.insert("ok".to_owned(), Value::Bool(true));
            }
            report
        }
        Err(broken) => serde_json::json!({ "ok": false, "first_bad": broken }),
    };
    let rendered = if json {
        render_json(&report)
    } else {
        crate::output::Rendered { stdout: crate::output::export_verify_report(&source, &report), ..Default::default() }
    };
    emit(&rendered)?;
    match outcome {
        Ok(_) => Ok(()),
        Err(broken) => {
            Err(CliError::AuditNotVerified { whose: format!("the export {source}"), why: broken.to_string() })
        }
    }
}

/// Feed every line of `reader` to the verifier; the outer error is an I/O failure.
fn verify_reader(mut reader: impl BufRead) -> std::io::Result<Result<byok_domain::export::Summary, Broken>> {
    let mut verifier = byok_domain::export::ExportVerifier::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(verifier.finish());
        }
        let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
        let Ok(text) = std::str::from_utf8(bytes) else {
            let line = verifier.lines() + 1;
            return Ok(Err(Broken::new(line, byok_domain::export::Problem::Malformed, "not UTF-8 text")));
        };
        if let Err(broken) = verifier.line(text) {
            return Ok(Err(broken));
        }
    }
}

fn stuck_paging(parameter: &str, value: &str) -> CliError {
    CliError::Local(format!(
        "the admin API asked for the same page again ({parameter}={value}); stopping rather than looping \
         (the output so far is incomplete)"
    ))
}

/// A JSON value on one line: as the server wrote it when it already is (byok's admin
/// API writes compact JSON), else re-encoded.
fn one_line(raw: &RawValue) -> Result<Cow<'_, str>, CliError> {
    let text = raw.get();
    if text.contains('\n') || text.contains('\r') {
        Ok(Cow::Owned(parse(raw)?.to_string()))
    } else {
        Ok(Cow::Borrowed(text))
    }
}

fn parse(raw: &RawValue) -> Result<Value, CliError> {
    serde_json::from_str(raw.get())
        .map_err(|e| CliError::Local(format!("the admin API sent an item that is not JSON ({e})")))
}

/// A count of what has been written, on stderr when it is a terminal.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn start(what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {human_pos} {msg} ({per_sec}, {elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(Some(bar))
    }

    /// Write `text` to `out` with the indicator out of the way.
    fn write(&self, out: &mut dyn Sink, text: &str) -> Result<bool, CliError> {
        match &self.0 {
            Some(bar) => bar.suspend(|| out.write(text)),
            None => out.write(text),
        }
    }

    fn set(&self, count: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(count);
        }
    }

    /// Clear the indicator, leaving a one-line summary on the terminal.
    fn finish(self, summary: &str) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
            eprintln!("{summary}");
        }
    }
}
