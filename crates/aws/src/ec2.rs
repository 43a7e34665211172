//! The network: VPC, subnets, internet gateway, NAT, route tables, security groups, endpoints.
//!
//! Every resource is found with the tag filter `tag:aira:stack`, created with its tags in the
//! create call (`TagSpecifications`), and brought to its desired properties by the same code
//! that updates it, so that a run killed between a create and its follow-up calls (attach,
//! associate, authorize) is finished by the next run's update.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, IpPermission, IpRange, Ipv6Range, ResourceType, State, Tag,
    TagSpecification, UserIdGroupPair, VpcAttributeName, VpcEndpointType,
};
use aws_sdk_ec2::Client;
use serde_json::{json, Value};

use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};

type Result<T> = std::result::Result<T, ProviderError>;

fn stack_filter(scope: &Scope) -> Filter {
    Filter::builder().name(format!("tag:{TAG_STACK}")).values(&scope.stack).build()
}

fn tags(scope: &Scope, id: &LogicalId, rt: ResourceType) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(rt);
    for (k, v) in scope.tags_for(id) {
        spec = spec.tags(Tag::builder().key(k).value(v).build());
    }
    // EC2 consoles show the Name tag.
    spec = spec.tags(Tag::builder().key("Name").value(format!("{}-{}", scope.stack, id)).build());
    spec.build()
}

/// The logical id of a resource of this stack. The stack tag is checked here too, not only in
/// the request's filter: an endpoint that ignores a filter must not make aira adopt (and then
/// delete) another stack's resources.
fn logical_id(scope: &Scope, tags: &[Tag]) -> Option<LogicalId> {
    let tag = |key: &str| tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
    (tag(TAG_STACK) == Some(scope.stack.as_str())).then(|| tag(TAG_ID).map(LogicalId::from)).flatten()
}

fn observed(id: LogicalId, kind: Kind, physical: &str, props: Value) -> Observed {
    Observed {
        id,
        kind,
        physical_id: physical.to_string(),
        props,
        outputs: BTreeMap::from([("id".to_string(), Value::from(physical))]),
        depends_on: BTreeSet::new(),
    }
}

