use std::process::ExitCode;

use aira::cli::{self, Cli, Failure};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; every bad flag is a user error (1).
            return if e.use_stderr() { ExitCode::from(cli::EXIT_USER) } else { ExitCode::SUCCESS };
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::User(message)) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            ExitCode::from(cli::EXIT_USER)
        }
        Err(Failure::Aws(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
