//! The worker: long-polls the queue in batches, caps in-flight work, claims each message
//! with a conditional write, calls the LLM under a heartbeat that extends the visibility
//! timeout and the store lease, stores the answer with a conditional write, then deletes
//! the queue message. A message is never answered twice: only the lease holder can store
//! an answer, and an answered message is never claimed again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::llm::{Disposition, Llm, LlmError, Turn};
use crate::metrics::Metrics;
use crate::model::{day_of, now_ms, Message, QueueBody, SET_ASIDE};
use crate::queue::{Queue, Received};
use crate::store::{Claim, Store};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Messages asked for per receive (SQS allows at most 10).
    pub batch_size: usize,
    /// Messages processed at once; polling pauses while this many are in flight.
    pub max_in_flight: usize,
    /// Long-poll wait per receive.
    pub wait: Duration,
    /// Visibility timeout given at receive and renewed by the heartbeat.
    pub visibility: Duration,
    /// The queue's max receives before the dead-letter queue (must match its redrive policy).
    pub max_receives: u32,
    /// First retry delay for server errors; doubles per receive.
    pub retry_base: Duration,
    /// Ceiling of the retry delay.
    pub retry_max: Duration,
    /// Bound of one LLM call (the client has its own timeout too).
    pub llm_timeout: Duration,
    /// Most earlier answered messages of the conversation sent with the prompt (each as a
    /// user and an assistant turn).
    pub history_turns: usize,
    /// On shutdown, how long in-flight messages may finish before they are handed back.
    pub shutdown_grace: Duration,
    /// How long one delivery waits out a failing model (429, 5xx, timeouts) in hand, its
    /// visibility and lease extended, before the failure counts as a receive: an outage this
    /// long burns no receive and sends nothing to the dead-letter queue. Zero: every failure
    /// is a receive.
    pub outage_budget: Duration,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            batch_size: 10,
            max_in_flight: 64,
            wait: Duration::from_secs(20),
            visibility: Duration::from_secs(60),
            max_receives: 5,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            llm_timeout: Duration::from_secs(60),
            history_turns: 20,
            shutdown_grace: Duration::from_secs(20),
            outage_budget: Duration::from_secs(900),
        }
    }
}

pub struct Worker {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
    pub llm: Arc<dyn Llm>,
    pub metrics: Arc<Metrics>,
    pub config: WorkerConfig,
    /// Retryable model failures in a row, across messages: receiving slows while it grows.
    failures_in_a_row: AtomicU32,
}

/// Failures in a row after which the worker slows its receiving.
const SLOW_AFTER_FAILURES: u32 = 3;

/// Delay before retry number `receive_count` (1-based): base·2^(n-1), capped, ±20 % jitter.
pub fn backoff(base: Duration, max: Duration, receive_count: u32) -> Duration {
    let exp = receive_count.saturating_sub(1).min(20);
    let d = base.saturating_mul(1u32 << exp).min(max);
    let jitter: f64 = rand::random_range(0.8..1.2);
    d.mul_f64(jitter).min(max)
}

impl Worker {
    pub fn new(
        queue: Arc<dyn Queue>,
        store: Arc<dyn Store>,
        llm: Arc<dyn Llm>,
        metrics: Arc<Metrics>,
        config: WorkerConfig,
    ) -> Worker {
        Worker { queue, store, llm, metrics, config, failures_in_a_row: AtomicU32::new(0) }
    }

    /// While the model keeps failing, the pause before each receive: the retry backoff of the
    /// failures beyond [`SLOW_AFTER_FAILURES`], so new messages wait in the queue (where they
    /// burn no receive) instead of joining those already waiting in hand.
    fn receive_pause(&self) -> Option<Duration> {
        let n = self.failures_in_a_row.load(Ordering::Relaxed);
        (n >= SLOW_AFTER_FAILURES)
            .then(|| backoff(self.config.retry_base, self.config.retry_max, n - SLOW_AFTER_FAILURES + 1))
    }

