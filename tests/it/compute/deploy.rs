//! The compute kinds deployed: the built image pushed once, `up` then `plan` then `down`, a
//! load-balanced service, a deployment that cannot complete.

use super::*;

/// A small image (one file), built the way `aira image build` builds the runtime's.
fn small_image(content: &str) -> aira::image::oci::Image {
    let mut tree = aira::image::oci::Tree::default();
    tree.file("usr/local/bin/hello", 0o755, content.as_bytes().to_vec());
    let spec = aira::image::oci::ConfigSpec {
        epoch: 0,
        user: "65532:65532".into(),
        entrypoint: vec!["/usr/local/bin/hello".into()],
        cmd: vec![],
        env: vec![],
        exposed_ports: vec![],
        labels: vec![],
    };
    aira::image::oci::image(&tree, &spec).unwrap()
}

fn manifest_puts(registry: &crate::image::Registry) -> usize {
    registry
        .log()
        .lines()
        .filter(|l| l.contains("response completed"))
        .filter(|l| l.contains("http.request.method=PUT") && l.contains("/manifests/"))
        .count()
}

#[tokio::test]
async fn compute_task_definitions_push_the_built_image_once() {
    let stack = unique_stack("cmp-push");
    let registry = crate::image::Registry::start(false);
    let image = small_image(&stack);
    let digest = image.manifest.digest.clone();
    let repository = format!("{}/aira/{stack}", registry.addr);
    let sc = scope(&stack, 10);
    let progress = Recorder::default();
    let net = network(&stack).await;
    let props = |svc: &str, image: Value| {
        task(
            &stack,
            svc,
            image,
            "arn:aws:iam::123456789012:role/x",
            "arn:aws:iam::123456789012:role/y",
            &net,
            "t",
            None,
        )
    };
    let wanted = json!({ "repository": repository, "digest": digest });

    // One run: two task definitions name the built image; it is pushed once, before either registers.
    let p = AwsProvider::new(&aira_config().await);
    p.set_image(LocalImage { image: image.clone(), insecure: true }).await;
    let api_res = res("task-api", Kind::TaskDefinition, props("api", wanted.clone()));
    let api = p.create(&sc, &api_res, &progress).await.unwrap();
    assert_eq!(api.props["container"]["image"], wanted);
    let worker_res = res("task-worker", Kind::TaskDefinition, props("worker", wanted.clone()));
    p.create(&sc, &worker_res, &progress).await.unwrap();
    assert_eq!(
        registry.blob_writes(),
        4,
        "a POST and a PUT for each of two blobs:
{}",
        registry.log()
    );
    assert_eq!(
        manifest_puts(&registry),
        1,
        "one push for both task definitions:
{}",
        registry.log()
    );
    let http = reqwest::Client::new();
    let manifest = http
        .get(registry.url(&format!("/v2/aira/{stack}/manifests/{digest}")))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200, "the image is in the registry before the task definition names it");
    assert!(
        progress.all().iter().any(|w| w.contains("pushing image") && w.contains("uploading blob")),
        "{:?}",
        progress.all()
    );

    // The next run (a new provider): the blobs are there, none is sent again.
    let p2 = AwsProvider::new(&aira_config().await);
    p2.set_image(LocalImage { image: image.clone(), insecure: true }).await;
    let mut changed = res("task-api", Kind::TaskDefinition, props("api", wanted.clone()));
    changed.props["cpu"] = json!(512);
    changed.props["memory"] = json!(1024);
    let v2 = p2.update(&sc, &changed, &api, &progress).await.unwrap();
    assert!(out(&v2, "arn").ends_with(":2"));
    assert_eq!(
        registry.blob_writes(),
        4,
        "the second run wrote blobs:
{}",
        registry.log()
    );

    // A task definition naming another digest than the built image fails, saying so.
    let other = json!({ "repository": repository, "digest": format!("sha256:{}", "cd".repeat(32)) });
    let err = p2.create(&sc, &res("task-x", Kind::TaskDefinition, props("x", other)), &progress).await.unwrap_err();
    assert!(err.to_string().contains("the image built for this run is"), "{err}");

    for o in p.observe(&sc).await.unwrap() {
        p.delete(&sc, &o, &progress).await.unwrap();
    }
    assert!(p.observe(&sc).await.unwrap().is_empty());
}

/// `aira up` of a stack with an autoscaled worker (no load balancer: the edge kinds are tested
/// elsewhere), then `plan --detailed-exitcode` finds nothing to change, then `down` leaves nothing,
/// not even the log group ECS made for Container Insights.
#[tokio::test]
async fn compute_up_then_plan_has_no_change_then_down_leaves_nothing() {
    up_plan_down("cmp-cli", false).await;
}

