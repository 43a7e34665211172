//! The desired resource graph: logical ids, kinds, properties and dependencies.
//!
//! Plain data. A property value may reference another resource's output as
//! `{"$ref": "<logical id>.<output>"}`; references are dependencies, resolved at apply time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

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

/// The kinds of resource aira manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    #[serde(rename = "sqs.queue")]
    SqsQueue,
    #[serde(rename = "ec2.vpc")]
    Vpc,
    #[serde(rename = "ec2.subnet")]
    Subnet,
    #[serde(rename = "ec2.internet-gateway")]
    InternetGateway,
    #[serde(rename = "ec2.elastic-ip")]
    ElasticIp,
    #[serde(rename = "ec2.nat-gateway")]
    NatGateway,
    #[serde(rename = "ec2.route-table")]
    RouteTable,
    #[serde(rename = "ec2.security-group")]
    SecurityGroup,
    #[serde(rename = "ec2.vpc-endpoint")]
    VpcEndpoint,
    #[serde(rename = "dynamodb.table")]
    Table,
    #[serde(rename = "logs.log-group")]
    LogGroup,
    #[serde(rename = "iam.role")]
    Role,
    #[serde(rename = "acm.certificate")]
    Certificate,
    #[serde(rename = "route53.record")]
    DnsRecord,
    #[serde(rename = "elbv2.load-balancer")]
    LoadBalancer,
    #[serde(rename = "elbv2.target-group")]
    TargetGroup,
    #[serde(rename = "elbv2.listener")]
    Listener,
    #[serde(rename = "ecr.repository")]
    Repository,
    #[serde(rename = "ecs.cluster")]
    Cluster,
    #[serde(rename = "ecs.task-definition")]
    TaskDefinition,
    #[serde(rename = "ecs.service")]
    Service,
}

impl Kind {
    pub const ALL: [Kind; 21] = [
        Kind::SqsQueue,
        Kind::Vpc,
        Kind::Subnet,
        Kind::InternetGateway,
        Kind::ElasticIp,
        Kind::NatGateway,
        Kind::RouteTable,
        Kind::SecurityGroup,
        Kind::VpcEndpoint,
        Kind::Table,
        Kind::LogGroup,
        Kind::Role,
        Kind::Certificate,
        Kind::DnsRecord,
        Kind::LoadBalancer,
        Kind::TargetGroup,
        Kind::Listener,
        Kind::Repository,
        Kind::Cluster,
        Kind::TaskDefinition,
        Kind::Service,
    ];
}

/// How a kind is replaced when a property cannot change in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceOrder {
    /// The new one first, for minimal downtime (Pulumi's and OpenTofu's default).
    CreateBeforeDelete,
    /// For kinds whose name is their identity: two cannot exist at once.
    DeleteBeforeCreate,
}

pub struct KindSpec {
    pub name: &'static str,
    /// Top-level properties AWS cannot change in place, with the reason shown in the plan.
    pub replace_on: &'static [(&'static str, &'static str)],
    pub replace_order: ReplaceOrder,
    /// Top-level list properties whose order means nothing (compared sorted).
    pub sets: &'static [&'static str],
}

