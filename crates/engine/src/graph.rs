//! The desired resource graph: logical ids, kinds, properties and dependencies.
//!
//! Plain data. A property value may reference another resource's output as
//! `{"$ref": "<logical id>.<output>"}`; references are dependencies, resolved at apply time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use crate::kind::{Kind, KindSpec, Props, ReplaceOrder};

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LogicalId(pub String);

impl fmt::Display for LogicalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for LogicalId {
    fn from(s: &str) -> Self {
        LogicalId(s.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Desired {
    pub id: LogicalId,
    pub kind: Kind,
    /// A JSON object in the same normal form the provider reports for observed resources.
    pub props: Value,
    pub depends_on: BTreeSet<LogicalId>,
}

impl Desired {
    /// A resource whose dependencies are the references found in its properties.
    pub fn new(id: &str, kind: Kind, props: Value) -> Self {
        let mut depends_on = BTreeSet::new();
        collect_refs(&props, &mut depends_on);
        Desired { id: id.into(), kind, props, depends_on }
    }

    /// A resource of the kind of `props`.
    pub fn of<P: Props>(id: &str, props: &P) -> Self {
        Desired::new(id, P::KIND, props.to_value())
    }
}

/// `{"$ref": "id.output"}`.
pub fn reference(id: &str, output: &str) -> Value {
    serde_json::json!({ "$ref": format!("{id}.{output}") })
}

/// Whether `v` still holds a reference anywhere.
pub fn has_refs(v: &Value) -> bool {
    let mut found = BTreeSet::new();
    collect_refs(v, &mut found);
    !found.is_empty()
}

fn as_ref(v: &Value) -> Option<(&str, &str)> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.get("$ref")?.as_str()?.split_once('.')
}

fn collect_refs(v: &Value, out: &mut BTreeSet<LogicalId>) {
    if let Some((id, _)) = as_ref(v) {
        out.insert(id.into());
        return;
    }
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

/// Replaces references by the outputs they name. `None` when an output is not known yet.
pub fn resolve(v: &Value, outputs: &dyn Fn(&LogicalId, &str) -> Option<Value>) -> Option<Value> {
    if let Some((id, out)) = as_ref(v) {
        return outputs(&id.into(), out);
    }
    Some(match v {
        Value::Array(items) => Value::Array(items.iter().map(|i| resolve(i, outputs)).collect::<Option<_>>()?),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, i)| Some((k.clone(), resolve(i, outputs)?))).collect::<Option<_>>()?)
        }
        other => other.clone(),
    })
}

/// Like [`resolve`], but an unknown output becomes the marker `"(known after apply)"`.
pub fn resolve_for_display(v: &Value, outputs: &dyn Fn(&LogicalId, &str) -> Option<Value>) -> Value {
    if let Some((id, out)) = as_ref(v) {
        return outputs(&id.into(), out).unwrap_or_else(|| Value::from(UNKNOWN));
    }
    match v {
        Value::Array(items) => Value::Array(items.iter().map(|i| resolve_for_display(i, outputs)).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, i)| (k.clone(), resolve_for_display(i, outputs))).collect())
        }
        other => other.clone(),
    }
}

pub const UNKNOWN: &str = "(known after apply)";

/// Sorts the kind's unordered list properties, so that order never shows as a change.
pub fn normalize(kind: Kind, props: &mut Value) {
    for key in kind.spec().sets {
        if let Some(Value::Array(items)) = props.get_mut(*key) {
            items.sort_by_cached_key(|v| v.to_string());
            items.dedup();
        }
    }
}

