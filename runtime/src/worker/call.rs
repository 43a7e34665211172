//! One message's model call: under a heartbeat that extends the delivery's visibility and the
//! lease, with the failing service waited out in hand, and the answer published as the model
//! writes it (a partial answer the event streams read), where the worker also learns that the
//! user stopped the message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{retry_delay, Worker};
use crate::llm::{Completion, Disposition, LlmError, Turn};
use crate::model::{now_ms, Message};
use crate::queue::Received;
use crate::store::{Lease, Partial};

/// While no new text comes (before the first, or from a model that answers whole), how often
/// the worker reads whether the user stopped the message.
pub const STOP_CHECK: Duration = Duration::from_secs(1);

/// How a call ended.
pub(super) enum Called {
    /// The model's answer, or its error and how to treat it.
    Done(Result<Completion, LlmError>, Option<Disposition>),
    /// The user stopped it: the text written until then.
    Stopped(String),
    /// The answer outgrew the longest kept: the call was ended there, with this text.
    Full(String),
    /// Another worker holds the message now.
    Lost,
}

impl Worker {
    /// Calls the model under a heartbeat that extends the delivery's visibility and the lease:
    /// how the last call ended (`wrote` set once a partial answer is written); `None` when the
    /// message was handed back for a shutdown meanwhile.
    pub(super) async fn call(
        &self,
        m: &Received,
        msg: &Message,
        lease: &Lease,
        turns: &[Turn],
        hand_back: &CancellationToken,
        wrote: &AtomicBool,
    ) -> Option<Called> {
        let cfg = &self.config;
        let lease_ms = cfg.visibility.as_millis() as i64;
        let heartbeat = async {
            let period = (cfg.visibility / 3).max(Duration::from_millis(200));
            loop {
                tokio::time::sleep(period).await;
                self.set_visibility(m, cfg.visibility).await;
                let until = now_ms() + lease_ms;
                if let Err(e) = self.store.extend_lease(lease, until).await {
                    warn!(error = format!("{e:#}"), "lease extension failed");
                }
            }
        };
        tokio::pin!(heartbeat);
        // Service errors are waited out here, in hand, for `outage_budget` from the first,
        // while no other message gets an answer either; this message's own errors get one
        // more call.
        let mut first_failure: Option<(Instant, u64)> = None;
        let mut attempt = 0u32;
        let mut once_used = false;
        loop {
            // Each call writes its answer from the start: its first write replaces any text an
            // earlier call (or an earlier worker) left.
            let (written, rx) = tokio::sync::watch::channel(String::new());
            let call = async {
                match tokio::time::timeout(cfg.llm_timeout, self.llm.complete(turns, &written)).await {
                    Ok(r) => r,
                    Err(_) => Err(LlmError::Timeout),
                }
            };
            let started = Instant::now();
            // Ending the select drops the call: its connection closes, and the model stops.
            let r = tokio::select! {
                r = call => r,
                end = self.publish(lease, rx, wrote) => return Some(end),
                _ = &mut heartbeat => unreachable!("heartbeat never ends"),
                _ = hand_back.cancelled() => {
                    self.hand_back(m, msg, lease).await;
                    return None;
                }
            };
            self.metrics.llm_duration.observe(started.elapsed().as_secs_f64());
            let e = match &r {
                Ok(_) => {
                    self.health.answered();
                    return Some(Called::Done(r, None));
                }
                Err(e) => e,
            };
            let d = self.health.disposition(e, &msg.id, &msg.user_id);
            let delay = match d {
                Disposition::Fail => return Some(Called::Done(r, Some(d))),
                Disposition::Once if once_used => return Some(Called::Done(r, Some(d))),
                Disposition::Once => {
                    once_used = true;
                    Duration::ZERO
                }
                Disposition::Retry { after } => {
                    attempt += 1;
                    let answered = self.health.answered.load(Ordering::Relaxed);
                    let (since, answered_then) = *first_failure.get_or_insert((Instant::now(), answered));
                    let delay = retry_delay(cfg, after, attempt);
                    // Others got answers meanwhile: not an outage, this message's own failure.
                    if answered > answered_then || since.elapsed() + delay > cfg.outage_budget {
                        return Some(Called::Done(r, Some(d)));
                    }
                    delay
                }
            };
            self.metrics.llm_errors.with_label_values(&[e.kind()]).inc();
            info!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "llm failed; calling again");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut heartbeat => unreachable!("heartbeat never ends"),
                _ = hand_back.cancelled() => {
                    self.hand_back(m, msg, lease).await;
                    return None;
                }
            }
        }
    }

    /// Publishes the answer as the model writes it: the whole text so far, at most once a
    /// `stream_flush` (one conditional write, refused once the user asked to stop); while no new
    /// text comes, reads the stop mark every [`STOP_CHECK`]. Ends only when the call must: a
    /// stop, a lost lease, an answer past `max_answer_bytes`.
    async fn publish(&self, lease: &Lease, mut rx: tokio::sync::watch::Receiver<String>, wrote: &AtomicBool) -> Called {
        let flush = self.config.stream_flush;
        let mut published = 0;
        let mut last = Instant::now().checked_sub(flush).unwrap_or_else(Instant::now);
        loop {
            // New text, or the stop check's period; the sender outlives this future.
            let _ = tokio::time::timeout(STOP_CHECK, rx.changed()).await;
            tokio::time::sleep(flush.saturating_sub(last.elapsed())).await;
            let text = rx.borrow_and_update().clone();
            if text.len() > self.config.max_answer_bytes {
                return Called::Full(text);
            }
            let writing = text.len() > published;
            let seen = if writing {
                self.store.write_partial(lease, &text).await
            } else {
                self.store.get_message(&lease.message_id).await.map(|m| match m {
                    Some(m) if m.stop_requested => Partial::Stop,
                    Some(_) => Partial::Written,
                    None => Partial::Lost,
                })
            };
            last = Instant::now();
            match seen {
                Ok(Partial::Written) if writing => {
                    published = text.len();
                    wrote.store(true, Ordering::Relaxed);
                }
                Ok(Partial::Written) => {}
                Ok(Partial::Stop) => {
                    info!(chars = text.chars().count(), "stopped by the user; ending the model call");
                    return Called::Stopped(text);
                }
                Ok(Partial::Lost) => return Called::Lost,
                Err(e) => warn!(error = format!("{e:#}"), "publishing the partial answer failed"),
            }
        }
    }
}
