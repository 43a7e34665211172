//! What aira-runtime asks of DynamoDB and SQS, counted (the `cost` bench of aira-runtime), run
//! with `bash bench/runtime-cost.sh`: the moto server behind the test proxy, which records every
//! call with its body. Not a timed test: request counts do not depend on the machine; figures in
//! docs/performance.md.
//!
//! The api (HTTP on loopback, outbox relay) and the worker (echo model) run in this process with
//! their production settings and one set of SDK clients, through the proxy. Three phases:
//! 1. idle: both tasks, no traffic, `COST_IDLE_SECS` (60): requests per task per minute;
//! 2. chat: `COST_USERS` (200) users each post `COST_MESSAGES` (2) messages one after another,
//!    each waiting for the answer before the next: requests per answered message, the wait
//!    aside (the worker announces its changes in-process and the bench reads the message from
//!    moto directly, not through the proxy; a user's event stream costs what phase 3 measures,
//!    for as long as the model takes);
//! 3. streams: `COST_STREAMS` (50) event streams held open on messages no worker answers, for
//!    `COST_STREAM_SECS` (60): requests per open stream per minute.
//!
//! Each request is also priced in capacity units (DynamoDB on-demand: a consistent read of up to
//! 4 KB is 1 read unit, an eventually consistent one ½; a write of up to 1 KB is 1 write unit; a
//! transaction's items count twice; SQS: one request per call) at us-east-1 on-demand prices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aira_runtime::api::{app, AppState, Limits};
use aira_runtime::metrics::Metrics;
use aira_runtime::queue::sqs::SqsQueue;
use aira_runtime::queue::Queue;
use aira_runtime::relay::Relay;
use aira_runtime::store::dynamo::DynamoStore;
use aira_runtime::store::notify::Notifying;
use aira_runtime::store::Store;
use aira_runtime::worker::{Worker, WorkerConfig};
use aira_testkit::proxy::{Faults, Proxy, Sent};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[path = "moto_stack.rs"]
mod moto_stack;
use moto_stack::{conf_at, Stack};

/// us-east-1 on-demand prices, dollars per million: DynamoDB read and write request units, SQS
/// standard requests.
const PRICE_RRU: f64 = 0.125;
const PRICE_WRU: f64 = 0.625;
const PRICE_SQS: f64 = 0.40;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // The runtime's warnings and errors, on stderr.
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("warn").init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

/// Requests by `service:Action`, and their capacity units.
#[derive(Default)]
struct Tally {
    calls: BTreeMap<String, u64>,
    rru: f64,
    wru: f64,
    sqs: f64,
}

impl Tally {
    fn of(sent: &[Sent]) -> Tally {
        let mut t = Tally::default();
        for s in sent {
            *t.calls.entry(s.call.clone()).or_default() += 1;
            let body = s.json();
            let consistent = if body["ConsistentRead"] == json!(true) { 1.0 } else { 0.5 };
            match s.call.as_str() {
                "dynamodb:GetItem" | "dynamodb:Query" => t.rru += consistent,
                "dynamodb:BatchGetItem" => {
                    for (_, req) in body["RequestItems"].as_object().into_iter().flatten() {
                        let c = if req["ConsistentRead"] == json!(true) { 1.0 } else { 0.5 };
                        t.rru += c * req["Keys"].as_array().map_or(0, Vec::len) as f64;
                    }
                }
                "dynamodb:PutItem" | "dynamodb:UpdateItem" | "dynamodb:DeleteItem" => t.wru += 1.0,
                "dynamodb:TransactWriteItems" => {
                    t.wru += 2.0 * body["TransactItems"].as_array().map_or(0, Vec::len) as f64
                }
                c if c.starts_with("sqs:") => t.sqs += 1.0,
                _ => {}
            }
        }
        t
    }

    /// Dollars per million of whatever the tally was divided by.
    fn dollars_per_million(&self, per: f64) -> f64 {
        (self.rru * PRICE_RRU + self.wru * PRICE_WRU + self.sqs * PRICE_SQS) / per
    }

