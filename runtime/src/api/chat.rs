//! Conversations, messages and the per-message event stream.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::json;

use super::auth::AuthUser;
use super::{AppJson, AppState};
use crate::error::AppError;
use crate::model::{new_id, now_ms, sha256_hex, Conversation, Message, QueueBody, Status};
use crate::store::{IdempotencyKey, Recorded};

pub async fn create_conversation(State(state): State<AppState>, user: AuthUser) -> Result<Response, AppError> {
    let c = Conversation { id: new_id(), user_id: user.id, created_at: now_ms() };
    state.store.create_conversation(&c).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": c.id, "created_at": c.created_at}))).into_response())
}

pub async fn list_conversations(State(state): State<AppState>, user: AuthUser) -> Result<Response, AppError> {
    let list = state.store.list_conversations(&user.id).await?;
    Ok(Json(json!({"conversations": list})).into_response())
}

/// Whether a path id can be one of ours (a UUID), checked before any store call: an id of
/// another shape is unknown, never a store error (DynamoDB refuses keys over 2048 bytes).
fn well_formed(id: &str) -> bool {
    id.len() == 36 && uuid::Uuid::try_parse(id).is_ok()
}

async fn owned_conversation(state: &AppState, user: &AuthUser, id: &str) -> Result<Conversation, AppError> {
    if !well_formed(id) {
        return Err(AppError::not_found("conversation"));
    }
    match state.store.get_conversation(id).await? {
        Some(c) if c.user_id == user.id => Ok(c),
        _ => Err(AppError::not_found("conversation")),
    }
}

async fn owned_message(state: &AppState, user: &AuthUser, id: &str) -> Result<Message, AppError> {
    if !well_formed(id) {
        return Err(AppError::not_found("message"));
    }
    match state.store.get_message(id).await? {
        Some(m) if m.user_id == user.id => Ok(m),
        _ => Err(AppError::not_found("message")),
    }
}

pub async fn get_conversation(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let c = owned_conversation(&state, &user, &id).await?;
    let messages = state.store.list_messages(&c.id).await?;
    Ok(Json(json!({"id": c.id, "created_at": c.created_at, "messages": messages})).into_response())
}

pub async fn get_message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    Ok(Json(owned_message(&state, &user, &id).await?).into_response())
}

#[derive(Deserialize)]
pub struct NewMessage {
    pub content: String,
}

