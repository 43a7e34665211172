//! The worker and the relay under failures, on the embedded backends with the fake LLM.

use std::sync::Arc;
use std::time::Duration;

use aira_runtime::api::Limits;
use aira_runtime::dlq::redrive;
use aira_runtime::model::{new_id, now_ms, Message, QueueBody, Status};
use aira_runtime::queue::Queue;
use aira_runtime::relay::Relay;
use aira_runtime::store::Recorded;
use axum::http::StatusCode;
use serde_json::json;

use crate::common::*;

const SECS_10: Duration = Duration::from_secs(10);

/// Worker A dies (its task is aborted) during the LLM call; after the visibility timeout
/// worker B gets the message and answers it, once.
#[tokio::test]
async fn worker_killed_during_llm_call_is_answered_once_by_another() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let fake = FakeLlm::start(vec![Behavior::Hang], Behavior::Answer(Duration::ZERO)).await;
    let token = user(&app, "kill@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "survive me").await;

    let (a, _stop_a) = spawn_worker(env.worker(fake.client(Duration::from_secs(30)), worker_config()));
    wait_until("worker A to call the LLM", SECS_10, || async { fake.calls().len() == 1 }).await;
    assert_eq!(env.store.get_message(&id).await.unwrap().unwrap().status, Status::Processing);
    a.abort();
    let _ = a.await;

    let (_b, _stop_b) = spawn_worker(env.worker(fake.client(Duration::from_secs(30)), worker_config()));
    let m = wait_status(env.store.as_ref(), &id, Status::Answered, SECS_10).await;
    assert_eq!(m.answer.as_deref(), Some("fake: survive me"));
    wait_until("the queue to be empty", SECS_10, || async { env.queue.approximate_len().await.unwrap() == 0 }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.calls().len(), 2, "one hung call, one answering call");
    assert_eq!(metric(&env.metrics, "aira_worker_messages_total{outcome=\"answered\"}"), 1.0);
}

/// The same message enqueued twice (at-least-once delivery): one LLM call, one answer,
/// and both queue messages end deleted.
#[tokio::test]
async fn same_message_delivered_twice_is_answered_once() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::from_millis(400))).await;
    let token = user(&app, "dup@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "only once").await;
    env.queue.send(&QueueBody::encode(&id)).await.unwrap();
    assert_eq!(env.queue.approximate_len().await.unwrap(), 2);

    // A lease that cannot lapse during the call, even on a loaded machine.
    let cfg = aira_runtime::worker::WorkerConfig { visibility: Duration::from_secs(3), ..worker_config() };
    let (_w, _stop) = spawn_worker(env.worker(fake.client(SECS_10), cfg));
    let m = wait_status(env.store.as_ref(), &id, Status::Answered, SECS_10).await;
    assert_eq!(m.answer.as_deref(), Some("fake: only once"));
    wait_until("both deliveries deleted", SECS_10, || async { env.queue.approximate_len().await.unwrap() == 0 }).await;
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(metric(&env.metrics, "aira_worker_messages_total{outcome=\"answered\"}"), 1.0);
    assert_eq!(metric(&env.metrics, "aira_worker_messages_total{outcome=\"duplicate\"}"), 1.0);
}

