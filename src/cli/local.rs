//! `up`, `down` and `status` with `--local`: the stack's runtime on this machine (`crate::local`).

use std::net::SocketAddr;

use serde::Serialize;

use super::args::StackArg;
use crate::failure::Failure;
use crate::local::{self, LocalState, LocalStatus};
use crate::output::{Printer, Render};

impl Render for LocalState {
    fn text(&self, p: &Printer) {
        let metrics = self.metrics_url.as_ref().map(|m| format!("\nMetrics (Prometheus): {m}")).unwrap_or_default();
        p.out(&format!(
            "Stack `{}` runs locally at {} (pid {}, model: {}).\nData: {}  Log: {}{metrics}\nStop it with `aira down --local`.",
            self.stack,
            self.url,
            self.pid,
            self.llm,
            self.data.display(),
            self.log.display()
        ));
    }
}

/// What `down --local` did.
#[derive(Debug, Serialize)]
pub struct Stopped {
    pub stack: String,
    pub stopped_pid: Option<u32>,
    pub purged: bool,
}

impl Render for Stopped {
    fn text(&self, p: &Printer) {
        let name = &self.stack;
        let what = match self.stopped_pid {
            Some(pid) => format!("Stopped the local runtime of `{name}` (pid {pid})."),
            None => format!("The local runtime of `{name}` was not running."),
        };
        let data = if self.purged { " Its data was removed." } else { " Its data is kept (--purge removes it)." };
        p.out(&format!("{what}{data}"));
    }
}

impl Render for LocalStatus {
    fn text(&self, p: &Printer) {
        match (&self.state, self.running) {
            (Some(s), true) => p.out(&format!(
                "`{}` runs locally at {} (pid {}, {}, model: {}).\nData: {}",
                self.stack,
                s.url,
                s.pid,
                if self.healthy { "healthy" } else { "NOT answering /healthz" },
                s.llm,
                s.data.display()
            )),
            _ => p.out(&format!(
                "`{}` is not running locally. Data folder: {}",
                self.stack,
                self.dir.join("data").display()
            )),
        }
    }
}

pub async fn up(arg: &StackArg, listen: Option<SocketAddr>, printer: &Printer) -> Result<LocalState, Failure> {
    let loaded = arg.load(printer)?;
    Ok(local::up(&loaded.stack, listen, &|m: &str| printer.note(m)).await?)
}

pub async fn down(arg: &StackArg, purge: bool, printer: &Printer) -> Result<Stopped, Failure> {
    let loaded = arg.load(printer)?;
    let stack = loaded.stack.stack.0;
    let grace = std::time::Duration::from_secs(30);
    let stopped_pid = local::down(&stack, purge, grace, &|m: &str| printer.note(m)).await?;
    Ok(Stopped { stack, stopped_pid, purged: purge })
}

pub async fn status(arg: &StackArg, printer: &Printer) -> Result<LocalStatus, Failure> {
    let loaded = arg.load(printer)?;
    Ok(local::status(&loaded.stack.stack.0).await)
}
