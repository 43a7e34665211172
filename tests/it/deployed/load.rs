//! Users chatting through the load balancer, as the web page does: sign up, open a conversation,
//! then post a message, follow its event stream to `answered` (reconnecting when a stream ends
//! early, as the page does), think, and post again. Everything a user saw is counted.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What the users saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Requests answered with an error status or not answered at all.
    pub failed_requests: u64,
    pub requests: u64,
    /// Message id → its content, for every 202.
    pub accepted: BTreeMap<String, String>,
    /// Message id → the final event of every stream opened for it: the one followed while
    /// chatting, then one more each when the users stop (a message answered twice shows two
    /// different answers: the echo model stamps each with the time).
    pub answers: BTreeMap<String, Vec<String>>,
    /// Answers that are not the echo of their own message (another user's, or another message's).
    pub mismatched_answers: u64,
    /// Streams that ended without a final event and were opened again.
    pub resumed_streams: u64,
    /// Streams that ended without a final event and could not be resumed to one.
    pub unfinished_streams: u64,
    /// `delta` events read: pieces of answers shown as the model wrote them.
    pub deltas: u64,
    /// Answers whose streamed text (a status event's answer, then its deltas, across
    /// reconnections with `Last-Event-ID`) was not the start of the final answer.
    pub stream_mismatches: u64,
    pub failures: Vec<String>,
    /// Durations of the requests that are not event streams, in milliseconds.
    pub latencies_ms: Vec<u64>,
    /// Users that have had a first answer.
    pub chatting: usize,
}

/// Whether a message's final events hold an answer (not only failures).
fn has_answer(finals: &[String]) -> bool {
    finals.iter().any(|x| !x.starts_with("failed: "))
}

impl Seen {
    /// Messages with more than one distinct answer over all their streams.
    pub fn answered_twice(&self) -> usize {
        let distinct = |a: &Vec<String>| a.iter().collect::<std::collections::BTreeSet<_>>().len();
        self.answers.values().filter(|a| distinct(a) > 1).count()
    }

    /// Messages with an answer (not a failure).
    pub fn answered(&self) -> usize {
        self.answers.values().filter(|a| has_answer(a)).count()
    }

    /// Accepted messages without an answer.
    pub fn lost(&self) -> usize {
        self.accepted.keys().filter(|id| !self.answers.get(*id).is_some_and(|a| has_answer(a))).count()
    }

    /// The `q` quantile of the request latencies (0 without any).
    pub fn latency_ms(&self, q: f64) -> u64 {
        let mut l = self.latencies_ms.clone();
        l.sort_unstable();
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(0)
    }
}

pub struct Load {
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    users: Vec<tokio::task::JoinHandle<()>>,
}

/// A client for the site at `domain`, resolved to the HTTPS listener, trusting the local CA,
/// sending from `source` (a loopback address of its own, so that the load balancer's
/// `X-Forwarded-For` differs between users as it does between people).
pub fn client(domain: &str, https: SocketAddr, ca: &[u8], source: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(domain, https)
        .add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap())
        .local_address(source)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

impl Load {
    /// What the users saw so far.
    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    /// `users` users numbered from `first`, starting spread over `ramp`, each thinking `think`
    /// between messages.
    pub fn start(
        base: String,
        clients: Vec<reqwest::Client>,
        first: usize,
        users: usize,
        ramp: Duration,
        think: Duration,
    ) -> Load {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let users = (0..users)
            .map(|i| {
                let user = User {
                    http: clients[i % clients.len()].clone(),
                    base: base.clone(),
                    seen: seen.clone(),
                    token: String::new(),
                };
                let stop = stop.clone();
                let start = ramp.mul_f64(i as f64 / users as f64);
                // Think times differ a little between users, so that they do not move in step.
                let think = think.mul_f64(0.75 + 0.5 * ((i * 7919) % 100) as f64 / 100.0);
                tokio::spawn(async move {
                    tokio::time::sleep(start).await;
                    user.chat(first + i, think, stop).await;
                })
            })
            .collect();
        Load { seen, stop, users }
    }

