//! Accounts: sign-up, sign-in (session cookie), API tokens (bearer), and the `AuthUser`
//! extractor. Passwords are hashed with argon2id; tokens are stored as SHA-256 hashes.

use std::cell::RefCell;
use std::sync::mpsc;
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
use crate::model::{new_id, now_ms, sha256_hex, User};
use crate::store::StoreError;

pub const SESSION_COOKIE: &str = "aira_session";
/// Readable by the page's script (not HttpOnly): the CSRF token it echoes in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "aira_csrf";
/// Header that must carry the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
const TOKEN_TTL_MS: i64 = 90 * 24 * 3600 * 1000;

#[derive(Deserialize)]
pub struct Credentials {
    pub email: String,
    pub password: String,
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

async fn on_hash_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> anyhow::Result<R> {
    type Job = Box<dyn FnOnce() + Send>;
    static POOL: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..2 {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name("aira-password".into())
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawn password thread");
        }
        tx
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.send(Box::new(move || {
        let _ = tx.send(f());
    }))
    .map_err(|_| anyhow::anyhow!("password threads gone"))?;
    rx.await.map_err(|_| anyhow::anyhow!("password thread dropped the job"))
}

async fn hash_password(cost: PasswordCost, password: String) -> anyhow::Result<String> {
    on_hash_thread(move || hash_blocking(cost, &password)).await?
}

async fn verify_password(password: String, hash: String) -> anyhow::Result<bool> {
    on_hash_thread(move || verify_blocking(&password, &hash)).await?
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

pub async fn signup(State(state): State<AppState>, AppJson(c): AppJson<Credentials>) -> Result<Response, AppError> {
    let email = normalise_email(&c.email)?;
    if c.password.chars().count() < 8 || c.password.len() > 1024 {
        return Err(AppError::invalid("weak_password", "password must be 8 to 1024 characters"));
    }
    let user = User { id: new_id(), email, password_hash: hash_password(state.password_cost, c.password).await? };
    match state.store.create_user(&user).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(json!({"id": user.id}))).into_response()),
        Err(StoreError::Conflict) => {
            Err(AppError::user(StatusCode::CONFLICT, "email_taken", "an account with this email exists"))
        }
        Err(e) => Err(e.into()),
    }
}

async fn check_credentials(state: &AppState, c: Credentials) -> Result<User, AppError> {
    let wrong = || AppError::user(StatusCode::UNAUTHORIZED, "wrong_credentials", "wrong email or password");
    let email = normalise_email(&c.email).map_err(|_| wrong())?;
    let Some(user) = state.store.user_by_email(&email).await? else {
        // Same work as a real check, so timing does not reveal which emails exist.
        let _ = hash_password(state.password_cost, c.password).await;
        return Err(wrong());
    };
    if verify_password(c.password, user.password_hash.clone()).await? {
        Ok(user)
    } else {
        Err(wrong())
    }
}

fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut s = String::from("aira_");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
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

pub async fn login(State(state): State<AppState>, AppJson(c): AppJson<Credentials>) -> Result<Response, AppError> {
    let user = check_credentials(&state, c).await?;
    state.store.remember_user(&user).await?;
    let token = new_token();
    state.store.create_token(&sha256_hex(token.as_bytes()), &user.id, now_ms() + SESSION_TTL_MS).await?;
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

/// Checks the password of a signed-in user again (before deleting the account).
pub async fn confirm_password(user: &User, password: String) -> Result<(), AppError> {
    if verify_password(password, user.password_hash.clone()).await? {
        Ok(())
    } else {
        Err(AppError::user(StatusCode::UNAUTHORIZED, "wrong_credentials", "wrong password"))
    }
}

/// Creates an API token for the signed-in user, or for `{email, password}` in the body.
pub async fn create_token(
    State(state): State<AppState>,
    parts: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let user_id = if body.iter().any(|b| !b.is_ascii_whitespace()) {
        let c: Credentials =
            serde_json::from_slice(&body).map_err(|e| AppError::invalid("invalid_json", e.to_string()))?;
        check_credentials(&state, c).await?.id
    } else {
        authenticate(&state, &parts, &Method::POST).await?.id
    };
    let token = new_token();
    state.store.create_token(&sha256_hex(token.as_bytes()), &user_id, now_ms() + TOKEN_TTL_MS).await?;
    Ok((StatusCode::CREATED, Json(json!({"token": token, "expires_in": TOKEN_TTL_MS / 1000}))).into_response())
}

/// The signed-in user: `Authorization: Bearer TOKEN` or the session cookie.
pub struct AuthUser {
    pub id: String,
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
    match state.store.token_user(&sha256_hex(token.as_bytes()), now_ms()).await? {
        Some(id) => Ok(AuthUser { id }),
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
}
