//! `byok`: the sidecar (`byok serve`) and the admin-API client commands.
//!
//! This file only parses and dispatches: `serve` belongs to `byok-server`, every other
//! command to [`commands`].
#![forbid(unsafe_code)]

mod api;
mod cli;
mod client;
mod commands;
mod error;
mod output;
mod secret_input;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::CliError;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => {
            byok_server::serve(cli.global.data_dir.clone(), args.clone()).await.map_err(CliError::Serve)
        }
        Command::Admin(command) => commands::run(&cli.global, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            if let Some(hint) = error.hint(&cli.global.admin_url) {
                eprintln!("hint: {hint}");
            }
            error.exit_code()
        }
    }
}
