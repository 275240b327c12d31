//! `byok workflow …`

use super::{org_path, Planned};
use crate::api::{ApiRequest, Body, CreateWorkflow};
use crate::cli::WorkflowCommand;
use crate::output::View;

/// The request for a workflow command.
pub fn plan(command: &WorkflowCommand) -> Planned {
    match command {
        WorkflowCommand::Create { org, name, team } => Planned {
            request: ApiRequest::post(
                &org_path(org, &["workflows"]),
                Body::CreateWorkflow(CreateWorkflow { name: name.clone(), team: team.clone() }),
            ),
            view: View::Workflow,
        },
        WorkflowCommand::List { org } => {
            Planned { request: ApiRequest::get(&org_path(org, &["workflows"])), view: View::WorkflowList }
        }
    }
}
