//! The queue pair end to end against the moto server, checked by reading SQS back.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName as A;

use crate::harness::{aira, aira_env, endpoint, sqs, unique_stack, Workdir};
use crate::proxy::{is_mutating, Faults, Proxy};

fn stack_yaml(name: &str, visibility: &str) -> String {
    format!(
        "stack: {name}\nregion: us-east-1\nqueue:\n  visibility_timeout: {visibility}\n  retention: 4d\n  dead_letter: {{ max_receives: 5, retention: 14d }}\n"
    )
}

/// Queue name → attributes and tags, of every queue named after the stack.
async fn read_queues(stack: &str) -> HashMap<String, (HashMap<A, String>, HashMap<String, String>)> {
    let sqs = sqs().await;
    let urls =
        sqs.list_queues().queue_name_prefix(format!("{stack}-")).send().await.unwrap().queue_urls.unwrap_or_default();
    let mut out = HashMap::new();
    for url in urls {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(A::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let tags = sqs.list_queue_tags().queue_url(&url).send().await.unwrap().tags.unwrap_or_default();
        out.insert(url.rsplit('/').next().unwrap().to_string(), (attrs, tags));
    }
    out
}

#[tokio::test]
async fn queue_pair_lifecycle() {
    let stack = unique_stack("qpair");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &stack_yaml(&stack, "30s"));
    let file = file.to_str().unwrap();
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    let at = ["--endpoint-url", proxy.url.as_str()];

    // First up creates both queues, tagged in the create call.
    let first = aira(work.dir.path(), &[&["up", file, "--output", "json"], &at[..]].concat()).await;
    first.assert_code(0);
    let sqs_creates = first.json()["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "sqs.queue" && s["action"] == "create")
        .count();
    assert_eq!(sqs_creates, 2);
    let queues = read_queues(&stack).await;
    assert_eq!(queues.len(), 2, "{queues:?}");
    let (dlq_attrs, dlq_tags) = &queues[&format!("{stack}-dlq")];
    let (q_attrs, q_tags) = &queues[&format!("{stack}-queue")];
    assert_eq!(q_tags.get("aira:stack"), Some(&stack));
    assert_eq!(q_tags.get("aira:id").map(String::as_str), Some("queue"));
    assert_eq!(dlq_tags.get("aira:id").map(String::as_str), Some("dlq"));
    assert_eq!(q_attrs[&A::VisibilityTimeout], "30");
    assert_eq!(q_attrs[&A::MessageRetentionPeriod], "345600");
    assert_eq!(dlq_attrs[&A::MessageRetentionPeriod], "1209600");
    let policy: serde_json::Value = serde_json::from_str(&q_attrs[&A::RedrivePolicy]).unwrap();
    assert_eq!(policy["deadLetterTargetArn"].as_str(), Some(dlq_attrs[&A::QueueArn].as_str()));
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "5");
    let creates: Vec<String> =
        proxy.take_calls().into_iter().filter(|a| a.starts_with("sqs:") && is_mutating(a)).collect();
    assert_eq!(creates, vec!["sqs:CreateQueue", "sqs:CreateQueue"]);

    // Second up: no changes, and not one mutating call.
    let second = aira(work.dir.path(), &[&["up", file], &at[..]].concat()).await;
    second.assert_code(0);
    assert!(second.stdout.contains("No changes"), "{}", second.stdout);
    let calls = proxy.take_calls();
    assert!(!calls.is_empty());
    let mutating: Vec<&String> = calls.iter().filter(|a| is_mutating(a)).collect();
    assert_eq!(mutating, ["dynamodb:PutItem", "dynamodb:DeleteItem"], "only the stack lock is written: {calls:?}");

    // A changed visibility timeout: one in-place update.
    work.write("stack.yaml", &stack_yaml(&stack, "2m"));
    let plan = aira(work.dir.path(), &[&["plan", file, "--output", "json"], &at[..]].concat()).await;
    plan.assert_code(0);
    let plan = plan.json();
    assert_eq!(plan["summary"]["update"], 1);
    assert_eq!(plan["summary"]["create"], 0);
    let step = plan["steps"].as_array().unwrap().iter().find(|s| s["action"] == "update").unwrap();
    assert_eq!(step["id"], "queue");
    assert_eq!(
        step["changes"],
        serde_json::json!([{"path": "visibility_timeout", "before": 30, "after": 120, "forces_replacement": false}])
    );
    let text = aira(work.dir.path(), &[&["plan", file, "--detailed-exitcode"], &at[..]].concat()).await;
    text.assert_code(2);
    assert!(text.stdout.contains("~ sqs.queue queue"), "{}", text.stdout);
    assert!(text.stdout.contains("visibility_timeout: 30 → 120"), "{}", text.stdout);
    proxy.take_calls();
    aira(work.dir.path(), &[&["up", file], &at[..]].concat()).await.assert_code(0);
    let mutating: Vec<String> =
        proxy.take_calls().into_iter().filter(|a| is_mutating(a) && !a.starts_with("dynamodb:")).collect();
    assert_eq!(mutating, vec!["sqs:SetQueueAttributes"], "updated in place");
    let queues = read_queues(&stack).await;
    assert_eq!(queues[&format!("{stack}-queue")].0[&A::VisibilityTimeout], "120");
    aira(work.dir.path(), &[&["plan", file, "--detailed-exitcode"], &at[..]].concat()).await.assert_code(0);

    // Down without a terminal and without --yes is refused and deletes nothing.
    let refused = aira(work.dir.path(), &[&["down", file], &at[..]].concat()).await;
    refused.assert_code(1);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(read_queues(&stack).await.len(), 2);

    // Down through the SDK's standard AWS_ENDPOINT_URL instead of the flag.
    let down = aira_env(work.dir.path(), &["down", file, "--yes"], &[("AWS_ENDPOINT_URL", proxy.url.as_str())]).await;
    down.assert_code(0);
    assert!(read_queues(&stack).await.is_empty());
    let order: Vec<String> = proxy.take_calls().into_iter().filter(|a| a == "sqs:DeleteQueue").collect();
    assert_eq!(order.len(), 2);

    // Down again: nothing to do, still success.
    let again = aira(work.dir.path(), &[&["down", file, "--yes"], &at[..]].concat()).await;
    again.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
    assert!(again.stdout.contains("Nothing to delete"), "{}", again.stdout);
}

