//! The resource kinds aira manages, as the engine knows them: a name, the properties AWS cannot
//! change in place (with the reason the plan shows), how a replacement is ordered, and which list
//! properties are unordered sets. These are AWS facts, kept here so that a plan needs no provider
//! (Pulumi's providers answer the same question in `Diff`). How a kind is read and written on AWS
//! is its module in the `aira-aws` crate, registered once by kind; the compiler checks that
//! every kind listed here has one.

use std::fmt;

use serde::Serialize;

/// How a kind is replaced when a property cannot change in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceOrder {
    /// The new one first, for minimal downtime (Pulumi's and OpenTofu's default).
    CreateBeforeDelete,
    /// For kinds whose name is their identity: two cannot exist at once.
    DeleteBeforeCreate,
}

pub struct KindSpec {
    pub name: &'static str,
    /// Top-level properties AWS cannot change in place, with the reason shown in the plan.
    pub replace_on: &'static [(&'static str, &'static str)],
    pub replace_order: ReplaceOrder,
    /// Top-level list properties whose order means nothing (compared sorted).
    pub sets: &'static [&'static str],
}

const IN_VPC: (&str, &str) = ("vpc", "it cannot move to another VPC");

/// One line a kind: the enum, [`Kind::ALL`] and [`Kind::spec`] come from the same list, so none
/// of them can miss a kind.
macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident = $name:literal, $order:ident, sets [$($set:literal),*], replace_on [$($rep:expr),* $(,)?];)*) => {
        /// The kinds of resource aira manages.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($kind,)*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            pub fn spec(self) -> KindSpec {
                match self {
                    $(Kind::$kind => KindSpec {
                        name: $name,
                        replace_on: &[$($rep,)*],
                        replace_order: ReplaceOrder::$order,
                        sets: &[$($set,)*],
                    },)*
                }
            }
        }
    };
}

