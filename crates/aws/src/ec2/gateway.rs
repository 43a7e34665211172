//! The ways out of the VPC: the internet gateway, the NAT gateways and their Elastic IPs.

use std::time::Duration;

use super::{created, fresh, observed, sorted, stack_filter, tags, updated, Result, GONE, RELEASE};
use crate::ops::{change, creating, Change, Cx, KindOps};
use crate::sdk::{self, Poll};
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, Val};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope};
use async_trait::async_trait;
use aws_sdk_ec2::types::{DomainType, NatGatewayState as S, ResourceType};
use aws_sdk_ec2::Client;

pub struct InternetGateway;

#[async_trait]
impl KindOps for InternetGateway {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let req = cx.aws.ec2.describe_internet_gateways().filters(stack_filter(cx.scope));
        let out = call!("describe internet gateways", req.send());
        let found = out.internet_gateways().iter().filter_map(|g| {
            let vpc = g.attachments().first().and_then(|a| a.vpc_id());
            let vpc = vpc.map(Val::from);
            observed(cx.scope, g.tags(), g.internet_gateway_id(), &kind::InternetGateway { vpc })
        });
        Ok(sorted(found.collect()))
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let what = format!("create {} `{}`", res.kind, res.id);
        let req = cx.aws.ec2.create_internet_gateway().tag_specifications(tags(
            cx.scope,
            &res.id,
            ResourceType::InternetGateway,
        ));
        let out = call!(what, req.send());
        let id = out.internet_gateway().and_then(|g| g.internet_gateway_id());
        // Created detached: the attachment is the update's.
        let blank = created(res, &what, id, &kind::InternetGateway { vpc: None })?;
        self.update(cx, res, &blank).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let ec2 = &cx.aws.ec2;
        let Change { want, have, physical: id, what } = change::<kind::InternetGateway>(res, current)?;
        if want.vpc != have.vpc {
            if let Some(old) = &have.vpc {
                sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &RELEASE, || {
                    ec2.detach_internet_gateway().internet_gateway_id(id).vpc_id(old.as_str()).send()
                })
                .await?;
            }
            if let Some(vpc) = &want.vpc {
                fresh!(cx, &res.id, what, ec2.attach_internet_gateway().internet_gateway_id(id).vpc_id(vpc.as_str()));
            }
        }
        Ok(updated(res, current, current.outputs.clone()))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let (ec2, id, rid) = (&cx.aws.ec2, current.physical_id.as_str(), &current.id);
        let what = format!("delete {} `{rid}` ({id})", current.kind);
        if let Some(vpc) = current.props::<kind::InternetGateway>()?.vpc {
            sdk::retry_busy(cx.scope, cx.progress, rid, &what, &RELEASE, || {
                ec2.detach_internet_gateway().internet_gateway_id(id).vpc_id(vpc.as_str()).send()
            })
            .await?;
        }
        super::delete(cx, current, &RELEASE, || ec2.delete_internet_gateway().internet_gateway_id(id).send()).await
    }
}

pub struct ElasticIp;

#[async_trait]
impl KindOps for ElasticIp {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        Ok(addresses(cx).await?.to_vec())
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let what = format!("create {} `{}`", res.kind, res.id);
        let req = cx.aws.ec2.allocate_address().domain(DomainType::Vpc);
        let out = call!(what, req.tag_specifications(tags(cx.scope, &res.id, ResourceType::ElasticIp)).send());
        created(res, &what, out.allocation_id(), &res.props::<kind::ElasticIp>()?)
    }

    /// Nothing of an address changes in place.
    async fn update(&self, _: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        Ok(updated(res, current, current.outputs.clone()))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let id = current.physical_id.as_str();
        super::delete(cx, current, &ADDRESS_HELD, || cx.aws.ec2.release_address().allocation_id(id).send()).await
    }
}

/// The stack's Elastic IPs, read once per observe: each with the output `instance`, the
/// instance it is associated with (a NAT instance's observe reads its address there).
pub(super) async fn addresses<'s>(cx: &Cx<'s>) -> Result<&'s [Observed]> {
    cx.seen
        .addresses(|| async {
            let out =
                call!("describe Elastic IPs", cx.aws.ec2.describe_addresses().filters(stack_filter(cx.scope)).send());
            let found = out.addresses().iter().filter_map(|a| {
                let o = observed(cx.scope, a.tags(), a.allocation_id(), &kind::ElasticIp {})?;
                Some(match a.instance_id() {
                    Some(instance) => o.output("instance", instance),
                    None => o,
                })
            });
            Ok(sorted(found.collect()))
        })
        .await
}