    /// Runs until `shutdown`; then stops polling, lets in-flight messages finish for the
    /// grace period and hands the rest back (visibility 0).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let cfg = &self.config;
        let slots = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
        let hand_back = CancellationToken::new();
        let mut tasks = JoinSet::new();
        info!(max_in_flight = cfg.max_in_flight, llm = self.llm.name(), "worker started");
        loop {
            while let Some(r) = tasks.try_join_next() {
                if let Err(e) = r {
                    error!(error = %e, "message task panicked");
                }
            }
            if let Some(pause) = self.receive_pause() {
                debug!(pause_ms = pause.as_millis() as u64, "the model keeps failing; receiving slowly");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
            let n = (slots.available_permits() + 1).min(cfg.batch_size).max(1);
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.queue.receive(n, cfg.wait, cfg.visibility) => r,
            };
            let batch = match received {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = format!("{e:#}"), "queue receive failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            self.metrics.queue_received.inc_by(batch.len() as u64);
            let mut first = Some(first);
            for m in batch {
                let permit = match first.take().or_else(|| slots.clone().try_acquire_owned().ok()) {
                    Some(p) => p,
                    None => slots.clone().acquire_owned().await.expect("semaphore never closed"),
                };
                let this = self.clone();
                let hb = hand_back.clone();
                tasks.spawn(async move {
                    let _slot = permit;
                    this.process(m, hb).await
                });
            }
        }
        info!(in_flight = cfg.max_in_flight.max(1) - slots.available_permits(), "worker stopping: polling stopped");
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(cfg.shutdown_grace, drain).await.is_err() {
            hand_back.cancel();
            while tasks.join_next().await.is_some() {}
        }
        info!("worker stopped");
    }

    fn outcome(&self, outcome: &str) {
        self.metrics.worker_messages.with_label_values(&[outcome]).inc();
    }

    async fn delete(&self, m: &Received) {
        match self.queue.delete(&m.receipt).await {
            Ok(()) => self.metrics.queue_deleted.inc(),
            Err(e) => warn!(error = format!("{e:#}"), "queue delete failed; the duplicate will be absorbed"),
        }
    }

    async fn set_visibility(&self, m: &Received, d: Duration) {
        if let Err(e) = self.queue.change_visibility(&m.receipt, d).await {
            warn!(error = format!("{e:#}"), "change visibility failed");
        }
    }

    /// Handles one delivery. Public so tests can deliver the same message twice.
    pub async fn process(&self, m: Received, hand_back: CancellationToken) {
        let Some(body) = QueueBody::decode(&m.body) else {
            warn!("queue message without a message id; deleting it");
            self.delete(&m).await;
            return;
        };
        let span = tracing::info_span!("message", message_id = %body.message_id, receive_count = m.receive_count);
        self.process_message(m, body.message_id, hand_back).instrument(span).await
    }

