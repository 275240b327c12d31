//! The admin-API client commands: each parsed command becomes one [`Planned`] request
//! and a [`View`] of its answer.
//!
//! Planning is pure (given a secret reader), so the mapping from argv to request is
//! tested as a table without a server.

mod audit;
mod billing;
mod credential;
mod kek;
mod limits;
mod org;
mod team;
mod token;
mod workflow;

use crate::api::ApiRequest;
use crate::cli::{AdminCommand, CredentialCommand, GlobalArgs, KekCommand, KmsCommand, OwnerFlags};
use crate::client::{resolve_admin_token, AdminClient};
use crate::error::CliError;
use crate::output::{emit, render, render_for, render_json, View};
use crate::secret_input::SecretReader;

/// A request to send and how to show its answer.
#[derive(Debug)]
pub struct Planned {
    /// The admin-API call.
    pub request: ApiRequest,
    /// How to present the answer.
    pub view: View,
}

/// Turn a parsed command into its request. `credential update` needs the current
/// credential first and is planned by [`run`] instead.
pub fn plan(command: &AdminCommand, secrets: &mut SecretReader<'_>) -> Result<Planned, CliError> {
    match command {
        AdminCommand::Org(cmd) => org::plan(cmd),
        AdminCommand::Team(cmd) => Ok(team::plan(cmd)),
        AdminCommand::Workflow(cmd) => Ok(workflow::plan(cmd)),
        AdminCommand::Credential(cmd) => credential::plan(cmd, secrets),
        AdminCommand::Token(cmd) => Ok(token::plan(cmd)),
        AdminCommand::Kek(cmd) => Ok(kek::plan(cmd)),
        AdminCommand::Kms(KmsCommand::List) => Ok(kek::plan_kms_list()),
        AdminCommand::Kms(KmsCommand::Migrate { .. }) => {
            Err(CliError::Usage("`byok kms migrate` works on the data directory, not through the admin API".into()))
        }
        AdminCommand::Audit(cmd) => audit::plan(cmd),
        AdminCommand::Billing(cmd) => billing::plan(cmd),
        AdminCommand::Limits(cmd) => limits::plan(cmd),
    }
}

/// Run one admin-API command: find the admin token, plan, send, print.
pub async fn run(global: &GlobalArgs, command: &AdminCommand) -> Result<(), CliError> {
    // Refuse an impossible command line before asking for a token or a secret.
    match command {
        AdminCommand::Credential(CredentialCommand::Update(args)) => credential::check_update(args)?,
        AdminCommand::Credential(CredentialCommand::Add(args)) => credential::check_add(args)?,
        // Planned without a secret, so every local refusal comes out of planning.
        AdminCommand::Org(cmd) => {
            org::plan(cmd)?;
        }
        AdminCommand::Billing(cmd) => {
            billing::plan(cmd)?;
        }
        // Not planned here: `limits set --file -` reads standard input once, when planned.
        AdminCommand::Limits(cmd) => limits::check(cmd)?,
        _ => {}
    }
    if let AdminCommand::Audit(cmd) = command {
        audit::check(cmd)?;
        // Offline: no token, no server.
        if let crate::cli::AuditCommand::Verify { export: Some(path), .. } = cmd {
            return audit::verify_export(path, global.json);
        }
    }
    if let AdminCommand::Kms(KmsCommand::Migrate { config, database_url, dry_run }) = command {
        let args = byok_server::MigrateArgs {
            config: config.clone(),
            database_url: database_url.clone(),
            dry_run: *dry_run,
            progress: !global.json,
        };
        let report = byok_server::migrate_kms(global.data_dir.clone(), args).await.map_err(CliError::Serve)?;
        let rendered = if global.json {
            render_json(&serde_json::to_value(&report).unwrap_or_default())
        } else {
            render(View::KmsMigration, &serde_json::to_value(&report).unwrap_or_default())
        };
        return emit(&rendered);
    }
    let (token, origin) =
        resolve_admin_token(admin_token_from_env()?, global.token_file.as_deref(), global.data_dir.as_deref())?;
    let client = AdminClient::new(&global.admin_url, token)?;
    let explain_401 = |error: CliError| match error {
        CliError::Api { status: 401, code, message } => {
            CliError::Api { status: 401, code, message: format!("{message} (the admin token came from {origin})") }
        }
        other => other,
    };
    // Commands that page, stream or set their own exit code.
    match command {
        AdminCommand::Audit(cmd) => return audit::run(&client, cmd, global.json).await.map_err(explain_401),
        AdminCommand::Credential(CredentialCommand::Lifecycle(args)) => {
            return audit::replay(&client, args, global.json).await.map_err(explain_401)
        }
        _ => {}
    }
    let planned = match command {
        AdminCommand::Credential(CredentialCommand::Update(args)) => {
            credential::plan_update_from_server(&client, args).await.map_err(explain_401)?
        }
        other => plan(other, &mut SecretReader::from_process())?,
    };
    let answer = client.send(&planned.request).await.map_err(explain_401)?;
    let answer = match command {
        AdminCommand::Kek(
            KekCommand::Rotate { org, no_wait: false } | KekCommand::Move { org, no_wait: false, .. },
        ) => kek::wait_for_rewrap(&client, org, answer, global.json).await?,
        _ => answer,
    };
    // A verification names its credential, and sets the exit code from the answer.
    let verified = match command {
        AdminCommand::Credential(CredentialCommand::Verify(target)) => Some(target.cred.as_str()),
        _ => None,
    };
    let rendered = if global.json { render_json(&answer) } else { render_for(planned.view, verified, &answer) };
    emit(&rendered)?;
    match verified {
        Some(cred) => credential::verdict(cred, &answer),
        None => Ok(()),
    }
}

/// `BYOK_ADMIN_TOKEN`, if set.
fn admin_token_from_env() -> Result<Option<String>, CliError> {
    match std::env::var("BYOK_ADMIN_TOKEN") {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(CliError::Usage("BYOK_ADMIN_TOKEN does not hold valid UTF-8; an admin token is plain text".to_owned()))
        }
    }
}

/// Path `v1/orgs/{org}/{rest…}`.
fn org_path<'a>(org: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["v1", "orgs", org];
    path.extend_from_slice(rest);
    path
}

/// Path `v1/orgs/{org}/{rest…}` for `--org ORG`, `v1/platform/{rest…}` for `--platform`.
fn owner_path<'a>(owner: &'a OwnerFlags, rest: &[&'a str]) -> Result<Vec<&'a str>, CliError> {
    match (owner.org.as_deref(), owner.platform) {
        (Some(org), false) => Ok(org_path(org, rest)),
        (None, true) => {
            let mut path = vec!["v1", "platform"];
            path.extend_from_slice(rest);
            Ok(path)
        }
        _ => Err(CliError::Usage("give either --org ORG or --platform (the operator's credential pool)".to_owned())),
    }
}

#[cfg(test)]
mod tests;
