//! The command line: every command, flag and help text, parsed by clap.
//!
//! Nothing here talks to the network or reads a secret; `commands` turns a parsed
//! [`Cli`] into admin-API requests.

use std::path::PathBuf;

use byok_domain::{Capability, Cidr, Mode, Money, ProviderId, Timestamp};
use chrono::{Datelike, NaiveDate};
use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// The default admin API address (the sidecar's default `--admin-addr`).
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:4748";

/// Help heading of the options every command accepts.
const GLOBAL: &str = "Global options";

/// The billing tiers an org can be created with.
pub const TIERS: [&str; 3] = ["katman-a", "katman-b", "katman-c"];

const ROOT_AFTER_HELP: &str = "\
Admin token: taken from BYOK_ADMIN_TOKEN, else --token-file (BYOK_ADMIN_TOKEN_FILE), else
<data-dir>/operator.token (so on the sidecar's own host it just works). It is never a flag value.

Exit codes: 0 ok, 1 refused by the admin API (or a local failure), 2 usage error,
3 admin API unreachable.

Examples:
  byok serve --data-dir /var/lib/byok
  byok org create acme --tier katman-b
  byok credential add --org acme --name openai-prod --provider openai < key.txt
  byok token create --org acme --team agents
  byok billing report --org acme --period 2026-11
  byok limits set --org acme --org-rpm 600 --team research=rpm:60,tpm:50000
  byok audit verify --org acme
  byok audit replay --org acme openai-prod";

/// byok: a bring-your-own-key vault for AI provider credentials.
///
/// `byok serve` runs the sidecar (data plane and admin API); every other command is a
/// client of the admin API.
#[derive(Debug, Parser)]
#[command(name = "byok", version, propagate_version = true, after_help = ROOT_AFTER_HELP)]
pub struct Cli {
    /// Options every command understands.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options that every command accepts, before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Data directory: where `byok serve` keeps its state, and where client commands
    /// look for operator.token [default: ./byok-data].
    #[arg(long, global = true, env = "BYOK_DATA_DIR", value_name = "DIR", help_heading = GLOBAL)]
    pub data_dir: Option<PathBuf>,

    /// Base URL of the admin API.
    #[arg(
        long,
        global = true,
        env = "BYOK_ADMIN_URL",
        value_name = "URL",
        default_value = DEFAULT_ADMIN_URL,
        help_heading = GLOBAL
    )]
    pub admin_url: String,

    /// File holding the admin token (used when BYOK_ADMIN_TOKEN is not set).
    #[arg(
        long,
        global = true,
        env = "BYOK_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        help_heading = GLOBAL
    )]
    pub token_file: Option<PathBuf>,

    /// Print the API's JSON answer instead of a table (for scripts).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
}

/// The top-level commands.
// Parsed once per process; boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: the data-plane proxy and the admin API.
    #[command(after_help = "\
On an empty data directory this initializes it (database, local keyring) and writes an
operator token to <data-dir>/operator.token (mode 0600).

Examples:
  byok serve
  byok serve --data-dir /var/lib/byok --admin-addr 127.0.0.1:4748")]
    Serve(byok_server::ServeArgs),

    /// Every other command: a client of the admin API.
    #[command(flatten)]
    Admin(AdminCommand),

    /// Print a shell completion script for byok to standard output.
    #[command(after_help = "\
Examples:
  byok completions bash > /usr/share/bash-completion/completions/byok
  byok completions zsh > /usr/local/share/zsh/site-functions/_byok
  byok completions fish > ~/.config/fish/completions/byok.fish
  byok completions powershell >> $PROFILE")]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the manual page (roff), or write one page per command into a directory.
    #[command(after_help = "\
With --out, the directory gets byok.1 and one page per subcommand (byok-serve.1,
byok-credential-add.1, ...), each linked from its parent's page: what a package
installs under /usr/share/man/man1.

Examples:
  byok man | man -l -
  byok man --out /usr/share/man/man1")]
    Man {
        /// Write byok.1 and one page per subcommand into DIR (created if missing) instead
        /// of printing byok.1.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// The commands that call the admin API.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Organizations (tenants).
    #[command(subcommand)]
    Org(OrgCommand),

    /// Teams inside an org.
    #[command(subcommand)]
    Team(TeamCommand),

    /// Workflows inside an org.
    #[command(subcommand)]
    Workflow(WorkflowCommand),

    /// Provider credentials, an org's or the platform pool's: add, scope, rotate, disable, revoke.
    #[command(subcommand)]
    Credential(CredentialCommand),

    /// Workload tokens: what applications hold instead of a provider key.
    #[command(subcommand)]
    Token(TokenCommand),

    /// Org key-encryption keys: rotate or move to another KMS (with background rewrap), progress.
    #[command(subcommand)]
    Kek(KekCommand),

    /// The KMSs holding the KEKs: list them, migrate a data directory to an HSM.
    #[command(subcommand)]
    Kms(KmsCommand),

    /// The audit: verify its hash chains, replay a credential, query, export, checkpoint.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Billing: usage statements and fees, negotiated rate cards, monthly budgets.
    #[command(subcommand, after_help = BILLING_AFTER_HELP)]
    Billing(BillingCommand),

    /// Rate limits: calls and tokens per minute for an org, its teams and its workload tokens.
    #[command(subcommand, after_help = LIMITS_AFTER_HELP)]
    Limits(LimitsCommand),
}