#[tokio::test]
async fn invalid_stack_makes_no_aws_call() {
    let work = Workdir::new();
    let file = work.write("bad.yaml", "stack: x\nqueue:\n  visibilty_timeout: 30s\n");
    let proxy = Proxy::start(&endpoint(), Faults::default()).await;
    for cmd in ["plan", "up", "down"] {
        let run = aira(work.dir.path(), &[cmd, file.to_str().unwrap(), "--yes", "--endpoint-url", &proxy.url]).await;
        run.assert_code(1);
        assert!(run.stderr.contains("bad.yaml:3:3: error: unknown key `visibilty_timeout`"), "{}", run.stderr);
    }
    assert!(proxy.take_calls().is_empty(), "no AWS call for an invalid stack");
}

#[tokio::test]
async fn aws_failure_names_the_resource_and_the_error() {
    let stack = unique_stack("clash");
    // A queue with the dead-letter queue's name that aira did not create, with other attributes.
    let sqs = sqs().await;
    sqs.create_queue()
        .queue_name(format!("{stack}-dlq"))
        .attributes(A::MessageRetentionPeriod, "60")
        .send()
        .await
        .unwrap();
    let work = Workdir::new();
    let file = work.write("stack.yaml", &stack_yaml(&stack, "30s"));
    let run = aira(work.dir.path(), &["up", file.to_str().unwrap(), "--endpoint-url", &endpoint()]).await;
    run.assert_code(2);
    assert!(run.stderr.contains(&format!("create SQS queue `dlq` ({stack}-dlq)")), "{}", run.stderr);
    assert!(run.stderr.contains("QueueAlreadyExists") || run.stderr.contains("QueueNameExists"), "{}", run.stderr);
    assert!(run.stdout.contains("skipped: create sqs.queue queue"), "{}", run.stdout);
    // The queue that depends on the failed one was never created.
    assert!(read_queues(&stack).await.keys().all(|k| k.ends_with("-dlq")));
}

#[tokio::test]
async fn bad_flags_are_user_errors() {
    let work = Workdir::new();
    aira(work.dir.path(), &["plan", "--output", "yaml"]).await.assert_code(1);
    aira(work.dir.path(), &["frobnicate"]).await.assert_code(1);
    aira(work.dir.path(), &["--version"]).await.assert_code(0);
    let missing = aira(work.dir.path(), &["validate"]).await;
    missing.assert_code(1);
    assert!(missing.stderr.contains("no stack file given"), "{}", missing.stderr);
}

#[tokio::test]
async fn schema_command_prints_the_committed_schema() {
    let work = Workdir::new();
    let run = aira(work.dir.path(), &["schema"]).await;
    run.assert_code(0);
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/stack.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(run.json(), committed);
}

#[tokio::test]
async fn converges_under_throttling() {
    let stack = unique_stack("thr");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &stack_yaml(&stack, "30s"));
    let file = file.to_str().unwrap();
    // Every 10th call fails: ThrottlingException or a bare 503.
    let proxy = Proxy::start(&endpoint(), Faults { throttle: 0.1, ..Faults::default() }).await;
    let at = ["--endpoint-url", proxy.url.as_str()];
    for _ in 0..2 {
        aira(work.dir.path(), &[&["up", file], &at[..]].concat()).await.assert_code(0);
    }
    aira(work.dir.path(), &[&["plan", file, "--detailed-exitcode"], &at[..]].concat()).await.assert_code(0);
    assert_eq!(read_queues(&stack).await.len(), 2);
    aira(work.dir.path(), &[&["down", file, "--yes"], &at[..]].concat()).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
    assert!(read_queues(&stack).await.is_empty());
    assert!(proxy.faults_injected.load(std::sync::atomic::Ordering::SeqCst) >= 2, "faults were injected");
}

/// SQS refuses a queue's name for 60 s after a queue of that name was deleted
/// (`QueueDeletedRecently`, which moto never sends): `up` right after a `down` waits it out.
#[tokio::test]
async fn a_name_deleted_recently_is_waited_for() {
    let stack = unique_stack("recent");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &stack_yaml(&stack, "30s"));
    let file = file.to_str().unwrap();
    let held = Faults {
        ec2_error: Some(("CreateQueue", "AWS.SimpleQueueService.QueueDeletedRecently", 2)),
        ..Faults::default()
    };
    let proxy = Proxy::start(&endpoint(), held).await;
    let up = aira(work.dir.path(), &["up", file, "--endpoint-url", &proxy.url]).await;
    up.assert_code(0);
    assert!(up.stderr.contains("free the name of a queue deleted less than 60 s ago"), "{}", up.stderr);
    assert_eq!(proxy.faults_injected.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(read_queues(&stack).await.len(), 2);
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}
