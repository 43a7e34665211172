//! The web page's server side: pages and assets, security headers, CSRF and same-origin
//! checks, and the user's own data (`/v1/me`: profile and consent, export, deletion).

use aira_runtime::api::Limits;
use aira_runtime::model::{new_id, now_ms, Conversation, Message, Profile, Status, User};
use aira_runtime::store::Store;
use axum::http::{header, StatusCode};
use serde_json::json;

use crate::common::*;

/// Signs up (without answering the consent screen) and signs in through the cookie flow:
/// (Cookie header value, CSRF token).
pub async fn browser_session(app: &axum::Router, email: &str) -> (String, String) {
    let creds = json!({"email": email, "password": "correct horse battery"});
    assert_eq!(call(app, "POST", "/v1/auth/signup", None, Some(creds.clone()), &[]).await.status, StatusCode::CREATED);
    let login = call(app, "POST", "/v1/auth/login", None, Some(creds), &[]).await;
    assert_eq!(login.status, StatusCode::OK);
    let session = login
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("__Host-aira_session="))
        .unwrap();
    (session, login.body["csrf_token"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn pages_and_assets_are_served_with_security_headers() {
    let env = Env::new(Limits::default());
    let app = env.app();
    for path in
        ["/", "/signin", "/signup", "/welcome", "/settings", "/chat", "/chat/0190e4c4-0000-7000-8000-000000000000"]
    {
        let r = call(&app, "GET", path, None, None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let html = r.body.as_str().unwrap();
        assert!(html.contains("<script type=\"module\" src=\"/assets/app.js\"></script>"));
        assert!(
            !html.contains("style=") && !html.contains("<style") && !html.contains("onclick"),
            "no inline style or handlers"
        );
    }
    for (path, ct) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/render.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let r = call(&app, "GET", path, None, None, &[]).await;
        assert_eq!((r.status, r.headers[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, ct), "{path}");
    }
    // Every response carries the headers, API errors included.
    for path in ["/", "/assets/app.js", "/v1/conversations", "/healthz"] {
        let r = call(&app, "GET", path, None, None, &[]).await;
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(part), "{path}: CSP lacks {part}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(r.headers[header::REFERRER_POLICY], "no-referrer", "{path}");
        assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
        // Plain HTTP (the local target): no HSTS, which would break the next visit over http.
        assert!(!r.headers.contains_key(header::STRICT_TRANSPORT_SECURITY), "{path}");
        // X-Forwarded-Proto is a client's to write unless a load balancer is in front.
        let spoofed = call(&app, "GET", path, None, None, &[("x-forwarded-proto", "https")]).await;
        assert!(!spoofed.headers.contains_key(header::STRICT_TRANSPORT_SECURITY), "{path}");
    }
}

#[tokio::test]
async fn cookie_writes_need_the_csrf_token_and_same_origin() {
    // Behind the load balancer, which terminates TLS and says so in X-Forwarded-Proto.
    let mut env = Env::new(Limits::default());
    env.state.trust_forwarded = true;
    let app = env.app();
    let (session, csrf) = browser_session(&app, "csrf@example.com").await;
    let consent =
        call(&app, "PUT", "/v1/me", Some(&session), Some(json!({"keep_history": true})), &[("x-csrf-token", &csrf)])
            .await;
    assert_eq!(consent.status, StatusCode::OK, "{:?}", consent.body);
    // Reads need no token.
    assert_eq!(call(&app, "GET", "/v1/conversations", Some(&session), None, &[]).await.status, StatusCode::OK);
    // A form post from another site carries the cookie but not the token.
    let forged =
        call(&app, "POST", "/v1/conversations", Some(&session), None, &[("origin", "https://evil.example")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let no_token = call(&app, "POST", "/v1/conversations", Some(&session), None, &[("host", "chat.example.com")]).await;
    assert_eq!((no_token.status, no_token.body["error"].as_str()), (StatusCode::FORBIDDEN, Some("csrf")));
    // The token of another session does not fit this one.
    let (_, other_csrf) = browser_session(&app, "csrf2@example.com").await;
    let mixed = call(&app, "POST", "/v1/conversations", Some(&session), None, &[("x-csrf-token", &other_csrf)]).await;
    assert_eq!(mixed.status, StatusCode::FORBIDDEN);
    // Token, same origin: accepted.
    let ok = call(
        &app,
        "POST",
        "/v1/conversations",
        Some(&session),
        None,
        &[
            ("x-csrf-token", &csrf),
            ("host", "chat.example.com"),
            ("x-forwarded-proto", "https"),
            ("origin", "https://chat.example.com"),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
    // Over HTTPS every answer tells the browser to stay on HTTPS.
    assert_eq!(ok.headers["strict-transport-security"], "max-age=31536000");
    // The same host on plain http is another origin: a page there cannot write to the site.
    let downgraded = call(
        &app,
        "POST",
        "/v1/conversations",
        Some(&session),
        None,
        &[
            ("x-csrf-token", &csrf),
            ("host", "chat.example.com"),
            ("x-forwarded-proto", "https"),
            ("origin", "http://chat.example.com"),
        ],
    )
    .await;
    assert_eq!((downgraded.status, downgraded.body["error"].as_str()), (StatusCode::FORBIDDEN, Some("cross_origin")));
    // Even with the token, a browser marking the request cross-origin is refused.
    let cross = call(
        &app,
        "POST",
        "/v1/conversations",
        Some(&session),
        None,
        &[("x-csrf-token", &csrf), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    // Login CSRF: a sign-in posted from another origin is refused before the password check.
    let login = call(
        &app,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": "csrf@example.com", "password": "correct horse battery"})),
        &[("host", "chat.example.com"), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!((login.status, login.body["error"].as_str()), (StatusCode::FORBIDDEN, Some("cross_origin")));
    // Bearer clients send no cookie: no token needed.
    let token = user(&app, "bearer@example.com").await;
    assert_eq!(call(&app, "POST", "/v1/conversations", Some(&token), None, &[]).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn consent_profile_export_and_delete() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let (session, csrf) = browser_session(&app, "me@example.com").await;
    let t = [("x-csrf-token", csrf.as_str())];
    let me = call(&app, "GET", "/v1/me", Some(&session), None, &[]).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["email"], "me@example.com");
    assert_eq!(me.body["consent_needed"], true);
    assert_eq!(call(&app, "GET", "/v1/me", None, None, &[]).await.status, StatusCode::UNAUTHORIZED);

    let bad = call(
        &app,
        "PUT",
        "/v1/me",
        Some(&session),
        Some(json!({"keep_history": true, "display_name": "x".repeat(81)})),
        &t,
    )
    .await;
    assert_eq!(
        (bad.status, bad.body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_display_name"))
    );
    let unknown =
        call(&app, "PUT", "/v1/me", Some(&session), Some(json!({"keep_history": true, "is_admin": true})), &t).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY, "unknown fields are refused");
    let put =
        call(&app, "PUT", "/v1/me", Some(&session), Some(json!({"keep_history": true, "display_name": "  Ada  "})), &t)
            .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!((put.body["display_name"].as_str(), put.body["consent_needed"].as_bool()), (Some("Ada"), Some(false)));
    let first_consent = put.body["consented_at"].as_i64().unwrap();
    let again = call(&app, "PUT", "/v1/me", Some(&session), Some(json!({"keep_history": true})), &t).await;
    assert_eq!(again.body["consented_at"].as_i64(), Some(first_consent), "the first consent time is kept");
    assert!(again.body["display_name"].is_null());

    let token = session_token(&app, "me@example.com").await;
    let conv = conversation(&app, &token).await;
    post_message(&app, &token, &conv, "remember <this>").await;
    let export = call(&app, "GET", "/v1/me/export", Some(&session), None, &[]).await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(export.headers[header::CONTENT_DISPOSITION].to_str().unwrap().starts_with("attachment"));
    assert_eq!(export.body["user"]["email"], "me@example.com");
    assert_eq!(export.body["profile"]["keep_history"], true);
    assert_eq!(export.body["conversations"][0]["id"], conv.as_str());
    assert_eq!(export.body["conversations"][0]["messages"][0]["content"], "remember <this>");
    assert!(export.body.to_string().find("password").is_none(), "no password hash in the export");

    // Another user's data is untouched by the deletion.
    let other = user(&app, "other@example.com").await;
    let other_conv = conversation(&app, &other).await;
    post_message(&app, &other, &other_conv, "mine").await;

    let wrong = call(&app, "DELETE", "/v1/me", Some(&session), Some(json!({"password": "not it at all"})), &t).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let no_csrf =
        call(&app, "DELETE", "/v1/me", Some(&session), Some(json!({"password": "correct horse battery"})), &[]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let del =
        call(&app, "DELETE", "/v1/me", Some(&session), Some(json!({"password": "correct horse battery"})), &t).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{:?}", del.body);
    assert!(del.headers.get_all(header::SET_COOKIE).iter().all(|c| c.to_str().unwrap().contains("Max-Age=0")));
    assert_eq!(call(&app, "GET", "/v1/me", Some(&session), None, &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&app, "GET", "/v1/conversations", Some(&token), None, &[]).await.status,
        StatusCode::UNAUTHORIZED,
        "every token revoked"
    );
    assert!(env.store.get_conversation(&conv).await.unwrap().is_none());
    assert!(env.store.list_messages(&conv, None, 200).await.unwrap().is_empty());
    let login = call(
        &app,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": "me@example.com", "password": "correct horse battery"})),
        &[],
    )
    .await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    // The email is free again.
    let signup = call(
        &app,
        "POST",
        "/v1/auth/signup",
        None,
        Some(json!({"email": "me@example.com", "password": "a new password"})),
        &[],
    )
    .await;
    assert_eq!(signup.status, StatusCode::CREATED);
    assert_eq!(env.store.list_messages(&other_conv, None, 200).await.unwrap().len(), 1);
}

/// An API token for an existing user (password "correct horse battery").
async fn session_token(app: &axum::Router, email: &str) -> String {
    let r = call(
        app,
        "POST",
        "/v1/auth/tokens",
        None,
        Some(json!({"email": email, "password": "correct horse battery"})),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["token"].as_str().unwrap().to_string()
}

/// The new store methods, on any backend (the moto tests call it on DynamoDB).
pub async fn check_profile_and_delete(store: &dyn Store) {
    let u = User {
        id: new_id(),
        email: format!("{}@example.com", new_id()),
        password_hash: "$argon2id$x".into(),
        deleting: false,
    };
    store.create_user(&u).await.unwrap();
    assert_eq!(store.user_by_id(&u.id).await.unwrap().map(|x| x.email), Some(u.email.clone()));
    assert!(store.user_by_id("missing").await.unwrap().is_none());
    store.remember_user(&u).await.unwrap();
    assert_eq!(store.user_by_id(&u.id).await.unwrap().map(|x| x.id), Some(u.id.clone()), "remember_user is idempotent");
    assert!(store.get_profile(&u.id).await.unwrap().is_none());
    let p = Profile { display_name: Some("Ada".into()), keep_history: true, consented_at: Some(1234) };
    store.put_profile(&u.id, &p).await.unwrap();
    assert_eq!(store.get_profile(&u.id).await.unwrap(), Some(p));
    let p2 = Profile { display_name: None, keep_history: false, consented_at: Some(1234) };
    store.put_profile(&u.id, &p2).await.unwrap();
    assert_eq!(store.get_profile(&u.id).await.unwrap(), Some(p2));

    let token = aira_runtime::model::TokenInfo {
        hash: "hash-a".into(),
        kind: "api".into(),
        created_at: now_ms(),
        expires_at: now_ms() + 60_000,
    };
    store.create_token(&u.id, &token).await.unwrap();
    let token = aira_runtime::model::TokenInfo {
        hash: "hash-b".into(),
        kind: "api".into(),
        created_at: now_ms(),
        expires_at: now_ms() + 60_000,
    };
    store.create_token(&u.id, &token).await.unwrap();
    let c = Conversation { id: new_id(), user_id: u.id.clone(), created_at: now_ms(), title: None };
    store.create_conversation(&c).await.unwrap();
    let now = now_ms();
    let m = Message {
        id: new_id(),
        conversation_id: c.id.clone(),
        user_id: u.id.clone(),
        content: "hello".into(),
        status: Status::Queued,
        answer: None,
        stopped: false,
        stop_requested: false,
        error: None,
        created_at: now,
        updated_at: now,
        purge_at: None,
        idem_scope: None,
    };
    store.record_message(&m, None).await.unwrap();

    store.delete_user(&u).await.unwrap();
    assert!(store.user_by_email(&u.email).await.unwrap().is_none());
    assert!(store.user_by_id(&u.id).await.unwrap().is_none());
    assert!(store.get_profile(&u.id).await.unwrap().is_none());
    assert!(store.token_user("hash-a", now_ms()).await.unwrap().is_none());
    assert!(store.token_user("hash-b", now_ms()).await.unwrap().is_none());
    assert!(store.list_conversations(&u.id, None, 200).await.unwrap().is_empty());
    assert!(store.get_conversation(&c.id).await.unwrap().is_none());
    assert!(store.get_message(&m.id).await.unwrap().is_none());
    assert!(store.list_messages(&c.id, None, 200).await.unwrap().is_empty());
    // Idempotent: deleting again is fine.
    store.delete_user(&u).await.unwrap();
}

#[tokio::test]
async fn sqlite_profile_and_delete() {
    let env = Env::new(Limits::default());
    check_profile_and_delete(env.store.as_ref()).await;
}
