//! The network's part of the pre-flight: the region's zones, an existing VPC's subnets and
//! route tables, and the quotas that would stop a stack half-way.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{AccountAttributeName, Filter, LocationType, Subnet, Tag, VpcAttributeName, VpcEndpoint};
use aws_sdk_ec2::Client;

use super::{egress, Result, GONE};
use crate::sdk;
use aira_engine::provider::{ProviderError, TAG_ID, TAG_STACK};
use aira_engine::stack::model::{Endpoint, ExistingVpc, Network, NAT_INSTANCE_TYPE};
use aira_engine::stack::reach::Egress;
use aira_engine::stack::Stack;

/// The region's zones where a stack can run, each with its zone ID: available (not impaired or
/// constrained), real availability zones (not Local or Wavelength Zones, whose services differ)
/// and not awaiting an opt-in; in name order.
async fn region_zones(ec2: &Client) -> Result<Vec<(String, String)>> {
    let out = call!("describe availability zones", ec2.describe_availability_zones().send());
    let mut zones: Vec<(String, String)> = out
        .availability_zones()
        .iter()
        .filter(|z| z.state().is_none_or(|s| s.as_str() == "available"))
        .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
        .filter(|z| z.opt_in_status().is_none_or(|o| o.as_str() != "not-opted-in"))
        .filter_map(|z| Some((z.zone_name()?.to_string(), z.zone_id().unwrap_or_default().to_string())))
        .collect();
    zones.sort();
    Ok(zones)
}

/// Regions where Fargate runs Linux tasks in some zones only, by zone ID (the same physical zone
/// in every account): the ECS developer guide, "Supported Regions for Amazon ECS on AWS Fargate",
/// in the commercial, China (docs.amazonaws.cn) and GovCloud partitions; GovCloud and Ningxia
/// have no such limit.
const FARGATE_ZONE_IDS: &[(&str, &[&str])] = &[
    ("us-west-1", &["usw1-az1", "usw1-az3"]),
    ("ap-northeast-1", &["apne1-az1", "apne1-az2", "apne1-az4"]),
    ("cn-north-1", &["cnn1-az1", "cnn1-az2"]),
];

