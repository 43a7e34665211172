//! Stack → desired resource graph.
//!
//! - `network.rs`: the queues, the VPC, subnets, gateways, route tables, endpoints, groups.
//! - `services.rs`: table, repository, roles, cluster, log groups, task definitions and services,
//!   each from its own constructor.
//! - `edge.rs`: the public service's target group, the load balancer, the certificate, the
//!   listeners and the alias records.
//! - `alarms.rs`: the alert topic and the alarms.
//! - `monitoring.rs`: the Prometheus workspace, its rules and alert routes.
//! - `waf.rs`: the AWS WAF web ACL with the per-address rate limits, on the load balancer.
//! - `preview.rs`: a preview on a shared base: the base's graph under the preview's name, with
//!   the base's resources of shared kinds used as they are.
//!
//! The property shapes written here are the normal form the provider's observe reports, so that
//! a plan right after `up` is empty.

mod alarms;
mod edge;
mod image;
pub mod monitoring;
mod network;
pub mod preview;
mod services;
pub mod waf;

pub use image::{container_image, image_of, Image, ImageDecision, UNBUILT_DIGEST};

use serde_json::json;

use crate::graph::{Desired, Graph, Kind, LogicalId};
use crate::kind::{self, Val};
use crate::provider::{BedrockModel, Facts};
use crate::stack::model::{Count, LlmProvider, Role, Service};
use crate::stack::Stack;

pub const QUEUE: &str = "queue";
pub const DEAD_LETTER_QUEUE: &str = "dlq";

/// Why a stack cannot be expanded in the account and region its facts describe.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExpandError {
    /// The region has fewer available zones than the stack asks for: the user's to fix.
    #[error(
        "network.zones: the stack asks for {asked} availability zones, but {region} has {} available ({})",
        available.len(),
        available.join(", ")
    )]
    TooFewZones { asked: usize, region: String, available: Vec<String> },
    /// The VPC block cannot hold the subnets: the user's to fix.
    #[error("network.cidr: cannot split {cidr} into subnets: {reason}")]
    CidrTooSmall { cidr: String, reason: String },
    /// Something the pre-flight looks up was not: aira's fault, not the user's.
    #[error("{key}: {what} was not looked up (an internal error)")]
    NotLookedUp { key: &'static str, what: String },
    /// The alert manager template embedded in aira does not read: aira's fault.
    #[error("alertmanager.yml: {0}")]
    AlertManagerTemplate(String),
    /// The stack cannot have previews (`--preview`): the user's to fix.
    #[error("--preview: {0}")]
    Preview(String),
}

impl ExpandError {
    /// The user's to fix (a region or a VPC block that cannot hold the stack).
    pub fn is_user(&self) -> bool {
        matches!(self, ExpandError::TooFewZones { .. } | ExpandError::CidrTooSmall { .. } | ExpandError::Preview(_))
    }
}

/// The graph of a stack in the account and region that `facts` describe. Fails when the region
/// cannot hold the stack ([`ExpandError::is_user`]).
pub fn expand(stack: &Stack, facts: &Facts, image: &Image) -> Result<Graph, ExpandError> {
    let mut resources = network::queues(stack);
    let (network, placement) = network::network(stack, facts)?;
    resources.extend(network);
    if !stack.services.is_empty() {
        resources.extend(services::services(stack, facts, image, &placement)?);
    }
    if stack.prometheus() {
        resources.extend(monitoring::monitoring(stack, facts)?);
    }
    if let Some(limits) = stack.waf() {
        resources.push(waf::web_acl(stack, limits));
    }
    Ok(Graph { stack: stack.stack.0.clone(), tags: stack.tags.clone(), resources, ..Graph::default() })
}

/// Where the load balancer and the tasks go: values or references.
struct Placement {
    vpc: Val<String>,
    public_subnets: Vec<Val<String>>,
    private_subnets: Vec<Val<String>>,
    /// The endpoints and private route tables (through their NAT gateways) a task reaches AWS
    /// and the model by: every service starts after them.
    task_paths: Vec<LogicalId>,
    /// The internet gateway and the public route table: the load balancer starts after them.
    lb_paths: Vec<LogicalId>,
}

/// The load balancer answers over IPv4 and IPv6: aira made the network, with IPv6.
fn dualstack(stack: &Stack) -> bool {
    stack.network.ipv6 && stack.network.existing.is_none()
}

