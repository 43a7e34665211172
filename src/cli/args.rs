//! Every command-line argument, in one place. Parse, then resolve: clap fills these types with
//! what the user typed; the `impl` blocks at the end turn them into what the commands use (the
//! stack file's path, the AWS connection, the lock's time to live, the exit mode).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::failure::{ExitMode, Failure, UserError};
use crate::output::{Format, Printer};
use crate::time::parse_duration;
#[cfg(feature = "aws")]
use aira_aws::Connection;
use aira_engine::expand::preview::Preview;
use aira_engine::stack::model::Duration;
use aira_engine::stack::{self, Loaded};

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
    pub lock_ttl: Duration,
    /// Longest wait for anything AWS does asynchronously (default: the stack's `deploy.timeout`).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
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
        ttl: Option<Duration>,
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
        older_than: Option<Duration>,
        /// With --all: only stacks past their time to live (`up --ttl`).
        #[arg(long, requires = "all")]
        expired: bool,
        /// Take a base's live previews down first (else `down` of a base with previews refuses).
        #[arg(long, conflicts_with_all = ["all", "local"])]
        with_previews: bool,
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
        since: Duration,
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
    /// Write a commented stack file that validates; asks on a terminal, takes flags in CI.
    Init(InitArgs),
    /// Print a shell completion script: `aira completions bash > /etc/bash_completion.d/aira`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a folder.
    Man {
        /// Write aira.1 and aira-COMMAND.1 into this folder instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
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
        #[arg(long, alias = "binary", env = "AIRA_RUNTIME_STATIC_BIN", value_name = "BINARY")]
        runtime_binary: Option<PathBuf>,
    },
    /// Push an image layout to a registry; prints REGISTRY/REPOSITORY@sha256:….
    Push {
        /// REGISTRY/REPOSITORY[:TAG]; without a tag the manifest is pushed by digest.
        #[arg(long)]
        to: aira_image::push::Reference,
        /// Plain HTTP (only for a registry on loopback).
        #[arg(long, alias = "insecure")]
        insecure_registry: bool,
        /// The image layout folder.
        #[arg(long, default_value = aira_image::DEFAULT_DIR)]
        from: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The file to write.
    #[arg(long, value_name = "FILE", default_value = "aira.yaml")]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
    /// The stack's name (default: aira).
    #[arg(long)]
    pub stack: Option<String>,
    /// The site's name, served over HTTPS (default: none; the load balancer's own name over HTTP).
    #[arg(long)]
    pub domain: Option<String>,
    /// The Route 53 hosted zone the domain lives in (default: the domain without its first label).
    #[arg(long, requires = "domain")]
    pub zone: Option<String>,
    /// Where the model is (default: openai).
    #[arg(long, value_enum)]
    pub model: Option<Model>,
}

#[derive(Debug, Args)]
pub struct StackArg {
    /// The stack file (default: ./aira.yaml, then ./stacks/aira.yaml).
    pub stack: Option<PathBuf>,
    /// An isolated copy of the stack named `<stack>-<suffix>` (a whole stack of its own).
    #[arg(long)]
    pub name_suffix: Option<String>,
    /// A preview named NAME on the base the file describes (the base's network, load balancer
    /// and cluster, its own services and queues, at NAME.<domain name>).
    #[arg(long, value_name = "NAME", conflicts_with = "name_suffix")]
    pub preview: Option<String>,
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

impl Cli {
    /// How the result becomes an exit code: `plan --detailed-exitcode` has its own.
    pub fn exit_mode(&self) -> ExitMode {
        match self.command {
            Command::Plan { detailed_exitcode: true, .. } => ExitMode::Detailed,
            _ => ExitMode::Plain,
        }
    }
}

impl Global {
    /// The AWS connection from the flags, then the stack's region.
    #[cfg(feature = "aws")]
    pub fn connection(&self, stack_region: Option<&String>) -> Connection {
        Connection {
            region: self.region.clone().or_else(|| stack_region.cloned()),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }

    /// How long the stack's lock outlives a run that stopped renewing it (at least 3s).
    pub fn lock_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_ttl.secs().max(3))
    }
}

