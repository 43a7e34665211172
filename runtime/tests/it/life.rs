//! What only shows over a deployment's life: an api task that has accepted far more than its
//! backlog bound, limits that hold across api tasks (kept in DynamoDB), a message whose call
//! times out or comes back empty or huge, and nothing that grows with attacker-chosen keys.

use std::time::Duration;

use aira_runtime::api::Limits;
use aira_runtime::model::Status;
use axum::http::StatusCode;
use serde_json::json;

use crate::aws::setup;
use crate::common::*;

const SECS_20: Duration = Duration::from_secs(20);

/// A deployed `api` task with a backlog bound of 20 accepts 100 messages one after another,
/// each answered by a worker: it counts the queue (SQS, every second here) and so never
/// refuses a post while the queue is empty. Before, the api only added its posts and refused
/// every post after the 20th. (Between two counts the posts accepted since are added: the
/// bound is above what one second of these posts adds.)
#[tokio::test]
async fn moto_an_api_task_accepts_far_past_its_backlog_bound() {
    let env = setup(3).await;
    let api = env
        .process(
            "api",
            &[
                ("AIRA_MAX_BACKLOG", "20"),
                ("AIRA_BACKLOG_COUNT_SECS", "1"),
                ("AIRA_RATE_BURST", "1000"),
                ("AIRA_USER_IN_FLIGHT", "0"),
            ],
        )
        .await;
    let worker = env.process("worker", &[("AIRA_RECEIVE_WAIT_SECS", "1")]).await;
    let http = reqwest::Client::new();
    let (token, conv) = sign_up_over_http(&http, &api.base, "long-life@example.com").await;
    for i in 0..100 {
        let m = answered_over_http(&http, &api.base, &token, &conv, &format!("message {i}")).await;
        assert_eq!(m["answer"], format!("echo: message {i}"));
    }
    assert_eq!(api.metric("aira_messages_shed_total").await, 0.0, "{}", api.log());
    assert_eq!(api.metric("aira_messages_accepted_total").await, 100.0);
    // And the bound holds: with no worker, posts are refused once about 20 wait (a task that
    // never counted would accept them all), and accepted again once a worker drains the queue.
    drop(worker);
    let post = |i: usize| {
        http.post(format!("{}/v1/conversations/{conv}/messages", api.base))
            .bearer_auth(&token)
            .json(&json!({"content": format!("waiting {i}")}))
            .send()
    };
    let mut accepted = 0;
    for i in 0..60 {
        match post(i).await.unwrap().status().as_u16() {
            202 => accepted += 1,
            503 => break,
            s => panic!("status {s}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!((20..40).contains(&accepted), "accepted {accepted} with no worker, bound 20");
    let _worker = env.process("worker", &[("AIRA_RECEIVE_WAIT_SECS", "1")]).await;
    wait_until("posts accepted again", SECS_20, || async { post(99).await.unwrap().status() == 202 }).await;
}

/// Two api tasks on one table give a user the limits of one: the per-user message limit and
/// the per-account sign-in limit are kept in DynamoDB (conditional counts per window). With
/// in-process buckets alone, each task would grant its own burst: 6 posts and 6 sign-in
/// attempts here instead of 3 and 2.
#[tokio::test]
async fn moto_two_api_tasks_give_an_attacker_the_limits_of_one() {
    let env = setup(3).await;
    let settings = [
        ("AIRA_RATE_PER_MINUTE", "3"),
        ("AIRA_RATE_BURST", "3"),
        ("AIRA_AUTH_RATE_PER_MINUTE", "4"),
        ("AIRA_AUTH_RATE_BURST", "4"),
        ("AIRA_AUTH_ADDRESS_RATE_BURST", "1000"),
        ("AIRA_USER_IN_FLIGHT", "0"),
    ];
    let (a, b) = (env.process("api", &settings).await, env.process("api", &settings).await);
    let http = reqwest::Client::new();
    // A window of the shared count lasts burst / rate minutes (a minute here). The run starts
    // with 20 s or more of its window left, so that it fits in one: a run that crossed into the
    // next window would find the next count begun (and the tasks' own buckets spent), as a
    // retry in the same window would. The sign-up's attempts count in it too.
    let window = |ms: i64| ms.div_euclid(60_000);
    let into = aira_runtime::model::now_ms().rem_euclid(60_000);
    if into > 40_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - into + 200) as u64)).await;
    }
    let started = aira_runtime::model::now_ms();
    let (token, conv) = sign_up_over_http(&http, &a.base, "two-tasks@example.com").await;
    let mut accepted = 0;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let r = http
            .post(format!("{base}/v1/conversations/{conv}/messages"))
            .bearer_auth(&token)
            .json(&json!({"content": format!("burst {i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        accepted += usize::from(r.status() == 202);
    }
    let mut guesses = Vec::new();
    for i in 0..10 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let wrong = json!({"email": "two-tasks@example.com", "password": "not the password"});
        guesses.push(http.post(format!("{base}/v1/auth/login")).json(&wrong).send().await.unwrap().status().as_u16());
    }
    assert_eq!(window(started), window(aira_runtime::model::now_ms()), "the run took more than 20 s");
    assert_eq!(accepted, 3, "posts across two tasks: {statuses:?}");
    assert!(statuses[3..].iter().all(|&s| s == 429), "{statuses:?}");
    // Sign-up and the token took 2 of the account's 4 attempts from this address (on task a);
    // in-process buckets alone would leave 2 on a and 4 on b.
    assert_eq!(guesses.iter().filter(|&&s| s == 401).count(), 2, "sign-in attempts across two tasks: {guesses:?}");
    assert!(guesses[2..].iter().all(|&s| s == 429), "{guesses:?}");
}

/// One message's failures stay its own: a prompt whose call outlasts the model timeout, one
/// that gets an empty answer, and one whose answer is huge each cost at most two calls, end in
/// their final state at once (not after five deliveries), and never pause the worker for the
/// others, whose messages are answered meanwhile.
#[tokio::test]
async fn a_failing_message_costs_two_calls_and_slows_no_one() {
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::ZERO)).await;
    fake.set_rule("[slow]", Behavior::Hang);
    fake.set_rule("[empty]", Behavior::Empty);
    fake.set_rule("[huge]", Behavior::Huge(1 << 20));
    let env = Env::new(Limits { messages_per_minute: 1000, burst: 1000, ..Limits::default() });
    let config = aira_runtime::worker::WorkerConfig {
        llm_timeout: Duration::from_millis(500),
        max_answer_bytes: 4096,
        outage_budget: Duration::from_secs(60),
        ..worker_config()
    };
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), config));
    let app = env.app();
    let mallory = user(&app, "mallory@example.com").await;
    let alice = user(&app, "alice@example.com").await;
    let (mc, ac) = (conversation(&app, &mallory).await, conversation(&app, &alice).await);
    let slow = post_message(&app, &mallory, &mc, "[slow] a question that never ends").await;
    let empty = post_message(&app, &mallory, &mc, "[empty] nothing comes back").await;
    let huge = post_message(&app, &mallory, &mc, "[huge] the whole library").await;
    let mut answered = Vec::new();
    for i in 0..10 {
        answered.push(post_message(&app, &alice, &ac, &format!("alice {i}")).await);
    }
    for id in &answered {
        wait_status(env.store.as_ref(), id, Status::Answered, SECS_20).await;
    }
    let m = wait_status(env.store.as_ref(), &slow, Status::Failed, SECS_20).await;
    assert!(m.error.unwrap().contains("too long"));
    wait_status(env.store.as_ref(), &empty, Status::Failed, SECS_20).await;
    let m = wait_status(env.store.as_ref(), &huge, Status::Answered, SECS_20).await;
    let answer = m.answer.unwrap();
    assert!(answer.len() <= 4096 && answer.ends_with("[answer cut: too long to keep]"), "{}", answer.len());
    let calls = |tag: &str| fake.bodies().iter().filter(|b| b.to_string().contains(tag)).count();
    assert_eq!((calls("[slow]"), calls("[empty]"), calls("[huge]")), (2, 2, 1));
    assert_eq!(metric(&env.metrics, "aira_worker_messages_total{outcome=\"retried\"}"), 0.0);
    assert_eq!(metric(&env.metrics, "aira_worker_dead_lettered_total"), 0.0);
}

