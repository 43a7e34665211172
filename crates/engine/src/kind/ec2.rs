//! The kinds of ec2.

use serde::{Deserialize, Serialize};

use super::{field, loose, Kind, KindSpec, Props, ReplaceOrder::*, Val};

const IN_VPC: (&str, &str) = ("vpc", "it cannot move to another VPC");

loose!(Vpc = "ec2.vpc", CreateBeforeDelete, sets [], replace_on [
    ("cidr", "a VPC's primary CIDR block cannot change"),
]);

// Its CIDR block cannot be held twice in one VPC.
loose!(Subnet = "ec2.subnet", DeleteBeforeCreate, sets [], replace_on [
    IN_VPC,
    ("cidr", "a subnet's CIDR block cannot change"),
    ("zone", "a subnet cannot move to another availability zone"),
]);

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

loose!(RouteTable = "ec2.route-table", CreateBeforeDelete, sets ["routes", "subnets"], replace_on [
    IN_VPC,
]);

loose!(SecurityGroup = "ec2.security-group", DeleteBeforeCreate, sets ["ingress"], replace_on [
    IN_VPC,
    ("name", "a security group's name cannot change"),
    ("description", "a security group's description cannot change"),
]);

// One private DNS name per service and VPC.
loose!(VpcEndpoint = "ec2.vpc-endpoint", DeleteBeforeCreate, sets ["subnets", "security_groups", "route_tables"], replace_on [
    IN_VPC,
    ("service", "an endpoint's service cannot change"),
    ("type", "an endpoint's type cannot change"),
]);
