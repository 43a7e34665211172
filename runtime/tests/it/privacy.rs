//! What the user chose and what they own: consent enforced, history not kept when they said
//! so, accounts deleted to the last byte, spend budgets, failed messages answered only when
//! asked again, paged lists, the per-user stream cap, tokens no longer-lived than their session.

use std::path::Path;
use std::time::Duration;

use aira_runtime::api::Limits;
use aira_runtime::model::{day_of, now_ms, QueueBody, Status};
use aira_runtime::store::{Claim, ClaimTerms, Lease, PostContext, SpendReads, Store};
use axum::http::{header, StatusCode};
use axum::Router;
use serde_json::json;

use crate::common::*;

const SECS_20: Duration = Duration::from_secs(20);

/// Signs up without answering the consent screen; returns an API token.
async fn unconsented(app: &Router, email: &str) -> String {
    let creds = json!({"email": email, "password": "correct horse battery"});
    assert_eq!(call(app, "POST", "/v1/auth/signup", None, Some(creds.clone()), &[]).await.status, StatusCode::CREATED);
    let r = call(app, "POST", "/v1/auth/tokens", None, Some(creds), &[]).await;
    r.body["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn nothing_is_written_before_the_consent_screen_is_answered() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let token = unconsented(&app, "undecided@example.com").await;
    let r = call(&app, "POST", "/v1/conversations", Some(&token), None, &[]).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::CONFLICT, Some("consent_required")));
    // A conversation made before consent was enforced: posting into it is refused too.
    let user_id = call(&app, "GET", "/v1/me", Some(&token), None, &[]).await.body["id"].as_str().unwrap().to_string();
    let conv = aira_runtime::model::Conversation {
        id: aira_runtime::model::new_id(),
        user_id,
        created_at: now_ms(),
        title: None,
    };
    env.store.create_conversation(&conv).await.unwrap();
    let uri = format!("/v1/conversations/{}/messages", conv.id);
    let r = call(&app, "POST", &uri, Some(&token), Some(json!({"content": "hi"})), &[]).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::CONFLICT, Some("consent_required")));
    assert!(env.store.list_messages(&conv.id, None, 10).await.unwrap().is_empty());
    // Answering it (either way) opens the chat.
    let put = call(&app, "PUT", "/v1/me", Some(&token), Some(json!({"keep_history": false})), &[]).await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(call(&app, "POST", "/v1/conversations", Some(&token), None, &[]).await.status, StatusCode::CREATED);
    // Or at sign-up, for API clients.
    let t = user(&app, "decided@example.com").await;
    assert_eq!(call(&app, "POST", "/v1/conversations", Some(&t), None, &[]).await.status, StatusCode::CREATED);
}

/// With `keep_history: false`: the model gets the message alone (even with an earlier answer
/// of the conversation still stored), a delivered message is deleted, and one never fetched
/// goes at its retention. The caller runs a worker on `fake` and gives the app a retention
/// of one second. Shared by the SQLite and DynamoDB stores.
pub async fn unkept_history(app: &Router, store: &dyn Store, fake: &FakeLlm, email: &str) {
    let token = user(app, email).await;
    let put = call(app, "PUT", "/v1/me", Some(&token), Some(json!({"keep_history": false})), &[]).await;
    assert_eq!(put.status, StatusCode::OK);
    let conv = conversation(app, &token).await;
    let first = post_message(app, &token, &conv, "first secret").await;
    wait_status(store, &first, Status::Answered, SECS_20).await;
    let second = post_message(app, &token, &conv, "second secret").await;
    wait_status(store, &second, Status::Answered, SECS_20).await;
    let bodies = fake.bodies();
    let last = bodies.last().expect("the model was called");
    assert_eq!(last["messages"].as_array().unwrap().len(), 1, "the prompt alone: {last}");
    assert_eq!(last["messages"][0]["content"], "second secret");

    // Delivered: the answer once, then nothing stored.
    let got = call(app, "GET", &format!("/v1/messages/{first}"), Some(&token), None, &[]).await;
    assert_eq!(got.body["answer"], "fake: first secret");
    assert!(store.get_message(&first).await.unwrap().is_none(), "deleted once delivered");
    let listed = call(app, "GET", &format!("/v1/conversations/{conv}"), Some(&token), None, &[]).await;
    assert_eq!(listed.body["messages"][0]["answer"], "fake: second secret");
    assert!(store.list_messages(&conv, None, 10).await.unwrap().is_empty(), "the conversation holds nothing");
    let again = call(app, "GET", &format!("/v1/conversations/{conv}"), Some(&token), None, &[]).await;
    assert_eq!(again.body["messages"], json!([]));

    // Never fetched: deleted by the purge once its retention (1 s here) has passed.
    let third = post_message(app, &token, &conv, "third secret").await;
    wait_status(store, &third, Status::Answered, SECS_20).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let purged = store.purge_due(now_ms(), 100).await.unwrap();
    assert!(purged >= 1, "{purged}");
    assert!(store.get_message(&third).await.unwrap().is_none());
}