const LIMITS_AFTER_HELP: &str = "\
rpm counts the calls admitted in the last 60 seconds; tpm counts the input + output tokens
of the calls completed in the last 60 seconds (so calls still running can take tpm past its
limit until they complete). A call over any limit that applies to it (its org's, its team's,
its workload token's) is refused with rate_limited (HTTP 429) and a Retry-After, and nothing
is sent upstream. Operator or org admin.

Examples:
  byok limits show --org acme
  byok limits set --org acme --org-rpm 600 --org-tpm 200000 --team research=rpm:60,tpm:50000
  byok limits set --org acme --file limits.json
  byok limits clear --org acme";

/// `byok limits …`
#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Show an org's rate limits.
    #[command(after_help = "Example:\n  byok limits show --org acme")]
    Show {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
    /// Set an org's rate limits, replacing them whole: a limit not given is removed.
    #[command(after_help = LIMITS_SET_AFTER_HELP)]
    Set(LimitsSetArgs),
    /// Remove every rate limit of an org.
    #[command(after_help = "Example:\n  byok limits clear --org acme")]
    Clear {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
}

const LIMITS_SET_AFTER_HELP: &str = "\
`set` replaces the org's limits whole: every limit not given on this command line is
removed (so repeat the ones to keep). Each figure is a whole number from 1 to 1000000000;
a count not given is not limited.

  --org-rpm N, --org-tpm N     the whole org's calls / tokens per minute
  --team TEAM=LIMITS           a team's (id or name), LIMITS being rpm:N, tpm:N or
                               rpm:N,tpm:N; repeat for more teams
  --token TOKEN_ID=LIMITS      a workload token's (tok_…), the same way
  --file FILE                  the whole document as the admin API takes it, instead
                               ('-' for standard input):
                               {\"org\": {\"rpm\": 600}, \"teams\": {\"research\": {\"rpm\": 60}},
                                \"tokens\": {\"tok_…\": {\"tpm\": 10000}}}

Examples:
  byok limits set --org acme --org-rpm 600 --org-tpm 200000
  byok limits set --org acme --team research=rpm:60,tpm:50000 --team agents=tpm:20000 \\
      --token tok_01JD7X3M5Q8V6N2K4T9R1B0C7E=rpm:10
  byok limits show --org acme --json > limits.json; byok limits set --org acme --file limits.json";

/// A subject's limits as `--team`/`--token` give them: `rpm:N`, `tpm:N` or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateFlags {
    /// Calls per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

/// `byok limits set`
#[derive(Debug, Clone, Args)]
pub struct LimitsSetArgs {
    /// Org id or name.
    #[arg(long)]
    pub org: String,
    /// The whole org's calls per minute.
    #[arg(long, value_name = "N", value_parser = parse_rate, allow_negative_numbers = true)]
    pub org_rpm: Option<u64>,
    /// The whole org's tokens (input + output) per minute.
    #[arg(long, value_name = "N", value_parser = parse_rate, allow_negative_numbers = true)]
    pub org_tpm: Option<u64>,
    /// A team's limits, as TEAM=rpm:N,tpm:N (team id or name; either count or both; repeat
    /// for more teams).
    #[arg(long = "team", value_name = "TEAM=LIMITS", value_parser = parse_team_rates)]
    pub teams: Vec<(String, RateFlags)>,
    /// A workload token's limits, as TOKEN_ID=rpm:N,tpm:N (repeat for more tokens).
    #[arg(long = "token", value_name = "TOKEN_ID=LIMITS", value_parser = parse_token_rates)]
    pub tokens: Vec<(String, RateFlags)>,
    /// Read the whole limits document (JSON, as `byok limits show --json` prints it) from
    /// FILE ('-' for standard input) instead of the flags above.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["org_rpm", "org_tpm", "teams", "tokens"])]
    pub file: Option<PathBuf>,
}

/// `byok audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute an org's audit hash chains (or the platform pool's, or those of an export
    /// file, offline) and report the first broken link. Exits 1 when the audit does not
    /// verify, so scripts can gate on it.
    #[command(after_help = AUDIT_VERIFY_AFTER_HELP)]
    #[command(group(ArgGroup::new("whose_audit").required(true).args(["org", "platform", "export"])))]
    Verify {
        /// Org id or name.
        #[arg(long, conflicts_with = "export")]
        org: Option<String>,
        /// Verify the platform credential pool's lifecycle-event chain instead of an org's
        /// audit (operator only).
        #[arg(long, conflicts_with = "checkpoint")]
        platform: bool,
        /// A signed checkpoint written earlier by `byok audit checkpoint` ('-' for standard
        /// input): also check its signature and that every chain head it names is still
        /// in place, unchanged.
        #[arg(long, value_name = "FILE", conflicts_with = "export")]
        checkpoint: Option<PathBuf>,
        /// Verify a file `byok audit export` wrote ('-' for standard input) offline, from
        /// the file alone: no server, no admin token.
        #[arg(long, value_name = "FILE", conflicts_with = "platform")]
        export: Option<PathBuf>,
    },
    /// Print a credential's whole life in order: every lifecycle event and every call it
    /// served or refused (call id, who, when, scope, outcome, upstream status, tokens).
    #[command(after_help = AUDIT_REPLAY_AFTER_HELP)]
    Replay(TimelineArgs),
    /// Stream an org's audit as JSON Lines for a SIEM or an auditor: every call with its
    /// completion and every lifecycle event, with the hash-chain fields that let
    /// `byok audit verify --export` check it offline.
    #[command(after_help = AUDIT_EXPORT_AFTER_HELP)]
    Export(AuditExportArgs),
    /// Show one page of an org's resolution rows as a table.
    #[command(after_help = AUDIT_QUERY_AFTER_HELP)]
    Query(AuditQueryArgs),
    /// Take a signed checkpoint of an org's audit chains, to keep outside byok.
    #[command(after_help = AUDIT_CHECKPOINT_AFTER_HELP)]
    Checkpoint {
        /// Org id or name.
        #[arg(long)]
        org: String,
        /// Write the checkpoint to FILE (which must not exist yet) instead of standard
        /// output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Remove an org's audit entries past retention (operator only); what is left still
    /// verifies.
    #[command(after_help = AUDIT_PURGE_AFTER_HELP)]
    Purge {
        /// Org id or name.
        #[arg(long)]
        org: String,
        /// Remove entries older than this (RFC 3339) instead of the org's retention;
        /// needs --yes.
        #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
        before: Option<String>,
        /// Confirm a purge with --before: entries still inside the retention period may go.
        #[arg(long)]
        yes: bool,
    },
    /// Show the public key that signs audit checkpoints (for auditors).
    PublicKey,
}

const AUDIT_VERIFY_AFTER_HELP: &str = "\
Without --checkpoint, the chains are recomputed as they are now: an entry changed, removed,
reordered or inserted behind byok's back is reported with its chain, position and row.
With --checkpoint, the checkpoint's signature is checked too, and every chain head it
names must still be there with the same hash (which ties it to everything before it).

With --platform, the platform credential pool's lifecycle-event chain is recomputed
(operator only); the calls platform credentials served are in their orgs' audits.

With --export, a file `byok audit export` wrote is verified offline: every chain in it
(lifecycle events, calls and completions) is recomputed from the file alone, and a line
edited, deleted, moved or inserted is reported with its line number, chain and position.
A chain cut by a retention purge starts from the anchor the export's header carries.

Exit codes: 0 verified, 1 not verified (or refused), 3 admin API unreachable.

Examples:
  byok audit verify --org acme
  byok audit verify --org acme --checkpoint acme-2026-01-01.checkpoint.json
  byok audit verify --platform
  byok audit verify --export acme-audit.jsonl";

const AUDIT_REPLAY_AFTER_HELP: &str = "\
Every page of the timeline is fetched and printed as it arrives. With --json the output
is one JSON document: {\"credential\": …, \"events\": [every event of every page]}.

Examples:
  byok audit replay --org acme openai-prod
  byok audit replay --org acme cred_01J… --json > openai-prod.timeline.json
  byok audit replay --platform openai-pool";

const AUDIT_EXPORT_AFTER_HELP: &str = "\
Standard output carries nothing but JSON Lines: a `header` line (format version, org,
export time, range, where each chain starts — a retention anchor included), then chain by
chain every `lifecycle` event and every `call` (the resolution row with its `completion`:
upstream status, latency, tokens, price), each with every field its hash covers and its
`prev_hash` and `hash`, and last an `end` line. `byok audit verify --export FILE` checks
it offline. --since and --until select each chain's entries from the first at or after
--since to the last before --until (exclusive). The export is streamed, so memory stays
flat however long the audit; on a terminal, standard error shows how many lines have
been written.

--credential, --call-id or --outcome select resolution rows instead: one row per line
(with its completion), as a SIEM may want them, but not verifiable (a selection leaves
gaps in every chain).

Examples:
  byok audit export --org acme > acme-audit.jsonl
  byok audit verify --export acme-audit.jsonl
  byok audit export --org acme --since 2026-01-01T00:00:00Z --outcome denied | siem-ingest";

const AUDIT_QUERY_AFTER_HELP: &str = "\
Shows at most --limit rows (default 100), oldest first. When there are more, a note on
standard error gives the --after-seq for the next page. --until is exclusive.

Examples:
  byok audit query --org acme --outcome denied
  byok audit query --org acme --call-id 01JCALL… --json";

const AUDIT_CHECKPOINT_AFTER_HELP: &str = "\
The checkpoint names the head of every audit chain of the org, signed with the server's
Ed25519 key (see `byok audit public-key`). Keep it somewhere byok cannot write; later,
`byok audit verify --org ORG --checkpoint FILE` proves nothing up to it has changed.

Example:
  byok audit checkpoint --org acme --out acme-$(date +%F).checkpoint.json";

const AUDIT_PURGE_AFTER_HELP: &str = "\
Without --before, entries older than the org's retention are removed (what byok also does
periodically). An org on katman-c with a retention lock refuses a cut inside its
retention period.

Examples:
  byok audit purge --org acme
  byok audit purge --org acme --before 2025-01-01T00:00:00Z --yes";

/// A credential's timeline: `audit replay` and `credential lifecycle`.
#[derive(Debug, Clone, Args)]
pub struct TimelineArgs {
    /// Whose credential.
    #[command(flatten)]
    pub owner: OwnerFlags,
    /// Credential id or name.
    pub cred: String,
    /// Events fetched per page (1–10000; the server's default is 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: Option<u32>,
}

/// Filters on resolution rows, shared by `audit query` and `audit export`.
#[derive(Debug, Clone, Default, Args)]
pub struct AuditFilterFlags {
    /// Only calls that used or were refused this credential (id or name).
    #[arg(long, value_name = "CRED")]
    pub credential: Option<String>,
    /// Only the rows of this call id.
    #[arg(long, value_name = "CALL_ID")]
    pub call_id: Option<String>,
    /// Only allowed or only denied calls.
    #[arg(long, value_parser = PossibleValuesParser::new(["allowed", "denied"]))]
    pub outcome: Option<String>,
    /// Only rows at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub since: Option<String>,
    /// Only rows before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub until: Option<String>,
}

/// `byok audit export`
#[derive(Debug, Clone, Args)]
pub struct AuditExportArgs {
    /// Org id or name.
    #[arg(long)]
    pub org: String,
    /// Rows fetched per request with --credential, --call-id or --outcome (1000–10000).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u32).range(1000..=10_000)
    )]
    pub page_size: u32,
    /// Which rows.
    #[command(flatten, next_help_heading = "Filters")]
    pub filters: AuditFilterFlags,
}

