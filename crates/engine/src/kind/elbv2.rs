//! The kinds of elbv2.

use serde::{Deserialize, Serialize};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*, Val};

const IN_VPC: &str = "it cannot move to another VPC";

/// The application load balancer of the public service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancer {
    pub name: String,
    /// `internet-facing` or `internal`.
    pub scheme: String,
    /// `ipv4` or `dualstack`.
    pub ip_address_type: String,
    /// One public subnet a zone.
    pub subnets: Vec<Val<String>>,
    pub security_groups: Vec<Val<String>>,
    /// The hosted zone of its alias records, kept in its tag `aira:dns-zone` so that `down`
    /// finds those records without the stack file; absent without a domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_zone: Option<String>,
}

impl Props for LoadBalancer {
    const KIND: Kind = Kind::LoadBalancer;
    const SPEC: KindSpec = KindSpec {
        name: "elbv2.load-balancer",
        replace_on: &[
            (field!(name), "a load balancer's name cannot change"),
            (field!(scheme), "a load balancer's scheme (internet-facing or internal) cannot change"),
        ],
        replace_order: DeleteBeforeCreate,
        sets: &[field!(subnets), field!(security_groups)],
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    pub name: String,
    /// `HTTP`.
    pub protocol: String,
    pub port: i32,
    /// `ip`: Fargate tasks register by address.
    pub target_type: String,
    pub vpc: Val<String>,
    pub health_check: HealthCheck,
    /// Seconds a deregistered target keeps its in-flight requests.
    pub deregistration_delay: u64,
}

/// An HTTP health check of the targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    /// Seconds between checks.
    pub interval: i32,
    /// Seconds a check may take.
    pub timeout: i32,
    /// Checks in a row that make a target healthy, or unhealthy.
    pub healthy: i32,
    pub unhealthy: i32,
    /// The HTTP codes of a healthy answer (`200`).
    pub matcher: String,
}

impl Props for TargetGroup {
    const KIND: Kind = Kind::TargetGroup;
    const SPEC: KindSpec = KindSpec {
        name: "elbv2.target-group",
        replace_on: &[
            (field!(name), "a target group's name cannot change"),
            (field!(protocol), "a target group's protocol cannot change"),
            (field!(port), "a target group's port cannot change"),
            (field!(target_type), "a target group's target type cannot change"),
            (field!(vpc), IN_VPC),
        ],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub load_balancer: Val<String>,
    pub port: i32,
    /// `HTTP` or `HTTPS`.
    pub protocol: String,
    /// The TLS policy, on a TLS listener only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_policy: Option<String>,
    /// The certificate's ARN, on a TLS listener only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Val<String>>,
    pub default_action: Action,
}

/// What a listener does with a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    /// To another protocol and port (HTTP to HTTPS): `status` is `HTTP_301` or `HTTP_302`.
    Redirect {
        protocol: String,
        port: String,
        status: String,
    },
    Forward {
        target_group: Val<String>,
    },
    /// An action of another type, set outside aira: observed so that it shows as a difference.
    #[serde(untagged)]
    Other {
        #[serde(rename = "type")]
        kind: String,
    },
}

impl Props for Listener {
    const KIND: Kind = Kind::Listener;
    // One listener per port and load balancer.
    const SPEC: KindSpec = KindSpec {
        name: "elbv2.listener",
        replace_on: &[(field!(load_balancer), "a listener cannot move to another load balancer")],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_read_and_write_as_their_type() {
        for v in [
            json!({ "type": "redirect", "protocol": "HTTPS", "port": "443", "status": "HTTP_301" }),
            json!({ "type": "forward", "target_group": { "$ref": "tg-api.arn" } }),
            json!({ "type": "fixed-response" }),
        ] {
            let a: Action = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&a).unwrap(), v);
        }
        let other: Action = serde_json::from_value(json!({ "type": "fixed-response" })).unwrap();
        assert_eq!(other, Action::Other { kind: "fixed-response".into() });
    }
}
