//! A long life of the deployed shape with hostile traffic alongside (the `soak` bench of
//! aira-runtime), run with `bash bench/soak.sh`. Not a timed test: it says whether the runtime
//! stays whole over many messages (nothing lost, memory and latency flat, limits bounded),
//! and at what rate the shape answers on this machine.
//!
//! The shape is the one ECS runs: the real `aira-runtime api` and `aira-runtime worker` binaries
//! as two child processes (`AIRA_RUNTIME_BIN`, default this build's), on SQS and DynamoDB of the
//! moto server (`AIRA_TEST_ENDPOINT`, started by bench/soak.sh) reached through the test proxy,
//! and a fake OpenAI-compatible model served here (`POST /v1/chat/completions`): it echoes the
//! last user turn at once, except `[slow]` (answers after 5 s, past the children's 2 s model
//! timeout), `[huge]` (1 MiB of text) and `[empty]` (empty content); it counts its calls by the
//! tag each prompt carries (`#L<n>` legitimate, `#H<n>` hostile). The api runs with
//! `AIRA_BEHIND_LOAD_BALANCER=true` and every request carries `X-Forwarded-For`, so the
//! per-address limits see many clients although everything is on 127.0.0.1.
//!
//! Traffic, all on loopback:
//! - legitimate: `SOAK_USERS` users (consent given, API token) post `SOAK_MESSAGES` messages in
//!   all, at most `SOAK_CONCURRENCY` in flight, each user one after another into its
//!   conversations (a new one every `SOAK_TURNS_PER_CONVERSATION`), each with an
//!   `Idempotency-Key`, following it with `GET /v1/messages/{id}` (after 250 ms, then at
//!   doubling intervals up to `SOAK_POLL_MAX_MS`) until it is answered or failed. A 429 or 503
//!   is waited out for its `Retry-After` and the same post sent again with the same key, so
//!   nothing is posted twice;
//! - hostile, bounded in rate, stopped when the legitimate load ends: a sign-in flood (random
//!   emails, wrong passwords) from one address and from random addresses; `[slow]`, `[huge]`
//!   and `[empty]` prompts from three users; a deep conversation (`SOAK_DEEP_MESSAGES` posts into
//!   one conversation) read in pages of 200 while exports run; event streams opened and never
//!   read (`SOAK_HOARD_STREAMS`, renewed every `SOAK_HOARD_CYCLE_SECS`); account deletions
//!   racing sign-ins of the same account.
//!
//! Every second: `/healthz` latency on the app port, the api's and the worker's RSS, the api's
//! `/metrics` (limiter entries, backlog gauge), and the queue's true depth read from moto
//! directly (not through the proxy). After the load, the messages not yet final are followed for
//! up to `SOAK_DRAIN_SECS`; those still not final are `lost`.
//!
//! Output: progress on stderr every 10 s; the last line of stdout is one JSON object (the
//! `report` at the end of `run`); every sample goes to `SOAK_SAMPLES_OUT` (CSV), the children's
//! logs to `SOAK_LOG_DIR`. The CPU time of the api, the worker, moto (`SOAK_MOTO_PID`, set by
//! bench/soak.sh) and this process (with the proxy) says what bounds the rate. Every loop is
//! bounded by `SOAK_MAX_SECS` (the load stops `SOAK_DRAIN_SECS` before it) and by
//! `SOAK_STALL_SECS` without a legitimate message accepted.
//!
//! The proxy keeps a record of every call's times for its whole life (about 100 bytes a call):
//! this process grows by that much over a long run, the children do not.

// The report is one `json!` literal of many fields.
#![recursion_limit = "256"]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aira_testkit::proxy::{Faults, Proxy};
use aws_sdk_sqs::types::QueueAttributeName;
use axum::response::IntoResponse;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[path = "moto_stack.rs"]
mod moto_stack;
use moto_stack::conf_at;

/// The password of every account the soak makes.
const PASSWORD: &str = "soak bench password";
/// Bound of one ordinary API request (the exports and the streams have their own).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of one `/healthz` sample; a sample that times out counts as this long.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(5);
/// Event streams one user may hold (`AIRA_STREAMS_PER_USER`, left at its default).
const STREAMS_PER_USER: usize = 10;
/// The size of a `[huge]` answer.
const HUGE_BYTES: usize = 1 << 20;
/// Attempts of one request that keeps being refused with 429/503 (the deadline also bounds them).
const MAX_ATTEMPTS: u32 = 10_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn tmp_path(name: &str) -> PathBuf {
    std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp")).join(name)
}