/// `byok audit query`
#[derive(Debug, Clone, Args)]
pub struct AuditQueryArgs {
    /// Org id or name.
    #[arg(long)]
    pub org: String,
    /// At most this many rows (1–10000).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub limit: u32,
    /// Only rows after this sequence number (the previous page's last row).
    #[arg(long, value_name = "SEQ")]
    pub after_seq: Option<i64>,
    /// Which rows.
    #[command(flatten, next_help_heading = "Filters")]
    pub filters: AuditFilterFlags,
}

/// `byok kek …`
#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Rotate an org's KEK: a new version is current at once, and every DEK is rewrapped
    /// to it in the background (no credential secret is decrypted). Shows progress until
    /// the rewrap is done, unless --no-wait.
    #[command(after_help = "Example:\n  byok kek rotate --org acme")]
    Rotate {
        /// Org id or name.
        #[arg(long)]
        org: String,
        /// Return as soon as the new version is current.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show an org's KEK version, the KMS holding it, and rewrap progress.
    Status {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
    /// Move an org's KEK to another KMS (operator only): a customer-managed KMS
    /// ([kms.customer.<name>] in the server's configuration; katman-c orgs only) or back
    /// to `default`. The org's next KEK version is created there and is current at once;
    /// every DEK is rewrapped into it in the background, then the org's KEKs in the KMS it
    /// left are removed. Calls keep working throughout. Shows progress unless --no-wait.
    #[command(
        after_help = "Examples:\n  byok kek move --org acme --kms acme-hsm\n  byok kek move --org acme --kms default"
    )]
    Move {
        /// Org id or name.
        #[arg(long)]
        org: String,
        /// Target KMS: `default` or a customer-managed KMS's name.
        #[arg(long)]
        kms: String,
        /// Return as soon as the new KEK version is current.
        #[arg(long)]
        no_wait: bool,
    },
}

