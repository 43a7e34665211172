//! Redrive: move dead-letter messages back to the source queue. Each message is sent to
//! the source first and deleted from the dead-letter queue only after the send succeeded,
//! so a crash in between duplicates a message (absorbed by the worker) but never loses one.
//! Called by the runtime's own `aira-runtime redrive` command (embedded queues or SQS); the
//! `aira dlq redrive` command of the CLI does not use it (it has its own SQS implementation).

use std::time::Duration;

use crate::queue::Queue;

/// Moves up to `limit` messages (all when `None`); returns how many were moved.
pub async fn redrive(dead_letter: &dyn Queue, source: &dyn Queue, limit: Option<u64>) -> anyhow::Result<u64> {
    let mut moved = 0u64;
    loop {
        let want = limit.map(|l| l.saturating_sub(moved)).unwrap_or(10).min(10) as usize;
        if want == 0 {
            return Ok(moved);
        }
        let batch = dead_letter.receive(want, Duration::from_secs(1), Duration::from_secs(60)).await?;
        if batch.is_empty() {
            return Ok(moved);
        }
        for m in batch {
            source.send(&m.body).await?;
            dead_letter.delete(&m.receipt).await?;
            moved += 1;
        }
    }
}
