//! desired × observed → plan. No IO.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::graph::{normalize, resolve_for_display, Desired, Graph, GraphError, Kind, LogicalId};
use crate::provider::Observed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// One property that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Dotted path inside the resource's properties.
    pub path: String,
    pub before: Value,
    pub after: Value,
    pub forces_replacement: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub id: LogicalId,
    pub kind: Kind,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    pub depends_on: BTreeSet<LogicalId>,
    /// The base's resource a preview uses (always a no-op; `current` is the base's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    #[serde(skip)]
    pub desired: Option<Desired>,
    #[serde(skip)]
    pub current: Option<Observed>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub no_op: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Version of this JSON document's shape; bumped on incompatible changes.
    pub format_version: u32,
    pub stack: String,
    /// Dependencies first, then deletions (dependents first).
    pub steps: Vec<Step>,
    pub summary: Summary,
    /// How each service reaches what it needs (set by the caller, which knows the stack file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability: Option<crate::stack::reach::Reachability>,
    /// The stack's monthly cost after the plan and now (set by the caller, which knows the region).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Box<crate::cost::Estimate>>,
    /// Whether `up` builds the runtime's image, and why (set by the caller, which knows the
    /// image); absent for an image aira does not build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Box<crate::expand::ImageDecision>>,
}

impl Plan {
    /// Changes the apply cannot make, each with the way out: turning a live VPC's IPv6 off
    /// needs its subnets, routes and load balancer to let go of the block before the VPC does
    /// (`DisassociateVpcCidrBlock` refuses a block in use), the reverse of the order updates take
    /// (dependencies first).
    pub fn unsupported(&self) -> Vec<String> {
        let ipv6_off = |c: &Change| c.path == "ipv6" && c.before == Value::Bool(true) && c.after == Value::Bool(false);
        self.steps
            .iter()
            .filter(|s| s.kind == Kind::Vpc && s.action == Action::Update && s.changes.iter().any(ipv6_off))
            .map(|s| {
                format!(
                    "network.ipv6: the VPC `{}` has IPv6 now, and turning it off on a live stack is not supported (its \
                     subnets, routes and load balancer would have to let go of the block before the VPC does); keep \
                     `ipv6: true`, or `aira down` and `aira up` again",
                    s.id
                )
            })
            .collect()
    }

    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(|s| s.action != Action::NoOp)
    }

    /// Deletes or replaces something that exists.
    pub fn is_destructive(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.action, Action::Delete | Action::Replace))
    }

    /// Prices the stack after this plan and what exists now, in `region`. A preview's figures
    /// are its own resources'; what it uses of its base is `shared_monthly`, priced as the base
    /// has it.
    pub fn estimate_cost(&self, region: &str) -> crate::cost::Estimate {
        use crate::cost::Priced;
        let mut notes = Vec::new();
        // The base's Prometheus workspace is priced by the series of the tasks it is counted
        // with: with the preview's own, it is what the preview's tasks push into it.
        let own = || self.steps.iter().filter(|s| !s.shared || s.kind == Kind::PrometheusWorkspace);
        let after = own().filter_map(|s| s.desired.as_ref()).map(|d| (&d.id, d.kind, &d.props));
        let after = Priced::all(after, &mut notes);
        let now = own().filter_map(|s| s.current.as_ref()).map(|o| (&o.id, o.kind, &o.props));
        let now = Priced::all(now, &mut notes);
        let mut estimate = crate::cost::estimate(region, &after, &now);
        if self.steps.iter().any(|s| s.shared) {
            let shared = self.steps.iter().filter(|s| s.shared && s.kind != Kind::PrometheusWorkspace);
            let shared = shared.filter_map(|s| s.current.as_ref());
            let shared = Priced::all(shared.map(|o| (&o.id, o.kind, &o.props)), &mut notes);
            estimate.shared(crate::cost::estimate(region, &shared, &[]));
        }
        estimate.notes.extend(notes);
        estimate
    }
}

/// Compares the graph with what exists. `observed` may hold duplicates of one id (oldest first):
/// the first is kept, the others are deleted.
pub fn diff(graph: &Graph, observed: &[Observed]) -> Result<Plan, GraphError> {
    diff_on(graph, observed, &[])
}

