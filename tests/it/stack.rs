//! The whole stack against moto: `aira up` of a stack with a domain, services, autoscaling and
//! alerts creates every resource; the plan right after is empty; what was created is secure
//! (read back through the SDK); `aira down` removes everything, the validation and alias records
//! included, and leaves the hosted zone the user owns.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::harness::{aira_env, endpoint, sdk_config_in, unique_stack, Workdir};

const IMAGE: &str =
    "127.0.0.1:5999/aira/runtime@sha256:1111111111111111111111111111111111111111111111111111111111111111";

pub struct Fixture {
    pub name: String,
    /// The stack's region: its own per test, since the NAT gateways hold Elastic IPs.
    pub region: &'static str,
    pub zone_id: String,
    pub domain: String,
    pub work: Workdir,
    pub file: String,
    /// What `run` talks to: moto, answering as AWS where they differ (`proxy.rs`).
    pub proxy: crate::proxy::Proxy,
}

impl Fixture {
    pub fn config(&self) -> aws_config::SdkConfig {
        sdk_config_in(self.region)
    }
}

/// A hosted zone and the LLM key's secret, as the user would have them, and the stack file. The
/// model is outside AWS, so the network has NAT gateways (the reachability check asks for them).
pub async fn fixture(prefix: &str, api_count: u32) -> Fixture {
    let name = unique_stack(prefix);
    let region = match prefix {
        "full" => "us-west-2",
        "twice" => "eu-west-1",
        "source" => "sa-east-1",
        "surface" => "eu-central-1",
        "alerts" => "ap-southeast-2",
        _ => "us-east-2",
    };
    let config = sdk_config_in(region);
    let r53 = aws_sdk_route53::Client::new(&config);
    let zone_name = format!("{name}.example.com");
    let zone = r53.create_hosted_zone().name(&zone_name).caller_reference(&name).send().await.unwrap();
    let zone_id = zone.hosted_zone().unwrap().id().trim_start_matches("/hostedzone/").to_string();
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    sm.create_secret().name(format!("{name}/llm")).secret_string("sk-test").send().await.unwrap();
    let domain = format!("chat.{zone_name}");
    let yaml = format!(
        "stack: {name}\nregion: {region}\nnetwork:\n  nat: true\n  endpoints: [sqs, s3]\ndomain:\n  zone: {zone_name}\n  name: {domain}\n\
         services:\n  api: {{ role: api, cpu: 256, memory: 512, count: {api_count}, port: 8080, health: /healthz, public: true }}\n  \
         worker: {{ role: worker, cpu: 256, memory: 512, count: {{ min: 1, max: 4, backlog_per_task: 20 }} }}\n\
         llm:\n  base_url: https://llm.invalid/v1\n  model: m\n  api_key: {{ secret: {name}/llm }}\nalerts:\n  email: ops@example.com\n"
    );
    let work = Workdir::new();
    let file = work.write("stack.yaml", &yaml).to_str().unwrap().to_string();
    let proxy = crate::proxy::Proxy::start(&endpoint(), Default::default()).await;
    Fixture { name, region, zone_id, domain, work, file, proxy }
}

pub async fn run(f: &Fixture, args: &[&str]) -> crate::harness::Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--endpoint-url", &f.proxy.url]);
    aira_env(f.work.dir.path(), &all, &[]).await
}

fn kinds(plan: &Value) -> BTreeMap<String, usize> {
    let mut k = BTreeMap::new();
    for s in plan["steps"].as_array().unwrap() {
        *k.entry(s["kind"].as_str().unwrap().to_string()).or_default() += 1;
    }
    k
}

