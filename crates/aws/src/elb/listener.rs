//! Listeners of the load balancer: HTTP (redirecting) and HTTPS (forwarding, with the
//! certificate and TLS policy).

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, ProtocolEnum, RedirectActionConfig, RedirectActionStatusCodeEnum,
};
use aws_sdk_elasticloadbalancingv2::Client;

use super::{created, described, observed, reread, Ours, Result, GONE};
use crate::ops::{Cx, KindOps};
use crate::sdk;
use aira_engine::kind::{self, Val};
use aira_engine::provider::{Observed, Resolved, Scope};

/// A certificate just issued can take a moment to be usable by the load balancer.
const CERTIFICATE: sdk::Busy =
    sdk::Busy { codes: &["CertificateNotFound"], waits_for: "the certificate to be usable", gone: GONE };

/// Port, protocol, action, TLS policy and certificate, on either request (the two builders have
/// the same fields but are different types).
macro_rules! settings {
    ($req:expr, $p:expr) => {{
        let p: &kind::Listener = $p;
        let cert = p.certificate.as_ref().map(|c| Certificate::builder().certificate_arn(c.as_str()).build());
        $req.port(p.port)
            .protocol(ProtocolEnum::from(p.protocol.as_str()))
            .default_actions(action(&p.default_action))
            .set_ssl_policy(p.ssl_policy.clone())
            .set_certificates(cert.map(|c| vec![c]))
    }};
}

pub struct Listener;

/// The stack's listeners of one load balancer (or the one listener `arn`).
async fn find(elb: &Client, scope: &Scope, lb: &str, arn: Option<&str>) -> Result<Vec<Observed>> {
    let req = match arn {
        Some(a) => elb.describe_listeners().listener_arns(a),
        None => elb.describe_listeners().load_balancer_arn(lb),
    };
    // None when the load balancer, or the one listener asked for, is gone.
    let what = format!("describe listeners of {lb}");
    let listeners = described(elb, scope, &what, req.into_paginator().send(), |p| p.listeners(), |l| l.listener_arn());
    let mut found = Vec::new();
    for Ours { item: l, arn, id, .. } in &listeners.await? {
        // TLS settings mean something on a TLS listener only (some endpoints report a default
        // policy on plain HTTP ones too).
        let tls = matches!(l.protocol(), Some(ProtocolEnum::Https | ProtocolEnum::Tls));
        let props = kind::Listener {
            load_balancer: l.load_balancer_arn().unwrap_or_default().into(),
            port: l.port().unwrap_or_default(),
            protocol: l.protocol().map(|p| p.as_str()).unwrap_or_default().to_string(),
            ssl_policy: l.ssl_policy().filter(|_| tls).map(String::from),
            certificate: l.certificates().iter().find_map(|c| c.certificate_arn()).filter(|_| tls).map(Val::from),
            default_action: l
                .default_actions()
                .first()
                .map(action_props)
                .unwrap_or_else(|| kind::Action::Other { kind: "(none)".into() }),
        };
        found.push(observed(id.clone(), arn, &props, &[]));
    }
    found.sort_by(|a, b| a.physical_id.cmp(&b.physical_id));
    Ok(found)
}

pub(super) fn action_props(a: &Action) -> kind::Action {
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    match a.r#type() {
        Some(ActionTypeEnum::Redirect) => {
            let r = a.redirect_config();
            kind::Action::Redirect {
                protocol: text(r.and_then(|r| r.protocol())),
                port: text(r.and_then(|r| r.port())),
                status: text(r.and_then(|r| r.status_code()).map(|c| c.as_str())),
            }
        }
        Some(ActionTypeEnum::Forward) => {
            let tg = a.target_group_arn().or_else(|| {
                a.forward_config().and_then(|f| f.target_groups().first()).and_then(|t| t.target_group_arn())
            });
            kind::Action::Forward { target_group: text(tg).into() }
        }
        other => kind::Action::Other { kind: text(other.map(|t| t.as_str())) },
    }
}

pub(super) fn action(a: &kind::Action) -> Action {
    match a {
        kind::Action::Redirect { protocol, port, status } => Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .protocol(protocol)
                    .port(port)
                    .status_code(RedirectActionStatusCodeEnum::from(status.as_str()))
                    .build(),
            )
            .build(),
        kind::Action::Forward { target_group } => {
            Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(target_group.as_str()).build()
        }
        // Observed only (expand writes none): its type alone, which AWS refuses without the
        // settings aira does not know.
        kind::Action::Other { kind } => Action::builder().r#type(ActionTypeEnum::from(kind.as_str())).build(),
    }
}

#[async_trait]
impl KindOps for Listener {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let mut listeners = Vec::new();
        for lb in super::load_balancer::shared(cx).await? {
            listeners.extend(find(&cx.aws.elb, cx.scope, &lb.physical_id, None).await?);
        }
        Ok(listeners)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (elb, p) = (&cx.aws.elb, &res.props::<kind::Listener>()?);
        let what = format!("create {} `{}`", res.kind, res.id);
        let out = sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &CERTIFICATE, || {
            let req = elb.create_listener().load_balancer_arn(p.load_balancer.as_str());
            settings!(req, p).set_tags(Some(sdk::tag_list(cx.scope, &res.id, &[]))).send()
        })
        .await?;
        let arn = created(out.as_ref().and_then(|o| o.listeners().first()).and_then(|l| l.listener_arn()), &what)?;
        reread(find(elb, cx.scope, p.load_balancer.as_str(), Some(&arn)).await?, &arn, &what)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let (elb, p, arn) = (&cx.aws.elb, &res.props::<kind::Listener>()?, current.physical_id.as_str());
        let what = format!("update {} `{}` ({arn})", res.kind, res.id);
        sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &CERTIFICATE, || {
            settings!(elb.modify_listener().listener_arn(arn), p).send()
        })
        .await?;
        reread(find(elb, cx.scope, p.load_balancer.as_str(), Some(arn)).await?, arn, &what)
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let what = format!("delete {} `{}` ({})", current.kind, current.id, current.physical_id);
        sdk::found(what, GONE, cx.aws.elb.delete_listener().listener_arn(&current.physical_id).send().await)?;
        Ok(())
    }
}