/// The embedded backends (one file): by the time a POST answers 202, its message is in the
/// queue on disk, written in the message's own transaction. Read with a connection of the
/// test's own, apart from the runtime's: no outbox row, no second file.
#[tokio::test]
async fn an_embedded_post_is_queued_in_its_own_write() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let token = user(&app, "one-write@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "queued with its message").await;
    let file = rusqlite::Connection::open(env._dir.path().join("store.sqlite")).unwrap();
    let bodies: Vec<String> = file
        .prepare("SELECT body FROM queue_messages WHERE queue = 'aira'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(bodies.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["message_id"], id.as_str());
    let outbox: i64 = file.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(outbox, 0);
    assert!(!env._dir.path().join("queue.sqlite").exists());
    assert_eq!(metric(&env.metrics, "aira_queue_sent_total"), 1.0);
    // And the worker, woken by the write, answers it.
    let (_w, _stop) = spawn_worker(env.worker(Arc::new(aira_runtime::llm::Echo), worker_config()));
    wait_status(env.store.as_ref(), &id, Status::Answered, SECS_10).await;
}

/// A flood meets the backlog's bound: with 3 messages waiting and no worker, the next post is
/// refused with 503 `busy` and a Retry-After, and nothing of it is written; once a worker
/// answers them and the queue is counted again, posts are accepted again.
#[tokio::test]
async fn posts_beyond_the_backlog_bound_are_refused_until_the_worker_catches_up() {
    let env = Env::new(Limits { max_backlog: 3, ..Limits::default() });
    let stop_count = tokio_util::sync::CancellationToken::new();
    tokio::spawn(aira_runtime::run::count_backlog(
        env.queue.clone(),
        env.state.clone(),
        Duration::from_secs(1),
        stop_count.clone(),
    ));
    let app = env.app();
    let token = user(&app, "flood@example.com").await;
    let conv = conversation(&app, &token).await;
    for i in 0..3 {
        post_message(&app, &token, &conv, &format!("waiting {i}")).await;
    }
    let uri = format!("/v1/conversations/{conv}/messages");
    let post = |content: &'static str| call(&app, "POST", &uri, Some(&token), Some(json!({"content": content})), &[]);
    let refused = post("one too many").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "busy");
    assert_eq!(refused.headers.get("retry-after").unwrap(), "2");
    assert_eq!(metric(&env.metrics, "aira_messages_shed_total"), 1.0);
    // Read apart from the runtime: three messages and three queue entries, nothing of the fourth.
    let file = rusqlite::Connection::open(env._dir.path().join("store.sqlite")).unwrap();
    let count = |sql: &str| file.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT COUNT(*) FROM messages"), 3);
    assert_eq!(count("SELECT COUNT(*) FROM queue_messages"), 3);

    let (_w, _stop) = spawn_worker(env.worker(Arc::new(aira_runtime::llm::Echo), worker_config()));
    let deadline = std::time::Instant::now() + SECS_10;
    loop {
        let r = post("after the catch-up").await;
        if r.status == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert!(std::time::Instant::now() < deadline, "still refused after the worker caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_count.cancel();
}

/// A data folder from before the queue moved into the store's file: its queue's messages
/// (one waiting, one received and hidden) are moved into `store.sqlite`, the old file is
/// removed, and both are delivered.
#[tokio::test]
async fn a_queue_file_from_before_is_moved_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let old = rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap();
    old.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE queue_messages (
             id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, body TEXT NOT NULL,
             visible_at INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT);",
    )
    .unwrap();
    let now = now_ms();
    old.execute(
        "INSERT INTO queue_messages (queue, body, visible_at, receive_count, receipt) VALUES
         ('aira', ?1, ?3, 0, NULL), ('aira', ?2, ?4, 1, 'r-1')",
        rusqlite::params![QueueBody::encode("m-waiting"), QueueBody::encode("m-hidden"), now, now + 1_000],
    )
    .unwrap();
    drop(old);
    let e = aira_runtime::run::open_embedded(dir.path(), 3, aira_runtime::group_commit::Durability::Full).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        assert!(!dir.path().join(format!("queue.sqlite{suffix}")).exists(), "queue.sqlite{suffix} left");
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + SECS_10;
    while got.len() < 2 && std::time::Instant::now() < deadline {
        for r in e.queue.receive(10, Duration::from_millis(200), Duration::from_secs(30)).await.unwrap() {
            got.push((QueueBody::decode(&r.body).unwrap().message_id, r.receive_count));
        }
    }
    got.sort();
    assert_eq!(got, vec![("m-hidden".to_string(), 2), ("m-waiting".to_string(), 1)]);
}

