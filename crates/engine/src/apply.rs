//! Carries out a plan: a parallel walk of the operations' dependency graph with bounded
//! concurrency. When an operation fails, nothing that depends on it starts, operations
//! already running finish, and the report says what was done, failed and skipped. When the
//! caller says stop (the stack's lock was lost), nothing starts any more and running operations
//! are cancelled at their next call: the state they leave is the one a killed run leaves, which
//! the next run observes and converges.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::graph::{resolve, topo_sort, GraphError, Kind, LogicalId, ReplaceOrder};
use crate::plan::{Action, Plan};
use crate::provider::{Observed, Progress, Provider, ProviderError, Resolved, Scope};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Create,
    Update,
    Delete,
}

/// What the printer hears about operations as they run.
pub trait Events: Progress {
    fn started(&self, id: &LogicalId, kind: Kind, op: OpKind);
    fn finished(&self, id: &LogicalId, kind: Kind, op: OpKind, elapsed: Duration, error: Option<&str>);
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Status {
    Done,
    Failed {
        error: String,
    },
    Skipped {
        because: LogicalId,
    },
    /// Not started: the run was told to stop.
    Stopped,
    /// Running when the run was told to stop, and cancelled.
    Interrupted,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: LogicalId,
    pub kind: Kind,
    pub op: OpKind,
    #[serde(flatten)]
    pub status: Status,
    pub elapsed_ms: u128,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Wall time of the apply.
    pub elapsed_ms: u128,
    /// The longest chain of dependent operations, by their measured durations: no schedule
    /// can finish faster, so `elapsed_ms / critical_path_ms` is the scheduler's overhead.
    pub critical_path_ms: u128,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| matches!(o.status, Status::Failed { .. }))
    }
    pub fn is_success(&self) -> bool {
        self.outcomes.iter().all(|o| o.status == Status::Done)
    }
    /// Whether the run was told to stop before every operation ended.
    pub fn stopped(&self) -> bool {
        self.outcomes.iter().any(|o| matches!(o.status, Status::Stopped | Status::Interrupted))
    }
}

/// Tells a running apply to stop: it holds a reason once the caller may no longer change
/// anything (the stack's lock was lost).
pub type Stop = watch::Receiver<Option<String>>;

/// A stop signal that never fires.
pub fn never() -> Stop {
    watch::channel(None).1
}