/// Spend is charged when a message is claimed, before the call: a message that would take
/// its user past the day's budget fails at the claim with no model call (the post-time check
/// saw the budget not yet spent), and a retry of a failed message checks the budget as a post
/// does.
#[tokio::test]
async fn spend_is_charged_at_the_claim_and_a_retry_checks_the_budget() {
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::ZERO)).await;
    let env = Env::new(Limits { user_daily_tokens: 1500, ..Limits::default() });
    let app = env.app();
    let token = user(&app, "spender-at-claim@example.com").await;
    let conv = conversation(&app, &token).await;
    let config = aira_runtime::worker::WorkerConfig { max_tokens: 1000, user_daily_tokens: 1500, ..worker_config() };
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), config));
    // Charged 1000 (the answer's most) and a third of the prompt's characters, settled to 7.
    let first = post_message(&app, &token, &conv, "first").await;
    wait_status(env.store.as_ref(), &first, Status::Answered, SECS_20).await;
    let user_id = call(&app, "GET", "/v1/me", Some(&token), None, &[]).await.body["id"].as_str().unwrap().to_string();
    let today = aira_runtime::model::day_of(aira_runtime::model::now_ms());
    env.store.add_spend(&user_id, today, 1000).await.unwrap();
    let calls_before = fake.calls().len();
    // 1007 spent: under 1500, so the post is accepted; 1007 + 1002 is over, so no call.
    let second = post_message(&app, &token, &conv, "second").await;
    let m = wait_status(env.store.as_ref(), &second, Status::Failed, SECS_20).await;
    assert!(m.error.unwrap().contains("tokens of today are spent"), "failed for its budget");
    assert_eq!(fake.calls().len(), calls_before, "no model call past the budget");
    assert_eq!(metric(&env.metrics, "aira_worker_messages_total{outcome=\"budget_spent\"}"), 1.0);
    // Nothing stays charged for it: a retry now would be accepted; once the day's tokens are
    // spent it is refused as a post is.
    env.store.add_spend(&user_id, today, 1000).await.unwrap();
    let r = call(&app, "POST", &format!("/v1/messages/{second}/retry"), Some(&token), None, &[]).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("daily_budget_spent")));
}

