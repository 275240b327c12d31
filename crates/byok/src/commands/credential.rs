//! `byok credential …`

use reqwest::Method;
use serde_json::Value;

use super::{owner_path, Planned};
use crate::api::{
    ApiRequest, Body, Confirm, CreateCredential, ExpiryOnly, RotateCredential, ScopeLists, UpdateCredential,
};
use crate::cli::{
    CredentialAddArgs, CredentialCommand, CredentialRef, CredentialUpdateArgs, OwnerFlags, PacingFlags, RevokeArgs,
    ScopeDimension, ScopeFlags,
};
use crate::client::AdminClient;
use crate::error::CliError;
use crate::output::{CredentialAction, View};
use crate::secret_input::SecretReader;

/// The request for a credential command other than `update`.
pub fn plan(command: &CredentialCommand, secrets: &mut SecretReader<'_>) -> Result<Planned, CliError> {
    Ok(match command {
        CredentialCommand::Add(args) => plan_add(args, secrets)?,
        CredentialCommand::List { owner } => Planned {
            request: ApiRequest::get(&owner_path(owner, &["credentials"])?),
            view: if owner.platform { View::PlatformCredentialList } else { View::CredentialList },
        },
        CredentialCommand::Show(CredentialRef { owner, cred }) => Planned {
            request: ApiRequest::get(&owner_path(owner, &["credentials", cred])?),
            view: View::Credential(CredentialAction::Shown),
        },
        CredentialCommand::Update(args) => {
            return Err(CliError::Local(format!(
                "credential update of '{}' needs the current credential; it is planned after fetching it",
                args.cred
            )))
        }
        CredentialCommand::Rotate(args) => {
            let secret = secrets.read(&args.secret, &format!("the new version of credential '{}'", args.cred))?;
            Planned {
                request: ApiRequest::post(
                    &owner_path(&args.owner, &["credentials", &args.cred, "rotate"])?,
                    Body::RotateCredential(RotateCredential { secret }),
                ),
                view: View::Credential(CredentialAction::Rotated),
            }
        }
        CredentialCommand::Verify(target) => Planned {
            request: ApiRequest::new(
                Method::POST,
                &owner_path(&target.owner, &["credentials", &target.cred, "verify"])?,
                None,
            ),
            view: View::Verification,
        },
        CredentialCommand::Disable(target) => state_change(target, "disable")?,
        CredentialCommand::Enable(target) => state_change(target, "enable")?,
        CredentialCommand::Revoke(RevokeArgs { target, yes: false }) => {
            return Err(CliError::Usage(format!(
                "revoking credential '{}' is for good (it can never be used or enabled again); add --yes to confirm",
                target.cred
            )))
        }
        CredentialCommand::Revoke(RevokeArgs { target, yes: true }) => Planned {
            request: ApiRequest::post(
                &owner_path(&target.owner, &["credentials", &target.cred, "revoke"])?,
                Body::Confirm(Confirm::YES),
            ),
            view: View::Credential(CredentialAction::StateChanged),
        },
        CredentialCommand::Lifecycle(args) => {
            Planned { request: super::audit::timeline_request(args)?, view: View::Lifecycle }
        }
    })
}

/// Refuse an add that cannot apply, before a secret is read.
pub fn check_add(args: &CredentialAddArgs) -> Result<(), CliError> {
    check_platform_scope(&args.owner, &args.scope)?;
    owner_path(&args.owner, &[]).map(drop)
}

fn plan_add(args: &CredentialAddArgs, secrets: &mut SecretReader<'_>) -> Result<Planned, CliError> {
    check_add(args)?;
    let path = owner_path(&args.owner, &["credentials"])?;
    let secret = secrets.read(&args.secret, &format!("credential '{}'", args.name))?;
    let ScopeFlags { model_families, capabilities, modes, teams, workflows } = args.scope.clone();
    Ok(Planned {
        request: ApiRequest::post(
            &path,
            Body::CreateCredential(CreateCredential {
                name: args.name.clone(),
                provider: args.provider.clone(),
                secret,
                scope: ScopeLists { model_families, capabilities, modes, teams, workflows },
                base_url: args.base_url.clone(),
                expires_at: args.expires_at.clone(),
                priority: args.priority,
                weight: args.pacing.weight,
                rpm: args.pacing.rpm,
                tpm: args.pacing.tpm,
                verify: args.verify,
            }),
        ),
        view: View::Credential(CredentialAction::Added),
    })
}

fn state_change(target: &CredentialRef, action: &str) -> Result<Planned, CliError> {
    Ok(Planned {
        request: ApiRequest::post(
            &owner_path(&target.owner, &["credentials", &target.cred, action])?,
            Body::Expiry(ExpiryOnly::default()),
        ),
        view: View::Credential(CredentialAction::StateChanged),
    })
}

