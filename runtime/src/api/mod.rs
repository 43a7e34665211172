//! The HTTP API. `app(state)` builds the router; tests drive it with `oneshot`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::AppError;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::Store;

pub mod auth;
pub mod chat;
pub mod conversations;
pub mod events;
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
    /// Sign-ups, sign-ins, token creations and deletions per account (its email), sustained and
    /// at once: bounds password guessing against one account.
    pub auth_per_minute: u32,
    pub auth_burst: u32,
    /// The same attempts per client address, whatever the account: bounds scripted sign-ups and
    /// guessing across accounts.
    pub auth_address_per_minute: u32,
    pub auth_address_burst: u32,
    /// Model tokens (prompt and answer) a user may spend per UTC day; 0: no limit.
    pub user_daily_tokens: u64,
    /// Model tokens all users together may spend per UTC day; 0: no limit.
    pub all_daily_tokens: u64,
    /// Event streams one user may hold open on one API process.
    pub streams_per_user: usize,
    /// How long a message of a user who keeps no history may stay stored when its answer is
    /// never fetched (it is deleted as soon as it is).
    pub unkept_retention: Duration,
    /// Messages waiting in the queue (or being answered) above which a post is refused with
    /// 503 `busy`; 0: no bound. Checked against [`Shared::backlog`] while its count is fresh.
    pub max_backlog: u64,
    /// A user's messages waiting or being answered at once, above which a post is refused
    /// with 429 `too_many_in_flight`: one user cannot fill the worker's slots; 0: no bound.
    pub user_in_flight: u32,
    /// Event streams open on one API process, all users together (503 `busy` above).
    pub max_streams: usize,
    /// Exports running at once on one API process (503 `busy` above): each holds a page of
    /// messages in memory while it streams.
    pub max_exports: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 64 * 1024,
            max_prompt_chars: 8000,
            messages_per_minute: 60,
            burst: 20,
            auth_per_minute: 6,
            auth_burst: 10,
            auth_address_per_minute: 30,
            auth_address_burst: 60,
            user_daily_tokens: 200_000,
            all_daily_tokens: 0,
            streams_per_user: 10,
            unkept_retention: Duration::from_secs(24 * 3600),
            max_backlog: 0,
            user_in_flight: 0,
            max_streams: 2000,
            max_exports: 4,
        }
    }
}

/// The token buckets of the account routes (per API process).
pub struct AuthRate {
    pub per_account: ratelimit::RateLimiter,
    pub per_address: ratelimit::RateLimiter,
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

/// Everything a handler needs: one [`Shared`]. A clone is one reference count (each
/// request clones it several times: middleware, extractors), and a field set on a clone
/// (`state.queue = …`, in tests) copies the state for that clone alone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

#[derive(Clone)]
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub password_cost: PasswordCost,
    /// Per-user token buckets for posting messages (per API process).
    pub rate: Arc<ratelimit::RateLimiter>,
    /// Per-user token buckets for creating conversations, at the same rate (per API process).
    pub conversation_rate: Arc<ratelimit::RateLimiter>,
    /// Per-account and per-address buckets of sign-up, sign-in, token creation, deletion.
    pub auth_rate: Arc<AuthRate>,
    /// Behind the load balancer: the client address is the last `X-Forwarded-For` entry.
    pub trust_forwarded: bool,
    /// Cancelled when the process shuts down: event streams end (clients reconnect elsewhere),
    /// so the server drains at once instead of waiting for them.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Poll period of the SSE stream while a message is pending.
    pub events_poll: Duration,
    /// Wakes this process's outbox relay when an enqueue failed (see `relay`).
    pub relay_wake: Arc<tokio::sync::Notify>,
    /// Open event streams per user (this process), against `limits.streams_per_user`.
    pub streams: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// The queue's messages as last counted (`run::count_backlog`), plus the posts accepted
    /// since: what [`Limits::max_backlog`] is checked against.
    pub backlog: Arc<Backlog>,
    /// Exports running now, against [`Limits::max_exports`].
    pub exports: Arc<tokio::sync::Semaphore>,
    /// Changed message ids, when the worker shares this process (see `store::notify`):
    /// wakes event streams before their next poll.
    pub updates: Option<tokio::sync::broadcast::Sender<Arc<str>>>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, metrics: Arc<Metrics>, limits: Limits) -> AppState {
        let limits_exports = limits.max_exports.max(1);
        let rate = Arc::new(ratelimit::RateLimiter::new(limits.messages_per_minute, limits.burst));
        let conversation_rate = Arc::new(ratelimit::RateLimiter::new(limits.messages_per_minute, limits.burst));
        let auth_rate = Arc::new(AuthRate {
            per_account: ratelimit::RateLimiter::new(limits.auth_per_minute, limits.auth_burst),
            per_address: ratelimit::RateLimiter::new(limits.auth_address_per_minute, limits.auth_address_burst),
        });
        AppState(Arc::new(Shared {
            store,
            queue,
            metrics,
            limits,
            password_cost: PasswordCost::default(),
            rate,
            conversation_rate,
            auth_rate,
            trust_forwarded: false,
            shutdown: tokio_util::sync::CancellationToken::new(),
            events_poll: Duration::from_millis(250),
            updates: None,
            streams: Arc::default(),
            relay_wake: Arc::default(),
            backlog: Arc::default(),
            exports: Arc::new(tokio::sync::Semaphore::new(limits_exports)),
        }))
    }
}

