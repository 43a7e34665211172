//! The monitoring templates name only metrics that the runtime exports.
//!
//! Reads every PromQL expression of `templates/monitoring/rules/*.yml` (rules and their promtool
//! unit tests, `expr:` and `series:`) and of the Grafana dashboards
//! (`templates/monitoring/grafana/dashboards/*.json`, every `"expr"`), takes the metric names out
//! of them with a small tokenizer, and checks each against a real `/metrics` scrape of the router
//! after traffic that makes every family appear (labelled families only appear once used).
//! Names with a colon are recording rules and must be recorded by a rule file instead. Label names
//! in a selector must exist on that metric (plus `job` and `instance`, which Prometheus adds, and
//! `service`, `task` and `stack`, which remote write adds).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aira_runtime::api::Limits;
use aira_runtime::model::Status;
use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

/// Series Prometheus itself makes (not the runtime).
const PROMETHEUS_SERIES: &[&str] =
    &["up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"];
/// Labels the scrape adds to every series, and those remote write adds on a deployed stack
/// (`added_labels` in `runtime/src/remote_write.rs`).
const TARGET_LABELS: &[&str] = &["job", "instance", "__name__", "service", "task", "stack"];

#[tokio::test]
async fn monitoring_templates_name_only_exported_metrics() {
    let exported = scrape_every_family().await;
    // Families that must be there whatever the traffic: if one is missing the traffic below no
    // longer exercises it, and the check would be weaker than it looks.
    for family in
        ["aira_http_requests_total", "aira_worker_messages_total", "aira_llm_errors_total", "aira_llm_tokens_total"]
    {
        assert!(exported.contains_key(family), "traffic did not make {family} appear:\n{exported:#?}");
    }

    let uses = template_expressions();
    assert!(uses.len() > 20, "found only {} expressions under {}", uses.len(), monitoring_dir().display());
    let recorded: BTreeSet<String> = rule_files().iter().flat_map(|p| yaml_values(&read(p), "record")).collect();
    assert!(recorded.iter().any(|r| r.starts_with("aira:")), "no recording rule found");

    let problems = check(&uses, &exported, &recorded);
    assert!(problems.is_empty(), "the monitoring templates name what /metrics does not have:\n{}", problems.join("\n"));
}