/// `byok kms …`
#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// List the configured KMSs with their health, and how many unwraps the data plane's
    /// DEK cache spared them (operator only).
    List,
    /// Move every org's KEKs from the local keyring of a data directory into the PKCS#11
    /// token configured as `[kms] backend = "pkcs11"`, rewrapping every DEK (no credential
    /// secret is decrypted). Runs offline: stop `byok serve` on this data directory first.
    /// Resumable: run it again after an interruption. Afterwards start `byok serve` with
    /// the same configuration.
    #[command(
        after_help = "Examples:\n  byok kms migrate --config byok.toml --dry-run\n  byok kms migrate --config byok.toml"
    )]
    Migrate {
        /// TOML configuration naming the target token ([kms] backend = "pkcs11" and [kms.pkcs11]),
        /// and the database if it is not SQLite in the data directory.
        #[arg(long, env = "BYOK_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Database URL (default: SQLite in the data directory).
        #[arg(long, env = "BYOK_DATABASE_URL", value_name = "URL")]
        database_url: Option<String>,
        /// Check everything (every wrapped key opens with the keyring, the token is reachable
        /// and can wrap) and print the plan, changing nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `byok org …`
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an org.
    #[command(after_help = "Example:\n  byok org create acme --tier katman-b")]
    Create {
        /// Name of the org (letters, digits, '.', '_', '-').
        name: String,
        /// Billing tier.
        #[arg(long, value_parser = PossibleValuesParser::new(TIERS))]
        tier: String,
    },
    /// List orgs.
    List,
    /// Show one org.
    Show {
        /// Org id or name.
        org: String,
    },
    /// Crypto-shred an org: destroy its KEKs so its credentials can never be opened
    /// again (its audit stays). Operator only; there is no undo.
    #[command(after_help = "Example:\n  byok org delete acme --yes")]
    Delete {
        /// Org id or name.
        org: String,
        /// Confirm: the org's keys are destroyed for good.
        #[arg(long)]
        yes: bool,
    },
    /// Change an org's billing tier (operator only), from its next call on.
    #[command(after_help = ORG_SET_TIER_AFTER_HELP)]
    SetTier {
        /// Org id or name.
        org: String,
        /// The new billing tier.
        #[arg(long, value_parser = PossibleValuesParser::new(TIERS))]
        tier: String,
    },
    /// katman-c controls: maximum credential age, data-plane source-address allow-list.
    #[command(
        subcommand,
        after_help = "Examples:\n  byok org controls show --org acme\n  \
                      byok org controls set --org acme --max-credential-age-days 90 --allow-source 10.20.0.0/16"
    )]
    Controls(ControlsCommand),
    /// Issue an org-admin token confined to one org (printed once).
    #[command(after_help = "\
The token is printed on standard output once and is not shown again; notes go to
standard error, so `byok org admin-token acme > acme.token` captures only the token.

Example:
  byok org admin-token acme --expires-at 2030-01-01T00:00:00Z")]
    AdminToken {
        /// Org id or name.
        org: String,
        /// When the token stops working (RFC 3339); default: never (for a token issued
        /// by an org admin: when the issuing token stops working, at the latest).
        #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
        expires_at: Option<String>,
    },
    /// List an org's admin tokens: ids, creation, expiry, revocation, last use (never their text).
    #[command(after_help = "Example:\n  byok org admin-tokens acme")]
    AdminTokens {
        /// Org id or name.
        org: String,
    },
    /// Revoke an org-admin token: it stops working at once, on every sidecar.
    #[command(after_help = "Example:\n  byok org revoke-admin-token acme adm_01J…")]
    RevokeAdminToken {
        /// Org id or name.
        org: String,
        /// Admin token id (adm_…).
        id: String,
    },
}

const ORG_SET_TIER_AFTER_HELP: &str = "\
Calls already made keep the tier and price they were made under (a change splits a
billing period). katman-a orgs fall back on the platform credential pool when none of
their own credentials admits a call; katman-b and katman-c never do. Moving to katman-c
is refused while a credential has no expiry or is org-wide (the error names them);
leaving katman-c drops the negotiated rate card, retention and controls.

Examples:
  byok org set-tier acme --tier katman-c
  byok org set-tier acme --tier katman-a";

/// `byok org controls …`
#[derive(Debug, Subcommand)]
pub enum ControlsCommand {
    /// Show an org's katman-c controls.
    #[command(after_help = "Example:\n  byok org controls show --org acme")]
    Show {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
    /// Set a katman-c org's controls, replacing them whole: a control not given is removed.
    #[command(after_help = CONTROLS_SET_AFTER_HELP)]
    Set(ControlsSetArgs),
    /// Remove every control of an org.
    #[command(after_help = "Example:\n  byok org controls clear --org acme")]
    Clear {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
}

const CONTROLS_SET_AFTER_HELP: &str = "\
`set` replaces the org's controls whole: a control not given on this command line is
removed (so repeat the ones to keep). Only katman-c orgs have controls (operator or org
admin).

  --max-credential-age-days N  a credential whose current version is older than N days
                               is refused with rotation_required until it is rotated
  --allow-source CIDR          data-plane calls are accepted only from these networks
                               (the TCP peer, or the forwarded-for address from a
                               trusted proxy); others are refused with source_forbidden

Examples:
  byok org controls set --org acme --max-credential-age-days 90
  byok org controls set --org acme --max-credential-age-days 90 \\
      --allow-source 10.20.0.0/16,127.0.0.1/32";

/// `byok org controls set`
#[derive(Debug, Clone, Args)]
pub struct ControlsSetArgs {
    /// Org id or name.
    #[arg(long)]
    pub org: String,
    /// Maximum age of a credential's current version, in days (1–36500).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub max_credential_age_days: Option<u32>,
    /// Accept data-plane calls only from these networks (repeat, or comma-separated).
    #[arg(long = "allow-source", value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    pub allow_sources: Vec<String>,
}

/// `byok billing …`
#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Usage and fees for a period: one org's statement (--org), or every org's totals
    /// (--all, operator only).
    #[command(after_help = BILLING_REPORT_AFTER_HELP)]
    Report(BillingReportArgs),
    /// An org's rate card: show it, negotiate one (katman-c, operator only), reset it.
    #[command(
        subcommand,
        after_help = "Examples:\n  byok billing rate-card show --org acme\n  \
                      byok billing rate-card reset --org acme"
    )]
    RateCard(RateCardCommand),
    /// An org's monthly budget: show it with this month's spend, set it, clear it.
    #[command(
        subcommand,
        after_help = "Examples:\n  byok billing budget show --org acme\n  \
                      byok billing budget set --org acme --monthly-limit 50.00 --team research=10.00"
    )]
    Budget(BudgetCommand),
}

