//! Answers streamed as the model writes them: the event stream's `delta`s while the model is
//! still writing, a dropped stream resumed with `Last-Event-ID`, a stop that ends the model
//! call and keeps the partial answer; on the embedded store here, on DynamoDB in `aws.rs`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::common::*;
use aira_runtime::api::Limits;

/// One server-sent event: its name, id and data.
#[derive(Debug, Clone)]
pub struct Sse {
    pub name: String,
    pub id: String,
    pub data: Value,
}

/// An open event stream through the router.
pub struct Events {
    body: Body,
    buffer: String,
}

impl Events {
    pub async fn open(app: &Router, token: &str, id: &str, last_event_id: Option<&str>) -> Events {
        let mut req =
            Request::get(format!("/v1/messages/{id}/events")).header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(last) = last_event_id {
            req = req.header("last-event-id", last);
        }
        let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Events { body: resp.into_body(), buffer: String::new() }
    }

    /// The next event (comments skipped), or `None` when the stream ended or 10 s passed.
    pub async fn next(&mut self) -> Option<Sse> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    raw.lines()
                        .filter_map(|l| l.strip_prefix(&format!("{name}:")))
                        .map(|v| v.trim_start())
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                if field("event").is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&field("data")).unwrap_or(Value::Null);
                return Some(Sse { name: field("event"), id: field("id"), data });
            }
            let frame = tokio::time::timeout_at(deadline.into(), self.body.frame()).await.ok()??.ok()?;
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}

/// The text a client shows after an event: a status event's answer replaces it, a delta adds to it.
pub fn apply(text: &mut String, e: &Sse) {
    match e.name.as_str() {
        "delta" => text.push_str(e.data["text"].as_str().unwrap()),
        _ => *text = e.data["answer"].as_str().unwrap_or_default().to_string(),
    }
}

