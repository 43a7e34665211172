//! The compute: the table, the repository, the roles, the cluster, and per service its log
//! group, task role, task definition and service. The edge is `edge.rs`.

use super::*;

pub(super) fn services(
    stack: &Stack,
    facts: &Facts,
    image: &Image,
    place: &Placement,
) -> Result<Vec<Desired>, ExpandError> {
    let name = &stack.stack.0;
    let mut out = vec![table(name)];
    let image_value = image_value(name, image, &mut out);
    let secret_arn = secret_arn(stack, facts)?;
    out.push(execution_role(stack, facts, image, secret_arn.as_deref()));
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
    Desired::of(
        TABLE,
        &kind::Table {
            name: format!("{name}-data"),
            keys: [("pk", "S".to_string()), ("sk", "S".to_string())].into_iter().collect(),
            billing: "PAY_PER_REQUEST".into(),
            point_in_time_recovery: true,
            ttl_attribute: Some("expires_at".into()),
        },
    )
}

/// What the task definitions run: built and pushed to the stack's repository (which then joins
/// `out`), or a reference.
fn image_value(name: &str, image: &Image, out: &mut Vec<Desired>) -> kind::ContainerImage {
    let (digest, repository, source) = match image {
        Image::Reference(r) => return container_image(r),
        Image::Built { digest, repository, source } => (digest.as_str(), repository, source.clone()),
        Image::ToBuild { source, repository } => (UNBUILT_DIGEST, repository, Some(source.clone())),
    };
    let repository = match repository {
        Some(repo) => repo.as_str().into(),
        None => {
            out.push(Desired::of(
                REPOSITORY,
                &kind::Repository {
                    name: format!("aira/{name}"),
                    scan_on_push: true,
                    keep_images: Some(defaults::KEEP_IMAGES),
                },
            ));
            Val::to(REPOSITORY, "uri")
        }
    };
    kind::ContainerImage::Pinned(kind::PinnedImage { repository, digest: digest.to_string(), source })
}

/// The LLM key's secret, resolved to its ARN by the pre-flight.
fn secret_arn(stack: &Stack, facts: &Facts) -> Result<Option<String>, ExpandError> {
    match stack.llm.as_ref().and_then(|l| l.api_key.as_ref()) {
        Some(key) => Ok(Some(facts.secrets.get(&key.secret).cloned().ok_or_else(|| ExpandError::NotLookedUp {
            key: "llm.api_key.secret",
            what: format!("the secret `{}`", key.secret),
        })?)),
        None => Ok(None),
    }
}

