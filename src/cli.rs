//! Command-line arguments (what the user typed) and the commands they run.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::apply::{self, Report};
use crate::expand::expand;
use crate::local;
use crate::output::{render_report, Format, Printer};
use crate::plan::{self, Plan};
use crate::provider::aws::{sdk_config, AwsProvider, Connection};
use crate::provider::{Facts, Provider, ProviderError, Scope};
use crate::stack::{self, Loaded};

#[derive(Debug, Parser)]
#[command(name = "aira", version, about = "Converge AWS to a stack file, and ship the aira chat runtime into it")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Output format: text for people, json for programs (on stdout; progress stays on stderr).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Apply without asking, including deletions and replacements.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// AWS region (default: the stack's `region`, then the SDK's configuration chain).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// AWS profile from the shared config files.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Send every AWS call to this endpoint (LocalStack, the moto server); `AWS_ENDPOINT_URL` works too.
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// Most AWS operations in flight at once.
    #[arg(long, global = true, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Longest wait for anything AWS does asynchronously (default: the stack's `deploy.timeout`).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<crate::stack::model::Duration>,
}

fn parse_duration(s: &str) -> Result<crate::stack::model::Duration, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a stack file; no AWS call is made.
    Validate(StackArg),
    /// Show what `up` would change.
    Plan {
        #[command(flatten)]
        stack: StackArg,
        /// Exit 0 when nothing would change and 2 when something would; failures then exit 3 (user errors 1).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Create or update the stack's resources to match the file.
    Up {
        #[command(flatten)]
        stack: StackArg,
        /// Run the stack on this machine instead of AWS (state under ./.aira/STACK/).
        #[arg(long)]
        local: bool,
        /// With --local: the address to serve on (default: 127.0.0.1 and the api service's port).
        #[arg(long, requires = "local")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Delete every resource of the stack (found by its tags).
    Down {
        #[command(flatten)]
        stack: StackArg,
        /// Stop the local target instead of touching AWS.
        #[arg(long)]
        local: bool,
        /// With --local: also remove the local data.
        #[arg(long, requires = "local")]
        purge: bool,
    },
    /// Show the state of the stack's local target.
    Status {
        #[command(flatten)]
        stack: StackArg,
        /// The local target (the only one `status` reports on in this version).
        #[arg(long)]
        local: bool,
    },
    /// Print the JSON Schema of the stack file format.
    Schema,
    /// Build the runtime's container image and push it to a registry (no Docker needed).
    #[command(subcommand)]
    Image(crate::image::ImageCommand),
}

#[derive(Debug, Args)]
pub struct StackArg {
    /// The stack file (default: ./aira.yaml, then ./stacks/aira.yaml).
    pub stack: Option<PathBuf>,
}

/// Why a command failed, which decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad input, or a refusal: exit 1. Already reported when the message is empty.
    #[error("{0}")]
    User(String),
    /// AWS or anything unexpected: exit 2.
    #[error(transparent)]
    Aws(#[from] anyhow::Error),
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_USER: u8 = 1;
pub const EXIT_FAILURE: u8 = 2;
/// `plan --detailed-exitcode`: changes pending.
pub const EXIT_CHANGES: u8 = 2;
/// `plan --detailed-exitcode`: a failure that is not the user's.
pub const EXIT_DETAILED_FAILURE: u8 = 3;

/// Runs a parsed command line; the exit code on success (`plan --detailed-exitcode` uses 2).
pub async fn run(cli: Cli) -> Result<u8, Failure> {
    let printer = Arc::new(Printer::new(cli.global.output));
    match &cli.command {
        Command::Schema => {
            printer.json(&stack::schema());
            Ok(EXIT_OK)
        }
        Command::Validate(arg) => {
            let loaded = load(arg, &printer)?;
            // No AWS call: zones are placeholders, enough to count the resources.
            let facts = Facts {
                region: loaded.stack.region.clone().unwrap_or_else(|| "region".into()),
                zones: (0..6).map(|i| format!("zone-{i}")).collect(),
                existing_private_route_tables: vec!["route-table".into()],
            };
            let graph = expand(&loaded.stack, &facts).map_err(Failure::User)?;
            if printer.format == Format::Json {
                printer.json(&json!({ "valid": true, "file": loaded.file, "stack": loaded.stack.stack.0, "resources": graph.resources.len() }));
            } else {
                printer.out(&format!(
                    "{}: valid stack `{}` ({} resources)",
                    loaded.file,
                    loaded.stack.stack,
                    graph.resources.len()
                ));
            }
            Ok(EXIT_OK)
        }
        Command::Plan { stack, detailed_exitcode } => {
            let result = plan_command(&cli.global, stack, &printer).await;
            match (result, detailed_exitcode) {
                (Ok(plan), true) if plan.has_changes() => Ok(EXIT_CHANGES),
                (Ok(_), _) => Ok(EXIT_OK),
                (Err(Failure::Aws(e)), true) => {
                    eprintln!("error: {e:#}");
                    Ok(EXIT_DETAILED_FAILURE)
                }
                (Err(e), _) => Err(e),
            }
        }
        Command::Up { stack, local: true, listen } => {
            let loaded = load(stack, &printer)?;
            let note = |m: &str| printer.note(m);
            let state = local::up(&loaded.stack, *listen, &note).await.map_err(Failure::Aws)?;
            if printer.format == Format::Json {
                printer.json(&serde_json::to_value(&state).map_err(anyhow::Error::from)?);
            } else {
                printer.out(&format!(
                    "Stack `{}` runs locally at {} (pid {}, model: {}).\nData: {}  Log: {}\nStop it with `aira down --local`.",
                    state.stack,
                    state.url,
                    state.pid,
                    state.llm,
                    state.data.display(),
                    state.log.display()
                ));
            }
            Ok(EXIT_OK)
        }
        Command::Down { stack, local: true, purge } => {
            let loaded = load(stack, &printer)?;
            let note = |m: &str| printer.note(m);
            let name = &loaded.stack.stack.0;
            let stopped =
                local::down(name, *purge, std::time::Duration::from_secs(30), &note).await.map_err(Failure::Aws)?;
            if printer.format == Format::Json {
                printer.json(&json!({ "stack": name, "stopped_pid": stopped, "purged": purge }));
            } else {
                let what = match stopped {
                    Some(pid) => format!("Stopped the local runtime of `{name}` (pid {pid})."),
                    None => format!("The local runtime of `{name}` was not running."),
                };
                let data = if *purge { " Its data was removed." } else { " Its data is kept (--purge removes it)." };
                printer.out(&format!("{what}{data}"));
            }
            Ok(EXIT_OK)
        }
        Command::Status { stack, local } => {
            if !local {
                return Err(Failure::User(
                    "`aira status` reports on the local target in this version: pass --local (for AWS, `aira plan` shows what exists and what differs)".into(),
                ));
            }
            let loaded = load(stack, &printer)?;
            let st = local::status(&loaded.stack.stack.0).await;
            if printer.format == Format::Json {
                printer.json(&serde_json::to_value(&st).map_err(anyhow::Error::from)?);
            } else {
                match (&st.state, st.running) {
                    (Some(s), true) => printer.out(&format!(
                        "`{}` runs locally at {} (pid {}, {}, model: {}).\nData: {}",
                        st.stack,
                        s.url,
                        s.pid,
                        if st.healthy { "healthy" } else { "NOT answering /healthz" },
                        s.llm,
                        s.data.display()
                    )),
                    _ => printer.out(&format!(
                        "`{}` is not running locally. Data folder: {}",
                        st.stack,
                        st.dir.join("data").display()
                    )),
                }
            }
            Ok(EXIT_OK)
        }
        Command::Image(command) => image(command, &printer).await,
        Command::Up { stack, .. } => up(&cli.global, stack, printer).await,
        Command::Down { stack, .. } => down(&cli.global, stack, printer).await,
    }
}

async fn image(command: &crate::image::ImageCommand, printer: &Printer) -> Result<u8, Failure> {
    use crate::image::{build, oci, push, Error, ImageCommand};
    let failure = |e: Error| match e {
        Error::Usage(m) => Failure::User(m),
        Error::Failed(e) => Failure::Aws(e),
    };
    let note = |m: &str| printer.note(m);
    let started = std::time::Instant::now();
    match command {
        ImageCommand::Build { out, binary } => {
            let epoch = crate::image::source_date_epoch().map_err(failure)?;
            let opts = build::Options { out: out.clone(), binary: binary.clone(), epoch };
            let built = build::build(&opts, &note).map_err(failure)?;
            let image = &built.image;
            let size: usize = image.layers.iter().map(|l| l.bytes.len()).sum();
            note(&format!("image built in {:.1}s: {size} bytes compressed", started.elapsed().as_secs_f64()));
            if printer.format == Format::Json {
                let layers: Vec<_> = image
                    .layers
                    .iter()
                    .zip(&image.diff_ids)
                    .map(|(l, d)| json!({ "digest": l.digest, "size": l.bytes.len(), "diff_id": d }))
                    .collect();
                printer.json(&json!({
                    "digest": image.manifest.digest,
                    "size": image.manifest.bytes.len(),
                    "layers": layers,
                    "config": image.config.digest,
                    "out": built.out,
                    "binary": built.binary,
                    "revision": built.revision,
                }));
            } else {
                printer.out(&image.manifest.digest);
            }
        }
        ImageCommand::Push { to, insecure, from } => {
            let image =
                oci::read_layout(from).map_err(|e| Failure::User(format!("{e:#} (run `aira image build` first)")))?;
            let pushed = push::push(&image, to, *insecure, &note).await.map_err(failure)?;
            note(&format!(
                "pushed in {:.1}s: {} blob(s) uploaded ({} bytes), {} already there",
                started.elapsed().as_secs_f64(),
                pushed.uploaded,
                pushed.uploaded_bytes,
                pushed.skipped
            ));
            if printer.format == Format::Json {
                printer.json(&serde_json::to_value(&pushed).map_err(anyhow::Error::from)?);
            } else {
                printer.out(&pushed.reference);
            }
        }
    }
    Ok(EXIT_OK)
}

fn stack_path(arg: &StackArg) -> Result<PathBuf, Failure> {
    if let Some(p) = &arg.stack {
        return Ok(p.clone());
    }
    ["aira.yaml", "stacks/aira.yaml"].iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
        Failure::User("no stack file given, and neither ./aira.yaml nor ./stacks/aira.yaml exists".into())
    })
}

