//! The worker: long-polls the queue in batches, caps in-flight work, claims each message
//! with a conditional write, calls the LLM under a heartbeat that extends the visibility
//! timeout and the store lease, stores the answer with a conditional write, then deletes
//! the queue message. A message is never answered twice: only the lease holder can store
//! an answer, and an answered message is never claimed again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

mod call;

use call::Called;

use crate::llm::{Disposition, Llm, LlmError, Turn};
use crate::metrics::{Metrics, Outcome, COMPLETION_TOKENS, PROMPT_TOKENS};
use crate::model::{day_of, now_ms, Message, QueueBody, SET_ASIDE};
use crate::queue::{Queue, Received};
use crate::store::{Charge, Claim, ClaimTerms, Lease, Store};

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
    /// Most characters of those earlier turns: the newest that fit are sent, so a long
    /// conversation never outgrows the model's context.
    pub history_chars: usize,
    /// Longest answer stored, in bytes; a longer one is cut at a character boundary and marked.
    pub max_answer_bytes: usize,
    /// The most tokens of one answer (`AIRA_LLM_MAX_TOKENS`): what a message is charged for its
    /// answer before the model says what it spent.
    pub max_tokens: u32,
    /// The API's cap of a user's messages waiting or being answered (`AIRA_USER_IN_FLIGHT`;
    /// 0: none): the worker gives a slot back when a message is answered or failed.
    pub user_in_flight: u32,
    /// Daily token budgets (0: none): a message that would pass one is failed at its claim.
    pub user_daily_tokens: u64,
    pub all_daily_tokens: u64,
    /// On shutdown, how long in-flight messages may finish before they are handed back.
    pub shutdown_grace: Duration,
    /// How long one delivery waits out a failing model (429, 5xx, timeouts) in hand, its
    /// visibility and lease extended, before the failure counts as a receive: an outage this
    /// long burns no receive and sends nothing to the dead-letter queue. Zero: every failure
    /// is a receive.
    pub outage_budget: Duration,
    /// A streamed answer's partial text is written at most this often (`AIRA_STREAM_FLUSH_MS`):
    /// how soon the page sees new words, against one conditional write each.
    pub stream_flush: Duration,
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
            history_chars: 24_000,
            max_answer_bytes: 65_536,
            max_tokens: 1024,
            user_in_flight: 0,
            user_daily_tokens: 0,
            all_daily_tokens: 0,
            shutdown_grace: Duration::from_secs(20),
            outage_budget: Duration::from_secs(900),
            stream_flush: Duration::from_millis(400),
        }
    }
}

pub struct Worker {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
    pub llm: Arc<dyn Llm>,
    pub metrics: Arc<Metrics>,
    pub config: WorkerConfig,
    health: Health,
}

/// Distinct messages failing with service errors, since the last answer, after which the
/// worker slows its receiving.
const SLOW_AFTER_FAILURES: u32 = 3;
/// Distinct users whose calls timed out since the last answer, from which timeouts are taken
/// for an outage of the model rather than each message's own.
const TIMEOUT_OUTAGE_USERS: usize = 3;
/// The most ids each set of [`Health`] holds: enough to tell, bounded whatever happens.
const HEALTH_IDS: usize = 64;

/// What the worker knows of the model's health, across messages. One message failing again
/// and again is that message's failure; several messages (of several users) failing with no
/// answer in between is an outage.
#[derive(Default)]
struct Health {
    /// Calls answered since the start: a failing message that sees this grow knows the model
    /// answers others, so its failure is its own.
    answered: AtomicU64,
    /// Messages whose calls failed with service errors since the last answer.
    failing: std::sync::Mutex<HashSet<String>>,
    /// Users whose calls timed out since the last answer.
    timed_out: std::sync::Mutex<HashSet<String>>,
}

