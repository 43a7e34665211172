//! Reachability, decided before any AWS call: for every service, what it must reach over the
//! network (the image registry and its layers, logs, the secret, the queue, the table, the model)
//! and the path each takes from the service's private subnets — an interface endpoint with
//! private DNS, a gateway endpoint in the route table, or the NAT gateway's default route. A
//! dependency with no path is a stack error: tasks would start and then time out on every call
//! (the first sign on AWS would be messages piling up in the dead-letter queue).
//!
//! Prices quoted in the fixes come from the price table (`crate::prices`): the stack's region,
//! or us-east-1 where the table lacks it. A NAT gateway is quoted with its public address.
//!
//! The worker's model is a host of its own (an OpenAI-compatible API: NAT unless the host is
//! in the VPC), or Amazon Bedrock, reached through the `bedrock-runtime` interface endpoint that
//! expand adds with `llm.provider: bedrock`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::{Endpoint, LlmProvider, Nat, NatShared, Role, NAT_INSTANCE_TYPE};
use super::Stack;

/// One thing one service reaches, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub service: String,
    /// What it is, for the user: "queue (SQS)", "model".
    pub dependency: String,
    pub host: String,
    /// How the traffic leaves the private subnets; `None` when nothing carries it.
    pub path: Option<String>,
    /// The endpoint that could carry it, if AWS offers one.
    #[serde(skip)]
    pub endpoint: Option<Endpoint>,
    /// The model of an OpenAI-compatible API: a Bedrock model is another fix.
    #[serde(skip)]
    pub openai_model: bool,
    /// An endpoint of an existing VPC that would carry the traffic but refuses it, as the fix
    /// (its security group, say).
    #[serde(skip)]
    pub blocked: Option<String>,
}

/// The reachability table of a stack, and whether it could be checked.
#[derive(Debug, Clone, Serialize)]
pub struct Reachability {
    pub routes: Vec<Route>,
    /// Why the table was not checked (an existing VPC before the pre-flight read its routes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<String>,
    /// The fix for a dependency on the internet in an existing VPC (its route tables are the
    /// owner's, so `network.nat` is no fix); `None`: `network.nat: true`.
    #[serde(skip)]
    pub internet_fix: Option<String>,
}

/// What carries traffic out of every private subnet of the stack: the default route, and the
/// VPC endpoints, each with how it carries it (the text of [`Route::path`]). Derived from the
/// stack for a network aira makes; read from the route tables and endpoints by the pre-flight
/// for an existing VPC, where it holds only what holds for every private subnet (a task may
/// start in any of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Egress {
    /// The default route to the internet; `None` when some private subnet has none.
    pub internet: Option<String>,
    /// Why there is no default route, as a fix (an existing VPC: which tables lack one).
    pub internet_fix: Option<String>,
    pub endpoints: BTreeMap<Endpoint, String>,
    /// Endpoints there that refuse the tasks' traffic, each with the fix.
    pub blocked: BTreeMap<Endpoint, String>,
}

impl Egress {
    /// The egress of the network aira makes for `stack`: its endpoints, and its NAT gateways.
    pub fn planned(stack: &Stack) -> Egress {
        let endpoints = stack.endpoints().into_iter().map(|e| (e, Egress::ours(e))).collect();
        let internet = match stack.network.nat {
            Nat::Shared(NatShared::One) => Some("the first zone's NAT gateway (default route)".to_string()),
            Nat::Shared(NatShared::Instance) => Some("the first zone's NAT instance (default route)".to_string()),
            nat => nat.on().then(|| "NAT gateway (default route)".to_string()),
        };
        Egress { internet, endpoints, ..Egress::default() }
    }

    /// How one of the stack's own endpoints carries traffic.
    pub fn ours(e: Endpoint) -> String {
        if e.is_gateway() {
            format!("gateway endpoint `{}` in the private route tables", e.name())
        } else {
            format!("interface endpoint `{}` (private DNS)", e.name())
        }
    }
}

