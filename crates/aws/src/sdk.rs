//! What every kind module does with the SDK, written once: turning an SDK error into a
//! [`ProviderError`] that keeps AWS's code and kind, telling "already gone" from a failure,
//! retrying while AWS is busy, polling until a state is reached, the adoption rule, the tag
//! lists and tag answers of every SDK, adopting what was listed by name, and running one future
//! per kind at once.
//!
//! `SdkError` and `ProvideErrorMetadata` are the same types in every `aws-sdk-*` crate (they come
//! from `aws-smithy-runtime-api`), so one generic function serves them all.

use std::future::Future;
use std::time::{Duration, Instant};

use aira_engine::graph::LogicalId;
use aira_engine::provider::{ErrorKind, Observed, Progress, ProviderError, Scope, TAG_ID, TAG_STACK};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_async::future::pagination_stream::PaginationStream;

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
    } else if c.contains("limitexceeded")
        || c.contains("limitsexceeded")
        || c.contains("quotaexceeded")
        || c.contains("toomany")
    {
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

/// Every page of a paginated call (the SDK's `into_paginator().send()`), in order; the first
/// failed page is the error, saying what was being listed.
pub async fn pages<P, E, R>(
    what: impl std::fmt::Display,
    mut pages: PaginationStream<Result<P, SdkError<E, R>>>,
) -> Result<Vec<P>, ProviderError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        out.push(page.map_err(|e| error(&what, e))?);
    }
    Ok(out)
}

/// Whether the error says the resource is already gone: its code contains one of `codes`.
pub fn is_gone<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, codes: &[&str]) -> bool {
    code(e).is_some_and(|c| codes.iter().any(|g| c.contains(g)))
}

/// An SDK call's answer, `None` when its error code contains one of `gone` (the resource is
/// not there: skip it, or it is already deleted), else the error as [`error`] makes it.
pub fn found<T, E, R>(
    what: impl std::fmt::Display,
    gone: &[&str],
    r: Result<T, SdkError<E, R>>,
) -> Result<Option<T>, ProviderError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_gone(&e, gone) => Ok(None),
        Err(e) => Err(error(what, e)),
    }
}

/// A tag of any SDK: its key and value, and how one is made. Lets [`adopt`] read, and
/// [`tag_list`] write, every service's own `Tag` type.
pub trait SdkTag: Sized {
    fn pair(&self) -> Option<(&str, &str)>;
    fn make(key: String, value: String) -> Self;
}

macro_rules! sdk_tag {
    ($($ty:ty => |$t:ident| $pair:expr, |$k:ident, $v:ident| $make:expr;)*) => {$(
        impl SdkTag for $ty {
            fn pair(&self) -> Option<(&str, &str)> {
                let $t = self;
                $pair
            }
            fn make($k: String, $v: String) -> Self {
                $make
            }
        }
    )*};
}

const BUILT: &str = "a tag with its key and value builds";
sdk_tag! {
    aws_sdk_ec2::types::Tag => |t| Some((t.key()?, t.value()?)), |k, v| Self::builder().key(k).value(v).build();
    aws_sdk_ecs::types::Tag => |t| Some((t.key()?, t.value()?)), |k, v| Self::builder().key(k).value(v).build();
    aws_sdk_elasticloadbalancingv2::types::Tag => |t| Some((t.key()?, t.value()?)), |k, v| Self::builder().key(k).value(v).build();
    aws_sdk_cloudwatch::types::Tag => |t| Some((t.key()?, t.value()?)), |k, v| Self::builder().key(k).value(v).build();
    aws_sdk_acm::types::Tag => |t| Some((t.key(), t.value()?)), |k, v| Self::builder().key(k).value(v).build().expect(BUILT);
    aws_sdk_dynamodb::types::Tag => |t| Some((t.key(), t.value())), |k, v| Self::builder().key(k).value(v).build().expect(BUILT);
    aws_sdk_iam::types::Tag => |t| Some((t.key(), t.value())), |k, v| Self::builder().key(k).value(v).build().expect(BUILT);
    aws_sdk_ecr::types::Tag => |t| Some((t.key(), t.value())), |k, v| Self::builder().key(k).value(v).build().expect(BUILT);
    aws_sdk_sns::types::Tag => |t| Some((t.key(), t.value())), |k, v| Self::builder().key(k).value(v).build().expect(BUILT);
    aws_sdk_wafv2::types::Tag => |t| Some((t.key(), t.value())), |k, v| Self::builder().key(k).value(v).build().expect(BUILT);
}

