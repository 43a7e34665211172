//! Validation of a spanned YAML tree against the stack's JSON Schema, then the rules a schema
//! cannot say (Fargate sizes, retention order, names that must fit AWS limits).
//!
//! Every problem becomes a [`Diagnostic`] with a position; all of a file's problems are
//! collected before anything is reported.

use serde_json::Value as J;

use super::model::{self, Stack};
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

/// Checks a string against a `format` of the stack schema.
pub fn check_format(format: &str, s: &str) -> Result<(), String> {
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

/// Rules across fields, on a structurally valid stack.
pub(crate) fn check_semantics(stack: &Stack, tree: &Node, report: &mut Report) {
    let q = &stack.queue;
    if q.visibility_timeout.secs() > 12 * 3600 {
        report.error(
            tree.pos_of(&["queue", "visibility_timeout"]),
            "queue.visibility_timeout: must be at most 12h (an SQS limit)",
            None,
        );
    }
    if !(60..=14 * 86_400).contains(&q.retention.secs()) {
        report.error(
            tree.pos_of(&["queue", "retention"]),
            format!("queue.retention: must be between 1m and 14d (an SQS limit), found {}", q.retention),
            None,
        );
    }
    if q.receive_wait.secs() > 20 {
        report.error(
            tree.pos_of(&["queue", "receive_wait"]),
            format!("queue.receive_wait: must be at most 20s (an SQS limit), found {}", q.receive_wait),
            None,
        );
    }
    if let Some(dl) = &q.dead_letter {
        let pos = tree.pos_of(&["queue", "dead_letter", "retention"]);
        if dl.retention.secs() > 14 * 86_400 {
            report.error(
                pos,
                format!("queue.dead_letter.retention: must be at most 14d (an SQS limit), found {}", dl.retention),
                None,
            );
        } else if dl.retention <= q.retention {
            report.error(
                pos,
                format!(
                    "queue.dead_letter.retention ({}) must be longer than queue.retention ({})",
                    dl.retention, q.retention
                ),
                Some("a message keeps its original enqueue time in the dead-letter queue, so a shorter retention deletes it before anyone can redrive it".into()),
            );
        }
    }

    let net = &stack.network;
    let prefix = net.cidr.0.prefix_len();
    if !(16..=24).contains(&prefix) {
        report.error(
            tree.pos_of(&["network", "cidr"]),
            format!("network.cidr: the VPC block must be a /16 to /24, found /{prefix}"),
            None,
        );
    } else if net.existing.is_none() {
        // Two subnets per zone, each a quarter of the VPC block at most: 2 * zones must fit in 8 (3 bits).
        let needed_bits = (2 * net.zones as u32).next_power_of_two().trailing_zeros() as u8;
        if prefix + needed_bits > 28 {
            report.error(
                tree.pos_of(&["network", "cidr"]),
                format!("network.cidr: /{prefix} is too small for {} subnets of at least /28", 2 * net.zones),
                None,
            );
        }
    }
    if let Some(existing) = &net.existing {
        if !existing.vpc_id.starts_with("vpc-") {
            report.error(
                tree.pos_of(&["network", "existing", "vpc_id"]),
                format!("network.existing.vpc_id: `{}` is not a VPC id (`vpc-…`)", existing.vpc_id),
                None,
            );
        }
        for (field, ids) in
            [("public_subnets", &existing.public_subnets), ("private_subnets", &existing.private_subnets)]
        {
            if ids.is_empty() {
                report.error(
                    tree.pos_of(&["network", "existing", field]),
                    format!("network.existing.{field}: list at least one subnet"),
                    None,
                );
            }
            for id in ids.iter().filter(|id| !id.starts_with("subnet-")) {
                report.error(
                    tree.pos_of(&["network", "existing", field]),
                    format!("network.existing.{field}: `{id}` is not a subnet id (`subnet-…`)"),
                    None,
                );
            }
        }
    }
    let mut seen = Vec::new();
    for (i, e) in net.endpoints.iter().enumerate() {
        if seen.contains(e) {
            let pos = match tree.get("network").and_then(|n| n.get("endpoints")).map(|n| &n.value) {
                Some(Value::Seq(items)) => items.get(i).map(|n| n.pos).unwrap_or_default(),
                _ => Pos::default(),
            };
            report.error(
                pos,
                format!(
                    "network.endpoints: `{}` is listed twice",
                    serde_json::to_value(e).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                ),
                None,
            );
        }
        seen.push(*e);
    }

    if let Some(domain) = &stack.domain {
        let (name, zone) = (domain.name.0.trim_end_matches('.'), domain.zone.0.trim_end_matches('.'));
        if name != zone && !name.ends_with(&format!(".{zone}")) {
            report.error(
                tree.pos_of(&["domain", "name"]),
                format!("domain.name: `{name}` is not inside the zone `{zone}`"),
                None,
            );
        }
    }

    let mut publics = Vec::new();
    for (name, svc) in &stack.services {
        let at = |field: &str| tree.pos_of(&["services", name, field]);
        if check_format("stack-name", name).is_err() {
            report.error(
                tree.get("services").and_then(|s| match &s.value {
                    Value::Map(entries) => entries.iter().find(|(k, _)| &k.name == name).map(|(k, _)| k.pos),
                    _ => None,
                }).unwrap_or_default(),
                format!("services: `{name}` is not a valid service name: lower-case letters, digits and hyphens, starting with a letter"),
                None,
            );
        }
        let allowed = model::fargate_memory(svc.cpu.0);
        if !allowed.contains(&svc.memory) {
            report.error(
                at("memory"),
                format!(
                    "services.{name}.memory: Fargate does not accept {} MiB with {} CPU units",
                    svc.memory, svc.cpu.0
                ),
                Some(format!("with cpu {}, memory is one of {}", svc.cpu.0, render_sizes(&allowed))),
            );
        }
        if let model::Count::Auto(auto) = &svc.count {
            if auto.min > auto.max {
                report.error(
                    at("count"),
                    format!("services.{name}.count: min ({}) is greater than max ({})", auto.min, auto.max),
                    None,
                );
            }
        }
        match svc.role {
            model::Role::Api => {
                let ops = model::OPS_PORT;
                if svc.port.is_none() {
                    report.error(
                        tree.pos_of(&["services", name]),
                        format!("services.{name}: an api service needs a `port`"),
                        None,
                    );
                } else if svc.port == Some(ops) {
                    report.error(
                        at("port"),
                        format!(
                            "services.{name}.port: {ops} is every task's operations listener (`/metrics`, \
                             `/readyz`), which the load balancer never reaches; choose another port"
                        ),
                        None,
                    );
                }
            }
            model::Role::Worker => {
                for field in ["port", "health"] {
                    if tree.get("services").and_then(|s| s.get(name)).and_then(|s| s.get(field)).is_some() {
                        report.error(
                            at(field),
                            format!("services.{name}.{field}: a worker serves no HTTP, so it takes no `{field}`"),
                            None,
                        );
                    }
                }
                if svc.public {
                    report.error(at("public"), format!("services.{name}.public: a worker cannot be public"), None);
                }
            }
        }
        if svc.public {
            publics.push(name.clone());
        }
    }
    if let Some(llm) = &stack.llm {
        check_llm(llm, tree, report);
    }
    if let model::Waf::Limits(limits) = &stack.waf {
        check_waf(limits, tree, report);
    }
    for (service, problem) in super::reach::reachability(stack, None).problems(stack) {
        report.error(tree.pos_of(&["services", &service]), problem, None);
    }
    if publics.len() > 1 {
        report.error(
            tree.pos_of(&["services", &publics[1], "public"]),
            format!(
                "services: only one service can be public behind the load balancer; `{}` and `{}` both are",
                publics[0], publics[1]
            ),
            None,
        );
    }
}

/// The keys each provider takes: `openai` a URL (and perhaps a key), `bedrock` a model id only,
/// since the worker's task role is what Bedrock authorizes.
fn check_llm(llm: &model::Llm, tree: &Node, report: &mut Report) {
    let at = |key: &str| tree.pos_of(&["llm", key]);
    match llm.provider {
        model::LlmProvider::Openai => {
            if llm.base_url.is_none() {
                report.error(
                    tree.pos_of(&["llm"]),
                    "llm: provider `openai` needs `base_url`, the URL of an OpenAI-compatible API such as `https://api.openai.com/v1`",
                    Some("or `provider: bedrock` for a model on Amazon Bedrock".into()),
                );
            }
        }
        model::LlmProvider::Bedrock => {
            if llm.base_url.is_some() {
                report.error(
                    at("base_url"),
                    "llm.base_url: provider `bedrock` takes no `base_url`: the worker calls Bedrock in the stack's region, through a `bedrock-runtime` VPC endpoint",
                    Some("remove `base_url`; `model` is the Bedrock model id, such as `amazon.nova-lite-v1:0`".into()),
                );
            }
            if llm.api_key.is_some() {
                report.error(
                    at("api_key"),
                    "llm.api_key: provider `bedrock` takes no `api_key`: the worker's task role is granted `bedrock:InvokeModel` on the model",
                    Some("remove `api_key`".into()),
                );
            }
            if let Err((message, hint)) = check_bedrock_model(&llm.model) {
                report.error(at("model"), format!("llm.model: {message}"), hint);
            }
        }
    }
    check_spend(llm, tree, report);
}

/// One user's daily bound within the bound of all users: otherwise one user could spend the
/// whole day's tokens and everyone else would be refused until midnight UTC.
fn check_spend(llm: &model::Llm, tree: &Node, report: &mut Report) {
    let (all, user) = (llm.daily_tokens, llm.user_daily_tokens);
    if all == 0 || (user != 0 && user <= all) {
        return;
    }
    let written = |key: &str| tree.get("llm").and_then(|l| l.get(key)).is_some();
    // At the key the user wrote: the user's bound, or the overall one that undercuts its default.
    let (pos, what) = match (written("user_daily_tokens"), user) {
        (true, 0) => (
            tree.pos_of(&["llm", "user_daily_tokens"]),
            format!("llm.user_daily_tokens: 0 (no bound for a user) with llm.daily_tokens {all}"),
        ),
        (true, _) => (
            tree.pos_of(&["llm", "user_daily_tokens"]),
            format!("llm.user_daily_tokens: {user} is more than llm.daily_tokens ({all})"),
        ),
        (false, _) => (
            tree.pos_of(&["llm", "daily_tokens"]),
            format!("llm.daily_tokens: {all} is less than llm.user_daily_tokens ({user}, its default)"),
        ),
    };
    report.error(
        pos,
        format!("{what}: one user could spend all users' tokens of the day"),
        Some(format!("give one user at most {all} tokens a day, or `daily_tokens: 0` for no overall bound")),
    );
}

/// AWS WAF's evaluation windows, and the account routes' limit within the limit of all requests:
/// the rule of all requests comes first, so a higher limit on the account routes never applies.
fn check_waf(limits: &model::WafLimits, tree: &Node, report: &mut Report) {
    let window = limits.window.secs();
    if !model::WAF_WINDOWS.contains(&window) {
        report.error(
            tree.pos_of(&["waf", "window"]),
            format!("waf.window: AWS WAF counts requests over 1m, 2m, 5m or 10m, found {}", limits.window),
            None,
        );
    }
    let (all, auth) = (limits.requests, limits.auth_requests);
    if auth > all {
        // At the key the user wrote: the account routes' limit, or the overall one that undercuts its default.
        let written = tree.get("waf").and_then(|w| w.get("auth_requests")).is_some();
        let (pos, what) = if written {
            (
                tree.pos_of(&["waf", "auth_requests"]),
                format!("waf.auth_requests: {auth} is more than waf.requests ({all})"),
            )
        } else {
            (
                tree.pos_of(&["waf", "requests"]),
                format!("waf.requests: {all} is less than waf.auth_requests ({auth}, its default)"),
            )
        };
        report.error(
            pos,
            format!("{what}: the limit of all requests stops an address first, so the account routes' limit would never apply"),
            Some(format!("give the account routes (`/v1/auth/`) at most {all} requests a window")),
        );
    }
}

/// Prefixes of Bedrock's cross-region (system-defined) inference profiles.
const INFERENCE_PROFILE_PREFIXES: [&str; 6] = ["us.", "eu.", "apac.", "global.", "us-gov.", "jp."];

/// A Bedrock foundation model id such as `amazon.nova-lite-v1:0`: the worker's grant names it in
/// a foundation-model ARN of the stack's region.
fn check_bedrock_model(id: &str) -> Result<(), (String, Option<String>)> {
    if let Some(prefix) = INFERENCE_PROFILE_PREFIXES.iter().find(|p| id.starts_with(*p)) {
        // Invoking a profile needs the profile's ARN (in the account) and the foundation model
        // in every region it routes to: a grant aira does not write.
        return Err((
            format!("`{id}` is a cross-region inference profile, which aira does not grant yet: the worker's role may invoke one foundation model in the stack's region"),
            Some(format!("name the foundation model, `{}`, if the stack's region serves it on demand", &id[prefix.len()..])),
        ));
    }
    let ok = id.split_once('.').is_some_and(|(vendor, name)| !vendor.is_empty() && !name.is_empty())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if ok {
        Ok(())
    } else {
        Err((
            format!("`{id}` is not a Bedrock model id"),
            Some("a model id names its provider and model, such as `amazon.nova-lite-v1:0` or `anthropic.claude-3-haiku-20240307-v1:0`".into()),
        ))
    }
}

fn render_sizes(sizes: &[u32]) -> String {
    if sizes.len() <= 4 {
        return sizes.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    }
    format!("{} to {} in steps of {}", sizes[0], sizes[sizes.len() - 1], sizes[1] - sizes[0])
}
