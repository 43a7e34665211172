//! A conversation's title (from its first message, or renamed) and its deletion.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::AuthUser;
use super::chat::{limit, owned_conversation, well_formed, Counted};
use super::{AppJson, AppState};
use crate::error::AppError;
use crate::model::{title_from, Conversation, TITLE_CHARS};

/// An untitled conversation takes its title from the message just accepted (its first kept
/// one). Only for a user who keeps history: a title is the message's words. A failure costs
/// only the title.
pub(super) async fn name_from_first(state: &AppState, conversation: Option<&Conversation>, content: &str) {
    let (Some(c), Some(title)) = (conversation.filter(|c| c.title.is_none()), title_from(content)) else { return };
    if let Err(e) = state.store.set_title(c, &title, true).await {
        tracing::warn!(conversation_id = %c.id, error = %e, "naming a conversation failed");
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    title: String,
}

/// `PATCH /v1/conversations/{id}`: renames it (`{"title": …}`, 1 to 100 characters, no
/// control characters; a user who keeps no history can name theirs too: the title is theirs).
pub async fn rename(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    AppJson(body): AppJson<Rename>,
) -> Result<Response, AppError> {
    limit(&state, Counted::Conversations, &user).await?;
    let title = body.title.trim();
    if title.is_empty() || title.chars().count() > TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "invalid_title",
            format!("title is 1 to {TITLE_CHARS} characters, without control characters"),
        ));
    }
    let c = owned_conversation(&state, &user, &id).await?;
    if !state.store.set_title(&c, title, false).await? {
        return Err(AppError::not_found("conversation"));
    }
    Ok(Json(json!({"id": c.id, "created_at": c.created_at, "title": title})).into_response())
}

/// `DELETE /v1/conversations/{id}`: the conversation and every message in it; `204`, also when
/// it was already gone for this user (a repeated delete).
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    limit(&state, Counted::Conversations, &user).await?;
    let found = if well_formed(&id) { state.store.get_conversation(&id).await? } else { None };
    if let Some(c) = found.filter(|c| c.user_id == user.id) {
        state.store.delete_conversation(&c).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
