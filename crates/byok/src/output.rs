//! What a command prints: tables for people, the API's JSON for scripts.
//!
//! Tables show only named fields of an answer, so a field the CLI does not know about
//! (a secret, should a server ever send one) is never shown. Every text taken from an
//! answer goes through [`printable`]: values come from callers too (a model name, a
//! denial quoting a header), and a control character in one must not drive the terminal
//! or break a table's lines. Rendering is pure — it returns text — and [`emit`] is the
//! one place that writes to stdout.

use std::borrow::Cow;
use std::io::Write;

use chrono::{DateTime, Utc};
use comfy_table::{presets, ContentArrangement, Table};
use serde_json::Value;

use crate::error::CliError;

mod audit;
mod billing;
mod limits;

pub use audit::{checkpoint_written, export_verify_report, timeline_entry, timeline_header, NO_EVENTS};

/// How to present an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// One org.
    Org,
    /// One org, after `org set-tier`.
    OrgTierChanged,
    /// `{"max_credential_age_days"?, "allowed_source_cidrs"?}`: an org's katman-c controls.
    Controls,
    /// `{"orgs":[…]}`.
    OrgList,
    /// A freshly issued org-admin token (shown once).
    AdminTokenCreated,
    /// `{"admin_tokens":[…]}`.
    AdminTokenList,
    /// A revoked org-admin token.
    AdminTokenRevoked,
    /// One team.
    Team,
    /// `{"teams":[…]}`.
    TeamList,
    /// One workflow.
    Workflow,
    /// `{"workflows":[…]}`.
    WorkflowList,
    /// One credential, after the action named.
    Credential(CredentialAction),
    /// `{"credentials":[…]}`.
    CredentialList,
    /// `{"credentials":[…]}` of the platform pool.
    PlatformCredentialList,
    /// `{"ok","status","reason"}`: what the provider said of a credential's key.
    Verification,
    /// `{"org"?,"teams"?,"tokens"?}`: an org's rate limits.
    Limits,
    /// `{"credential", "events":[…]}`: a credential's timeline.
    Lifecycle,
    /// A freshly issued workload token (shown once).
    TokenCreated,
    /// `{"tokens":[…]}`.
    TokenList,
    /// A revoked workload token.
    TokenRevoked,
    /// An org's KEK version and rewrap progress.
    KekStatus,
    /// `{"kms":[…], "dek_cache_hits", "dek_cache_misses"}`: the configured KMSs.
    KmsList,
    /// What `byok kms migrate` did or would do.
    KmsMigration,
    /// `{"ok","checked","first_bad"?}`: an audit chain verification.
    AuditVerify,
    /// The same, of the platform pool's lifecycle-event chain.
    PlatformAuditVerify,
    /// `{"ok","signature_valid","heads_changed","verify"}`: a checkpoint check.
    CheckpointCheck,
    /// `{"rows":[…], "next_after_seq"?}`: one page of resolution rows.
    AuditRows,
    /// A signed checkpoint.
    Checkpoint,
    /// `{"org_id","before","removed"}`: a retention purge.
    AuditPurged,
    /// `{"key_id","public_key","algorithm"}`.
    AuditPublicKey,
    /// `{"org_id","tier","negotiated","currency","per_call",…}`: the card an org is billed with.
    RateCard,
    /// `{"org_id","currency","monthly_limit"?,"teams","spent_this_month",…}`.
    Budget,
    /// An org's statement (`GET /v1/orgs/{org}/usage`) as a table.
    Statement,
    /// The same as RFC 4180 CSV, one row per line.
    StatementCsv,
    /// Every org's usage (`GET /v1/usage`) as a table.
    UsageReport,
    /// The same as RFC 4180 CSV, one row per org.
    UsageReportCsv,
}

/// What just happened to a credential (chooses the headline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialAction {
    /// `credential show`.
    Shown,
    /// `credential add`.
    Added,
    /// `credential update`.
    Updated,
    /// `credential rotate`.
    Rotated,
    /// `credential disable|enable|revoke`.
    StateChanged,
}

/// Text for stdout, with notes for stderr around it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// A note printed on stderr before the result.
    pub note_before: String,
    /// The result: a table, or a token alone on its line.
    pub stdout: String,
    /// A note printed on stderr after the result.
    pub note_after: String,
}

#[cfg(test)]
impl Rendered {
    /// Both notes, as stderr shows them.
    pub fn stderr(&self) -> String {
        format!("{}{}", self.note_before, self.note_after)
    }
}

/// Render `answer` for a person.
pub fn render(view: View, answer: &Value) -> Rendered {
    render_for(view, None, answer)
}

