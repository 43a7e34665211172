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
//! - [`cost`]: the stack's monthly cost by resource, from [`prices`], the price table in the repository.
//! - [`apply`]: runs a plan through a provider: parallel, bounded, dependency-ordered.
//! - [`time`]: Unix seconds as RFC 3339 dates, for every crate.

pub mod apply;
pub mod cost;
pub mod expand;
pub mod graph;
pub mod kind;
pub mod plan;
pub mod prices;
pub mod provider;
pub mod stack;
pub mod time;

/// The engine's modules depend downwards only, in the order ARCHITECTURE.md's code map lists
/// them (`apply` first, `stack` last): a module may use those listed after it, never one before.
#[cfg(test)]
mod layers {
    use std::path::Path;

    /// The engine's entries of the code map, top-down.
    fn code_map_order() -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("../../ARCHITECTURE.md")).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("- `crates/engine/src/"))
            .filter_map(|l| l.split(['`', '.', '/']).next())
            .filter(|m| !m.is_empty() && *m != "lib")
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn modules_use_only_those_below_them_in_the_code_map() {
        let order = code_map_order();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.clone()];
        let mut checked = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().to_str().unwrap().to_string();
            let module = rel.split(['/', '.']).next().unwrap();
            if module == "lib" {
                continue;
            }
            let at = order.iter().position(|m| m == module);
            let at =
                at.unwrap_or_else(|| panic!("ARCHITECTURE.md's code map has no entry for crates/engine/src/{module}"));
            let text = std::fs::read_to_string(&path).unwrap();
            for (_, rest) in text.match_indices("crate::").map(|(i, _)| ((), &text[i + 7..])) {
                let used: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let Some(pos) = order.iter().position(|m| *m == used) else { continue };
                assert!(pos >= at, "{rel} uses `crate::{used}`, which the code map lists above `{module}`");
                checked += 1;
            }
        }
        assert!(checked > 10, "the check saw only {checked} uses");
    }
}
