//! The application load balancer; its deletion waits until it is gone, since the VPC's needs its
//! network interfaces released.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{IpAddressType, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Tag};
use aws_sdk_elasticloadbalancingv2::Client;
use serde_json::Value;

use super::{arn_resource, created, described, observed, reread, Ours, Result, GONE};
use crate::ops::{change, creating, Change, Cx, KindOps};
use crate::sdk::{self, Poll};
use crate::{TAG_DNS_NAME, TAG_DNS_ZONE};
use aira_engine::kind::{self, Val};
use aira_engine::provider::{Observed, Resolved, Scope};

pub struct LoadBalancer;

/// The stack's load balancers (or the one `arn`), oldest first.
pub(crate) async fn find(elb: &Client, scope: &Scope, arn: Option<&str>) -> Result<Vec<Observed>> {
    let req = elb.describe_load_balancers().set_load_balancer_arns(arn.map(|a| vec![a.to_string()]));
    let pages = req.into_paginator().send();
    let mut lbs =
        described(elb, scope, "describe load balancers", pages, |p| p.load_balancers(), |lb| lb.load_balancer_arn())
            .await?;
    lbs.sort_by_key(|o| o.item.created_time().map(|t| (t.secs(), t.subsec_nanos())));
    let mut found = Vec::new();
    for Ours { item: lb, arn, id, tags } in &lbs {
        let props = kind::LoadBalancer {
            name: lb.load_balancer_name().unwrap_or_default().to_string(),
            scheme: lb.scheme().map(|s| s.as_str()).unwrap_or_default().to_string(),
            ip_address_type: lb.ip_address_type().map(|t| t.as_str()).unwrap_or_default().to_string(),
            subnets: sorted(lb.availability_zones().iter().filter_map(|z| z.subnet_id())),
            security_groups: sorted(lb.security_groups().iter().map(String::as_str)),
            dns_zone: tags.get(TAG_DNS_ZONE).cloned(),
            public_name: tags.get(TAG_DNS_NAME).cloned(),
        };
        let suffix = arn_resource(arn).trim_start_matches("loadbalancer/");
        let outputs = [
            ("dns_name", Value::from(lb.dns_name())),
            ("zone_id", Value::from(lb.canonical_hosted_zone_id())),
            ("arn_suffix", Value::from(suffix)),
        ];
        found.push(observed(id.clone(), arn, &props, &outputs));
    }
    Ok(found)
}

/// The load balancers the stack's listeners, rules and alias records hang off, found once per
/// observe: the stack's, or a preview's base's.
pub(crate) async fn shared<'s>(cx: &Cx<'s>) -> Result<&'s [Observed]> {
    cx.seen.load_balancers(|| async { find(&cx.aws.elb, &cx.scope.containers(), None).await }).await
}

/// Observed ids in a stable order (the plan compares these sets sorted anyway).
fn sorted<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<Val<String>> {
    let mut ids: Vec<&str> = ids.collect();
    ids.sort_unstable();
    ids.into_iter().map(Val::from).collect()
}

/// Resolved ids, sorted: the sets as AWS compares them.
fn ids(v: &[Val<String>]) -> Vec<String> {
    let mut ids: Vec<String> = v.iter().map(|i| i.get().clone()).collect();
    ids.sort_unstable();
    ids
}

#[async_trait]
impl KindOps for LoadBalancer {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        // A preview's load balancer is its base's, never its own (its `down` must not see it).
        if cx.scope.base.is_some() {
            return Ok(Vec::new());
        }
        Ok(shared(cx).await?.to_vec())
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (p, what) = creating::<kind::LoadBalancer>(res)?;
        let tags: Vec<(&str, &str)> = [(TAG_DNS_ZONE, &p.dns_zone), (TAG_DNS_NAME, &p.public_name)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_deref()?)))
            .collect();
        let out = call!(
            what,
            cx.aws
                .elb
                .create_load_balancer()
                .name(&p.name)
                .r#type(LoadBalancerTypeEnum::Application)
                .scheme(LoadBalancerSchemeEnum::from(p.scheme.as_str()))
                .ip_address_type(IpAddressType::from(p.ip_address_type.as_str()))
                .set_subnets(Some(ids(&p.subnets)))
                .set_security_groups(Some(ids(&p.security_groups)))
                .set_tags(Some(sdk::tag_list(cx.scope, &res.id, &tags)))
                .send()
        );
        let arn = created(out.load_balancers().first().and_then(|l| l.load_balancer_arn()), &what)?;
        reread(find(&cx.aws.elb, cx.scope, Some(&arn)).await?, &arn, &what)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let elb = &cx.aws.elb;
        let Change { want, have, physical: arn, what } = change::<kind::LoadBalancer>(res, current)?;
        if ids(&want.subnets) != ids(&have.subnets) {
            call!(what, elb.set_subnets().load_balancer_arn(arn).set_subnets(Some(ids(&want.subnets))).send());
        }
        // Subnets first: dualstack needs subnets with IPv6 ranges.
        if want.ip_address_type != have.ip_address_type {
            let t = IpAddressType::from(want.ip_address_type.as_str());
            call!(what, elb.set_ip_address_type().load_balancer_arn(arn).ip_address_type(t).send());
        }
        if ids(&want.security_groups) != ids(&have.security_groups) {
            let groups = Some(ids(&want.security_groups));
            call!(what, elb.set_security_groups().load_balancer_arn(arn).set_security_groups(groups).send());
        }
        for (key, want, have) in
            [(TAG_DNS_ZONE, &want.dns_zone, &have.dns_zone), (TAG_DNS_NAME, &want.public_name, &have.public_name)]
        {
            match (want, have) {
                (Some(w), h) if Some(w) != h.as_ref() => {
                    let tag = Tag::builder().key(key).value(w).build();
                    call!(what, elb.add_tags().resource_arns(arn).tags(tag).send());
                }
                (None, Some(_)) => {
                    call!(what, elb.remove_tags().resource_arns(arn).tag_keys(key).send());
                }
                _ => {}
            }
        }
        reread(find(elb, cx.scope, Some(arn)).await?, arn, &what)
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let (elb, arn, id) = (&cx.aws.elb, current.physical_id.as_str(), &current.id);
        let what = format!("delete {} `{id}` ({arn})", current.kind);
        let busy = sdk::Busy { codes: &["ResourceInUse"], waits_for: "its dependents to let go of it", gone: GONE };
        let sent = sdk::retry_busy(cx.scope, cx.progress, id, &what, &busy, || {
            elb.delete_load_balancer().load_balancer_arn(arn).send()
        });
        if sent.await?.is_none() {
            return Ok(());
        }
        // Its network interfaces are released asynchronously; the subnets', security
        // group's and VPC's deletions depend on it being gone.
        let lb = format!("load balancer {arn}");
        sdk::poll_until(cx.scope, cx.progress, id, &lb, Duration::from_secs(2), || async {
            let out = sdk::found(&what, GONE, elb.describe_load_balancers().load_balancer_arns(arn).send().await)?;
            Ok(match out {
                Some(out) if !out.load_balancers().is_empty() => Poll::Pending(
                    "being deleted; waiting until it is gone, since the VPC's deletion needs its network interfaces \
                     released"
                        .into(),
                ),
                _ => Poll::Done(()),
            })
        })
        .await
    }
}
