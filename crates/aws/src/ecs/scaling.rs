//! A service's Application Auto Scaling: a scalable target and a target-tracking policy on
//! backlog per task (visible messages ÷ running tasks), or none for a fixed count.

use aws_sdk_applicationautoscaling::types::{
    CustomizedMetricSpecification, PolicyType, ScalableDimension, ServiceNamespace, TargetTrackingMetric,
    TargetTrackingMetricDataQuery, TargetTrackingMetricDimension, TargetTrackingMetricStat,
    TargetTrackingScalingPolicyConfiguration,
};

use super::{built, cluster_name, Result};
use crate::ops::Cx;
use crate::{sdk, Clients};
use aira_engine::graph::LogicalId;
use aira_engine::kind::{AutoScaling, TaskCount, Val};

/// The target-tracking policy aira puts on an autoscaled service.
const SCALING_POLICY: &str = "aira-backlog-per-task";

pub(super) fn resource(cluster: &str, service: &str) -> String {
    format!("service/{}/{service}", cluster_name(cluster))
}

/// `{min, max, backlog_per_task, queue}` from Application Auto Scaling, or `None` when the
/// service has no scalable target.
pub(super) async fn read(aws: &Clients, cluster: &str, service: &str) -> Result<Option<AutoScaling>> {
    let rid = resource(cluster, service);
    let what = format!("read the autoscaling of service {service}");
    let targets = call!(
        what,
        aws.autoscaling.describe_scalable_targets().service_namespace(ServiceNamespace::Ecs).resource_ids(&rid).send()
    );
    let Some(target) = targets.scalable_targets().iter().find(|t| t.resource_id() == rid) else { return Ok(None) };
    let policies = call!(
        what,
        aws.autoscaling
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&rid)
            .policy_names(SCALING_POLICY)
            .send()
    );
    let config = policies
        .scaling_policies()
        .iter()
        .find(|sp| sp.policy_name() == SCALING_POLICY)
        .and_then(|sp| sp.target_tracking_scaling_policy_configuration());
    let backlog_per_task = config.map(|c| c.target_value() as u32);
    let queue = config
        .and_then(|c| c.customized_metric_specification())
        .map(|m| m.metrics())
        .unwrap_or_default()
        .iter()
        .filter_map(|q| q.metric_stat()?.metric())
        .find(|m| m.namespace() == Some("AWS/SQS"))
        .and_then(|m| m.dimensions().iter().find(|d| d.name() == "QueueName").map(|d| Val::from(d.value())));
    let capacity = |n: i32| u32::try_from(n).unwrap_or(0);
    Ok(Some(AutoScaling {
        min: capacity(target.min_capacity()),
        max: capacity(target.max_capacity()),
        backlog_per_task,
        queue,
    }))
}

/// Brings Application Auto Scaling from `current` (`None`: a new service) to the desired count:
/// a scalable target and a target-tracking policy on backlog per task, or none for a fixed count.
pub(super) async fn set(
    cx: &Cx<'_>,
    id: &LogicalId,
    cluster: &str,
    service: &str,
    want: &TaskCount,
    current: Option<&TaskCount>,
) -> Result<()> {
    if Some(want) == current {
        return Ok(());
    }
    let rid = resource(cluster, service);
    let what = format!("set the autoscaling of service `{id}` ({service})");
    let want = match want {
        TaskCount::Auto(auto) => auto,
        TaskCount::Fixed(_) => {
            if let Some(TaskCount::Auto(_)) = current {
                deregister(cx.aws, &rid, &what).await?;
            }
            return Ok(());
        }
    };
    let capacity = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let register = cx
        .aws
        .autoscaling
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&rid)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .min_capacity(capacity(want.min))
        .max_capacity(capacity(want.max));
    // The first registration creates the service-linked role it then assumes.
    let service_name = "Application Auto Scaling";
    sdk::retry_role_not_ready(cx.scope, cx.progress, id, &what, service_name, is_role_not_ready, || {
        register.clone().send()
    })
    .await?;
    let queue = want.queue.as_ref().map(Val::as_str).unwrap_or_default();
    let metric = |id: &str, namespace: &str, name: &str, dims: &[(&str, &str)], stat: &str| {
        let mut m = TargetTrackingMetric::builder().namespace(namespace).metric_name(name);
        for (k, v) in dims {
            m = m.dimensions(built(&what, TargetTrackingMetricDimension::builder().name(*k).value(*v).build())?);
        }
        let stat = built(&what, TargetTrackingMetricStat::builder().metric(m.build()).stat(stat).build())?;
        built(&what, TargetTrackingMetricDataQuery::builder().id(id).metric_stat(stat).return_data(false).build())
    };
    // Backlog per task = visible messages ÷ running tasks (Container Insights).
    let tasks = [("ClusterName", cluster_name(cluster)), ("ServiceName", service)];
    let per_task =
        TargetTrackingMetricDataQuery::builder().id("per_task").expression("backlog / tasks").label("backlog per task");
    let spec = CustomizedMetricSpecification::builder()
        .metrics(metric("backlog", "AWS/SQS", "ApproximateNumberOfMessagesVisible", &[("QueueName", queue)], "Sum")?)
        .metrics(metric("tasks", "ECS/ContainerInsights", "RunningTaskCount", &tasks, "Average")?)
        .metrics(built(&what, per_task.return_data(true).build())?)
        .build();
    let config = TargetTrackingScalingPolicyConfiguration::builder()
        .target_value(want.backlog_per_task.map_or(10.0, f64::from))
        .customized_metric_specification(spec)
        .scale_in_cooldown(120)
        .scale_out_cooldown(60)
        .build();
    let put = cx
        .aws
        .autoscaling
        .put_scaling_policy()
        .policy_name(SCALING_POLICY)
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&rid)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .policy_type(PolicyType::TargetTrackingScaling)
        .target_tracking_scaling_policy_configuration(built(&what, config)?);
    sdk::retry_role_not_ready(cx.scope, cx.progress, id, &what, service_name, is_role_not_ready, || put.clone().send())
        .await?;
    Ok(())
}

/// Whether Application Auto Scaling refused a call because IAM has not yet made the role it
/// assumes usable: `RegisterScalableTarget` answers `ValidationException` "Unable to assume IAM
/// role"; `PutScalingPolicy` `FailedResourceAccessException` when the role is not yet allowed
/// to read the policy's CloudWatch alarms ("… is not authorized to perform …").
fn is_role_not_ready(code: Option<&str>, message: &str) -> bool {
    match code {
        Some("ValidationException") => message.contains("Unable to assume IAM role"),
        Some("FailedResourceAccessException") => message.contains("is not authorized to perform"),
        _ => false,
    }
}

/// Removes the scalable target (and so its policy); none there is fine.
pub(super) async fn deregister(aws: &Clients, rid: &str, what: &str) -> Result<()> {
    let sent = aws
        .autoscaling
        .deregister_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(rid)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await;
    match sent {
        Ok(_) => Ok(()),
        // AWS answers ObjectNotFoundException; the moto server a ValidationException.
        Err(e)
            if sdk::code(&e) == Some("ObjectNotFoundException")
                || sdk::message(&e).contains("No scalable target found") =>
        {
            Ok(())
        }
        Err(e) => Err(sdk::error(what, e)),
    }
}