/// The desired state of one stack.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Graph {
    pub stack: String,
    /// Tags every resource carries besides `aira:stack` and `aira:id`.
    pub tags: BTreeMap<String, String>,
    pub resources: Vec<Desired>,
    /// A preview's resources that are its base's (`expand::preview`): read from the base, used
    /// as they are, never changed.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub shared: BTreeSet<LogicalId>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("resource `{0}` depends on `{1}`, which is not in the stack")]
    UnknownDependency(LogicalId, LogicalId),
    #[error("resource `{0}` is defined twice")]
    Duplicate(LogicalId),
    #[error("the base stack has no `{0}` ({1}), which its previews use: `aira up` the base's stack file first")]
    NotInBase(LogicalId, Kind),
    #[error("dependency cycle through {}", .0.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "))]
    Cycle(Vec<LogicalId>),
}

impl Graph {
    pub fn get(&self, id: &LogicalId) -> Option<&Desired> {
        self.resources.iter().find(|r| &r.id == id)
    }

    /// Ids in dependency order (dependencies first); ties broken by id for stable output.
    pub fn topo_order(&self) -> Result<Vec<LogicalId>, GraphError> {
        let mut seen = BTreeSet::new();
        for r in &self.resources {
            if !seen.insert(&r.id) {
                return Err(GraphError::Duplicate(r.id.clone()));
            }
        }
        let edges: BTreeMap<LogicalId, BTreeSet<LogicalId>> =
            self.resources.iter().map(|r| (r.id.clone(), r.depends_on.clone())).collect();
        for (id, deps) in &edges {
            if let Some(missing) = deps.iter().find(|d| !edges.contains_key(*d)) {
                return Err(GraphError::UnknownDependency(id.clone(), missing.clone()));
            }
        }
        topo_sort(&edges)
    }
}

/// Kahn's algorithm over `node -> its dependencies`; dependencies absent from the map are ignored.
pub fn topo_sort(edges: &BTreeMap<LogicalId, BTreeSet<LogicalId>>) -> Result<Vec<LogicalId>, GraphError> {
    let mut remaining: BTreeMap<&LogicalId, BTreeSet<&LogicalId>> =
        edges.iter().map(|(id, deps)| (id, deps.iter().filter(|d| edges.contains_key(*d)).collect())).collect();
    let mut order = Vec::with_capacity(edges.len());
    while !remaining.is_empty() {
        let ready: Vec<&LogicalId> = remaining.iter().filter(|(_, deps)| deps.is_empty()).map(|(id, _)| *id).collect();
        if ready.is_empty() {
            return Err(GraphError::Cycle(remaining.keys().map(|id| (*id).clone()).collect()));
        }
        for id in ready {
            remaining.remove(id);
            for deps in remaining.values_mut() {
                deps.remove(id);
            }
            order.push(id.clone());
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_dependencies() {
        let r = Desired::new("queue", Kind::SqsQueue, json!({"redrive": {"target": reference("dlq", "arn")}}));
        assert_eq!(r.depends_on, BTreeSet::from(["dlq".into()]));
        let resolved = resolve(&r.props, &|id, out| (id.0 == "dlq" && out == "arn").then(|| json!("arn:dlq")));
        assert_eq!(resolved, Some(json!({"redrive": {"target": "arn:dlq"}})));
        assert_eq!(resolve(&r.props, &|_, _| None), None);
    }

    #[test]
    fn topological_order_and_errors() {
        let mut g = Graph {
            stack: "s".into(),
            resources: vec![
                Desired::new("b", Kind::SqsQueue, json!({"x": reference("a", "arn")})),
                Desired::new("a", Kind::SqsQueue, json!({})),
            ],
            ..Graph::default()
        };
        assert_eq!(g.topo_order().unwrap(), vec![LogicalId::from("a"), "b".into()]);
        g.resources[1] = Desired::new("a", Kind::SqsQueue, json!({"x": reference("b", "arn")}));
        assert!(matches!(g.topo_order(), Err(GraphError::Cycle(_))));
        g.resources[1] = Desired::new("a", Kind::SqsQueue, json!({"x": reference("c", "arn")}));
        assert_eq!(g.topo_order(), Err(GraphError::UnknownDependency("a".into(), "c".into())));
    }
}
