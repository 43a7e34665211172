//! Validation of a spanned YAML tree against the stack's JSON Schema, and the formats it names;
//! the rules a schema cannot say are `rules.rs`.
//!
//! Every problem becomes a [`Diagnostic`] with a position; all of a file's problems are
//! collected before anything is reported.

use serde_json::Value as J;

use super::model;
use super::yaml::{Key, Node, Pos, Value};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Collects problems against one file.
pub(crate) struct Report<'a> {
    pub file: &'a str,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report<'_> {
    pub fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            hint,
        });
    }
}

/// Walks `node` against `schema` (a subset of JSON Schema 2020-12: the subset `schemars` emits).
pub(crate) struct SchemaWalker<'a> {
    pub root: &'a J,
}

impl SchemaWalker<'_> {
    fn resolve<'s>(&'s self, mut schema: &'s J) -> &'s J {
        while let Some(r) = schema.get("$ref").and_then(J::as_str) {
            let Some(name) = r.strip_prefix("#/$defs/") else { break };
            match self.root.get("$defs").and_then(|d| d.get(name)) {
                Some(s) => schema = s,
                None => break,
            }
        }
        schema
    }

    /// The human name of what a schema accepts, for "expected …" messages.
    fn describe(&self, schema: &J) -> String {
        let schema = self.resolve(schema);
        if let Some(alts) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(J::as_array) {
            let parts: Vec<String> = alts
                .iter()
                .filter(|a| a.get("type").and_then(J::as_str) != Some("null"))
                .map(|a| self.describe(a))
                .collect();
            return parts.join(" or ");
        }
        if let Some(values) = schema.get("enum").and_then(J::as_array) {
            return format!("one of {}", render_values(values));
        }
        if let Some(c) = schema.get("const") {
            return render_values(std::slice::from_ref(c));
        }
        // Our own string formats describe themselves ("a duration with units: …").
        if schema.get("type") == Some(&J::from("string")) && schema.get("format").is_some() {
            if let Some(desc) = schema.get("description").and_then(J::as_str) {
                return desc.to_string();
            }
        }
        match types(schema).iter().find(|t| *t != "null").map(String::as_str) {
            Some("object") => "a mapping".into(),
            Some("array") => "a list".into(),
            Some("integer") => "an integer".into(),
            Some("number") => "a number".into(),
            Some("boolean") => "true or false".into(),
            Some("string") => "a string".into(),
            _ => "a value".into(),
        }
    }

    pub fn check(&self, node: &Node, schema: &J, path: &str, report: &mut Report) {
        let schema = self.resolve(schema);
        if let Some(alts) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(J::as_array) {
            return self.check_alternatives(node, alts, path, report);
        }
        if let Some(c) = schema.get("const") {
            if &node.to_json() != c {
                report.error(
                    node.pos,
                    format!("{path}: expected {}, found {}", render_values(std::slice::from_ref(c)), found(node)),
                    None,
                );
            }
            return;
        }
        let allowed = types(schema);
        if !allowed.is_empty() && !allowed.iter().any(|t| node_is(node, t)) {
            let hint = type_hint(node, &allowed, schema.get("format").and_then(J::as_str));
            report.error(node.pos, format!("{path}: expected {}, found {}", self.describe(schema), found(node)), hint);
            return;
        }
        if let Some(values) = schema.get("enum").and_then(J::as_array) {
            if !values.contains(&node.to_json()) {
                not_one_of(node, values, path, report);
                return;
            }
        }
        match &node.value {
            Value::Int(i) => {
                if let Some(min) = schema.get("minimum").and_then(J::as_i64) {
                    if *i < min {
                        report.error(node.pos, format!("{path}: must be at least {min}, found {i}"), None);
                    }
                }
                if let Some(max) = schema.get("maximum").and_then(J::as_i64) {
                    if *i > max {
                        report.error(node.pos, format!("{path}: must be at most {max}, found {i}"), None);
                    }
                }
            }
            Value::Str(s) => {
                if let Some(format) = schema.get("format").and_then(J::as_str) {
                    if let Err(message) = check_format(format, s) {
                        report.error(node.pos, format!("{path}: {message}"), None);
                    }
                }
            }
            Value::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &format!("{path}[{i}]"), report);
                    }
                }
                if schema.get("uniqueItems") == Some(&J::Bool(true)) {
                    for (i, item) in items.iter().enumerate() {
                        if items[..i].iter().any(|prev| prev.to_json() == item.to_json()) {
                            report.error(item.pos, format!("{path}: {} is listed twice", render_node(item)), None);
                        }
                    }
                }
            }
            Value::Map(entries) => self.check_map(node, entries, schema, path, report),
            Value::Null | Value::Bool(_) | Value::Float(_) => {}
        }
    }

    fn check_alternatives(&self, node: &Node, alts: &[J], path: &str, report: &mut Report) {
        // An enumeration written as one `const` per documented variant.
        let consts: Option<Vec<J>> = alts.iter().map(|a| self.resolve(a).get("const").cloned()).collect();
        if let Some(values) = consts {
            if !values.contains(&node.to_json()) {
                not_one_of(node, &values, path, report);
            }
            return;
        }
        let mut candidates = Vec::new();
        for alt in alts {
            let mut trial = Report { file: report.file, diagnostics: Vec::new() };
            self.check(node, alt, path, &mut trial);
            if trial.diagnostics.is_empty() {
                return;
            }
            let alt = self.resolve(alt);
            if types(alt).iter().any(|t| node_is(node, t)) {
                candidates.push(trial.diagnostics);
            }
        }
        // Report the errors of the one alternative of the node's own shape (a mapping with a
        // misspelt key gets the did-you-mean of the mapping alternative).
        match candidates.len() {
            1 => report.diagnostics.extend(candidates.pop().unwrap_or_default()),
            _ => {
                let expected: Vec<String> = alts
                    .iter()
                    .filter(|a| self.resolve(a).get("type").and_then(J::as_str) != Some("null"))
                    .map(|a| self.describe(a))
                    .collect();
                let allowed: Vec<String> = alts.iter().flat_map(|a| types(self.resolve(a))).collect();
                let hint = type_hint(node, &allowed, None);
                report.error(
                    node.pos,
                    format!("{path}: expected {}, found {}", expected.join(" or "), found(node)),
                    hint,
                );
            }
        }
    }

    fn check_map(&self, node: &Node, entries: &[(Key, Node)], schema: &J, path: &str, report: &mut Report) {
        let props = schema.get("properties").and_then(J::as_object);
        let additional = schema.get("additionalProperties");
        for (key, value) in entries {
            let child_path = if path.is_empty() { key.name.clone() } else { format!("{path}.{}", key.name) };
            if let Some(prop) = props.and_then(|p| p.get(&key.name)) {
                self.check(value, prop, &child_path, report);
            } else if let Some(extra) = additional.filter(|a| a.is_object()) {
                self.check(value, extra, &child_path, report);
            } else if additional == Some(&J::Bool(false)) {
                let known: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                let hint = did_you_mean(&key.name, known.iter().copied())
                    .or_else(|| Some(format!("known keys here: {}", known.join(", "))));
                let place = if path.is_empty() { "at the top level".to_string() } else { format!("in `{path}`") };
                report.error(key.pos, format!("unknown key `{}` {place}", key.name), hint);
            }
        }
        if let Some(required) = schema.get("required").and_then(J::as_array) {
            for name in required.iter().filter_map(J::as_str) {
                if !entries.iter().any(|(k, _)| k.name == name) {
                    let what = props.and_then(|p| p.get(name)).map(|s| self.describe(s)).unwrap_or_default();
                    let place = if path.is_empty() { "the stack".to_string() } else { format!("`{path}`") };
                    report.error(node.pos, format!("{place} is missing the key `{name}` ({what})"), None);
                }
            }
        }
    }
}