const BILLING_AFTER_HELP: &str = "\
Amounts are exact decimal strings in the configured currency (never floating point).

Examples:
  byok billing report --org acme --period 2026-11
  byok billing report --all --csv > usage.csv
  byok billing budget set --org acme --monthly-limit 50.00
  byok billing rate-card set --org acme --per-call 0.0010 \\
      --per-million-input-tokens 0.15 --per-million-output-tokens 0.60";

const BILLING_REPORT_AFTER_HELP: &str = "\
The period is --period YYYY-MM (a UTC calendar month), or --from and --to (RFC 3339;
--from inclusive, --to exclusive); without either, the current UTC month.

--org prints the org's statement: one line per (tier, provider, model family, credential
owner, rate card) with its calls, tokens, platform fee and provider cost, then the totals.
Amounts are exact decimals rounded half-up to 6 places; the totals are the sums of the
lines. Denied and unanswered calls are never billed. --source audit recomputes the
statement from the raw audit rows instead of the usage rollup (slower; they agree).

--all (operator only) prints one line per org with usage in the period.

--json prints the admin API's answer; --csv prints RFC 4180 CSV (a header row, then one
row per line, CRLF line ends) for a spreadsheet.

Examples:
  byok billing report --org acme
  byok billing report --org acme --period 2026-11 --csv > acme-2026-11.csv
  byok billing report --org acme --from 2026-11-01T00:00:00Z --to 2026-11-15T00:00:00Z
  byok billing report --all --period 2026-11";

/// `byok billing report`
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("whose_usage").required(true).args(["org", "all"])))]
pub struct BillingReportArgs {
    /// One org's statement (id or name).
    #[arg(long)]
    pub org: Option<String>,
    /// Every org's usage, one line per org (operator only).
    #[arg(long)]
    pub all: bool,
    /// A UTC calendar month, e.g. 2026-11.
    #[arg(long, value_name = "YYYY-MM", value_parser = parse_period, conflicts_with_all = ["from", "to"])]
    pub period: Option<Period>,
    /// Start of the period (RFC 3339, inclusive).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339, requires = "to")]
    pub from: Option<String>,
    /// End of the period (RFC 3339, exclusive).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339, requires = "from")]
    pub to: Option<String>,
    /// Where the statement is computed from: the usage rollup (default) or the raw audit.
    #[arg(long, value_parser = PossibleValuesParser::new(["rollup", "audit"]), conflicts_with = "all")]
    pub source: Option<String>,
    /// Print RFC 4180 CSV instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

/// A calendar month as `--period` gives it: `[from, to)` in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// The first instant of the month (RFC 3339).
    pub from: String,
    /// The first instant of the next month (RFC 3339).
    pub to: String,
}

/// `byok billing rate-card …`
#[derive(Debug, Subcommand)]
pub enum RateCardCommand {
    /// Show the rate card an org is billed with (its negotiated card, else its tier's).
    #[command(after_help = "Example:\n  byok billing rate-card show --org acme")]
    Show {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
    /// Set a katman-c org's negotiated rate card (operator only). Calls already made keep
    /// the card they were priced with.
    #[command(after_help = RATE_CARD_SET_AFTER_HELP)]
    Set(RateCardSetArgs),
    /// Return an org to its tier's default rate card (operator only).
    #[command(after_help = "Example:\n  byok billing rate-card reset --org acme")]
    Reset {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
}

const RATE_CARD_SET_AFTER_HELP: &str = "\
All three rates are required. Each is a plain decimal in the configured currency's
units (digits, an optional '.' and fraction; no sign, exponent or thousands separator),
kept exact: byok never uses floating point for money. Only katman-c orgs have a
negotiated card; the others are billed with their tier's card.

Example:
  byok billing rate-card set --org acme --per-call 0.0010 \\
      --per-million-input-tokens 0.15 --per-million-output-tokens 0.60";

/// `byok billing rate-card set`
#[derive(Debug, Clone, Args)]
pub struct RateCardSetArgs {
    /// Org id or name.
    #[arg(long)]
    pub org: String,
    /// Platform fee per allowed call.
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount, allow_negative_numbers = true)]
    pub per_call: String,
    /// Platform fee per million input tokens.
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount, allow_negative_numbers = true)]
    pub per_million_input_tokens: String,
    /// Platform fee per million output tokens.
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount, allow_negative_numbers = true)]
    pub per_million_output_tokens: String,
}

/// `byok billing budget …`
#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Show an org's monthly limits and what it and its teams spent this UTC month.
    #[command(after_help = "Example:\n  byok billing budget show --org acme")]
    Show {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
    /// Set an org's monthly budget, replacing it whole: a limit not given is removed.
    #[command(after_help = BUDGET_SET_AFTER_HELP)]
    Set(BudgetSetArgs),
    /// Remove every limit of an org's budget.
    #[command(after_help = "Example:\n  byok billing budget clear --org acme")]
    Clear {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
}

const BUDGET_SET_AFTER_HELP: &str = "\
`set` replaces the whole budget: the org's limit and every team limit not given on this
command line are removed (so repeat the ones to keep). Limits are per UTC calendar month,
in the configured currency, as plain decimals. A call that would start once the org's or
its team's spend this month has reached its limit is refused with budget_exceeded (HTTP
429) and nothing is sent upstream. Operator or org admin.

Examples:
  byok billing budget set --org acme --monthly-limit 50.00
  byok billing budget set --org acme --monthly-limit 50.00 --team research=10.00 --team agents=25";

/// `byok billing budget set`
#[derive(Debug, Clone, Args)]
pub struct BudgetSetArgs {
    /// Org id or name.
    #[arg(long)]
    pub org: String,
    /// The org's limit per UTC calendar month.
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount, allow_negative_numbers = true)]
    pub monthly_limit: Option<String>,
    /// A team's limit per UTC calendar month, as TEAM=AMOUNT (team id or name; repeat for
    /// more teams).
    #[arg(long = "team", value_name = "TEAM=AMOUNT", value_parser = parse_team_limit)]
    pub teams: Vec<(String, String)>,
}

