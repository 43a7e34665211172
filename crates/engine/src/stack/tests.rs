//! Malformed stack files, each with the exact diagnostics expected (`UPDATE_EXPECT=1` rewrites them).

use expect_test::{expect, Expect};

fn check(source: &str, expected: Expect) {
    let actual = match super::parse("bad.yaml", source) {
        Ok(_) => "valid\n".to_string(),
        Err(diags) => diags.iter().map(|d| format!("{d}\n")).collect(),
    };
    expected.assert_eq(&actual);
}

const SERVICES: &str =
    "services:\n  api: { role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }\n";

#[test]
fn canonical_and_example_stacks_are_valid() {
    let dir = crate::manifest_dir();
    let root = dir.ancestors().nth(2).unwrap();
    let mut files = vec![root.join("stacks/aira.yaml")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        files.push(entry.unwrap().path());
    }
    assert!(files.len() >= 4, "the canonical stack and at least three examples");
    for f in files {
        if let Err(d) = super::load(&f) {
            panic!("{}: {d:?}", f.display());
        }
    }
}

#[test]
fn syntax_error() {
    check(
        "stack: aira\nqueue: [unclosed\n",
        expect![[r#"
        bad.yaml:3:1: invalid YAML: while parsing a flow sequence, expected ',' or ']'
    "#]],
    );
}

#[test]
fn unknown_top_level_key_with_hint() {
    check(
        "stack: aira\nregoin: us-east-1\n",
        expect![[r#"
        bad.yaml:2:1: unknown key `regoin` at the top level (did you mean `region`?)
    "#]],
    );
}

#[test]
fn unknown_nested_key_with_hint() {
    check(
        "stack: aira\nqueue:\n  visibilty_timeout: 30s\n",
        expect![[r#"
        bad.yaml:3:3: unknown key `visibilty_timeout` in `queue` (did you mean `visibility_timeout`?)
    "#]],
    );
}

#[test]
fn unknown_key_without_close_match_lists_known_keys() {
    check(
        "stack: aira\ndomain: { zone: example.com, name: example.com, ttl: 60 }\n",
        expect![[r#"
        bad.yaml:2:49: unknown key `ttl` in `domain` (known keys here: zone, name)
    "#]],
    );
}

#[test]
fn missing_stack_name() {
    check(
        "queue: {}\n",
        expect![[r#"
        bad.yaml:1:1: the stack is missing the key `stack` (lower-case letters, digits and hyphens, starting with a letter, at most 28 characters)
    "#]],
    );
}

#[test]
fn invalid_stack_name() {
    check(
        "stack: Chat_Prod\n",
        expect![[r#"
        bad.yaml:1:8: stack: `Chat_Prod` is not a valid stack name: use lower-case letters, digits and single hyphens, start with a letter, at most 28 characters (it prefixes AWS names with tight limits)
    "#]],
    );
}

#[test]
fn wrong_type_quoted_number() {
    check(
        &format!("stack: aira\n{SERVICES}  worker: {{ role: worker, cpu: \"256\", memory: 512 }}\n"),
        expect![[r#"
        bad.yaml:4:32: services.worker.cpu: expected one of 256, 512, 1024, 2048, 4096, 8192, 16384, found the string `256` (remove the quotes)
    "#]],
    );
}

#[test]
fn wrong_type_mapping_for_list() {
    check(
        "stack: aira\nnetwork:\n  endpoints: { sqs: true }\n",
        expect![[r#"
        bad.yaml:3:14: network.endpoints: expected a list, found a mapping
    "#]],
    );
}

#[test]
fn count_as_string() {
    check(
        &format!("stack: aira\n{SERVICES}  worker: {{ role: worker, cpu: 256, memory: 512, count: \"3\" }}\n"),
        expect![[r#"
        bad.yaml:4:57: services.worker.count: expected an integer or a mapping, found the string `3` (remove the quotes)
    "#]],
    );
}

#[test]
fn invalid_cidr() {
    check(
        "stack: aira\nnetwork:\n  cidr: 10.40.0.0/33\n",
        expect![[r#"
        bad.yaml:3:9: network.cidr: `10.40.0.0/33` is not an IPv4 CIDR block
    "#]],
    );
}

#[test]
fn cidr_with_host_bits_and_too_large() {
    check(
        "stack: aira\nnetwork:\n  cidr: 10.40.1.0/16\n",
        expect![[r#"
        bad.yaml:3:9: network.cidr: `10.40.1.0/16` has host bits set; the network is `10.40.0.0/16`
    "#]],
    );
    check(
        "stack: aira\nnetwork:\n  cidr: 10.0.0.0/8\n",
        expect![[r#"
        bad.yaml:3:9: network.cidr: the VPC block must be a /16 to /24, found /8
    "#]],
    );
}

/// A worker scaled on its backlog per running task cannot start from 0 tasks.
#[test]
fn autoscaling_from_zero_tasks_is_refused() {
    let worker = "services:\n  w: { role: worker, cpu: 256, memory: 512, count: { min: 0, max: 3 } }\n";
    check(
        &format!("stack: aira\n{worker}"),
        expect![[r#"
        bad.yaml:3:52: services.w.count: min 0 would leave the worker stopped for good: the backlog per running task it scales on has no value with no task running (`min: 1` or more)
    "#]],
    );
    check(&format!("stack: aira\n{}", worker.replace("min: 0", "min: 1")), expect!["valid\n"]);
}

/// Subnets of at least /27 (a load balancer's need), and two zones for a public service's load
/// balancer.
#[test]
fn subnets_smaller_than_27_and_one_zone_behind_a_load_balancer_are_refused() {
    check(
        &format!("stack: aira\nnetwork:\n  cidr: 10.40.0.0/24\n  zones: 6\n{SERVICES}"),
        expect![[r#"
            bad.yaml:3:9: network.cidr: /24 is too small for 12 subnets of at least /27 (a load balancer's subnet needs a /27, and the tasks and endpoints share the private ones) (a /23 or larger VPC block, or fewer `network.zones`)
        "#]],
    );
    // 3 zones: 6 subnets, in 8 slices of a /24: /27 each.
    check(&format!("stack: aira\nnetwork:\n  cidr: 10.40.0.0/24\n  zones: 3\n{SERVICES}"), expect!["valid\n"]);
    check(
        &format!("stack: aira\nnetwork:\n  zones: 1\n{SERVICES}"),
        expect![[r#"
        bad.yaml:3:10: network.zones: the public service `api` needs a load balancer, whose subnets span at least 2 availability zones; found 1 (set `network.zones` to 2 or more (2 is the default))
    "#]],
    );
    // A worker alone has no load balancer: one zone is the user's choice.
    let worker = "services:\n  w: { role: worker, cpu: 256, memory: 512 }\n";
    check(&format!("stack: aira\nnetwork:\n  zones: 1\n{worker}"), expect!["valid\n"]);
}

#[test]
fn invalid_domain() {
    check(
        "stack: aira\ndomain:\n  zone: example\n  name: chat..example.com\n",
        expect![[r#"
        bad.yaml:3:9: domain.zone: `example` is not a valid domain name: it needs at least two labels, as in `example.com`
        bad.yaml:4:9: domain.name: `chat..example.com` is not a valid domain name: each label between dots must have 1 to 63 characters
    "#]],
    );
}

#[test]
fn domain_outside_zone() {
    check(
        "stack: aira\ndomain:\n  zone: example.com\n  name: chat.example.org\n",
        expect![[r#"
        bad.yaml:4:9: domain.name: `chat.example.org` is not inside the zone `example.com`
    "#]],
    );
}

#[test]
fn invalid_durations() {
    check(
        "stack: aira\nqueue:\n  visibility_timeout: 120\n  retention: 4 days\n",
        expect![[r#"
        bad.yaml:3:23: queue.visibility_timeout: expected a duration with units: 30s, 5m, 2h, 4d, 1h30m, found the integer 120 (add a unit, e.g. `120s`)
        bad.yaml:4:14: queue.retention: `4 days` is not a duration; write it with a unit, such as `30s`, `5m`, `2h` or `4d`
    "#]],
    );
}

#[test]
fn sqs_limits() {
    check(
        "stack: aira\nqueue:\n  visibility_timeout: 13h\n  receive_wait: 30s\n  dead_letter: null\n",
        expect![[r#"
        bad.yaml:3:23: queue.visibility_timeout: must be at most 12h (an SQS limit)
        bad.yaml:4:17: queue.receive_wait: must be at most 20s (an SQS limit), found 30s
    "#]],
    );
}

#[test]
fn fargate_cpu_memory_pair() {
    check(
        "stack: aira\nservices:\n  api: { role: api, cpu: 1024, memory: 1024, port: 8080 }\n",
        expect![[r#"
        bad.yaml:3:40: services.api.memory: Fargate does not accept 1024 MiB with 1024 CPU units (with cpu 1024, memory is one of 2048 to 8192 in steps of 1024)
    "#]],
    );
}

#[test]
fn fargate_cpu_not_a_size() {
    check(
        "stack: aira\nservices:\n  api: { role: api, cpu: 300, memory: 512, port: 8080 }\n",
        expect![[r#"
        bad.yaml:3:26: services.api.cpu: expected one of 256, 512, 1024, 2048, 4096, 8192, 16384, found the integer 300
    "#]],
    );
}

#[test]
fn dead_letter_retention_not_longer() {
    check(
        "stack: aira\nqueue:\n  retention: 4d\n  dead_letter: { max_receives: 5, retention: 4d }\n",
        expect![[r#"
        bad.yaml:4:46: queue.dead_letter.retention (4d) must be longer than queue.retention (4d) (a message keeps its original enqueue time in the dead-letter queue, so a shorter retention deletes it before anyone can redrive it)
    "#]],
    );
}

#[test]
fn duplicate_service_names() {
    check(
        &format!("stack: aira\n{SERVICES}  api: {{ role: worker, cpu: 256, memory: 512 }}\n"),
        expect![[r#"
        bad.yaml:4:3: duplicate key `api` (first defined at line 3, column 3)
    "#]],
    );
}

#[test]
fn enum_value_with_hint() {
    check(
        "stack: aira\nnetwork:\n  endpoints: [sqs, ecr.apii]\n",
        expect![[r#"
            bad.yaml:3:20: network.endpoints[1]: expected one of `sqs`, `ecr.api`, `ecr.dkr`, `logs`, `secretsmanager`, `s3`, `dynamodb`, `monitoring`, `bedrock-runtime`, `aps-workspaces`, found the string `ecr.apii` (did you mean `ecr.api`?)
        "#]],
    );
}

#[test]
fn role_with_hint_and_autoscaling_keys() {
    check(
        "stack: aira\nservices:\n  w: { role: wroker, cpu: 256, memory: 512, count: { min: 1, maxx: 3 } }\n",
        expect![[r#"
        bad.yaml:3:14: services.w.role: expected one of `api`, `worker`, found the string `wroker` (did you mean `worker`?)
        bad.yaml:3:52: `services.w.count` is missing the key `max` (an integer)
        bad.yaml:3:62: unknown key `maxx` in `services.w.count` (did you mean `max`?)
    "#]],
    );
}

#[test]
fn semantic_rules_of_services() {
    check(
        "stack: aira\nservices:\n  api: { role: api, cpu: 256, memory: 512, public: true }\n  w: { role: worker, cpu: 256, memory: 512, port: 80, public: true, count: { min: 4, max: 2 } }\n",
        expect![[r#"
            bad.yaml:3:8: services.api: an api service needs a `port`
            bad.yaml:4:51: services.w.port: a worker serves no HTTP, so it takes no `port`
            bad.yaml:4:63: services.w.public: a worker cannot be public
            bad.yaml:4:63: services: only one service can be public behind the load balancer; `api` and `w` both are
            bad.yaml:4:76: services.w.count: min (4) is greater than max (2)
        "#]],
    );
}

#[test]
fn an_api_port_cannot_be_the_operations_port() {
    check(
        "stack: aira\nservices:\n  api: { role: api, cpu: 256, memory: 512, port: 9090 }\n",
        expect![[r#"
            bad.yaml:3:50: services.api.port: 9090 is every task's operations listener (`/metrics`, `/readyz`), which the load balancer never reaches; choose another port
        "#]],
    );
}

#[test]
fn anchors_and_multiple_documents_are_refused() {
    check(
        "stack: &n aira\n",
        expect![[r#"
        bad.yaml:1:11: YAML anchors (`&name`) are not supported in stack files
    "#]],
    );
    check(
        "stack: aira\n---\nstack: other\n",
        expect![[r#"
        bad.yaml:2:1: a stack file holds one YAML document; found a second `---`
    "#]],
    );
    // A document that starts with `---` is one document.
    check(
        "---\nstack: aira\n",
        expect![[r#"
        valid
    "#]],
    );
}

#[test]
fn all_errors_are_reported_together() {
    let source = "stack: aira\nregoin: x\nqueue:\n  fifo: maybe\nnetwork:\n  zones: 0\n";
    let diags = super::parse("bad.yaml", source).unwrap_err();
    let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![2, 4, 6], "{diags:#?}");
}

#[test]
fn committed_schema_is_current() {
    let committed = std::fs::read_to_string(crate::manifest_dir().join("../../schema/stack.schema.json")).unwrap();
    let current = serde_json::to_string_pretty(&super::schema()).unwrap() + "\n";
    assert!(committed == current, "schema/stack.schema.json is stale: run `aira schema > schema/stack.schema.json`");
}

#[test]
fn a_dependency_without_a_network_path_is_refused_with_its_fixes() {
    let stack =
        "stack: aira\nregion: us-east-1\nnetwork:\n  nat: false\n  endpoints: [sqs, ecr.api, ecr.dkr, s3, dynamodb]\n";
    let services = "services:\n  api: { role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }\n  worker: { role: worker, cpu: 256, memory: 512 }\n";
    let llm = "llm:\n  base_url: https://api.openai.com/v1\n  model: gpt-4o-mini\n";
    check(
        &format!("{stack}{services}{llm}"),
        expect![[r#"
            bad.yaml:7:8: services.api: cannot reach its logs (CloudWatch Logs) at logs.us-east-1.amazonaws.com: its private subnets have no route there; fix: add `logs` to `network.endpoints` (about $14.60 a month for 2 zones), or `network.nat: true` (a NAT gateway per zone: about $73 a month for 2 zones, plus $0.045 per GB), or `network.nat: one` (one for every zone, lost with the first: about $36 a month), or `network.nat: instance` (one t4g.nano instance for every zone, one instance's bandwidth: about $7 a month)
            bad.yaml:8:11: services.worker: cannot reach its logs (CloudWatch Logs) at logs.us-east-1.amazonaws.com: its private subnets have no route there; fix: add `logs` to `network.endpoints` (about $14.60 a month for 2 zones), or `network.nat: true` (a NAT gateway per zone: about $73 a month for 2 zones, plus $0.045 per GB), or `network.nat: one` (one for every zone, lost with the first: about $36 a month), or `network.nat: instance` (one t4g.nano instance for every zone, one instance's bandwidth: about $7 a month)
            bad.yaml:8:11: services.worker: cannot reach its model at api.openai.com: its private subnets have no route there; fix: `network.nat: true` (a NAT gateway per zone: about $73 a month for 2 zones, plus $0.045 per GB), or `network.nat: one` (one for every zone, lost with the first: about $36 a month), or `network.nat: instance` (one t4g.nano instance for every zone, one instance's bandwidth: about $7 a month), or a model on Amazon Bedrock, `llm.provider: bedrock` (its `bedrock-runtime` interface endpoint: about $14.60 a month for 2 zones)
        "#]],
    );
    // With the NAT gateway every dependency has a path; so it has with the endpoints and an
    // offline model (no `llm`).
    check(&format!("{stack}{services}{llm}").replace("nat: false", "nat: true"), expect!["valid\n"]);
    check(&format!("{stack}{services}").replace("s3, dynamodb]", "s3, dynamodb, logs]"), expect!["valid\n"]);
}

#[test]
fn reachability_table_names_each_path() {
    let loaded = super::parse(
        "aira.yaml",
        &std::fs::read_to_string(crate::manifest_dir().join("../../stacks/aira.yaml")).unwrap(),
    )
    .unwrap();
    let table = super::reach::reachability(&loaded.stack, None);
    let text: String = table
        .routes
        .iter()
        .map(|r| format!("{} -> {} ({}): {}\n", r.service, r.dependency, r.host, r.path.as_deref().unwrap_or("NONE")))
        .collect();
    expect![[r#"
        api -> image registry (ECR API) (api.ecr.us-east-1.amazonaws.com): interface endpoint `ecr.api` (private DNS)
        api -> image registry (ECR) (*.dkr.ecr.us-east-1.amazonaws.com): interface endpoint `ecr.dkr` (private DNS)
        api -> image layers (S3) (s3.us-east-1.amazonaws.com): gateway endpoint `s3` in the private route tables
        api -> logs (CloudWatch Logs) (logs.us-east-1.amazonaws.com): interface endpoint `logs` (private DNS)
        api -> secret (Secrets Manager) (secretsmanager.us-east-1.amazonaws.com): interface endpoint `secretsmanager` (private DNS)
        api -> queue (SQS) (sqs.us-east-1.amazonaws.com): interface endpoint `sqs` (private DNS)
        api -> table (DynamoDB) (dynamodb.us-east-1.amazonaws.com): gateway endpoint `dynamodb` in the private route tables
        api -> metrics (Managed Prometheus) (aps-workspaces.us-east-1.amazonaws.com): interface endpoint `aps-workspaces` (private DNS)
        worker -> image registry (ECR API) (api.ecr.us-east-1.amazonaws.com): interface endpoint `ecr.api` (private DNS)
        worker -> image registry (ECR) (*.dkr.ecr.us-east-1.amazonaws.com): interface endpoint `ecr.dkr` (private DNS)
        worker -> image layers (S3) (s3.us-east-1.amazonaws.com): gateway endpoint `s3` in the private route tables
        worker -> logs (CloudWatch Logs) (logs.us-east-1.amazonaws.com): interface endpoint `logs` (private DNS)
        worker -> secret (Secrets Manager) (secretsmanager.us-east-1.amazonaws.com): interface endpoint `secretsmanager` (private DNS)
        worker -> queue (SQS) (sqs.us-east-1.amazonaws.com): interface endpoint `sqs` (private DNS)
        worker -> table (DynamoDB) (dynamodb.us-east-1.amazonaws.com): gateway endpoint `dynamodb` in the private route tables
        worker -> metrics (Managed Prometheus) (aps-workspaces.us-east-1.amazonaws.com): interface endpoint `aps-workspaces` (private DNS)
        worker -> model (api.openai.com): NAT gateway (default route)
    "#]].assert_eq(&text);
}

/// The registry of an image reference as Docker reads it, and which registries the stack's
/// endpoints reach: this region's ECR only.
#[test]
fn image_references_name_their_registry_and_only_this_regions_ecr_is_reached_without_nat() {
    use super::reach::registry_of;
    let digest = format!("sha256:{}", "0".repeat(64));
    assert_eq!(registry_of(&format!("nginx@{digest}")), "registry-1.docker.io");
    assert_eq!(registry_of("library/nginx:1"), "registry-1.docker.io");
    assert_eq!(registry_of("localhost/x:1"), "localhost");
    assert_eq!(registry_of("127.0.0.1:5000/x@sha256:0"), "127.0.0.1:5000");
    assert_eq!(registry_of("public.ecr.aws/x/y:1"), "public.ecr.aws");
    let no_nat = canonical_with(false, BEDROCK);
    let loaded = super::parse("aira.yaml", &no_nat).unwrap();
    let unreachable = |image: &str| {
        let table = super::reach::reachability(&loaded.stack, Some(image));
        table.problems(&loaded.stack).into_iter().map(|(_, p)| p).collect::<Vec<_>>().join("\n")
    };
    let here = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@{digest}");
    assert_eq!(unreachable(&here), "", "this region's ECR, through the endpoints");
    for elsewhere in [
        format!("nginx@{digest}"),
        format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/aira/runtime@{digest}"),
        "public.ecr.aws/nginx/nginx:1".to_string(),
    ] {
        let problems = unreachable(&elsewhere);
        assert!(problems.contains("cannot reach its image registry"), "{elsewhere}: {problems}");
        assert!(problems.contains(&registry_of(&elsewhere)), "{elsewhere} names its registry: {problems}");
    }
}

/// The canonical stack's text with `network.nat` and `llm` replaced.
fn canonical_with(nat: bool, llm: &str) -> String {
    let text = std::fs::read_to_string(crate::manifest_dir().join("../../stacks/aira.yaml")).unwrap();
    let text = text.replace("nat: true", &format!("nat: {nat}"));
    format!("{}{llm}", &text[..text.find("llm:").unwrap()])
}

const BEDROCK: &str = "llm:\n  provider: bedrock\n  model: amazon.nova-lite-v1:0\n";

fn routes_of(source: &str, service: &str) -> String {
    let loaded = super::parse("aira.yaml", source).unwrap();
    super::reach::reachability(&loaded.stack, None)
        .routes
        .iter()
        .filter(|r| r.service == service)
        .map(|r| format!("{} ({}): {}\n", r.dependency, r.host, r.path.as_deref().unwrap_or("NONE")))
        .collect()
}

#[test]
fn without_nat_an_openai_model_outside_aws_is_refused_naming_bedrock_among_the_fixes() {
    check(
        &canonical_with(false, "llm:\n  base_url: https://api.openai.com/v1\n  model: gpt-4o-mini\n"),
        expect![[r#"
            bad.yaml:21:11: services.worker: cannot reach its model at api.openai.com: its private subnets have no route there; fix: `network.nat: true` (a NAT gateway per zone: about $73 a month for 2 zones, plus $0.045 per GB), or `network.nat: one` (one for every zone, lost with the first: about $36 a month), or `network.nat: instance` (one t4g.nano instance for every zone, one instance's bandwidth: about $7 a month), or a model on Amazon Bedrock, `llm.provider: bedrock` (its `bedrock-runtime` interface endpoint: about $14.60 a month for 2 zones)
        "#]],
    );
}

#[test]
fn a_bedrock_model_is_reached_through_its_endpoint_without_nat() {
    expect![[r#"
        image registry (ECR API) (api.ecr.us-east-1.amazonaws.com): interface endpoint `ecr.api` (private DNS)
        image registry (ECR) (*.dkr.ecr.us-east-1.amazonaws.com): interface endpoint `ecr.dkr` (private DNS)
        image layers (S3) (s3.us-east-1.amazonaws.com): gateway endpoint `s3` in the private route tables
        logs (CloudWatch Logs) (logs.us-east-1.amazonaws.com): interface endpoint `logs` (private DNS)
        queue (SQS) (sqs.us-east-1.amazonaws.com): interface endpoint `sqs` (private DNS)
        table (DynamoDB) (dynamodb.us-east-1.amazonaws.com): gateway endpoint `dynamodb` in the private route tables
        metrics (Managed Prometheus) (aps-workspaces.us-east-1.amazonaws.com): interface endpoint `aps-workspaces` (private DNS)
        model (bedrock-runtime.us-east-1.amazonaws.com): interface endpoint `bedrock-runtime` (private DNS)
    "#]]
    .assert_eq(&routes_of(&canonical_with(false, BEDROCK), "worker"));
    // The api calls no model.
    assert!(!routes_of(&canonical_with(false, BEDROCK), "api").contains("model"));
    // With NAT as well, the endpoint carries the model's traffic (it exists either way).
    assert!(routes_of(&canonical_with(true, BEDROCK), "worker").contains(
        "model (bedrock-runtime.us-east-1.amazonaws.com): interface endpoint `bedrock-runtime` (private DNS)"
    ));
}

#[test]
fn llm_keys_each_provider_refuses() {
    let stack = "stack: aira\nregion: us-east-1\nnetwork:\n  nat: true\n";
    check(
        &format!("{stack}llm:\n  provider: bedrock\n  base_url: https://api.openai.com/v1\n  model: amazon.nova-lite-v1:0\n  api_key: {{ secret: aira/openai }}\n"),
        expect![[r#"
            bad.yaml:7:13: llm.base_url: provider `bedrock` takes no `base_url`: the worker calls Bedrock in the stack's region, through a `bedrock-runtime` VPC endpoint (remove `base_url`; `model` is the Bedrock model id, such as `amazon.nova-lite-v1:0`)
            bad.yaml:9:12: llm.api_key: provider `bedrock` takes no `api_key`: the worker's task role is granted `bedrock:InvokeModel` on the model (remove `api_key`)
        "#]],
    );
    check(
        &format!("{stack}llm:\n  model: gpt-4o-mini\n"),
        expect![[r#"
        bad.yaml:6:3: llm: provider `openai` needs `base_url`, the URL of an OpenAI-compatible API such as `https://api.openai.com/v1` (or `provider: bedrock` for a model on Amazon Bedrock)
    "#]],
    );
    check(
        &format!("{stack}llm:\n  provider: bedrok\n  model: m\n"),
        expect![[r#"
        bad.yaml:6:13: llm.provider: expected one of `openai`, `bedrock`, found the string `bedrok` (did you mean `bedrock`?)
    "#]],
    );
}

#[test]
fn bedrock_model_ids_and_inference_profiles_are_taken_and_anything_else_is_refused() {
    let stack = "stack: aira\nregion: us-east-1\nllm:\n  provider: bedrock\n";
    for profile in ["us.", "eu.", "apac.", "jp.", "au.", "us-gov.", "global."] {
        check(&format!("{stack}  model: {profile}anthropic.claude-3-5-haiku-20241022-v1:0\n"), expect!["valid\n"]);
        let model = format!("{profile}anthropic.claude-3-5-haiku-20241022-v1:0");
        assert_eq!(super::inference_profile(&model), Some("anthropic.claude-3-5-haiku-20241022-v1:0"));
    }
    assert_eq!(super::inference_profile("amazon.nova-lite-v1:0"), None);
    check(
        &format!("{stack}  model: arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0\n"),
        expect![[r#"
        bad.yaml:5:10: llm.model: `arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0` is not a Bedrock model id (a model id names its provider and model, such as `amazon.nova-lite-v1:0` or `anthropic.claude-3-haiku-20240307-v1:0`)
    "#]],
    );
    check(&format!("{stack}  model: anthropic.claude-3-haiku-20240307-v1:0\n"), expect!["valid\n"]);
}

#[test]
fn model_spend_bounds_are_checked_where_they_are_written() {
    let stack = "stack: aira\nregion: us-east-1\nllm:\n  provider: bedrock\n  model: amazon.nova-lite-v1:0\n";
    check(
        &format!("{stack}  max_tokens: 0\n  user_in_flight: 101\n  daly_tokens: 1000\n  daily_tokens: -1\n"),
        expect![[r#"
            bad.yaml:6:15: llm.max_tokens: must be at least 1, found 0
            bad.yaml:7:19: llm.user_in_flight: must be at most 100, found 101
            bad.yaml:8:3: unknown key `daly_tokens` in `llm` (did you mean `daily_tokens`?)
            bad.yaml:9:17: llm.daily_tokens: must be at least 0, found -1
        "#]],
    );
    check(
        &format!("{stack}  max_tokens: 200001\n  user_in_flight: 0\n  user_daily_tokens: \"5000\"\n"),
        expect![[r#"
            bad.yaml:6:15: llm.max_tokens: must be at most 200000, found 200001
            bad.yaml:7:19: llm.user_in_flight: must be at least 1, found 0
            bad.yaml:8:22: llm.user_daily_tokens: expected an integer, found the string `5000` (remove the quotes)
        "#]],
    );
    // No bound is written as 0: null is not one.
    check(
        &format!("{stack}  daily_tokens: null\n"),
        expect![[r#"
            bad.yaml:6:17: llm.daily_tokens: expected an integer, found nothing
        "#]],
    );
}

#[test]
fn one_user_cannot_be_allowed_the_whole_day_of_all_users() {
    let stack = "stack: aira\nregion: us-east-1\nllm:\n  provider: bedrock\n  model: amazon.nova-lite-v1:0\n";
    check(
        &format!("{stack}  daily_tokens: 100000\n  user_daily_tokens: 100001\n"),
        expect![[r#"
            bad.yaml:7:22: llm.user_daily_tokens: 100001 is more than llm.daily_tokens (100000): one user could spend all users' tokens of the day (give one user at most 100000 tokens a day, or `daily_tokens: 0` for no overall bound)
        "#]],
    );
    check(
        &format!("{stack}  user_daily_tokens: 0\n"),
        expect![[r#"
            bad.yaml:6:22: llm.user_daily_tokens: 0 (no bound for a user) with llm.daily_tokens 2000000: one user could spend all users' tokens of the day (give one user at most 2000000 tokens a day, or `daily_tokens: 0` for no overall bound)
        "#]],
    );
    // The user's default (200000) against a smaller overall bound: at the key that was written.
    check(
        &format!("{stack}  daily_tokens: 150000\n"),
        expect![[r#"
            bad.yaml:6:17: llm.daily_tokens: 150000 is less than llm.user_daily_tokens (200000, its default): one user could spend all users' tokens of the day (give one user at most 150000 tokens a day, or `daily_tokens: 0` for no overall bound)
        "#]],
    );
    // Equal bounds, no overall bound, or both unbounded are accepted.
    check(&format!("{stack}  daily_tokens: 100000\n  user_daily_tokens: 100000\n"), expect!["valid\n"]);
    check(&format!("{stack}  daily_tokens: 0\n  user_daily_tokens: 5000000\n"), expect!["valid\n"]);
    check(&format!("{stack}  daily_tokens: 0\n  user_daily_tokens: 0\n"), expect!["valid\n"]);
    let spend = super::parse("aira.yaml", stack).unwrap().stack.spend();
    assert_eq!(spend, super::model::Spend::default(), "the defaults when nothing is written");
    assert_eq!(
        (spend.max_tokens, spend.daily_tokens, spend.user_daily_tokens, spend.user_in_flight),
        (1024, 2_000_000, 200_000, 4)
    );
}

#[test]
fn waf_limits_within_what_aws_waf_accepts() {
    // A rate-based rule's limit is at least 10 (the schema's range); the window one of AWS WAF's four.
    check(
        &format!("stack: aira\n{SERVICES}waf:\n  requests: 5\n  auth_requests: 9\n"),
        expect![[r#"
            bad.yaml:5:13: waf.requests: must be at least 10, found 5
            bad.yaml:6:18: waf.auth_requests: must be at least 10, found 9
        "#]],
    );
    check(
        &format!("stack: aira\n{SERVICES}waf: {{ window: 3m }}\n"),
        expect![[r#"
            bad.yaml:4:16: waf.window: AWS WAF counts requests over 1m, 2m, 5m or 10m, found 3m
        "#]],
    );
    check(
        &format!("stack: aira\n{SERVICES}waf: {{ request: 500 }}\n"),
        expect![[r#"
            bad.yaml:4:8: unknown key `request` in `waf` (did you mean `requests`?)
        "#]],
    );
    check(
        &format!("stack: aira\n{SERVICES}waf: off\n"),
        expect![[r#"
            bad.yaml:4:6: waf: expected true or false or a mapping, found the string `off`
        "#]],
    );
    for ok in ["waf: false\n", "waf: true\n", "waf: { requests: 10, auth_requests: 10, window: 1m }\n"] {
        check(&format!("stack: aira\n{SERVICES}{ok}"), expect!["valid\n"]);
    }
}

#[test]
fn waf_account_routes_limit_within_the_limit_of_all_requests() {
    check(
        &format!("stack: aira\n{SERVICES}waf: {{ requests: 500, auth_requests: 600 }}\n"),
        expect![[r#"
            bad.yaml:4:38: waf.auth_requests: 600 is more than waf.requests (500): the limit of all requests stops an address first, so the account routes' limit would never apply (give the account routes (`/v1/auth/`) at most 500 requests a window)
        "#]],
    );
    // Undercutting the account routes' default names the key that was written.
    check(
        &format!("stack: aira\n{SERVICES}waf: {{ requests: 50 }}\n"),
        expect![[r#"
            bad.yaml:4:18: waf.requests: 50 is less than waf.auth_requests (100, its default): the limit of all requests stops an address first, so the account routes' limit would never apply (give the account routes (`/v1/auth/`) at most 50 requests a window)
        "#]],
    );
}

/// `Endpoint::ALL` lists every endpoint the stack file may name (the schema's enum).
#[test]
fn every_endpoint_is_listed_in_all() {
    let schema = schemars::schema_for!(super::model::Endpoint).to_value();
    let mut named: Vec<String> = schema.to_string().split('"').map(String::from).collect();
    named.retain(|n| serde_json::from_value::<super::model::Endpoint>(serde_json::json!(n)).is_ok());
    named.sort();
    named.dedup();
    let mut all: Vec<&str> = super::model::Endpoint::ALL.iter().map(|e| e.name()).collect();
    all.sort();
    assert_eq!(named, all);
}

/// In an existing VPC, an interface endpoint with private DNS whose group refuses the tasks takes
/// their traffic for that service whatever the default route: a problem, with the endpoint's fix
/// only; without it the same VPC's NAT gateway carries the service.
#[test]
fn an_endpoint_that_refuses_the_tasks_is_a_problem_even_with_a_nat_gateway() {
    use super::model::Endpoint;
    use super::reach::{reachability_through, Egress};
    let loaded = super::parse("aira.yaml", &canonical_with(true, BEDROCK)).unwrap();
    let mut egress =
        Egress { internet: Some("NAT gateway nat-1 (default route in rtb-1)".into()), ..Egress::default() };
    let problems = |egress: &Egress| {
        let table = reachability_through(&loaded.stack, None, egress);
        table.problems(&loaded.stack).into_iter().map(|(_, p)| p).filter(|p| p.contains("logs")).collect::<Vec<_>>()
    };
    assert!(problems(&egress).is_empty(), "the NAT gateway carries logs");
    egress.blocked.insert(Endpoint::Logs, "let the security group(s) sg-1 of vpce-1 accept TCP 443".into());
    let found = problems(&egress);
    assert_eq!(found.len(), 2, "api and worker: {found:?}");
    assert!(
        found.iter().all(|p| p.ends_with("fix: let the security group(s) sg-1 of vpce-1 accept TCP 443")),
        "{found:?}"
    );
}
