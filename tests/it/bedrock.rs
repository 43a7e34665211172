//! The worker's model and the network: the canonical stack without NAT cannot reach a model on
//! the internet (refused before any AWS call); with the model on Amazon Bedrock the same network
//! reaches it through a `bedrock-runtime` interface endpoint, which `up` creates with a grant on
//! that one model for the worker. Read back through the EC2, IAM and ECS SDKs.

use aws_sdk_ec2::types::Filter;
use serde_json::Value;

use crate::harness::{aira, endpoint, inventory, sdk_config, unique_stack, Workdir};
use crate::proxy::{Faults, Proxy};

const MODEL: &str = "amazon.nova-lite-v1:0";
const BEDROCK: &str = "llm:\n  provider: bedrock\n  model: amazon.nova-lite-v1:0\n";

/// `stacks/aira.yaml` without NAT gateways: its model is on the internet.
fn canonical_without_nat() -> String {
    let text = std::fs::read_to_string(aira_testkit::canonical::repo_file("stacks/aira.yaml")).unwrap();
    text.replace("nat: true", "nat: false")
}

/// A stack's text with its `llm` (the last key) replaced.
fn with_llm(text: &str, llm: &str) -> String {
    format!("{}{llm}", &text[..text.find("llm:").unwrap()])
}

#[tokio::test]
async fn bedrock_without_nat_a_model_on_the_internet_is_refused_before_any_call_and_bedrock_validates() {
    let work = Workdir::new();
    let file = work.write("aira.yaml", &canonical_without_nat());
    let file = file.to_str().unwrap();
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    for command in ["validate", "plan"] {
        let out = aira(work.dir.path(), &[command, file, "--endpoint-url", &proxy.url]).await;
        out.assert_code(1);
        let worker =
            out.stderr.lines().find(|l| l.contains("services.worker")).unwrap_or_else(|| panic!("{}", out.stderr));
        assert!(worker.starts_with(&format!("{file}:21:")), "file:line:column of the worker: {worker}");
        for part in [
            "cannot reach its model at api.openai.com",
            "`network.nat: true` (a NAT gateway per zone: about $73 a month for 2 zones",
            "`llm.provider: bedrock` (its `bedrock-runtime` interface endpoint: about $14.60 a month for 2 zones)",
        ] {
            assert!(worker.contains(part), "{part}\n{}", out.stderr);
        }
        // The api reaches everything it needs through the endpoints.
        assert!(!out.stderr.contains("services.api"), "{}", out.stderr);
    }
    assert_eq!(proxy.take_calls(), Vec::<String>::new(), "no AWS call");

    let bedrock = work.write("bedrock.yaml", &with_llm(&canonical_without_nat(), BEDROCK));
    aira(work.dir.path(), &["validate", bedrock.to_str().unwrap()]).await.assert_code(0);
}