/// Render `answer` for a person, naming `org` (as given on the command line) where the
/// answer itself does not say which org it is about (for [`View::Verification`]: the
/// credential it is about).
pub fn render_for(view: View, org: Option<&str>, answer: &Value) -> Rendered {
    let mut out = Rendered::default();
    match view {
        View::Org => out.stdout = org_table(answer),
        View::OrgTierChanged => {
            out.stdout = org_table(answer);
            out.note_after = format!(
                "Org {} is on {} from its next call on; calls already made keep the tier and price they were \
                 made under.\n",
                cell(answer, "name"),
                cell(answer, "tier")
            );
        }
        View::Controls => out.stdout = billing::controls(answer),
        View::RateCard => out.stdout = billing::rate_card(answer),
        View::Budget => out.stdout = billing::budget(answer),
        View::Statement => out.stdout = billing::statement(answer),
        View::StatementCsv => out.stdout = billing::statement_csv(answer),
        View::UsageReport => out.stdout = billing::usage_report(answer),
        View::UsageReportCsv => out.stdout = billing::usage_report_csv(answer),
        View::OrgList => out.stdout = list_table(answer, "orgs", "no orgs yet", ORG_COLUMNS),
        View::Team => out.stdout = kv_table(answer, TEAM_COLUMNS),
        View::TeamList => out.stdout = list_table(answer, "teams", "no teams in this org", TEAM_COLUMNS),
        View::Workflow => out.stdout = kv_table(answer, WORKFLOW_COLUMNS),
        View::WorkflowList => {
            out.stdout = list_table(answer, "workflows", "no workflows in this org", WORKFLOW_COLUMNS)
        }
        View::Credential(action) => out.stdout = credential(answer, action),
        View::CredentialList => out.stdout = credential_list(answer, "(no credentials in this org)\n"),
        View::PlatformCredentialList => {
            out.stdout = credential_list(answer, "(no credentials in the platform pool)\n");
        }
        View::Lifecycle => out.stdout = audit::timeline(answer),
        View::Verification => out.stdout = verification(org, answer),
        View::Limits => out.stdout = limits::limits(answer),
        View::AuditVerify => out.stdout = audit::verify_report(org, answer),
        View::PlatformAuditVerify => out.stdout = audit::platform_verify_report(answer),
        View::CheckpointCheck => out.stdout = audit::checkpoint_check(org, answer),
        View::AuditRows => out = audit::audit_rows(answer),
        View::Checkpoint => out = audit::checkpoint(answer),
        View::AuditPurged => out.stdout = audit::purged(answer),
        View::AuditPublicKey => out.stdout = audit::public_key(answer),
        View::AdminTokenCreated => {
            out.stdout = format!("{}\n", cell(answer, "token"));
            out.note_before = format!(
                "Created org-admin token {} for org {} (expires: {}):\n",
                cell(answer, "id"),
                cell(answer, "org_id"),
                or_never(answer, "expires_at"),
            );
            out.note_after = "Store it now: it is shown only this once.\n".to_owned();
        }
        View::TokenCreated => {
            out.stdout = format!("{}\n", cell(answer, "token"));
            out.note_before = format!(
                "Created workload token {} for team {} (workflows: {}; expires: {}):\n",
                cell(answer, "id"),
                cell(answer, "team_id"),
                list_or_any(answer.get("workflows")),
                or_never(answer, "expires_at"),
            );
            out.note_after = "Store it now: byok keeps only a hash and will not show this token again.\n".to_owned();
        }
        View::TokenList => out.stdout = token_list(answer),
        View::KekStatus => out.stdout = kv_table(answer, KEK_COLUMNS),
        View::KmsList => {
            out.stdout = list_table(answer, "kms", "no KMS configured", KMS_COLUMNS);
            out.stdout.push_str(&format!(
                "data-plane DEK cache: {} hits, {} misses (each miss is one unwrap in a KMS)\n",
                cell(answer, "dek_cache_hits"),
                cell(answer, "dek_cache_misses")
            ));
        }
        View::KmsMigration => {
            out.stdout = list_table(answer, "orgs", "no org has keys in the local keyring", MIGRATION_COLUMNS);
            out.stdout.push_str(&format!("{}\n", cell(answer, "summary")));
        }
        View::TokenRevoked => {
            out.stdout = format!("Revoked workload token {} (team {}).\n", cell(answer, "id"), cell(answer, "team_id"))
        }
        View::AdminTokenList => out.stdout = admin_token_list(answer),
        View::AdminTokenRevoked => {
            out.stdout = format!("Revoked admin token {} (at {}).\n", cell(answer, "id"), cell(answer, "revoked_at"))
        }
    }
    out
}

/// The API's JSON, pretty-printed, for `--json`.
pub fn render_json(answer: &Value) -> Rendered {
    Rendered {
        stdout: format!("{}\n", serde_json::to_string_pretty(answer).unwrap_or_else(|_| answer.to_string())),
        ..Rendered::default()
    }
}

/// Write `rendered` to stdout and stderr. A closed stdout (`byok org list | head`) is
/// not an error worth reporting; any other failure to write is.
pub fn emit(rendered: &Rendered) -> Result<(), CliError> {
    eprint!("{}", rendered.note_before);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(rendered.stdout.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(CliError::Local(format!("cannot write to standard output: {e}"))),
    }
    drop(stdout);
    eprint!("{}", rendered.note_after);
    Ok(())
}

/// Standard output for an answer written piece by piece (an export, a long timeline).
/// Once the reader has gone away (`byok audit export | head`), writing stops quietly.
#[derive(Debug, Default)]
pub struct StdoutStream {
    closed: bool,
}

impl StdoutStream {
    /// Write and flush `text`; `Ok(false)` once standard output is closed.
    pub fn write(&mut self, text: &str) -> Result<bool, CliError> {
        if self.closed {
            return Ok(false);
        }
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(false)
            }
            Err(e) => Err(CliError::Local(format!("cannot write to standard output: {e}"))),
        }
    }
}

