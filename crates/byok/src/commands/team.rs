//! `byok team …`

use super::{org_path, Planned};
use crate::api::{ApiRequest, Body, CreateTeam};
use crate::cli::TeamCommand;
use crate::output::View;

/// The request for a team command.
pub fn plan(command: &TeamCommand) -> Planned {
    match command {
        TeamCommand::Create { org, name } => Planned {
            request: ApiRequest::post(&org_path(org, &["teams"]), Body::CreateTeam(CreateTeam { name: name.clone() })),
            view: View::Team,
        },
        TeamCommand::List { org } => {
            Planned { request: ApiRequest::get(&org_path(org, &["teams"])), view: View::TeamList }
        }
    }
}
