//! `byok org …`

use reqwest::Method;

use super::{org_path, Planned};
use crate::api::{ApiRequest, Body, Controls, CreateOrg, ExpiryOnly, PatchOrg};
use crate::cli::{ControlsCommand, ControlsSetArgs, OrgCommand};
use crate::error::CliError;
use crate::output::View;

/// The request for an org command.
pub fn plan(command: &OrgCommand) -> Result<Planned, CliError> {
    Ok(match command {
        OrgCommand::Create { name, tier } => Planned {
            request: ApiRequest::post(
                &["v1", "orgs"],
                Body::CreateOrg(CreateOrg { name: name.clone(), tier: tier.clone() }),
            ),
            view: View::Org,
        },
        OrgCommand::List => Planned { request: ApiRequest::get(&["v1", "orgs"]), view: View::OrgList },
        OrgCommand::Show { org } => Planned { request: ApiRequest::get(&org_path(org, &[])), view: View::Org },
        OrgCommand::Delete { org, yes: false } => {
            return Err(CliError::Usage(format!(
                "deleting org '{org}' destroys its keys for good (its credentials can never be opened again); \
                 add --yes to confirm"
            )))
        }
        OrgCommand::Delete { org, yes: true } => {
            // The API wants the confirmation said too.
            let request = ApiRequest::new(Method::DELETE, &org_path(org, &[]), None).with_query("confirm", true);
            Planned { request, view: View::Org }
        }
        OrgCommand::SetTier { org, tier } => Planned {
            request: ApiRequest::new(
                Method::PATCH,
                &org_path(org, &[]),
                Some(Body::PatchOrg(PatchOrg { tier: tier.clone() })),
            ),
            view: View::OrgTierChanged,
        },
        OrgCommand::Controls(ControlsCommand::Show { org }) => {
            Planned { request: ApiRequest::get(&org_path(org, &["controls"])), view: View::Controls }
        }
        OrgCommand::Controls(ControlsCommand::Set(args)) => plan_controls(args)?,
        OrgCommand::Controls(ControlsCommand::Clear { org }) => Planned {
            // No controls.
            request: ApiRequest::new(
                Method::PUT,
                &org_path(org, &["controls"]),
                Some(Body::Controls(Controls::default())),
            ),
            view: View::Controls,
        },
        OrgCommand::AdminToken { org, expires_at } => Planned {
            request: ApiRequest::post(
                &org_path(org, &["admin-tokens"]),
                Body::Expiry(ExpiryOnly { expires_at: expires_at.clone() }),
            ),
            view: View::AdminTokenCreated,
        },
        OrgCommand::AdminTokens { org } => {
            Planned { request: ApiRequest::get(&org_path(org, &["admin-tokens"])), view: View::AdminTokenList }
        }
        OrgCommand::RevokeAdminToken { org, id } => Planned {
            request: ApiRequest::new(Method::DELETE, &org_path(org, &["admin-tokens", id]), None),
            view: View::AdminTokenRevoked,
        },
    })
}

/// `PUT /v1/orgs/{org}/controls`: the whole set of controls.
fn plan_controls(args: &ControlsSetArgs) -> Result<Planned, CliError> {
    if args.max_credential_age_days.is_none() && args.allow_sources.is_empty() {
        return Err(CliError::Usage(format!(
            "nothing to set: give --max-credential-age-days N and/or --allow-source CIDR (to remove every \
             control: byok org controls clear --org {})",
            args.org
        )));
    }
    let mut sources: Vec<String> = Vec::with_capacity(args.allow_sources.len());
    for source in &args.allow_sources {
        if sources.contains(source) {
            return Err(CliError::Usage(format!("--allow-source {source} is given more than once; list each once")));
        }
        sources.push(source.clone());
    }
    Ok(Planned {
        request: ApiRequest::new(
            Method::PUT,
            &org_path(&args.org, &["controls"]),
            Some(Body::Controls(Controls {
                max_credential_age_days: args.max_credential_age_days,
                allowed_source_cidrs: sources,
            })),
        ),
        view: View::Controls,
    })
}