/// `byok team …`
#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// Create a team.
    #[command(after_help = "Example:\n  byok team create --org acme agents")]
    Create {
        /// Org id or name.
        #[arg(long)]
        org: String,
        /// Name of the team.
        name: String,
    },
    /// List an org's teams.
    List {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
}

/// `byok workflow …`
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Create a workflow, optionally owned by a team.
    #[command(after_help = "Example:\n  byok workflow create --org acme --team agents nightly-summary")]
    Create {
        /// Org id or name.
        #[arg(long)]
        org: String,
        /// Name of the workflow.
        name: String,
        /// Owning team (id or name).
        #[arg(long)]
        team: Option<String>,
    },
    /// List an org's workflows.
    List {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
}

/// `byok credential …`
#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Add a provider credential; the secret is read from stdin, a file or an env var.
    #[command(after_help = CREDENTIAL_ADD_AFTER_HELP)]
    Add(CredentialAddArgs),
    /// List an org's credentials, or the platform pool's.
    #[command(after_help = "Examples:\n  byok credential list --org acme\n  byok credential list --platform")]
    List {
        /// Whose credentials.
        #[command(flatten)]
        owner: OwnerFlags,
    },
    /// Show one credential with its versions.
    #[command(
        after_help = "Examples:\n  byok credential show --org acme openai-prod\n  byok credential show --platform openai-pool"
    )]
    Show(CredentialRef),
    /// Change a credential's scope, expiry, priority, weight or provider-account paces.
    #[command(after_help = CREDENTIAL_UPDATE_AFTER_HELP)]
    Update(CredentialUpdateArgs),
    /// Store a new secret version for a credential.
    #[command(after_help = "\
The new secret is read like for `credential add`: --secret-file FILE (- for stdin),
--secret-env VAR, else standard input when it is not a terminal, else a hidden prompt.

Examples:
  byok credential rotate --org acme openai-prod --secret-file new-key.txt
  byok credential rotate --platform openai-pool --secret-env NEW_OPENAI_KEY")]
    Rotate(CredentialRotateArgs),
    /// Verify a credential's key with the provider's cheapest authenticated read; exits 1
    /// unless the provider accepted it.
    #[command(after_help = CREDENTIAL_VERIFY_AFTER_HELP)]
    Verify(CredentialRef),
    /// Disable a credential (it stops serving calls; `enable` undoes it).
    #[command(
        after_help = "Examples:\n  byok credential disable --org acme openai-prod\n  byok credential disable --platform openai-pool"
    )]
    Disable(CredentialRef),
    /// Enable a disabled credential.
    #[command(
        after_help = "Examples:\n  byok credential enable --org acme openai-prod\n  byok credential enable --platform openai-pool"
    )]
    Enable(CredentialRef),
    /// Revoke a credential for good.
    #[command(
        after_help = "Examples:\n  byok credential revoke --org acme openai-prod --yes\n  byok credential revoke --platform openai-pool --yes"
    )]
    Revoke(RevokeArgs),
    /// Show a credential's lifecycle: every event and every call in order (the same as
    /// `byok audit replay`). A platform credential's calls come from every org it served.
    #[command(
        after_help = "Examples:\n  byok credential lifecycle --org acme openai-prod\n  byok credential lifecycle --platform openai-pool --json"
    )]
    Lifecycle(TimelineArgs),
}

/// Whose credentials a command is about: one org's (`--org`) or the platform pool's
/// (`--platform`); exactly one of them.
#[derive(Debug, Clone, Default, Args)]
#[group(required = true, multiple = false)]
pub struct OwnerFlags {
    /// Org id or name.
    #[arg(long)]
    pub org: Option<String>,
    /// The operator's platform credential pool instead of an org's (operator only).
    #[arg(long)]
    pub platform: bool,
}

const CREDENTIAL_ADD_AFTER_HELP: &str = "\
The secret (the provider key) is never a flag value, which would land in shell history.
It is read from --secret-file FILE (- for stdin), or --secret-env VAR, else from standard
input when it is not a terminal, else from a prompt that does not echo.

Scope lists are allow-lists; an empty list means \"any\". List flags repeat or take
comma-separated values.

Credentials of equal rank (as specific, same priority) that admit a call form a pool: they
share its calls in proportion to --weight, and a throttled or failing one is skipped.
--rpm/--tpm give the provider account's own limits, to which byok paces the key. --verify
tries the key with the provider first and stores nothing if the provider rejects it.

With --platform the credential joins the operator's platform pool (operator only). Platform
credentials serve katman-a orgs that have no credential of their own admitting a call
(never katman-b or katman-c); their provider cost is billed to the org. --team and
--workflow do not apply to them: restrict them by --model-family, --capability or --mode.

Examples:
  byok credential add --org acme --name openai-prod --provider openai < key.txt
  byok credential add --platform --name openai-pool --provider openai --secret-file key.txt
  pass show openai | byok credential add --org acme --name openai-agents \\
      --provider openai --team agents --capability chat,embeddings
  byok credential add --org acme --name azure --provider azure-openai \\
      --base-url https://acme.openai.azure.com --secret-env AZURE_OPENAI_KEY
  byok credential add --org acme --name openai-2 --provider openai --weight 3 \\
      --rpm 500 --tpm 200000 --verify --secret-file key2.txt";

const CREDENTIAL_VERIFY_AFTER_HELP: &str = "\
The sidecar makes the provider's cheapest authenticated read with the credential's current
key (GET /v1/models; Gemini: /v1beta/models; Bedrock keys cannot be verified: its runtime
has no free authenticated read, so the first call shows whether the key works). It is
audited like a call and recorded in the credential's lifecycle as `verified`. The answer:

  ok            the provider accepted the key (a failing credential is healthy again)
  invalid_key   the provider rejected it (401/403): the credential is now failing, and
                calls skip it until it is rotated, enabled again or verified successfully
  rate_limited  the provider is throttling (429/529); the key itself may be fine
  unreachable   no answer that says anything about the key (a timeout, a 5xx)

Exit codes: 0 the provider accepted the key, 1 it did not (or the request was refused),
3 admin API unreachable.

Examples:
  byok credential verify --org acme openai-prod
  byok credential verify --platform openai-pool --json";

const CREDENTIAL_UPDATE_AFTER_HELP: &str = "\
Each scope dimension given replaces that dimension's list; the others keep their current
values. --clear-scope resets every list to \"any\" (or only the named ones:
--clear-scope=teams,modes) before the given dimensions are applied. --no-rpm and --no-tpm
remove a provider-account pace.

