//! `aira down` (one stack, from its file) and `aira down --all` (every matching stack of the
//! account): both run the one [`teardown`] and say what it left behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::applied::{Applied, LeftBehind};
use super::args::{Global, StackArg};
use super::session::{ask, confirm, connect_aws, locked, run_apply, unordered, Session};
use crate::failure::{Failure, Outcome, UserError};
use crate::output::{Printer, Render};
use aira_aws::{lock, StackSummary};
use aira_engine::expand::preview::BASE_TAG;
use aira_engine::plan::{self, Plan};
use aira_engine::provider::{Provider, Scope};
use aira_engine::stack::model::Duration;

/// What a teardown plans: everything tagged with the stack, dependents first.
async fn plan_teardown(provider: &dyn Provider, scope: &Scope) -> Result<Plan, Failure> {
    let observed = provider.observe(scope).await?;
    plan::teardown(&scope.stack, &observed).map_err(unordered)
}

/// The one teardown: applies a teardown plan, then reads AWS again for what is still tagged
/// with the stack, each with why (its failure, the failure it waited on, a deletion in progress).
/// When the lock is lost it stops, and says so instead (another run now owns the stack).
async fn teardown(
    plan: Plan,
    provider: Arc<dyn Provider>,
    scope: Arc<Scope>,
    printer: Arc<Printer>,
    concurrency: usize,
    loss: lock::Loss,
) -> Result<Applied, Failure> {
    let report = run_apply(&plan, provider.clone(), scope.clone(), printer, concurrency, loss.signal()).await?;
    if let Some(reason) = loss.reason().await {
        return Ok(Applied { url: None, plan, report: Some(report), left_behind: Vec::new(), lock_lost: Some(reason) });
    }
    let remaining = provider.observe(&scope).await?;
    let left_behind = remaining.into_iter().map(|o| LeftBehind::explain(o, &report)).collect();
    Ok(Applied { url: None, plan, report: Some(report), left_behind, lock_lost: None })
}

/// What `down` did.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Down {
    /// Nothing is tagged with the stack.
    Nothing {
        plan: Plan,
        report: Option<()>,
    },
    Applied(Applied),
}

impl Render for Down {
    fn text(&self, p: &Printer) {
        match self {
            Down::Nothing { plan, .. } => {
                p.out(&format!("Nothing to delete: no resource is tagged aira:stack={}.", plan.stack))
            }
            Down::Applied(a) => a.text(p),
        }
    }

    fn outcome(&self) -> Result<Outcome, Failure> {
        match self {
            Down::Nothing { .. } => Ok(Outcome::Done),
            Down::Applied(a) => a.outcome(),
        }
    }
}

/// `aira down`: deletes every resource of the stack, holding its lock. A base with live
/// previews is refused, naming them, unless `with_previews`: then they go first.
pub async fn down(
    global: &Global,
    arg: &StackArg,
    with_previews: bool,
    printer: &Arc<Printer>,
) -> Result<Down, Failure> {
    let session = Session::connect(global, arg, printer).await?;
    if session.preview.is_none() {
        let base = session.stack();
        let previews: Vec<StackSummary> = session
            .aws
            .stacks()
            .await?
            .into_iter()
            .filter(|s| s.tags.get(BASE_TAG).map(String::as_str) == Some(base))
            .collect();
        if !previews.is_empty() && !with_previews {
            let names: Vec<&str> = previews.iter().map(|s| s.name.as_str()).collect();
            return Err(UserError::Preflight(vec![format!(
                "`{base}` is the base of live previews ({}): their services run in its cluster, behind its load \
                 balancer. Take them down first (`aira down FILE --preview NAME`), or pass --with-previews",
                names.join(", ")
            )])
            .into());
        }
        if !previews.is_empty() {
            let refs: Vec<&StackSummary> = previews.iter().collect();
            let outcomes = teardown_all(&session.aws, &refs, global, printer).await?;
            let failed: Vec<String> =
                outcomes.iter().filter_map(|(name, s)| Some(format!("{name}: {}", s.problem()?))).collect();
            if !failed.is_empty() {
                return Err(Failure::internal(format!(
                    "the base stays: {} of its previews could not be removed ({})",
                    failed.len(),
                    failed.join("; ")
                )));
            }
        }
    }
    let work = |loss| async {
        printer.note(&format!("reading resources tagged aira:stack={}", session.stack()));
        let plan = plan_teardown(&*session.aws, &session.scope).await?;
        if !plan.has_changes() {
            return Ok(Down::Nothing { plan, report: None });
        }
        printer.preview(&plan);
        confirm(&plan, global, "delete")?;
        let (provider, scope): (Arc<dyn Provider>, _) = (session.aws.clone(), session.scope.clone());
        let applied = teardown(plan, provider, scope, printer.clone(), global.concurrency as usize, loss).await?;
        applied.note_timing(printer);
        Ok(Down::Applied(applied))
    };
    session.locked(global, printer, work).await
}

/// How the teardown of one stack of a sweep ended.
enum Swept {
    Applied(Box<Applied>),
    /// Another run holds the stack's lock.
    Locked {
        holder: String,
    },
    Failed(Failure),
}