/// The canonical network (endpoints, no NAT) with both services and the model on Bedrock: `up`
/// creates the `bedrock-runtime` endpoint and the worker's grant on that model, the tasks carry
/// the provider, model and region and no key; a plan right after is empty; `down` removes all.
#[tokio::test]
async fn bedrock_up_creates_the_endpoint_and_the_grant_then_down_removes_them() {
    let stack = unique_stack("bedrock");
    let work = Workdir::new();
    let yaml = format!(
        "{}services:\n  api: {{ role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }}\n  \
         worker: {{ role: worker, cpu: 256, memory: 512 }}\n{BEDROCK}",
        crate::canonical::network_and_queues(&stack)
    );
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    // An ECR image: the tasks pull it through the endpoints.
    let image = format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:{}", "cd".repeat(32));
    let ep = endpoint();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--endpoint-url", &ep]);
        let dir = work.dir.path().to_path_buf();
        let all: Vec<String> = all.iter().map(|a| a.to_string()).collect();
        async move { aira(&dir, &all.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    run(&["up", file, "--yes", "--image", &image, "--timeout", "2m"]).await.assert_code(0);

    let config = sdk_config();
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let tagged = |id: &str| {
        vec![
            Filter::builder().name("tag:aira:stack").values(&stack).build(),
            Filter::builder().name("tag:aira:id").values(id).build(),
        ]
    };
    let endpoints = ec2.describe_vpc_endpoints().set_filters(Some(tagged("endpoint-bedrock-runtime"))).send().await;
    let endpoints = endpoints.unwrap();
    let [e] = endpoints.vpc_endpoints() else { panic!("one bedrock-runtime endpoint: {endpoints:#?}") };
    assert_eq!(e.service_name(), Some("com.amazonaws.us-east-1.bedrock-runtime"));
    assert_eq!(e.vpc_endpoint_type().map(|t| t.as_str()), Some("Interface"));
    assert_eq!(e.private_dns_enabled(), Some(true));
    let mut private_subnets = Vec::new();
    for id in ["private-a", "private-b"] {
        let out = ec2.describe_subnets().set_filters(Some(tagged(id))).send().await.unwrap();
        private_subnets.push(out.subnets()[0].subnet_id().unwrap().to_string());
    }
    let mut subnets = e.subnet_ids().to_vec();
    subnets.sort();
    private_subnets.sort();
    assert_eq!(subnets, private_subnets, "in the private subnets");
    let group = ec2.describe_security_groups().set_filters(Some(tagged("endpoints-sg"))).send().await.unwrap();
    let groups: Vec<&str> = e.groups().iter().filter_map(|g| g.group_id()).collect();
    assert_eq!(groups, [group.security_groups()[0].group_id().unwrap()], "the endpoints' group");

    // The worker may invoke that one model; the api nothing on Bedrock.
    let iam = aws_sdk_iam::Client::new(&config);
    let statements = |role: String| {
        let iam = iam.clone();
        async move {
            let doc = iam.get_role_policy().role_name(role).policy_name("aira").send().await.unwrap();
            let text = percent_encoding::percent_decode_str(doc.policy_document()).decode_utf8_lossy().to_string();
            serde_json::from_str::<Value>(&text).unwrap()["Statement"].as_array().unwrap().clone()
        }
    };
    let on_bedrock = |statements: Vec<Value>| -> Vec<Value> {
        statements.into_iter().filter(|s| s["Action"].to_string().contains("bedrock:")).collect()
    };
    let worker = on_bedrock(statements(format!("{stack}-worker")).await);
    let [grant] = &worker[..] else { panic!("one Bedrock statement: {worker:#?}") };
    assert_eq!(grant["Effect"], "Allow");
    assert_eq!(grant["Action"], serde_json::json!(["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]));
    assert_eq!(grant["Resource"], serde_json::json!([format!("arn:aws:bedrock:us-east-1::foundation-model/{MODEL}")]));
    assert_eq!(on_bedrock(statements(format!("{stack}-api")).await), Vec::<Value>::new());

    // The worker's task: provider, model and region; no URL and no key.
    let ecs = aws_sdk_ecs::Client::new(&config);
    let td = ecs.describe_task_definition().task_definition(format!("{stack}-worker")).send().await.unwrap();
    let container = &td.task_definition().unwrap().container_definitions()[0];
    let env: std::collections::BTreeMap<&str, &str> =
        container.environment().iter().filter_map(|kv| Some((kv.name()?, kv.value()?))).collect();
    assert_eq!(env.get("AIRA_LLM_PROVIDER"), Some(&"bedrock"), "{env:?}");
    assert_eq!(env.get("AIRA_LLM_MODEL"), Some(&MODEL), "{env:?}");
    assert_eq!(env.get("AWS_REGION"), Some(&"us-east-1"), "{env:?}");
    assert!(!env.contains_key("AIRA_LLM_BASE_URL"), "{env:?}");
    assert!(container.secrets().is_empty(), "no LLM secret: {:?}", container.secrets());

    // Converged, and the reachability table names the path.
    let plan = run(&["plan", file, "--image", &image, "--output", "json", "--detailed-exitcode"]).await;
    plan.assert_code(0);
    let p = plan.json();
    let routes = p["reachability"]["routes"].as_array().unwrap();
    let model = routes.iter().find(|r| r["service"] == "worker" && r["dependency"] == "model").unwrap();
    assert_eq!(model["host"], "bedrock-runtime.us-east-1.amazonaws.com");
    assert_eq!(model["path"], "interface endpoint `bedrock-runtime` (private DNS)");

    // The cost: what exists, observed in moto, prices as the file does.
    let cost = &p["cost"];
    assert_eq!((cost["region"].as_str(), cost["change"].as_f64()), (Some("us-east-1"), Some(0.0)), "{cost:#}");
    assert_eq!(cost["monthly"], cost["current_monthly"], "{cost:#}");
    let lines = cost["lines"].as_array().unwrap();
    let priced = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    // 7 interface endpoints (sqs, ecr.api, ecr.dkr, logs, secretsmanager, bedrock-runtime,
    // aps-workspaces); s3 and dynamodb are free gateway endpoints.
    assert_eq!(priced("ec2.vpc-endpoint"), 7, "{cost:#}");
    for kind in ["elbv2.load-balancer", "ecs.service", "logs.log-group", "cloudwatch.alarm"] {
        assert!(priced(kind) > 0, "{kind} priced: {cost:#}");
    }
    let sum: f64 = lines.iter().map(|l| l["monthly"].as_f64().unwrap()).sum();
    assert!((sum - cost["monthly"].as_f64().unwrap()).abs() < 0.005, "the total is the sum of the lines: {cost:#}");
    // NAT on: two gateways and their addresses, 2 × ($0.045 + $0.005) an hour × 730 hours.
    let nat = work.write("nat.yaml", &yaml.replace("network:\n", "network:\n  nat: true\n"));
    let plan = run(&["plan", nat.to_str().unwrap(), "--image", &image, "--output", "json"]).await;
    plan.assert_code(0);
    let p = plan.json();
    assert_eq!(p["cost"]["change"].as_f64(), Some(73.0), "{:#}", p["cost"]);
    // The action's job summary (action.yml) renders it.
    let json = work.write("plan.json", &plan.stdout);
    let outputs = work.write("outputs.txt", "");
    let summary = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.github/action/summary.sh"))
        .args([json.to_str().unwrap(), "plan"])
        .env("GITHUB_OUTPUT", &outputs)
        .output()
        .unwrap();
    let summary = String::from_utf8(summary.stdout).unwrap();
    let changes = p["steps"].as_array().unwrap().iter().filter(|s| s["action"] != "no-op").count();
    let monthly = p["cost"]["monthly"].as_f64().unwrap();
    assert_eq!(
        std::fs::read_to_string(&outputs).unwrap(),
        format!("changes={changes}\nmonthly-cost={monthly}\nurl=\n"),
        "the action's outputs"
    );
    assert!(summary.contains("change +$73.00."), "{summary}");
    assert!(
        summary.contains("| `nat-a` | ec2.nat-gateway | NAT gateway (and $0.045/GB it processes) | $32.85 |"),
        "{summary}"
    );
    // `nat: one`: one gateway and its address for both zones, half of it.
    let one = work.write("nat-one.yaml", &yaml.replace("network:\n", "network:\n  nat: one\n"));
    let plan = run(&["plan", one.to_str().unwrap(), "--image", &image, "--output", "json"]).await;
    plan.assert_code(0);
    let p = plan.json();
    assert_eq!(p["cost"]["change"].as_f64(), Some(36.5), "{:#}", p["cost"]);
    let nats: Vec<&Value> =
        p["cost"]["lines"].as_array().unwrap().iter().filter(|l| l["kind"] == "ec2.nat-gateway").collect();
    assert_eq!(nats.len(), 1, "{nats:#?}");

    run(&["down", file, "--yes", "--timeout", "2m"]).await.assert_code(0);
    let left = ec2.describe_vpc_endpoints().set_filters(Some(tagged("endpoint-bedrock-runtime"))).send().await.unwrap();
    let live: Vec<_> = left
        .vpc_endpoints()
        .iter()
        .filter(|e| e.state().map(|s| s.as_str().to_ascii_lowercase()).as_deref() != Some("deleted"))
        .collect();
    assert!(live.is_empty(), "the endpoint is gone: {live:#?}");
    assert!(inventory(&stack).await.is_empty(), "left after down");
}

/// The worker's role statements, read through IAM.
async fn role_statements(role: &str) -> Vec<Value> {
    let iam = aws_sdk_iam::Client::new(&sdk_config());
    let doc = iam.get_role_policy().role_name(role).policy_name("aira").send().await.unwrap();
    let text = percent_encoding::percent_decode_str(doc.policy_document()).decode_utf8_lossy().to_string();
    serde_json::from_str::<Value>(&text).unwrap()["Statement"].as_array().unwrap().clone()
}

/// A model that recent Bedrock regions serve only through a cross-region inference profile:
/// named by its profile, the stack goes up with a grant on that profile and on its model in each
/// region the profile routes to (as the pre-flight read them), and on the Marketplace
/// subscription of another provider's model. Named directly, it is refused naming the profile;
/// a profile the region does not have is refused. (Bedrock's control plane is the proxy's
/// catalogue: moto has none.)
#[tokio::test]
async fn bedrock_an_inference_profile_is_granted_with_its_models_and_a_profile_only_model_is_refused() {
    const PROFILE: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
    const FOUNDATION: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
    let stack = unique_stack("profile");
    let work = Workdir::new();
    let yaml = |model: &str| {
        format!(
            "{}services:\n  worker: {{ role: worker, cpu: 256, memory: 512 }}\nllm:\n  provider: bedrock\n  model: {model}\n",
            crate::canonical::network_and_queues(&stack)
        )
    };
    let image = format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:{}", "ef".repeat(32));
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    let run = |name: &str, model: &str, verb: &str| {
        let file = work.write(name, &yaml(model));
        let (dir, url, image) = (work.dir.path().to_path_buf(), proxy.url.clone(), image.clone());
        let verb = verb.to_string();
        async move {
            let file = file.to_str().unwrap().to_string();
            aira(&dir, &[&verb, &file, "--yes", "--image", &image, "--timeout", "2m", "--endpoint-url", &url]).await
        }
    };
    // Named directly: this region serves it through a profile only.
    let direct = run("direct.yaml", FOUNDATION, "plan").await;
    direct.assert_code(1);
    assert!(direct.stderr.contains(&format!("does not serve `{FOUNDATION}` on demand")), "{}", direct.stderr);
    assert!(direct.stderr.contains(&format!("`{PROFILE}`")), "names the profile to use: {}", direct.stderr);
    // A profile of other regions.
    let elsewhere = run("elsewhere.yaml", "eu.amazon.nova-lite-v1:0", "plan").await;
    elsewhere.assert_code(1);
    assert!(
        elsewhere.stderr.contains("has no Bedrock model or inference profile `eu.amazon.nova-lite-v1:0`"),
        "{}",
        elsewhere.stderr
    );

    run("stack.yaml", PROFILE, "up").await.assert_code(0);
    let statements = role_statements(&format!("{stack}-worker")).await;
    let sid = |s: &str| {
        statements.iter().find(|st| st["Sid"] == s).cloned().unwrap_or_else(|| panic!("no {s}: {statements:#?}"))
    };
    let mut expected = vec![format!("arn:aws:bedrock:us-east-1:123456789012:inference-profile/{PROFILE}")];
    expected.extend(
        ["us-east-1", "us-east-2", "us-west-2"].map(|r| format!("arn:aws:bedrock:{r}::foundation-model/{FOUNDATION}")),
    );
    assert_eq!(sid("Model")["Resource"], serde_json::json!(expected));
    assert_eq!(
        sid("Model")["Action"],
        serde_json::json!(["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"])
    );
    let subscribe = sid("ModelSubscription")["Action"].to_string();
    assert!(subscribe.contains("aws-marketplace:Subscribe") && subscribe.contains("aws-marketplace:ViewSubscriptions"));
    // The task calls the profile by its id.
    let ecs = aws_sdk_ecs::Client::new(&sdk_config());
    let td = ecs.describe_task_definition().task_definition(format!("{stack}-worker")).send().await.unwrap();
    let env = td.task_definition().unwrap().container_definitions()[0].environment().to_vec();
    assert!(env.iter().any(|kv| kv.name() == Some("AIRA_LLM_MODEL") && kv.value() == Some(PROFILE)), "{env:?}");
    let file = work.write("stack.yaml", &yaml(PROFILE));
    aira(work.dir.path(), &["down", file.to_str().unwrap(), "--yes", "--endpoint-url", &endpoint()])
        .await
        .assert_code(0);
    assert!(inventory(&stack).await.is_empty());
}