#[tokio::test]
async fn whole_stack_up_is_complete_secure_converged_and_goes_down() {
    let f = fixture("full", 1).await;
    let config = f.config();

    let up = run(&f, &["up", &f.file, "--image", IMAGE, "--yes", "--timeout", "2m"]).await;
    up.assert_code(0);
    // The certificate's wait said what it waited for; the skipped delegation check said so.
    assert!(up.stderr.contains("certificate: ACM validating"), "{}", up.stderr);
    assert!(up.stderr.contains("could not check that public DNS delegates"), "{}", up.stderr);

    // Right after: nothing to change, every kind present.
    let plan = run(&f, &["plan", &f.file, "--image", IMAGE, "--output", "json", "--detailed-exitcode"]).await;
    let p = plan.json();
    plan.assert_code(0);
    let k = kinds(&p);
    for (kind, n) in [
        ("acm.certificate", 1),
        ("route53.record", 2),
        ("elbv2.load-balancer", 1),
        ("elbv2.target-group", 1),
        ("elbv2.listener", 2),
        ("dynamodb.table", 1),
        ("logs.log-group", 2),
        ("iam.role", 3),
        ("ecs.cluster", 1),
        ("ecs.task-definition", 2),
        ("ecs.service", 2),
        ("sns.topic", 1),
        ("cloudwatch.alarm", 4),
        ("sqs.queue", 2),
        ("wafv2.web-acl", 1),
    ] {
        assert_eq!(k.get(kind), Some(&n), "{kind}: {k:?}");
    }

    // Security, read back from AWS.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let lbs = elb.describe_load_balancers().names(&f.name).send().await.unwrap();
    let lb = &lbs.load_balancers()[0];
    assert_eq!(lb.scheme().map(|s| s.as_str()), Some("internet-facing"));
    // Dualstack, so that the AAAA alias answers.
    assert_eq!(lb.ip_address_type().map(|t| t.as_str()), Some("dualstack"));
    let listeners = elb.describe_listeners().load_balancer_arn(lb.load_balancer_arn().unwrap()).send().await.unwrap();
    for l in listeners.listeners() {
        let action = &l.default_actions()[0];
        match l.port() {
            Some(80) => {
                // HTTP only redirects, permanently, to HTTPS.
                let r = action.redirect_config().expect("port 80 redirects");
                assert_eq!(r.protocol(), Some("HTTPS"));
                assert_eq!(r.status_code().map(|s| s.as_str()), Some("HTTP_301"));
            }
            Some(443) => {
                assert_eq!(l.ssl_policy(), Some("ELBSecurityPolicy-TLS13-1-2-2021-06"));
                assert_eq!(l.certificates().len(), 1);
            }
            other => panic!("unexpected listener on {other:?}"),
        }
    }
    let ecs = aws_sdk_ecs::Client::new(&config);
    let services = ecs.describe_services().cluster(&f.name).services("api").services("worker").send().await.unwrap();
    for s in services.services() {
        let net = s.network_configuration().and_then(|n| n.awsvpc_configuration()).unwrap();
        assert_eq!(net.assign_public_ip().map(|a| a.as_str()), Some("DISABLED"), "{:?}", s.service_name());
        // (moto keeps no deployment configuration: the circuit breaker is not read back here.)
    }
    assert_eq!(services.services().len(), 2);
    // The services' group opens the api's port to the load balancer's group only.
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let tagged = |id: &str| {
        vec![
            aws_sdk_ec2::types::Filter::builder().name("tag:aira:stack").values(&f.name).build(),
            aws_sdk_ec2::types::Filter::builder().name("tag:aira:id").values(id).build(),
        ]
    };
    let group = |id: &'static str| {
        let ec2 = ec2.clone();
        let filters = tagged(id);
        async move {
            ec2.describe_security_groups().set_filters(Some(filters)).send().await.unwrap().security_groups()[0].clone()
        }
    };
    let (lb_sg, services_sg) = (group("lb-sg").await, group("services-sg").await);
    let rules = services_sg.ip_permissions();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!((rules[0].from_port(), rules[0].to_port()), (Some(8080), Some(8080)));
    assert_eq!(rules[0].user_id_group_pairs()[0].group_id(), lb_sg.group_id());
    assert!(rules[0].ip_ranges().is_empty());

    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs.get_queue_url().queue_name(format!("{}-queue", f.name)).send().await.unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(queue_url.queue_url().unwrap())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let table_arn = aws_sdk_dynamodb::Client::new(&config)
        .describe_table()
        .table_name(format!("{}-data", f.name))
        .send()
        .await
        .unwrap()
        .table()
        .unwrap()
        .table_arn()
        .unwrap()
        .to_string();
    let amp = aws_sdk_amp::Client::new(&config);
    let workspaces = amp.list_workspaces().alias(&f.name).send().await.unwrap();
    let [workspace] = workspaces.workspaces() else { panic!("one Prometheus workspace: {workspaces:#?}") };
    let workspace_arn = workspace.arn().to_string();
    let iam = aws_sdk_iam::Client::new(&config);
    for role in ["api", "worker"] {
        let doc =
            iam.get_role_policy().role_name(format!("{}-{role}", f.name)).policy_name("aira").send().await.unwrap();
        let text = percent_encoding::percent_decode_str(doc.policy_document()).decode_utf8_lossy().to_string();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let resources: Vec<&str> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Resource"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()))
            .collect();
        assert_eq!(resources, [queue_arn.as_str(), table_arn.as_str(), workspace_arn.as_str()], "task role {role}");
    }

    // The URL: status reports it and the deployment state.
    let status = run(&f, &["status", &f.file, "--output", "json"]).await;
    status.assert_code(0);
    let st = status.json();
    assert_eq!(st["url"], format!("https://{}/", f.domain));
    assert_eq!(st["pending_changes"], 0, "{st}");
    assert_eq!(st["services"].as_array().unwrap().len(), 2);
    assert_eq!(st["certificate"]["status"], "ISSUED");

    // Down removes everything, the records included; the zone stays.
    run(&f, &["down", &f.file, "--yes", "--timeout", "2m"]).await.assert_code(0);
    crate::harness::assert_nothing_left(&f.name, f.region).await;
    let left = run(&f, &["plan", &f.file, "--image", IMAGE, "--output", "json"]).await.json();
    assert!(left["steps"].as_array().unwrap().iter().all(|s| s["action"] == "create"), "{left}");
    let r53 = aws_sdk_route53::Client::new(&config);
    let records = r53.list_resource_record_sets().hosted_zone_id(&f.zone_id).send().await.unwrap();
    let types: Vec<&str> = records.resource_record_sets().iter().map(|r| r.r#type().as_str()).collect();
    assert!(types.iter().all(|t| *t == "SOA" || *t == "NS"), "records left: {types:?}");
}

