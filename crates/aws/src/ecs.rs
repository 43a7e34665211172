//! ECS on Fargate: the cluster, the services' task definitions and the services, with their
//! Application Auto Scaling (backlog per task). Every deployment is waited for, saying what it
//! waits for: tasks running and pending, the service's new events, why tasks stopped, and the
//! health of the load balancer's targets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_applicationautoscaling::types::{
    CustomizedMetricSpecification, PolicyType, ScalableDimension, ServiceNamespace, TargetTrackingMetric,
    TargetTrackingMetricDataQuery, TargetTrackingMetricDimension, TargetTrackingMetricStat,
    TargetTrackingScalingPolicyConfiguration,
};
use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ClusterField, ClusterSetting, ClusterSettingName, Compatibility,
    ContainerDefinition, CpuArchitecture, DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentRolloutState,
    DesiredStatus, HealthCheck, KeyValuePair, LaunchType, LoadBalancer, LogConfiguration, LogDriver,
    NetworkConfiguration, NetworkMode, OsFamily, PortMapping, PropagateTags, RuntimePlatform, Secret, ServiceField,
    Tag, TaskDefinitionField, TaskDefinitionStatus, TransportProtocol,
};
use serde_json::{json, Value};

use crate::{ecr, AwsProvider};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};

use aira_engine::expand::defaults::HEALTH_CHECK_GRACE;

type Result<T> = std::result::Result<T, ProviderError>;

/// The target-tracking policy aira puts on an autoscaled service.
const SCALING_POLICY: &str = "aira-backlog-per-task";
/// Seconds between two looks at a deployment.
const POLL: Duration = Duration::from_secs(3);

fn code<E: ProvideErrorMetadata, R>(e: &aws_sdk_ecs::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn message<E: ProvideErrorMetadata, R>(e: &aws_sdk_ecs::error::SdkError<E, R>) -> String {
    e.as_service_error().and_then(|s| s.message()).unwrap_or_default().to_string()
}

fn built<T, E: std::fmt::Display>(what: &str, r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| ProviderError::new(format!("{what}: {e}")))
}

fn tags(scope: &Scope, id: &LogicalId) -> Vec<Tag> {
    scope.tags_for(id).into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

fn tag_map(tags: &[Tag]) -> BTreeMap<&str, &str> {
    tags.iter().filter_map(|t| Some((t.key()?, t.value()?))).collect()
}

/// The logical id, if the tags say the resource is this stack's.
fn logical_id(scope: &Scope, tags: &[Tag]) -> Option<LogicalId> {
    let tags = tag_map(tags);
    (tags.get(TAG_STACK) == Some(&scope.stack.as_str())).then(|| tags.get(TAG_ID).map(|i| LogicalId::from(*i)))?
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn outputs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// `arn:…:cluster/NAME` → `NAME`.
fn cluster_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

// ---- observe -----------------------------------------------------------------------------

pub async fn observe(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>> {
    let clusters = observe_clusters(p, scope).await?;
    let arns: Vec<String> = clusters.iter().map(|c| c.physical_id.clone()).collect();
    let (tasks, services) = tokio::try_join!(observe_task_definitions(p, scope), observe_services(p, scope, &arns))?;
    Ok([clusters, tasks, services].concat())
}

async fn observe_clusters(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>> {
    let mut arns = Vec::new();
    let mut pages = p.ecs.list_clusters().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ProviderError::new(format!("list ECS clusters: {}", crate::sdk::describe(&e))))?;
        arns.extend(page.cluster_arns().iter().cloned());
    }
    let mut found = Vec::new();
    for chunk in arns.chunks(100) {
        let out = call!(
            "describe ECS clusters",
            p.ecs
                .describe_clusters()
                .set_clusters(Some(chunk.to_vec()))
                .include(ClusterField::Tags)
                .include(ClusterField::Settings)
                .send()
        );
        for c in out.clusters() {
            if c.status() != Some("ACTIVE") {
                continue;
            }
            let Some(id) = logical_id(scope, c.tags()) else { continue };
            found.push(cluster_observed(id, c));
        }
    }
    Ok(found)
}

fn cluster_observed(id: LogicalId, c: &aws_sdk_ecs::types::Cluster) -> Observed {
    let insights = c
        .settings()
        .iter()
        .any(|s| s.name() == Some(&ClusterSettingName::ContainerInsights) && s.value() != Some("disabled"));
    let (arn, name) = (c.cluster_arn().unwrap_or_default(), c.cluster_name().unwrap_or_default());
    Observed {
        id,
        kind: Kind::Cluster,
        physical_id: arn.to_string(),
        props: json!({ "name": name, "container_insights": insights }),
        outputs: outputs(&[("arn", json!(arn)), ("name", json!(name))]),
        depends_on: BTreeSet::new(),
    }
}

async fn observe_task_definitions(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>> {
    let prefix = format!("{}-", scope.stack);
    let mut families = Vec::new();
    let mut pages = p
        .ecs
        .list_task_definition_families()
        .family_prefix(&prefix)
        .status(aws_sdk_ecs::types::TaskDefinitionFamilyStatus::Active)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page
            .map_err(|e| ProviderError::new(format!("list task definition families: {}", crate::sdk::describe(&e))))?;
        families.extend(page.families().iter().filter(|f| f.starts_with(&prefix)).cloned());
    }
    let mut found = Vec::new();
    for family in families {
        if let Some(o) = latest(p, scope, &family).await? {
            found.push(o);
        }
    }
    Ok(found)
}

/// The ACTIVE revisions of a family, oldest first.
/// ACTIVE revisions of a task definition family, oldest first.
pub(super) async fn revisions(p: &AwsProvider, family: &str) -> Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut pages = p
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(TaskDefinitionStatus::Active)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            ProviderError::new(format!("list revisions of task definition {family}: {}", crate::sdk::describe(&e)))
        })?;
        arns.extend(page.task_definition_arns().iter().cloned());
    }
    let revision = |arn: &String| arn.rsplit(':').next().and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    // `family_prefix` is a prefix for some endpoints: keep this family's own revisions.
    arns.retain(|a| a.rsplit_once(':').is_some_and(|(head, _)| head.ends_with(&format!("/{family}"))));
    arns.sort_by_key(revision);
    Ok(arns)
}

