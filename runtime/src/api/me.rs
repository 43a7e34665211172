//! The signed-in user's own data: profile and consent (`/v1/me`), a JSON export of
//! everything stored for them, and account deletion.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{self, AuthUser};
use super::{AppJson, AppState};
use crate::error::AppError;
use crate::model::{now_ms, Profile, User};
use crate::store::MAX_PAGE;

const MAX_DISPLAY_NAME_CHARS: usize = 80;

async fn current_user(state: &AppState, user: &AuthUser) -> Result<User, AppError> {
    state.store.user_by_id(&user.id).await?.ok_or_else(AppError::unauthorized)
}

fn me_json(u: &User, p: Option<&Profile>) -> Value {
    let p = p.cloned().unwrap_or_default();
    json!({
        "id": u.id,
        "email": u.email,
        "display_name": p.display_name,
        "keep_history": p.keep_history,
        "consented_at": p.consented_at,
        "consent_needed": p.consented_at.is_none(),
    })
}

/// `GET /v1/me`: who is signed in, the profile, and whether the consent screen is due.
pub async fn get_me(State(state): State<AppState>, user: AuthUser) -> Result<Response, AppError> {
    let u = current_user(&state, &user).await?;
    let p = state.store.get_profile(&u.id).await?;
    Ok(Json(me_json(&u, p.as_ref())).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    #[serde(default)]
    pub display_name: Option<String>,
    pub keep_history: bool,
}

/// `PUT /v1/me`: answers the consent screen (first time) or changes the profile later.
pub async fn put_me(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<ProfileUpdate>,
) -> Result<Response, AppError> {
    let u = current_user(&state, &user).await?;
    let name = body.display_name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    if let Some(n) = &name {
        if n.chars().count() > MAX_DISPLAY_NAME_CHARS || n.chars().any(char::is_control) {
            return Err(AppError::invalid(
                "invalid_display_name",
                format!("display name must be at most {MAX_DISPLAY_NAME_CHARS} characters, without control characters"),
            ));
        }
    }
    let before = state.store.get_profile(&u.id).await?;
    let p = Profile {
        display_name: name,
        keep_history: body.keep_history,
        consented_at: before.and_then(|b| b.consented_at).or(Some(now_ms())),
    };
    state.store.put_profile(&u.id, &p).await?;
    Ok(Json(me_json(&u, Some(&p))).into_response())
}

/// `GET /v1/me/export`: everything stored for the user, as a JSON download, streamed a page
/// at a time (memory stays bounded however much there is). Conversations newest first, each
/// with its messages newest first. A store error mid-way ends the download unfinished (the
/// client sees a truncated body, never a complete-looking wrong one).
pub async fn export(State(state): State<AppState>, user: AuthUser) -> Result<Response, AppError> {
    // Each export holds a page of messages while it streams: a few at once per process.
    let running = state.exports.clone().try_acquire_owned().map_err(|_| AppError::Busy { retry_after_secs: 5 })?;
    let u = current_user(&state, &user).await?;
    let profile = state.store.get_profile(&u.id).await?;
    let head = json!({"exported_at": now_ms(), "user": {"id": u.id, "email": u.email}, "profile": profile});
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        let _running = running;
        let mut head = head.to_string();
        head.pop(); // the closing brace: the conversations follow
        if tx.send(Ok(format!("{head},\"conversations\":[").into_bytes())).await.is_err() {
            return;
        }
        if let Err(e) = export_conversations(&state, &u.id, &tx).await {
            tracing::warn!(user_id = %u.id, error = %e, "export failed mid-way");
            let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
            return;
        }
        let _ = tx.send(Ok(b"]}".to_vec())).await;
    });
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"aira-export.json\""),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// The conversations of an export, a page of conversations and a page of messages at a time.
async fn export_conversations(
    state: &AppState,
    user_id: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) -> Result<(), crate::store::StoreError> {
    let send = |bytes: Vec<u8>| async move { tx.send(Ok(bytes)).await.is_ok() };
    let mut first_conversation = true;
    let mut before: Option<String> = None;
    loop {
        let page = state.store.list_conversations(user_id, before.as_deref(), MAX_PAGE).await?;
        for c in &page {
            let open = json!({"id": c.id, "created_at": c.created_at}).to_string();
            let sep = if first_conversation { "" } else { "," };
            first_conversation = false;
            if !send(format!("{sep}{},\"messages\":[", &open[..open.len() - 1]).into_bytes()).await {
                return Ok(()); // the client went away
            }
            let mut first_message = true;
            let mut before_message: Option<String> = None;
            loop {
                let messages = state.store.list_messages(&c.id, before_message.as_deref(), MAX_PAGE).await?;
                let mut chunk = Vec::new();
                for m in messages.iter().rev() {
                    if !first_message {
                        chunk.push(b',');
                    }
                    first_message = false;
                    serde_json::to_writer(&mut chunk, m).map_err(|e| crate::store::StoreError::Backend(e.into()))?;
                }
                if !send(chunk).await {
                    return Ok(());
                }
                if messages.len() < MAX_PAGE {
                    break;
                }
                before_message = messages.first().map(|m| m.id.clone());
            }
            if !send(b"]}".to_vec()).await {
                return Ok(());
            }
        }
        if page.len() < MAX_PAGE {
            return Ok(());
        }
        before = page.last().map(|c| c.id.clone());
    }
}

#[derive(Deserialize)]
pub struct Confirm {
    pub password: String,
}

/// `DELETE /v1/me {password}`: deletes the account and all its data, after checking the
/// password again (a stolen session alone cannot delete an account). Clears the cookies.
pub async fn delete_me(
    State(state): State<AppState>,
    user: AuthUser,
    client: auth::ClientAddr,
    AppJson(body): AppJson<Confirm>,
) -> Result<Response, AppError> {
    let u = current_user(&state, &user).await?;
    auth::confirm_password(&state, &client, &u, body.password).await?;
    delete_account(&state, u).await?;
    Ok(auth::cleared_cookies(StatusCode::NO_CONTENT.into_response()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// `PUT /v1/me/password {current_password, new_password}`: after checking the current password
/// (under the sign-in limits), sets the new one and revokes every other session and API token,
/// so a stolen session or token stops working; the one this request came with stays.
pub async fn put_password(
    State(state): State<AppState>,
    user: AuthUser,
    client: auth::ClientAddr,
    AppJson(body): AppJson<PasswordChange>,
) -> Result<Response, AppError> {
    let u = current_user(&state, &user).await?;
    auth::confirm_password(&state, &client, &u, body.current_password).await?;
    let hash = auth::new_password_hash(&state, &client, body.new_password).await?;
    state.store.set_password_hash(&u, &hash).await?;
    let revoked = auth::revoke_others(&state, &u.id, &user.token_hash).await?;
    tracing::info!(user_id = %u.id, revoked, "password changed");
    Ok(Json(json!({ "revoked_tokens": revoked })).into_response())
}

/// Deletes the account on a task of its own: a client that goes away does not stop a deletion
/// half-way (its handler would be dropped). The store marks the account first, so an
/// interrupted deletion refuses sign-ins, and the next sign-in attempt finishes it.
pub async fn delete_account(state: &AppState, u: User) -> Result<(), AppError> {
    let store = state.store.clone();
    let id = u.id.clone();
    tokio::spawn(async move { store.delete_user(&u).await })
        .await
        .map_err(|e| anyhow::anyhow!("account deletion task: {e}"))??;
    tracing::info!(user_id = %id, "account deleted");
    Ok(())
}