#[tokio::test]
async fn unkept_history_goes_to_the_model_alone_and_is_deleted_once_delivered() {
    let env = Env::new(Limits { unkept_retention: Duration::from_secs(1), ..Limits::default() });
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::ZERO)).await;
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), worker_config()));
    unkept_history(&env.app(), env.store.as_ref(), &fake, "unkept@example.com").await;
}

/// Every file of the folder, read whole.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

fn holding(files: &[(String, Vec<u8>)], needle: &str) -> Vec<String> {
    let n = needle.as_bytes();
    files.iter().filter(|(_, b)| b.windows(n.len()).any(|w| w == n)).map(|(f, _)| f.clone()).collect()
}

#[tokio::test]
async fn a_deleted_account_leaves_no_byte_of_its_email_or_messages_in_the_sqlite_files() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let email = "erase-me-3f9c@example.com";
    let token = user(&app, email).await;
    let conv = conversation(&app, &token).await;
    // The second spills into overflow pages.
    let secrets = ["prompt-7d1e-one".to_string(), "prompt-7d1e-two-with-a-longer-text-".repeat(200)];
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::ZERO)).await;
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), worker_config()));
    for (i, s) in secrets.iter().enumerate() {
        let uri = format!("/v1/conversations/{conv}/messages");
        let key = format!("key-{i}");
        let r = call(&app, "POST", &uri, Some(&token), Some(json!({"content": s})), &[("idempotency-key", &key)]).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        wait_status(env.store.as_ref(), r.body["id"].as_str().unwrap(), Status::Answered, SECS_20).await;
    }
    // Someone else's data stays, and the scan can find what is there: the check can fail.
    let other = user(&app, "keep-me@example.com").await;
    let other_conv = conversation(&app, &other).await;
    post_message(&app, &other, &other_conv, "prompt-of-someone-else").await;
    let before = files_of(env._dir.path());
    for needle in [email, secrets[0].as_str(), &secrets[1][..200], "fake: prompt-7d1e-one"] {
        assert!(!holding(&before, needle).is_empty(), "{needle} is in the files before the deletion");
    }

    let del =
        call(&app, "DELETE", "/v1/me", Some(&token), Some(json!({"password": "correct horse battery"})), &[]).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{:?}", del.body);
    let after = files_of(env._dir.path());
    for needle in [email, "prompt-7d1e", "fake: prompt-7d1e"] {
        assert_eq!(holding(&after, needle), Vec::<String>::new(), "{needle} left in the files");
    }
    assert!(!holding(&after, "keep-me@example.com").is_empty(), "the other account is untouched");
    assert_eq!(call(&app, "GET", "/v1/me", Some(&token), None, &[]).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn daily_budgets_refuse_with_their_own_errors_until_midnight() {
    // 7 model tokens per answer (the fake's usage): the second answer passes 10.
    let env = Env::new(Limits { user_daily_tokens: 10, ..Limits::default() });
    let app = env.app();
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::ZERO)).await;
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), worker_config()));
    let token = user(&app, "spender@example.com").await;
    let conv = conversation(&app, &token).await;
    let me = call(&app, "GET", "/v1/me", Some(&token), None, &[]).await;
    let user_id = me.body["id"].as_str().unwrap().to_string();
    for text in ["one", "two"] {
        let id = post_message(&app, &token, &conv, text).await;
        wait_status(env.store.as_ref(), &id, Status::Answered, SECS_20).await;
    }
    wait_spent(env.store.as_ref(), &user_id, |c| c.user_tokens_today >= 14).await;
    let uri = format!("/v1/conversations/{conv}/messages");
    let r = call(&app, "POST", &uri, Some(&token), Some(json!({"content": "three"})), &[]).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("daily_budget_spent")));
    let wait: u64 = r.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&wait), "{wait}");
    // Another user still has theirs.
    let other = user(&app, "saver@example.com").await;
    let other_conv = conversation(&app, &other).await;
    post_message(&app, &other, &other_conv, "mine").await;

    // The all-users budget: 503, whoever asks.
    let env = Env::new(Limits { user_daily_tokens: 0, all_daily_tokens: 10, ..Limits::default() });
    let app = env.app();
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), worker_config()));
    for email in ["a@example.com", "b@example.com"] {
        let t = user(&app, email).await;
        let c = conversation(&app, &t).await;
        let id = post_message(&app, &t, &c, "spend").await;
        wait_status(env.store.as_ref(), &id, Status::Answered, SECS_20).await;
    }
    wait_spent(env.store.as_ref(), &user_id, |c| c.all_tokens_today >= 14).await;
    let t = user(&app, "c@example.com").await;
    let c = conversation(&app, &t).await;
    let r =
        call(&app, "POST", &format!("/v1/conversations/{c}/messages"), Some(&t), Some(json!({"content": "x"})), &[])
            .await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("service_budget_spent")));
    assert!(r.headers.contains_key(header::RETRY_AFTER));
}

