//! The HTTP API on the embedded backends.

use std::sync::Arc;
use std::time::Duration;

use aira_runtime::api::Limits;
use aira_runtime::llm::Echo;
use aira_runtime::model::Status;
use axum::http::{header, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn signup_login_cookie_and_tokens() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let creds = json!({"email": "Ada@Example.com", "password": "correct horse battery"});
    let r = call(&app, "POST", "/v1/auth/signup", None, Some(creds.clone()), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body["id"].is_string());
    let again = call(
        &app,
        "POST",
        "/v1/auth/signup",
        None,
        Some(json!({"email": "ada@example.com", "password": "another password"})),
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let weak =
        call(&app, "POST", "/v1/auth/signup", None, Some(json!({"email": "b@example.com", "password": "short"})), &[])
            .await;
    assert_eq!((weak.status, weak.body["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("weak_password")));

    let wrong = call(
        &app,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": "ada@example.com", "password": "wrong password"})),
        &[],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let login = call(&app, "POST", "/v1/auth/login", None, Some(creds), &[]).await;
    assert_eq!(login.status, StatusCode::OK);
    let cookies: Vec<String> =
        login.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let cookie = cookies.iter().find(|c| c.starts_with("__Host-aira_session=")).expect("session cookie").clone();
    for flag in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "cookie lacks {flag}: {cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    assert!(session.starts_with("__Host-aira_session=aira_"));
    let csrf_cookie = cookies.iter().find(|c| c.starts_with("__Host-aira_csrf=")).expect("csrf cookie");
    for flag in ["Secure", "SameSite=Strict", "Path=/"] {
        assert!(csrf_cookie.contains(flag), "csrf cookie lacks {flag}: {csrf_cookie}");
    }
    assert!(!csrf_cookie.contains("HttpOnly"), "the page must read the csrf cookie");
    let csrf = login.body["csrf_token"].as_str().unwrap().to_string();
    assert!(csrf_cookie.starts_with(&format!("__Host-aira_csrf={csrf};")));
    let with_csrf = [("x-csrf-token", csrf.as_str())];

    assert_eq!(call(&app, "GET", "/v1/conversations", None, None, &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&app, "GET", "/v1/conversations", Some("aira_bogus"), None, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call(&app, "GET", "/v1/conversations", Some(&session), None, &[]).await.status, StatusCode::OK);

    // A cookie-authenticated write from another site is refused (CSRF).
    let cross =
        call(&app, "POST", "/v1/conversations", Some(&session), None, &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);

    let no_token = call(&app, "POST", "/v1/conversations", Some(&session), None, &[]).await;
    assert_eq!((no_token.status, no_token.body["error"].as_str()), (StatusCode::FORBIDDEN, Some("csrf")));
    let wrong = call(&app, "POST", "/v1/conversations", Some(&session), None, &[("x-csrf-token", "0000")]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);

    let t = call(&app, "POST", "/v1/auth/tokens", Some(&session), None, &with_csrf).await;
    assert_eq!(t.status, StatusCode::CREATED, "{:?}", t.body);
    let token = t.body["token"].as_str().unwrap();
    assert_eq!(call(&app, "GET", "/v1/conversations", Some(token), None, &[]).await.status, StatusCode::OK);

    // Signing out revokes the session on the server, not just in the browser.
    let refused = call(&app, "POST", "/v1/auth/logout", Some(&session), None, &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "a cross-site page cannot sign the user out");
    let out = call(&app, "POST", "/v1/auth/logout", Some(&session), None, &with_csrf).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(
        call(&app, "GET", "/v1/conversations", Some(&session), None, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "GET", "/v1/conversations", Some(token), None, &[]).await.status,
        StatusCode::OK,
        "other tokens stay valid"
    );
}

#[tokio::test]
async fn conversations_are_private() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let alice = user(&app, "alice@example.com").await;
    let bob = user(&app, "bob@example.com").await;
    let c1 = conversation(&app, &alice).await;
    let c2 = conversation(&app, &alice).await;
    let list = call(&app, "GET", "/v1/conversations", Some(&alice), None, &[]).await;
    let ids: Vec<&str> =
        list.body["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![c2.as_str(), c1.as_str()], "newest first");
    let mine = call(&app, "GET", &format!("/v1/conversations/{c1}"), Some(&alice), None, &[]).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body["messages"], json!([]));
    let theirs = call(&app, "GET", &format!("/v1/conversations/{c1}"), Some(&bob), None, &[]).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let post = call(
        &app,
        "POST",
        &format!("/v1/conversations/{c1}/messages"),
        Some(&bob),
        Some(json!({"content": "hi"})),
        &[],
    )
    .await;
    assert_eq!(post.status, StatusCode::NOT_FOUND);
    assert!(call(&app, "GET", "/v1/conversations", Some(&bob), None, &[]).await.body["conversations"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// Real socket: post, poll until answered by echo, and read the SSE stream.
#[tokio::test]
async fn message_answered_by_echo_poll_and_stream() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = app.clone();
    tokio::spawn(async move { axum::serve(listener, server).await });
    let token = user(&app, "echo@example.com").await;
    let conv = conversation(&app, &token).await;

    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/v1/conversations/{conv}/messages"))
        .bearer_auth(&token)
        .json(&json!({"content": "what is the capital of France?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let accepted: serde_json::Value = r.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(accepted["events_url"], format!("/v1/messages/{id}/events"));

    // Open the stream before any worker runs, so it must show queued first.
    let mut stream = http
        .get(format!("http://{addr}{}", accepted["events_url"].as_str().unwrap()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (_w, stop) = spawn_worker(env.worker(Arc::new(Echo), worker_config()));

    let mut text = String::new();
    let read = async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: answered") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("stream reached answered");
    let q = text.find("event: queued").expect("queued event");
    let a = text.find("event: answered").expect("answered event");
    assert!(q < a, "{text}");
    assert!(text.contains("what is the capital of France?"), "answer event carries the echo: {text}");

    // Poll the conversation until answered.
    let mut answered = None;
    for _ in 0..100 {
        let c = call(&app, "GET", &format!("/v1/conversations/{conv}"), Some(&token), None, &[]).await;
        let m = &c.body["messages"][0];
        if m["status"] == "answered" {
            answered = Some(m.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = answered.expect("answered within 5 s");
    assert_eq!(m["id"], id);
    assert!(m["answer"].as_str().unwrap().contains("what is the capital of France?"));
    stop.cancel();
    assert_eq!(metric(&env.metrics, "aira_worker_messages_total{outcome=\"answered\"}"), 1.0);
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_other_body() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let token = user(&app, "idem@example.com").await;
    let conv = conversation(&app, &token).await;
    let uri = format!("/v1/conversations/{conv}/messages");
    let key = [("idempotency-key", "k-123")];
    let first = call(&app, "POST", &uri, Some(&token), Some(json!({"content": "hello"})), &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let retry = call(&app, "POST", &uri, Some(&token), Some(json!({"content": "hello"})), &key).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    assert_eq!(retry.body, first.body, "a retry returns the first response");
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    let other = call(&app, "POST", &uri, Some(&token), Some(json!({"content": "something else"})), &key).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.body["error"], "idempotency_key_reused");
    let c = call(&app, "GET", &format!("/v1/conversations/{conv}"), Some(&token), None, &[]).await;
    assert_eq!(c.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(env.queue.approximate_len().await.unwrap(), 1, "enqueued once");
    // Keys are per user: another user may use the same key.
    let other_user = user(&app, "idem2@example.com").await;
    let conv2 = conversation(&app, &other_user).await;
    let r = call(
        &app,
        "POST",
        &format!("/v1/conversations/{conv2}/messages"),
        Some(&other_user),
        Some(json!({"content": "hello"})),
        &key,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_ne!(r.body["id"], first.body["id"]);
}

#[tokio::test]
async fn rate_limit_gives_429_with_retry_after() {
    let env = Env::new(Limits { messages_per_minute: 6, burst: 3, ..Limits::default() });
    let app = env.app();
    let token = user(&app, "busy@example.com").await;
    let conv = conversation(&app, &token).await;
    for i in 0..3 {
        post_message(&app, &token, &conv, &format!("m{i}")).await;
    }
    let r = call(
        &app,
        "POST",
        &format!("/v1/conversations/{conv}/messages"),
        Some(&token),
        Some(json!({"content": "one more"})),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = r.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(r.body["error"], "rate_limited");
    // A retry of a request already accepted is answered from it, even now; a used key with
    // another body is still refused as such.
    let key = [("idempotency-key", "limited-1")];
    let env2 = Env::new(Limits { messages_per_minute: 1, burst: 1, ..Limits::default() });
    let app2 = env2.app();
    let token2 = user(&app2, "replay@example.com").await;
    let conv2 = conversation(&app2, &token2).await;
    let uri2 = format!("/v1/conversations/{conv2}/messages");
    let first = call(&app2, "POST", &uri2, Some(&token2), Some(json!({"content": "once"})), &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let limited = call(&app2, "POST", &uri2, Some(&token2), Some(json!({"content": "twice"})), &[]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let replayed = call(&app2, "POST", &uri2, Some(&token2), Some(json!({"content": "once"})), &key).await;
    assert_eq!((replayed.status, &replayed.body["id"]), (StatusCode::ACCEPTED, &first.body["id"]));
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    let reused = call(&app2, "POST", &uri2, Some(&token2), Some(json!({"content": "other"})), &key).await;
    assert_eq!(reused.body["error"], "idempotency_key_reused");
    // Another user is not limited.
    let other = user(&app, "calm@example.com").await;
    let conv2 = conversation(&app, &other).await;
    post_message(&app, &other, &conv2, "hi").await;
    assert_eq!(metric(&env.metrics, "aira_rate_limited_total"), 1.0);
}

#[tokio::test]
async fn size_limits_give_clear_errors() {
    let env = Env::new(Limits { max_body_bytes: 4096, max_prompt_chars: 100, ..Limits::default() });
    let app = env.app();
    let token = user(&app, "big@example.com").await;
    let conv = conversation(&app, &token).await;
    let uri = format!("/v1/conversations/{conv}/messages");
    let huge = call(&app, "POST", &uri, Some(&token), Some(json!({"content": "x".repeat(10_000)})), &[]).await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(huge.body["error"], "body_too_large");
    let long = call(&app, "POST", &uri, Some(&token), Some(json!({"content": "é".repeat(101)})), &[]).await;
    assert_eq!(long.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(long.body["error"], "prompt_too_long");
    assert!(long.body["message"].as_str().unwrap().contains("100"));
    let ok = call(&app, "POST", &uri, Some(&token), Some(json!({"content": "é".repeat(100)})), &[]).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    let empty = call(&app, "POST", &uri, Some(&token), Some(json!({"content": "  "})), &[]).await;
    assert_eq!(empty.body["error"], "empty_prompt");
    let bad = call(&app, "POST", &uri, Some(&token), Some(json!({"text": "wrong field"})), &[]).await;
    assert_eq!((bad.status, bad.body["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_json")));
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let env = Env::new(Limits::default());
    let (app, ops) = (env.app(), env.ops());
    assert_eq!(call(&app, "GET", "/healthz", None, None, &[]).await.status, StatusCode::OK);
    // Readiness and metrics are on the operations listener only.
    for path in ["/readyz", "/metrics"] {
        assert_eq!(call(&app, "GET", path, None, None, &[]).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(call(&ops, "GET", "/readyz", None, None, &[]).await.body["ready"], true);
    let token = user(&app, "m@example.com").await;
    let conv = conversation(&app, &token).await;
    post_message(&app, &token, &conv, "count me").await;
    // A method outside the fixed set is counted as `other`, whatever the client sent.
    let odd = call(&app, "BREW", "/v1/conversations", Some(&token), None, &[]).await;
    assert_eq!(odd.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = call(&ops, "GET", "/metrics", None, None, &[]).await;
    let text = r.body.as_str().unwrap().to_string();
    assert!(
        text.contains(
            r#"aira_http_requests_total{method="POST",route="/v1/conversations/{id}/messages",status="202"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"aira_http_requests_total{method="other",route="/v1/conversations",status="405"} 1"#),
        "{text}"
    );
    assert!(!text.contains("BREW"), "{text}");
    assert!(text.contains("aira_http_request_duration_seconds_bucket"));
    assert!(text.contains("aira_messages_accepted_total 1"));
    assert!(!text.contains("count me"), "no user content in metrics");
    let r = call(&app, "GET", "/v1/nope", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.headers.contains_key("x-request-id"));
    let spec = call(&app, "GET", "/openapi.json", None, None, &[]).await;
    assert_eq!(spec.body["openapi"], "3.1.0");
    for path in [
        "/v1/auth/signup",
        "/v1/auth/login",
        "/v1/auth/tokens",
        "/v1/conversations",
        "/v1/conversations/{id}",
        "/v1/conversations/{id}/messages",
        "/v1/messages/{id}/events",
        "/v1/messages/{id}/stop",
        "/v1/me",
        "/v1/me/export",
        "/",
    ] {
        assert!(spec.body["paths"][path].is_object(), "openapi lacks {path}");
    }
    let _ = Status::Queued;
}

/// With the worker in the same process, the event stream wakes on the store's
/// announcements: here its poll period is 30 s, yet the answer arrives in well under that.
#[tokio::test]
async fn event_stream_wakes_on_in_process_announcements() {
    use aira_runtime::store::notify::Notifying;
    use aira_runtime::store::Store;
    use http_body_util::BodyExt;

    let env = Env::new(Limits::default());
    let notifying = Arc::new(Notifying::new(env.store.clone()));
    let store: Arc<dyn Store> = notifying.clone();
    let mut state = env.state.clone();
    state.store = store.clone();
    state.updates = Some(notifying.updates());
    state.events_poll = Duration::from_secs(30);
    let app = aira_runtime::api::app(state);
    let token = user(&app, "wake@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "wake me").await;

    let req = axum::http::Request::get(format!("/v1/messages/{id}/events"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let mut body = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap().into_body();
    let worker = Arc::new(aira_runtime::worker::Worker::new(
        env.queue.clone(),
        store,
        Arc::new(Echo),
        env.metrics.clone(),
        worker_config(),
    ));
    let (_w, _stop) = spawn_worker(worker);
    let mut text = String::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
            if text.contains("event: answered") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("answered long before the 30 s poll");
    // (`processing` may be skipped: echo answers before the stream reads the store.)
    assert!(text.contains("event: queued"), "{text}");
    assert!(text.contains("echo: wake me"), "{text}");
}

/// Behind the load balancer the sign-in limits key on the last `X-Forwarded-For` entry, the one
/// the load balancer appends: entries a client writes before it change nothing.
#[tokio::test]
async fn sign_in_limits_key_on_the_address_the_load_balancer_appends() {
    let mut env = Env::new(Limits { auth_address_per_minute: 1, auth_address_burst: 2, ..Limits::default() });
    env.state.trust_forwarded = true;
    let app = env.app();
    let creds = json!({"email": "nobody@example.com", "password": "not the password"});
    let login = |xff: &'static str| {
        let (app, creds) = (app.clone(), creds.clone());
        async move { call(&app, "POST", "/v1/auth/login", None, Some(creds), &[("x-forwarded-for", xff)]).await }
    };
    assert_eq!(login("203.0.113.1, 198.51.100.7").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(login("203.0.113.2, 198.51.100.7").await.status, StatusCode::UNAUTHORIZED);
    let limited = login("203.0.113.3, 198.51.100.7").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "a new first entry does not escape the limit");
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(login("203.0.113.3, 198.51.100.8").await.status, StatusCode::UNAUTHORIZED, "another client");
    // A password longer than any allowed is refused before it is hashed.
    let long = json!({"email": "nobody@example.com", "password": "p".repeat(1025)});
    let r = call(&app, "POST", "/v1/auth/login", None, Some(long), &[("x-forwarded-for", "198.51.100.9")]).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("password_too_long")));
}

#[tokio::test]
async fn tokens_are_listed_and_revoked_and_a_password_change_signs_out_everywhere_else() {
    let env = Env::new(Limits::default());
    tokens_and_password_change(&env.app(), "sessions@example.com").await;
}

#[tokio::test]
async fn conversations_are_titled_renamed_and_deleted() {
    let env = Env::new(Limits::default());
    titles_renames_and_deletions(&env.app(), "titles@example.com").await;
}

#[tokio::test]
async fn the_last_answer_is_generated_again_and_replaced() {
    let env = Env::new(Limits::default());
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::from_millis(300))).await;
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), worker_config()));
    regeneration(&env.app(), &fake, "regenerate@example.com").await;
}

#[tokio::test]
async fn malformed_ids_are_unknown_before_any_store_call() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let token = user(&app, "ids@example.com").await;
    malformed_ids_are_not_found(&app, &token).await;
}

/// An event stream of a message that is never answered ends soon after its token is revoked
/// (sign-out here), and at once when the server shuts down (the client reconnects elsewhere),
/// instead of holding the connection for its 10 minutes.
#[tokio::test]
async fn event_streams_end_at_sign_out_and_at_shutdown() {
    use http_body_util::BodyExt;

    let env = Env::new(Limits::default());
    let app = env.app();
    let open = |token: String, id: String| {
        let app = app.clone();
        async move {
            let req = axum::http::Request::get(format!("/v1/messages/{id}/events"))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap();
            tower::ServiceExt::oneshot(app, req).await.unwrap().into_body()
        }
    };
    // Reads frames until the stream ends; the time that took.
    let until_end = |mut body: axum::body::Body| async move {
        let started = std::time::Instant::now();
        let read = async { while body.frame().await.is_some() {} };
        tokio::time::timeout(Duration::from_secs(20), read).await.expect("the stream never ended");
        started.elapsed()
    };
    let token = user(&app, "streams@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "never answered").await;

    let body = open(token.clone(), id.clone()).await;
    let ending = tokio::spawn(until_end(body));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ending.is_finished(), "the stream ended before the sign-out");
    assert_eq!(call(&app, "POST", "/v1/auth/logout", Some(&token), None, &[]).await.status, StatusCode::NO_CONTENT);
    let took = ending.await.unwrap();
    assert!(took < Duration::from_secs(8), "ended {took:?} after opening");

    let token = user(&app, "streams2@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "never answered either").await;
    let ending = tokio::spawn(until_end(open(token, id).await));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ending.is_finished(), "the stream ended before the shutdown");
    env.state.shutdown.cancel();
    let took = ending.await.unwrap();
    assert!(took < Duration::from_secs(1), "ended {took:?} after opening, not at the shutdown");
}
