//! What an apply (of `up`, `down` or `rollback`) results in: the plan, the report, what a
//! teardown left behind, and how that renders and exits.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::failure::{Failure, Outcome};
use crate::output::{render_report, Printer, Render};
use aira_engine::apply::{Report, Status};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::plan::Plan;
use aira_engine::provider::Observed;

/// A plan, and the report of its apply when there was anything to apply.
#[derive(Debug, serde::Serialize)]
pub struct Applied {
    /// Where the stack answers (`up` of a stack with a domain: its name; a preview's: its host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub plan: Plan,
    pub report: Option<Report>,
    /// What a teardown could not remove (empty after `up`).
    pub left_behind: Vec<LeftBehind>,
    /// Why the stack's lock was lost during the run, which then stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_lost: Option<String>,
}

/// A resource still tagged with the stack after its teardown, and why.
#[derive(Debug)]
pub struct LeftBehind {
    pub kind: Kind,
    pub id: LogicalId,
    pub physical_id: String,
    pub reason: String,
}

impl LeftBehind {
    /// Why `o` is still there, from what the teardown's apply reported of it.
    pub fn explain(o: Observed, report: &Report) -> LeftBehind {
        let reason = report
            .outcomes
            .iter()
            .find(|r| r.id == o.id && r.kind == o.kind)
            .map(|r| match &r.status {
                Status::Failed { error } => error.clone(),
                Status::Skipped { because } => format!("not attempted: it waits on `{because}`, which failed"),
                Status::Done => "deleted, but AWS still lists it (deletion in progress)".into(),
                Status::Stopped | Status::Interrupted => "not deleted: the run stopped".into(),
            })
            .unwrap_or_else(|| "appeared during the teardown (another run?)".into());
        LeftBehind { kind: o.kind, id: o.id, physical_id: o.physical_id, reason }
    }

    fn resource(&self) -> String {
        format!("{} {} ({})", self.kind, self.id, self.physical_id)
    }
}

impl Serialize for LeftBehind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("LeftBehind", 2)?;
        st.serialize_field("resource", &self.resource())?;
        st.serialize_field("reason", &self.reason)?;
        st.end()
    }
}

impl Applied {
    /// The first failed operation: `kind id: error`.
    pub fn first_failure(&self) -> Option<(Kind, &LogicalId, &str)> {
        self.report.as_ref()?.failed().find_map(|o| match &o.status {
            Status::Failed { error } => Some((o.kind, &o.id, error.as_str())),
            _ => None,
        })
    }

    /// The stack's lock was lost: why, and what did not run.
    fn lock_lost_message(&self, reason: &str) -> String {
        let not_run: Vec<String> = (self.report.iter().flat_map(|r| &r.outcomes))
            .filter_map(|o| match o.status {
                Status::Stopped => Some(format!("{} {}", o.kind, o.id)),
                Status::Interrupted => Some(format!("{} {} (interrupted)", o.kind, o.id)),
                _ => None,
            })
            .collect();
        let stopped = match not_run.is_empty() {
            true => "every operation had ended".to_string(),
            false => format!("stopped; did not run: {}", not_run.join(", ")),
        };
        format!("lock lost: {reason}; {stopped}. Run again once the other run is done")
    }

    /// How long the apply took, against its critical path (on stderr).
    pub fn note_timing(&self, printer: &Printer) {
        if let Some(r) = &self.report {
            printer.note(&format!(
                "apply took {}; its critical path (longest chain of dependent operations) {}",
                crate::time::millis_as_seconds(r.elapsed_ms),
                crate::time::millis_as_seconds(r.critical_path_ms)
            ));
        }
    }
}

impl Render for Applied {
    /// Fails when the lock was lost, something is left, or an operation failed.
    fn outcome(&self) -> Result<Outcome, Failure> {
        if let Some(reason) = &self.lock_lost {
            return Err(Failure::internal(self.lock_lost_message(reason)));
        }
        if !self.left_behind.is_empty() {
            return Err(Failure::internal(format!(
                "{} resource(s) of the stack are left; run `aira down` again",
                self.left_behind.len()
            )));
        }
        match &self.report {
            Some(r) if !r.is_success() => {
                let first = self.first_failure().map(|(kind, id, error)| format!("{kind} {id} {error}"));
                Err(Failure::internal(format!("the apply did not complete: {}", first.unwrap_or_default())))
            }
            _ => Ok(Outcome::Done),
        }
    }

    fn text(&self, p: &Printer) {
        if let Some(r) = &self.report {
            p.out(render_report(r).trim_end());
        }
        if let Some(url) = &self.url {
            p.out(&format!("URL: {url}"));
        }
        if !self.left_behind.is_empty() {
            p.out("Left behind:");
            for l in &self.left_behind {
                p.out(&format!("  {}: {}", l.resource(), l.reason));
            }
        }
    }
}
