//! ECS services on Fargate: created and updated with their deployment waited for; deleted by
//! scaling to 0 and waiting until INACTIVE.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, DeploymentCircuitBreaker, DeploymentConfiguration, LaunchType, LoadBalancer,
    NetworkConfiguration, PropagateTags, ServiceField,
};

use super::{built, repair, scaling, wait_deployed, Result, POLL};
use crate::ops::{Cx, KindOps};
use crate::sdk::{self, Poll};
use crate::Clients;
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, TaskCount, Val};
use aira_engine::provider::{Observed, ProviderError, Resolved};

/// Error codes saying the service (or its cluster) is gone.
const GONE: &[&str] = &["ServiceNotFoundException", "ServiceNotActiveException", "ClusterNotFoundException"];

pub struct Service;

async fn observed(aws: &Clients, id: LogicalId, s: &aws_sdk_ecs::types::Service) -> Result<Observed> {
    let cluster = s.cluster_arn().unwrap_or_default();
    let name = s.service_name().unwrap_or_default();
    let vpc = s.network_configuration().and_then(|n| n.awsvpc_configuration());
    let sorted = |ids: &[String]| {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.into_iter().map(Val::from).collect()
    };
    let dc = s.deployment_configuration();
    let breaker = dc.and_then(|d| d.deployment_circuit_breaker());
    let load_balancer = s.load_balancers().first().map(|lb| kind::ServiceLoadBalancer {
        target_group: lb.target_group_arn().unwrap_or_default().into(),
        container: lb.container_name().unwrap_or_default().to_string(),
        port: lb.container_port().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
    });
    let count = match scaling::read(aws, cluster, name).await? {
        Some(auto) => TaskCount::Auto(auto),
        None => TaskCount::Fixed(u32::try_from(s.desired_count()).unwrap_or(0)),
    };
    let props = kind::Service {
        name: name.to_string(),
        cluster: cluster.into(),
        task_definition: s.task_definition().unwrap_or_default().into(),
        count,
        subnets: vpc.map(|v| sorted(v.subnets())).unwrap_or_default(),
        security_groups: vpc.map(|v| sorted(v.security_groups())).unwrap_or_default(),
        public_ip: vpc.and_then(|v| v.assign_public_ip()) == Some(&AssignPublicIp::Enabled),
        // What AWS reports, never aira's own values: a missing configuration is observed as
        // missing, so the plan shows the update that sets it.
        deployment: dc.map(|dc| kind::Deployment {
            circuit_breaker: breaker.is_some_and(|b| b.enable()),
            rollback: breaker.is_some_and(|b| b.rollback()),
            min_healthy_percent: dc.minimum_healthy_percent().unwrap_or_default(),
            max_percent: dc.maximum_percent().unwrap_or_default(),
        }),
        health_check_grace: load_balancer.as_ref().and(s.health_check_grace_period_seconds()),
        load_balancer,
    };
    let arn = s.service_arn().unwrap_or_default();
    let observed = Observed::of(id, arn, &props).output("arn", arn).output("name", name);
    Ok(Observed { repair: repair(s.deployments()), ..observed })
}

async fn read(aws: &Clients, id: &LogicalId, cluster: &str, arn: &str, what: &str) -> Result<Observed> {
    let out =
        call!(what, aws.ecs.describe_services().cluster(cluster).services(arn).include(ServiceField::Tags).send());
    match out.services().first() {
        Some(s) => observed(aws, id.clone(), s).await,
        None => Err(ProviderError::new(format!("{what}: the service disappeared right after the call"))),
    }
}

/// Tasks the service should run now: the fixed count, or the autoscaling minimum.
fn desired_count(want: &kind::Service) -> i32 {
    let n = match &want.count {
        TaskCount::Fixed(n) => *n,
        TaskCount::Auto(auto) => auto.min,
    };
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn ids(v: &[Val<String>]) -> Vec<String> {
    v.iter().map(|id| id.get().clone()).collect()
}

fn network(what: &str, want: &kind::Service) -> Result<NetworkConfiguration> {
    let ip = if want.public_ip { AssignPublicIp::Enabled } else { AssignPublicIp::Disabled };
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(ids(&want.subnets)))
        .set_security_groups(Some(ids(&want.security_groups)))
        .assign_public_ip(ip)
        .build();
    Ok(NetworkConfiguration::builder().awsvpc_configuration(built(what, vpc)?).build())
}

/// Whether the network differs: subnets and security groups compared as sets.
fn network_changed(have: &kind::Service, want: &kind::Service) -> bool {
    let set = |v: &[Val<String>]| v.iter().map(|id| id.get().clone()).collect::<BTreeSet<_>>();
    set(&have.subnets) != set(&want.subnets)
        || set(&have.security_groups) != set(&want.security_groups)
        || have.public_ip != want.public_ip
}