/// Columns of a table: header and field name.
type Columns = &'static [(&'static str, &'static str)];

const ORG_COLUMNS: Columns = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("TIER", "tier"),
    ("STATE", "state"),
    ("KEK VERSION", "kek_version"),
    ("KMS", "kms"),
    ("CREATED", "created_at"),
];
const KEK_COLUMNS: Columns = &[
    ("ORG", "org_id"),
    ("KEK VERSION", "kek_version"),
    ("KMS", "kms"),
    ("MOVING FROM", "moving_from"),
    ("REWRAP", "state"),
    ("REMAINING", "remaining"),
    ("REWRAPPED", "rewrapped"),
    ("VERSIONS IN USE", "versions_in_use"),
    ("ERROR", "error"),
];
const KMS_COLUMNS: Columns = &[
    ("NAME", "name"),
    ("BACKEND", "backend"),
    ("HEALTHY", "healthy"),
    ("UNWRAPS", "unwraps"),
    ("WRAPS", "wraps"),
    ("FAILURES", "failures"),
    ("ERROR", "error"),
];
const MIGRATION_COLUMNS: Columns = &[
    ("ORG", "org_id"),
    ("NAME", "name"),
    ("FROM KEK", "from_kek_version"),
    ("TO KEK", "to_kek_version"),
    ("WRAPPED KEYS", "wrapped_keys"),
    ("STATE", "state"),
];
const TEAM_COLUMNS: Columns = &[("ID", "id"), ("NAME", "name"), ("ORG", "org_id"), ("CREATED", "created_at")];
const WORKFLOW_COLUMNS: Columns =
    &[("ID", "id"), ("NAME", "name"), ("TEAM", "team_id"), ("ORG", "org_id"), ("CREATED", "created_at")];
const VERSION_COLUMNS: Columns = &[
    ("VERSION", "version"),
    ("FINGERPRINT", "fingerprint"),
    ("KEK VERSION", "kek_version"),
    ("CREATED", "created_at"),
];
const SCOPE_DIMENSIONS: Columns = &[
    ("model families", "model_families"),
    ("capabilities", "capabilities"),
    ("modes", "modes"),
    ("teams", "teams"),
    ("workflows", "workflows"),
];

fn new_table() -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    table
}

/// `text` from an answer, safe to print: control characters (and the bidirectional
/// overrides that reorder a line) escaped as `\u{1b}`, `\n`, ….
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    byok_domain::audit::escaped_text(text)
}

/// A value as table text: `-` for missing or null, lists comma-separated, control
/// characters escaped ([`printable`]).
fn text_of(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => printable(s).into_owned(),
        Some(Value::Array(items)) if items.is_empty() => "-".to_owned(),
        Some(Value::Array(items)) => items.iter().map(|v| text_of(Some(v))).collect::<Vec<_>>().join(", "),
        Some(other) => printable(&other.to_string()).into_owned(),
    }
}

fn cell(object: &Value, field: &str) -> String {
    text_of(object.get(field))
}

fn or_never(object: &Value, field: &str) -> String {
    match object.get(field) {
        None | Some(Value::Null) => "never".to_owned(),
        value => text_of(value),
    }
}

fn list_or_any(value: Option<&Value>) -> String {
    match value {
        Some(Value::Array(items)) if !items.is_empty() => text_of(value),
        _ => "any".to_owned(),
    }
}

fn kv_table(object: &Value, columns: Columns) -> String {
    let mut table = new_table();
    for (header, field) in columns {
        table.add_row(vec![header.to_lowercase(), cell(object, field)]);
    }
    format!("{table}\n")
}

fn list_table(answer: &Value, key: &str, empty: &str, columns: Columns) -> String {
    let items = answer.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        return format!("({empty})\n");
    }
    let mut table = new_table();
    table.set_header(columns.iter().map(|(header, _)| *header));
    for item in items {
        table.add_row(columns.iter().map(|(_, field)| cell(item, field)));
    }
    format!("{table}\n")
}

fn org_table(org: &Value) -> String {
    kv_table(org, ORG_COLUMNS)
}

/// One line per restricted dimension, or "any".
fn scope_summary(scope: Option<&Value>) -> String {
    let lines: Vec<String> = SCOPE_DIMENSIONS
        .iter()
        .filter_map(|(label, field)| {
            let value = scope?.get(field)?;
            let non_empty = value.as_array().is_some_and(|list| !list.is_empty());
            non_empty.then(|| format!("{label}: {}", text_of(Some(value))))
        })
        .collect();
    if lines.is_empty() {
        "any".to_owned()
    } else {
        lines.join("\n")
    }
}