fn types(schema: &J) -> Vec<String> {
    match schema.get("type") {
        Some(J::String(t)) => vec![t.clone()],
        Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).map(String::from).collect(),
        _ => vec![],
    }
}

fn node_is(node: &Node, ty: &str) -> bool {
    matches!(
        (ty, &node.value),
        ("null", Value::Null)
            | ("boolean", Value::Bool(_))
            | ("integer", Value::Int(_))
            | ("number", Value::Int(_) | Value::Float(_))
            | ("string", Value::Str(_))
            | ("array", Value::Seq(_))
            | ("object", Value::Map(_))
    )
}

fn found(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => format!("the string `{s}`"),
        Value::Int(i) => format!("the integer {i}"),
        Value::Null => "nothing".into(),
        _ => node.kind().into(),
    }
}

/// The likely fix when a value has the wrong type.
fn type_hint(node: &Node, allowed: &[String], format: Option<&str>) -> Option<String> {
    match &node.value {
        Value::Str(s) if allowed.iter().any(|t| t == "integer") && s.parse::<i64>().is_ok() => {
            Some("remove the quotes".into())
        }
        Value::Int(i) if format == Some("duration") => Some(format!("add a unit, e.g. `{i}s`")),
        _ => None,
    }
}

/// "expected one of …", with the closest allowed word as a hint.
fn not_one_of(node: &Node, values: &[J], path: &str, report: &mut Report) {
    let words: Vec<&str> = values.iter().filter_map(J::as_str).collect();
    let hint = match &node.value {
        Value::Str(s) => did_you_mean(s, words.iter().copied()),
        _ => None,
    };
    report.error(node.pos, format!("{path}: expected one of {}, found {}", render_values(values), found(node)), hint);
}

