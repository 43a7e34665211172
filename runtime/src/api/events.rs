//! `GET /v1/messages/{id}/events`: a message's server-sent events, from the store. One event
//! per status change (`queued`, `processing`, `answered`, `failed`) with the message, and while
//! it is being answered a `delta` with each piece of the answer the worker has published. Every
//! event's id names the status and the text the client then has, so a client that reconnects
//! with `Last-Event-ID` (EventSource does so by itself) gets only what it missed.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::json;

use super::auth::AuthUser;
use super::chat::{forget_delivered, owned_message};
use super::AppState;
use crate::error::AppError;
use crate::model::{now_ms, sha256_hex, Message, Status};

/// One of the user's open event streams, counted against `Limits::streams_per_user` until
/// the stream is dropped (ended, or its client gone).
struct StreamSlot {
    streams: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    gauge: prometheus::IntGauge,
    user_id: String,
}

impl StreamSlot {
    fn take(state: &AppState, user_id: &str) -> Result<StreamSlot, AppError> {
        let mut open = state.streams.lock().unwrap_or_else(|p| p.into_inner());
        // All users' streams together: each holds a connection, a task and a poll of the store.
        let total: usize = open.values().sum();
        if total >= state.limits.max_streams {
            return Err(AppError::Busy { retry_after_secs: 5 });
        }
        let n = open.entry(user_id.to_string()).or_insert(0);
        if *n >= state.limits.streams_per_user {
            state.metrics.rate_limited.inc();
            return Err(AppError::Later {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "too_many_streams",
                message: format!("at most {} event streams at once; close one", state.limits.streams_per_user),
                retry_after_secs: 1,
            });
        }
        *n += 1;
        state.metrics.streams_open.set((total + 1) as i64);
        Ok(StreamSlot {
            streams: state.streams.clone(),
            gauge: state.metrics.streams_open.clone(),
            user_id: user_id.to_string(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.user_id) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user_id);
            }
        }
        self.gauge.dec();
    }
}

