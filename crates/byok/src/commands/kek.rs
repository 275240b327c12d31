//! `byok kek …`

use super::{org_path, Planned};
use crate::api::{ApiRequest, Body, Confirm, MoveKms};
use crate::cli::KekCommand;
use crate::output::View;

/// The request for a KEK command.
pub fn plan(command: &KekCommand) -> Planned {
    match command {
        KekCommand::Rotate { org, .. } => Planned {
            request: ApiRequest::post(&org_path(org, &["kek", "rotate"]), Body::Confirm(Confirm::YES)),
            view: View::KekStatus,
        },
        KekCommand::Status { org } => {
            Planned { request: ApiRequest::get(&org_path(org, &["kek"])), view: View::KekStatus }
        }
        KekCommand::Move { org, kms, .. } => Planned {
            request: ApiRequest::new(
                reqwest::Method::PUT,
                &org_path(org, &["kms"]),
                Some(Body::MoveKms(MoveKms { kms: kms.clone() })),
            ),
            view: View::KekStatus,
        },
    }
}

/// The request for `byok kms list`.
pub fn plan_kms_list() -> Planned {
    Planned { request: ApiRequest::get(&["v1", "kms"]), view: View::KmsList }
}

/// Poll the rewrap until it is done, with a progress bar on a terminal; the last status.
pub async fn wait_for_rewrap(
    client: &crate::client::AdminClient,
    org: &str,
    first: serde_json::Value,
    quiet: bool,
) -> Result<serde_json::Value, crate::error::CliError> {
    use std::io::IsTerminal;
    let number = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let status_request = ApiRequest::get(&org_path(org, &["kek"]));
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(number(&first, "remaining") + number(&first, "rewrapped"));
        bar.set_style(
            indicatif::ProgressStyle::with_template("rewrapping {bar:40} {pos}/{len} keys ({eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut status = first;
    loop {
        let running = status.get("state").and_then(serde_json::Value::as_str) == Some("running");
        let remaining = number(&status, "remaining");
        if let Some(bar) = &bar {
            let done = number(&status, "rewrapped");
            bar.set_length((done + remaining).max(bar.length().unwrap_or(0)));
            bar.set_position(done);
        }
        let moving = status.get("moving_from").is_some_and(|v| !v.is_null());
        let failed = status.get("state").and_then(serde_json::Value::as_str) == Some("failed");
        if !running && ((remaining == 0 && !moving) || failed) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        status = client.send(&status_request).await?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(status)
}
