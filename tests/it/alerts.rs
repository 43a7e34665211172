//! The alert topic and the alarms, driven through the AWS provider against moto and read back:
//! created as expanded from a stack, observed equal (no drift), updated in place, deleted.

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
    let scope = Scope { stack: name.clone(), tags: BTreeMap::new(), wait: std::time::Duration::from_secs(10) };

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

    // A new threshold is an update in place.
    let changed = alerting(&stack(&name, "5m"), Some(&arn));
    let new_age = changed.iter().find(|r| r.id.0 == "alarm-queue-age").unwrap();
    let current = observed.iter().find(|o| o.id.0 == "alarm-queue-age").unwrap();
    let updated = provider.update(&scope, new_age, current, &Silent).await.unwrap();
    assert_eq!(updated.props["threshold"], json!(300.0));
    assert_eq!(updated.physical_id, current.physical_id);

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
}
