//! The kinds of ecs, and [`Named`], the ordered JSON object they (and a table's keys) use.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*, Val};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// Container Insights on (it reports the running task count autoscaling divides by).
    pub container_insights: bool,
}

impl Props for Cluster {
    const KIND: Kind = Kind::Cluster;
    const SPEC: KindSpec = KindSpec {
        name: "ecs.cluster",
        replace_on: &[(field!(name), "a cluster's name cannot change")],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}

/// A family's latest revision, with its one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDefinition {
    pub family: String,
    /// Fargate CPU units (1024 a vCPU).
    pub cpu: u64,
    /// MiB.
    pub memory: u64,
    /// The role ECS starts the task with (pulls the image, writes the logs, reads the secrets).
    pub execution_role: Option<Val<String>>,
    /// The role the task's own calls are made with.
    pub task_role: Option<Val<String>>,
    /// `null` when ECS reports no container.
    pub container: Option<Container>,
}

impl Props for TaskDefinition {
    const KIND: Kind = Kind::TaskDefinition;
    // Every change registers a new revision of the family: an update, never a replacement.
    const SPEC: KindSpec =
        KindSpec { name: "ecs.task-definition", replace_on: &[], replace_order: CreateBeforeDelete, sets: &[] };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub name: String,
    pub image: ContainerImage,
    pub command: Vec<String>,
    /// The port the load balancer reaches (api services); `null` for a worker.
    pub port: Option<u16>,
    pub environment: Named<Val<String>>,
    /// Variable → the ARN of the Secrets Manager secret ECS puts in it.
    pub secrets: Named<String>,
    /// The CloudWatch log group the container writes to (`null`: no logs).
    pub log_group: Option<Val<String>>,
    /// The health check's command, without ECS's leading `CMD` (empty: none).
    pub health_check: Vec<String>,
    /// `uid` the container runs as (`null`: the image's).
    pub user: Option<String>,
    pub read_only_root: bool,
}

/// What a container runs: an image by digest in a repository (the form `repo@sha256:…` is
/// written and observed in), or any other reference as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ContainerImage {
    Pinned(PinnedImage),
    Reference(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedImage {
    /// `registry/name`, or the stack's ECR repository's URI.
    pub repository: Val<String>,
    /// `sha256:…`.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub cluster: Val<String>,
    /// The task definition revision's ARN.
    pub task_definition: Val<String>,
    pub count: TaskCount,
    pub subnets: Vec<Val<String>>,
    pub security_groups: Vec<Val<String>>,
    pub public_ip: bool,
    /// `null` when AWS reports none (observe reports AWS's values, never aira's own).
    pub deployment: Option<Deployment>,
    /// The target group the service registers its tasks in (the public service).
    pub load_balancer: Option<ServiceLoadBalancer>,
    /// Seconds ECS ignores a new task's failed load balancer health checks (load-balanced only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace: Option<i32>,
}

impl Props for Service {
    const KIND: Kind = Kind::Service;
    const SPEC: KindSpec = KindSpec {
        name: "ecs.service",
        replace_on: &[
            (field!(name), "a service's name cannot change"),
            (field!(cluster), "a service cannot move to another cluster"),
            (field!(load_balancer), "a service's load balancer is fixed when it is created"),
        ],
        replace_order: DeleteBeforeCreate,
        sets: &[field!(subnets), field!(security_groups)],
    };
}

/// A fixed number of tasks, or autoscaling bounds on the queue's backlog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TaskCount {
    Fixed(u32),
    Auto(AutoScaling),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoScaling {
    pub min: u32,
    pub max: u32,
    /// Visible messages per running task the policy keeps to (`null`: no aira policy on AWS).
    pub backlog_per_task: Option<u32>,
    /// The queue's name the policy reads (`null`: no aira policy on AWS).
    pub queue: Option<Val<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub circuit_breaker: bool,
    pub rollback: bool,
    pub min_healthy_percent: i32,
    pub max_percent: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLoadBalancer {
    pub target_group: Val<String>,
    pub container: String,
    pub port: u16,
}

/// A JSON object whose keys keep the order they were written in: a task's environment in the
/// order expand writes it (the plan's JSON shows it so), a table's keys the partition key first.
/// Equal when equal as JSON objects, whatever the order (ECS may list an environment otherwise).
#[derive(Debug, Clone)]
pub struct Named<V>(pub Vec<(String, V)>);

impl<V> Named<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Sets `name`: in its place when it is there, else last (as `object["name"] = …` does).
    pub fn set(&mut self, name: &str, value: impl Into<V>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl<V> Default for Named<V> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<K: Into<String>, V> FromIterator<(K, V)> for Named<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut named = Named::default();
        for (k, v) in iter {
            named.0.push((k.into(), v));
        }
        named
    }
}

impl<V: PartialEq> PartialEq for Named<V> {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<V: Serialize> Serialize for Named<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Named<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = Named<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<V>, A::Error> {
                let mut named = Named::default();
                while let Some(entry) = map.next_entry()? {
                    named.0.push(entry);
                }
                Ok(named)
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_keeps_its_order_and_compares_as_json_objects_do() {
        let v = json!({ "B": "2", "A": { "$ref": "x.y" } });
        let named: Named<Val<String>> = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_string(&named).unwrap(), r#"{"B":"2","A":{"$ref":"x.y"}}"#);
        let other: Named<Val<String>> = [("A", Val::to("x", "y")), ("B", Val::from("2"))].into_iter().collect();
        assert_eq!(named, other);
        let mut changed = other.clone();
        changed.set("A", "1");
        assert_ne!(named, changed);
        assert_eq!(changed.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["A", "B"]);
    }
}
