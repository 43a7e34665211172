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
    /// A NAT instance (`network.nat: instance`): an instance in a public subnet that forwards
    /// the private subnets' traffic to the internet under its Elastic IP. Created before the old
    /// one is deleted: the address moves to the new one, then the route.
    NatInstance = "ec2.nat-instance", CreateBeforeDelete, sets [security_groups],
    replace_on [
        subnet: "an instance cannot move to another subnet",
        instance_type: "a NAT instance is replaced rather than stopped to resize it",
        image: "an instance's image cannot change",
        setup: "the set-up runs once, at the instance's first boot",
    ],
    {
        /// The public subnet it sits in.
        pub subnet: Val<String>,
        pub instance_type: String,
        /// The image, as RunInstances takes it: `resolve:ssm:` an AWS public parameter, resolved
        /// to the newest image at launch (observed from the instance's tag `aira:image`).
        pub image: String,
        /// A digest of the set-up script its first boot runs ([`NAT_SETUP`]).
        pub setup: String,
        pub security_groups: Vec<Val<String>>,
        /// The Elastic IP associated with it (`null` while none is).
        pub allocation: Option<Val<String>>,
        /// Off: an instance drops traffic that is neither from nor to itself unless it is.
        pub source_dest_check: bool,
    }
}

/// Amazon Linux 2023 for arm64, the newest at launch (AWS's public parameter).
pub const NAT_IMAGE: &str = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64";

/// The NAT instance's first boot, as the VPC User Guide's "Create a NAT AMI" sets up Amazon
/// Linux 2023: IPv4 forwarding on, the private subnets' traffic masqueraded behind the primary
/// interface, both kept across reboots (`iptables-services`). The package comes from the Amazon
/// Linux repositories over the internet, tried again while the instance's address settles.
pub const NAT_SETUP: &str = r#"#!/bin/bash
set -euo pipefail
for attempt in 1 2 3 4 5 6 7 8 9 10; do dnf install -y iptables-services && break; sleep 10; done
systemctl enable --now iptables
echo "net.ipv4.ip_forward=1" > /etc/sysctl.d/90-aira-nat.conf
sysctl -p /etc/sysctl.d/90-aira-nat.conf
primary=$(ip -o -4 route show default | awk '{print $5; exit}')
iptables -t nat -A POSTROUTING -o "$primary" -j MASQUERADE
iptables -F FORWARD
service iptables save
"#;

/// [`NatInstance::setup`]: FNV-1a of [`NAT_SETUP`], so that a changed script replaces the instance.
pub fn nat_setup_digest() -> String {
    let hash = NAT_SETUP.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    format!("{hash:016x}")
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

/// A route to an internet gateway (`gateway`), a NAT gateway (`nat_gateway`) or a NAT
/// instance's network interface (`network_interface`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcRoute {
    /// An IPv4 or IPv6 block.
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Val<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_gateway: Option<Val<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<Val<String>>,
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
