//! `aira completions SHELL` and `aira man`: generated from the same clap definitions that parse
//! the command line, so they cannot drift from it.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::args::Cli;
use crate::failure::{Failure, Outcome, UserError};

pub fn completions(shell: clap_complete::Shell) -> Result<Outcome, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "aira", &mut script);
    print(&script)
}

/// The page of `aira` on stdout, or one page per command (`aira-up.1`, …) in `out`.
pub fn man(out: Option<&Path>) -> Result<Outcome, Failure> {
    let cmd = Cli::command();
    match out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page).map_err(Failure::internal)?;
            print(&page)
        }
        Some(dir) => {
            let fail = |error| UserError::CannotWrite { path: format!("the pages into {}", dir.display()), error };
            std::fs::create_dir_all(dir).map_err(fail)?;
            clap_mangen::generate_to(cmd, dir).map_err(fail)?;
            Ok(Outcome::Done)
        }
    }
}

/// Writes to stdout; a reader that stopped early (`aira man | head`) is not an error.
fn print(bytes: &[u8]) -> Result<Outcome, Failure> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::internal(e)),
        _ => Ok(Outcome::Done),
    }
}
