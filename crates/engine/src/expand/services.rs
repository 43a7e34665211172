//! The compute: the table, the repository, the roles, the cluster, and per service its log
//! group, task role, task definition and service. The edge is `edge.rs`.

use super::*;

pub(super) fn services(stack: &Stack, facts: &Facts, image: &Image, place: &Placement) -> Result<Vec<Desired>, String> {
    let name = &stack.stack.0;
    let mut out = vec![table(name)];
    let image_value = image_value(name, image, &mut out);
    let secret_arn = secret_arn(stack, facts)?;
    out.push(execution_role(stack, image, secret_arn.as_deref()));
    out.push(cluster(stack));
    let edge = super::edge::edge(stack, facts, place)?;
    let public = edge.public.clone();
    out.extend(edge.resources);
    for (svc_name, svc) in &stack.services {
        out.push(log_group(name, svc_name));
        out.push(task_role_of(stack, facts, svc_name, svc));
        let is_public = public.as_deref() == Some(svc_name.as_str());
        out.push(task_definition(stack, facts, svc_name, svc, &image_value, secret_arn.as_deref(), is_public));
        out.push(service(svc_name, svc, place, is_public, edge.https));
    }
    out.extend(super::alarms::alarms(stack, public.as_deref()));
    Ok(out)
}

fn table(name: &str) -> Desired {
    Desired::new(
        TABLE,
        Kind::Table,
        json!({
            "name": format!("{name}-data"),
            "keys": { "pk": "S", "sk": "S" },
            "billing": "PAY_PER_REQUEST",
            "point_in_time_recovery": true,
            "ttl_attribute": "expires_at",
        }),
    )
}

/// What the task definitions run: built and pushed to the stack's repository (which then joins
/// `out`), or a reference.
fn image_value(name: &str, image: &Image, out: &mut Vec<Desired>) -> Value {
    match image {
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
    }
}

/// The LLM key's secret, resolved to its ARN by the pre-flight.
fn secret_arn(stack: &Stack, facts: &Facts) -> Result<Option<String>, String> {
    match stack.llm.as_ref().and_then(|l| l.api_key.as_ref()) {
        Some(key) => Ok(Some(facts.secrets.get(&key.secret).cloned().ok_or_else(|| {
            format!("llm.api_key.secret: the secret `{}` was not looked up (an internal error)", key.secret)
        })?)),
        None => Ok(None),
    }
}

/// What ECS itself needs to start the tasks (image, logs, the key).
fn execution_role(stack: &Stack, image: &Image, secret_arn: Option<&str>) -> Desired {
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
    if let Some(arn) = secret_arn {
        exec.push(statement("ReadLlmKey", &["secretsmanager:GetSecretValue"], vec![json!(arn)]));
    }
    task_role(EXECUTION_ROLE, &stack.stack.0, "execution", exec)
}

fn cluster(stack: &Stack) -> Desired {
    Desired::new(
        CLUSTER,
        Kind::Cluster,
        json!({
            "name": stack.stack.0,
            // Autoscaling on backlog per task divides by ContainerInsights' RunningTaskCount.
            "container_insights": stack.services.values().any(|s| matches!(s.count, Count::Auto(_))),
        }),
    )
}

fn log_group(name: &str, svc_name: &str) -> Desired {
    Desired::new(
        &format!("logs-{svc_name}"),
        Kind::LogGroup,
        json!({ "name": log_group_name(name, svc_name), "retention_days": defaults::LOG_RETENTION_DAYS }),
    )
}

