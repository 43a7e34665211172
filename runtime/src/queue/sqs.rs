//! The SQS queue. Its dead-letter behaviour comes from the queue's redrive policy, which
//! `aira` sets when it creates the queue.
//!
//! Deletes are batched the way group commit batches writes: one delete call is in flight at a
//! time, and the deletes asked for meanwhile go together in the next `DeleteMessageBatch` (up to
//! 10, SQS's limit). A lone delete waits for nothing; under load, answers that finish together
//! cost one request instead of one each. Each caller still gets its own entry's result.

use std::time::Duration;

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use tokio::sync::{mpsc, oneshot};

use super::{Queue, Received};

/// SQS takes at most 10 entries in a batch.
const MAX_BATCH: usize = 10;

type Delete = (String, oneshot::Sender<Result<(), String>>);

#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    deletes: mpsc::UnboundedSender<Delete>,
}

impl SqsQueue {
    /// Starts the queue's delete batcher on the current tokio runtime; it ends with the last clone.
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> SqsQueue {
        let url = url.into();
        let (deletes, rx) = mpsc::unbounded_channel();
        tokio::spawn(delete_in_batches(client.clone(), url.clone(), rx));
        SqsQueue { client, url, deletes }
    }
}

/// Takes the deletes asked for while the previous call was in flight (at least one), and makes
/// one call for them.
async fn delete_in_batches(client: aws_sdk_sqs::Client, url: String, mut rx: mpsc::UnboundedReceiver<Delete>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        if let [(receipt, _)] = &batch[..] {
            let out = client.delete_message().queue_url(&url).receipt_handle(receipt).send().await;
            let result = out.map(drop).map_err(|e| format!("{:#}", anyhow!(e).context("sqs delete message")));
            let (_, reply) = batch.pop().expect("one");
            let _ = reply.send(result);
            continue;
        }
        let entries = batch.iter().enumerate().map(|(i, (receipt, _))| {
            DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(receipt).build()
        });
        let entries: Result<Vec<_>, _> = entries.collect();
        let out = match entries {
            Ok(entries) => client
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| format!("{:#}", anyhow!(e).context("sqs delete message batch"))),
            Err(e) => Err(format!("sqs delete message batch: {e}")),
        };
        for (i, (_, reply)) in batch.into_iter().enumerate() {
            let id = i.to_string();
            let result = match &out {
                // An entry SQS did not delete fails with its own code; one it did not mention, too.
                Ok(o) => match o.failed().iter().find(|f| f.id() == id) {
                    Some(f) => Err(format!("sqs delete message batch: {}: {}", f.code(), f.message().unwrap_or(""))),
                    None if o.successful().iter().any(|s| s.id() == id) => Ok(()),
                    None => Err("sqs delete message batch: the entry is missing from the answer".to_string()),
                },
                Err(e) => Err(e.clone()),
            };
            let _ = reply.send(result);
        }
    }
}

/// SQS counts in whole seconds; round up so a short timeout never becomes zero.
fn secs(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.min(43_200) as i32
}

#[async_trait]
impl Queue for SqsQueue {
    fn receive_outlives_drop(&self) -> bool {
        true
    }

    async fn send(&self, body: &str) -> anyhow::Result<()> {
        self.client.send_message().queue_url(&self.url).message_body(body).send().await.context("sqs send message")?;
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Received>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(secs(wait).min(20))
            .visibility_timeout(secs(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .context("sqs receive message")?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Some(Received { body: m.body?, receipt: m.receipt_handle?, receive_count })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> anyhow::Result<()> {
        let (reply, result) = oneshot::channel();
        self.deletes.send((receipt.to_string(), reply)).map_err(|_| anyhow!("sqs delete: the batcher has stopped"))?;
        result.await.map_err(|_| anyhow!("sqs delete: the batcher has stopped"))?.map_err(|e| anyhow!(e))
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> anyhow::Result<()> {
        let t = if timeout.is_zero() { 0 } else { secs(timeout) };
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(t)
            .send()
            .await
            .context("sqs change message visibility")?;
        Ok(())
    }

    async fn approximate_len(&self) -> anyhow::Result<u64> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .context("sqs get queue attributes")?;
        Ok(out
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages).and_then(|v| v.parse().ok()))
            .unwrap_or(0))
    }
}