fn credential(cred: &Value, action: CredentialAction) -> String {
    let name = cell(cred, "name");
    let id = cell(cred, "id");
    let headline = match action {
        CredentialAction::Shown => String::new(),
        CredentialAction::Added => format!("Added credential {name} ({id}).\n"),
        CredentialAction::Updated => format!("Updated credential {name} ({id}).\n"),
        CredentialAction::Rotated => format!(
            "Rotated credential {name} ({id}): now at version {}, fingerprint {}.\n",
            cell(cred, "version"),
            cell(cred, "fingerprint")
        ),
        CredentialAction::StateChanged => {
            return format!("Credential {name} ({id}) is now {}.\n", cell(cred, "state"));
        }
    };
    let mut table = new_table();
    let platform = cred.get("owner").and_then(Value::as_str) == Some("platform");
    for (label, field) in [
        ("id", "id"),
        ("name", "name"),
        ("org", "org_id"),
        ("owner", "owner"),
        ("provider", "provider"),
        ("state", "state"),
        ("version", "version"),
        ("fingerprint", "fingerprint"),
    ] {
        // A platform credential's org id is the pool's own, which no command takes.
        if !(platform && field == "org_id") {
            table.add_row(vec![label.to_owned(), cell(cred, field)]);
        }
    }
    table.add_row(vec!["scope".to_owned(), scope_summary(cred.get("scope"))]);
    table.add_row(vec!["base url".to_owned(), cell(cred, "base_url")]);
    table.add_row(vec!["expires".to_owned(), or_never(cred, "expires_at")]);
    if !matches!(cred.get("rotate_by"), None | Some(Value::Null)) {
        table.add_row(vec!["rotate by".to_owned(), cell(cred, "rotate_by")]);
    }
    table.add_row(vec!["priority".to_owned(), cell(cred, "priority")]);
    table.add_row(vec!["weight".to_owned(), cell(cred, "weight")]);
    table.add_row(vec!["provider paces".to_owned(), paces_text(cred)]);
    table.add_row(vec!["health".to_owned(), health_text(cred.get("health"))]);
    for (label, field) in [("created", "created_at"), ("updated", "updated_at")] {
        table.add_row(vec![label.to_owned(), cell(cred, field)]);
    }
    let mut out = format!("{headline}{table}\n");
    if let Some(versions) = cred.get("versions").and_then(Value::as_array) {
        if !versions.is_empty() {
            let mut table = new_table();
            table.set_header(VERSION_COLUMNS.iter().map(|(header, _)| *header));
            for version in versions {
                table.add_row(VERSION_COLUMNS.iter().map(|(_, field)| cell(version, field)));
            }
            out.push_str(&format!("Versions:\n{table}\n"));
        }
    }
    out
}

fn credential_list(answer: &Value, empty: &str) -> String {
    let items = answer.get("credentials").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        return empty.to_owned();
    }
    // katman-c orgs with a maximum credential age: when each credential must be rotated.
    let rotate_by = items.iter().any(|item| !matches!(item.get("rotate_by"), None | Some(Value::Null)));
    let mut table = new_table();
    let mut header = vec![
        "ID",
        "NAME",
        "PROVIDER",
        "STATE",
        "HEALTH",
        "SCOPE",
        "VERSION",
        "FINGERPRINT",
        "PRIORITY",
        "WEIGHT",
        "EXPIRES",
    ];
    if rotate_by {
        header.push("ROTATE BY");
    }
    table.set_header(header);
    for item in items {
        let mut row = vec![
            cell(item, "id"),
            cell(item, "name"),
            cell(item, "provider"),
            cell(item, "state"),
            health_text(item.get("health")),
            scope_summary(item.get("scope")),
            cell(item, "version"),
            cell(item, "fingerprint"),
            cell(item, "priority"),
            cell(item, "weight"),
            cell(item, "expires_at"),
        ];
        if rotate_by {
            row.push(cell(item, "rotate_by"));
        }
        table.add_row(row);
    }
    format!("{table}\n")
}

/// A credential's health: `ok`, `cooling_down until T (HTTP 429)`, `failing (HTTP 401)`.
fn health_text(health: Option<&Value>) -> String {
    let Some(health) = health.filter(|h| h.is_object()) else { return "-".to_owned() };
    let mut text = cell(health, "state");
    if let Some(Value::String(until)) = health.get("until") {
        text.push_str(&format!(" until {}", printable(until)));
    }
    if text != "ok" {
        if let Some(Value::Number(status)) = health.get("last_status") {
            text.push_str(&format!(" (HTTP {status})"));
        }
    }
    text
}

/// The provider account's limits a credential is paced to, or `none`.
fn paces_text(cred: &Value) -> String {
    let pace = |field: &str, unit: &str| match cred.get(field) {
        None | Some(Value::Null) => None,
        value => Some(format!("{} {unit}/min", text_of(value))),
    };
    let paces: Vec<String> = [pace("rpm", "calls"), pace("tpm", "tokens")].into_iter().flatten().collect();
    if paces.is_empty() {
        "none".to_owned()
    } else {
        paces.join(", ")
    }
}

/// What the provider said of a credential's key, in one line.
fn verification(cred: Option<&str>, answer: &Value) -> String {
    let who = cred.map_or_else(|| "The credential".to_owned(), |cred| format!("Credential {}", printable(cred)));
    let status = match answer.get("status") {
        Some(Value::Number(status)) => format!("HTTP {status}"),
        _ => "no answer".to_owned(),
    };
    let reason = answer.get("reason").and_then(Value::as_str).unwrap_or("-");
    let meaning = match reason {
        "ok" => "the provider accepted the key",
        "invalid_key" => {
            "the provider rejected the key; calls skip this credential (failing) until it is rotated, enabled again \
             or verified successfully"
        }
        "rate_limited" => "the provider is throttling; the key itself may be fine",
        "unreachable" => "no answer that says anything about the key",
        _ => "an answer this CLI does not know",
    };
    format!("{who}: {} ({status}): {meaning}.\n", printable(reason))
}

