//! What the commands that reach AWS share: the connection, observe + plan, the
//! confirmation rule, the apply, and the stack's lock.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use super::args::{Global, StackArg};
use crate::failure::{Failure, UserError};
use crate::output::Printer;
use aira_aws::{lock, sdk_config, AwsProvider};
use aira_engine::apply::{self, Report, Stop};
use aira_engine::expand::preview::{expand_preview, Preview, BASE_TAG};
use aira_engine::expand::{expand, image_of, Image, ImageDecision};
use aira_engine::graph::{GraphError, Kind};
use aira_engine::kind;
use aira_engine::plan::{self, Plan};
use aira_engine::provider::{Facts, Observed, Provider, Scope};
use aira_engine::stack::reach::{reachability, reachability_through, Reachability};
use aira_engine::stack::{self, Loaded};

/// The AWS provider from the flags (then `stack_region`, then the SDK's chain); a region is required.
pub async fn connect_aws(global: &Global, stack_region: Option<&String>) -> Result<Arc<AwsProvider>, Failure> {
    let config = sdk_config(&global.connection(stack_region)).await;
    if config.region().is_none() {
        return Err(UserError::NoRegion.into());
    }
    Ok(Arc::new(AwsProvider::new(&config)))
}

/// What exists, and what the pre-flight looked up.
pub struct Read {
    pub facts: Facts,
    pub observed: Vec<Observed>,
    /// A preview's base, as its own observe reads it (empty for a stack).
    pub base: Vec<Observed>,
}

/// A stack file and the account it is converged in.
pub struct Session {
    pub loaded: Loaded,
    /// What the services run (`image::prepare`); unused by teardowns.
    pub image: Image,
    pub scope: Arc<Scope>,
    /// The preview `--preview` names, on the base the file describes.
    pub preview: Option<Preview>,
    /// The provider: the engine's operations through [`Provider`], and AWS's day-2 operations
    /// (status reads, the dead-letter queue, secrets, the lock) as its own methods.
    pub aws: Arc<AwsProvider>,
}

impl Session {
    pub async fn connect(global: &Global, arg: &StackArg, printer: &Printer) -> Result<Session, Failure> {
        let loaded = arg.load(printer)?;
        let aws = connect_aws(global, loaded.stack.region.as_ref()).await?;
        let wait = global.timeout.unwrap_or(loaded.stack.deploy.timeout);
        let preview = arg.preview_of(&loaded);
        let mut scope =
            Scope::new(&loaded.stack.stack.0, loaded.stack.tags.clone(), std::time::Duration::from_secs(wait.secs()));
        if let Some(p) = &preview {
            scope.stack = p.stack();
            scope.base = Some(p.base.clone());
            // On every resource of the preview: the base's `down` finds its previews by it.
            scope.tags.insert(BASE_TAG.into(), p.base.clone());
        }
        Ok(Session { loaded, image: Image::Reference(String::new()), scope: Arc::new(scope), preview, aws })
    }

    pub fn stack(&self) -> &str {
        &self.scope.stack
    }

    /// Where a stack with a domain answers: its name, or a preview's host under it.
    pub fn url(&self) -> Option<String> {
        let name = &self.loaded.stack.domain.as_ref()?.name.0;
        Some(match &self.preview {
            Some(p) => format!("https://{}/", p.host(name)),
            None => format!("https://{name}/"),
        })
    }

    /// Observes the stack and runs the pre-flight, at once. Every finding of the pre-flight (a
    /// missing secret, a domain not delegated, a service that cannot reach what it needs, …) is
    /// the user's to fix and reported together, before anything long (an image build) starts.
    pub async fn read(&self, printer: &Printer) -> Result<Read, Failure> {
        printer.note(&format!("reading resources tagged aira:stack={}", self.stack()));
        let base_scope = self.scope.containers();
        let base = async {
            match &self.preview {
                Some(_) => self.aws.observe(&base_scope).await,
                None => Ok(Vec::new()),
            }
        };
        let (facts, observed, base) =
            tokio::join!(self.aws.facts(&self.loaded.stack), self.aws.observe(&self.scope), base);
        let stack = &self.loaded.stack;
        let mut findings: Vec<String> =
            self.reachability(None).problems(stack).into_iter().map(|(_, problem)| problem).collect();
        let facts = match facts {
            // An existing VPC's routes are known now.
            Ok(facts) if facts.existing_egress.is_some() => {
                let problems = self.reachability(Some(&facts)).problems(stack);
                findings.extend(problems.into_iter().map(|(_, problem)| problem));
                Some(facts)
            }
            Ok(facts) => Some(facts),
            Err(e) if e.is_user() => {
                findings.push(e.message);
                None
            }
            Err(e) => return Err(e.into()),
        };
        let (Some(facts), true) = (facts, findings.is_empty()) else {
            return Err(UserError::Preflight(findings).into());
        };
        for note in &facts.notes {
            printer.note(note);
        }
        let base = base?;
        let new_rule =
            self.preview.is_some() && !observed.as_ref().is_ok_and(|o| o.iter().any(|o| o.kind == Kind::ListenerRule));
        if let Some(lb) = base.iter().find(|o| o.kind == Kind::LoadBalancer).filter(|_| new_rule) {
            if let Some(note) = self.aws.rule_quota_note(&lb.physical_id).await? {
                printer.note(&note);
            }
        }
        Ok(Read { facts, observed: observed?, base })
    }

