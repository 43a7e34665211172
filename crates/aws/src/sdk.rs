//! What every kind module does with the SDK, written once: turning an SDK error into a
//! [`ProviderError`] that keeps AWS's code and kind, telling "already gone" from a failure,
//! retrying while AWS is busy, polling until a state is reached, and the adoption rule.
//!
//! `SdkError` and `ProvideErrorMetadata` are the same types in every `aws-sdk-*` crate (they come
//! from `aws-smithy-runtime-api`), so one generic function serves them all.

use std::future::Future;
use std::time::{Duration, Instant};

use aira_engine::graph::LogicalId;
use aira_engine::provider::{ErrorKind, Progress, ProviderError, Scope, TAG_ID, TAG_STACK};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Any SDK error of any service.
pub type Sdk<E> = SdkError<E, aws_sdk_sqs::config::http::HttpResponse>;

/// The service's error code, when AWS answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// The service's message, else its code, else the whole error chain.
pub fn message<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(s) => s.message().or(s.code()).unwrap_or("(no message)").to_string(),
        None => DisplayErrorContext(e).to_string(),
    }
}

/// AWS's code and message (`Code: message`), or the whole error chain when there is no service
/// error (a timeout, a refused connection).
pub fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error().and_then(|s| s.code().map(|c| (c, s.message()))) {
        Some((code, message)) => format!("{code}: {}", message.unwrap_or("(no message)")),
        None => DisplayErrorContext(e).to_string(),
    }
}

/// The kind of failure an AWS error code means, across services.
pub fn kind_of(code: &str) -> ErrorKind {
    let c = code.to_ascii_lowercase();
    if c.contains("accessdenied") || c.contains("unauthorized") || c == "authfailure" || c.contains("forbidden") {
        ErrorKind::AccessDenied
    } else if c.contains("throttl") || c.contains("requestlimitexceeded") || c.contains("toomanyrequests") {
        ErrorKind::Throttled
    } else if c.contains("limitexceeded") || c.contains("quotaexceeded") || c.contains("toomany") {
        ErrorKind::Quota
    } else if c.contains("notfound") || c.contains("nosuch") || c.contains("nonexistent") || c.contains("doesnotexist")
    {
        ErrorKind::NotFound
    } else if c.contains("dependencyviolation") || c.contains("inuse") || c.contains("resourceinuse") {
        ErrorKind::Busy
    } else {
        ErrorKind::Other
    }
}

/// `what: Code: message`, keeping the code and its kind for callers.
pub fn error<E, R>(what: impl std::fmt::Display, e: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = code(&e).map(str::to_string);
    let kind = code.as_deref().map(kind_of).unwrap_or(ErrorKind::Other);
    ProviderError::coded(kind, code, format!("{what}: {}", describe(&e)))
}

/// Whether the error says the resource is already gone: its code contains one of `codes`.
pub fn is_gone<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, codes: &[&str]) -> bool {
    code(e).is_some_and(|c| codes.iter().any(|g| c.contains(g)))
}

/// The adoption rule: a resource belongs to the stack only if it carries `aira:stack=<stack>`,
/// checked on the answer (some describe calls ignore tag filters); its logical id is `aira:id`.
pub fn adopt<'a>(scope: &Scope, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<LogicalId> {
    let (mut stack, mut id) = (None, None);
    for (k, v) in tags {
        match k {
            TAG_STACK => stack = Some(v),
            TAG_ID => id = Some(v),
            _ => {}
        }
    }
    (stack == Some(scope.stack.as_str())).then_some(id?).map(LogicalId::from)
}

/// Runs `op` until it stops failing with an error code that starts with one of `busy` (something
/// AWS finishes asynchronously), saying each time what it waits for; gives up at `scope.wait`.
/// An error whose code `gone` accepts (the resource is already gone) is `Ok(None)`.
#[allow(clippy::too_many_arguments)]
pub async fn retry_busy<F, Fut, T, E>(
    scope: &Scope,
    progress: &dyn Progress,
    id: &LogicalId,
    what: &str,
    busy: &[&str],
    waits_for: &str,
    gone: fn(&str) -> bool,
    mut op: F,
) -> Result<Option<T>, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Sdk<E>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let e = match op().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) => e,
        };
        let code = code(&e).unwrap_or_default();
        let is_busy = busy.iter().any(|b| code.starts_with(b));
        if is_busy && start.elapsed() < scope.wait {
            progress.waiting(
                id,
                &format!(
                    "{what}: {}; waiting for {waits_for}, retrying ({}s of {}s)",
                    message(&e),
                    start.elapsed().as_secs(),
                    scope.wait.as_secs()
                ),
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        } else if !is_busy && gone(code) {
            return Ok(None);
        } else {
            let mut err = error(what, e);
            if is_busy {
                err.kind = ErrorKind::Busy;
            }
            return Err(err);
        }
    }
}

/// What one look at a resource found: done (with a value), or still in progress (with what the
/// user is shown), or failed for good.
pub enum Poll<T> {
    Done(T),
    Pending(String),
}

/// Looks with `check` until it says done, showing each pending state and how long the wait has
/// taken; fails at `scope.wait` with the last state seen.
pub async fn poll_until<T, F, Fut>(
    scope: &Scope,
    progress: &dyn Progress,
    id: &LogicalId,
    what: &str,
    interval: Duration,
    mut check: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, ProviderError>>,
{
    let start = Instant::now();
    loop {
        let state = match check().await? {
            Poll::Done(v) => return Ok(v),
            Poll::Pending(state) => state,
        };
        if start.elapsed() >= scope.wait {
            return Err(ProviderError::coded(
                ErrorKind::Busy,
                None,
                format!("{what}: still {state} after {}s (raise --timeout to wait longer)", scope.wait.as_secs()),
            ));
        }
        progress.waiting(id, &format!("{what}: {state} ({}s of {}s)", start.elapsed().as_secs(), scope.wait.as_secs()));
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        for (code, kind) in [
            ("AccessDenied", ErrorKind::AccessDenied),
            ("AccessDeniedException", ErrorKind::AccessDenied),
            ("UnauthorizedOperation", ErrorKind::AccessDenied),
            ("Throttling", ErrorKind::Throttled),
            ("ThrottlingException", ErrorKind::Throttled),
            ("RequestLimitExceeded", ErrorKind::Throttled),
            ("AddressLimitExceeded", ErrorKind::Quota),
            ("ServiceQuotaExceededException", ErrorKind::Quota),
            ("TooManyLoadBalancers", ErrorKind::Quota),
            ("InvalidVpcID.NotFound", ErrorKind::NotFound),
            ("NoSuchEntity", ErrorKind::NotFound),
            ("AWS.SimpleQueueService.NonExistentQueue", ErrorKind::NotFound),
            ("DependencyViolation", ErrorKind::Busy),
            ("ResourceInUse", ErrorKind::Busy),
            ("ValidationError", ErrorKind::Other),
        ] {
            assert_eq!(kind_of(code), kind, "{code}");
        }
    }

    #[test]
    fn adoption_needs_the_stack_tag() {
        let scope = Scope { stack: "s".into(), tags: Default::default(), wait: Duration::ZERO };
        assert_eq!(adopt(&scope, [("aira:stack", "s"), ("aira:id", "queue")]), Some("queue".into()));
        assert_eq!(adopt(&scope, [("aira:stack", "other"), ("aira:id", "queue")]), None);
        assert_eq!(adopt(&scope, [("aira:id", "queue")]), None);
        assert_eq!(adopt(&scope, [("aira:stack", "s")]), None);
    }
}