/// A sign-in flood of random emails from one address: once the address is refused, no account
/// bucket is touched, so the limiter's keys stay at what the address was allowed (its burst),
/// not one per email tried.
#[tokio::test]
async fn a_refused_address_adds_no_account_keys() {
    let env = Env::new(Limits { auth_address_per_minute: 1, auth_address_burst: 5, ..Limits::default() });
    let app = env.app();
    let mut refused = 0;
    for i in 0..300 {
        let creds = json!({"email": format!("random-{i}@example.com"), "password": "a guess at random"});
        let r = call(&app, "POST", "/v1/auth/login", None, Some(creds), &[]).await;
        refused += usize::from(r.status == StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(refused, 295);
    assert_eq!(env.state.auth_rate.per_account.entries(), 5, "one key per attempt the address was allowed");
}

/// The embedded store's side of the deletion race: a profile written after the account's
/// deletion is refused (`Gone`), and nothing of it is in the file.
#[tokio::test]
async fn a_profile_written_after_the_deletion_writes_nothing() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let token = user(&app, "sqlite-race@example.com").await;
    let late = env.store.user_by_email("sqlite-race@example.com").await.unwrap().expect("the account");
    let r = call(&app, "DELETE", "/v1/me", Some(&token), Some(json!({"password": "correct horse battery"})), &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let profile =
        aira_runtime::model::Profile { display_name: Some("late".into()), keep_history: true, consented_at: Some(1) };
    assert!(matches!(env.store.put_profile(&late.id, &profile).await, Err(aira_runtime::store::StoreError::Gone)));
    let file = rusqlite::Connection::open(env._dir.path().join("store.sqlite")).unwrap();
    let n: i64 = file.query_row("SELECT COUNT(*) FROM profiles", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
}

/// One user cannot fill the worker's slots: past `user_in_flight` messages waiting or being
/// answered, a post is refused with 429 `too_many_in_flight`, and accepted again once the
/// worker answered one. Another user is not affected.
#[tokio::test]
async fn a_user_holds_at_most_their_in_flight_cap() {
    let env = Env::new(Limits { user_in_flight: 2, ..Limits::default() });
    let app = env.app();
    let (hog, other) = (user(&app, "hog@example.com").await, user(&app, "other@example.com").await);
    let (hc, oc) = (conversation(&app, &hog).await, conversation(&app, &other).await);
    let uri = format!("/v1/conversations/{hc}/messages");
    post_message(&app, &hog, &hc, "one").await;
    post_message(&app, &hog, &hc, "two").await;
    let r = call(&app, "POST", &uri, Some(&hog), Some(json!({"content": "three"})), &[]).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_in_flight")));
    assert_eq!(r.headers.get("retry-after").unwrap(), "2");
    post_message(&app, &other, &oc, "unaffected").await;
    let config = aira_runtime::worker::WorkerConfig { user_in_flight: 2, ..worker_config() };
    let (_w, _stop) = spawn_worker(env.worker(std::sync::Arc::new(aira_runtime::llm::Echo), config));
    wait_until("a slot free again", SECS_20, || async {
        call(&app, "POST", &uri, Some(&hog), Some(json!({"content": "three"})), &[]).await.status
            == StatusCode::ACCEPTED
    })
    .await;
}

/// A page of long messages is bounded in bytes, not only in count: `limit=200` over 130
/// messages of 8,000 characters gives the newest that fit in 1 MiB and a cursor to the rest,
/// and paging through gives every message once.
#[tokio::test]
async fn pages_of_long_messages_are_bounded_in_bytes() {
    let env = Env::new(Limits { messages_per_minute: 100_000, burst: 1000, ..Limits::default() });
    let app = env.app();
    let token = user(&app, "long-pages@example.com").await;
    let conv = conversation(&app, &token).await;
    let mut posted = Vec::new();
    for i in 0..130 {
        posted.push(post_message(&app, &token, &conv, &format!("{i:04}{}", "x".repeat(7996))).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/conversations/{conv}?limit=200&before={c}"),
            None => format!("/v1/conversations/{conv}?limit=200"),
        };
        let r = call(&app, "GET", &uri, Some(&token), None, &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.to_string().len() < (1 << 20) + 64 * 1024, "a page of {} bytes", r.body.to_string().len());
        let ids: Vec<String> =
            r.body["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
        seen.splice(0..0, ids);
        pages += 1;
        match r.body["next_before"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 2, "130 messages of 8 KB: two pages");
    assert_eq!(seen, posted, "every message once, oldest first");
}

/// A user holds at most `MAX_TOKENS` tokens: signing in again and again revokes the oldest, so
/// the token list (and what a password change revokes) stays bounded. The first token stops
/// working; the newest works.
#[tokio::test]
async fn a_user_holds_a_bounded_number_of_tokens() {
    let env = Env::new(Limits { auth_burst: 1000, auth_address_burst: 1000, ..Limits::default() });
    let app = env.app();
    let first = user(&app, "many-sign-ins@example.com").await;
    let creds = json!({"email": "many-sign-ins@example.com", "password": "correct horse battery"});
    let mut last = String::new();
    for _ in 0..aira_runtime::store::MAX_TOKENS + 5 {
        // A millisecond apart: tokens are ordered by their creation time.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let r = call(&app, "POST", "/v1/auth/tokens", None, Some(creds.clone()), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        last = r.body["token"].as_str().unwrap().to_string();
    }
    let list = call(&app, "GET", "/v1/auth/tokens", Some(&last), None, &[]).await;
    assert_eq!(list.body["tokens"].as_array().unwrap().len(), aira_runtime::store::MAX_TOKENS);
    assert_eq!(call(&app, "GET", "/v1/conversations", Some(&first), None, &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, "GET", "/v1/conversations", Some(&last), None, &[]).await.status, StatusCode::OK);
}

/// Guesses from one address cannot keep the owner out: once the attacker's address has spent
/// the account's attempts, the owner signs in from their own address at once.
#[tokio::test]
async fn wrong_passwords_from_elsewhere_do_not_lock_the_owner_out() {
    let mut env = Env::new(Limits { auth_per_minute: 1, auth_burst: 3, ..Limits::default() });
    env.state.trust_forwarded = true;
    let app = env.app();
    let owner = json!({"email": "victim@example.com", "password": "correct horse battery"});
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let r = call(&app, "POST", "/v1/auth/signup", None, Some(owner.clone()), &from("192.0.2.1")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let wrong = json!({"email": "victim@example.com", "password": "a wrong guess"});
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses
            .push(call(&app, "POST", "/v1/auth/login", None, Some(wrong.clone()), &from("203.0.113.66")).await.status);
    }
    assert_eq!(statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 3], "{statuses:?}");
    let r = call(&app, "POST", "/v1/auth/login", None, Some(owner), &from("192.0.2.1")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

/// The history sent with a prompt is cut by size, newest first: a conversation of long
/// answered turns sends only those that fit in `history_chars`, so it never outgrows the
/// model's context and keeps being answered.
#[tokio::test]
async fn history_is_cut_by_size() {
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::ZERO)).await;
    let env = Env::new(Limits { messages_per_minute: 1000, burst: 1000, ..Limits::default() });
    let config = aira_runtime::worker::WorkerConfig { history_chars: 20_000, ..worker_config() };
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), config));
    let app = env.app();
    let token = user(&app, "deep@example.com").await;
    let conv = conversation(&app, &token).await;
    for i in 0..8 {
        // About 4,000 characters a prompt and as many in its answer ("fake: " and the prompt).
        let id = post_message(&app, &token, &conv, &format!("{i} {}", "y".repeat(4000))).await;
        wait_status(env.store.as_ref(), &id, Status::Answered, SECS_20).await;
    }
    let last = fake.bodies().pop().unwrap();
    let turns = last["messages"].as_array().unwrap();
    let chars: usize = turns[..turns.len() - 1].iter().map(|t| t["content"].as_str().unwrap().chars().count()).sum();
    assert!(chars <= 20_000, "{chars} characters of history");
    // Two turns a message of about 8,000 characters: the newest two fit, not more.
    assert_eq!(turns.len(), 2 * 2 + 1, "the newest two earlier messages and the prompt");
    assert!(turns[turns.len() - 3]["content"].as_str().unwrap().starts_with("6 "), "the newest first");
}

/// Exports and event streams are bounded per process, whatever the users: past the bound a
/// request is refused with 503 `busy` and `Retry-After`, and accepted again once one ends.
#[tokio::test]
async fn exports_and_streams_are_bounded_per_process() {
    let env = Env::new(Limits { max_exports: 1, max_streams: 2, ..Limits::default() });
    let app = env.app();
    let (a, b) = (user(&app, "export-a@example.com").await, user(&app, "export-b@example.com").await);
    // An export held open (its body not read): the second is refused. Its user has more
    // conversations than the export's buffer holds chunks (4), so it cannot finish unread.
    for _ in 0..5 {
        conversation(&app, &a).await;
    }
    let req = |t: &str| {
        axum::http::Request::get("/v1/me/export")
            .header("authorization", format!("Bearer {t}"))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    use tower::ServiceExt;
    let held = app.clone().oneshot(req(&a)).await.unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    let r = reply(app.clone().oneshot(req(&b)).await.unwrap()).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("busy")));
    assert!(r.headers.get("retry-after").is_some());
    let _ = axum::body::to_bytes(held.into_body(), usize::MAX).await.unwrap();
    wait_until("the export's slot free", SECS_20, || async {
        app.clone().oneshot(req(&b)).await.unwrap().status() == StatusCode::OK
    })
    .await;
    // Two streams of two users: a third user's is refused.
    let c = user(&app, "stream-c@example.com").await;
    let mut open = Vec::new();
    for t in [&a, &b, &c] {
        let conv = conversation(&app, t).await;
        let id = post_message(&app, t, &conv, "pending").await;
        let req = axum::http::Request::get(format!("/v1/messages/{id}/events"))
            .header("authorization", format!("Bearer {t}"))
            .body(axum::body::Body::empty())
            .unwrap();
        open.push(app.clone().oneshot(req).await.unwrap());
    }
    let statuses: Vec<StatusCode> = open.iter().map(|r| r.status()).collect();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]);
    assert_eq!(metric(&env.metrics, "aira_event_streams_open"), 2.0);
}
