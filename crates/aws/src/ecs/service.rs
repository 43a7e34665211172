//! ECS services on Fargate: created and updated with their deployment waited for; deleted by
//! scaling to 0 and waiting until INACTIVE.

use std::collections::BTreeSet;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, DeploymentCircuitBreaker, DeploymentConfiguration, LaunchType, LoadBalancer,
    NetworkConfiguration, PropagateTags, ServiceField,
};
use serde_json::{json, Value};

use super::{built, outputs, repair, scaling, strs, wait_deployed, Result, POLL};
use crate::kinds::{Cx, KindOps, Observing};
use crate::sdk::{self, Poll};
use crate::AwsProvider;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, ProviderError, Resolved};

/// Error codes saying the service (or its cluster) is gone.
const GONE: &[&str] = &["ServiceNotFoundException", "ServiceNotActiveException", "ClusterNotFoundException"];

pub struct Service;

async fn observed(aws: &AwsProvider, id: LogicalId, s: &aws_sdk_ecs::types::Service) -> Result<Observed> {
    let cluster = s.cluster_arn().unwrap_or_default();
    let name = s.service_name().unwrap_or_default();
    let vpc = s.network_configuration().and_then(|n| n.awsvpc_configuration());
    let mut subnets: Vec<String> = vpc.map(|v| v.subnets().to_vec()).unwrap_or_default();
    subnets.sort();
    let mut groups: Vec<String> = vpc.map(|v| v.security_groups().to_vec()).unwrap_or_default();
    groups.sort();
    let public_ip = vpc.and_then(|v| v.assign_public_ip()) == Some(&AssignPublicIp::Enabled);
    let dc = s.deployment_configuration();
    let breaker = dc.and_then(|d| d.deployment_circuit_breaker());
    let load_balancer = match s.load_balancers().first() {
        Some(lb) => json!({
            "target_group": lb.target_group_arn(),
            "container": lb.container_name(),
            "port": lb.container_port(),
        }),
        None => Value::Null,
    };
    let count = match scaling::read(aws, cluster, name).await? {
        Some(auto) => auto,
        None => json!(s.desired_count()),
    };
    let mut props = json!({
        "name": name,
        "cluster": cluster,
        "task_definition": s.task_definition(),
        "count": count,
        "subnets": subnets,
        "security_groups": groups,
        "public_ip": public_ip,
        // What AWS reports, never aira's own values: a missing configuration is observed as
        // missing, so the plan shows the update that sets it.
        "deployment": dc.map(|dc| json!({
            "circuit_breaker": breaker.is_some_and(|b| b.enable()),
            "rollback": breaker.is_some_and(|b| b.rollback()),
            "min_healthy_percent": dc.minimum_healthy_percent(),
            "max_percent": dc.maximum_percent(),
        })),
        "load_balancer": load_balancer,
    });
    if !props["load_balancer"].is_null() {
        props["health_check_grace"] = json!(s.health_check_grace_period_seconds());
    }
    let arn = s.service_arn().unwrap_or_default();
    Ok(Observed {
        id,
        kind: Kind::Service,
        physical_id: arn.to_string(),
        props,
        outputs: outputs(&[("arn", json!(arn)), ("name", json!(name))]),
        depends_on: BTreeSet::new(),
        repair: repair(s.deployments()),
    })
}

async fn read(aws: &AwsProvider, id: &LogicalId, cluster: &str, arn: &str, what: &str) -> Result<Observed> {
    let out =
        call!(what, aws.ecs.describe_services().cluster(cluster).services(arn).include(ServiceField::Tags).send());
    match out.services().first() {
        Some(s) => observed(aws, id.clone(), s).await,
        None => Err(ProviderError::new(format!("{what}: the service disappeared right after the call"))),
    }
}

/// Tasks the service should run now: the fixed count, or the autoscaling minimum.
fn desired_count(res: &Resolved) -> i32 {
    match &res.props["count"] {
        Value::Number(n) => n.as_i64().unwrap_or(1) as i32,
        auto => auto["min"].as_i64().unwrap_or(1) as i32,
    }
}

