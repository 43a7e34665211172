//! Task definitions: a family's latest ACTIVE revision, mapped back to the normal form. A change
//! registers a new revision (never a replacement); registering an unchanged one returns it.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, CpuArchitecture, HealthCheck, KeyValuePair, LogConfiguration, LogDriver,
    NetworkMode, OsFamily, PortMapping, RuntimePlatform, Secret, TaskDefinitionFamilyStatus, TaskDefinitionField,
    TaskDefinitionStatus, TransportProtocol,
};
use serde_json::{json, Value};

use super::{built, outputs, strs, Result};
use crate::kinds::{Cx, KindOps, Observing};
use crate::{ecr, sdk, AwsProvider};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope};

pub struct TaskDefinition;

/// ACTIVE revisions of a task definition family, oldest first.
pub(crate) async fn revisions(aws: &AwsProvider, family: &str) -> Result<Vec<String>> {
    let mut arns = Vec::new();
    let req = aws.ecs.list_task_definitions().family_prefix(family).status(TaskDefinitionStatus::Active);
    let mut pages = req.into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk::error(format!("list revisions of task definition {family}"), e))?;
        arns.extend(page.task_definition_arns().iter().cloned());
    }
    let revision = |arn: &String| arn.rsplit(':').next().and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    // `family_prefix` is a prefix for some endpoints: keep this family's own revisions.
    arns.retain(|a| a.rsplit_once(':').is_some_and(|(head, _)| head.ends_with(&format!("/{family}"))));
    arns.sort_by_key(revision);
    Ok(arns)
}

/// The latest ACTIVE revision of a family in normal form, if it is this stack's.
async fn latest(aws: &AwsProvider, scope: &Scope, family: &str) -> Result<Option<Observed>> {
    let Some(arn) = revisions(aws, family).await?.pop() else { return Ok(None) };
    let out = aws.ecs.describe_task_definition().task_definition(&arn).include(TaskDefinitionField::Tags).send().await;
    let Some(out) = sdk::found(format!("read task definition {arn}"), &["ClientException"], out)? else {
        return Ok(None);
    };
    let (Some(id), Some(td)) = (sdk::adopt_tags(scope, out.tags()), out.task_definition()) else { return Ok(None) };
    Ok(Some(observed(id, td)))
}

fn observed(id: LogicalId, td: &aws_sdk_ecs::types::TaskDefinition) -> Observed {
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
        repair: None,
    }
}

/// The container of a task definition in normal form, as ECS takes it.
fn container(aws: &AwsProvider, c: &Value, what: &str) -> Result<ContainerDefinition> {
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
        container = container.secrets(built(what, secret)?);
    }
    if let Some(group) = c["log_group"].as_str() {
        let logs = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", group)
            .options("awslogs-region", &aws.region)
            .options("awslogs-stream-prefix", name)
            .build();
        container = container.log_configuration(built(what, logs)?);
    }
    let health = strs(&c["health_check"]);
    if !health.is_empty() {
        let command = [vec!["CMD".to_string()], health].concat();
        let check =
            HealthCheck::builder().set_command(Some(command)).interval(10).timeout(5).retries(3).start_period(10);
        container = container.health_check(built(what, check.build())?);
    }
    Ok(container.build())
}

/// Registers a revision, unless the family's latest ACTIVE revision already is the desired one
/// (an unchanged stack and image never make a new revision). Pushes the image first if `up`
/// built it for this task definition's repository.
async fn register(aws: &AwsProvider, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed> {
    let want = &res.props;
    let family = want["family"].as_str().unwrap_or_default();
    let what = format!("register task definition `{}` ({family})", res.id);
    if let Some(o) = latest(aws, scope, family).await? {
        if o.id == res.id && o.props == *want {
            return Ok(o);
        }
    }
    ecr::push_for(aws, &res.id, &want["container"]["image"], progress).await?;
    let num = |k: &str| want[k].as_u64().map(|n| n.to_string());
    let platform =
        RuntimePlatform::builder().operating_system_family(OsFamily::Linux).cpu_architecture(CpuArchitecture::X8664);
    let out = call!(
        what,
        aws.ecs
            .register_task_definition()
            .family(family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .set_cpu(num("cpu"))
            .set_memory(num("memory"))
            .runtime_platform(platform.build())
            .set_execution_role_arn(want["execution_role"].as_str().map(String::from))
            .set_task_role_arn(want["task_role"].as_str().map(String::from))
            .container_definitions(container(aws, &want["container"], &what)?)
            .set_tags(Some(sdk::tag_list(scope, &res.id, &[])))
            .send()
    );
    let td = out.task_definition().ok_or_else(|| ProviderError::new(format!("{what}: no task definition returned")))?;
    Ok(observed(res.id.clone(), td))
}

#[async_trait]
impl KindOps for TaskDefinition {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let prefix = format!("{}-", scope.stack);
        let mut families = Vec::new();
        let req = aws.ecs.list_task_definition_families().family_prefix(&prefix);
        let mut pages = req.status(TaskDefinitionFamilyStatus::Active).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk::error("list task definition families", e))?;
            families.extend(page.families().iter().filter(|f| f.starts_with(&prefix)).cloned());
        }
        let mut found = Vec::new();
        for family in families {
            found.extend(latest(aws, scope, &family).await?);
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        register(aws, scope, res, progress).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, _: &Observed) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        register(aws, scope, res, progress).await
    }

    /// Every ACTIVE revision of the family.
    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, .. } = *cx;
        let family = current.props["family"].as_str().unwrap_or_default();
        let what = format!("deregister task definition `{}` ({family})", current.id);
        for arn in revisions(aws, family).await? {
            match aws.ecs.deregister_task_definition().task_definition(&arn).send().await {
                Ok(_) => {}
                Err(e) if sdk::code(&e) == Some("ClientException") && sdk::message(&e).contains("not") => {}
                Err(e) => return Err(sdk::error(format!("{what}: {arn}"), e)),
            }
        }
        Ok(())
    }
}
