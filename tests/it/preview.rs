//! Previews on a shared base (`--preview NAME`): two previews come up at once on one base, each
//! with its own host rule, target group, services and records; one goes and leaves the other
//! and the base as they were (an SDK inventory of each); the base's `down` refuses while a
//! preview lives, and `--with-previews` takes them down first.

use std::collections::BTreeSet;

use crate::harness::{aira, endpoint, inventory, sdk_config_in, unique_stack, Workdir};
use crate::proxy::{Faults, Proxy};

/// An image in the account's ECR, which the tasks reach through the stack's endpoints.
const IMAGE: &str = "000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn stack_file(stack: &str, zone: &str) -> String {
    format!(
        "stack: {stack}\nregion: us-east-1\nnetwork:\n  endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\n\
         domain:\n  zone: {zone}\n  name: chat.{zone}\nmonitoring: false\nservices:\n  \
         api: {{ role: api, cpu: 256, memory: 512, count: 1, port: 8080, public: true }}\n  \
         worker: {{ role: worker, cpu: 256, memory: 512, count: 1 }}\n"
    )
}

/// The HTTPS listener of the load balancer `lb_name`.
async fn found_listener(elb: &aws_sdk_elasticloadbalancingv2::Client, lb_name: &str) -> String {
    let lbs = elb.describe_load_balancers().names(lb_name).send().await.unwrap();
    let lb = lbs.load_balancers()[0].load_balancer_arn().unwrap().to_string();
    let listeners = elb.describe_listeners().load_balancer_arn(&lb).send().await.unwrap();
    let https = listeners.listeners().iter().find(|l| l.port() == Some(443)).expect("an HTTPS listener");
    https.listener_arn().unwrap().to_string()
}