impl Kind {
    pub fn spec(self) -> KindSpec {
        use ReplaceOrder::*;
        const IN_VPC: (&str, &str) = ("vpc", "it cannot move to another VPC");
        match self {
            Kind::SqsQueue => KindSpec {
                name: "sqs.queue",
                replace_on: &[
                    ("name", "a queue's name cannot change"),
                    ("fifo", "a queue cannot change between standard and FIFO"),
                ],
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::Vpc => KindSpec {
                name: "ec2.vpc",
                replace_on: &[("cidr", "a VPC's primary CIDR block cannot change")],
                replace_order: CreateBeforeDelete,
                sets: &[],
            },
            Kind::Subnet => KindSpec {
                name: "ec2.subnet",
                replace_on: &[
                    IN_VPC,
                    ("cidr", "a subnet's CIDR block cannot change"),
                    ("zone", "a subnet cannot move to another availability zone"),
                ],
                // Its CIDR block cannot be held twice in one VPC.
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::InternetGateway => {
                KindSpec { name: "ec2.internet-gateway", replace_on: &[], replace_order: CreateBeforeDelete, sets: &[] }
            }
            Kind::ElasticIp => {
                KindSpec { name: "ec2.elastic-ip", replace_on: &[], replace_order: CreateBeforeDelete, sets: &[] }
            }
            Kind::NatGateway => KindSpec {
                name: "ec2.nat-gateway",
                replace_on: &[
                    ("subnet", "a NAT gateway cannot move to another subnet"),
                    ("allocation", "a NAT gateway's public address cannot change"),
                ],
                // Its Elastic IP can be held by one NAT gateway at a time.
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::RouteTable => KindSpec {
                name: "ec2.route-table",
                replace_on: &[IN_VPC],
                replace_order: CreateBeforeDelete,
                sets: &["routes", "subnets"],
            },
            Kind::SecurityGroup => KindSpec {
                name: "ec2.security-group",
                replace_on: &[
                    IN_VPC,
                    ("name", "a security group's name cannot change"),
                    ("description", "a security group's description cannot change"),
                ],
                replace_order: DeleteBeforeCreate,
                sets: &["ingress"],
            },
            Kind::VpcEndpoint => KindSpec {
                name: "ec2.vpc-endpoint",
                replace_on: &[
                    IN_VPC,
                    ("service", "an endpoint's service cannot change"),
                    ("type", "an endpoint's type cannot change"),
                ],
                // One private DNS name per service and VPC.
                replace_order: DeleteBeforeCreate,
                sets: &["subnets", "security_groups", "route_tables"],
            },
            Kind::Table => KindSpec {
                name: "dynamodb.table",
                replace_on: &[("name", "a table's name cannot change"), ("keys", "a table's key schema cannot change")],
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::LogGroup => KindSpec {
                name: "logs.log-group",
                replace_on: &[("name", "a log group's name cannot change")],
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::Role => KindSpec {
                name: "iam.role",
                replace_on: &[("name", "a role's name cannot change"), ("path", "a role's path cannot change")],
                replace_order: DeleteBeforeCreate,
                sets: &["managed_policies"],
            },
            Kind::Certificate => KindSpec {
                name: "acm.certificate",
                replace_on: &[
                    ("domain", "a certificate's domain name cannot change"),
                    ("zone_id", "its validation records live in the hosted zone"),
                ],
                // The listener moves to the new certificate before the old one goes.
                replace_order: CreateBeforeDelete,
                sets: &[],
            },
            Kind::DnsRecord => KindSpec {
                name: "route53.record",
                replace_on: &[
                    ("zone_id", "a record cannot move to another hosted zone"),
                    ("name", "a record's name is its identity"),
                    ("type", "a record's type is its identity"),
                ],
                // Name and type identify the record: two cannot exist at once.
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::LoadBalancer => KindSpec {
                name: "elbv2.load-balancer",
                replace_on: &[
                    ("name", "a load balancer's name cannot change"),
                    ("scheme", "a load balancer's scheme (internet-facing or internal) cannot change"),
                ],
                replace_order: DeleteBeforeCreate,
                sets: &["subnets", "security_groups"],
            },
            Kind::TargetGroup => KindSpec {
                name: "elbv2.target-group",
                replace_on: &[
                    ("name", "a target group's name cannot change"),
                    ("protocol", "a target group's protocol cannot change"),
                    ("port", "a target group's port cannot change"),
                    ("target_type", "a target group's target type cannot change"),
                    IN_VPC,
                ],
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::Listener => KindSpec {
                name: "elbv2.listener",
                replace_on: &[("load_balancer", "a listener cannot move to another load balancer")],
                // One listener per port and load balancer.
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::Repository => KindSpec {
                name: "ecr.repository",
                replace_on: &[("name", "a repository's name cannot change")],
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::Cluster => KindSpec {
                name: "ecs.cluster",
                replace_on: &[("name", "a cluster's name cannot change")],
                replace_order: DeleteBeforeCreate,
                sets: &[],
            },
            Kind::TaskDefinition => KindSpec {
                name: "ecs.task-definition",
                // Every change registers a new revision of the family: an update, never a replacement.
                replace_on: &[],
                replace_order: CreateBeforeDelete,
                sets: &[],
            },
            Kind::Service => KindSpec {
                name: "ecs.service",
                replace_on: &[
                    ("name", "a service's name cannot change"),
                    ("cluster", "a service cannot move to another cluster"),
                    ("load_balancer", "a service's load balancer is fixed when it is created"),
                ],
                replace_order: DeleteBeforeCreate,
                sets: &["subnets", "security_groups"],
            },
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
}

/// `{"$ref": "id.output"}`.
pub fn reference(id: &str, output: &str) -> Value {
    serde_json::json!({ "$ref": format!("{id}.{output}") })
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
#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    pub stack: String,
    /// Tags every resource carries besides `aira:stack` and `aira:id`.
    pub tags: BTreeMap<String, String>,
    pub resources: Vec<Desired>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("resource `{0}` depends on `{1}`, which is not in the stack")]
    UnknownDependency(LogicalId, LogicalId),
    #[error("resource `{0}` is defined twice")]
    Duplicate(LogicalId),
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
            tags: BTreeMap::new(),
            resources: vec![
                Desired::new("b", Kind::SqsQueue, json!({"x": reference("a", "arn")})),
                Desired::new("a", Kind::SqsQueue, json!({})),
            ],
        };
        assert_eq!(g.topo_order().unwrap(), vec![LogicalId::from("a"), "b".into()]);
        g.resources[1] = Desired::new("a", Kind::SqsQueue, json!({"x": reference("b", "arn")}));
        assert!(matches!(g.topo_order(), Err(GraphError::Cycle(_))));
        g.resources[1] = Desired::new("a", Kind::SqsQueue, json!({"x": reference("c", "arn")}));
        assert_eq!(g.topo_order(), Err(GraphError::UnknownDependency("a".into(), "c".into())));
    }
}
