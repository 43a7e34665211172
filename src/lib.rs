//! aira: converge AWS to a stack file, with no state file.
//!
//! # Layout
//!
//! - [`stack`]: the stack file: spanned YAML, schema validation, typed [`stack::Stack`].
//! - [`expand`]: stack → desired [`graph::Graph`] (logical ids, kinds, properties, dependencies).
//! - [`provider`]: the [`provider::Provider`] trait; `provider::aws` (the only module that
//!   imports `aws-sdk-*`) and `provider::fake` (in memory, for engine tests).
//! - [`plan`]: desired × observed → [`plan::Plan`]. Pure data, no IO.
//! - [`apply`]: runs a plan through a provider: parallel, bounded, dependency-ordered.
//! - [`output`]: the printer (text and JSON on stdout, progress on stderr).
//! - [`local`]: the local target (`--local`): the runtime as a process on this machine.
//! - [`image`]: the runtime's OCI image, built and pushed without Docker.
//! - [`cli`]: arguments and commands.

pub mod apply;
pub mod cli;
pub mod expand;
pub mod graph;
pub mod image;
pub mod local;
pub mod output;
pub mod plan;
pub mod provider;
pub mod stack;

#[cfg(test)]
mod engine_tests;