/// The same with `down --all`, which tears down through the same path.
#[tokio::test]
async fn compute_down_all_removes_the_container_insights_log_group() {
    up_plan_down("cmp-all", true).await;
}

async fn up_plan_down(prefix: &str, all: bool) {
    use crate::harness::{aira, Workdir};
    let stack = unique_stack(prefix);
    let work = Workdir::new();
    let yaml = format!(
        "stack: {stack}\nregion: us-east-1\ntags:\n  case: {stack}\nnetwork:\n  endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\nservices:\n  \
         worker: {{ role: worker, cpu: 256, memory: 512, count: {{ min: 1, max: 3, backlog_per_task: 5 }} }}\n"
    );
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    // An ECR image: the tasks pull it through the endpoints (the reachability check).
    let image = format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:{}", "ab".repeat(32));
    // Through the proxy: it deletes a deregistered scalable target's policies, as AWS does.
    let proxy = crate::proxy::Proxy::start(&endpoint(), Default::default()).await;
    let at = ["--endpoint-url", proxy.url.as_str()];
    let dir = work.dir.path();
    aira(dir, &[&["up", file, "--yes", "--image", &image][..], &at[..]].concat()).await.assert_code(0);
    let plan = aira(dir, &[&["plan", file, "--detailed-exitcode", "--image", &image][..], &at[..]].concat()).await;
    plan.assert_code(0);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);

    let p = AwsProvider::new(&aira_config().await);
    let observed = p.observe(&scope(&stack, 5)).await.unwrap();
    let kinds: std::collections::BTreeSet<Kind> = observed.iter().map(|o| o.kind).collect();
    for k in [Kind::Table, Kind::LogGroup, Kind::Role, Kind::Cluster, Kind::TaskDefinition, Kind::Service] {
        assert!(kinds.contains(&k), "no {k} observed: {observed:#?}");
    }
    let worker = one(&observed, "service-worker");
    assert_eq!(worker.props["count"]["backlog_per_task"], 5);
    assert_eq!(worker.props["count"]["queue"], format!("{stack}-queue"));

    // With Container Insights on (the autoscaled worker), ECS creates this group once tasks
    // report; moto does not, so the test makes it as AWS would: untagged, named after the cluster.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config().await);
    let insights = format!("/aws/ecs/containerinsights/{stack}/performance");
    logs.create_log_group().log_group_name(&insights).send().await.unwrap();

    let selector = format!("case={stack}");
    let down = match all {
        true => vec!["down", "--all", "--selector", &selector, "--yes"],
        false => vec!["down", file, "--yes"],
    };
    aira(dir, &[&down[..], &at[..]].concat()).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
    let left = p.observe(&scope(&stack, 5)).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:#?}");
    let groups = logs.describe_log_groups().log_group_name_prefix(&insights).send().await.unwrap();
    assert!(groups.log_groups().is_empty(), "{insights} is left: {:?}", groups.log_groups());
}