    /// Lets every user finish the message in hand (to its final event), read each of its
    /// messages' streams once more, then stops them.
    pub async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for u in self.users {
            let _ = u.await;
        }
        let seen = Arc::try_unwrap(self.seen).unwrap_or_else(|_| panic!("every user has stopped"));
        seen.into_inner().unwrap()
    }
}

/// Loopback source addresses for the users' clients (Linux answers all of 127/8).
pub fn sources(n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 2, i))).collect()
}

struct User {
    http: reqwest::Client,
    base: String,
    seen: Arc<Mutex<Seen>>,
    token: String,
}

impl User {
    fn failed(&self, what: String) {
        let mut seen = self.seen.lock().unwrap();
        seen.failed_requests += 1;
        if seen.failures.len() < 20 {
            seen.failures.push(what);
        }
    }

    /// One request; the JSON answer when its status is the expected one, else counted failed.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>, expect: u16) -> Option<Value> {
        self.seen.lock().unwrap().requests += 1;
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let started = Instant::now();
        let sent = req.send().await;
        self.seen.lock().unwrap().latencies_ms.push(started.elapsed().as_millis() as u64);
        match sent {
            Ok(r) if r.status().as_u16() == expect => r.json().await.ok().or(Some(Value::Null)),
            Ok(r) => {
                let status = r.status();
                self.failed(format!("{method} {path}: {status} {}", r.text().await.unwrap_or_default()));
                None
            }
            Err(e) => {
                self.failed(format!("{method} {path}: {e}"));
                None
            }
        }
    }

    async fn chat(mut self, i: usize, think: Duration, stop: Arc<AtomicBool>) {
        let email = format!("user{i}-{}@example.com", std::process::id());
        let creds = json!({"email": email, "password": "correct horse battery", "keep_history": true});
        if self.call(reqwest::Method::POST, "/v1/auth/signup", Some(creds.clone()), 201).await.is_none() {
            return;
        }
        let Some(t) = self.call(reqwest::Method::POST, "/v1/auth/tokens", Some(creds), 201).await else { return };
        self.token = t["token"].as_str().unwrap_or_default().to_string();
        let Some(c) = self.call(reqwest::Method::POST, "/v1/conversations", None, 201).await else { return };
        let conversation = c["id"].as_str().unwrap_or_default().to_string();
        let mut mine = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let content = format!("user {i} message {n}");
            let path = format!("/v1/conversations/{conversation}/messages");
            if let Some(m) = self.call(reqwest::Method::POST, &path, Some(json!({"content": content})), 202).await {
                let id = m["id"].as_str().unwrap_or_default().to_string();
                self.seen.lock().unwrap().accepted.insert(id.clone(), content.clone());
                if self.follow(&id, &content).await && n == 1 {
                    self.seen.lock().unwrap().chatting += 1;
                }
                mine.push((id, content));
            }
            let until = Instant::now() + think;
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for (id, content) in &mine {
            self.follow(id, content).await;
        }
    }

    /// Follows a message's event stream to its final event, reconnecting when it ends early
    /// with the last event's id (`Last-Event-ID`, as EventSource does); whether it got there.
    /// An answer that is not the echo of `content` is counted mismatched; the text streamed
    /// before it, when it is not the answer's start, a stream mismatch.
    async fn follow(&self, id: &str, content: &str) -> bool {
        let (mut text, mut last_id) = (String::new(), String::new());
        for attempt in 0..10 {
            if attempt > 0 {
                self.seen.lock().unwrap().resumed_streams += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            self.seen.lock().unwrap().requests += 1;
            let req = self
                .http
                .get(format!("{}/v1/messages/{id}/events", self.base))
                .bearer_auth(&self.token)
                .header("accept", "text/event-stream");
            let req = if last_id.is_empty() { req } else { req.header("last-event-id", &last_id) };
            let mut resp = match req.send().await {
                Ok(r) if r.status() == 200 => r,
                Ok(r) => {
                    let status = r.status();
                    self.failed(format!("GET events {id}: {status} {}", r.text().await.unwrap_or_default()));
                    continue;
                }
                Err(e) => {
                    self.failed(format!("GET events {id}: {e}"));
                    continue;
                }
            };
            let mut buffer = String::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(bytes)) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
                    // Ended (the task stopped, or the stream's time ran out) or broke: reconnect.
                    Ok(None) | Err(_) => break,
                }
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    let name = field(&event, "event");
                    if !field(&event, "id").is_empty() {
                        last_id = field(&event, "id");
                    }
                    let data: Value = serde_json::from_str(&field(&event, "data")).unwrap_or_default();
                    if name == "delta" {
                        text.push_str(data["text"].as_str().unwrap_or_default());
                        self.seen.lock().unwrap().deltas += 1;
                    } else if name == "processing" || name == "queued" {
                        text = data["answer"].as_str().unwrap_or_default().to_string();
                    }
                    if name == "answered" || name == "failed" {
                        let answer = data["answer"]
                            .as_str()
                            .map(String::from)
                            .unwrap_or_else(|| format!("failed: {}", data["error"]));
                        let mut seen = self.seen.lock().unwrap();
                        if name == "answered" && !answer.starts_with(&text) {
                            seen.stream_mismatches += 1;
                            if seen.failures.len() < 20 {
                                seen.failures.push(format!("{id} streamed {text:?}, then was answered {answer:?}"));
                            }
                        }
                        let echoed = answer.trim_end().ends_with(&format!("User: {content}"));
                        if !echoed && !answer.starts_with("failed: ") {
                            seen.mismatched_answers += 1;
                            if seen.failures.len() < 20 {
                                seen.failures.push(format!("{id} ({content}) was answered: {answer}"));
                            }
                        }
                        seen.answers.entry(id.to_string()).or_default().push(answer);
                        return true;
                    }
                }
            }
        }
        self.seen.lock().unwrap().unfinished_streams += 1;
        false
    }
}