impl Reachability {
    /// The dependencies without a path: the service, and a sentence naming the dependency, the
    /// fixes and their cost.
    pub fn problems(&self, stack: &Stack) -> Vec<(String, String)> {
        // The deployed harness's test-only switch: its network control deploys what this
        // check refuses, to show that the harness's VPC refuses it too (tests/it/README.md).
        if self.unchecked.is_some() || std::env::var_os("AIRA_TEST_SKIP_REACHABILITY").is_some() {
            return Vec::new();
        }
        let zones = stack.network.zones as f64;
        let (p, hours) = (crate::prices::near(stack.region.as_deref()), crate::prices::table().hours_per_month);
        let gateway = (p.nat_gateway_hour + p.public_ipv4_hour) * hours;
        let mut nat = format!(
            "`network.nat: true` (a NAT gateway per zone: about ${:.0} a month for {} zone{}, plus ${} per GB)",
            gateway * zones,
            stack.network.zones,
            if stack.network.zones == 1 { "" } else { "s" },
            p.nat_gateway_gb,
        );
        if stack.network.zones > 1 {
            nat.push_str(&format!(
                ", or `network.nat: one` (one for every zone, lost with the first: about ${gateway:.0} a month)"
            ));
        }
        let instance = p.nat_instance_month() + p.public_ipv4_hour * hours;
        nat.push_str(&format!(
            ", or `network.nat: instance` (one {} instance for every zone, one instance's bandwidth: about ${instance:.0} a month)",
            NAT_INSTANCE_TYPE
        ));
        let endpoint_cost = format!(
            "about ${:.2} a month for {} zone{}",
            p.interface_endpoint_zone_hour * hours * zones,
            stack.network.zones,
            if stack.network.zones == 1 { "" } else { "s" },
        );
        self.routes
            .iter()
            .filter(|r| r.path.is_none())
            .map(|r| {
                let mut fixes = Vec::new();
                if let Some(blocked) = &r.blocked {
                    fixes.push(blocked.clone());
                } else if let Some(e) = r.endpoint {
                    fixes.push(format!("add `{}` to `network.endpoints` ({endpoint_cost})", e.name()));
                }
                if r.blocked.is_none() {
                    fixes.push(self.internet_fix.clone().unwrap_or_else(|| nat.clone()));
                }
                if r.openai_model {
                    fixes.push(format!(
                        "a model on Amazon Bedrock, `llm.provider: bedrock` (its `{}` interface endpoint: {endpoint_cost})",
                        Endpoint::BedrockRuntime.name()
                    ));
                }
                let fixes = fixes.join(", or ");
                let message = format!(
                    "services.{}: cannot reach its {} at {}: its private subnets have no route there; fix: {fixes}",
                    r.service, r.dependency, r.host
                );
                (r.service.clone(), message)
            })
            .collect()
    }
}

struct Dependency {
    what: &'static str,
    /// The host, with `{region}` for the stack's region.
    host: &'static str,
    endpoint: Option<Endpoint>,
    /// Which services need it.
    needed_by: fn(Role, &Stack, bool) -> bool,
}

/// Every service pulls its image and ships its logs; the secret is read at task start; the
/// runtime itself calls the queue and the table, and pushes its metrics; the worker calls the model.
const DEPENDENCIES: &[Dependency] = &[
    Dependency {
        what: "image registry (ECR API)",
        host: "api.ecr.{region}.amazonaws.com",
        endpoint: Some(Endpoint::EcrApi),
        needed_by: |_, _, ecr| ecr,
    },
    Dependency {
        what: "image registry (ECR)",
        host: "*.dkr.ecr.{region}.amazonaws.com",
        endpoint: Some(Endpoint::EcrDkr),
        needed_by: |_, _, ecr| ecr,
    },
    Dependency {
        what: "image layers (S3)",
        host: "s3.{region}.amazonaws.com",
        endpoint: Some(Endpoint::S3),
        needed_by: |_, _, ecr| ecr,
    },
    Dependency {
        what: "logs (CloudWatch Logs)",
        host: "logs.{region}.amazonaws.com",
        endpoint: Some(Endpoint::Logs),
        needed_by: |_, _, _| true,
    },
    Dependency {
        what: "secret (Secrets Manager)",
        host: "secretsmanager.{region}.amazonaws.com",
        endpoint: Some(Endpoint::SecretsManager),
        needed_by: |_, s, _| s.llm.as_ref().is_some_and(|l| l.api_key.is_some()),
    },
    Dependency {
        what: "queue (SQS)",
        host: "sqs.{region}.amazonaws.com",
        endpoint: Some(Endpoint::Sqs),
        needed_by: |_, _, _| true,
    },
    Dependency {
        what: "table (DynamoDB)",
        host: "dynamodb.{region}.amazonaws.com",
        endpoint: Some(Endpoint::DynamoDb),
        needed_by: |_, _, _| true,
    },
    Dependency {
        what: "metrics (Managed Prometheus)",
        host: "aps-workspaces.{region}.amazonaws.com",
        endpoint: Some(Endpoint::ApsWorkspaces),
        needed_by: |_, s, _| s.prometheus(),
    },
];

