//! Accounts: sign-up, sign-in (session cookie), API tokens (bearer), and the `AuthUser`
//! extractor. Passwords are hashed with argon2id; tokens are stored as SHA-256 hashes.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{AppJson, AppState, PasswordCost};
use crate::error::AppError;
use crate::model::{new_id, now_ms, sha256_hex, Profile, TokenInfo, User};
use crate::store::StoreError;

/// `__Host-`: the browser keeps it only if Secure, for `Path=/`, without `Domain`, so a sibling
/// subdomain cannot plant or overwrite it.
pub const SESSION_COOKIE: &str = "__Host-aira_session";
/// Readable by the page's script (not HttpOnly): the CSRF token it echoes in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "__Host-aira_csrf";
/// Header that must carry the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Longest password, in bytes, on every route that takes one: hashing cost grows with it.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Largest body of a route that takes a password: an email, a password escaped at worst
/// (`\u0000`, 6 bytes a byte) and the JSON around them.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
const TOKEN_TTL_MS: i64 = 90 * 24 * 3600 * 1000;

#[derive(Deserialize)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// A sign-up: credentials, and optionally the consent answer (an API client answers it here;
/// the page shows the consent screen after the first sign-in instead).
#[derive(Deserialize)]
pub struct SignUp {
    pub email: String,
    pub password: String,
    pub keep_history: Option<bool>,
}

thread_local! {
    /// The argon2 working memory of this password thread, reused by every hash it computes,
    /// so resident memory stays at threads × cost instead of growing in allocator arenas.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Argon2 into `out` with this thread's reusable working memory.
fn argon2_into(
    algorithm: Algorithm,
    version: Version,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let argon = Argon2::new(algorithm, version, params.clone());
    BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        let n = params.block_count();
        if b.len() < n {
            b.resize(n, Block::default());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut b[..n])
    })
}

/// An argon2id PHC string (`$argon2id$v=19$m=..,t=..,p=1$salt$hash`).
fn hash_blocking(cost: PasswordCost, password: &str) -> anyhow::Result<String> {
    let err = |e: password_hash::Error| anyhow::anyhow!("hash password: {e}");
    let params =
        Params::new(cost.memory_kib, cost.iterations, 1, None).map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(err)?;
    let hash = Output::init_with(32, |out| {
        Ok(argon2_into(Algorithm::Argon2id, Version::V0x13, &params, password.as_bytes(), &salt_bytes, out)?)
    })
    .map_err(err)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(err)?,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a stored PHC string (constant-time comparison).
fn verify_blocking(password: &str, stored: &str) -> anyhow::Result<bool> {
    let err = |e: password_hash::Error| anyhow::anyhow!("stored hash: {e}");
    let phc = PasswordHash::new(stored).map_err(err)?;
    let algorithm = Algorithm::try_from(phc.algorithm).map_err(err)?;
    let version = Version::try_from(phc.version.unwrap_or(0x13)).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
    let params = Params::try_from(&phc).map_err(err)?;
    let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
        anyhow::bail!("stored hash lacks salt or hash");
    };
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(err)?;
    let actual = Output::init_with(expected.len(), |out| {
        Ok(argon2_into(algorithm, version, &params, password.as_bytes(), salt_bytes, out)?)
    })
    .map_err(err)?;
    Ok(actual == expected)
}

/// Lowers the calling thread's CPU priority (nice 10): hashes yield the CPU to the threads that
/// answer requests, so a burst of sign-ins slows sign-ins, not `/healthz` or chat.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take no pointers; on Linux a thread id names one thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// Password jobs waiting, per client address and in all: a job is refused with 503 at once
/// past either, so a flood cannot queue minutes of work (or its memory) in front of real users.
const HASH_QUEUE_PER_ADDRESS: usize = 2;
const HASH_QUEUE: usize = 512;

type Job = Box<dyn FnOnce() + Send>;

/// The password threads' queue: one queue per client address, served in turn, so an address
/// waits behind one job of each other waiting address, not behind everything a flood queued.
#[derive(Default)]
struct HashQueues {
    by_address: std::collections::HashMap<String, std::collections::VecDeque<Job>>,
    /// Addresses with jobs, in the order they are served.
    turns: std::collections::VecDeque<String>,
    waiting: usize,
}

struct HashPool {
    queues: Mutex<HashQueues>,
    ready: std::sync::Condvar,
}

