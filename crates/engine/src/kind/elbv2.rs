//! The kinds of elbv2.

use serde::{Deserialize, Serialize};

use super::{kind, Val};

const IN_VPC: &str = "it cannot move to another VPC";

kind! {
    /// The application load balancer of the public service.
    LoadBalancer = "elbv2.load-balancer", DeleteBeforeCreate, sets [subnets, security_groups],
    replace_on [
        name: "a load balancer's name cannot change",
        scheme: "a load balancer's scheme (internet-facing or internal) cannot change",
    ],
    {
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
        /// The name its alias records give it (`domain.name`), kept in its tag `aira:dns-name`:
        /// record sets carry no tags, so each stack's observe takes the aliases of this name and
        /// each preview's those of `NAME.` it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub public_name: Option<String>,
    }
}

kind! {
    TargetGroup = "elbv2.target-group", DeleteBeforeCreate, sets [],
    replace_on [
        name: "a target group's name cannot change",
        protocol: "a target group's protocol cannot change",
        port: "a target group's port cannot change",
        target_type: "a target group's target type cannot change",
        vpc: IN_VPC,
    ],
    {
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

kind! {
    Listener = "elbv2.listener", DeleteBeforeCreate, sets [],
    // One listener per port and load balancer.
    replace_on [load_balancer: "a listener cannot move to another load balancer"],
    {
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
}

kind! {
    /// A preview's way in: requests for its host name, on the base's HTTPS listener, go to its
    /// target group. Its priority is ELB's identity of it on the listener, given at creation (the
    /// lowest free one from the host name's own, so that previews created at once rarely meet)
    /// and read back as the output `priority`; it is not a property, since no stack chooses it.
    ListenerRule = "elbv2.listener-rule", CreateBeforeDelete, sets [hosts],
    replace_on [listener: "a rule cannot move to another listener"],
    {
        pub listener: Val<String>,
        /// The host names it matches (`host-header`).
        pub hosts: Vec<String>,
        pub action: Action,
    }
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