/// The rules of the base's HTTPS listener that are not its default: (host, priority, target group).
async fn rules(elb: &aws_sdk_elasticloadbalancingv2::Client, lb_name: &str) -> Vec<(String, String, String)> {
    let out = elb.describe_rules().listener_arn(found_listener(elb, lb_name).await).send().await.unwrap();
    let mut found: Vec<(String, String, String)> = out
        .rules()
        .iter()
        .filter(|r| r.is_default() != Some(true))
        .map(|r| {
            let host = r.conditions().iter().find(|c| c.field() == Some("host-header")).unwrap();
            let hosts = host.host_header_config().map(|h| h.values().to_vec()).unwrap_or(host.values().to_vec());
            let action = &r.actions()[0];
            let tg = action.target_group_arn().map(String::from).unwrap_or_else(|| {
                action.forward_config().unwrap().target_groups()[0].target_group_arn().unwrap().to_string()
            });
            (hosts.join(","), r.priority().unwrap_or_default().to_string(), tg)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn two_previews_share_a_base_and_each_goes_alone() {
    // Unoptimised, polling this test's futures takes more than a test thread's 2 MiB of stack.
    let run = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(previews());
    std::thread::Builder::new().stack_size(8 << 20).spawn(run).unwrap().join().unwrap();
}

async fn previews() {
    let base = unique_stack("pv");
    let zone = format!("{base}.example.com");
    let r53 = aws_sdk_route53::Client::new(&sdk_config_in("us-east-1"));
    r53.create_hosted_zone().name(&zone).caller_reference(&base).send().await.unwrap();
    let work = Workdir::new();
    let file = work.write("aira.yaml", &stack_file(&base, &zone));
    let (file, dir, at) = (file.to_str().unwrap(), work.dir.path(), endpoint());
    let up = |preview: Option<&'static str>| {
        let (file, at) = (file.to_string(), at.clone());
        async move {
            let mut args = vec!["up", &file, "--yes", "--image", IMAGE, "--output", "json", "--endpoint-url", &at];
            if let Some(p) = preview {
                args.extend(["--preview", p]);
            }
            aira(dir, &args).await
        }
    };

    // A preview before its base: nothing of the base is created by it.
    let early = up(Some("a")).await;
    early.assert_code(1);
    assert!(early.stderr.contains("the base stack has no"), "{}", early.stderr);
    assert!(inventory(&format!("{base}-a")).await.is_empty(), "a preview without a base created something");

    up(None).await.assert_code(0);
    let base_before = inventory(&base).await;

    // The plan of a preview: its own cost, and the base's it shares.
    let plan =
        aira(dir, &["plan", file, "--preview", "a", "--image", IMAGE, "--output", "json", "--endpoint-url", &at]).await;
    plan.assert_code(0);
    let plan = plan.json();
    let (own, shared) = (plan["cost"]["monthly"].as_f64().unwrap(), plan["cost"]["shared_monthly"].as_f64().unwrap());
    assert!(own > 0.0 && shared > own, "own ${own}, shared ${shared}");
    let creates: BTreeSet<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "create")
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    for kind in ["ec2.vpc", "elbv2.load-balancer", "elbv2.listener", "ecs.cluster", "acm.certificate"] {
        assert!(!creates.contains(kind), "a preview creates a {kind}: {creates:?}");
    }
    assert!(creates.contains("elbv2.listener-rule"), "{creates:?}");

    // Two previews at once: each gets its own rule, at its own priority. b's first CreateRule
    // is refused as when another creation took its priority meanwhile.
    let faults = Faults { ec2_error: Some(("CreateRule", "PriorityInUse", 1)), ..Default::default() };
    let meeting = Proxy::start(&endpoint(), faults).await;
    let b_args = ["up", file, "--yes", "--image", IMAGE, "--output", "json", "--preview", "b", "--endpoint-url"];
    let b_args = [&b_args[..], &[meeting.url.as_str()]].concat();
    let (a, b) = tokio::join!(Box::pin(up(Some("a"))), Box::pin(aira(dir, &b_args)));
    a.assert_code(0);
    b.assert_code(0);
    assert!(b.stderr.contains("was just taken, reading the rules again"), "{}", b.stderr);
    assert_eq!(a.json()["url"], format!("https://a.chat.{zone}/"), "{}", a.stdout);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk_config_in("us-east-1"));
    let found = rules(&elb, &base).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, format!("a.chat.{zone}"));
    assert_eq!(found[1].0, format!("b.chat.{zone}"));
    assert_ne!(found[0].1, found[1].1, "two rules at one priority: {found:?}");
    let tgs = elb.describe_target_groups().target_group_arns(&found[0].2).target_group_arns(&found[1].2);
    let tgs = tgs.send().await.unwrap();
    let names: BTreeSet<&str> = tgs.target_groups().iter().filter_map(|t| t.target_group_name()).collect();
    assert_eq!(names, BTreeSet::from([&*format!("{base}-a-api"), &*format!("{base}-b-api")]));
    // Their services run in the base's cluster, under names of their own.
    let ecs = aws_sdk_ecs::Client::new(&sdk_config_in("us-east-1"));
    let services = ecs.list_services().cluster(&base).send().await.unwrap();
    let names: BTreeSet<String> =
        services.service_arns().iter().map(|a| a.rsplit('/').next().unwrap().to_string()).collect();
    for s in ["api", "worker", "a-api", "a-worker", "b-api", "b-worker"] {
        assert!(names.contains(s), "no service {s} in the base's cluster: {names:?}");
    }
    // A second `up` of a preview changes nothing (through the proxy it was made through: moto's
    // queue URLs hold the host they were asked at).
    let again = aira(dir, &b_args).await;
    again.assert_code(0);
    assert!(again.json()["report"].is_null(), "{}", again.stdout);

    // The load balancer's rule quota (the proxy answers as ELB does past it): filled by hand up
    // to it, a third preview is refused, saying what to do.
    let https = found_listener(&elb, &base).await;
    let quota = aira_testkit::aws_rules::RULES_PER_LOAD_BALANCER;
    let mut fillers = Vec::new();
    for n in found.len()..quota {
        let host = aws_sdk_elasticloadbalancingv2::types::HostHeaderConditionConfig::builder()
            .values(format!("fill-{n}.{zone}"))
            .build();
        let condition = aws_sdk_elasticloadbalancingv2::types::RuleCondition::builder()
            .field("host-header")
            .host_header_config(host)
            .build();
        let forward = aws_sdk_elasticloadbalancingv2::types::Action::builder()
            .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
            .target_group_arn(&found[0].2)
            .build();
        let req = elb.create_rule().listener_arn(&https).priority(40_000 + n as i32).conditions(condition);
        let out = req.actions(forward).send().await.unwrap();
        fillers.push(out.rules()[0].rule_arn().unwrap().to_string());
    }
    let full = up(Some("c")).await;
    full.assert_code(2);
    assert!(full.stderr.contains("holds 100 rules; the default quota is 100"), "no pre-flight note: {}", full.stderr);
    assert!(full.stderr.contains("TooManyRules") && full.stderr.contains("Rules per"), "{}", full.stderr);
    for arn in &fillers {
        elb.delete_rule().rule_arn(arn).send().await.unwrap();
    }
    aira(dir, &["down", file, "--preview", "c", "--yes", "--endpoint-url", &at]).await.assert_code(0);

    // `status` of a preview: its URL, its services as ECS names them in the base's cluster.
    let status = ["status", file, "--preview", "b", "--output", "json", "--endpoint-url", &meeting.url];
    let status = aira(dir, &status).await;
    status.assert_code(0);
    let status = status.json();
    assert_eq!(status["url"], format!("https://b.chat.{zone}/"));
    let services: BTreeSet<&str> =
        status["services"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(services, BTreeSet::from(["b-api", "b-worker"]), "{status}");

    let b_before = inventory(&format!("{base}-b")).await;
    assert!(b_before.contains_key(&("listener-rule".into(), "host-rule".into())), "{b_before:?}");
    assert!(b_before.keys().any(|(k, _)| k == "record"), "{b_before:?}");
    assert_eq!(inventory(&base).await, base_before, "the previews changed the base's inventory");

    aira(dir, &["down", file, "--preview", "a", "--yes", "--endpoint-url", &at]).await.assert_code(0);
    assert!(inventory(&format!("{base}-a")).await.is_empty(), "preview a is not gone");
    assert_eq!(inventory(&base).await, base_before, "down of a preview changed the base");
    assert_eq!(inventory(&format!("{base}-b")).await, b_before, "down of a preview changed another");
    assert_eq!(rules(&elb, &base).await.len(), 1);

    let refused = aira(dir, &["down", file, "--yes", "--endpoint-url", &at]).await;
    refused.assert_code(1);
    assert!(refused.stderr.contains(&format!("{base}-b")), "{}", refused.stderr);
    assert_eq!(inventory(&base).await, base_before, "a refused down changed the base");

    aira(dir, &["down", file, "--with-previews", "--yes", "--endpoint-url", &at]).await.assert_code(0);
    assert!(inventory(&format!("{base}-b")).await.is_empty());
    assert!(inventory(&base).await.is_empty());
}
