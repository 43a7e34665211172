//! Command-line arguments (what the user typed) and the commands they run.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::local;
use crate::output::{render_report, Format, Printer};
use aira_aws::{lock, sdk_config, AwsProvider, Connection, LocalImage};
use aira_engine::apply::{self, Report};
use aira_engine::expand::{expand, Image};
use aira_engine::plan::{self, Plan};
use aira_engine::provider::{Facts, Provider, ProviderError, Scope};
use aira_engine::stack::{self, Loaded};
use aira_image::build;

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
    /// `up`/`down`: remove the stack's lock first, whoever holds it (after a run that died).
    #[arg(long, global = true)]
    pub force_unlock: bool,
    /// `up`/`down`: how long the stack's lock outlives a run that stopped renewing it.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "2m")]
    pub lock_ttl: aira_engine::stack::model::Duration,
    /// Longest wait for anything AWS does asynchronously (default: the stack's `deploy.timeout`).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<aira_engine::stack::model::Duration>,
}

fn parse_duration(s: &str) -> Result<aira_engine::stack::model::Duration, String> {
    s.parse()
}

fn parse_selector(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not a selector: write key=value")),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a stack file; no AWS call is made.
    Validate(StackArg),
    /// Show what `up` would change.
    Plan {
        #[command(flatten)]
        stack: StackArg,
        #[command(flatten)]
        image: ImageArgs,
        /// Exit 0 when nothing would change and 2 when something would; failures then exit 3 (user errors 1).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Create or update the stack's resources to match the file.
    Up {
        #[command(flatten)]
        stack: StackArg,
        #[command(flatten)]
        image: ImageArgs,
        /// Run the stack on this machine instead of AWS (state under ./.aira/STACK/).
        #[arg(long)]
        local: bool,
        /// With --local: the address to serve on (default: 127.0.0.1 and the api service's port).
        #[arg(long, requires = "local")]
        listen: Option<std::net::SocketAddr>,
        /// Time to live: resources are tagged with it, and `down --all --expired` removes the stack after it.
        #[arg(long, value_parser = parse_duration, conflicts_with = "local")]
        ttl: Option<aira_engine::stack::model::Duration>,
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
        /// Every stack in the account and region that matches the filters below (no stack file).
        #[arg(long, conflicts_with = "local")]
        all: bool,
        /// With --all: only stacks whose resources carry this tag (`key=value`; repeatable, all must match).
        #[arg(long, requires = "all", value_parser = parse_selector)]
        selector: Vec<(String, String)>,
        /// With --all: only stacks created longer ago than this.
        #[arg(long, requires = "all", value_parser = parse_duration)]
        older_than: Option<aira_engine::stack::model::Duration>,
        /// With --all: only stacks past their time to live (`up --ttl`).
        #[arg(long, requires = "all")]
        expired: bool,
    },
    /// The stack's services' logs (CloudWatch Logs), interleaved by time, prefixed by service.
    Logs {
        #[command(flatten)]
        stack: StackArg,
        /// One service (default: all of the stack's services).
        service: Option<String>,
        /// Keep reading new events until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// How far back to start.
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        since: aira_engine::stack::model::Duration,
    },
    /// Roll services back to their previous (or a named) task definition revision and wait;
    /// nothing is deregistered, so `aira up` rolls forward again.
    Rollback {
        #[command(flatten)]
        stack: StackArg,
        /// Only this service (required with --to when the stack has several).
        #[arg(long)]
        service: Option<String>,
        /// The task definition revision to run.
        #[arg(long, value_name = "REVISION")]
        to: Option<u32>,
    },
    /// What exists of the stack, whether it matches the file, services, queue depths, the lock.
    Status {
        #[command(flatten)]
        stack: StackArg,
        /// The local target instead of AWS.
        #[arg(long)]
        local: bool,
    },
    /// The dead-letter queue of the stack: messages the worker gave up on.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Secrets Manager secrets of the stack (the model's API key). Values are never printed.
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Print the JSON Schema of the stack file format.
    Schema,
    /// Build the runtime's container image and push it to a registry (no Docker needed).
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
pub enum SecretAction {
    /// Create or update a secret; the value is read from standard input (or asked for), never
    /// taken from the command line.
    Set {
        /// The secret's name, e.g. `aira/openai`.
        name: String,
    },
    /// The secrets a stack references, and whether each exists.
    List {
        #[command(flatten)]
        stack: StackArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead letters (ids, receive counts, times) without consuming them.
    List {
        #[command(flatten)]
        stack: StackArg,
        /// Most messages to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One dead letter in full.
    Show {
        #[command(flatten)]
        stack: StackArg,
        /// The message id (from `aira dlq list`).
        #[arg(long)]
        id: String,
    },
    /// Move dead letters back to the queue, to be processed again.
    Redrive {
        #[command(flatten)]
        stack: StackArg,
        /// Move at most this many (client-side move).
        #[arg(long)]
        limit: Option<u64>,
        /// Move them from this machine (send, then delete) even where SQS could move them itself.
        #[arg(long)]
        client_side: bool,
    },
    /// Delete every dead letter (asks first; --yes without a terminal).
    Purge {
        #[command(flatten)]
        stack: StackArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the runtime image (static binary, one layer) into an OCI image layout; prints its digest.
    Build {
        /// The image layout folder.
        #[arg(long, default_value = aira_image::DEFAULT_DIR)]
        out: PathBuf,
        /// Use this static aira-runtime instead of building it from the source tree.
        #[arg(long, env = "AIRA_RUNTIME_STATIC_BIN")]
        binary: Option<PathBuf>,
    },
    /// Push an image layout to a registry; prints REGISTRY/REPOSITORY@sha256:….
    Push {
        /// REGISTRY/REPOSITORY[:TAG]; without a tag the manifest is pushed by digest.
        #[arg(long)]
        to: aira_image::push::Reference,
        /// Plain HTTP (only for a registry on loopback).
        #[arg(long)]
        insecure: bool,
        /// The image layout folder.
        #[arg(long, default_value = aira_image::DEFAULT_DIR)]
        from: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct StackArg {
    /// The stack file (default: ./aira.yaml, then ./stacks/aira.yaml).
    pub stack: Option<PathBuf>,
    /// An isolated copy of the stack named `<stack>-<suffix>` (a preview environment, e.g. pr-123).
    #[arg(long)]
    pub name_suffix: Option<String>,
}

/// Which image the services run: built from this source tree and pushed (the default), or given.
#[derive(Debug, Clone, Default, Args)]
pub struct ImageArgs {
    /// Deploy this prebuilt image (`REPOSITORY@sha256:…`) instead of building one (the CI path).
    #[arg(long, value_name = "REF", conflicts_with_all = ["registry", "runtime_binary"])]
    pub image: Option<String>,
    /// Push the built image to REGISTRY/REPOSITORY instead of the stack's ECR repository.
    #[arg(long, value_name = "REGISTRY/REPOSITORY")]
    pub registry: Option<aira_image::push::Reference>,
    /// Plain HTTP to --registry (allowed for a registry on loopback only).
    #[arg(long, requires = "registry")]
    pub insecure_registry: bool,
    /// Put this static aira-runtime in the image instead of building it with cargo.
    #[arg(long, env = "AIRA_RUNTIME_STATIC_BIN", value_name = "PATH")]
    pub runtime_binary: Option<PathBuf>,
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
            // No AWS call: placeholders are enough to count the resources.
            let image = Image::Reference("registry.invalid/aira@sha256:0".into());
            let graph = expand(&loaded.stack, &Facts::offline(&loaded.stack), &image).map_err(Failure::User)?;
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
        Command::Plan { stack, image, detailed_exitcode } => {
            let result = plan_command(&cli.global, stack, image, &printer).await;
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
        Command::Up { stack, local: true, listen, .. } => {
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
        Command::Down { stack, local: true, purge, .. } => {
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
                return aws_status(&cli.global, stack, &printer).await;
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
        Command::Dlq { action } => dlq(&cli.global, action, &printer).await,
        Command::Logs { stack, service, follow, since } => {
            logs(&cli.global, stack, service.as_deref(), *follow, *since, &printer).await
        }
        Command::Rollback { stack, service, to } => {
            rollback(&cli.global, stack, service.as_deref(), *to, printer.clone()).await
        }
        Command::Secret { action } => secret(&cli.global, action, &printer).await,
        Command::Up { stack, image, ttl, .. } => up(&cli.global, stack, image, *ttl, printer).await,
        Command::Down { all: true, selector, older_than, expired, .. } => {
            sweep(&cli.global, selector, *older_than, *expired, printer).await
        }
        Command::Down { stack, .. } => down(&cli.global, stack, printer).await,
    }
}

async fn image(command: &ImageCommand, printer: &Printer) -> Result<u8, Failure> {
    use aira_image::{build, oci, push, Error};
    let failure = |e: Error| match e {
        Error::Usage(m) => Failure::User(m),
        Error::Failed(e) => Failure::Aws(e),
    };
    let note = |m: &str| printer.note(m);
    let started = std::time::Instant::now();
    match command {
        ImageCommand::Build { out, binary } => {
            let epoch = aira_image::source_date_epoch().map_err(failure)?;
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
            let auth = push::env_auth().map_err(failure)?;
            let pushed = push::push(&image, to, *insecure, auth, &note).await.map_err(failure)?;
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
    let mut loaded = stack::load(&path).map_err(|diags| {
        printer.diagnostics(&diags);
        Failure::User(String::new())
    })?;
    if let Some(suffix) = &arg.name_suffix {
        let name = format!("{}-{suffix}", loaded.stack.stack.0);
        stack::check_format("stack-name", &name).map_err(|e| Failure::User(format!("--name-suffix: {e}")))?;
        loaded.stack.stack.0 = name;
    }
    Ok(loaded)
}

struct Session {
    loaded: Loaded,
    /// What the services run (`prepare_image`); unused by teardowns.
    image: Image,
    scope: Arc<Scope>,
    provider: Arc<dyn Provider>,
    /// The same provider, for AWS-only operations (the dead-letter queue).
    aws: Arc<AwsProvider>,
}

/// The SDK configuration from the flags (then `stack_region`, then the SDK's chain); a region is required.
async fn account(global: &Global, stack_region: Option<&String>) -> Result<aira_aws::SdkConfig, Failure> {
    let conn = Connection {
        region: global.region.clone().or_else(|| stack_region.cloned()),
        profile: global.profile.clone(),
        endpoint_url: global.endpoint_url.clone(),
    };
    let config = sdk_config(&conn).await;
    if config.region().is_none() {
        return Err(Failure::User("no AWS region: set `region` in the stack, pass --region, or set AWS_REGION".into()));
    }
    Ok(config)
}

async fn connect(global: &Global, arg: &StackArg, printer: &Printer) -> Result<Session, Failure> {
    let loaded = load(arg, printer)?;
    let config = account(global, loaded.stack.region.as_ref()).await?;
    let wait = global.timeout.unwrap_or(loaded.stack.deploy.timeout);
    let scope = Arc::new(Scope {
        stack: loaded.stack.stack.0.clone(),
        tags: loaded.stack.tags.clone(),
        wait: std::time::Duration::from_secs(wait.secs()),
    });
    let aws = Arc::new(AwsProvider::new(&config));
    let image = Image::Reference(String::new());
    Ok(Session { loaded, image, scope, provider: aws.clone(), aws })
}

fn provider_failure(e: ProviderError) -> Failure {
    if e.is_user() {
        Failure::User(e.message)
    } else {
        Failure::Aws(e.into())
    }
}

async fn observe_and_plan(session: &Session, printer: &Printer, teardown: bool) -> Result<Plan, Failure> {
    observe_and_plan_with(session, printer, teardown, Some(&session.image)).await
}

/// `image: None` plans with the image the services run now (for `status`: a drift check that
/// does not build anything).
async fn observe_and_plan_with(
    session: &Session,
    printer: &Printer,
    teardown: bool,
    image: Option<&Image>,
) -> Result<Plan, Failure> {
    printer.note(&format!("reading resources tagged aira:stack={}", session.scope.stack));
    let observed = async { session.provider.observe(&session.scope).await.map_err(provider_failure) };
    let result = if teardown {
        plan::teardown(&session.scope.stack, &observed.await?)
    } else {
        // Pre-flight: what the region and account hold, before anything is changed.
        let stack = &session.loaded.stack;
        let facts = async { session.provider.facts(stack).await.map_err(provider_failure) };
        let (facts, observed) = tokio::try_join!(facts, observed)?;
        for note in &facts.notes {
            printer.note(note);
        }
        let in_use;
        let image = match image {
            Some(i) => i,
            None => {
                in_use = image_in_use(&observed);
                &in_use
            }
        };
        let graph = expand(stack, &facts, image).map_err(Failure::User)?;
        plan::diff(&graph, &observed)
    };
    result.map_err(|e| Failure::Aws(anyhow::anyhow!("cannot order the changes: {e}")))
}

/// The image the stack's task definitions name now, in the form `expand` gives it.
fn image_in_use(observed: &[aira_engine::provider::Observed]) -> Image {
    use aira_engine::graph::Kind;
    let Some(image) = observed.iter().find(|o| o.kind == Kind::TaskDefinition).map(|t| &t.props["container"]["image"])
    else {
        return Image::Reference(String::new());
    };
    let (Some(repo), Some(digest)) = (image["repository"].as_str(), image["digest"].as_str()) else {
        return Image::Reference(image.as_str().unwrap_or_default().to_string());
    };
    let ecr = observed.iter().find(|o| o.kind == Kind::Repository).and_then(|r| r.outputs.get("uri")?.as_str());
    let repository = (ecr != Some(repo)).then(|| repo.to_string());
    Image::Built { digest: digest.to_string(), repository }
}

fn show_plan(plan: &Plan, printer: &Printer) {
    if printer.format == Format::Text {
        printer.out(printer.render_plan(plan).trim_end());
    }
}

/// The image the stack's services run: `--image`, else the stack's `image`, else the runtime
/// built here (reproducibly: an unchanged source gives the same digest, hence no new task
/// definition), handed to the provider to push when a task definition first needs it.
async fn prepare_image(session: &Session, args: &ImageArgs, printer: &Printer) -> Result<Image, Failure> {
    let stack = &session.loaded.stack;
    if stack.services.is_empty() {
        return Ok(Image::Reference(String::new()));
    }
    if let Some(r) = args.image.clone().or_else(|| stack.image.as_ref().map(|i| i.0.clone())) {
        return Ok(Image::Reference(r));
    }
    if let Some(r) = &args.registry {
        if args.insecure_registry && !r.is_loopback() {
            return Err(Failure::User(format!(
                "--insecure-registry: `{}` is not on loopback; plain HTTP is allowed for a loopback registry only",
                r.registry
            )));
        }
        if r.tag.is_some() {
            return Err(Failure::User(format!(
                "--registry {r}: name a repository without a tag (images are deployed by digest)"
            )));
        }
    }
    let usage = |e: aira_image::Error| match e {
        aira_image::Error::Usage(m) => Failure::User(m),
        aira_image::Error::Failed(e) => Failure::Aws(e),
    };
    let epoch = aira_image::source_date_epoch().map_err(usage)?;
    let out = PathBuf::from(aira_image::DEFAULT_DIR);
    let opts = build::Options { out, binary: args.runtime_binary.clone(), epoch };
    let started = std::time::Instant::now();
    let note = |m: &str| printer.note(m);
    let built = tokio::task::block_in_place(|| build::build(&opts, &note)).map_err(usage)?;
    let digest = built.image.manifest.digest.clone();
    printer.note(&format!("image {digest} built in {:.1}s", started.elapsed().as_secs_f64()));
    session.aws.set_image(LocalImage { image: built.image, insecure: args.insecure_registry }).await;
    Ok(Image::Built { digest, repository: args.registry.as_ref().map(|r| format!("{}/{}", r.registry, r.repository)) })
}

async fn plan_command(
    global: &Global,
    arg: &StackArg,
    image: &ImageArgs,
    printer: &Arc<Printer>,
) -> Result<Plan, Failure> {
    let mut session = connect(global, arg, printer).await?;
    session.image = prepare_image(&session, image, printer).await?;
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
    if !global.yes && !interactive() && !plan.is_destructive() {
        return Ok(()); // creations and updates need no one to ask in CI
    }
    ask(global, &format!("{verb} these changes?"), "the plan deletes or replaces resources")
}

fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The one confirmation rule: `--yes` goes on; in a terminal, ask; without one, refuse (exit 1).
fn ask(global: &Global, question: &str, why: &str) -> Result<(), Failure> {
    if global.yes {
        return Ok(());
    }
    if !interactive() {
        return Err(Failure::User(format!("refusing: {why} and there is no terminal to confirm; pass --yes")));
    }
    eprint!("{question} [y/N] ");
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

/// `down --all`: tears down every matching stack, in parallel, each in safe order.
async fn sweep(
    global: &Global,
    selector: &[(String, String)],
    older_than: Option<aira_engine::stack::model::Duration>,
    expired: bool,
    printer: Arc<Printer>,
) -> Result<u8, Failure> {
    let config = account(global, None).await?;
    let aws = Arc::new(AwsProvider::new(&config));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let all = aws.stacks().await.map_err(provider_failure)?;
    let matched: Vec<_> = all
        .into_iter()
        .filter(|s| selector.iter().all(|(k, v)| s.tags.get(k) == Some(v)))
        .filter(|s| older_than.is_none_or(|d| s.created_at.is_some_and(|c| now.saturating_sub(c) > d.secs())))
        .filter(|s| !expired || s.expires_at.is_some_and(|e| e <= now))
        .collect();
    printer.note(&format!(
        "{} stack(s) match: {}",
        matched.len(),
        matched.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    if matched.is_empty() {
        if printer.format == Format::Json {
            printer.json(&json!({ "matched": [], "removed": [], "failed": [] }));
        } else {
            printer.out("No stack matches; nothing to delete.");
        }
        return Ok(EXIT_OK);
    }
    ask(
        global,
        &format!("delete every resource of {} stack(s)?", matched.len()),
        &format!("this deletes {} stack(s)", matched.len()),
    )?;
    let wait = std::time::Duration::from_secs(global.timeout.map_or(30 * 60, |t| t.secs()));
    let mut tasks = tokio::task::JoinSet::new();
    for s in &matched {
        let scope = Arc::new(Scope { stack: s.name.clone(), tags: Default::default(), wait });
        let (aws, printer, concurrency) = (aws.clone(), printer.clone(), global.concurrency as usize);
        let lock_ttl = std::time::Duration::from_secs(global.lock_ttl.secs().max(3));
        tasks.spawn(async move {
            let name = scope.stack.clone();
            let provider: Arc<dyn Provider> = aws.clone();
            let result: Result<Vec<String>, String> = async {
                let lock = match lock::acquire(aws.dynamodb(), &name, lock_ttl).await {
                    Ok(l) => l,
                    Err(lock::LockError::Held { holder, .. }) => return Err(format!("locked by {holder}")),
                    Err(lock::LockError::Aws(e)) => return Err(e.message),
                };
                let outcome = async {
                    let observed = provider.observe(&scope).await.map_err(|e| e.message)?;
                    let plan = plan::teardown(&name, &observed).map_err(|e| e.to_string())?;
                    let report = apply::apply(&plan, provider.clone(), scope.clone(), printer.clone(), concurrency)
                        .await
                        .map_err(|e| e.to_string())?;
                    let left = provider.observe(&scope).await.map_err(|e| e.message)?;
                    if let Some(f) = report.failed().next() {
                        if let apply::Status::Failed { error } = &f.status {
                            return Err(format!("{} {}: {error}; {} resource(s) left", f.kind, f.id, left.len()));
                        }
                    }
                    Ok(left.iter().map(|o| format!("{} {}", o.kind, o.id)).collect())
                }
                .await;
                lock.release().await;
                outcome
            }
            .await;
            (name, result)
        });
    }
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.map_err(|e| Failure::Aws(anyhow::anyhow!("a teardown task panicked: {e}")))?;
        match result {
            Ok(left) if left.is_empty() => removed.push(name),
            Ok(left) => failed.push((name, format!("left behind: {}", left.join(", ")))),
            Err(e) => failed.push((name, e)),
        }
    }
    removed.sort();
    failed.sort();
    if printer.format == Format::Json {
        let failed: Vec<_> = failed.iter().map(|(s, e)| json!({ "stack": s, "error": e })).collect();
        printer.json(&json!({ "matched": matched, "removed": removed, "failed": failed }));
    } else {
        for s in &removed {
            printer.out(&format!("removed  {s}"));
        }
        for (s, e) in &failed {
            printer.out(&format!("FAILED   {s}: {e}"));
        }
    }
    if failed.is_empty() {
        Ok(EXIT_OK)
    } else {
        Err(Failure::Aws(anyhow::anyhow!(
            "{} of {} stack(s) could not be removed completely",
            failed.len(),
            matched.len()
        )))
    }
}

/// Reads a line from the terminal without echoing it.
fn read_hidden(into: &mut String) -> std::io::Result<()> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let original = tcgetattr(&stdin)?;
    let mut quiet = original.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let read = stdin.read_line(into);
    tcsetattr(&stdin, SetArg::TCSANOW, &original)?;
    read.map(drop)
}

async fn secret(global: &Global, action: &SecretAction, printer: &Arc<Printer>) -> Result<u8, Failure> {
    use aira_aws::secrets;
    match action {
        SecretAction::Set { name } => {
            let interactive = std::io::stdin().is_terminal();
            let mut value = String::new();
            if interactive {
                eprint!("value of secret `{name}` (not echoed; end with Enter): ");
                let _ = std::io::stderr().flush();
                read_hidden(&mut value).map_err(anyhow::Error::from)?;
                eprintln!();
            } else {
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut value).map_err(anyhow::Error::from)?;
            }
            let value = value.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                return Err(Failure::User(
                    "empty secret value: pipe it on standard input, e.g. `aira secret set NAME < key.txt`".into(),
                ));
            }
            let config = account(global, None).await?;
            let aws = AwsProvider::new(&config);
            let created = secrets::set(aws.secrets(), name, value).await.map_err(provider_failure)?;
            if printer.format == Format::Json {
                printer.json(&json!({ "name": name, "created": created }));
            } else {
                printer.out(&format!("{} secret `{name}`.", if created { "Created" } else { "Updated" }));
            }
            Ok(EXIT_OK)
        }
        SecretAction::List { stack } => {
            let session = connect(global, stack, printer).await?;
            let mut refs = Vec::new();
            if let Some(key) = session.loaded.stack.llm.as_ref().and_then(|l| l.api_key.as_ref()) {
                refs.push((key.secret.clone(), "llm.api_key".to_string()));
            }
            let mut infos = Vec::new();
            for (name, used_for) in &refs {
                infos.push(secrets::describe(session.aws.secrets(), name, used_for).await.map_err(provider_failure)?);
            }
            if printer.format == Format::Json {
                printer.json(&json!({ "stack": session.scope.stack, "secrets": infos }));
            } else if infos.is_empty() {
                printer.out(&format!("Stack `{}` references no secret.", session.scope.stack));
            } else {
                for i in &infos {
                    let state =
                        if i.exists { "exists" } else { "MISSING: create it with `aira secret set NAME < file`" };
                    printer.out(&format!("{}  ({})  {state}", i.name, i.used_for));
                }
            }
            Ok(EXIT_OK)
        }
    }
}

/// `aira status` on AWS: resources by kind, drift, services, endpoint, certificate, queues, the lock.
async fn aws_status(global: &Global, arg: &StackArg, printer: &Arc<Printer>) -> Result<u8, Failure> {
    use aira_aws::dlq as ops;
    use aira_engine::graph::Kind;
    let session = connect(global, arg, printer).await?;
    let stack = session.scope.stack.clone();
    let plan = observe_and_plan_with(&session, printer, false, None).await?;
    let observed: Vec<&aira_engine::provider::Observed> =
        plan.steps.iter().filter_map(|s| s.current.as_ref()).collect();
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for o in &observed {
        *kinds.entry(o.kind.name().to_string()).or_default() += 1;
    }
    let output = |kind: Kind, key: &str| -> Option<String> {
        observed.iter().find(|o| o.kind == kind).and_then(|o| o.outputs.get(key)?.as_str().map(String::from))
    };
    // The queues were just observed for the plan: no second lookup.
    let queues = match ops::QueuePair::find(observed.iter().copied()) {
        Some(pair) => {
            let sqs = session.aws.sqs();
            let depth = ops::queue_depth(sqs, &pair.queue_url).await.map_err(provider_failure)?;
            let dead = ops::depth(sqs, &pair.dlq_url).await.map_err(provider_failure)?;
            let name = pair.queue_url.rsplit('/').next().unwrap_or_default();
            let oldest = session.aws.oldest_message_age(name).await.map_err(provider_failure)?;
            Some(json!({
                "queue": pair.queue_url, "visible": depth.0, "in_flight": depth.1, "delayed": depth.2,
                "oldest_age_secs": oldest, "dead_letters": dead,
            }))
        }
        None => None,
    };
    let services = session.aws.services_status(&stack).await.map_err(provider_failure)?;
    let mut targets = Vec::new();
    for tg in observed.iter().filter(|o| o.kind == Kind::TargetGroup) {
        let health = session.aws.target_health(&tg.physical_id).await.map_err(provider_failure)?;
        targets.push(json!({ "target_group": tg.id, "health": health }));
    }
    let certificate = match output(Kind::Certificate, "arn") {
        Some(arn) => {
            let (status, expires) = session.aws.certificate_status(&arn).await.map_err(provider_failure)?;
            Some(json!({ "arn": arn, "status": status, "expires_at": expires }))
        }
        None => None,
    };
    let url = match (&session.loaded.stack.domain, output(Kind::LoadBalancer, "dns_name")) {
        (Some(d), Some(_)) if certificate.is_some() => Some(format!("https://{}/", d.name)),
        (_, Some(dns)) => Some(format!("http://{dns}/")),
        _ => None,
    };
    let lock = lock::holder_of(session.aws.dynamodb(), &stack).await;
    let changes = plan.steps.iter().filter(|s| s.action != plan::Action::NoOp).count();
    if printer.format == Format::Json {
        printer.json(&json!({
            "stack": stack,
            "url": url,
            "resources": kinds,
            "pending_changes": changes,
            "summary": plan.summary,
            "services": services,
            "targets": targets,
            "certificate": certificate,
            "queues": queues,
            "lock": lock,
        }));
        return Ok(EXIT_OK);
    }
    let total: usize = kinds.values().sum();
    printer.out(&format!("Stack `{stack}`: {total} resource(s) on AWS."));
    if let Some(url) = &url {
        printer.out(&format!("URL: {url}"));
    }
    for (k, n) in &kinds {
        printer.out(&format!("  {n:>3} {k}"));
    }
    printer.out(&if changes == 0 {
        "In sync with the stack file.".to_string()
    } else {
        format!("{changes} change(s) pending: run `aira plan` to see them.")
    });
    for s in &services {
        printer.out(&format!(
            "Service {}: {} running of {} desired, {} pending; {} ({})",
            s.name,
            s.running,
            s.desired,
            s.pending,
            s.task_definition,
            s.image.as_deref().unwrap_or("no image")
        ));
        for d in s.deployments.iter().filter(|d| d.status != "PRIMARY" || d.rollout.as_deref() != Some("COMPLETED")) {
            printer.out(&format!(
                "  deployment {} {} {}: {}/{} running, {} pending{}",
                d.id,
                d.status,
                d.rollout.as_deref().unwrap_or("-"),
                d.running,
                d.desired,
                d.pending,
                d.rollout_reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }
        if let Some(e) = s.events.first() {
            printer.out(&format!("  latest event: {e}"));
        }
    }
    for t in &targets {
        printer.out(&format!("Targets of {}: {}", t["target_group"].as_str().unwrap_or(""), t["health"]["states"]));
    }
    if let Some(c) = &certificate {
        printer.out(&format!(
            "Certificate: {}, expires {}",
            c["status"].as_str().unwrap_or("?"),
            c["expires_at"].as_i64().map_or_else(|| "-".into(), |t| aira_image::oci::rfc3339(t.max(0) as u64))
        ));
    }
    if let Some(q) = &queues {
        printer.out(&format!(
            "Queue: {} waiting (oldest {}), {} in flight, {} delayed; dead letters: {}.",
            q["visible"],
            q["oldest_age_secs"].as_u64().map_or_else(|| "-".into(), |s| format!("{s}s")),
            q["in_flight"],
            q["delayed"],
            q["dead_letters"]
        ));
    }
    match &lock {
        Some(l) => printer.out(&format!(
            "Locked by {} until {}.",
            l["holder"].as_str().unwrap_or("?"),
            l["expires_at"].as_u64().map_or_else(|| "-".into(), aira_image::oci::rfc3339)
        )),
        None => printer.out("Not locked."),
    }
    Ok(EXIT_OK)
}

/// The one service named (it must be in the stack), or all of them.
fn service_names(session: &Session, service: Option<&str>) -> Result<Vec<String>, Failure> {
    let services = &session.loaded.stack.services;
    match service {
        Some(s) if services.contains_key(s) => Ok(vec![s.to_string()]),
        Some(s) => {
            let hint = aira_engine::stack::did_you_mean(s, services.keys().map(String::as_str))
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            Err(Failure::User(format!("stack `{}` has no service `{s}`{hint}", session.scope.stack)))
        }
        None => Ok(services.keys().cloned().collect()),
    }
}

/// `aira logs`: CloudWatch Logs of the stack's services, interleaved by time.
async fn logs(
    global: &Global,
    arg: &StackArg,
    service: Option<&str>,
    follow: bool,
    since: aira_engine::stack::model::Duration,
    printer: &Printer,
) -> Result<u8, Failure> {
    let session = connect(global, arg, printer).await?;
    let services = service_names(&session, service)?;
    let now_ms =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut start = now_ms() - since.secs() as i64 * 1000;
    let mut seen = std::collections::HashSet::new();
    let width = services.iter().map(String::len).max().unwrap_or(0);
    loop {
        let lines = session
            .aws
            .log_events(&session.scope.stack, &services, start, &mut seen)
            .await
            .map_err(provider_failure)?;
        for l in &lines {
            if printer.format == Format::Json {
                printer.out(&serde_json::to_string(l).map_err(anyhow::Error::from)?);
            } else {
                let at = aira_image::oci::rfc3339((l.timestamp_ms / 1000).max(0) as u64);
                printer.out(&format!("{:width$} | {at} {}", l.service, l.message));
            }
            // Re-read the last millisecond: events that arrive later with the same time are not lost.
            start = start.max(l.timestamp_ms);
        }
        if !follow {
            return Ok(EXIT_OK);
        }
        tokio::select! {
            _ = tokio::time::sleep(aira_aws::day2::FOLLOW_INTERVAL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(EXIT_OK),
        }
    }
}

/// `aira rollback`: each service (or one) to its previous or a named revision, then wait.
async fn rollback(
    global: &Global,
    arg: &StackArg,
    service: Option<&str>,
    to: Option<u32>,
    printer: Arc<Printer>,
) -> Result<u8, Failure> {
    let session = connect(global, arg, &printer).await?;
    if service.is_none() && to.is_some() && session.loaded.stack.services.len() > 1 {
        return Err(Failure::User("--to names a revision of one service's task definition: add --service NAME".into()));
    }
    let names = service_names(&session, service)?;
    let lock = take_lock(global, &session, &printer).await?;
    let mut results = Vec::new();
    let mut failed = None;
    for name in &names {
        let step = async {
            let (from, to, arn) = session.aws.rollback(&session.scope.stack, name, to).await?;
            printer.note(&format!("service {name}: {from} → {to}; waiting for the deployment"));
            session.aws.wait_for_service(&session.scope, name, &arn, &*printer).await?;
            Ok::<_, ProviderError>((from, to))
        };
        match step.await {
            Ok((from, to)) => results.push(json!({ "service": name, "from": from, "to": to })),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    lock.release().await;
    if let Some(e) = failed {
        return Err(provider_failure(e));
    }
    if printer.format == Format::Json {
        printer.json(&json!({ "stack": session.scope.stack, "rolled_back": results }));
    } else {
        for r in &results {
            printer.out(&format!(
                "Service {} rolled back: {} → {}.",
                r["service"].as_str().unwrap_or(""),
                r["from"].as_str().unwrap_or(""),
                r["to"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(EXIT_OK)
}

/// Takes the stack's lock for an apply; the error names the holder.
async fn take_lock(global: &Global, session: &Session, printer: &Printer) -> Result<lock::Lock, Failure> {
    let ddb = session.aws.dynamodb();
    let stack = &session.scope.stack;
    if global.force_unlock {
        lock::force_unlock(ddb, stack).await.map_err(provider_failure)?;
        printer.note(&format!("removed the lock of `{stack}`"));
    }
    let ttl = std::time::Duration::from_secs(global.lock_ttl.secs().max(3));
    match lock::acquire(ddb, stack, ttl).await {
        Ok(l) => Ok(l),
        Err(lock::LockError::Aws(e)) => Err(provider_failure(e)),
        Err(lock::LockError::Held { holder, since, expires }) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            Err(Failure::User(format!(
                "stack `{stack}` is locked by {holder} since {} ({}s ago); it expires in {}s unless renewed. If that run died, wait or pass --force-unlock",
                aira_image::oci::rfc3339(since),
                now.saturating_sub(since),
                expires.saturating_sub(now)
            )))
        }
    }
}

async fn up(
    global: &Global,
    arg: &StackArg,
    image: &ImageArgs,
    ttl: Option<aira_engine::stack::model::Duration>,
    printer: Arc<Printer>,
) -> Result<u8, Failure> {
    let mut session = connect(global, arg, &printer).await?;
    // Set on each resource when it is created (tags are not compared afterwards).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut scope = (*session.scope).clone();
    scope.tags.insert(aira_engine::provider::TAG_CREATED_AT.into(), now.to_string());
    if let Some(ttl) = ttl {
        scope.tags.insert(aira_engine::provider::TAG_EXPIRES_AT.into(), (now + ttl.secs()).to_string());
    }
    session.scope = Arc::new(scope);
    // Before the lock: a cold build takes minutes, and needs no AWS.
    session.image = prepare_image(&session, image, &printer).await?;
    let lock = take_lock(global, &session, &printer).await?;
    let result = up_locked(global, &session, printer).await;
    lock.release().await;
    result
}

async fn up_locked(global: &Global, session: &Session, printer: Arc<Printer>) -> Result<u8, Failure> {
    let plan = observe_and_plan(session, &printer, false).await?;
    show_plan(&plan, &printer);
    if !plan.has_changes() {
        return finish(&plan, None, &printer);
    }
    confirm(&plan, global, "apply")?;
    let report = execute(session, &plan, global, &printer).await?;
    finish(&plan, Some(&report), &printer)
}

async fn down(global: &Global, arg: &StackArg, printer: Arc<Printer>) -> Result<u8, Failure> {
    let session = connect(global, arg, &printer).await?;
    let lock = take_lock(global, &session, &printer).await?;
    let result = down_locked(global, &session, printer).await;
    lock.release().await;
    result
}

async fn down_locked(global: &Global, session: &Session, printer: Arc<Printer>) -> Result<u8, Failure> {
    let plan = observe_and_plan(session, &printer, true).await?;
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
    let report = execute(session, &plan, global, &printer).await?;
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

/// Unix milliseconds (as SQS reports them) → RFC 3339, or `-`.
fn millis_to_rfc3339(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| aira_image::oci::rfc3339(ms / 1000))
}

async fn dlq(global: &Global, action: &DlqAction, printer: &Arc<Printer>) -> Result<u8, Failure> {
    use aira_aws::dlq as ops;
    let arg = match action {
        DlqAction::List { stack, .. }
        | DlqAction::Show { stack, .. }
        | DlqAction::Redrive { stack, .. }
        | DlqAction::Purge { stack } => stack,
    };
    let session = connect(global, arg, printer).await?;
    let aws = session.aws.clone();
    let pair = aws.queue_pair(&session.scope).await.map_err(provider_failure)?;
    let sqs = aws.sqs();
    match action {
        DlqAction::List { limit, .. } => {
            let letters = ops::list(sqs, &pair, *limit).await.map_err(provider_failure)?;
            let depth = ops::depth(sqs, &pair.dlq_url).await.map_err(provider_failure)?;
            if printer.format == Format::Json {
                printer.json(
                    &json!({ "dead_letter_queue": pair.dlq_url, "approximate_count": depth, "messages": letters }),
                );
            } else {
                printer.out(&format!("{} dead letter(s) in {} (about {depth}):", letters.len(), pair.dlq_url));
                for l in &letters {
                    printer.out(&format!(
                        "  {}  receives {}  first received {}  {}",
                        l.id,
                        l.receive_count,
                        millis_to_rfc3339(l.first_received_at),
                        l.reason.as_deref().unwrap_or("")
                    ));
                }
            }
            Ok(EXIT_OK)
        }
        DlqAction::Show { id, .. } => {
            let letters = ops::list(sqs, &pair, 1000).await.map_err(provider_failure)?;
            let Some(l) = letters.into_iter().find(|l| &l.id == id) else {
                return Err(Failure::User(format!("no dead letter with id {id} in {}", pair.dlq_url)));
            };
            if printer.format == Format::Json {
                printer.json(&serde_json::to_value(&l).map_err(anyhow::Error::from)?);
            } else {
                printer.out(&format!(
                    "id:             {}\nreceives:       {}\nsent:           {}\nfirst received: {}\nreason:         {}\nbody:           {}",
                    l.id,
                    l.receive_count,
                    millis_to_rfc3339(l.sent_at),
                    millis_to_rfc3339(l.first_received_at),
                    l.reason.as_deref().unwrap_or("(not recorded on the message)"),
                    l.body
                ));
            }
            Ok(EXIT_OK)
        }
        DlqAction::Redrive { limit, client_side, .. } => {
            printer.note(&format!("moving dead letters from {} back to {}", pair.dlq_url, pair.queue_url));
            let r = ops::redrive(sqs, &pair, *limit, *client_side).await.map_err(provider_failure)?;
            if let Some(why) = &r.fallback_reason {
                printer
                    .note(&format!("SQS could not move them itself ({why}); moved them from here: send, then delete"));
            }
            if printer.format == Format::Json {
                printer.json(&serde_json::to_value(&r).map_err(anyhow::Error::from)?);
            } else {
                printer.out(&format!("Redrove {} message(s) ({}-side).", r.moved, r.method));
            }
            Ok(EXIT_OK)
        }
        DlqAction::Purge { .. } => {
            let depth = ops::depth(sqs, &pair.dlq_url).await.map_err(provider_failure)?;
            ask(
                global,
                &format!("delete about {depth} dead letter(s) from {} for good?", pair.dlq_url),
                "purging deletes dead letters for good",
            )?;
            ops::purge(sqs, &pair).await.map_err(provider_failure)?;
            if printer.format == Format::Json {
                printer.json(&json!({ "purged": pair.dlq_url, "approximate_count": depth }));
            } else {
                printer.out(&format!("Purged {} (about {depth} message(s)).", pair.dlq_url));
            }
            Ok(EXIT_OK)
        }
    }
}
