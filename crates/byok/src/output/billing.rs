//! How billing reads: statements and usage reports as tables for people and as RFC 4180
//! CSV for spreadsheets; rate cards, budgets and controls as tables.
//!
//! Like the rest of [`crate::output`], only named fields are shown, and rendering is
//! pure text. Amounts are shown exactly as the admin API wrote them (decimal strings):
//! nothing here does arithmetic on money.

use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde_json::Value;

use super::{cell, new_table, printable, text_of};

/// A statement line's columns, as CSV names them (the API's field names).
const STATEMENT_FIELDS: [&str; 9] = [
    "tier",
    "provider",
    "model_family",
    "credential_owner",
    "calls",
    "input_tokens",
    "output_tokens",
    "platform_fee",
    "provider_cost",
];
/// The same as table headers, and the rate card each line was priced with (lines of the
/// same tier, provider, family and owner differ only by it after a card change).
const STATEMENT_HEADERS: [&str; 10] = [
    "TIER",
    "PROVIDER",
    "MODEL FAMILY",
    "OWNER",
    "CALLS",
    "INPUT TOKENS",
    "OUTPUT TOKENS",
    "PLATFORM FEE",
    "PROVIDER COST",
    "RATES (CALL / 1M IN / 1M OUT)",
];
/// A line's rate card, as CSV names its columns.
const RATE_FIELDS: [&str; 3] = ["per_call", "per_million_input_tokens", "per_million_output_tokens"];
/// The first numeric column of a statement line.
const STATEMENT_FIRST_NUMBER: usize = 4;

/// An org line of the operator-wide report, as CSV names its columns.
const REPORT_FIELDS: [&str; 10] = [
    "org_id",
    "name",
    "tier",
    "calls",
    "denied",
    "input_tokens",
    "output_tokens",
    "platform_fee",
    "provider_cost",
    "total",
];
/// The same as table headers.
const REPORT_HEADERS: [&str; 10] = [
    "ORG",
    "NAME",
    "TIER",
    "CALLS",
    "DENIED",
    "INPUT TOKENS",
    "OUTPUT TOKENS",
    "PLATFORM FEE",
    "PROVIDER COST",
    "TOTAL",
];
/// The first numeric column of a report line.
const REPORT_FIRST_NUMBER: usize = 3;

fn items<'a>(answer: &'a Value, key: &str) -> &'a [Value] {
    answer.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// A table of numbers: never wrapped (a wrapped amount misreads), numbers right-aligned.
