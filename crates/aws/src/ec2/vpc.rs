//! The VPC: its CIDR block, DNS attributes and Amazon's IPv6 block.

use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, VpcAttributeName};
use serde_json::Value;

use super::{created, fresh, sorted, stack_filter, tags, updated, Result, RELEASE};
use crate::ops::{change, creating, Change, Cx, KindOps};
use crate::sdk;
use aira_engine::kind;
use aira_engine::provider::{Observed, Resolved};

pub struct Vpc;

#[async_trait]
impl KindOps for Vpc {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let ec2 = &cx.aws.ec2;
        let out = call!("describe VPCs", ec2.describe_vpcs().filters(stack_filter(cx.scope)).send());
        let mut found = Vec::new();
        for vpc in out.vpcs() {
            let (Some(id), Some(vpc_id)) = (sdk::adopt_tags(cx.scope, vpc.tags()), vpc.vpc_id()) else { continue };
            let attr = |name: VpcAttributeName| ec2.describe_vpc_attribute().vpc_id(vpc_id).attribute(name).send();
            let what = format!("read VPC `{id}` ({vpc_id})");
            let support = call!(what, attr(VpcAttributeName::EnableDnsSupport));
            let hostnames = call!(what, attr(VpcAttributeName::EnableDnsHostnames));
            let on = |v: Option<&AttributeBooleanValue>| v.and_then(|v| v.value()).unwrap_or(false);
            // An `associating` block is the VPC's (subnets wait for it), not one to ask for again.
            let v6 = vpc.ipv6_cidr_block_association_set().iter().find(|a| {
                let state = a.ipv6_cidr_block_state().and_then(|s| s.state());
                state.is_some_and(|s| matches!(s.as_str(), "associated" | "associating"))
            });
            let props = kind::Vpc {
                cidr: vpc.cidr_block().unwrap_or_default().to_string(),
                dns_support: on(support.enable_dns_support()),
                dns_hostnames: on(hostnames.enable_dns_hostnames()),
                ipv6: v6.is_some(),
            };
            let mut o = super::blank(id, vpc_id, &props);
            if let Some(a) = v6 {
                o = o.output("ipv6_cidr", a.ipv6_cidr_block()).output("ipv6_association", a.association_id());
            }
            found.push(o);
        }
        Ok(sorted(found))
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (p, what) = creating::<kind::Vpc>(res)?;
        let out = call!(
            what,
            cx.aws
                .ec2
                .create_vpc()
                .cidr_block(&p.cidr)
                .amazon_provided_ipv6_cidr_block(p.ipv6)
                .tag_specifications(tags(cx.scope, &res.id, ResourceType::Vpc))
                .send()
        );
        // What AWS makes: DNS support on, hostnames off; the rest is the same as an update.
        let blank = kind::Vpc { dns_support: true, dns_hostnames: false, ..p };
        let blank = created(res, &what, out.vpc().and_then(|v| v.vpc_id()), &blank)?;
        self.update(cx, res, &blank).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let ec2 = &cx.aws.ec2;
        let Change { want, have, physical: id, what } = change::<kind::Vpc>(res, current)?;
        // EC2 takes one attribute per call; DNS support first, hostnames need it.
        if want.dns_support != have.dns_support {
            let v = AttributeBooleanValue::builder().value(want.dns_support).build();
            fresh!(cx, &res.id, what, ec2.modify_vpc_attribute().vpc_id(id).enable_dns_support(v));
        }
        if want.dns_hostnames != have.dns_hostnames {
            let v = AttributeBooleanValue::builder().value(want.dns_hostnames).build();
            fresh!(cx, &res.id, what, ec2.modify_vpc_attribute().vpc_id(id).enable_dns_hostnames(v));
        }
        match (want.ipv6, have.ipv6) {
            (true, false) => {
                call!(what, ec2.associate_vpc_cidr_block().vpc_id(id).amazon_provided_ipv6_cidr_block(true).send());
            }
            (false, true) => {
                if let Some(a) = current.outputs.get("ipv6_association").and_then(Value::as_str) {
                    sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &RELEASE, || {
                        ec2.disassociate_vpc_cidr_block().association_id(a).send()
                    })
                    .await?;
                }
            }
            _ => {}
        }
        Ok(updated(res, current, current.outputs.clone()))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let id = current.physical_id.as_str();
        super::delete(cx, current, &RELEASE, || cx.aws.ec2.delete_vpc().vpc_id(id).send()).await
    }
}