/// Resolves once `stop` holds a reason; never when its sender is gone without one.
async fn stopped(stop: &mut Stop) {
    if stop.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

struct Op {
    step: usize,
    kind: OpKind,
    deps: BTreeSet<usize>,
}

/// Turns plan steps into operations with their ordering constraints.
fn schedule(plan: &Plan) -> Result<Vec<Op>, GraphError> {
    let mut ops: Vec<Op> = Vec::new();
    let mut ready: BTreeMap<&LogicalId, usize> = BTreeMap::new();
    let mut deletes: BTreeMap<usize, usize> = BTreeMap::new(); // step -> its delete op
    let add = |ops: &mut Vec<Op>, step, kind| {
        ops.push(Op { step, kind, deps: BTreeSet::new() });
        ops.len() - 1
    };
    for (i, s) in plan.steps.iter().enumerate() {
        match s.action {
            Action::NoOp => {}
            Action::Create => {
                ready.insert(&s.id, add(&mut ops, i, OpKind::Create));
            }
            Action::Update => {
                ready.insert(&s.id, add(&mut ops, i, OpKind::Update));
            }
            Action::Delete => {
                deletes.insert(i, add(&mut ops, i, OpKind::Delete));
            }
            Action::Replace => {
                let (first, second) = match s.kind.spec().replace_order {
                    ReplaceOrder::DeleteBeforeCreate => (OpKind::Delete, OpKind::Create),
                    ReplaceOrder::CreateBeforeDelete => (OpKind::Create, OpKind::Delete),
                };
                let a = add(&mut ops, i, first);
                let b = add(&mut ops, i, second);
                ops[b].deps.insert(a);
                let (c, d) = if first == OpKind::Create { (a, b) } else { (b, a) };
                ready.insert(&s.id, c);
                deletes.insert(i, d);
            }
        }
    }
    // Which steps' existing resources point at each id (old dependents).
    let kept: BTreeSet<&LogicalId> = plan.steps.iter().filter(|s| s.action != Action::Delete).map(|s| &s.id).collect();
    let mut dependents: BTreeMap<&LogicalId, Vec<usize>> = BTreeMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let is_duplicate = s.action == Action::Delete && kept.contains(&s.id);
        if let (Some(cur), false) = (&s.current, is_duplicate) {
            for d in &cur.depends_on {
                dependents.entry(d).or_default().push(i);
            }
        }
    }
    for op in ops.iter_mut() {
        let step = &plan.steps[op.step];
        let mut deps = BTreeSet::new();
        match op.kind {
            OpKind::Create | OpKind::Update => {
                if let Some(d) = &step.desired {
                    deps.extend(d.depends_on.iter().filter_map(|dep| ready.get(dep).copied()));
                }
            }
            OpKind::Delete => {
                let is_duplicate = step.action == Action::Delete && kept.contains(&step.id);
                let dbc = step.action == Action::Replace
                    && step.kind.spec().replace_order == ReplaceOrder::DeleteBeforeCreate;
                for &t in dependents.get(&step.id).filter(|_| !is_duplicate).into_iter().flatten() {
                    if t == op.step {
                        continue;
                    }
                    let other = &plan.steps[t];
                    if let Some(&d) = deletes.get(&t) {
                        let other_dbc = other.action == Action::Delete
                            || other.kind.spec().replace_order == ReplaceOrder::DeleteBeforeCreate;
                        if other_dbc {
                            deps.insert(d);
                            continue;
                        }
                    }
                    // A dependent that stays must stop pointing here first; for a
                    // delete-before-create replacement it can only point at the new one later.
                    if !dbc {
                        if let Some(&r) = ready.get(&other.id) {
                            deps.insert(r);
                        }
                    }
                }
            }
        }
        op.deps.extend(deps);
    }
    // Refuse a schedule that could never finish.
    let edges: BTreeMap<LogicalId, BTreeSet<LogicalId>> = ops
        .iter()
        .enumerate()
        .map(|(i, o)| (LogicalId(i.to_string()), o.deps.iter().map(|d| LogicalId(d.to_string())).collect()))
        .collect();
    topo_sort(&edges).map_err(|_| {
        GraphError::Cycle(
            ops.iter().map(|o| plan.steps[o.step].id.clone()).collect::<BTreeSet<_>>().into_iter().collect(),
        )
    })?;
    Ok(ops)
}

#[derive(Clone, PartialEq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
    Skipped(LogicalId),
    Stopped,
}

fn stopped_outcome(plan: &Plan, ops: &[Op], i: usize, status: Status) -> Outcome {
    let step = &plan.steps[ops[i].step];
    Outcome { id: step.id.clone(), kind: step.kind, op: ops[i].kind, status, elapsed_ms: 0 }
}

