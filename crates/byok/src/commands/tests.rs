//! argv → request, as a table.

use std::ffi::OsString;

use clap::Parser;
use serde_json::{json, Value};

use super::credential::{current_scope, merge_scope, plan_update};
use super::plan;
use crate::api::ScopeLists;
use crate::cli::{AdminCommand, Cli, Command, CredentialCommand, ScopeDimension, ScopeFlags};
use crate::error::CliError;
use crate::secret_input::SecretReader;

const CANARY: &str = "sk-canary-argv-7d3a";

/// What a command line should become.
enum Expect {
    /// Method, path and JSON body (`Value::Null` for none).
    Request(&'static str, &'static str, Value),
    /// A parse or planning error whose text contains every one of these.
    Error(&'static [&'static str]),
}

fn env(name: &str) -> Option<OsString> {
    (name == "OPENAI_KEY").then(|| OsString::from(CANARY))
}

fn no_prompt(_: &str) -> std::io::Result<String> {
    Err(std::io::Error::other("no terminal in tests"))
}

/// Parse `argv` and plan it with `stdin` piped in.
fn planned(argv: &str, stdin: &str) -> Result<(String, String, Value), String> {
    let args = std::iter::once("byok").chain(argv.split_whitespace());
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    let Command::Admin(command) = cli.command else {
        return Err("not an admin command".to_owned());
    };
    let mut secrets = SecretReader::new(stdin.as_bytes(), false, env, no_prompt);
    let planned = plan(&command, &mut secrets).map_err(|e| e.to_string())?;
    let body = match &planned.request.body {
        Some(body) => serde_json::to_value(body).map_err(|e| e.to_string())?,
        None => Value::Null,
    };
    Ok((planned.request.method.to_string(), target(&planned.request), body))
}

/// `path?key=value&…`, unencoded (the client's encoding is tested in `client`).
fn target(request: &crate::api::ApiRequest) -> String {
    let path = request.path.join("/");
    if request.query.is_empty() {
        return path;
    }
    let query: Vec<String> = request.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{path}?{}", query.join("&"))
}

