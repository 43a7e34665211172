//! SQS queues. Found by name prefix `<stack>-` and then by tags (SQS has no tag filter).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName as A;
use aws_sdk_sqs::Client;
use serde_json::{json, Value};

use crate::kinds::{Cx, KindOps, Observing};
use crate::sdk;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope};

type Result<T> = std::result::Result<T, ProviderError>;

/// Error codes saying a queue is gone.
const GONE: &[&str] = &["NonExistentQueue", "QueueDoesNotExist"];

/// SQS refuses a name for 60 s after the queue of that name was deleted (`down` then `up`, or a
/// replacement): the create waits that out.
const NAME_HELD: sdk::Busy = sdk::Busy {
    codes: &["AWS.SimpleQueueService.QueueDeletedRecently"],
    waits_for: "SQS to free the name of a queue deleted less than 60 s ago",
    gone: &[],
};

pub struct Queue;

/// The stack's queues, oldest first.
pub async fn observe(sqs: &Client, scope: &Scope) -> Result<Vec<Observed>> {
    let prefix = format!("{}-", scope.stack);
    let mut urls = Vec::new();
    let mut pages = sqs.list_queues().queue_name_prefix(&prefix).max_results(1000).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk::error(format!("list SQS queues `{prefix}*`"), e))?;
        urls.extend(page.queue_urls.unwrap_or_default());
    }
    let mut found = Vec::new();
    for url in urls {
        let out = sqs.list_queue_tags().queue_url(&url).send().await;
        let Some(out) = sdk::found(format!("read tags of SQS queue {url}"), GONE, out)? else { continue };
        let Some(id) = sdk::adopt_map(scope, out.tags().into_iter().flatten()) else { continue };
        found.extend(read(sqs, &url, id).await?);
    }
    found.sort_by(|a, b| (a.1, &a.0.physical_id).cmp(&(b.1, &b.0.physical_id)));
    Ok(found.into_iter().map(|(o, _)| o).collect())
}

/// The queue in normal form, with its creation time; `None` if it was deleted meanwhile.
async fn read(sqs: &Client, url: &str, id: LogicalId) -> Result<Option<(Observed, i64)>> {
    let out = sqs.get_queue_attributes().queue_url(url).attribute_names(A::All).send().await;
    let Some(out) = sdk::found(format!("read SQS queue `{id}` ({url})"), GONE, out)? else { return Ok(None) };
    let attrs = out.attributes.unwrap_or_default();
    let num = |name: A| attrs.get(&name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    let mut props = json!({
        "name": name,
        "fifo": attrs.get(&A::FifoQueue).is_some_and(|v| v == "true"),
        "visibility_timeout": num(A::VisibilityTimeout),
        "retention": num(A::MessageRetentionPeriod),
        "receive_wait": num(A::ReceiveMessageWaitTimeSeconds),
    });
    if let Some(policy) = attrs.get(&A::RedrivePolicy).filter(|p| !p.is_empty()) {
        let policy: Value = serde_json::from_str(policy).unwrap_or(Value::Null);
        let max = match &policy["maxReceiveCount"] {
            Value::String(s) => s.parse::<u64>().unwrap_or(0),
            v => v.as_u64().unwrap_or(0),
        };
        props["redrive"] = json!({ "dead_letter_arn": policy["deadLetterTargetArn"], "max_receives": max });
    }
    let arn = attrs.get(&A::QueueArn).cloned().unwrap_or_default();
    let created = attrs.get(&A::CreatedTimestamp).and_then(|v| v.parse().ok()).unwrap_or(0);
    let outputs = BTreeMap::from([
        ("arn".to_string(), Value::from(arn)),
        ("url".to_string(), Value::from(url)),
        ("name".to_string(), Value::from(name)),
    ]);
    let o = Observed {
        id,
        kind: Kind::SqsQueue,
        physical_id: url.to_string(),
        props,
        outputs,
        depends_on: BTreeSet::new(),
        repair: None,
    };
    Ok(Some((o, created)))
}

/// The settable attributes of a queue in normal form.
fn attributes(props: &Value) -> HashMap<A, String> {
    let mut attrs = HashMap::new();
    let num = |key: &str| props[key].as_u64().unwrap_or(0).to_string();
    attrs.insert(A::VisibilityTimeout, num("visibility_timeout"));
    attrs.insert(A::MessageRetentionPeriod, num("retention"));
    attrs.insert(A::ReceiveMessageWaitTimeSeconds, num("receive_wait"));
    let redrive = &props["redrive"];
    let policy = if redrive.is_object() {
        json!({ "deadLetterTargetArn": redrive["dead_letter_arn"], "maxReceiveCount": redrive["max_receives"] })
            .to_string()
    } else {
        String::new() // an empty policy removes the dead-letter queue
    };
    attrs.insert(A::RedrivePolicy, policy);
    attrs
}

async fn reread(sqs: &Client, url: &str, res: &Resolved, what: &str) -> Result<Observed> {
    match read(sqs, url, res.id.clone()).await? {
        Some((o, _)) => Ok(o),
        None => Err(ProviderError::new(format!("{what}: the queue disappeared right after the call"))),
    }
}

#[async_trait]
impl KindOps for Queue {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        observe(&aws.sqs, scope).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        let name = res.props["name"].as_str().unwrap_or_default().to_string();
        let what = format!("create SQS queue `{}` ({name})", res.id);
        let mut attrs = attributes(&res.props);
        if attrs.get(&A::RedrivePolicy).is_some_and(String::is_empty) {
            attrs.remove(&A::RedrivePolicy);
        }
        if res.props["fifo"].as_bool() == Some(true) {
            attrs.insert(A::FifoQueue, "true".into());
        }
        // Tags go in the create call itself: no window in which the queue exists untagged.
        let tags: HashMap<String, String> = scope.tags_for(&res.id).into_iter().collect();
        let out = sdk::retry_busy(scope, progress, &res.id, &what, &NAME_HELD, || {
            aws.sqs
                .create_queue()
                .queue_name(&name)
                .set_attributes(Some(attrs.clone()))
                .set_tags(Some(tags.clone()))
                .send()
        })
        .await?
        .ok_or_else(|| ProviderError::new(format!("{what}: no queue URL in the answer")))?;
        reread(&aws.sqs, out.queue_url().unwrap_or_default(), res, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, .. } = *cx;
        let url = &current.physical_id;
        let what = format!("update SQS queue `{}` ({url})", res.id);
        call!(what, aws.sqs.set_queue_attributes().queue_url(url).set_attributes(Some(attributes(&res.props))).send());
        reread(&aws.sqs, url, res, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, .. } = *cx;
        let what = format!("delete SQS queue `{}` ({})", current.id, current.physical_id);
        sdk::found(what, GONE, aws.sqs.delete_queue().queue_url(&current.physical_id).send().await)?;
        Ok(())
    }
}