fn deployment(want: &kind::Service) -> DeploymentConfiguration {
    let d = want.deployment.as_ref();
    let breaker = DeploymentCircuitBreaker::builder()
        .enable(d.is_some_and(|d| d.circuit_breaker))
        .rollback(d.is_some_and(|d| d.rollback))
        .build();
    DeploymentConfiguration::builder()
        .deployment_circuit_breaker(breaker)
        .set_minimum_healthy_percent(d.map(|d| d.min_healthy_percent))
        .set_maximum_percent(d.map(|d| d.max_percent))
        .build()
}

/// Whether an error is IAM's eventual consistency: a role created seconds ago that ECS cannot
/// assume yet ("ECS was unable to assume the role …", "Unable to assume role and validate …").
fn is_role_not_ready(code: Option<&str>, message: &str) -> bool {
    code == Some("InvalidParameterException") && message.to_ascii_lowercase().contains("assume")
}

/// Whether an error is ELB's association reaching ECS: the target group's listener (ordered
/// before the service) exists, but ECS does not see the load balancer yet.
fn is_target_group_not_ready(code: Option<&str>, message: &str) -> bool {
    code == Some("InvalidParameterException") && message.contains("does not have an associated load balancer")
}

#[async_trait]
impl KindOps for Service {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let mut found = Vec::new();
        for cluster in super::cluster::shared(cx).await?.iter().map(|c| c.physical_id.as_str()) {
            let of_cluster = format!("services of cluster {}", super::cluster_name(cluster));
            let pages = cx.aws.ecs.list_services().cluster(cluster).into_paginator().send();
            let pages = sdk::pages(format!("list {of_cluster}"), pages).await?;
            let arns: Vec<String> = pages.iter().flat_map(|p| p.service_arns()).cloned().collect();
            for chunk in arns.chunks(10) {
                let req = cx.aws.ecs.describe_services().cluster(cluster).set_services(Some(chunk.to_vec()));
                let out = call!(format!("describe {of_cluster}"), req.include(ServiceField::Tags).send());
                // A service being deleted (DRAINING) or deleted (INACTIVE) is not there for planning.
                for s in out.services().iter().filter(|s| s.status() == Some("ACTIVE")) {
                    let Some(id) = sdk::adopt_tags(cx.scope, s.tags()) else { continue };
                    found.push(observed(cx.aws, id, s).await?);
                }
            }
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let want: kind::Service = res.props()?;
        let (name, cluster) = (want.name.as_str(), want.cluster.as_str());
        let task_definition = want.task_definition.as_str();
        let what = format!("create ECS service `{}` ({name})", res.id);
        let load_balancers = want.load_balancer.as_ref().map(|lb| {
            vec![LoadBalancer::builder()
                .target_group_arn(lb.target_group.as_str())
                .container_name(&lb.container)
                .container_port(lb.port.into())
                .build()]
        });
        let req = cx
            .aws
            .ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(task_definition)
            .desired_count(desired_count(&want))
            .launch_type(LaunchType::Fargate)
            .network_configuration(network(&what, &want)?)
            .deployment_configuration(deployment(&want))
            .set_load_balancers(load_balancers)
            .set_health_check_grace_period_seconds(want.health_check_grace)
            .set_tags(Some(sdk::tag_list(cx.scope, &res.id, &[])))
            .propagate_tags(PropagateTags::Service)
            .enable_ecs_managed_tags(true);
        // Not `retry_busy`: IAM's and ELB's delays are told from other invalid parameters by the
        // message. The role's wait is its own; the load balancer's is polled here.
        let (req, what) = (&req, what.as_str());
        let out = sdk::poll_until(cx.scope, cx.progress, &res.id, what, POLL, || async move {
            let sent =
                sdk::retry_role_not_ready(cx.scope, cx.progress, &res.id, what, "ECS", is_role_not_ready, || {
                    req.clone().send()
                })
                .await;
            match sent {
                Err(e) if is_target_group_not_ready(e.code.as_deref(), &e.message) => {
                    let said = e.message.strip_prefix(what).map_or(e.message.as_str(), |m| m.trim_start_matches(": "));
                    Ok(Poll::Pending(format!(
                        "ECS does not see the target group's load balancer yet ({said}); the listener forwarding \
                         to it takes a moment to reach ECS, retrying"
                    )))
                }
                // A `down` stopped after it deleted the service: ECS keeps the name until the old
                // service is INACTIVE.
                Err(e) if e.message.contains("still Draining") => Ok(Poll::Pending(
                    "a service of this name is still DRAINING after an earlier deletion; ECS takes the name \
                     back once it is INACTIVE, retrying"
                        .into(),
                )),
                sent => sent.map(Poll::Done),
            }
        })
        .await?;
        let arn = out.service().and_then(|s| s.service_arn()).unwrap_or_default().to_string();
        scaling::set(cx, &res.id, cluster, name, &want.count, None).await?;
        wait_deployed(cx.aws, cx.scope, &res.id, cluster, name, task_definition, &BTreeSet::new(), cx.progress).await?;
        read(cx.aws, &res.id, cluster, &arn, what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let (want, have): (kind::Service, kind::Service) = (res.props()?, current.props()?);
        let (name, cluster) = (want.name.as_str(), want.cluster.as_str());
        let task_definition = want.task_definition.as_str();
        let what = format!("update ECS service `{}` ({name})", res.id);
        // Events already there are not this deployment's.
        let before = call!(what, cx.aws.ecs.describe_services().cluster(cluster).services(&current.physical_id).send());
        let seen: BTreeSet<String> = before
            .services()
            .first()
            .map(|s| s.events().iter().filter_map(|e| e.id().map(String::from)).collect())
            .unwrap_or_default();
        let mut req = cx.aws.ecs.update_service().cluster(cluster).service(&current.physical_id);
        if have.task_definition != want.task_definition {
            req = req.task_definition(task_definition);
        }
        // An autoscaled service's count belongs to the autoscaler (within min and max).
        let fixed = |c: &TaskCount| matches!(c, TaskCount::Fixed(_));
        if (fixed(&want.count) && have.count != want.count) || (!fixed(&want.count) && fixed(&have.count)) {
            req = req.desired_count(desired_count(&want));
        }
        if network_changed(&have, &want) {
            req = req.network_configuration(network(&what, &want)?);
        }
        if have.deployment != want.deployment {
            req = req.deployment_configuration(deployment(&want));
        }
        if have.health_check_grace != want.health_check_grace {
            req = req.set_health_check_grace_period_seconds(want.health_check_grace);
        }
        // The last deployment failed (observe's repair): a new one, even with nothing changed.
        if current.repair.is_some() {
            req = req.force_new_deployment(true);
        }
        // A task definition's new role may not be assumable by ECS yet.
        sdk::retry_role_not_ready(cx.scope, cx.progress, &res.id, &what, "ECS", is_role_not_ready, || {
            req.clone().send()
        })
        .await?;
        scaling::set(cx, &res.id, cluster, name, &want.count, Some(&have.count)).await?;
        wait_deployed(cx.aws, cx.scope, &res.id, cluster, name, task_definition, &seen, cx.progress).await?;
        read(cx.aws, &res.id, cluster, &current.physical_id, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let have: kind::Service = current.props()?;
        let (cluster, name) = (have.cluster.as_str(), have.name.as_str());
        let arn = &current.physical_id;
        let what = format!("delete ECS service `{}` ({name})", current.id);
        scaling::deregister(cx.aws, &scaling::resource(cluster, name), &what).await?;
        let scaled = cx.aws.ecs.update_service().cluster(cluster).service(arn).desired_count(0).send().await;
        if sdk::found(format!("{what}: scale to 0"), GONE, scaled)?.is_none() {
            return Ok(());
        }
        let deleted = cx.aws.ecs.delete_service().cluster(cluster).service(arn).force(true).send().await;
        if sdk::found(&what, GONE, deleted)?.is_none() {
            return Ok(());
        }
        sdk::poll_until(cx.scope, cx.progress, &current.id, &format!("service {name}"), POLL, || async {
            let out =
                sdk::found(&what, GONE, cx.aws.ecs.describe_services().cluster(cluster).services(arn).send().await)?;
            let service = out.as_ref().and_then(|out| out.services().first());
            Ok(match service.filter(|s| s.status().is_some_and(|s| s != "INACTIVE")) {
                None => Poll::Done(()),
                Some(s) => Poll::Pending(format!(
                    "{}: {} tasks still running, {} pending; waiting until it is INACTIVE",
                    s.status().unwrap_or_default(),
                    s.running_count(),
                    s.pending_count()
                )),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_not_ready_is_recognised() {
        let msg = "ECS was unable to assume the role 'arn:aws:iam::1:role/x' that was provided for this task.";
        assert!(is_role_not_ready(Some("InvalidParameterException"), msg));
        assert!(!is_role_not_ready(Some("InvalidParameterException"), "subnet-1 does not exist"));
        let tg =
            "The target group with targetGroupArn arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/t/1 does not \
                  have an associated load balancer.";
        assert!(is_target_group_not_ready(Some("InvalidParameterException"), tg));
        assert!(!is_role_not_ready(Some("InvalidParameterException"), tg));
        assert!(!is_role_not_ready(Some("AccessDeniedException"), msg));
        assert_eq!(scaling::resource("arn:aws:ecs:us-east-1:1:cluster/s1", "api"), "service/s1/api");
    }
}