/// Every setting, from `SOAK_*` variables.
struct Settings {
    messages: u64,
    users: usize,
    concurrency: usize,
    turns_per_conversation: u64,
    max_secs: u64,
    drain_secs: u64,
    stall_secs: u64,
    max_backlog: u64,
    hostile: bool,
    flood_per_sec: u64,
    slow_every_secs: u64,
    huge_every_secs: u64,
    empty_every_secs: u64,
    deep_messages: u64,
    deep_every_ms: u64,
    page_every_ms: u64,
    export_every_secs: u64,
    hoard_streams: usize,
    hoard_cycle_secs: u64,
    delete_every_secs: u64,
    poll_max: Duration,
    samples_out: PathBuf,
    log_dir: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let path =
            |name: &str, default: &str| std::env::var_os(name).map(PathBuf::from).unwrap_or_else(|| tmp_path(default));
        Settings {
            messages: env_or("SOAK_MESSAGES", 100_000),
            users: env_or("SOAK_USERS", 200).max(1) as usize,
            concurrency: env_or("SOAK_CONCURRENCY", 64).max(1) as usize,
            turns_per_conversation: env_or("SOAK_TURNS_PER_CONVERSATION", 50).max(1),
            max_secs: env_or("SOAK_MAX_SECS", 5400),
            drain_secs: env_or("SOAK_DRAIN_SECS", 120),
            stall_secs: env_or("SOAK_STALL_SECS", 300),
            max_backlog: env_or("SOAK_MAX_BACKLOG", 2000),
            hostile: env_or("SOAK_HOSTILE", 1) != 0,
            flood_per_sec: env_or("SOAK_FLOOD_PER_SEC", 10),
            slow_every_secs: env_or("SOAK_SLOW_EVERY_SECS", 60).max(1),
            huge_every_secs: env_or("SOAK_HUGE_EVERY_SECS", 30).max(1),
            empty_every_secs: env_or("SOAK_EMPTY_EVERY_SECS", 10).max(1),
            deep_messages: env_or("SOAK_DEEP_MESSAGES", 500),
            deep_every_ms: env_or("SOAK_DEEP_EVERY_MS", 1500).max(100),
            page_every_ms: env_or("SOAK_PAGE_EVERY_MS", 2000).max(100),
            export_every_secs: env_or("SOAK_EXPORT_EVERY_SECS", 10).max(1),
            hoard_streams: env_or("SOAK_HOARD_STREAMS", 200) as usize,
            hoard_cycle_secs: env_or("SOAK_HOARD_CYCLE_SECS", 60).max(1),
            delete_every_secs: env_or("SOAK_DELETE_EVERY_SECS", 15).max(1),
            poll_max: Duration::from_millis(env_or("SOAK_POLL_MAX_MS", 3000).max(250)),
            samples_out: path("SOAK_SAMPLES_OUT", "aira-soak-samples.csv"),
            log_dir: path("SOAK_LOG_DIR", "aira-soak-logs"),
        }
    }

    fn json(&self) -> Value {
        json!({
            "SOAK_MESSAGES": self.messages,
            "SOAK_USERS": self.users,
            "SOAK_CONCURRENCY": self.concurrency,
            "SOAK_TURNS_PER_CONVERSATION": self.turns_per_conversation,
            "SOAK_MAX_SECS": self.max_secs,
            "SOAK_DRAIN_SECS": self.drain_secs,
            "SOAK_STALL_SECS": self.stall_secs,
            "SOAK_MAX_BACKLOG (AIRA_MAX_BACKLOG)": self.max_backlog,
            "SOAK_HOSTILE": self.hostile,
            "SOAK_FLOOD_PER_SEC": self.flood_per_sec,
            "SOAK_SLOW_EVERY_SECS": self.slow_every_secs,
            "SOAK_HUGE_EVERY_SECS": self.huge_every_secs,
            "SOAK_EMPTY_EVERY_SECS": self.empty_every_secs,
            "SOAK_DEEP_MESSAGES": self.deep_messages,
            "SOAK_DEEP_EVERY_MS": self.deep_every_ms,
            "SOAK_PAGE_EVERY_MS": self.page_every_ms,
            "SOAK_EXPORT_EVERY_SECS": self.export_every_secs,
            "SOAK_HOARD_STREAMS": self.hoard_streams,
            "SOAK_HOARD_CYCLE_SECS": self.hoard_cycle_secs,
            "SOAK_DELETE_EVERY_SECS": self.delete_every_secs,
            "SOAK_POLL_MAX_MS": self.poll_max.as_millis() as u64,
            "AIRA_LLM_TIMEOUT_SECS": 2,
            "AIRA_BEHIND_LOAD_BALANCER": true,
        })
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

// ---------------------------------------------------------------------------------------------
// The fake model.

/// What the fake model was asked, by the tag of the last user turn.
#[derive(Default)]
struct ModelCalls {
    /// Calls per legitimate message (`#L<n>`).
    legit: Mutex<HashMap<u64, u32>>,
    legit_total: AtomicU64,
    /// Calls for hostile prompts (`#H<n>`) by marker, and calls without a tag.
    hostile: Mutex<BTreeMap<&'static str, u64>>,
}

/// The number after `marker` in `text` (`#L17` → 17).
fn tag(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn prompt_kind(text: &str) -> &'static str {
    if text.contains("[slow]") {
        "slow"
    } else if text.contains("[huge]") {
        "huge"
    } else if text.contains("[empty]") {
        "empty"
    } else if tag(text, "#H").is_some() {
        "other_hostile"
    } else {
        "untagged"
    }
}

async fn fake_completion(
    axum::extract::State(calls): axum::extract::State<Arc<ModelCalls>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let turns = request["messages"].as_array().cloned().unwrap_or_default();
    let last = turns.iter().rev().find(|t| t["role"] == "user").and_then(|t| t["content"].as_str()).unwrap_or("");
    match tag(last, "#L") {
        Some(n) => {
            *calls.legit.lock().unwrap().entry(n).or_default() += 1;
            calls.legit_total.fetch_add(1, Relaxed);
        }
        None => *calls.hostile.lock().unwrap().entry(prompt_kind(last)).or_default() += 1,
    }
    if last.contains("[slow]") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let content = if last.contains("[huge]") {
        "huge ".repeat(HUGE_BYTES / 5)
    } else if last.contains("[empty]") {
        String::new()
    } else {
        last.to_string()
    };
    let words = |s: &str| s.split_whitespace().count();
    let (prompt_tokens, completion_tokens) = (words(last), words(&content));
    if request["stream"] == true {
        // As the worker asks by default: the answer in pieces (about eight), then the usage.
        let size = content.len().div_ceil(8).max(1);
        let mut body = String::new();
        let mut rest = content.as_str();
        while !rest.is_empty() {
            let mut end = size.min(rest.len());
            while !rest.is_char_boundary(end) {
                end += 1;
            }
            let piece = json!({"choices": [{"index": 0, "delta": {"content": &rest[..end]}, "finish_reason": null}]});
            body.push_str(&format!("data: {piece}\n\n"));
            rest = &rest[end..];
        }
        let end = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}});
        body.push_str(&format!("data: {end}\n\ndata: [DONE]\n\n"));
        return ([("content-type", "text/event-stream")], body).into_response();
    }
    axum::Json(json!({
        "id": "chatcmpl-soak",
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }))
    .into_response()
}

/// Serves the fake model on 127.0.0.1; returns its base URL (`…/v1`).
async fn start_fake_model(calls: Arc<ModelCalls>) -> String {
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(fake_completion))
        // The children's requests carry the conversation's history: never refuse one for its size.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(calls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

// ---------------------------------------------------------------------------------------------
// The stack and the children.

/// A child process, killed when dropped (a panic of the driver included).
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(bin: &Path, name: &'static str, env: &[(String, String)], log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg(name).env_clear().stdin(Stdio::null()).stdout(out).stderr(err);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {} {name}: {e}", bin.display()));
        Proc { name, child, log }
    }

    /// `Some(status)` once the process has exited.
    fn exited(&mut self) -> Option<String> {
        self.child.try_wait().ok().flatten().map(|s| s.to_string())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user and system) a process has used so far.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(round(ticks / per_sec, 1))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Waits (at most 60 s) until `url` answers 200.