#[test]
fn command_lines_become_requests() {
    use Expect::{Error, Request};
    let cases: Vec<(&str, &str, Expect)> = vec![
        (
            "org create acme --tier katman-b",
            "",
            Request("POST", "v1/orgs", json!({"name": "acme", "tier": "katman-b"})),
        ),
        ("org create acme --tier katman-z", "", Error(&["katman-z", "katman-a, katman-b, katman-c"])),
        ("org create acme", "", Error(&["--tier"])),
        ("org list", "", Request("GET", "v1/orgs", Value::Null)),
        ("org delete acme --yes", "", Request("DELETE", "v1/orgs/acme?confirm=true", Value::Null)),
        ("org delete acme", "", Error(&["--yes", "destroys"])),
        ("kek rotate --org acme", "", Request("POST", "v1/orgs/acme/kek/rotate", json!({"confirm": true}))),
        ("kek status --org acme", "", Request("GET", "v1/orgs/acme/kek", Value::Null)),
        ("kek move --org acme --kms acme-hsm", "", Request("PUT", "v1/orgs/acme/kms", json!({"kms": "acme-hsm"}))),
        ("kek move --org acme", "", Error(&["--kms"])),
        ("kms list", "", Request("GET", "v1/kms", Value::Null)),
        ("kms migrate --dry-run", "", Error(&["data directory", "admin API"])),
        ("org show acme", "", Request("GET", "v1/orgs/acme", Value::Null)),
        ("org admin-token acme", "", Request("POST", "v1/orgs/acme/admin-tokens", json!({}))),
        ("org admin-tokens acme", "", Request("GET", "v1/orgs/acme/admin-tokens", Value::Null)),
        (
            "org revoke-admin-token acme adm_01JD7X3M5Q8V6N2K4T9R1B0C7E",
            "",
            Request("DELETE", "v1/orgs/acme/admin-tokens/adm_01JD7X3M5Q8V6N2K4T9R1B0C7E", Value::Null),
        ),
        ("org revoke-admin-token acme", "", Error(&["<ID>"])),
        (
            "org admin-token acme --expires-at 2026-01-01T00:00:00Z",
            "",
            Request("POST", "v1/orgs/acme/admin-tokens", json!({"expires_at": "2026-01-01T00:00:00Z"})),
        ),
        ("org admin-token acme --expires-at tomorrow", "", Error(&["tomorrow", "RFC 3339"])),
        ("team create --org acme agents", "", Request("POST", "v1/orgs/acme/teams", json!({"name": "agents"}))),
        ("team create agents", "", Error(&["--org"])),
        ("team list --org acme", "", Request("GET", "v1/orgs/acme/teams", Value::Null)),
        (
            "workflow create --org acme nightly",
            "",
            Request("POST", "v1/orgs/acme/workflows", json!({"name": "nightly"})),
        ),
        (
            "workflow create --org acme nightly --team agents",
            "",
            Request("POST", "v1/orgs/acme/workflows", json!({"name": "nightly", "team": "agents"})),
        ),
        ("workflow list --org acme", "", Request("GET", "v1/orgs/acme/workflows", Value::Null)),
        (
            "credential add --org acme --name openai-prod --provider openai",
            "sk-canary-argv-7d3a\n",
            Request(
                "POST",
                "v1/orgs/acme/credentials",
                json!({"name": "openai-prod", "provider": "openai", "secret": CANARY,
                       "scope": {"model_families": [], "capabilities": [], "modes": [], "teams": [], "workflows": []}}),
            ),
        ),
        (
            "credential add --org acme --name p --provider azure-openai --model-family gpt-4o \
             --capability chat,embeddings --mode stream --team agents --team research --workflow nightly \
             --base-url https://acme.openai.azure.com --expires-at 2030-01-01T00:00:00+02:00 --priority -1 \
             --secret-env OPENAI_KEY",
            "",
            Request(
                "POST",
                "v1/orgs/acme/credentials",
                json!({"name": "p", "provider": "azure-openai", "secret": CANARY,
                       "scope": {"model_families": ["gpt-4o"], "capabilities": ["chat", "embeddings"],
                                 "modes": ["stream"], "teams": ["agents", "research"], "workflows": ["nightly"]},
                       "base_url": "https://acme.openai.azure.com", "expires_at": "2030-01-01T00:00:00+02:00",
                       "priority": -1}),
            ),
        ),
        // Pools: weight, the provider account's paces, verification first.
        (
            "credential add --org acme --name openai-2 --provider openai --weight 3 --rpm 500 --tpm 200000 --verify",
            "sk-canary-argv-7d3a\n",
            Request(
                "POST",
                "v1/orgs/acme/credentials",
                json!({"name": "openai-2", "provider": "openai", "secret": CANARY,
                       "scope": {"model_families": [], "capabilities": [], "modes": [], "teams": [], "workflows": []},
                       "weight": 3, "rpm": 500, "tpm": 200000, "verify": true}),
            ),
        ),
        (
            "credential add --platform --name pool-2 --provider openai --weight 1000 --tpm 1000000000",
            "sk-canary-argv-7d3a\n",
            Request(
                "POST",
                "v1/platform/credentials",
                json!({"name": "pool-2", "provider": "openai", "secret": CANARY,
                       "scope": {"model_families": [], "capabilities": [], "modes": [], "teams": [], "workflows": []},
                       "weight": 1000, "tpm": 1_000_000_000}),
            ),
        ),
        ("credential add --org acme --name p --provider openai --weight 0", "sk-x", Error(&["--weight", "0"])),
        ("credential add --org acme --name p --provider openai --weight 1001", "sk-x", Error(&["--weight", "1001"])),
        (
            "credential add --org acme --name p --provider openai --rpm 0",
            "sk-x",
            Error(&["--rpm", "from 1 to 1000000000"]),
        ),
        ("credential add --org acme --name p --provider openai --rpm 1.5", "sk-x", Error(&["--rpm", "1.5"])),
        (
            "credential add --org acme --name p --provider openai --tpm 1000000001",
            "sk-x",
            Error(&["--tpm", "from 1 to 1000000000"]),
        ),
        (
            "credential add --org acme --name p --provider openai --no-rpm",
            "sk-x",
            Error(&["unexpected argument '--no-rpm'"]),
        ),
        (
            "credential verify --org acme openai-prod",
            "",
            Request("POST", "v1/orgs/acme/credentials/openai-prod/verify", Value::Null),
        ),
        ("credential verify --platform pool", "", Request("POST", "v1/platform/credentials/pool/verify", Value::Null)),
        ("credential verify openai-prod", "", Error(&["--org", "--platform"])),
        ("credential verify --org acme", "", Error(&["<CRED>"])),
        // Rate limits.
        ("limits show --org acme", "", Request("GET", "v1/orgs/acme/limits", Value::Null)),
        ("limits show", "", Error(&["--org"])),
        ("limits clear --org acme", "", Request("DELETE", "v1/orgs/acme/limits", Value::Null)),
        (
            "limits set --org acme --org-rpm 600 --org-tpm 200000 --team research=rpm:60,tpm:50000 \
             --team team_01JA=tpm:20000 --token tok_01JD7X3M5Q8V6N2K4T9R1B0C7E=rpm:10",
            "",
            Request(
                "PUT",
                "v1/orgs/acme/limits",
                json!({"org": {"rpm": 600, "tpm": 200000},
                       "teams": {"research": {"rpm": 60, "tpm": 50000}, "team_01JA": {"tpm": 20000}},
                       "tokens": {"tok_01JD7X3M5Q8V6N2K4T9R1B0C7E": {"rpm": 10}}}),
            ),
        ),
        (
            "limits set --org acme --team research=tpm:5,rpm:1",
            "",
            Request("PUT", "v1/orgs/acme/limits", json!({"teams": {"research": {"rpm": 1, "tpm": 5}}})),
        ),
        ("limits set --org acme --org-tpm 7", "", Request("PUT", "v1/orgs/acme/limits", json!({"org": {"tpm": 7}}))),
        ("limits set --org acme", "", Error(&["nothing to set", "byok limits clear --org acme"])),
        ("limits set --org acme --org-rpm 0", "", Error(&["--org-rpm", "from 1 to 1000000000"])),
        ("limits set --org acme --org-rpm -5", "", Error(&["--org-rpm", "'-5' is not a whole number"])),
        ("credential add --org acme --name p --provider openai --weight -1", "sk-x", Error(&["--weight", "-1"])),
        ("limits set --org acme --team research", "", Error(&["--team", "TEAM=LIMITS", "rpm:N"])),
        ("limits set --org acme --team research=60", "", Error(&["--team", "rpm:N or tpm:N"])),
        ("limits set --org acme --team research=rps:5", "", Error(&["--team", "'rps'", "neither rpm nor tpm"])),
        ("limits set --org acme --team research=rpm:0", "", Error(&["--team", "rpm", "from 1 to 1000000000"])),
        ("limits set --org acme --team research=rpm:1.5", "", Error(&["--team", "1.5"])),
        ("limits set --org acme --team research=rpm:5,rpm:6", "", Error(&["--team", "rpm is given twice"])),
        ("limits set --org acme --team =rpm:5", "", Error(&["--team", "names no team"])),
        ("limits set --org acme --token =rpm:5", "", Error(&["--token", "names no token id"])),
        (
            "limits set --org acme --team research=rpm:5 --team research=tpm:9",
            "",
            Error(&["--team research", "more than once"]),
        ),
        ("limits set --org acme --file limits.json --org-rpm 5", "", Error(&["--file", "cannot be used with"])),
        // A secret is never a flag value.
        (
            "credential add --org acme --name p --provider openai --secret sk-canary-argv-7d3a",
            "",
            Error(&["unexpected argument '--secret'"]),
        ),
        ("credential add --org acme --name p --provider openia", "sk-x", Error(&["openia", "openai", "anthropic"])),
        (
            "credential add --org acme --name p --provider openai --capability chatt",
            "sk-x",
            Error(&["chatt", "embeddings"]),
        ),
        (
            "credential add --org acme --name p --provider openai --mode streaming",
            "sk-x",
            Error(&["streaming", "sync"]),
        ),
        (
            "credential add --org acme --name p --provider openai --secret-file k --secret-env K",
            "",
            Error(&["--secret-file", "--secret-env", "cannot be used with"]),
        ),
        ("credential add --org acme --provider openai", "sk-x", Error(&["--name"])),
        ("credential add --org acme --name p --provider openai", "\n", Error(&["secret", "empty", "standard input"])),
        (
            "credential add --org acme --name p --provider openai --secret-env MISSING_KEY",
            "",
            Error(&["MISSING_KEY", "not set"]),
        ),
        ("credential list --org acme", "", Request("GET", "v1/orgs/acme/credentials", Value::Null)),
        (
            "credential show --org acme openai-prod",
            "",
            Request("GET", "v1/orgs/acme/credentials/openai-prod", Value::Null),
        ),
        (
            "credential rotate --org acme openai-prod",
            "sk-canary-argv-7d3a",
            Request("POST", "v1/orgs/acme/credentials/openai-prod/rotate", json!({"secret": CANARY})),
        ),
        (
            "credential rotate --org acme openai-prod --secret-file -",
            "sk-canary-argv-7d3a\r\n",
            Request("POST", "v1/orgs/acme/credentials/openai-prod/rotate", json!({"secret": CANARY})),
        ),
        (
            "credential disable --org acme cred_01J",
            "",
            Request("POST", "v1/orgs/acme/credentials/cred_01J/disable", json!({})),
        ),
        (
            "credential enable --org acme cred_01J",
            "",
            Request("POST", "v1/orgs/acme/credentials/cred_01J/enable", json!({})),
        ),
        (
            "credential revoke --org acme cred_01J --yes",
            "",
            Request("POST", "v1/orgs/acme/credentials/cred_01J/revoke", json!({"confirm": true})),
        ),
        (
            "credential lifecycle --org acme cred_01J",
            "",
            Request("GET", "v1/orgs/acme/credentials/cred_01J/lifecycle", Value::Null),
        ),
        (
            "token create --org acme --team agents",
            "",
            Request("POST", "v1/orgs/acme/tokens", json!({"team": "agents"})),
        ),
        (
            "token create --org acme --team agents --workflow a,b --expires-at 2026-01-01T00:00:00Z",
            "",
            Request(
                "POST",
                "v1/orgs/acme/tokens",
                json!({"team": "agents", "workflows": ["a", "b"], "expires_at": "2026-01-01T00:00:00Z"}),
            ),
        ),
        ("token create --org acme", "", Error(&["--team"])),
        ("token list --org acme", "", Request("GET", "v1/orgs/acme/tokens", Value::Null)),
        ("token revoke --org acme tok_01J", "", Request("DELETE", "v1/orgs/acme/tokens/tok_01J", Value::Null)),
        (
            "credential lifecycle --org acme cred_01J --limit 10",
            "",
            Request("GET", "v1/orgs/acme/credentials/cred_01J/lifecycle?limit=10", Value::Null),
        ),
        ("audit verify --org acme", "", Request("GET", "v1/orgs/acme/audit/verify", Value::Null)),
        ("audit verify", "", Error(&["--org", "--export"])),
        ("audit verify --export audit.jsonl", "", Error(&["offline"])),
        ("audit verify --export audit.jsonl --org acme", "", Error(&["--org", "--export", "cannot be used with"])),
        ("audit verify --export - --platform", "", Error(&["--platform", "--export", "cannot be used with"])),
        (
            "audit verify --export - --checkpoint c.json",
            "",
            Error(&["--checkpoint", "--export", "cannot be used with"]),
        ),
        (
            "audit replay --org acme openai-prod",
            "",
            Request("GET", "v1/orgs/acme/credentials/openai-prod/lifecycle", Value::Null),
        ),
        (
            "audit replay --org acme openai-prod --limit 50",
            "",
            Request("GET", "v1/orgs/acme/credentials/openai-prod/lifecycle?limit=50", Value::Null),
        ),
        ("audit replay --org acme openai-prod --limit 0", "", Error(&["--limit", "0"])),
        ("audit replay --org acme", "", Error(&["<CRED>"])),
        ("audit export --org acme", "", Request("GET", "v1/orgs/acme/audit/export", Value::Null)),
        (
            "audit export --org acme --since 2026-01-01T00:00:00Z --until 2026-02-01T00:00:00Z --page-size 1000",
            "",
            Request(
                "GET",
                "v1/orgs/acme/audit/export?since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00Z",
                Value::Null,
            ),
        ),
        (
            "audit export --org acme --since 2026-01-01T00:00:00Z --until 2026-02-01T00:00:00+02:00 \
             --credential openai-prod --outcome denied --call-id c-1 --page-size 1000",
            "",
            Request(
                "GET",
                "v1/orgs/acme/audit?credential=openai-prod&call_id=c-1&outcome=denied&since=2026-01-01T00:00:00Z\
                 &until=2026-02-01T00:00:00+02:00&limit=1000",
                Value::Null,
            ),
        ),
        ("audit export --org acme --page-size 999", "", Error(&["999", "--page-size", "1000..=10000"])),
        ("audit export --org acme --page-size 10001", "", Error(&["10001", "--page-size"])),
        ("audit export --org acme --outcome maybe", "", Error(&["maybe", "allowed", "denied"])),
        ("audit export --org acme --since yesterday", "", Error(&["yesterday", "RFC 3339"])),
        ("audit query --org acme", "", Request("GET", "v1/orgs/acme/audit?limit=100", Value::Null)),
        (
            "audit query --org acme --outcome allowed --call-id c-1 --limit 5 --after-seq 42",
            "",
            Request("GET", "v1/orgs/acme/audit?call_id=c-1&outcome=allowed&limit=5&after_seq=42", Value::Null),
        ),
        ("audit query --org acme --limit 0", "", Error(&["--limit", "0"])),
        ("audit checkpoint --org acme", "", Request("POST", "v1/orgs/acme/audit/checkpoints", Value::Null)),
        ("audit purge --org acme", "", Request("POST", "v1/orgs/acme/audit/purge", json!({"before": "retention"}))),
        ("audit purge --org acme --before 2025-01-01T00:00:00Z", "", Error(&["--yes", "retention", "acme"])),
        (
            "audit purge --org acme --before 2025-01-01T00:00:00Z --yes",
            "",
            Request("POST", "v1/orgs/acme/audit/purge", json!({"before": "2025-01-01T00:00:00Z"})),
        ),
        ("audit purge --org acme --before last-week --yes", "", Error(&["last-week", "RFC 3339"])),
        ("audit public-key", "", Request("GET", "v1/audit/public-key", Value::Null)),
        (
            "org list --json --admin-url http://127.0.0.1:9 --data-dir /tmp/x",
            "",
            Request("GET", "v1/orgs", Value::Null),
        ),
        // Tiers and katman-c controls.
        ("org set-tier acme --tier katman-c", "", Request("PATCH", "v1/orgs/acme", json!({"tier": "katman-c"}))),
        ("org set-tier acme --tier katman-d", "", Error(&["katman-d", "katman-a, katman-b, katman-c"])),
        ("org set-tier acme", "", Error(&["--tier"])),
        ("org controls show --org acme", "", Request("GET", "v1/orgs/acme/controls", Value::Null)),
        (
            "org controls set --org acme --max-credential-age-days 90",
            "",
            Request("PUT", "v1/orgs/acme/controls", json!({"max_credential_age_days": 90})),
        ),
        (
            "org controls set --org acme --max-credential-age-days 30 --allow-source 10.20.0.0/16,127.0.0.1/32 \
             --allow-source fd00::/8",
            "",
            Request(
                "PUT",
                "v1/orgs/acme/controls",
                json!({"max_credential_age_days": 30,
                       "allowed_source_cidrs": ["10.20.0.0/16", "127.0.0.1/32", "fd00::/8"]}),
            ),
        ),
        (
            "org controls set --org acme --allow-source 10.0.0.0/8",
            "",
            Request("PUT", "v1/orgs/acme/controls", json!({"allowed_source_cidrs": ["10.0.0.0/8"]})),
        ),
        ("org controls set --org acme", "", Error(&["nothing to set", "byok org controls clear --org acme"])),
        ("org controls set --org acme --allow-source 10.20.0.1/16", "", Error(&["--allow-source", "10.20.0.0/16"])),
        ("org controls set --org acme --allow-source intranet", "", Error(&["--allow-source", "intranet"])),
        (
            "org controls set --org acme --allow-source 10.0.0.0/8,10.0.0.0/8",
            "",
            Error(&["10.0.0.0/8", "more than once"]),
        ),
        ("org controls set --org acme --max-credential-age-days 0", "", Error(&["--max-credential-age-days", "0"])),
        ("org controls clear --org acme", "", Request("PUT", "v1/orgs/acme/controls", json!({}))),
        // Statements and reports.
        ("billing report --org acme", "", Request("GET", "v1/orgs/acme/usage", Value::Null)),
        (
            "billing report --org acme --period 2026-11",
            "",
            Request("GET", "v1/orgs/acme/usage?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z", Value::Null),
        ),
        (
            "billing report --org acme --period 2026-12 --source audit --csv",
            "",
            Request(
                "GET",
                "v1/orgs/acme/usage?from=2026-12-01T00:00:00Z&to=2027-01-01T00:00:00Z&source=audit",
                Value::Null,
            ),
        ),
        (
            "billing report --org acme --from 2026-11-01T00:00:00+02:00 --to 2026-11-15T00:00:00Z",
            "",
            Request("GET", "v1/orgs/acme/usage?from=2026-11-01T00:00:00+02:00&to=2026-11-15T00:00:00Z", Value::Null),
        ),
        ("billing report --all", "", Request("GET", "v1/usage", Value::Null)),
        (
            "billing report --all --period 2027-02 --csv",
            "",
            Request("GET", "v1/usage?from=2027-02-01T00:00:00Z&to=2027-03-01T00:00:00Z", Value::Null),
        ),
        ("billing report --org acme --period 2026-13", "", Error(&["2026-13", "--period", "YYYY-MM"])),
        ("billing report --org acme --period 2026-1", "", Error(&["2026-1", "--period"])),
        ("billing report --org acme --period november", "", Error(&["november", "--period"])),
        ("billing report --org acme --all", "", Error(&["--org", "--all", "cannot be used with"])),
        ("billing report", "", Error(&["--org", "--all"])),
        ("billing report --org acme --csv --json", "", Error(&["--csv", "--json", "cannot be used with"])),
        (
            "billing report --org acme --period 2026-11 --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z",
            "",
            Error(&["--period", "cannot be used with"]),
        ),
        ("billing report --org acme --from 2026-11-01T00:00:00Z", "", Error(&["--to"])),
        (
            "billing report --org acme --from 2026-12-01T00:00:00Z --to 2026-11-01T00:00:00Z",
            "",
            Error(&["--from", "must be before --to"]),
        ),
        ("billing report --all --source audit", "", Error(&["--source", "--all", "cannot be used with"])),
        ("billing report --org acme --source raw", "", Error(&["raw", "rollup, audit"])),
        // Rate cards.
        ("billing rate-card show --org acme", "", Request("GET", "v1/orgs/acme/rate-card", Value::Null)),
        (
            "billing rate-card set --org acme --per-call 0.0010 --per-million-input-tokens 0.15 \
             --per-million-output-tokens 1",
            "",
            Request(
                "PUT",
                "v1/orgs/acme/negotiated-rate-card",
                json!({"per_call": "0.0010", "per_million_input_tokens": "0.15", "per_million_output_tokens": "1"}),
            ),
        ),
        (
            "billing rate-card set --org acme --per-call 1e-3 --per-million-input-tokens 0.15 \
             --per-million-output-tokens 1",
            "",
            Error(&["--per-call", "1e-3", "not a decimal amount"]),
        ),
        (
            "billing rate-card set --org acme --per-call 0.001 --per-million-input-tokens -0.15 \
             --per-million-output-tokens 1",
            "",
            Error(&["--per-million-input-tokens", "negative"]),
        ),
        (
            "billing rate-card set --org acme --per-call 0.001 --per-million-input-tokens 0.15 \
             --per-million-output-tokens 1,5",
            "",
            Error(&["--per-million-output-tokens", "1,5"]),
        ),
        ("billing rate-card set --org acme --per-call 0.001", "", Error(&["--per-million-input-tokens"])),
        ("billing rate-card reset --org acme", "", Request("DELETE", "v1/orgs/acme/negotiated-rate-card", Value::Null)),
        // Budgets.
        ("billing budget show --org acme", "", Request("GET", "v1/orgs/acme/budget", Value::Null)),
        (
            "billing budget set --org acme --monthly-limit 50.00",
            "",
            Request("PUT", "v1/orgs/acme/budget", json!({"monthly_limit": "50.00"})),
        ),
        (
            "billing budget set --org acme --monthly-limit 50 --team research=10.00 --team team_01JA=2.5",
            "",
            Request(
                "PUT",
                "v1/orgs/acme/budget",
                json!({"monthly_limit": "50", "teams": {"research": "10.00", "team_01JA": "2.5"}}),
            ),
        ),
        (
            "billing budget set --org acme --team research=10",
            "",
            Request("PUT", "v1/orgs/acme/budget", json!({"teams": {"research": "10"}})),
        ),
        ("billing budget set --org acme", "", Error(&["nothing to set", "byok billing budget clear --org acme"])),
        ("billing budget set --org acme --team research", "", Error(&["--team", "TEAM=AMOUNT"])),
        ("billing budget set --org acme --team =5", "", Error(&["--team", "names no team"])),
        ("billing budget set --org acme --team research=ten", "", Error(&["--team", "ten", "not a decimal"])),
        ("billing budget set --org acme --monthly-limit $50", "", Error(&["--monthly-limit", "$50"])),
        (
            "billing budget set --org acme --team research=1 --team research=2",
            "",
            Error(&["research", "more than once"]),
        ),
        ("billing budget clear --org acme", "", Request("PUT", "v1/orgs/acme/budget", json!({}))),
        // The platform credential pool.
        (
            "credential add --platform --name openai-pool --provider openai --model-family gpt-4o",
            "sk-canary-argv-7d3a\n",
            Request(
                "POST",
                "v1/platform/credentials",
                json!({"name": "openai-pool", "provider": "openai", "secret": CANARY,
                       "scope": {"model_families": ["gpt-4o"], "capabilities": [], "modes": [], "teams": [],
                                 "workflows": []}}),
            ),
        ),
        (
            "credential add --platform --name p --provider openai --team agents",
            "sk-canary-argv-7d3a",
            Error(&["--team", "platform credential", "katman-a"]),
        ),
        (
            "credential add --org acme --platform --name p --provider openai",
            "sk-canary-argv-7d3a",
            Error(&["--org", "--platform", "cannot be used with"]),
        ),
        ("credential add --name p --provider openai", "sk-canary-argv-7d3a", Error(&["--org", "--platform"])),
        ("credential list --platform", "", Request("GET", "v1/platform/credentials", Value::Null)),
        ("credential list --org acme --platform", "", Error(&["--org", "--platform", "cannot be used with"])),
        ("credential list", "", Error(&["--org", "--platform"])),
        (
            "credential show --platform openai-pool",
            "",
            Request("GET", "v1/platform/credentials/openai-pool", Value::Null),
        ),
        (
            "credential rotate --platform openai-pool --secret-env OPENAI_KEY",
            "",
            Request("POST", "v1/platform/credentials/openai-pool/rotate", json!({"secret": CANARY})),
        ),
        ("credential disable --platform p", "", Request("POST", "v1/platform/credentials/p/disable", json!({}))),
        ("credential enable --platform p", "", Request("POST", "v1/platform/credentials/p/enable", json!({}))),
        (
            "credential revoke --platform p --yes",
            "",
            Request("POST", "v1/platform/credentials/p/revoke", json!({"confirm": true})),
        ),
        ("credential revoke --org acme --platform p", "", Error(&["--org", "--platform", "cannot be used with"])),
        (
            "credential lifecycle --platform p --limit 5",
            "",
            Request("GET", "v1/platform/credentials/p/lifecycle?limit=5", Value::Null),
        ),
        ("audit replay --platform p", "", Request("GET", "v1/platform/credentials/p/lifecycle", Value::Null)),
        ("audit verify --platform", "", Request("GET", "v1/platform/audit/verify", Value::Null)),
        ("audit verify --org acme --platform", "", Error(&["--org", "--platform", "cannot be used with"])),
        (
            "audit verify --platform --checkpoint c.json",
            "",
            Error(&["--platform", "--checkpoint", "cannot be used with"]),
        ),
    ];
    for (argv, stdin, expected) in cases {
        let got = planned(argv, stdin);
        match expected {
            Expect::Request(method, path, body) => {
                let (got_method, got_path, got_body) = got.unwrap_or_else(|e| panic!("{argv}: {e}"));
                assert_eq!((got_method.as_str(), got_path.as_str()), (method, path), "{argv}");
                assert_eq!(got_body, body, "{argv}");
            }
            Expect::Error(needles) => {
                let error = match got {
                    Ok(request) => panic!("{argv}: expected an error, got {request:?}"),
                    Err(error) => error,
                };
                for needle in needles {
                    assert!(error.contains(needle), "{argv}: '{needle}' not in: {error}");
                }
                assert!(!error.contains(CANARY), "{argv}: error echoes the secret");
            }
        }
    }
}

