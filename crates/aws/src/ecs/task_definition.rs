//! Task definitions: a family's latest ACTIVE revision, mapped back to the normal form. A change
//! registers a new revision (never a replacement); registering an unchanged one returns it.

use async_trait::async_trait;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, CpuArchitecture, HealthCheck, KeyValuePair, LogConfiguration, LogDriver,
    NetworkMode, OsFamily, PortMapping, RuntimePlatform, Secret, TaskDefinitionFamilyStatus, TaskDefinitionField,
    TaskDefinitionStatus, TransportProtocol,
};

use super::{built, Result};
use crate::ops::{Cx, KindOps};
use crate::{ecr, sdk, Clients};
use aira_engine::expand::{container_image, UNBUILT_DIGEST};

/// The Docker label of the container that records the fingerprint of the sources its image was
/// built from (`PinnedImage::source`).
const SOURCE_LABEL: &str = "aira.image.source";
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, ContainerImage, PinnedImage, Val};
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope};

pub struct TaskDefinition;

/// ACTIVE revisions of a task definition family, oldest first.
pub(crate) async fn revisions(aws: &Clients, family: &str) -> Result<Vec<String>> {
    let req = aws.ecs.list_task_definitions().family_prefix(family).status(TaskDefinitionStatus::Active);
    let pages = sdk::pages(format!("list revisions of task definition {family}"), req.into_paginator().send()).await?;
    let mut arns: Vec<String> = pages.iter().flat_map(|p| p.task_definition_arns()).cloned().collect();
    let revision = |arn: &String| arn.rsplit(':').next().and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    // `family_prefix` is a prefix for some endpoints: keep this family's own revisions.
    arns.retain(|a| a.rsplit_once(':').is_some_and(|(head, _)| head.ends_with(&format!("/{family}"))));
    arns.sort_by_key(revision);
    Ok(arns)
}

/// The latest ACTIVE revision of a family in normal form, if it is this stack's.
async fn latest(aws: &Clients, scope: &Scope, family: &str) -> Result<Option<Observed>> {
    let Some(arn) = revisions(aws, family).await?.pop() else { return Ok(None) };
    let out = aws.ecs.describe_task_definition().task_definition(&arn).include(TaskDefinitionField::Tags).send().await;
    let Some(out) = sdk::found(format!("read task definition {arn}"), &["ClientException"], out)? else {
        return Ok(None);
    };
    let (Some(id), Some(td)) = (sdk::adopt_tags(scope, out.tags()), out.task_definition()) else { return Ok(None) };
    Ok(Some(observed(id, td)))
}

/// ECS's container definition in normal form.
fn observed_container(c: &ContainerDefinition) -> kind::Container {
    let environment =
        c.environment().iter().filter_map(|kv| Some((kv.name()?, Val::from(kv.value().unwrap_or_default())))).collect();
    let secrets = c.secrets().iter().map(|s| (s.name(), s.value_from().to_string())).collect();
    let mut health: Vec<String> = c.health_check().map(|h| h.command().to_vec()).unwrap_or_default();
    if health.first().is_some_and(|c| c == "CMD") {
        health.remove(0);
    }
    let mut image = container_image(c.image().unwrap_or_default());
    if let ContainerImage::Pinned(p) = &mut image {
        p.source = c.docker_labels().and_then(|l| l.get(SOURCE_LABEL)).cloned();
    }
    kind::Container {
        name: c.name().unwrap_or_default().to_string(),
        image,
        command: c.command().to_vec(),
        port: c.port_mappings().first().and_then(|m| m.container_port()).and_then(|p| u16::try_from(p).ok()),
        environment,
        secrets,
        log_group: c
            .log_configuration()
            .and_then(|l| l.options())
            .and_then(|o| o.get("awslogs-group"))
            .map(|g| g.as_str().into()),
        health_check: health,
        user: c.user().map(String::from),
        read_only_root: c.readonly_root_filesystem().unwrap_or(false),
    }
}

fn observed(id: LogicalId, td: &aws_sdk_ecs::types::TaskDefinition) -> Observed {
    let num = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let arn = td.task_definition_arn().unwrap_or_default();
    let family = td.family().unwrap_or_default();
    let props = kind::TaskDefinition {
        family: family.to_string(),
        cpu: num(td.cpu()),
        memory: num(td.memory()),
        execution_role: td.execution_role_arn().map(Val::from),
        task_role: td.task_role_arn().map(Val::from),
        container: td.container_definitions().first().map(observed_container),
    };
    Observed::of(id, arn, &props).output("arn", arn).output("family", family).output("revision", td.revision())
}