impl AppState {
    /// Sets `aira_rate_limiter_entries` from each in-process limiter (each bounded by
    /// [`ratelimit::MAX_KEYS`]).
    pub fn report_limiters(&self) {
        let g = &self.metrics.limiter_entries;
        for (name, l) in [
            ("messages", &*self.rate),
            ("conversations", &*self.conversation_rate),
            ("auth_account", &self.auth_rate.per_account),
            ("auth_address", &self.auth_rate.per_address),
        ] {
            g.with_label_values(&[name]).set(l.entries() as i64);
        }
    }
}

/// The backlog the bound is checked against: the queue as last counted, plus the posts this
/// process accepted since. A count is valid for a while only: when counting fails, it goes
/// stale and refuses nothing, so a task whose count stopped never turns every post away.
#[derive(Debug, Default)]
pub struct Backlog {
    counted: std::sync::atomic::AtomicU64,
    since: std::sync::atomic::AtomicU64,
    /// Until when the count holds (ms since the epoch); 0: never counted.
    valid_until: std::sync::atomic::AtomicI64,
}

impl Backlog {
    /// A count of the queue taken at `now_ms` (the posts accepted before it are in it), valid
    /// for `valid_for`.
    pub fn counted(&self, n: u64, now_ms: i64, valid_for: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.counted.store(n, Relaxed);
        self.since.store(0, Relaxed);
        self.valid_until.store(now_ms + valid_for.as_millis() as i64, Relaxed);
    }

