//! The network's part of the pre-flight: the region's zones, an existing VPC's subnets and
//! route tables, and the quotas that would stop a stack half-way.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{AccountAttributeName, Filter, Tag};
use aws_sdk_ec2::Client;

use super::{Result, GONE};
use crate::sdk;
use aira_engine::provider::{ProviderError, TAG_STACK};
use aira_engine::stack::model::{ExistingVpc, Network};

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
