//! The alert topic and the alarms. After `aira up` of a whole stack, each alarm and the topic are
//! read back through the SDK and compared with what the stack file asks for (literal values
//! here, not aira's plan). Driven through the AWS provider: created as expanded from a stack,
//! observed equal (no drift), updated in place, deleted.

use std::collections::BTreeMap;

use aira::aws::AwsProvider;
use aira::engine::expand::{expand, Image};
use aira::engine::graph::{resolve, Kind, LogicalId};
use aira::engine::provider::{Facts, Provider, Resolved, Scope, Silent};
use serde_json::{json, Value};

use crate::harness::{sdk_config, unique_stack};

fn stack(name: &str, threshold: &str) -> aira::engine::stack::Stack {
    let yaml = format!(
        "stack: {name}\nregion: us-east-1\nalerts:\n  email: ops@example.com\n  oldest_message: {threshold}\nservices:\n  api: {{ role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }}\n  worker: {{ role: worker, cpu: 256, memory: 512 }}\n"
    );
    aira::engine::stack::parse("stack.yaml", &yaml).unwrap_or_else(|e| panic!("{e:?}")).stack
}

/// The topic and alarms of the stack, with the outputs of the rest stood in for.
fn alerting(stack: &aira::engine::stack::Stack, topic_arn: Option<&str>) -> Vec<Resolved> {
    let image = Image::Reference("127.0.0.1:5000/aira@sha256:00".into());
    let graph = expand(stack, &Facts::offline(stack), &image).unwrap();
    let name = &stack.stack.0;
    let outputs = |id: &LogicalId, out: &str| -> Option<Value> {
        Some(match (id.0.as_str(), out) {
            ("queue", "name") => json!(format!("{name}-queue")),
            ("dlq", "name") => json!(format!("{name}-dlq")),
            ("lb", "arn_suffix") => json!(format!("app/{name}/0123456789abcdef")),
            ("tg-api", "arn_suffix") => json!(format!("targetgroup/{name}-api/0123456789abcdef")),
            ("alerts", "arn") => json!(topic_arn?),
            ("prometheus", "arn") => json!(format!("arn:aws:aps:us-east-1:123456789012:workspace/ws-{name}")),
            _ => return None,
        })
    };
    graph
        .resources
        .iter()
        .filter(|r| matches!(r.kind, Kind::Topic | Kind::Alarm))
        .filter_map(|r| Some(Resolved { id: r.id.clone(), kind: r.kind, props: resolve(&r.props, &outputs)? }))
        .collect()
}

fn sorted(mut v: Value) -> Value {
    if let Some(a) = v.get_mut("actions").and_then(Value::as_array_mut) {
        a.sort_by_key(|x| x.to_string());
    }
    v
}