    /// Plans the file against what [`Session::read`] found, with `image`.
    pub fn plan_with(&self, read: &Read, image: &Image) -> Result<Plan, Failure> {
        let mut plan = match &self.preview {
            Some(preview) => {
                let graph = expand_preview(&self.loaded.stack, &read.facts, image, preview)?;
                let plan = plan::diff_on(&graph, &read.observed, &read.base).map_err(unordered)?;
                check_base(preview, &plan)?;
                plan
            }
            None => plan::diff(&expand(&self.loaded.stack, &read.facts, image)?, &read.observed).map_err(unordered)?,
        };
        plan.cost = Some(Box::new(plan.estimate_cost(&read.facts.region)));
        Ok(plan)
    }

    /// Reads the stack and plans the file against it with the image the services run now
    /// (`status`: a drift check that builds nothing).
    pub async fn plan_deployed(&self, printer: &Printer) -> Result<Plan, Failure> {
        let read = self.read(printer).await?;
        self.plan_with(&read, &image_of(&read.observed))
    }

    /// Reads the stack and plans the file against it with [`Session::image`], as `up` would
    /// deploy it (building nothing): the plan says whether `up` builds the image, and why.
    pub async fn plan(&self, printer: &Printer) -> Result<(Read, Plan), Failure> {
        let read = self.read(printer).await?;
        let (image, decision) = self.image.clone().against(&read.observed);
        if let Some(d) = &decision {
            printer.note(&d.reason);
        }
        let plan = self.plan_image(&read, &image, decision)?;
        Ok((read, plan))
    }

    /// [`Session::plan_with`] as `plan` and `up` show it: with the reachability and what `up`
    /// does about the image.
    pub fn plan_image(&self, read: &Read, image: &Image, decision: Option<ImageDecision>) -> Result<Plan, Failure> {
        let mut plan = self.plan_with(read, image)?;
        let unsupported = plan.unsupported();
        if !unsupported.is_empty() {
            return Err(UserError::Preflight(unsupported).into());
        }
        plan.reachability = Some(self.reachability(Some(&read.facts)));
        plan.image = decision.map(Box::new);
        Ok(plan)
    }

    /// How the services reach what they need with the image they will run (its problems are
    /// findings of [`Session::read`]). The stack file's own choices were checked when it was
    /// loaded; this adds `--image`, and an existing VPC's routes once `facts` holds them.
    pub fn reachability(&self, facts: Option<&Facts>) -> Reachability {
        let image = match &self.image {
            Image::Reference(r) if !r.is_empty() => Some(r.as_str()),
            _ => None,
        };
        match facts.and_then(|f| f.existing_egress.as_ref()) {
            Some(egress) => reachability_through(&self.loaded.stack, image, egress),
            None => reachability(&self.loaded.stack, image),
        }
    }

    /// Applies a plan with the stack's scope, until `stop` says the lock was lost.
    pub async fn apply(
        &self,
        plan: &Plan,
        global: &Global,
        printer: &Arc<Printer>,
        stop: Stop,
    ) -> Result<Report, Failure> {
        let (provider, scope): (Arc<dyn Provider>, _) = (self.aws.clone(), self.scope.clone());
        run_apply(plan, provider, scope, printer.clone(), global.concurrency as usize, stop).await
    }

    /// Runs `work` holding the stack's lock; a lock held by another run is a user error naming
    /// it. `work` is given the lock's [`lock::Loss`], to stop when the lock is lost.
    pub async fn locked<T, Fut: Future<Output = Result<T, Failure>>>(
        &self,
        global: &Global,
        printer: &Printer,
        work: impl FnOnce(lock::Loss) -> Fut,
    ) -> Result<T, Failure> {
        let stack = self.stack();
        match locked(&self.aws, stack, global.lock_ttl(), global.force_unlock, printer, work).await {
            Ok(result) => result,
            Err(lock::LockError::Aws(e)) => Err(e.into()),
            Err(lock::LockError::Held { holder, since, expires }) => {
                let now = crate::time::now_secs();
                Err(UserError::Locked { stack: stack.to_string(), holder, since, expires, now }.into())
            }
        }
    }