#[test]
fn global_flags_work_before_and_after_the_subcommand() {
    for argv in [
        ["byok", "--json", "--admin-url", "http://h:1", "org", "list"],
        ["byok", "org", "list", "--json", "--admin-url", "http://h:1"],
    ] {
        let cli = Cli::try_parse_from(argv).unwrap();
        assert!(cli.global.json, "{argv:?}");
        assert_eq!(cli.global.admin_url, "http://h:1");
    }
}

#[test]
fn serve_takes_its_own_flags_and_the_global_data_dir() {
    let cli = Cli::try_parse_from(["byok", "serve", "--data-dir", "/tmp/d", "--admin-addr", "127.0.0.1:1"]).unwrap();
    let Command::Serve(args) = cli.command else { panic!("not serve") };
    assert_eq!(cli.global.data_dir.as_deref(), Some(std::path::Path::new("/tmp/d")));
    assert_eq!(args.admin_addr.map(|a| a.port()), Some(1));
}

fn update_args(argv: &str) -> Result<crate::cli::CredentialUpdateArgs, String> {
    let args =
        ["byok", "credential", "update", "--org", "acme", "openai-prod"].into_iter().chain(argv.split_whitespace());
    match Cli::try_parse_from(args).map_err(|e| e.to_string())?.command {
        Command::Admin(AdminCommand::Credential(CredentialCommand::Update(args))) => Ok(args),
        other => Err(format!("parsed as {other:?}")),
    }
}