    async fn process_message(&self, m: Received, id: String, hand_back: CancellationToken) {
        let cfg = &self.config;
        let token = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let lease_ms = cfg.visibility.as_millis() as i64;
        let last = m.receive_count >= cfg.max_receives;
        let msg = match self.store.claim(&id, &token, now, now + lease_ms, last).await {
            Err(e) => {
                // Leave the delivery alone: it becomes visible again after its timeout.
                warn!(error = format!("{e:#}"), "claim failed");
                return;
            }
            Ok(Claim::Missing) => {
                warn!("message not in the store; deleting the queue message");
                self.outcome("missing");
                self.delete(&m).await;
                return;
            }
            Ok(Claim::Answered) => {
                debug!("already answered; duplicate delivery");
                self.outcome("duplicate");
                self.delete(&m).await;
                return;
            }
            Ok(Claim::Failed) => {
                // Only a redrive of what the worker set aside, or the user's retry (which sets
                // it queued), answers a failed message: this is a duplicate of its delivery.
                debug!("failed and not set aside for a redrive; duplicate delivery");
                self.outcome("duplicate");
                self.delete(&m).await;
                return;
            }
            Ok(Claim::Busy { lease_until_ms }) => {
                // Another worker holds it; look again after its lease, in case it dies.
                let wait = Duration::from_millis((lease_until_ms - now).max(1000) as u64);
                debug!("claimed by another worker; deferring");
                self.outcome("busy");
                self.set_visibility(&m, wait).await;
                return;
            }
            Ok(Claim::Claimed(msg)) => msg,
        };

        self.metrics.worker_in_flight.inc();
        let _gauge = scopeguard(self.metrics.worker_in_flight.clone());
        let turns = self.turns(&msg).await;
        let heartbeat = async {
            let period = (cfg.visibility / 3).max(Duration::from_millis(200));
            loop {
                tokio::time::sleep(period).await;
                self.set_visibility(&m, cfg.visibility).await;
                let until = now_ms() + lease_ms;
                if let Err(e) = self.store.extend_lease(&id, &token, until).await {
                    warn!(error = format!("{e:#}"), "lease extension failed");
                }
            }
        };
        tokio::pin!(heartbeat);
        // Retryable failures are waited out here, in hand, for `outage_budget` from the first.
        let mut first_failure: Option<Instant> = None;
        let mut attempt = 0u32;
        let result = loop {
            let call = async {
                match tokio::time::timeout(cfg.llm_timeout, self.llm.complete(&turns)).await {
                    Ok(r) => r,
                    Err(_) => Err(LlmError::Timeout),
                }
            };
            let started = Instant::now();
            let r = tokio::select! {
                r = call => r,
                _ = &mut heartbeat => unreachable!("heartbeat never ends"),
                _ = hand_back.cancelled() => return self.hand_back(&m, &id, &token).await,
            };
            self.metrics.llm_duration.observe(started.elapsed().as_secs_f64());
            let after = match (&r, r.as_ref().err().map(LlmError::disposition)) {
                (Ok(_), _) => {
                    self.failures_in_a_row.store(0, Ordering::Relaxed);
                    break r;
                }
                (Err(_), Some(Disposition::Retry { after })) => after,
                (Err(_), _) => break r,
            };
            self.failures_in_a_row.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
            let delay = retry_delay(cfg, after, attempt);
            let since = *first_failure.get_or_insert_with(Instant::now);
            if since.elapsed() + delay > cfg.outage_budget {
                break r;
            }
            if let Err(e) = &r {
                self.metrics.llm_errors.with_label_values(&[e.kind()]).inc();
                info!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "llm failed; waiting it out in hand");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut heartbeat => unreachable!("heartbeat never ends"),
                _ = hand_back.cancelled() => return self.hand_back(&m, &id, &token).await,
            }
        };

