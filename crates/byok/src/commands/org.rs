//! `byok org …`

use super::{org_path, Planned};
use crate::api::{ApiRequest, Body, CreateOrg, ExpiryOnly};
use crate::cli::OrgCommand;
use crate::output::View;

/// The request for an org command.
pub fn plan(command: &OrgCommand) -> Planned {
    match command {
        OrgCommand::Create { name, tier } => Planned {
            request: ApiRequest::post(
                &["v1", "orgs"],
                Body::CreateOrg(CreateOrg { name: name.clone(), tier: tier.clone() }),
            ),
            view: View::Org,
        },
        OrgCommand::List => Planned { request: ApiRequest::get(&["v1", "orgs"]), view: View::OrgList },
        OrgCommand::Show { org } => Planned { request: ApiRequest::get(&org_path(org, &[])), view: View::Org },
        OrgCommand::Delete { org, .. } => {
            Planned { request: ApiRequest::new(reqwest::Method::DELETE, &org_path(org, &[]), None), view: View::Org }
        }
        OrgCommand::AdminToken { org, expires_at } => Planned {
            request: ApiRequest::post(
                &org_path(org, &["admin-tokens"]),
                Body::Expiry(ExpiryOnly { expires_at: expires_at.clone() }),
            ),
            view: View::AdminTokenCreated,
        },
    }
}
