//! The compute and the edge: what the services need, and the services.

use super::*;

pub(super) fn services(stack: &Stack, facts: &Facts, image: &Image, place: &Placement) -> Result<Vec<Desired>, String> {
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
    out.push(task_role(EXECUTION_ROLE, name, "execution", exec));

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
        let mut lb = Desired::new(LOAD_BALANCER, Kind::LoadBalancer, lb);
        // An internet-facing load balancer needs the gateway attached and routed.
        lb.depends_on.extend(place.lb_paths.iter().cloned());
        out.push(lb);
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
        let mut statements = vec![
            statement("Queue", queue_actions, vec![queue_arn.clone()]),
            statement("Table", TABLE_ACTIONS, vec![table_arn.clone()]),
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
        out.push(task_role(&role, name, svc_name, statements));

        let (command, health_port) = match svc.role {
            Role::Api => ("api", svc.port.unwrap_or(8080)),
            Role::Worker => ("worker", defaults::OPS_PORT),
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
        if svc.role == Role::Api {
            env["AIRA_LISTEN"] = json!(format!("0.0.0.0:{health_port}"));
        }
        env["AIRA_METRICS_LISTEN"] = json!(format!("0.0.0.0:{}", defaults::OPS_PORT));
        if stack.prometheus() {
            // The runtime pushes its metrics there, labelled with the stack (runtime/README.md).
            env["AIRA_REMOTE_WRITE_URL"] = reference(monitoring::WORKSPACE, "remote_write_url");
            env["AIRA_STACK"] = json!(name);
        }
        if public.is_some_and(|(p, _)| p == svc_name) {
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
                    "health_check": [defaults::RUNTIME_BINARY, "health", format!("http://127.0.0.1:{health_port}/healthz")],
                    "user": defaults::RUNTIME_UID.to_string(),
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
        service.depends_on.extend(place.task_paths.iter().cloned());
        if has_lb {
            // Listeners first: ECS refuses a target group that no listener uses.
            service.depends_on.insert("listener-http".into());
            if zone.is_some() {
                service.depends_on.insert("listener-https".into());
            }
        }
        out.push(service);
    }
    out.extend(super::alarms::alarms(stack, public.map(|(n, _)| n.as_str())));
    Ok(out)
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
