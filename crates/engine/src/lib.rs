//! aira's engine: everything that decides what to do, and nothing that talks to AWS. This crate
//! does not depend on `aws-sdk-*` (its manifest is the proof), so the plan can be computed,
//! tested and reasoned about without an account.
//!
//! # Layout
//!
//! - [`stack`]: the stack file: spanned YAML, schema validation, typed [`stack::Stack`].
//! - [`expand`]: stack → desired [`graph::Graph`] (logical ids, kinds, properties, dependencies).
//! - [`kind`]: the resource kinds: one struct of properties each, with its name, replacement rules
//!   and unordered list fields (`kind!`).
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

/// The crate's folder, read when the test runs (cargo sets it): not `env!`, which keeps the
/// folder of the checkout that compiled the test, wrong for another checkout sharing the build
/// folder (`CARGO_TARGET_DIR`).
#[cfg(test)]
pub(crate) fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").expect("tests run by cargo").into()
}

/// The engine's modules depend downwards only, in the order ARCHITECTURE.md's code map lists
/// them (`apply` first, `stack` last): a module may use those listed after it, never one before.
#[cfg(test)]
mod layers {

    /// The engine's entries of the code map, top-down.
    fn code_map_order() -> Vec<String> {
        let root = crate::manifest_dir();
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
        let src = crate::manifest_dir().join("src");
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

    /// ARCHITECTURE.md's size rules, over the sources of the workspace (`src`, `crates`,
    /// `runtime/src`): no file over 700 lines, no function over 150 lines outside tests.
    #[test]
    fn no_file_over_700_lines_and_no_function_over_150() {
        let root = crate::manifest_dir().join("../..");
        let mut files: Vec<std::path::PathBuf> =
            ["src", "crates", "runtime/src"].iter().map(|d| root.join(d)).collect();
        let (mut checked, mut over) = (0, Vec::new());
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            checked += 1;
            if lines.len() > 700 {
                over.push(format!("{}: {} lines", path.display(), lines.len()));
            }
            // Functions up to the file's tests: from a `fn` line to the line closing its body.
            let end = lines.iter().position(|l| l.trim() == "#[cfg(test)]").unwrap_or(lines.len());
            let mut i = 0;
            while i < end {
                let l = lines[i].trim_start();
                let is_fn = [
                    "fn ",
                    "pub fn ",
                    "async fn ",
                    "pub async fn ",
                    "pub(crate) fn ",
                    "pub(crate) async fn ",
                    "pub(super) fn ",
                    "pub(super) async fn ",
                ]
                .iter()
                .any(|p| l.starts_with(p));
                if !is_fn || l.ends_with(';') {
                    i += 1;
                    continue;
                }
                let (mut depth, mut opened, mut j) = (0i32, false, i);
                while j < lines.len() {
                    depth += lines[j].matches('{').count() as i32 - lines[j].matches('}').count() as i32;
                    opened |= lines[j].contains('{');
                    if opened && depth <= 0 {
                        break;
                    }
                    j += 1;
                }
                if j - i + 1 > 150 {
                    over.push(format!("{}:{}: a function of {} lines", path.display(), i + 1, j - i + 1));
                }
                i = j + 1;
            }
        }
        assert!(checked > 100, "only {checked} files read");
        assert!(over.is_empty(), "{}", over.join("\n"));
    }
}
