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
//! Each request is also priced in capacity units at us-east-1 on-demand prices, by the size of
//! the items it touches (DynamoDB Developer Guide, "Read/write capacity mode" and "Item sizes"):
//! a consistent read is 1 read unit per 4 KB (rounded up), an eventually consistent one half; a
//! query's items add up before rounding; a write is 1 write unit per 1 KB of the item (for an
//! update, the larger of the item before and after: the item as the table holds it at the end
//! of the phase, read with a scan the bench does not count); a transaction's items count twice;
//! SQS: one request per call. Where the item is gone by then (outbox rows, deleted), 1 unit.
//! `COST_PROMPT_BYTES` pads each chat message to that size: the echo model answers with the
//! prompt, so the message item holds both — answers of that size, as a model's are.

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

/// The size of each item of the table, by `(pk, sk)`, as DynamoDB counts it.
#[derive(Default)]
struct Sizes(BTreeMap<(String, String), usize>);

impl Sizes {
    /// Every item of the table (straight to moto: not counted).
    async fn scan(client: &aws_sdk_dynamodb::Client, table: &str) -> Sizes {
        let mut sizes = BTreeMap::new();
        let mut pages = client.scan().table_name(table).into_paginator().items().send();
        while let Some(item) = pages.next().await {
            let item = item.unwrap();
            let key = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            let size = item.iter().map(|(name, v)| name.len() + sdk_value_size(v)).sum();
            sizes.insert((key("pk"), key("sk")), size);
        }
        Sizes(sizes)
    }

    /// The size of the item a request's `Key` names, if the table still holds it.
    fn of_key(&self, key: &Value) -> Option<usize> {
        let part = |k: &str| key[k]["S"].as_str().unwrap_or_default().to_string();
        self.0.get(&(part("pk"), part("sk"))).copied()
    }

    /// Every item of a partition a query names among its values (an upper bound: a query's
    /// `Limit` and sort key condition read fewer).
    fn of_query(&self, body: &Value) -> usize {
        let values: Vec<&str> = body["ExpressionAttributeValues"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v["S"].as_str())
            .collect();
        self.0.iter().filter(|((pk, _), _)| values.contains(&pk.as_str())).map(|(_, size)| size).sum()
    }
}

/// A value's size (DynamoDB Developer Guide, "Item sizes"): strings and binaries their length,
/// numbers about one byte per two digits plus one, 1 for a boolean or null, 3 more for a list or
/// map and its members (with their names).
fn sdk_value_size(v: &aws_sdk_dynamodb::types::AttributeValue) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) => s.len(),
        A::N(n) => n.trim_start_matches('-').replace('.', "").len().div_ceil(2) + 1,
        A::B(b) => b.as_ref().len(),
        A::Ss(l) => l.iter().map(String::len).sum(),
        A::Ns(l) => l.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        A::L(l) => 3 + l.iter().map(|x| 1 + sdk_value_size(x)).sum::<usize>(),
        A::M(m) => 3 + m.iter().map(|(k, x)| 1 + k.len() + sdk_value_size(x)).sum::<usize>(),
        _ => 1,
    }
}

/// The same for a value as a request's JSON carries it (`{"S": "…"}`).
fn json_value_size(v: &Value) -> usize {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else { return 0 };
    match kind.as_str() {
        "S" | "B" => inner.as_str().map_or(0, str::len),
        "N" => inner.as_str().map_or(0, |n| n.trim_start_matches('-').replace('.', "").len().div_ceil(2) + 1),
        "L" => 3 + inner.as_array().into_iter().flatten().map(|x| 1 + json_value_size(x)).sum::<usize>(),
        "M" => 3 + json_item_size(inner),
        _ => 1,
    }
}

fn json_item_size(item: &Value) -> usize {
    item.as_object().into_iter().flatten().map(|(name, v)| name.len() + json_value_size(v)).sum()
}

/// Units of `size` bytes in blocks of `block`, at least one.
fn units(size: usize, block: usize) -> f64 {
    size.div_ceil(block).max(1) as f64
}