async fn wait_ready(http: &reqwest::Client, url: &str, procs: &mut [&mut Proc]) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await {
            if r.status() == 200 {
                return;
            }
        }
        for p in procs.iter_mut() {
            if let Some(status) = p.exited() {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                panic!("aira-runtime {} exited ({status}) before it was ready:\n{log}", p.name);
            }
        }
        assert!(Instant::now() < until, "{url} not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Shared counters.

#[derive(Default)]
struct Legit {
    /// Messages whose first 202 reached the client (a replayed 202 of a message already
    /// counted is not counted again).
    accepted: AtomicU64,
    /// 202s with `Idempotent-Replayed: true`.
    replays: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    /// Answered with something other than the prompt (the fake model echoes it).
    wrong_answers: AtomicU64,
    /// Posts answered 503 `busy` (the backlog bound), each attempt counted.
    busy: AtomicU64,
    /// Of those, the ones received while the queue's true depth (last direct sample) was under
    /// a tenth of `AIRA_MAX_BACKLOG`.
    busy_with_empty_queue: AtomicU64,
    /// Posts answered 429 (rate limited).
    rate_limited: AtomicU64,
    /// Other 503s of posts.
    unavailable: AtomicU64,
    /// Posts answered with another status or no answer (transport error, timeout).
    post_errors: AtomicU64,
    /// Posts given up without a 202 (a 4xx other than 429, or the load ended first).
    posts_given_up: AtomicU64,
    /// Polls answered with anything but 200, or not answered.
    poll_errors: AtomicU64,
}

/// An accepted message not yet seen in a final state.
struct Pending {
    id: String,
    token: String,
    xff: String,
    prompt: String,
}

struct Shared {
    s: Settings,
    api: Api,
    legit: Legit,
    /// Messages handed out to legitimate users, less the ones given up.
    claimed: AtomicU64,
    /// The tag of the next prompt (`#L<n>`, `#H<n>`).
    next_tag: AtomicU64,
    /// The queue's true depth at the last sample (`u64::MAX` before the first).
    depth: AtomicU64,
    /// Failure reasons of legitimate messages.
    failed_reasons: Mutex<BTreeMap<String, u64>>,
    /// Accepted messages still to be followed after the load (the drain).
    unsettled: Mutex<Vec<Pending>>,
    /// Hostile requests by kind, then by outcome (HTTP status, or `error`, `skipped`).
    hostile: Mutex<BTreeMap<&'static str, BTreeMap<String, u64>>>,
    /// Largest values seen by the hostile traffic (latencies, bytes, streams held).
    hostile_max: Mutex<BTreeMap<&'static str, f64>>,
    /// Deletion races that left something behind: a sign-in, a token or a session that still
    /// worked once `DELETE /v1/me` had answered 204.
    deletion_anomalies: Mutex<BTreeMap<&'static str, u64>>,
    /// The first 503 `busy` of a legitimate post: when, after how many accepted messages, at
    /// what true queue depth.
    first_busy: Mutex<Option<Value>>,
    /// The legitimate load ended (done, deadline, stall): users stop, hostile traffic stops.
    load_done: CancellationToken,
    /// When the children were ready.
    started: Instant,
    load_deadline: Instant,
}

impl Shared {
    fn tag(&self) -> u64 {
        self.next_tag.fetch_add(1, Relaxed)
    }

    fn note(&self, kind: &'static str, outcome: impl ToString) {
        *self.hostile.lock().unwrap().entry(kind).or_default().entry(outcome.to_string()).or_default() += 1;
    }

    /// Notes a hostile request's outcome (`202`, `429 rate_limited`, `error`) and reads its
    /// body; the body of a success.
    /// A hostile post of `content` into `conv`, noted under `kind`; its answer when accepted.
    async fn post(&self, conv: &str, token: &str, xff: &str, content: &str, kind: &'static str) -> Option<Value> {
        let r = self
            .api
            .at(Method::POST, &format!("/v1/conversations/{conv}/messages"), xff)
            .bearer_auth(token)
            .json(&json!({"content": content}))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        self.noted(kind, r).await
    }

    async fn noted(&self, kind: &'static str, r: Result<reqwest::Response, reqwest::Error>) -> Option<Value> {
        let Ok(r) = r else {
            self.note(kind, "error");
            return None;
        };
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or_default();
        if status < 400 {
            self.note(kind, status);
            return Some(v);
        }
        self.note(kind, format!("{status} {}", v["error"].as_str().unwrap_or("")).trim_end());
        None
    }

    /// Keeps an event stream that opened (never reading it); notes the outcome either way.
    async fn hold(
        &self,
        kind: &'static str,
        r: Result<reqwest::Response, reqwest::Error>,
    ) -> Option<reqwest::Response> {
        match r {
            Ok(r) if r.status() == 200 => {
                self.note(kind, 200);
                Some(r)
            }
            r => {
                self.noted(kind, r).await;
                None
            }
        }
    }

    fn max(&self, what: &'static str, v: f64) {
        let mut m = self.hostile_max.lock().unwrap();
        let e = m.entry(what).or_insert(v);
        *e = e.max(v);
    }

    fn anomaly(&self, what: &'static str) {
        *self.deletion_anomalies.lock().unwrap().entry(what).or_default() += 1;
    }

    /// Whether the queue's true depth is under a tenth of the backlog bound (unknown: no).
    fn queue_nearly_empty(&self) -> bool {
        let d = self.depth.load(Relaxed);
        d != u64::MAX && d * 10 < self.s.max_backlog
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers.

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A request to the app port, from `xff` as the load balancer would say it.
    fn at(&self, method: Method, path: &str, xff: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).header("x-forwarded-for", xff)
    }
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Duration {
    let secs = h.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
    Duration::from_secs_f64(secs.filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(1.0))
}

/// Sleeps `d`, cut short at `until` or when `stop` fires; false when cut short.
async fn pause(d: Duration, until: Instant, stop: &CancellationToken) -> bool {
    let now = Instant::now();
    if now >= until {
        return false;
    }
    let d = d.min(until - now);
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => Instant::now() < until,
    }
}

/// Sends the request `build` makes until its answer is neither 429 nor 503 nor 5xx nor missing
/// (waiting each `Retry-After`, or 1 s), before `until`; the status and the JSON body.
async fn settle(
    build: impl Fn() -> reqwest::RequestBuilder,
    until: Instant,
    stop: &CancellationToken,
) -> Option<(u16, Value)> {
    for _ in 0..MAX_ATTEMPTS {
        let wait = match build().timeout(REQUEST_TIMEOUT).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                if s == 429 || s == 503 {
                    retry_after(r.headers())
                } else if s >= 500 {
                    Duration::from_secs(1)
                } else {
                    return Some((s, r.json().await.unwrap_or_default()));
                }
            }
            Err(_) => Duration::from_secs(1),
        };
        if !pause(wait, until, stop).await {
            return None;
        }
    }
    None
}

/// Signs up (consent given, history kept) and makes an API token; `None` if it could not
/// before `until`.
async fn account(api: &Api, email: &str, xff: &str, until: Instant, stop: &CancellationToken) -> Option<String> {
    let signup = json!({"email": email, "password": PASSWORD, "keep_history": true});
    let (s, v) = settle(|| api.at(Method::POST, "/v1/auth/signup", xff).json(&signup), until, stop).await?;
    if s != 201 && s != 409 {
        eprintln!("[soak] sign-up of {email}: HTTP {s} {v}");
        return None;
    }
    let creds = json!({"email": email, "password": PASSWORD});
    let (s, v) = settle(|| api.at(Method::POST, "/v1/auth/tokens", xff).json(&creds), until, stop).await?;
    if s != 201 {
        eprintln!("[soak] token of {email}: HTTP {s} {v}");
        return None;
    }
    v["token"].as_str().map(str::to_string)
}

async fn conversation(api: &Api, token: &str, xff: &str, until: Instant, stop: &CancellationToken) -> Option<String> {
    let (s, v) = settle(|| api.at(Method::POST, "/v1/conversations", xff).bearer_auth(token), until, stop).await?;
    if s != 201 {
        eprintln!("[soak] new conversation: HTTP {s} {v}");
        return None;
    }
    v["id"].as_str().map(str::to_string)
}

/// A user with a token and a conversation.
#[derive(Clone)]
struct User {
    token: String,
    xff: String,
    conv: String,
}

async fn user(api: &Api, email: &str, xff: &str, until: Instant, stop: &CancellationToken) -> Option<User> {
    let token = account(api, email, xff, until, stop).await?;
    let conv = conversation(api, &token, xff, until, stop).await?;
    Some(User { token, xff: xff.to_string(), conv })
}

/// A stable fake client address (10.x.y.z) for the `i`-th client of a group.
fn address(group: u8, i: usize) -> String {
    format!("10.{group}.{}.{}", (i >> 8) & 255, i & 255)
}

/// A random address of 100.64.0.0/10 (4 million of them).
fn random_address() -> String {
    let r: u32 = rand::random();
    std::net::Ipv4Addr::from(0x6440_0000 | (r & 0x003f_ffff)).to_string()
}

// ---------------------------------------------------------------------------------------------
// Legitimate users.

/// Posts one message until a 202 (same `Idempotency-Key` each time); its id, or `None` when
/// given up (another 4xx, or the load ended).
async fn post_legit(sh: &Shared, u: &User, conv: &str, prompt: &str) -> Option<String> {
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"content": prompt});
    let l = &sh.legit;
    for _ in 0..MAX_ATTEMPTS {
        let sent = sh
            .api
            .at(Method::POST, &format!("/v1/conversations/{conv}/messages"), &u.xff)
            .bearer_auth(&u.token)
            .header("idempotency-key", &key)
            .json(&body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        let wait = match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let wait = retry_after(r.headers());
                let replayed = r.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
                let v: Value = r.json().await.unwrap_or_default();
                match status {
                    202 => {
                        if replayed {
                            l.replays.fetch_add(1, Relaxed);
                        }
                        l.accepted.fetch_add(1, Relaxed);
                        return v["id"].as_str().map(str::to_string);
                    }
                    429 => {
                        l.rate_limited.fetch_add(1, Relaxed);
                        wait
                    }
                    503 if v["error"] == "busy" => {
                        l.busy.fetch_add(1, Relaxed);
                        sh.first_busy.lock().unwrap().get_or_insert_with(|| {
                            let depth = sh.depth.load(Relaxed);
                            json!({
                                "t_secs": round(sh.started.elapsed().as_secs_f64(), 1),
                                "accepted": l.accepted.load(Relaxed),
                                "queue_depth": (depth != u64::MAX).then_some(depth),
                            })
                        });
                        if sh.queue_nearly_empty() {
                            l.busy_with_empty_queue.fetch_add(1, Relaxed);
                        }
                        wait
                    }
                    503 => {
                        l.unavailable.fetch_add(1, Relaxed);
                        wait
                    }
                    s if s >= 500 => {
                        l.post_errors.fetch_add(1, Relaxed);
                        Duration::from_secs(1)
                    }
                    s => {
                        l.post_errors.fetch_add(1, Relaxed);
                        eprintln!("[soak] post refused: HTTP {s} {v}");
                        return None;
                    }
                }
            }
            Err(_) => {
                l.post_errors.fetch_add(1, Relaxed);
                Duration::from_secs(1)
            }
        };
        if !pause(wait, sh.load_deadline, &sh.load_done).await {
            return None;
        }
    }
    None
}