fn render_values(values: &[J]) -> String {
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            J::String(s) => format!("`{s}`"),
            other => other.to_string(),
        })
        .collect();
    parts.join(", ")
}

fn render_node(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => format!("`{s}`"),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => node.kind().to_string(),
    }
}

/// The closest known word, if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    known
        .map(|k| (strsim::jaro_winkler(word, k), k))
        .filter(|(score, k)| *score > 0.8 || strsim::levenshtein(word, k) <= 2)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

/// Why a string does not match a `format` of the stack schema, said for the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// Checks a string against a `format` of the stack schema.
pub fn check_format(format: &str, s: &str) -> Result<(), FormatError> {
    formatted(format, s).map_err(FormatError)
}

fn formatted(format: &str, s: &str) -> Result<(), String> {
    match format {
        "duration" => s.parse::<model::Duration>().map(drop),
        "cidr" => s.parse::<model::Cidr>().map(drop),
        "hostname" => check_hostname(s),
        "stack-name" => {
            let ok = s.len() <= 28
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && !s.ends_with('-')
                && !s.contains("--")
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "`{s}` is not a valid stack name: use lower-case letters, digits and single hyphens, start with a letter, at most 28 characters (it prefixes AWS names with tight limits)"
                ))
            }
        }
        "http-path" if s.starts_with('/') && !s.contains(char::is_whitespace) => Ok(()),
        "http-path" => Err(format!("`{s}` is not an absolute URL path such as `/healthz`")),
        "uri" if (s.starts_with("https://") || s.starts_with("http://")) && s.len() > 8 => Ok(()),
        "uri" => Err(format!("`{s}` is not an http:// or https:// URL")),
        "email" => match s.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && !s.contains(char::is_whitespace)
                    && check_hostname(domain).is_ok()
                    && domain.contains('.') =>
            {
                Ok(())
            }
            _ => Err(format!("`{s}` is not an e-mail address such as `ops@example.com`")),
        },
        "image-ref" if !s.is_empty() && !s.contains(char::is_whitespace) => Ok(()),
        "image-ref" => Err(format!("`{s}` is not an image reference")),
        _ => Ok(()),
    }
}

fn check_hostname(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{s}` is not a valid domain name: {why}"));
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.len() > 253 {
        return bad("longer than 253 characters");
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels, as in `example.com`");
    }
    for label in labels {
        if label.is_empty() || label.len() > 63 {
            return bad("each label between dots must have 1 to 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with a hyphen");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad("only letters, digits and hyphens are allowed");
        }
    }
    Ok(())
}