/// Store and queue apart (as on AWS): the API recorded the message with its outbox row and
/// died before enqueueing; a relay started later sends it, and it is answered.
#[tokio::test]
async fn api_crash_between_record_and_enqueue_loses_nothing() {
    let env = Env::apart(Limits::default());
    let app = env.app();
    let token = user(&app, "crash@example.com").await;
    let conv = conversation(&app, &token).await;
    let user_id = env.store.get_conversation(&conv).await.unwrap().unwrap().user_id;
    let now = now_ms();
    let m = Message {
        id: new_id(),
        conversation_id: conv.clone(),
        user_id,
        content: "recorded, never enqueued".into(),
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
    // What post_message does before its enqueue; then the "crash": no send.
    assert_eq!(env.store.record_message(&m, None).await.unwrap(), Recorded::New);
    assert_eq!(env.queue.approximate_len().await.unwrap(), 0);
    assert_eq!(env.store.outbox_len().await.unwrap(), 1);

    let (_w, _stop) = spawn_worker(env.worker(Arc::new(aira_runtime::llm::Echo), worker_config()));
    let relay = Relay::new(
        env.store.clone(),
        env.queue.clone(),
        env.metrics.clone(),
        Duration::from_millis(100),
        Duration::ZERO,
    );
    let stop_relay = tokio_util::sync::CancellationToken::new();
    tokio::spawn(Arc::new(relay).run(stop_relay.clone()));
    let done = wait_status(env.store.as_ref(), &m.id, Status::Answered, SECS_10).await;
    assert!(done.answer.unwrap().contains("recorded, never enqueued"));
    assert_eq!(env.store.outbox_len().await.unwrap(), 0);
    assert_eq!(metric(&env.metrics, "aira_outbox_relayed_total"), 1.0);
    stop_relay.cancel();
}

/// Store and queue apart (as on AWS). The queue is down when the API enqueues: the POST still answers 202 (the message is
/// recorded), the row stays in the outbox, and the relay, woken by the failure although it
/// was pausing long between scans of an empty outbox, sends it at once (here, through the
/// working queue).
#[tokio::test]
async fn queue_outage_at_post_is_covered_by_the_outbox() {
    struct Down;
    #[async_trait::async_trait]
    impl Queue for Down {
        async fn send(&self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("queue unreachable")
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> anyhow::Result<Vec<aira_runtime::queue::Received>> {
            anyhow::bail!("queue unreachable")
        }
        async fn delete(&self, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("queue unreachable")
        }
        async fn change_visibility(&self, _: &str, _: Duration) -> anyhow::Result<()> {
            anyhow::bail!("queue unreachable")
        }
        async fn approximate_len(&self) -> anyhow::Result<u64> {
            anyhow::bail!("queue unreachable")
        }
    }
    let env = Env::apart(Limits::default());
    // The relay has scanned an empty outbox for a while: it pauses 3 s and more between scans.
    let relay = Arc::new(Relay::new(
        env.store.clone(),
        env.queue.clone(),
        env.metrics.clone(),
        Duration::from_millis(100),
        Duration::ZERO,
    ));
    let stop_relay = tokio_util::sync::CancellationToken::new();
    tokio::spawn(relay.clone().run(stop_relay.clone()));
    let mut down_state = env.state.clone();
    down_state.queue = Arc::new(Down);
    down_state.relay_wake = relay.wake.clone();
    let down_app_state = down_state.clone();
    let down_app = aira_runtime::api::app(down_state);
    let token = user(&down_app, "outage@example.com").await;
    let conv = conversation(&down_app, &token).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let posted = std::time::Instant::now();
    let id = post_message(&down_app, &token, &conv, "queue was down").await;
    let down_ops = aira_runtime::api::ops_app(down_app_state);
    assert_eq!(call(&down_ops, "GET", "/readyz", None, None, &[]).await.status, StatusCode::SERVICE_UNAVAILABLE);
    // The failed enqueue woke the relay: the row is sent at once, not at the next idle scan.
    wait_until("the relay sends the row", Duration::from_secs(1), || async {
        env.store.outbox_len().await.unwrap() == 0
    })
    .await;
    assert!(posted.elapsed() < Duration::from_secs(1));
    assert_eq!(metric(&env.metrics, "aira_outbox_relayed_total"), 1.0);
    let (_w, _stop) = spawn_worker(env.worker(Arc::new(aira_runtime::llm::Echo), worker_config()));
    wait_status(env.store.as_ref(), &id, Status::Answered, SECS_10).await;
}

/// An LLM that always fails with 500: after max receives the message is failed for the
/// user and in the dead-letter queue; after the LLM recovers, a redrive answers it.
#[tokio::test]
async fn always_failing_message_lands_in_dlq_then_redrive_answers_it() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let fake = FakeLlm::start(vec![], Behavior::Status(500)).await;
    let token = user(&app, "dlq@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "doomed for now").await;
    let cfg = aira_runtime::worker::WorkerConfig { retry_base: Duration::from_millis(400), ..worker_config() };
    let (_w, _stop) = spawn_worker(env.worker(fake.client(SECS_10), cfg));

    let dlq = env.backends.dead_letter.clone();
    wait_until("the message in the dead-letter queue", SECS_10, || async { dlq.approximate_len().await.unwrap() == 1 })
        .await;
    let m = wait_status(env.store.as_ref(), &id, Status::Failed, SECS_10).await;
    assert!(m.error.unwrap().contains("unavailable"));
    assert_eq!(fake.calls().len(), 3, "max receives = 3");
    assert_eq!(env.queue.approximate_len().await.unwrap(), 0);
    assert_eq!(metric(&env.metrics, "aira_worker_dead_lettered_total"), 1.0);
    assert_eq!(metric(&env.metrics, "aira_llm_errors_total{kind=\"server\"}"), 3.0);
    // Delays are 400 ms then 800 ms, ±20 %: the second wait is longer than any first one can be.
    let calls = fake.calls();
    let (d1, d2) = (calls[1] - calls[0], calls[2] - calls[1]);
    assert!(d1 >= Duration::from_millis(320), "first retry after {d1:?}");
    assert!(d2 >= Duration::from_millis(640), "second retry after {d2:?} (first {d1:?})");

    let c = call(&app, "GET", &format!("/v1/conversations/{conv}"), Some(&token), None, &[]).await;
    assert_eq!(c.body["messages"][0]["status"], "failed");

    fake.set_default(Behavior::Answer(Duration::ZERO));
    assert_eq!(redrive(dlq.as_ref(), env.queue.as_ref(), None).await.unwrap(), 1);
    assert_eq!(dlq.approximate_len().await.unwrap(), 0);
    let m = wait_status(env.store.as_ref(), &id, Status::Answered, SECS_10).await;
    assert_eq!(m.answer.as_deref(), Some("fake: doomed for now"));
}

/// 429 with Retry-After: the retry waits at least that long, then the message is answered.
#[tokio::test]
async fn rate_limited_llm_retries_after_retry_after() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let fake = FakeLlm::start(vec![Behavior::RateLimited(1)], Behavior::Answer(Duration::ZERO)).await;
    let token = user(&app, "429@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "patience").await;
    let (_w, _stop) = spawn_worker(env.worker(fake.client(SECS_10), worker_config()));
    wait_status(env.store.as_ref(), &id, Status::Answered, SECS_10).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[1] - calls[0] >= Duration::from_millis(900), "retried after {:?}", calls[1] - calls[0]);
    assert_eq!(metric(&env.metrics, "aira_llm_errors_total{kind=\"rate_limited\"}"), 1.0);
}

/// Hang (timeout) and a dropped connection are retried; the message is then answered.
#[tokio::test]
async fn hang_and_dropped_connection_are_retried() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let fake = FakeLlm::start(vec![Behavior::Hang, Behavior::Drop], Behavior::Answer(Duration::ZERO)).await;
    let token = user(&app, "flaky@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "through the storm").await;
    let mut cfg = worker_config();
    cfg.llm_timeout = Duration::from_millis(500);
    cfg.max_receives = 5;
    let (_w, _stop) = spawn_worker(env.worker(fake.client(SECS_10), cfg));
    let m = wait_status(env.store.as_ref(), &id, Status::Answered, SECS_10).await;
    assert_eq!(m.answer.as_deref(), Some("fake: through the storm"));
    assert_eq!(fake.calls().len(), 3);
    assert_eq!(metric(&env.metrics, "aira_llm_errors_total{kind=\"timeout\"}"), 1.0);
    assert_eq!(metric(&env.metrics, "aira_llm_errors_total{kind=\"connection\"}"), 1.0);
}

/// 401 and insufficient_quota fail at once: one call, message failed, queue message deleted.
#[tokio::test]
async fn bad_request_and_quota_fail_now() {
    for behavior in [Behavior::Status(401), Behavior::Status(400), Behavior::Quota] {
        let env = Env::new(Limits::default());
        let app = env.app();
        let fake = FakeLlm::start(vec![], behavior.clone()).await;
        let token = user(&app, "fatal@example.com").await;
        let conv = conversation(&app, &token).await;
        let id = post_message(&app, &token, &conv, "no hope").await;
        let (_w, stop) = spawn_worker(env.worker(fake.client(SECS_10), worker_config()));
        wait_status(env.store.as_ref(), &id, Status::Failed, SECS_10).await;
        wait_until("queue empty", SECS_10, || async { env.queue.approximate_len().await.unwrap() == 0 }).await;
        assert_eq!(fake.calls().len(), 1, "{behavior:?}: no retry");
        assert_eq!(env.backends.dead_letter.approximate_len().await.unwrap(), 0);
        stop.cancel();
    }
}

/// Concurrent retries of one POST with the same Idempotency-Key: one message, one id.
#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_make_one_message() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let token = user(&app, "retry@example.com").await;
    let conv = conversation(&app, &token).await;
    let uri = format!("/v1/conversations/{conv}/messages");
    let mut handles = Vec::new();
    for _ in 0..10 {
        let (app, token, uri) = (app.clone(), token.clone(), uri.clone());
        handles.push(tokio::spawn(async move {
            call(
                &app,
                "POST",
                &uri,
                Some(&token),
                Some(json!({"content": "just once"})),
                &[("idempotency-key", "retry-1")],
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        let r = h.await.unwrap();
        assert_eq!(r.status, StatusCode::ACCEPTED);
        ids.insert(r.body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(env.store.list_messages(&conv, None, 200).await.unwrap().len(), 1);
    let (_w, _stop) = spawn_worker(env.worker(Arc::new(aira_runtime::llm::Echo), worker_config()));
    wait_status(env.store.as_ref(), ids.iter().next().unwrap(), Status::Answered, SECS_10).await;
}

/// Shutdown with a message in flight: polling stops, the message is handed back at once.
#[tokio::test]
async fn shutdown_hands_back_in_flight_messages() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let fake = FakeLlm::start(vec![], Behavior::Hang).await;
    let token = user(&app, "stop@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "hand me back").await;
    let mut cfg = worker_config();
    cfg.visibility = Duration::from_secs(30);
    let (w, stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(60)), cfg));
    wait_until("the LLM call", SECS_10, || async { fake.calls().len() == 1 }).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), w).await.expect("worker exits after its grace").unwrap();
    assert_eq!(env.store.get_message(&id).await.unwrap().unwrap().status, Status::Queued);
    let again = env.queue.receive(10, Duration::ZERO, Duration::from_secs(30)).await.unwrap();
    assert_eq!(again.len(), 1, "visible again without waiting 30 s");
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(metric(&env.metrics, "aira_worker_messages_total{outcome=\"handed_back\"}"), 1.0);
}

/// The LLM gets the conversation so far: earlier prompts and answers, then the new prompt.
#[tokio::test]
async fn llm_receives_the_conversation_history() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::ZERO)).await;
    let token = user(&app, "history@example.com").await;
    let conv = conversation(&app, &token).await;
    let (_w, _stop) = spawn_worker(env.worker(fake.client(SECS_10), worker_config()));
    let first = post_message(&app, &token, &conv, "first question").await;
    wait_status(env.store.as_ref(), &first, Status::Answered, SECS_10).await;
    let second = post_message(&app, &token, &conv, "second question").await;
    wait_status(env.store.as_ref(), &second, Status::Answered, SECS_10).await;
    let bodies = fake.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[1]["model"], "fake-model");
    assert_eq!(
        bodies[1]["messages"],
        json!([
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "fake: first question"},
            {"role": "user", "content": "second question"},
        ])
    );
}