impl HashPool {
    fn start() -> Arc<HashPool> {
        let pool = Arc::new(HashPool { queues: Mutex::default(), ready: std::sync::Condvar::new() });
        for _ in 0..2 {
            let pool = pool.clone();
            std::thread::Builder::new()
                .name("aira-password".into())
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = pool.next();
                        job();
                    }
                })
                .expect("spawn password thread");
        }
        pool
    }

    /// Queues `job` for `address`; false when its queue or the whole queue is full.
    fn submit(&self, address: &str, job: Job) -> bool {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if q.waiting >= HASH_QUEUE {
            return false;
        }
        let mine = q.by_address.entry(address.to_string()).or_default();
        if mine.len() >= HASH_QUEUE_PER_ADDRESS {
            return false;
        }
        mine.push_back(job);
        if mine.len() == 1 {
            q.turns.push_back(address.to_string());
        }
        q.waiting += 1;
        drop(q);
        self.ready.notify_one();
        true
    }

    /// The next job: the first of the address whose turn it is; that address goes to the back
    /// of the turns if it has more.
    fn next(&self) -> Job {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(address) = q.turns.pop_front() {
                let mine = q.by_address.get_mut(&address).expect("an address in turn has jobs");
                let job = mine.pop_front().expect("an address in turn has jobs");
                if mine.is_empty() {
                    q.by_address.remove(&address);
                } else {
                    q.turns.push_back(address);
                }
                q.waiting -= 1;
                return job;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Runs `f` on one of the two password threads in `client`'s turn; `Busy` when its queue or
/// the whole queue is full.
async fn on_hash_thread<R: Send + 'static>(
    client: &ClientAddr,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, AppError> {
    static POOL: OnceLock<Arc<HashPool>> = OnceLock::new();
    let pool = POOL.get_or_init(HashPool::start);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    if !pool.submit(&client.0, job) {
        return Err(AppError::Busy { retry_after_secs: 1 });
    }
    rx.await.map_err(|_| anyhow::anyhow!("password thread dropped the job").into())
}

async fn hash_password(client: &ClientAddr, cost: PasswordCost, password: String) -> Result<String, AppError> {
    Ok(on_hash_thread(client, move || hash_blocking(cost, &password)).await??)
}

async fn verify_password(client: &ClientAddr, password: String, hash: String) -> Result<bool, AppError> {
    Ok(on_hash_thread(client, move || verify_blocking(&password, &hash)).await??)
}

/// Refuses a password too long to hash, before any work (422 `password_too_long`).
fn bounded(password: &str) -> Result<(), AppError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::invalid(
            "password_too_long",
            format!("a password has at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Takes one attempt from the client address's bucket, then, when the address may go on and
/// the account is known, from the bucket of this account *from this address* (its normalised
/// email and the address): sign-up, sign-in, token creation and account deletion. A refused
/// address touches no account bucket, so a flood of random emails adds no keys; and guesses
/// against an account from one address spend that address's share only, so no one can keep
/// the owner out by guessing wrong from elsewhere. The account's bucket is also kept in the
/// store where it is shared by every API task ([`crate::store::LimitStore::take_rate`]).
async fn limit_attempt(state: &AppState, client: &ClientAddr, account: Option<&str>) -> Result<(), AppError> {
    let now = std::time::Instant::now();
    let refused = |wait: std::time::Duration| {
        state.metrics.rate_limited.inc();
        AppError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
    };
    state.auth_rate.per_address.check(&client.0, now).map_err(refused)?;
    let Some(account) = account else { return Ok(()) };
    let key = format!("{account}\n{}", client.0);
    state.auth_rate.per_account.check(&key, now).map_err(refused)?;
    let l = &state.limits;
    super::shared_limit(state, "auth", &key, l.auth_per_minute, l.auth_burst).await
}

/// The client's address, as rate limits key it: behind the load balancer (`trust_forwarded`)
/// the last `X-Forwarded-For` entry, the one the load balancer appended (earlier ones are the
/// client's to write); otherwise the peer's address. An IPv6 address counts as its /64, the
/// smallest block a provider gives one subscriber (RFC 6177): one client can pick any of its
/// 2^64 addresses, so limits per /128 would not limit it.
pub struct ClientAddr(pub String);

/// The limits' key of an address: IPv4 as is (an IPv4-mapped IPv6 address too), IPv6 as its /64.
pub fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<ClientAddr, AppError> {
        let forwarded = || {
            let all = parts.headers.get_all("x-forwarded-for");
            let last = all.iter().filter_map(|v| v.to_str().ok()).next_back()?;
            let hop = last.rsplit(',').next()?.trim();
            hop.parse::<std::net::IpAddr>().ok()
        };
        let peer = || parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        let addr = if state.trust_forwarded { forwarded().or_else(peer) } else { peer() };
        Ok(ClientAddr(addr.map_or_else(|| "unknown".into(), address_key)))
    }
}

fn normalise_email(email: &str) -> Result<String, AppError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.starts_with('.'))
        && !e.chars().any(char::is_whitespace);
    if ok {
        Ok(e)
    } else {
        Err(AppError::invalid("invalid_email", "email is not a valid address"))
    }
}

pub async fn signup(
    State(state): State<AppState>,
    client: ClientAddr,
    AppJson(c): AppJson<SignUp>,
) -> Result<Response, AppError> {
    let email = normalise_email(&c.email)?;
    limit_attempt(&state, &client, Some(&email)).await?;
    let user = User {
        id: new_id(),
        email,
        password_hash: new_password_hash(&state, &client, c.password).await?,
        deleting: false,
    };
    match state.store.create_user(&user).await {
        Ok(()) => {
            if let Some(keep_history) = c.keep_history {
                let p = Profile { display_name: None, keep_history, consented_at: Some(now_ms()) };
                state.store.put_profile(&user.id, &p).await?;
            }
            Ok((StatusCode::CREATED, Json(json!({"id": user.id}))).into_response())
        }
        Err(StoreError::Conflict) => {
            Err(AppError::user(StatusCode::CONFLICT, "email_taken", "an account with this email exists"))
        }
        Err(e) => Err(e.into()),
    }
}

async fn check_credentials(state: &AppState, client: &ClientAddr, c: Credentials) -> Result<User, AppError> {
    let wrong = || AppError::user(StatusCode::UNAUTHORIZED, "wrong_credentials", "wrong email or password");
    let email = normalise_email(&c.email).map_err(|_| wrong());
    limit_attempt(state, client, email.as_deref().ok()).await?;
    let email = email?;
    bounded(&c.password)?;
    let Some(user) = state.store.user_by_email(&email).await? else {
        // Same work as a real check, so timing does not reveal which emails exist.
        let _ = hash_password(client, state.password_cost, c.password).await;
        return Err(wrong());
    };
    if !verify_password(client, c.password, user.password_hash.clone()).await? {
        return Err(wrong());
    }
    if user.deleting {
        // A deletion that was interrupted: the account is gone for its owner; finish it.
        tracing::info!(user_id = %user.id, "sign-in to an account being deleted; finishing the deletion");
        super::me::delete_account(state, user).await?;
        return Err(wrong());
    }
    Ok(user)
}

fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut s = String::from("aira_");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A new token of `kind` (`session`, `api`) for the user, stored as its hash; the secret is
/// returned once and never kept.
async fn issue(state: &AppState, user_id: &str, kind: &str, ttl_ms: i64) -> Result<String, AppError> {
    let token = new_token();
    let now = now_ms();
    let info =
        TokenInfo { hash: sha256_hex(token.as_bytes()), kind: kind.into(), created_at: now, expires_at: now + ttl_ms };
    state.store.create_token(user_id, &info).await?;
    // A user holds at most `MAX_TOKENS`: the oldest go (a sign-in a day for months, or a
    // script signing in in a loop, keeps the list and its revocations bounded).
    let live = state.store.list_tokens(user_id, now).await?;
    for old in live.iter().skip(crate::store::MAX_TOKENS) {
        state.store.delete_token(&old.hash).await?;
    }
    Ok(token)
}

/// A token's id in lists and in `DELETE /v1/auth/tokens/{id}`: the first 16 hex digits of its
/// hash, which says nothing of the secret.
fn token_id(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

/// `GET /v1/auth/tokens`: the user's sessions and API tokens, never their secrets.
pub async fn list_tokens(State(state): State<AppState>, user: AuthUser) -> Result<Response, AppError> {
    let tokens = state.store.list_tokens(&user.id, now_ms()).await?;
    let tokens: Vec<_> = tokens
        .iter()
        .map(|t| {
            json!({
                "id": token_id(&t.hash),
                "kind": t.kind,
                "created_at": t.created_at,
                "expires_at": t.expires_at,
                "current": t.hash == user.token_hash,
            })
        })
        .collect();
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// `DELETE /v1/auth/tokens/{id}`: revokes one of the user's tokens (404 for any other id).
pub async fn revoke_token(
    State(state): State<AppState>,
    user: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, AppError> {
    let tokens = state.store.list_tokens(&user.id, now_ms()).await?;
    let Some(t) = tokens.iter().find(|t| token_id(&t.hash) == id) else {
        return Err(AppError::not_found("token"));
    };
    state.store.delete_token(&t.hash).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Revokes every token of the user but `keep` (a password change signs out everywhere else).
pub async fn revoke_others(state: &AppState, user_id: &str, keep: &str) -> Result<usize, AppError> {
    let mut revoked = 0;
    for t in state.store.list_tokens(user_id, now_ms()).await? {
        if t.hash != keep {
            state.store.delete_token(&t.hash).await?;
            revoked += 1;
        }
    }
    Ok(revoked)
}

/// A new password's rules, as at sign-up: 8 characters to [`MAX_PASSWORD_BYTES`] bytes.
pub async fn new_password_hash(state: &AppState, client: &ClientAddr, password: String) -> Result<String, AppError> {
    bounded(&password)?;
    if password.chars().count() < 8 {
        return Err(AppError::invalid("weak_password", "password must be 8 to 1024 characters"));
    }
    hash_password(client, state.password_cost, password).await
}

/// The CSRF token of a session: derived from the session token (a "signed double-submit"
/// token), so nothing more is stored, and a cookie planted by a sibling domain without
/// the session token cannot match it.
pub fn csrf_token(session_token: &str) -> String {
    sha256_hex(format!("aira-csrf\n{session_token}").as_bytes())
}

/// Constant-time comparison of two strings of public length.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie-authenticated write must carry the session's CSRF token in `X-CSRF-Token`
/// and must not be marked cross-site by the browser (`Sec-Fetch-Site`).
fn check_csrf(headers: &HeaderMap, session_token: &str) -> Result<(), AppError> {
    let cross_site =
        headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v != "same-origin" && v != "none");
    if cross_site {
        return Err(AppError::user(StatusCode::FORBIDDEN, "cross_site", "cross-site request refused"));
    }
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !same(sent, &csrf_token(session_token)) {
        return Err(AppError::user(StatusCode::FORBIDDEN, "csrf", "missing or wrong X-CSRF-Token header"));
    }
    Ok(())
}

pub async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    AppJson(c): AppJson<Credentials>,
) -> Result<Response, AppError> {
    let user = check_credentials(&state, &client, c).await?;
    state.store.remember_user(&user).await?;
    let token = issue(&state, &user.id, "session", SESSION_TTL_MS).await?;
    let csrf = csrf_token(&token);
    let max_age = SESSION_TTL_MS / 1000;
    let mut r = Json(json!({"user_id": user.id, "csrf_token": csrf})).into_response();
    let h = r.headers_mut();
    for cookie in [
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={max_age}"),
        format!("{CSRF_COOKIE}={csrf}; Path=/; Secure; SameSite=Strict; Max-Age={max_age}"),
    ] {
        h.append(
            header::SET_COOKIE,
            header::HeaderValue::from_str(&cookie).map_err(|e| anyhow::anyhow!("cookie header: {e}"))?,
        );
    }
    Ok(r)
}

/// Adds the headers that clear both cookies.
pub fn cleared_cookies(mut r: Response) -> Response {
    for cookie in [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"),
        format!("{CSRF_COOKIE}=; Path=/; Secure; SameSite=Strict; Max-Age=0"),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// Signs out: revokes the session token (cookie) or the bearer token, and clears the cookies.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let token = match bearer_token(&headers) {
        Some(t) => Some(t),
        None => match cookie_token(&headers) {
            Some(t) => {
                check_csrf(&headers, &t)?;
                Some(t)
            }
            None => None,
        },
    };
    if let Some(t) = token {
        state.store.delete_token(&sha256_hex(t.as_bytes())).await?;
    }
    Ok(cleared_cookies(StatusCode::NO_CONTENT.into_response()))
}

/// Checks the password of a signed-in user again (before deleting the account), under the
/// same limits as a sign-in.
pub async fn confirm_password(
    state: &AppState,
    client: &ClientAddr,
    user: &User,
    password: String,
) -> Result<(), AppError> {
    limit_attempt(state, client, Some(&user.email)).await?;
    bounded(&password)?;
    if verify_password(client, password, user.password_hash.clone()).await? {
        Ok(())
    } else {
        Err(AppError::user(StatusCode::UNAUTHORIZED, "wrong_credentials", "wrong password"))
    }
}

/// Creates an API token for the signed-in user, or for `{email, password}` in the body.
pub async fn create_token(
    State(state): State<AppState>,
    client: ClientAddr,
    parts: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let (user_id, ttl_ms) = if body.iter().any(|b| !b.is_ascii_whitespace()) {
        let c: Credentials =
            serde_json::from_slice(&body).map_err(|e| AppError::invalid("invalid_json", e.to_string()))?;
        (check_credentials(&state, &client, c).await?.id, TOKEN_TTL_MS)
    } else {
        // Without the password, a token lives no longer than the session or token it is made
        // from: a stolen session cannot mint itself a 90-day token.
        let user = authenticate(&state, &parts, &Method::POST).await?;
        // The address's bucket, as for a token made with a password (that one is taken in
        // `check_credentials`).
        limit_attempt(&state, &client, None).await?;
        let now = now_ms();
        let parent = state.store.list_tokens(&user.id, now).await?;
        let expires = parent.iter().find(|t| t.hash == user.token_hash).map_or(now, |t| t.expires_at);
        (user.id, (expires - now).clamp(0, TOKEN_TTL_MS))
    };
    if ttl_ms == 0 {
        return Err(AppError::unauthorized());
    }
    let token = issue(&state, &user_id, "api", ttl_ms).await?;
    Ok((StatusCode::CREATED, Json(json!({"token": token, "expires_in": ttl_ms / 1000}))).into_response())
}

/// The signed-in user: `Authorization: Bearer TOKEN` or the session cookie.
pub struct AuthUser {
    pub id: String,
    /// The hash of the token this request came with.
    pub token_hash: String,
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == SESSION_COOKIE && !v.is_empty()).then(|| v.to_string())
    })
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
}