/// Deployment settings that are aira's choices rather than the stack's.
pub mod defaults {
    /// Seconds an ALB waits for in-flight requests of a deregistered target (AWS's default, 300,
    /// adds minutes to every deploy).
    pub const DEREGISTRATION_DELAY: u64 = 15;
    pub const HEALTH_INTERVAL: u64 = 10;
    pub const HEALTH_TIMEOUT: u64 = 5;
    pub const LOG_RETENTION_DAYS: u64 = 30;
    /// TLS 1.3 and 1.2 only.
    pub const TLS_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";
    pub use crate::stack::model::OPS_PORT;
    /// Images the stack's ECR repository keeps (older ones expire).
    pub const KEEP_IMAGES: u64 = 20;
    /// The runtime image's non-root user and group (the distroless "nonroot" ids); the image
    /// builder writes its files with them and the task definition runs as them.
    pub const RUNTIME_UID: u32 = 65532;
    /// Where the image holds the runtime (its entrypoint and the health check's program).
    pub const RUNTIME_BINARY: &str = "/usr/local/bin/aira-runtime";
    /// Seconds ECS ignores a new load-balanced task's failed health checks while it starts.
    pub const HEALTH_CHECK_GRACE: i32 = 30;
}

/// The runtime's bounds on model spend (`Stack::spend`), as the environment it reads them from:
/// every task's (the api refuses a post past a budget, the worker charges what the model
/// answered) and `aira-runtime serve`'s on the local target.
pub fn spend_env(stack: &Stack) -> [(&'static str, String); 4] {
    let spend = stack.spend();
    [
        ("AIRA_LLM_MAX_TOKENS", spend.max_tokens.to_string()),
        ("AIRA_DAILY_TOKENS", spend.daily_tokens.to_string()),
        ("AIRA_USER_DAILY_TOKENS", spend.user_daily_tokens.to_string()),
        ("AIRA_USER_IN_FLIGHT", spend.user_in_flight.to_string()),
    ]
}

/// The table the runtime stores users, conversations and messages in.
pub const TABLE: &str = "table";
pub const CLUSTER: &str = "cluster";
pub const LOAD_BALANCER: &str = "lb";
pub const CERTIFICATE: &str = "certificate";
pub const REPOSITORY: &str = "repository";
pub const EXECUTION_ROLE: &str = "role-execution";

pub fn service_id(service: &str) -> String {
    format!("service-{service}")
}

pub fn task_id(service: &str) -> String {
    format!("task-{service}")
}

pub fn log_group_name(stack: &str, service: &str) -> String {
    format!("/aira/{stack}/{service}")
}

/// A name of at most `max` characters: `base` itself, or cut and suffixed with a hash of it,
/// so that two long names stay distinct (load balancer and target group names: 32).
fn bounded_name(base: &str, max: usize) -> String {
    if base.len() <= max {
        return base.to_string();
    }
    use sha2::Digest;
    let hash = hex8(&sha2::Sha256::digest(base.as_bytes()));
    format!("{}-{hash}", base[..max - 9].trim_end_matches('-'))
}

fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// DynamoDB actions the runtime makes (see runtime/src/store/dynamo/).
const TABLE_ACTIONS: &[&str] = &[
    "dynamodb:BatchGetItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:TransactWriteItems",
    "dynamodb:UpdateItem",
];

/// The ARN of an ECR repository named by an image reference
/// (`123456789012.dkr.ecr.us-east-1.amazonaws.com/name@…`), `None` for other registries.
fn ecr_repository_arn(reference: &str) -> Option<String> {
    let (host, rest) = reference.split_once('/')?;
    let mut parts = host.split('.');
    let (account, dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if dkr != "dkr" || ecr != "ecr" || !account.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let name = rest.split(['@', ':']).next()?;
    Some(format!("arn:{}:ecr:{region}:{account}:repository/{name}", partition(region)))
}

/// The ARN partition of a region.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// What a Bedrock model id alone tells: a foundation model in `region`; or an inference profile's
/// ARN in `account` and its foundation model in `region` (the pre-flight reads the regions a
/// profile really routes to).
pub fn assumed_model(region: &str, account: &str, id: &str) -> BedrockModel {
    let (profile, model) = match crate::stack::inference_profile(id) {
        Some(model) => {
            let arn = format!("arn:{}:bedrock:{region}:{account}:inference-profile/{id}", partition(region));
            (Some(arn), model)
        }
        None => (None, id),
    };
    let mut invoke: Vec<String> = profile.into_iter().collect();
    invoke.push(foundation_model_arn(region, model));
    BedrockModel { invoke, third_party: !model.starts_with("amazon.") }
}

/// A Bedrock foundation model's ARN: no account, the model id as its resource.
fn foundation_model_arn(region: &str, model: &str) -> String {
    format!("arn:{}:bedrock:{region}::foundation-model/{model}", partition(region))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::reference;
    use crate::provider::Observed;
    use serde_json::{json, Value};

    /// The canonical stack, expanded with offline facts.
    fn canonical() -> Graph {
        let path = crate::manifest_dir().join("../../stacks/aira.yaml");
        let stack = crate::stack::load(&path).unwrap().stack;
        let image = Image::Built { digest: "sha256:00".into(), repository: None, source: None };
        expand(&stack, &Facts::offline(&stack), &image).unwrap()
    }

    #[test]
    fn services_start_after_every_path_their_tasks_take_and_the_load_balancer_after_the_gateway() {
        let g = canonical();
        let ids = |kind: Kind, prefix: &str| -> Vec<LogicalId> {
            g.resources.iter().filter(|r| r.kind == kind && r.id.0.starts_with(prefix)).map(|r| r.id.clone()).collect()
        };
        let endpoints = ids(Kind::VpcEndpoint, "");
        let private_routes = ids(Kind::RouteTable, "private-routes");
        assert_eq!(endpoints.len(), 8, "{endpoints:?}");
        assert_eq!(private_routes.len(), 2, "a route table per zone, through its NAT gateway");
        for service in g.resources.iter().filter(|r| r.kind == Kind::Service) {
            for id in endpoints.iter().chain(&private_routes) {
                assert!(service.depends_on.contains(id), "{} does not wait for {id}", service.id);
            }
        }
        let lb = g.get(&LOAD_BALANCER.into()).unwrap();
        for id in ["igw", "public-routes"] {
            assert!(lb.depends_on.contains(&id.into()), "the load balancer does not wait for {id}");
        }
        // A NAT gateway in a VPC without an attached internet gateway fails (Gateway.NotAttached).
        for nat in g.resources.iter().filter(|r| r.kind == Kind::NatGateway) {
            assert!(nat.depends_on.contains(&"igw".into()), "{} does not wait for the internet gateway", nat.id);
        }
        g.topo_order().unwrap();
    }

    /// `nat: one`: one address and one NAT gateway, in the first zone's public subnet, and one
    /// private route table that holds every private subnet and routes out through it.
    #[test]
    fn one_nat_gateway_serves_every_zone_through_one_route_table() {
        let path = crate::manifest_dir().join("../../stacks/aira.yaml");
        let text = std::fs::read_to_string(path).unwrap().replace("nat: true", "nat: one");
        let stack = crate::stack::parse("aira.yaml", &text).unwrap().stack;
        let image = Image::Built { digest: "sha256:00".into(), repository: None, source: None };
        let g = expand(&stack, &Facts::offline(&stack), &image).unwrap();
        let of =
            |kind: Kind| -> Vec<&crate::graph::Desired> { g.resources.iter().filter(|r| r.kind == kind).collect() };
        let (nats, ips) = (of(Kind::NatGateway), of(Kind::ElasticIp));
        assert_eq!((nats.len(), ips.len()), (1, 1), "one NAT gateway and its address");
        assert_eq!(nats[0].props["subnet"], json!({"$ref": "public-a.id"}), "{}", nats[0].props);
        let private: Vec<_> =
            of(Kind::RouteTable).into_iter().filter(|r| r.id.0.starts_with("private-routes")).collect();
        assert_eq!(private.len(), 1, "one private route table");
        assert_eq!(private[0].props["subnets"].as_array().map(Vec::len), Some(2), "{}", private[0].props);
        assert_eq!(private[0].props["routes"][0]["nat_gateway"], json!({"$ref": "nat-a.id"}), "{}", private[0].props);
        // The gateway endpoints are in that table.
        for e in of(Kind::VpcEndpoint).into_iter().filter(|e| e.props["type"] == "Gateway") {
            assert_eq!(e.props["route_tables"], json!([{"$ref": "private-routes.id"}]), "{}", e.id);
        }
        g.topo_order().unwrap();
    }

    /// Each resource's JSON reads back into its kind's struct (the cost model and the provider
    /// read it so) and writes back the same, and every field the plan names (replacements, sets)
    /// is a key of it. Over the canonical stack with alerts and the examples, which hold every kind.
    #[test]
    fn every_resource_is_its_kinds_struct_and_the_plan_names_its_fields() {
        let root = crate::manifest_dir().join("../..");
        let mut files = vec![
            std::fs::read_to_string(root.join("stacks/aira.yaml")).unwrap() + "alerts:\n  email: ops@example.com\n",
        ];
        for e in std::fs::read_dir(root.join("examples")).unwrap() {
            files.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
        let mut keys: std::collections::BTreeMap<Kind, std::collections::BTreeSet<String>> = Default::default();
        let image = Image::Built { digest: "sha256:00".into(), repository: None, source: None };
        let mut graphs = Vec::new();
        for (i, text) in files.iter().enumerate() {
            let stack = crate::stack::parse("aira.yaml", text).unwrap().stack;
            graphs.push(expand(&stack, &Facts::offline(&stack), &image).unwrap());
            if i == 0 {
                // A preview of the canonical stack: its host rule.
                let p = preview::Preview { base: "aira".into(), name: "pr-1".into() };
                graphs.push(preview::expand_preview(&stack, &Facts::offline(&stack), &image, &p).unwrap());
            }
        }
        for graph in graphs {
            for r in graph.resources {
                let typed = kind::AnyProps::parse(r.kind, &r.props).unwrap_or_else(|e| panic!("{}: {e}", r.id));
                assert_eq!(typed.to_value().to_string(), r.props.to_string(), "{} ({})", r.id, r.kind);
                keys.entry(r.kind).or_default().extend(r.props.as_object().unwrap().keys().cloned());
            }
        }
        for k in Kind::ALL {
            let found = keys.get(k).unwrap_or_else(|| panic!("no stack here expands to a {k}"));
            let spec = k.spec();
            for field in spec.replace_on.iter().map(|(f, _)| *f).chain(spec.sets.iter().copied()) {
                assert!(found.contains(field), "{k}: the plan names `{field}`, which its JSON never holds");
            }
        }
    }

    /// The canonical stack's resources as expand writes them, in the plan's JSON form: a change
    /// of a kind's struct (a field, its order, its JSON) shows here before it shows in a plan.
    #[test]
    fn the_canonical_stacks_resources_are_unchanged() {
        let g = canonical();
        let text = serde_json::to_string_pretty(&g.resources).unwrap();
        expect_test::expect_file!["canonical.json"].assert_eq(&text);
    }

    /// The canonical stack without NAT, its model on Bedrock.
    fn bedrock() -> Graph {
        let path = crate::manifest_dir().join("../../stacks/aira.yaml");
        let text = std::fs::read_to_string(path).unwrap().replace("nat: true", "nat: false");
        let text = format!(
            "{}llm: {{ provider: bedrock, model: amazon.nova-lite-v1:0 }}\n",
            &text[..text.find("llm:").unwrap()]
        );
        let stack = crate::stack::parse("aira.yaml", &text).unwrap().stack;
        let image = Image::Built { digest: "sha256:00".into(), repository: None, source: None };
        expand(&stack, &Facts::offline(&stack), &image).unwrap()
    }

    /// A model key encrypted with a customer managed KMS key: the execution role may decrypt it,
    /// through Secrets Manager and for that secret only; with the AWS managed key, nothing more.
    #[test]
    fn a_secret_under_its_own_kms_key_is_decrypted_through_secrets_manager_only() {
        let path = crate::manifest_dir().join("../../stacks/aira.yaml");
        let stack = crate::stack::load(&path).unwrap().stack;
        let image = Image::Built { digest: "sha256:00".into(), repository: None, source: None };
        let decrypt = |own_key: bool| {
            let mut facts = Facts::offline(&stack);
            if own_key {
                facts.secrets_own_key.insert("aira/openai".into());
            }
            let g = expand(&stack, &facts, &image).unwrap();
            let statements = g.get(&EXECUTION_ROLE.into()).unwrap().props["policy"]["Statement"].clone();
            statements.as_array().unwrap().iter().find(|s| s["Sid"] == "DecryptLlmKey").cloned()
        };
        assert_eq!(decrypt(false), None);
        assert_eq!(
            decrypt(true),
            Some(json!({
                "Sid": "DecryptLlmKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": ["arn:aws:kms:us-east-1:000000000000:key/*"],
                "Condition": { "StringEquals": {
                    "kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:us-east-1:000000000000:secret:aira/openai",
                    "kms:ViaService": "secretsmanager.us-east-1.amazonaws.com",
                } },
            }))
        );
    }

    /// Through an inference profile: the profile (in the account) and its model in each region
    /// the pre-flight read; another provider's model also gets the Marketplace subscription.
    #[test]
    fn an_inference_profile_is_granted_with_its_models_in_the_regions_it_routes_to() {
        let path = crate::manifest_dir().join("../../stacks/aira.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let text = format!(
            "{}llm: {{ provider: bedrock, model: us.anthropic.claude-3-5-haiku-20241022-v1:0 }}\n",
            &text[..text.find("llm:").unwrap()]
        );
        let stack = crate::stack::parse("aira.yaml", &text).unwrap().stack;
        let mut facts = Facts::offline(&stack);
        let profile =
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0";
        let models: Vec<String> = ["us-east-1", "us-east-2", "us-west-2"]
            .iter()
            .map(|r| format!("arn:aws:bedrock:{r}::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0"))
            .collect();
        let invoke = [vec![profile.to_string()], models.clone()].concat();
        facts.bedrock = Some(BedrockModel { invoke: invoke.clone(), third_party: true });
        let image = Image::Built { digest: "sha256:00".into(), repository: None, source: None };
        let g = expand(&stack, &facts, &image).unwrap();
        let worker = g.get(&"role-worker".into()).unwrap();
        let statements = worker.props["policy"]["Statement"].as_array().unwrap();
        let sid =
            |s: &str| statements.iter().find(|st| st["Sid"] == s).unwrap_or_else(|| panic!("no {s}: {statements:#?}"));
        assert_eq!(sid("Model")["Resource"], json!(invoke));
        assert_eq!(
            sid("ModelSubscription")["Action"],
            json!(["aws-marketplace:Subscribe", "aws-marketplace:Unsubscribe", "aws-marketplace:ViewSubscriptions"])
        );
        // Without the pre-flight's read (validate): the profile and the model in the stack's region.
        let offline = assumed_model("us-east-1", "000000000000", "us.anthropic.claude-3-5-haiku-20241022-v1:0");
        assert_eq!(offline.invoke.len(), 2);
        assert!(
            offline.invoke[0].ends_with(":000000000000:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0")
        );
        assert_eq!(offline.invoke[1], models[0]);
    }

    #[test]
    fn a_bedrock_model_adds_its_endpoint_a_grant_on_it_for_the_worker_only_and_no_key() {
        let g = bedrock();
        let endpoint = g.get(&"endpoint-bedrock-runtime".into()).expect("a bedrock-runtime endpoint");
        assert_eq!(
            endpoint.props,
            json!({
                "vpc": reference("vpc", "id"),
                "service": "com.amazonaws.us-east-1.bedrock-runtime",
                "type": "Interface",
                "subnets": [reference("private-a", "id"), reference("private-b", "id")],
                "security_groups": [reference("endpoints-sg", "id")],
                "private_dns": true,
            })
        );
        let worker = g.get(&service_id("worker").as_str().into()).unwrap();
        assert!(
            worker.depends_on.contains(&"endpoint-bedrock-runtime".into()),
            "the worker starts after its model's path"
        );
        let grants = |role: &str| -> Vec<Value> {
            let statements = g.get(&role.into()).unwrap().props["policy"]["Statement"].as_array().unwrap().clone();
            statements.into_iter().filter(|s| s.to_string().contains("bedrock")).collect()
        };
        assert_eq!(
            grants("role-worker"),
            [json!({
                "Sid": "Model",
                "Effect": "Allow",
                "Action": ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
                "Resource": ["arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0"],
            })]
        );
        assert_eq!(grants("role-api"), Vec::<Value>::new());
        for svc in ["api", "worker"] {
            let container = &g.get(&task_id(svc).as_str().into()).unwrap().props["container"];
            let env = &container["environment"];
            assert_eq!(env["AIRA_LLM_PROVIDER"], "bedrock");
            assert_eq!(env["AIRA_LLM_MODEL"], "amazon.nova-lite-v1:0");
            assert_eq!(env["AWS_REGION"], "us-east-1");
            assert!(env.get("AIRA_LLM_BASE_URL").is_none(), "{env}");
            assert_eq!(container["secrets"], json!({}));
        }
        // No key, so the execution role reads no secret.
        assert!(!g.get(&EXECUTION_ROLE.into()).unwrap().props.to_string().contains("secretsmanager:"));
    }

    #[test]
    fn both_services_get_the_spend_bounds_of_the_stack_file_or_their_defaults() {
        let env_of = |g: &Graph, svc: &str| -> Vec<(String, String)> {
            let env = g.get(&task_id(svc).as_str().into()).unwrap().props["container"]["environment"].clone();
            let env: serde_json::Map<String, Value> = serde_json::from_value(env).unwrap();
            env.into_iter()
                .filter(|(k, _)| k.contains("TOKENS") || k.contains("IN_FLIGHT"))
                .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect()
        };
        let expected = |max: &str, all: &str, user: &str, in_flight: &str| -> Vec<(String, String)> {
            let mut e: Vec<(String, String)> = [
                ("AIRA_LLM_MAX_TOKENS", max),
                ("AIRA_DAILY_TOKENS", all),
                ("AIRA_USER_DAILY_TOKENS", user),
                ("AIRA_USER_IN_FLIGHT", in_flight),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            e.sort();
            e
        };
        // The canonical stack writes none of them: the defaults, in the api (which refuses a post
        // past a budget) and the worker (which charges what the model answered) alike.
        let g = canonical();
        for svc in ["api", "worker"] {
            assert_eq!(env_of(&g, svc), expected("1024", "2000000", "200000", "4"), "{svc}");
        }
        let path = crate::manifest_dir().join("../../stacks/aira.yaml");
        let text = std::fs::read_to_string(path).unwrap()
            + "  max_tokens: 512\n  daily_tokens: 0\n  user_daily_tokens: 50000\n  user_in_flight: 2\n";
        let stack = crate::stack::parse("aira.yaml", &text).unwrap().stack;
        let image = Image::Built { digest: "sha256:00".into(), repository: None, source: None };
        let g = expand(&stack, &Facts::offline(&stack), &image).unwrap();
        for svc in ["api", "worker"] {
            assert_eq!(env_of(&g, svc), expected("512", "0", "50000", "2"), "{svc}");
        }
    }

    #[test]
    fn foundation_model_arns_carry_their_partition() {
        assert_eq!(
            foundation_model_arn("eu-west-1", "a.b-v1:0"),
            "arn:aws:bedrock:eu-west-1::foundation-model/a.b-v1:0"
        );
        assert_eq!(foundation_model_arn("cn-north-1", "a.b"), "arn:aws-cn:bedrock:cn-north-1::foundation-model/a.b");
        assert_eq!(
            foundation_model_arn("us-gov-west-1", "a.b"),
            "arn:aws-us-gov:bedrock:us-gov-west-1::foundation-model/a.b"
        );
    }

    fn observed(id: &str, kind: Kind, props: Value, outputs: Value) -> Observed {
        Observed {
            id: LogicalId(id.into()),
            kind,
            physical_id: format!("arn:{id}"),
            props,
            outputs: serde_json::from_value(outputs).unwrap(),
            depends_on: Default::default(),
            repair: None,
        }
    }

    fn task(image: kind::ContainerImage) -> Observed {
        let container = kind::Container {
            name: "api".into(),
            image,
            command: Vec::new(),
            port: None,
            environment: Default::default(),
            secrets: Default::default(),
            log_group: None,
            health_check: Vec::new(),
            user: None,
            read_only_root: false,
        };
        let props = kind::TaskDefinition {
            family: "s-api".into(),
            cpu: 256,
            memory: 512,
            execution_role: None,
            task_role: None,
            container: Some(container),
        };
        Observed::of(task_id("api").as_str().into(), "arn:task", &props)
    }

    #[test]
    fn image_of_reads_back_what_expand_wrote() {
        let uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/aira/s";
        let repo = observed(REPOSITORY, Kind::Repository, json!({}), json!({ "uri": uri }));
        let digest = format!("sha256:{}", "1".repeat(64));
        // Built and pushed to the stack's own repository.
        let own = task(container_image(&format!("{uri}@{digest}")));
        assert_eq!(
            image_of(&[repo.clone(), own]),
            Image::Built { digest: digest.clone(), repository: None, source: None }
        );
        // Built and pushed to another registry (`--registry`).
        let other = task(container_image(&format!("127.0.0.1:5000/aira/runtime@{digest}")));
        assert_eq!(
            image_of(&[repo.clone(), other]),
            Image::Built {
                digest: digest.clone(),
                repository: Some("127.0.0.1:5000/aira/runtime".into()),
                source: None
            }
        );
        // A reference by tag stays a reference.
        let tagged = task(container_image("public.ecr.aws/x/y:1"));
        assert_eq!(image_of(&[tagged]), Image::Reference("public.ecr.aws/x/y:1".into()));
        // No task definition yet.
        assert_eq!(image_of(&[repo]), Image::Reference(String::new()));
    }

    /// What runs decides whether `up` builds: the same fingerprint deployed is reused as it is.
    #[test]
    fn an_image_to_build_is_the_deployed_one_when_its_sources_run_already() {
        let uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/aira/s";
        let repo = observed(REPOSITORY, Kind::Repository, json!({}), json!({ "uri": uri }));
        let digest = format!("sha256:{}", "1".repeat(64));
        let running = |source: Option<&str>| {
            let mut image = container_image(&format!("{uri}@{digest}"));
            if let kind::ContainerImage::Pinned(p) = &mut image {
                p.source = source.map(String::from);
            }
            vec![repo.clone(), task(image)]
        };
        let (a, b) = (format!("sha256:a{}", "0".repeat(63)), format!("sha256:b{}", "0".repeat(63)));
        let to_build = Image::ToBuild { source: a.clone(), repository: None };

        let (image, d) = to_build.clone().against(&running(Some(&a)));
        assert_eq!(image, Image::Built { digest: digest.clone(), repository: None, source: Some(a.clone()) });
        let d = d.unwrap();
        assert!(!d.build && d.reason.contains("deployed image was built from these sources"), "{d:?}");

        let (image, d) = to_build.clone().against(&running(Some(&b)));
        assert_eq!(image, to_build);
        let d = d.unwrap();
        assert!(
            d.build && d.reason.contains("sources changed") && d.reason.contains("b00000000000 → a00000000000"),
            "{d:?}"
        );
        assert_eq!(d.deployed_source.as_deref(), Some(b.as_str()));
        assert!(to_build.clone().against(&running(None)).1.unwrap().reason.contains("records no source fingerprint"));
        assert!(to_build
            .clone()
            .against(std::slice::from_ref(&repo))
            .1
            .unwrap()
            .reason
            .contains("no image is deployed yet"));
        // Pushed elsewhere than where it runs: built again for the other repository.
        let elsewhere = Image::ToBuild { source: a.clone(), repository: Some("127.0.0.1:5000/x".into()) };
        assert!(elsewhere.against(&running(Some(&a))).1.unwrap().build);
        // Built here already: used (and pushed) unless the same sources run.
        let here = Image::Built { digest: "sha256:22".into(), repository: None, source: Some(b.clone()) };
        let (image, d) = here.clone().against(&running(Some(&a)));
        assert_eq!((image, d.unwrap().build), (here, false));
        // A reference is not aira's to build.
        assert_eq!(Image::Reference("x".into()).against(&running(None)).1, None);
    }

    #[test]
    fn an_image_to_build_is_planned_with_its_fingerprint_and_no_digest() {
        let path = crate::manifest_dir().join("../../stacks/aira.yaml");
        let stack = crate::stack::load(&path).unwrap().stack;
        let image = Image::ToBuild { source: "sha256:ab".into(), repository: None };
        let graph = expand(&stack, &Facts::offline(&stack), &image).unwrap();
        let task = graph.resources.iter().find(|r| r.kind == Kind::TaskDefinition).unwrap();
        let container = &task.props["container"]["image"];
        assert_eq!(container["digest"], UNBUILT_DIGEST);
        assert_eq!(container["source"], "sha256:ab");
    }
}
