//! The one printer: results on stdout (text or JSON), progress on stderr. A command's result
//! implements [`Render`] (its text) and `Serialize` (its JSON); [`Printer::show`] is the one
//! place that picks between them.
//!
//! Progress on a terminal is a live view: one line per operation in flight with its timer and
//! what it waits for, the finished ones printed above it. Elsewhere (a pipe, a CI log, or
//! `AIRA_PROGRESS=plain`) it is timestamped lines, every wait included.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use serde::Serialize;
use serde_json::Value;

use crate::failure::{Failure, Outcome};
use aira_engine::apply::{Events, OpKind, Report, Status};
use aira_engine::cost::{Estimate, Totals};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::plan::{Action, Plan};
use aira_engine::provider::Progress;
use aira_engine::stack::Diagnostic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub struct Printer {
    pub format: Format,
    /// ANSI colours on stdout: a terminal, and `NO_COLOR` unset.
    color: bool,
    /// ANSI colours on stderr.
    err_color: bool,
    start: Instant,
    /// Serialises progress lines from concurrent operations.
    lock: Mutex<()>,
    /// The live view of operations in flight (a terminal only).
    live: Option<Live>,
}

struct Live {
    view: MultiProgress,
    /// In start order; an id may run twice at once (a duplicate deleted while the kept one changes).
    ops: Mutex<Vec<(LogicalId, OpKind, ProgressBar)>>,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const MAGENTA: &str = "\x1b[35m";
const DIM: &str = "\x1b[2m";

impl Printer {
    pub fn new(format: Format) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let force = std::env::var_os("CLICOLOR_FORCE").is_some_and(|v| v != "0");
        Printer {
            format,
            color: force || (!no_color && std::io::stdout().is_terminal()),
            err_color: force || (!no_color && std::io::stderr().is_terminal()),
            start: Instant::now(),
            lock: Mutex::new(()),
            live: live_view().then(|| Live {
                view: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5)),
                ops: Mutex::new(Vec::new()),
            }),
        }
    }

    fn paint(&self, on: bool, style: &str, text: &str) -> String {
        if on {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// A result as text or JSON, by `--output`.
    pub fn show<R: Render + ?Sized>(&self, result: &R) {
        match self.format {
            Format::Text => result.text(self),
            Format::Json => result.json(self),
        }
    }

    /// A plan before it is applied (with the confirmation question after it): text only, since
    /// the JSON result carries the plan.
    pub fn preview(&self, plan: &Plan) {
        if self.format == Format::Text {
            self.out(self.render_plan(plan).trim_end());
        }
    }

    /// One JSON document, pretty-printed.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, value);
        let _ = writeln!(out);
    }

    pub fn out(&self, text: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }

    /// A progress or status line on stderr, with the time since the command started (above the
    /// live view, when there is one).
    pub fn note(&self, text: &str) {
        let _guard = self.lock.lock();
        let t = format!("[{:>5.1}s]", self.start.elapsed().as_secs_f64());
        let line = format!("{} {text}", self.paint(self.err_color, DIM, &t));
        match &self.live {
            Some(live) => {
                let _ = live.view.println(line);
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    pub fn diagnostics(&self, diags: &[Diagnostic]) {
        if self.format == Format::Json {
            self.json(&serde_json::json!({ "valid": false, "errors": diags }));
            return;
        }
        let mut err = std::io::stderr().lock();
        for d in diags {
            let loc = format!("{}:{}:{}", d.file, d.line, d.column);
            let _ = writeln!(
                err,
                "{}: {}: {}",
                self.paint(self.err_color, BOLD, &loc),
                self.paint(self.err_color, RED, "error"),
                d.message
            );
            if let Some(hint) = &d.hint {
                let _ = writeln!(err, "  {} {hint}", self.paint(self.err_color, DIM, "hint:"));
            }
        }
        let _ = writeln!(
            err,
            "{} error{} in the stack file; nothing was changed",
            diags.len(),
            if diags.len() == 1 { "" } else { "s" }
        );
    }

    /// The plan as a coloured diff.
    pub fn render_plan(&self, plan: &Plan) -> String {
        render_plan(plan, self.color)
    }
}

/// A command's result: its text for people; its JSON is its `Serialize`.
pub trait Render: Serialize {
    fn text(&self, p: &Printer);

    /// One pretty JSON document (`logs` prints one line per event instead).
    fn json(&self, p: &Printer) {
        p.json(self)
    }

    /// How the command ends once this is shown: done, unless the result itself is a failure
    /// (an apply that did not complete) or a plan with changes.
    fn outcome(&self) -> Result<Outcome, Failure> {
        Ok(Outcome::Done)
    }
}

impl Render for Plan {
    fn text(&self, p: &Printer) {
        p.out(p.render_plan(self).trim_end());
    }

    fn outcome(&self) -> Result<Outcome, Failure> {
        Ok(if self.has_changes() { Outcome::ChangesPending } else { Outcome::Done })
    }
}

pub fn render_plan(plan: &Plan, color: bool) -> String {
    let paint = |style: &str, text: &str| {
        if color {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    if !plan.has_changes() {
        out.push_str(&format!(
            "No changes: the {} resource{} of stack `{}` match the stack file.\n",
            plan.summary.no_op,
            if plan.summary.no_op == 1 { "" } else { "s" },
            plan.stack
        ));
        if let Some(cost) = &plan.cost {
            out.push_str(&render_cost(cost, false));
        }
        return out;
    }
    out.push_str(&format!("Plan for stack `{}`:\n\n", plan.stack));
    for step in plan.steps.iter().filter(|s| s.action != Action::NoOp) {
        let style = match step.action {
            Action::Create => GREEN,
            Action::Update => YELLOW,
            Action::Replace => MAGENTA,
            Action::Delete => RED,
            Action::NoOp => "",
        };
        let mut line = format!("  {:>3} {} {}", paint(style, step.action.symbol()), step.kind, paint(BOLD, &step.id.0));
        if let Some(reason) = &step.reason {
            line.push_str(&format!("  ({reason})"));
        }
        out.push_str(&line);
        out.push('\n');
        for c in &step.changes {
            let mut l = format!("        {}: {} → {}", c.path, short(&c.before), short(&c.after));
            if c.forces_replacement {
                l.push_str(&paint(MAGENTA, "  (forces replacement)"));
            }
            out.push_str(&l);
            out.push('\n');
        }
    }
    let s = &plan.summary;
    out.push_str(&format!(
        "\nPlan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged.\n",
        s.create, s.update, s.replace, s.delete, s.no_op
    ));
    if let Some(cost) = &plan.cost {
        out.push_str(&render_cost(cost, true));
    }
    out
}

/// The monthly cost: one line per priced resource when `by_resource`, then the totals and what
/// they leave out.
pub fn render_cost(cost: &Estimate, by_resource: bool) -> String {
    let Some(Totals { monthly: after, monthly_at_max: max, current_monthly: now, change }) = cost.totals else {
        return format!("\nCost: {}.\n", cost.notes.join("; "));
    };
    let mut out = format!(
        "\nEstimated monthly cost ({}, on-demand prices read {}, {}):\n",
        cost.region, cost.prices_checked, cost.currency
    );
    if by_resource {
        for l in &cost.lines {
            let max = l.monthly_at_max.map(|m| format!(" (up to ${m:.2})")).unwrap_or_default();
            out.push_str(&format!("  {:>10}  {} {}: {}{max}\n", format!("${:.2}", l.monthly), l.kind, l.id, l.what));
        }
    }
    let sign = if change < 0.0 { "-" } else { "+" };
    out.push_str(&format!("  {:>10}  a month", format!("${after:.2}")));
    if max > after {
        out.push_str(&format!(" (${max:.2} with every service at its maximum count)"));
    }
    out.push_str(&format!("; now ${now:.2}: {sign}${:.2} a month\n", change.abs()));
    for note in &cost.notes {
        out.push_str(&format!("  {note}\n"));
    }
    out
}

fn short(v: &Value) -> String {
    match v {
        Value::Null => "(none)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn render_report(report: &Report) -> String {
    let mut out = String::new();
    let (mut done, mut failed, mut skipped, mut stopped) = (0, 0, 0, 0);
    for o in &report.outcomes {
        match &o.status {
            Status::Done => done += 1,
            Status::Failed { error } => {
                failed += 1;
                out.push_str(&format!("  failed:  {} {} {}: {error}\n", verb(o.op), o.kind, o.id));
            }
            Status::Skipped { because } => {
                skipped += 1;
                out.push_str(&format!(
                    "  skipped: {} {} {} (it waits on `{because}`, which failed)\n",
                    verb(o.op),
                    o.kind,
                    o.id
                ));
            }
            Status::Stopped | Status::Interrupted => {
                stopped += 1;
                let how = match o.status {
                    Status::Interrupted => "interrupted",
                    _ => "not run",
                };
                out.push_str(&format!("  {how}: {} {} {} (the run stopped)\n", verb(o.op), o.kind, o.id));
            }
        }
    }
    let stopped = if stopped > 0 { format!(", {stopped} stopped") } else { String::new() };
    out.insert_str(0, &format!("Applied: {done} done, {failed} failed, {skipped} skipped{stopped}.\n"));
    out
}

fn verb(op: OpKind) -> &'static str {
    match op {
        OpKind::Create => "create",
        OpKind::Update => "update",
        OpKind::Delete => "delete",
    }
}

/// The live view is for a person at a terminal: stderr is one, `TERM` is not `dumb`, and
/// `AIRA_PROGRESS` is not `plain`.
fn live_view() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
        && std::env::var("AIRA_PROGRESS").map_or(true, |p| p != "plain")
}

impl Progress for Printer {
    fn waiting(&self, id: &LogicalId, what: &str) {
        let op = self.live.as_ref().and_then(|l| {
            l.ops.lock().unwrap().iter().rev().find(|(running, ..)| running == id).map(|(.., bar)| bar.clone())
        });
        match op {
            Some(op) => op.set_message(what.to_string()),
            None => self.note(&format!("… {id}: {what}")),
        }
    }
}

impl Events for Printer {
    fn started(&self, id: &LogicalId, kind: Kind, op: OpKind) {
        let ing = match op {
            OpKind::Create => "creating",
            OpKind::Update => "updating",
            OpKind::Delete => "deleting",
        };
        let Some(live) = &self.live else {
            self.note(&format!("{ing} {kind} {id}"));
            return;
        };
        let style = ProgressStyle::with_template("{spinner:.dim} {elapsed:>4.dim} {prefix} {wide_msg:.dim}")
            .expect("a valid template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
        let bar = live.view.add(ProgressBar::new_spinner().with_style(style).with_prefix(format!("{ing} {kind} {id}")));
        bar.enable_steady_tick(Duration::from_millis(200));
        live.ops.lock().unwrap().push((id.clone(), op, bar));
    }

    fn finished(&self, id: &LogicalId, kind: Kind, op: OpKind, elapsed: Duration, error: Option<&str>) {
        if let Some(live) = &self.live {
            let mut ops = live.ops.lock().unwrap();
            if let Some(at) = ops.iter().position(|(running, o, _)| running == id && *o == op) {
                let (.., bar) = ops.remove(at);
                bar.finish_and_clear();
                live.view.remove(&bar);
            }
        }
        let secs = crate::time::seconds(elapsed);
        match error {
            None => {
                let ed = match op {
                    OpKind::Create => "created",
                    OpKind::Update => "updated",
                    OpKind::Delete => "deleted",
                };
                let mark = self.paint(self.err_color, GREEN, "✓");
                self.note(&format!("{mark} {ed} {kind} {id} in {secs}"));
            }
            Some(e) => {
                let mark = self.paint(self.err_color, RED, "✗");
                self.note(&format!("{mark} {} {kind} {id} failed after {secs}: {e}", verb(op)));
            }
        }
    }
}