fn load(arg: &StackArg, printer: &Printer) -> Result<Loaded, Failure> {
    let path = stack_path(arg)?;
    stack::load(&path).map_err(|diags| {
        printer.diagnostics(&diags);
        Failure::User(String::new())
    })
}

struct Session {
    loaded: Loaded,
    scope: Arc<Scope>,
    provider: Arc<dyn Provider>,
}

async fn connect(global: &Global, arg: &StackArg, printer: &Printer) -> Result<Session, Failure> {
    let loaded = load(arg, printer)?;
    let conn = Connection {
        region: global.region.clone().or_else(|| loaded.stack.region.clone()),
        profile: global.profile.clone(),
        endpoint_url: global.endpoint_url.clone(),
    };
    let config = sdk_config(&conn).await;
    if config.region().is_none() {
        return Err(Failure::User("no AWS region: set `region` in the stack, pass --region, or set AWS_REGION".into()));
    }
    let wait = global.timeout.unwrap_or(loaded.stack.deploy.timeout);
    let scope = Arc::new(Scope {
        stack: loaded.stack.stack.0.clone(),
        tags: loaded.stack.tags.clone(),
        wait: std::time::Duration::from_secs(wait.secs()),
    });
    Ok(Session { loaded, scope, provider: Arc::new(AwsProvider::new(&config)) })
}