fn actor_text(actor: Option<&Value>) -> String {
    match actor {
        Some(actor) => match (actor.get("kind").and_then(Value::as_str), actor.get("id").and_then(Value::as_str)) {
            (Some(kind), Some(id)) => format!("{} {}", printable(kind), printable(id)),
            (Some(kind), None) => printable(kind).into_owned(),
            _ => text_of(Some(actor)),
        },
        None => "-".to_owned(),
    }
}

/// An event's details in a few words: what changed (`before`/`after`, `from`/`to`),
/// else its fields, with empty lists and nulls left out.
fn details_summary(details: Option<&Value>) -> String {
    let Some(Value::Object(map)) = details else {
        return text_of(details);
    };
    if let (Some(Value::Object(before)), Some(Value::Object(after))) = (map.get("before"), map.get("after")) {
        let before = flatten(before);
        let after = flatten(after);
        let mut changes: Vec<String> = Vec::new();
        for (key, new) in &after {
            let old = before.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            if old.as_ref() != Some(new) {
                changes.push(format!("{key}: {} → {}", old.unwrap_or_else(|| "-".to_owned()), new));
            }
        }
        return if changes.is_empty() { "no change".to_owned() } else { changes.join("\n") };
    }
    if let (Some(from), Some(to)) = (map.get("from"), map.get("to")) {
        return format!("{} → {}", text_of(Some(from)), text_of(Some(to)));
    }
    let fields: Vec<String> = flatten(map)
        .into_iter()
        .filter(|(_, value)| value != "-")
        .map(|(key, value)| format!("{key}: {value}"))
        .collect();
    if fields.is_empty() {
        "-".to_owned()
    } else {
        fields.join("\n")
    }
}

/// `key → text` pairs, nested objects one level down as `outer.inner`.
fn flatten(map: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in map {
        match value {
            Value::Object(inner) => {
                for (inner_key, inner_value) in inner {
                    out.push((format!("{}.{}", printable(key), printable(inner_key)), text_of(Some(inner_value))));
                }
            }
            other => out.push((printable(key).into_owned(), text_of(Some(other)))),
        }
    }
    out
}

/// `active`, `revoked` or `expired`, from a token's fields.
fn token_state(token: &Value, now: DateTime<Utc>) -> &'static str {
    if !matches!(token.get("revoked_at"), None | Some(Value::Null)) {
        return "revoked";
    }
    let expired = token
        .get("expires_at")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t <= now);
    if expired {
        "expired"
    } else {
        "active"
    }
}

fn admin_token_list(answer: &Value) -> String {
    let items = answer.get("admin_tokens").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        return "(no admin tokens in this org)\n".to_owned();
    }
    let now = Utc::now();
    let mut table = new_table();
    table.set_header(["ID", "STATE", "EXPIRES", "REVOKED", "LAST USED", "CREATED"]);
    for token in items {
        table.add_row(vec![
            cell(token, "id"),
            token_state(token, now).to_owned(),
            or_never(token, "expires_at"),
            cell(token, "revoked_at"),
            cell(token, "last_used_at"),
            cell(token, "created_at"),
        ]);
    }
    format!("{table}\n")
}

