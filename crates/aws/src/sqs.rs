//! SQS queues. Found by name prefix `<stack>-` and then by tags (SQS has no tag filter).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName as A;
use aws_sdk_sqs::Client;
use serde_json::{json, Value};

use crate::ops::{Cx, KindOps};
use crate::sdk;
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, QueueRedrive};
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
    let pages = sqs.list_queues().queue_name_prefix(&prefix).max_results(1000).into_paginator().send();
    let urls = sdk::pages(format!("list SQS queues `{prefix}*`"), pages).await?.into_iter();
    let urls: Vec<String> = urls.flat_map(|page| page.queue_urls.unwrap_or_default()).collect();
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
    let redrive = attrs.get(&A::RedrivePolicy).filter(|p| !p.is_empty()).map(|policy| {
        let policy: Value = serde_json::from_str(policy).unwrap_or(Value::Null);
        let max = match &policy["maxReceiveCount"] {
            Value::String(s) => s.parse().unwrap_or(0),
            v => v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        };
        let arn = policy["deadLetterTargetArn"].as_str().unwrap_or_default();
        QueueRedrive { dead_letter_arn: arn.into(), max_receives: max }
    });
    let props = kind::SqsQueue {
        name: name.clone(),
        fifo: attrs.get(&A::FifoQueue).is_some_and(|v| v == "true"),
        visibility_timeout: num(A::VisibilityTimeout),
        retention: num(A::MessageRetentionPeriod),
        receive_wait: num(A::ReceiveMessageWaitTimeSeconds),
        redrive,
    };
    let arn = attrs.get(&A::QueueArn).cloned().unwrap_or_default();
    let created = attrs.get(&A::CreatedTimestamp).and_then(|v| v.parse().ok()).unwrap_or(0);
    let o = Observed::of(id, url, &props).output("arn", arn).output("url", url).output("name", name);
    Ok(Some((o, created)))
}

/// The settable attributes of a queue in normal form.
fn attributes(p: &kind::SqsQueue) -> HashMap<A, String> {
    let mut attrs = HashMap::new();
    attrs.insert(A::VisibilityTimeout, p.visibility_timeout.to_string());
    attrs.insert(A::MessageRetentionPeriod, p.retention.to_string());
    attrs.insert(A::ReceiveMessageWaitTimeSeconds, p.receive_wait.to_string());
    let policy = match &p.redrive {
        Some(r) => {
            json!({ "deadLetterTargetArn": r.dead_letter_arn.as_str(), "maxReceiveCount": r.max_receives }).to_string()
        }
        None => String::new(), // an empty policy removes the dead-letter queue
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
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        observe(&cx.aws.sqs, cx.scope).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let p: kind::SqsQueue = res.props()?;
        let name = &p.name;
        let what = format!("create SQS queue `{}` ({name})", res.id);
        let mut attrs = attributes(&p);
        if p.redrive.is_none() {
            attrs.remove(&A::RedrivePolicy);
        }
        if p.fifo {
            attrs.insert(A::FifoQueue, "true".into());
        }
        // Tags go in the create call itself: no window in which the queue exists untagged.
        let tags: HashMap<String, String> = cx.scope.tags_for(&res.id).into_iter().collect();
        let out = sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &NAME_HELD, || {
            cx.aws
                .sqs
                .create_queue()
                .queue_name(name)
                .set_attributes(Some(attrs.clone()))
                .set_tags(Some(tags.clone()))
                .send()
        })
        .await?
        .ok_or_else(|| ProviderError::new(format!("{what}: no queue URL in the answer")))?;
        reread(&cx.aws.sqs, out.queue_url().unwrap_or_default(), res, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let url = &current.physical_id;
        let what = format!("update SQS queue `{}` ({url})", res.id);
        let attrs = attributes(&res.props()?);
        call!(what, cx.aws.sqs.set_queue_attributes().queue_url(url).set_attributes(Some(attrs)).send());
        reread(&cx.aws.sqs, url, res, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let what = format!("delete SQS queue `{}` ({})", current.id, current.physical_id);
        sdk::found(what, GONE, cx.aws.sqs.delete_queue().queue_url(&current.physical_id).send().await)?;
        Ok(())
    }
}