/// A load-balanced service (target group made with the SDK): created with its load balancer and
/// health check grace, observed as desired, its deployment wait reads the target group's health.
#[tokio::test]
async fn compute_load_balanced_service_converges() {
    let stack = unique_stack("cmp-lb");
    let p = AwsProvider::new(&aira_config().await);
    let sc = scope(&stack, 10);
    let progress = Recorder::default();
    let net = network(&stack).await;
    let ec2 = crate::harness::ec2();
    let subnet = ec2.describe_subnets().subnet_ids(&net.subnets[0]).send().await.unwrap();
    let vpc = subnet.subnets()[0].vpc_id().unwrap().to_string();
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config().await);
    let tg = elb
        .create_target_group()
        .name(&stack)
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(8080)
        .vpc_id(&vpc)
        .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
        .send()
        .await
        .unwrap();
    let tg = tg.target_groups()[0].target_group_arn().unwrap().to_string();
    // ECS refuses a target group that no load balancer forwards to (the conforming proxy
    // answers so): an internal one, with a listener made just before the service.
    let lb = elb
        .create_load_balancer()
        .name(&stack)
        .scheme(aws_sdk_elasticloadbalancingv2::types::LoadBalancerSchemeEnum::Internal)
        .set_subnets(Some(net.subnets.clone()))
        .send()
        .await
        .unwrap();
    let forward = aws_sdk_elasticloadbalancingv2::types::Action::builder()
        .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
        .target_group_arn(&tg)
        .build();
    elb.create_listener()
        .load_balancer_arn(lb.load_balancers()[0].load_balancer_arn().unwrap())
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(80)
        .default_actions(forward)
        .send()
        .await
        .unwrap();
    let cluster_res = res("cluster", Kind::Cluster, json!({ "name": stack, "container_insights": false }));
    let cluster = p.create(&sc, &cluster_res, &progress).await.unwrap();
    let td = task(
        &stack,
        "api",
        json!("public.ecr.aws/x/y:1"),
        "arn:aws:iam::123456789012:role/x",
        "arn:aws:iam::123456789012:role/y",
        &net,
        "t",
        Some(8080),
    );
    let td = p.create(&sc, &res("task-api", Kind::TaskDefinition, td), &progress).await.unwrap();
    let mut props = service("api", &out(&cluster, "arn"), &out(&td, "arn"), json!(1), &net);
    props["load_balancer"] = json!({ "target_group": tg, "container": "api", "port": 8080 });
    props["health_check_grace"] = json!(30);
    let desired = res("service-api", Kind::Service, props);
    let created = p.create(&sc, &desired, &progress).await.unwrap();
    assert_converged(&created, &desired);
    // The association reaches ECS a moment after the listener: the create waited, and said so.
    let said = progress.all().join("\n");
    assert!(said.contains("does not see the target group's load balancer yet"), "{said}");
    let observed = p.observe(&sc).await.unwrap();
    assert_converged(one(&observed, "service-api"), &desired);
    let ecs = aws_sdk_ecs::Client::new(&config().await);
    let s = ecs.describe_services().cluster(out(&cluster, "arn")).services("api").send().await.unwrap();
    let lb = &s.services()[0].load_balancers()[0];
    assert_eq!(
        (lb.target_group_arn(), lb.container_name(), lb.container_port()),
        (Some(tg.as_str()), Some("api"), Some(8080))
    );

    let mut all = observed;
    all.sort_by_key(|o| match o.kind {
        Kind::Service => 0,
        Kind::TaskDefinition => 1,
        _ => 2,
    });
    for o in &all {
        p.delete(&sc, o, &progress).await.unwrap();
    }
    assert!(p.observe(&sc).await.unwrap().is_empty());
}

/// Through the CLI: a deployment that cannot complete makes `up` exit 2 at `--timeout`, with the
/// wait's progress on stderr and what was pending in the error.
#[tokio::test]
async fn compute_up_with_a_stuck_deployment_exits_2_naming_what_was_pending() {
    use crate::harness::{aira, Workdir};
    let stack = unique_stack("cmp-stuck");
    let work = Workdir::new();
    let yaml = format!(
        "stack: {stack}\nregion: us-east-1\nnetwork:\n  endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\nservices:\n  \
         worker: {{ role: worker, cpu: 256, memory: 512, count: 2 }}\n"
    );
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    // An ECR image: the tasks pull it through the endpoints (the reachability check).
    let image = format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:{}", "ab".repeat(32));
    let at = ["--endpoint-url", &endpoint()];
    let dir = work.dir.path();
    let up = aira(dir, &[&["up", file, "--yes", "--timeout", "5s", "--image", &image][..], &at[..]].concat()).await;
    up.assert_code(2);
    assert!(
        up.stderr.contains("service-worker: deployment ecs-svc/")
            && up.stderr.contains("1 of 2 tasks running, 1 pending"),
        "no progress of the wait:\n{}",
        up.stderr
    );
    assert!(
        up.stderr.contains("deployment of service `worker` did not complete in 5s: 1 of 2 tasks running, 1 pending"),
        "{}",
        up.stderr
    );
    aira(dir, &[&["down", file, "--yes"][..], &at[..]].concat()).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}

