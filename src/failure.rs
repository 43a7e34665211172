//! The one vocabulary of failures and exit codes: what went wrong decides the code, and
//! [`exit_code`] is the one place that prints the error (once) and picks the code.
//!
//! Exit codes: 0 ok, 1 a user error, 2 an AWS or unexpected failure; with
//! `plan --detailed-exitcode`: 0 no change, 2 changes pending, 3 a failure, 1 a user error.

use std::fmt;

use aira_engine::provider::ProviderError;

pub const EXIT_OK: u8 = 0;
pub const EXIT_USER: u8 = 1;
pub const EXIT_FAILURE: u8 = 2;
/// `plan --detailed-exitcode`: changes pending.
pub const EXIT_CHANGES: u8 = 2;
/// `plan --detailed-exitcode`: a failure that is not the user's.
pub const EXIT_DETAILED_FAILURE: u8 = 3;

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The plan has changes (an exit code of its own with `--detailed-exitcode`).
    ChangesPending,
}

/// How results map to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMode {
    Plain,
    /// `plan --detailed-exitcode`.
    Detailed,
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Bad input, or a refusal: exit 1.
    User(UserError),
    /// Already told to the user (the stack file's diagnostics): exit with this code, print nothing.
    Reported(u8),
    /// A provider operation failed: exit 1 when it is the user's to fix (`is_user`), else 2.
    /// Its kind and AWS's code stay available to callers.
    Provider(ProviderError),
    /// Anything else, unexpected: exit 2.
    Internal(anyhow::Error),
}

/// What the user is to fix, with what it takes to say so: each refusal of the CLI is one variant,
/// rendered here and nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("no stack file given, and neither ./aira.yaml nor ./stacks/aira.yaml exists")]
    NoStackFile,
    #[error("no AWS region: set `region` in the stack, pass --region, or set AWS_REGION")]
    NoRegion,
    /// A flag's value is not one the command takes.
    #[error("{flag}: {problem}")]
    Flag { flag: String, problem: String },
    #[error("--to names a revision of one service's task definition: add --service NAME")]
    RollbackNeedsService,
    #[error("stack `{stack}` has no service `{service}`{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    NoService { stack: String, service: String, hint: Option<String> },
    #[error("{} exists; pass --force to replace it", .0.display())]
    FileExists(std::path::PathBuf),
    #[error("cannot write {path}: {error}")]
    CannotWrite { path: String, error: std::io::Error },
    #[error("--zone needs --domain")]
    ZoneNeedsDomain,
    #[error("reading the answer: {0}")]
    Answer(std::io::Error),
    #[error("no answer (end of input)")]
    NoAnswer,
    #[error("empty secret value: pipe it on standard input, e.g. `aira secret set NAME < key.txt`")]
    EmptySecret,
    #[error("no dead letter with id {id} in {queue}")]
    NoDeadLetter { id: String, queue: String },
    /// What the pre-flight found, all at once (each finding with its fix): a secret that does
    /// not exist, a domain not delegated, a service that cannot reach what it needs, ….
    #[error("{}", .0.join("\n"))]
    Preflight(Vec<String>),
    /// The region cannot hold the stack as written.
    #[error("{0}")]
    Expand(aira_engine::expand::ExpandError),
    #[error(
        "stack `{stack}` is locked by {holder} since {} ({}s ago); it expires in {}s unless renewed. If that run died, wait or pass --force-unlock",
        crate::time::rfc3339(*since), now.saturating_sub(*since), expires.saturating_sub(*now)
    )]
    Locked { stack: String, holder: String, since: u64, expires: u64, now: u64 },
    #[error("refusing: {0} and there is no terminal to confirm; pass --yes")]
    NotConfirmed(String),
    #[error("cancelled; nothing was changed")]
    Cancelled,
    #[error(
        "this aira was built without the AWS provider (cargo feature `aws`): it runs the local target \
         (`--local`), `validate`, `init` and `image`; build it with the default features for AWS"
    )]
    NeedsAws,
    /// The image command's input (a layout, a reference, a registry) is not usable.
    #[error("{0}")]
    Image(String),
}

