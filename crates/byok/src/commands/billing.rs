//! `byok billing …`: statements, rate cards and budgets.

use std::collections::BTreeMap;

use byok_domain::Timestamp;
use reqwest::Method;

use super::{org_path, Planned};
use crate::api::{self, ApiRequest, Body};
use crate::cli::{
    BillingCommand, BillingReportArgs, BudgetCommand, BudgetSetArgs, Period, RateCardCommand, RateCardSetArgs,
};
use crate::error::CliError;
use crate::output::View;

/// The request for a billing command.
pub fn plan(command: &BillingCommand) -> Result<Planned, CliError> {
    Ok(match command {
        BillingCommand::Report(args) => plan_report(args)?,
        BillingCommand::RateCard(RateCardCommand::Show { org }) => {
            Planned { request: ApiRequest::get(&org_path(org, &["rate-card"])), view: View::RateCard }
        }
        BillingCommand::RateCard(RateCardCommand::Set(RateCardSetArgs {
            org,
            per_call,
            per_million_input_tokens,
            per_million_output_tokens,
        })) => Planned {
            request: ApiRequest::new(
                Method::PUT,
                &org_path(org, &["negotiated-rate-card"]),
                Some(Body::RateCard(api::RateCard {
                    per_call: per_call.clone(),
                    per_million_input_tokens: per_million_input_tokens.clone(),
                    per_million_output_tokens: per_million_output_tokens.clone(),
                })),
            ),
            view: View::RateCard,
        },
        BillingCommand::RateCard(RateCardCommand::Reset { org }) => Planned {
            request: ApiRequest::new(Method::DELETE, &org_path(org, &["negotiated-rate-card"]), None),
            view: View::RateCard,
        },
        BillingCommand::Budget(BudgetCommand::Show { org }) => {
            Planned { request: ApiRequest::get(&org_path(org, &["budget"])), view: View::Budget }
        }
        BillingCommand::Budget(BudgetCommand::Set(args)) => plan_budget(args)?,
        BillingCommand::Budget(BudgetCommand::Clear { org }) => {
            // A budget without limits.
            let request =
                ApiRequest::new(Method::PUT, &org_path(org, &["budget"]), Some(Body::Budget(api::Budget::default())));
            Planned { request, view: View::Budget }
        }
    })
}

/// `GET /v1/orgs/{org}/usage` (`--org`) or `GET /v1/usage` (`--all`), with the period.
fn plan_report(args: &BillingReportArgs) -> Result<Planned, CliError> {
    let (from, to) = match (&args.period, &args.from, &args.to) {
        (Some(Period { from, to }), _, _) => (Some(from.as_str()), Some(to.as_str())),
        (None, from, to) => (from.as_deref(), to.as_deref()),
    };
    if let (Some(from), Some(to)) = (from, to) {
        let at = |text: &str| Timestamp::parse_rfc3339(text).ok();
        if let (Some(start), Some(end)) = (at(from), at(to)) {
            if start >= end {
                return Err(CliError::Usage(format!("--from ({from}) must be before --to ({to})")));
            }
        }
    }
    let (request, view) = match (&args.org, args.all) {
        (Some(org), false) => {
            (ApiRequest::get(&org_path(org, &["usage"])), if args.csv { View::StatementCsv } else { View::Statement })
        }
        // `--source` is refused with `--all` by clap: the operator-wide report has none.
        (None, true) => {
            (ApiRequest::get(&["v1", "usage"]), if args.csv { View::UsageReportCsv } else { View::UsageReport })
        }
        _ => return Err(CliError::Usage("give --org ORG (one org's statement) or --all (every org's)".to_owned())),
    };
    let request = request
        .with_optional_query("from", from)
        .with_optional_query("to", to)
        .with_optional_query("source", args.source.as_deref());
    Ok(Planned { request, view })
}

/// `PUT /v1/orgs/{org}/budget`: the whole budget.
fn plan_budget(args: &BudgetSetArgs) -> Result<Planned, CliError> {
    if args.monthly_limit.is_none() && args.teams.is_empty() {
        return Err(CliError::Usage(format!(
            "nothing to set: give --monthly-limit AMOUNT and/or --team TEAM=AMOUNT (to remove every limit: \
             byok billing budget clear --org {})",
            args.org
        )));
    }
    let mut teams = BTreeMap::new();
    for (team, amount) in &args.teams {
        if teams.insert(team.clone(), amount.clone()).is_some() {
            return Err(CliError::Usage(format!("--team {team}=… is given more than once; give each team once")));
        }
    }
    Ok(Planned {
        request: ApiRequest::new(
            Method::PUT,
            &org_path(&args.org, &["budget"]),
            Some(Body::Budget(api::Budget { monthly_limit: args.monthly_limit.clone(), teams })),
        ),
        view: View::Budget,
    })
}