/// The reachability of every service of `stack` in the network aira makes for it. `image` is
/// the reference the services run when it is given (`--image` or the stack's `image:`); `None`
/// means built and pushed to the stack's ECR repository. An existing VPC is left unchecked:
/// only the pre-flight can read its routes ([`reachability_through`] with what it read).
pub fn reachability(stack: &Stack, image: Option<&str>) -> Reachability {
    if stack.network.existing.is_some() {
        return Reachability {
            routes: Vec::new(),
            unchecked: Some("the stack runs in an existing VPC: the pre-flight reads its route tables".into()),
            internet_fix: None,
        };
    }
    reachability_through(stack, image, &Egress::planned(stack))
}

/// The reachability of every service of `stack` through `egress`.
pub fn reachability_through(stack: &Stack, image: Option<&str>, egress: &Egress) -> Reachability {
    let region = stack.region.clone().unwrap_or_else(|| "REGION".into());
    let image = image.or(stack.image.as_ref().map(|i| i.0.as_str()));
    let registry_host = image.map(registry_of);
    // This region's ECR is reached through its endpoints; any other registry (ECR of another
    // region included) is on the internet.
    let ecr = registry_host.as_deref().is_none_or(|h| ecr_region(h) == Some(region.as_str()));
    let path_of = |endpoint: Option<Endpoint>| -> Option<String> {
        match endpoint.filter(|e| egress.blocked.contains_key(e)) {
            // Private DNS sends the service's name to the endpoint that refuses it, NAT or not.
            Some(_) => None,
            None => endpoint.and_then(|e| egress.endpoints.get(&e)).or(egress.internet.as_ref()).cloned(),
        }
    };
    let blocked = |endpoint: Option<Endpoint>| endpoint.and_then(|e| egress.blocked.get(&e)).cloned();
    let mut routes = Vec::new();
    for (name, svc) in &stack.services {
        for d in DEPENDENCIES.iter().filter(|d| (d.needed_by)(svc.role, stack, ecr)) {
            routes.push(Route {
                service: name.clone(),
                dependency: d.what.into(),
                host: d.host.replace("{region}", &region),
                path: path_of(d.endpoint),
                endpoint: d.endpoint,
                openai_model: false,
                blocked: blocked(d.endpoint),
            });
        }
        if let (false, Some(host)) = (ecr, &registry_host) {
            routes.push(Route {
                service: name.clone(),
                dependency: "image registry".into(),
                host: host.clone(),
                path: path_of(None),
                endpoint: None,
                openai_model: false,
                blocked: None,
            });
        }
        if let (Role::Worker, Some(llm)) = (svc.role, &stack.llm) {
            let (host, endpoint) = match (llm.provider, &llm.base_url) {
                (LlmProvider::Bedrock, _) => {
                    (format!("bedrock-runtime.{region}.amazonaws.com"), Some(Endpoint::BedrockRuntime))
                }
                (LlmProvider::Openai, Some(url)) => (url_host(&url.0).to_string(), None),
                // No URL: the stack check reports it.
                (LlmProvider::Openai, None) => continue,
            };
            routes.push(Route {
                service: name.clone(),
                dependency: "model".into(),
                host,
                path: path_of(endpoint),
                endpoint,
                openai_model: llm.provider == LlmProvider::Openai,
                blocked: blocked(endpoint),
            });
        }
    }
    Reachability { routes, unchecked: None, internet_fix: egress.internet_fix.clone() }
}

/// The registry host an image reference is pulled from, as Docker reads a reference: the first
/// component names a registry only when it holds a `.` or a `:` or is `localhost`; otherwise the
/// image is on Docker Hub (`nginx@sha256:…`, `library/nginx:1`).
pub fn registry_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_string(),
        _ => "registry-1.docker.io".into(),
    }
}

/// The region of an ECR registry host (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`, `.com.cn` in
/// China); `None` for any other registry.
fn ecr_region(host: &str) -> Option<&str> {
    let rest = host.split_once(".dkr.ecr.")?.1;
    let region = rest.strip_suffix(".amazonaws.com").or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    (!region.is_empty() && !region.contains('.')).then_some(region)
}

/// The host of an `http(s)://` URL.
fn url_host(url: &str) -> &str {
    url.split("://").nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or_default()
}