/// The worker counts the spend just after it stores the answer: wait for the count.
async fn wait_spent(store: &dyn Store, user_id: &str, done: impl Fn(&PostContext) -> bool) {
    wait_until("the spend counted", SECS_20, || async {
        let both = SpendReads { day: day_of(now_ms()), user: true, all: true };
        done(&store.post_context(user_id, "none", both).await.unwrap())
    })
    .await;
}

#[tokio::test]
async fn a_failed_message_is_answered_again_only_when_the_user_retries_it() {
    let env = Env::new(Limits::default());
    let app = env.app();
    // 400: the model refuses; the message fails at once.
    let fake = FakeLlm::start(vec![Behavior::Status(400)], Behavior::Answer(Duration::ZERO)).await;
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), worker_config()));
    let token = user(&app, "retry@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "try me").await;
    wait_status(env.store.as_ref(), &id, Status::Failed, SECS_20).await;
    // A duplicate delivery (a relay resend) is dropped: no second call, still failed.
    env.queue.send(&QueueBody::encode(&id)).await.unwrap();
    wait_until("the duplicate dropped", SECS_20, || async { env.queue.approximate_len().await.unwrap() == 0 }).await;
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(env.store.get_message(&id).await.unwrap().unwrap().status, Status::Failed);

    let r = call(&app, "POST", &format!("/v1/messages/{id}/retry"), Some(&token), None, &[]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["id"], id.as_str(), "the same message, not a new one");
    let m = wait_status(env.store.as_ref(), &id, Status::Answered, SECS_20).await;
    assert_eq!(m.answer.as_deref(), Some("fake: try me"));
    let r = call(&app, "POST", &format!("/v1/messages/{id}/retry"), Some(&token), None, &[]).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::CONFLICT, Some("not_failed")));
    env.queue.send(&QueueBody::encode(&id)).await.unwrap();
    wait_until("the late duplicate dropped", SECS_20, || async { env.queue.approximate_len().await.unwrap() == 0 })
        .await;
    assert_eq!(fake.calls().len(), 2, "answered once");
}

#[tokio::test]
async fn lists_come_in_pages() {
    let env = Env::new(Limits::default());
    pages(&env.app(), "pages@example.com").await;
}

