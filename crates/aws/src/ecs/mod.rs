//! ECS on Fargate: the cluster, the services' task definitions and the services, with their
//! Application Auto Scaling (backlog per task, `scaling.rs`), one module a kind. Every
//! deployment is waited for (`deploy_wait.rs`), saying what it waits for: tasks running and
//! pending, the service's new events, why tasks stopped, and the health of the load
//! balancer's targets.

pub mod cluster;
mod deploy_wait;
mod scaling;
pub mod service;
pub mod task_definition;

use std::time::Duration;

use aira_engine::provider::ProviderError;

pub(crate) use deploy_wait::{repair, wait_deployed};
pub(crate) use task_definition::revisions;

type Result<T> = std::result::Result<T, ProviderError>;

/// Seconds between two looks at a deployment or a service being deleted.
const POLL: Duration = Duration::from_secs(3);

/// A request part that failed to build: what was being done, and why.
fn built<T, E: std::fmt::Display>(what: &str, r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| ProviderError::new(format!("{what}: {e}")))
}

/// `arn:…:cluster/NAME` → `NAME`.
fn cluster_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}