fn network(what: &str, want: &Value) -> Result<NetworkConfiguration> {
    let ip = if want["public_ip"].as_bool() == Some(true) { AssignPublicIp::Enabled } else { AssignPublicIp::Disabled };
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(strs(&want["subnets"])))
        .set_security_groups(Some(strs(&want["security_groups"])))
        .assign_public_ip(ip)
        .build();
    Ok(NetworkConfiguration::builder().awsvpc_configuration(built(what, vpc)?).build())
}

fn deployment(want: &Value) -> DeploymentConfiguration {
    let d = &want["deployment"];
    let breaker = DeploymentCircuitBreaker::builder()
        .enable(d["circuit_breaker"].as_bool().unwrap_or(false))
        .rollback(d["rollback"].as_bool().unwrap_or(false))
        .build();
    DeploymentConfiguration::builder()
        .deployment_circuit_breaker(breaker)
        .set_minimum_healthy_percent(d["min_healthy_percent"].as_i64().map(|n| n as i32))
        .set_maximum_percent(d["max_percent"].as_i64().map(|n| n as i32))
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
    async fn observe(&self, cx: &Cx<'_>, seen: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let mut found = Vec::new();
        for cluster in seen.clusters(aws, scope).await?.iter().map(|c| c.physical_id.as_str()) {
            let of_cluster = format!("services of cluster {}", super::cluster_name(cluster));
            let mut arns = Vec::new();
            let mut pages = aws.ecs.list_services().cluster(cluster).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| sdk::error(format!("list {of_cluster}"), e))?;
                arns.extend(page.service_arns().iter().cloned());
            }
            for chunk in arns.chunks(10) {
                let req = aws.ecs.describe_services().cluster(cluster).set_services(Some(chunk.to_vec()));
                let out = call!(format!("describe {of_cluster}"), req.include(ServiceField::Tags).send());
                // A service being deleted (DRAINING) or deleted (INACTIVE) is not there for planning.
                for s in out.services().iter().filter(|s| s.status() == Some("ACTIVE")) {
                    let Some(id) = sdk::adopt_tags(scope, s.tags()) else { continue };
                    found.push(observed(aws, id, s).await?);
                }
            }
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        let want = &res.props;
        let name = want["name"].as_str().unwrap_or_default();
        let cluster = want["cluster"].as_str().unwrap_or_default();
        let task_definition = want["task_definition"].as_str().unwrap_or_default();
        let what = format!("create ECS service `{}` ({name})", res.id);
        let lb = &want["load_balancer"];
        let load_balancers = (!lb.is_null()).then(|| {
            vec![LoadBalancer::builder()
                .target_group_arn(lb["target_group"].as_str().unwrap_or_default())
                .container_name(lb["container"].as_str().unwrap_or_default())
                .container_port(lb["port"].as_i64().unwrap_or(0) as i32)
                .build()]
        });
        let req = aws
            .ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(task_definition)
            .desired_count(desired_count(res))
            .launch_type(LaunchType::Fargate)
            .network_configuration(network(&what, want)?)
            .deployment_configuration(deployment(want))
            .set_load_balancers(load_balancers)
            .set_health_check_grace_period_seconds(want["health_check_grace"].as_i64().map(|n| n as i32))
            .set_tags(Some(sdk::tag_list(scope, &res.id, &[])))
            .propagate_tags(PropagateTags::Service)
            .enable_ecs_managed_tags(true);
        // Not `retry_busy`: IAM's and ELB's delays are told from other invalid parameters by the
        // message.
        let start = Instant::now();
        let out = loop {
            let sent = sdk::retry_role_not_ready(scope, progress, &res.id, &what, "ECS", is_role_not_ready, || {
                req.clone().send()
            })
            .await;
            match sent {
                Err(e) if is_target_group_not_ready(e.code.as_deref(), &e.message) && start.elapsed() < scope.wait => {
                    progress.waiting(
                        &res.id,
                        &format!(
                            "ECS does not see the target group's load balancer yet ({}); the listener forwarding \
                             to it takes a moment to reach ECS, retrying ({}s of {}s)",
                            e.message,
                            start.elapsed().as_secs(),
                            scope.wait.as_secs()
                        ),
                    );
                    tokio::time::sleep(POLL).await;
                }
                sent => break sent?,
            }
        };
        let arn = out.service().and_then(|s| s.service_arn()).unwrap_or_default().to_string();
        scaling::set(cx, res, cluster, name, &Value::Null).await?;
        wait_deployed(aws, scope, &res.id, cluster, name, task_definition, &BTreeSet::new(), progress).await?;
        read(aws, &res.id, cluster, &arn, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        let (want, have) = (&res.props, &current.props);
        let name = want["name"].as_str().unwrap_or_default();
        let cluster = want["cluster"].as_str().unwrap_or_default();
        let task_definition = want["task_definition"].as_str().unwrap_or_default();
        let what = format!("update ECS service `{}` ({name})", res.id);
        // Events already there are not this deployment's.
        let before = call!(what, aws.ecs.describe_services().cluster(cluster).services(&current.physical_id).send());
        let seen: BTreeSet<String> = before
            .services()
            .first()
            .map(|s| s.events().iter().filter_map(|e| e.id().map(String::from)).collect())
            .unwrap_or_default();
        let mut req = aws.ecs.update_service().cluster(cluster).service(&current.physical_id);
        if have["task_definition"] != want["task_definition"] {
            req = req.task_definition(task_definition);
        }
        // An autoscaled service's count belongs to the autoscaler (within min and max).
        let fixed = want["count"].is_number();
        if (fixed && have["count"] != want["count"]) || (!fixed && have["count"].is_number()) {
            req = req.desired_count(desired_count(res));
        }
        let net = ["subnets", "security_groups", "public_ip"];
        if net.iter().any(|k| {
            let (mut a, mut b) = (have[k].clone(), want[k].clone());
            aira_engine::graph::normalize(Kind::Service, &mut a);
            aira_engine::graph::normalize(Kind::Service, &mut b);
            a != b
        }) {
            req = req.network_configuration(network(&what, want)?);
        }
        if have["deployment"] != want["deployment"] {
            req = req.deployment_configuration(deployment(want));
        }
        if have["health_check_grace"] != want["health_check_grace"] {
            req = req.set_health_check_grace_period_seconds(want["health_check_grace"].as_i64().map(|n| n as i32));
        }
        // The last deployment failed (observe's repair): a new one, even with nothing changed.
        if current.repair.is_some() {
            req = req.force_new_deployment(true);
        }
        // A task definition's new role may not be assumable by ECS yet.
        sdk::retry_role_not_ready(scope, progress, &res.id, &what, "ECS", is_role_not_ready, || req.clone().send())
            .await?;
        scaling::set(cx, res, cluster, name, &have["count"]).await?;
        wait_deployed(aws, scope, &res.id, cluster, name, task_definition, &seen, progress).await?;
        read(aws, &res.id, cluster, &current.physical_id, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, scope, progress } = *cx;
        let cluster = current.props["cluster"].as_str().unwrap_or_default();
        let name = current.props["name"].as_str().unwrap_or_default();
        let arn = &current.physical_id;
        let what = format!("delete ECS service `{}` ({name})", current.id);
        scaling::deregister(aws, &scaling::resource(cluster, name), &what).await?;
        let scaled = aws.ecs.update_service().cluster(cluster).service(arn).desired_count(0).send().await;
        if sdk::found(format!("{what}: scale to 0"), GONE, scaled)?.is_none() {
            return Ok(());
        }
        let deleted = aws.ecs.delete_service().cluster(cluster).service(arn).force(true).send().await;
        if sdk::found(&what, GONE, deleted)?.is_none() {
            return Ok(());
        }
        sdk::poll_until(scope, progress, &current.id, &format!("service {name}"), POLL, || async {
            let out = sdk::found(&what, GONE, aws.ecs.describe_services().cluster(cluster).services(arn).send().await)?;
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