/// An LLM call three times longer than the visibility timeout: the heartbeat keeps the
/// message hidden, so a second worker never receives it and the LLM is called once.
#[tokio::test]
async fn heartbeat_keeps_a_long_call_from_being_redelivered() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::from_secs(3))).await;
    let token = user(&app, "slow@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "take your time").await;
    let (_a, _sa) = spawn_worker(env.worker(fake.client(SECS_10), worker_config()));
    let (_b, _sb) = spawn_worker(env.worker(fake.client(SECS_10), worker_config()));
    let m = wait_status(env.store.as_ref(), &id, Status::Answered, SECS_10).await;
    assert_eq!(m.answer.as_deref(), Some("fake: take your time"));
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(metric(&env.metrics, "aira_queue_received_total"), 1.0, "never redelivered");
}

/// The model unreachable (503) for 60 s while 100 messages are posted: the messages in hand wait
/// the outage out (visibility and lease extended, no receive burnt), the rest wait in the queue
/// while the worker slows its receiving; once the model is back all 100 are answered, none
/// reaches the dead-letter queue (3 receives would have taken them there), each is received
/// once and answered once.
#[tokio::test]
async fn a_minute_long_model_outage_loses_nothing_and_answers_each_message_once() {
    let env = Env::new(Limits { messages_per_minute: 100_000, burst: 1000, ..Limits::default() });
    let app = env.app();
    let fake = FakeLlm::start(vec![], Behavior::Status(503)).await;
    let cfg = aira_runtime::worker::WorkerConfig {
        max_in_flight: 16,
        visibility: Duration::from_secs(2),
        retry_max: Duration::from_secs(5),
        outage_budget: Duration::from_secs(300),
        ..worker_config()
    };
    let (worker, stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), cfg));
    let token = user(&app, "outage@example.com").await;
    let conv = conversation(&app, &token).await;
    let outage = std::time::Instant::now();
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(post_message(&app, &token, &conv, &format!("message {i}")).await);
    }
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed())).await;
    let failed_calls = fake.calls().len();
    assert_eq!(env.backends.dead_letter.approximate_len().await.unwrap(), 0, "dead-lettered during the outage");
    fake.set_default(Behavior::Answer(Duration::ZERO));

    for id in &ids {
        let m = wait_status(env.store.as_ref(), id, Status::Answered, Duration::from_secs(60)).await;
        assert!(m.answer.as_deref().is_some_and(|a| a.starts_with("fake: message ")), "{m:?}");
    }
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(env.backends.dead_letter.approximate_len().await.unwrap(), 0);
    assert_eq!(metric(&env.metrics, "aira_worker_dead_lettered_total"), 0.0);
    assert_eq!(metric(&env.metrics, "aira_worker_messages_total{outcome=\"answered\"}"), 100.0);
    assert_eq!(metric(&env.metrics, "aira_queue_received_total"), 100.0, "a receive was burnt");
    // The 16 messages in hand probe the model on their backoff; the other 84 did not call it.
    assert!(failed_calls < 16 * 30, "{failed_calls} calls during the outage");
    eprintln!("{failed_calls} model calls during the 60 s outage");
}