/// What ECS itself needs to start the tasks (image, logs, the key).
fn execution_role(stack: &Stack, facts: &Facts, image: &Image, secret_arn: Option<&str>) -> Desired {
    let mut exec = Vec::new();
    let ecr_repository: Option<Val<String>> = match image {
        Image::Built { repository: None, .. } | Image::ToBuild { repository: None, .. } => {
            Some(Val::to(REPOSITORY, "arn"))
        }
        Image::Reference(r) => ecr_repository_arn(r).map(Val::from),
        Image::Built { repository: Some(_), .. } | Image::ToBuild { repository: Some(_), .. } => None,
    };
    if let Some(repo) = ecr_repository {
        // GetAuthorizationToken has no resource: AWS accepts only "*" for it.
        exec.push(statement("EcrToken", &["ecr:GetAuthorizationToken"], vec!["*".into()]));
        exec.push(statement(
            "PullImage",
            &["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            vec![repo],
        ));
    }
    exec.push(statement(
        "WriteLogs",
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        stack.services.keys().map(|s| Val::to(&format!("logs-{s}"), "arn")).collect(),
    ));
    if let Some(arn) = secret_arn {
        exec.push(statement("ReadLlmKey", &["secretsmanager:GetSecretValue"], vec![arn.into()]));
        if facts.secrets_own_key.iter().any(|name| facts.secrets.get(name).map(String::as_str) == Some(arn)) {
            exec.push(decrypt_secret(&facts.region, &facts.account, arn));
        }
    }
    task_role(EXECUTION_ROLE, &stack.stack.0, "execution", exec)
}

fn cluster(stack: &Stack) -> Desired {
    Desired::of(
        CLUSTER,
        &kind::Cluster {
            name: stack.stack.0.clone(),
            // Autoscaling on backlog per task divides by ContainerInsights' RunningTaskCount.
            container_insights: stack.services.values().any(|s| matches!(s.count, Count::Auto(_))),
        },
    )
}

fn log_group(name: &str, svc_name: &str) -> Desired {
    Desired::of(
        &format!("logs-{svc_name}"),
        &kind::LogGroup { name: log_group_name(name, svc_name), retention_days: Some(defaults::LOG_RETENTION_DAYS) },
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
        statement("Queue", queue_actions, vec![Val::to(QUEUE, "arn")]),
        statement("Table", TABLE_ACTIONS, vec![Val::to(TABLE, "arn")]),
    ];
    if stack.prometheus() {
        statements.push(statement("Metrics", &["aps:RemoteWrite"], vec![Val::to(monitoring::WORKSPACE, "arn")]));
    }
    if let (Role::Worker, Some(llm)) = (svc.role, stack.bedrock()) {
        // Converse is authorized as `bedrock:InvokeModel` on the model's ARN, ConverseStream (the
        // worker's default) as `bedrock:InvokeModelWithResponseStream`; through an inference
        // profile, on the profile and on its model in every region the profile routes to.
        let model = facts.bedrock.clone().unwrap_or_else(|| assumed_model(&facts.region, &facts.account, &llm.model));
        statements.push(statement(
            "Model",
            &["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
            model.invoke.into_iter().map(Val::from).collect(),
        ));
        if model.third_party {
            // The first call of another provider's model subscribes the account through AWS
            // Marketplace with the caller's rights (Bedrock User Guide, "Request access to
            // models"); these actions take no resource.
            let subscribe =
                ["aws-marketplace:Subscribe", "aws-marketplace:Unsubscribe", "aws-marketplace:ViewSubscriptions"];
            statements.push(statement("ModelSubscription", &subscribe, vec!["*".into()]));
        }
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
fn environment(stack: &Stack, facts: &Facts, svc: &Service, is_public: bool) -> kind::Named<Val<String>> {
    let name = &stack.stack.0;
    let (_, health_port) = command_and_health_port(svc);
    let mut env: kind::Named<Val<String>> = [
        ("AIRA_QUEUE_URL", Val::to(QUEUE, "url")),
        ("AIRA_TABLE", Val::to(TABLE, "name")),
        ("AIRA_VISIBILITY_TIMEOUT_SECS", stack.queue.visibility_timeout.secs().to_string().into()),
        ("AIRA_RECEIVE_WAIT_SECS", stack.queue.receive_wait.secs().to_string().into()),
    ]
    .into_iter()
    .collect();
    if let Some(dl) = &stack.queue.dead_letter {
        env.set("AIRA_MAX_RECEIVES", dl.max_receives.to_string());
    }
    if svc.role == Role::Api {
        env.set("AIRA_LISTEN", format!("0.0.0.0:{health_port}"));
    }
    env.set("AIRA_METRICS_LISTEN", format!("0.0.0.0:{}", defaults::OPS_PORT));
    if stack.prometheus() {
        // The runtime pushes its metrics there, labelled with the stack (runtime/README.md).
        env.set("AIRA_REMOTE_WRITE_URL", Val::to(monitoring::WORKSPACE, "remote_write_url"));
        env.set("AIRA_STACK", name.clone());
    }
    if is_public {
        // The load balancer appends the client's address to X-Forwarded-For: the runtime's
        // sign-in limits key on it instead of the load balancer's own address.
        env.set("AIRA_BEHIND_LOAD_BALANCER", "true");
    }
    if let Some(llm) = &stack.llm {
        match (llm.provider, &llm.base_url) {
            (LlmProvider::Bedrock, _) => {
                env.set("AIRA_LLM_PROVIDER", "bedrock");
                // The runtime's Bedrock client takes its region from the SDK's chain.
                env.set("AWS_REGION", facts.region.clone());
            }
            (LlmProvider::Openai, Some(url)) => env.set("AIRA_LLM_BASE_URL", url.0.clone()),
            (LlmProvider::Openai, None) => {}
        }
        env.set("AIRA_LLM_MODEL", llm.model.clone());
    }
    for (key, value) in spend_env(stack) {
        env.set(key, value);
    }
    env
}

fn task_definition(
    stack: &Stack,
    facts: &Facts,
    svc_name: &str,
    svc: &Service,
    image_value: &kind::ContainerImage,
    secret_arn: Option<&str>,
    is_public: bool,
) -> Desired {
    let (command, health_port) = command_and_health_port(svc);
    let secrets = secret_arn.map(|arn| ("AIRA_LLM_API_KEY", arn.to_string())).into_iter().collect();
    Desired::of(
        &task_id(svc_name),
        &kind::TaskDefinition {
            family: format!("{}-{svc_name}", stack.stack.0),
            cpu: svc.cpu.0.into(),
            memory: svc.memory.into(),
            execution_role: Some(Val::to(EXECUTION_ROLE, "arn")),
            task_role: Some(Val::to(&format!("role-{svc_name}"), "arn")),
            container: Some(kind::Container {
                name: svc_name.to_string(),
                image: image_value.clone(),
                command: vec![command.to_string()],
                port: (svc.role == Role::Api).then_some(health_port),
                environment: environment(stack, facts, svc, is_public),
                secrets,
                log_group: Some(Val::to(&format!("logs-{svc_name}"), "name")),
                health_check: vec![
                    defaults::RUNTIME_BINARY.to_string(),
                    "health".to_string(),
                    format!("http://127.0.0.1:{health_port}/healthz"),
                ],
                user: Some(defaults::RUNTIME_UID.to_string()),
                // The runtime writes nothing to disk on AWS (DynamoDB and SQS backends).
                read_only_root: true,
            }),
        },
    )
}

fn service(svc_name: &str, svc: &Service, place: &Placement, is_public: bool, https: bool) -> Desired {
    let (_, health_port) = command_and_health_port(svc);
    let count = match &svc.count {
        Count::Fixed(n) => kind::TaskCount::Fixed(*n),
        Count::Auto(a) => kind::TaskCount::Auto(kind::AutoScaling {
            min: a.min,
            max: a.max,
            backlog_per_task: Some(a.backlog_per_task),
            queue: Some(Val::to(QUEUE, "name")),
        }),
    };
    let load_balancer = is_public.then(|| kind::ServiceLoadBalancer {
        target_group: Val::to(&format!("tg-{svc_name}"), "arn"),
        container: svc_name.to_string(),
        port: health_port,
    });
    let subnets = place.private_subnets.clone();
    let props = kind::Service {
        name: svc_name.to_string(),
        cluster: Val::to(CLUSTER, "arn"),
        task_definition: Val::to(&task_id(svc_name), "arn"),
        count,
        subnets,
        security_groups: vec![Val::to("services-sg", "id")],
        public_ip: false,
        deployment: Some(kind::Deployment {
            circuit_breaker: true,
            rollback: true,
            min_healthy_percent: 100,
            max_percent: 200,
        }),
        load_balancer,
        health_check_grace: is_public.then_some(defaults::HEALTH_CHECK_GRACE),
    };
    let mut service = Desired::of(&service_id(svc_name), &props);
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
fn task_role(id: &str, stack: &str, suffix: &str, statements: Vec<kind::Statement>) -> Desired {
    Desired::of(
        id,
        &kind::Role {
            name: format!("{stack}-{suffix}"),
            path: format!("/aira/{stack}/"),
            trust_service: "ecs-tasks.amazonaws.com".into(),
            managed_policies: Vec::new(),
            policy: Some(kind::Policy::Document(kind::PolicyDocument {
                version: "2012-10-17".into(),
                statement: statements,
            })),
        },
    )
}

/// Allows `actions` (sorted) on `resources`.
/// A secret encrypted with a customer managed key: reading it decrypts with that key, which
/// the reader's policy must allow. As AWS's own `AWSSecretsManagerClientReadOnlyAccess` does:
/// any key of the account, only through Secrets Manager, only for this secret (its ARN is the
/// encryption context Secrets Manager sends).
fn decrypt_secret(region: &str, account: &str, secret_arn: &str) -> kind::Statement {
    let keys = format!("arn:{}:kms:{region}:{account}:key/*", partition(region));
    let when = [
        ("kms:EncryptionContext:SecretARN".to_string(), secret_arn.to_string()),
        ("kms:ViaService".to_string(), format!("secretsmanager.{region}.amazonaws.com")),
    ];
    let condition = [("StringEquals".to_string(), when.into_iter().collect())].into_iter().collect();
    kind::Statement { condition: Some(condition), ..statement("DecryptLlmKey", &["kms:Decrypt"], vec![keys.into()]) }
}

fn statement(sid: &str, actions: &[&str], resources: Vec<Val<String>>) -> kind::Statement {
    let mut action: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
    action.sort_unstable();
    kind::Statement { sid: sid.into(), effect: "Allow".into(), action, resource: resources, condition: None }
}
