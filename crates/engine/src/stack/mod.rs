//! The stack file: parse (spanned YAML), validate (schema walk + cross-field rules), resolve
//! into the typed [`Stack`].

pub(crate) mod check;
pub mod model;
pub mod reach;
mod rules;
mod values;
pub mod yaml;

use std::path::Path;

pub use check::{check_format, did_you_mean, Diagnostic, FormatError};
pub use model::Stack;
pub use rules::inference_profile;

use check::{Report, SchemaWalker};

/// A stack file that validated.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: String,
    pub stack: Stack,
}

/// The JSON Schema of the stack format, generated from the typed model.
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Stack).to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$id".into(), "https://aira.dev/schema/stack.json".into());
        obj.insert("title".into(), "aira stack".into());
    }
    schema
}

/// Reads and validates a stack file; every problem found, with its position.
pub fn load(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the stack file: {e}"),
            hint: None,
        }]
    })?;
    parse(&file, &source)
}

/// Validates stack source text; `file` names it in diagnostics.
pub fn parse(file: &str, source: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let mut report = Report { file, diagnostics: Vec::new() };
    let tree = match yaml::parse(source) {
        Ok((tree, errors)) => {
            for e in errors {
                report.error(e.pos, e.message, None);
            }
            tree
        }
        Err(errors) => {
            for e in errors {
                report.error(e.pos, e.message, None);
            }
            return Err(report.diagnostics);
        }
    };
    let schema = schema();
    SchemaWalker { root: &schema }.check(&tree, &schema, "", &mut report);
    if !report.diagnostics.is_empty() {
        return Err(sorted(report.diagnostics));
    }
    let stack: Stack = match serde_json::from_value(tree.to_json()) {
        Ok(stack) => stack,
        Err(e) => {
            // The schema walk accepted something the types do not: a gap between the two.
            report.error(tree.pos, format!("invalid stack: {e}"), None);
            return Err(report.diagnostics);
        }
    };
    rules::check_semantics(&stack, &tree, &mut report);
    if !report.diagnostics.is_empty() {
        return Err(sorted(report.diagnostics));
    }
    Ok(Loaded { file: file.to_string(), stack })
}

fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by_key(|d| (d.line, d.column));
    diags
}

#[cfg(test)]
mod tests;
