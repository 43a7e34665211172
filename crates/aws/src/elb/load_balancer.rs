//! The application load balancer; its deletion waits until it is gone, since the VPC's needs its
//! network interfaces released.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{IpAddressType, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Tag};
use aws_sdk_elasticloadbalancingv2::Client;
use serde_json::json;

use super::{arn_resource, created, observed, ours, reread, s, strs, Result, GONE};
use crate::kinds::{Cx, KindOps, Observing};
use crate::sdk::{self, Poll};
use crate::TAG_DNS_ZONE;
use aira_engine::graph::Kind;
use aira_engine::provider::{Observed, Resolved, Scope};

pub struct LoadBalancer;

/// The stack's load balancers (or the one `arn`), oldest first.
pub(crate) async fn find(elb: &Client, scope: &Scope, arn: Option<&str>) -> Result<Vec<Observed>> {
    let mut lbs = Vec::new();
    let mut pages =
        elb.describe_load_balancers().set_load_balancer_arns(arn.map(|a| vec![a.to_string()])).into_paginator().send();
    while let Some(page) = pages.next().await {
        let Some(page) = sdk::found("describe load balancers", GONE, page)? else { break };
        lbs.extend(page.load_balancers().iter().cloned());
    }
    lbs.sort_by_key(|lb| lb.created_time().map(|t| (t.secs(), t.subsec_nanos())));
    let arns: Vec<String> = lbs.iter().filter_map(|lb| lb.load_balancer_arn().map(String::from)).collect();
    let tags = ours(elb, scope, &arns).await?;
    let mut found = Vec::new();
    for lb in &lbs {
        let Some((arn, (id, tags))) = lb.load_balancer_arn().and_then(|a| Some((a, tags.get(a)?))) else { continue };
        let mut subnets: Vec<&str> = lb.availability_zones().iter().filter_map(|z| z.subnet_id()).collect();
        subnets.sort();
        let mut groups: Vec<&str> = lb.security_groups().iter().map(String::as_str).collect();
        groups.sort();
        let mut props = json!({
            "name": lb.load_balancer_name(),
            "scheme": lb.scheme().map(|s| s.as_str()),
            "ip_address_type": lb.ip_address_type().map(|t| t.as_str()),
            "subnets": subnets,
            "security_groups": groups,
        });
        if let Some(zone) = tags.get(TAG_DNS_ZONE) {
            props["dns_zone"] = json!(zone);
        }
        let suffix = arn_resource(arn).trim_start_matches("loadbalancer/");
        let outputs = [
            ("dns_name", json!(lb.dns_name())),
            ("zone_id", json!(lb.canonical_hosted_zone_id())),
            ("arn_suffix", json!(suffix)),
        ];
        found.push(observed(id.clone(), Kind::LoadBalancer, arn, props, &outputs));
    }
    Ok(found)
}

#[async_trait]
impl KindOps for LoadBalancer {
    async fn observe(&self, cx: &Cx<'_>, seen: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        Ok(seen.load_balancers(aws, scope).await?.to_vec())
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        let d = &res.props;
        let what = format!("create {} `{}`", res.kind, res.id);
        let zone = d["dns_zone"].as_str().map(|z| (TAG_DNS_ZONE, z));
        let out = call!(
            what,
            aws.elb
                .create_load_balancer()
                .name(s(d, "name"))
                .r#type(LoadBalancerTypeEnum::Application)
                .scheme(LoadBalancerSchemeEnum::from(s(d, "scheme")))
                .ip_address_type(IpAddressType::from(d["ip_address_type"].as_str().unwrap_or("ipv4")))
                .set_subnets(Some(strs(d, "subnets")))
                .set_security_groups(Some(strs(d, "security_groups")))
                .set_tags(Some(sdk::tag_list(scope, &res.id, zone.as_slice())))
                .send()
        );
        let arn = created(out.load_balancers().first().and_then(|l| l.load_balancer_arn()), &what)?;
        reread(find(&aws.elb, scope, Some(&arn)).await?, &arn, &what)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        let (elb, want, have, arn) = (&aws.elb, &res.props, &current.props, current.physical_id.as_str());
        let what = format!("update {} `{}` ({arn})", res.kind, res.id);
        if strs(want, "subnets") != strs(have, "subnets") {
            call!(what, elb.set_subnets().load_balancer_arn(arn).set_subnets(Some(strs(want, "subnets"))).send());
        }
        // Subnets first: dualstack needs subnets with IPv6 ranges.
        if want["ip_address_type"] != have["ip_address_type"] {
            let t = IpAddressType::from(s(want, "ip_address_type"));
            call!(what, elb.set_ip_address_type().load_balancer_arn(arn).ip_address_type(t).send());
        }
        if strs(want, "security_groups") != strs(have, "security_groups") {
            let groups = Some(strs(want, "security_groups"));
            call!(what, elb.set_security_groups().load_balancer_arn(arn).set_security_groups(groups).send());
        }
        match (want["dns_zone"].as_str(), have["dns_zone"].as_str()) {
            (Some(w), h) if Some(w) != h => {
                let tag = Tag::builder().key(TAG_DNS_ZONE).value(w).build();
                call!(what, elb.add_tags().resource_arns(arn).tags(tag).send());
            }
            (None, Some(_)) => {
                call!(what, elb.remove_tags().resource_arns(arn).tag_keys(TAG_DNS_ZONE).send());
            }
            _ => {}
        }
        reread(find(elb, scope, Some(arn)).await?, arn, &what)
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, scope, progress } = *cx;
        let (elb, arn, id) = (&aws.elb, current.physical_id.as_str(), &current.id);
        let what = format!("delete {} `{id}` ({arn})", current.kind);
        let busy = sdk::Busy { codes: &["ResourceInUse"], waits_for: "its dependents to let go of it", gone: GONE };
        let sent = sdk::retry_busy(scope, progress, id, &what, &busy, || {
            elb.delete_load_balancer().load_balancer_arn(arn).send()
        });
        if sent.await?.is_none() {
            return Ok(());
        }
        // Its network interfaces are released asynchronously; the subnets', security
        // group's and VPC's deletions depend on it being gone.
        let lb = format!("load balancer {arn}");
        sdk::poll_until(scope, progress, id, &lb, Duration::from_secs(2), || async {
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