fn accepted(id: &str, replayed: bool) -> Response {
    let mut r = (
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "queued", "events_url": format!("/v1/messages/{id}/events")})),
    )
        .into_response();
    if replayed {
        r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// The answer to a key used before: the first request's, or 422 when it had another body.
fn replay(key: &IdempotencyKey, message_id: &str, fingerprint: &str) -> Result<Response, AppError> {
    if key.fingerprint == fingerprint {
        Ok(accepted(message_id, true))
    } else {
        Err(AppError::invalid("idempotency_key_reused", "this Idempotency-Key was used with a different request"))
    }
}

/// Records the message with its outbox row (and idempotency key) in one write, then
/// enqueues it. If the enqueue fails or the process dies, the relay sends it later.
pub async fn post_message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(conversation_id): Path<String>,
    headers: HeaderMap,
    AppJson(body): AppJson<NewMessage>,
) -> Result<Response, AppError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
                AppError::user(
                    StatusCode::BAD_REQUEST,
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 visible characters",
                )
            })?;
            Some(IdempotencyKey {
                scope: sha256_hex(format!("{}\n{}", user.id, k).as_bytes()),
                fingerprint: sha256_hex(format!("{}\n{}", conversation_id, body.content).as_bytes()),
            })
        }
    };
    // A retry of a request already accepted is answered from it, before the rate limit: the
    // client learns its message id even while it is being slowed down.
    if let Some(k) = &key {
        if let Some((message_id, fingerprint)) = state.store.idempotency_key(&k.scope).await? {
            return replay(k, &message_id, &fingerprint);
        }
    }
    if let Err(wait) = state.rate.check(&user.id, Instant::now()) {
        state.metrics.rate_limited.inc();
        return Err(AppError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 });
    }
    let content = body.content;
    if content.trim().is_empty() {
        return Err(AppError::invalid("empty_prompt", "content must not be empty"));
    }
    let chars = content.chars().count();
    if chars > state.limits.max_prompt_chars {
        return Err(AppError::invalid(
            "prompt_too_long",
            format!("content has {chars} characters; the limit is {}", state.limits.max_prompt_chars),
        ));
    }
    owned_conversation(&state, &user, &conversation_id).await?;
    let now = now_ms();
    let m = Message {
        id: new_id(),
        conversation_id,
        user_id: user.id,
        content,
        status: Status::Queued,
        answer: None,
        error: None,
        created_at: now,
        updated_at: now,
    };
    match state.store.record_message(&m, key.as_ref()).await? {
        // Two first uses of one key at once: the other one was written first.
        Recorded::Existing { message_id, fingerprint } => match &key {
            Some(k) => replay(k, &message_id, &fingerprint),
            None => Err(anyhow::anyhow!("the store reported a key for a request without one").into()),
        },
        Recorded::New => {
            state.metrics.messages_accepted.inc();
            tracing::info!(message_id = %m.id, "message accepted");
            match state.queue.send(&QueueBody::encode(&m.id)).await {
                Ok(()) => {
                    state.metrics.queue_sent.inc();
                    if let Err(e) = state.store.outbox_remove(&m.id).await {
                        tracing::warn!(message_id = %m.id, error = %e, "outbox clear failed; relay will resend");
                    }
                }
                Err(e) => {
                    state.metrics.queue_send_errors.inc();
                    tracing::warn!(message_id = %m.id, error = format!("{e:#}"), "enqueue failed; left to the outbox relay");
                }
            }
            Ok(accepted(&m.id, false))
        }
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

/// SSE: one event per status change (`queued`, `processing`, `answered`, `failed`), each
/// with the message as data; ends after `answered` or `failed`. A reconnecting client gets
/// the current status first, so it catches up from the store.
pub async fn events(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let first = owned_message(&state, &user, &id).await?;
    let poll = state.events_poll;
    let deadline = Instant::now() + Duration::from_secs(600);
    let token_hash = user.token_hash;
    // The token is checked again this often: a stream ends soon after a sign-out, revocation or
    // password change, at one store read per stream per period.
    let recheck = Duration::from_secs(5).max(poll);
    let s: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = Box::pin(stream::unfold(
        (Some(first), None::<Status>, false, state.updates.as_ref().map(|u| u.subscribe())),
        move |(pending, last, done, mut updates)| {
            let state = state.clone();
            let id = id.clone();
            let token_hash = token_hash.clone();
            async move {
                let mut checked = Instant::now();
                if done {
                    return None;
                }
                let mut next = pending;
                loop {
                    let m = match next.take() {
                        Some(m) => m,
                        None => {
                            if Instant::now() > deadline {
                                return None;
                            }
                            tokio::select! {
                                _ = wait_for_change(&mut updates, &id, poll) => {}
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
                    if Some(m.status) != last {
                        let data = json!({"id": m.id, "status": m.status, "answer": m.answer, "error": m.error});
                        let ev = Event::default().event(m.status.as_str()).data(data.to_string());
                        return Some((Ok(ev), (None, Some(m.status), m.status.is_terminal(), updates)));
                    }
                }
            }
        },
    ));
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

#[cfg(test)]
mod tests {
    use super::well_formed;

    #[test]
    fn only_uuids_reach_the_store() {
        assert!(well_formed(&crate::model::new_id()));
        assert!(well_formed("0190e4c4-0000-7000-8000-000000000000"));
        for bad in [
            "",
            "not-a-uuid",
            "0190e4c40000700080000000000000000000",
            &"x".repeat(3000),
            "0190e4c4-0000-7000-8000-00000000000%",
        ] {
            assert!(!well_formed(bad), "{bad:.40}");
        }
    }
}
