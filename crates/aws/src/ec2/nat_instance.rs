//! `network.nat: instance`: an instance in a public subnet that forwards the private subnets'
//! traffic (VPC User Guide, "NAT instances"): launched from Amazon Linux 2023 through AWS's public
//! parameter, set up at its first boot (`kind::NAT_SETUP`), its source/destination check off, the
//! stack's Elastic IP associated. Observe reports one that is stopped or fails its status checks
//! as broken, so that the next `up` replaces it (the new one takes the address, then the route).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, CreditSpecificationRequest, Filter, HttpTokensState, Instance,
    InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceStateName as S, InstanceType,
    ResourceType, SummaryStatus,
};
use aws_sdk_ec2::Client;
use base64::Engine;

use super::{created, observed, sorted, stack_filter, tags_with, updated, Result, GONE};
use crate::ops::{change, creating, Change, Cx, KindOps};
use crate::sdk::{self, Poll};
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, Val};
use aira_engine::provider::{Observed, Progress, ProviderError, Repair, Resolved, Scope};

/// The tags that keep what an instance cannot report: the parameter its image came from, and the
/// digest of its set-up.
const TAG_IMAGE: &str = "aira:image";
const TAG_SETUP: &str = "aira:setup";

pub struct NatInstance;

#[async_trait]
impl KindOps for NatInstance {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let ec2 = &cx.aws.ec2;
        // Terminated and terminating instances are gone for planning.
        let live = Filter::builder()
            .name("instance-state-name")
            .set_values(Some(["pending", "running", "stopping", "stopped"].map(String::from).to_vec()))
            .build();
        let req = ec2.describe_instances().filters(stack_filter(cx.scope)).filters(live);
        let out = call!("describe NAT instances", req.send());
        let instances: Vec<&Instance> = out.reservations().iter().flat_map(|r| r.instances()).collect();
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        // The stack's Elastic IPs, by the instance each is associated with.
        let allocation: HashMap<&str, &str> = super::gateway::addresses(cx)
            .await?
            .iter()
            .filter_map(|a| Some((a.outputs.get("instance")?.as_str()?, a.physical_id.as_str())))
            .collect();
        let ids: Vec<String> = instances.iter().filter_map(|i| i.instance_id().map(String::from)).collect();
        let status = call!(
            "read the NAT instances' status checks",
            ec2.describe_instance_status().set_instance_ids(Some(ids)).include_all_instances(true).send()
        );
        let impaired: HashMap<&str, String> = status
            .instance_statuses()
            .iter()
            .filter_map(|s| {
                let of = |summary: Option<SummaryStatus>| summary.map(|s| s.as_str().to_string());
                let instance = of(s.instance_status().and_then(|x| x.status().cloned()));
                let system = of(s.system_status().and_then(|x| x.status().cloned()));
                if ![&instance, &system].iter().any(|v| v.as_deref() == Some("impaired")) {
                    return None;
                }
                let show = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
                Some((s.instance_id()?, format!("instance {}, system {}", show(instance), show(system))))
            })
            .collect();
        let found = instances.into_iter().filter_map(|i| {
            let id = i.instance_id()?;
            let tag = |key: &str| i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
            // Its groups are its primary interface's (what it was launched with).
            let primary =
                i.network_interfaces().iter().find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0));
            let primary = primary.or(i.network_interfaces().first());
            let props = kind::NatInstance {
                subnet: i.subnet_id()?.into(),
                instance_type: i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
                image: tag(TAG_IMAGE).or(i.image_id()).unwrap_or_default().to_string(),
                setup: tag(TAG_SETUP).unwrap_or_default().to_string(),
                security_groups: primary
                    .map(|n| n.groups().iter().filter_map(|g| g.group_id()).map(Val::from).collect())
                    .unwrap_or_default(),
                allocation: allocation.get(id).map(|a| Val::from(*a)),
                source_dest_check: i.source_dest_check().unwrap_or(true),
            };
            let mut o = observed(cx.scope, i.tags(), Some(id), &props)?;
            let primary =
                i.network_interfaces().iter().find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0));
            if let Some(eni) = primary.or(i.network_interfaces().first()).and_then(|n| n.network_interface_id()) {
                o = o.output("eni", eni);
            }
            let state = i.state().and_then(|s| s.name().cloned());
            let why = match (&state, impaired.get(id)) {
                (Some(S::Stopped | S::Stopping), _) => {
                    Some(format!("NAT instance {id} is {}", state.as_ref().map(|s| s.as_str()).unwrap_or_default()))
                }
                (_, Some(checks)) => Some(format!("NAT instance {id} fails its status checks ({checks})")),
                _ => None,
            };
            o.repair = why.map(|why| Repair {
                reason: format!("{why}: the private subnets have no way out; a new one replaces it"),
                replace: true,
            });
            Some(o)
        });
        Ok(sorted(found.collect()))
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (p, what) = creating::<kind::NatInstance>(res)?;
        let ec2 = &cx.aws.ec2;
        let groups = p.security_groups.iter().map(|g| g.get().clone()).collect();
        // A public address from the start, so that its first boot reaches the package
        // repositories before the Elastic IP is associated (which then replaces it).
        let interface = InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .subnet_id(p.subnet.as_str())
            .set_groups(Some(groups))
            .associate_public_ip_address(true)
            .build();
        let extra = [(TAG_IMAGE, p.image.as_str()), (TAG_SETUP, p.setup.as_str())];
        // The SDK fills RunInstances' idempotency token, so that its own retry of a launch whose
        // answer was lost launches nothing twice.
        let req = ec2
            .run_instances()
            .image_id(&p.image)
            .instance_type(InstanceType::from(p.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .network_interfaces(interface)
            .user_data(base64::engine::general_purpose::STANDARD.encode(kind::NAT_SETUP))
            // IMDSv2 only; and CPU credits `standard`, so that a busy NAT is slowed down rather
            // than billed for surplus credits (T4g instances launch `unlimited`).
            .metadata_options(InstanceMetadataOptionsRequest::builder().http_tokens(HttpTokensState::Required).build())
            .credit_specification(CreditSpecificationRequest::builder().cpu_credits("standard").build())
            .tag_specifications(tags_with(cx.scope, &res.id, ResourceType::Instance, &extra))
            .tag_specifications(tags_with(cx.scope, &res.id, ResourceType::Volume, &[]))
            .tag_specifications(tags_with(cx.scope, &res.id, ResourceType::NetworkInterface, &[]));
        let out = super::fresh!(cx, &res.id, what, req);
        let instance = out.instances().first();
        let id = instance.and_then(|i| i.instance_id());
        let eni = instance.and_then(|i| i.network_interfaces().first()).and_then(|n| n.network_interface_id());
        // Launched with the check on and no Elastic IP: both are the update's.
        let launched = kind::NatInstance { source_dest_check: true, allocation: None, ..p };
        let mut blank = created(res, &what, id, &launched)?;
        if let Some(eni) = eni {
            blank = blank.output("eni", eni);
        }
        wait_state(ec2, cx.scope, &res.id, &blank.physical_id, cx.progress, false).await?;
        self.update(cx, res, &blank).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let ec2 = &cx.aws.ec2;
        let Change { want, have, physical: id, what } = change::<kind::NatInstance>(res, current)?;
        let ids = |v: &[Val<String>]| {
            let mut ids: Vec<String> = v.iter().map(|g| g.get().clone()).collect();
            ids.sort();
            ids
        };
        if ids(&want.security_groups) != ids(&have.security_groups) {
            let eni = current.outputs.get("eni").and_then(|v| v.as_str()).unwrap_or_default();
            let req = ec2.modify_network_interface_attribute().network_interface_id(eni);
            super::fresh!(cx, &res.id, what, req.set_groups(Some(ids(&want.security_groups))));
        }
        if want.source_dest_check != have.source_dest_check {
            let check = AttributeBooleanValue::builder().value(want.source_dest_check).build();
            let req = ec2.modify_instance_attribute().instance_id(id).source_dest_check(check);
            super::fresh!(cx, &res.id, what, req);
        }
        if want.allocation != have.allocation {
            if let Some(allocation) = &want.allocation {
                // Taken from the instance it was on, if any (the one this replaces).
                let req = ec2
                    .associate_address()
                    .allocation_id(allocation.as_str())
                    .instance_id(id)
                    .allow_reassociation(true);
                sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &STARTING, || req.clone().send()).await?;
            }
        }
        Ok(updated(res, current, current.outputs.clone()))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let (ec2, id) = (&cx.aws.ec2, current.physical_id.as_str());
        let what = format!("delete {} `{}` ({id})", current.kind, current.id);
        if sdk::found(&what, GONE, ec2.terminate_instances().instance_ids(id).send().await)?.is_none() {
            return Ok(());
        }
        // Its group, subnet and address are let go once it is terminated.
        wait_state(ec2, cx.scope, &current.id, id, cx.progress, true).await
    }
}