async fn authenticate(state: &AppState, headers: &HeaderMap, method: &Method) -> Result<AuthUser, AppError> {
    let token = match bearer_token(headers) {
        Some(t) => t,
        None => {
            let t = cookie_token(headers).ok_or_else(AppError::unauthorized)?;
            // Cookie-authenticated writes must come from our own pages (CSRF).
            if method != Method::GET && method != Method::HEAD {
                check_csrf(headers, &t)?;
            }
            t
        }
    };
    let token_hash = sha256_hex(token.as_bytes());
    match state.store.token_user(&token_hash, now_ms()).await? {
        Some(id) => Ok(AuthUser { id, token_hash }),
        None => Err(AppError::unauthorized()),
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<AuthUser, AppError> {
        authenticate(state, &parts.headers, &parts.method).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_is_standard_phc() {
        let cost = PasswordCost { memory_kib: 64, iterations: 1 };
        let h = hash_blocking(cost, "correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(verify_blocking("correct horse", &h).unwrap());
        assert!(!verify_blocking("wrong horse", &h).unwrap());
        // Interoperable with the argon2 crate's own hasher.
        use argon2::PasswordVerifier;
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
    }

    /// Forty addresses each queue their most (two jobs), then one more address one job: it is
    /// served within the first round (41 jobs), not after the 80 queued before it; a third job
    /// of one address is refused, and so is anything past the whole queue's bound.
    #[test]
    fn the_password_queue_serves_addresses_in_turn() {
        let pool = HashPool { queues: Mutex::default(), ready: std::sync::Condvar::new() };
        let ran = Arc::new(Mutex::new(Vec::new()));
        let job = |name: String| -> Job {
            let ran = ran.clone();
            Box::new(move || ran.lock().unwrap().push(name))
        };
        for a in 0..40 {
            for _ in 0..HASH_QUEUE_PER_ADDRESS {
                assert!(pool.submit(&format!("flood-{a}"), job(format!("flood-{a}"))));
            }
            assert!(!pool.submit(&format!("flood-{a}"), job("refused".into())), "a third job of one address");
        }
        assert!(pool.submit("real-user", job("real-user".into())));
        for _ in 0..81 {
            pool.next()();
        }
        let ran = ran.lock().unwrap();
        let at = ran.iter().position(|n| n == "real-user").unwrap();
        assert!(at <= 40, "served as job {at}");
        assert_eq!(ran.len(), 81);
        let full = HashPool { queues: Mutex::default(), ready: std::sync::Condvar::new() };
        for a in 0..HASH_QUEUE {
            assert!(full.submit(&a.to_string(), Box::new(|| ())));
        }
        assert!(!full.submit("one more", Box::new(|| ())), "the whole queue's bound");
    }

    #[test]
    fn addresses_are_keyed_by_what_one_client_holds() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }
}
