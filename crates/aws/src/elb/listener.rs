//! Listeners of the load balancer: HTTP (redirecting) and HTTPS (forwarding, with the
//! certificate and TLS policy).

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, ProtocolEnum, RedirectActionConfig, RedirectActionStatusCodeEnum,
};
use aws_sdk_elasticloadbalancingv2::Client;
use serde_json::{json, Value};

use super::{created, int, observed, ours, reread, s, Result, GONE};
use crate::kinds::{Cx, KindOps, Observing};
use crate::sdk;
use aira_engine::graph::Kind;
use aira_engine::provider::{Observed, Resolved, Scope};

/// A certificate just issued can take a moment to be usable by the load balancer.
const CERTIFICATE: sdk::Busy =
    sdk::Busy { codes: &["CertificateNotFound"], waits_for: "the certificate to be usable", gone: GONE };

/// Port, protocol, action, TLS policy and certificate, on either request (the two builders have
/// the same fields but are different types).
macro_rules! settings {
    ($req:expr, $d:expr) => {{
        let d = $d;
        let mut req = $req
            .port(int(d, "port"))
            .protocol(ProtocolEnum::from(s(d, "protocol")))
            .default_actions(action(&d["default_action"]));
        if let Some(policy) = d["ssl_policy"].as_str() {
            req = req.ssl_policy(policy);
        }
        if let Some(cert) = d["certificate"].as_str() {
            req = req.certificates(Certificate::builder().certificate_arn(cert).build());
        }
        req
    }};
}

pub struct Listener;

/// The stack's listeners of one load balancer (or the one listener `arn`).
async fn find(elb: &Client, scope: &Scope, lb: &str, arn: Option<&str>) -> Result<Vec<Observed>> {
    let mut listeners = Vec::new();
    let req = match arn {
        Some(a) => elb.describe_listeners().listener_arns(a),
        None => elb.describe_listeners().load_balancer_arn(lb),
    };
    let mut pages = req.into_paginator().send();
    while let Some(page) = pages.next().await {
        let Some(page) = sdk::found(format!("describe listeners of {lb}"), GONE, page)? else { break };
        listeners.extend(page.listeners().iter().cloned());
    }
    let arns: Vec<String> = listeners.iter().filter_map(|l| l.listener_arn().map(String::from)).collect();
    let tags = ours(elb, scope, &arns).await?;
    let mut found = Vec::new();
    for l in &listeners {
        let Some((arn, (id, _))) = l.listener_arn().and_then(|a| Some((a, tags.get(a)?))) else { continue };
        let mut props = json!({
            "load_balancer": l.load_balancer_arn(),
            "port": l.port(),
            "protocol": l.protocol().map(|p| p.as_str()),
        });
        // TLS settings mean something on a TLS listener only (some endpoints report a default
        // policy on plain HTTP ones too).
        if matches!(l.protocol(), Some(ProtocolEnum::Https | ProtocolEnum::Tls)) {
            if let Some(policy) = l.ssl_policy() {
                props["ssl_policy"] = json!(policy);
            }
            if let Some(cert) = l.certificates().iter().find_map(|c| c.certificate_arn()) {
                props["certificate"] = json!(cert);
            }
        }
        props["default_action"] = l.default_actions().first().map(action_props).unwrap_or(Value::Null);
        found.push(observed(id.clone(), Kind::Listener, arn, props, &[]));
    }
    found.sort_by(|a, b| a.physical_id.cmp(&b.physical_id));
    Ok(found)
}

fn action_props(a: &Action) -> Value {
    match a.r#type() {
        Some(ActionTypeEnum::Redirect) => {
            let r = a.redirect_config();
            json!({
                "type": "redirect",
                "protocol": r.and_then(|r| r.protocol()),
                "port": r.and_then(|r| r.port()),
                "status": r.and_then(|r| r.status_code()).map(|c| c.as_str()),
            })
        }
        Some(ActionTypeEnum::Forward) => {
            let tg = a.target_group_arn().or_else(|| {
                a.forward_config().and_then(|f| f.target_groups().first()).and_then(|t| t.target_group_arn())
            });
            json!({ "type": "forward", "target_group": tg })
        }
        other => json!({ "type": other.map(|t| t.as_str().to_string()) }),
    }
}

fn action(v: &Value) -> Action {
    match s(v, "type") {
        "redirect" => Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .protocol(s(v, "protocol"))
                    .port(s(v, "port"))
                    .status_code(RedirectActionStatusCodeEnum::from(s(v, "status")))
                    .build(),
            )
            .build(),
        _ => Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(s(v, "target_group")).build(),
    }
}

#[async_trait]
impl KindOps for Listener {
    async fn observe(&self, cx: &Cx<'_>, seen: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let mut listeners = Vec::new();
        for lb in seen.load_balancers(aws, scope).await? {
            listeners.extend(find(&aws.elb, scope, &lb.physical_id, None).await?);
        }
        Ok(listeners)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        let (elb, d) = (&aws.elb, &res.props);
        let what = format!("create {} `{}`", res.kind, res.id);
        let out = sdk::retry_busy(scope, progress, &res.id, &what, &CERTIFICATE, || {
            let req = elb.create_listener().load_balancer_arn(s(d, "load_balancer"));
            settings!(req, d).set_tags(Some(sdk::tag_list(scope, &res.id, &[]))).send()
        })
        .await?;
        let arn = created(out.as_ref().and_then(|o| o.listeners().first()).and_then(|l| l.listener_arn()), &what)?;
        reread(find(elb, scope, s(d, "load_balancer"), Some(&arn)).await?, &arn, &what)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        let (elb, d, arn) = (&aws.elb, &res.props, current.physical_id.as_str());
        let what = format!("update {} `{}` ({arn})", res.kind, res.id);
        sdk::retry_busy(scope, progress, &res.id, &what, &CERTIFICATE, || {
            settings!(elb.modify_listener().listener_arn(arn), d).send()
        })
        .await?;
        reread(find(elb, scope, s(d, "load_balancer"), Some(arn)).await?, arn, &what)
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, .. } = *cx;
        let what = format!("delete {} `{}` ({})", current.kind, current.id, current.physical_id);
        sdk::found(what, GONE, aws.elb.delete_listener().listener_arn(&current.physical_id).send().await)?;
        Ok(())
    }
}