/// The tags a created resource carries ([`Scope::tags_for`]) plus `extra`, as the SDK's list.
pub fn tag_list<T: SdkTag>(scope: &Scope, id: &LogicalId, extra: &[(&str, &str)]) -> Vec<T> {
    let mut all = scope.tags_for(id);
    all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all.into_iter().map(|(k, v)| T::make(k, v)).collect()
}

/// [`adopt`] over a list of SDK tags.
pub fn adopt_tags<T: SdkTag>(scope: &Scope, tags: &[T]) -> Option<LogicalId> {
    adopt(scope, tags.iter().filter_map(SdkTag::pair))
}

/// [`adopt`] over a map of tags (SQS, CloudWatch Logs, ELB's `describe_tags` read into a map).
pub fn adopt_map<'a>(scope: &Scope, tags: impl IntoIterator<Item = (&'a String, &'a String)>) -> Option<LogicalId> {
    adopt(scope, tags.into_iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The answer of a call listing one resource's tags, in any SDK: whose they say it is.
pub trait TagAnswer {
    fn adopt(&self, scope: &Scope) -> Option<LogicalId>;
}

macro_rules! tag_answer {
    ($($ty:ty => |$o:ident, $s:ident| $adopt:expr;)*) => {$(
        impl TagAnswer for $ty {
            fn adopt(&self, $s: &Scope) -> Option<LogicalId> {
                let $o = self;
                $adopt
            }
        }
    )*};
}

tag_answer! {
    aws_sdk_iam::operation::list_role_tags::ListRoleTagsOutput => |o, s| adopt_tags(s, o.tags());
    aws_sdk_dynamodb::operation::list_tags_of_resource::ListTagsOfResourceOutput => |o, s| adopt_tags(s, o.tags());
    aws_sdk_ecr::operation::list_tags_for_resource::ListTagsForResourceOutput => |o, s| adopt_tags(s, o.tags());
    aws_sdk_sns::operation::list_tags_for_resource::ListTagsForResourceOutput => |o, s| adopt_tags(s, o.tags());
    aws_sdk_cloudwatch::operation::list_tags_for_resource::ListTagsForResourceOutput => |o, s| adopt_tags(s, o.tags());
    aws_sdk_cloudwatchlogs::operation::list_tags_for_resource::ListTagsForResourceOutput =>
        |o, s| adopt_map(s, o.tags().into_iter().flatten());
}

/// The logical id a resource's tags give it in the stack ([`adopt`]), from its tags call;
/// `None` also when that call says the resource is gone (deleted since it was listed).
pub async fn adopted<O, E, R>(
    scope: &Scope,
    what: impl std::fmt::Display,
    gone: &[&str],
    call: impl Future<Output = Result<O, SdkError<E, R>>>,
) -> Result<Option<LogicalId>, ProviderError>
where
    O: TagAnswer,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Ok(found(what, gone, call.await)?.and_then(|out| out.adopt(scope)))
}