impl Swept {
    /// Why the stack is not gone; `None` when it is.
    fn problem(&self) -> Option<String> {
        match self {
            Swept::Applied(a) => match a.first_failure() {
                _ if a.lock_lost.is_some() => a.lock_lost.as_ref().map(|reason| format!("lock lost: {reason}")),
                Some((kind, id, error)) => {
                    Some(format!("{kind} {id}: {error}; {} resource(s) left", a.left_behind.len()))
                }
                None if a.left_behind.is_empty() => None,
                None => {
                    let left: Vec<String> = a.left_behind.iter().map(|l| format!("{} {}", l.kind, l.id)).collect();
                    Some(format!("left behind: {}", left.join(", ")))
                }
            },
            Swept::Locked { holder } => Some(format!("locked by {holder}")),
            Swept::Failed(f) => Some(f.to_string()),
        }
    }
}

/// What `down --all` did.
#[derive(Debug, serde::Serialize)]
pub struct Sweep {
    pub matched: Vec<StackSummary>,
    pub removed: Vec<String>,
    pub failed: Vec<SweepFailure>,
}

#[derive(Debug, serde::Serialize)]
pub struct SweepFailure {
    pub stack: String,
    pub error: String,
}

impl Render for Sweep {
    fn text(&self, p: &Printer) {
        if self.matched.is_empty() {
            return p.out("No stack matches; nothing to delete.");
        }
        for s in &self.removed {
            p.out(&format!("removed  {s}"));
        }
        for f in &self.failed {
            p.out(&format!("FAILED   {}: {}", f.stack, f.error));
        }
    }

    fn outcome(&self) -> Result<Outcome, Failure> {
        if self.failed.is_empty() {
            return Ok(Outcome::Done);
        }
        Err(Failure::internal(format!(
            "{} of {} stack(s) could not be removed completely",
            self.failed.len(),
            self.matched.len()
        )))
    }
}

/// Which stacks `down --all` removes.
pub struct Filter<'a> {
    pub selector: &'a [(String, String)],
    pub older_than: Option<Duration>,
    pub expired: bool,
}

impl Filter<'_> {
    fn matches(&self, s: &StackSummary, now: u64) -> bool {
        self.selector.iter().all(|(k, v)| s.tags.get(k) == Some(v))
            && self.older_than.is_none_or(|d| s.created_at.is_some_and(|c| now.saturating_sub(c) > d.secs()))
            && (!self.expired || s.expires_at.is_some_and(|e| e <= now))
    }
}

/// Tears down `stacks` in parallel, each with its lock (a preview's scope knows its base).
async fn teardown_all(
    aws: &Arc<aira_aws::AwsProvider>,
    stacks: &[&StackSummary],
    global: &Global,
    printer: &Arc<Printer>,
) -> Result<BTreeMap<String, Swept>, Failure> {
    let wait = std::time::Duration::from_secs(global.timeout.map_or(30 * 60, |t| t.secs()));
    let (concurrency, ttl) = (global.concurrency as usize, global.lock_ttl());
    let mut tasks = tokio::task::JoinSet::new();
    for s in stacks {
        let mut scope = Scope::new(&s.name, Default::default(), wait);
        scope.base = s.tags.get(BASE_TAG).cloned();
        let scope = Arc::new(scope);
        let (aws, printer) = (aws.clone(), printer.clone());
        tasks.spawn(async move {
            let provider: Arc<dyn Provider> = aws.clone();
            let work = |loss| async {
                let plan = plan_teardown(&*provider, &scope).await?;
                teardown(plan, provider.clone(), scope.clone(), printer.clone(), concurrency, loss).await
            };
            // --force-unlock is not applied to a sweep: it would break every matched stack's lock.
            let swept = match locked(&aws, &scope.stack, ttl, false, &printer, work).await {
                Ok(Ok(applied)) => Swept::Applied(Box::new(applied)),
                Ok(Err(f)) => Swept::Failed(f),
                Err(lock::LockError::Held { holder, .. }) => Swept::Locked { holder },
                Err(lock::LockError::Aws(e)) => Swept::Failed(e.into()),
            };
            (scope.stack.clone(), swept)
        });
    }
    let mut outcomes = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (name, swept) = joined.map_err(|e| Failure::internal(format!("a teardown task panicked: {e}")))?;
        outcomes.insert(name, swept);
    }
    Ok(outcomes)
}

/// `down --all`: tears down every matching stack, in parallel, each with its lock; previews
/// before the other stacks.
pub async fn sweep(global: &Global, filter: Filter<'_>, printer: &Arc<Printer>) -> Result<Sweep, Failure> {
    let aws = connect_aws(global, None).await?;
    let now = crate::time::now_secs();
    let matched: Vec<_> = aws.stacks().await?.into_iter().filter(|s| filter.matches(s, now)).collect();
    printer.note(&format!(
        "{} stack(s) match: {}",
        matched.len(),
        matched.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    if matched.is_empty() {
        return Ok(Sweep { matched, removed: Vec::new(), failed: Vec::new() });
    }
    ask(
        global,
        &format!("delete every resource of {} stack(s)?", matched.len()),
        &format!("this deletes {} stack(s)", matched.len()),
    )?;
    // Previews first: their services live in their base's cluster, their rules on its listener.
    let (previews, stacks): (Vec<&StackSummary>, Vec<&StackSummary>) =
        matched.iter().partition(|s| s.tags.contains_key(BASE_TAG));
    let mut outcomes = BTreeMap::new();
    for wave in [previews, stacks] {
        outcomes.extend(teardown_all(&aws, &wave, global, printer).await?);
    }
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    for (stack, swept) in outcomes {
        match swept.problem() {
            None => removed.push(stack),
            Some(error) => failed.push(SweepFailure { stack, error }),
        }
    }
    Ok(Sweep { matched, removed, failed })
}