/// The latest ACTIVE revision of a family in normal form, if it is this stack's.
async fn latest(p: &AwsProvider, scope: &Scope, family: &str) -> Result<Option<Observed>> {
    let Some(arn) = revisions(p, family).await?.pop() else { return Ok(None) };
    let out =
        match p.ecs.describe_task_definition().task_definition(&arn).include(TaskDefinitionField::Tags).send().await {
            Ok(out) => out,
            Err(e) if code(&e) == Some("ClientException") => return Ok(None),
            Err(e) => {
                return Err(ProviderError::new(format!("read task definition {arn}: {}", crate::sdk::describe(&e))))
            }
        };
    let Some(id) = logical_id(scope, out.tags()) else { return Ok(None) };
    let Some(td) = out.task_definition() else { return Ok(None) };
    Ok(Some(task_observed(id, td)))
}

fn task_observed(id: LogicalId, td: &aws_sdk_ecs::types::TaskDefinition) -> Observed {
    let num = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok()).map(Value::from).unwrap_or(Value::Null);
    let container = match td.container_definitions().first() {
        Some(c) => {
            let env: serde_json::Map<String, Value> = c
                .environment()
                .iter()
                .filter_map(|kv| Some((kv.name()?.to_string(), json!(kv.value().unwrap_or_default()))))
                .collect();
            let secrets: serde_json::Map<String, Value> =
                c.secrets().iter().map(|s| (s.name().to_string(), json!(s.value_from()))).collect();
            let mut health: Vec<String> = c.health_check().map(|h| h.command().to_vec()).unwrap_or_default();
            if health.first().is_some_and(|c| c == "CMD") {
                health.remove(0);
            }
            json!({
                "name": c.name(),
                "image": c.image().map(aira_engine::expand::image_json).unwrap_or(Value::Null),
                "command": c.command(),
                "port": c.port_mappings().first().and_then(|m| m.container_port()),
                "environment": env,
                "secrets": secrets,
                "log_group": c.log_configuration().and_then(|l| l.options()).and_then(|o| o.get("awslogs-group")),
                "health_check": health,
                "user": c.user(),
                "read_only_root": c.readonly_root_filesystem().unwrap_or(false),
            })
        }
        None => Value::Null,
    };
    let arn = td.task_definition_arn().unwrap_or_default();
    let family = td.family().unwrap_or_default();
    Observed {
        id,
        kind: Kind::TaskDefinition,
        physical_id: arn.to_string(),
        props: json!({
            "family": family,
            "cpu": num(td.cpu()),
            "memory": num(td.memory()),
            "execution_role": td.execution_role_arn(),
            "task_role": td.task_role_arn(),
            "container": container,
        }),
        outputs: outputs(&[("arn", json!(arn)), ("family", json!(family)), ("revision", json!(td.revision()))]),
        depends_on: BTreeSet::new(),
    }
}

async fn observe_services(p: &AwsProvider, scope: &Scope, clusters: &[String]) -> Result<Vec<Observed>> {
    let mut found = Vec::new();
    for cluster in clusters {
        let mut arns = Vec::new();
        let mut pages = p.ecs.list_services().cluster(cluster).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                ProviderError::new(format!(
                    "list services of cluster {}: {}",
                    cluster_name(cluster),
                    crate::sdk::describe(&e)
                ))
            })?;
            arns.extend(page.service_arns().iter().cloned());
        }
        for chunk in arns.chunks(10) {
            let out = call!(
                format!("describe services of cluster {}", cluster_name(cluster)),
                p.ecs
                    .describe_services()
                    .cluster(cluster)
                    .set_services(Some(chunk.to_vec()))
                    .include(ServiceField::Tags)
                    .send()
            );
            for s in out.services() {
                // A service being deleted (DRAINING) or deleted (INACTIVE) is not there for planning.
                if s.status() != Some("ACTIVE") {
                    continue;
                }
                let Some(id) = logical_id(scope, s.tags()) else { continue };
                found.push(service_observed(p, id, s).await?);
            }
        }
    }
    Ok(found)
}