/// The user's to fix when the region cannot hold the stack; aira's fault otherwise.
impl From<aira_engine::expand::ExpandError> for Failure {
    fn from(e: aira_engine::expand::ExpandError) -> Self {
        match e.is_user() {
            true => Failure::User(UserError::Expand(e)),
            false => Failure::Internal(e.into()),
        }
    }
}

impl From<UserError> for Failure {
    fn from(e: UserError) -> Self {
        Failure::User(e)
    }
}

impl Failure {
    pub fn internal(message: impl fmt::Display) -> Self {
        Failure::Internal(anyhow::anyhow!("{message}"))
    }

    /// The user's to fix.
    pub fn is_user(&self) -> bool {
        match self {
            Failure::User(_) => true,
            Failure::Reported(code) => *code == EXIT_USER,
            Failure::Provider(e) => e.is_user(),
            Failure::Internal(_) => false,
        }
    }

    pub fn code(&self, mode: ExitMode) -> u8 {
        match (self, mode) {
            (Failure::Reported(code), _) => *code,
            _ if self.is_user() => EXIT_USER,
            (_, ExitMode::Plain) => EXIT_FAILURE,
            (_, ExitMode::Detailed) => EXIT_DETAILED_FAILURE,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::User(e) => write!(f, "{e}"),
            Failure::Reported(code) => write!(f, "(reported; exit {code})"),
            // The whole sentence, as the provider wrote it; not its source chain.
            Failure::Provider(e) => f.write_str(&e.message),
            Failure::Internal(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for Failure {}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure::Provider(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Internal(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Internal(e.into())
    }
}

impl From<aira_image::Error> for Failure {
    fn from(e: aira_image::Error) -> Self {
        match e {
            aira_image::Error::Usage(m) => Failure::User(UserError::Image(m)),
            aira_image::Error::Failed(e) => Failure::Internal(e),
        }
    }
}

/// The exit code of a command's result; prints its error on stderr, once.
pub fn exit_code(result: Result<Outcome, Failure>, mode: ExitMode) -> u8 {
    match result {
        Ok(Outcome::Done) => EXIT_OK,
        Ok(Outcome::ChangesPending) if mode == ExitMode::Detailed => EXIT_CHANGES,
        Ok(Outcome::ChangesPending) => EXIT_OK,
        Err(failure) => {
            if !matches!(failure, Failure::Reported(_)) {
                eprintln!("error: {failure}");
            }
            failure.code(mode)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aira_engine::provider::ErrorKind;

    #[test]
    fn exit_codes_follow_the_kind_of_failure_and_the_mode() {
        let aws = || Failure::Provider(ProviderError::coded(ErrorKind::AccessDenied, None, "denied"));
        let user = || Failure::Provider(ProviderError::user("no such zone"));
        for (mode, failure, changes) in [(ExitMode::Plain, 2, 0), (ExitMode::Detailed, 3, 2)] {
            assert_eq!(exit_code(Ok(Outcome::Done), mode), 0);
            assert_eq!(exit_code(Ok(Outcome::ChangesPending), mode), changes);
            assert_eq!(exit_code(Err(UserError::NoStackFile.into()), mode), 1);
            assert_eq!(exit_code(Err(user()), mode), 1);
            assert_eq!(exit_code(Err(Failure::Reported(1)), mode), 1);
            assert_eq!(exit_code(Err(aws()), mode), failure);
            assert_eq!(exit_code(Err(Failure::internal("boom")), mode), failure);
        }
    }

    #[test]
    fn a_provider_failure_prints_its_message_only() {
        let e = ProviderError::new("delete queue q: AccessDenied").with_source(std::io::Error::other("inner"));
        assert_eq!(Failure::from(e).to_string(), "delete queue q: AccessDenied");
    }
}
