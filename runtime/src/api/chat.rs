//! Conversations, messages and the per-message event stream.

use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::AuthUser;
use super::{ratelimit, AppJson, AppState, Limits};
use crate::error::AppError;
use crate::model::{
    day_of, new_id, now_ms, secs_to_next_day, sha256_hex, Conversation, Message, Profile, QueueBody, Status,
};
use crate::store::{IdempotencyKey, PostContext, Recorded, Requeue, SpendReads, Stop, MAX_PAGE};

/// `409 consent_required` until the user has answered the consent screen (`PUT /v1/me`, or
/// `keep_history` at sign-up): nothing is stored for them before they chose.
fn consented(profile: Option<&Profile>) -> Result<&Profile, AppError> {
    profile.filter(|p| p.consented_at.is_some()).ok_or_else(|| {
        AppError::user(
            StatusCode::CONFLICT,
            "consent_required",
            "answer the consent screen first: PUT /v1/me with keep_history true or false",
        )
    })
}

/// What a user's limit counts: messages (and retries), or new conversations; the same rate,
/// counted apart.
#[derive(Clone, Copy)]
pub(super) enum Counted {
    Messages,
    Conversations,
}

/// Takes one from the user's limit of `what`: first this process's bucket, then the count
/// kept in the store that every API task shares.
pub(super) async fn limit(state: &AppState, what: Counted, user: &AuthUser) -> Result<(), AppError> {
    let (bucket, kind): (&ratelimit::RateLimiter, _) = match what {
        Counted::Messages => (&state.rate, "messages"),
        Counted::Conversations => (&state.conversation_rate, "conversations"),
    };
    bucket.check(&user.id, Instant::now()).map_err(|wait| {
        state.metrics.rate_limited.inc();
        AppError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
    })?;
    super::shared_limit(state, kind, &user.id, state.limits.messages_per_minute, state.limits.burst).await
}

pub async fn create_conversation(State(state): State<AppState>, user: AuthUser) -> Result<Response, AppError> {
    limit(&state, Counted::Conversations, &user).await?;
    consented(state.store.get_profile(&user.id).await?.as_ref())?;
    let c = Conversation { id: new_id(), user_id: user.id, created_at: now_ms(), title: None };
    state.store.create_conversation(&c).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": c.id, "created_at": c.created_at, "title": null}))).into_response())
}

/// `?limit=N&before=ID`: a page of a list, newest first; `before` is the `next_before` of the
/// page before.
#[derive(Deserialize)]
pub struct Page {
    pub limit: Option<usize>,
    pub before: Option<String>,
}

impl Page {
    /// The page size (default `default`, at most [`MAX_PAGE`]) and the cursor, checked.
    fn parse(&self, default: usize) -> Result<(usize, Option<&str>), AppError> {
        let limit = self.limit.unwrap_or(default);
        if limit == 0 || limit > MAX_PAGE {
            return Err(AppError::invalid("invalid_limit", format!("limit is 1 to {MAX_PAGE}")));
        }
        match self.before.as_deref() {
            Some(b) if !well_formed(b) => Err(AppError::invalid("invalid_cursor", "before is an id of this list")),
            before => Ok((limit, before)),
        }
    }
}

pub async fn list_conversations(
    State(state): State<AppState>,
    user: AuthUser,
    Query(page): Query<Page>,
) -> Result<Response, AppError> {
    let (limit, before) = page.parse(50)?;
    let list = state.store.list_conversations(&user.id, before, limit).await?;
    let next = (list.len() == limit).then(|| list.last().map(|c| c.id.clone())).flatten();
    Ok(Json(json!({"conversations": list, "next_before": next})).into_response())
}

/// Deletes what was just delivered of a user who keeps no history: a message in its final
/// state. A failure leaves it to the purge (`Limits::unkept_retention`).
pub(super) async fn forget_delivered(state: &AppState, messages: &[Message]) {
    for m in messages.iter().filter(|m| m.ephemeral() && m.status.is_terminal()) {
        if let Err(e) = state.store.delete_message(m).await {
            tracing::warn!(message_id = %m.id, error = %e, "deleting a delivered message failed; the purge will");
        }
    }
}

/// Whether a path id can be one of ours (a UUID), checked before any store call: an id of
/// another shape is unknown, never a store error (DynamoDB refuses keys over 2048 bytes).
pub(super) fn well_formed(id: &str) -> bool {
    id.len() == 36 && uuid::Uuid::try_parse(id).is_ok()
}

