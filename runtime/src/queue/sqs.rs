//! The SQS queue. Its dead-letter behaviour comes from the queue's redrive policy, which
//! `aira` sets when it creates the queue.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

use super::{Queue, Received};

#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> SqsQueue {
        SqsQueue { client, url: url.into() }
    }
}

/// SQS counts in whole seconds; round up so a short timeout never becomes zero.
fn secs(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.min(43_200) as i32
}

#[async_trait]
impl Queue for SqsQueue {
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
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .context("sqs delete message")?;
        Ok(())
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
