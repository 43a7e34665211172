//! Route tables: their routes (to the internet gateway, a NAT gateway or a NAT instance's
//! network interface) and subnets.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType};
use aws_sdk_ec2::Client;
use serde_json::{json, Value};

use super::{created, fresh, observed, sorted, stack_filter, tags, updated, Result, GONE, RELEASE};
use crate::ops::{change, creating, Change, Cx, KindOps};
use crate::sdk;
use aira_engine::kind::{self, Val, VpcRoute};
use aira_engine::provider::{Observed, Resolved};

pub struct RouteTable;

#[async_trait]
impl KindOps for RouteTable {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let out =
            call!("describe route tables", cx.aws.ec2.describe_route_tables().filters(stack_filter(cx.scope)).send());
        let found = out.route_tables().iter().filter_map(|t| {
            let routes: Vec<VpcRoute> = t
                .routes()
                .iter()
                .filter_map(|r| {
                    let destination = r.destination_cidr_block().or(r.destination_ipv6_cidr_block())?.to_string();
                    let mut route = VpcRoute { destination, gateway: None, nat_gateway: None, network_interface: None };
                    match (r.gateway_id(), r.nat_gateway_id(), r.network_interface_id()) {
                        (Some(g), _, _) if g.starts_with("igw-") => route.gateway = Some(g.into()),
                        (_, Some(n), _) => route.nat_gateway = Some(n.into()),
                        // A NAT instance's route names its instance too.
                        (_, _, Some(eni)) => route.network_interface = Some(eni.into()),
                        _ => return None, // the `local` route and endpoint routes are AWS's
                    }
                    Some(route)
                })
                .collect();
            let assoc: BTreeMap<String, Value> = t
                .associations()
                .iter()
                .filter(|a| a.main() != Some(true))
                .filter_map(|a| Some((a.subnet_id()?.to_string(), Value::from(a.route_table_association_id()?))))
                .collect();
            let subnets = assoc.keys().map(|s| Val::from(s.as_str())).collect();
            let props = kind::RouteTable { vpc: t.vpc_id().unwrap_or_default().into(), routes, subnets };
            let o = observed(cx.scope, t.tags(), t.route_table_id(), &props)?;
            Some(o.output("associations", Value::Object(assoc.into_iter().collect())))
        });
        Ok(sorted(found.collect()))
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (p, what) = creating::<kind::RouteTable>(res)?;
        let req = cx.aws.ec2.create_route_table().vpc_id(p.vpc.as_str());
        let out = fresh!(cx, &res.id, what, req.tag_specifications(tags(cx.scope, &res.id, ResourceType::RouteTable)));
        let id = out.route_table().and_then(|t| t.route_table_id());
        // Created empty: routes and subnets are the update's.
        let blank = created(res, &what, id, &kind::RouteTable { routes: Vec::new(), subnets: Vec::new(), ..p })?;
        self.update(cx, res, &blank).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let ec2 = &cx.aws.ec2;
        let Change { want, have, physical: id, what } = change::<kind::RouteTable>(res, current)?;
        let mut outputs = current.outputs.clone();
        for r in have.routes.iter().filter(|r| !want.routes.contains(r)) {
            let dest = r.destination.as_str();
            if !want.routes.iter().any(|w| w.destination == dest) {
                let req = ec2.delete_route().route_table_id(id);
                let req = if dest.contains(':') {
                    req.destination_ipv6_cidr_block(dest)
                } else {
                    req.destination_cidr_block(dest)
                };
                call!(what, req.send());
            }
        }
        for r in want.routes.iter().filter(|r| !have.routes.contains(r)) {
            let dest = r.destination.as_str();
            // The two requests have the same fields but different builder types.
            macro_rules! route {
                ($req:expr) => {{
                    let req = $req.route_table_id(id);
                    let req = if dest.contains(':') {
                        req.destination_ipv6_cidr_block(dest)
                    } else {
                        req.destination_cidr_block(dest)
                    };
                    let req = match (&r.gateway, &r.nat_gateway, &r.network_interface) {
                        (Some(g), _, _) => req.gateway_id(g.as_str()),
                        (None, Some(n), _) => req.nat_gateway_id(n.as_str()),
                        (None, None, eni) => req.set_network_interface_id(eni.as_ref().map(|e| e.get().clone())),
                    };
                    fresh!(cx, &res.id, what, req);
                }};
            }
            if have.routes.iter().any(|h| h.destination == dest) {
                route!(ec2.replace_route());
            } else {
                route!(ec2.create_route());
            }
        }
        let ids = |v: &[Val<String>]| v.iter().map(|s| s.get().clone()).collect::<Vec<String>>();
        let (want_sn, have_sn) = (ids(&want.subnets), ids(&have.subnets));
        let assoc = outputs.get("associations").cloned().unwrap_or_else(|| json!({}));
        for sn in have_sn.iter().filter(|s| !want_sn.contains(s)) {
            if let Some(a) = assoc[sn].as_str() {
                call!(what, ec2.disassociate_route_table().association_id(a).send());
            }
        }
        let mut new_assoc = assoc.as_object().cloned().unwrap_or_default();
        new_assoc.retain(|k, _| want_sn.contains(k));
        for sn in want_sn.iter().filter(|s| !have_sn.contains(s)) {
            let a = associate(ec2, id, sn, &what).await?;
            new_assoc.insert(sn.clone(), Value::from(a));
        }
        outputs.insert("associations".into(), Value::Object(new_assoc));
        Ok(updated(res, current, outputs))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let (ec2, id) = (&cx.aws.ec2, current.physical_id.as_str());
        let what = format!("delete {} `{}` ({id})", current.kind, current.id);
        if let Some(assoc) = current.outputs.get("associations").and_then(Value::as_object) {
            for a in assoc.values().filter_map(Value::as_str) {
                sdk::found(&what, GONE, ec2.disassociate_route_table().association_id(a).send().await)?;
            }
        }
        super::delete(cx, current, &RELEASE, || ec2.delete_route_table().route_table_id(id).send()).await
    }
}

/// Associates a subnet, taking it over from another route table (a replaced one) if need be.
async fn associate(ec2: &Client, table: &str, subnet: &str, what: &str) -> Result<String> {
    let e = match ec2.associate_route_table().route_table_id(table).subnet_id(subnet).send().await {
        Ok(out) => return Ok(out.association_id().unwrap_or_default().to_string()),
        Err(e) if sdk::code(&e) == Some("Resource.AlreadyAssociated") => e,
        Err(e) => return Err(sdk::error(what, e)),
    };
    let filter = Filter::builder().name("association.subnet-id").values(subnet).build();
    let out = call!(what, ec2.describe_route_tables().filters(filter).send());
    let existing = out
        .route_tables()
        .iter()
        .flat_map(|t| t.associations())
        .find(|a| a.subnet_id() == Some(subnet))
        .and_then(|a| a.route_table_association_id());
    let Some(a) = existing else { return Err(sdk::error(what, e)) };
    let out = call!(what, ec2.replace_route_table_association().association_id(a).route_table_id(table).send());
    Ok(out.new_association_id().unwrap_or_default().to_string())
}