Examples:
  byok credential update --org acme openai-prod --team agents --team research
  byok credential update --org acme openai-prod --clear-scope=teams
  byok credential update --org acme openai-prod --no-expiry --priority 10
  byok credential update --org acme openai-prod --weight 3 --rpm 500 --no-tpm
  byok credential update --platform openai-pool --model-family gpt-4o,gpt-4o-mini";

/// A credential named within an org or the platform pool.
#[derive(Debug, Clone, Args)]
pub struct CredentialRef {
    /// Whose credential.
    #[command(flatten)]
    pub owner: OwnerFlags,
    /// Credential id or name.
    pub cred: String,
}

/// `byok credential revoke`: a credential, and the confirmation (revocation is for good).
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The credential.
    #[command(flatten)]
    pub target: CredentialRef,
    /// Confirm: a revoked credential can never be used or enabled again.
    #[arg(long)]
    pub yes: bool,
}

/// Scope allow-lists as flags, shared by `credential add` and `credential update`.
#[derive(Debug, Clone, Default, Args)]
pub struct ScopeFlags {
    /// Allow only these model families (e.g. gpt-4o, claude-sonnet).
    #[arg(long = "model-family", value_name = "FAMILY", value_delimiter = ',')]
    pub model_families: Vec<String>,
    /// Allow only these capabilities.
    #[arg(
        long = "capability",
        value_name = "CAPABILITY",
        value_delimiter = ',',
        value_parser = PossibleValuesParser::new(Capability::ALL.map(|c| c.as_str()))
    )]
    pub capabilities: Vec<String>,
    /// Allow only these modes.
    #[arg(
        long = "mode",
        value_name = "MODE",
        value_delimiter = ',',
        value_parser = PossibleValuesParser::new(Mode::ALL.map(|m| m.as_str()))
    )]
    pub modes: Vec<String>,
    /// Allow only these teams (id or name).
    #[arg(long = "team", value_name = "TEAM", value_delimiter = ',')]
    pub teams: Vec<String>,
    /// Allow only these workflows (id or name).
    #[arg(long = "workflow", value_name = "WORKFLOW", value_delimiter = ',')]
    pub workflows: Vec<String>,
}

/// Where a secret comes from. Deliberately has no variant for a flag value.
#[derive(Debug, Clone, Default, Args)]
pub struct SecretFlags {
    /// Read the secret from FILE ('-' for standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "secret_env")]
    pub secret_file: Option<PathBuf>,
    /// Read the secret from the environment variable VAR.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
}

/// `byok credential add`
#[derive(Debug, Clone, Args)]
pub struct CredentialAddArgs {
    /// Whose credential.
    #[command(flatten)]
    pub owner: OwnerFlags,
    /// Name of the credential.
    #[arg(long)]
    pub name: String,
    /// Provider this key is for.
    #[arg(long, value_parser = PossibleValuesParser::new(ProviderId::ALL.map(|p| p.as_str())))]
    pub provider: String,
    /// Upstream base URL (required for azure-openai, e.g. https://NAME.openai.azure.com).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// When the credential stops serving calls (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub expires_at: Option<String>,
    /// Tie-breaker among equally specific credentials; higher wins.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Verify the key with the provider before storing it: a key the provider rejects is
    /// not stored.
    #[arg(long)]
    pub verify: bool,
    /// Pool weight and provider-account paces.
    #[command(flatten, next_help_heading = "Pool and pacing")]
    pub pacing: PacingFlags,
    /// Scope allow-lists.
    #[command(flatten, next_help_heading = "Scope (each list empty = any)")]
    pub scope: ScopeFlags,
    /// Where to read the secret.
    #[command(flatten, next_help_heading = "Secret input (never a flag value)")]
    pub secret: SecretFlags,
}

/// A credential's pool weight and provider-account paces, shared by `credential add` and
/// `credential update`.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct PacingFlags {
    /// Its share of the calls among the credentials of equal rank that admit a call
    /// (1–1000; default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000), allow_negative_numbers = true)]
    pub weight: Option<u16>,
    /// The provider account's calls per minute: byok paces the key to it.
    #[arg(long, value_name = "N", value_parser = parse_rate, allow_negative_numbers = true)]
    pub rpm: Option<u64>,
    /// The provider account's tokens (input + output) per minute.
    #[arg(long, value_name = "N", value_parser = parse_rate, allow_negative_numbers = true)]
    pub tpm: Option<u64>,
}

/// A scope dimension, as named by `--clear-scope=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeDimension {
    /// Model families.
    ModelFamilies,
    /// Capabilities.
    Capabilities,
    /// Modes.
    Modes,
    /// Teams.
    Teams,
    /// Workflows.
    Workflows,
}

/// `byok credential update`
#[derive(Debug, Clone, Args)]
pub struct CredentialUpdateArgs {
    /// Whose credential.
    #[command(flatten)]
    pub owner: OwnerFlags,
    /// Credential id or name.
    pub cred: String,
    /// New expiry (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339, conflicts_with = "no_expiry")]
    pub expires_at: Option<String>,
    /// Remove the expiry.
    #[arg(long)]
    pub no_expiry: bool,
    /// New priority.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// New weight and paces.
    #[command(flatten, next_help_heading = "Pool and pacing")]
    pub pacing: PacingFlags,
    /// Remove the provider account's calls-per-minute pace.
    #[arg(long, conflicts_with = "rpm", help_heading = "Pool and pacing")]
    pub no_rpm: bool,
    /// Remove the provider account's tokens-per-minute pace.
    #[arg(long, conflicts_with = "tpm", help_heading = "Pool and pacing")]
    pub no_tpm: bool,
    /// New lists for the given scope dimensions.
    #[command(flatten, next_help_heading = "Scope (each given list replaces the current one)")]
    pub scope: ScopeFlags,
    /// Reset scope lists to "any": all of them, or only those named
    /// (`--clear-scope=teams,workflows`).
    #[arg(
        long,
        value_name = "DIMENSIONS",
        num_args = 0..,
        require_equals = true,
        value_delimiter = ','
    )]
    pub clear_scope: Option<Vec<ScopeDimension>>,
}