    fn print(&self, title: &str, per: f64, unit: &str) {
        println!("\n{title} (per {unit}; {per:.1} {unit}s counted)");
        for (call, n) in &self.calls {
            println!("  {call:<34} {:>9.3}", *n as f64 / per);
        }
        let total: u64 = self.calls.values().sum();
        println!("  {:<34} {:>9.3}", "all requests", total as f64 / per);
        println!(
            "  capacity: {:.3} read units, {:.3} write units, {:.3} SQS requests; ${:.2} per million {unit}s",
            self.rru / per,
            self.wru / per,
            self.sqs / per,
            self.dollars_per_million(per)
        );
    }
}

/// The backends, through the proxy.
struct Backends {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
}

async fn backends(proxy: &str, stack: &Stack) -> Backends {
    let conf = conf_at(proxy).await;
    Backends {
        store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&conf), &stack.table)),
        queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&conf), &stack.queue_url)),
    }
}

/// The api: HTTP on loopback and the outbox relay; returns its base URL.
async fn start_api(b: &Backends, stop: CancellationToken) -> String {
    let (store, queue) = (b.store.clone(), b.queue.clone());
    let metrics = Arc::new(Metrics::new());
    // Rate limits out of the way (every user signs up from this one address); the budgets and
    // the in-flight cap at their production defaults, since each costs requests.
    let limits = Limits {
        messages_per_minute: 6000,
        burst: 1000,
        auth_address_per_minute: 100_000,
        auth_address_burst: 100_000,
        user_daily_tokens: 200_000,
        all_daily_tokens: 2_000_000,
        user_in_flight: 4,
        ..Limits::default()
    };
    let mut state = AppState::new(store.clone(), queue.clone(), metrics.clone(), limits);
    let relay = Arc::new(Relay::new(store, queue, metrics, Duration::from_secs(2), Duration::from_secs(5)));
    state.relay_wake = relay.wake.clone();
    tokio::spawn(relay.run(stop.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await.unwrap();
    });
    base
}