fn provider_failure(e: ProviderError) -> Failure {
    if e.user_error {
        Failure::User(e.message)
    } else {
        Failure::Aws(e.into())
    }
}

async fn observe_and_plan(session: &Session, printer: &Printer, teardown: bool) -> Result<Plan, Failure> {
    printer.note(&format!("reading resources tagged aira:stack={}", session.scope.stack));
    let observed = async { session.provider.observe(&session.scope).await.map_err(provider_failure) };
    let result = if teardown {
        plan::teardown(&session.scope.stack, &observed.await?)
    } else {
        // Pre-flight: what the region and account hold, before anything is changed.
        let stack = &session.loaded.stack;
        let facts = async { session.provider.facts(stack.network.existing.as_ref()).await.map_err(provider_failure) };
        let (facts, observed) = tokio::try_join!(facts, observed)?;
        let graph = expand(stack, &facts).map_err(Failure::User)?;
        plan::diff(&graph, &observed)
    };
    result.map_err(|e| Failure::Aws(anyhow::anyhow!("cannot order the changes: {e}")))
}

fn show_plan(plan: &Plan, printer: &Printer) {
    if printer.format == Format::Text {
        printer.out(printer.render_plan(plan).trim_end());
    }
}

async fn plan_command(global: &Global, arg: &StackArg, printer: &Arc<Printer>) -> Result<Plan, Failure> {
    let session = connect(global, arg, printer).await?;
    let plan = observe_and_plan(&session, printer, false).await?;
    if printer.format == Format::Json {
        printer.json(&serde_json::to_value(&plan).map_err(anyhow::Error::from)?);
    } else {
        show_plan(&plan, printer);
    }
    Ok(plan)
}

