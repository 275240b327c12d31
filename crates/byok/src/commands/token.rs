//! `byok token …`

use reqwest::Method;

use super::{org_path, Planned};
use crate::api::{ApiRequest, Body, CreateToken};
use crate::cli::TokenCommand;
use crate::output::View;

/// The request for a workload-token command.
pub fn plan(command: &TokenCommand) -> Planned {
    match command {
        TokenCommand::Create { org, team, workflows, expires_at, name, description } => Planned {
            request: ApiRequest::post(
                &org_path(org, &["tokens"]),
                Body::CreateToken(CreateToken {
                    team: team.clone(),
                    workflows: workflows.clone(),
                    expires_at: expires_at.clone(),
                    name: name.clone(),
                    description: description.clone(),
                }),
            ),
            view: View::TokenCreated,
        },
        TokenCommand::List { org } => {
            Planned { request: ApiRequest::get(&org_path(org, &["tokens"])), view: View::TokenList }
        }
        TokenCommand::Revoke { org, id } => Planned {
            request: ApiRequest::new(Method::DELETE, &org_path(org, &["tokens", id]), None),
            view: View::TokenRevoked,
        },
    }
}
