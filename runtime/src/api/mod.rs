//! The HTTP API. `app(state)` builds the router; tests drive it with `oneshot`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::AppError;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::Store;

pub mod auth;
pub mod chat;
pub mod me;
pub mod ratelimit;
pub mod web;

/// Limits on what a client may send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Longest prompt, in characters (422 above).
    pub max_prompt_chars: usize,
    /// Messages a user may post per minute, sustained.
    pub messages_per_minute: u32,
    /// Messages a user may post at once before the per-minute rate applies.
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_body_bytes: 64 * 1024, max_prompt_chars: 8000, messages_per_minute: 60, burst: 20 }
    }
}

/// Cost of argon2id password hashing (OWASP defaults: 19 MiB, 2 passes).
#[derive(Debug, Clone, Copy)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for PasswordCost {
    fn default() -> PasswordCost {
        PasswordCost { memory_kib: 19 * 1024, iterations: 2 }
    }
}

/// Everything a handler needs. Cheap to clone: all shared.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub password_cost: PasswordCost,
    /// Per-user token buckets for posting messages (per API process).
    pub rate: Arc<ratelimit::RateLimiter>,
    /// Poll period of the SSE stream while a message is pending.
    pub events_poll: Duration,
    /// Changed message ids, when the worker shares this process (see `store::notify`):
    /// wakes event streams before their next poll.
    pub updates: Option<tokio::sync::broadcast::Sender<Arc<str>>>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, metrics: Arc<Metrics>, limits: Limits) -> AppState {
        let rate = Arc::new(ratelimit::RateLimiter::new(limits.messages_per_minute, limits.burst));
        AppState {
            store,
            queue,
            metrics,
            limits,
            password_cost: PasswordCost::default(),
            rate,
            events_poll: Duration::from_millis(250),
            updates: None,
        }
    }
}

pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/auth/signup", post(auth::signup))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/auth/tokens", post(auth::create_token))
        .route("/v1/conversations", post(chat::create_conversation).get(chat::list_conversations))
        .route("/v1/conversations/{id}", get(chat::get_conversation))
        .route("/v1/conversations/{id}/messages", post(chat::post_message))
        .route("/v1/messages/{id}", get(chat::get_message))
        .route("/v1/messages/{id}/events", get(chat::events))
        .route("/v1/me", get(me::get_me).put(me::put_me).delete(me::delete_me))
        .route("/v1/me/export", get(me::export))
        // The web page: its screens and embedded assets.
        .merge(web::routes());
    api.fallback(|| async { AppError::not_found("route") })
        .layer(middleware::from_fn(same_origin_writes))
        .layer(middleware::from_fn(web::security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
}

/// The worker's own listener: health and metrics only.
pub fn ops_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Request id, metrics by route template, one JSON log line per request.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    state.metrics.http_requests.with_label_values(&[&route, &method, &status.to_string()]).inc();
    state.metrics.http_duration.with_label_values(&[&route, &method]).observe(elapsed);
    span.in_scope(|| {
        // Probes and scrapes come every few seconds: only at debug.
        if matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") {
            tracing::debug!(status, duration_ms = elapsed * 1000.0, "request");
        } else {
            tracing::info!(status, duration_ms = elapsed * 1000.0, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Refuses state-changing requests that a browser marks as coming from another origin
/// (`Origin` not matching `Host`), whatever their credentials: this also stops login CSRF.
/// Clients that are not browsers send no `Origin` and are not affected.
async fn same_origin_writes(req: Request, next: Next) -> Response {
    let safe =
        matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS);
    if !safe {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
            let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, h)| h).unwrap_or("");
            if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
                return AppError::user(StatusCode::FORBIDDEN, "cross_origin", "cross-origin request refused")
                    .into_response();
            }
        }
    }
    next.run(req).await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let check = async {
        state.store.outbox_len().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        state.queue.approximate_len().await?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(())) => (StatusCode::OK, Json(serde_json::json!({"ready": true}))).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = format!("{e:#}"), "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"ready": false}))).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"ready": false}))).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../openapi.json")).into_response()
}

/// `Json` whose rejections are our JSON errors (413 too large, 415, 400/422 invalid).
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(AppJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> AppError {
    let status = rej.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_json",
    };
    let message =
        if status == StatusCode::PAYLOAD_TOO_LARGE { "request body is too large".to_string() } else { rej.body_text() };
    AppError::user(status, code, message)
}