/// Polls `GET /v1/messages/{id}` until the message is answered or failed; `None` when cut
/// short (at `until`, or when `stop` fires).
async fn follow(sh: &Shared, p: &Pending, until: Instant, stop: &CancellationToken) -> Option<Value> {
    let mut wait = Duration::from_millis(250);
    for _ in 0..MAX_ATTEMPTS {
        if !pause(wait, until, stop).await {
            return None;
        }
        wait = (wait * 2).min(sh.s.poll_max);
        let r = sh
            .api
            .at(Method::GET, &format!("/v1/messages/{}", p.id), &p.xff)
            .bearer_auth(&p.token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        let m: Value = match r {
            Ok(r) if r.status() == 200 => r.json().await.unwrap_or_default(),
            _ => {
                sh.legit.poll_errors.fetch_add(1, Relaxed);
                continue;
            }
        };
        if m["status"] == "answered" || m["status"] == "failed" {
            return Some(m);
        }
    }
    None
}

fn settled(sh: &Shared, p: &Pending, m: &Value) {
    let l = &sh.legit;
    if m["status"] == "answered" {
        l.answered.fetch_add(1, Relaxed);
        if m["answer"].as_str() != Some(p.prompt.as_str()) {
            l.wrong_answers.fetch_add(1, Relaxed);
        }
    } else {
        l.failed.fetch_add(1, Relaxed);
        let reason = m["error"].as_str().unwrap_or("").to_string();
        *sh.failed_reasons.lock().unwrap().entry(reason).or_default() += 1;
    }
}

/// Takes one of the messages still to be posted.
fn claim(sh: &Shared) -> bool {
    sh.claimed.fetch_update(Relaxed, Relaxed, |n| (n < sh.s.messages).then_some(n + 1)).is_ok()
}

async fn legit_user(sh: Arc<Shared>, i: usize, mut u: User, in_flight: Arc<Semaphore>) {
    let mut turns = 0;
    loop {
        let permit = tokio::select! {
            _ = sh.load_done.cancelled() => return,
            p = in_flight.clone().acquire_owned() => p.unwrap(),
        };
        if !claim(&sh) {
            return;
        }
        if turns >= sh.s.turns_per_conversation {
            match conversation(&sh.api, &u.token, &u.xff, sh.load_deadline, &sh.load_done).await {
                Some(c) => {
                    u.conv = c;
                    turns = 0;
                }
                None => {
                    sh.claimed.fetch_sub(1, Relaxed);
                    sh.legit.posts_given_up.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
        let n = sh.tag();
        let prompt = format!("soak #L{n} from user {i}, turn {turns}: how long is a long life?");
        let Some(id) = post_legit(&sh, &u, &u.conv, &prompt).await else {
            sh.claimed.fetch_sub(1, Relaxed);
            sh.legit.posts_given_up.fetch_add(1, Relaxed);
            drop(permit);
            pause(Duration::from_secs(1), sh.load_deadline, &sh.load_done).await;
            continue;
        };
        turns += 1;
        let p = Pending { id, token: u.token.clone(), xff: u.xff.clone(), prompt };
        match follow(&sh, &p, sh.load_deadline, &sh.load_done).await {
            Some(m) => settled(&sh, &p, &m),
            None => sh.unsettled.lock().unwrap().push(p),
        }
        drop(permit);
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile traffic. Each loop ticks at its rate until the load ends (which the deadline bounds).

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Sign-ins with random emails and a wrong password, `per_sec` a second, from one address or
/// each from a random one; at most 64 unanswered at once (the rest counted as `skipped`).
async fn signin_flood(sh: Arc<Shared>, kind: &'static str, per_sec: u64, many: bool) {
    let mut tick = ticker(Duration::from_secs_f64(1.0 / per_sec.max(1) as f64));
    let in_flight = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = sh.load_done.cancelled() => break,
            _ = tick.tick() => {}
        }
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            sh.note(kind, "skipped");
            continue;
        };
        let xff = if many { random_address() } else { "203.0.113.7".to_string() };
        let creds = json!({"email": format!("{:016x}@flood.example", rand::random::<u64>()), "password": "not it"});
        let sh = sh.clone();
        tasks.spawn(async move {
            let r = sh.api.at(Method::POST, "/v1/auth/login", &xff).json(&creds).timeout(REQUEST_TIMEOUT).send().await;
            sh.noted(kind, r).await;
            drop(permit);
        });
    }
    tasks.abort_all();
}

/// Posts a prompt carrying `marker` every `every`, into one conversation, without waiting for
/// answers. The `[slow]` user also holds event streams on its newest messages (they stay
/// open while the worker waits the model out).
async fn marked_prompts(sh: Arc<Shared>, u: User, kind: &'static str, marker: &'static str, every: Duration) {
    let mut tick = ticker(every);
    let mut held: VecDeque<reqwest::Response> = VecDeque::new();
    loop {
        tokio::select! {
            _ = sh.load_done.cancelled() => break,
            _ = tick.tick() => {}
        }
        let content = format!("{marker} #H{} a hostile prompt", sh.tag());
        let posted = sh.post(&u.conv, &u.token, &u.xff, &content, kind).await;
        let Some(id) = posted.and_then(|v| v["id"].as_str().map(str::to_string)) else { continue };
        if marker != "[slow]" {
            continue;
        }
        if held.len() >= STREAMS_PER_USER {
            held.pop_front();
        }
        let s = sh.api.at(Method::GET, &format!("/v1/messages/{id}/events"), &u.xff).bearer_auth(&u.token).send().await;
        held.extend(sh.hold("stream_hoard_slow", s).await);
    }
}

/// `SOAK_DEEP_MESSAGES` posts into one conversation, one every `SOAK_DEEP_EVERY_MS`.
async fn deep_conversation(sh: Arc<Shared>, u: User) {
    let mut tick = ticker(Duration::from_millis(sh.s.deep_every_ms));
    for turn in 0..sh.s.deep_messages {
        tokio::select! {
            _ = sh.load_done.cancelled() => break,
            _ = tick.tick() => {}
        }
        let content = format!("deep #H{} turn {turn} of a long conversation", sh.tag());
        sh.post(&u.conv, &u.token, &u.xff, &content, "deep_post").await;
    }
}

/// Reads the whole body, counting its bytes; the status, the bytes and the time taken.
async fn read_all(r: reqwest::RequestBuilder) -> Option<(u16, u64, f64)> {
    let started = Instant::now();
    let r = r.send().await.ok()?;
    let status = r.status().as_u16();
    let mut body = r.bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = body.next().await {
        bytes += chunk.ok()?.len() as u64;
    }
    Some((status, bytes, started.elapsed().as_secs_f64() * 1000.0))
}

/// Pages of 200 messages of the deep conversation every `SOAK_PAGE_EVERY_MS`, and exports (of
/// the deep user and of the `[huge]` user in turn) every `SOAK_EXPORT_EVERY_SECS`, each on a
/// task of its own so they overlap (at most 4 of each at once).
async fn pages_and_exports(sh: Arc<Shared>, deep: User, huge: User) {
    let mut pages = ticker(Duration::from_millis(sh.s.page_every_ms));
    let mut exports = ticker(Duration::from_secs(sh.s.export_every_secs));
    let (page_slots, export_slots) = (Arc::new(Semaphore::new(4)), Arc::new(Semaphore::new(4)));
    let mut tasks = JoinSet::new();
    let mut exported = 0u64;
    loop {
        let export = tokio::select! {
            _ = sh.load_done.cancelled() => break,
            _ = pages.tick() => false,
            _ = exports.tick() => true,
        };
        while tasks.try_join_next().is_some() {}
        let (kind, slots) = if export { ("export", &export_slots) } else { ("page_200", &page_slots) };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            sh.note(kind, "skipped");
            continue;
        };
        let req = if export {
            exported += 1;
            let u = if exported % 2 == 0 { &deep } else { &huge };
            sh.api.at(Method::GET, "/v1/me/export", &u.xff).bearer_auth(&u.token).timeout(Duration::from_secs(120))
        } else {
            let path = format!("/v1/conversations/{}?limit=200", deep.conv);
            sh.api.at(Method::GET, &path, &deep.xff).bearer_auth(&deep.token).timeout(REQUEST_TIMEOUT)
        };
        let sh = sh.clone();
        tasks.spawn(async move {
            match read_all(req).await {
                Some((status, bytes, ms)) => {
                    sh.note(kind, status);
                    sh.max(if export { "export_ms" } else { "page_200_ms" }, ms);
                    sh.max(if export { "export_bytes" } else { "page_200_bytes" }, bytes as f64);
                }
                None => sh.note(kind, "error"),
            }
            drop(permit);
        });
    }
    tasks.abort_all();
}

/// Holds up to `SOAK_HOARD_STREAMS` event streams, never reading them: each hoarder posts a
/// message and opens its `STREAMS_PER_USER` streams on it; every `SOAK_HOARD_CYCLE_SECS` the
/// streams are dropped and opened again.
async fn hoard(sh: Arc<Shared>, hoarders: Vec<User>) {
    let mut tick = ticker(Duration::from_secs(sh.s.hoard_cycle_secs));
    let mut held: Vec<Vec<reqwest::Response>> = hoarders.iter().map(|_| Vec::new()).collect();
    loop {
        tokio::select! {
            _ = sh.load_done.cancelled() => break,
            _ = tick.tick() => {}
        }
        let mut left = sh.s.hoard_streams;
        for (u, streams) in hoarders.iter().zip(held.iter_mut()) {
            streams.clear();
            let want = left.min(STREAMS_PER_USER);
            left -= want;
            if want == 0 || sh.load_done.is_cancelled() {
                continue;
            }
            let content = format!("hoard #H{} a message to watch", sh.tag());
            let posted = sh.post(&u.conv, &u.token, &u.xff, &content, "hoard_post").await;
            let Some(id) = posted.and_then(|v| v["id"].as_str().map(str::to_string)) else { continue };
            for _ in 0..want {
                let s = sh
                    .api
                    .at(Method::GET, &format!("/v1/messages/{id}/events"), &u.xff)
                    .bearer_auth(&u.token)
                    .send()
                    .await;
                streams.extend(sh.hold("stream_hoard", s).await);
            }
        }
        sh.max("streams_hoarded", held.iter().map(Vec::len).sum::<usize>() as f64);
    }
}

/// The value of the `__Host-aira_session` cookie a sign-in set.
fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let v = c.strip_prefix("__Host-aira_session=")?.split(';').next()?;
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// Every `SOAK_DELETE_EVERY_SECS`: a new account with a message, then `DELETE /v1/me` and three
/// sign-ins of that account at once. Once the deletion has answered 204, a sign-in, the API
/// token and any session a racing sign-in got must all be refused.
async fn deletions(sh: Arc<Shared>) {
    let mut tick = ticker(Duration::from_secs(sh.s.delete_every_secs));
    let max_rounds = sh.s.max_secs / sh.s.delete_every_secs + 1;
    for round in 0..max_rounds as usize {
        tokio::select! {
            _ = sh.load_done.cancelled() => break,
            _ = tick.tick() => {}
        }
        let email = format!("gone{round}.{:08x}@soak.example", rand::random::<u32>());
        let xff = address(88, round);
        let until = (Instant::now() + Duration::from_secs(60)).min(sh.load_deadline);
        let Some(u) = user(&sh.api, &email, &xff, until, &sh.load_done).await else {
            sh.note("delete_setup", "gave_up");
            continue;
        };
        let content = format!("gone #H{} soon deleted", sh.tag());
        sh.post(&u.conv, &u.token, &xff, &content, "delete_setup_post").await;
        let creds = json!({"email": email, "password": PASSWORD});
        let delete = sh
            .api
            .at(Method::DELETE, "/v1/me", &xff)
            .bearer_auth(&u.token)
            .json(&json!({"password": PASSWORD}))
            .timeout(REQUEST_TIMEOUT)
            .send();
        let logins = futures_util::future::join_all((0..3u64).map(|k| {
            let req = sh.api.at(Method::POST, "/v1/auth/login", &xff).json(&creds).timeout(REQUEST_TIMEOUT);
            async move {
                tokio::time::sleep(Duration::from_millis(20 * k)).await;
                req.send().await
            }
        }));
        let (deleted, logins) = tokio::join!(delete, logins);
        let gone = deleted.as_ref().is_ok_and(|d| d.status() == 204);
        sh.noted("delete_me", deleted).await;
        let mut sessions = Vec::new();
        for l in logins {
            if let Ok(l) = &l {
                sessions.extend(session_cookie(l));
            }
            sh.noted("login_racing_delete", l).await;
        }
        if !gone {
            continue;
        }
        let after = sh.api.at(Method::POST, "/v1/auth/login", &xff).json(&creds).timeout(REQUEST_TIMEOUT).send().await;
        if sh.noted("login_after_delete", after).await.is_some() {
            sh.anomaly("signin_after_deletion");
        }
        let me = sh.api.at(Method::GET, "/v1/me", &xff).bearer_auth(&u.token).timeout(REQUEST_TIMEOUT).send().await;
        if me.is_ok_and(|r| r.status() == 200) {
            sh.anomaly("token_outlived_deletion");
        }
        for s in sessions {
            let me = sh
                .api
                .at(Method::GET, "/v1/me", &xff)
                .header("cookie", format!("__Host-aira_session={s}"))
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await;
            if me.is_ok_and(|r| r.status() == 200) {
                sh.anomaly("racing_session_outlived_deletion");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling.

struct Sample {
    /// Seconds since the children were ready.
    t: f64,
    accepted: u64,
    answered: u64,
    /// `None`: no 200 within `HEALTHZ_TIMEOUT`.
    healthz_ms: Option<f64>,
    api_rss_kib: u64,
    worker_rss_kib: u64,
    /// The queue's visible and in-flight messages, from moto directly.
    depth: Option<u64>,
    /// The largest `aira_rate_limiter_entries` of the api, over its limiters.
    limiter_entries: Option<f64>,
    /// The api's `aira_queue_backlog`.
    backlog_gauge: Option<f64>,
    /// The api's `aira_event_streams_open`.
    streams_open: Option<f64>,
}

/// The values of metric `name` in Prometheus text, with their labels (`{…}` or empty).
fn metric(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.trim().to_string(), value.parse().ok()?))
        })
        .collect()
}

fn max_of(values: &[(String, f64)]) -> Option<f64> {
    values.iter().map(|(_, v)| *v).reduce(f64::max)
}

async fn scrape(http: &reqwest::Client, url: &str) -> Option<String> {
    let r = http.get(url).timeout(HEALTHZ_TIMEOUT).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.text().await.ok()
}

async fn healthz(api: &Api) -> Option<f64> {
    let started = Instant::now();
    let r = api.at(Method::GET, "/healthz", "10.0.0.2").timeout(HEALTHZ_TIMEOUT).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.bytes().await.ok()?;
    Some(started.elapsed().as_secs_f64() * 1000.0)
}

async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Option<u64> {
    let a = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send();
    let a = tokio::time::timeout(HEALTHZ_TIMEOUT, a).await.ok()?.ok()?.attributes?;
    let n = |k: &QueueAttributeName| a.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(
        n(&QueueAttributeName::ApproximateNumberOfMessages)
            + n(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

struct Probes {
    api: Api,
    api_ops: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    api_pid: u32,
    worker_pid: u32,
    proxy: Arc<Proxy>,
    started: Instant,
}

/// What the sampler saw: every sample, the AWS requests the proxy saw by `service:Action`, and
/// the largest `aira_rate_limiter_entries` of each limiter.
struct Sampled {
    samples: Vec<Sample>,
    aws: BTreeMap<String, u64>,
    limiters: BTreeMap<String, f64>,
}

/// Samples every second until `stop`.
async fn sampler(sh: Arc<Shared>, p: Probes, stop: CancellationToken) -> Sampled {
    let mut tick = ticker(Duration::from_secs(1));
    let mut samples = Vec::new();
    let mut aws = BTreeMap::new();
    let mut limiters: BTreeMap<String, f64> = BTreeMap::new();
    let metrics_url = format!("{}/metrics", p.api_ops);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (h, m, d) =
            tokio::join!(healthz(&p.api), scrape(&p.api.http, &metrics_url), queue_depth(&p.sqs, &p.queue_url));
        if let Some(d) = d {
            sh.depth.store(d, Relaxed);
        }
        let m = m.unwrap_or_default();
        let entries = metric(&m, "aira_rate_limiter_entries");
        for (labels, v) in &entries {
            let e = limiters.entry(labels.clone()).or_insert(*v);
            *e = e.max(*v);
        }
        samples.push(Sample {
            t: p.started.elapsed().as_secs_f64(),
            accepted: sh.legit.accepted.load(Relaxed),
            answered: sh.legit.answered.load(Relaxed),
            healthz_ms: h,
            api_rss_kib: rss_kib(p.api_pid),
            worker_rss_kib: rss_kib(p.worker_pid),
            depth: d,
            limiter_entries: max_of(&entries),
            backlog_gauge: max_of(&metric(&m, "aira_queue_backlog")),
            streams_open: max_of(&metric(&m, "aira_event_streams_open")),
        });
        for s in p.proxy.take_requests() {
            *aws.entry(s.call).or_default() += 1;
        }
        p.proxy.take_calls();
    }
    Sampled { samples, aws, limiters }
}

fn write_samples(path: &Path, samples: &[Sample]) {
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    let mut csv = String::from(
        "t_secs,accepted,answered,healthz_ms,api_rss_kib,worker_rss_kib,queue_depth,limiter_entries_max,backlog_gauge,streams_open\n",
    );
    for s in samples {
        csv.push_str(&format!(
            "{:.3},{},{},{},{},{},{},{},{},{}\n",
            s.t,
            s.accepted,
            s.answered,
            opt(s.healthz_ms),
            s.api_rss_kib,
            s.worker_rss_kib,
            s.depth.map(|d| d.to_string()).unwrap_or_default(),
            opt(s.limiter_entries),
            opt(s.backlog_gauge),
            opt(s.streams_open),
        ));
    }
    if let Err(e) = std::fs::write(path, csv) {
        eprintln!("[soak] writing {}: {e}", path.display());
    }
}

/// Nearest-rank percentile.
fn percentile(mut v: Vec<f64>, p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank - 1])
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// The children's log lines by level, and their most frequent warning and error messages.
fn log_summary(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut levels: BTreeMap<String, u64> = BTreeMap::new();
    let mut messages: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                let level = v["level"].as_str().unwrap_or("?").to_string();
                let message = v["fields"]["message"].as_str().unwrap_or("").to_string();
                *messages.entry(format!("{level}: {message}")).or_default() += 1;
                *levels.entry(level).or_default() += 1;
            }
            Err(_) => *levels.entry("not_json".into()).or_default() += 1,
        }
    }
    let mut top: Vec<(String, u64)> = messages.into_iter().collect();
    top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    top.truncate(8);
    json!({"file": path, "lines": levels, "top": top.into_iter().collect::<BTreeMap<_, _>>()})
}