/// Sleeps `poll`, or less when this message is announced as changed.
async fn wait_for_change(
    updates: &mut Option<tokio::sync::broadcast::Receiver<std::sync::Arc<str>>>,
    id: &str,
    poll: Duration,
) {
    let Some(rx) = updates.as_mut() else {
        tokio::time::sleep(poll).await;
        return;
    };
    let announced = async {
        loop {
            match rx.recv().await {
                Ok(changed) if &*changed == id => return,
                Ok(_) => {}
                // Missed some announcements: read the store now.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    let _ = tokio::time::timeout(poll, announced).await;
}

/// How long a stream waits before it reads its message again: `poll` (250 ms) for the first
/// 2 s after the stream opened or sent an event (a status change, or new text), when the next
/// change is likely soon (queued → processing, more words), then 4 × `poll` while the model
/// thinks. Where the worker runs in another process this bounds a stream's reads at 4 a second
/// while an answer is being written and 1 a second otherwise, plus the token's check every 5 s;
/// in `serve` the worker's announcements wake the stream at once.
fn poll_after(poll: Duration, changed: Instant) -> Duration {
    if changed.elapsed() < Duration::from_secs(2) {
        poll
    } else {
        poll * 4
    }
}

/// What a client has of a message: its status, and its answer as far as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: Status,
    text: String,
}

/// Hex characters of the answer's digest an event id carries: enough that another text of the
/// same length is never taken for the one the client has.
const DIGEST_CHARS: usize = 16;

/// An event's id: `{status}.{bytes of the answer sent}.{digest of those bytes}`.
fn event_id(seen: &Seen) -> String {
    format!("{}.{}.{}", seen.status.as_str(), seen.text.len(), &sha256_hex(seen.text.as_bytes())[..DIGEST_CHARS])
}

/// What `Last-Event-ID` says the client has, when that still holds for `m`: the same status,
/// not final, and an answer that begins with the very text it was sent. Otherwise the stream
/// starts over from the message as it is.
fn resumed(last: &str, m: &Message) -> Option<Seen> {
    let mut parts = last.trim().splitn(3, '.');
    let status = Status::parse(parts.next()?)?;
    let len: usize = parts.next()?.parse().ok()?;
    let digest = parts.next()?;
    if status != m.status || status.is_terminal() {
        return None;
    }
    let text = m.answer.as_deref().unwrap_or("").get(..len)?;
    (sha256_hex(text.as_bytes())[..DIGEST_CHARS] == *digest).then(|| Seen { status, text: text.to_string() })
}

/// The event that takes a client from `seen` to `m`, and what it has then: a `delta` when the
/// answer being written grew, the whole message when the status changed or the answer is not a
/// continuation of what was sent (a new attempt writes from the start); none when nothing changed.
fn next_event(seen: Option<&Seen>, m: &Message) -> Option<(Event, Seen)> {
    let answer = m.answer.as_deref().unwrap_or("");
    let delta = match seen {
        Some(s) if s.status == m.status && s.text == answer => return None,
        Some(s) if s.status == Status::Processing && m.status == Status::Processing => answer.strip_prefix(&*s.text),
        _ => None,
    };
    let now = Seen { status: m.status, text: answer.to_string() };
    let event = match delta {
        Some(text) => Event::default().event("delta").data(json!({"id": m.id, "text": text}).to_string()),
        None => {
            let data =
                json!({"id": m.id, "status": m.status, "answer": m.answer, "error": m.error, "stopped": m.stopped});
            Event::default().event(m.status.as_str()).data(data.to_string())
        }
    };
    Some((event.id(event_id(&now)), now))
}

/// A stream's state between its events.
struct Follow {
    /// A message read and not yet compared (the first read).
    pending: Option<Message>,
    seen: Option<Seen>,
    done: bool,
    updates: Option<tokio::sync::broadcast::Receiver<std::sync::Arc<str>>>,
    _open: StreamSlot,
}

/// `GET /v1/messages/{id}/events` (see the module's comment). Ends after `answered` or `failed`.
pub async fn events(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let first = owned_message(&state, &user, &id).await?;
    let open = StreamSlot::take(&state, &user.id)?;
    let seen = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|last| resumed(last, &first));
    let poll = state.events_poll;
    let deadline = Instant::now() + Duration::from_secs(600);
    let token_hash = user.token_hash;
    // The token is checked again this often: a stream ends soon after a sign-out, revocation or
    // password change, at one store read per stream per period.
    let recheck = Duration::from_secs(5).max(poll);
    let updates = state.updates.as_ref().map(|u| u.subscribe());
    let start = Follow { pending: Some(first), seen, done: false, updates, _open: open };
    let s: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(stream::unfold(start, move |mut f| {
            let state = state.clone();
            let id = id.clone();
            let token_hash = token_hash.clone();
            async move {
                // The stream opened, or sent an event, just now.
                let changed = Instant::now();
                let mut checked = changed;
                if f.done {
                    return None;
                }
                loop {
                    let m = match f.pending.take() {
                        Some(m) => m,
                        None => {
                            if Instant::now() > deadline {
                                return None;
                            }
                            tokio::select! {
                                _ = wait_for_change(&mut f.updates, &id, poll_after(poll, changed)) => {}
                                _ = state.shutdown.cancelled() => return None,
                            }
                            if checked.elapsed() >= recheck {
                                checked = Instant::now();
                                let valid = state.store.token_user(&token_hash, now_ms()).await;
                                if !matches!(valid, Ok(Some(_))) {
                                    return None; // signed out or revoked (a store error ends it too)
                                }
                            }
                            match state.store.get_message(&id).await {
                                Ok(Some(m)) => m,
                                Ok(None) => return None,
                                Err(e) => {
                                    tracing::warn!(message_id = %id, error = %e, "event stream read failed");
                                    continue;
                                }
                            }
                        }
                    };
                    if let Some((event, seen)) = next_event(f.seen.as_ref(), &m) {
                        if f.seen.as_ref().is_none_or(|s| s.status != m.status) {
                            forget_delivered(&state, std::slice::from_ref(&m)).await;
                        }
                        f.done = m.status.is_terminal();
                        f.seen = Some(seen);
                        return Some((Ok(event), f));
                    }
                }
            }
        }));
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