/// Applies `plan` through `provider`, at most `concurrency` operations at a time.
pub async fn apply(
    plan: &Plan,
    provider: Arc<dyn Provider>,
    scope: Arc<Scope>,
    events: Arc<dyn Events>,
    concurrency: usize,
    mut stop: Stop,
) -> Result<Report, GraphError> {
    let started = Instant::now();
    let ops = schedule(plan)?;
    let concurrency = concurrency.max(1);
    let mut state = vec![State::Pending; ops.len()];
    let mut outcomes: Vec<Option<Outcome>> = vec![None; ops.len()];
    // Outputs of resources that exist and will not change, then of each completed operation.
    let mut outputs: BTreeMap<LogicalId, BTreeMap<String, Value>> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::NoOp | Action::Update))
        .filter_map(|s| Some((s.id.clone(), s.current.as_ref()?.outputs.clone())))
        .collect();
    let mut running = JoinSet::new();

    loop {
        if stop.borrow().is_some() {
            // Cancelled at their next await: no call of theirs starts from now on.
            running.abort_all();
            for (i, s) in state.iter_mut().enumerate() {
                match s {
                    State::Pending => outcomes[i] = Some(stopped_outcome(plan, &ops, i, Status::Stopped)),
                    State::Running => outcomes[i] = Some(stopped_outcome(plan, &ops, i, Status::Interrupted)),
                    _ => continue,
                }
                *s = State::Stopped;
            }
            break;
        }
        // Start what is ready, up to the bound.
        for i in 0..ops.len() {
            if running.len() >= concurrency {
                break;
            }
            if state[i] != State::Pending || !ops[i].deps.iter().all(|d| state[*d] == State::Done) {
                continue;
            }
            let step = &plan.steps[ops[i].step];
            let (provider, scope, events) = (provider.clone(), scope.clone(), events.clone());
            let kind = ops[i].kind;
            let current = step.current.clone();
            // Every reference names a dependency that is done, so it resolves; if one does not
            // (a provider that reports no such output), the operation fails rather than send nulls.
            let resolved = step.desired.as_ref().map(|d| {
                resolve(&d.props, &|id, out| outputs.get(id)?.get(out).cloned())
                    .map(|props| Resolved { id: d.id.clone(), kind: d.kind, props })
                    .ok_or_else(|| format!("`{}` references an output that its dependencies did not report", d.id))
            });
            let (id, res_kind) = (step.id.clone(), step.kind);
            state[i] = State::Running;
            events.started(&id, res_kind, kind);
            running.spawn(async move {
                let start = Instant::now();
                let result: Result<Option<Observed>, ProviderError> = match (kind, resolved, current) {
                    (OpKind::Create | OpKind::Update, Some(Err(e)), _) => Err(ProviderError::new(e)),
                    (OpKind::Create, Some(Ok(r)), _) => provider.create(&scope, &r, &*events).await.map(Some),
                    (OpKind::Update, Some(Ok(r)), Some(c)) => provider.update(&scope, &r, &c, &*events).await.map(Some),
                    (OpKind::Delete, _, Some(c)) => provider.delete(&scope, &c, &*events).await.map(|_| None),
                    _ => Err(ProviderError::new("internal error: operation without its resource")),
                };
                let elapsed = start.elapsed();
                let error = result.as_ref().err().map(|e| e.message.clone());
                events.finished(&id, res_kind, kind, elapsed, error.as_deref());
                (i, result, elapsed)
            });
        }
        let joined = tokio::select! {
            biased;
            _ = stopped(&mut stop) => continue,
            joined = running.join_next() => joined,
        };
        let Some(joined) = joined else { break };
        let (i, result, elapsed) = match joined {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let step = &plan.steps[ops[i].step];
        let status = match result {
            Ok(observed) => {
                if let Some(o) = observed {
                    outputs.insert(o.id.clone(), o.outputs);
                }
                state[i] = State::Done;
                Status::Done
            }
            Err(e) => {
                state[i] = State::Failed;
                skip_dependents(&ops, &mut state, i, &step.id);
                Status::Failed { error: e.message }
            }
        };
        outcomes[i] = Some(Outcome {
            id: step.id.clone(),
            kind: step.kind,
            op: ops[i].kind,
            status,
            elapsed_ms: elapsed.as_millis(),
        });
    }

    // Longest path through the operations' DAG, weighted by measured durations.
    let mut finish: Vec<u128> = vec![0; ops.len()];
    for i in topo_order(&ops) {
        let start = ops[i].deps.iter().map(|d| finish[*d]).max().unwrap_or(0);
        finish[i] = start + outcomes[i].as_ref().map_or(0, |o| o.elapsed_ms);
    }
    let critical_path_ms = finish.into_iter().max().unwrap_or(0);

    let outcomes = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.unwrap_or_else(|| {
                let step = &plan.steps[ops[i].step];
                let because = match &state[i] {
                    State::Skipped(id) => id.clone(),
                    _ => step.id.clone(),
                };
                Outcome {
                    id: step.id.clone(),
                    kind: step.kind,
                    op: ops[i].kind,
                    status: Status::Skipped { because },
                    elapsed_ms: 0,
                }
            })
        })
        .collect();
    Ok(Report { outcomes, elapsed_ms: started.elapsed().as_millis(), critical_path_ms })
}

/// Operation indices, dependencies first (the schedule is known to be acyclic).
fn topo_order(ops: &[Op]) -> Vec<usize> {
    let mut order = Vec::with_capacity(ops.len());
    let mut placed = vec![false; ops.len()];
    while order.len() < ops.len() {
        let before = order.len();
        for (i, op) in ops.iter().enumerate() {
            if !placed[i] && op.deps.iter().all(|d| placed[*d]) {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            break; // unreachable for a schedule that passed its cycle check
        }
    }
    order
}

fn skip_dependents(ops: &[Op], state: &mut [State], failed: usize, because: &LogicalId) {
    let mut frontier = vec![failed];
    while let Some(f) = frontier.pop() {
        for (j, op) in ops.iter().enumerate() {
            if op.deps.contains(&f) && state[j] == State::Pending {
                state[j] = State::Skipped(because.clone());
                frontier.push(j);
            }
        }
    }
}
