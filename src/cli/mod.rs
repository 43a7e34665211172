//! The command line: [`args`] (what the user typed) and one module per command, each returning
//! a typed result that the printer shows as text or JSON. [`run`] only dispatches.
//!
//! - `session.rs`: what the commands that reach AWS share (the connection, observe + plan,
//!   confirm, apply, the lock). They, and their modules, exist with the feature `aws` only.
//! - `applied.rs`: what an apply results in (`up`, `down`, `rollback`).
//! - `plan.rs` (`validate`, `plan`), `up.rs` (`up`), `down.rs` (`down`,
//!   `down --all`: one teardown), `status.rs`, `logs.rs`, `rollback.rs`, `dlq.rs`, `secret.rs`,
//!   `image.rs` (`image build|push`; the image `up` deploys), `local.rs` (`--local`), `init.rs`,
//!   `manual.rs` (`completions`, `man`).

#[cfg(feature = "aws")]
mod applied;
pub mod args;
#[cfg(feature = "aws")]
mod dlq;
#[cfg(feature = "aws")]
mod down;
mod image;
mod init;
mod local;
#[cfg(feature = "aws")]
mod logs;
mod manual;
mod plan;
#[cfg(feature = "aws")]
mod rollback;
#[cfg(feature = "aws")]
mod secret;
#[cfg(feature = "aws")]
mod session;
#[cfg(feature = "aws")]
mod status;
#[cfg(feature = "aws")]
mod up;

use std::sync::Arc;

pub use args::{Cli, Command};

use crate::failure::{Failure, Outcome};
use crate::output::{Printer, Render};

/// Shows a command's result; how the command ends follows from it.
fn show(printer: &Printer, result: Result<impl Render, Failure>) -> Result<Outcome, Failure> {
    let result = result?;
    printer.show(&result);
    result.outcome()
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<Outcome, Failure> {
    let printer = Arc::new(Printer::new(cli.global.output));
    let (g, p) = (&cli.global, &printer);
    match &cli.command {
        Command::Schema => {
            printer.json(&aira_engine::stack::schema());
            Ok(Outcome::Done)
        }
        Command::Init(args) => show(p, init::init(args, g.region.as_ref(), p)),
        Command::Completions { shell } => manual::completions(*shell),
        Command::Man { out } => manual::man(out.as_deref()),
        Command::Validate(arg) => show(p, plan::validate(arg, p)),
        Command::Up { stack, local: true, listen, .. } => show(p, local::up(stack, *listen, p).await),
        Command::Down { stack, local: true, purge, .. } => show(p, local::down(stack, *purge, p).await),
        Command::Status { stack, local: true } => show(p, local::status(stack, p).await),
        Command::Image(command) => show(p, image::image(command, p).await),
        #[cfg(feature = "aws")]
        Command::Plan { stack, image, .. } => show(p, plan::plan(g, stack, image, p).await),
        #[cfg(feature = "aws")]
        Command::Up { stack, image, ttl, .. } => show(p, up::up(g, stack, image, *ttl, p).await),
        #[cfg(feature = "aws")]
        Command::Down { all: true, selector, older_than, expired, .. } => {
            let filter = down::Filter { selector, older_than: *older_than, expired: *expired };
            show(p, down::sweep(g, filter, p).await)
        }
        #[cfg(feature = "aws")]
        Command::Down { stack, with_previews, .. } => show(p, down::down(g, stack, *with_previews, p).await),
        #[cfg(feature = "aws")]
        Command::Status { stack, .. } => show(p, status::status(g, stack, p).await),
        #[cfg(feature = "aws")]
        Command::Logs { stack, service, follow, since } => {
            logs::logs(g, stack, service.as_deref(), *follow, *since, p).await
        }
        #[cfg(feature = "aws")]
        Command::Rollback { stack, service, to } => {
            show(p, rollback::rollback(g, stack, service.as_deref(), *to, p).await)
        }
        #[cfg(feature = "aws")]
        Command::Dlq { action } => show(p, dlq::dlq(g, action, p).await),
        #[cfg(feature = "aws")]
        Command::Secret { action } => show(p, secret::secret(g, action, p).await),
        // Built with `--no-default-features`: the local target only, no AWS SDK service crate
        // compiled (a new user's first build, docs/performance.md).
        #[cfg(not(feature = "aws"))]
        _ => Err(crate::failure::UserError::NeedsAws.into()),
    }
}