impl Tally {
    fn of(sent: &[Sent], sizes: &Sizes) -> Tally {
        let mut t = Tally::default();
        let write = |item: &Value| units(sizes.of_key(item).unwrap_or(0), 1024);
        for s in sent {
            *t.calls.entry(s.call.clone()).or_default() += 1;
            let body = s.json();
            let consistent = if body["ConsistentRead"] == json!(true) { 1.0 } else { 0.5 };
            match s.call.as_str() {
                "dynamodb:GetItem" => t.rru += consistent * units(sizes.of_key(&body["Key"]).unwrap_or(0), 4096),
                "dynamodb:Query" => t.rru += consistent * units(sizes.of_query(&body), 4096),
                "dynamodb:BatchGetItem" => {
                    for (_, req) in body["RequestItems"].as_object().into_iter().flatten() {
                        let c = if req["ConsistentRead"] == json!(true) { 1.0 } else { 0.5 };
                        for key in req["Keys"].as_array().into_iter().flatten() {
                            t.rru += c * units(sizes.of_key(key).unwrap_or(0), 4096);
                        }
                    }
                }
                "dynamodb:PutItem" => t.wru += units(json_item_size(&body["Item"]), 1024),
                "dynamodb:UpdateItem" | "dynamodb:DeleteItem" => t.wru += write(&body["Key"]),
                "dynamodb:TransactWriteItems" => {
                    for item in body["TransactItems"].as_array().into_iter().flatten() {
                        t.wru += 2.0
                            * match &item["Put"] {
                                Value::Null => {
                                    let op = ["Update", "Delete", "ConditionCheck"].iter().map(|k| &item[*k]);
                                    op.map(|o| &o["Key"]).find(|k| !k.is_null()).map_or(1.0, write)
                                }
                                put => units(json_item_size(&put["Item"]), 1024),
                            };
                    }
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

/// The worker on `llm`, its changes announced on the returned channel (no store call added).
fn start_worker(
    b: &Backends,
    stop: CancellationToken,
    llm: Arc<dyn aira_runtime::llm::Llm>,
) -> (tokio::task::JoinHandle<()>, tokio::sync::broadcast::Sender<Arc<str>>) {
    let notifying = Notifying::new(b.store.clone());
    let updates = notifying.updates();
    let config = WorkerConfig {
        user_in_flight: 4,
        user_daily_tokens: 200_000,
        all_daily_tokens: 2_000_000,
        stream_flush: Duration::from_millis(env_or("COST_FLUSH_MS", 400)),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(b.queue.clone(), Arc::new(notifying), llm, Arc::new(Metrics::new()), config);
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
    let prompt_bytes = env_or("COST_PROMPT_BYTES", 0) as usize;
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
    let (worker, updates) = start_worker(&b, worker_stop.clone(), Arc::new(aira_runtime::llm::Echo));
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.take_requests();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle = proxy.take_requests();
    let minutes = idle_secs as f64 / 60.0;
    let raw = aws_sdk_dynamodb::Client::new(&conf_at(&endpoint).await);
    Tally::of(&idle, &Sizes::scan(&raw, &stack.table).await).print(
        "idle api task + idle worker task",
        minutes,
        "minute",
    );

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
                let text = format!("message {n} of a chat");
                let text = format!("{text}{}", ".".repeat(prompt_bytes.saturating_sub(text.len())));
                let id = post(&http, &base, &token, &conv, &text).await;
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
    println!("\nchat: {users} users × {per_user} messages of {prompt_bytes} bytes or more, {answered} answered in {took:.1} s");
    // The relay's scans (outbox and purge rows) run whether anyone chats or not: phase 1.
    let chat: Vec<Sent> = chat
        .into_iter()
        .filter(|s| !(s.call == "dynamodb:Query" && (s.body.contains("\"OUTBOX#") || s.body.contains("\"PURGE#"))))
        .collect();
    Tally::of(&chat, &Sizes::scan(&raw, &stack.table).await).print(
        "chatting, the relay's scans aside",
        answered as f64,
        "answered message",
    );

    worker_stop.cancel();
    worker.await.unwrap();

    // 3. Answers of STREAM_TOKENS tokens, written at a model's pace, each followed on its event
    //    stream by a client in another process (the API's reads poll the table): first whole
    //    (the baseline, in the same run), then streamed.
    let streamed = env_or("COST_STREAMED", 20) as usize;
    let model = start_streaming_model().await;
    for stream in [false, true] {
        let llm = aira_runtime::llm::OpenAi::new(&model, "bench", None, None, Duration::from_secs(120)).unwrap();
        let llm = llm.streaming(stream);
        let streaming_stop = CancellationToken::new();
        let (streaming, _) = start_worker(&b, streaming_stop.clone(), Arc::new(llm));
        proxy.take_requests();
        let started = Instant::now();
        let mut followed = Vec::new();
        for (token, conv) in targets.iter().skip(if stream { streamed } else { 0 }).take(streamed) {
            let text = format!("write at length{}", ".".repeat(prompt_bytes.saturating_sub(15)));
            let id = post(&http, &base, token, conv, &text).await;
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            followed.push(tokio::spawn(async move { follow(&http, &base, &token, &id).await }));
        }
        let mut answered = 0u64;
        for f in followed {
            answered += u64::from(f.await.unwrap());
        }
        let took = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let chat = proxy.take_requests();
        let how = if stream { "streamed" } else { "whole" };
        println!(
        "\n{how}: {streamed} answers of {STREAM_TOKENS} tokens ({} characters, written at {STREAM_RATE} tokens a second), {answered} answered in {took:.1} s",
        STREAM_TOKENS * 4
    );
        let chat: Vec<Sent> = chat
            .into_iter()
            .filter(|s| !(s.call == "dynamodb:Query" && (s.body.contains("\"OUTBOX#") || s.body.contains("\"PURGE#"))))
            .collect();
        Tally::of(&chat, &Sizes::scan(&raw, &stack.table).await).print(
            &format!("{how} answers of {STREAM_TOKENS} tokens, each followed on its event stream"),
            answered as f64,
            "answered message",
        );
        streaming_stop.cancel();
        streaming.await.unwrap();
    }

    // 4. Streams held open on messages nobody answers (no worker runs).
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
    // Only the streams' reads: their messages (with their partial answers, one query) and their
    // tokens (the relay's queries are the idle api task's).
    let reads: Vec<Sent> = held
        .into_iter()
        .filter(|s| {
            matches!(s.call.as_str(), "dynamodb:GetItem" | "dynamodb:Query")
                && (s.body.contains("\"MSG#") || s.body.contains("\"TOKEN#"))
        })
        .collect();
    Tally::of(&reads, &Sizes::scan(&raw, &stack.table).await).print(
        "event streams held open",
        stream_minutes,
        "stream-minute",
    );
    for t in open {
        t.abort();
    }

    stop.cancel();
}

/// Tokens of a streamed answer in phase 4, each of four characters.
const STREAM_TOKENS: usize = 500;
/// Tokens a second the streaming model writes (a fast hosted model writes 50 to 100).
const STREAM_RATE: u64 = 50;

/// An OpenAI-compatible model that writes [`STREAM_TOKENS`] tokens at [`STREAM_RATE`] a
/// second: one chunk each when asked for a stream, the whole answer at the end otherwise; its
/// base URL.
async fn start_streaming_model() -> String {
    use axum::response::IntoResponse;
    let answer = |axum::Json(req): axum::Json<Value>| async move {
        if req["stream"] != true {
            tokio::time::sleep(Duration::from_millis(1000 * STREAM_TOKENS as u64 / STREAM_RATE)).await;
            let whole = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "tok ".repeat(STREAM_TOKENS)}, "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 20, "completion_tokens": STREAM_TOKENS}});
            return axum::Json(whole).into_response();
        }
        let every = Duration::from_millis(1000 / STREAM_RATE);
        let chunks = futures_util::stream::unfold(0usize, move |n| async move {
            let piece = match n {
                n if n < STREAM_TOKENS => {
                    tokio::time::sleep(every).await;
                    let c = json!({"choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": null}]});
                    format!("data: {c}\n\n")
                }
                n if n == STREAM_TOKENS => {
                    let usage = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                       "usage": {"prompt_tokens": 20, "completion_tokens": STREAM_TOKENS}});
                    format!("data: {usage}\n\ndata: [DONE]\n\n")
                }
                _ => return None,
            };
            Some((Ok::<_, std::convert::Infallible>(piece), n + 1))
        });
        ([("content-type", "text/event-stream")], axum::body::Body::from_stream(chunks)).into_response()
    };
    let router = axum::Router::new().route("/v1/chat/completions", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}