/// The zones of the stack's new network, in the order its subnets take them: a zone that already
/// holds the stack's subnets keeps them (a rerun never moves a subnet), the others are the first,
/// in name order, that offer Fargate (when the stack has services) and every interface endpoint
/// the stack uses (`DescribeVpcEndpointServices`); then the other such zones. Fewer than
/// `network.zones` such zones is a user error naming each zone left out and what it lacks.
pub async fn zones(ec2: &Client, region: &str, stack: &Stack) -> Result<Vec<String>> {
    let all = region_zones(ec2).await?;
    let net = &stack.network;
    if net.existing.is_some() {
        return Ok(all.into_iter().map(|(name, _)| name).collect());
    }
    let mut lacks: BTreeMap<&str, Vec<String>> = all.iter().map(|(name, _)| (name.as_str(), Vec::new())).collect();
    if let (false, Some((_, ids))) = (stack.services.is_empty(), FARGATE_ZONE_IDS.iter().find(|(r, _)| *r == region)) {
        for (name, id) in &all {
            if !ids.contains(&id.as_str()) {
                lacks.get_mut(name.as_str()).expect("listed").push(format!("Fargate (zone ID {id})"));
            }
        }
    }
    // Every interface endpoint the network gets, those the stack implies included (the
    // worker's `bedrock-runtime`, the metrics' `aps-workspaces`).
    let endpoints = stack.endpoints();
    let interface: Vec<String> =
        endpoints.iter().filter(|e| !e.is_gateway()).map(|e| format!("com.amazonaws.{region}.{}", e.name())).collect();
    if !interface.is_empty() {
        let offered = endpoint_service_zones(ec2, region, &interface).await?;
        let missing: Vec<String> = endpoints
            .iter()
            .filter(|e| !e.is_gateway() && !offered.contains_key(&format!("com.amazonaws.{region}.{}", e.name())))
            .map(|e| not_offered(stack, region, *e))
            .collect();
        if !missing.is_empty() {
            return Err(ProviderError::user(missing.join("\n")));
        }
        for service in &interface {
            let zones = offered.get(service).cloned().unwrap_or_default();
            for (zone, lacking) in lacks.iter_mut() {
                if !zones.contains(*zone) {
                    let short = service.strip_prefix(&format!("com.amazonaws.{region}.")).unwrap_or(service);
                    lacking.push(format!("the {short} endpoint"));
                }
            }
        }
    }
    // `nat: instance`: its type, in the zones it may sit in (not every zone offers every type).
    if net.nat.instance() {
        let offered = instance_type_zones(ec2, NAT_INSTANCE_TYPE).await?;
        for (zone, lacking) in lacks.iter_mut() {
            if !offered.contains(*zone) {
                lacking.push(format!("the NAT instance's {NAT_INSTANCE_TYPE}"));
            }
        }
    }
    let kept = subnet_zones(ec2, &stack.stack.0).await?;
    let mut chosen: Vec<String> = Vec::new();
    let mut fit =
        all.iter().map(|(name, _)| name).filter(|z| lacks[z.as_str()].is_empty() && !kept.values().any(|k| k == *z));
    for i in 0..net.zones as usize {
        match kept.get(&i).or_else(|| fit.next()) {
            Some(zone) => chosen.push(zone.clone()),
            None => {
                let left_out: Vec<String> = lacks
                    .iter()
                    .filter(|(_, l)| !l.is_empty())
                    .map(|(z, l)| format!("{z} lacks {}", l.join(" and ")))
                    .collect();
                let mut why = format!(
                    "network.zones: the stack asks for {} availability zones, but {region} has {} that offer Fargate and \
                     every interface endpoint it uses ({})",
                    net.zones,
                    chosen.len(),
                    chosen.join(", ")
                );
                if !left_out.is_empty() {
                    why.push_str(&format!(": {}; lower network.zones or drop those endpoints", left_out.join("; ")));
                }
                return Err(ProviderError::user(why));
            }
        }
    }
    chosen.extend(fit.cloned());
    Ok(chosen)
}

/// The zones of the region that offer `instance_type` (DescribeInstanceTypeOfferings).
async fn instance_type_zones(ec2: &Client, instance_type: &str) -> Result<BTreeSet<String>> {
    let filter = Filter::builder().name("instance-type").values(instance_type).build();
    let req = ec2.describe_instance_type_offerings().location_type(LocationType::AvailabilityZone).filters(filter);
    let out = call!(format!("read the zones that offer {instance_type}"), req.send());
    Ok(out.instance_type_offerings().iter().filter_map(|o| o.location().map(String::from)).collect())
}

/// The zones each of `services` (endpoint service names) is offered in. A service the region
/// does not have at all is absent: EC2 refuses a request naming one (`InvalidServiceName`), so
/// then each is asked alone.
async fn endpoint_service_zones(
    ec2: &Client,
    region: &str,
    services: &[String],
) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut offered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let groups: Vec<Vec<String>> = match describe_endpoint_services(ec2, region, services.to_vec()).await? {
        Some(found) => {
            offered.extend(found);
            Vec::new()
        }
        None => services.iter().map(|s| vec![s.clone()]).collect(),
    };
    for one in groups {
        offered.extend(describe_endpoint_services(ec2, region, one).await?.unwrap_or_default());
    }
    Ok(offered)
}

/// `DescribeVpcEndpointServices` of `names`, every page; `None` when one of them does not exist.
async fn describe_endpoint_services(
    ec2: &Client,
    region: &str,
    names: Vec<String>,
) -> Result<Option<BTreeMap<String, BTreeSet<String>>>> {
    let mut offered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut token = None;
    loop {
        let req = ec2.describe_vpc_endpoint_services().set_service_names(Some(names.clone())).set_next_token(token);
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if sdk::code(&e) == Some("InvalidServiceName") => return Ok(None),
            Err(e) => return Err(sdk::error(format!("describe the VPC endpoint services of {region}"), e)),
        };
        for d in out.service_details() {
            let zones = d.availability_zones().iter().cloned();
            offered.entry(d.service_name().unwrap_or_default().to_string()).or_default().extend(zones);
        }
        token = out.next_token().map(String::from);
        if token.is_none() {
            return Ok(Some(offered));
        }
    }
}