/// Refuse team and workflow lists for a platform credential before reading its secret:
/// it serves every katman-a org, so they cannot apply.
fn check_platform_scope(owner: &OwnerFlags, scope: &ScopeFlags) -> Result<(), CliError> {
    if owner.platform && !(scope.teams.is_empty() && scope.workflows.is_empty()) {
        return Err(CliError::Usage(
            "--team and --workflow do not apply to a platform credential (it serves every katman-a org); \
             restrict it by --model-family, --capability or --mode"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Whether any scope flag (or `--clear-scope`) was given, so the current scope is needed.
pub fn changes_scope(args: &CredentialUpdateArgs) -> bool {
    let flags = &args.scope;
    args.clear_scope.is_some()
        || !flags.model_families.is_empty()
        || !flags.capabilities.is_empty()
        || !flags.modes.is_empty()
        || !flags.teams.is_empty()
        || !flags.workflows.is_empty()
}

/// Refuse an update that changes nothing, or that cannot apply.
pub fn check_update(args: &CredentialUpdateArgs) -> Result<(), CliError> {
    check_platform_scope(&args.owner, &args.scope)?;
    let PacingFlags { weight, rpm, tpm } = args.pacing;
    let paces = weight.is_some() || rpm.is_some() || tpm.is_some() || args.no_rpm || args.no_tpm;
    if changes_scope(args) || args.expires_at.is_some() || args.no_expiry || args.priority.is_some() || paces {
        Ok(())
    } else {
        Err(CliError::Usage(
            "nothing to update: give a scope flag (--model-family, --capability, --mode, --team, --workflow, \
             --clear-scope), --expires-at/--no-expiry, --priority, --weight, --rpm/--no-rpm or --tpm/--no-tpm"
                .to_owned(),
        ))
    }
}

/// The new scope: `current`, with cleared dimensions emptied and given dimensions replaced.
pub fn merge_scope(current: &ScopeLists, flags: &ScopeFlags, clear: Option<&[ScopeDimension]>) -> ScopeLists {
    let cleared = |dimension: ScopeDimension| clear.is_some_and(|dims| dims.is_empty() || dims.contains(&dimension));
    let pick = |given: &Vec<String>, current: &Vec<String>, dimension: ScopeDimension| {
        if !given.is_empty() {
            given.clone()
        } else if cleared(dimension) {
            Vec::new()
        } else {
            current.clone()
        }
    };
    ScopeLists {
        model_families: pick(&flags.model_families, &current.model_families, ScopeDimension::ModelFamilies),
        capabilities: pick(&flags.capabilities, &current.capabilities, ScopeDimension::Capabilities),
        modes: pick(&flags.modes, &current.modes, ScopeDimension::Modes),
        teams: pick(&flags.teams, &current.teams, ScopeDimension::Teams),
        workflows: pick(&flags.workflows, &current.workflows, ScopeDimension::Workflows),
    }
}

/// The PATCH for `args`, given the credential's current scope (needed only when the
/// scope changes).
pub fn plan_update(args: &CredentialUpdateArgs, current: Option<&ScopeLists>) -> Result<Planned, CliError> {
    check_update(args)?;
    let scope = if changes_scope(args) {
        let current = current.ok_or_else(|| {
            CliError::Local("the credential's current scope is needed to change one dimension of it".to_owned())
        })?;
        Some(merge_scope(current, &args.scope, args.clear_scope.as_deref()))
    } else {
        None
    };
    let expires_at = match (&args.expires_at, args.no_expiry) {
        (Some(at), _) => Some(Some(at.clone())),
        (None, true) => Some(None),
        (None, false) => None,
    };
    // A pace given is set, `--no-…` removes it (`null`), neither leaves it.
    let pace = |given: Option<u64>, remove: bool| match (given, remove) {
        (Some(value), _) => Some(Some(value)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    Ok(Planned {
        request: ApiRequest::new(
            Method::PATCH,
            &owner_path(&args.owner, &["credentials", &args.cred])?,
            Some(Body::UpdateCredential(UpdateCredential {
                scope,
                expires_at,
                priority: args.priority,
                weight: args.pacing.weight,
                rpm: pace(args.pacing.rpm, args.no_rpm),
                tpm: pace(args.pacing.tpm, args.no_tpm),
            })),
        ),
        view: View::Credential(CredentialAction::Updated),
    })
}

/// Read the scope out of a credential as the API returns it.
pub fn current_scope(credential: &Value) -> Result<ScopeLists, CliError> {
    let scope = credential.get("scope").cloned().unwrap_or(Value::Null);
    serde_json::from_value(scope).map_err(|e| {
        CliError::Local(format!(
            "cannot read the credential's current scope from the admin API ({e}); \
             this CLI may be older than the server"
        ))
    })
}

/// Fetch the credential when its scope is to change, then plan the PATCH.
pub async fn plan_update_from_server(client: &AdminClient, args: &CredentialUpdateArgs) -> Result<Planned, CliError> {
    let current = if changes_scope(args) {
        let answer = client.send(&ApiRequest::get(&owner_path(&args.owner, &["credentials", &args.cred])?)).await?;
        Some(current_scope(&answer)?)
    } else {
        None
    };
    plan_update(args, current.as_ref())
}

/// `Ok` when a verification answer says the provider accepted the key, else
/// [`CliError::KeyNotAccepted`] (exit code 1) saying what the provider said. `cred`
/// names the credential as given on the command line.
pub fn verdict(cred: &str, answer: &Value) -> Result<(), CliError> {
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    let reason = answer.get("reason").and_then(Value::as_str).unwrap_or("no reason given").to_owned();
    let status = answer.get("status").and_then(Value::as_u64).map(|status| status.to_string());
    Err(CliError::KeyNotAccepted { cred: cred.to_owned(), reason, status })
}
