//! How an org's rate limits read: one row per subject (the org, each team, each workload
//! token) with its calls and tokens per minute.

use comfy_table::{CellAlignment, ContentArrangement};
use serde_json::Value;

use super::{new_table, printable, text_of};

/// An org's rate limits (`{"org"?, "teams"?, "tokens"?}`), or a line saying there are none.
pub fn limits(answer: &Value) -> String {
    let mut rows: Vec<(String, &Value)> = Vec::new();
    if let Some(org) = answer.get("org").filter(|limit| limited(limit)) {
        rows.push(("org".to_owned(), org));
    }
    for (key, label) in [("teams", "team"), ("tokens", "token")] {
        if let Some(Value::Object(subjects)) = answer.get(key) {
            for (subject, limit) in subjects {
                rows.push((format!("{label} {}", printable(subject)), limit));
            }
        }
    }
    if rows.is_empty() {
        return "(no rate limits: calls are limited only by the providers and the budget)\n".to_owned();
    }
    let mut table = new_table();
    table.set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(["LIMITED", "CALLS/MIN (RPM)", "TOKENS/MIN (TPM)"]);
    for (subject, limit) in rows {
        table.add_row(vec![subject, text_of(limit.get("rpm")), text_of(limit.get("tpm"))]);
    }
    for index in 1..3 {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    format!("{table}\n")
}

/// Whether a subject's limit limits anything.
fn limited(limit: &Value) -> bool {
    ["rpm", "tpm"].iter().any(|count| !matches!(limit.get(*count), None | Some(Value::Null)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_subject_gets_a_row_and_no_limits_say_so() {
        let text = limits(&json!({"org": {"rpm": 600, "tpm": 200000},
            "teams": {"research": {"rpm": 60}}, "tokens": {"tok_01J": {"tpm": 10}}}));
        for needle in ["org", "600", "200000", "team research", "60", "token tok_01J", "10"] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        let research = text.lines().find(|line| line.contains("team research")).unwrap();
        assert!(research.contains('-'), "an unlimited count shows as '-': {research}");
        assert!(limits(&json!({})).contains("no rate limits"));
        assert!(limits(&json!({"org": {}})).contains("no rate limits"));
    }
}