#[tokio::test]
async fn preflight_names_a_missing_secret_and_zone_before_any_change() {
    let f = fixture("pre", 1).await;
    // The secret the stack names does not exist.
    let missing_secret =
        f.work.write("secret.yaml", &std::fs::read_to_string(&f.file).unwrap().replace("/llm }", "/nope }"));
    let out = run(&f, &["up", missing_secret.to_str().unwrap(), "--image", IMAGE, "--yes"]).await;
    out.assert_code(1);
    assert!(out.stderr.contains(&format!("the secret `{}/nope` does not exist", f.name)), "{}", out.stderr);
    assert!(out.stderr.contains("aira secret set"), "{}", out.stderr);
    // The hosted zone does not exist.
    let text =
        std::fs::read_to_string(&f.file).unwrap().replace(&format!("{}.example.com", f.name), "absent.example.org");
    let missing_zone = f.work.write("zone.yaml", &text);
    let out = run(&f, &["up", missing_zone.to_str().unwrap(), "--image", IMAGE, "--yes"]).await;
    out.assert_code(1);
    assert!(out.stderr.contains("no hosted zone `absent.example.org`"), "{}", out.stderr);
    // Nothing was created by either.
    assert!(crate::harness::inventory_in(&f.name, f.region).await.is_empty());
}

/// The default path: `up` builds the image, pushes it, and deploys it by digest; a second `up`
/// with nothing changed pushes no blob, registers no task definition and deploys nothing.
#[tokio::test]
async fn second_up_pushes_nothing_and_registers_no_revision() {
    let f = fixture("twice", 1).await;
    let registry = crate::image::Registry::start(false);
    let repo = format!("{}/aira/{}", registry.addr, f.name);
    let binary = crate::image::static_runtime();
    let binary = binary.to_str().unwrap();
    let args = ["up", &f.file, "--registry", &repo, "--insecure-registry", "--runtime-binary", binary, "--yes"];
    let first = run(&f, &args).await;
    first.assert_code(0);
    let writes = registry.blob_writes();
    assert!(writes > 0, "the first up pushed the image:\n{}", registry.log());

    let ecs = aws_sdk_ecs::Client::new(&f.config());
    let revisions = |family: String| {
        let ecs = ecs.clone();
        async move { ecs.list_task_definitions().family_prefix(family).send().await.unwrap().task_definition_arns().len() }
    };
    assert_eq!(revisions(format!("{}-api", f.name)).await, 1);
    let td = ecs.describe_task_definition().task_definition(format!("{}-api", f.name)).send().await.unwrap();
    let image = td.task_definition().unwrap().container_definitions()[0].image().unwrap().to_string();
    assert!(image.starts_with(&format!("{repo}@sha256:")), "deployed by digest: {image}");

    let second = run(&f, &args).await;
    second.assert_code(0);
    assert!(second.stdout.contains("No changes"), "{}", second.stdout);
    assert_eq!(registry.blob_writes(), writes, "no blob pushed again:\n{}", registry.log());
    assert_eq!(revisions(format!("{}-api", f.name)).await, 1, "no new revision");
    assert_eq!(revisions(format!("{}-worker", f.name)).await, 1, "no new revision");
    run(&f, &["down", &f.file, "--yes"]).await.assert_code(0);
    crate::harness::assert_nothing_left(&f.name, f.region).await;
}

/// A task definition's container: (image, the `aira.image.source` label), read through the SDK.
async fn deployed_image(f: &Fixture, family: &str) -> (String, Option<String>) {
    let ecs = aws_sdk_ecs::Client::new(&f.config());
    let td = ecs.describe_task_definition().task_definition(family).send().await.unwrap();
    let c = &td.task_definition().unwrap().container_definitions()[0];
    let label = c.docker_labels().and_then(|l| l.get("aira.image.source")).cloned();
    (c.image().unwrap().to_string(), label)
}