/// The user's conversation `id`; not found when it is another user's, as when there is none.
pub(super) async fn owned_conversation(state: &AppState, user: &AuthUser, id: &str) -> Result<Conversation, AppError> {
    let found = if well_formed(id) { state.store.get_conversation(id).await? } else { None };
    found.filter(|c| c.user_id == user.id).ok_or_else(|| AppError::not_found("conversation"))
}

/// The user's message `id`; not found when it is another user's, as when there is none.
pub(super) async fn owned_message(state: &AppState, user: &AuthUser, id: &str) -> Result<Message, AppError> {
    let found = if well_formed(id) { state.store.get_message(id).await? } else { None };
    found.filter(|m| m.user_id == user.id).ok_or_else(|| AppError::not_found("message"))
}

/// Most bytes of messages one page of a conversation holds (their text, JSON aside): a page of
/// 200 long messages would otherwise hold tens of megabytes, several times over, per request.
const PAGE_BYTES: usize = 1 << 20;
/// Messages read from the store at a time for a page: what one read holds at most.
const PAGE_READ: usize = 50;

/// A message's share of [`PAGE_BYTES`].
fn size_of(m: &Message) -> usize {
    m.content.len() + m.answer.as_ref().map_or(0, String::len) + m.error.as_ref().map_or(0, String::len) + 200
}

/// The conversation with a page of its messages: the newest `limit` (default 100) older than
/// `before`, oldest first, as many as fit in [`PAGE_BYTES`] (at least one); `next_before` pages
/// back. Read [`PAGE_READ`] at a time, newest first, so memory stays bounded whatever `limit`.
pub async fn get_conversation(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, AppError> {
    let (limit, before) = page.parse(100)?;
    let c = owned_conversation(&state, &user, &id).await?;
    let mut newest_first: Vec<Message> = Vec::new();
    let (mut bytes, mut cursor, mut more) = (0, before.map(str::to_string), true);
    'read: while newest_first.len() < limit {
        let want = (limit - newest_first.len()).min(PAGE_READ);
        let chunk = state.store.list_messages(&c.id, cursor.as_deref(), want).await?;
        more = chunk.len() == want;
        for m in chunk.into_iter().rev() {
            if !newest_first.is_empty() && bytes + size_of(&m) > PAGE_BYTES {
                more = true;
                break 'read;
            }
            bytes += size_of(&m);
            cursor = Some(m.id.clone());
            newest_first.push(m);
        }
        if !more {
            break;
        }
    }
    newest_first.reverse();
    let messages = newest_first;
    let next = more.then(|| messages.first().map(|m| m.id.clone())).flatten();
    #[derive(serde::Serialize)]
    struct Body<'a> {
        id: &'a str,
        created_at: i64,
        title: Option<&'a str>,
        messages: &'a [Message],
        next_before: Option<String>,
    }
    // Serialised straight from the messages: no second copy as a JSON value.
    let body = Json(Body {
        id: &c.id,
        created_at: c.created_at,
        title: c.title.as_deref(),
        messages: &messages,
        next_before: next,
    })
    .into_response();
    forget_delivered(&state, &messages).await;
    Ok(body)
}

pub async fn get_message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let m = owned_message(&state, &user, &id).await?;
    forget_delivered(&state, std::slice::from_ref(&m)).await;
    Ok(Json(m).into_response())
}

/// `POST /v1/messages/{id}/regenerate`: another answer to the conversation's last message,
/// which replaces the one it has (one answer per message, stored once: the history that later
/// turns send is the one the user sees). 409 `not_last` for an earlier message, `not_answered`
/// for one that has no answer (or is being answered).
pub async fn regenerate_message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let m = owned_message(&state, &user, &id).await?;
    if m.status == Status::Answered {
        let newest = state.store.list_messages(&m.conversation_id, None, 1).await?;
        if newest.last().is_some_and(|n| n.id != m.id) {
            let why = "only the conversation's last answer can be generated again";
            return Err(AppError::user(StatusCode::CONFLICT, "not_last", why));
        }
    }
    requeue(&state, &user, &m, Requeue::Answered).await
}

