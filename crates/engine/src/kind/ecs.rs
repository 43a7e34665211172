//! The kinds of ecs.

use serde::{Deserialize, Serialize};

use super::{kind, Named, Val};

kind! {
    Cluster = "ecs.cluster", DeleteBeforeCreate, sets [],
    replace_on [name: "a cluster's name cannot change"],
    {
        pub name: String,
        /// Container Insights on (it reports the running task count autoscaling divides by).
        pub container_insights: bool,
    }
}

kind! {
    /// A family's latest revision, with its one container.
    TaskDefinition = "ecs.task-definition", CreateBeforeDelete, sets [],
    // Every change registers a new revision of the family: an update, never a replacement.
    replace_on [],
    {
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
    /// The fingerprint of the sources aira built the image from (`aira_image::build::fingerprint`),
    /// recorded on the container as the Docker label `aira.image.source`; `null` for an image
    /// aira did not build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

kind! {
    Service = "ecs.service", DeleteBeforeCreate, sets [subnets, security_groups],
    replace_on [
        name: "a service's name cannot change",
        cluster: "a service cannot move to another cluster",
        load_balancer: "a service's load balancer is fixed when it is created",
    ],
    {
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