/// A fresh stack after its first answered message: every series the alert rules and the
/// dashboards name is already there (at 0 where nothing happened yet), so a panel shows 0 rather
/// than "No data" and a rule tells "no errors" from "not scraped".
#[tokio::test]
async fn after_one_answered_message_every_metric_the_rules_name_is_exported() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::ZERO)).await;
    let (worker, stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), worker_config()));
    let token = user(&app, "first@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "hello").await;
    wait_until("the first message to be answered", Duration::from_secs(20), || async {
        env.store.get_message(&id).await.unwrap().is_some_and(|m| m.status == Status::Answered)
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let r = call(&env.ops(), "GET", "/metrics", None, None, &[]).await;
    let Value::String(text) = r.body else { panic!("/metrics is not text: {:?}", r.body) };
    let exported = parse_exposition(&text);
    // The error series exist before any error, one per kind.
    for kind in aira_runtime::llm::LlmError::KINDS {
        assert!(text.contains(&format!("aira_llm_errors_total{{kind=\"{kind}\"}} 0")), "no zero for {kind}:\n{text}");
    }
    let uses: Vec<Use> = template_expressions().into_iter().filter(|u| !u.file.ends_with(".test.yml")).collect();
    let recorded: BTreeSet<String> = rule_files().iter().flat_map(|p| yaml_values(&read(p), "record")).collect();
    let problems = check(&uses, &exported, &recorded);
    assert!(problems.is_empty(), "after one answered message, /metrics lacks:\n{}", problems.join("\n"));
}

#[test]
fn a_rule_on_a_missing_metric_is_reported() {
    let exported = BTreeMap::from([
        ("aira_queue_sent_total".to_string(), BTreeSet::new()),
        ("aira_http_requests_total".to_string(), BTreeSet::from(["route".to_string(), "status".to_string()])),
    ]);
    let recorded = BTreeSet::from(["aira:known".to_string()]);
    let expr = |e: &str| vec![Use { file: "t.yml".into(), expr: e.into() }];
    let ok = r#"sum by (route) (rate(aira_http_requests_total{status=~"5..", job="a"}[5m])) / on() group_left aira:known
                 and rate(aira_queue_sent_total[1m] offset 5m) > bool 0 or vector(0)"#;
    assert_eq!(check(&expr(ok), &exported, &recorded), Vec::<String>::new());
    assert_eq!(check(&expr("rate(aira_queue_sent_totl[5m]) > 0"), &exported, &recorded).len(), 1);
    assert_eq!(check(&expr("aira:unknown > 1"), &exported, &recorded).len(), 1);
    assert_eq!(check(&expr(r#"aira_http_requests_total{stauts="500"}"#), &exported, &recorded).len(), 1);
    // A histogram's base name is not a series: only its _bucket, _sum and _count are.
    assert_eq!(check(&expr("aira_http_request_duration_seconds > 1"), &exported, &recorded).len(), 1);
}

#[test]
fn tokenizer_finds_metric_names_only() {
    let got = selectors(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{route!~"/v1/a\\{id\\}|b", instance=~"$instance"}[5m])))
           / ignoring(kind) sum without (kind) (y_total) + count(v) by (kind) unless z{le="+Inf"} offset 1h and ${var} > 1e3 and "str(ing" == w"#,
    );
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x_bucket", "y_total", "v", "z", "w"]);
    assert_eq!(got[0].1, ["route", "instance"]);
    assert_eq!(got[3].1, ["le"]);
}

/// One PromQL expression and the file it came from.
struct Use {
    file: String,
    expr: String,
}

/// Every problem: a metric not exported, a recording rule not recorded, a label the metric lacks.
fn check(uses: &[Use], exported: &BTreeMap<String, BTreeSet<String>>, recorded: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for u in uses {
        for (name, labels) in selectors(&u.expr) {
            if name.contains(':') {
                if !recorded.contains(&name) {
                    problems.push(format!("{}: recording rule `{name}` is not recorded by any rule file", u.file));
                }
                continue;
            }
            if PROMETHEUS_SERIES.contains(&name.as_str()) {
                continue;
            }
            match exported.get(&name) {
                Some(known) => {
                    for l in labels.iter().filter(|l| !known.contains(*l) && !TARGET_LABELS.contains(&l.as_str())) {
                        problems.push(format!("{}: `{name}` has no label `{l}` (it has {known:?})", u.file));
                    }
                }
                None => {
                    problems.push(format!("{}: metric `{name}` is not in /metrics (in `{}`)", u.file, u.expr.trim()))
                }
            }
        }
    }
    problems
}

/// The router, a worker and a fake LLM on the embedded backends; traffic that makes every
/// labelled family appear; then `GET /metrics`. Returns series name → label names.
async fn scrape_every_family() -> BTreeMap<String, BTreeSet<String>> {
    let env = Env::new(Limits { messages_per_minute: 6, burst: 2, ..Limits::default() });
    let app = env.app();
    // The first LLM call is refused (400: `rejected`, the message fails), the rest are answered.
    let fake = FakeLlm::start(vec![Behavior::Status(400)], Behavior::Answer(Duration::ZERO)).await;
    let (worker, stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), worker_config()));

    let token = user(&app, "metrics@example.com").await;
    let conv = conversation(&app, &token).await;
    let first = post_message(&app, &token, &conv, "one").await;
    let second = post_message(&app, &token, &conv, "two").await;
    // Past the burst: 429 (aira_rate_limited_total), and a 4xx in aira_http_requests_total.
    let r = call(
        &app,
        "POST",
        &format!("/v1/conversations/{conv}/messages"),
        Some(&token),
        Some(json!({"content": "three"})),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);

    let mut ends = Vec::new();
    for id in [&first, &second] {
        wait_until("the message to be answered or failed", Duration::from_secs(20), || async {
            let m = env.store.get_message(id).await.unwrap().expect("message exists");
            matches!(m.status, Status::Answered | Status::Failed)
        })
        .await;
        ends.push(env.store.get_message(id).await.unwrap().unwrap().status);
    }
    assert!(ends.contains(&Status::Answered) && ends.contains(&Status::Failed), "{ends:?}");
    stop.cancel();
    worker.await.unwrap();

    let r = call(&env.ops(), "GET", "/metrics", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let Value::String(text) = r.body else { panic!("/metrics is not text: {:?}", r.body) };
    parse_exposition(&text)
}

/// Series names of a Prometheus text exposition, with the label names seen on each.
fn parse_exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let body = &line[end + 1..line.rfind('}').expect("closing brace")];
            for pair in split_outside_quotes(body) {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

fn split_outside_quotes(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

fn monitoring_dir() -> PathBuf {
    aira_testkit::canonical::repo_file("templates/monitoring")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn rule_files() -> Vec<PathBuf> {
    files(&monitoring_dir().join("rules"), "yml")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn template_expressions() -> Vec<Use> {
    let mut uses = Vec::new();
    for p in rule_files() {
        let text = read(&p);
        for key in ["expr", "series"] {
            uses.extend(yaml_values(&text, key).into_iter().map(|expr| Use { file: p.display().to_string(), expr }));
        }
    }
    for p in files(&monitoring_dir().join("grafana/dashboards"), "json") {
        let v: Value = serde_json::from_str(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mut exprs = Vec::new();
        collect_exprs(&v, &mut exprs);
        assert!(!exprs.is_empty(), "{}: no \"expr\" in the dashboard", p.display());
        uses.extend(exprs.into_iter().map(|expr| Use { file: p.display().to_string(), expr }));
    }
    uses
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if k == "expr" => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The values of `key:` in a YAML file, plain, quoted or block scalars (`|`, `>`). Enough for the
/// rule files, which are written in these forms; promtool checks the YAML itself.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let prefix = format!("{key}:");
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        let Some(value) = body.strip_prefix(&prefix) else { continue };
        let value = value.trim();
        let indent = line.len() - trimmed.len();
        if value.starts_with('|') || value.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join(" "));
        } else if let Some(s) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            out.push(s.replace("''", "'"));
        } else if let Some(s) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            out.push(s.replace("\\\"", "\"").replace("\\\\", "\\"));
        } else {
            out.push(value.to_string());
        }
    }
    out
}

/// The metric names of a PromQL expression, each with the label names of its `{…}` matcher.
/// Skipped: strings, `[…]` ranges, numbers and durations, Grafana variables (`$x`, `${x}`),
/// functions (an identifier followed by `(`), aggregations and other keywords, and the label lists
/// after `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    // Binary operators, modifiers, and the aggregations (which may be followed by `by (…)`).
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let s: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&s, i);
        } else if c == '[' {
            while i < s.len() && s[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            i = matcher(&s, i, &mut Vec::new());
        } else if c == '$' {
            i += 1;
            if s.get(i) == Some(&'{') {
                while i < s.len() && s[i] != '}' {
                    i += 1;
                }
                i += 1;
            }
            while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < s.len() && (s[i].is_alphanumeric() || s[i] == '.' || s[i] == '+' && matches!(s[i - 1], 'e' | 'E'))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_' || s[i] == ':') {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let mut j = i;
            while j < s.len() && s[j].is_whitespace() {
                j += 1;
            }
            let next = s.get(j).copied();
            if LABEL_LISTS.contains(&word.as_str()) {
                if next == Some('(') {
                    while j < s.len() && s[j] != ')' {
                        j += 1;
                    }
                    i = j + 1;
                }
            } else if !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) && next != Some('(') {
                let mut labels = Vec::new();
                if next == Some('{') {
                    i = matcher(&s, j, &mut labels);
                }
                out.push((word, labels));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Skips a `{…}` matcher starting at `s[i] == '{'`, collecting its label names; returns the index after `}`.
fn matcher(s: &[char], mut i: usize, labels: &mut Vec<String>) -> usize {
    i += 1;
    let mut name = String::new();
    while i < s.len() && s[i] != '}' {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(s, i);
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
        } else if !c.is_whitespace() {
            if matches!(c, '=' | '!') && !name.is_empty() {
                labels.push(std::mem::take(&mut name));
            }
            name.clear();
        }
        i += 1;
    }
    i + 1
}

/// Skips a string literal starting at `s[i]` (a quote); returns the index after its closing quote.
fn skip_string(s: &[char], mut i: usize) -> usize {
    let quote = s[i];
    i += 1;
    while i < s.len() && s[i] != quote {
        if s[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}