fn current() -> ScopeLists {
    ScopeLists {
        model_families: vec!["gpt-4o".into()],
        capabilities: vec!["chat".into()],
        modes: vec!["sync".into()],
        teams: vec!["team_01JA".into()],
        workflows: vec!["wf_01JB".into()],
    }
}

#[test]
fn update_merges_only_the_given_dimensions() {
    let cases: Vec<(&str, Value)> = vec![
        (
            "--team research",
            json!({"scope": {"model_families": ["gpt-4o"], "capabilities": ["chat"], "modes": ["sync"],
                             "teams": ["research"], "workflows": ["wf_01JB"]}}),
        ),
        (
            "--capability chat,embeddings --mode stream --priority 5",
            json!({"scope": {"model_families": ["gpt-4o"], "capabilities": ["chat", "embeddings"],
                             "modes": ["stream"], "teams": ["team_01JA"], "workflows": ["wf_01JB"]},
                   "priority": 5}),
        ),
        (
            "--clear-scope",
            json!({"scope": {"model_families": [], "capabilities": [], "modes": [], "teams": [], "workflows": []}}),
        ),
        (
            "--clear-scope --workflow nightly",
            json!({"scope": {"model_families": [], "capabilities": [], "modes": [], "teams": [],
                             "workflows": ["nightly"]}}),
        ),
        (
            "--clear-scope=teams,modes",
            json!({"scope": {"model_families": ["gpt-4o"], "capabilities": ["chat"], "modes": [],
                             "teams": [], "workflows": ["wf_01JB"]}}),
        ),
        ("--no-expiry", json!({"expires_at": null})),
        ("--weight 3 --rpm 500 --no-tpm", json!({"weight": 3, "rpm": 500, "tpm": null})),
        ("--no-rpm", json!({"rpm": null})),
        ("--tpm 9000", json!({"tpm": 9000})),
        (
            "--expires-at 2031-05-01T00:00:00Z --priority -3",
            json!({"expires_at": "2031-05-01T00:00:00Z", "priority": -3}),
        ),
    ];
    for (argv, expected) in cases {
        let args = update_args(argv).unwrap_or_else(|e| panic!("{argv}: {e}"));
        let planned = plan_update(&args, Some(&current())).unwrap();
        assert_eq!(planned.request.method, reqwest::Method::PATCH, "{argv}");
        assert_eq!(planned.request.path.join("/"), "v1/orgs/acme/credentials/openai-prod");
        let body = serde_json::to_value(planned.request.body.as_ref().unwrap()).unwrap();
        assert_eq!(body, expected, "{argv}");
    }
}

