//! `aira dlq`: list, show, redrive (killed half-way: nothing lost), purge — against moto.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName as A;

use crate::harness::{aira, endpoint, small_stack, spawn_aira, sqs, unique_stack, Workdir};
use crate::proxy::{Faults, Proxy};

async fn url(stack: &str, id: &str) -> String {
    sqs().await.get_queue_url().queue_name(format!("{stack}-{id}")).send().await.unwrap().queue_url.unwrap()
}

async fn fill(url: &str, n: usize) {
    let sqs = sqs().await;
    for i in 0..n {
        sqs.send_message().queue_url(url).message_body(format!("{{\"message_id\":\"m-{i}\"}}")).send().await.unwrap();
    }
}

/// Every body in a queue (consumed), with how often each came.
async fn drain(url: &str) -> BTreeMap<String, usize> {
    let sqs = sqs().await;
    let mut seen = BTreeMap::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .unwrap();
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            return seen;
        }
        for m in batch {
            *seen.entry(m.body.unwrap()).or_insert(0) += 1;
            sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle.unwrap()).send().await.unwrap();
        }
    }
}

async fn depth(url: &str) -> u64 {
    let out = sqs().await.get_queue_attributes().queue_url(url).attribute_names(A::All).send().await.unwrap();
    let attrs = out.attributes.unwrap();
    attrs[&A::ApproximateNumberOfMessages].parse::<u64>().unwrap()
        + attrs[&A::ApproximateNumberOfMessagesNotVisible].parse::<u64>().unwrap()
}

#[tokio::test]
async fn dlq_list_show_redrive_and_purge() {
    let stack = unique_stack("dlq");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &small_stack(&stack));
    let file = file.to_str().unwrap();
    let at = endpoint();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &at]).await.assert_code(0);
    let (queue, dlq) = (url(&stack, "queue").await, url(&stack, "dlq").await);
    fill(&dlq, 12).await;

    // List does not consume.
    for _ in 0..2 {
        let list =
            aira(work.dir.path(), &["dlq", "list", file, "--limit", "100", "--output", "json", "--endpoint-url", &at])
                .await;
        list.assert_code(0);
        let msgs = list.json()["messages"].as_array().unwrap().clone();
        assert_eq!(msgs.len(), 12);
        assert!(msgs.iter().all(|m| m["receive_count"].as_u64() >= Some(1)));
    }
    let list = aira(work.dir.path(), &["dlq", "list", file, "--output", "json", "--endpoint-url", &at]).await.json();
    let id = list["messages"][0]["id"].as_str().unwrap().to_string();
    let show = aira(work.dir.path(), &["dlq", "show", file, "--id", &id, "--endpoint-url", &at]).await;
    show.assert_code(0);
    assert!(show.stdout.contains("\"message_id\":\"m-"), "{}", show.stdout);

    // Redrive: the server-side move is not offered by moto, so aira moves them itself.
    let r = aira(work.dir.path(), &["dlq", "redrive", file, "--output", "json", "--endpoint-url", &at]).await;
    r.assert_code(0);
    let r = r.json();
    assert_eq!(r["method"], "client");
    assert!(r["fallback_reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
    assert_eq!(r["moved"], 12);
    assert_eq!(depth(&dlq).await, 0);
    let moved = drain(&queue).await;
    assert_eq!(moved.len(), 12);
    assert!(moved.values().all(|n| *n == 1));

    // Purge asks first; --yes purges.
    fill(&dlq, 3).await;
    aira(work.dir.path(), &["dlq", "purge", file, "--endpoint-url", &at]).await.assert_code(1);
    assert_eq!(depth(&dlq).await, 3);
    aira(work.dir.path(), &["dlq", "purge", file, "--yes", "--endpoint-url", &at]).await.assert_code(0);
    assert_eq!(depth(&dlq).await, 0);

    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &at]).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}

#[tokio::test]
async fn redrive_killed_half_way_loses_nothing() {
    let stack = unique_stack("dlqkill");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &small_stack(&stack));
    let file = file.to_str().unwrap();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    let (queue, dlq) = (url(&stack, "queue").await, url(&stack, "dlq").await);
    fill(&dlq, 25).await;

    // Mutating calls of a client-side move: receive, send, delete, receive, send (5th) — that
    // send reaches SQS, its answer never comes back, and the process is killed.
    let proxy = Proxy::start(&endpoint(), Faults { hang_after_mutations: Some(5), ..Faults::default() }).await;
    let mut child =
        spawn_aira(work.dir.path(), &["dlq", "redrive", file, "--client-side", "--endpoint-url", &proxy.url]);
    tokio::select! {
        _ = proxy.hung.notified() => {}
        status = child.wait() => panic!("redrive ended ({status:?}) before the 5th mutating call"),
    }
    child.kill().await.unwrap();
    let calls: Vec<String> = proxy.take_calls().into_iter().filter(|c| c.starts_with("sqs:")).collect();
    assert_eq!(
        calls.iter().map(|c| c.trim_start_matches("sqs:")).collect::<Vec<_>>()[calls.len() - 3..],
        ["DeleteMessageBatch", "ReceiveMessage", "SendMessageBatch"],
        "killed between a send and its delete: {calls:?}"
    );

    // The interrupted batch reappears in the dead-letter queue after its visibility timeout;
    // a second redrive moves everything that is left.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let r = aira(
        work.dir.path(),
        &["dlq", "redrive", file, "--client-side", "--output", "json", "--endpoint-url", &endpoint()],
    )
    .await;
    r.assert_code(0);
    assert_eq!(depth(&dlq).await, 0, "the dead-letter queue is empty");
    let moved = drain(&queue).await;
    let expected: Vec<String> = (0..25).map(|i| format!("{{\"message_id\":\"m-{i}\"}}")).collect();
    let mut bodies: Vec<String> = moved.keys().cloned().collect();
    bodies.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(bodies, want, "every message arrived");
    let duplicates: usize = moved.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 10, "the batch in flight at the kill arrived twice (counted, allowed)");

    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}

#[tokio::test]
async fn status_shows_resources_drift_queues_and_lock() {
    let stack = unique_stack("stat");
    let work = Workdir::new();
    let yaml = small_stack(&stack);
    let file = work.write("stack.yaml", &yaml);
    let file = file.to_str().unwrap();
    let at = endpoint();
    aira(work.dir.path(), &["up", file, "--endpoint-url", &at]).await.assert_code(0);
    fill(&url(&stack, "queue").await, 2).await;
    fill(&url(&stack, "dlq").await, 1).await;
    let st = aira(work.dir.path(), &["status", file, "--output", "json", "--endpoint-url", &at]).await;
    st.assert_code(0);
    let st = st.json();
    assert_eq!(st["resources"]["sqs.queue"], 2, "{st}");
    assert_eq!(st["resources"]["ec2.vpc"], 1, "{st}");
    assert_eq!(st["pending_changes"], 0);
    assert_eq!(st["queues"]["visible"], 2);
    assert_eq!(st["queues"]["dead_letters"], 1);
    assert!(st["lock"].is_null(), "released after up: {st}");
    work.write("stack.yaml", &yaml.replace("endpoints: [s3]", "endpoints: [s3, dynamodb]"));
    let text = aira(work.dir.path(), &["status", file, "--endpoint-url", &at]).await;
    text.assert_code(0);
    assert!(text.stdout.contains("1 change(s) pending"), "{}", text.stdout);
    assert!(text.stdout.contains("dead letters: 1"), "{}", text.stdout);
    aira(work.dir.path(), &["down", file, "--yes", "--endpoint-url", &at]).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}