/// The stack's resources among `candidates` (listed by name or prefix, which does not say whose
/// they are), in order: `tags` gives a candidate's logical id (`None`: not the stack's, or gone),
/// `read` reads each adopted one (`None`: gone meanwhile). A list, not an iterator: the future
/// of an observe must be `Send`, which the compiler cannot show for iterator closures held
/// across these awaits.
pub async fn adopt_each<C, TF, RF>(
    candidates: Vec<C>,
    tags: impl Fn(C) -> TF,
    read: impl Fn(C, LogicalId) -> RF,
) -> Result<Vec<Observed>, ProviderError>
where
    C: Copy,
    TF: Future<Output = Result<Option<LogicalId>, ProviderError>>,
    RF: Future<Output = Result<Option<Observed>, ProviderError>>,
{
    let mut found = Vec::new();
    for c in candidates {
        let Some(id) = tags(c).await? else { continue };
        found.extend(read(c, id).await?);
    }
    Ok(found)
}

/// What a read right after a change found: not finding the resource just written is an error.
pub fn read_back<T>(what: &str, thing: &str, found: Option<T>) -> Result<T, ProviderError> {
    found.ok_or_else(|| ProviderError::new(format!("{what}: the {thing} disappeared right after the call")))
}

/// A delete call: one saying the resource is already gone (a code in `gone`) succeeds too.
pub async fn delete<T, E, R>(
    what: impl std::fmt::Display,
    gone: &[&str],
    call: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<(), ProviderError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    found(what, gone, call.await).map(drop)
}

/// A provider operation as a boxed future, to run with others in [`try_join_all`].
pub type Op<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// Runs the futures at once (on this task) and gives their values in order; the first error
/// ends it. (`tokio::try_join!` takes a fixed number; this a list.)
pub async fn try_join_all<'a, T>(futures: Vec<Op<'a, T>>) -> Result<Vec<T>, ProviderError> {
    let mut slots: Vec<_> = futures.into_iter().map(|f| (f, None)).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in slots.iter_mut().filter(|(_, out)| out.is_none()) {
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(Ok(v)) => *out = Some(v),
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Ok(slots.iter_mut().filter_map(|(_, out)| out.take()).collect()))
        }
    })
    .await
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

/// What a call waits out in [`retry_busy`]: the error codes (prefixes) that mean AWS is still
/// finishing something, what that is (for the user), and the codes that mean already gone.
pub struct Busy {
    pub codes: &'static [&'static str],
    pub waits_for: &'static str,
    pub gone: &'static [&'static str],
}

/// The failure of a retried operation: one SDK call (its `SdkError`), or several calls made as
/// one (a read and the write that needs what it read, each error already a [`ProviderError`]
/// keeping AWS's code).
pub trait Failed {
    /// AWS's error code.
    fn aws_code(&self) -> Option<&str>;
    /// What AWS said, for the progress line.
    fn aws_said(&self) -> String;
    /// The error reported when the retries end: `what: Code: message`.
    fn report(self, what: &str) -> ProviderError;
}

impl<E, R> Failed for SdkError<E, R>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    fn aws_code(&self) -> Option<&str> {
        code(self)
    }
    fn aws_said(&self) -> String {
        message(self)
    }
    fn report(self, what: &str) -> ProviderError {
        error(what, self)
    }
}

impl Failed for ProviderError {
    fn aws_code(&self) -> Option<&str> {
        self.code.as_deref()
    }
    fn aws_said(&self) -> String {
        self.message.clone()
    }
    fn report(self, what: &str) -> ProviderError {
        self.context(what)
    }
}

