//! The outbox relay: sends outbox rows older than `min_age` to the queue and clears them.
//! The API sends right after recording (fast path) and clears the row itself; the relay
//! catches what an API crash, a queue outage or a restart left behind. A row sent twice
//! (fast path and relay racing) is a duplicate delivery, which the worker absorbs. While the
//! outbox stays empty the relay scans less and less often (each scan is 8 queries on DynamoDB),
//! and the API wakes it when an enqueue fails. Once a minute it also counts the outbox (the
//! backlog gauge) and deletes the unfetched messages of users who keep no history, once past
//! their retention.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::model::{now_ms, QueueBody};
use crate::queue::Queue;
use crate::store::Store;

/// How often the relay counts the outbox and deletes unkept messages past their retention.
const CHORES_EVERY: Duration = Duration::from_secs(60);
/// The longest pause between scans of an empty outbox.
const IDLE_MAX: Duration = Duration::from_secs(30);

pub struct Relay {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    /// Time between scans while they find rows.
    pub interval: Duration,
    /// Rows younger than this are left to the API's fast path.
    pub min_age: Duration,
    /// Longest pause while the outbox stays empty: each empty scan doubles the pause, up to this.
    pub max_interval: Duration,
    /// Notified when an enqueue failed (`AppState::relay_wake`): the next scan comes as soon as
    /// the row is `min_age` old.
    pub wake: Arc<Notify>,
}

impl Relay {
    /// A relay scanning every `interval` while there is work, every 30 s at most when idle.
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        metrics: Arc<Metrics>,
        interval: Duration,
        min_age: Duration,
    ) -> Relay {
        Relay { store, queue, metrics, interval, min_age, max_interval: IDLE_MAX.max(interval), wake: Arc::default() }
    }

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
        let mut last_chores: Option<std::time::Instant> = None;
        let mut pause = self.interval;
        loop {
            pause = match self.relay_once().await {
                Ok(0) => (pause * 2).min(self.max_interval),
                Ok(n) => {
                    info!(relayed = n, "outbox relayed");
                    self.interval
                }
                Err(e) => {
                    warn!(error = format!("{e:#}"), "outbox relay failed; will retry");
                    self.interval
                }
            };
            if last_chores.is_none_or(|t| t.elapsed() >= CHORES_EVERY) {
                last_chores = Some(std::time::Instant::now());
                self.chores().await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {
                    // The row the API could not send: scan once it is old enough to be ours.
                    pause = self.interval;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.min_age) => {}
                    }
                }
            }
        }
    }

    /// Once a minute: the backlog gauge, and the purge of unkept messages.
    async fn chores(&self) {
        match self.store.outbox_len().await {
            Ok(n) => self.metrics.outbox_backlog.set(n as i64),
            Err(e) => warn!(error = format!("{e:#}"), "counting the outbox failed"),
        }
        match self.purge_once().await {
            Ok(0) => {}
            Ok(n) => info!(purged = n, "unkept messages past their retention deleted"),
            Err(e) => warn!(error = format!("{e:#}"), "purge failed; will retry"),
        }
    }
}