    pub fn accepted(&self) {
        self.since.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The messages waiting, while a count is valid.
    pub fn waiting(&self, now_ms: i64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        (now_ms <= self.valid_until.load(Relaxed)).then(|| self.counted.load(Relaxed) + self.since.load(Relaxed))
    }
}

/// A per-account limit that holds across API tasks: `per_minute` sustained, `burst` at once,
/// kept in the store as a count per window of `burst / per_minute` minutes (DynamoDB: one
/// conditional update; the embedded store, one process, keeps none and its in-process buckets
/// hold). The key is hashed: no email is written for it.
pub async fn shared_limit(
    state: &AppState,
    kind: &str,
    key: &str,
    per_minute: u32,
    burst: u32,
) -> Result<(), AppError> {
    let (per_minute, burst) = (per_minute.max(1), burst.max(1));
    let window_ms = i64::from(burst) * 60_000 / i64::from(per_minute);
    let key = format!("{kind}#{}", &crate::model::sha256_hex(format!("{kind}\n{key}").as_bytes())[..32]);
    match state.store.take_rate(&key, burst, window_ms.max(1000), crate::model::now_ms()).await? {
        None => Ok(()),
        Some(wait_ms) => {
            state.metrics.rate_limited.inc();
            Err(AppError::RateLimited { retry_after_secs: (wait_ms.max(1) as u64).div_ceil(1000) })
        }
    }
}

pub fn app(state: AppState) -> Router {
    let api = Router::new()
        // `/readyz` and `/metrics` are on the operations listener only (`ops_app`): what they
        // tell and what they cost (store and queue reads) are not for the internet.
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        // Bodies with a password are small: a longer one is refused before it is read whole.
        .route("/v1/auth/signup", post(auth::signup).layer(DefaultBodyLimit::max(auth::MAX_BODY_BYTES)))
        .route("/v1/auth/login", post(auth::login).layer(DefaultBodyLimit::max(auth::MAX_BODY_BYTES)))
        .route("/v1/auth/logout", post(auth::logout))
        .route(
            "/v1/auth/tokens",
            post(auth::create_token.layer(DefaultBodyLimit::max(auth::MAX_BODY_BYTES))).get(auth::list_tokens),
        )
        .route("/v1/auth/tokens/{id}", delete(auth::revoke_token))
        .route("/v1/conversations", post(chat::create_conversation).get(chat::list_conversations))
        .route(
            "/v1/conversations/{id}",
            get(chat::get_conversation).patch(conversations::rename).delete(conversations::delete),
        )
        .route("/v1/conversations/{id}/messages", post(chat::post_message))
        .route("/v1/messages/{id}", get(chat::get_message))
        .route("/v1/messages/{id}/events", get(events::events))
        .route("/v1/messages/{id}/retry", post(chat::retry_message))
        .route("/v1/messages/{id}/regenerate", post(chat::regenerate_message))
        .route("/v1/messages/{id}/stop", post(chat::stop_message))
        .route(
            "/v1/me",
            get(me::get_me).put(me::put_me).delete(me::delete_me.layer(DefaultBodyLimit::max(auth::MAX_BODY_BYTES))),
        )
        .route("/v1/me/export", get(me::export))
        .route("/v1/me/password", put(me::put_password.layer(DefaultBodyLimit::max(auth::MAX_BODY_BYTES))))
        // The web page: its screens and embedded assets.
        .merge(web::routes());
    api.fallback(|| async { AppError::not_found("route") })
        .layer(middleware::from_fn_with_state(state.clone(), same_origin_writes))
        .layer(middleware::from_fn_with_state(state.clone(), web::security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
}

/// The operations listener (`--metrics-listen`) of every command: health, readiness, metrics.
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
    // A label from a fixed set: a client must not be able to mint series.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
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
    state.metrics.http_requests.with_label_values(&[&route, method, &status.to_string()]).inc();
    state.metrics.http_duration.with_label_values(&[&route, method]).observe(elapsed);
    span.in_scope(|| {
        // Probes and scrapes come every few seconds: only at debug.
        if route == "/healthz" {
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

/// The scheme the client used: behind the load balancer its `X-Forwarded-Proto`; otherwise
/// `http`, since the runtime itself serves no TLS.
pub fn scheme(state: &AppState, headers: &axum::http::HeaderMap) -> &'static str {
    let forwarded = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok());
    match forwarded {
        Some(p) if state.trust_forwarded && p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    }
}

/// Refuses state-changing requests that a browser marks as coming from another origin
/// (`Origin` not `scheme://Host`, the scheme included: a page on `http://` cannot write to the
/// `https://` site), whatever their credentials: this also stops login CSRF. Clients that are
/// not browsers send no `Origin` and are not affected.
async fn same_origin_writes(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let safe =
        matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS);
    if !safe {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
            let expected = format!("{}://{host}", scheme(&state, req.headers()));
            let origin = origin.to_str().unwrap_or("");
            if host.is_empty() || !origin.eq_ignore_ascii_case(&expected) {
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
