//! Day-2 reads and actions on a running stack: services' state, logs, rollback. Resources are
//! named by the conventions of `expand.rs`: cluster = stack (a preview's: its base; `Scope::cluster`),
//! service = its name in the stack (a preview's: after its name; `Scope::ecs_service`),
//! task definition family `STACK-SERVICE`, log group `/aira/STACK/SERVICE`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::AwsProvider;
use aira_engine::provider::{ProviderError, Scope};

/// The targets of a target group: state → count, and unhealthy targets' reasons.
#[derive(Debug, Serialize)]
pub struct TargetHealth {
    pub states: BTreeMap<String, usize>,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    pub id: String,
    /// PRIMARY (the newest) or ACTIVE (being replaced).
    pub status: String,
    /// IN_PROGRESS, COMPLETED or FAILED, when ECS reports it.
    pub rollout: Option<String>,
    pub rollout_reason: Option<String>,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub status: String,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    /// `family:revision` the service runs.
    pub task_definition: String,
    pub revision: i32,
    /// The container image, pinned by digest.
    pub image: Option<String>,
    pub deployments: Vec<DeploymentStatus>,
    /// Newest first.
    pub events: Vec<String>,
}

fn family_revision(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}

fn revision_of(arn: &str) -> i32 {
    arn.rsplit(':').next().and_then(|r| r.parse().ok()).unwrap_or(0)
}