impl Health {
    fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.timed_out.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn failing(&self) -> u32 {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).len() as u32
    }

    /// What to do after `e` for `message_id` of `user_id`: its disposition, except that a
    /// timeout counts as a service error once several users' calls timed out in a row.
    fn disposition(&self, e: &LlmError, message_id: &str, user_id: &str) -> Disposition {
        let mut d = e.disposition();
        if matches!(e.root(), LlmError::Timeout) {
            let mut users = self.timed_out.lock().unwrap_or_else(|p| p.into_inner());
            if users.len() < HEALTH_IDS {
                users.insert(user_id.to_string());
            }
            if users.len() >= TIMEOUT_OUTAGE_USERS {
                d = Disposition::Retry { after: None };
            }
        }
        if matches!(d, Disposition::Retry { .. }) {
            let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
            if failing.len() < HEALTH_IDS {
                failing.insert(message_id.to_string());
            }
        }
        d
    }
}

/// What a message is charged before its call: its turns' characters as tokens (about four
/// characters a token; three, to err high) and the longest answer. Settled when the model says
/// what it spent.
fn estimate_tokens(turns: &[Turn], max_tokens: u32) -> u64 {
    let chars: usize = turns.iter().map(|t| t.content.chars().count()).sum();
    (chars as u64).div_ceil(3) + u64::from(max_tokens)
}