/// `POST /v1/messages/{id}/stop`: stops a message not answered yet. One still queued is
/// answered at once, stopped and empty (200); one being answered is marked, and its worker ends
/// the model call at its next look, within a second, keeping what was written (202, then the
/// event stream's `answered` with `stopped: true`). 409 `not_in_flight` once answered or failed.
pub async fn stop_message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let m = owned_message(&state, &user, &id).await?;
    match state.store.request_stop(&m.id, now_ms()).await? {
        Stop::Stopped => {
            // Nothing will answer it: its in-flight slot is free (the worker's claim finds it
            // answered and only deletes the delivery).
            give_back(&state, &user.id, state.limits.user_in_flight > 0).await;
            Ok(Json(json!({"id": m.id, "status": "answered", "stopped": true})).into_response())
        }
        Stop::Stopping => {
            Ok((StatusCode::ACCEPTED, Json(json!({"id": m.id, "status": "processing", "stopping": true})))
                .into_response())
        }
        Stop::NotInFlight => {
            Err(AppError::user(StatusCode::CONFLICT, "not_in_flight", "the message is answered or failed already"))
        }
    }
}

/// `POST /v1/messages/{id}/retry`: the user asks again for a failed message. The same
/// message goes back to the queue (one write with its outbox row), so it is answered once,
/// whatever else delivers it (a redrive of its dead-letter copy finds it queued or answered).
pub async fn retry_message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let m = owned_message(&state, &user, &id).await?;
    requeue(&state, &user, &m, Requeue::Failed).await
}

/// The user's message back to the queue if it is in the state `from` names (409 `not_failed`
/// or `not_answered` otherwise), checked as a post is: the rate, the consent (it may have been
/// withdrawn), the day's budgets, the messages in flight.
async fn requeue(state: &AppState, user: &AuthUser, m: &Message, from: Requeue) -> Result<Response, AppError> {
    let (wanted, code) = match from {
        Requeue::Failed => (Status::Failed, "not_failed"),
        Requeue::Answered => (Status::Answered, "not_answered"),
    };
    if m.status != wanted {
        return Err(AppError::user(StatusCode::CONFLICT, code, format!("the message is {}", m.status.as_str())));
    }
    limit(state, Counted::Messages, user).await?;
    admit(state)?;
    let now = now_ms();
    let ctx = state.store.post_context(&user.id, &m.conversation_id, spend_reads(&state.limits, now)).await?;
    consented(ctx.profile.as_ref())?;
    within_budget(&state.limits, &ctx, now)?;
    let slot = take_slot(state, &user.id).await?;
    let requeued = state.store.requeue_message(&m.id, now, from).await;
    if !matches!(requeued, Ok(true)) {
        give_back(state, &user.id, slot).await;
    }
    if !requeued? {
        return Err(AppError::user(
            StatusCode::CONFLICT,
            code,
            format!("the message is no longer {}", wanted.as_str()),
        ));
    }
    enqueue(state, &m.id).await;
    Ok(accepted(&m.id, false))
}

/// Sends an accepted message to the queue and clears its outbox row; on failure the relay
/// sends it later. The embedded store has already queued it, in the message's own write.
async fn enqueue(state: &AppState, id: &str) {
    if state.store.enqueues_on_record() {
        state.metrics.queue_sent.inc();
        return;
    }
    match state.queue.send(&QueueBody::encode(id)).await {
        Ok(()) => {
            state.metrics.queue_sent.inc();
            if let Err(e) = state.store.outbox_remove(id).await {
                tracing::warn!(message_id = %id, error = %e, "outbox clear failed; relay will resend");
            }
        }
        Err(e) => {
            state.metrics.queue_send_errors.inc();
            tracing::warn!(message_id = %id, error = format!("{e:#}"), "enqueue failed; left to the outbox relay");
            state.relay_wake.notify_one();
        }
    }
}

/// Refuses a post while the backlog is at its bound ([`Limits::max_backlog`]): under a flood
/// the API then accepts at the rate the worker answers, and a refused post costs no write.
/// Without a valid count (none yet, or counting fails) nothing is refused.
fn admit(state: &AppState) -> Result<(), AppError> {
    let bound = state.limits.max_backlog;
    let waiting = match state.backlog.waiting(now_ms()) {
        Some(w) if bound > 0 && w >= bound => w,
        _ => return Ok(()),
    };
    state.metrics.messages_shed.inc();
    Err(AppError::Later {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "busy",
        message: format!("{waiting} messages are waiting to be answered; try again shortly"),
        retry_after_secs: 2,
    })
}