/// The finding for an endpoint service the region does not have: what in the stack asks for it.
fn not_offered(stack: &Stack, region: &str, e: Endpoint) -> String {
    let name = e.name();
    match e {
        Endpoint::BedrockRuntime if stack.bedrock().is_some() => {
            format!("llm.provider: bedrock: {region} has no `{name}` endpoint service (Amazon Bedrock is not offered there); deploy the stack to a region that offers Bedrock, or use another model")
        }
        Endpoint::ApsWorkspaces if stack.prometheus() && !stack.network.endpoints.contains(&e) => {
            format!("monitoring: {region} has no `{name}` endpoint service (Amazon Managed Service for Prometheus is not offered there); set `monitoring: false`, or deploy to a region that offers it")
        }
        _ => format!("network.endpoints: {region} has no `{name}` endpoint service; drop `{name}` from the list"),
    }
}

/// The zones of the stack's subnets that exist, by their index (`public-b` → 1).
async fn subnet_zones(ec2: &Client, stack: &str) -> Result<BTreeMap<usize, String>> {
    let filter = Filter::builder().name(format!("tag:{TAG_STACK}")).values(stack).build();
    let out = call!("read the stack's subnets", ec2.describe_subnets().filters(filter).send());
    let mut kept = BTreeMap::new();
    for s in out.subnets() {
        let id = s.tags().iter().find(|t| t.key() == Some(TAG_ID)).and_then(|t| t.value()).unwrap_or_default();
        let letter = id.rsplit('-').next().and_then(|l| l.chars().next()).filter(|c| c.is_ascii_lowercase());
        if let (Some(l), Some(zone)) = (letter, s.availability_zone()) {
            kept.insert((l as u8 - b'a') as usize, zone.to_string());
        }
    }
    Ok(kept)
}

