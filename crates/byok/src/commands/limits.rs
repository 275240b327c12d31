//! `byok limits …`: an org's rate limits.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use super::{org_path, Planned};
use crate::api::{self, ApiRequest, Body};
use crate::cli::{LimitsCommand, LimitsSetArgs, RateFlags};
use crate::error::CliError;
use crate::output::View;

/// The largest limits file accepted (a limit per token of a large org is still far less).
const MAX_LIMITS_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The request for a limits command. `limits set --file` reads its file here.
pub fn plan(command: &LimitsCommand) -> Result<Planned, CliError> {
    check(command)?;
    Ok(match command {
        LimitsCommand::Show { org } => {
            Planned { request: ApiRequest::get(&org_path(org, &["limits"])), view: View::Limits }
        }
        LimitsCommand::Set(args) => {
            let body = match &args.file {
                Some(path) => Body::LimitsDocument(read_limits_file(path)?),
                None => Body::Limits(limits_from_flags(args)?),
            };
            Planned {
                request: ApiRequest::new(Method::PUT, &org_path(&args.org, &["limits"]), Some(body)),
                view: View::Limits,
            }
        }
        LimitsCommand::Clear { org } => {
            Planned { request: ApiRequest::new(Method::DELETE, &org_path(org, &["limits"]), None), view: View::Limits }
        }
    })
}

/// Refuse a command line that cannot apply, without reading any file.
pub fn check(command: &LimitsCommand) -> Result<(), CliError> {
    if let LimitsCommand::Set(args) = command {
        if args.file.is_none() {
            limits_from_flags(args)?;
        }
    }
    Ok(())
}

/// The whole limits document from `--org-rpm`, `--org-tpm`, `--team` and `--token`.
fn limits_from_flags(args: &LimitsSetArgs) -> Result<api::Limits, CliError> {
    if args.org_rpm.is_none() && args.org_tpm.is_none() && args.teams.is_empty() && args.tokens.is_empty() {
        return Err(CliError::Usage(format!(
            "nothing to set: give --org-rpm/--org-tpm N, --team TEAM=rpm:N,tpm:N, --token TOKEN_ID=rpm:N,tpm:N or \
             --file FILE (to remove every limit: byok limits clear --org {})",
            args.org
        )));
    }
    let subjects = |given: &[(String, RateFlags)], flag: &str| {
        let mut out = BTreeMap::new();
        for (who, RateFlags { rpm, tpm }) in given {
            if out.insert(who.clone(), api::RateLimit { rpm: *rpm, tpm: *tpm }).is_some() {
                return Err(CliError::Usage(format!("{flag} {who}=… is given more than once; give each once")));
            }
        }
        Ok(out)
    };
    Ok(api::Limits {
        org: api::RateLimit { rpm: args.org_rpm, tpm: args.org_tpm },
        teams: subjects(&args.teams, "--team")?,
        tokens: subjects(&args.tokens, "--token")?,
    })
}

/// Read a limits document (or standard input for `-`): a JSON object, passed on as it is.
fn read_limits_file(path: &Path) -> Result<Value, CliError> {
    let read_error = |source| CliError::ReadFile { what: "the limits", path: path.to_owned(), source };
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().take(MAX_LIMITS_FILE_BYTES + 1).read_to_string(&mut text).map_err(read_error)?;
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_LIMITS_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(read_error)?;
    }
    if text.len() as u64 > MAX_LIMITS_FILE_BYTES {
        return Err(CliError::Usage(format!(
            "{} is larger than {} MiB; that is not a limits document",
            path.display(),
            MAX_LIMITS_FILE_BYTES / (1024 * 1024)
        )));
    }
    let not_limits = |why: String| {
        CliError::Usage(format!(
            "{} is not a limits document ({why}); expected JSON like \
             {{\"org\": {{\"rpm\": 600}}, \"teams\": {{\"research\": {{\"tpm\": 50000}}}}}}",
            path.display()
        ))
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| not_limits(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(not_limits("not a JSON object".to_owned()));
    }
    Ok(value)
}
