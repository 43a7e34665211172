//! The kinds of ec2.

use serde::{Deserialize, Serialize};

use super::{kind, Val};

const IN_VPC: &str = "it cannot move to another VPC";

kind! {
    Vpc = "ec2.vpc", CreateBeforeDelete, sets [],
    replace_on [cidr: "a VPC's primary CIDR block cannot change"],
    {
        /// The primary IPv4 block.
        pub cidr: String,
        pub dns_support: bool,
        pub dns_hostnames: bool,
        /// An Amazon-provided IPv6 block (a /56).
        pub ipv6: bool,
    }
}

kind! {
    Subnet = "ec2.subnet", DeleteBeforeCreate, sets [],
    // Its CIDR block cannot be held twice in one VPC.
    replace_on [
        vpc: IN_VPC,
        cidr: "a subnet's CIDR block cannot change",
        zone: "a subnet cannot move to another availability zone",
    ],
    {
        pub vpc: Val<String>,
        pub cidr: String,
        /// The availability zone's name.
        pub zone: String,
        /// Which /64 of the VPC's IPv6 block is the subnet's; absent without IPv6.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ipv6_index: Option<u64>,
    }
}

kind! {
    /// Attached to its VPC by an update (it is created detached).
    InternetGateway = "ec2.internet-gateway", CreateBeforeDelete, sets [],
    replace_on [],
    {
        /// `null` while detached.
        pub vpc: Option<Val<String>>,
    }
}

kind! {
    ElasticIp = "ec2.elastic-ip", CreateBeforeDelete, sets [],
    replace_on [],
    {

    }
}

kind! {
    NatGateway = "ec2.nat-gateway", DeleteBeforeCreate, sets [],
    // Its Elastic IP can be held by one NAT gateway at a time.
    replace_on [
        subnet: "a NAT gateway cannot move to another subnet",
        allocation: "a NAT gateway's public address cannot change",
    ],
    {
        /// The public subnet it sits in.
        pub subnet: Val<String>,
        /// The Elastic IP's allocation id (`null` when AWS reports none).
        pub allocation: Option<Val<String>>,
    }
}

kind! {
    RouteTable = "ec2.route-table", CreateBeforeDelete, sets [routes, subnets],
    replace_on [vpc: IN_VPC],
    {
        pub vpc: Val<String>,
        /// Aira's routes only: the `local` route and the gateway endpoints' routes are AWS's.
        pub routes: Vec<VpcRoute>,
        /// The subnets associated with it.
        pub subnets: Vec<Val<String>>,
    }
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

kind! {
    SecurityGroup = "ec2.security-group", DeleteBeforeCreate, sets [ingress],
    replace_on [
        vpc: IN_VPC,
        name: "a security group's name cannot change",
        description: "a security group's description cannot change",
    ],
    {
        pub vpc: Val<String>,
        pub name: String,
        pub description: String,
        pub ingress: Vec<IngressRule>,
    }
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

kind! {
    /// A gateway endpoint (S3, DynamoDB: `route_tables`) or an interface endpoint (`subnets`,
    /// `security_groups`, `private_dns`).
    VpcEndpoint = "ec2.vpc-endpoint", DeleteBeforeCreate, sets [subnets, security_groups, route_tables],
    // One private DNS name per service and VPC.
    replace_on [
        vpc: IN_VPC,
        service: "an endpoint's service cannot change",
        r#type => "type": "an endpoint's type cannot change",
    ],
    {
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VpcEndpointType {
    Gateway,
    Interface,
}
