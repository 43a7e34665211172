//! Stack → desired resource graph.

use serde_json::{json, Value};

use crate::graph::{reference, Desired, Graph, Kind};
use crate::provider::Facts;
use crate::stack::model::{Count, Endpoint, Role};
use crate::stack::Stack;

pub const QUEUE: &str = "queue";
pub const DEAD_LETTER_QUEUE: &str = "dlq";

/// The graph of a stack in the account and region that `facts` describe. Fails (a user error)
/// when the region cannot hold the stack.
pub fn expand(stack: &Stack, facts: &Facts, image: &Image) -> Result<Graph, String> {
    let mut resources = queues(stack);
    let (network, placement) = network(stack, facts)?;
    resources.extend(network);
    if !stack.services.is_empty() {
        resources.extend(services(stack, facts, image, &placement)?);
    }
    Ok(Graph { stack: stack.stack.0.clone(), tags: stack.tags.clone(), resources })
}

/// What the services run.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// A reference given by the stack or `--image`, deployed as it is.
    Reference(String),
    /// Built by aira (`sha256:…`), pushed to the stack's ECR repository, or to `repository`
    /// (`registry/name`) when one is named.
    Built { digest: String, repository: Option<String> },
}

/// Where the load balancer and the tasks go: values or references.
struct Placement {
    vpc: Value,
    public_subnets: Vec<Value>,
    private_subnets: Vec<Value>,
}

fn queues(stack: &Stack) -> Vec<Desired> {
    let name = &stack.stack.0;
    let q = &stack.queue;
    let queue_name = |id: &str| if q.fifo { format!("{name}-{id}.fifo") } else { format!("{name}-{id}") };
    let mut resources = Vec::new();
    let mut props = json!({
        "name": queue_name(QUEUE),
        "fifo": q.fifo,
        "visibility_timeout": q.visibility_timeout.secs(),
        "retention": q.retention.secs(),
        "receive_wait": q.receive_wait.secs(),
    });
    if let Some(dl) = &q.dead_letter {
        resources.push(Desired::new(
            DEAD_LETTER_QUEUE,
            Kind::SqsQueue,
            json!({
                "name": queue_name(DEAD_LETTER_QUEUE),
                "fifo": q.fifo,
                // Dead letters are only inspected and redriven: SQS's default, independent of the queue's.
                "visibility_timeout": 30,
                "retention": dl.retention.secs(),
                "receive_wait": q.receive_wait.secs(),
            }),
        ));
        props["redrive"] =
            json!({ "dead_letter_arn": reference(DEAD_LETTER_QUEUE, "arn"), "max_receives": dl.max_receives });
    }
    resources.push(Desired::new(QUEUE, Kind::SqsQueue, props));
    resources
}

/// Zone suffix of subnet ids: `public-a`, `private-b`.
fn letter(i: usize) -> char {
    (b'a' + i as u8) as char
}