    /// The one service named (it must be in the stack), or all of them.
    pub fn service_names(&self, service: Option<&str>) -> Result<Vec<String>, Failure> {
        let services = &self.loaded.stack.services;
        match service {
            Some(s) if services.contains_key(s) => Ok(vec![s.to_string()]),
            Some(s) => {
                let hint = stack::did_you_mean(s, services.keys().map(String::as_str));
                Err(UserError::NoService { stack: self.stack().into(), service: s.into(), hint }.into())
            }
            None => Ok(services.keys().cloned().collect()),
        }
    }
}

/// The one way the stack's lock is taken (by `up`, `down`, `rollback` and each stack of a
/// sweep): removed first when `force_unlock`, taken, held (renewed) while `work` runs, released
/// (unless it was lost: then the record is no longer this run's).
pub async fn locked<T, Fut: Future<Output = T>>(
    aws: &AwsProvider,
    stack: &str,
    ttl: std::time::Duration,
    force_unlock: bool,
    printer: &Printer,
    work: impl FnOnce(lock::Loss) -> Fut,
) -> Result<T, lock::LockError> {
    if force_unlock {
        aws.force_unlock(stack).await.map_err(lock::LockError::Aws)?;
        printer.note(&format!("removed the lock of `{stack}`"));
    }
    let held = aws.lock(stack, ttl).await?;
    if let Some(gone) = &held.took_from {
        printer.note(&format!(
            "took the lock of `{stack}` from {gone}: that process is no longer running on this machine"
        ));
    }
    let result = work(held.loss()).await;
    held.release().await;
    Ok(result)
}

/// Applies a plan: operations in parallel, at most `concurrency` at once, until `stop`.
pub async fn run_apply(
    plan: &Plan,
    provider: Arc<dyn Provider>,
    scope: Arc<Scope>,
    printer: Arc<Printer>,
    concurrency: usize,
    stop: Stop,
) -> Result<Report, Failure> {
    apply::apply(plan, provider, scope, printer, concurrency, stop).await.map_err(unordered)
}

/// A plan whose changes have no order (a dependency cycle): aira's failure, not the user's; or
/// a preview whose base lacks what it uses: the user's.
pub fn unordered(e: GraphError) -> Failure {
    match e {
        GraphError::NotInBase(..) => UserError::Preflight(vec![e.to_string()]).into(),
        e => Failure::internal(format!("cannot order the changes: {e}")),
    }
}

/// A base deployed before previews existed lacks what they need: the wildcard name on its
/// certificate, the name of its records on its load balancer (`aira up` of the base adds both).
fn check_base(preview: &Preview, plan: &Plan) -> Result<(), Failure> {
    let base = |kind: Kind| plan.steps.iter().find(|s| s.shared && s.kind == kind).and_then(|s| s.current.as_ref());
    let mut missing = Vec::new();
    if let Some(cert) = base(Kind::Certificate) {
        if !cert.props::<kind::Certificate>().is_ok_and(|c| c.wildcard) {
            missing.push("its certificate does not cover the previews' names (`*.` its domain name)");
        }
    }
    if let Some(lb) = base(Kind::LoadBalancer) {
        if lb.props::<kind::LoadBalancer>().map_or(true, |l| l.public_name.is_none()) {
            missing.push("its load balancer does not name its records (the tag `aira:dns-name`)");
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(UserError::Preflight(vec![format!(
        "the base `{}` was deployed before previews: {}; run `aira up` with the base's stack file first",
        preview.base,
        missing.join("; ")
    )])
    .into())
}

/// Asks before applying; refuses a destructive plan when nobody can be asked.
pub fn confirm(plan: &Plan, global: &Global, verb: &str) -> Result<(), Failure> {
    if !global.yes && !interactive() && !plan.is_destructive() {
        return Ok(()); // creations and updates need no one to ask in CI
    }
    ask(global, &format!("{verb} these changes?"), "the plan deletes or replaces resources")
}

fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The one confirmation rule: `--yes` goes on; in a terminal, ask; without one, refuse (exit 1).
pub fn ask(global: &Global, question: &str, why: &str) -> Result<(), Failure> {
    if global.yes {
        return Ok(());
    }
    if !interactive() {
        return Err(UserError::NotConfirmed(why.to_string()).into());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(UserError::Cancelled.into())
    }
}