/// The plan's steps that change something, by logical id.
fn changed(plan: &Value) -> Vec<String> {
    let steps = plan["steps"].as_array().unwrap();
    steps.iter().filter(|s| s["action"] != "no-op").map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// `plan` builds nothing: it says whether `up` will build the image and why (from the
/// fingerprint of what the image is built from); `up` then builds it and records the fingerprint
/// on the task definitions; from then on, a run anywhere with the same sources (here: a folder
/// that never built anything) neither builds nor changes the task definitions, and a changed
/// program is planned as a build. `status` counts the changes `plan` lists.
#[tokio::test]
async fn plan_builds_nothing_and_up_builds_only_changed_sources() {
    let f = fixture("source", 1).await;
    let registry = crate::image::Registry::start(false);
    let repo = format!("{}/aira/{}", registry.addr, f.name);
    let binary = crate::image::static_runtime();
    let binary = binary.to_str().unwrap();
    let image = ["--registry", &repo, "--insecure-registry", "--runtime-binary", binary];
    let layout = f.work.dir.path().join(".aira/image");

    let plan = run(&f, &[&["plan", &f.file, "--output", "json"][..], &image].concat()).await;
    plan.assert_code(0);
    let plan = plan.json();
    assert_eq!(plan["image"]["build"], true, "{:#}", plan["image"]);
    assert!(plan["image"]["reason"].as_str().unwrap().contains("no image is deployed yet"), "{:#}", plan["image"]);
    assert!(!layout.exists(), "plan built nothing");
    assert_eq!(registry.blob_writes(), 0, "plan pushed nothing");
    let source = plan["image"]["source"].as_str().unwrap().to_string();

    let up = run(&f, &[&["up", &f.file, "--yes"][..], &image].concat()).await;
    up.assert_code(0);
    assert!(up.stderr.contains("`aira up` will build the runtime's image"), "{}", up.stderr);
    assert_eq!(std::fs::read_to_string(layout.join("aira-source")).unwrap().trim(), source);
    let (deployed, label) = deployed_image(&f, &format!("{}-api", f.name)).await;
    assert!(deployed.starts_with(&format!("{repo}@sha256:")), "{deployed}");
    assert_eq!(label.as_deref(), Some(source.as_str()), "the fingerprint is recorded on the task definition");

    // status and plan agree on what is pending.
    let plan = run(&f, &[&["plan", &f.file, "--output", "json"][..], &image].concat()).await.json();
    let status = run(&f, &["status", &f.file, "--output", "json"]).await;
    status.assert_code(0);
    assert_eq!(
        status.json()["pending_changes"],
        changed(&plan).len(),
        "status and plan disagree: {:?}",
        changed(&plan)
    );
    let status_text = run(&f, &["status", &f.file]).await;
    assert!(!status_text.stdout.contains(": {}"), "{}", status_text.stdout);

    // Elsewhere (nothing built there), the same sources: nothing to build, no new revision.
    let elsewhere = Workdir::new();
    let writes = registry.blob_writes();
    let again = aira_env(
        elsewhere.dir.path(),
        &[&["up", &f.file, "--yes", "--endpoint-url", &f.proxy.url][..], &image].concat(),
        &[],
    )
    .await;
    again.assert_code(0);
    assert!(again.stderr.contains("the deployed image was built from these sources"), "{}", again.stderr);
    assert!(!elsewhere.dir.path().join(".aira").exists(), "nothing was built");
    assert_eq!(registry.blob_writes(), writes, "nothing was pushed");
    assert_eq!(deployed_image(&f, &format!("{}-api", f.name)).await.0, deployed, "the same image runs");

    // Another program: the plan says it will be built, and why.
    let changed_binary = f.work.write("aira-runtime-changed", "");
    let mut bytes = std::fs::read(binary).unwrap();
    bytes.push(0);
    std::fs::write(&changed_binary, bytes).unwrap();
    let other = ["--registry", &repo, "--insecure-registry", "--runtime-binary", changed_binary.to_str().unwrap()];
    let plan = run(&f, &[&["plan", &f.file, "--output", "json"][..], &other].concat()).await.json();
    assert_eq!(plan["image"]["build"], true, "{:#}", plan["image"]);
    assert!(plan["image"]["reason"].as_str().unwrap().contains("sources changed"), "{:#}", plan["image"]);
    assert!(changed(&plan).iter().any(|id| id.starts_with("task-")), "{:?}", changed(&plan));

    run(&f, &["down", &f.file, "--yes"]).await.assert_code(0);
    crate::harness::assert_nothing_left(&f.name, f.region).await;
}