/// What aira sends for a service is what a stack gets (README: circuit breaker with rollback,
/// 100 %/200 %, a 30 s health check grace for the load-balanced one), read from the proxy's
/// request log; the internet-facing load balancer is accepted (its gateway is attached first)
/// and the service waits for its target group's listener. An endpoint that drops those settings
/// (moto without the proxy's rules) is observed as not having them: the plan updates them.
#[tokio::test]
async fn compute_public_service_is_sent_the_stacks_deployment_settings() {
    use crate::harness::{aira, Workdir};
    use crate::proxy::{Faults, Proxy};
    let stack = unique_stack("cmp-dep");
    let work = Workdir::new();
    let yaml = format!(
        "stack: {stack}\nregion: us-east-1\nnetwork:\n  endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\nservices:\n  \
         api: {{ role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }}\n  \
         worker: {{ role: worker, cpu: 256, memory: 512 }}\n"
    );
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    let image = format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:{}", "ab".repeat(32));
    let dir = work.dir.path();
    // The gateway's attachment takes AWS longer than the subnets: a load balancer created before
    // it ends is refused (the proxy's rule `load_balancer_without_internet_gateway`).
    let hold = Duration::from_secs(5);
    let proxy =
        Proxy::start(&endpoint(), Faults { slow: Some(("AttachInternetGateway", hold)), ..Faults::default() }).await;
    aira(dir, &["up", file, "--yes", "--image", &image, "--endpoint-url", &proxy.url]).await.assert_code(0);

    let sent = proxy.take_requests();
    let lbs: Vec<_> = sent.iter().filter(|r| r.call == "elasticloadbalancing:CreateLoadBalancer").collect();
    assert!(!lbs.is_empty() && lbs.iter().all(|r| r.status == 200), "load balancer refused: {lbs:?}");
    let timed = proxy.timed_calls();
    let attached = timed.iter().find(|c| c.call == "ec2:AttachInternetGateway").and_then(|c| c.answered).unwrap();
    let lb = timed.iter().find(|c| c.call == "elasticloadbalancing:CreateLoadBalancer").unwrap().started;
    assert!(lb >= attached, "the load balancer was created before the gateway was attached");
    let mut services = std::collections::BTreeMap::new();
    for r in sent.iter().filter(|r| r.call == "ecs:CreateService" && r.status == 200) {
        services.insert(r.json()["serviceName"].as_str().unwrap().to_string(), r.json());
    }
    assert_eq!(services.len(), 2, "{:?}", services.keys());
    for (name, body) in &services {
        let d = &body["deploymentConfiguration"];
        assert_eq!((&d["minimumHealthyPercent"], &d["maximumPercent"]), (&json!(100), &json!(200)), "{name}: {d}");
        assert_eq!(d["deploymentCircuitBreaker"], json!({ "enable": true, "rollback": true }), "{name}: {d}");
        let grace =
            if body["loadBalancers"].as_array().is_some_and(|l| !l.is_empty()) { json!(30) } else { Value::Null };
        assert_eq!(body["healthCheckGracePeriodSeconds"], grace, "{name}");
    }

    let plan = |at: String| {
        let file = file.to_string();
        let image = image.clone();
        async move { aira(dir, &["plan", &file, "--detailed-exitcode", "--image", &image, "--endpoint-url", &at]).await }
    };
    plan(proxy.url.clone()).await.assert_code(0);
    let moto_only = Proxy::start(&endpoint(), Faults { moto_only: true, ..Faults::default() }).await;
    let dropped = plan(moto_only.url.clone()).await;
    dropped.assert_code(2);
    assert!(dropped.stdout.contains("service-api") && dropped.stdout.contains("service-worker"), "{}", dropped.stdout);
    aira(dir, &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
}

/// A rerun repairs what AWS left broken, with the proxy answering as AWS does where moto cannot:
/// ECS and Application Auto Scaling refuse a role for seconds after its `CreateRole` (IAM is
/// eventually consistent), and the circuit breaker FAILS a deployment that left no task running.
#[tokio::test]
async fn compute_rerun_waits_for_new_roles_and_redeploys_a_failed_deployment() {
    use crate::harness::{aira, Workdir};
    use crate::proxy::{Faults, Proxy};
    use aws_sdk_applicationautoscaling::types::ServiceNamespace;
    let stack = unique_stack("cmp-repair");
    let work = Workdir::new();
    let yaml = format!(
        "stack: {stack}\nregion: us-east-1\nnetwork:\n  endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\nservices:\n  \
         worker: {{ role: worker, cpu: 256, memory: 512, count: {{ min: 1, max: 3, backlog_per_task: 5 }} }}\n"
    );
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    let image = format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:{}", "ab".repeat(32));
    let rewrite = crate::rewrite::Rewrites::default();
    rewrite.role_not_assumable_for(Duration::from_secs(2));
    let proxy = Proxy::start(&endpoint(), Faults { rewrite: rewrite.clone(), ..Faults::default() }).await;
    let at = ["--endpoint-url", &proxy.url];
    let dir = work.dir.path();

    // Each call handing AWS a role is refused at first, retried, and the wait says why.
    let up = aira(dir, &[&["up", file, "--yes", "--image", &image][..], &at[..]].concat()).await;
    up.assert_code(0);
    let refused = rewrite.refused();
    for call in [
        "ecs:CreateService",
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:PutScalingPolicy",
    ] {
        assert!(refused.iter().any(|c| c == call), "{call} was never refused: {refused:?}");
    }
    let role = format!("ECS cannot assume role arn:aws:iam::123456789012:role/aira/{stack}/");
    assert!(up.stderr.contains(&role), "no wait for the task's role:\n{}", up.stderr);
    assert!(
        up.stderr
            .contains("Application Auto Scaling cannot assume role arn:aws:iam::123456789012:role/aws-service-role/")
            && up.stderr.contains("waiting for the role to become assumable"),
        "no wait for the autoscaling role:\n{}",
        up.stderr
    );
    // What AWS holds, read without the proxy: the service and its scaling.
    let cfg = config().await;
    let ecs = aws_sdk_ecs::Client::new(&cfg);
    let s = ecs.describe_services().cluster(&stack).services("worker").send().await.unwrap();
    assert_eq!(s.services()[0].status(), Some("ACTIVE"));
    let aas = aws_sdk_applicationautoscaling::Client::new(&cfg);
    let rid = format!("service/{stack}/worker");
    let targets = aas
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_ids(&rid)
        .send()
        .await
        .unwrap();
    assert_eq!(targets.scalable_targets().len(), 1, "{targets:?}");
    let policies = aas
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&rid)
        .send()
        .await
        .unwrap();
    assert_eq!(policies.scaling_policies().len(), 1, "{policies:?}");

    // The circuit breaker failed the worker's deployment: the plan says so, `up` redeploys.
    rewrite.fail_deployment("worker");
    let plan = aira(dir, &[&["plan", file, "--detailed-exitcode", "--image", &image][..], &at[..]].concat()).await;
    plan.assert_code(2);
    assert!(
        plan.stdout.contains(
            "last deployment FAILED (0 of 1 tasks running) — ECS deployment circuit breaker: tasks failed to start; \
             redeploying"
        ),
        "{}",
        plan.stdout
    );
    aira(dir, &[&["up", file, "--yes", "--image", &image][..], &at[..]].concat()).await.assert_code(0);
    assert_eq!(rewrite.forced_deployments(), vec!["worker".to_string()], "UpdateService with forceNewDeployment");
    let plan = aira(dir, &[&["plan", file, "--detailed-exitcode", "--image", &image][..], &at[..]].concat()).await;
    plan.assert_code(0);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);

    aira(dir, &[&["down", file, "--yes"][..], &at[..]].concat()).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}

