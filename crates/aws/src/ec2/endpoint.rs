//! VPC endpoints: gateway endpoints (route tables) and interface endpoints (subnets, security
//! groups, private DNS), each waited for until available, or gone.

use std::time::Duration;

use super::{created, fresh, observed, sorted, stack_filter, tags, updated, Result, GONE};
use crate::ops::{change, creating, Change, Cx, KindOps};
use crate::sdk::{self, Poll};
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, Val, VpcEndpointType as Type};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope};
use async_trait::async_trait;
use aws_sdk_ec2::types::{ResourceType, State, VpcEndpointType};
use aws_sdk_ec2::Client;

pub struct VpcEndpoint;

#[async_trait]
impl KindOps for VpcEndpoint {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let out =
            call!("describe VPC endpoints", cx.aws.ec2.describe_vpc_endpoints().filters(stack_filter(cx.scope)).send());
        let found = out
            .vpc_endpoints()
            .iter()
            .filter(|e| !matches!(endpoint_state(e.state()).as_str(), "deleted" | "deleting"))
            .filter_map(|e| {
                let ids = |ids: &[String]| ids.iter().map(|id| Val::from(id.as_str())).collect::<Vec<_>>();
                let gateway = e.vpc_endpoint_type() == Some(&VpcEndpointType::Gateway);
                let groups: Vec<String> = e.groups().iter().filter_map(|g| g.group_id().map(String::from)).collect();
                let props = kind::VpcEndpoint {
                    vpc: e.vpc_id().unwrap_or_default().into(),
                    service: e.service_name().unwrap_or_default().to_string(),
                    r#type: if gateway { Type::Gateway } else { Type::Interface },
                    route_tables: gateway.then(|| ids(e.route_table_ids())),
                    subnets: (!gateway).then(|| ids(e.subnet_ids())),
                    security_groups: (!gateway).then(|| ids(&groups)),
                    private_dns: (!gateway).then(|| e.private_dns_enabled().unwrap_or(false)),
                };
                observed(cx.scope, e.tags(), e.vpc_endpoint_id(), &props)
            });
        Ok(sorted(found.collect()))
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (p, what) = creating::<kind::VpcEndpoint>(res)?;
        let req =
            cx.aws.ec2.create_vpc_endpoint().vpc_id(p.vpc.as_str()).service_name(&p.service).tag_specifications(tags(
                cx.scope,
                &res.id,
                ResourceType::VpcEndpoint,
            ));
        let req = match p.r#type {
            Type::Gateway => {
                req.vpc_endpoint_type(VpcEndpointType::Gateway).set_route_table_ids(Some(ids(&p.route_tables)))
            }
            Type::Interface => req
                .vpc_endpoint_type(VpcEndpointType::Interface)
                .set_subnet_ids(Some(ids(&p.subnets)))
                .set_security_group_ids(Some(ids(&p.security_groups)))
                .private_dns_enabled(p.private_dns.unwrap_or(true)),
        };
        let out = fresh!(cx, &res.id, what, req);
        let o = created(res, &what, out.vpc_endpoint().and_then(|e| e.vpc_endpoint_id()), &p)?;
        wait_endpoint(&cx.aws.ec2, cx.scope, &res.id, &o.physical_id, cx.progress, false).await?;
        Ok(o)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Change { want, have, physical: id, what } = change::<kind::VpcEndpoint>(res, current)?;
        let diff = |w: &Option<Vec<Val<String>>>, h: &Option<Vec<Val<String>>>| {
            let (w, h) = (ids(w), ids(h));
            let add: Vec<String> = w.iter().filter(|x| !h.contains(x)).cloned().collect();
            let remove: Vec<String> = h.iter().filter(|x| !w.contains(x)).cloned().collect();
            (add, remove)
        };
        let (add_sn, rm_sn) = diff(&want.subnets, &have.subnets);
        let (add_sg, rm_sg) = diff(&want.security_groups, &have.security_groups);
        let (add_rt, rm_rt) = diff(&want.route_tables, &have.route_tables);
        let dns_changed = want.private_dns.is_some() && want.private_dns != have.private_dns;
        let nothing = [&add_sn, &rm_sn, &add_sg, &rm_sg, &add_rt, &rm_rt].iter().all(|v| v.is_empty());
        if !nothing || dns_changed {
            let nonempty = |v: Vec<String>| (!v.is_empty()).then_some(v);
            let mut req = cx
                .aws
                .ec2
                .modify_vpc_endpoint()
                .vpc_endpoint_id(id)
                .set_add_subnet_ids(nonempty(add_sn))
                .set_remove_subnet_ids(nonempty(rm_sn))
                .set_add_security_group_ids(nonempty(add_sg))
                .set_remove_security_group_ids(nonempty(rm_sg))
                .set_add_route_table_ids(nonempty(add_rt))
                .set_remove_route_table_ids(nonempty(rm_rt));
            if dns_changed {
                req = req.private_dns_enabled(want.private_dns.unwrap_or(true));
            }
            call!(what, req.send());
        }
        Ok(updated(res, current, current.outputs.clone()))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let id = current.physical_id.as_str();
        let what = format!("delete {} `{}` ({id})", current.kind, current.id);
        let sent = cx.aws.ec2.delete_vpc_endpoints().vpc_endpoint_ids(id).send().await;
        // Only the endpoint's own absence is "gone": another resource's (a route of a gateway
        // endpoint's table) is a failed delete, not a done one.
        let Some(out) = sdk::found(&what, &["InvalidVpcEndpointId.NotFound", "InvalidVpcEndpoint.NotFound"], sent)?
        else {
            return Ok(());
        };
        if let Some(u) = out.unsuccessful().first() {
            let err = u.error().and_then(|e| e.message()).unwrap_or("unknown error");
            let code = u.error().and_then(|e| e.code());
            if !code.is_some_and(|c| c.contains("NotFound")) {
                let kind = code.map(sdk::kind_of).unwrap_or(aira_engine::provider::ErrorKind::Other);
                return Err(ProviderError::coded(kind, code.map(String::from), format!("{what}: {err}")));
            }
        }
        wait_endpoint(&cx.aws.ec2, cx.scope, &current.id, id, cx.progress, true).await
    }
}