#[test]
fn update_works_on_the_platform_pool_too() {
    let args = ["byok", "credential", "update", "--platform", "openai-pool", "--mode", "stream"];
    let Command::Admin(AdminCommand::Credential(CredentialCommand::Update(args))) =
        Cli::try_parse_from(args).unwrap().command
    else {
        panic!("not credential update");
    };
    let current = ScopeLists { model_families: vec!["gpt-4o".into()], ..ScopeLists::default() };
    let planned = plan_update(&args, Some(&current)).unwrap();
    assert_eq!(planned.request.method, reqwest::Method::PATCH);
    assert_eq!(target(&planned.request), "v1/platform/credentials/openai-pool");
    let body = serde_json::to_value(planned.request.body.as_ref().unwrap()).unwrap();
    assert_eq!(body["scope"]["model_families"], json!(["gpt-4o"]));
    assert_eq!(body["scope"]["modes"], json!(["stream"]));

    let with_team = ["byok", "credential", "update", "--platform", "openai-pool", "--team", "agents"];
    let Command::Admin(AdminCommand::Credential(CredentialCommand::Update(args))) =
        Cli::try_parse_from(with_team).unwrap().command
    else {
        panic!("not credential update");
    };
    let err = super::credential::check_update(&args).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)) && err.to_string().contains("--team"), "{err}");
}