async fn service_observed(p: &AwsProvider, id: LogicalId, s: &aws_sdk_ecs::types::Service) -> Result<Observed> {
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
    let count = match scaling(p, cluster, name).await? {
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
        "deployment": match dc {
            Some(dc) => json!({
                "circuit_breaker": breaker.is_some_and(|b| b.enable()),
                "rollback": breaker.is_some_and(|b| b.rollback()),
                "min_healthy_percent": dc.minimum_healthy_percent(),
                "max_percent": dc.maximum_percent(),
            }),
            // AWS always reports it; an endpoint that keeps none (the moto server) is read as
            // what aira sets on every service, rather than as a change no call can make.
            None => json!({ "circuit_breaker": true, "rollback": true, "min_healthy_percent": 100, "max_percent": 200 }),
        },
        "load_balancer": load_balancer,
    });
    if !props["load_balancer"].is_null() {
        // AWS reports it for every load-balanced service; an endpoint that keeps none (the moto
        // server) is read as the grace aira sets, rather than as a change no call can make.
        props["health_check_grace"] = json!(s.health_check_grace_period_seconds().unwrap_or(HEALTH_CHECK_GRACE));
    }
    let arn = s.service_arn().unwrap_or_default();
    Ok(Observed {
        id,
        kind: Kind::Service,
        physical_id: arn.to_string(),
        props,
        outputs: outputs(&[("arn", json!(arn)), ("name", json!(name))]),
        depends_on: BTreeSet::new(),
    })
}

fn scaling_resource(cluster: &str, service: &str) -> String {
    format!("service/{}/{service}", cluster_name(cluster))
}

