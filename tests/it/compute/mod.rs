//! The compute kinds (DynamoDB table, log groups, IAM roles, ECR repository, ECS cluster, task
//! definitions, services) driven through the `Provider` trait against the moto server, checked by
//! reading AWS back with the SDK. The network, the queue and the secret are made with the SDK.
//! The image push is tested against `docker-registry` on loopback.
//!
//! The moto server must run with `MOTO_ECS_SERVICE_RUNNING=1`: every service then reports one
//! running task, so a service of count 1 completes its deployment and one of count 2 never does.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use aira::aws::{sdk_config, AwsProvider, Connection, LocalImage};
use aira::engine::graph::{normalize, Kind, LogicalId};
use aira::engine::provider::{Observed, Progress, Provider, Resolved, Scope};
use serde_json::{json, Value};

use crate::harness::{endpoint, unique_stack};

/// Records every progress message.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Progress for Recorder {
    fn waiting(&self, id: &LogicalId, what: &str) {
        self.0.lock().unwrap().push(format!("{id}: {what}"));
    }
}

impl Recorder {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

async fn config() -> aws_config::SdkConfig {
    sdk_config(&Connection { region: Some("us-east-1".into()), profile: None, endpoint_url: Some(endpoint()) }).await
}

/// The configuration of the provider under test: through the conforming proxy, which answers as
/// AWS documents where moto does not (reading back uses `config`, straight to moto).
async fn aira_config() -> aws_config::SdkConfig {
    let at = crate::harness::conforming();
    sdk_config(&Connection { region: Some("us-east-1".into()), profile: None, endpoint_url: Some(at) }).await
}

fn scope(stack: &str, wait: u64) -> Scope {
    Scope::new(stack, BTreeMap::from([("team".into(), "chat".into())]), Duration::from_secs(wait))
}

fn res(id: &str, kind: Kind, props: Value) -> Resolved {
    Resolved { id: id.into(), kind, props }
}

/// The observed resource of a logical id; exactly one.
#[track_caller]
fn one<'a>(all: &'a [Observed], id: &str) -> &'a Observed {
    let found: Vec<&Observed> = all.iter().filter(|o| o.id.0 == id).collect();
    assert_eq!(found.len(), 1, "`{id}` observed {} times: {all:#?}", found.len());
    found[0]
}

/// Observed equals desired, as the planner compares them (unordered lists sorted).
#[track_caller]
fn assert_converged(observed: &Observed, desired: &Resolved) {
    let (mut a, mut b) = (observed.props.clone(), desired.props.clone());
    normalize(desired.kind, &mut a);
    normalize(desired.kind, &mut b);
    assert_eq!(a, b, "`{}`: observed (left) differs from desired (right)", desired.id);
}

struct Network {
    subnets: Vec<String>,
    group: String,
    queue_arn: String,
    queue_url: String,
    queue_name: String,
    secret_arn: String,
}