#[test]
fn update_refuses_nonsense() {
    let nothing = update_args("").unwrap();
    let err = plan_update(&nothing, Some(&current())).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)));
    assert!(err.to_string().contains("nothing to update"), "{err}");

    let both = update_args("--expires-at 2031-05-01T00:00:00Z --no-expiry").unwrap_err();
    assert!(both.contains("cannot be used with"), "{both}");
    for (argv, needles) in [
        ("--rpm 5 --no-rpm", &["--rpm", "--no-rpm", "cannot be used with"][..]),
        ("--tpm 5 --no-tpm", &["--tpm", "--no-tpm", "cannot be used with"][..]),
        ("--weight 0", &["--weight", "0"][..]),
        ("--weight 1001", &["--weight", "1001"][..]),
        ("--rpm 0", &["--rpm", "from 1 to 1000000000"][..]),
        ("--verify", &["unexpected argument '--verify'"][..]),
    ] {
        let err = update_args(argv).unwrap_err();
        for needle in needles {
            assert!(err.contains(needle), "{argv}: '{needle}' not in: {err}");
        }
    }
    let message = plan_update(&nothing, None).unwrap_err().to_string();
    assert!(message.contains("--weight") && message.contains("--no-rpm"), "{message}");
    let bad_dim = update_args("--clear-scope=colours").unwrap_err();
    assert!(bad_dim.contains("colours") && bad_dim.contains("model-families"), "{bad_dim}");
    // `update` has no secret flags at all: rotation is its own command.
    let secret = update_args("--secret-file k").unwrap_err();
    assert!(secret.contains("--secret-file"), "{secret}");
}

#[test]
fn merge_is_identity_without_flags() {
    let merged = merge_scope(&current(), &ScopeFlags::default(), None);
    assert_eq!(merged, current());
    let cleared = merge_scope(&current(), &ScopeFlags::default(), Some(&[ScopeDimension::Teams]));
    assert!(cleared.teams.is_empty() && !cleared.workflows.is_empty());
}

#[test]
fn current_scope_is_read_from_the_credential_and_unknown_dimensions_refused() {
    let credential = json!({"id": "cred_1", "scope": {"model_families": ["gpt-4o"], "capabilities": ["chat"],
        "modes": ["sync"], "teams": ["team_01JA"], "workflows": ["wf_01JB"]}});
    assert_eq!(current_scope(&credential).unwrap(), current());
    let newer = json!({"scope": {"regions": ["eu"]}});
    let err = current_scope(&newer).unwrap_err();
    assert!(err.to_string().contains("regions"), "{err}");
}

fn audit_command(argv: &[&str]) -> Result<crate::cli::AuditCommand, String> {
    let args = ["byok", "audit"].iter().chain(argv.iter());
    match Cli::try_parse_from(args).map_err(|e| e.to_string())?.command {
        Command::Admin(AdminCommand::Audit(command)) => Ok(command),
        other => Err(format!("parsed as {other:?}")),
    }
}

#[test]
fn verify_with_a_checkpoint_posts_the_file_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let signed = json!({"checkpoint": {"org_id": "org_01J", "at": "2026-01-01T00:00:00.000001Z",
        "heads": [{"chain": "events", "seq": 3, "hash": "ab"}], "key_id": "ed25519:00"}, "signature": "c2ln"});
    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_string_pretty(&signed).unwrap()).unwrap();
    let command = audit_command(&["verify", "--org", "acme", "--checkpoint", good.to_str().unwrap()]).unwrap();
    let planned = super::audit::plan(&command).unwrap();
    assert_eq!(planned.request.method, reqwest::Method::POST);
    assert_eq!(target(&planned.request), "v1/orgs/acme/audit/verify");
    assert_eq!(serde_json::to_value(planned.request.body.as_ref().unwrap()).unwrap(), signed);

    let cases: Vec<(&str, String, &[&str])> = vec![
        ("not-json.json", "hello".to_owned(), &["not a byok audit checkpoint", "not JSON"]),
        ("report.json", json!({"ok": true, "checked": 3}).to_string(), &["\"checkpoint\" and \"signature\""]),
        ("list.json", "[]".to_owned(), &["not a byok audit checkpoint"]),
    ];
    for (name, content, needles) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let command = audit_command(&["verify", "--org", "acme", "--checkpoint", path.to_str().unwrap()]).unwrap();
        let err = super::audit::plan(&command).unwrap_err().to_string();
        for needle in needles.iter().chain(&[name]) {
            assert!(err.contains(needle), "{name}: '{needle}' not in: {err}");
        }
    }
    let missing = dir.path().join("missing.json");
    let command = audit_command(&["verify", "--org", "acme", "--checkpoint", missing.to_str().unwrap()]).unwrap();
    let err = super::audit::plan(&command).unwrap_err();
    assert!(matches!(err, CliError::ReadFile { .. }) && err.to_string().contains("missing.json"), "{err}");
}