/// `{min, max, backlog_per_task, queue}` from Application Auto Scaling, or `None` when the
/// service has no scalable target.
async fn scaling(p: &AwsProvider, cluster: &str, service: &str) -> Result<Option<Value>> {
    let rid = scaling_resource(cluster, service);
    let what = format!("read the autoscaling of service {service}");
    let targets = call!(
        what,
        p.autoscaling.describe_scalable_targets().service_namespace(ServiceNamespace::Ecs).resource_ids(&rid).send()
    );
    let Some(target) = targets.scalable_targets().iter().find(|t| t.resource_id() == rid) else { return Ok(None) };
    let policies = call!(
        what,
        p.autoscaling
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
    let backlog = config.map(|c| json!(c.target_value() as u64)).unwrap_or(Value::Null);
    let queue = config
        .and_then(|c| c.customized_metric_specification())
        .map(|m| m.metrics())
        .unwrap_or_default()
        .iter()
        .filter_map(|q| q.metric_stat()?.metric())
        .find(|m| m.namespace() == Some("AWS/SQS"))
        .and_then(|m| m.dimensions().iter().find(|d| d.name() == "QueueName").map(|d| json!(d.value())))
        .unwrap_or(Value::Null);
    Ok(Some(json!({
        "min": target.min_capacity(),
        "max": target.max_capacity(),
        "backlog_per_task": backlog,
        "queue": queue,
    })))
}

// ---- create and update -------------------------------------------------------------------

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed> {
    match res.kind {
        Kind::Cluster => create_cluster(p, scope, res).await,
        Kind::TaskDefinition => register(p, scope, res, progress).await,
        Kind::Service => create_service(p, scope, res, progress).await,
        _ => unreachable!("not an ECS kind"),
    }
}

pub async fn update(
    p: &AwsProvider,
    scope: &Scope,
    res: &Resolved,
    current: &Observed,
    progress: &dyn Progress,
) -> Result<Observed> {
    match res.kind {
        Kind::Cluster => {
            let what = format!("update ECS cluster `{}`", res.id);
            let out = call!(
                what,
                p.ecs.update_cluster_settings().cluster(&current.physical_id).settings(insights(res)).send()
            );
            let c = out.cluster().ok_or_else(|| ProviderError::new(format!("{what}: no cluster in the answer")))?;
            read_cluster(p, &res.id, c.cluster_arn().unwrap_or(&current.physical_id), &what).await
        }
        Kind::TaskDefinition => register(p, scope, res, progress).await,
        Kind::Service => update_service(p, scope, res, current, progress).await,
        _ => unreachable!("not an ECS kind"),
    }
}

fn insights(res: &Resolved) -> ClusterSetting {
    let on = res.props["container_insights"].as_bool().unwrap_or(false);
    ClusterSetting::builder()
        .name(ClusterSettingName::ContainerInsights)
        .value(if on { "enabled" } else { "disabled" })
        .build()
}

async fn create_cluster(p: &AwsProvider, scope: &Scope, res: &Resolved) -> Result<Observed> {
    let name = res.props["name"].as_str().unwrap_or_default();
    let what = format!("create ECS cluster `{}` ({name})", res.id);
    let out = call!(
        what,
        p.ecs.create_cluster().cluster_name(name).settings(insights(res)).set_tags(Some(tags(scope, &res.id))).send()
    );
    let arn = out.cluster().and_then(|c| c.cluster_arn()).unwrap_or(name).to_string();
    read_cluster(p, &res.id, &arn, &what).await
}

async fn read_cluster(p: &AwsProvider, id: &LogicalId, arn: &str, what: &str) -> Result<Observed> {
    let out = call!(
        what,
        p.ecs.describe_clusters().clusters(arn).include(ClusterField::Tags).include(ClusterField::Settings).send()
    );
    out.clusters()
        .first()
        .map(|c| cluster_observed(id.clone(), c))
        .ok_or_else(|| ProviderError::new(format!("{what}: the cluster disappeared right after the call")))
}

/// Registers a revision, unless the family's latest ACTIVE revision already is the desired one
/// (an unchanged stack and image never make a new revision). Pushes the image first if `up`
/// built it for this task definition's repository.
async fn register(p: &AwsProvider, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed> {
    let want = &res.props;
    let family = want["family"].as_str().unwrap_or_default();
    let what = format!("register task definition `{}` ({family})", res.id);
    if let Some(o) = latest(p, scope, family).await? {
        if o.id == res.id && o.props == *want {
            return Ok(o);
        }
    }
    let c = &want["container"];
    ecr::push_for(p, &res.id, &c["image"], progress).await?;
    let image = match (&c["image"]["repository"], &c["image"]["digest"]) {
        (Value::String(r), Value::String(d)) => format!("{r}@{d}"),
        _ => c["image"].as_str().unwrap_or_default().to_string(),
    };
    let name = c["name"].as_str().unwrap_or_default();
    let mut container = ContainerDefinition::builder()
        .name(name)
        .image(image)
        .essential(true)
        .set_command(Some(strs(&c["command"])))
        .readonly_root_filesystem(c["read_only_root"].as_bool().unwrap_or(false));
    if let Some(user) = c["user"].as_str() {
        container = container.user(user);
    }
    if let Some(port) = c["port"].as_i64() {
        container = container
            .port_mappings(PortMapping::builder().container_port(port as i32).protocol(TransportProtocol::Tcp).build());
    }
    for (k, v) in c["environment"].as_object().into_iter().flatten() {
        container =
            container.environment(KeyValuePair::builder().name(k).value(v.as_str().unwrap_or_default()).build());
    }
    for (k, v) in c["secrets"].as_object().into_iter().flatten() {
        let secret = Secret::builder().name(k).value_from(v.as_str().unwrap_or_default()).build();
        container = container.secrets(built(&what, secret)?);
    }
    if let Some(group) = c["log_group"].as_str() {
        let logs = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", group)
            .options("awslogs-region", &p.region)
            .options("awslogs-stream-prefix", name)
            .build();
        container = container.log_configuration(built(&what, logs)?);
    }
    let health = strs(&c["health_check"]);
    if !health.is_empty() {
        let check = HealthCheck::builder()
            .set_command(Some([vec!["CMD".to_string()], health].concat()))
            .interval(10)
            .timeout(5)
            .retries(3)
            .start_period(10)
            .build();
        container = container.health_check(built(&what, check)?);
    }
    let num = |k: &str| want[k].as_u64().map(|n| n.to_string());
    let out = call!(
        what,
        p.ecs
            .register_task_definition()
            .family(family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .set_cpu(num("cpu"))
            .set_memory(num("memory"))
            .runtime_platform(
                RuntimePlatform::builder()
                    .operating_system_family(OsFamily::Linux)
                    .cpu_architecture(CpuArchitecture::X8664)
                    .build()
            )
            .set_execution_role_arn(want["execution_role"].as_str().map(String::from))
            .set_task_role_arn(want["task_role"].as_str().map(String::from))
            .container_definitions(container.build())
            .set_tags(Some(tags(scope, &res.id)))
            .send()
    );
    let td = out.task_definition().ok_or_else(|| ProviderError::new(format!("{what}: no task definition returned")))?;
    Ok(task_observed(res.id.clone(), td))
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
/// assume yet.
fn is_role_not_ready(code: Option<&str>, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == Some("InvalidParameterException") && (m.contains("assume") || m.contains("role"))
}

async fn create_service(p: &AwsProvider, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed> {
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
    let start = Instant::now();
    let arn = loop {
        let sent = p
            .ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(task_definition)
            .desired_count(desired_count(res))
            .launch_type(LaunchType::Fargate)
            .network_configuration(network(&what, want)?)
            .deployment_configuration(deployment(want))
            .set_load_balancers(load_balancers.clone())
            .set_health_check_grace_period_seconds(want["health_check_grace"].as_i64().map(|n| n as i32))
            .set_tags(Some(tags(scope, &res.id)))
            .propagate_tags(PropagateTags::Service)
            .enable_ecs_managed_tags(true)
            .send()
            .await;
        match sent {
            Ok(out) => break out.service().and_then(|s| s.service_arn()).unwrap_or_default().to_string(),
            Err(e) if is_role_not_ready(code(&e), &message(&e)) && start.elapsed() < scope.wait => {
                progress.waiting(
                    &res.id,
                    &format!(
                        "ECS cannot use the task's roles yet ({}); IAM changes take a few seconds to reach ECS, \
                         retrying ({}s of {}s)",
                        message(&e),
                        start.elapsed().as_secs(),
                        scope.wait.as_secs()
                    ),
                );
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
        }
    };
    set_scaling(p, res, cluster, name, &Value::Null).await?;
    wait_deployed(p, scope, &res.id, cluster, name, task_definition, &BTreeSet::new(), progress).await?;
    read_service(p, &res.id, cluster, &arn, &what).await
}

async fn update_service(
    p: &AwsProvider,
    scope: &Scope,
    res: &Resolved,
    current: &Observed,
    progress: &dyn Progress,
) -> Result<Observed> {
    let want = &res.props;
    let have = &current.props;
    let name = want["name"].as_str().unwrap_or_default();
    let cluster = want["cluster"].as_str().unwrap_or_default();
    let task_definition = want["task_definition"].as_str().unwrap_or_default();
    let what = format!("update ECS service `{}` ({name})", res.id);
    // Events already there are not this deployment's.
    let before = call!(what, p.ecs.describe_services().cluster(cluster).services(&current.physical_id).send());
    let seen: BTreeSet<String> = before
        .services()
        .first()
        .map(|s| s.events().iter().filter_map(|e| e.id().map(String::from)).collect())
        .unwrap_or_default();
    let mut req = p.ecs.update_service().cluster(cluster).service(&current.physical_id);
    if have["task_definition"] != want["task_definition"] {
        req = req.task_definition(task_definition);
    }
    // An autoscaled service's count belongs to the autoscaler (within min and max).
    let fixed = want["count"].is_number();
    if fixed && have["count"] != want["count"] {
        req = req.desired_count(desired_count(res));
    }
    if !fixed && have["count"].is_number() {
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
    call!(what, req.send());
    set_scaling(p, res, cluster, name, &have["count"]).await?;
    wait_deployed(p, scope, &res.id, cluster, name, task_definition, &seen, progress).await?;
    read_service(p, &res.id, cluster, &current.physical_id, &what).await
}

async fn read_service(p: &AwsProvider, id: &LogicalId, cluster: &str, arn: &str, what: &str) -> Result<Observed> {
    let out = call!(what, p.ecs.describe_services().cluster(cluster).services(arn).include(ServiceField::Tags).send());
    match out.services().first() {
        Some(s) => service_observed(p, id.clone(), s).await,
        None => Err(ProviderError::new(format!("{what}: the service disappeared right after the call"))),
    }
}

/// Brings Application Auto Scaling to the desired count: a scalable target and a
/// target-tracking policy on backlog per task, or none for a fixed count.
async fn set_scaling(p: &AwsProvider, res: &Resolved, cluster: &str, service: &str, current: &Value) -> Result<()> {
    let want = &res.props["count"];
    if want == current {
        return Ok(());
    }
    let rid = scaling_resource(cluster, service);
    let what = format!("set the autoscaling of service `{}` ({service})", res.id);
    if want.is_number() {
        if current.is_object() {
            deregister_scaling(p, &rid, &what).await?;
        }
        return Ok(());
    }
    call!(
        what,
        p.autoscaling
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&rid)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .min_capacity(want["min"].as_i64().unwrap_or(1) as i32)
            .max_capacity(want["max"].as_i64().unwrap_or(1) as i32)
            .send()
    );
    let queue = want["queue"].as_str().unwrap_or_default();
    let metric = |id: &str, namespace: &str, name: &str, dims: &[(&str, &str)], stat: &str| {
        let mut m = TargetTrackingMetric::builder().namespace(namespace).metric_name(name);
        for (k, v) in dims {
            m = m.dimensions(built(&what, TargetTrackingMetricDimension::builder().name(*k).value(*v).build())?);
        }
        let stat = built(&what, TargetTrackingMetricStat::builder().metric(m.build()).stat(stat).build())?;
        built(&what, TargetTrackingMetricDataQuery::builder().id(id).metric_stat(stat).return_data(false).build())
    };
    // Backlog per task = visible messages ÷ running tasks (Container Insights).
    let spec = CustomizedMetricSpecification::builder()
        .metrics(metric("backlog", "AWS/SQS", "ApproximateNumberOfMessagesVisible", &[("QueueName", queue)], "Sum")?)
        .metrics(metric(
            "tasks",
            "ECS/ContainerInsights",
            "RunningTaskCount",
            &[("ClusterName", cluster_name(cluster)), ("ServiceName", service)],
            "Average",
        )?)
        .metrics(built(
            &what,
            TargetTrackingMetricDataQuery::builder()
                .id("per_task")
                .expression("backlog / tasks")
                .label("backlog per task")
                .return_data(true)
                .build(),
        )?)
        .build();
    let config = TargetTrackingScalingPolicyConfiguration::builder()
        .target_value(want["backlog_per_task"].as_f64().unwrap_or(10.0))
        .customized_metric_specification(spec)
        .scale_in_cooldown(120)
        .scale_out_cooldown(60)
        .build();
    call!(
        what,
        p.autoscaling
            .put_scaling_policy()
            .policy_name(SCALING_POLICY)
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&rid)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(built(&what, config)?)
            .send()
    );
    Ok(())
}

async fn deregister_scaling(p: &AwsProvider, rid: &str, what: &str) -> Result<()> {
    let sent = p
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
            if e.as_service_error().is_some_and(|s| {
                s.code() == Some("ObjectNotFoundException")
                    || s.message().is_some_and(|m| m.contains("No scalable target found"))
            }) =>
        {
            Ok(())
        }
        Err(e) => Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    }
}

// ---- the deployment wait -----------------------------------------------------------------

/// Waits until the service's deployment of `task_definition` completes: the PRIMARY
/// deployment's rollout COMPLETED, or, where no rollout state is reported, one deployment with
/// all its tasks running. A failed rollout or a circuit-breaker rollback is an error with the
/// reason; so is the deadline (`scope.wait`), naming what was still pending.
#[allow(clippy::too_many_arguments)]
pub(super) async fn wait_deployed(
    p: &AwsProvider,
    scope: &Scope,
    id: &LogicalId,
    cluster: &str,
    service: &str,
    task_definition: &str,
    seen_events: &BTreeSet<String>,
    progress: &dyn Progress,
) -> Result<()> {
    let start = Instant::now();
    let mut seen = seen_events.clone();
    let mut events: Vec<String> = Vec::new();
    loop {
        let what = format!("read ECS service `{id}` ({service})");
        let out = call!(what, p.ecs.describe_services().cluster(cluster).services(service).send());
        let Some(s) = out.services().first() else {
            return Err(ProviderError::new(format!("{what}: the service is gone")));
        };
        // Newest first in the answer: keep them in order of time.
        let mut new: Vec<String> = s
            .events()
            .iter()
            .filter(|e| e.id().is_some_and(|i| seen.insert(i.to_string())))
            .filter_map(|e| e.message().map(String::from))
            .collect();
        new.reverse();
        events.extend(new);
        let deployments = s.deployments();
        let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
        let (desired, running, pending) = primary
            .map(|d| (d.desired_count(), d.running_count(), d.pending_count()))
            .unwrap_or((s.desired_count(), s.running_count(), s.pending_count()));
        let deployment_id = primary.and_then(|d| d.id()).unwrap_or("(none)").to_string();
        match judge(deployments, task_definition) {
            Verdict::Done => return Ok(()),
            Verdict::Failed(why) => {
                return Err(ProviderError::new(format!(
                    "deployment {deployment_id} of service `{service}` {why}{}",
                    last_event(&events)
                )))
            }
            Verdict::Pending => {}
        }
        let stopped = stopped_reasons(p, cluster, service).await;
        let targets = target_health(p, s).await;
        let status = format!(
            "{running} of {desired} tasks running, {pending} pending{}{}{}",
            last_event(&events),
            if stopped.is_empty() { String::new() } else { format!("; stopped tasks: {}", stopped.join("; ")) },
            if targets.is_empty() { String::new() } else { format!("; targets: {targets}") },
        );
        if start.elapsed() >= scope.wait {
            return Err(ProviderError::new(format!(
                "deployment of service `{service}` did not complete in {}s: {status}",
                scope.wait.as_secs()
            )));
        }
        let others = deployments.len().saturating_sub(1);
        progress.waiting(
            id,
            &format!(
                "deployment {deployment_id} of service `{service}`{}: {status} ({}s of {}s)",
                if others > 0 { format!(" (replacing {others} older)") } else { String::new() },
                start.elapsed().as_secs(),
                scope.wait.as_secs()
            ),
        );
        tokio::time::sleep(POLL.min(scope.wait.saturating_sub(start.elapsed())).max(Duration::from_millis(100))).await;
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Done,
    /// Why the deployment failed, as the end of "deployment … of service `x` …".
    Failed(String),
    Pending,
}

/// Where a deployment of `task_definition` stands, from the service's deployments.
fn judge(deployments: &[aws_sdk_ecs::types::Deployment], task_definition: &str) -> Verdict {
    let Some(primary) = deployments.iter().find(|d| d.status() == Some("PRIMARY")) else { return Verdict::Pending };
    let failed = deployments.iter().find(|d| d.rollout_state() == Some(&DeploymentRolloutState::Failed));
    let reason = |d: &aws_sdk_ecs::types::Deployment| d.rollout_state_reason().unwrap_or("no reason given").to_string();
    match primary.rollout_state() {
        Some(DeploymentRolloutState::Failed) => Verdict::Failed(format!("failed: {}", reason(primary))),
        // The circuit breaker rolled back: the primary deployment is the previous revision again.
        Some(_) if primary.task_definition() != Some(task_definition) => Verdict::Failed(format!(
            "was rolled back by the circuit breaker to {}: {}",
            primary.task_definition().unwrap_or("the previous revision"),
            failed.map(reason).unwrap_or_else(|| "no reason given".into())
        )),
        Some(DeploymentRolloutState::Completed) => Verdict::Done,
        Some(_) => Verdict::Pending,
        // No rollout state reported (the moto server): one deployment with all its tasks running.
        None if deployments.len() == 1 && primary.running_count() == primary.desired_count() => Verdict::Done,
        None => Verdict::Pending,
    }
}

fn last_event(events: &[String]) -> String {
    match events.last() {
        Some(e) => format!("; last event: {e}"),
        None => "; last event: none yet".into(),
    }
}

/// Why the service's recently stopped tasks stopped (deduplicated; at most three).
async fn stopped_reasons(p: &AwsProvider, cluster: &str, service: &str) -> Vec<String> {
    let Ok(list) =
        p.ecs.list_tasks().cluster(cluster).service_name(service).desired_status(DesiredStatus::Stopped).send().await
    else {
        return Vec::new();
    };
    let arns: Vec<String> = list.task_arns().iter().take(10).cloned().collect();
    if arns.is_empty() {
        return Vec::new();
    }
    let Ok(tasks) = p.ecs.describe_tasks().cluster(cluster).set_tasks(Some(arns)).send().await else {
        return Vec::new();
    };
    let mut reasons = Vec::new();
    for t in tasks.tasks() {
        let mut reason = t.stopped_reason().unwrap_or("stopped").to_string();
        if let Some(c) = t.containers().iter().find(|c| c.reason().is_some() || c.exit_code().is_some_and(|x| x != 0)) {
            reason.push_str(&format!(
                " (container {}: {}{})",
                c.name().unwrap_or("?"),
                c.reason().unwrap_or(""),
                c.exit_code().map(|x| format!(" exit code {x}")).unwrap_or_default()
            ));
        }
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    reasons.truncate(3);
    reasons
}

/// The health of the targets of the service's target group: `10.0.2.7:8080 unhealthy (…)`.
async fn target_health(p: &AwsProvider, s: &aws_sdk_ecs::types::Service) -> String {
    let Some(tg) = s.load_balancers().first().and_then(|l| l.target_group_arn()) else { return String::new() };
    let Ok(out) = p.elb.describe_target_health().target_group_arn(tg).send().await else { return String::new() };
    let list: Vec<String> = out
        .target_health_descriptions()
        .iter()
        .map(|d| {
            let target =
                d.target().map(|t| format!("{}:{}", t.id().unwrap_or("?"), t.port().unwrap_or(0))).unwrap_or_default();
            let health = d.target_health();
            let state = health.and_then(|h| h.state()).map(|s| s.as_str().to_string()).unwrap_or_default();
            match health.and_then(|h| h.description()) {
                Some(why) => format!("{target} {state} ({why})"),
                None => format!("{target} {state}"),
            }
        })
        .collect();
    if list.is_empty() {
        "none registered yet".into()
    } else {
        list.join(", ")
    }
}

// ---- delete --------------------------------------------------------------------------------

pub async fn delete(p: &AwsProvider, scope: &Scope, current: &Observed, progress: &dyn Progress) -> Result<()> {
    match current.kind {
        Kind::Cluster => delete_cluster(p, scope, current, progress).await,
        Kind::TaskDefinition => {
            let family = current.props["family"].as_str().unwrap_or_default();
            let what = format!("deregister task definition `{}` ({family})", current.id);
            for arn in revisions(p, family).await? {
                match p.ecs.deregister_task_definition().task_definition(&arn).send().await {
                    Ok(_) => {}
                    Err(e) if code(&e) == Some("ClientException") && message(&e).contains("not") => {}
                    Err(e) => return Err(ProviderError::new(format!("{what}: {arn}: {}", crate::sdk::describe(&e)))),
                }
            }
            Ok(())
        }
        Kind::Service => delete_service(p, scope, current, progress).await,
        _ => unreachable!("not an ECS kind"),
    }
}

fn is_gone_service(code: Option<&str>) -> bool {
    matches!(code, Some("ServiceNotFoundException" | "ServiceNotActiveException" | "ClusterNotFoundException"))
}

async fn delete_service(p: &AwsProvider, scope: &Scope, current: &Observed, progress: &dyn Progress) -> Result<()> {
    let cluster = current.props["cluster"].as_str().unwrap_or_default();
    let name = current.props["name"].as_str().unwrap_or_default();
    let arn = &current.physical_id;
    let what = format!("delete ECS service `{}` ({name})", current.id);
    deregister_scaling(p, &scaling_resource(cluster, name), &what).await?;
    match p.ecs.update_service().cluster(cluster).service(arn).desired_count(0).send().await {
        Ok(_) => {}
        Err(e) if is_gone_service(code(&e)) => return Ok(()),
        Err(e) => return Err(ProviderError::new(format!("{what}: scale to 0: {}", crate::sdk::describe(&e)))),
    }
    match p.ecs.delete_service().cluster(cluster).service(arn).force(true).send().await {
        Ok(_) => {}
        Err(e) if is_gone_service(code(&e)) => return Ok(()),
        Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    }
    let start = Instant::now();
    loop {
        let status = match p.ecs.describe_services().cluster(cluster).services(arn).send().await {
            Ok(out) => out
                .services()
                .first()
                .map(|s| (s.status().unwrap_or("INACTIVE").to_string(), s.running_count(), s.pending_count())),
            Err(e) if is_gone_service(code(&e)) => None,
            Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
        };
        let Some((status, running, pending)) = status.filter(|(s, _, _)| s != "INACTIVE") else { return Ok(()) };
        if start.elapsed() >= scope.wait {
            return Err(ProviderError::new(format!(
                "{what}: still {status} after {}s ({running} tasks running, {pending} pending)",
                scope.wait.as_secs()
            )));
        }
        progress.waiting(
            &current.id,
            &format!(
                "service {name} is {status}: {running} tasks still running, {pending} pending; waiting until it is \
                 INACTIVE ({}s of {}s)",
                start.elapsed().as_secs(),
                scope.wait.as_secs()
            ),
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn delete_cluster(p: &AwsProvider, scope: &Scope, current: &Observed, progress: &dyn Progress) -> Result<()> {
    let what = format!("delete ECS cluster `{}` ({})", current.id, current.physical_id);
    crate::sdk::retry_busy(
        scope,
        progress,
        &current.id,
        &what,
        &["ClusterContainsServicesException", "ClusterContainsTasksException"],
        "its services and tasks to stop",
        |c| c == "ClusterNotFoundException",
        || p.ecs.delete_cluster().cluster(&current.physical_id).send(),
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::Deployment;

    #[test]
    fn role_not_ready_is_recognised() {
        let msg = "ECS was unable to assume the role 'arn:aws:iam::1:role/x' that was provided for this task.";
        assert!(is_role_not_ready(Some("InvalidParameterException"), msg));
        assert!(!is_role_not_ready(Some("InvalidParameterException"), "subnet-1 does not exist"));
        assert!(!is_role_not_ready(Some("AccessDeniedException"), msg));
        assert_eq!(scaling_resource("arn:aws:ecs:us-east-1:1:cluster/s1", "api"), "service/s1/api");
    }

    fn deployment(status: &str, td: &str, state: Option<DeploymentRolloutState>, running: i32) -> Deployment {
        Deployment::builder()
            .id(format!("ecs-svc/{td}"))
            .status(status)
            .task_definition(td)
            .set_rollout_state(state)
            .rollout_state_reason("ECS deployment circuit breaker: tasks failed to start.")
            .desired_count(2)
            .running_count(running)
            .build()
    }

    #[test]
    fn deployments_are_judged() {
        use DeploymentRolloutState::*;
        let new = "td:2";
        assert_eq!(judge(&[deployment("PRIMARY", new, Some(Completed), 2)], new), Verdict::Done);
        let rolling =
            [deployment("PRIMARY", new, Some(InProgress), 1), deployment("ACTIVE", "td:1", Some(Completed), 2)];
        assert_eq!(judge(&rolling, new), Verdict::Pending);
        match judge(&[deployment("PRIMARY", new, Some(Failed), 0)], new) {
            Verdict::Failed(why) => assert!(why.starts_with("failed: ECS deployment circuit breaker"), "{why}"),
            v => panic!("{v:?}"),
        }
        // Rolled back: the old revision is primary again, the new one failed.
        let back = [deployment("PRIMARY", "td:1", Some(InProgress), 2), deployment("ACTIVE", new, Some(Failed), 0)];
        match judge(&back, new) {
            Verdict::Failed(why) => {
                assert!(why.contains("rolled back by the circuit breaker to td:1"), "{why}");
                assert!(why.contains("tasks failed to start"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        // No rollout state (moto): one deployment, all tasks running.
        assert_eq!(judge(&[deployment("PRIMARY", new, None, 2)], new), Verdict::Done);
        assert_eq!(judge(&[deployment("PRIMARY", new, None, 1)], new), Verdict::Pending);
        assert_eq!(judge(&[], new), Verdict::Pending);
    }
}
