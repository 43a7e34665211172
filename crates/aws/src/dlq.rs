//! Dead-letter queue operations on a stack's queue pair: list, redrive, purge.
//!
//! Redrive prefers SQS's own `StartMessageMoveTask`; where the endpoint does not offer it, it
//! moves messages itself in an order that never loses one: send to the source queue, and only
//! after SQS accepted the copy, delete the original. A run killed in between leaves a duplicate
//! (the runtime's worker absorbs duplicates), never a gap.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageSystemAttributeName as M,
    QueueAttributeName as A, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use serde::Serialize;

use serde_json::Value;

use crate::AwsProvider;
use aira_engine::graph::Kind;
use aira_engine::provider::{Observed, ProviderError};

type Result<T> = std::result::Result<T, ProviderError>;

/// The queue pair of a stack.
#[derive(Debug, Clone, Serialize)]
pub struct QueuePair {
    pub queue_url: String,
    pub queue_arn: String,
    pub dlq_url: String,
    pub dlq_arn: String,
}

impl QueuePair {
    /// The pair among resources already observed, if the stack has both queues.
    pub fn find<'a>(observed: impl IntoIterator<Item = &'a Observed>) -> Option<QueuePair> {
        let (mut queue, mut dlq) = (None, None);
        for o in observed.into_iter().filter(|o| o.kind == Kind::SqsQueue) {
            match o.id.0.as_str() {
                aira_engine::expand::QUEUE => queue = Some(o),
                aira_engine::expand::DEAD_LETTER_QUEUE => dlq = Some(o),
                _ => {}
            }
        }
        let out = |o: &Observed, k: &str| o.outputs.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (q, d) = (queue?, dlq?);
        Some(QueuePair {
            queue_url: out(q, "url"),
            queue_arn: out(q, "arn"),
            dlq_url: out(d, "url"),
            dlq_arn: out(d, "arn"),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub body: String,
    pub receive_count: u64,
    /// Unix milliseconds.
    pub sent_at: Option<u64>,
    pub first_received_at: Option<u64>,
    /// Why the runtime gave up on it, when the message says.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Redrive {
    /// `server` (StartMessageMoveTask) or `client` (send, then delete).
    pub method: String,
    pub moved: u64,
    /// Why the server-side move was not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// The day-2 operations on the stack's queue pair, as the CLI's `dlq` and `status` use them.
impl AwsProvider {
    /// Up to `limit` dead letters, without consuming them (see [`list`]).
    pub async fn dead_letters(&self, pair: &QueuePair, limit: usize) -> Result<Vec<DeadLetter>> {
        list(&self.clients.sqs, pair, limit).await
    }

    /// Approximate number of messages in a queue, visible or in flight.
    pub async fn queue_messages(&self, url: &str) -> Result<u64> {
        depth(&self.clients.sqs, url).await
    }

    /// Messages waiting, in flight (received, not yet deleted) and delayed.
    pub async fn queue_depth(&self, url: &str) -> Result<(u64, u64, u64)> {
        queue_depth(&self.clients.sqs, url).await
    }

    /// Moves dead letters back to the source queue. `client_side` skips the server-side attempt.
    pub async fn redrive(&self, pair: &QueuePair, limit: Option<u64>, client_side: bool) -> Result<Redrive> {
        redrive(&self.clients.sqs, pair, limit, client_side).await
    }

    /// Deletes every dead letter for good.
    pub async fn purge_dead_letters(&self, pair: &QueuePair) -> Result<()> {
        purge(&self.clients.sqs, pair).await
    }
}

/// Up to `limit` dead letters, without consuming them: they are hidden while read, then made
/// visible again at once.
async fn list(sqs: &Client, pair: &QueuePair, limit: usize) -> Result<Vec<DeadLetter>> {
    let mut found: Vec<DeadLetter> = Vec::new();
    let mut handles = Vec::new();
    while found.len() < limit {
        let out = call!(
            format!("read dead letters of {}", pair.dlq_url),
            sqs.receive_message()
                .queue_url(&pair.dlq_url)
                .max_number_of_messages((limit - found.len()).min(10) as i32)
                .visibility_timeout(30)
                .wait_time_seconds(0)
                .message_system_attribute_names(M::All)
                .message_attribute_names("All")
                .send()
        );
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let attrs = m.attributes.clone().unwrap_or_default();
            let num = |k: M| attrs.get(&k).and_then(|v| v.parse::<u64>().ok());
            let reason = m
                .message_attributes
                .as_ref()
                .and_then(|a| a.get("failure_reason"))
                .and_then(|v| v.string_value.clone());
            found.push(DeadLetter {
                id: m.message_id.clone().unwrap_or_default(),
                body: m.body.clone().unwrap_or_default(),
                receive_count: num(M::ApproximateReceiveCount).unwrap_or(0),
                sent_at: num(M::SentTimestamp),
                first_received_at: num(M::ApproximateFirstReceiveTimestamp),
                reason,
            });
            handles.extend(m.receipt_handle);
        }
    }
    for (i, chunk) in handles.chunks(10).enumerate() {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(j, h)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("m{i}-{j}"))
                    .receipt_handle(h)
                    .visibility_timeout(0)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        call!(
            "make the dead letters visible again",
            sqs.change_message_visibility_batch().queue_url(&pair.dlq_url).set_entries(Some(entries)).send()
        );
    }
    Ok(found)
}

/// Approximate number of messages in a queue, visible or in flight.
async fn depth(sqs: &Client, url: &str) -> Result<u64> {
    let (visible, in_flight, _) = queue_depth(sqs, url).await?;
    Ok(visible + in_flight)
}

/// Messages waiting, in flight (received, not yet deleted) and delayed.
async fn queue_depth(sqs: &Client, url: &str) -> Result<(u64, u64, u64)> {
    let out = call!(
        format!("read the depth of {url}"),
        sqs.get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
    );
    let attrs = out.attributes.unwrap_or_default();
    let n = |k: A| attrs.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((
        n(A::ApproximateNumberOfMessages),
        n(A::ApproximateNumberOfMessagesNotVisible),
        n(A::ApproximateNumberOfMessagesDelayed),
    ))
}

/// Moves dead letters back to the source queue. `client_side` skips the server-side attempt.
async fn redrive(sqs: &Client, pair: &QueuePair, limit: Option<u64>, client_side: bool) -> Result<Redrive> {
    let mut fallback_reason = None;
    if !client_side && limit.is_none() {
        match server_side(sqs, pair).await {
            Ok(moved) => return Ok(Redrive { method: "server".into(), moved, fallback_reason: None }),
            Err(why) => fallback_reason = Some(why),
        }
    }
    let moved = client_side_move(sqs, pair, limit).await?;
    Ok(Redrive { method: "client".into(), moved, fallback_reason })
}

/// `StartMessageMoveTask`, then its progress until it completes. `Err` says why it could not be used.
async fn server_side(sqs: &Client, pair: &QueuePair) -> std::result::Result<u64, String> {
    let task = sqs
        .start_message_move_task()
        .source_arn(&pair.dlq_arn)
        .destination_arn(&pair.queue_arn)
        .send()
        .await
        .map_err(|e| crate::sdk::describe(&e))?;
    let handle = task.task_handle.unwrap_or_default();
    let start = Instant::now();
    loop {
        let out = sqs
            .list_message_move_tasks()
            .source_arn(&pair.dlq_arn)
            .send()
            .await
            .map_err(|e| crate::sdk::describe(&e))?;
        let Some(t) =
            out.results.unwrap_or_default().into_iter().find(|t| t.task_handle.as_deref() == Some(handle.as_str()))
        else {
            return Err("the move task disappeared".into());
        };
        match t.status.as_deref() {
            Some("COMPLETED") => return Ok(t.approximate_number_of_messages_moved as u64),
            Some("FAILED" | "CANCELLED") => {
                return Err(format!(
                    "the move task ended {}: {}",
                    t.status.unwrap_or_default(),
                    t.failure_reason.unwrap_or_default()
                ))
            }
            _ if start.elapsed() > Duration::from_secs(3600) => return Err("the move task ran for an hour".into()),
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

async fn client_side_move(sqs: &Client, pair: &QueuePair, limit: Option<u64>) -> Result<u64> {
    let mut moved = 0u64;
    loop {
        let want = limit.map_or(10, |l| l.saturating_sub(moved).min(10));
        if want == 0 {
            break;
        }
        let out = sqs
            .receive_message()
            .queue_url(&pair.dlq_url)
            .max_number_of_messages(want as i32)
            // Long enough for one send and one delete; a run killed in between lets the batch
            // reappear soon, to be moved again (a duplicate, never a loss).
            .visibility_timeout(10)
            .wait_time_seconds(0)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| crate::sdk::error(format!("receive from {}", pair.dlq_url), e))?;
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            break;
        }
        // 1. Copy to the source queue.
        let entries: Vec<SendMessageBatchRequestEntry> = batch
            .iter()
            .enumerate()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(m.body.clone().unwrap_or_default())
                    .set_message_attributes(m.message_attributes.clone())
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let sent = call!(
            format!("send to {}", pair.queue_url),
            sqs.send_message_batch().queue_url(&pair.queue_url).set_entries(Some(entries)).send()
        );
        // 2. Delete only what SQS accepted; the rest stays and reappears after its visibility timeout.
        let ok: Vec<usize> = sent.successful.iter().filter_map(|s| s.id.strip_prefix('m')?.parse().ok()).collect();
        let deletes: Vec<DeleteMessageBatchRequestEntry> = ok
            .iter()
            .filter_map(|i| {
                let handle = batch.get(*i)?.receipt_handle.clone()?;
                DeleteMessageBatchRequestEntry::builder().id(format!("m{i}")).receipt_handle(handle).build().ok()
            })
            .collect();
        if !deletes.is_empty() {
            call!(
                format!("delete redriven messages from {}", pair.dlq_url),
                sqs.delete_message_batch().queue_url(&pair.dlq_url).set_entries(Some(deletes)).send()
            );
        }
        moved += ok.len() as u64;
        if let Some(f) = sent.failed.first() {
            return Err(ProviderError::new(format!(
                "send to {}: {} of {} messages refused ({}: {}); they stay in the dead-letter queue",
                pair.queue_url,
                sent.failed.len(),
                batch.len(),
                f.code,
                f.message.clone().unwrap_or_default()
            )));
        }
    }
    Ok(moved)
}

async fn purge(sqs: &Client, pair: &QueuePair) -> Result<()> {
    call!(format!("purge {}", pair.dlq_url), sqs.purge_queue().queue_url(&pair.dlq_url).send());
    Ok(())
}