#[test]
fn a_checkpoint_is_never_written_over_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("old.checkpoint.json");
    std::fs::write(&existing, "{}").unwrap();
    let command = audit_command(&["checkpoint", "--org", "acme", "--out", existing.to_str().unwrap()]).unwrap();
    let err = super::audit::check(&command).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)) && err.to_string().contains("already exists"), "{err}");
    let fresh = dir.path().join("new.checkpoint.json");
    let command = audit_command(&["checkpoint", "--org", "acme", "--out", fresh.to_str().unwrap()]).unwrap();
    assert!(super::audit::check(&command).is_ok());
}

#[test]
fn verification_sets_the_exit_code() {
    use crate::output::View;
    let bad_link = json!({"chain": "calls/01JSEG", "seq": 2, "row": "resolution_audit.seq = 7",
        "problem": "changed", "detail": "the entry's content does not match its hash"});
    let cases: Vec<(View, Value, Option<&[&str]>)> = vec![
        (View::AuditVerify, json!({"ok": true, "checked": 12}), None),
        (
            View::AuditVerify,
            json!({"ok": false, "checked": 12, "first_bad": bad_link}),
            Some(&["acme", "changed entry at position 2 of chain calls/01JSEG", "resolution_audit.seq = 7"]),
        ),
        (View::AuditVerify, json!({"checked": 12}), Some(&["did not say ok"])),
        (
            View::CheckpointCheck,
            json!({"ok": true, "signature_valid": true, "heads_changed": [], "verify": {"ok": true, "checked": 3}}),
            None,
        ),
        (
            View::CheckpointCheck,
            json!({"ok": false, "signature_valid": false, "heads_changed": ["events"],
                   "verify": {"ok": false, "checked": 3, "first_bad": bad_link}}),
            Some(&["signature is not valid", "gone or changed since the checkpoint: events", "position 2"]),
        ),
    ];
    for (view, answer, expected) in cases {
        let result = super::audit::verdict("org acme", view, &answer);
        match expected {
            None => assert!(result.is_ok(), "{answer}: {result:?}"),
            Some(needles) => {
                let err = result.unwrap_err();
                assert_eq!(err.exit_code(), std::process::ExitCode::from(crate::error::EXIT_FAILURE));
                for needle in needles {
                    assert!(err.to_string().contains(needle), "'{needle}' not in: {err}");
                }
            }
        }
    }
}

/// A stand-in admin API on a loopback port: answers each request with the next of
/// `answers` and hands back the request targets it saw.
fn fake_admin_api(answers: Vec<String>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for body in answers {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&head);
            seen.push(head.split(' ').nth(1).unwrap_or_default().to_owned());
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        }
        seen
    });
    (url, server)
}

/// Collects streamed output.
#[derive(Default)]
struct Collected(String);

impl super::audit::Sink for Collected {
    fn write(&mut self, text: &str) -> Result<bool, CliError> {
        self.0.push_str(text);
        Ok(true)
    }
}

fn client(url: &str) -> crate::client::AdminClient {
    crate::client::AdminClient::new(url, secrecy::SecretString::from("byokadm_test".to_owned())).unwrap()
}

#[tokio::test]
async fn export_pages_with_after_seq_and_writes_one_row_per_line() {
    let answers = vec![
        r#"{"rows":[{"seq":1,"call_id":"a","z":1,"b":2},{"seq":2,"call_id":"b"}],"next_after_seq":2}"#.to_owned(),
        // A row the server wrote over several lines still becomes one line.
        "{\"rows\":[{\"seq\":5,\n \"call_id\":\"c\",\"detail\":\"two\\nlines\"}]}".to_owned(),
    ];
    let (url, server) = fake_admin_api(answers);
    let command = audit_command(&["export", "--org", "acme", "--outcome", "denied", "--page-size", "1000"]).unwrap();
    let first = super::audit::plan(&command).unwrap().request;
    let mut out = Collected::default();
    super::audit::export_to(&client(&url), first, &mut out).await.unwrap();
    let seen = server.join().unwrap();
    assert_eq!(
        seen,
        ["/v1/orgs/acme/audit?outcome=denied&limit=1000", "/v1/orgs/acme/audit?outcome=denied&limit=1000&after_seq=2"]
    );
    let lines: Vec<&str> = out.0.lines().collect();
    // Rows go out as the server wrote them (field order kept).
    assert_eq!(lines[..2], [r#"{"seq":1,"call_id":"a","z":1,"b":2}"#, r#"{"seq":2,"call_id":"b"}"#]);
    assert_eq!(lines.len(), 3, "{}", out.0);
    let last: Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(last, json!({"seq": 5, "call_id": "c", "detail": "two\nlines"}));
}

#[tokio::test]
async fn paging_stops_when_the_server_repeats_a_page() {
    let page = r#"{"rows":[{"seq":1}],"next_after_seq":1}"#.to_owned();
    let (url, server) = fake_admin_api(vec![page.clone(), page]);
    let command = audit_command(&["export", "--org", "acme", "--credential", "openai-prod"]).unwrap();
    let first = super::audit::plan(&command).unwrap().request;
    let err = super::audit::export_to(&client(&url), first, &mut Collected::default()).await.unwrap_err();
    assert!(err.to_string().contains("same page again"), "{err}");
    server.join().unwrap();
}

#[tokio::test]
async fn a_whole_export_is_streamed_as_written_and_must_reach_its_end_line() {
    let body = "{\"kind\":\"header\",\"x\":\"é\"}\n{\"kind\":\"call\"}\n{\"kind\":\"end\",\"lines\":2,\"entries\":1}\n";
    let (url, server) = fake_admin_api(vec![body.to_owned()]);
    let command = audit_command(&["export", "--org", "acme", "--since", "2026-01-01T00:00:00Z"]).unwrap();
    let request = super::audit::plan(&command).unwrap().request;
    let mut out = Collected::default();
    super::audit::stream_export(&client(&url), request, &mut out).await.unwrap();
    assert_eq!(server.join().unwrap(), ["/v1/orgs/acme/audit/export?since=2026-01-01T00%3A00%3A00Z"]);
    assert_eq!(out.0, body);
    // Cut before the end line: what came is written, and the command fails.
    let cut = "{\"kind\":\"header\"}\n{\"kind\":\"call\"}\n{\"kind\":\"ca";
    let (url, server) = fake_admin_api(vec![cut.to_owned()]);
    let request = super::audit::plan(&audit_command(&["export", "--org", "acme"]).unwrap()).unwrap().request;
    let mut out = Collected::default();
    let err = super::audit::stream_export(&client(&url), request, &mut out).await.unwrap_err();
    server.join().unwrap();
    assert!(err.to_string().contains("before its end line"), "{err}");
    assert_eq!(out.0.lines().count(), 2, "{}", out.0);
}

#[test]
fn an_export_file_that_is_not_one_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let header = "{\"kind\":\"header\",\"format\":\"byok-audit-export\",\"version\":1,\"org_id\":\"org_x\",\
                  \"exported_at\":\"2026-01-01T00:00:00Z\",\"since\":null,\"until\":null,\"chains\":[]}\n";
    let not_utf8 = [header.as_bytes(), b"\xff\n"].concat();
    let cases: [(&[u8], &[&str]); 5] = [
        (b"", &["line 1", "truncated", "empty"]),
        (b"{\"kind\":\"row\"}\n", &["line 1", "header"]),
        (b"{\"kind\":\"header\",\"format\":\"byok-audit-export\",\"version\":1}\n", &["line 1", "header"]),
        (&not_utf8, &["line 2", "not UTF-8"]),
        (header.as_bytes(), &["line 2", "truncated", "end line"]),
    ];
    for (i, (content, needles)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("{i}.jsonl"));
        std::fs::write(&path, content).unwrap();
        let err = super::audit::verify_export(&path, true).unwrap_err();
        assert_eq!(err.exit_code(), std::process::ExitCode::from(crate::error::EXIT_FAILURE), "{err}");
        for needle in *needles {
            assert!(err.to_string().contains(needle), "'{needle}' not in: {err}");
        }
    }
    let missing = super::audit::verify_export(&dir.path().join("nothing.jsonl"), false).unwrap_err();
    assert!(missing.to_string().contains("cannot read the audit export"), "{missing}");
}

