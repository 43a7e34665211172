//! Target groups: the health check and the deregistration delay.

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{Matcher, ProtocolEnum, TargetGroupAttribute, TargetTypeEnum};
use aws_sdk_elasticloadbalancingv2::Client;
use serde_json::Value;

use super::{arn_resource, created, described, observed, reread, Ours, Result, GONE};
use crate::ops::{change, Change, Cx, KindOps};
use crate::sdk;
use aira_engine::kind;
use aira_engine::provider::{Observed, Resolved, Scope};

const DEREGISTRATION: &str = "deregistration_delay.timeout_seconds";

/// The health check settings, on either request (the two builders have the same fields but are
/// different types).
macro_rules! health_check {
    ($req:expr, $hc:expr) => {{
        let hc: &kind::HealthCheck = $hc;
        $req.health_check_enabled(true)
            .health_check_protocol(ProtocolEnum::Http)
            .health_check_path(&hc.path)
            .health_check_interval_seconds(hc.interval)
            .health_check_timeout_seconds(hc.timeout)
            .healthy_threshold_count(hc.healthy)
            .unhealthy_threshold_count(hc.unhealthy)
            .matcher(Matcher::builder().http_code(&hc.matcher).build())
    }};
}

pub struct TargetGroup;

/// The stack's target groups (or the one `arn`), with their deregistration delay.
async fn find(elb: &Client, scope: &Scope, arn: Option<&str>) -> Result<Vec<Observed>> {
    let req = elb.describe_target_groups().set_target_group_arns(arn.map(|a| vec![a.to_string()]));
    let pages = req.into_paginator().send();
    let tgs = described(elb, scope, "describe target groups", pages, |p| p.target_groups(), |t| t.target_group_arn());
    let mut found = Vec::new();
    for Ours { item: tg, arn, id, .. } in &tgs.await? {
        let out = elb.describe_target_group_attributes().target_group_arn(arn).send().await;
        let Some(attrs) = sdk::found(format!("read target group `{id}` ({arn}) attributes"), GONE, out)? else {
            continue;
        };
        let delay = attrs
            .attributes()
            .iter()
            .find(|a| a.key() == Some(DEREGISTRATION))
            .and_then(|a| a.value())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(300);
        let text = |v: Option<&str>| v.unwrap_or_default().to_string();
        let props = kind::TargetGroup {
            name: text(tg.target_group_name()),
            protocol: text(tg.protocol().map(|p| p.as_str())),
            port: tg.port().unwrap_or_default(),
            target_type: text(tg.target_type().map(|t| t.as_str())),
            vpc: text(tg.vpc_id()).into(),
            health_check: kind::HealthCheck {
                path: text(tg.health_check_path()),
                interval: tg.health_check_interval_seconds().unwrap_or_default(),
                timeout: tg.health_check_timeout_seconds().unwrap_or_default(),
                healthy: tg.healthy_threshold_count().unwrap_or_default(),
                unhealthy: tg.unhealthy_threshold_count().unwrap_or_default(),
                matcher: text(tg.matcher().and_then(|m| m.http_code())),
            },
            deregistration_delay: delay,
        };
        found.push(observed(id.clone(), arn, &props, &[("arn_suffix", Value::from(arn_resource(arn)))]));
    }
    found.sort_by(|a, b| a.physical_id.cmp(&b.physical_id));
    Ok(found)
}

async fn set_deregistration_delay(elb: &Client, arn: &str, delay: u64, what: &str) -> Result<()> {
    let attr = TargetGroupAttribute::builder().key(DEREGISTRATION).value(delay.to_string()).build();
    call!(what, elb.modify_target_group_attributes().target_group_arn(arn).attributes(attr).send());
    Ok(())
}

#[async_trait]
impl KindOps for TargetGroup {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        find(&cx.aws.elb, cx.scope, None).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (elb, p) = (&cx.aws.elb, res.props::<kind::TargetGroup>()?);
        let what = format!("create {} `{}`", res.kind, res.id);
        let req = elb
            .create_target_group()
            .name(&p.name)
            .protocol(ProtocolEnum::from(p.protocol.as_str()))
            .port(p.port)
            .vpc_id(p.vpc.as_str())
            .target_type(TargetTypeEnum::from(p.target_type.as_str()));
        let req = health_check!(req, &p.health_check).set_tags(Some(sdk::tag_list(cx.scope, &res.id, &[])));
        let out = call!(what, req.send());
        let arn = created(out.target_groups().first().and_then(|t| t.target_group_arn()), &what)?;
        set_deregistration_delay(elb, &arn, p.deregistration_delay, &what).await?;
        reread(find(elb, cx.scope, Some(&arn)).await?, &arn, &what)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let elb = &cx.aws.elb;
        let Change { want, have, physical: arn, what } = change::<kind::TargetGroup>(res, current)?;
        if want.health_check != have.health_check {
            call!(what, health_check!(elb.modify_target_group().target_group_arn(arn), &want.health_check).send());
        }
        if want.deregistration_delay != have.deregistration_delay {
            set_deregistration_delay(elb, arn, want.deregistration_delay, &what).await?;
        }
        reread(find(elb, cx.scope, Some(arn)).await?, arn, &what)
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let (arn, id) = (current.physical_id.as_str(), &current.id);
        let what = format!("delete {} `{id}` ({arn})", current.kind);
        let busy = sdk::Busy {
            codes: &["ResourceInUse"],
            waits_for: "its listeners and services to let go of it (ELB releases them asynchronously)",
            gone: GONE,
        };
        sdk::retry_busy(cx.scope, cx.progress, id, &what, &busy, || {
            cx.aws.elb.delete_target_group().target_group_arn(arn).send()
        })
        .await?;
        Ok(())
    }
}