/// The container of a task definition in normal form, as ECS takes it.
fn container(aws: &Clients, c: &kind::Container, what: &str) -> Result<ContainerDefinition> {
    let (image, source) = match &c.image {
        ContainerImage::Pinned(PinnedImage { digest, .. }) if digest == UNBUILT_DIGEST => {
            return Err(ProviderError::new(format!("{what}: the runtime's image was not built before the apply")));
        }
        ContainerImage::Pinned(PinnedImage { repository, digest, source }) => {
            (format!("{}@{digest}", repository.as_str()), source.as_ref())
        }
        ContainerImage::Reference(r) => (r.clone(), None),
    };
    let name = c.name.as_str();
    let mut container = ContainerDefinition::builder()
        .name(name)
        .image(image)
        .set_docker_labels(source.map(|s| [(SOURCE_LABEL.to_string(), s.clone())].into()))
        .essential(true)
        .set_command(Some(c.command.clone()))
        .readonly_root_filesystem(c.read_only_root)
        .set_user(c.user.clone());
    if let Some(port) = c.port {
        container = container
            .port_mappings(PortMapping::builder().container_port(port.into()).protocol(TransportProtocol::Tcp).build());
    }
    for (k, v) in c.environment.iter() {
        container = container.environment(KeyValuePair::builder().name(k).value(v.as_str()).build());
    }
    for (k, arn) in c.secrets.iter() {
        container = container.secrets(built(what, Secret::builder().name(k).value_from(arn).build())?);
    }
    if let Some(group) = &c.log_group {
        let logs = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", group.as_str())
            .options("awslogs-region", &aws.region)
            .options("awslogs-stream-prefix", name)
            .build();
        container = container.log_configuration(built(what, logs)?);
    }
    if !c.health_check.is_empty() {
        let command = [vec!["CMD".to_string()], c.health_check.clone()].concat();
        let check =
            HealthCheck::builder().set_command(Some(command)).interval(10).timeout(5).retries(3).start_period(10);
        container = container.health_check(built(what, check.build())?);
    }
    Ok(container.build())
}

/// Registers a revision, unless the family's latest ACTIVE revision already is the desired one
/// (an unchanged stack and image never make a new revision). Pushes the image first if `up`
/// built it for this task definition's repository.
async fn register(cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
    let (aws, scope) = (cx.aws, cx.scope);
    let want: kind::TaskDefinition = res.props()?;
    let family = want.family.as_str();
    let what = format!("register task definition `{}` ({family})", res.id);
    if let Some(o) = latest(aws, scope, family).await? {
        if o.id == res.id && o.props::<kind::TaskDefinition>()? == want {
            return Ok(o);
        }
    }
    let Some(c) = &want.container else {
        return Err(ProviderError::new(format!("{what}: no container to run")));
    };
    ecr::push_for(cx, &res.id, &c.image).await?;
    let platform =
        RuntimePlatform::builder().operating_system_family(OsFamily::Linux).cpu_architecture(CpuArchitecture::X8664);
    let role = |r: &Option<Val<String>>| r.as_ref().map(|r| r.get().clone());
    let out = call!(
        what,
        aws.ecs
            .register_task_definition()
            .family(family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .cpu(want.cpu.to_string())
            .memory(want.memory.to_string())
            .runtime_platform(platform.build())
            .set_execution_role_arn(role(&want.execution_role))
            .set_task_role_arn(role(&want.task_role))
            .container_definitions(container(aws, c, &what)?)
            .set_tags(Some(sdk::tag_list(scope, &res.id, &[])))
            .send()
    );
    let td = out.task_definition().ok_or_else(|| ProviderError::new(format!("{what}: no task definition returned")))?;
    Ok(observed(res.id.clone(), td))
}

#[async_trait]
impl KindOps for TaskDefinition {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let prefix = format!("{}-", cx.scope.stack);
        let req = cx.aws.ecs.list_task_definition_families().family_prefix(&prefix);
        let req = req.status(TaskDefinitionFamilyStatus::Active);
        let pages = sdk::pages("list task definition families", req.into_paginator().send()).await?;
        let families = pages.iter().flat_map(|p| p.families()).filter(|f| f.starts_with(&prefix));
        let mut found = Vec::new();
        for family in families {
            found.extend(latest(cx.aws, cx.scope, family).await?);
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        register(cx, res).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, _: &Observed) -> Result<Observed> {
        register(cx, res).await
    }

    /// Every ACTIVE revision of the family.
    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let family = current.props::<kind::TaskDefinition>()?.family;
        let what = format!("deregister task definition `{}` ({family})", current.id);
        for arn in revisions(cx.aws, &family).await? {
            match cx.aws.ecs.deregister_task_definition().task_definition(&arn).send().await {
                Ok(_) => {}
                Err(e) if sdk::code(&e) == Some("ClientException") && sdk::message(&e).contains("not") => {}
                Err(e) => return Err(sdk::error(format!("{what}: {arn}"), e)),
            }
        }
        Ok(())
    }
}