#[tokio::test]
async fn replay_follows_next_and_prints_one_document() {
    let credential = r#"{"id":"cred_1","name":"openai-prod","provider":"openai","state":"active","version":1}"#;
    let answers = || {
        vec![
            format!(
                r#"{{"credential":{credential},"events":[{{"type":"lifecycle","seq":1,"kind":"created","at":"t1","version":1,"actor":{{"kind":"system"}},"details":{{}}}}],"next":"10.0.1"}}"#
            ),
            format!(
                r#"{{"credential":{credential},"events":[{{"type":"call","resolution":{{"call_id":"call-x","at":"t2","outcome":"allowed"}},"completion":null}}]}}"#
            ),
        ]
    };
    let args = crate::cli::TimelineArgs {
        owner: crate::cli::OwnerFlags { org: Some("acme".into()), platform: false },
        cred: "openai-prod".into(),
        limit: Some(1),
    };

    let (url, server) = fake_admin_api(answers());
    let mut out = Collected::default();
    super::audit::replay_to(&client(&url), &args, true, &mut out).await.unwrap();
    let seen = server.join().unwrap();
    assert_eq!(
        seen,
        [
            "/v1/orgs/acme/credentials/openai-prod/lifecycle?limit=1",
            "/v1/orgs/acme/credentials/openai-prod/lifecycle?limit=1&after=10.0.1"
        ]
    );
    let document: Value = serde_json::from_str(&out.0).unwrap_or_else(|e| panic!("{e}: {}", out.0));
    assert_eq!(document["credential"]["id"], "cred_1");
    let events = document["events"].as_array().unwrap();
    assert_eq!(
        (events.len(), &events[0]["kind"], &events[1]["resolution"]["call_id"]),
        (2, &json!("created"), &json!("call-x"))
    );

    let (url, server) = fake_admin_api(answers());
    let mut out = Collected::default();
    super::audit::replay_to(&client(&url), &args, false, &mut out).await.unwrap();
    server.join().unwrap();
    assert_eq!(out.0.matches("Credential openai-prod").count(), 1, "{}", out.0);
    let created = out.0.find("t1  created").unwrap();
    let call = out.0.find("t2  call call-x  allowed").unwrap();
    assert!(created < call, "{}", out.0);

    let (url, server) = fake_admin_api(vec![format!(r#"{{"credential":{credential},"events":[]}}"#)]);
    let mut out = Collected::default();
    super::audit::replay_to(&client(&url), &args, true, &mut out).await.unwrap();
    server.join().unwrap();
    let document: Value = serde_json::from_str(&out.0).unwrap_or_else(|e| panic!("{e}: {}", out.0));
    assert_eq!(document["events"], json!([]));
}

#[test]
fn limits_from_a_file_are_passed_on_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let document = json!({"org": {"rpm": 600}, "teams": {"research": {"tpm": 50000}}, "future": true});
    let good = dir.path().join("limits.json");
    std::fs::write(&good, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    let (method, path, body) = planned(&format!("limits set --org acme --file {}", good.display()), "").unwrap();
    assert_eq!((method.as_str(), path.as_str()), ("PUT", "v1/orgs/acme/limits"));
    // The admin API judges the document (an unknown field is its to refuse, naming it).
    assert_eq!(body, document);

    for (name, content, needles) in [
        ("list.json", "[]", &["list.json", "not a limits document", "not a JSON object"][..]),
        ("text.json", "org rpm 600", &["text.json", "not JSON"][..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = planned(&format!("limits set --org acme --file {}", path.display()), "").unwrap_err();
        for needle in needles {
            assert!(err.contains(needle), "{name}: '{needle}' not in: {err}");
        }
    }
    let missing = dir.path().join("missing.json");
    let err = planned(&format!("limits set --org acme --file {}", missing.display()), "").unwrap_err();
    assert!(err.contains("missing.json") && err.contains("cannot read the limits"), "{err}");
}

#[test]
fn verification_sets_the_exit_code_and_says_what_to_do() {
    let accepted = json!({"ok": true, "status": 200, "reason": "ok"});
    assert!(super::credential::verdict("openai-prod", &accepted).is_ok());
    let cases = [
        (json!({"ok": false, "status": 401, "reason": "invalid_key"}), "invalid_key (HTTP 401", Some("rotate")),
        (json!({"ok": false, "status": 429, "reason": "rate_limited"}), "rate_limited (HTTP 429", Some("again later")),
        (
            json!({"ok": false, "status": null, "reason": "unreachable"}),
            "the provider did not answer",
            Some("again later"),
        ),
        (json!({"status": 200}), "no reason given", None),
    ];
    for (answer, needle, hint) in cases {
        let err = super::credential::verdict("openai-prod", &answer).unwrap_err();
        assert_eq!(err.exit_code(), std::process::ExitCode::from(crate::error::EXIT_FAILURE));
        let text = err.to_string();
        assert!(text.contains("openai-prod") && text.contains(needle), "{answer}: {text}");
        assert_eq!(err.hint("http://x").is_some(), hint.is_some(), "{answer}");
        if let (Some(hint), Some(expected)) = (err.hint("http://x"), hint) {
            assert!(hint.contains(expected), "{answer}: {hint}");
        }
    }
}