/// Runs `op` until it stops failing with one of `busy.codes` (something AWS finishes
/// asynchronously), saying each time what it waits for; gives up at `scope.wait`. An error
/// whose code contains one of `busy.gone` (the resource is already gone) is `Ok(None)`.
pub async fn retry_busy<F, Fut, T, X>(
    scope: &Scope,
    progress: &dyn Progress,
    id: &LogicalId,
    what: &str,
    busy: &Busy,
    mut op: F,
) -> Result<Option<T>, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, X>>,
    X: Failed,
{
    let Busy { codes: busy, waits_for, gone } = busy;
    let start = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        let e = match op().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) => e,
        };
        let code = e.aws_code().unwrap_or_default();
        let is_busy = busy.iter().any(|b| code.starts_with(b));
        if is_busy && start.elapsed() < scope.wait {
            progress.waiting(
                id,
                &format!(
                    "{what}: {}; waiting for {waits_for}, retrying ({}s of {}s)",
                    e.aws_said(),
                    start.elapsed().as_secs(),
                    scope.wait.as_secs()
                ),
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        } else if !is_busy && gone.iter().any(|g| code.contains(g)) {
            return Ok(None);
        } else {
            let mut err = e.report(what);
            if is_busy {
                err.kind = ErrorKind::Busy;
            }
            return Err(err);
        }
    }
}

/// Runs `op`, which hands AWS a role (ECS a task's roles, Application Auto Scaling its
/// service-linked role), until AWS stops refusing it as not assumable yet: IAM is eventually
/// consistent, so a role created seconds ago is refused for a while by the services that
/// assume it. `not_ready` tells that refusal (by code and message) from other errors. Says each
/// time which role it waits for; gives up at `scope.wait`.
#[allow(clippy::too_many_arguments)]
pub async fn retry_role_not_ready<F, Fut, T, E>(
    scope: &Scope,
    progress: &dyn Progress,
    id: &LogicalId,
    what: &str,
    service: &str,
    not_ready: fn(Option<&str>, &str) -> bool,
    mut op: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Sdk<E>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let start = Instant::now();
    let mut delay = Duration::from_secs(1);
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let said = message(&e);
        if !not_ready(code(&e), &said) || start.elapsed() >= scope.wait {
            return Err(error(what, e));
        }
        progress.waiting(
            id,
            &format!(
                "{what}: {service} cannot assume {} yet ({}: {said}); IAM changes take seconds to reach {service}, \
                 waiting for the role to become assumable, retrying ({}s of {}s)",
                role_named(&said).map(|r| format!("role {r}")).unwrap_or_else(|| "its role".into()),
                code(&e).unwrap_or("error"),
                start.elapsed().as_secs(),
                scope.wait.as_secs()
            ),
        );
        tokio::time::sleep(delay.min(scope.wait.saturating_sub(start.elapsed()))).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The role ARN an AWS message quotes (`… assume the role 'arn:aws:iam::1:role/x' …`).
fn role_named(message: &str) -> Option<&str> {
    message
        .split(|c: char| c.is_whitespace() || c == '\'' || c == '"')
        .find(|w| w.starts_with("arn:") && w.contains(":role/"))
        .map(|w| w.trim_end_matches(['.', ',', ';', ')']))
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
            ("WAFLimitsExceededException", ErrorKind::Quota),
            ("WAFNonexistentItemException", ErrorKind::NotFound),
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
    fn the_role_a_refusal_names_is_found() {
        let ecs =
            "ECS was unable to assume the role 'arn:aws:iam::1:role/aira/s/s-task' that was provided for this task.";
        assert_eq!(role_named(ecs), Some("arn:aws:iam::1:role/aira/s/s-task"));
        assert_eq!(role_named("Unable to assume IAM role: arn:aws:iam::1:role/x."), Some("arn:aws:iam::1:role/x"));
        assert_eq!(role_named("Unable to assume the service linked role."), None);
    }

    #[test]
    fn adoption_needs_the_stack_tag() {
        let scope = Scope::new("s", Default::default(), Duration::ZERO);
        assert_eq!(adopt(&scope, [("aira:stack", "s"), ("aira:id", "queue")]), Some("queue".into()));
        assert_eq!(adopt(&scope, [("aira:stack", "other"), ("aira:id", "queue")]), None);
        assert_eq!(adopt(&scope, [("aira:id", "queue")]), None);
        assert_eq!(adopt(&scope, [("aira:stack", "s")]), None);
    }
}