/// Conversations and messages in pages, newest first, cursors checked. Shared by the SQLite and
/// DynamoDB stores.
pub async fn pages(app: &Router, email: &str) {
    let app = app.clone();
    let token = user(&app, email).await;
    let mut convs = Vec::new();
    for _ in 0..3 {
        convs.push(conversation(&app, &token).await);
    }
    let first = call(&app, "GET", "/v1/conversations?limit=2", Some(&token), None, &[]).await;
    let ids: Vec<&str> =
        first.body["conversations"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [convs[2].as_str(), convs[1].as_str()], "newest first");
    let next = first.body["next_before"].as_str().unwrap();
    let rest = call(&app, "GET", &format!("/v1/conversations?limit=2&before={next}"), Some(&token), None, &[]).await;
    assert_eq!(rest.body["conversations"][0]["id"], convs[0].as_str());
    assert!(rest.body["next_before"].is_null());
    for bad in ["limit=0", "limit=201", "before=not-an-id"] {
        let r = call(&app, "GET", &format!("/v1/conversations?{bad}"), Some(&token), None, &[]).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }

    let conv = &convs[0];
    let mut msgs = Vec::new();
    for text in ["m1", "m2", "m3"] {
        msgs.push(post_message(&app, &token, conv, text).await);
    }
    let page = call(&app, "GET", &format!("/v1/conversations/{conv}?limit=2"), Some(&token), None, &[]).await;
    let got: Vec<&str> =
        page.body["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(got, ["m2", "m3"], "the newest page, oldest first");
    let next = page.body["next_before"].as_str().unwrap();
    assert_eq!(next, msgs[1]);
    let older =
        call(&app, "GET", &format!("/v1/conversations/{conv}?limit=2&before={next}"), Some(&token), None, &[]).await;
    assert_eq!(older.body["messages"][0]["content"], "m1");
    assert!(older.body["next_before"].is_null());
}

#[tokio::test]
async fn a_user_holds_a_bounded_number_of_event_streams() {
    let env = Env::new(Limits { streams_per_user: 2, ..Limits::default() });
    let app = env.app();
    let token = user(&app, "streams@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "never answered here").await;
    let open = |app: Router| {
        let req = axum::http::Request::get(format!("/v1/messages/{id}/events"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap();
        async move { tower::ServiceExt::oneshot(app, req).await.unwrap() }
    };
    let a = open(app.clone()).await;
    let b = open(app.clone()).await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let third = open(app.clone()).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = user(&app, "other-streams@example.com").await;
    let r = call(&app, "GET", &format!("/v1/messages/{id}/events"), Some(&other), None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "the cap is per user; the message is not theirs");
    drop(a); // a client goes away: its slot is free again
    let again = open(app.clone()).await;
    assert_eq!(again.status(), StatusCode::OK);
    drop((b, again));
}

#[tokio::test]
async fn a_token_made_from_a_session_expires_with_it() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let (cookie, csrf) = crate::web::browser_session(&app, "session@example.com").await;
    let csrf = csrf.as_str();
    let from_session = call(&app, "POST", "/v1/auth/tokens", Some(&cookie), None, &[("x-csrf-token", csrf)]).await;
    assert_eq!(from_session.status, StatusCode::CREATED, "{:?}", from_session.body);
    let secs = from_session.body["expires_in"].as_i64().unwrap();
    assert!(secs <= 7 * 24 * 3600 && secs > 7 * 24 * 3600 - 60, "capped at the session's week: {secs}");
    // A token made from that token cannot outlive it either; the password gives the full term.
    let child = from_session.body["token"].as_str().unwrap();
    let grandchild = call(&app, "POST", "/v1/auth/tokens", Some(child), None, &[]).await;
    assert!(grandchild.body["expires_in"].as_i64().unwrap() <= secs);
    let creds = json!({"email": "session@example.com", "password": "correct horse battery"});
    let with_password = call(&app, "POST", "/v1/auth/tokens", None, Some(creds), &[]).await;
    assert_eq!(with_password.body["expires_in"], 90 * 24 * 3600);
}

/// A worker that dies on a message's last delivery: the queue will not deliver it again (the
/// next receive moves it to the dead-letter queue), so once the lease expires the message
/// reads `failed` and its event stream ends with that final event; the user's retry answers it.
pub async fn set_aside_on_its_last_delivery(app: &Router, store: &dyn Store, email: &str) {
    let token = user(app, email).await;
    let conv = conversation(app, &token).await;
    let id = post_message(app, &token, &conv, "last chance").await;
    let now = now_ms();
    let lease = Lease { message_id: id.clone(), claim_token: "dead-worker".into() };
    let terms = ClaimTerms { now_ms: now, lease_until_ms: now + 300, last_delivery: true };
    let claim = store.claim(&lease, terms).await.unwrap();
    assert!(matches!(claim, Claim::Claimed(_)), "{claim:?}");
    let r = call(app, "GET", &format!("/v1/messages/{id}"), Some(&token), None, &[]).await;
    assert_eq!(r.body["status"], "processing", "the lease still runs");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = call(app, "GET", &format!("/v1/messages/{id}"), Some(&token), None, &[]).await;
    assert_eq!(r.body["status"], "failed");
    assert_eq!(r.body["error"], aira_runtime::model::SET_ASIDE);
    let events = call(app, "GET", &format!("/v1/messages/{id}/events"), Some(&token), None, &[]).await;
    let text = events.body.as_str().unwrap().to_string();
    assert!(text.starts_with("event: failed"), "one final event: {text}");
    let retry = call(app, "POST", &format!("/v1/messages/{id}/retry"), Some(&token), None, &[]).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{:?}", retry.body);
    assert_eq!(store.get_message(&id).await.unwrap().unwrap().status, Status::Queued);
}

#[tokio::test]
async fn a_message_left_on_its_last_delivery_ends_failed_and_can_be_retried() {
    let env = Env::new(Limits::default());
    set_aside_on_its_last_delivery(&env.app(), env.store.as_ref(), "last@example.com").await;
}

#[tokio::test]
async fn conversations_are_created_no_faster_than_messages_are_posted() {
    let env = Env::new(Limits { messages_per_minute: 6, burst: 2, ..Limits::default() });
    let app = env.app();
    let token = user(&app, "many-conversations@example.com").await;
    let first = conversation(&app, &token).await;
    conversation(&app, &token).await;
    let r = call(&app, "POST", "/v1/conversations", Some(&token), None, &[]).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    // Posting has its own bucket.
    post_message(&app, &token, &first, "still allowed").await;
}
