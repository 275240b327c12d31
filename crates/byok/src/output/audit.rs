//! How the audit reads for people: a credential's timeline, verification reports,
//! resolution rows, checkpoints.
//!
//! Like the rest of [`crate::output`], only named fields are shown, and rendering is
//! pure text.

use std::path::Path;

use serde_json::Value;

use super::{actor_text, cell, details_summary, kv_table, new_table, text_of, Rendered};

/// The line that opens a credential's timeline.
pub fn timeline_header(credential: &Value) -> String {
    format!(
        "Credential {} ({}), provider {}, state {}, version {}.\n",
        cell(credential, "name"),
        cell(credential, "id"),
        cell(credential, "provider"),
        cell(credential, "state"),
        cell(credential, "version")
    )
}

/// The text printed when a timeline has no events at all.
pub const NO_EVENTS: &str = "(no events)\n";

/// One timeline event, as a few lines: its time and what happened, then indented
/// details. `type: lifecycle` is a change to the credential; `type: call` a call it
/// served or refused, with how the call ended.
pub fn timeline_entry(event: &Value) -> String {
    let (at, (headline, details)) = match event.get("type").and_then(Value::as_str) {
        // A call's time is its resolution's: when the credential was chosen (or refused).
        Some("call") => (cell(event.get("resolution").unwrap_or(&Value::Null), "at"), call_entry(event)),
        _ => (cell(event, "at"), lifecycle_entry(event)),
    };
    let indent = " ".repeat(at.chars().count() + 2);
    let mut out = format!("{at}  {headline}\n");
    for line in details {
        out.push_str(&indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn lifecycle_entry(event: &Value) -> (String, Vec<String>) {
    let mut headline = cell(event, "kind");
    let mut facts = Vec::new();
    if present(event, "version") {
        facts.push(format!("version {}", cell(event, "version")));
    }
    if present(event, "fingerprint") {
        facts.push(format!("fingerprint {}", cell(event, "fingerprint")));
    }
    if !facts.is_empty() {
        headline.push_str(&format!("  {}", facts.join(", ")));
    }
    headline.push_str(&format!("  by {}", actor_text(event.get("actor"))));
    let details = details_summary(event.get("details"));
    let lines = if details == "-" { Vec::new() } else { details.lines().map(str::to_owned).collect() };
    (headline, lines)
}

fn call_entry(event: &Value) -> (String, Vec<String>) {
    let resolution = event.get("resolution").cloned().unwrap_or(Value::Null);
    let r = &resolution;
    let outcome = cell(r, "outcome");
    let mut headline = format!("call {}  {outcome}", cell(r, "call_id"));
    if present(r, "reason") {
        headline.push_str(&format!(" ({})", cell(r, "reason")));
    }
    let mut lines = Vec::new();
    if present(r, "detail") {
        lines.push(cell(r, "detail"));
    }
    let caller =
        format!("team {} · workflow {} · token {}", cell(r, "team_id"), cell(r, "workflow_id"), cell(r, "token_id"));
    // A platform credential serves many orgs: say whose call it was.
    if r.get("credential_owner").and_then(Value::as_str) == Some("platform") {
        lines.push(format!("org {} · {caller}", cell(r, "org_id")));
    } else {
        lines.push(caller);
    }
    let mut model = format!("model {}", cell(r, "model"));
    if present(r, "model_family") {
        model.push_str(&format!(" (family {})", cell(r, "model_family")));
    }
    lines.push(format!("{model} · {} · {} · {}", cell(r, "capability"), cell(r, "mode"), cell(r, "provider")));
    if present(r, "credential_version") || present(r, "fingerprint") {
        lines.push(format!(
            "credential version {}, fingerprint {}",
            cell(r, "credential_version"),
            cell(r, "fingerprint")
        ));
    }
    match event.get("completion") {
        Some(completion) if completion.is_object() => lines.push(completion_text(completion)),
        _ if outcome == "denied" => lines.push("refused before anything was sent upstream".to_owned()),
        _ => lines.push("no completion recorded (still running, or the sidecar stopped mid-call)".to_owned()),
    }
    (headline, lines)
}

/// `upstream 200 · 12.3 ms · tokens 10 in / 20 out · completed`
fn completion_text(completion: &Value) -> String {
    let status = match completion.get("upstream_status") {
        Some(Value::Number(n)) => format!("upstream {n}"),
        _ => "no upstream answer".to_owned(),
    };
    let latency = completion.get("latency_us").and_then(Value::as_i64).map_or_else(|| "-".to_owned(), latency_text);
    format!(
        "{status} · {latency} · tokens {} in / {} out · {}",
        cell(completion, "input_tokens"),
        cell(completion, "output_tokens"),
        cell(completion, "status")
    )
}

/// Microseconds as `850 µs`, `12.3 ms` or `1.25 s`.
pub fn latency_text(micros: i64) -> String {
    // Display only: the precision lost converting to f64 is far below what is shown.
    #[allow(clippy::cast_precision_loss)]
    let us = micros as f64;
    if micros < 1_000 {
        format!("{micros} µs")
    } else if micros < 1_000_000 {
        format!("{:.1} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// A whole `{"credential", "events"}` answer as a timeline.
pub fn timeline(answer: &Value) -> String {
    let mut out = timeline_header(answer.get("credential").unwrap_or(&Value::Null));
    let events = answer.get("events").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if events.is_empty() {
        out.push_str(NO_EVENTS);
    }
    for event in events {
        out.push_str(&timeline_entry(event));
    }
    out
}

fn present(object: &Value, field: &str) -> bool {
    !matches!(object.get(field), None | Some(Value::Null))
}

/// What each kind of broken link means, for a person.
fn problem_text(problem: &str) -> &'static str {
    match problem {
        "changed" => "the entry's content no longer matches its hash: it was edited after it was written",
        "missing" => "entries before it are gone: deleted outside a retention purge",
        "reordered" => "the entry is out of its chain's order",
        "inserted" => "the entry was not written by byok (no or a duplicate position, or a link to nothing byok wrote)",
        _ => "see the detail",
    }
}

/// "the audit of org acme" / "the audit".
fn audit_of(org: Option<&str>) -> String {
    org.map_or_else(|| "audit".to_owned(), |org| format!("audit of org {org}"))
}

/// A `VerifyReport` (`{"ok","checked","first_bad"?}`).
pub fn verify_report(org: Option<&str>, report: &Value) -> String {
    verify_report_of(&audit_of(org), report)
}

/// A `VerifyReport` of the audit named `subject`.
fn verify_report_of(subject: &str, report: &Value) -> String {
    let checked = cell(report, "checked");
    if report.get("ok").and_then(Value::as_bool) == Some(true) {
        return format!("{subject} verified: {checked} entries, all links intact\n");
    }
    let Some(bad) = report.get("first_bad").filter(|b| b.is_object()) else {
        return format!("{subject} NOT verified ({checked} entries checked; the server named no broken link)\n");
    };
    let problem = cell(bad, "problem");
    let mut table = new_table();
    table.add_row(vec!["chain".to_owned(), cell(bad, "chain")]);
    table.add_row(vec!["position".to_owned(), cell(bad, "seq")]);
    table.add_row(vec!["row".to_owned(), cell(bad, "row")]);
    table.add_row(vec!["problem".to_owned(), format!("{problem}: {}", problem_text(&problem))]);
    table.add_row(vec!["detail".to_owned(), cell(bad, "detail")]);
    format!("{subject} NOT verified: first broken link ({checked} entries checked):\n{table}\n")
}

/// An offline verification of an export file (`byok audit verify --export`): its
/// summary (`{"ok": true, "org_id", "entries", …}`) or its first broken line
/// (`{"ok": false, "first_bad": {"line", "problem", "chain"?, "position"?, "expected"?,
/// "found"?, "detail"}}`). `source` names the file.
pub fn export_verify_report(source: &str, report: &Value) -> String {
    let subject = format!("audit export {}", super::printable(source));
    if report.get("ok").and_then(Value::as_bool) == Some(true) {
        let mut text = format!(
            "{subject} verified: org {}, {} entries in {} chains ({} lifecycle events, {} calls, {} completions), \
             {} lines, all links intact\n",
            cell(report, "org_id"),
            cell(report, "entries"),
            cell(report, "chains"),
            cell(report, "events"),
            cell(report, "calls"),
            cell(report, "completions"),
            cell(report, "lines"),
        );
        let anchored = report.get("anchored_chains").and_then(Value::as_u64).unwrap_or(0);
        if anchored > 0 {
            text.push_str(&format!(
                "{anchored} chain(s) start from the anchor a retention purge left (the entries before it are gone)\n"
            ));
        }
        text.push_str(&format!("exported at {}\n", cell(report, "exported_at")));
        return text;
    }
    let Some(bad) = report.get("first_bad").filter(|b| b.is_object()) else {
        return format!("{subject} NOT verified\n");
    };
    let problem = cell(bad, "problem");
    let mut table = new_table();
    table.add_row(vec!["line".to_owned(), cell(bad, "line")]);
    for field in ["chain", "position", "expected", "found"] {
        if bad.get(field).is_some_and(|v| !v.is_null()) {
            table.add_row(vec![field.to_owned(), cell(bad, field)]);
        }
    }
    table.add_row(vec!["problem".to_owned(), format!("{problem}: {}", export_problem_text(&problem))]);
    table.add_row(vec!["detail".to_owned(), cell(bad, "detail")]);
    format!("{subject} NOT verified: first broken line:\n{table}\n")
}

/// What each kind of broken export line means, for a person.
fn export_problem_text(problem: &str) -> &'static str {
    match problem {
        "changed" => "the line's content no longer matches its hash: it was edited",
        "missing" => "lines before it are missing: deleted, or moved out of order",
        "reordered" => "the line is out of its chain's order",
        "inserted" => "the line is not one byok exported here (a repeated position, a broken link, another org)",
        "malformed" => "the line is not what an export holds",
        "unsupported" => "the file is not an export this byok reads",
        "truncated" => "the export was cut short",
        _ => "see the detail",
    }
}

/// A `VerifyReport` of the platform pool's lifecycle-event chain.
pub fn platform_verify_report(report: &Value) -> String {
    verify_report_of("audit of the platform pool", report)
}

/// A `CheckpointCheck` (`{"ok","signature_valid","heads_changed","verify"}`).
pub fn checkpoint_check(org: Option<&str>, check: &Value) -> String {
    let verify = verify_report(org, check.get("verify").unwrap_or(&Value::Null));
    if check.get("ok").and_then(Value::as_bool) == Some(true) {
        return format!("checkpoint verified: signature valid, every chain head it names is still in place\n{verify}");
    }
    let signature = if check.get("signature_valid").and_then(Value::as_bool) == Some(true) {
        "valid".to_owned()
    } else {
        "NOT valid (not signed by this server's key, or the checkpoint was altered)".to_owned()
    };
    let heads = match check.get("heads_changed").and_then(Value::as_array) {
        Some(heads) if !heads.is_empty() => {
            format!("gone or changed since the checkpoint: {}", text_of(Some(&Value::Array(heads.clone()))))
        }
        _ => "every chain head it names is still in place".to_owned(),
    };
    format!("checkpoint NOT verified:\n  signature: {signature}\n  chain heads: {heads}\n{verify}")
}

/// An `AuditPage` (`{"rows":[…], "next_after_seq"?}`) as a table, with a note on how
/// to get the next page.
pub fn audit_rows(page: &Value) -> Rendered {
    let rows = page.get("rows").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut out = Rendered::default();
    if rows.is_empty() {
        out.stdout = "(no audit rows match)\n".to_owned();
    } else {
        let mut table = new_table();
        table.set_header([
            "SEQ",
            "AT",
            "CALL ID",
            "OUTCOME",
            "CREDENTIAL",
            "TEAM",
            "WORKFLOW",
            "TOKEN",
            "MODEL",
            "KIND",
        ]);
        for row in rows {
            let outcome = if present(row, "reason") {
                format!("{} ({})", cell(row, "outcome"), cell(row, "reason"))
            } else {
                cell(row, "outcome")
            };
            let credential = if present(row, "credential_version") {
                format!("{} v{}", cell(row, "credential_id"), cell(row, "credential_version"))
            } else {
                cell(row, "credential_id")
            };
            table.add_row(vec![
                cell(row, "seq"),
                cell(row, "at"),
                cell(row, "call_id"),
                outcome,
                credential,
                cell(row, "team_id"),
                cell(row, "workflow_id"),
                cell(row, "token_id"),
                cell(row, "model"),
                format!("{} {} {}", cell(row, "provider"), cell(row, "capability"), cell(row, "mode")),
            ]);
        }
        out.stdout = format!("{table}\n");
    }
    if let Some(next) = page.get("next_after_seq").and_then(Value::as_i64) {
        out.note_after = format!("There may be more rows: run again with --after-seq {next}.\n");
    }
    out
}

/// A signed checkpoint on stdout, with a note on stderr on how to use it.
pub fn checkpoint(signed: &Value) -> Rendered {
    Rendered {
        stdout: format!("{}\n", serde_json::to_string_pretty(signed).unwrap_or_else(|_| signed.to_string())),
        note_after: checkpoint_note(signed, None),
        ..Rendered::default()
    }
}

/// A signed checkpoint written to `path`: only a note.
pub fn checkpoint_written(signed: &Value, path: &Path) -> Rendered {
    Rendered { note_after: checkpoint_note(signed, Some(path)), ..Rendered::default() }
}

fn checkpoint_note(signed: &Value, path: Option<&Path>) -> String {
    let body = signed.get("checkpoint").unwrap_or(&Value::Null);
    let org = cell(body, "org_id");
    let chains = body.get("heads").and_then(Value::as_array).map_or(0, Vec::len);
    let (written, file) = match path {
        Some(path) => (format!(" written to {}", path.display()), path.display().to_string()),
        None => (String::new(), "FILE".to_owned()),
    };
    format!(
        "Signed checkpoint of org {org}'s audit ({chains} chains, taken {}, key {}){written}.\n\
         Keep it where byok cannot write. To prove later that nothing up to it has changed:\n  \
         byok audit verify --org {org} --checkpoint {file}\n",
        cell(body, "at"),
        cell(body, "key_id"),
    )
}

/// A `PurgeReport`.
pub fn purged(report: &Value) -> String {
    format!(
        "Removed {} audit entries of org {} older than {}; the rest still verifies.\n",
        cell(report, "removed"),
        cell(report, "org_id"),
        cell(report, "before")
    )
}

/// The checkpoint-signing public key.
pub fn public_key(key: &Value) -> String {
    kv_table(key, &[("KEY ID", "key_id"), ("ALGORITHM", "algorithm"), ("PUBLIC KEY", "public_key")])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(call_id: &str, outcome: &str, completion: Value) -> Value {
        json!({"type": "call", "resolution": {
            "seq": 7, "at": "2026-01-01T00:00:01.000002Z", "call_id": call_id, "org_id": "org_1",
            "team_id": "team_1", "workflow_id": null, "token_id": "tok_1", "credential_id": "cred_1",
            "credential_version": 2, "fingerprint": "fp_2", "provider": "openai", "model": "gpt-4o-mini",
            "model_family": "gpt-4o", "capability": "chat", "mode": "stream", "outcome": outcome,
            "reason": if outcome == "denied" { json!("scope_denied") } else { Value::Null },
            "detail": if outcome == "denied" { json!("team team_1 is not in scope") } else { Value::Null }},
            "completion": completion})
    }

    #[test]
    fn a_timeline_reads_in_order_with_every_fact_of_a_call() {
        let answer = json!({"credential": {"id": "cred_1", "name": "openai-prod", "provider": "openai",
            "state": "active", "version": 2},
        "events": [
            {"type": "lifecycle", "seq": 1, "kind": "created", "at": "2026-01-01T00:00:00Z", "version": 1,
             "fingerprint": "fp_1", "actor": {"kind": "admin_token", "id": "adm_1"}, "details": {}},
            {"type": "lifecycle", "seq": 2, "kind": "rotated", "at": "2026-01-01T00:00:00.5Z", "version": 2,
             "fingerprint": "fp_2", "actor": {"kind": "system"}, "details": {"previous_version": 1}},
            call("call-a", "allowed", json!({"call_id": "call-a", "at": "2026-01-01T00:00:02Z",
                "upstream_status": 200, "latency_us": 12_345, "input_tokens": 10, "output_tokens": 20,
                "status": "completed"})),
            call("call-b", "denied", Value::Null),
            call("call-c", "allowed", Value::Null),
        ]});
        let text = timeline(&answer);
        let order: Vec<usize> = [
            "openai-prod",
            "created  version 1, fingerprint fp_1  by admin_token adm_1",
            "rotated  version 2, fingerprint fp_2  by system",
            "previous_version: 1",
            "call call-a  allowed",
            "call call-b  denied (scope_denied)",
            "call call-c",
        ]
        .iter()
        .map(|needle| text.find(needle).unwrap_or_else(|| panic!("'{needle}' missing from:\n{text}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order:\n{text}");
        for needle in [
            "team team_1 · workflow - · token tok_1",
            "model gpt-4o-mini (family gpt-4o) · chat · stream · openai",
            "credential version 2, fingerprint fp_2",
            "upstream 200 · 12.3 ms · tokens 10 in / 20 out · completed",
            "team team_1 is not in scope",
            "refused before anything was sent upstream",
            "no completion recorded",
        ] {
            assert!(text.contains(needle), "'{needle}' missing from:\n{text}");
        }
        // Details line up under the headline, after the time.
        assert!(text.contains("\n                             team team_1"), "{text}");
        let empty = timeline(&json!({"credential": {"name": "x"}, "events": []}));
        assert!(empty.ends_with(NO_EVENTS), "{empty}");
    }

    #[test]
    fn latencies_read_in_sensible_units() {
        for (micros, expected) in [(850, "850 µs"), (12_345, "12.3 ms"), (1_250_000, "1.25 s")] {
            assert_eq!(latency_text(micros), expected);
        }
    }

    #[test]
    fn verify_reports_name_the_first_broken_link() {
        let ok = verify_report(Some("acme"), &json!({"ok": true, "checked": 42}));
        assert_eq!(ok, "audit of org acme verified: 42 entries, all links intact\n");
        let bad = verify_report(
            Some("acme"),
            &json!({"ok": false, "checked": 42, "first_bad": {"chain": "calls/01JSEG", "seq": 3,
                "row": "resolution_audit.seq = 9", "problem": "changed", "detail": "content does not match"}}),
        );
        for needle in [
            "audit of org acme NOT verified",
            "42 entries checked",
            "calls/01JSEG",
            "position",
            "┆ 3",
            "resolution_audit.seq = 9",
            "changed: the entry's content no longer matches",
            "content does not match",
        ] {
            assert!(bad.contains(needle), "'{needle}' missing from:\n{bad}");
        }
        let check = checkpoint_check(
            Some("acme"),
            &json!({"ok": false, "signature_valid": true, "heads_changed": ["events", "calls/01JSEG"],
                    "verify": {"ok": true, "checked": 5}}),
        );
        for needle in ["checkpoint NOT verified", "signature: valid", "events, calls/01JSEG", "verified: 5 entries"] {
            assert!(check.contains(needle), "'{needle}' missing from:\n{check}");
        }
        let good = checkpoint_check(
            None,
            &json!({"ok": true, "signature_valid": true, "heads_changed": [], "verify": {"ok": true, "checked": 5}}),
        );
        assert!(good.starts_with("checkpoint verified") && good.contains("audit verified: 5 entries"), "{good}");
    }

    #[test]
    fn a_page_of_rows_says_how_to_get_the_next() {
        let page = json!({"rows": [call("call-b", "denied", Value::Null)["resolution"].clone()], "next_after_seq": 7});
        let rendered = audit_rows(&page);
        for needle in ["call-b", "denied (scope_denied)", "cred_1 v2", "team_1", "gpt-4o-mini", "openai chat stream"] {
            assert!(rendered.stdout.contains(needle), "'{needle}' missing from:\n{}", rendered.stdout);
        }
        assert!(rendered.note_after.contains("--after-seq 7"), "{rendered:?}");
        let last = audit_rows(&json!({"rows": []}));
        assert_eq!((last.stdout.as_str(), last.note_after.as_str()), ("(no audit rows match)\n", ""));
    }

    #[test]
    fn a_checkpoint_goes_to_stdout_as_json_with_how_to_verify_on_stderr() {
        let signed = json!({"checkpoint": {"org_id": "org_1", "at": "2026-01-01T00:00:00Z",
            "heads": [{"chain": "events", "seq": 3, "hash": "ab"}], "key_id": "ed25519:00"}, "signature": "c2ln"});
        let rendered = checkpoint(&signed);
        assert_eq!(serde_json::from_str::<Value>(&rendered.stdout).unwrap(), signed);
        assert!(rendered.note_after.contains("byok audit verify --org org_1 --checkpoint FILE"), "{rendered:?}");
        let written = checkpoint_written(&signed, Path::new("/tmp/cp.json"));
        assert!(written.stdout.is_empty());
        assert!(written.note_after.contains("written to /tmp/cp.json"), "{written:?}");
        assert!(written.note_after.contains("--checkpoint /tmp/cp.json") && written.note_after.contains("1 chains"));
    }
}
