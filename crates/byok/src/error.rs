//! The CLI's one error type, and the exit code each kind of failure maps to.
//!
//! No variant ever carries a secret: messages name files, variables and ids, never
//! the bytes read from them.

use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for a refusal by the admin API or a local failure (unreadable file, no token).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage error (clap uses the same for bad flags).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the admin API cannot be reached at all.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Everything that can make a CLI command fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is valid for clap but asks for something impossible
    /// (e.g. `credential update` with nothing to change, an empty secret).
    #[error("{0}")]
    Usage(String),

    /// The admin API answered with an error status.
    #[error("{message} (code: {code}, HTTP {status})")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The API's machine-readable error code (`not_found`, `invalid_request`, …).
        code: String,
        /// The API's human-readable message.
        message: String,
    },

    /// The admin API could not be reached (connection refused, timeout, DNS, reset).
    #[error("cannot reach the byok admin API at {url}: {reason}")]
    Unreachable {
        /// The admin URL that was tried.
        url: String,
        /// Why, from the transport's error chain.
        reason: String,
    },

    /// No admin token could be found in any of the places the CLI looks.
    #[error(
        "no admin token found. Do one of:\n  \
         - export BYOK_ADMIN_TOKEN=<token>\n  \
         - pass --token-file FILE (or set BYOK_ADMIN_TOKEN_FILE)\n  \
         - on the sidecar's own host, point --data-dir (or BYOK_DATA_DIR) at its data directory \
         (looked for {looked_for})\n\
         The operator token is written to <data-dir>/operator.token when `byok serve` first starts; \
         an org-admin token comes from `byok org admin-token <org>`."
    )]
    NoAdminToken {
        /// The `operator.token` path that was tried.
        looked_for: String,
    },

    /// A file named on the command line could not be read.
    #[error("cannot read {what} from {}: {source}", path.display())]
    ReadFile {
        /// What the file was supposed to hold ("the secret", "the admin token").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// Something local went wrong that the user may be able to fix (bad admin URL,
    /// unreadable terminal, a response that is not JSON).
    #[error("{0}")]
    Local(String),

    /// `byok audit verify` ran, and the audit did not verify: a broken link, a checkpoint
    /// head that is gone, or a signature that does not match. The report itself has
    /// already been printed; this sets the exit code so scripts can gate on it.
    #[error("the audit of {whose} did not verify: {why}")]
    AuditNotVerified {
        /// Whose audit: `org acme` (as named on the command line), `the platform pool`.
        whose: String,
        /// What failed, in a few words.
        why: String,
    },

    /// `byok credential verify` ran, and the provider did not accept the key (or gave no
    /// answer that says anything about it). The answer has already been printed; this
    /// sets the exit code so scripts can gate on it.
    #[error("credential {cred} is not verified: {reason} ({})", status.as_deref().map_or_else(|| "the provider did not answer".to_owned(), |s| format!("HTTP {s} from the provider")))]
    KeyNotAccepted {
        /// The credential, as named on the command line.
        cred: String,
        /// The admin API's `reason`: `invalid_key`, `rate_limited`, `unreachable`.
        reason: String,
        /// The provider's status, when it answered.
        status: Option<String>,
    },

    /// `byok serve` failed.
    #[error("{0:#}")]
    Serve(anyhow::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            CliError::Api { .. }
            | CliError::NoAdminToken { .. }
            | CliError::ReadFile { .. }
            | CliError::Local(_)
            | CliError::AuditNotVerified { .. }
            | CliError::KeyNotAccepted { .. }
            | CliError::Serve(_) => EXIT_FAILURE,
        })
    }

    /// A line of advice printed after the error, when there is something to do.
    pub fn hint(&self, admin_url: &str) -> Option<String> {
        match self {
            CliError::Unreachable { .. } => Some(format!(
                "is `byok serve` running? (admin URL {admin_url}; set it with --admin-url or BYOK_ADMIN_URL)"
            )),
            CliError::Api { status: 401, .. } => Some(
                "the admin token was not accepted: check BYOK_ADMIN_TOKEN, --token-file or <data-dir>/operator.token \
                 (the first of these that is set is used)"
                    .to_owned(),
            ),
            CliError::Api { status: 403, code, message }
                if code == "forbidden" && message.starts_with("only the operator token") =>
            {
                Some(
                    "this needs the operator token (<data-dir>/operator.token on the sidecar's host); an org-admin \
                     token cannot do it"
                        .to_owned(),
                )
            }
            CliError::KeyNotAccepted { reason, .. } if reason == "invalid_key" => Some(
                "the provider rejected the key: calls skip this credential until it is rotated \
                 (`byok credential rotate`), enabled again or verified successfully"
                    .to_owned(),
            ),
            CliError::KeyNotAccepted { reason, .. } if reason == "rate_limited" || reason == "unreachable" => {
                Some("this says nothing against the key itself; try `byok credential verify` again later".to_owned())
            }
            CliError::Api { status: 403, code, .. } if code == "forbidden" => Some(
                "this admin token may not act on that org: an org-admin token is confined to its own org".to_owned(),
            ),
            _ => None,
        }
    }
}
