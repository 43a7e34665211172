use std::process::ExitCode;

use aira::cli::{self, Cli};
use aira::failure::{exit_code, Failure, EXIT_USER};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; every bad flag is a user error (1).
            return if e.use_stderr() { ExitCode::from(EXIT_USER) } else { ExitCode::SUCCESS };
        }
    };
    let mode = cli.exit_mode();
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(cli::run(cli)),
        Err(e) => Err(Failure::internal(format!("cannot start the async runtime: {e}"))),
    };
    ExitCode::from(exit_code(result, mode))
}