/// A new instance is `pending` for a while, and EC2 refuses to associate an address with it
/// meanwhile (`IncorrectInstanceState`); its id may also be unknown to the next call for a moment.
const STARTING: sdk::Busy = sdk::Busy {
    codes: &["IncorrectInstanceState", "InvalidInstanceID.NotFound"],
    waits_for: "the new instance to be running",
    gone: &[],
};

/// Waits until the instance is running (or, `gone`, terminated).
async fn wait_state(
    ec2: &Client,
    scope: &Scope,
    id: &LogicalId,
    instance: &str,
    progress: &dyn Progress,
    gone: bool,
) -> Result<()> {
    let (target, typically) = if gone { ("terminated", "under a minute") } else { ("running", "under 30 s") };
    let what = format!("NAT instance {instance}");
    sdk::poll_until(scope, progress, id, &what, Duration::from_secs(3), || async move {
        let out = ec2.describe_instances().instance_ids(instance).send().await;
        // Unknown for a moment after the launch (EC2 is eventually consistent); gone for good
        // after termination.
        let out = match out {
            Err(e) if sdk::code(&e) == Some("InvalidInstanceID.NotFound") => {
                return Ok(if gone { Poll::Done(()) } else { Poll::Pending("not known to EC2 yet".into()) })
            }
            out => out.map_err(|e| sdk::error(format!("read NAT instance `{id}` ({instance})"), e))?,
        };
        let found = out.reservations().iter().flat_map(|r| r.instances()).next();
        let state = found.and_then(|i| i.state()?.name().cloned());
        match (&state, gone) {
            (None | Some(S::Terminated), true) | (Some(S::Running), false) => Ok(Poll::Done(())),
            (Some(S::Terminated | S::ShuttingDown), false) => {
                let reason = found.and_then(|i| i.state_reason()?.message()).unwrap_or("no reason given");
                Err(ProviderError::new(format!("NAT instance `{id}` ({instance}) ended at launch: {reason}")))
            }
            _ => {
                let state = state.map(|s| s.as_str().to_string()).unwrap_or_else(|| "unknown".into());
                Ok(Poll::Pending(format!("{state}, waiting until {target} (typically {typically})")))
            }
        }
    })
    .await
}
