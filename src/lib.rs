//! aira: converge AWS to a stack file, with no state file. This package is the command line;
//! the work is done by the crates below it.
//!
//! # Layout
//!
//! - `aira-engine` (`crates/engine`): the stack file, its expansion into a resource graph, the
//!   plan and its apply, the provider trait and a fake provider. No AWS SDK.
//! - `aira-image` (`crates/image`): the runtime's OCI image, built and pushed without Docker.
//! - `aira-aws` (`crates/aws`): the AWS provider, the only crate that imports `aws-sdk-*`.
//! - here: [`cli`] (arguments and commands), [`failure`] (failures and exit codes), [`output`]
//!   (the printer: text and JSON on stdout, progress on stderr), [`time`] (dates and durations),
//!   [`local`] (the local target: the runtime as a process on this machine).

pub mod cli;
pub mod failure;
pub mod local;
pub mod output;
pub mod time;

#[cfg(feature = "aws")]
pub use aira_aws as aws;
pub use aira_engine as engine;
pub use aira_image as image;

#[cfg(test)]
mod engine_tests;