        match result {
            Ok(c) => {
                self.metrics.llm_tokens.with_label_values(&["prompt"]).inc_by(c.prompt_tokens);
                self.metrics.llm_tokens.with_label_values(&["completion"]).inc_by(c.completion_tokens);
                match self.store.complete(&id, &token, &c.text, now_ms()).await {
                    Ok(true) => {
                        let spent = c.prompt_tokens + c.completion_tokens;
                        if let Err(e) = self.store.add_spend(&msg.user_id, day_of(now_ms()), spent).await {
                            warn!(error = format!("{e:#}"), "counting the spend failed");
                        }
                        self.outcome("answered");
                        self.metrics.end_to_end.observe(((now_ms() - msg.created_at).max(0) as f64) / 1000.0);
                        info!("answered");
                        self.delete(&m).await;
                    }
                    Ok(false) => {
                        // Lost the lease: whoever holds it answers; this delivery expires.
                        warn!("lease lost before the answer was stored; answer dropped");
                        self.outcome("lease_lost");
                    }
                    Err(e) => warn!(error = format!("{e:#}"), "storing the answer failed; will retry"),
                }
            }
            Err(e) => {
                self.metrics.llm_errors.with_label_values(&[e.kind()]).inc();
                self.on_llm_error(&m, &id, &token, e).await;
            }
        }
    }

    /// Shutting down: the message goes back to the queue at once for another worker; on its
    /// last delivery the queue sends it to the dead-letter queue instead, so it is failed and
    /// marked for a redrive.
    async fn hand_back(&self, m: &Received, id: &str, token: &str) {
        info!("shutting down: handing the message back");
        if m.receive_count >= self.config.max_receives {
            let _ = self.store.fail(id, token, SET_ASIDE, now_ms(), true).await;
        } else {
            let _ = self.store.release(id, token, now_ms()).await;
        }
        self.set_visibility(m, Duration::ZERO).await;
        self.outcome("handed_back");
    }

    async fn on_llm_error(&self, m: &Received, id: &str, token: &str, e: LlmError) {
        let cfg = &self.config;
        match e.disposition() {
            Disposition::Fail => {
                warn!(error = %e, "llm refused; failing the message");
                match self.store.fail(id, token, &e.recorded_reason(), now_ms(), false).await {
                    Ok(true) => {
                        self.outcome("failed");
                        self.delete(m).await;
                    }
                    // Another worker holds the message now; its delivery decides.
                    Ok(false) => self.outcome("lease_lost"),
                    Err(err) => warn!(error = format!("{err:#}"), "marking failed did not work; will retry"),
                }
            }
            Disposition::Retry { .. } if m.receive_count >= cfg.max_receives => {
                warn!(error = %e, "llm failed on the last receive; to the dead-letter queue");
                // Marked for the redrive: the message's final event now, an answer if redriven.
                let _ = self.store.fail(id, token, &e.recorded_reason(), now_ms(), true).await;
                self.metrics.dead_lettered.inc();
                self.outcome("dead_lettered");
                // Visible now, so the queue moves it to the dead-letter queue on next receive.
                self.set_visibility(m, Duration::ZERO).await;
            }
            Disposition::Retry { after } => {
                let delay = retry_delay(cfg, after, m.receive_count);
                info!(error = %e, delay_ms = delay.as_millis() as u64, "llm failed; retrying later");
                let _ = self.store.release(id, token, now_ms()).await;
                self.outcome("retried");
                self.set_visibility(m, delay).await;
            }
        }
    }

    /// The prompt with the conversation's earlier answered turns; alone when the user keeps
    /// no history.
    async fn turns(&self, msg: &Message) -> Vec<Turn> {
        let mut turns = Vec::new();
        if msg.ephemeral() {
            return vec![Turn { role: "user", content: msg.content.clone() }];
        }
        match self.store.history(&msg.conversation_id, &msg.id, self.config.history_turns).await {
            Ok(history) => {
                for h in history {
                    turns.push(Turn { role: "user", content: h.content });
                    turns.push(Turn { role: "assistant", content: h.answer.unwrap_or_default() });
                }
            }
            Err(e) => warn!(error = format!("{e:#}"), "history unavailable; sending the prompt alone"),
        }
        turns.push(Turn { role: "user", content: msg.content.clone() });
        turns
    }
}

/// The wait before retry number `n`: the backoff, or the server's `Retry-After` when longer
/// (a `Retry-After: 0` does not make a retry storm), capped at `retry_max`.
fn retry_delay(cfg: &WorkerConfig, after: Option<Duration>, n: u32) -> Duration {
    let b = backoff(cfg.retry_base, cfg.retry_max, n);
    after.map_or(b, |a| a.max(b)).min(cfg.retry_max)
}

/// Decrements the in-flight gauge however the processing ends (including abort).
struct GaugeGuard(prometheus::IntGauge);
impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
fn scopeguard(g: prometheus::IntGauge) -> GaugeGuard {
    GaugeGuard(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        let b1 = backoff(base, max, 1);
        let b3 = backoff(base, max, 3);
        assert!(b1 >= Duration::from_millis(1600) && b1 <= Duration::from_millis(2400), "{b1:?}");
        assert!(b3 >= Duration::from_millis(6400) && b3 <= Duration::from_millis(9600), "{b3:?}");
        assert!(backoff(base, max, 30) <= max);
    }

    #[test]
    fn retry_after_is_a_floor_not_a_replacement() {
        let cfg = WorkerConfig {
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            ..Default::default()
        };
        // `Retry-After: 0` still waits the backoff.
        assert!(retry_delay(&cfg, Some(Duration::ZERO), 1) >= Duration::from_millis(1600));
        // A longer Retry-After wins, up to the cap.
        assert_eq!(retry_delay(&cfg, Some(Duration::from_secs(30)), 1), Duration::from_secs(30));
        assert_eq!(retry_delay(&cfg, Some(Duration::from_secs(600)), 1), Duration::from_secs(60));
        assert!(retry_delay(&cfg, None, 3) >= Duration::from_millis(6400));
    }
}
