//! The kinds of elbv2.

use super::loose;

const IN_VPC: (&str, &str) = ("vpc", "it cannot move to another VPC");

loose!(LoadBalancer = "elbv2.load-balancer", DeleteBeforeCreate, sets ["subnets", "security_groups"], replace_on [
    ("name", "a load balancer's name cannot change"),
    ("scheme", "a load balancer's scheme (internet-facing or internal) cannot change"),
]);

loose!(TargetGroup = "elbv2.target-group", DeleteBeforeCreate, sets [], replace_on [
    ("name", "a target group's name cannot change"),
    ("protocol", "a target group's protocol cannot change"),
    ("port", "a target group's port cannot change"),
    ("target_type", "a target group's target type cannot change"),
    IN_VPC,
]);

// One listener per port and load balancer.
loose!(Listener = "elbv2.listener", DeleteBeforeCreate, sets [], replace_on [
    ("load_balancer", "a listener cannot move to another load balancer"),
]);