async fn network(stack: &str) -> Network {
    let ec2 = crate::harness::ec2();
    let vpc = ec2.create_vpc().cidr_block("10.7.0.0/16").send().await.unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (i, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let sn = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.7.{}.0/24", i + 2))
            .availability_zone(*zone)
            .send()
            .await
            .unwrap();
        subnets.push(sn.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    subnets.sort();
    let sg = ec2.create_security_group().group_name(format!("{stack}-services")).description("t").vpc_id(&vpc);
    let group = sg.send().await.unwrap().group_id().unwrap().to_string();
    let sqs = crate::harness::sqs().await;
    let queue_name = format!("{stack}-queue");
    let queue_url = sqs.create_queue().queue_name(&queue_name).send().await.unwrap().queue_url.unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let queue_arn = attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    let secret = crate::harness::secrets()
        .create_secret()
        .name(format!("{stack}/llm-key"))
        .secret_string("sk-test")
        .send()
        .await
        .unwrap();
    Network { subnets, group, queue_arn, queue_url, queue_name, secret_arn: secret.arn().unwrap().to_string() }
}

fn statement(sid: &str, actions: &[&str], resources: Vec<Value>) -> Value {
    let mut actions = actions.to_vec();
    actions.sort_unstable();
    json!({ "Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources })
}

fn role(stack: &str, name: &str, statements: Vec<Value>) -> Value {
    json!({
        "name": format!("{stack}-{name}"),
        "path": format!("/aira/{stack}/"),
        "trust_service": "ecs-tasks.amazonaws.com",
        "managed_policies": [],
        "policy": { "Version": "2012-10-17", "Statement": statements },
    })
}

const HEALTH_BIN: &str = "/usr/local/bin/aira-runtime";

#[allow(clippy::too_many_arguments)]
fn task(
    stack: &str,
    service: &str,
    image: Value,
    execution_role: &str,
    task_role: &str,
    net: &Network,
    table: &str,
    port: Option<u16>,
) -> Value {
    let health_port = port.unwrap_or(9090);
    json!({
        "family": format!("{stack}-{service}"),
        "cpu": 256,
        "memory": 512,
        "execution_role": execution_role,
        "task_role": task_role,
        "container": {
            "name": service,
            "image": image,
            "command": [if port.is_some() { "api" } else { "worker" }],
            "port": port,
            "environment": {
                "AIRA_QUEUE_URL": net.queue_url,
                "AIRA_TABLE": table,
                "AIRA_VISIBILITY_TIMEOUT_SECS": "60",
                "AIRA_RECEIVE_WAIT_SECS": "20",
            },
            "secrets": { "AIRA_LLM_API_KEY": net.secret_arn },
            "log_group": format!("/aira/{stack}/{service}"),
            "health_check": [HEALTH_BIN, "health", format!("http://127.0.0.1:{health_port}/healthz")],
            "user": "65532",
            "read_only_root": true,
        },
    })
}

fn service(name: &str, cluster: &str, task_definition: &str, count: Value, net: &Network) -> Value {
    json!({
        "name": name,
        "cluster": cluster,
        "task_definition": task_definition,
        "count": count,
        "subnets": net.subnets,
        "security_groups": [net.group],
        "public_ip": false,
        "deployment": { "circuit_breaker": true, "rollback": true, "min_healthy_percent": 100, "max_percent": 200 },
        "load_balancer": null,
    })
}

fn out(o: &Observed, key: &str) -> String {
    o.outputs[key].as_str().unwrap_or_else(|| panic!("`{}` has no output {key}: {:?}", o.id, o.outputs)).to_string()
}

#[tokio::test]
async fn compute_kinds_converge_read_back_and_delete_cleanly() {
    let stack = unique_stack("cmp");
    let p = AwsProvider::new(&aira_config().await);
    let sc = scope(&stack, 20);
    let progress = Recorder::default();
    let net = network(&stack).await;
    let mut desired: Vec<Resolved> = Vec::new();
    let mut created: Vec<Observed> = Vec::new();
    macro_rules! make {
        ($id:expr, $kind:expr, $props:expr) => {{
            let r = res($id, $kind, $props);
            let o = p.create(&sc, &r, &progress).await.unwrap_or_else(|e| panic!("create `{}`: {e}", $id));
            assert_converged(&o, &r);
            desired.push(r);
            created.push(o.clone());
            o
        }};
    }

    let table = make!(
        "table",
        Kind::Table,
        json!({
            "name": format!("{stack}-data"),
            "keys": { "pk": "S", "sk": "S" },
            "billing": "PAY_PER_REQUEST",
            "point_in_time_recovery": true,
            "ttl_attribute": "expires_at",
        })
    );
    let mut logs = BTreeMap::new();
    for svc in ["api", "worker"] {
        let o = make!(
            &format!("logs-{svc}"),
            Kind::LogGroup,
            json!({ "name": format!("/aira/{stack}/{svc}"), "retention_days": 30 })
        );
        assert!(out(&o, "arn").ends_with(":*"), "{:?}", o.outputs);
        logs.insert(svc, out(&o, "arn"));
    }
    let repo = make!(
        "repository",
        Kind::Repository,
        json!({ "name": format!("aira/{stack}"), "scan_on_push": true, "keep_images": 20 })
    );
    let execution = make!(
        "role-execution",
        Kind::Role,
        role(
            &stack,
            "execution",
            vec![
                statement("EcrToken", &["ecr:GetAuthorizationToken"], vec![json!("*")]),
                statement(
                    "PullImage",
                    &["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                    vec![json!(out(&repo, "arn"))],
                ),
                statement(
                    "WriteLogs",
                    &["logs:CreateLogStream", "logs:PutLogEvents"],
                    logs.values().map(|a| json!(a)).collect(),
                ),
                statement("ReadLlmKey", &["secretsmanager:GetSecretValue"], vec![json!(net.secret_arn)]),
            ],
        )
    );
    let mut task_roles = BTreeMap::new();
    for (svc, actions) in [
        ("api", &["sqs:GetQueueAttributes", "sqs:SendMessage"][..]),
        (
            "worker",
            &["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"],
        ),
    ] {
        let o = make!(
            &format!("role-{svc}"),
            Kind::Role,
            role(
                &stack,
                svc,
                vec![
                    statement("Queue", actions, vec![json!(net.queue_arn)]),
                    statement("Table", &["dynamodb:GetItem", "dynamodb:PutItem"], vec![json!(out(&table, "arn"))]),
                ]
            )
        );
        task_roles.insert(svc, out(&o, "arn"));
    }
    let cluster = make!("cluster", Kind::Cluster, json!({ "name": stack, "container_insights": true }));
    let digest = format!("sha256:{}", "ab".repeat(32));
    let image = json!({ "repository": out(&repo, "uri"), "digest": digest });
    let mut tasks = BTreeMap::new();
    for (svc, port) in [("api", Some(8080)), ("worker", None)] {
        let props = task(
            &stack,
            svc,
            image.clone(),
            &out(&execution, "arn"),
            &task_roles[svc],
            &net,
            &out(&table, "name"),
            port,
        );
        let o = make!(&format!("task-{svc}"), Kind::TaskDefinition, props);
        assert!(out(&o, "arn").ends_with(":1"), "{:?}", o.outputs);
        tasks.insert(svc, o);
    }
    let auto = json!({ "min": 1, "max": 4, "backlog_per_task": 10, "queue": net.queue_name });
    make!(
        "service-api",
        Kind::Service,
        service("api", &out(&cluster, "arn"), &out(&tasks["api"], "arn"), auto.clone(), &net)
    );
    make!(
        "service-worker",
        Kind::Service,
        service("worker", &out(&cluster, "arn"), &out(&tasks["worker"], "arn"), json!(1), &net)
    );

    // Observe finds each of them once, equal to what was asked for: `plan` after `up` is empty.
    let observed = p.observe(&sc).await.unwrap();
    for r in &desired {
        assert_converged(one(&observed, &r.id.0), r);
    }
    // Another stack sees none of it.
    let other = p.observe(&scope(&unique_stack("cmp-other"), 5)).await.unwrap();
    assert!(other.iter().all(|o| !o.physical_id.contains(&stack)), "{other:#?}");

    // Registering an unchanged task definition again makes no new revision.
    let same = desired.iter().find(|r| r.id.0 == "task-api").unwrap().clone();
    let again = p.update(&sc, &same, &tasks["api"], &progress).await.unwrap();
    assert_eq!(out(&again, "arn"), out(&tasks["api"], "arn"));
    let ecs = aws_sdk_ecs::Client::new(&config().await);
    let revisions = ecs.list_task_definitions().family_prefix(format!("{stack}-api")).send().await.unwrap();
    assert_eq!(revisions.task_definition_arns().len(), 1, "{revisions:?}");

    // A changed one makes revision 2; the service moves to it.
    let mut changed = desired.iter().find(|r| r.id.0 == "task-api").unwrap().clone();
    changed.props["container"]["environment"]["AIRA_RECEIVE_WAIT_SECS"] = json!("10");
    let v2 = p.update(&sc, &changed, &tasks["api"], &progress).await.unwrap();
    assert!(out(&v2, "arn").ends_with(":2"), "{:?}", v2.outputs);
    assert_converged(&v2, &changed);
    let mut svc = desired.iter().find(|r| r.id.0 == "service-api").unwrap().clone();
    svc.props["task_definition"] = json!(out(&v2, "arn"));
    svc.props["count"]["max"] = json!(6);
    let current = one(&observed, "service-api").clone();
    let moved = p.update(&sc, &svc, &current, &progress).await.unwrap();
    assert_converged(&moved, &svc);

    // Read back with the SDK: what the brief of each kind promises.
    let dynamo = aws_sdk_dynamodb::Client::new(&config().await);
    let backups = dynamo.describe_continuous_backups().table_name(format!("{stack}-data")).send().await.unwrap();
    let pitr = backups.continuous_backups_description().unwrap().point_in_time_recovery_description().unwrap();
    assert_eq!(pitr.point_in_time_recovery_status().unwrap().as_str(), "ENABLED");
    let ttl = dynamo.describe_time_to_live().table_name(format!("{stack}-data")).send().await.unwrap();
    assert_eq!(ttl.time_to_live_description().unwrap().attribute_name(), Some("expires_at"));

    let iam = aws_sdk_iam::Client::new(&config().await);
    for svc in ["api", "worker"] {
        let doc = iam.get_role_policy().role_name(format!("{stack}-{svc}")).policy_name("aira").send().await.unwrap();
        let doc = policy_doc(doc.policy_document());
        let resources: Vec<Value> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Resource"].as_array().unwrap().clone())
            .collect();
        assert_eq!(resources, vec![json!(net.queue_arn), json!(out(&table, "arn"))], "task role of {svc}: {doc}");
    }
    let exec = iam.get_role_policy().role_name(format!("{stack}-execution")).policy_name("aira").send().await.unwrap();
    let exec = policy_doc(exec.policy_document());
    assert_eq!(exec["Statement"].as_array().map(Vec::len), Some(4), "{exec}");
    for s in exec["Statement"].as_array().unwrap() {
        if s["Resource"].as_array().unwrap().contains(&json!("*")) {
            assert_eq!(s["Action"], json!(["ecr:GetAuthorizationToken"]), "only the ECR token may be on *: {s}");
        }
    }
    let trust = iam.get_role().role_name(format!("{stack}-api")).send().await.unwrap();
    assert_eq!(trust.role().unwrap().path(), format!("/aira/{stack}/"));

    let td = ecs.describe_task_definition().task_definition(out(&v2, "arn")).send().await.unwrap();
    let td = td.task_definition().unwrap();
    assert_eq!(td.network_mode().unwrap().as_str(), "awsvpc");
    assert_eq!(td.requires_compatibilities()[0].as_str(), "FARGATE");
    let c = &td.container_definitions()[0];
    assert_eq!(c.user(), Some("65532"), "non-root");
    assert_eq!(c.readonly_root_filesystem(), Some(true));
    assert_eq!(c.essential(), Some(true));
    assert_eq!(
        c.health_check().unwrap().command(),
        ["CMD", HEALTH_BIN, "health", "http://127.0.0.1:8080/healthz"].map(String::from)
    );
    assert_eq!(c.secrets()[0].value_from(), net.secret_arn, "the key comes from Secrets Manager");
    assert!(c.environment().iter().all(|kv| kv.value() != Some("sk-test")), "no secret in the environment");
    assert_eq!(c.image(), Some(format!("{}@{digest}", out(&repo, "uri")).as_str()));
    let logs_opts = c.log_configuration().unwrap().options().unwrap();
    assert_eq!(logs_opts["awslogs-group"], format!("/aira/{stack}/api"));

    let services = ecs.describe_services().cluster(out(&cluster, "arn")).services("api").services("worker").send();
    for s in services.await.unwrap().services() {
        let vpc = s.network_configuration().unwrap().awsvpc_configuration().unwrap();
        assert_eq!(vpc.assign_public_ip().unwrap().as_str(), "DISABLED", "{:?}", s.service_name());
        assert_eq!(s.launch_type().unwrap().as_str(), "FARGATE");
    }
    let scaling = aws_sdk_applicationautoscaling::Client::new(&config().await);
    let targets = scaling
        .describe_scalable_targets()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
        .resource_ids(format!("service/{stack}/api"))
        .send()
        .await
        .unwrap();
    let t = &targets.scalable_targets()[0];
    assert_eq!((t.min_capacity(), t.max_capacity()), (1, 6));

    // A deployment that cannot complete (2 wanted, 1 running) ends at the deadline, naming what is pending.
    let short = scope(&stack, 5);
    let failing = res(
        "service-stuck",
        Kind::Service,
        service("stuck", &out(&cluster, "arn"), &out(&tasks["worker"], "arn"), json!(2), &net),
    );
    let started = std::time::Instant::now();
    let err = p.create(&short, &failing, &progress).await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(20), "the wait overran: {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(5), "the wait ended early: {:?}", started.elapsed());
    for part in
        ["deployment of service `stuck` did not complete in 5s", "1 of 2 tasks running, 1 pending", "last event"]
    {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
    let waits: Vec<String> = progress.all().into_iter().filter(|w| w.starts_with("service-stuck")).collect();
    assert!(!waits.is_empty() && waits.iter().all(|w| w.contains("1 of 2 tasks running")), "{waits:#?}");
    assert!(waits[0].contains("deployment ecs-svc/"), "the deployment id is named: {waits:#?}");

    // Delete everything, dependents first; nothing of the stack is left.
    let mut all = p.observe(&sc).await.unwrap();
    let order = |k: Kind| match k {
        Kind::Service => 0,
        Kind::TaskDefinition => 1,
        Kind::Cluster | Kind::Role => 2,
        _ => 3,
    };
    all.sort_by_key(|o| order(o.kind));
    assert_eq!(all.len(), desired.len() + 1, "the stuck service too: {all:#?}");
    for o in &all {
        p.delete(&sc, o, &progress).await.unwrap_or_else(|e| panic!("delete `{}`: {e}", o.id));
    }
    // Deleting what is gone succeeds.
    for o in &all {
        p.delete(&sc, o, &progress).await.unwrap_or_else(|e| panic!("delete `{}` again: {e}", o.id));
    }
    let left = p.observe(&sc).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:#?}");
    for svc in ["api", "worker"] {
        let active = ecs.list_task_definitions().family_prefix(format!("{stack}-{svc}")).send().await.unwrap();
        assert!(active.task_definition_arns().is_empty(), "{active:?}");
    }
    assert!(iam.get_role().role_name(format!("{stack}-api")).send().await.is_err());
}

/// A policy document as IAM returns it (URL-encoded on AWS), as JSON.
fn policy_doc(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str(text) {
        return v;
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("not a policy document ({e}): {text}"))
}

mod deploy;