/// [`diff`] of a preview, whose graph's shared resources are the base's, read in `base`: each is
/// a no-op step that carries the base's outputs to the preview's own resources, or, missing
/// from the base, an error (nothing of the base is ever created, changed or deleted here).
pub fn diff_on(graph: &Graph, observed: &[Observed], base: &[Observed]) -> Result<Plan, GraphError> {
    let order = graph.topo_order()?;
    let mut current: BTreeMap<&LogicalId, &Observed> = BTreeMap::new();
    let mut extras: Vec<(&Observed, String)> = Vec::new();
    for o in observed {
        match current.get(&o.id) {
            None if graph.get(&o.id).is_some_and(|d| d.kind != o.kind) => extras
                .push((o, format!("`{}` is now a {}", o.id, graph.get(&o.id).map(|d| d.kind.name()).unwrap_or("")))),
            None => {
                current.insert(&o.id, o);
            }
            Some(first) => extras.push((o, format!("duplicate of {} (left by an interrupted run)", first.physical_id))),
        }
    }

    let mut steps: Vec<Step> = Vec::new();
    // Actions decided so far, so a dependent knows whether a dependency's outputs will change.
    let mut decided: BTreeMap<LogicalId, Action> = BTreeMap::new();
    for id in &order {
        let desired = graph.get(id).expect("topo order holds graph ids");
        if graph.shared.contains(id) {
            let obs = base
                .iter()
                .find(|o| &o.id == id && o.kind == desired.kind)
                .ok_or_else(|| GraphError::NotInBase(id.clone(), desired.kind))?;
            // One of the preview's own under an id now the base's: a leftover to delete.
            if let Some(own) = current.insert(id, obs) {
                extras.push((own, format!("`{id}` is now the base's")));
            }
            decided.insert(id.clone(), Action::NoOp);
            steps.push(Step {
                id: id.clone(),
                kind: desired.kind,
                action: Action::NoOp,
                physical_id: Some(obs.physical_id.clone()),
                reason: None,
                changes: Vec::new(),
                depends_on: desired.depends_on.clone(),
                shared: true,
                desired: Some(desired.clone()),
                current: Some(obs.clone()),
            });
            continue;
        }
        let step = match current.get(id) {
            None => Step {
                id: id.clone(),
                kind: desired.kind,
                action: Action::Create,
                physical_id: None,
                reason: None,
                changes: Vec::new(),
                depends_on: desired.depends_on.clone(),
                shared: false,
                desired: Some(desired.clone()),
                current: None,
            },
            Some(obs) => {
                let outputs = |dep: &LogicalId, out: &str| -> Option<Value> {
                    let changed_by_update =
                        || graph.get(dep).is_some_and(|d| d.kind.outputs_changed_by_update().contains(&out));
                    match decided.get(dep) {
                        Some(Action::Create | Action::Replace) => None,
                        Some(Action::Update) if changed_by_update() => None,
                        _ => current.get(dep).and_then(|o| o.outputs.get(out).cloned()),
                    }
                };
                let mut after = resolve_for_display(&desired.props, &outputs);
                let mut before = obs.props.clone();
                normalize(desired.kind, &mut after);
                normalize(desired.kind, &mut before);
                let spec = desired.kind.spec();
                let mut changes = Vec::new();
                diff_values("", &before, &after, &mut changes);
                let mut reasons: Vec<&str> = Vec::new();
                for c in &mut changes {
                    let top = c.path.split('.').next().unwrap_or("");
                    if let Some((_, why)) = spec.replace_on.iter().find(|(p, _)| *p == top) {
                        c.forces_replacement = true;
                        if !reasons.contains(why) {
                            reasons.push(*why);
                        }
                    }
                }
                // A broken resource is repaired even when its properties match the stack.
                if let Some(repair) = &obs.repair {
                    reasons.insert(0, &repair.reason);
                }
                let replace =
                    changes.iter().any(|c| c.forces_replacement) || obs.repair.as_ref().is_some_and(|r| r.replace);
                let action = if replace {
                    Action::Replace
                } else if !changes.is_empty() || obs.repair.is_some() {
                    Action::Update
                } else {
                    Action::NoOp
                };
                Step {
                    id: id.clone(),
                    kind: desired.kind,
                    action,
                    physical_id: Some(obs.physical_id.clone()),
                    reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
                    changes,
                    depends_on: desired.depends_on.clone(),
                    shared: false,
                    desired: Some(desired.clone()),
                    current: Some((*obs).clone()),
                }
            }
        };
        decided.insert(id.clone(), step.action);
        steps.push(step);
    }

    // Deletions: what exists but is not desired, dependents before their dependencies.
    let mut gone: BTreeMap<LogicalId, BTreeSet<LogicalId>> = BTreeMap::new();
    for o in current.values().filter(|o| graph.get(&o.id).is_none()) {
        gone.insert(o.id.clone(), o.depends_on.clone());
    }
    let mut delete_order = crate::graph::topo_sort(&gone)?;
    delete_order.reverse();
    for id in delete_order {
        let o = current[&id];
        steps.push(delete_step(o, GONE_FROM_STACK.into()));
    }
    for (o, why) in extras {
        steps.push(delete_step(o, why));
    }

    let mut summary = Summary::default();
    for s in &steps {
        *match s.action {
            Action::NoOp => &mut summary.no_op,
            Action::Create => &mut summary.create,
            Action::Update => &mut summary.update,
            Action::Replace => &mut summary.replace,
            Action::Delete => &mut summary.delete,
        } += 1;
    }
    Ok(Plan {
        format_version: 1,
        stack: graph.stack.clone(),
        steps,
        summary,
        reachability: None,
        cost: None,
        image: None,
    })
}