fn token_list(answer: &Value) -> String {
    let items = answer.get("tokens").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        return "(no workload tokens in this org)\n".to_owned();
    }
    let now = Utc::now();
    let mut table = new_table();
    table.set_header(["ID", "NAME", "TEAM", "WORKFLOWS", "STATE", "EXPIRES", "REVOKED", "CREATED", "DESCRIPTION"]);
    for token in items {
        table.add_row(vec![
            cell(token, "id"),
            cell(token, "name"),
            cell(token, "team_id"),
            list_or_any(token.get("workflows")),
            token_state(token, now).to_owned(),
            or_never(token, "expires_at"),
            cell(token, "revoked_at"),
            cell(token, "created_at"),
            cell(token, "description"),
        ]);
    }
    format!("{table}\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CANARY: &str = "sk-canary-output-5f1e";

    fn credential_json() -> Value {
        json!({
            "id": "cred_01JTEST", "org_id": "org_01JTEST", "name": "openai-prod", "provider": "openai",
            "scope": {"model_families": ["gpt-4o"], "capabilities": [], "modes": [],
                      "teams": ["team_01JTEST"], "workflows": []},
            "state": "active", "version": 2, "fingerprint": "fp_abc", "base_url": null,
            "expires_at": null, "priority": 0, "weight": 3, "rpm": 500,
            "health": {"state": "cooling_down", "until": "2025-01-03T00:00:05Z", "last_status": 429},
            "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-02T00:00:00Z",
            "versions": [{"version": 1, "fingerprint": "fp_old", "kek_version": 1, "created_at": "2025-01-01T00:00:00Z"}],
            // Not part of the contract: a table must not show a field it does not know.
            "secret": CANARY, "api_key": CANARY,
        })
    }

    /// An answer of every shape a view reads, each with a field no view may show.
    fn sample_answers() -> Vec<Value> {
        let cred = credential_json();
        vec![
            json!({"orgs": [{"id": "org_1", "name": "acme", "secret": CANARY}]}),
            json!({"credentials": [cred.clone()]}),
            json!({"credential": cred.clone(), "events": [{"seq": 1, "kind": "created", "secret": CANARY,
                   "actor": {"kind": "system"}, "details": {}}]}),
            json!({"tokens": [{"id": "tok_1", "team_id": "team_1", "workflows": [], "secret": CANARY}]}),
            json!({"rows": [{"seq": 1, "call_id": "c1", "outcome": "allowed", "secret": CANARY}]}),
            json!({"ok": false, "checked": 1, "first_bad": {"chain": "events", "secret": CANARY}, "secret": CANARY}),
            json!({"credential": cred.clone(), "events": [{"type": "call", "secret": CANARY,
                   "resolution": {"call_id": "c1", "outcome": "allowed", "secret": CANARY},
                   "completion": {"status": "completed", "secret": CANARY}}]}),
            cred.clone(),
            json!({"org": "org_1", "currency": "USD", "calls": 1, "secret": CANARY, "lines": [{"tier": "katman-a",
                   "calls": 1, "secret": CANARY, "rate_card": {"per_call": "0.002", "secret": CANARY}}]}),
            json!({"orgs": [{"org_id": "org_1", "name": "acme", "secret": CANARY}], "total": "0", "secret": CANARY}),
            json!({"org_id": "org_1", "tier": "katman-c", "negotiated": true, "per_call": "0.001", "secret": CANARY}),
            json!({"org_id": "org_1", "monthly_limit": "5", "teams": {"research": "1"}, "secret": CANARY,
                   "team_spent_this_month": {"research": "0.1"}, "spent_this_month": "0.2"}),
            json!({"max_credential_age_days": 9, "allowed_source_cidrs": ["10.0.0.0/8"], "secret": CANARY}),
            json!({"credential": cred, "events": [{"type": "call", "resolution": {"call_id": "c1", "at": "t1",
                   "outcome": "denied", "reason": "scope_denied", "detail": "unknown workflow 'w'", "org_id": "o",
                   "credential_owner": "platform", "model": "m", "model_family": "f", "fingerprint": "fp"},
                   "completion": null},
                   {"type": "lifecycle", "kind": "updated", "at": "t2", "version": 1, "fingerprint": "fp",
                    "actor": {"kind": "admin_token", "id": "adm_1"},
                    "details": {"before": {"scope": {"teams": ["a"]}}, "after": {"scope": {"teams": ["b"]}}}}]}),
            json!({"rows": [{"seq": 1, "at": "t", "call_id": "c1", "outcome": "denied", "reason": "r",
                   "detail": "d", "credential_id": "cred_1", "credential_version": 1, "team_id": "team_1",
                   "workflow_id": "wf_1", "token_id": "tok_1", "model": "m", "provider": "openai",
                   "capability": "chat", "mode": "sync"}], "next_after_seq": 1}),
            json!({"ok": false, "checked": 3, "first_bad": {"chain": "calls/s", "seq": 2, "row": "r",
                   "problem": "changed", "detail": "d"}}),
            json!({"id": "tok_1", "token": "byok_t", "team_id": "team_1", "org_id": "org_1",
                   "workflows": ["wf_1"], "expires_at": "e", "revoked_at": "r"}),
            json!({"ok": false, "status": 401, "reason": "invalid_key", "secret": CANARY}),
            // (Only where no other view prints a whole object: a budget's team value is text.)
            json!({"org": {"rpm": 600}, "teams": {"research": {"tpm": 5}},
                   "tokens": {"tok_1": {"rpm": 1, "secret": CANARY}}, "secret": CANARY}),
        ]
    }

    /// Every view.
    fn all_views() -> Vec<View> {
        vec![
            View::Org,
            View::OrgList,
            View::Team,
            View::TeamList,
            View::Workflow,
            View::WorkflowList,
            View::Credential(CredentialAction::Shown),
            View::Credential(CredentialAction::Added),
            View::Credential(CredentialAction::Updated),
            View::Credential(CredentialAction::Rotated),
            View::Credential(CredentialAction::StateChanged),
            View::CredentialList,
            View::Lifecycle,
            View::TokenList,
            View::TokenRevoked,
            View::TokenCreated,
            View::AdminTokenCreated,
            View::AdminTokenList,
            View::AdminTokenRevoked,
            View::AuditVerify,
            View::CheckpointCheck,
            View::AuditRows,
            View::AuditPurged,
            View::AuditPublicKey,
            View::OrgTierChanged,
            View::Controls,
            View::PlatformCredentialList,
            View::PlatformAuditVerify,
            View::RateCard,
            View::Budget,
            View::Statement,
            View::StatementCsv,
            View::UsageReport,
            View::UsageReportCsv,
            View::KekStatus,
            View::KmsList,
            View::KmsMigration,
            View::Verification,
            View::Limits,
        ]
    }

    /// What a caller might put in any text that ends up in an answer: terminal escapes (clear
    /// screen, set title), a bell, a carriage return, a C1 CSI, a right-to-left override,
    /// a backspace, a tab and a line break.
    const INJECTED: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}\r\u{9b}31m\u{202e}\u{8}\tINJECTED\nINJECTED";

    /// `value` with INJECTED appended to every string, and to every key of the maps whose
    /// keys are data (event details, team budgets).
    fn poisoned(value: &Value, data_keys: bool) -> Value {
        match value {
            Value::String(text) => Value::String(format!("{text}{INJECTED}")),
            Value::Array(items) => Value::Array(items.iter().map(|v| poisoned(v, data_keys)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, v)| {
                        let children = data_keys
                            || matches!(key.as_str(), "details" | "teams" | "tokens" | "team_spent_this_month");
                        let key = if data_keys { format!("{key}{INJECTED}") } else { key.clone() };
                        (key, poisoned(v, children))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    #[test]
    fn no_view_prints_a_control_character_from_an_answer() {
        let csv = [View::StatementCsv, View::UsageReportCsv];
        let mut escaped_seen = 0;
        for answer in sample_answers() {
            let answer = poisoned(&answer, false);
            for view in all_views() {
                let rendered = render(view, &answer);
                let text = format!("{}{}{}", rendered.note_before, rendered.stdout, rendered.note_after);
                let mut chars = text.chars().peekable();
                while let Some(c) = chars.next() {
                    let line_end = c == '\n' || (c == '\r' && csv.contains(&view) && chars.peek() == Some(&'\n'));
                    assert!(!c.is_control() || line_end, "{view:?} printed {c:?}:\n{text}");
                    assert!(!('\u{202a}'..='\u{202e}').contains(&c), "{view:?} printed {c:?}:\n{text}");
                }
                assert!(!text.contains("\nINJECTED"), "{view:?} printed a caller's line break:\n{text}");
                escaped_seen += text.matches("\\u{1b}[2J").count();
            }
        }
        assert!(escaped_seen > 100, "the injected text is shown, escaped ({escaped_seen} times)");
        // Keys that are data (event details, team names) are escaped too.
        let details = details_summary(Some(&json!({"note\u{1b}[2J": "x", "scope": {"teams\r": ["a"]}})));
        assert_eq!(details, "note\\u{1b}[2J: x\nscope.teams\\r: a");
        let actor = actor_text(Some(&json!({"kind": "admin_token\u{7}", "id": "adm\u{9b}1"})));
        assert_eq!(actor, "admin_token\\u{7} adm\\u{9b}1");
    }

    #[test]
    fn no_view_shows_a_secret_field() {
        let answers = sample_answers();
        for view in all_views() {
            for answer in &answers {
                let rendered = render(view, answer);
                assert!(!rendered.stdout.contains(CANARY), "{view:?} printed the secret");
                assert!(!rendered.stderr().contains(CANARY), "{view:?} printed the secret");
            }
        }
    }

    #[test]
    fn credential_table_shows_scope_and_versions() {
        let text = render(View::Credential(CredentialAction::Shown), &credential_json()).stdout;
        for needle in
            ["cred_01JTEST", "openai-prod", "model families: gpt-4o", "teams: team_01JTEST", "fp_old", "never"]
        {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        let list = render(View::CredentialList, &json!({"credentials": [credential_json()]})).stdout;
        assert!(list.contains("SCOPE") && list.contains("gpt-4o"), "{list}");
    }

    #[test]
    fn credentials_show_their_weight_paces_and_health() {
        let text = render(View::Credential(CredentialAction::Shown), &credential_json()).stdout;
        for needle in ["weight", "3", "500 calls/min", "cooling_down until 2025-01-03T00:00:05Z (HTTP 429)"] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        let mut failing = credential_json();
        failing["health"] = json!({"state": "failing", "until": null, "last_status": 401});
        failing["tpm"] = json!(90000);
        let text = render(View::Credential(CredentialAction::Shown), &failing).stdout;
        assert!(text.contains("failing (HTTP 401)") && text.contains("500 calls/min, 90000 tokens/min"), "{text}");
        let mut healthy = credential_json();
        healthy["health"] = json!({"state": "ok", "until": null, "last_status": 401});
        healthy["rpm"] = Value::Null;
        let text = render(View::Credential(CredentialAction::Shown), &healthy).stdout;
        assert!(text.contains("provider paces") && text.contains("none") && !text.contains("HTTP 401"), "{text}");

        let list = render(View::CredentialList, &json!({"credentials": [credential_json(), failing]})).stdout;
        for needle in ["WEIGHT", "HEALTH", "cooling_down until", "failing (HTTP 401)"] {
            assert!(list.contains(needle), "{needle} missing from:\n{list}");
        }
        // An older server's answer without these fields still renders.
        let mut old = credential_json();
        for field in ["weight", "rpm", "health"] {
            old.as_object_mut().unwrap().remove(field);
        }
        let list = render(View::CredentialList, &json!({"credentials": [old]})).stdout;
        assert!(list.contains("HEALTH"), "{list}");
    }

    #[test]
    fn verification_says_what_the_provider_said() {
        let cases = [
            (
                json!({"ok": true, "status": 200, "reason": "ok"}),
                "Credential openai-prod: ok (HTTP 200): the provider accepted",
            ),
            (
                json!({"ok": false, "status": 401, "reason": "invalid_key"}),
                "invalid_key (HTTP 401): the provider rejected",
            ),
            (json!({"ok": false, "status": 429, "reason": "rate_limited"}), "rate_limited (HTTP 429)"),
            (json!({"ok": false, "status": null, "reason": "unreachable"}), "unreachable (no answer)"),
        ];
        for (answer, expected) in cases {
            let text = render_for(View::Verification, Some("openai-prod"), &answer).stdout;
            assert!(text.contains(expected), "{expected} missing from: {text}");
        }
    }

    #[test]
    fn platform_credentials_show_their_owner_and_rotation_deadlines_show() {
        let mut platform = credential_json();
        platform["owner"] = json!("platform");
        let text = render(View::Credential(CredentialAction::Shown), &platform).stdout;
        assert!(text.contains("platform") && !text.contains("org_01JTEST"), "{text}");
        let empty = render(View::PlatformCredentialList, &json!({"credentials": []})).stdout;
        assert_eq!(empty, "(no credentials in the platform pool)\n");

        let mut due = credential_json();
        due["rotate_by"] = json!("2026-03-01T00:00:00Z");
        let text = render(View::Credential(CredentialAction::Shown), &due).stdout;
        assert!(text.contains("rotate by") && text.contains("2026-03-01T00:00:00Z"), "{text}");
        let list = render(View::CredentialList, &json!({"credentials": [due, credential_json()]})).stdout;
        assert!(list.contains("ROTATE BY") && list.contains("2026-03-01T00:00:00Z"), "{list}");
        let list = render(View::CredentialList, &json!({"credentials": [credential_json()]})).stdout;
        assert!(!list.contains("ROTATE BY"), "{list}");

        let call = json!({"credential": platform, "events": [{"type": "call",
            "resolution": {"call_id": "c1", "at": "t1", "outcome": "allowed", "org_id": "org_01JOTHER",
                           "credential_owner": "platform", "team_id": "team_1"}, "completion": null}]});
        let text = render(View::Lifecycle, &call).stdout;
        assert!(text.contains("org org_01JOTHER · team team_1"), "{text}");
    }

    #[test]
    fn created_tokens_go_alone_to_stdout_with_a_note_on_stderr() {
        let answer =
            json!({"id": "tok_1", "token": "byok_abc123", "team_id": "team_1", "workflows": [], "expires_at": null});
        let rendered = render(View::TokenCreated, &answer);
        assert_eq!(rendered.stdout, "byok_abc123\n");
        assert!(rendered.note_after.contains("not show this token again"), "{rendered:?}");
        assert!(rendered.note_before.contains("tok_1"), "{rendered:?}");
        assert!(!rendered.stderr().contains("byok_abc123"));
        let rendered =
            render(View::AdminTokenCreated, &json!({"id": "adm_1", "token": "byokadm_x", "org_id": "org_1"}));
        assert_eq!(rendered.stdout, "byokadm_x\n");
        assert!(rendered.note_after.contains("only this once"));
    }

    #[test]
    fn token_state_reads_revoked_and_expiry() {
        let now = Utc::now();
        let cases = [
            (json!({"revoked_at": "2020-01-01T00:00:00Z"}), "revoked"),
            (json!({"revoked_at": null, "expires_at": "2000-01-01T00:00:00Z"}), "expired"),
            (json!({"revoked_at": null, "expires_at": "2999-01-01T00:00:00Z"}), "active"),
            (json!({}), "active"),
        ];
        for (token, expected) in cases {
            assert_eq!(token_state(&token, now), expected, "{token}");
        }
    }

    #[test]
    fn empty_lists_say_so() {
        assert_eq!(render(View::OrgList, &json!({"orgs": []})).stdout, "(no orgs yet)\n");
        assert!(render(View::TokenList, &json!({})).stdout.contains("no workload tokens"));
    }

    #[test]
    fn lifecycle_lists_events_in_order_with_actor() {
        let answer = json!({"credential": credential_json(), "events": [
            {"seq": 1, "kind": "created", "at": "t1", "version": 1, "actor": {"kind": "admin_token", "id": "adm_1"}, "details": {}},
            {"seq": 2, "kind": "rotated", "at": "t2", "version": 2, "actor": {"kind": "system"}, "details": {"from": 1}},
        ]});
        let text = render(View::Lifecycle, &answer).stdout;
        let created = text.find("created").unwrap();
        let rotated = text.find("rotated").unwrap();
        assert!(created < rotated, "{text}");
        assert!(text.contains("admin_token adm_1") && text.contains("system"), "{text}");
    }

    #[test]
    fn event_details_say_what_changed() {
        let cases = [
            (
                json!({"before": {"priority": 0, "scope": {"modes": [], "teams": ["team_1"]}},
                       "after": {"priority": 0, "scope": {"modes": ["stream"], "teams": ["team_1"]}}}),
                "scope.modes: - → stream",
            ),
            (json!({"from": "active", "to": "disabled"}), "active → disabled"),
            (
                json!({"kek_version": 1, "previous_version": 1, "base_url": null, "scope": {"teams": []}}),
                "kek_version: 1\nprevious_version: 1",
            ),
            (json!({}), "-"),
        ];
        for (details, expected) in cases {
            assert_eq!(details_summary(Some(&details)), expected, "{details}");
        }
    }
}