fn number_table(headers: &[&str], first_number: usize) -> Table {
    let mut table = new_table();
    table.set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(headers.iter().copied());
    for index in first_number..headers.len() {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// `… from FROM to TO (amounts in USD)`.
fn period(answer: &Value) -> String {
    format!("from {} to {} (amounts in {})", cell(answer, "from"), cell(answer, "to"), cell(answer, "currency"))
}

/// An org's statement: its lines and their totals, then what was not billed.
pub fn statement(answer: &Value) -> String {
    let currency = cell(answer, "currency");
    let mut out = format!("Statement of org {} {}:\n", cell(answer, "org"), period(answer));
    let lines = items(answer, "lines");
    if lines.is_empty() {
        out.push_str("(no billed calls in this period)\n");
    } else {
        let mut table = number_table(&STATEMENT_HEADERS, STATEMENT_FIRST_NUMBER);
        for line in lines {
            let mut row: Vec<String> = STATEMENT_FIELDS.iter().map(|field| cell(line, field)).collect();
            let card = line.get("rate_card").unwrap_or(&Value::Null);
            row.push(RATE_FIELDS.iter().map(|field| cell(card, field)).collect::<Vec<_>>().join(" / "));
            table.add_row(row);
        }
        let mut totals = vec!["total".to_owned(), String::new(), String::new(), String::new()];
        totals.extend(
            ["calls", "input_tokens", "output_tokens", "platform_fee", "provider_cost"]
                .iter()
                .map(|field| cell(answer, field)),
        );
        totals.push(String::new());
        table.add_row(totals);
        out.push_str(&format!("{table}\n"));
    }
    out.push_str(&format!(
        "Total: {} {currency} (platform fees {} + provider costs {})\n",
        cell(answer, "total"),
        cell(answer, "platform_fee"),
        cell(answer, "provider_cost")
    ));
    out.push_str(&format!(
        "Not billed: {} denied and {} unanswered calls. Platform-served calls without a provider price \
         (provider cost 0): {}.\n",
        cell(answer, "denied"),
        cell(answer, "unanswered"),
        cell(answer, "unpriced_calls")
    ));
    out
}

/// Every org's usage: one line per org, then the total.
pub fn usage_report(answer: &Value) -> String {
    let mut out = format!("Usage of every org {}:\n", period(answer));
    let orgs = items(answer, "orgs");
    if orgs.is_empty() {
        out.push_str("(no usage in this period)\n");
    } else {
        let mut table = number_table(&REPORT_HEADERS, REPORT_FIRST_NUMBER);
        for org in orgs {
            table.add_row(REPORT_FIELDS.iter().map(|field| cell(org, field)));
        }
        let mut totals = vec!["total".to_owned(), String::new(), String::new()];
        totals.extend(REPORT_FIELDS[REPORT_FIRST_NUMBER..].iter().map(|field| cell(answer, field)));
        table.add_row(totals);
        out.push_str(&format!("{table}\n"));
    }
    out.push_str(&format!("Total: {} {}\n", cell(answer, "total"), cell(answer, "currency")));
    out
}

/// An org's statement as CSV: a header row, then one row per line, with the line's rate
/// card in the last three columns.
pub fn statement_csv(answer: &Value) -> String {
    let flat: Vec<Value> = items(answer, "lines")
        .iter()
        .map(|line| {
            let mut flat = line.clone();
            if let (Some(object), Some(card)) = (flat.as_object_mut(), line.get("rate_card")) {
                for field in RATE_FIELDS {
                    object.insert(field.to_owned(), card.get(field).cloned().unwrap_or(Value::Null));
                }
            }
            flat
        })
        .collect();
    let fields: Vec<&str> = STATEMENT_FIELDS.iter().chain(RATE_FIELDS.iter()).copied().collect();
    csv(&fields, &flat)
}

/// Every org's usage as CSV: a header row, then one row per org.
pub fn usage_report_csv(answer: &Value) -> String {
    csv(&REPORT_FIELDS, items(answer, "orgs"))
}

/// RFC 4180: CRLF line ends; a field holding a comma, quote, CR or LF is quoted, its
/// quotes doubled; a missing or null value is an empty field. Control characters in a
/// value are escaped ([`printable`]) like everywhere else the CLI prints.
fn csv(fields: &[&str], rows: &[Value]) -> String {
    let mut out = csv_row(fields.iter().map(|field| (*field).to_owned()));
    for row in rows {
        out.push_str(&csv_row(fields.iter().map(|field| match row.get(field) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => printable(text).into_owned(),
            Some(other) => printable(&other.to_string()).into_owned(),
        })));
    }
    out
}

fn csv_row(fields: impl Iterator<Item = String>) -> String {
    let quoted: Vec<String> =
        fields
            .map(|field| {
                if field.contains([',', '"', '\r', '\n']) {
                    format!("\"{}\"", field.replace('"', "\"\""))
                } else {
                    field
                }
            })
            .collect();
    format!("{}\r\n", quoted.join(","))
}

/// The rate card an org is billed with.
pub fn rate_card(answer: &Value) -> String {
    let tier = cell(answer, "tier");
    let card = if answer.get("negotiated").and_then(Value::as_bool) == Some(true) {
        "negotiated (this org's own)".to_owned()
    } else {
        format!("the {tier} default")
    };
    let currency = cell(answer, "currency");
    let mut table = new_table();
    for (label, value) in [
        ("org", cell(answer, "org_id")),
        ("tier", tier.clone()),
        ("card", card),
        ("per call", format!("{} {currency}", cell(answer, "per_call"))),
        ("per million input tokens", format!("{} {currency}", cell(answer, "per_million_input_tokens"))),
        ("per million output tokens", format!("{} {currency}", cell(answer, "per_million_output_tokens"))),
    ] {
        table.add_row(vec![label.to_owned(), value]);
    }
    format!("{table}\n")
}

/// An org's monthly limits and this month's spend, the org's and each limited team's.
pub fn budget(answer: &Value) -> String {
    let currency = cell(answer, "currency");
    let with_currency = |text: String| if text == "-" { "none".to_owned() } else { format!("{text} {currency}") };
    let mut table = new_table();
    for (label, value) in [
        ("org", cell(answer, "org_id")),
        ("monthly limit", with_currency(cell(answer, "monthly_limit"))),
        ("spent this month", with_currency(cell(answer, "spent_this_month"))),
    ] {
        table.add_row(vec![label.to_owned(), value]);
    }
    let mut out = format!("{table}\n");
    let teams = answer.get("teams").and_then(Value::as_object).filter(|teams| !teams.is_empty());
    let Some(teams) = teams else {
        out.push_str("(no team limits)\n");
        return out;
    };
    let spent = answer.get("team_spent_this_month");
    let mut table = number_table(&["TEAM", "MONTHLY LIMIT", "SPENT THIS MONTH"], 1);
    for (team, limit) in teams {
        let spent = text_of(spent.and_then(|spent| spent.get(team)));
        table.add_row(vec![printable(team).into_owned(), with_currency(text_of(Some(limit))), with_currency(spent)]);
    }
    out.push_str(&format!("Team limits:\n{table}\n"));
    out
}

/// An org's katman-c controls.
pub fn controls(answer: &Value) -> String {
    let age = match answer.get("max_credential_age_days") {
        Some(Value::Number(days)) => format!("{days} days (older credentials must be rotated)"),
        _ => "none".to_owned(),
    };
    let sources = match answer.get("allowed_source_cidrs") {
        Some(Value::Array(list)) if !list.is_empty() => text_of(Some(&Value::Array(list.clone()))),
        _ => "any address".to_owned(),
    };
    let mut table = new_table();
    table.add_row(vec!["max credential age".to_owned(), age]);
    table.add_row(vec!["data-plane sources".to_owned(), sources]);
    format!("{table}\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn statement_answer() -> Value {
        json!({
            "org": "org_01JTEST", "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z",
            "currency": "USD", "calls": 21, "denied": 3, "unanswered": 1,
            "input_tokens": 1100, "output_tokens": 2100,
            "platform_fee": "0.045000", "provider_cost": "0.012500", "total": "0.057500", "unpriced_calls": 0,
            "lines": [
                {"tier": "katman-b", "provider": "openai", "model_family": "gpt-4o", "credential_owner": "org",
                 "calls": 20, "input_tokens": 100, "output_tokens": 100,
                 "platform_fee": "0.041000", "provider_cost": "0.000000",
                 "rate_card": {"per_call": "0.0005", "per_million_input_tokens": "0.1",
                               "per_million_output_tokens": "0.4"}},
                // A field that needs quoting in CSV (never sent by byok, but must not break a row).
                {"tier": "katman-a", "provider": "openai", "model_family": "gpt-4o, \"mini\"",
                 "credential_owner": "platform", "calls": 1, "input_tokens": 1000, "output_tokens": 2000,
                 "platform_fee": "0.004000", "provider_cost": "0.012500",
                 "rate_card": {"per_call": "0.002", "per_million_input_tokens": "0.4",
                               "per_million_output_tokens": "1.6"},
                 "provider_price": {"input": "2.5", "output": "5"}, "secret": "sk-canary-billing"}
            ]
        })
    }

    #[test]
    fn statement_table_lists_lines_totals_and_what_was_not_billed() {
        let expected = "\
Statement of org org_01JTEST from 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z (amounts in USD):
┌──────────┬──────────┬────────────────┬──────────┬───────┬──────────────┬───────────────┬──────────────┬───────────────┬───────────────────────────────┐
│ TIER     ┆ PROVIDER ┆ MODEL FAMILY   ┆ OWNER    ┆ CALLS ┆ INPUT TOKENS ┆ OUTPUT TOKENS ┆ PLATFORM FEE ┆ PROVIDER COST ┆ RATES (CALL / 1M IN / 1M OUT) │
╞══════════╪══════════╪════════════════╪══════════╪═══════╪══════════════╪═══════════════╪══════════════╪═══════════════╪═══════════════════════════════╡
│ katman-b ┆ openai   ┆ gpt-4o         ┆ org      ┆    20 ┆          100 ┆           100 ┆     0.041000 ┆      0.000000 ┆            0.0005 / 0.1 / 0.4 │
│ katman-a ┆ openai   ┆ gpt-4o, \"mini\" ┆ platform ┆     1 ┆         1000 ┆          2000 ┆     0.004000 ┆      0.012500 ┆             0.002 / 0.4 / 1.6 │
│ total    ┆          ┆                ┆          ┆    21 ┆         1100 ┆          2100 ┆     0.045000 ┆      0.012500 ┆                               │
└──────────┴──────────┴────────────────┴──────────┴───────┴──────────────┴───────────────┴──────────────┴───────────────┴───────────────────────────────┘
Total: 0.057500 USD (platform fees 0.045000 + provider costs 0.012500)
Not billed: 3 denied and 1 unanswered calls. Platform-served calls without a provider price (provider cost 0): 0.
";
        let text = statement(&statement_answer());
        assert_eq!(text, expected, "\n{text}");
        assert!(!text.contains("sk-canary-billing"));
    }

    #[test]
    fn an_empty_statement_says_so_and_still_totals() {
        let answer = json!({"org": "org_1", "from": "a", "to": "b", "currency": "EUR", "calls": 0, "denied": 2,
            "unanswered": 0, "input_tokens": 0, "output_tokens": 0, "platform_fee": "0.000000",
            "provider_cost": "0.000000", "total": "0.000000", "unpriced_calls": 0, "lines": []});
        let text = statement(&answer);
        assert!(text.contains("(no billed calls in this period)\nTotal: 0.000000 EUR"), "{text}");
        assert!(text.contains("Not billed: 2 denied"), "{text}");
        assert_eq!(
            statement_csv(&answer),
            "tier,provider,model_family,credential_owner,calls,input_tokens,output_tokens,platform_fee,provider_cost,\
             per_call,per_million_input_tokens,per_million_output_tokens\r\n"
        );
    }

    #[test]
    fn statement_csv_is_rfc_4180() {
        let expected = "\
tier,provider,model_family,credential_owner,calls,input_tokens,output_tokens,platform_fee,provider_cost,per_call,per_million_input_tokens,per_million_output_tokens\r
katman-b,openai,gpt-4o,org,20,100,100,0.041000,0.000000,0.0005,0.1,0.4\r
katman-a,openai,\"gpt-4o, \"\"mini\"\"\",platform,1,1000,2000,0.004000,0.012500,0.002,0.4,1.6\r
";
        assert_eq!(statement_csv(&statement_answer()), expected);
    }

    #[test]
    fn usage_report_as_table_and_csv() {
        let answer = json!({"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "currency": "USD",
            "orgs": [{"org_id": "org_1", "name": "acme", "tier": "katman-a", "calls": 5, "denied": 1,
                      "input_tokens": 10, "output_tokens": 20, "platform_fee": "0.010024",
                      "provider_cost": "0.000000", "total": "0.010024"}],
            "calls": 5, "denied": 1, "input_tokens": 10, "output_tokens": 20, "platform_fee": "0.010024",
            "provider_cost": "0.000000", "total": "0.010024"});
        let expected = "\
Usage of every org from 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z (amounts in USD):
┌───────┬──────┬──────────┬───────┬────────┬──────────────┬───────────────┬──────────────┬───────────────┬──────────┐
│ ORG   ┆ NAME ┆ TIER     ┆ CALLS ┆ DENIED ┆ INPUT TOKENS ┆ OUTPUT TOKENS ┆ PLATFORM FEE ┆ PROVIDER COST ┆    TOTAL │
╞═══════╪══════╪══════════╪═══════╪════════╪══════════════╪═══════════════╪══════════════╪═══════════════╪══════════╡
│ org_1 ┆ acme ┆ katman-a ┆     5 ┆      1 ┆           10 ┆            20 ┆     0.010024 ┆      0.000000 ┆ 0.010024 │
│ total ┆      ┆          ┆     5 ┆      1 ┆           10 ┆            20 ┆     0.010024 ┆      0.000000 ┆ 0.010024 │
└───────┴──────┴──────────┴───────┴────────┴──────────────┴───────────────┴──────────────┴───────────────┴──────────┘
Total: 0.010024 USD
";
        assert_eq!(usage_report(&answer), expected, "\n{}", usage_report(&answer));
        assert_eq!(
            usage_report_csv(&answer),
            "org_id,name,tier,calls,denied,input_tokens,output_tokens,platform_fee,provider_cost,total\r\n\
             org_1,acme,katman-a,5,1,10,20,0.010024,0.000000,0.010024\r\n"
        );
        let empty = json!({"from": "a", "to": "b", "currency": "USD", "orgs": [], "total": "0.000000"});
        assert!(usage_report(&empty).contains("(no usage in this period)\nTotal: 0.000000 USD"));
    }

    #[test]
    fn budget_rate_card_and_controls_show_their_fields() {
        let budget_text = budget(&json!({"org_id": "org_1", "currency": "USD", "monthly_limit": "50",
            "teams": {"research": "10"}, "spent_this_month": "1.250000",
            "team_spent_this_month": {"research": "0.500000"}}));
        for needle in ["50 USD", "1.250000 USD", "research", "10 USD", "0.500000 USD"] {
            assert!(budget_text.contains(needle), "{needle} missing from:\n{budget_text}");
        }
        let no_limits = budget(&json!({"org_id": "org_1", "currency": "USD", "teams": {},
            "spent_this_month": "0.000000", "team_spent_this_month": {}}));
        assert!(no_limits.contains("none") && no_limits.contains("(no team limits)"), "{no_limits}");

        let card = rate_card(&json!({"org_id": "org_1", "tier": "katman-c", "negotiated": true, "currency": "USD",
            "per_call": "0.001", "per_million_input_tokens": "0.15", "per_million_output_tokens": "0.6"}));
        for needle in ["katman-c", "negotiated", "0.001 USD", "0.15 USD", "0.6 USD"] {
            assert!(card.contains(needle), "{needle} missing from:\n{card}");
        }
        let default = rate_card(&json!({"tier": "katman-a", "negotiated": false}));
        assert!(default.contains("the katman-a default"), "{default}");

        let set = controls(&json!({"max_credential_age_days": 90, "allowed_source_cidrs": ["10.0.0.0/8", "::1/128"]}));
        assert!(set.contains("90 days") && set.contains("10.0.0.0/8, ::1/128"), "{set}");
        let none = controls(&json!({}));
        assert!(none.contains("none") && none.contains("any address"), "{none}");
    }
}