/// A `down` stopped right after it deleted a service leaves that service DRAINING; ECS refuses
/// a new service of the name until it is INACTIVE (the proxy answers as ECS does). The next
/// `up` waits for it, saying so, and converges.
#[tokio::test]
async fn compute_up_after_a_service_was_deleted_waits_for_it_to_drain() {
    use crate::harness::{aira, Workdir};
    let stack = unique_stack("cmp-drain");
    let work = Workdir::new();
    let yaml = format!(
        "stack: {stack}\nregion: us-east-1\nnetwork:\n  endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\nservices:\n  \
         worker: {{ role: worker, cpu: 256, memory: 512, count: 1 }}\n"
    );
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    let image = format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:{}", "ab".repeat(32));
    let proxy = crate::proxy::Proxy::start(&endpoint(), Default::default()).await;
    let at = ["--endpoint-url", proxy.url.as_str()];
    let dir = work.dir.path();
    aira(dir, &[&["up", file, "--yes", "--image", &image][..], &at[..]].concat()).await.assert_code(0);
    // What a `down` does first, and then is killed: the service is deleted, nothing else.
    let testing = aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
    let ecs = aws_sdk_ecs::Client::new(&crate::harness::sdk_config_as(&proxy.url, "us-east-1", testing));
    let service = "worker";
    ecs.delete_service().cluster(&stack).service(service).force(true).send().await.unwrap();
    let up = aira(dir, &[&["up", file, "--yes", "--image", &image][..], &at[..]].concat()).await;
    up.assert_code(0);
    assert!(up.stderr.contains("still DRAINING after an earlier deletion"), "{}", up.stderr);
    let out = ecs.describe_services().cluster(&stack).services(service).send().await.unwrap();
    assert!(out.services().iter().any(|s| s.status() == Some("ACTIVE")), "{:?}", out.services());
    aira(dir, &[&["down", file, "--yes"][..], &at[..]].concat()).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}