impl AwsProvider {
    /// The stack's services (by their names in the stack file) as ECS has them, in the stack's
    /// cluster (a preview's: its base's); empty when there is no cluster.
    pub async fn services_status(
        &self,
        scope: &Scope,
        services: &[String],
    ) -> Result<Vec<ServiceStatus>, ProviderError> {
        let (stack, cluster) = (&scope.stack, scope.cluster());
        let names: Vec<String> = services.iter().map(|s| scope.ecs_service(s)).collect();
        let mut out = Vec::new();
        for chunk in names.chunks(10) {
            let req = self.clients.ecs.describe_services().cluster(cluster).set_services(Some(chunk.to_vec()));
            let desc = match req.send().await {
                Ok(d) => d,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_cluster_not_found_exception()) => {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(crate::sdk::error(format!("describe the services of `{stack}`"), e)),
            };
            for s in desc.services() {
                if s.status() == Some("INACTIVE") {
                    continue;
                }
                let td = s.task_definition().unwrap_or_default().to_string();
                let image = self.image_of(&td).await?;
                out.push(ServiceStatus {
                    name: s.service_name().unwrap_or_default().to_string(),
                    status: s.status().unwrap_or_default().to_string(),
                    desired: s.desired_count(),
                    running: s.running_count(),
                    pending: s.pending_count(),
                    task_definition: family_revision(&td),
                    revision: revision_of(&td),
                    image,
                    deployments: s
                        .deployments()
                        .iter()
                        .map(|d| DeploymentStatus {
                            id: d.id().unwrap_or_default().to_string(),
                            status: d.status().unwrap_or_default().to_string(),
                            rollout: d.rollout_state().map(|r| r.as_str().to_string()),
                            rollout_reason: d.rollout_state_reason().map(String::from),
                            task_definition: family_revision(d.task_definition().unwrap_or_default()),
                            desired: d.desired_count(),
                            running: d.running_count(),
                            pending: d.pending_count(),
                        })
                        .collect(),
                    events: s.events().iter().take(5).filter_map(|e| e.message().map(String::from)).collect(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn image_of(&self, task_definition: &str) -> Result<Option<String>, ProviderError> {
        if task_definition.is_empty() {
            return Ok(None);
        }
        let out = call!(
            format!("describe task definition {task_definition}"),
            self.clients.ecs.describe_task_definition().task_definition(task_definition).send()
        );
        Ok(out
            .task_definition()
            .and_then(|t| t.container_definitions().first())
            .and_then(|c| c.image())
            .map(String::from))
    }

    /// Health of the targets of a target group: state → count, and the reasons of unhealthy ones.
    pub async fn target_health(&self, target_group_arn: &str) -> Result<TargetHealth, ProviderError> {
        let out = call!(
            format!("read the target health of {target_group_arn}"),
            self.clients.elb.describe_target_health().target_group_arn(target_group_arn).send()
        );
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        let mut reasons = Vec::new();
        for t in out.target_health_descriptions() {
            let Some(h) = t.target_health() else { continue };
            let state = h.state().map(|s| s.as_str().to_string()).unwrap_or_else(|| "unknown".into());
            if let Some(d) = h.description() {
                if state != "healthy" {
                    reasons.push(format!("{}: {d}", t.target().and_then(|t| t.id()).unwrap_or("?")));
                }
            }
            *states.entry(state).or_default() += 1;
        }
        Ok(TargetHealth { states, reasons })
    }

    /// Certificate status and expiry (Unix seconds).
    pub async fn certificate_status(&self, arn: &str) -> Result<(String, Option<i64>), ProviderError> {
        let out = call!(
            format!("describe certificate {arn}"),
            self.clients.acm.describe_certificate().certificate_arn(arn).send()
        );
        let c = out.certificate();
        Ok((
            c.and_then(|c| c.status()).map(|s| s.as_str().to_string()).unwrap_or_default(),
            c.and_then(|c| c.not_after()).map(|t| t.secs()),
        ))
    }

    /// Points a service at an earlier task definition revision (the previous one, or `to`),
    /// deregistering nothing. Returns (from, to) as `family:revision`, and the ARN it now runs. and the ARN it now runs.
    pub async fn rollback(
        &self,
        scope: &Scope,
        service: &str,
        to: Option<u32>,
    ) -> Result<(String, String, String), ProviderError> {
        let (stack, cluster, ecs_name) = (&scope.stack, scope.cluster(), scope.ecs_service(service));
        let out = self.clients.ecs.describe_services().cluster(cluster).services(&ecs_name).send().await;
        let out = match out {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_cluster_not_found_exception()) => {
                return Err(ProviderError::user(format!(
                    "stack `{stack}` has no ECS cluster on AWS (run `aira up` first)"
                )))
            }
            Err(e) => return Err(crate::sdk::error(format!("describe service `{service}`"), e)),
        };
        let running = out
            .services()
            .iter()
            .find(|s| s.status() != Some("INACTIVE"))
            .and_then(|s| s.task_definition())
            .ok_or_else(|| ProviderError::user(format!("stack `{stack}` has no service `{service}` on AWS")))?;
        let (current, current_revision) = (family_revision(running), revision_of(running));
        let family = format!("{stack}-{service}");
        let mut revisions = super::ecs::revisions(&self.clients, &family).await?;
        revisions.reverse(); // newest first
        let target = match to {
            Some(r) => revisions.iter().find(|a| revision_of(a) == r as i32).cloned().ok_or_else(|| {
                ProviderError::user(format!(
                    "task definition `{family}` has no active revision {r}; active: {}",
                    revisions.iter().map(|a| revision_of(a).to_string()).collect::<Vec<_>>().join(", ")
                ))
            })?,
            None => revisions.iter().find(|a| revision_of(a) < current_revision).cloned().ok_or_else(|| {
                ProviderError::user(format!(
                    "service `{service}` runs {current}, and no earlier active revision of `{family}` exists"
                ))
            })?,
        };
        if revision_of(&target) == current_revision {
            return Err(ProviderError::user(format!("service `{service}` already runs {current}")));
        }
        call!(
            format!("roll back service `{service}` to {target}"),
            self.clients.ecs.update_service().cluster(cluster).service(&ecs_name).task_definition(&target).send()
        );
        Ok((current, family_revision(&target), target))
    }

    /// Log events of the stack's services since `start_ms`, ordered by time; `seen` skips events
    /// already printed (a follow re-reads the last millisecond).
    pub async fn log_events(
        &self,
        stack: &str,
        services: &[String],
        start_ms: i64,
        seen: &mut HashSet<String>,
    ) -> Result<Vec<LogLine>, ProviderError> {
        let mut lines = Vec::new();
        for service in services {
            let group = aira_engine::expand::log_group_name(stack, service);
            let mut token: Option<String> = None;
            loop {
                let out = self
                    .clients
                    .logs
                    .filter_log_events()
                    .log_group_name(&group)
                    .start_time(start_ms)
                    .set_next_token(token.clone())
                    .send()
                    .await;
                let out = match out {
                    Ok(o) => o,
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => break,
                    Err(e) => {
                        return Err(crate::sdk::error(format!("read log group {group}"), e));
                    }
                };
                for ev in out.events() {
                    let id = ev.event_id().map(String::from).unwrap_or_else(|| {
                        format!(
                            "{}/{}/{}",
                            ev.log_stream_name().unwrap_or(""),
                            ev.timestamp().unwrap_or(0),
                            ev.message().unwrap_or("")
                        )
                    });
                    if seen.insert(id) {
                        lines.push(LogLine {
                            service: service.clone(),
                            timestamp_ms: ev.timestamp().unwrap_or(0),
                            stream: ev.log_stream_name().unwrap_or_default().to_string(),
                            message: ev.message().unwrap_or_default().trim_end().to_string(),
                        });
                    }
                }
                match out.next_token() {
                    Some(t) if !out.events().is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        lines.sort_by(|a, b| (a.timestamp_ms, &a.service).cmp(&(b.timestamp_ms, &b.service)));
        Ok(lines)
    }
}

impl AwsProvider {
    /// Waits for the service's deployment of `task_definition` (an ARN) to complete, explaining
    /// the wait: the deploy wait of `up`.
    pub async fn wait_for_service(
        &self,
        scope: &aira_engine::provider::Scope,
        service: &str,
        task_definition: &str,
        progress: &dyn aira_engine::provider::Progress,
    ) -> Result<(), ProviderError> {
        let id = aira_engine::graph::LogicalId(aira_engine::expand::service_id(service));
        let seen = std::collections::BTreeSet::new();
        let (cluster, name) = (scope.cluster(), scope.ecs_service(service));
        super::ecs::wait_deployed(&self.clients, scope, &id, cluster, &name, task_definition, &seen, progress).await
    }

    /// A preview's pre-flight note when its base's load balancer already holds the default
    /// quota of rules (a raised quota is not known here: a note, not a refusal).
    pub async fn rule_quota_note(&self, load_balancer: &str) -> Result<Option<String>, ProviderError> {
        let n = crate::elb::rule::count(&self.clients.elb, load_balancer).await?;
        let quota = crate::elb::rule::DEFAULT_QUOTA;
        Ok((n >= quota).then(|| {
            format!(
                "the base's load balancer holds {n} rules; the default quota is {quota} (\"Rules per Application Load \
                 Balancer\"): unless it was raised in Service Quotas, this preview's rule will be refused"
            )
        }))
    }

    /// Seconds the oldest message has waited (CloudWatch `ApproximateAgeOfOldestMessage`, the
    /// latest 5-minute maximum); `None` without a datapoint yet.
    pub async fn oldest_message_age(&self, queue_name: &str) -> Result<Option<u64>, ProviderError> {
        use aws_sdk_cloudwatch::primitives::DateTime;
        use aws_sdk_cloudwatch::types::{Dimension, Statistic};
        let now = std::time::SystemTime::now();
        let out = call!(
            format!("read the age of the oldest message of {queue_name}"),
            self.clients
                .cloudwatch
                .get_metric_statistics()
                .namespace("AWS/SQS")
                .metric_name("ApproximateAgeOfOldestMessage")
                .dimensions(Dimension::builder().name("QueueName").value(queue_name).build())
                .start_time(DateTime::from(now - Duration::from_secs(600)))
                .end_time(DateTime::from(now))
                .period(300)
                .statistics(Statistic::Maximum)
                .send()
        );
        let latest = out.datapoints().iter().max_by_key(|d| d.timestamp().map(|t| t.secs()));
        Ok(latest.and_then(|d| d.maximum()).map(|m| m as u64))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub service: String,
    pub timestamp_ms: i64,
    pub stream: String,
    pub message: String,
}

/// How often `logs --follow` reads again.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);
