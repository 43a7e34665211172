//! The kinds of ec2.

use serde::{Deserialize, Serialize};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*, Val};

const IN_VPC: &str = "it cannot move to another VPC";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vpc {
    /// The primary IPv4 block.
    pub cidr: String,
    pub dns_support: bool,
    pub dns_hostnames: bool,
    /// An Amazon-provided IPv6 block (a /56).
    pub ipv6: bool,
}

impl Props for Vpc {
    const KIND: Kind = Kind::Vpc;
    const SPEC: KindSpec = KindSpec {
        name: "ec2.vpc",
        replace_on: &[(field!(cidr), "a VPC's primary CIDR block cannot change")],
        replace_order: CreateBeforeDelete,
        sets: &[],
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    pub vpc: Val<String>,
    pub cidr: String,
    /// The availability zone's name.
    pub zone: String,
    /// Which /64 of the VPC's IPv6 block is the subnet's; absent without IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_index: Option<u64>,
}

impl Props for Subnet {
    const KIND: Kind = Kind::Subnet;
    // Its CIDR block cannot be held twice in one VPC.
    const SPEC: KindSpec = KindSpec {
        name: "ec2.subnet",
        replace_on: &[
            (field!(vpc), IN_VPC),
            (field!(cidr), "a subnet's CIDR block cannot change"),
            (field!(zone), "a subnet cannot move to another availability zone"),
        ],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}

/// Attached to its VPC by an update (it is created detached).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternetGateway {
    /// `null` while detached.
    pub vpc: Option<Val<String>>,
}

impl Props for InternetGateway {
    const KIND: Kind = Kind::InternetGateway;
    const SPEC: KindSpec =
        KindSpec { name: "ec2.internet-gateway", replace_on: &[], replace_order: CreateBeforeDelete, sets: &[] };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticIp {}

impl Props for ElasticIp {
    const KIND: Kind = Kind::ElasticIp;
    const SPEC: KindSpec =
        KindSpec { name: "ec2.elastic-ip", replace_on: &[], replace_order: CreateBeforeDelete, sets: &[] };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatGateway {
    /// The public subnet it sits in.
    pub subnet: Val<String>,
    /// The Elastic IP's allocation id (`null` when AWS reports none).
    pub allocation: Option<Val<String>>,
}

impl Props for NatGateway {
    const KIND: Kind = Kind::NatGateway;
    // Its Elastic IP can be held by one NAT gateway at a time.
    const SPEC: KindSpec = KindSpec {
        name: "ec2.nat-gateway",
        replace_on: &[
            (field!(subnet), "a NAT gateway cannot move to another subnet"),
            (field!(allocation), "a NAT gateway's public address cannot change"),
        ],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    pub vpc: Val<String>,
    /// Aira's routes only: the `local` route and the gateway endpoints' routes are AWS's.
    pub routes: Vec<VpcRoute>,
    /// The subnets associated with it.
    pub subnets: Vec<Val<String>>,
}

/// A route to an internet gateway (`gateway`) or a NAT gateway (`nat_gateway`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcRoute {
    /// An IPv4 or IPv6 block.
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Val<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_gateway: Option<Val<String>>,
}

impl Props for RouteTable {
    const KIND: Kind = Kind::RouteTable;
    const SPEC: KindSpec = KindSpec {
        name: "ec2.route-table",
        replace_on: &[(field!(vpc), IN_VPC)],
        replace_order: CreateBeforeDelete,
        sets: &[field!(routes), field!(subnets)],
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    pub vpc: Val<String>,
    pub name: String,
    pub description: String,
    pub ingress: Vec<IngressRule>,
}

/// Traffic let in from a CIDR block (`cidr`) or from another group (`source`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    /// `tcp`, or `-1` for every protocol.
    pub protocol: String,
    /// The port range; `null` when AWS reports none (every protocol).
    pub from: Option<i32>,
    pub to: Option<i32>,
    /// An IPv4 or IPv6 block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// A security group's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Val<String>>,
}

impl Props for SecurityGroup {
    const KIND: Kind = Kind::SecurityGroup;
    const SPEC: KindSpec = KindSpec {
        name: "ec2.security-group",
        replace_on: &[
            (field!(vpc), IN_VPC),
            (field!(name), "a security group's name cannot change"),
            (field!(description), "a security group's description cannot change"),
        ],
        replace_order: DeleteBeforeCreate,
        sets: &[field!(ingress)],
    };
}

/// A gateway endpoint (S3, DynamoDB: `route_tables`) or an interface endpoint (`subnets`,
/// `security_groups`, `private_dns`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcEndpoint {
    pub vpc: Val<String>,
    /// `com.amazonaws.<region>.<service>`.
    pub service: String,
    pub r#type: VpcEndpointType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_tables: Option<Vec<Val<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<Val<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<Val<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_dns: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VpcEndpointType {
    Gateway,
    Interface,
}

impl Props for VpcEndpoint {
    const KIND: Kind = Kind::VpcEndpoint;
    // One private DNS name per service and VPC.
    const SPEC: KindSpec = KindSpec {
        name: "ec2.vpc-endpoint",
        replace_on: &[
            (field!(vpc), IN_VPC),
            (field!(service), "an endpoint's service cannot change"),
            (field!(r#type => "type"), "an endpoint's type cannot change"),
        ],
        replace_order: DeleteBeforeCreate,
        sets: &[field!(subnets), field!(security_groups), field!(route_tables)],
    };
}
