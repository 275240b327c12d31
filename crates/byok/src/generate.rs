//! `byok completions` and `byok man`: shell completions and manual pages, generated
//! from the same clap definition the parser uses, so they cannot drift from it.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::CliError;
use crate::output::StdoutStream;

/// The program's name, as completions register it and manual pages are titled.
const BIN_NAME: &str = "byok";

/// Print the completion script for `shell`.
pub fn completions(shell: Shell) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN_NAME, &mut script);
    let script = String::from_utf8(script)
        .map_err(|e| CliError::Local(format!("the {shell} completion script is not UTF-8: {e}")))?;
    StdoutStream::default().write(&script).map(drop)
}

/// Print byok.1, or with `out` write byok.1 and a page per subcommand into that
/// directory (named as the pages link them: `byok-credential-add.1`).
pub fn man(out: Option<&Path>) -> Result<(), CliError> {
    let command = documented_command();
    match out {
        None => {
            let mut page = Vec::new();
            manual_page(command)
                .render(&mut page)
                .map_err(|e| CliError::Local(format!("cannot render the manual page: {e}")))?;
            let page =
                String::from_utf8(page).map_err(|e| CliError::Local(format!("the manual page is not UTF-8: {e}")))?;
            StdoutStream::default().write(&page).map(drop)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Local(format!("cannot create {}: {e}", dir.display())))?;
            let mut written = Vec::new();
            write_pages(&command, dir, &mut written)
                .map_err(|e| CliError::Local(format!("cannot write manual pages to {}: {e}", dir.display())))?;
            eprintln!("wrote {} manual pages to {}", written.len(), dir.display());
            Ok(())
        }
    }
}

/// The command tree as the pages show it: built, so every subcommand has its
/// `byok-…` display name, and without clap's `help` subcommand (`--help` is documented
/// on every page).
fn documented_command() -> clap::Command {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    command
}

fn manual_page(command: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command).manual("byok manual")
}

/// `command`'s page and, depth first, each visible subcommand's.
fn write_pages(command: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    written.push(manual_page(command.clone()).generate_to(dir)?);
    Ok(())
}
