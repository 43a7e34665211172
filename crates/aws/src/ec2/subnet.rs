//! Subnets, with an IPv6 range that is the n-th /64 of their VPC's block.

use async_trait::async_trait;
use aws_sdk_ec2::types::ResourceType;
use std::time::Duration;

use serde_json::Value;

use super::{created, fresh, observed, sorted, stack_filter, tags, updated, Result, RELEASE};
use crate::ops::{change, creating, Change, Cx, KindOps};
use crate::sdk::{self, Poll};
use aira_engine::graph::LogicalId;
use aira_engine::kind;
use aira_engine::provider::{Observed, ProviderError, Resolved};

pub struct Subnet;

#[async_trait]
impl KindOps for Subnet {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let out = call!("describe subnets", cx.aws.ec2.describe_subnets().filters(stack_filter(cx.scope)).send());
        let found = out.subnets().iter().filter_map(|sn| {
            let v6 = sn
                .ipv6_cidr_block_association_set()
                .iter()
                .find(|a| live(a.ipv6_cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str())));
            let props = kind::Subnet {
                vpc: sn.vpc_id().unwrap_or_default().into(),
                cidr: sn.cidr_block().unwrap_or_default().to_string(),
                zone: sn.availability_zone().unwrap_or_default().to_string(),
                ipv6_index: v6
                    .and_then(|a| a.ipv6_cidr_block()?.parse::<ipnet::Ipv6Net>().ok())
                    .map(|n| ipv6_index(&n)),
            };
            let o = observed(cx.scope, sn.tags(), sn.subnet_id(), &props)?;
            Some(match v6.and_then(|a| a.association_id()) {
                Some(a) => o.output("ipv6_association", a),
                None => o,
            })
        });
        Ok(sorted(found.collect()))
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (p, what) = creating::<kind::Subnet>(res)?;
        let v6 = match p.ipv6_index {
            Some(i) => Some(subnet_ipv6(cx, &res.id, p.vpc.as_str(), i, &what).await?),
            None => None,
        };
        let out = fresh!(
            cx,
            &res.id,
            what,
            cx.aws
                .ec2
                .create_subnet()
                .vpc_id(p.vpc.as_str())
                .cidr_block(&p.cidr)
                .set_ipv6_cidr_block(v6)
                .availability_zone(&p.zone)
                .tag_specifications(tags(cx.scope, &res.id, ResourceType::Subnet))
        );
        let blank = created(res, &what, out.subnet().and_then(|v| v.subnet_id()), &p)?;
        self.update(cx, res, &blank).await
    }

    /// Everything else of a subnet forces a replacement, planned as such.
    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let ec2 = &cx.aws.ec2;
        let Change { want, have, physical: id, what } = change::<kind::Subnet>(res, current)?;
        let mut outputs = current.outputs.clone();
        if want.ipv6_index != have.ipv6_index {
            if let Some(a) = outputs.remove("ipv6_association").as_ref().and_then(Value::as_str) {
                call!(what, ec2.disassociate_subnet_cidr_block().association_id(a).send());
            }
            if let Some(i) = want.ipv6_index {
                let block = subnet_ipv6(cx, &res.id, want.vpc.as_str(), i, &what).await?;
                let out = call!(what, ec2.associate_subnet_cidr_block().subnet_id(id).ipv6_cidr_block(block).send());
                let a = out.ipv6_cidr_block_association().and_then(|a| a.association_id());
                outputs.insert("ipv6_association".into(), a.into());
            }
        }
        Ok(updated(res, current, outputs))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let id = current.physical_id.as_str();
        super::delete(cx, current, &RELEASE, || cx.aws.ec2.delete_subnet().subnet_id(id).send()).await
    }
}

/// The `index`-th /64 of the VPC's IPv6 block: a subnet's IPv6 range. Waits while the block is
/// `associating`: right after `CreateVpc`, AWS refuses a subnet range inside it
/// (`InvalidSubnet.Range`) until it is `associated`.
async fn subnet_ipv6(cx: &Cx<'_>, id: &LogicalId, vpc: &str, index: u64, what: &str) -> Result<String> {
    let waiting = format!("{what}: IPv6 block of VPC {vpc}");
    let block = sdk::poll_until(cx.scope, cx.progress, id, &waiting, Duration::from_secs(1), || async {
        let out = call!(what, cx.aws.ec2.describe_vpcs().vpc_ids(vpc).send());
        let blocks: Vec<(String, Option<String>)> = out
            .vpcs()
            .first()
            .into_iter()
            .flat_map(|v| v.ipv6_cidr_block_association_set())
            .filter_map(|a| {
                let state = a.ipv6_cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str().to_string());
                Some((a.ipv6_cidr_block()?.to_string(), state))
            })
            .collect();
        if let Some((b, _)) = blocks.iter().find(|(_, state)| state.as_deref() == Some("associated")) {
            return Ok(Poll::Done(
                b.parse::<ipnet::Ipv6Net>().map_err(|e| ProviderError::new(format!("{what}: {b}: {e}")))?,
            ));
        }
        match blocks.iter().find(|(_, state)| state.as_deref() == Some("associating")) {
            Some((b, _)) => Ok(Poll::Pending(format!("{b} associating, waiting for associated"))),
            None => Err(ProviderError::new(format!("{what}: VPC {vpc} has no IPv6 block"))),
        }
    })
    .await?;
    let net = block
        .subnets(64)
        .ok()
        .and_then(|mut s| s.nth(index as usize))
        .ok_or_else(|| ProviderError::new(format!("{what}: VPC block {block} has no /64 number {index}")))?;
    Ok(net.to_string())
}

/// An IPv6 association that is not on its way out. (Not "== associated": the moto server reports
/// a subnet's state as the text of a nested object.)
fn live(state: Option<&str>) -> bool {
    !matches!(state, None | Some("disassociating" | "disassociated" | "failing" | "failed"))
}

/// Which /64 of its VPC's /56 a subnet's IPv6 range is (Amazon's blocks are /56s).
fn ipv6_index(net: &ipnet::Ipv6Net) -> u64 {
    net.network().octets()[7] as u64
}