pub struct NatGateway;

#[async_trait]
impl KindOps for NatGateway {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let out =
            call!("describe NAT gateways", cx.aws.ec2.describe_nat_gateways().filter(stack_filter(cx.scope)).send());
        let found = out
            .nat_gateways()
            .iter()
            // A gateway on its way out is not there any more for planning; a subnet's deletion
            // waits for it through its DependencyViolation.
            .filter(|n| !matches!(n.state(), Some(S::Deleted | S::Deleting | S::Failed)))
            .filter_map(|n| {
                let allocation = n.nat_gateway_addresses().first().and_then(|a| a.allocation_id());
                let props = kind::NatGateway { subnet: n.subnet_id()?.into(), allocation: allocation.map(Val::from) };
                observed(cx.scope, n.tags(), n.nat_gateway_id(), &props)
            });
        Ok(sorted(found.collect()))
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (p, what) = creating::<kind::NatGateway>(res)?;
        let out = fresh!(
            cx,
            &res.id,
            what,
            cx.aws
                .ec2
                .create_nat_gateway()
                .subnet_id(p.subnet.as_str())
                .set_allocation_id(p.allocation.as_ref().map(|a| a.get().clone()))
                .tag_specifications(tags(cx.scope, &res.id, ResourceType::Natgateway))
        );
        let o = created(res, &what, out.nat_gateway().and_then(|n| n.nat_gateway_id()), &p)?;
        wait_nat(&cx.aws.ec2, cx.scope, &res.id, &o.physical_id, cx.progress, false).await?;
        Ok(o)
    }

    /// Subnet and address force a replacement.
    async fn update(&self, _: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        Ok(updated(res, current, current.outputs.clone()))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let id = current.physical_id.as_str();
        let what = format!("delete {} `{}` ({id})", current.kind, current.id);
        if sdk::found(&what, GONE, cx.aws.ec2.delete_nat_gateway().nat_gateway_id(id).send().await)?.is_none() {
            return Ok(());
        }
        wait_nat(&cx.aws.ec2, cx.scope, &current.id, id, cx.progress, true).await
    }
}

/// A NAT gateway holds its address until it is deleted, and observe no longer lists one that is
/// `deleting` (a `down` killed while waiting for it): releasing the address meanwhile is
/// refused with `InvalidIPAddress.InUse` (ReleaseAddress, nondefault VPC).
const ADDRESS_HELD: sdk::Busy = sdk::Busy {
    codes: &["InvalidIPAddress.InUse", "DependencyViolation"],
    waits_for: "the NAT gateway being deleted to let go of the address",
    gone: GONE,
};

/// Waits until the NAT gateway is available (or, `gone`, deleted); a failed one is an error
/// with AWS's reason.
async fn wait_nat(
    ec2: &Client,
    scope: &Scope,
    id: &LogicalId,
    nat: &str,
    progress: &dyn Progress,
    gone: bool,
) -> Result<()> {
    let target = if gone { "deleted" } else { "available" };
    sdk::poll_until(scope, progress, id, &format!("NAT gateway {nat}"), Duration::from_secs(3), || async move {
        let out = ec2.describe_nat_gateways().nat_gateway_ids(nat).send().await;
        let gw = sdk::found(format!("read NAT gateway `{id}` ({nat})"), GONE, out)?
            .and_then(|out| out.nat_gateways().first().cloned());
        let state = gw.as_ref().and_then(|g| g.state().cloned());
        match (&state, gone) {
            (None | Some(S::Deleted), true) | (Some(S::Available), false) => Ok(Poll::Done(())),
            (Some(S::Failed), false) => {
                let why = gw.as_ref().and_then(|g| g.failure_message()).unwrap_or("no reason given");
                Err(ProviderError::new(format!("NAT gateway `{id}` ({nat}) failed: {why}")))
            }
            _ => {
                let state = state.map(|s| s.as_str().to_string()).unwrap_or_else(|| "unknown".into());
                Ok(Poll::Pending(format!("{state}, waiting until {target} (typically 1-3 minutes)")))
            }
        }
    })
    .await
}