/// A plan that deletes everything observed (for `aira down`), dependents first.
pub fn teardown(stack: &str, observed: &[Observed]) -> Result<Plan, GraphError> {
    let mut plan = diff(&Graph { stack: stack.into(), ..Graph::default() }, observed)?;
    for step in plan.steps.iter_mut().filter(|s| s.reason.as_deref() == Some(GONE_FROM_STACK)) {
        step.reason = None;
    }
    Ok(plan)
}

const GONE_FROM_STACK: &str = "not in the stack any more";

fn delete_step(o: &Observed, reason: String) -> Step {
    Step {
        id: o.id.clone(),
        kind: o.kind,
        action: Action::Delete,
        physical_id: Some(o.physical_id.clone()),
        reason: Some(reason),
        changes: Vec::new(),
        depends_on: o.depends_on.clone(),
        shared: false,
        desired: None,
        current: Some(o.clone()),
    }
}

fn diff_values(path: &str, before: &Value, after: &Value, out: &mut Vec<Change>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for k in keys {
                let (bv, av) = (b.get(k).unwrap_or(&Value::Null), a.get(k).unwrap_or(&Value::Null));
                diff_values(&join(k), bv, av, out);
            }
        }
        (b, a) if b == a => {}
        (b, a) => {
            out.push(Change { path: path.to_string(), before: b.clone(), after: a.clone(), forces_replacement: false })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind;

    /// IPv6 turned off on a live VPC is refused; turned on, or unchanged, is not.
    #[test]
    fn turning_a_live_vpcs_ipv6_off_is_unsupported() {
        let vpc = |ipv6: bool| kind::Vpc { cidr: "10.0.0.0/16".into(), dns_support: true, dns_hostnames: true, ipv6 };
        let plan = |live: bool, want: bool| {
            let graph =
                Graph { stack: "s".into(), resources: vec![Desired::of("vpc", &vpc(want))], ..Graph::default() };
            let observed = Observed::of("vpc".into(), "vpc-1", &vpc(live));
            diff(&graph, &[observed]).unwrap()
        };
        let refused = plan(true, false).unsupported();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("network.ipv6: the VPC `vpc` has IPv6 now"), "{}", refused[0]);
        assert!(plan(false, true).unsupported().is_empty());
        assert!(plan(true, true).unsupported().is_empty());
    }

    /// The base as its observe would read it: every resource of its graph, as written.
    fn deployed(base: &Graph) -> Vec<crate::provider::Observed> {
        base.resources
            .iter()
            .map(|d| crate::provider::Observed {
                id: d.id.clone(),
                kind: d.kind,
                physical_id: format!("arn:{}", d.id),
                props: d.props.clone(),
                outputs: Default::default(),
                depends_on: Default::default(),
                repair: None,
            })
            .collect()
    }

    #[test]
    fn a_preview_of_the_canonical_stack_costs_little_of_its_own_and_names_what_it_shares() {
        use crate::expand::expand;
        use crate::expand::preview::{
            expand_preview,
            tests::{base, image},
            Preview,
        };
        use crate::provider::Facts;
        let stack = base();
        let facts = Facts::offline(&stack);
        let base_graph = expand(&stack, &facts, &image()).unwrap();
        let whole = diff(&base_graph, &[]).unwrap().estimate_cost("us-east-1");
        let whole = whole.totals.unwrap().monthly;
        let preview = Preview { base: "aira".into(), name: "pr-7".into() };
        let g = expand_preview(&stack, &facts, &image(), &preview).unwrap();
        // Against an empty base it refuses: nothing of the base is ever created by a preview.
        let err = diff_on(&g, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("the base stack has no"), "{err}");
        let plan = diff_on(&g, &[], &deployed(&base_graph)).unwrap();
        // Nothing of the base changes; the preview's own are created.
        for step in &plan.steps {
            assert_eq!(step.shared, step.action == Action::NoOp, "{} {:?}", step.id, step.action);
        }
        let cost = plan.estimate_cost("us-east-1");
        let own = cost.totals.unwrap().monthly;
        let shared = cost.shared_monthly.unwrap();
        assert!(own <= 40.0, "the preview's own cost: ${own}");
        assert!(own > 0.0 && shared > own, "own ${own}, shared ${shared}");
        // The base's figure is the shared part plus what the preview has its own copy of.
        assert!((shared + own - whole).abs() < 0.05, "own ${own} + shared ${shared} against the whole ${whole}");
        assert!(cost.notes.iter().any(|n| n.contains("shared with the base")), "{:?}", cost.notes);
        assert!(!cost.lines.iter().any(|l| l.id == "nat-a" || l.id == "lb"), "{:?}", cost.lines);
    }
}