#[tokio::test]
async fn alarms_and_topic_converge_and_go() {
    let name = unique_stack("alrt");
    let provider = AwsProvider::new(&sdk_config());
    let scope = Scope::new(&name, BTreeMap::new(), std::time::Duration::from_secs(10));

    // The topic first: every alarm notifies it.
    let first = alerting(&stack(&name, "15m"), None);
    assert_eq!(first.len(), 1, "only the topic resolves before its ARN is known");
    let topic = provider.create(&scope, &first[0], &Silent).await.unwrap();
    assert_eq!(topic.props["subscriptions"], json!(["email:ops@example.com"]));
    let arn = topic.outputs["arn"].as_str().unwrap().to_string();

    let desired = alerting(&stack(&name, "15m"), Some(&arn));
    let alarms: Vec<&Resolved> = desired.iter().filter(|r| r.kind == Kind::Alarm).collect();
    let ids: Vec<&str> = alarms.iter().map(|r| r.id.0.as_str()).collect();
    assert_eq!(ids, ["alarm-dead-letters", "alarm-queue-age", "alarm-5xx", "alarm-unhealthy"]);
    for a in &alarms {
        provider.create(&scope, a, &Silent).await.unwrap();
    }

    // Observed equals desired: the plan after `up` is empty.
    let observed = provider.observe(&scope).await.unwrap();
    for want in &desired {
        let got = observed.iter().find(|o| o.id == want.id).unwrap_or_else(|| panic!("{} not observed", want.id));
        assert_eq!(sorted(got.props.clone()), sorted(want.props.clone()), "{}", want.id);
    }
    let rate = observed.iter().find(|o| o.id.0 == "alarm-5xx").unwrap();
    assert_eq!(rate.props["expression"], "100 * (FILL(elb, 0) + FILL(target, 0)) / requests");
    assert_eq!(rate.props["metrics"]["requests"]["dimensions"]["LoadBalancer"], format!("app/{name}/0123456789abcdef"));
    let age = observed.iter().find(|o| o.id.0 == "alarm-queue-age").unwrap();
    assert_eq!(age.props["threshold"], json!(900.0));
    assert_eq!(age.props["actions"], json!([arn]));

    // What CloudWatch holds, read with the SDK (not through the provider's observe).
    let cw = aws_sdk_cloudwatch::Client::new(&sdk_config());
    let held = |prefix: String| {
        let cw = cw.clone();
        async move {
            let out = cw.describe_alarms().alarm_name_prefix(prefix).send().await.unwrap();
            out.metric_alarms()
                .iter()
                .map(|a| (a.alarm_name().unwrap().to_string(), a.clone()))
                .collect::<BTreeMap<_, _>>()
        }
    };
    let alarms = held(name.clone()).await;
    assert_eq!(alarms.len(), 4, "{:?}", alarms.keys());
    let age = &alarms[&format!("{name}-queue-age")];
    assert_eq!((age.threshold(), age.alarm_actions()), (Some(900.0), &[arn.clone()][..]));

    // A new threshold is an update in place.
    let changed = alerting(&stack(&name, "5m"), Some(&arn));
    let new_age = changed.iter().find(|r| r.id.0 == "alarm-queue-age").unwrap();
    let current = observed.iter().find(|o| o.id.0 == "alarm-queue-age").unwrap();
    let updated = provider.update(&scope, new_age, current, &Silent).await.unwrap();
    assert_eq!(updated.props["threshold"], json!(300.0));
    assert_eq!(updated.physical_id, current.physical_id);
    let age_now = held(name.clone()).await.remove(age.alarm_name().unwrap()).expect("the same alarm, updated in place");
    assert_eq!(age_now.threshold(), Some(300.0));

    // Delete everything; nothing of the stack is left.
    for o in provider.observe(&scope).await.unwrap().iter().filter(|o| matches!(o.kind, Kind::Topic | Kind::Alarm)) {
        provider.delete(&scope, o, &Silent).await.unwrap();
    }
    let left: Vec<_> = provider
        .observe(&scope)
        .await
        .unwrap()
        .into_iter()
        .filter(|o| matches!(o.kind, Kind::Topic | Kind::Alarm))
        .map(|o| o.id)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(held(name.clone()).await.is_empty(), "CloudWatch still holds alarms of the stack");
    let sns = aws_sdk_sns::Client::new(&sdk_config());
    let topics = sns.list_topics().send().await.unwrap();
    assert!(!topics.topics().iter().any(|t| t.topic_arn() == Some(arn.as_str())), "the topic is gone");
}