/// Checks that an existing VPC and its subnets exist, its DNS attributes, endpoints that would
/// refuse the stack's own; returns the route tables of the private subnets (explicitly
/// associated, else the VPC's main table) and what carries traffic out of them.
pub async fn existing(ec2: &Client, stack: &Stack, vpc: &ExistingVpc) -> Result<(Vec<String>, Egress)> {
    let out = ec2.describe_vpcs().vpc_ids(&vpc.vpc_id).send().await;
    if sdk::found(format!("read VPC {}", vpc.vpc_id), GONE, out)?.is_none_or(|out| out.vpcs().is_empty()) {
        return Err(ProviderError::user(format!(
            "network.existing.vpc_id: VPC {} does not exist in this account and region",
            vpc.vpc_id
        )));
    }
    let all: Vec<String> = vpc.public_subnets.iter().chain(&vpc.private_subnets).cloned().collect();
    let out = ec2.describe_subnets().set_subnet_ids(Some(all.clone())).send().await;
    let found: Vec<Subnet> = sdk::found(format!("read subnets of VPC {}", vpc.vpc_id), GONE, out)?
        .map(|out| out.subnets().iter().filter(|s| s.vpc_id() == Some(&vpc.vpc_id)).cloned().collect())
        .unwrap_or_default();
    let missing: Vec<&str> =
        all.iter().filter(|id| !found.iter().any(|s| s.subnet_id() == Some(id))).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(ProviderError::user(format!(
            "network.existing: subnet(s) {} do not exist in VPC {}",
            missing.join(", "),
            vpc.vpc_id
        )));
    }
    let private: Vec<egress::Private> = vpc
        .private_subnets
        .iter()
        .map(|id| {
            let subnet = found.iter().find(|s| s.subnet_id() == Some(id));
            egress::Private { id: id.clone(), cidr: subnet.and_then(|s| s.cidr_block()?.parse().ok()) }
        })
        .collect();
    // Every page of each read: a VPC of another team can hold many tables, endpoints, groups.
    let vpc_filter = || Filter::builder().name("vpc-id").values(&vpc.vpc_id).build();
    let what = format!("read route tables of VPC {}", vpc.vpc_id);
    let pages = sdk::pages(what, ec2.describe_route_tables().filters(vpc_filter()).into_paginator().send()).await?;
    let route_tables: Vec<_> = pages.iter().flat_map(|p| p.route_tables()).cloned().collect();
    let tables: BTreeSet<String> = private
        .iter()
        .filter_map(|s| egress::table_of(&route_tables, &s.id)?.route_table_id().map(String::from))
        .collect();
    let what = format!("read the endpoints of VPC {}", vpc.vpc_id);
    let pages = sdk::pages(what, ec2.describe_vpc_endpoints().filters(vpc_filter()).into_paginator().send()).await?;
    let endpoints: Vec<VpcEndpoint> = pages.iter().flat_map(|p| p.vpc_endpoints()).cloned().collect();
    let ids: BTreeSet<String> =
        endpoints.iter().flat_map(|e| e.groups()).filter_map(|g| g.group_id().map(String::from)).collect();
    let mut groups = Vec::new();
    if !ids.is_empty() {
        let what = format!("read the security groups of VPC {}'s endpoints", vpc.vpc_id);
        let req = ec2.describe_security_groups().set_group_ids(Some(ids.into_iter().collect()));
        for page in sdk::pages(what, req.into_paginator().send()).await? {
            groups.extend_from_slice(page.security_groups());
        }
    }
    let region = ec2.config().region().map(|r| r.to_string()).unwrap_or_default();
    let mut findings = dns_attributes(ec2, stack, &vpc.vpc_id).await?;
    findings.extend(conflicting_endpoints(&region, stack, &vpc.vpc_id, &tables, &endpoints));
    if !findings.is_empty() {
        return Err(ProviderError::user(findings.join("\n")));
    }
    let egress = egress::egress(stack, &region, &private, &route_tables, &endpoints, &groups);
    Ok((tables.into_iter().collect(), egress))
}

/// An interface endpoint with private DNS needs the VPC's DNS support and DNS hostnames on
/// (VPC User Guide, "DNS attributes for your VPC"; AWS refuses the endpoint otherwise): each
/// that is off, with the command that turns it on.
async fn dns_attributes(ec2: &Client, stack: &Stack, vpc: &str) -> Result<Vec<String>> {
    if stack.endpoints().iter().all(|e| e.is_gateway()) {
        return Ok(Vec::new());
    }
    let mut findings = Vec::new();
    for (attribute, flag) in [
        (VpcAttributeName::EnableDnsSupport, "--enable-dns-support"),
        (VpcAttributeName::EnableDnsHostnames, "--enable-dns-hostnames"),
    ] {
        let what = format!("read the {} attribute of VPC {vpc}", attribute.as_str());
        let out = call!(what, ec2.describe_vpc_attribute().vpc_id(vpc).attribute(attribute.clone()).send());
        let on = match attribute {
            VpcAttributeName::EnableDnsSupport => out.enable_dns_support(),
            _ => out.enable_dns_hostnames(),
        };
        if !on.and_then(|v| v.value()).unwrap_or(false) {
            findings.push(format!(
                "network.existing.vpc_id: VPC {vpc} has {} off, which the stack's interface endpoints (private DNS) need: \
                 `aws ec2 modify-vpc-attribute --vpc-id {vpc} {flag}`",
                attribute.as_str()
            ));
        }
    }
    Ok(findings)
}