/// Streaming, resuming and stopping through the API, with a worker on `fake` whose default is
/// a slow answer (30 words, one each 100 ms).
pub async fn streaming(app: &Router, fake: &FakeLlm, email: &str) {
    let token = user(app, email).await;
    let conv = conversation(app, &token).await;
    let whole = slow_words(30);

    // The first words arrive while the model is still writing.
    let id = post_message(app, &token, &conv, "write slowly").await;
    let mut events = Events::open(app, &token, &id, None).await;
    let (mut text, mut last_id, mut deltas) = (String::new(), String::new(), 0);
    while deltas < 3 {
        let e = events.next().await.expect("an event");
        assert_ne!(e.name, "answered", "answered before three deltas were sent: {text:?}");
        apply(&mut text, &e);
        last_id = e.id.clone();
        deltas += usize::from(e.name == "delta");
    }
    assert!(whole.starts_with(&text) && text.len() < whole.len(), "{text:?}");
    let r = call(app, "GET", &format!("/v1/messages/{id}"), Some(&token), None, &[]).await;
    assert_eq!(r.body["status"], "processing", "the model is still writing: {:?}", r.body);
    // Dropped, then resumed from its last event: only what it had not had, then the end.
    drop(events);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut events = Events::open(app, &token, &id, Some(&last_id)).await;
    let first = events.next().await.expect("an event");
    assert_eq!(first.name, "delta", "resumed with the text it missed, not all of it: {first:?}");
    apply(&mut text, &first);
    loop {
        let e = events.next().await.expect("an event");
        apply(&mut text, &e);
        if e.name == "answered" {
            assert_eq!(e.data["stopped"], false);
            break;
        }
        assert!(whole.starts_with(&text), "{text:?}");
    }
    assert_eq!(text, whole);
    // An id that does not match the stored text (another attempt's) starts over, whole.
    let mut events = Events::open(app, &token, &id, Some("processing.6.0000000000000000")).await;
    let e = events.next().await.unwrap();
    assert_eq!((e.name.as_str(), e.data["answer"].as_str()), ("answered", Some(whole.as_str())));

    // Stopped mid-answer: the model call ends within a second or so, the partial text stays.
    let cut_before = fake.cut_streams().len();
    let id = post_message(app, &token, &conv, "write slowly again").await;
    let mut events = Events::open(app, &token, &id, None).await;
    let mut text = String::new();
    while text.is_empty() {
        let e = events.next().await.expect("an event");
        apply(&mut text, &e);
    }
    let stop = |token: String, id: String| async move {
        call(app, "POST", &format!("/v1/messages/{id}/stop"), Some(&token), None, &[]).await
    };
    let asked = Instant::now();
    let r = stop(token.clone(), id.clone()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let end = loop {
        let e = events.next().await.expect("an event");
        apply(&mut text, &e);
        if e.name == "answered" {
            break e;
        }
    };
    assert_eq!(end.data["stopped"], true, "{end:?}");
    let kept = end.data["answer"].as_str().unwrap();
    assert!(!kept.is_empty() && kept.len() < whole.len() && whole.starts_with(kept), "{kept:?}");
    wait_until("the model's stream closed", Duration::from_secs(5), || async { fake.cut_streams().len() > cut_before })
        .await;
    let cut_at = *fake.cut_streams().last().unwrap();
    assert!(
        cut_at.duration_since(asked) < Duration::from_secs(3),
        "the call ended {:?} after the stop",
        cut_at - asked
    );
    let again = stop(token.clone(), id.clone()).await;
    assert_eq!((again.status, again.body["error"].as_str()), (StatusCode::CONFLICT, Some("not_in_flight")));
    let other = user(app, &format!("other-{email}")).await;
    assert_eq!(stop(other, id.clone()).await.status, StatusCode::NOT_FOUND);
    // A stopped answer can be generated again: the whole answer, not stopped.
    let r = call(app, "POST", &format!("/v1/messages/{id}/regenerate"), Some(&token), None, &[]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let m = answered_via_api(app, &token, &id).await;
    assert_eq!((m["answer"].as_str(), m["stopped"].as_bool()), (Some(whole.as_str()), Some(false)));
}

#[tokio::test]
async fn answers_stream_resume_and_stop() {
    let env = Env::new(Limits::default());
    let fake = FakeLlm::start(vec![], Behavior::Slow { words: 30, every: Duration::from_millis(100) }).await;
    let config = aira_runtime::worker::WorkerConfig { stream_flush: Duration::from_millis(100), ..worker_config() };
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(20)), config));
    streaming(&env.app(), &fake, "stream@example.com").await;
}

/// A message stopped while queued is answered at once, empty and stopped, and never reaches
/// the model; its delivery is then a duplicate.
#[tokio::test]
async fn a_queued_message_stopped_never_reaches_the_model() {
    let env = Env::new(Limits::default());
    let app = env.app();
    let token = user(&app, "stop-queued@example.com").await;
    let conv = conversation(&app, &token).await;
    let id = post_message(&app, &token, &conv, "never mind").await;
    let r = call(&app, "POST", &format!("/v1/messages/{id}/stop"), Some(&token), None, &[]).await;
    assert_eq!((r.status, r.body["stopped"].as_bool()), (StatusCode::OK, Some(true)), "{:?}", r.body);
    let fake = FakeLlm::start(vec![], Behavior::Answer(Duration::ZERO)).await;
    let (_w, _stop) = spawn_worker(env.worker(fake.client(Duration::from_secs(5)), worker_config()));
    let m = answered_via_api(&app, &token, &id).await;
    assert_eq!((m["answer"].as_str(), m["stopped"].as_bool()), (Some(""), Some(true)));
    wait_until("the delivery absorbed", Duration::from_secs(5), || async {
        metric(&env.metrics, "aira_worker_messages_total{outcome=\"duplicate\"}") >= 1.0
    })
    .await;
    assert_eq!(fake.calls().len(), 0, "the model was called for a stopped message");
    // The next message's history skips the stopped, empty turn.
    let next = post_message(&app, &token, &conv, "and now").await;
    answered_via_api(&app, &token, &next).await;
    let turns = fake.bodies().last().unwrap()["messages"].as_array().unwrap().len();
    assert_eq!(turns, 1, "{:?}", fake.bodies());
}