/// Takes one of the user's in-flight slots ([`Limits::user_in_flight`]): true when one was
/// taken (and must be given back should the message not be recorded), false when there is no
/// cap; 429 `too_many_in_flight` when all are taken.
async fn take_slot(state: &AppState, user_id: &str) -> Result<bool, AppError> {
    let cap = state.limits.user_in_flight;
    if cap == 0 {
        return Ok(false);
    }
    if state.store.take_slot(user_id, cap, now_ms()).await? {
        return Ok(true);
    }
    state.metrics.rate_limited.inc();
    Err(AppError::Later {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "too_many_in_flight",
        message: format!("{cap} of your messages are waiting to be answered; post again when one is"),
        retry_after_secs: 2,
    })
}

/// Gives back a slot taken for a message that was not recorded.
async fn give_back(state: &AppState, user_id: &str, taken: bool) {
    if taken {
        if let Err(e) = state.store.free_slot(user_id, now_ms()).await {
            tracing::warn!(error = %e, "giving back an in-flight slot failed; it heals in minutes");
        }
    }
}

/// The day's spend counters a post reads: those a budget is on for.
fn spend_reads(limits: &Limits, now: i64) -> SpendReads {
    SpendReads { day: day_of(now), user: limits.user_daily_tokens > 0, all: limits.all_daily_tokens > 0 }
}

/// Refuses a post when the user's or everyone's model tokens of the day are spent.
fn within_budget(limits: &Limits, ctx: &PostContext, now: i64) -> Result<(), AppError> {
    let retry_after_secs = secs_to_next_day(now);
    if limits.user_daily_tokens > 0 && ctx.user_tokens_today >= limits.user_daily_tokens {
        return Err(AppError::Later {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "daily_budget_spent",
            message: format!(
                "your {} model tokens of today are spent; they renew at 00:00 UTC",
                limits.user_daily_tokens
            ),
            retry_after_secs,
        });
    }
    if limits.all_daily_tokens > 0 && ctx.all_tokens_today >= limits.all_daily_tokens {
        return Err(AppError::Later {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "service_budget_spent",
            message: "the service's model budget of today is spent; it renews at 00:00 UTC".into(),
            retry_after_secs,
        });
    }
    Ok(())
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
    limit(&state, Counted::Messages, &user).await?;
    admit(&state)?;
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
    if !well_formed(&conversation_id) {
        return Err(AppError::not_found("conversation"));
    }
    let now = now_ms();
    // The conversation, the consent, and the day's spend, in one read.
    let ctx = state.store.post_context(&user.id, &conversation_id, spend_reads(&state.limits, now)).await?;
    if ctx.conversation.as_ref().is_none_or(|c| c.user_id != user.id) {
        return Err(AppError::not_found("conversation"));
    }
    let keep_history = consented(ctx.profile.as_ref())?.keep_history;
    within_budget(&state.limits, &ctx, now)?;
    let m = Message {
        id: new_id(),
        conversation_id,
        user_id: user.id,
        content,
        status: Status::Queued,
        answer: None,
        stopped: false,
        stop_requested: false,
        error: None,
        created_at: now,
        updated_at: now,
        purge_at: (!keep_history).then(|| now + state.limits.unkept_retention.as_millis() as i64),
        idem_scope: key.as_ref().map(|k| k.scope.clone()),
    };
    let slot = take_slot(&state, &m.user_id).await?;
    let recorded = state.store.record_message(&m, key.as_ref()).await;
    if !matches!(recorded, Ok(Recorded::New)) {
        give_back(&state, &m.user_id, slot).await;
    }
    match recorded? {
        // Two first uses of one key at once: the other one was written first.
        Recorded::Existing { message_id, fingerprint } => match &key {
            Some(k) => replay(k, &message_id, &fingerprint),
            None => Err(anyhow::anyhow!("the store reported a key for a request without one").into()),
        },
        Recorded::New => {
            state.metrics.messages_accepted.inc();
            state.backlog.accepted();
            tracing::info!(message_id = %m.id, "message accepted");
            enqueue(&state, &m.id).await;
            if keep_history {
                super::conversations::name_from_first(&state, ctx.conversation.as_ref(), &m.content).await;
            }
            Ok(accepted(&m.id, false))
        }
    }
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
