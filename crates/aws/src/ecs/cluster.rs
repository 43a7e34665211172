//! The ECS cluster, with Container Insights on or off. Its deletion waits for its services and
//! tasks to stop, then removes the log group Container Insights created for it.

use async_trait::async_trait;
use aws_sdk_ecs::types::{ClusterField, ClusterSetting, ClusterSettingName};

use super::Result;
use crate::ops::{Cx, KindOps};
use crate::{sdk, Clients};
use aira_engine::graph::LogicalId;
use aira_engine::kind;
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope};

pub struct Cluster;

/// The stack's ACTIVE clusters.
pub(crate) async fn find(aws: &Clients, scope: &Scope) -> Result<Vec<Observed>> {
    let pages = sdk::pages("list ECS clusters", aws.ecs.list_clusters().into_paginator().send()).await?;
    let arns: Vec<String> = pages.iter().flat_map(|p| p.cluster_arns()).cloned().collect();
    let mut found = Vec::new();
    for chunk in arns.chunks(100) {
        let req = aws.ecs.describe_clusters().set_clusters(Some(chunk.to_vec()));
        let out =
            call!("describe ECS clusters", req.include(ClusterField::Tags).include(ClusterField::Settings).send());
        for c in out.clusters().iter().filter(|c| c.status() == Some("ACTIVE")) {
            let Some(id) = sdk::adopt_tags(scope, c.tags()) else { continue };
            found.push(observed(id, c));
        }
    }
    Ok(found)
}

/// The clusters the stack's services run in, found once per observe (services are listed by
/// cluster): the stack's, or a preview's base's.
pub(crate) async fn shared<'s>(cx: &Cx<'s>) -> Result<&'s [Observed]> {
    cx.seen.clusters(|| async { find(cx.aws, &cx.scope.containers()).await }).await
}

fn observed(id: LogicalId, c: &aws_sdk_ecs::types::Cluster) -> Observed {
    let insights = c
        .settings()
        .iter()
        .any(|s| s.name() == Some(&ClusterSettingName::ContainerInsights) && s.value() != Some("disabled"));
    let (arn, name) = (c.cluster_arn().unwrap_or_default(), c.cluster_name().unwrap_or_default());
    let props = kind::Cluster { name: name.to_string(), container_insights: insights };
    Observed::of(id, arn, &props).output("arn", arn).output("name", name)
}

fn insights(want: &kind::Cluster) -> ClusterSetting {
    let on = want.container_insights;
    ClusterSetting::builder()
        .name(ClusterSettingName::ContainerInsights)
        .value(if on { "enabled" } else { "disabled" })
        .build()
}

async fn read(aws: &Clients, id: &LogicalId, arn: &str, what: &str) -> Result<Observed> {
    let req = aws.ecs.describe_clusters().clusters(arn);
    let out = call!(what, req.include(ClusterField::Tags).include(ClusterField::Settings).send());
    out.clusters()
        .first()
        .map(|c| observed(id.clone(), c))
        .ok_or_else(|| ProviderError::new(format!("{what}: the cluster disappeared right after the call")))
}

#[async_trait]
impl KindOps for Cluster {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        // A preview's cluster is its base's, never its own (its `down` must not see it).
        if cx.scope.base.is_some() {
            return Ok(Vec::new());
        }
        Ok(shared(cx).await?.to_vec())
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let want: kind::Cluster = res.props()?;
        let name = want.name.as_str();
        let what = format!("create ECS cluster `{}` ({name})", res.id);
        let tags = sdk::tag_list(cx.scope, &res.id, &[]);
        let out = call!(
            what,
            cx.aws.ecs.create_cluster().cluster_name(name).settings(insights(&want)).set_tags(Some(tags)).send()
        );
        let arn = out.cluster().and_then(|c| c.cluster_arn()).unwrap_or(name).to_string();
        read(cx.aws, &res.id, &arn, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let what = format!("update ECS cluster `{}`", res.id);
        let req = cx.aws.ecs.update_cluster_settings().cluster(&current.physical_id).settings(insights(&res.props()?));
        let out = call!(what, req.send());
        let c = out.cluster().ok_or_else(|| ProviderError::new(format!("{what}: no cluster in the answer")))?;
        read(cx.aws, &res.id, c.cluster_arn().unwrap_or(&current.physical_id), &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let what = format!("delete ECS cluster `{}` ({})", current.id, current.physical_id);
        let busy = sdk::Busy {
            codes: &["ClusterContainsServicesException", "ClusterContainsTasksException"],
            waits_for: "its services and tasks to stop",
            gone: &["ClusterNotFoundException"],
        };
        sdk::retry_busy(cx.scope, cx.progress, &current.id, &what, &busy, || {
            cx.aws.ecs.delete_cluster().cluster(&current.physical_id).send()
        })
        .await?;
        // Created by ECS, untagged, whenever Container Insights was on (even once, since turned
        // off): its name is the cluster's, so it goes with it; after the cluster, which no
        // longer writes to it.
        let group = insights_log_group(&current.props::<kind::Cluster>()?.name);
        let what = format!("{what}: delete its Container Insights log group {group}");
        let out = cx.aws.logs.delete_log_group().log_group_name(&group).send().await;
        sdk::found(what, &["ResourceNotFoundException"], out)?;
        Ok(())
    }
}

/// The log group Container Insights writes a cluster's performance events to (CloudWatch's
/// "Container Insights performance log events for Amazon ECS").
fn insights_log_group(cluster: &str) -> String {
    format!("/aws/ecs/containerinsights/{cluster}/performance")
}