kinds! {
    SqsQueue = "sqs.queue", DeleteBeforeCreate, sets [], replace_on [
        ("name", "a queue's name cannot change"),
        ("fifo", "a queue cannot change between standard and FIFO"),
    ];
    Vpc = "ec2.vpc", CreateBeforeDelete, sets [], replace_on [
        ("cidr", "a VPC's primary CIDR block cannot change"),
    ];
    // Its CIDR block cannot be held twice in one VPC.
    Subnet = "ec2.subnet", DeleteBeforeCreate, sets [], replace_on [
        IN_VPC,
        ("cidr", "a subnet's CIDR block cannot change"),
        ("zone", "a subnet cannot move to another availability zone"),
    ];
    InternetGateway = "ec2.internet-gateway", CreateBeforeDelete, sets [], replace_on [];
    ElasticIp = "ec2.elastic-ip", CreateBeforeDelete, sets [], replace_on [];
    // Its Elastic IP can be held by one NAT gateway at a time.
    NatGateway = "ec2.nat-gateway", DeleteBeforeCreate, sets [], replace_on [
        ("subnet", "a NAT gateway cannot move to another subnet"),
        ("allocation", "a NAT gateway's public address cannot change"),
    ];
    RouteTable = "ec2.route-table", CreateBeforeDelete, sets ["routes", "subnets"], replace_on [
        IN_VPC,
    ];
    SecurityGroup = "ec2.security-group", DeleteBeforeCreate, sets ["ingress"], replace_on [
        IN_VPC,
        ("name", "a security group's name cannot change"),
        ("description", "a security group's description cannot change"),
    ];
    // One private DNS name per service and VPC.
    VpcEndpoint = "ec2.vpc-endpoint", DeleteBeforeCreate, sets ["subnets", "security_groups", "route_tables"], replace_on [
        IN_VPC,
        ("service", "an endpoint's service cannot change"),
        ("type", "an endpoint's type cannot change"),
    ];
    Table = "dynamodb.table", DeleteBeforeCreate, sets [], replace_on [
        ("name", "a table's name cannot change"),
        ("keys", "a table's key schema cannot change"),
    ];
    LogGroup = "logs.log-group", DeleteBeforeCreate, sets [], replace_on [
        ("name", "a log group's name cannot change"),
    ];
    Role = "iam.role", DeleteBeforeCreate, sets ["managed_policies"], replace_on [
        ("name", "a role's name cannot change"),
        ("path", "a role's path cannot change"),
    ];
    // The listener moves to the new certificate before the old one goes.
    Certificate = "acm.certificate", CreateBeforeDelete, sets [], replace_on [
        ("domain", "a certificate's domain name cannot change"),
        ("zone_id", "its validation records live in the hosted zone"),
    ];
    // Name and type identify the record: two cannot exist at once.
    DnsRecord = "route53.record", DeleteBeforeCreate, sets [], replace_on [
        ("zone_id", "a record cannot move to another hosted zone"),
        ("name", "a record's name is its identity"),
        ("type", "a record's type is its identity"),
    ];
    LoadBalancer = "elbv2.load-balancer", DeleteBeforeCreate, sets ["subnets", "security_groups"], replace_on [
        ("name", "a load balancer's name cannot change"),
        ("scheme", "a load balancer's scheme (internet-facing or internal) cannot change"),
    ];
    TargetGroup = "elbv2.target-group", DeleteBeforeCreate, sets [], replace_on [
        ("name", "a target group's name cannot change"),
        ("protocol", "a target group's protocol cannot change"),
        ("port", "a target group's port cannot change"),
        ("target_type", "a target group's target type cannot change"),
        IN_VPC,
    ];
    // One listener per port and load balancer.
    Listener = "elbv2.listener", DeleteBeforeCreate, sets [], replace_on [
        ("load_balancer", "a listener cannot move to another load balancer"),
    ];
    Repository = "ecr.repository", DeleteBeforeCreate, sets [], replace_on [
        ("name", "a repository's name cannot change"),
    ];
    Cluster = "ecs.cluster", DeleteBeforeCreate, sets [], replace_on [
        ("name", "a cluster's name cannot change"),
    ];
    // Every change registers a new revision of the family: an update, never a replacement.
    TaskDefinition = "ecs.task-definition", CreateBeforeDelete, sets [], replace_on [];
    Service = "ecs.service", DeleteBeforeCreate, sets ["subnets", "security_groups"], replace_on [
        ("name", "a service's name cannot change"),
        ("cluster", "a service cannot move to another cluster"),
        ("load_balancer", "a service's load balancer is fixed when it is created"),
    ];
    Topic = "sns.topic", DeleteBeforeCreate, sets ["subscriptions"], replace_on [
        ("name", "a topic's name cannot change"),
    ];
    // PutMetricAlarm replaces every setting: any change is an update.
    Alarm = "cloudwatch.alarm", DeleteBeforeCreate, sets ["actions"], replace_on [
        ("name", "an alarm's name is its identity"),
    ];
    // The alias is a label; AWS names the workspace (`ws-…`).
    PrometheusWorkspace = "aps.workspace", CreateBeforeDelete, sets [], replace_on [];
    PrometheusRules = "aps.rule-groups", DeleteBeforeCreate, sets [], replace_on [
        ("workspace", "a rule groups namespace belongs to its workspace"),
        ("name", "a namespace's name is its identity"),
    ];
    // One definition per workspace.
    AlertManager = "aps.alert-manager", DeleteBeforeCreate, sets [], replace_on [
        ("workspace", "an alert manager definition belongs to its workspace"),
    ];
    // AWS WAF (scope REGIONAL): the stack's rate-based rules. Its name is its identity in the
    // region. The load balancer it protects is its property `load_balancer`, changed in place
    // (AssociateWebACL, DisassociateWebACL) rather than a kind of its own: an association has no
    // tags nor id, and the web ACL must let go of it before it can be deleted
    // (crates/aws/src/waf.rs says why in full).
    WebAcl = "wafv2.web-acl", DeleteBeforeCreate, sets [], replace_on [
        ("name", "a web ACL's name cannot change"),
    ];
}

impl Kind {
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The outputs an update changes, so that what reads them is updated in the same run: a
    /// task definition's update registers a new revision, with an ARN of its own.
    pub fn outputs_changed_by_update(self) -> &'static [&'static str] {
        match self {
            Kind::TaskDefinition => &["arn", "revision"],
            _ => &[],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_properties_named_once() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        for k in Kind::ALL {
            let spec = k.spec();
            let replace: Vec<&str> = spec.replace_on.iter().map(|(p, _)| *p).collect();
            assert!(replace.iter().all(|p| !spec.sets.contains(p)), "{k}: a set cannot force a replacement");
        }
    }
}
