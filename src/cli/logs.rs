//! `aira logs`: CloudWatch Logs of the stack's services, interleaved by time.

use std::collections::HashSet;

use serde::Serialize;

use super::args::{Global, StackArg};
use super::session::Session;
use crate::failure::{Failure, Outcome};
use crate::output::{Printer, Render};
use aira_aws::day2::{LogLine, FOLLOW_INTERVAL};
use aira_engine::stack::model::Duration;

/// Events read at once; the services' names padded to `width`.
#[derive(Serialize)]
#[serde(transparent)]
struct Batch<'a> {
    lines: &'a [LogLine],
    #[serde(skip)]
    width: usize,
}

impl Render for Batch<'_> {
    fn text(&self, p: &Printer) {
        for l in self.lines {
            let at = crate::time::millis_rfc3339(Some(l.timestamp_ms));
            p.out(&format!("{:width$} | {at} {}", l.service, l.message, width = self.width));
        }
    }

    /// One JSON document per line, as they come (`--follow` never ends).
    fn json(&self, p: &Printer) {
        for l in self.lines {
            p.out(&serde_json::to_string(l).unwrap_or_default());
        }
    }
}

pub async fn logs(
    global: &Global,
    arg: &StackArg,
    service: Option<&str>,
    follow: bool,
    since: Duration,
    printer: &Printer,
) -> Result<Outcome, Failure> {
    let session = Session::connect(global, arg, printer).await?;
    let services = session.service_names(service)?;
    let mut start = crate::time::now_millis() - since.secs() as i64 * 1000;
    let mut seen = HashSet::new();
    let width = services.iter().map(String::len).max().unwrap_or(0);
    loop {
        let lines = session.aws.log_events(session.stack(), &services, start, &mut seen).await?;
        printer.show(&Batch { lines: &lines, width });
        // Re-read the last millisecond: events that arrive later with the same time are not lost.
        start = lines.iter().map(|l| l.timestamp_ms).fold(start, i64::max);
        if !follow {
            return Ok(Outcome::Done);
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Outcome::Done),
        }
    }
}
