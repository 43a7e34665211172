//! aira's engine: everything that decides what to do, and nothing that talks to AWS. This crate
//! does not depend on `aws-sdk-*` (its manifest is the proof), so the plan can be computed,
//! tested and reasoned about without an account.
//!
//! # Layout
//!
//! - [`stack`]: the stack file: spanned YAML, schema validation, typed [`stack::Stack`].
//! - [`expand`]: stack → desired [`graph::Graph`] (logical ids, kinds, properties, dependencies).
//! - [`kind`]: the resource kinds: names, replacement rules, unordered list properties.
//! - [`graph`]: the desired graph: resources, references between them, their order.
//! - [`provider`]: the [`provider::Provider`] trait the engine drives, its error vocabulary, and
//!   `provider::fake` (in memory, for engine tests).
//! - [`plan`]: desired × observed → [`plan::Plan`]. Pure data, no IO.
//! - [`apply`]: runs a plan through a provider: parallel, bounded, dependency-ordered.

pub mod apply;
pub mod expand;
pub mod graph;
pub mod kind;
pub mod plan;
pub mod provider;
pub mod stack;