fn network(stack: &Stack, facts: &Facts) -> Result<(Vec<Desired>, Placement), String> {
    let net = &stack.network;
    let name = &stack.stack.0;
    let mut out = Vec::new();

    // Where the groups and endpoints go: ids aira creates (references) or ids of an existing VPC.
    let (vpc, public_subnets, private_subnets, private_route_tables): (Value, Vec<Value>, Vec<Value>, Vec<Value>) =
        match &net.existing {
            Some(existing) => (
                Value::from(existing.vpc_id.clone()),
                existing.public_subnets.iter().cloned().map(Value::from).collect(),
                existing.private_subnets.iter().cloned().map(Value::from).collect(),
                facts.existing_private_route_tables.iter().cloned().map(Value::from).collect(),
            ),
            None => {
                let zones = net.zones as usize;
                if facts.zones.len() < zones {
                    return Err(format!(
                        "network.zones: the stack asks for {zones} availability zones, but {} has {} available ({})",
                        facts.region,
                        facts.zones.len(),
                        facts.zones.join(", ")
                    ));
                }
                out.push(Desired::new(
                    "vpc",
                    Kind::Vpc,
                    json!({ "cidr": net.cidr.to_string(), "dns_support": true, "dns_hostnames": true, "ipv6": net.ipv6 }),
                ));
                out.push(Desired::new("igw", Kind::InternetGateway, json!({ "vpc": reference("vpc", "id") })));
                // Public subnets first, then private, each an equal slice of the VPC block.
                let bits = (2 * zones).next_power_of_two().trailing_zeros() as u8;
                let blocks: Vec<ipnet::Ipv4Net> = net
                    .cidr
                    .0
                    .subnets(net.cidr.0.prefix_len() + bits)
                    .map_err(|e| format!("network.cidr: cannot split {} into subnets: {e}", net.cidr))?
                    .collect();
                let mut privates = Vec::new();
                let mut publics = Vec::new();
                for (i, zone) in facts.zones.iter().take(zones).enumerate() {
                    for (tier, block, list) in
                        [("public", blocks[i], &mut publics), ("private", blocks[zones + i], &mut privates)]
                    {
                        let id = format!("{tier}-{}", letter(i));
                        let mut props =
                            json!({ "vpc": reference("vpc", "id"), "cidr": block.to_string(), "zone": zone });
                        if net.ipv6 && tier == "public" {
                            // The i-th /64 of the VPC's /56: the load balancer's subnets.
                            props["ipv6_index"] = json!(i);
                        }
                        out.push(Desired::new(&id, Kind::Subnet, props));
                        list.push(reference(&id, "id"));
                    }
                }
                let mut routes = vec![json!({ "destination": "0.0.0.0/0", "gateway": reference("igw", "id") })];
                if net.ipv6 {
                    routes.push(json!({ "destination": "::/0", "gateway": reference("igw", "id") }));
                }
                out.push(Desired::new(
                    "public-routes",
                    Kind::RouteTable,
                    json!({ "vpc": reference("vpc", "id"), "routes": routes, "subnets": publics.clone() }),
                ));
                let mut route_tables = Vec::new();
                if net.nat {
                    // A NAT gateway per zone, so that one zone's failure leaves the others online.
                    for (i, private) in privates.iter().enumerate() {
                        let z = letter(i);
                        out.push(Desired::new(&format!("nat-ip-{z}"), Kind::ElasticIp, json!({})));
                        out.push(Desired::new(
                        &format!("nat-{z}"),
                        Kind::NatGateway,
                        json!({ "subnet": reference(&format!("public-{z}"), "id"), "allocation": reference(&format!("nat-ip-{z}"), "id") }),
                    ));
                        out.push(Desired::new(
                        &format!("private-routes-{z}"),
                        Kind::RouteTable,
                        json!({
                            "vpc": reference("vpc", "id"),
                            "routes": [{ "destination": "0.0.0.0/0", "nat_gateway": reference(&format!("nat-{z}"), "id") }],
                            "subnets": [private],
                        }),
                    ));
                        route_tables.push(reference(&format!("private-routes-{z}"), "id"));
                    }
                } else {
                    // No route out: tasks reach AWS through the endpoints only.
                    out.push(Desired::new(
                        "private-routes",
                        Kind::RouteTable,
                        json!({ "vpc": reference("vpc", "id"), "routes": [], "subnets": privates.clone() }),
                    ));
                    route_tables.push(reference("private-routes", "id"));
                }
                (reference("vpc", "id"), publics, privates, route_tables)
            }
        };

    // Security groups: the internet reaches the load balancer, the load balancer reaches the
    // services' ports, the services reach the endpoints.
    let ports: Vec<u16> = {
        let mut p: Vec<u16> = stack.services.values().filter(|s| s.role == Role::Api).filter_map(|s| s.port).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let mut anywhere = vec!["0.0.0.0/0"];
    if dualstack(stack) {
        anywhere.push("::/0");
    }
    let lb_ingress: Vec<Value> = [80, 443]
        .iter()
        .flat_map(|port| {
            anywhere.iter().map(move |c| json!({ "protocol": "tcp", "from": port, "to": port, "cidr": c }))
        })
        .collect();
    out.push(Desired::new(
        "lb-sg",
        Kind::SecurityGroup,
        json!({
            "vpc": vpc,
            "name": format!("{name}-lb"),
            "description": format!("aira {name}: load balancer, HTTP and HTTPS from anywhere"),
            "ingress": lb_ingress,
        }),
    ));
    out.push(Desired::new(
        "services-sg",
        Kind::SecurityGroup,
        json!({
            "vpc": vpc,
            "name": format!("{name}-services"),
            "description": format!("aira {name}: services, their ports from the load balancer only"),
            "ingress": ports.iter().map(|p| json!({ "protocol": "tcp", "from": p, "to": p, "source": reference("lb-sg", "id") })).collect::<Vec<_>>(),
        }),
    ));
    let interface: Vec<Endpoint> = net.endpoints.iter().copied().filter(|e| !is_gateway(*e)).collect();
    if !interface.is_empty() {
        out.push(Desired::new(
            "endpoints-sg",
            Kind::SecurityGroup,
            json!({
                "vpc": vpc,
                "name": format!("{name}-endpoints"),
                "description": format!("aira {name}: VPC endpoints, HTTPS from the services"),
                "ingress": [{ "protocol": "tcp", "from": 443, "to": 443, "source": reference("services-sg", "id") }],
            }),
        ));
    }
    for e in &net.endpoints {
        let service = endpoint_service(*e);
        let id = format!("endpoint-{}", service.replace('.', "-"));
        let props = if is_gateway(*e) {
            json!({
                "vpc": vpc,
                "service": format!("com.amazonaws.{}.{service}", facts.region),
                "type": "Gateway",
                "route_tables": private_route_tables,
            })
        } else {
            json!({
                "vpc": vpc,
                "service": format!("com.amazonaws.{}.{service}", facts.region),
                "type": "Interface",
                "subnets": private_subnets,
                "security_groups": [reference("endpoints-sg", "id")],
                "private_dns": true,
            })
        };
        out.push(Desired::new(&id, Kind::VpcEndpoint, props));
    }
    Ok((out, Placement { vpc, public_subnets, private_subnets }))
}

/// The load balancer answers over IPv4 and IPv6: aira made the network, with IPv6.
fn dualstack(stack: &Stack) -> bool {
    stack.network.ipv6 && stack.network.existing.is_none()
}

fn is_gateway(e: Endpoint) -> bool {
    matches!(e, Endpoint::S3 | Endpoint::DynamoDb)
}

fn endpoint_service(e: Endpoint) -> &'static str {
    match e {
        Endpoint::Sqs => "sqs",
        Endpoint::EcrApi => "ecr.api",
        Endpoint::EcrDkr => "ecr.dkr",
        Endpoint::Logs => "logs",
        Endpoint::SecretsManager => "secretsmanager",
        Endpoint::S3 => "s3",
        Endpoint::DynamoDb => "dynamodb",
        Endpoint::Monitoring => "monitoring",
    }
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
    /// The worker's `/metrics` and `/healthz`, for the container health check.
    pub const WORKER_METRICS_PORT: u16 = 9090;
    /// Images the stack's ECR repository keeps (older ones expire).
    pub const KEEP_IMAGES: u64 = 20;
    /// The runtime image's non-root user (`nobody`-like, as in distroless images).
    pub const RUNTIME_USER: &str = "65532";
    /// Seconds ECS ignores a new load-balanced task's failed health checks while it starts.
    pub const HEALTH_CHECK_GRACE: i32 = 30;
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

fn statement(sid: &str, actions: &[&str], resources: Vec<Value>) -> Value {
    let mut actions: Vec<&str> = actions.to_vec();
    actions.sort_unstable();
    json!({ "Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources })
}

fn policy(statements: Vec<Value>) -> Value {
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// DynamoDB actions the runtime makes (see runtime/src/store/dynamo.rs).
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

fn services(stack: &Stack, facts: &Facts, image: &Image, place: &Placement) -> Result<Vec<Desired>, String> {
    let name = &stack.stack.0;
    let mut out = Vec::new();

    out.push(Desired::new(
        TABLE,
        Kind::Table,
        json!({
            "name": format!("{name}-data"),
            "keys": { "pk": "S", "sk": "S" },
            "billing": "PAY_PER_REQUEST",
            "point_in_time_recovery": true,
            "ttl_attribute": "expires_at",
        }),
    ));

    // The image: built and pushed to the stack's repository, or a reference.
    let image_value = match image {
        Image::Built { digest, repository: None } => {
            out.push(Desired::new(
                REPOSITORY,
                Kind::Repository,
                json!({
                    "name": format!("aira/{name}"),
                    "scan_on_push": true,
                    "keep_images": defaults::KEEP_IMAGES,
                }),
            ));
            json!({ "repository": reference(REPOSITORY, "uri"), "digest": digest })
        }
        Image::Built { digest, repository: Some(repo) } => json!({ "repository": repo, "digest": digest }),
        Image::Reference(r) => image_json(r),
    };

    // The LLM key's secret, resolved to its ARN by the pre-flight.
    let secret_arn = match stack.llm.as_ref().and_then(|l| l.api_key.as_ref()) {
        Some(key) => Some(facts.secrets.get(&key.secret).cloned().ok_or_else(|| {
            format!("llm.api_key.secret: the secret `{}` was not looked up (an internal error)", key.secret)
        })?),
        None => None,
    };

    // Execution role: what ECS itself needs to start the tasks (image, logs, the key).
    let mut exec = Vec::new();
    let ecr_repository: Option<Value> = match image {
        Image::Built { repository: None, .. } => Some(reference(REPOSITORY, "arn")),
        Image::Reference(r) => ecr_repository_arn(r).map(Value::from),
        Image::Built { repository: Some(_), .. } => None,
    };
    if let Some(repo) = ecr_repository {
        // GetAuthorizationToken has no resource: AWS accepts only "*" for it.
        exec.push(statement("EcrToken", &["ecr:GetAuthorizationToken"], vec![json!("*")]));
        exec.push(statement(
            "PullImage",
            &["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            vec![repo],
        ));
    }
    exec.push(statement(
        "WriteLogs",
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        stack.services.keys().map(|s| reference(&format!("logs-{s}"), "arn")).collect(),
    ));
    if let Some(arn) = &secret_arn {
        exec.push(statement("ReadLlmKey", &["secretsmanager:GetSecretValue"], vec![json!(arn)]));
    }
    out.push(Desired::new(
        EXECUTION_ROLE,
        Kind::Role,
        json!({
            "name": format!("{name}-execution"),
            "path": format!("/aira/{name}/"),
            "trust_service": "ecs-tasks.amazonaws.com",
            "managed_policies": [],
            "policy": policy(exec),
        }),
    ));

    out.push(Desired::new(
        CLUSTER,
        Kind::Cluster,
        json!({
            "name": name,
            // Autoscaling on backlog per task divides by ContainerInsights' RunningTaskCount.
            "container_insights": stack.services.values().any(|s| matches!(s.count, Count::Auto(_))),
        }),
    ));

    // Edge: certificate, load balancer, listeners, target group and DNS for the public service.
    let public = stack.services.iter().find(|(_, s)| s.public);
    let zone = match (&stack.domain, &facts.hosted_zone) {
        (Some(_), Some(z)) => Some(z),
        (Some(d), None) => {
            return Err(format!("domain.zone: the hosted zone `{}` was not looked up (an internal error)", d.zone))
        }
        _ => None,
    };
    if let Some((svc_name, svc)) = public {
        let tg = format!("tg-{svc_name}");
        let port = svc.port.unwrap_or(8080);
        out.push(Desired::new(
            &tg,
            Kind::TargetGroup,
            json!({
                "name": bounded_name(&format!("{name}-{svc_name}"), 32),
                "protocol": "HTTP",
                "port": port,
                "target_type": "ip",
                "vpc": place.vpc,
                "health_check": {
                    "path": svc.health.as_ref().map(|h| h.0.as_str()).unwrap_or("/healthz"),
                    "interval": defaults::HEALTH_INTERVAL,
                    "timeout": defaults::HEALTH_TIMEOUT,
                    "healthy": 2,
                    "unhealthy": 3,
                    "matcher": "200",
                },
                "deregistration_delay": defaults::DEREGISTRATION_DELAY,
            }),
        ));
        let mut lb = json!({
            "name": bounded_name(name, 32),
            "scheme": "internet-facing",
            "ip_address_type": if dualstack(stack) { "dualstack" } else { "ipv4" },
            "subnets": place.public_subnets,
            "security_groups": [reference("lb-sg", "id")],
        });
        if let Some(z) = zone {
            // Where its alias records live: lets `down` find them without the stack file.
            lb["dns_zone"] = json!(z.id);
        }
        out.push(Desired::new(LOAD_BALANCER, Kind::LoadBalancer, lb));
        let forward = json!({ "type": "forward", "target_group": reference(&tg, "arn") });
        match (&stack.domain, zone) {
            (Some(domain), Some(z)) => {
                out.push(Desired::new(
                    CERTIFICATE,
                    Kind::Certificate,
                    json!({ "domain": domain.name.0, "validation": "DNS", "zone_id": z.id }),
                ));
                out.push(Desired::new(
                    "listener-http",
                    Kind::Listener,
                    json!({
                        "load_balancer": reference(LOAD_BALANCER, "arn"),
                        "port": 80,
                        "protocol": "HTTP",
                        "default_action": { "type": "redirect", "protocol": "HTTPS", "port": "443", "status": "HTTP_301" },
                    }),
                ));
                out.push(Desired::new(
                    "listener-https",
                    Kind::Listener,
                    json!({
                        "load_balancer": reference(LOAD_BALANCER, "arn"),
                        "port": 443,
                        "protocol": "HTTPS",
                        "ssl_policy": defaults::TLS_POLICY,
                        "certificate": reference(CERTIFICATE, "arn"),
                        "default_action": forward,
                    }),
                ));
                let types: &[(&str, &str)] =
                    if dualstack(stack) { &[("dns-a", "A"), ("dns-aaaa", "AAAA")] } else { &[("dns-a", "A")] };
                for (id, ty) in types.iter().copied() {
                    out.push(Desired::new(
                        id,
                        Kind::DnsRecord,
                        json!({
                            "zone_id": z.id,
                            "name": format!("{}.", domain.name.0.trim_end_matches('.')),
                            "type": ty,
                            "alias": { "dns_name": reference(LOAD_BALANCER, "dns_name"), "zone_id": reference(LOAD_BALANCER, "zone_id") },
                        }),
                    ));
                }
            }
            _ => out.push(Desired::new(
                "listener-http",
                Kind::Listener,
                json!({
                    "load_balancer": reference(LOAD_BALANCER, "arn"),
                    "port": 80,
                    "protocol": "HTTP",
                    "default_action": forward,
                }),
            )),
        }
    }

    let queue_arn = reference(QUEUE, "arn");
    let table_arn = reference(TABLE, "arn");
    for (svc_name, svc) in &stack.services {
        let logs = format!("logs-{svc_name}");
        out.push(Desired::new(
            &logs,
            Kind::LogGroup,
            json!({ "name": log_group_name(name, svc_name), "retention_days": defaults::LOG_RETENTION_DAYS }),
        ));
        // Task role: what the runtime's own calls need, on the stack's queue and table only.
        let queue_actions: &[&str] = match svc.role {
            Role::Api => &["sqs:GetQueueAttributes", "sqs:SendMessage"],
            Role::Worker => {
                &["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
            }
        };
        let role = format!("role-{svc_name}");
        out.push(Desired::new(
            &role,
            Kind::Role,
            json!({
                "name": format!("{name}-{svc_name}"),
                "path": format!("/aira/{name}/"),
                "trust_service": "ecs-tasks.amazonaws.com",
                "managed_policies": [],
                "policy": policy(vec![
                    statement("Queue", queue_actions, vec![queue_arn.clone()]),
                    statement("Table", TABLE_ACTIONS, vec![table_arn.clone()]),
                ]),
            }),
        ));

        let (command, health_port) = match svc.role {
            Role::Api => ("api", svc.port.unwrap_or(8080)),
            Role::Worker => ("worker", defaults::WORKER_METRICS_PORT),
        };
        let mut env = json!({
            "AIRA_QUEUE_URL": reference(QUEUE, "url"),
            "AIRA_TABLE": reference(TABLE, "name"),
            "AIRA_VISIBILITY_TIMEOUT_SECS": stack.queue.visibility_timeout.secs().to_string(),
            "AIRA_RECEIVE_WAIT_SECS": stack.queue.receive_wait.secs().to_string(),
        });
        if let Some(dl) = &stack.queue.dead_letter {
            env["AIRA_MAX_RECEIVES"] = json!(dl.max_receives.to_string());
        }
        match svc.role {
            Role::Api => env["AIRA_LISTEN"] = json!(format!("0.0.0.0:{health_port}")),
            Role::Worker => env["AIRA_METRICS_LISTEN"] = json!(format!("0.0.0.0:{health_port}")),
        }
        if let Some(llm) = &stack.llm {
            env["AIRA_LLM_BASE_URL"] = json!(llm.base_url.0);
            env["AIRA_LLM_MODEL"] = json!(llm.model);
        }
        let secrets = match &secret_arn {
            Some(arn) => json!({ "AIRA_LLM_API_KEY": arn }),
            None => json!({}),
        };
        let task = task_id(svc_name);
        out.push(Desired::new(
            &task,
            Kind::TaskDefinition,
            json!({
                "family": format!("{name}-{svc_name}"),
                "cpu": svc.cpu.0,
                "memory": svc.memory,
                "execution_role": reference(EXECUTION_ROLE, "arn"),
                "task_role": reference(&role, "arn"),
                "container": {
                    "name": svc_name,
                    "image": image_value,
                    "command": [command],
                    "port": (svc.role == Role::Api).then_some(health_port),
                    "environment": env,
                    "secrets": secrets,
                    "log_group": reference(&logs, "name"),
                    "health_check": [crate::image::build::BINARY_IN_IMAGE, "health", format!("http://127.0.0.1:{health_port}/healthz")],
                    "user": defaults::RUNTIME_USER,
                    // The runtime writes nothing to disk on AWS (DynamoDB and SQS backends).
                    "read_only_root": true,
                },
            }),
        ));

        let count = match &svc.count {
            Count::Fixed(n) => json!(n),
            Count::Auto(a) => json!({
                "min": a.min,
                "max": a.max,
                "backlog_per_task": a.backlog_per_task,
                "queue": reference(QUEUE, "name"),
            }),
        };
        let load_balancer = match public {
            Some((p, _)) if p == svc_name => json!({
                "target_group": reference(&format!("tg-{svc_name}"), "arn"),
                "container": svc_name,
                "port": health_port,
            }),
            _ => Value::Null,
        };
        let mut props = json!({
            "name": svc_name,
            "cluster": reference(CLUSTER, "arn"),
            "task_definition": reference(&task, "arn"),
            "count": count,
            "subnets": place.private_subnets,
            "security_groups": [reference("services-sg", "id")],
            "public_ip": false,
            "deployment": { "circuit_breaker": true, "rollback": true, "min_healthy_percent": 100, "max_percent": 200 },
            "load_balancer": load_balancer,
        });
        let has_lb = !load_balancer.is_null();
        if has_lb {
            props["health_check_grace"] = json!(defaults::HEALTH_CHECK_GRACE);
        }
        let mut service = Desired::new(&service_id(svc_name), Kind::Service, props);
        if has_lb {
            // Listeners first: ECS refuses a target group that no listener uses.
            service.depends_on.insert("listener-http".into());
            if zone.is_some() {
                service.depends_on.insert("listener-https".into());
            }
        }
        out.push(service);
    }
    out.extend(alarms(stack, public.map(|(n, _)| n.as_str())));
    Ok(out)
}

pub const TOPIC: &str = "alerts";

/// A CloudWatch metric in an alarm: namespace, name, dimensions, statistic.
fn metric(namespace: &str, name: &str, dimensions: Value, statistic: &str) -> Value {
    json!({ "namespace": namespace, "metric": name, "dimensions": dimensions, "statistic": statistic })
}

/// An alarm on one metric (`metric`) or on an expression over several (`metrics` by id +
/// `expression`), notifying the stack's topic when it fires and when it recovers.
fn alarm(name: String, description: &str, source: Value, threshold: f64, comparison: &str, periods: u32) -> Value {
    let mut a = json!({
        "name": name,
        "description": description,
        "period": 60,
        "evaluation_periods": periods,
        "threshold": threshold,
        "comparison": comparison,
        "treat_missing_data": "notBreaching",
        "actions": [reference(TOPIC, "arn")],
    });
    for (k, v) in source.as_object().into_iter().flatten() {
        a[k] = v.clone();
    }
    a
}

/// The alert topic and the alarms: dead letters, queue age, 5xx rate and unhealthy targets.
fn alarms(stack: &Stack, public: Option<&str>) -> Vec<Desired> {
    let name = &stack.stack.0;
    let alerts = &stack.alerts;
    let mut out = vec![Desired::new(
        TOPIC,
        Kind::Topic,
        json!({
            "name": format!("{name}-alerts"),
            "subscriptions": alerts.email.iter().map(|e| format!("email:{e}")).collect::<Vec<_>>(),
        }),
    )];
    let queue = json!({ "QueueName": reference(QUEUE, "name") });
    if stack.queue.dead_letter.is_some() {
        out.push(Desired::new(
            "alarm-dead-letters",
            Kind::Alarm,
            alarm(
                format!("{name}-dead-letters"),
                "Messages the worker gave up on are waiting in the dead-letter queue (aira dlq list).",
                json!({ "metric": metric("AWS/SQS", "ApproximateNumberOfMessagesVisible", json!({ "QueueName": reference(DEAD_LETTER_QUEUE, "name") }), "Maximum") }),
                1.0,
                "GreaterThanOrEqualToThreshold",
                1,
            ),
        ));
    }
    out.push(Desired::new(
        "alarm-queue-age",
        Kind::Alarm,
        alarm(
            format!("{name}-queue-age"),
            "The oldest queued chat request has waited too long: the workers do not keep up or are down.",
            json!({ "metric": metric("AWS/SQS", "ApproximateAgeOfOldestMessage", queue, "Maximum") }),
            alerts.oldest_message.secs() as f64,
            "GreaterThanThreshold",
            3,
        ),
    ));
    if let Some(svc) = public {
        let lb = json!({ "LoadBalancer": reference(LOAD_BALANCER, "arn_suffix") });
        let elb = |m: &str| metric("AWS/ApplicationELB", m, lb.clone(), "Sum");
        out.push(Desired::new(
            "alarm-5xx",
            Kind::Alarm,
            alarm(
                format!("{name}-5xx-rate"),
                "Too many requests through the load balancer end in a 5xx (percent of all requests).",
                json!({
                    "expression": "100 * (FILL(elb, 0) + FILL(target, 0)) / requests",
                    "metrics": {
                        "elb": elb("HTTPCode_ELB_5XX_Count"),
                        "target": elb("HTTPCode_Target_5XX_Count"),
                        "requests": elb("RequestCount"),
                    },
                }),
                alerts.error_rate as f64,
                "GreaterThanThreshold",
                3,
            ),
        ));
        out.push(Desired::new(
            "alarm-unhealthy",
            Kind::Alarm,
            alarm(
                format!("{name}-unhealthy-targets"),
                "Tasks of the public service fail the load balancer's health check.",
                json!({ "metric": metric(
                    "AWS/ApplicationELB",
                    "UnHealthyHostCount",
                    json!({ "LoadBalancer": reference(LOAD_BALANCER, "arn_suffix"), "TargetGroup": reference(&format!("tg-{svc}"), "arn_suffix") }),
                    "Maximum",
                ) }),
                1.0,
                "GreaterThanOrEqualToThreshold",
                3,
            ),
        ));
    }
    out
}

/// `repo@sha256:…` as `{repository, digest}` (the form observed task definitions report);
/// any other reference as a string.
pub fn image_json(reference: &str) -> Value {
    match reference.split_once("@sha256:") {
        Some((repo, hex)) => json!({ "repository": repo, "digest": format!("sha256:{hex}") }),
        None => json!(reference),
    }
}

/// The ARN of an ECR repository named by an image reference
/// (`123456789012.dkr.ecr.us-east-1.amazonaws.com/name@…`), `None` for other registries.
fn ecr_repository_arn(reference: &str) -> Option<String> {
    let (host, rest) = reference.split_once('/')?;
    let mut parts = host.split('.');
    let (account, dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if dkr != "dkr" || ecr != "ecr" || !account.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let partition = if region.starts_with("cn-") { "aws-cn" } else { "aws" };
    let name = rest.split(['@', ':']).next()?;
    Some(format!("arn:{partition}:ecr:{region}:{account}:repository/{name}"))
}