/// What the runtime's own calls need, on the stack's queue and table only.
fn task_role_of(stack: &Stack, facts: &Facts, svc_name: &str, svc: &Service) -> Desired {
    let queue_actions: &[&str] = match svc.role {
        Role::Api => &["sqs:GetQueueAttributes", "sqs:SendMessage"],
        Role::Worker => {
            &["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
        }
    };
    let mut statements = vec![
        statement("Queue", queue_actions, vec![reference(QUEUE, "arn")]),
        statement("Table", TABLE_ACTIONS, vec![reference(TABLE, "arn")]),
    ];
    if stack.prometheus() {
        statements.push(statement("Metrics", &["aps:RemoteWrite"], vec![reference(monitoring::WORKSPACE, "arn")]));
    }
    if let (Role::Worker, Some(llm)) = (svc.role, stack.bedrock()) {
        // Converse is authorized as `bedrock:InvokeModel` on the model's ARN.
        statements.push(statement(
            "Model",
            &["bedrock:InvokeModel"],
            vec![json!(foundation_model_arn(&facts.region, &llm.model))],
        ));
    }
    task_role(&format!("role-{svc_name}"), &stack.stack.0, svc_name, statements)
}

/// The command a service's container runs and the port its health check asks.
fn command_and_health_port(svc: &Service) -> (&'static str, u16) {
    match svc.role {
        Role::Api => ("api", svc.port.unwrap_or(8080)),
        Role::Worker => ("worker", defaults::OPS_PORT),
    }
}

/// The runtime's configuration (runtime/README.md).
fn environment(stack: &Stack, facts: &Facts, svc: &Service, is_public: bool) -> Value {
    let name = &stack.stack.0;
    let (_, health_port) = command_and_health_port(svc);
    let mut env = json!({
        "AIRA_QUEUE_URL": reference(QUEUE, "url"),
        "AIRA_TABLE": reference(TABLE, "name"),
        "AIRA_VISIBILITY_TIMEOUT_SECS": stack.queue.visibility_timeout.secs().to_string(),
        "AIRA_RECEIVE_WAIT_SECS": stack.queue.receive_wait.secs().to_string(),
    });
    if let Some(dl) = &stack.queue.dead_letter {
        env["AIRA_MAX_RECEIVES"] = json!(dl.max_receives.to_string());
    }
    if svc.role == Role::Api {
        env["AIRA_LISTEN"] = json!(format!("0.0.0.0:{health_port}"));
    }
    env["AIRA_METRICS_LISTEN"] = json!(format!("0.0.0.0:{}", defaults::OPS_PORT));
    if stack.prometheus() {
        // The runtime pushes its metrics there, labelled with the stack (runtime/README.md).
        env["AIRA_REMOTE_WRITE_URL"] = reference(monitoring::WORKSPACE, "remote_write_url");
        env["AIRA_STACK"] = json!(name);
    }
    if is_public {
        // The load balancer appends the client's address to X-Forwarded-For: the runtime's
        // sign-in limits key on it instead of the load balancer's own address.
        env["AIRA_BEHIND_LOAD_BALANCER"] = json!("true");
    }
    if let Some(llm) = &stack.llm {
        match (llm.provider, &llm.base_url) {
            (LlmProvider::Bedrock, _) => {
                env["AIRA_LLM_PROVIDER"] = json!("bedrock");
                // The runtime's Bedrock client takes its region from the SDK's chain.
                env["AWS_REGION"] = json!(facts.region);
            }
            (LlmProvider::Openai, Some(url)) => env["AIRA_LLM_BASE_URL"] = json!(url.0),
            (LlmProvider::Openai, None) => {}
        }
        env["AIRA_LLM_MODEL"] = json!(llm.model);
    }
    for (key, value) in spend_env(stack) {
        env[key] = json!(value);
    }
    env
}

fn task_definition(
    stack: &Stack,
    facts: &Facts,
    svc_name: &str,
    svc: &Service,
    image_value: &Value,
    secret_arn: Option<&str>,
    is_public: bool,
) -> Desired {
    let (command, health_port) = command_and_health_port(svc);
    let secrets = match secret_arn {
        Some(arn) => json!({ "AIRA_LLM_API_KEY": arn }),
        None => json!({}),
    };
    Desired::new(
        &task_id(svc_name),
        Kind::TaskDefinition,
        json!({
            "family": format!("{}-{svc_name}", stack.stack.0),
            "cpu": svc.cpu.0,
            "memory": svc.memory,
            "execution_role": reference(EXECUTION_ROLE, "arn"),
            "task_role": reference(&format!("role-{svc_name}"), "arn"),
            "container": {
                "name": svc_name,
                "image": image_value,
                "command": [command],
                "port": (svc.role == Role::Api).then_some(health_port),
                "environment": environment(stack, facts, svc, is_public),
                "secrets": secrets,
                "log_group": reference(&format!("logs-{svc_name}"), "name"),
                "health_check": [defaults::RUNTIME_BINARY, "health", format!("http://127.0.0.1:{health_port}/healthz")],
                "user": defaults::RUNTIME_UID.to_string(),
                // The runtime writes nothing to disk on AWS (DynamoDB and SQS backends).
                "read_only_root": true,
            },
        }),
    )
}

fn service(svc_name: &str, svc: &Service, place: &Placement, is_public: bool, https: bool) -> Desired {
    let (_, health_port) = command_and_health_port(svc);
    let count = match &svc.count {
        Count::Fixed(n) => json!(n),
        Count::Auto(a) => json!({
            "min": a.min,
            "max": a.max,
            "backlog_per_task": a.backlog_per_task,
            "queue": reference(QUEUE, "name"),
        }),
    };
    let load_balancer = if is_public {
        json!({
            "target_group": reference(&format!("tg-{svc_name}"), "arn"),
            "container": svc_name,
            "port": health_port,
        })
    } else {
        Value::Null
    };
    let mut props = json!({
        "name": svc_name,
        "cluster": reference(CLUSTER, "arn"),
        "task_definition": reference(&task_id(svc_name), "arn"),
        "count": count,
        "subnets": place.private_subnets,
        "security_groups": [reference("services-sg", "id")],
        "public_ip": false,
        "deployment": { "circuit_breaker": true, "rollback": true, "min_healthy_percent": 100, "max_percent": 200 },
        "load_balancer": load_balancer,
    });
    if is_public {
        props["health_check_grace"] = json!(defaults::HEALTH_CHECK_GRACE);
    }
    let mut service = Desired::new(&service_id(svc_name), Kind::Service, props);
    service.depends_on.extend(place.task_paths.iter().cloned());
    if is_public {
        // Listeners first: ECS refuses a target group that no listener uses.
        service.depends_on.insert("listener-http".into());
        if https {
            service.depends_on.insert("listener-https".into());
        }
    }
    service
}

/// A role ECS tasks assume (`<stack>-<suffix>` under the stack's path), with one inline policy.
fn task_role(id: &str, stack: &str, suffix: &str, statements: Vec<Value>) -> Desired {
    Desired::new(
        id,
        Kind::Role,
        json!({
            "name": format!("{stack}-{suffix}"),
            "path": format!("/aira/{stack}/"),
            "trust_service": "ecs-tasks.amazonaws.com",
            "managed_policies": [],
            "policy": policy(statements),
        }),
    )
}