/// Every setting of every alarm, the topic's tags and its e-mail subscription, as AWS holds them
/// after `aira up`, against the stack file's `alerts:` (10 minutes, 7 %) and what AWS documents
/// for the dimensions: the queue's name, and the final part of the load balancer's and target
/// group's ARNs (`app/<name>/<id>`, `targetgroup/<name>/<id>`).
#[tokio::test]
async fn alarms_and_topic_after_up_are_what_the_stack_says() {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
    let f = crate::stack::fixture("alerts", 1).await;
    let text = std::fs::read_to_string(&f.file).unwrap().replace(
        "alerts:\n  email: ops@example.com\n",
        "tags:\n  team: chat\nalerts:\n  email: ops@example.com\n  oldest_message: 10m\n  error_rate: 7\n",
    );
    std::fs::write(&f.file, text).unwrap();
    let image = "127.0.0.1:5999/aira/runtime@sha256:1111111111111111111111111111111111111111111111111111111111111111";
    // Through the fixture's proxy, which lists an unconfirmed e-mail subscription as AWS does.
    crate::stack::run(&f, &["up", &f.file, "--image", image, "--yes", "--timeout", "2m"]).await.assert_code(0);
    // The pending subscription is what the stack asks for: nothing to change.
    crate::stack::run(&f, &["plan", &f.file, "--image", image, "--detailed-exitcode"]).await.assert_code(0);
    let config = f.config();
    let name = &f.name;

    // What the alarms must point at, read from AWS.
    let sns =
        aws_sdk_sns::Client::from_conf(aws_sdk_sns::config::Builder::from(&config).endpoint_url(&f.proxy.url).build());
    let topics = sns.list_topics().send().await.unwrap();
    let topic = topics
        .topics()
        .iter()
        .filter_map(|t| t.topic_arn())
        .find(|a| a.ends_with(&format!(":{name}-alerts")))
        .expect("the topic <stack>-alerts")
        .to_string();
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let lb = elb.describe_load_balancers().names(name).send().await.unwrap();
    let lb_arn = lb.load_balancers()[0].load_balancer_arn().unwrap().to_string();
    let lb_dim = lb_arn.split_once(":loadbalancer/").unwrap().1.to_string();
    assert!(lb_dim.starts_with(&format!("app/{name}/")), "{lb_dim}");
    let tg = elb.describe_target_groups().load_balancer_arn(&lb_arn).send().await.unwrap();
    let tg_arn = tg.target_groups()[0].target_group_arn().unwrap();
    let tg_dim = format!("targetgroup/{}", tg_arn.split_once(":targetgroup/").unwrap().1);
    let sqs = aws_sdk_sqs::Client::new(&config);
    for q in ["queue", "dlq"] {
        sqs.get_queue_url().queue_name(format!("{name}-{q}")).send().await.expect("the queue the alarm watches exists");
    }

    // The topic: tagged with the stack and its file's tags; the address awaits confirmation.
    let tags = sns.list_tags_for_resource().resource_arn(&topic).send().await.unwrap();
    let tags: BTreeMap<&str, &str> = tags.tags().iter().map(|t| (t.key(), t.value())).collect();
    for (k, v) in [("aira:stack", name.as_str()), ("aira:id", "alerts"), ("aira:managed-by", "aira"), ("team", "chat")]
    {
        assert_eq!(tags.get(k), Some(&v), "topic tag {k}: {tags:?}");
    }
    let subs = sns.list_subscriptions_by_topic().topic_arn(&topic).send().await.unwrap();
    let subs: Vec<(&str, &str, &str)> = subs
        .subscriptions()
        .iter()
        .map(|s| (s.protocol().unwrap(), s.endpoint().unwrap(), s.subscription_arn().unwrap()))
        .collect();
    assert_eq!(subs, [("email", "ops@example.com", "PendingConfirmation")]);

    // The alarms, every setting.
    let cw = aws_sdk_cloudwatch::Client::new(&config);
    let out = cw.describe_alarms().alarm_name_prefix(format!("{name}-")).send().await.unwrap();
    let alarms: BTreeMap<&str, &aws_sdk_cloudwatch::types::MetricAlarm> =
        out.metric_alarms().iter().map(|a| (a.alarm_name().unwrap(), a)).collect();
    let names: Vec<String> = alarms.keys().map(|n| n.trim_start_matches(name.as_str()).to_string()).collect();
    assert_eq!(names, ["-5xx-rate", "-dead-letters", "-queue-age", "-unhealthy-targets"]);
    let dims = |a: &aws_sdk_cloudwatch::types::MetricAlarm| -> Vec<(String, String)> {
        let mut d: Vec<_> =
            a.dimensions().iter().map(|d| (d.name().unwrap().to_string(), d.value().unwrap().to_string())).collect();
        d.sort();
        d
    };
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    type Want<'a> = (&'a str, &'a str, Vec<(String, String)>, Statistic, f64, ComparisonOperator, i32);
    let single: [(&str, Want); 3] = [
        (
            "-dead-letters",
            (
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                vec![pair("QueueName", &format!("{name}-dlq"))],
                Statistic::Maximum,
                1.0,
                ComparisonOperator::GreaterThanOrEqualToThreshold,
                1,
            ),
        ),
        (
            "-queue-age",
            (
                "AWS/SQS",
                "ApproximateAgeOfOldestMessage",
                vec![pair("QueueName", &format!("{name}-queue"))],
                Statistic::Maximum,
                600.0,
                ComparisonOperator::GreaterThanThreshold,
                3,
            ),
        ),
        (
            "-unhealthy-targets",
            (
                "AWS/ApplicationELB",
                "UnHealthyHostCount",
                vec![pair("LoadBalancer", &lb_dim), pair("TargetGroup", &tg_dim)],
                Statistic::Maximum,
                1.0,
                ComparisonOperator::GreaterThanOrEqualToThreshold,
                3,
            ),
        ),
    ];
    for (suffix, (namespace, metric, dimensions, statistic, threshold, comparison, periods)) in single {
        let a = alarms[format!("{name}{suffix}").as_str()];
        assert_eq!(a.namespace(), Some(namespace), "{suffix}");
        assert_eq!(a.metric_name(), Some(metric), "{suffix}");
        assert_eq!(dims(a), dimensions, "{suffix}");
        assert_eq!(a.statistic(), Some(&statistic), "{suffix}");
        assert_eq!(a.period(), Some(60), "{suffix}");
        assert_eq!(a.threshold(), Some(threshold), "{suffix}");
        assert_eq!(a.comparison_operator(), Some(&comparison), "{suffix}");
        assert_eq!(a.evaluation_periods(), Some(periods), "{suffix}");
    }
    // The 5xx rate: an expression over three load balancer metrics, per minute.
    let rate = alarms[format!("{name}-5xx-rate").as_str()];
    assert_eq!((rate.namespace(), rate.metric_name()), (None, None));
    assert_eq!(rate.threshold(), Some(7.0));
    assert_eq!(rate.comparison_operator(), Some(&ComparisonOperator::GreaterThanThreshold));
    assert_eq!(rate.evaluation_periods(), Some(3));
    /// A metric query: what it reads (metric or expression), statistic, dimensions, period.
    type Query = (Option<String>, Option<String>, Vec<(String, String)>, Option<i32>);
    let mut queries: Vec<(String, Query)> = rate
        .metrics()
        .iter()
        .map(|q| {
            let stat = q.metric_stat();
            let metric = stat.and_then(|s| s.metric());
            let mut d: Vec<(String, String)> = metric
                .map(|m| m.dimensions().iter().map(|d| pair(d.name().unwrap(), d.value().unwrap())).collect())
                .unwrap_or_default();
            d.sort();
            let what = metric.map(|m| format!("{}/{}", m.namespace().unwrap(), m.metric_name().unwrap()));
            let what = what.or_else(|| q.expression().map(String::from));
            let query: Query = (what, stat.and_then(|s| s.stat()).map(String::from), d, stat.and_then(|s| s.period()));
            (q.id().unwrap_or_default().to_string(), query)
        })
        .collect();
    queries.sort();
    let lb_only = vec![pair("LoadBalancer", &lb_dim)];
    let elb_sum =
        |m: &str| (Some(format!("AWS/ApplicationELB/{m}")), Some("Sum".to_string()), lb_only.clone(), Some(60));
    let expect = |id: &str, query: Query| (id.to_string(), query);
    assert_eq!(
        queries,
        [
            expect("alarm", (Some("100 * (FILL(elb, 0) + FILL(target, 0)) / requests".into()), None, vec![], None)),
            expect("elb", elb_sum("HTTPCode_ELB_5XX_Count")),
            expect("requests", elb_sum("RequestCount")),
            expect("target", elb_sum("HTTPCode_Target_5XX_Count")),
        ]
    );
    // Every alarm: missing data is not a breach; it notifies the topic when it fires and recovers.
    for (n, a) in &alarms {
        assert_eq!(a.treat_missing_data(), Some("notBreaching"), "{n}");
        assert_eq!(a.alarm_actions(), std::slice::from_ref(&topic), "{n}");
        assert_eq!(a.ok_actions(), std::slice::from_ref(&topic), "{n}");
        assert_eq!(a.actions_enabled(), Some(true), "{n}");
    }

    crate::stack::run(&f, &["down", &f.file, "--yes", "--timeout", "2m"]).await.assert_code(0);
    crate::harness::assert_nothing_left(name, f.region).await;
}