/// `byok credential rotate`
#[derive(Debug, Clone, Args)]
pub struct CredentialRotateArgs {
    /// Whose credential.
    #[command(flatten)]
    pub owner: OwnerFlags,
    /// Credential id or name.
    pub cred: String,
    /// Where to read the new secret.
    #[command(flatten, next_help_heading = "Secret input (never a flag value)")]
    pub secret: SecretFlags,
}

/// `byok token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a workload token for a team (printed once).
    #[command(after_help = "\
The token is printed on standard output once and is not shown again (byok keeps only a
hash); notes go to standard error, so this works:
  export BYOK_TOKEN=$(byok token create --org acme --team agents)

Examples:
  byok token create --org acme --team agents
  byok token create --org acme --team agents --name summarizer --description 'nightly summary job'
  byok token create --org acme --team agents --workflow nightly-summary \\
      --expires-at 2030-01-01T00:00:00Z
  byok token create --org acme --team agents \\
      --expires-at \"$(date -u -d '+90 days' +%Y-%m-%dT%H:%M:%SZ)\"   # GNU date: 90 days from now")]
    Create {
        /// Org id or name.
        #[arg(long)]
        org: String,
        /// Team the token belongs to (id or name).
        #[arg(long)]
        team: String,
        /// Restrict the token to these workflows (id or name).
        #[arg(long = "workflow", value_name = "WORKFLOW", value_delimiter = ',')]
        workflows: Vec<String>,
        /// When the token stops working (RFC 3339); default: never.
        #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
        expires_at: Option<String>,
        /// A name for the token, unique in the org (shown in lists; revoke by it).
        #[arg(long)]
        name: Option<String>,
        /// What the token is for (at most 500 characters).
        #[arg(long)]
        description: Option<String>,
    },
    /// List an org's workload tokens (never their text).
    List {
        /// Org id or name.
        #[arg(long)]
        org: String,
    },
    /// Revoke a workload token.
    #[command(
        after_help = "Examples:\n  byok token revoke --org acme tok_01J…\n  byok token revoke --org acme summarizer"
    )]
    Revoke {
        /// Org id or name.
        #[arg(long)]
        org: String,
        /// Token id (tok_…) or name.
        id: String,
    },
}

/// Accept a plain non-negative decimal amount (`0.0010`, `50`), keeping the text as typed.
fn parse_amount(text: &str) -> Result<String, String> {
    Money::parse(text).map(|_| text.to_owned()).map_err(|e| e.to_string())
}

/// Accept `TEAM=AMOUNT` for `--team` of `billing budget set`.
fn parse_team_limit(text: &str) -> Result<(String, String), String> {
    let (team, amount) =
        text.split_once('=').ok_or_else(|| format!("'{text}' is not TEAM=AMOUNT; example: research=10.00"))?;
    if team.trim().is_empty() {
        return Err(format!("'{text}' names no team; example: research=10.00"));
    }
    Ok((team.to_owned(), parse_amount(amount)?))
}

/// Accept a rate (`--rpm`, `--tpm`, …): a whole number from 1 to 10⁹, as the admin API does.
fn parse_rate(text: &str) -> Result<u64, String> {
    let max = byok_domain::limits::MAX_RATE;
    match text.parse::<u64>() {
        Ok(value) if (1..=max).contains(&value) => Ok(value),
        _ => Err(format!("'{text}' is not a whole number from 1 to {max}")),
    }
}

/// Accept `SUBJECT=rpm:N,tpm:N` (either count, or both, once each).
fn parse_subject_rates(text: &str, subject: &str, example: &str) -> Result<(String, RateFlags), String> {
    let usage = format!("give {subject}=rpm:N,tpm:N (either or both); example: {example}");
    let (who, limits) = text.split_once('=').ok_or_else(|| format!("'{text}' is not {subject}=LIMITS; {usage}"))?;
    if who.trim().is_empty() {
        return Err(format!("'{text}' names no {}; {usage}", subject.to_lowercase().replace('_', " ")));
    }
    let mut rates = RateFlags::default();
    for part in limits.split(',') {
        let (count, value) =
            part.split_once(':').ok_or_else(|| format!("'{part}' in '{text}' is not rpm:N or tpm:N; {usage}"))?;
        let slot = match count.trim() {
            "rpm" => &mut rates.rpm,
            "tpm" => &mut rates.tpm,
            other => return Err(format!("'{other}' in '{text}' is neither rpm nor tpm; {usage}")),
        };
        if slot.is_some() {
            return Err(format!("{} is given twice in '{text}'", count.trim()));
        }
        *slot = Some(parse_rate(value.trim()).map_err(|e| format!("{}: {e}", count.trim()))?);
    }
    Ok((who.to_owned(), rates))
}

fn parse_team_rates(text: &str) -> Result<(String, RateFlags), String> {
    parse_subject_rates(text, "TEAM", "research=rpm:60,tpm:50000")
}

fn parse_token_rates(text: &str) -> Result<(String, RateFlags), String> {
    parse_subject_rates(text, "TOKEN_ID", "tok_01JD7X3M5Q8V6N2K4T9R1B0C7E=rpm:10")
}

/// Accept a CIDR network (`10.20.0.0/16`, `fd00::/8`), as the admin API does.
fn parse_cidr(text: &str) -> Result<String, String> {
    Cidr::parse(text).map(|net| net.to_string())
}

/// Accept `YYYY-MM` as the UTC calendar month `[first day, first day of the next month)`.
fn parse_period(text: &str) -> Result<Period, String> {
    let bad = || format!("'{text}' is not a month; give YYYY-MM, e.g. 2026-11");
    let (year, month) = text.split_once('-').ok_or_else(bad)?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(year, 4) || !digits(month, 2) {
        return Err(bad());
    }
    let year: i32 = year.parse().map_err(|_| bad())?;
    let month: u32 = month.parse().map_err(|_| bad())?;
    let first = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
    let next = first.checked_add_months(chrono::Months::new(1)).filter(|next| next.year() <= 9999).ok_or_else(bad)?;
    let stamp = |day: NaiveDate| format!("{:04}-{:02}-01T00:00:00Z", day.year(), day.month());
    Ok(Period { from: stamp(first), to: stamp(next) })
}

/// Accept an RFC 3339 timestamp, keeping the text as typed.
fn parse_rfc3339(text: &str) -> Result<String, String> {
    Timestamp::parse_rfc3339(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("'{text}' is not an RFC 3339 timestamp ({e}); example: 2030-01-01T00:00:00Z"))
}