impl StackArg {
    /// The stack file: the one given, else ./aira.yaml, else ./stacks/aira.yaml.
    pub fn path(&self) -> Result<PathBuf, Failure> {
        if let Some(p) = &self.stack {
            return Ok(p.clone());
        }
        ["aira.yaml", "stacks/aira.yaml"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| Failure::User(UserError::NoStackFile))
    }

    /// The stack file, checked (its diagnostics printed), with `--name-suffix` applied.
    pub fn load(&self, printer: &Printer) -> Result<Loaded, Failure> {
        let path = self.path()?;
        let mut loaded = stack::load(&path).map_err(|diags| {
            printer.diagnostics(&diags);
            Failure::Reported(crate::failure::EXIT_USER)
        })?;
        if let Some(name) = &self.preview {
            let base = &loaded.stack.stack.0;
            let problem = |problem: String| UserError::Flag { flag: format!("--preview {name}"), problem };
            let label = !name.is_empty()
                && name.len() <= 63
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && !name.ends_with('-')
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !label {
                return Err(problem(format!(
                    "`{name}` is not a preview name: lower-case letters, digits and hyphens, starting with a letter (it \
                     is a DNS label of the preview's host name)"
                ))
                .into());
            }
            let preview = Preview { base: base.clone(), name: name.clone() };
            stack::check_format("stack-name", &preview.stack()).map_err(|e| problem(e.to_string()))?;
            if let Some(why) = aira_engine::expand::preview::refusal(&loaded.stack) {
                return Err(problem(why).into());
            }
        }
        if let Some(suffix) = &self.name_suffix {
            let name = format!("{}-{suffix}", loaded.stack.stack.0);
            stack::check_format("stack-name", &name)
                .map_err(|e| UserError::Flag { flag: "--name-suffix".into(), problem: e.to_string() })?;
            loaded.stack.stack.0 = name;
        }
        Ok(loaded)
    }
}

impl StackArg {
    /// The preview `--preview` names, on the base `loaded` describes.
    pub fn preview_of(&self, loaded: &Loaded) -> Option<Preview> {
        self.preview.as_ref().map(|name| Preview { base: loaded.stack.stack.0.clone(), name: name.clone() })
    }
}

impl ImageArgs {
    /// Refuses what no build can satisfy: plain HTTP off loopback, a tagged `--registry`.
    /// `registry/name` of `--registry`: where the image aira builds goes instead of the stack's
    /// ECR repository.
    pub fn repository(&self) -> Option<String> {
        self.registry.as_ref().map(|r| format!("{}/{}", r.registry, r.repository))
    }

    pub fn check(&self) -> Result<(), Failure> {
        let Some(r) = &self.registry else { return Ok(()) };
        if self.insecure_registry && !r.is_loopback() {
            return Err(UserError::Flag {
                flag: "--insecure-registry".into(),
                problem: format!(
                    "`{}` is not on loopback; plain HTTP is allowed for a loopback registry only",
                    r.registry
                ),
            }
            .into());
        }
        if r.tag.is_some() {
            return Err(UserError::Flag {
                flag: format!("--registry {r}"),
                problem: "name a repository without a tag (images are deployed by digest)".into(),
            }
            .into());
        }
        Ok(())
    }
}

/// Where the worker's model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// Any OpenAI-compatible API on the internet (an API key in Secrets Manager; NAT gateways).
    Openai,
    /// Amazon Bedrock through a VPC endpoint (no key, no NAT gateway).
    Bedrock,
    /// The offline echo model: tries the stack out without any model account.
    Echo,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command's help, wrapped at 80 columns: no line wider (a long word that cannot wrap,
    /// a table, an example, would show here).
    #[test]
    fn every_help_reads_at_80_columns() {
        fn check(cmd: &mut clap::Command, path: &str, wide: &mut Vec<String>) {
            let mut c = cmd.clone().term_width(80);
            let help = c.render_long_help().to_string();
            wide.extend(help.lines().filter(|l| l.chars().count() > 80).map(|l| format!("{path}: {l}")));
            for sub in cmd.get_subcommands_mut() {
                let name = format!("{path} {}", sub.get_name());
                check(sub, &name, wide);
            }
        }
        let mut wide = Vec::new();
        let mut cli = super::Cli::command();
        cli.build();
        check(&mut cli, "aira", &mut wide);
        assert!(wide.is_empty(), "help lines over 80 columns:\n{}", wide.join("\n"));
    }
}