/// The final values of a few of a child's metrics (`name{labels}` → value).
fn metrics_of(text: &str, names: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for name in names {
        for (labels, v) in metric(text, name) {
            out.insert(format!("{name}{labels}"), v);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------

async fn run() {
    let s = Settings::from_env();
    let endpoint =
        std::env::var("AIRA_TEST_ENDPOINT").expect("AIRA_TEST_ENDPOINT: the moto server (bench/soak.sh starts it)");
    let bin = std::env::var_os("AIRA_RUNTIME_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_aira-runtime")));
    std::fs::create_dir_all(&s.log_dir).unwrap();
    let begun = Instant::now();

    // moto directly: the stack, and the queue's true depth.
    let direct = conf_at(&endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&direct);
    let stack = moto_stack::create(&direct, "soak").await;
    let proxy = Arc::new(Proxy::start(&endpoint, Faults::default()).await);
    let calls = Arc::new(ModelCalls::default());
    let model_url = start_fake_model(calls.clone()).await;

    let (app_port, api_ops_port, worker_ops_port) = (free_port(), free_port(), free_port());
    let common: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AIRA_QUEUE_URL", stack.queue_url.as_str()),
        ("AIRA_TABLE", stack.table.as_str()),
        ("AIRA_LLM_BASE_URL", model_url.as_str()),
        ("AIRA_LLM_TIMEOUT_SECS", "2"),
        ("AIRA_MAX_RECEIVES", "5"),
        ("AIRA_LOG", "warn"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let with = |extra: &[(&str, String)]| {
        let mut env = common.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let api_env = with(&[
        ("AIRA_LISTEN", format!("127.0.0.1:{app_port}")),
        ("AIRA_METRICS_LISTEN", format!("127.0.0.1:{api_ops_port}")),
        ("AIRA_BEHIND_LOAD_BALANCER", "true".into()),
        ("AIRA_MAX_BACKLOG", s.max_backlog.to_string()),
    ]);
    let worker_env = with(&[("AIRA_METRICS_LISTEN", format!("127.0.0.1:{worker_ops_port}"))]);
    let mut api_proc = Proc::start(&bin, "api", &api_env, &s.log_dir);
    let mut worker_proc = Proc::start(&bin, "worker", &worker_env, &s.log_dir);

    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap();
    let api = Api { http: http.clone(), base: format!("http://127.0.0.1:{app_port}") };
    let api_ops = format!("http://127.0.0.1:{api_ops_port}");
    let worker_ops = format!("http://127.0.0.1:{worker_ops_port}");
    wait_ready(&http, &format!("{api_ops}/readyz"), &mut [&mut api_proc, &mut worker_proc]).await;
    wait_ready(&http, &format!("{worker_ops}/readyz"), &mut [&mut api_proc, &mut worker_proc]).await;
    let started = Instant::now();
    eprintln!(
        "[soak] api pid {} on {}, worker pid {}, model {model_url}, proxy {}, logs in {}",
        api_proc.child.id(),
        api.base,
        worker_proc.child.id(),
        proxy.url,
        s.log_dir.display()
    );

    let max = Duration::from_secs(s.max_secs);
    let drain = Duration::from_secs(s.drain_secs).min(max / 2);
    let sh = Arc::new(Shared {
        api: api.clone(),
        legit: Legit::default(),
        claimed: AtomicU64::new(0),
        next_tag: AtomicU64::new(0),
        depth: AtomicU64::new(u64::MAX),
        failed_reasons: Mutex::default(),
        unsettled: Mutex::default(),
        hostile: Mutex::default(),
        hostile_max: Mutex::default(),
        deletion_anomalies: Mutex::default(),
        first_busy: Mutex::default(),
        load_done: CancellationToken::new(),
        started,
        load_deadline: started + max - drain,
        s,
    });
    let sampling = CancellationToken::new();
    let probes = Probes {
        api: api.clone(),
        api_ops: api_ops.clone(),
        sqs: sqs.clone(),
        queue_url: stack.queue_url.clone(),
        api_pid: api_proc.child.id(),
        worker_pid: worker_proc.child.id(),
        proxy: proxy.clone(),
        started,
    };
    let sampler = tokio::spawn(sampler(sh.clone(), probes, sampling.clone()));

    // Accounts: the legitimate users (8 sign-ups at once), then the hostile ones.
    let setup_started = Instant::now();
    let signups = Arc::new(Semaphore::new(8));
    let mut made = JoinSet::new();
    for i in 0..sh.s.users {
        let (sh, signups) = (sh.clone(), signups.clone());
        made.spawn(async move {
            let _slot = signups.acquire_owned().await.unwrap();
            let until = sh.load_deadline;
            (i, user(&sh.api, &format!("user{i}@soak.example"), &address(1, i), until, &sh.load_done).await)
        });
    }
    let mut legit_users = Vec::new();
    while let Some(r) = made.join_next().await {
        if let (i, Some(u)) = r.unwrap() {
            legit_users.push((i, u));
        }
    }
    let hostile_user = |name: &str, n: usize| {
        let sh = sh.clone();
        let email = format!("{name}@hostile.example");
        async move { user(&sh.api, &email, &address(66, n), sh.load_deadline, &sh.load_done).await }
    };
    let mut hostile = JoinSet::new();
    if sh.s.hostile {
        let slow = hostile_user("slow", 0).await;
        let huge = hostile_user("huge", 1).await;
        let empty = hostile_user("empty", 2).await;
        let deep = hostile_user("deep", 3).await;
        let mut hoarders = Vec::new();
        for k in 0..sh.s.hoard_streams.div_ceil(STREAMS_PER_USER) {
            hoarders.extend(hostile_user(&format!("hoarder{k}"), 10 + k).await);
        }
        let half = sh.s.flood_per_sec.div_ceil(2);
        hostile.spawn(signin_flood(sh.clone(), "signin_flood_one_address", half, false));
        hostile.spawn(signin_flood(sh.clone(), "signin_flood_many_addresses", half, true));
        let every = |secs: u64| Duration::from_secs(secs);
        if let Some(u) = slow {
            hostile.spawn(marked_prompts(sh.clone(), u, "prompt_slow", "[slow]", every(sh.s.slow_every_secs)));
        }
        if let Some(u) = empty {
            hostile.spawn(marked_prompts(sh.clone(), u, "prompt_empty", "[empty]", every(sh.s.empty_every_secs)));
        }
        if let Some(u) = huge.clone() {
            hostile.spawn(marked_prompts(sh.clone(), u, "prompt_huge", "[huge]", every(sh.s.huge_every_secs)));
        }
        if let Some(d) = deep {
            hostile.spawn(deep_conversation(sh.clone(), d.clone()));
            if let Some(h) = huge {
                hostile.spawn(pages_and_exports(sh.clone(), d, h));
            }
        }
        hostile.spawn(hoard(sh.clone(), hoarders));
        hostile.spawn(deletions(sh.clone()));
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "[soak] {} legitimate users ready in {setup_secs:.1} s; posting {} messages",
        legit_users.len(),
        sh.s.messages
    );

    // The legitimate load.
    let load_started = Instant::now();
    let load_start_t = started.elapsed().as_secs_f64();
    let in_flight = Arc::new(Semaphore::new(sh.s.concurrency));
    let mut users = JoinSet::new();
    for (i, u) in legit_users {
        users.spawn(legit_user(sh.clone(), i, u, in_flight.clone()));
    }
    let mut ended_by = "done";
    let mut exits: BTreeMap<&str, String> = BTreeMap::new();
    let (mut last_accepted, mut last_change, mut last_progress) = (0, Instant::now(), Instant::now());
    let mut progress_accepted = 0;
    loop {
        tokio::select! {
            r = users.join_next() => if r.is_none() { break } else { continue },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let accepted = sh.legit.accepted.load(Relaxed);
        if accepted != last_accepted {
            (last_accepted, last_change) = (accepted, Instant::now());
        }
        for p in [&mut api_proc, &mut worker_proc] {
            if let Some(status) = p.exited() {
                exits.entry(p.name).or_insert(status);
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            let l = &sh.legit;
            let secs = last_progress.elapsed().as_secs_f64();
            let depth = sh.depth.load(Relaxed);
            eprintln!(
                "[soak] {:>5.0} s: accepted {accepted} ({:.1}/s), answered {}, failed {}, busy {}, 429 {}, queue {}, api rss {:.1} MiB",
                load_started.elapsed().as_secs_f64(),
                (accepted - progress_accepted) as f64 / secs,
                l.answered.load(Relaxed),
                l.failed.load(Relaxed),
                l.busy.load(Relaxed),
                l.rate_limited.load(Relaxed),
                if depth == u64::MAX { "?".into() } else { depth.to_string() },
                rss_kib(api_proc.child.id()) as f64 / 1024.0,
            );
            (progress_accepted, last_progress) = (accepted, Instant::now());
        }
        if !exits.is_empty() {
            ended_by = "child_exited";
            break;
        }
        if Instant::now() >= sh.load_deadline {
            ended_by = "deadline";
            break;
        }
        if last_change.elapsed() >= Duration::from_secs(sh.s.stall_secs) {
            ended_by = "stall";
            break;
        }
    }
    let load_end_t = started.elapsed().as_secs_f64();
    sh.load_done.cancel();
    while users.join_next().await.is_some() {}
    // The hostile loops end at their next tick; what they hold (streams) goes with them.
    let _ = tokio::time::timeout(Duration::from_secs(30), async { while hostile.join_next().await.is_some() {} }).await;
    hostile.abort_all();
    eprintln!(
        "[soak] load ended ({ended_by}) after {:.0} s; following the messages not yet final",
        load_end_t - load_start_t
    );

    // The drain: follow what is still open, up to the drain period (and the global deadline).
    let pending = std::mem::take(&mut *sh.unsettled.lock().unwrap());
    let drain_until = (Instant::now() + drain).min(started + max).max(Instant::now() + Duration::from_secs(1));
    let drain_started = Instant::now();
    let lost = Arc::new(AtomicU64::new(0));
    let followers = Arc::new(Semaphore::new(16));
    let never = CancellationToken::new();
    let mut draining = JoinSet::new();
    for p in pending {
        let (sh, lost, followers, never) = (sh.clone(), lost.clone(), followers.clone(), never.clone());
        draining.spawn(async move {
            let _slot = followers.acquire_owned().await.unwrap();
            match follow(&sh, &p, drain_until, &never).await {
                Some(m) => settled(&sh, &p, &m),
                None => {
                    lost.fetch_add(1, Relaxed);
                }
            }
        });
    }
    while draining.join_next().await.is_some() {}
    let drain_secs = drain_started.elapsed().as_secs_f64();
    // One more sample after the drain: the RSS at the end.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sampling.cancel();
    let Sampled { samples, aws, limiters } = sampler.await.unwrap();
    let cpu = json!({
        "api": cpu_secs(api_proc.child.id()),
        "worker": cpu_secs(worker_proc.child.id()),
        "moto": std::env::var("SOAK_MOTO_PID").ok().and_then(|p| p.parse().ok()).and_then(cpu_secs),
        "driver_and_proxy": cpu_secs(std::process::id()),
    });
    let api_metrics = scrape(&http, &format!("{api_ops}/metrics")).await.unwrap_or_default();
    let worker_metrics = scrape(&http, &format!("{worker_ops}/metrics")).await.unwrap_or_default();
    for p in [&mut api_proc, &mut worker_proc] {
        if let Some(status) = p.exited() {
            exits.entry(p.name).or_insert(status);
        }
    }
    drop(api_proc);
    drop(worker_proc);
    write_samples(&sh.s.samples_out, &samples);

    // The report.
    let l = &sh.legit;
    let accepted = l.accepted.load(Relaxed);
    let lost = lost.load(Relaxed);
    // Tenths by time over the load phase (first legitimate post to the end of the load, the
    // drain excluded): the accepted count stops growing when the runtime refuses posts, time
    // does not. A `/healthz` that did not answer 200 within 5 s counts as 5,000 ms.
    let tenth = (load_end_t - load_start_t) / 10.0;
    let healthz_in = |from: f64, to: f64| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|x| x.t >= from && x.t < to)
            .map(|x| x.healthz_ms.unwrap_or(HEALTHZ_TIMEOUT.as_secs_f64() * 1000.0))
            .collect();
        percentile(v, 99.0).map(|p| round(p, 2))
    };
    let all_healthz: Vec<f64> =
        samples.iter().map(|x| x.healthz_ms.unwrap_or(HEALTHZ_TIMEOUT.as_secs_f64() * 1000.0)).collect();
    // RSS growth: the api's RSS at the last sample less at the first sample at which a tenth of
    // the run (at most 10,000 messages) had been accepted.
    let mark = (sh.s.messages / 10).clamp(1, 10_000);
    let at_mark = samples.iter().find(|x| x.accepted >= mark).map(|x| x.api_rss_kib);
    let end = samples.last().map(|x| x.api_rss_kib);
    let mib = |kib: u64| round(kib as f64 / 1024.0, 1);
    let legit_calls = calls.legit_total.load(Relaxed);
    let called_again = calls.legit.lock().unwrap().values().filter(|n| **n > 1).count();
    let hostile_statuses = sh.hostile.lock().unwrap().clone();
    let hostile_requests: BTreeMap<&str, u64> = hostile_statuses
        .iter()
        .map(|(k, v)| (*k, v.iter().filter(|(o, _)| *o != "skipped").map(|(_, n)| n).sum()))
        .collect();
    let load_secs = load_end_t - load_start_t;
    let aws_total: u64 = aws.values().sum();
    let report = json!({
        "accepted": accepted,
        "answered": l.answered.load(Relaxed),
        "failed": l.failed.load(Relaxed),
        "lost": lost,
        "busy_with_empty_queue": l.busy_with_empty_queue.load(Relaxed),
        "healthz_p99_ms_first_tenth": healthz_in(load_start_t, load_start_t + tenth),
        "healthz_p99_ms_last_tenth": healthz_in(load_end_t - tenth, load_end_t + 0.001),
        "healthz_p99_ms_all": percentile(all_healthz.clone(), 99.0).map(|p| round(p, 2)),
        "healthz_max_ms": all_healthz.iter().copied().reduce(f64::max).map(|p| round(p, 2)),
        "healthz_failures": samples.iter().filter(|x| x.healthz_ms.is_none()).count(),
        "rss_growth_mb": at_mark.zip(end).map(|(a, e)| round((e as f64 - a as f64) / 1024.0, 1)),
        "rss_mark_messages": mark,
        "api_rss_mb_at_mark": at_mark.map(mib),
        "api_rss_mb_end": end.map(mib),
        "api_rss_mb_max": samples.iter().map(|x| x.api_rss_kib).max().map(mib),
        "worker_rss_mb_end": samples.last().map(|x| mib(x.worker_rss_kib)),
        "limiter_entries_max": samples.iter().filter_map(|x| x.limiter_entries).reduce(f64::max),
        "limiter_entries_max_by_limiter": limiters,
        "backlog_gauge_max": samples.iter().filter_map(|x| x.backlog_gauge).reduce(f64::max),
        "streams_open_max": samples.iter().filter_map(|x| x.streams_open).reduce(f64::max),
        "queue_depth_max": samples.iter().filter_map(|x| x.depth).max(),
        "model_calls_per_message": (accepted > 0).then(|| round(legit_calls as f64 / accepted as f64, 4)),
        "model_calls_legit": legit_calls,
        "legit_messages_called_more_than_once": called_again,
        "model_calls_hostile": calls.hostile.lock().unwrap().clone(),
        "ended_by": ended_by,
        "children_exited": exits,
        "duration_secs": round(begun.elapsed().as_secs_f64(), 1),
        "setup_secs": round(setup_secs, 1),
        "load_secs": round(load_secs, 1),
        "drain_secs": round(drain_secs, 1),
        "accepted_per_sec": round(accepted as f64 / load_secs.max(0.001), 2),
        "answered_per_sec": round(l.answered.load(Relaxed) as f64 / (load_secs + drain_secs).max(0.001), 2),
        "replays": l.replays.load(Relaxed),
        "wrong_answers": l.wrong_answers.load(Relaxed),
        "busy": l.busy.load(Relaxed),
        "first_busy": sh.first_busy.lock().unwrap().clone(),
        "rate_limited": l.rate_limited.load(Relaxed),
        "unavailable_other": l.unavailable.load(Relaxed),
        "post_errors": l.post_errors.load(Relaxed),
        "posts_given_up": l.posts_given_up.load(Relaxed),
        "poll_errors": l.poll_errors.load(Relaxed),
        "failed_reasons": sh.failed_reasons.lock().unwrap().clone(),
        "hostile_requests": hostile_requests,
        "hostile_statuses": hostile_statuses,
        "hostile_max": sh.hostile_max.lock().unwrap().iter().map(|(k, v)| (*k, round(*v, 1))).collect::<BTreeMap<_, _>>(),
        "deletion_anomalies": sh.deletion_anomalies.lock().unwrap().clone(),
        "aws_requests": aws,
        "aws_requests_per_accepted": (accepted > 0).then(|| round(aws_total as f64 / accepted as f64, 2)),
        "api_metrics": metrics_of(&api_metrics, &[
            "aira_messages_accepted_total", "aira_messages_shed_total", "aira_rate_limited_total",
            "aira_queue_send_errors_total", "aira_outbox_relayed_total", "aira_outbox_backlog",
        ]),
        "worker_metrics": metrics_of(&worker_metrics, &[
            "aira_worker_messages_total", "aira_llm_errors_total", "aira_worker_dead_lettered_total",
        ]),
        "logs": {"api": log_summary(&sh.s.log_dir.join("api.log")), "worker": log_summary(&sh.s.log_dir.join("worker.log"))},
        "samples_file": sh.s.samples_out,
        "cpu_secs": cpu,
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()},
        "settings": sh.s.json(),
    });
    println!("{report}");
}