fn code<E: ProvideErrorMetadata, R>(e: &aws_sdk_ec2::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn is_not_found<E: ProvideErrorMetadata, R>(e: &aws_sdk_ec2::error::SdkError<E, R>) -> bool {
    code(e).is_some_and(|c| c.ends_with(".NotFound") || c.ends_with("NotFound"))
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v[key].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

// ---- observe -----------------------------------------------------------------------------

pub async fn observe(ec2: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    let (vpcs, subnets, igws, ips, nats, tables, groups, endpoints) = tokio::try_join!(
        observe_vpcs(ec2, scope),
        observe_subnets(ec2, scope),
        observe_igws(ec2, scope),
        observe_ips(ec2, scope),
        observe_nats(ec2, scope),
        observe_route_tables(ec2, scope),
        observe_groups(ec2, scope),
        observe_endpoints(ec2, scope),
    )?;
    let mut all: Vec<Observed> = [vpcs, subnets, igws, ips, nats, tables, groups, endpoints].concat();
    all.sort_by(|a, b| (a.kind, &a.id, &a.physical_id).cmp(&(b.kind, &b.id, &b.physical_id)));
    Ok(all)
}

async fn observe_vpcs(ec2: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    let out = call!("describe VPCs", ec2.describe_vpcs().filters(stack_filter(scope)).send());
    let mut found = Vec::new();
    for vpc in out.vpcs() {
        let (Some(id), Some(vpc_id)) = (logical_id(scope, vpc.tags()), vpc.vpc_id()) else { continue };
        let attr = |name: VpcAttributeName| ec2.describe_vpc_attribute().vpc_id(vpc_id).attribute(name).send();
        let what = format!("read VPC `{id}` ({vpc_id})");
        let support = call!(what, attr(VpcAttributeName::EnableDnsSupport));
        let hostnames = call!(what, attr(VpcAttributeName::EnableDnsHostnames));
        let on = |v: Option<&AttributeBooleanValue>| v.and_then(|v| v.value()).unwrap_or(false);
        let v6 = vpc
            .ipv6_cidr_block_association_set()
            .iter()
            .find(|a| a.ipv6_cidr_block_state().and_then(|s| s.state()).is_some_and(|s| s.as_str() == "associated"));
        let mut o = observed(
            id,
            Kind::Vpc,
            vpc_id,
            json!({
                "cidr": vpc.cidr_block(),
                "dns_support": on(support.enable_dns_support()),
                "dns_hostnames": on(hostnames.enable_dns_hostnames()),
                "ipv6": v6.is_some(),
            }),
        );
        if let Some(a) = v6 {
            o.outputs.insert("ipv6_cidr".into(), json!(a.ipv6_cidr_block()));
            o.outputs.insert("ipv6_association".into(), json!(a.association_id()));
        }
        found.push(o);
    }
    Ok(found)
}

async fn observe_subnets(ec2: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    let out = call!("describe subnets", ec2.describe_subnets().filters(stack_filter(scope)).send());
    Ok(out
        .subnets()
        .iter()
        .filter_map(|sn| {
            let mut props = json!({ "vpc": sn.vpc_id(), "cidr": sn.cidr_block(), "zone": sn.availability_zone() });
            let v6 = sn
                .ipv6_cidr_block_association_set()
                .iter()
                .find(|a| live(a.ipv6_cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str())));
            let net = v6.and_then(|a| a.ipv6_cidr_block()?.parse::<ipnet::Ipv6Net>().ok());
            if let Some(net) = net {
                props["ipv6_index"] = json!(ipv6_index(&net));
            }
            let mut o = observed(logical_id(scope, sn.tags())?, Kind::Subnet, sn.subnet_id()?, props);
            if let Some(a) = v6.and_then(|a| a.association_id()) {
                o.outputs.insert("ipv6_association".into(), json!(a));
            }
            Some(o)
        })
        .collect())
}

async fn observe_igws(ec2: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    let out = call!("describe internet gateways", ec2.describe_internet_gateways().filters(stack_filter(scope)).send());
    Ok(out
        .internet_gateways()
        .iter()
        .filter_map(|g| {
            let vpc = g.attachments().first().and_then(|a| a.vpc_id());
            Some(observed(
                logical_id(scope, g.tags())?,
                Kind::InternetGateway,
                g.internet_gateway_id()?,
                json!({ "vpc": vpc }),
            ))
        })
        .collect())
}

async fn observe_ips(ec2: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    let out = call!("describe Elastic IPs", ec2.describe_addresses().filters(stack_filter(scope)).send());
    Ok(out
        .addresses()
        .iter()
        .filter_map(|a| Some(observed(logical_id(scope, a.tags())?, Kind::ElasticIp, a.allocation_id()?, json!({}))))
        .collect())
}

async fn observe_nats(ec2: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    use aws_sdk_ec2::types::NatGatewayState as S;
    let out = call!("describe NAT gateways", ec2.describe_nat_gateways().filter(stack_filter(scope)).send());
    Ok(out
        .nat_gateways()
        .iter()
        // A gateway on its way out is not there any more for planning; a subnet's deletion
        // waits for it through its DependencyViolation.
        .filter(|n| !matches!(n.state(), Some(S::Deleted | S::Deleting | S::Failed)))
        .filter_map(|n| {
            let allocation = n.nat_gateway_addresses().first().and_then(|a| a.allocation_id());
            Some(observed(
                logical_id(scope, n.tags())?,
                Kind::NatGateway,
                n.nat_gateway_id()?,
                json!({ "subnet": n.subnet_id(), "allocation": allocation }),
            ))
        })
        .collect())
}

async fn observe_route_tables(ec2: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    let out = call!("describe route tables", ec2.describe_route_tables().filters(stack_filter(scope)).send());
    Ok(out
        .route_tables()
        .iter()
        .filter_map(|t| {
            let routes: Vec<Value> = t
                .routes()
                .iter()
                .filter_map(|r| {
                    let dest = r.destination_cidr_block().or(r.destination_ipv6_cidr_block())?;
                    match (r.gateway_id(), r.nat_gateway_id()) {
                        (Some(g), _) if g.starts_with("igw-") => Some(json!({ "destination": dest, "gateway": g })),
                        (_, Some(n)) => Some(json!({ "destination": dest, "nat_gateway": n })),
                        _ => None, // the `local` route and endpoint routes are AWS's
                    }
                })
                .collect();
            let assoc: BTreeMap<String, Value> = t
                .associations()
                .iter()
                .filter(|a| a.main() != Some(true))
                .filter_map(|a| Some((a.subnet_id()?.to_string(), Value::from(a.route_table_association_id()?))))
                .collect();
            let mut o = observed(
                logical_id(scope, t.tags())?,
                Kind::RouteTable,
                t.route_table_id()?,
                json!({ "vpc": t.vpc_id(), "routes": routes, "subnets": assoc.keys().collect::<Vec<_>>() }),
            );
            o.outputs.insert("associations".into(), Value::Object(assoc.into_iter().collect()));
            Some(o)
        })
        .collect())
}

fn rules_of(perms: &[IpPermission]) -> Vec<Value> {
    let mut rules = Vec::new();
    for p in perms {
        let (proto, from, to) = (p.ip_protocol().unwrap_or("-1"), p.from_port(), p.to_port());
        for r in p.ip_ranges() {
            rules.push(json!({ "protocol": proto, "from": from, "to": to, "cidr": r.cidr_ip() }));
        }
        for r in p.ipv6_ranges() {
            rules.push(json!({ "protocol": proto, "from": from, "to": to, "cidr": r.cidr_ipv6() }));
        }
        for g in p.user_id_group_pairs() {
            rules.push(json!({ "protocol": proto, "from": from, "to": to, "source": g.group_id() }));
        }
    }
    rules
}

async fn observe_groups(ec2: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    let out = call!("describe security groups", ec2.describe_security_groups().filters(stack_filter(scope)).send());
    Ok(out
        .security_groups()
        .iter()
        .filter_map(|g| {
            Some(observed(
                logical_id(scope, g.tags())?,
                Kind::SecurityGroup,
                g.group_id()?,
                json!({
                    "vpc": g.vpc_id(),
                    "name": g.group_name(),
                    "description": g.description(),
                    "ingress": rules_of(g.ip_permissions()),
                }),
            ))
        })
        .collect())
}

async fn observe_endpoints(ec2: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    let out = call!("describe VPC endpoints", ec2.describe_vpc_endpoints().filters(stack_filter(scope)).send());
    Ok(out
        .vpc_endpoints()
        .iter()
        .filter(|e| !matches!(endpoint_state(e.state()).as_str(), "deleted" | "deleting"))
        .filter_map(|e| {
            let props = if e.vpc_endpoint_type() == Some(&VpcEndpointType::Gateway) {
                json!({
                    "vpc": e.vpc_id(), "service": e.service_name(), "type": "Gateway",
                    "route_tables": e.route_table_ids(),
                })
            } else {
                json!({
                    "vpc": e.vpc_id(), "service": e.service_name(), "type": "Interface",
                    "subnets": e.subnet_ids(),
                    "security_groups": e.groups().iter().filter_map(|g| g.group_id()).collect::<Vec<_>>(),
                    "private_dns": e.private_dns_enabled().unwrap_or(false),
                })
            };
            Some(observed(logical_id(scope, e.tags())?, Kind::VpcEndpoint, e.vpc_endpoint_id()?, props))
        })
        .collect())
}

// ---- create and update ---------------------------------------------------------------------

pub async fn create(ec2: &Client, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed> {
    let p = &res.props;
    let what = format!("create {} `{}`", res.kind, res.id);
    let physical: String = match res.kind {
        Kind::Vpc => {
            let out = call!(
                what,
                ec2.create_vpc()
                    .cidr_block(s(p, "cidr"))
                    .amazon_provided_ipv6_cidr_block(p["ipv6"].as_bool().unwrap_or(false))
                    .tag_specifications(tags(scope, &res.id, ResourceType::Vpc))
                    .send()
            );
            out.vpc().and_then(|v| v.vpc_id()).unwrap_or_default().to_string()
        }
        Kind::Subnet => {
            let v6 = match p["ipv6_index"].as_u64() {
                Some(i) => Some(subnet_ipv6(ec2, s(p, "vpc"), i, &what).await?),
                None => None,
            };
            let out = call!(
                what,
                ec2.create_subnet()
                    .vpc_id(s(p, "vpc"))
                    .cidr_block(s(p, "cidr"))
                    .set_ipv6_cidr_block(v6)
                    .availability_zone(s(p, "zone"))
                    .tag_specifications(tags(scope, &res.id, ResourceType::Subnet))
                    .send()
            );
            out.subnet().and_then(|v| v.subnet_id()).unwrap_or_default().to_string()
        }
        Kind::InternetGateway => {
            let out = call!(
                what,
                ec2.create_internet_gateway()
                    .tag_specifications(tags(scope, &res.id, ResourceType::InternetGateway))
                    .send()
            );
            out.internet_gateway().and_then(|g| g.internet_gateway_id()).unwrap_or_default().to_string()
        }
        Kind::ElasticIp => {
            let out = call!(
                what,
                ec2.allocate_address()
                    .domain(DomainType::Vpc)
                    .tag_specifications(tags(scope, &res.id, ResourceType::ElasticIp))
                    .send()
            );
            out.allocation_id().unwrap_or_default().to_string()
        }
        Kind::NatGateway => {
            let out = call!(
                what,
                ec2.create_nat_gateway()
                    .subnet_id(s(p, "subnet"))
                    .allocation_id(s(p, "allocation"))
                    .tag_specifications(tags(scope, &res.id, ResourceType::Natgateway))
                    .send()
            );
            let id = out.nat_gateway().and_then(|n| n.nat_gateway_id()).unwrap_or_default().to_string();
            wait_nat(ec2, scope, &res.id, &id, progress, false).await?;
            id
        }
        Kind::RouteTable => {
            let out = call!(
                what,
                ec2.create_route_table()
                    .vpc_id(s(p, "vpc"))
                    .tag_specifications(tags(scope, &res.id, ResourceType::RouteTable))
                    .send()
            );
            out.route_table().and_then(|t| t.route_table_id()).unwrap_or_default().to_string()
        }
        Kind::SecurityGroup => {
            let out = call!(
                what,
                ec2.create_security_group()
                    .vpc_id(s(p, "vpc"))
                    .group_name(s(p, "name"))
                    .description(s(p, "description"))
                    .tag_specifications(tags(scope, &res.id, ResourceType::SecurityGroup))
                    .send()
            );
            out.group_id().unwrap_or_default().to_string()
        }
        Kind::VpcEndpoint => {
            let gateway = s(p, "type") == "Gateway";
            let mut req = ec2
                .create_vpc_endpoint()
                .vpc_id(s(p, "vpc"))
                .service_name(s(p, "service"))
                .tag_specifications(tags(scope, &res.id, ResourceType::VpcEndpoint));
            req = if gateway {
                req.vpc_endpoint_type(VpcEndpointType::Gateway).set_route_table_ids(Some(strs(p, "route_tables")))
            } else {
                req.vpc_endpoint_type(VpcEndpointType::Interface)
                    .set_subnet_ids(Some(strs(p, "subnets")))
                    .set_security_group_ids(Some(strs(p, "security_groups")))
                    .private_dns_enabled(p["private_dns"].as_bool().unwrap_or(true))
            };
            let out = call!(what, req.send());
            let id = out.vpc_endpoint().and_then(|e| e.vpc_endpoint_id()).unwrap_or_default().to_string();
            wait_endpoint(ec2, scope, &res.id, &id, progress, false).await?;
            return Ok(observed(res.id.clone(), res.kind, &id, p.clone()));
        }
        _ => unreachable!("not an EC2 kind"),
    };
    if physical.is_empty() {
        return Err(ProviderError::new(format!("{what}: AWS returned no id")));
    }
    // The create made the resource with its tags; the rest is the same reconciliation as an update.
    let blank = observed(res.id.clone(), res.kind, &physical, blank_props(res.kind, p));
    update(ec2, scope, res, &blank, progress).await
}

/// What a resource looks like right after its create call, before any follow-up call.
fn blank_props(kind: Kind, desired: &Value) -> Value {
    match kind {
        Kind::Vpc => {
            json!({ "cidr": desired["cidr"], "dns_support": true, "dns_hostnames": false, "ipv6": desired["ipv6"] })
        }
        Kind::InternetGateway => json!({ "vpc": null }),
        Kind::RouteTable => json!({ "vpc": desired["vpc"], "routes": [], "subnets": [] }),
        Kind::SecurityGroup => {
            json!({ "vpc": desired["vpc"], "name": desired["name"], "description": desired["description"], "ingress": [] })
        }
        _ => desired.clone(),
    }
}

pub async fn update(
    ec2: &Client,
    scope: &Scope,
    res: &Resolved,
    current: &Observed,
    progress: &dyn Progress,
) -> Result<Observed> {
    let (want, have, id) = (&res.props, &current.props, current.physical_id.as_str());
    let what = format!("update {} `{}` ({id})", res.kind, res.id);
    let mut outputs = current.outputs.clone();
    match res.kind {
        Kind::Vpc => {
            // EC2 takes one attribute per call; DNS support first, hostnames need it.
            if want["dns_support"] != have["dns_support"] {
                let v = AttributeBooleanValue::builder().value(want["dns_support"].as_bool().unwrap_or(true)).build();
                call!(what, ec2.modify_vpc_attribute().vpc_id(id).enable_dns_support(v).send());
            }
            if want["dns_hostnames"] != have["dns_hostnames"] {
                let v = AttributeBooleanValue::builder().value(want["dns_hostnames"].as_bool().unwrap_or(true)).build();
                call!(what, ec2.modify_vpc_attribute().vpc_id(id).enable_dns_hostnames(v).send());
            }
            match (want["ipv6"].as_bool().unwrap_or(false), have["ipv6"].as_bool().unwrap_or(false)) {
                (true, false) => {
                    call!(what, ec2.associate_vpc_cidr_block().vpc_id(id).amazon_provided_ipv6_cidr_block(true).send());
                }
                (false, true) => {
                    if let Some(a) = outputs.get("ipv6_association").and_then(Value::as_str) {
                        retry_dependency(scope, progress, &res.id, &what, || {
                            ec2.disassociate_vpc_cidr_block().association_id(a).send()
                        })
                        .await?;
                    }
                }
                _ => {}
            }
        }
        Kind::InternetGateway => {
            if want["vpc"] != have["vpc"] {
                if let Some(old) = have["vpc"].as_str() {
                    retry_dependency(scope, progress, &res.id, &what, || {
                        ec2.detach_internet_gateway().internet_gateway_id(id).vpc_id(old).send()
                    })
                    .await?;
                }
                call!(what, ec2.attach_internet_gateway().internet_gateway_id(id).vpc_id(s(want, "vpc")).send());
            }
        }
        Kind::RouteTable => {
            let have_routes: Vec<&Value> = have["routes"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
            let want_routes: Vec<&Value> = want["routes"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
            for r in have_routes.iter().filter(|r| !want_routes.contains(r)) {
                let dest = s(r, "destination");
                if !want_routes.iter().any(|w| s(w, "destination") == dest) {
                    let req = ec2.delete_route().route_table_id(id);
                    let req = if dest.contains(':') {
                        req.destination_ipv6_cidr_block(dest)
                    } else {
                        req.destination_cidr_block(dest)
                    };
                    call!(what, req.send());
                }
            }
            for r in want_routes.iter().filter(|r| !have_routes.contains(r)) {
                let dest = s(r, "destination");
                // The two requests have the same fields but different builder types.
                macro_rules! route {
                    ($req:expr) => {{
                        let req = $req.route_table_id(id);
                        let req = if dest.contains(':') {
                            req.destination_ipv6_cidr_block(dest)
                        } else {
                            req.destination_cidr_block(dest)
                        };
                        let req = match r["gateway"].as_str() {
                            Some(g) => req.gateway_id(g),
                            None => req.nat_gateway_id(s(r, "nat_gateway")),
                        };
                        call!(what, req.send());
                    }};
                }
                if have_routes.iter().any(|h| s(h, "destination") == dest) {
                    route!(ec2.replace_route());
                } else {
                    route!(ec2.create_route());
                }
            }
            let (want_sn, have_sn) = (strs(want, "subnets"), strs(have, "subnets"));
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
        }
        Kind::SecurityGroup => {
            let have_rules: Vec<Value> = have["ingress"].as_array().cloned().unwrap_or_default();
            let want_rules: Vec<Value> = want["ingress"].as_array().cloned().unwrap_or_default();
            let gone: Vec<IpPermission> =
                have_rules.iter().filter(|r| !want_rules.contains(r)).map(permission).collect();
            let new: Vec<IpPermission> =
                want_rules.iter().filter(|r| !have_rules.contains(r)).map(permission).collect();
            if !gone.is_empty() {
                call!(what, ec2.revoke_security_group_ingress().group_id(id).set_ip_permissions(Some(gone)).send());
            }
            if !new.is_empty() {
                match ec2.authorize_security_group_ingress().group_id(id).set_ip_permissions(Some(new)).send().await {
                    Ok(_) => {}
                    // A rule added by a run that was killed before it could see the answer.
                    Err(e) if code(&e) == Some("InvalidPermission.Duplicate") => {}
                    Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
                }
            }
        }
        Kind::VpcEndpoint => {
            let diff = |key: &str| {
                let (w, h) = (strs(want, key), strs(have, key));
                let add: Vec<String> = w.iter().filter(|x| !h.contains(x)).cloned().collect();
                let remove: Vec<String> = h.iter().filter(|x| !w.contains(x)).cloned().collect();
                (add, remove)
            };
            let (add_sn, rm_sn) = diff("subnets");
            let (add_sg, rm_sg) = diff("security_groups");
            let (add_rt, rm_rt) = diff("route_tables");
            let dns_changed = want.get("private_dns").is_some() && want["private_dns"] != have["private_dns"];
            let nothing = [&add_sn, &rm_sn, &add_sg, &rm_sg, &add_rt, &rm_rt].iter().all(|v| v.is_empty());
            if !nothing || dns_changed {
                let nonempty = |v: Vec<String>| (!v.is_empty()).then_some(v);
                let mut req = ec2
                    .modify_vpc_endpoint()
                    .vpc_endpoint_id(id)
                    .set_add_subnet_ids(nonempty(add_sn))
                    .set_remove_subnet_ids(nonempty(rm_sn))
                    .set_add_security_group_ids(nonempty(add_sg))
                    .set_remove_security_group_ids(nonempty(rm_sg))
                    .set_add_route_table_ids(nonempty(add_rt))
                    .set_remove_route_table_ids(nonempty(rm_rt));
                if dns_changed {
                    req = req.private_dns_enabled(want["private_dns"].as_bool().unwrap_or(true));
                }
                call!(what, req.send());
            }
        }
        // Everything else of these kinds forces a replacement, planned as such.
        Kind::Subnet => {
            if want["ipv6_index"] != have["ipv6_index"] {
                if let Some(a) = outputs.remove("ipv6_association").as_ref().and_then(Value::as_str) {
                    call!(what, ec2.disassociate_subnet_cidr_block().association_id(a).send());
                }
                if let Some(i) = want["ipv6_index"].as_u64() {
                    let block = subnet_ipv6(ec2, s(want, "vpc"), i, &what).await?;
                    let out =
                        call!(what, ec2.associate_subnet_cidr_block().subnet_id(id).ipv6_cidr_block(block).send());
                    let a = out.ipv6_cidr_block_association().and_then(|a| a.association_id());
                    outputs.insert("ipv6_association".into(), json!(a));
                }
            }
        }
        Kind::ElasticIp | Kind::NatGateway => {}
        _ => unreachable!("not an EC2 kind"),
    }
    let mut o = observed(res.id.clone(), res.kind, id, want.clone());
    o.outputs = outputs;
    Ok(o)
}

fn permission(rule: &Value) -> IpPermission {
    let mut p = IpPermission::builder()
        .ip_protocol(s(rule, "protocol"))
        .from_port(rule["from"].as_i64().unwrap_or(0) as i32)
        .to_port(rule["to"].as_i64().unwrap_or(0) as i32);
    match rule["cidr"].as_str() {
        Some(cidr) if cidr.contains(':') => p = p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(cidr).build()),
        Some(cidr) => p = p.ip_ranges(IpRange::builder().cidr_ip(cidr).build()),
        None => {}
    }
    if let Some(group) = rule["source"].as_str() {
        p = p.user_id_group_pairs(UserIdGroupPair::builder().group_id(group).build());
    }
    p.build()
}

/// The `index`-th /64 of the VPC's IPv6 block: a subnet's IPv6 range.
async fn subnet_ipv6(ec2: &Client, vpc: &str, index: u64, what: &str) -> Result<String> {
    let out = call!(what, ec2.describe_vpcs().vpc_ids(vpc).send());
    let block = out
        .vpcs()
        .first()
        .into_iter()
        .flat_map(|v| v.ipv6_cidr_block_association_set())
        .filter(|a| a.ipv6_cidr_block_state().and_then(|s| s.state()).is_some_and(|s| s.as_str() == "associated"))
        .find_map(|a| a.ipv6_cidr_block()?.parse::<ipnet::Ipv6Net>().ok())
        .ok_or_else(|| ProviderError::new(format!("{what}: VPC {vpc} has no IPv6 block yet")))?;
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

/// Associates a subnet, taking it over from another route table (a replaced one) if need be.
async fn associate(ec2: &Client, table: &str, subnet: &str, what: &str) -> Result<String> {
    match ec2.associate_route_table().route_table_id(table).subnet_id(subnet).send().await {
        Ok(out) => Ok(out.association_id().unwrap_or_default().to_string()),
        Err(e) if code(&e) == Some("Resource.AlreadyAssociated") => {
            let filter = Filter::builder().name("association.subnet-id").values(subnet).build();
            let out = call!(what, ec2.describe_route_tables().filters(filter).send());
            let existing = out
                .route_tables()
                .iter()
                .flat_map(|t| t.associations())
                .find(|a| a.subnet_id() == Some(subnet))
                .and_then(|a| a.route_table_association_id())
                .map(String::from);
            match existing {
                Some(a) => {
                    let out = call!(
                        what,
                        ec2.replace_route_table_association().association_id(a).route_table_id(table).send()
                    );
                    Ok(out.new_association_id().unwrap_or_default().to_string())
                }
                None => Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
            }
        }
        Err(e) => Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    }
}

// ---- delete --------------------------------------------------------------------------------

pub async fn delete(ec2: &Client, scope: &Scope, current: &Observed, progress: &dyn Progress) -> Result<()> {
    let id = current.physical_id.as_str();
    let what = format!("delete {} `{}` ({id})", current.kind, current.id);
    let rid = &current.id;
    match current.kind {
        Kind::Vpc => {
            retry_dependency(scope, progress, rid, &what, || ec2.delete_vpc().vpc_id(id).send()).await.map(drop)
        }
        Kind::Subnet => {
            retry_dependency(scope, progress, rid, &what, || ec2.delete_subnet().subnet_id(id).send()).await.map(drop)
        }
        Kind::InternetGateway => {
            if let Some(vpc) = current.props["vpc"].as_str() {
                retry_dependency(scope, progress, rid, &what, || {
                    ec2.detach_internet_gateway().internet_gateway_id(id).vpc_id(vpc).send()
                })
                .await?;
            }
            retry_dependency(scope, progress, rid, &what, || {
                ec2.delete_internet_gateway().internet_gateway_id(id).send()
            })
            .await
            .map(drop)
        }
        Kind::ElasticIp => {
            retry_dependency(scope, progress, rid, &what, || ec2.release_address().allocation_id(id).send())
                .await
                .map(drop)
        }
        Kind::NatGateway => {
            match ec2.delete_nat_gateway().nat_gateway_id(id).send().await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
            }
            wait_nat(ec2, scope, rid, id, progress, true).await
        }
        Kind::RouteTable => {
            if let Some(assoc) = current.outputs.get("associations").and_then(Value::as_object) {
                for a in assoc.values().filter_map(Value::as_str) {
                    match ec2.disassociate_route_table().association_id(a).send().await {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
                    }
                }
            }
            retry_dependency(scope, progress, rid, &what, || ec2.delete_route_table().route_table_id(id).send())
                .await
                .map(drop)
        }
        Kind::SecurityGroup => {
            retry_dependency(scope, progress, rid, &what, || ec2.delete_security_group().group_id(id).send())
                .await
                .map(drop)
        }
        Kind::VpcEndpoint => {
            match ec2.delete_vpc_endpoints().vpc_endpoint_ids(id).send().await {
                Ok(out) => {
                    if let Some(u) = out.unsuccessful().first() {
                        let err = u.error().and_then(|e| e.message()).unwrap_or("unknown error");
                        if !u.error().and_then(|e| e.code()).is_some_and(|c| c.contains("NotFound")) {
                            return Err(ProviderError::new(format!("{what}: {err}")));
                        }
                    }
                }
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
            }
            wait_endpoint(ec2, scope, rid, id, progress, true).await
        }
        _ => unreachable!("not an EC2 kind"),
    }
}

/// Runs `op` until it stops failing with `DependencyViolation` (network interfaces that AWS
/// removes asynchronously, a NAT gateway still deleting), saying what it waits for. A resource
/// already gone is success.
async fn retry_dependency<F, Fut, T, E>(
    scope: &Scope,
    progress: &dyn Progress,
    id: &LogicalId,
    what: &str,
    op: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
        Output = std::result::Result<T, aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>,
    >,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let waits_for = "what is still in use to let go (AWS releases network interfaces asynchronously)";
    crate::sdk::retry_busy(
        scope,
        progress,
        id,
        what,
        &["DependencyViolation"],
        waits_for,
        |c| c.ends_with("NotFound"),
        op,
    )
    .await
}

/// The endpoint state in lower case: AWS answers `available` where its model says `Available`.
fn endpoint_state(state: Option<&State>) -> String {
    state.map(|s| s.as_str().to_ascii_lowercase()).unwrap_or_default()
}

async fn wait_endpoint(
    ec2: &Client,
    scope: &Scope,
    id: &LogicalId,
    endpoint: &str,
    progress: &dyn Progress,
    gone: bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let state = match ec2.describe_vpc_endpoints().vpc_endpoint_ids(endpoint).send().await {
            Ok(out) => endpoint_state(out.vpc_endpoints().first().and_then(|e| e.state())),
            Err(e) if is_not_found(&e) => String::new(),
            Err(e) => {
                return Err(ProviderError::new(format!(
                    "read VPC endpoint `{id}` ({endpoint}): {}",
                    crate::sdk::describe(&e)
                )))
            }
        };
        match (state.as_str(), gone) {
            ("" | "deleted", true) | ("available", false) => return Ok(()),
            ("failed" | "rejected" | "expired", false) => {
                return Err(ProviderError::new(format!("VPC endpoint `{id}` ({endpoint}) is {state}")))
            }
            _ => {}
        }
        if start.elapsed() > scope.wait {
            return Err(ProviderError::new(format!(
                "VPC endpoint `{id}` ({endpoint}) still {state} after {}s",
                scope.wait.as_secs()
            )));
        }
        let target = if gone { "deleted" } else { "available" };
        progress.waiting(
            id,
            &format!(
                "endpoint {endpoint} is {state}, waiting until {target} ({}s; typically under 2 minutes)",
                start.elapsed().as_secs()
            ),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn wait_nat(
    ec2: &Client,
    scope: &Scope,
    id: &LogicalId,
    nat: &str,
    progress: &dyn Progress,
    gone: bool,
) -> Result<()> {
    use aws_sdk_ec2::types::NatGatewayState as S;
    let start = Instant::now();
    loop {
        let gw = match ec2.describe_nat_gateways().nat_gateway_ids(nat).send().await {
            Ok(out) => out.nat_gateways().first().cloned(),
            Err(e) if is_not_found(&e) => None,
            Err(e) => {
                return Err(ProviderError::new(format!(
                    "read NAT gateway `{id}` ({nat}): {}",
                    crate::sdk::describe(&e)
                )))
            }
        };
        let state = gw.as_ref().and_then(|g| g.state().cloned());
        match (&state, gone) {
            (None | Some(S::Deleted), true) | (Some(S::Available), false) => return Ok(()),
            (Some(S::Failed), false) => {
                let why = gw.as_ref().and_then(|g| g.failure_message()).unwrap_or("no reason given");
                return Err(ProviderError::new(format!("NAT gateway `{id}` ({nat}) failed: {why}")));
            }
            _ => {}
        }
        if start.elapsed() > scope.wait {
            return Err(ProviderError::new(format!(
                "NAT gateway `{id}` ({nat}) still {state:?} after {}s",
                scope.wait.as_secs()
            )));
        }
        let target = if gone { "deleted" } else { "available" };
        progress.waiting(
            id,
            &format!(
                "NAT gateway {nat} is {state:?}, waiting until {target} ({}s; typically 1-3 minutes)",
                start.elapsed().as_secs()
            ),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// Available zones of the region, in name order.
pub async fn zones(ec2: &Client) -> Result<Vec<String>> {
    let out = call!("describe availability zones", ec2.describe_availability_zones().send());
    let mut zones: Vec<String> = out
        .availability_zones()
        .iter()
        .filter(|z| z.state().is_none_or(|s| s.as_str() == "available"))
        .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
        .filter_map(|z| z.zone_name().map(String::from))
        .collect();
    zones.sort();
    Ok(zones)
}

/// Checks that an existing VPC and its subnets exist; the route tables of the private subnets
/// (explicitly associated, else the VPC's main table).
pub async fn existing(ec2: &Client, vpc: &aira_engine::stack::model::ExistingVpc) -> Result<Vec<String>> {
    match ec2.describe_vpcs().vpc_ids(&vpc.vpc_id).send().await {
        Ok(out) if !out.vpcs().is_empty() => {}
        Ok(_) => {
            return Err(ProviderError::user(format!(
                "network.existing.vpc_id: VPC {} does not exist in this account and region",
                vpc.vpc_id
            )))
        }
        Err(e) if is_not_found(&e) => {
            return Err(ProviderError::user(format!(
                "network.existing.vpc_id: VPC {} does not exist in this account and region",
                vpc.vpc_id
            )))
        }
        Err(e) => return Err(ProviderError::new(format!("read VPC {}: {}", vpc.vpc_id, crate::sdk::describe(&e)))),
    }
    let all: Vec<String> = vpc.public_subnets.iter().chain(&vpc.private_subnets).cloned().collect();
    let found = match ec2.describe_subnets().set_subnet_ids(Some(all.clone())).send().await {
        Ok(out) => out
            .subnets()
            .iter()
            .filter(|s| s.vpc_id() == Some(&vpc.vpc_id))
            .filter_map(|s| s.subnet_id().map(String::from))
            .collect::<Vec<_>>(),
        Err(e) if is_not_found(&e) => Vec::new(),
        Err(e) => {
            return Err(ProviderError::new(format!("read subnets of VPC {}: {}", vpc.vpc_id, crate::sdk::describe(&e))))
        }
    };
    let missing: Vec<&String> = all.iter().filter(|s| !found.contains(s)).collect();
    if !missing.is_empty() {
        return Err(ProviderError::user(format!(
            "network.existing: subnet(s) {} do not exist in VPC {}",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            vpc.vpc_id
        )));
    }
    let vpc_filter = Filter::builder().name("vpc-id").values(&vpc.vpc_id).build();
    let out = call!(
        format!("read route tables of VPC {}", vpc.vpc_id),
        ec2.describe_route_tables().filters(vpc_filter).send()
    );
    let mut tables = BTreeSet::new();
    for sn in &vpc.private_subnets {
        let explicit = out.route_tables().iter().find(|t| t.associations().iter().any(|a| a.subnet_id() == Some(sn)));
        let main = out.route_tables().iter().find(|t| t.associations().iter().any(|a| a.main() == Some(true)));
        if let Some(id) = explicit.or(main).and_then(|t| t.route_table_id()) {
            tables.insert(id.to_string());
        }
    }
    Ok(tables.into_iter().collect())
}

/// Quotas that would obviously stop the stack half-way, checked before any change: Elastic IPs
/// for the NAT gateways (an error naming the fix) and the VPCs of the region (a note: the
/// default quota is 5, but many accounts have more, which only Service Quotas can tell).
pub async fn quotas(ec2: &Client, scope_stack: &str, net: &aira_engine::stack::model::Network) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if net.existing.is_some() {
        return Ok(notes);
    }
    let tagged = |tags: &[aws_sdk_ec2::types::Tag]| {
        tags.iter().any(|t| t.key() == Some(TAG_STACK) && t.value() == Some(scope_stack))
    };
    let vpcs = call!("count the region's VPCs", ec2.describe_vpcs().send());
    let ours = vpcs.vpcs().iter().any(|v| tagged(v.tags()));
    let count = vpcs.vpcs().len();
    if !ours && count >= 5 {
        notes.push(format!(
            "the region already has {count} VPCs; the default quota is 5 per region: if `up` fails creating the VPC, \
             raise \"VPCs per Region\" in Service Quotas or use network.existing"
        ));
    }
    if net.nat {
        let attrs = call!(
            "read the Elastic IP quota",
            ec2.describe_account_attributes()
                .attribute_names(aws_sdk_ec2::types::AccountAttributeName::from("vpc-max-elastic-ips"))
                .send()
        );
        let max: Option<usize> = attrs
            .account_attributes()
            .iter()
            .flat_map(|a| a.attribute_values())
            .find_map(|v| v.attribute_value()?.parse().ok());
        let addresses = call!("count the Elastic IPs", ec2.describe_addresses().send());
        let used = addresses.addresses().len();
        let have = addresses.addresses().iter().filter(|a| tagged(a.tags())).count();
        let need = (net.zones as usize).saturating_sub(have);
        if let Some(max) = max {
            if used + need > max {
                return Err(ProviderError::user(format!(
                    "network.nat: the NAT gateways need {need} more Elastic IP(s), but {used} of this region's {max} are in use; \
                     release unused ones (`aws ec2 describe-addresses`), raise \"EC2-VPC Elastic IPs\" in Service Quotas, \
                     or drop `nat: true` (the VPC endpoints make it unnecessary)"
                )));
            }
        }
    }
    Ok(notes)
}