/// The worker, its changes announced on the returned channel (no store call added).
fn start_worker(
    b: &Backends,
    stop: CancellationToken,
) -> (tokio::task::JoinHandle<()>, tokio::sync::broadcast::Sender<Arc<str>>) {
    let notifying = Notifying::new(b.store.clone());
    let updates = notifying.updates();
    let echo = Arc::new(aira_runtime::llm::Echo);
    let config = WorkerConfig {
        user_in_flight: 4,
        user_daily_tokens: 200_000,
        all_daily_tokens: 2_000_000,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(b.queue.clone(), Arc::new(notifying), echo, Arc::new(Metrics::new()), config);
    (tokio::spawn(Arc::new(worker).run(stop)), updates)
}

/// A user with an API token and a conversation (consent given at sign-up).
async fn user(http: &reqwest::Client, base: &str, i: usize) -> (String, String) {
    let creds =
        json!({"email": format!("cost{i}@example.com"), "password": "cost bench password", "keep_history": true});
    assert_eq!(http.post(format!("{base}/v1/auth/signup")).json(&creds).send().await.unwrap().status(), 201);
    let t: Value = http.post(format!("{base}/v1/auth/tokens")).json(&creds).send().await.unwrap().json().await.unwrap();
    let token = t["token"].as_str().unwrap().to_string();
    let c: Value =
        http.post(format!("{base}/v1/conversations")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    (token, c["id"].as_str().unwrap().to_string())
}

async fn post(http: &reqwest::Client, base: &str, token: &str, conv: &str, text: &str) -> String {
    let r = http
        .post(format!("{base}/v1/conversations/{conv}/messages"))
        .bearer_auth(token)
        .json(&json!({"content": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Whether the message is answered within 5 minutes: read from the table when the worker
/// announces a change of it (or a second went by).
async fn answered_within(
    watch: &dyn Store,
    changes: &mut tokio::sync::broadcast::Receiver<Arc<str>>,
    id: &str,
) -> bool {
    let until = Instant::now() + Duration::from_secs(300);
    while Instant::now() < until {
        let announced = async {
            loop {
                match changes.recv().await {
                    Ok(changed) if &*changed == id => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), announced).await;
        let m = watch.get_message(id).await.ok().flatten();
        if m.is_some_and(|m| m.status == aira_runtime::model::Status::Answered) {
            return true;
        }
    }
    false
}

/// Follows a message's event stream until `answered` (or the stream ends); true when answered.
async fn follow(http: &reqwest::Client, base: &str, token: &str, id: &str) -> bool {
    let r = http.get(format!("{base}/v1/messages/{id}/events")).bearer_auth(token).send().await.unwrap();
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { return false };
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains("event: answered") {
            return true;
        }
    }
    false
}

async fn run() {
    let endpoint = std::env::var("AIRA_TEST_ENDPOINT")
        .expect("AIRA_TEST_ENDPOINT: the moto server (bench/runtime-cost.sh starts it)");
    let idle_secs = env_or("COST_IDLE_SECS", 60);
    let users = env_or("COST_USERS", 200) as usize;
    let per_user = env_or("COST_MESSAGES", 2) as usize;
    let streams = env_or("COST_STREAMS", 50) as usize;
    let stream_secs = env_or("COST_STREAM_SECS", 60);
    let proxy = Proxy::start(&endpoint, Faults { moto_only: true, ..Default::default() }).await;
    let stack = moto_stack::create(&conf_at(&endpoint).await, "cost").await;
    let http = reqwest::Client::new();

    // 1. Idle: both tasks, no traffic.
    let stop = CancellationToken::new();
    let b = backends(&proxy.url, &stack).await;
    // The bench's own reads (waiting for answers) go to moto directly: they are not counted.
    let watch: Arc<dyn Store> =
        Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&conf_at(&endpoint).await), &stack.table));
    let base = start_api(&b, stop.clone()).await;
    let worker_stop = CancellationToken::new();
    let (worker, updates) = start_worker(&b, worker_stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.take_requests();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle = proxy.take_requests();
    let minutes = idle_secs as f64 / 60.0;
    Tally::of(&idle).print("idle api task + idle worker task", minutes, "minute");

    // 2. Chat: users post one message after another, each followed on its event stream.
    let mut targets = Vec::new();
    for i in 0..users {
        targets.push(user(&http, &base, i).await);
    }
    proxy.take_requests();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (token, conv) in targets.clone() {
        let (http, base, watch, updates) = (http.clone(), base.clone(), watch.clone(), updates.clone());
        tasks.push(tokio::spawn(async move {
            let mut answered = 0u64;
            for n in 0..per_user {
                let mut changes = updates.subscribe();
                let id = post(&http, &base, &token, &conv, &format!("message {n} of a chat")).await;
                answered += u64::from(answered_within(watch.as_ref(), &mut changes, &id).await);
            }
            answered
        }));
    }
    let mut answered = 0u64;
    for t in tasks {
        answered += t.await.unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    // What follows an answer (spend, queue delete) lands after the stream's last event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let chat = proxy.take_requests();
    println!("\nchat: {users} users × {per_user} messages, {answered} answered in {took:.1} s");
    // The relay's scans (outbox and purge rows) run whether anyone chats or not: phase 1.
    let chat: Vec<Sent> = chat
        .into_iter()
        .filter(|s| !(s.call == "dynamodb:Query" && (s.body.contains("\"OUTBOX#") || s.body.contains("\"PURGE#"))))
        .collect();
    Tally::of(&chat).print("chatting, the relay's scans aside", answered as f64, "answered message");

    // 3. Streams held open on messages nobody answers.
    worker_stop.cancel();
    worker.await.unwrap();
    let mut open = Vec::new();
    for (token, conv) in targets.iter().take(streams) {
        let id = post(&http, &base, token, conv, "never answered").await;
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        open.push(tokio::spawn(async move { follow(&http, &base, &token, &id).await }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.take_requests();
    tokio::time::sleep(Duration::from_secs(stream_secs)).await;
    let held = proxy.take_requests();
    let stream_minutes = streams as f64 * stream_secs as f64 / 60.0;
    // Only the streams' reads: their messages and their tokens (the relay's queries are the
    // idle api task's).
    let reads: Vec<Sent> = held
        .into_iter()
        .filter(|s| s.call == "dynamodb:GetItem" && (s.body.contains("\"MSG#") || s.body.contains("\"TOKEN#")))
        .collect();
    Tally::of(&reads).print("event streams held open", stream_minutes, "stream-minute");
    for t in open {
        t.abort();
    }
    stop.cancel();
}
