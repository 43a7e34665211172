//! Target groups: the health check and the deregistration delay.

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{Matcher, ProtocolEnum, TargetGroupAttribute, TargetTypeEnum};
use aws_sdk_elasticloadbalancingv2::Client;
use serde_json::{json, Value};

use super::{arn_resource, created, int, observed, ours, reread, s, Result, GONE};
use crate::kinds::{Cx, KindOps, Observing};
use crate::sdk;
use aira_engine::graph::Kind;
use aira_engine::provider::{Observed, Resolved, Scope};

const DEREGISTRATION: &str = "deregistration_delay.timeout_seconds";

/// The health check settings, on either request (the two builders have the same fields but are
/// different types).
macro_rules! health_check {
    ($req:expr, $hc:expr) => {{
        let hc = $hc;
        $req.health_check_enabled(true)
            .health_check_protocol(ProtocolEnum::Http)
            .health_check_path(s(hc, "path"))
            .health_check_interval_seconds(int(hc, "interval"))
            .health_check_timeout_seconds(int(hc, "timeout"))
            .healthy_threshold_count(int(hc, "healthy"))
            .unhealthy_threshold_count(int(hc, "unhealthy"))
            .matcher(Matcher::builder().http_code(s(hc, "matcher")).build())
    }};
}

pub struct TargetGroup;

/// The stack's target groups (or the one `arn`), with their deregistration delay.
async fn find(elb: &Client, scope: &Scope, arn: Option<&str>) -> Result<Vec<Observed>> {
    let mut tgs = Vec::new();
    let mut pages =
        elb.describe_target_groups().set_target_group_arns(arn.map(|a| vec![a.to_string()])).into_paginator().send();
    while let Some(page) = pages.next().await {
        let Some(page) = sdk::found("describe target groups", GONE, page)? else { break };
        tgs.extend(page.target_groups().iter().cloned());
    }
    let arns: Vec<String> = tgs.iter().filter_map(|t| t.target_group_arn().map(String::from)).collect();
    let tags = ours(elb, scope, &arns).await?;
    let mut found = Vec::new();
    for tg in &tgs {
        let Some((arn, (id, _))) = tg.target_group_arn().and_then(|a| Some((a, tags.get(a)?))) else { continue };
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
        let props = json!({
            "name": tg.target_group_name(),
            "protocol": tg.protocol().map(|p| p.as_str()),
            "port": tg.port(),
            "target_type": tg.target_type().map(|t| t.as_str()),
            "vpc": tg.vpc_id(),
            "health_check": {
                "path": tg.health_check_path(),
                "interval": tg.health_check_interval_seconds(),
                "timeout": tg.health_check_timeout_seconds(),
                "healthy": tg.healthy_threshold_count(),
                "unhealthy": tg.unhealthy_threshold_count(),
                "matcher": tg.matcher().and_then(|m| m.http_code()),
            },
            "deregistration_delay": delay,
        });
        let outputs = [("arn_suffix", json!(arn_resource(arn)))];
        found.push(observed(id.clone(), Kind::TargetGroup, arn, props, &outputs));
    }
    found.sort_by(|a, b| a.physical_id.cmp(&b.physical_id));
    Ok(found)
}

async fn set_deregistration_delay(elb: &Client, arn: &str, d: &Value, what: &str) -> Result<()> {
    let delay = d["deregistration_delay"].as_u64().unwrap_or(300).to_string();
    let attr = TargetGroupAttribute::builder().key(DEREGISTRATION).value(delay).build();
    call!(what, elb.modify_target_group_attributes().target_group_arn(arn).attributes(attr).send());
    Ok(())
}

#[async_trait]
impl KindOps for TargetGroup {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        find(&aws.elb, scope, None).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        let (elb, d) = (&aws.elb, &res.props);
        let what = format!("create {} `{}`", res.kind, res.id);
        let req = elb
            .create_target_group()
            .name(s(d, "name"))
            .protocol(ProtocolEnum::from(s(d, "protocol")))
            .port(int(d, "port"))
            .vpc_id(s(d, "vpc"))
            .target_type(TargetTypeEnum::from(s(d, "target_type")));
        let req = health_check!(req, &d["health_check"]).set_tags(Some(sdk::tag_list(scope, &res.id, &[])));
        let out = call!(what, req.send());
        let arn = created(out.target_groups().first().and_then(|t| t.target_group_arn()), &what)?;
        set_deregistration_delay(elb, &arn, d, &what).await?;
        reread(find(elb, scope, Some(&arn)).await?, &arn, &what)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        let (elb, want, have, arn) = (&aws.elb, &res.props, &current.props, current.physical_id.as_str());
        let what = format!("update {} `{}` ({arn})", res.kind, res.id);
        if want["health_check"] != have["health_check"] {
            call!(what, health_check!(elb.modify_target_group().target_group_arn(arn), &want["health_check"]).send());
        }
        if want["deregistration_delay"] != have["deregistration_delay"] {
            set_deregistration_delay(elb, arn, want, &what).await?;
        }
        reread(find(elb, scope, Some(arn)).await?, arn, &what)
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, scope, progress } = *cx;
        let (arn, id) = (current.physical_id.as_str(), &current.id);
        let what = format!("delete {} `{id}` ({arn})", current.kind);
        let busy = sdk::Busy {
            codes: &["ResourceInUse"],
            waits_for: "its listeners and services to let go of it (ELB releases them asynchronously)",
            gone: GONE,
        };
        sdk::retry_busy(scope, progress, id, &what, &busy, || {
            aws.elb.delete_target_group().target_group_arn(arn).send()
        })
        .await?;
        Ok(())
    }
}
