//! The outbox relay: sends outbox rows older than `min_age` to the queue and clears them.
//! The API sends right after recording (fast path) and clears the row itself; the relay
//! catches what an API crash, a queue outage or a restart left behind. A row sent twice
//! (fast path and relay racing) is a duplicate delivery, which the worker absorbs. Once a
//! minute it also deletes the unfetched messages of users who keep no history, once past
//! their retention.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::model::{now_ms, QueueBody};
use crate::queue::Queue;
use crate::store::Store;

/// How often the relay deletes unkept messages past their retention.
const PURGE_EVERY: Duration = Duration::from_secs(60);

pub struct Relay {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    /// Time between scans.
    pub interval: Duration,
    /// Rows younger than this are left to the API's fast path.
    pub min_age: Duration,
}

impl Relay {
    /// One scan: relays what is pending, returns how many were sent.
    pub async fn relay_once(&self) -> anyhow::Result<u64> {
        let mut sent = 0;
        loop {
            let before = now_ms() - self.min_age.as_millis() as i64;
            let ids = self.store.outbox_pending(before, 100).await?;
            if ids.is_empty() {
                break;
            }
            let n = ids.len();
            for id in ids {
                self.queue.send(&QueueBody::encode(&id)).await?;
                self.metrics.queue_sent.inc();
                self.store.outbox_remove(&id).await?;
                self.metrics.outbox_relayed.inc();
                sent += 1;
            }
            if n < 100 {
                break;
            }
        }
        self.metrics.outbox_backlog.set(self.store.outbox_len().await? as i64);
        Ok(sent)
    }

    /// Deletes the messages of users who keep no history that were never fetched, once
    /// their retention has passed; returns how many.
    pub async fn purge_once(&self) -> anyhow::Result<u64> {
        let mut purged = 0;
        loop {
            let n = self.store.purge_due(now_ms(), 100).await?;
            purged += n;
            if n < 100 {
                return Ok(purged);
            }
        }
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_purge: Option<std::time::Instant> = None;
        loop {
            match self.relay_once().await {
                Ok(0) => {}
                Ok(n) => info!(relayed = n, "outbox relayed"),
                Err(e) => warn!(error = format!("{e:#}"), "outbox relay failed; will retry"),
            }
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                last_purge = Some(std::time::Instant::now());
                match self.purge_once().await {
                    Ok(0) => {}
                    Ok(n) => info!(purged = n, "unkept messages past their retention deleted"),
                    Err(e) => warn!(error = format!("{e:#}"), "purge failed; will retry"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