/// Asks before applying; refuses a destructive plan when nobody can be asked.
fn confirm(plan: &Plan, global: &Global, verb: &str) -> Result<(), Failure> {
    if global.yes {
        return Ok(());
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !interactive {
        if plan.is_destructive() {
            return Err(Failure::User(format!(
                "refusing to {verb}: the plan deletes or replaces resources and there is no terminal to confirm; pass --yes"
            )));
        }
        return Ok(());
    }
    eprint!("{verb} these changes? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(anyhow::Error::from)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::User("cancelled; nothing was changed".into()))
    }
}

async fn execute(session: &Session, plan: &Plan, global: &Global, printer: &Arc<Printer>) -> Result<Report, Failure> {
    apply::apply(plan, session.provider.clone(), session.scope.clone(), printer.clone(), global.concurrency as usize)
        .await
        .map_err(|e| Failure::Aws(anyhow::anyhow!("cannot order the changes: {e}")))
}

fn finish(plan: &Plan, report: Option<&Report>, printer: &Printer) -> Result<u8, Failure> {
    finish_with(plan, report, &[], printer)
}

/// Prints the result; `left` lists what a teardown could not remove, with why.
fn finish_with(
    plan: &Plan,
    report: Option<&Report>,
    left: &[(String, String)],
    printer: &Printer,
) -> Result<u8, Failure> {
    if let Some(r) = report {
        printer.note(&format!(
            "apply took {:.1}s; its critical path (longest chain of dependent operations) {:.1}s",
            r.elapsed_ms as f64 / 1000.0,
            r.critical_path_ms as f64 / 1000.0
        ));
    }
    if printer.format == Format::Json {
        let left: Vec<_> = left.iter().map(|(what, why)| json!({ "resource": what, "reason": why })).collect();
        printer.json(&json!({ "plan": plan, "report": report, "left_behind": left }));
    } else {
        if let Some(r) = report {
            printer.out(render_report(r).trim_end());
        }
        if !left.is_empty() {
            printer.out("Left behind:");
            for (what, why) in left {
                printer.out(&format!("  {what}: {why}"));
            }
        }
    }
    if !left.is_empty() {
        return Err(Failure::Aws(anyhow::anyhow!(
            "{} resource(s) of the stack are left; run `aira down` again",
            left.len()
        )));
    }
    match report {
        Some(r) if !r.is_success() => {
            let first = r.failed().next().map(|o| {
                format!(
                    "{} {} {}",
                    o.kind,
                    o.id,
                    match &o.status {
                        apply::Status::Failed { error } => error.as_str(),
                        _ => "",
                    }
                )
            });
            Err(Failure::Aws(anyhow::anyhow!("the apply did not complete: {}", first.unwrap_or_default())))
        }
        _ => Ok(EXIT_OK),
    }
}

async fn up(global: &Global, arg: &StackArg, printer: Arc<Printer>) -> Result<u8, Failure> {
    let session = connect(global, arg, &printer).await?;
    let plan = observe_and_plan(&session, &printer, false).await?;
    show_plan(&plan, &printer);
    if !plan.has_changes() {
        return finish(&plan, None, &printer);
    }
    confirm(&plan, global, "apply")?;
    let report = execute(&session, &plan, global, &printer).await?;
    finish(&plan, Some(&report), &printer)
}

async fn down(global: &Global, arg: &StackArg, printer: Arc<Printer>) -> Result<u8, Failure> {
    let session = connect(global, arg, &printer).await?;
    let plan = observe_and_plan(&session, &printer, true).await?;
    if !plan.has_changes() {
        if printer.format == Format::Json {
            printer.json(&json!({ "plan": plan, "report": null }));
        } else {
            printer.out(&format!("Nothing to delete: no resource is tagged aira:stack={}.", session.scope.stack));
        }
        return Ok(EXIT_OK);
    }
    show_plan(&plan, &printer);
    confirm(&plan, global, "delete")?;
    let report = execute(&session, &plan, global, &printer).await?;
    // Read AWS again: what is still tagged with the stack, and why.
    let remaining = session.provider.observe(&session.scope).await.map_err(provider_failure)?;
    let left: Vec<(String, String)> = remaining
        .iter()
        .map(|o| {
            let why = report
                .outcomes
                .iter()
                .find(|r| r.id == o.id && r.kind == o.kind)
                .map(|r| match &r.status {
                    apply::Status::Failed { error } => error.clone(),
                    apply::Status::Skipped { because } => {
                        format!("not attempted: it waits on `{because}`, which failed")
                    }
                    apply::Status::Done => "deleted, but AWS still lists it (deletion in progress)".into(),
                })
                .unwrap_or_else(|| "appeared during the teardown (another run?)".into());
            (format!("{} {} ({})", o.kind, o.id, o.physical_id), why)
        })
        .collect();
    finish_with(&plan, Some(&report), &left, &printer)
}

/// For tests and callers that hold a path.
pub fn stack_arg(path: &Path) -> StackArg {
    StackArg { stack: Some(path.to_path_buf()) }
}
