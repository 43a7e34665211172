//! The queue: SQS semantics (visibility timeout, receive count, dead-letter after max
//! receives), implemented by SQS itself or by an embedded SQLite queue.

use std::time::Duration;

use async_trait::async_trait;

pub mod sqlite;
pub mod sqs;

/// One delivery of a queue message.
#[derive(Debug, Clone)]
pub struct Received {
    /// The body as sent (ids only, see [`crate::model::QueueBody`]).
    pub body: String,
    /// Handle for delete / change visibility of this delivery.
    pub receipt: String,
    /// How many times the message has been received, this delivery included.
    pub receive_count: u32,
}

#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, body: &str) -> anyhow::Result<()>;
    /// Long-polls up to `wait` for at most `max` messages, hiding them for `visibility`.
    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Received>>;
    async fn delete(&self, receipt: &str) -> anyhow::Result<()>;
    /// Makes the delivery visible again after `timeout` (0 hands it back now).
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> anyhow::Result<()>;
    /// Messages waiting (visible), approximately.
    async fn approximate_len(&self) -> anyhow::Result<u64>;
    /// Whether a `receive` dropped before it returned may still receive messages and hide them
    /// for the visibility timeout: SQS's long poll, once sent, does. The worker then waits it out
    /// at shutdown and gives back what it got. An in-process queue receives nothing once dropped.
    fn receive_outlives_drop(&self) -> bool {
        false
    }
}