/// Endpoints of the VPC that are not this stack's and would refuse the stack's own: an
/// interface endpoint with private DNS for a service the stack adds (AWS allows one private
/// DNS name per service in a VPC), or a gateway endpoint for a service the stack adds in one
/// of the private subnets' route tables (a route table holds one route per prefix list). Each
/// named, with the fix.
fn conflicting_endpoints(
    region: &str,
    stack: &Stack,
    vpc: &str,
    private_tables: &BTreeSet<String>,
    endpoints: &[VpcEndpoint],
) -> Vec<String> {
    let ours: BTreeMap<String, Endpoint> =
        stack.endpoints().into_iter().map(|e| (format!("com.amazonaws.{region}.{}", e.name()), e)).collect();
    let mut findings = Vec::new();
    for e in endpoints {
        let stacks = e.tags().iter().find(|t| t.key() == Some(TAG_STACK)).and_then(|t| t.value());
        let live = !matches!(e.state().map(|s| s.as_str()), Some("deleted" | "deleting" | "failed" | "rejected"));
        let Some(endpoint) =
            e.service_name().and_then(|s| ours.get(s)).filter(|_| live && stacks != Some(&stack.stack.0))
        else {
            continue;
        };
        let id = e.vpc_endpoint_id().unwrap_or_default();
        let in_private_tables = e.route_table_ids().iter().any(|t| private_tables.contains(t));
        let conflict = match endpoint.is_gateway() {
            true if in_private_tables => {
                "a gateway endpoint for the same service in the private subnets' route tables (a table takes one route to it)"
            }
            true => continue,
            false if e.private_dns_enabled() == Some(true) => {
                "an interface endpoint for the same service with private DNS (one per service and VPC)"
            }
            false => continue,
        };
        let fix = match stack.network.endpoints.contains(endpoint) {
            true => {
                format!("drop `{}` from network.endpoints: the tasks reach the service through {id}", endpoint.name())
            }
            false => format!("delete {id} or turn its private DNS off"),
        };
        findings.push(format!("network.existing.vpc_id: VPC {vpc} already has {id}, {conflict}; {fix}"));
    }
    findings
}

/// Quotas that would obviously stop the stack half-way, checked before any change: Elastic IPs
/// for the NAT gateways (an error naming the fix) and the VPCs of the region (a note: the
/// default quota is 5, but many accounts have more, which only Service Quotas can tell).
pub async fn quotas(ec2: &Client, stack: &str, net: &Network) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if net.existing.is_some() {
        return Ok(notes);
    }
    let tagged = |tags: &[Tag]| tags.iter().any(|t| t.key() == Some(TAG_STACK) && t.value() == Some(stack));
    let vpcs = call!("count the region's VPCs", ec2.describe_vpcs().send());
    let ours = vpcs.vpcs().iter().any(|v| tagged(v.tags()));
    let count = vpcs.vpcs().len();
    if !ours && count >= 5 {
        notes.push(format!(
            "the region already has {count} VPCs; the default quota is 5 per region: if `up` fails creating the VPC, \
             raise \"VPCs per Region\" in Service Quotas or use network.existing"
        ));
    }
    if net.nat.on() {
        let attrs = call!(
            "read the Elastic IP quota",
            ec2.describe_account_attributes().attribute_names(AccountAttributeName::from("vpc-max-elastic-ips")).send()
        );
        let max: Option<usize> = attrs
            .account_attributes()
            .iter()
            .flat_map(|a| a.attribute_values())
            .find_map(|v| v.attribute_value()?.parse().ok());
        let addresses = call!("count the Elastic IPs", ec2.describe_addresses().send());
        let used = addresses.addresses().len();
        let have = addresses.addresses().iter().filter(|a| tagged(a.tags())).count();
        let need = net.nat.addresses(net.zones as usize).saturating_sub(have);
        if let Some(max) = max {
            if used + need > max {
                return Err(ProviderError::user(format!(
                    "network.nat: the NAT devices need {need} more Elastic IP(s), but {used} of this region's {max} are in use; \
                     release unused ones (`aws ec2 describe-addresses`), raise \"EC2-VPC Elastic IPs\" in Service Quotas, \
                     `nat: one` (a single NAT gateway), or drop `nat` (the VPC endpoints make it unnecessary)"
                )));
            }
        }
    }
    Ok(notes)
}