/// The answer as stored: at most `max_bytes`, cut at a character boundary and marked.
fn bounded_answer(text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let mark = "\n\n[answer cut: too long to keep]";
    let mut end = max_bytes.saturating_sub(mark.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &text[..end])
}

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
        metrics.daily_tokens_limit.set(config.all_daily_tokens.min(i64::MAX as u64) as i64);
        Worker { queue, store, llm, metrics, config, health: Health::default() }
    }

    /// While the model keeps failing, the pause before each receive: the retry backoff of the
    /// failures beyond [`SLOW_AFTER_FAILURES`], so new messages wait in the queue (where they
    /// burn no receive) instead of joining those already waiting in hand.
    fn receive_pause(&self) -> Option<Duration> {
        let n = self.health.failing();
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
        let mut day = day_of(now_ms());
        loop {
            // A new UTC day: the day's count starts again (the next charge reads it back).
            if day_of(now_ms()) != day {
                day = day_of(now_ms());
                self.metrics.tokens_today.set(0);
            }
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
            let receive = self.queue.receive(n, cfg.wait, cfg.visibility);
            tokio::pin!(receive);
            let received = tokio::select! {
                r = &mut receive => r,
                _ = shutdown.cancelled() => {
                    // A long poll already sent receives whatever arrives before its wait ends,
                    // hidden from every worker for the visibility timeout: waited out (at most
                    // `wait`) and given back at once, so a rolling deploy delays no message.
                    let pending = if self.queue.receive_outlives_drop() { receive.await } else { Ok(Vec::new()) };
                    for m in pending.unwrap_or_default() {
                        self.set_visibility(&m, Duration::ZERO).await;
                        self.outcome(Outcome::HandedBack);
                    }
                    break;
                }
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

    fn outcome(&self, outcome: Outcome) {
        self.metrics.worker_messages.with_label_values(&[outcome.label()]).inc();
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
        // Time-ordered (UUIDv7): a later claim's token sorts after an earlier one's, which the
        // partial answer's writes are fenced by on DynamoDB.
        let lease = Lease { message_id: id, claim_token: crate::model::new_id() };
        let now = now_ms();
        let Some(msg) = self.claim(&m, &lease, now).await else { return };
        if msg.stop_requested {
            // Stopped while a worker that is gone answered it: what that one wrote is the answer.
            let written = self.store.get_message(&msg.id).await.ok().flatten().and_then(|m| m.answer);
            let answer = written.or_else(|| msg.answer.clone()).unwrap_or_default();
            self.store_answer(&m, &msg, &lease, &answer, true).await;
            return self.forget_partial(&msg.id, true).await;
        }

        self.metrics.worker_in_flight.inc();
        let _gauge = scopeguard(self.metrics.worker_in_flight.clone());
        let turns = self.turns(&msg).await;
        // Charged before the call, against the day's budgets; settled after.
        let day = day_of(now);
        let estimate = estimate_tokens(&turns, cfg.max_tokens);
        match self.store.charge_spend(&msg.user_id, day, estimate, cfg.user_daily_tokens, cfg.all_daily_tokens).await {
            Ok(Charge::Charged { all_today }) => self.metrics.tokens_today.set(all_today.min(i64::MAX as u64) as i64),
            Ok(over) => {
                let reason = match over {
                    Charge::OverUser => "your model tokens of today are spent; they renew at 00:00 UTC",
                    _ => "the service's model budget of today is spent; it renews at 00:00 UTC",
                };
                info!(estimate, "over a daily budget; failing the message");
                return self.give_up(&m, &msg, &lease, reason, Outcome::BudgetSpent).await;
            }
            Err(e) => {
                warn!(error = format!("{e:#}"), "charging the spend failed; retrying later");
                let _ = self.store.release(&lease, now_ms()).await;
                self.outcome(Outcome::Retried);
                let delay = retry_delay(cfg, None, m.receive_count);
                return self.set_visibility(&m, delay).await;
            }
        }
        let wrote = std::sync::atomic::AtomicBool::new(false);
        let Some(called) = self.call(&m, &msg, &lease, &turns, &hand_back, &wrote).await else { return };
        let wrote = wrote.into_inner();
        let stopped = matches!(called, Called::Stopped(_));
        // A stop leaves its mark in the partial answer's place even before any text.
        let partial = wrote || stopped;
        let (result, disposition) = match called {
            Called::Done(result, disposition) => (result, disposition),
            // Cut short (by the user, or past the longest answer kept): what was written is the
            // answer; the tokens are estimated, as the provider counts them only at a stream's end.
            Called::Stopped(text) | Called::Full(text) => {
                let spent = estimate_tokens(&turns, 0) + (text.chars().count() as u64).div_ceil(3);
                self.settle(&msg.user_id, day, spent as i64 - estimate as i64).await;
                let answer = bounded_answer(text, cfg.max_answer_bytes);
                self.store_answer(&m, &msg, &lease, &answer, stopped).await;
                return self.forget_partial(&msg.id, partial).await;
            }
            Called::Lost => {
                warn!("lease lost while answering; the model call ended");
                return self.outcome(Outcome::LeaseLost);
            }
        };
        match result {
            Ok(c) => {
                self.metrics.llm_tokens.with_label_values(&[PROMPT_TOKENS]).inc_by(c.prompt_tokens);
                self.metrics.llm_tokens.with_label_values(&[COMPLETION_TOKENS]).inc_by(c.completion_tokens);
                let spent = c.prompt_tokens + c.completion_tokens;
                self.settle(&msg.user_id, day, spent as i64 - estimate as i64).await;
                let answer = bounded_answer(c.text, cfg.max_answer_bytes);
                self.store_answer(&m, &msg, &lease, &answer, false).await;
            }
            Err(e) => {
                self.metrics.llm_errors.with_label_values(&[e.kind()]).inc();
                // Refused or unreachable: the provider bills nothing. A call that timed out or
                // came back unusable may have been billed: its charge stays.
                if !matches!(e.root(), LlmError::Timeout | LlmError::BadResponse | LlmError::Empty) {
                    self.settle(&msg.user_id, day, -(estimate as i64)).await;
                }
                let d = disposition.unwrap_or(Disposition::Fail);
                self.on_llm_error(&m, &msg, &lease, e, d).await;
            }
        }
        self.forget_partial(&msg.id, partial).await;
    }

    /// Deletes the partial answer written meanwhile (`written`), once the message is answered,
    /// failed or back in the queue: an answer is kept once, on the message; the next attempt
    /// writes its own.
    async fn forget_partial(&self, message_id: &str, written: bool) {
        if written {
            if let Err(e) = self.store.forget_partial(message_id).await {
                warn!(error = format!("{e:#}"), "deleting the partial answer failed; it expires in a day");
            }
        }
    }

    /// Claims the message for this delivery: the message, or `None` when there is nothing to
    /// answer (the delivery deleted or deferred as the claim's outcome tells).
    async fn claim(&self, m: &Received, lease: &Lease, now: i64) -> Option<Message> {
        let cfg = &self.config;
        let lease_ms = cfg.visibility.as_millis() as i64;
        let terms = ClaimTerms {
            now_ms: now,
            lease_until_ms: now + lease_ms,
            last_delivery: m.receive_count >= cfg.max_receives,
        };
        let outcome = match self.store.claim(lease, terms).await {
            Ok(Claim::Claimed(msg)) => return Some(msg),
            Err(e) => {
                // Leave the delivery alone: it becomes visible again after its timeout.
                warn!(error = format!("{e:#}"), "claim failed");
                return None;
            }
            Ok(Claim::Busy { lease_until_ms }) => {
                // Another worker holds it; look again after its lease, in case it dies.
                let wait = Duration::from_millis((lease_until_ms - now).max(1000) as u64);
                debug!("claimed by another worker; deferring");
                self.outcome(Outcome::Busy);
                self.set_visibility(m, wait).await;
                return None;
            }
            Ok(Claim::Missing) => {
                warn!("message not in the store; deleting the queue message");
                Outcome::Missing
            }
            Ok(Claim::Answered) => {
                debug!("already answered; duplicate delivery");
                Outcome::Duplicate
            }
            Ok(Claim::Failed) => {
                // Only a redrive of what the worker set aside, or the user's retry (which sets
                // it queued), answers a failed message: this is a duplicate of its delivery.
                debug!("failed and not set aside for a redrive; duplicate delivery");
                Outcome::Duplicate
            }
        };
        // Nothing left to answer: the delivery goes.
        self.outcome(outcome);
        self.delete(m).await;
        None
    }

    /// Stores the answer (`stopped`: the part written until the user stopped it), gives the
    /// user's slot back and deletes the delivery.
    async fn store_answer(&self, m: &Received, msg: &Message, lease: &Lease, answer: &str, stopped: bool) {
        match self.store.complete(lease, answer, now_ms(), stopped).await {
            Ok(true) => {
                self.free_slot(&msg.user_id).await;
                self.outcome(if stopped { Outcome::Stopped } else { Outcome::Answered });
                self.metrics.end_to_end.observe(((now_ms() - msg.created_at).max(0) as f64) / 1000.0);
                info!(stopped, "answered");
                self.delete(m).await;
            }
            Ok(false) => {
                // Lost the lease: whoever holds it answers; this delivery expires.
                warn!("lease lost before the answer was stored; answer dropped");
                self.outcome(Outcome::LeaseLost);
            }
            Err(e) => warn!(error = format!("{e:#}"), "storing the answer failed; will retry"),
        }
    }

    /// Corrects a message's charge by `delta` tokens once its cost is known.
    async fn settle(&self, user_id: &str, day: i64, delta: i64) {
        if delta != 0 {
            if let Err(e) = self.store.add_spend(user_id, day, delta).await {
                warn!(error = format!("{e:#}"), "settling the spend failed");
            }
        }
    }

    /// Gives the user's in-flight slot back: the message is answered or failed.
    async fn free_slot(&self, user_id: &str) {
        if self.config.user_in_flight > 0 {
            if let Err(e) = self.store.free_slot(user_id, now_ms()).await {
                warn!(error = format!("{e:#}"), "giving back an in-flight slot failed; it heals in minutes");
            }
        }
    }

    /// Marks the message failed for `reason` and deletes its delivery: nothing will answer it
    /// but the user's retry.
    async fn give_up(&self, m: &Received, msg: &Message, lease: &Lease, reason: &str, outcome: Outcome) {
        match self.store.fail(lease, reason, now_ms(), false).await {
            Ok(true) => {
                self.free_slot(&msg.user_id).await;
                self.outcome(outcome);
                self.delete(m).await;
            }
            // Another worker holds the message now; its delivery decides.
            Ok(false) => self.outcome(Outcome::LeaseLost),
            Err(err) => warn!(error = format!("{err:#}"), "marking failed did not work; will retry"),
        }
    }

    /// Shutting down: the message goes back to the queue at once for another worker; on its
    /// last delivery the queue sends it to the dead-letter queue instead, so it is failed and
    /// marked for a redrive.
    async fn hand_back(&self, m: &Received, msg: &Message, lease: &Lease) {
        info!("shutting down: handing the message back");
        if m.receive_count >= self.config.max_receives {
            // Failed now (set aside for a redrive): its user's slot is free again.
            if let Ok(true) = self.store.fail(lease, SET_ASIDE, now_ms(), true).await {
                self.free_slot(&msg.user_id).await;
            }
        } else {
            let _ = self.store.release(lease, now_ms()).await;
        }
        self.set_visibility(m, Duration::ZERO).await;
        self.outcome(Outcome::HandedBack);
    }

    async fn on_llm_error(&self, m: &Received, msg: &Message, lease: &Lease, e: LlmError, d: Disposition) {
        let cfg = &self.config;
        match d {
            Disposition::Fail | Disposition::Once => {
                warn!(error = %e, "llm failed for this message; failing it");
                self.give_up(m, msg, lease, &e.recorded_reason(), Outcome::Failed).await;
            }
            Disposition::Retry { .. } if m.receive_count >= cfg.max_receives => {
                warn!(error = %e, "llm failed on the last receive; to the dead-letter queue");
                // Marked for the redrive: the message's final event now, an answer if redriven.
                if let Ok(true) = self.store.fail(lease, &e.recorded_reason(), now_ms(), true).await {
                    self.free_slot(&msg.user_id).await;
                }
                self.metrics.dead_lettered.inc();
                self.outcome(Outcome::DeadLettered);
                // Visible now, so the queue moves it to the dead-letter queue on next receive.
                self.set_visibility(m, Duration::ZERO).await;
            }
            Disposition::Retry { after } => {
                let delay = retry_delay(cfg, after, m.receive_count);
                info!(error = %e, delay_ms = delay.as_millis() as u64, "llm failed; retrying later");
                let _ = self.store.release(lease, now_ms()).await;
                self.outcome(Outcome::Retried);
                self.set_visibility(m, delay).await;
            }
        }
    }

    /// The prompt with the conversation's earlier answered turns, the newest that fit in
    /// `history_chars`; alone when the user keeps no history.
    async fn turns(&self, msg: &Message) -> Vec<Turn> {
        let mut turns = Vec::new();
        if msg.ephemeral() {
            return vec![Turn { role: "user", content: msg.content.clone() }];
        }
        match self.store.history(&msg.conversation_id, &msg.id, self.config.history_turns).await {
            Ok(history) => {
                // The newest turns that fit in `history_chars`, oldest first.
                let mut budget = self.config.history_chars;
                let mut kept = Vec::new();
                for h in history.into_iter().rev() {
                    let answer = h.answer.unwrap_or_default();
                    // Stopped before any word: no turn (a model's turns alternate, none empty).
                    if answer.is_empty() {
                        continue;
                    }
                    let size = h.content.chars().count() + answer.chars().count();
                    if size > budget {
                        break;
                    }
                    budget -= size;
                    kept.push((h.content, answer));
                }
                for (content, answer) in kept.into_iter().rev() {
                    turns.push(Turn { role: "user", content });
                    turns.push(Turn { role: "assistant", content: answer });
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
    fn answers_are_bounded_at_a_character_boundary() {
        assert_eq!(bounded_answer("short".into(), 100), "short");
        let long = "é".repeat(100_000); // two bytes a character
        let cut = bounded_answer(long, 1001);
        assert!(cut.len() <= 1001, "{}", cut.len());
        assert!(cut.ends_with("[answer cut: too long to keep]"));
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn timeouts_of_one_user_are_that_users_but_of_several_an_outage() {
        let h = Health::default();
        let t = LlmError::Timeout;
        assert_eq!(h.disposition(&t, "m1", "mallory"), Disposition::Once);
        assert_eq!(h.disposition(&t, "m2", "mallory"), Disposition::Once);
        assert_eq!(h.failing(), 0, "one user's timeouts slow no one");
        assert_eq!(h.disposition(&t, "m3", "alice"), Disposition::Once);
        assert_eq!(h.disposition(&t, "m4", "bob"), Disposition::Retry { after: None });
        h.answered();
        assert_eq!(h.disposition(&t, "m5", "carol"), Disposition::Once, "an answer ends the outage");
        let server = LlmError::Server { status: 503 };
        for i in 0..1000 {
            h.disposition(&server, &format!("m{i}"), "u");
        }
        assert_eq!(h.failing(), HEALTH_IDS as u32, "bounded");
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