/// One user on `host`: signs up, posts a message, and reads its event stream until the final
/// event; the answer (or the failure).
pub async fn one_chat(host: &str, https: SocketAddr, ca: &[u8], base: &str) -> String {
    let http = client(host, https, ca, None);
    let creds = json!({"email": "preview@example.com", "password": "correct horse battery", "keep_history": true});
    let post = |path: &str, body: Option<Value>, token: Option<&str>| {
        let mut req = http.post(format!("{base}{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let path = path.to_string();
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            assert!(status.is_success(), "POST {path} on {host}: {status} {text}");
            serde_json::from_str::<Value>(&text).unwrap_or_default()
        }
    };
    post("/v1/auth/signup", Some(creds.clone()), None).await;
    let token = post("/v1/auth/tokens", Some(creds), None).await["token"].as_str().unwrap().to_string();
    let conversation = post("/v1/conversations", None, Some(&token)).await["id"].as_str().unwrap().to_string();
    let path = format!("/v1/conversations/{conversation}/messages");
    let message = post(&path, Some(json!({"content": "hello preview"})), Some(&token)).await;
    let id = message["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let req = http.get(format!("{base}/v1/messages/{id}/events")).bearer_auth(&token);
        let Ok(text) = req.header("accept", "text/event-stream").send().await.unwrap().text().await else { continue };
        for event in text.split("\n\n") {
            let name = field(event, "event");
            if name == "answered" || name == "failed" {
                return format!("{name}: {}", field(event, "data"));
            }
        }
    }
    panic!("no final event for {id} on {host} in 120 s");
}

/// The value of an SSE field in one event.
fn field(event: &str, name: &str) -> String {
    event
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.strip_prefix(' ').unwrap_or(v))
        .collect::<Vec<_>>()
        .join("\n")
}