/// The ids of a list of the endpoint's, none when it has none (resolved: no references left).
fn ids(list: &Option<Vec<Val<String>>>) -> Vec<String> {
    list.iter().flatten().map(|v| v.get().clone()).collect()
}

/// The endpoint state in lower case: AWS answers `available` where its model says `Available`.
fn endpoint_state(state: Option<&State>) -> String {
    state.map(|s| s.as_str().to_ascii_lowercase()).unwrap_or_default()
}

/// Waits until the endpoint is available (or, `gone`, deleted); a failed one is an error.
async fn wait_endpoint(
    ec2: &Client,
    scope: &Scope,
    id: &LogicalId,
    endpoint: &str,
    progress: &dyn Progress,
    gone: bool,
) -> Result<()> {
    let target = if gone { "deleted" } else { "available" };
    let what = format!("endpoint {endpoint}");
    sdk::poll_until(scope, progress, id, &what, Duration::from_secs(2), || async move {
        let out = ec2.describe_vpc_endpoints().vpc_endpoint_ids(endpoint).send().await;
        let state = sdk::found(format!("read VPC endpoint `{id}` ({endpoint})"), GONE, out)?
            .map(|out| endpoint_state(out.vpc_endpoints().first().and_then(|e| e.state())))
            .unwrap_or_default();
        match (state.as_str(), gone) {
            ("" | "deleted", true) | ("available", false) => Ok(Poll::Done(())),
            ("failed" | "rejected" | "expired", false) => {
                Err(ProviderError::new(format!("VPC endpoint `{id}` ({endpoint}) is {state}")))
            }
            _ => Ok(Poll::Pending(format!("{state}, waiting until {target} (typically under 2 minutes)"))),
        }
    })
    .await
}
