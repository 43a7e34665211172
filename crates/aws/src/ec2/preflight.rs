//! The network's part of the pre-flight: the region's zones, an existing VPC's subnets and
//! route tables, and the quotas that would stop a stack half-way.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{AccountAttributeName, Filter, Tag};
use aws_sdk_ec2::Client;

use super::{Result, GONE};
use crate::sdk;
use aira_engine::provider::{ProviderError, TAG_ID, TAG_STACK};
use aira_engine::stack::model::{ExistingVpc, Network};
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
/// in every account): the ECS developer guide, "Supported Regions for Amazon ECS on AWS Fargate".
const FARGATE_ZONE_IDS: &[(&str, &[&str])] =
    &[("us-west-1", &["usw1-az1", "usw1-az3"]), ("ap-northeast-1", &["apne1-az1", "apne1-az2", "apne1-az4"])];

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
    let interface: Vec<String> = net
        .endpoints
        .iter()
        .filter(|e| !e.is_gateway())
        .map(|e| format!("com.amazonaws.{region}.{}", e.name()))
        .collect();
    if !interface.is_empty() {
        let mut offered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut token = None;
        loop {
            let req = ec2.describe_vpc_endpoint_services().set_service_names(Some(interface.clone()));
            let out = call!("describe the VPC endpoint services", req.set_next_token(token).send());
            for d in out.service_details() {
                let zones = d.availability_zones().iter().cloned();
                offered.entry(d.service_name().unwrap_or_default().to_string()).or_default().extend(zones);
            }
            token = out.next_token().map(String::from);
            if token.is_none() {
                break;
            }
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

/// Checks that an existing VPC and its subnets exist; the route tables of the private subnets
/// (explicitly associated, else the VPC's main table).
pub async fn existing(ec2: &Client, vpc: &ExistingVpc) -> Result<Vec<String>> {
    let out = ec2.describe_vpcs().vpc_ids(&vpc.vpc_id).send().await;
    if sdk::found(format!("read VPC {}", vpc.vpc_id), GONE, out)?.is_none_or(|out| out.vpcs().is_empty()) {
        return Err(ProviderError::user(format!(
            "network.existing.vpc_id: VPC {} does not exist in this account and region",
            vpc.vpc_id
        )));
    }
    let all: Vec<String> = vpc.public_subnets.iter().chain(&vpc.private_subnets).cloned().collect();
    let out = ec2.describe_subnets().set_subnet_ids(Some(all.clone())).send().await;
    let found: Vec<String> = sdk::found(format!("read subnets of VPC {}", vpc.vpc_id), GONE, out)?
        .map(|out| {
            let ours = out.subnets().iter().filter(|s| s.vpc_id() == Some(&vpc.vpc_id));
            ours.filter_map(|s| s.subnet_id().map(String::from)).collect()
        })
        .unwrap_or_default();
    let missing: Vec<&str> = all.iter().filter(|s| !found.contains(s)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(ProviderError::user(format!(
            "network.existing: subnet(s) {} do not exist in VPC {}",
            missing.join(", "),
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
    if net.nat {
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
