//! `byok`: the sidecar (`byok serve`) and the admin-API client commands.
//!
//! This file only parses and dispatches: `serve` belongs to `byok-server`, `completions`
//! and `man` to [`generate`], every other command to [`commands`].
#![forbid(unsafe_code)]

mod api;
mod cli;
mod client;
mod commands;
mod error;
mod generate;
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
        Command::Completions { shell } => generate::completions(*shell),
        Command::Man { out } => generate::man(out.as_deref()),
        Command::Admin(command) => commands::run(&cli.global, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A server's message may quote caller-supplied text: shown with control
            // characters escaped, never interpreted by the terminal.
            eprintln!("error: {}", printable_lines(&error.to_string()));
            if let Some(hint) = error.hint(&cli.global.admin_url) {
                eprintln!("hint: {}", printable_lines(&hint));
            }
            error.exit_code()
        }
    }
}

/// `text` with the control characters of each line escaped (its own line breaks kept).
fn printable_lines(text: &str) -> String {
    text.split('\n').map(byok_domain::audit::escaped_text).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_lines_keep_their_breaks_and_lose_their_control_characters() {
        assert_eq!(super::printable_lines("a\n  b\u{1b}[2Jc\u{202e}"), "a\n  b\\u{1b}[2Jc\\u{202e}");
    }
}
