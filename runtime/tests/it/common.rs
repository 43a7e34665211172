//! Test helpers: embedded environment, requests through `oneshot`, the fake LLM server, the
//! `serve` binary over HTTP.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aira_runtime::api::{app, AppState, Limits, PasswordCost};
use aira_runtime::llm::{Llm, OpenAi};
use aira_runtime::metrics::Metrics;
use aira_runtime::model::{Message, Status};
use aira_runtime::queue::Queue;
use aira_runtime::run::{open_embedded, Embedded};
use aira_runtime::store::Store;
use aira_runtime::worker::{Worker, WorkerConfig};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub fn cheap_password() -> PasswordCost {
    PasswordCost { memory_kib: 64, iterations: 1 }
}

pub fn worker_config() -> WorkerConfig {
    WorkerConfig {
        batch_size: 10,
        max_in_flight: 8,
        wait: Duration::from_millis(300),
        visibility: Duration::from_secs(1),
        max_receives: 3,
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
        llm_timeout: Duration::from_secs(5),
        history_turns: 20,
        shutdown_grace: Duration::from_millis(300),
        // Every failure is a receive, as the dead-letter tests need; the outage test sets one.
        outage_budget: Duration::ZERO,
        ..WorkerConfig::default()
    }
}

/// The embedded backends in a temporary folder, with the API router on them.
pub struct Env {
    pub _dir: tempfile::TempDir,
    pub backends: Embedded,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub state: AppState,
}

impl Env {
    pub fn new(limits: Limits) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let backends =
            open_embedded(dir.path(), 3, aira_runtime::group_commit::Durability::Full).expect("open embedded backends");
        let store: Arc<dyn Store> = backends.store.clone();
        let queue: Arc<dyn Queue> = backends.queue.clone();
        let metrics = Arc::new(Metrics::new());
        Env::with(dir, backends, store, queue, metrics, limits)
    }

    /// The store and the queue in two files, as on AWS (a table and a queue): a recorded
    /// message gets an outbox row, and the API sends it, then clears the row.
    pub fn apart(limits: Limits) -> Env {
        use aira_runtime::group_commit::Durability;
        use aira_runtime::queue::sqlite::{RedrivePolicy, SqliteQueue};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = aira_runtime::store::sqlite::SqliteStore::open(&dir.path().join("store.sqlite"), Durability::Full)
            .expect("open store");
        let qdb = SqliteQueue::open_db(&dir.path().join("queue.sqlite"), Durability::Full).expect("open queue");
        let policy = RedrivePolicy { dead_letter_queue: aira_runtime::run::EMBEDDED_DLQ.into(), max_receives: 3 };
        let backends = Embedded {
            store: Arc::new(store),
            queue: Arc::new(SqliteQueue::new(qdb.clone(), aira_runtime::run::EMBEDDED_QUEUE, Some(policy))),
            dead_letter: Arc::new(SqliteQueue::new(qdb, aira_runtime::run::EMBEDDED_DLQ, None)),
        };
        let store: Arc<dyn Store> = backends.store.clone();
        let queue: Arc<dyn Queue> = backends.queue.clone();
        Env::with(dir, backends, store, queue, Arc::new(Metrics::new()), limits)
    }

    pub fn with(
        dir: tempfile::TempDir,
        backends: Embedded,
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Env {
        let mut state = AppState::new(store.clone(), queue.clone(), metrics.clone(), limits);
        state.password_cost = cheap_password();
        state.events_poll = Duration::from_millis(50);
        Env { _dir: dir, backends, store, queue, metrics, state }
    }

    pub fn app(&self) -> Router {
        app(self.state.clone())
    }

    /// The operations listener's router (`/metrics`, `/readyz`), on the same state.
    pub fn ops(&self) -> Router {
        aira_runtime::api::ops_app(self.state.clone())
    }

    pub fn worker(&self, llm: Arc<dyn Llm>, config: WorkerConfig) -> Arc<Worker> {
        Arc::new(Worker::new(self.queue.clone(), self.store.clone(), llm, self.metrics.clone(), config))
    }
}

pub fn spawn_worker(worker: Arc<Worker>) -> (JoinHandle<()>, CancellationToken) {
    let token = CancellationToken::new();
    (tokio::spawn(worker.run(token.clone())), token)
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

/// One request through the router. `auth` is a bearer token or a full `Cookie` header value
/// (starting with `__Host-aira_session=`).
pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> Reply {
    let mut b = Request::builder().method(method).uri(uri);
    match auth {
        Some(a) if a.starts_with("__Host-aira_session=") => b = b.header(header::COOKIE, a),
        Some(a) => b = b.header(header::AUTHORIZATION, format!("Bearer {a}")),
        None => {}
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let req = match body {
        Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    reply(app.clone().oneshot(req).await.unwrap()).await
}

pub async fn reply(resp: Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, headers, body }
}

/// Signs up and returns an API token.
pub async fn user(app: &Router, email: &str) -> String {
    // Consents at sign-up, keeping history: what the chat routes need first.
    let creds = json!({"email": email, "password": "correct horse battery", "keep_history": true});
    let r = call(app, "POST", "/v1/auth/signup", None, Some(creds.clone()), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = call(app, "POST", "/v1/auth/tokens", None, Some(creds), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["token"].as_str().unwrap().to_string()
}

pub async fn conversation(app: &Router, token: &str) -> String {
    let r = call(app, "POST", "/v1/conversations", Some(token), None, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

pub async fn post_message(app: &Router, token: &str, conv: &str, content: &str) -> String {
    let r = call(
        app,
        "POST",
        &format!("/v1/conversations/{conv}/messages"),
        Some(token),
        Some(json!({"content": content})),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// Polls the store until the message has `status`, or panics after `within`.
pub async fn wait_status(store: &dyn Store, id: &str, status: Status, within: Duration) -> Message {
    let deadline = Instant::now() + within;
    loop {
        let m = store.get_message(id).await.unwrap().expect("message exists");
        if m.status == status {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "message {id} still {:?} (error {:?}) after {within:?}, wanted {status:?}",
            m.status,
            m.error
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the fake LLM does with one request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// 200 with `fake: PROMPT` after the delay.
    Answer(Duration),
    /// 429 with `Retry-After` seconds.
    RateLimited(u64),
    /// 429 with code insufficient_quota.
    Quota,
    Status(u16),
    /// Never answers.
    Hang,
    /// Starts a 200 response and drops the connection mid-body.
    Drop,
    /// 200 with an empty answer.
    Empty,
    /// 200 with an answer of this many bytes.
    Huge(usize),
    /// `words` words (`w1 w2 …`), one each `every`: streamed as written when asked for a stream.
    Slow {
        words: usize,
        every: Duration,
    },
}

#[derive(Clone)]
struct FakeState {
    script: Arc<Mutex<VecDeque<Behavior>>>,
    default: Arc<Mutex<Behavior>>,
    calls: Arc<Mutex<Vec<Instant>>>,
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Behaviours for prompts that contain a tag, before the script.
    rules: Arc<Mutex<Vec<(String, Behavior)>>>,
    /// Streams the client closed before their end (the worker ended the call), and when.
    cut: Arc<Mutex<Vec<Instant>>>,
}

/// A fake OpenAI-compatible server on 127.0.0.1:0: scripted behaviours, then a default.
pub struct FakeLlm {
    pub addr: SocketAddr,
    state: FakeState,
}

impl FakeLlm {
    pub async fn start(script: Vec<Behavior>, default: Behavior) -> FakeLlm {
        let state = FakeState {
            script: Arc::new(Mutex::new(script.into())),
            default: Arc::new(Mutex::new(default)),
            calls: Arc::new(Mutex::new(Vec::new())),
            bodies: Arc::new(Mutex::new(Vec::new())),
            rules: Arc::default(),
            cut: Arc::default(),
        };
        let app = Router::new().route("/v1/chat/completions", post(fake_completion)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeLlm { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn client(&self, timeout: Duration) -> Arc<dyn Llm> {
        Arc::new(OpenAi::new(&self.base_url(), "fake-model", Some("sk-test".into()), None, timeout).unwrap())
    }

    pub fn calls(&self) -> Vec<Instant> {
        self.state.calls.lock().unwrap().clone()
    }

    /// The request bodies received, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.state.bodies.lock().unwrap().clone()
    }

    /// Answers every prompt that contains `tag` with `b`.
    pub fn set_rule(&self, tag: &str, b: Behavior) {
        self.state.rules.lock().unwrap().push((tag.to_string(), b));
    }

    /// When each stream the client closed before its end was closed.
    pub fn cut_streams(&self) -> Vec<Instant> {
        self.state.cut.lock().unwrap().clone()
    }

    pub fn set_default(&self, b: Behavior) {
        *self.state.default.lock().unwrap() = b;
    }
}

async fn fake_completion(axum::extract::State(s): axum::extract::State<FakeState>, Json(req): Json<Value>) -> Response {
    s.calls.lock().unwrap().push(Instant::now());
    s.bodies.lock().unwrap().push(req.clone());
    let prompt =
        req["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or("").to_string();
    let ruled = s.rules.lock().unwrap().iter().find(|(tag, _)| prompt.contains(tag.as_str())).map(|(_, b)| b.clone());
    let behavior =
        ruled.or_else(|| s.script.lock().unwrap().pop_front()).unwrap_or_else(|| s.default.lock().unwrap().clone());
    if req["stream"] == true {
        if let Some(r) = fake_stream(&s, &behavior, &prompt).await {
            return r;
        }
    }
    match behavior {
        Behavior::Slow { words, every } => {
            tokio::time::sleep(every * words as u32).await;
            let text = slow_words(words);
            Json(json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": words, "total_tokens": 3 + words}
            }))
            .into_response()
        }
        Behavior::Answer(delay) => {
            tokio::time::sleep(delay).await;
            Json(json!({
                "id": "chatcmpl-1", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("fake: {prompt}")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
            }))
            .into_response()
        }
        Behavior::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}})),
        )
            .into_response(),
        Behavior::Quota => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}})),
        )
            .into_response(),
        Behavior::Status(code) => {
            (StatusCode::from_u16(code).unwrap(), Json(json!({"error": {"message": "nope", "code": null}})))
                .into_response()
        }
        Behavior::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behavior::Empty | Behavior::Huge(_) => {
            let text = match behavior {
                Behavior::Huge(n) => "h".repeat(n),
                _ => String::new(),
            };
            Json(json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
            }))
            .into_response()
        }
        Behavior::Drop => {
            let chunks: Vec<Result<&'static str, std::io::Error>> =
                vec![Ok("{\"choices\": ["), Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped"))];
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .unwrap()
        }
    }
}

/// The answer of [`Behavior::Slow`]: `w1 w2 … wN`.
pub fn slow_words(n: usize) -> String {
    (1..=n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")
}

/// Records a stream dropped before its last piece: the client closed it.
struct CutGuard {
    cut: Arc<Mutex<Vec<Instant>>>,
    finished: bool,
}
impl Drop for CutGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.cut.lock().unwrap().push(Instant::now());
        }
    }
}

/// The OpenAI streaming form (`text/event-stream` of `chat.completion.chunk`s, a usage chunk,
/// `[DONE]`) of a behaviour that answers; `None` for the others, which answer as without a stream.
async fn fake_stream(s: &FakeState, behavior: &Behavior, prompt: &str) -> Option<Response> {
    let chunk = |text: &str| {
        let c = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        format!("data: {c}\n\n")
    };
    let end = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
               data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: [DONE]\n\n";
    // Pieces, each sent after its delay.
    let pieces: Vec<(Duration, String)> = match behavior {
        Behavior::Answer(delay) => {
            tokio::time::sleep(*delay).await;
            let text = format!("fake: {prompt}");
            let mid = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
            vec![(Duration::ZERO, chunk(&text[..mid])), (Duration::ZERO, chunk(&text[mid..]))]
        }
        Behavior::Slow { words, every } => {
            (1..=*words).map(|i| (*every, chunk(&if i == 1 { "w1".into() } else { format!(" w{i}") }))).collect()
        }
        Behavior::Empty => vec![],
        Behavior::Huge(n) => {
            let text = "h".repeat(*n);
            text.as_bytes().chunks(4096).map(|c| (Duration::ZERO, chunk(std::str::from_utf8(c).unwrap()))).collect()
        }
        Behavior::Drop => {
            let chunks: Vec<Result<String, std::io::Error>> =
                vec![Ok(chunk("par")), Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped"))];
            let body = Body::from_stream(futures_util::stream::iter(chunks));
            return Some(Response::builder().header(header::CONTENT_TYPE, "text/event-stream").body(body).unwrap());
        }
        _ => return None,
    };
    let guard = CutGuard { cut: s.cut.clone(), finished: false };
    let body = futures_util::stream::unfold((pieces.into_iter(), Some(guard)), move |(mut rest, guard)| async move {
        let mut guard = guard?;
        match rest.next() {
            Some((delay, piece)) => {
                tokio::time::sleep(delay).await;
                Some((Ok::<_, std::io::Error>(piece), (rest, Some(guard))))
            }
            None => {
                guard.finished = true;
                Some((Ok(end.to_string()), (rest, None)))
            }
        }
    });
    Some(Response::builder().header(header::CONTENT_TYPE, "text/event-stream").body(Body::from_stream(body)).unwrap())
}

/// Counter value from the registry text, e.g. `aira_worker_messages_total{outcome="answered"}`.
pub fn metric(metrics: &Metrics, series: &str) -> f64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Signs up `email` against a running `serve` at `base` and returns a token and a new
/// conversation's id (the tests that start the binary share this first step).
pub async fn sign_up_over_http(http: &reqwest::Client, base: &str, email: &str) -> (String, String) {
    let creds = json!({"email": email, "password": "a test password", "keep_history": true});
    let r = http.post(format!("{base}/v1/auth/signup")).json(&creds).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let t: Value = http.post(format!("{base}/v1/auth/tokens")).json(&creds).send().await.unwrap().json().await.unwrap();
    let token = t["token"].as_str().unwrap().to_string();
    let c: Value =
        http.post(format!("{base}/v1/conversations")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    (token, c["id"].as_str().unwrap().to_string())
}

/// Posts `prompt` to a running `serve` and returns the message once answered (panics after 20 s
/// or if it fails).
pub async fn answered_over_http(http: &reqwest::Client, base: &str, token: &str, conv: &str, prompt: &str) -> Value {
    let m: Value = http
        .post(format!("{base}/v1/conversations/{conv}/messages"))
        .bearer_auth(token)
        .json(&json!({ "content": prompt }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{base}/v1/messages/{}", m["id"].as_str().unwrap_or_else(|| panic!("not accepted: {m}")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m: Value = http.get(&url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        if m["status"] == "answered" {
            return m;
        }
        assert!(m["status"] != "failed" && Instant::now() < deadline, "not answered: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `aira-runtime serve` on free loopback ports (the app and the operations listener) with the
/// echo model and `env`, on an offline AWS configuration: no credentials, config files or
/// instance metadata unless `env` brings them, so nothing is asked of an address off this
/// machine. Its log (JSON lines) goes to a file; killed on drop.
pub struct Serve {
    pub child: Child,
    pub base: String,
    /// The operations listener (`/metrics`).
    pub ops: String,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Serve {
    pub async fn start(env: &[(&str, &str)]) -> Serve {
        Serve::command("serve", env).await
    }

    /// `aira-runtime COMMAND` (`serve`, `api` or `worker`) the same way; `api` and `worker` need
    /// their queue, table and AWS endpoint in `env`. A worker has no app port: it is up when its
    /// operations listener answers.
    pub async fn command(command: &str, env: &[(&str, &str)]) -> Serve {
        let data = tempfile::tempdir().unwrap();
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (port, ops_port) = (free(), free());
        let log = data.path().join("serve.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aira-runtime"));
        cmd.arg(command);
        match command {
            "serve" => cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--data", data.path().to_str().unwrap()]),
            "api" => cmd.args(["--listen", &format!("127.0.0.1:{port}")]),
            _ => &mut cmd,
        };
        cmd.args(["--metrics-listen", &format!("127.0.0.1:{ops_port}")])
            .env("AIRA_LOG", "warn")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(std::fs::File::create(&log).unwrap());
        for v in [
            "AIRA_LLM_BASE_URL",
            "AIRA_REMOTE_WRITE_URL",
            "AIRA_TASK_ID",
            "AIRA_STACK",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "ECS_CONTAINER_METADATA_URI_V4",
        ] {
            cmd.env_remove(v);
        }
        let child = cmd.envs(env.iter().copied()).spawn().expect("start aira-runtime");
        let s = Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
            ops: format!("http://127.0.0.1:{ops_port}"),
            log,
            dir: data,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = if command == "worker" { &s.ops } else { &s.base };
        while reqwest::get(format!("{probe}/healthz")).await.is_err() {
            assert!(Instant::now() < deadline, "aira-runtime {command} did not start:\n{}", s.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The data folder `serve` runs on (`store.sqlite`).
    pub fn data(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A series' value on the operations listener's `/metrics`, e.g.
    /// `aira_remote_write_requests_total{outcome="error"}` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.ops)).await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
    }

    /// SIGTERM, then the time the process took to exit (panics after `within`).
    pub async fn terminate(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        // SAFETY: sends a signal to our own child process; no memory is shared.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}:\n{}", self.log());
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "serve did not exit within {within:?} of SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tokens listed and revoked, and a password change that signs out everywhere else: the same
/// steps on either store (`api.rs` on SQLite, `aws.rs` on DynamoDB).
pub async fn tokens_and_password_change(app: &Router, email: &str) {
    let password = "correct horse battery";
    let bearer = user(app, email).await;
    // A browser session, and a second API token.
    let login =
        call(app, "POST", "/v1/auth/login", None, Some(json!({"email": email, "password": password})), &[]).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let cookie = login.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string());
    let session =
        cookie.map(|c| c.split(';').next().unwrap().to_string()).find(|c| c.starts_with("__Host-aira_session="));
    let session = session.expect("a session cookie");
    let second =
        call(app, "POST", "/v1/auth/tokens", None, Some(json!({"email": email, "password": password})), &[]).await;
    let second = second.body["token"].as_str().unwrap().to_string();

    let list = call(app, "GET", "/v1/auth/tokens", Some(&bearer), None, &[]).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let tokens = list.body["tokens"].as_array().unwrap().clone();
    let mut kinds: Vec<&str> = tokens.iter().map(|t| t["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["api", "api", "session"], "{tokens:?}");
    assert_eq!(tokens.iter().filter(|t| t["current"] == true).count(), 1);
    let text = list.body.to_string();
    for secret in [&bearer, &second] {
        assert!(!text.contains(secret.as_str()), "a token's secret is listed");
    }
    let second_id = {
        let list = call(app, "GET", "/v1/auth/tokens", Some(&second), None, &[]).await;
        let current = list.body["tokens"].as_array().unwrap().iter().find(|t| t["current"] == true).cloned();
        current.unwrap()["id"].as_str().unwrap().to_string()
    };

    // Revoking one token: it stops working at once; an id that is not the user's is 404.
    let r = call(app, "DELETE", &format!("/v1/auth/tokens/{second_id}"), Some(&bearer), None, &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_eq!(call(app, "GET", "/v1/conversations", Some(&second), None, &[]).await.status, StatusCode::UNAUTHORIZED);
    let again = call(app, "DELETE", &format!("/v1/auth/tokens/{second_id}"), Some(&bearer), None, &[]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let other = user(app, &format!("other-{email}")).await;
    let theirs = call(app, "GET", "/v1/auth/tokens", Some(&other), None, &[]).await;
    let their_id = theirs.body["tokens"][0]["id"].as_str().unwrap().to_string();
    let r = call(app, "DELETE", &format!("/v1/auth/tokens/{their_id}"), Some(&bearer), None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "another user's token");
    assert_eq!(call(app, "GET", "/v1/conversations", Some(&other), None, &[]).await.status, StatusCode::OK);

    // A password change: the wrong current password is refused; the right one revokes every
    // other session and token (the browser session here), keeps this one, and the new password
    // is the one that signs in.
    let change = |current: &str| json!({"current_password": current, "new_password": "a brand new password"});
    let wrong = call(app, "PUT", "/v1/me/password", Some(&bearer), Some(change("not it")), &[]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ok = call(app, "PUT", "/v1/me/password", Some(&bearer), Some(change(password)), &[]).await;
    assert_eq!((ok.status, &ok.body["revoked_tokens"]), (StatusCode::OK, &json!(1)), "{:?}", ok.body);
    assert_eq!(call(app, "GET", "/v1/conversations", Some(&session), None, &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(call(app, "GET", "/v1/conversations", Some(&bearer), None, &[]).await.status, StatusCode::OK);
    let old = call(app, "POST", "/v1/auth/login", None, Some(json!({"email": email, "password": password})), &[]).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = json!({"email": email, "password": "a brand new password"});
    assert_eq!(call(app, "POST", "/v1/auth/login", None, Some(new), &[]).await.status, StatusCode::OK);
}

/// Ids of another shape than ours are unknown (404) before any store call, on either store:
/// DynamoDB would refuse a key over 2048 bytes with an error (a 500).
pub async fn malformed_ids_are_not_found(app: &Router, token: &str) {
    let long = "x".repeat(3000);
    for path in [
        format!("/v1/conversations/{long}"),
        format!("/v1/messages/{long}"),
        format!("/v1/messages/{long}/events"),
        "/v1/conversations/not-a-uuid".to_string(),
    ] {
        let r = call(app, "GET", &path, Some(token), None, &[]).await;
        assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{}", &path[..40]);
    }
    let r = call(
        app,
        "POST",
        &format!("/v1/conversations/{long}/messages"),
        Some(token),
        Some(json!({"content": "x"})),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Titles, renames and deletions of conversations, through the API: the first message of a user
/// who keeps history names the conversation (its opening words), a later one does not; a rename
/// takes 1 to 100 characters; another user can neither rename nor delete it; a deletion takes its
/// messages with it and can be repeated. Returns the deleted conversation's id and its messages'.
pub async fn titles_renames_and_deletions(app: &Router, email: &str) -> (String, Vec<String>) {
    let token = user(app, email).await;
    let conv = conversation(app, &token).await;
    let get = |id: String| {
        let token = token.clone();
        async move { call(app, "GET", &format!("/v1/conversations/{id}"), Some(&token), None, &[]).await }
    };
    assert_eq!(get(conv.clone()).await.body["title"], Value::Null, "untitled until its first message");
    let long = "Plan a week in Lisbon in spring: museums, tram 28, a day in Sintra, and food under 40 euros";
    let first = post_message(app, &token, &conv, &format!("\n  {long}\nsecond line")).await;
    let titled = get(conv.clone()).await;
    assert_eq!(
        titled.body["title"], "Plan a week in Lisbon in spring: museums, tram 28, a day in…",
        "{:?}",
        titled.body
    );
    let second = post_message(app, &token, &conv, "Another question").await;
    let list = call(app, "GET", "/v1/conversations", Some(&token), None, &[]).await;
    let listed: Vec<&Value> =
        list.body["conversations"].as_array().unwrap().iter().filter(|c| c["id"] == conv.as_str()).collect();
    assert_eq!(listed[0]["title"], titled.body["title"], "the list shows the first message's title, not a later one's");

    let rename = |id: String, token: String, title: Value| async move {
        call(app, "PATCH", &format!("/v1/conversations/{id}"), Some(&token), Some(json!({"title": title})), &[]).await
    };
    let r = rename(conv.clone(), token.clone(), json!("  Lisbon  ")).await;
    assert_eq!((r.status, r.body["title"].clone()), (StatusCode::OK, json!("Lisbon")), "{:?}", r.body);
    assert_eq!(get(conv.clone()).await.body["title"], "Lisbon");
    for bad in [json!(""), json!("   "), json!("x".repeat(101)), json!("two\nlines"), json!(7)] {
        let r = rename(conv.clone(), token.clone(), bad.clone()).await;
        assert!(
            r.status == StatusCode::UNPROCESSABLE_ENTITY || r.status == StatusCode::BAD_REQUEST,
            "{bad}: {:?}",
            r.body
        );
    }
    assert_eq!(rename(conv.clone(), token.clone(), json!("é".repeat(100))).await.status, StatusCode::OK);

    // Another user's conversation: not found, unchanged, not deleted.
    let other = user(app, &format!("other-{email}")).await;
    assert_eq!(rename(conv.clone(), other.clone(), json!("Mine")).await.status, StatusCode::NOT_FOUND);
    let del = call(app, "DELETE", &format!("/v1/conversations/{conv}"), Some(&other), None, &[]).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "a delete of what the user has not is a no-op");
    assert_eq!(get(conv.clone()).await.body["title"], "é".repeat(100));

    let del = call(app, "DELETE", &format!("/v1/conversations/{conv}"), Some(&token), None, &[]).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{:?}", del.body);
    assert_eq!(get(conv.clone()).await.status, StatusCode::NOT_FOUND);
    for m in [&first, &second] {
        let r = call(app, "GET", &format!("/v1/messages/{m}"), Some(&token), None, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "its messages went with it");
    }
    let list = call(app, "GET", "/v1/conversations", Some(&token), None, &[]).await;
    assert!(list.body["conversations"].as_array().unwrap().iter().all(|c| c["id"] != conv.as_str()));
    let again = call(app, "DELETE", &format!("/v1/conversations/{conv}"), Some(&token), None, &[]).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);

    // A user who keeps no history: the title would be the message's words, so there is none.
    let creds =
        json!({"email": format!("nohistory-{email}"), "password": "correct horse battery", "keep_history": false});
    assert_eq!(call(app, "POST", "/v1/auth/signup", None, Some(creds.clone()), &[]).await.status, StatusCode::CREATED);
    let brief =
        call(app, "POST", "/v1/auth/tokens", None, Some(creds), &[]).await.body["token"].as_str().unwrap().to_string();
    let c2 = conversation(app, &brief).await;
    post_message(app, &brief, &c2, "Something private").await;
    let r = call(app, "GET", &format!("/v1/conversations/{c2}"), Some(&brief), None, &[]).await;
    assert_eq!(r.body["title"], Value::Null, "{:?}", r.body);
    (conv, vec![first, second])
}

/// The message's status and answer through the API, once it is `answered` (within 20 s).
pub async fn answered_via_api(app: &Router, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(app, "GET", &format!("/v1/messages/{id}"), Some(token), None, &[]).await;
        if r.body["status"] == "answered" {
            return r.body;
        }
        assert!(Instant::now() < deadline, "{id} not answered: {:?}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Regenerating, through the API, with a worker on `fake` (an answer after 300 ms): only the
/// conversation's last answered message, which the model answers again with the earlier turns
/// (not its old answer), the new answer replacing the old; a message being answered, an
/// earlier one or another user's is refused.
pub async fn regeneration(app: &Router, fake: &FakeLlm, email: &str) {
    let token = user(app, email).await;
    let conv = conversation(app, &token).await;
    let first = post_message(app, &token, &conv, "one").await;
    answered_via_api(app, &token, &first).await;
    let second = post_message(app, &token, &conv, "two").await;
    let old = answered_via_api(app, &token, &second).await;
    let regenerate = |id: String, token: String| async move {
        call(app, "POST", &format!("/v1/messages/{id}/regenerate"), Some(&token), None, &[]).await
    };
    let r = regenerate(first.clone(), token.clone()).await;
    assert_eq!((r.status, r.body["error"].clone()), (StatusCode::CONFLICT, json!("not_last")), "{:?}", r.body);
    let other = user(app, &format!("other-{email}")).await;
    assert_eq!(regenerate(second.clone(), other).await.status, StatusCode::NOT_FOUND);

    let calls = fake.calls().len();
    let r = regenerate(second.clone(), token.clone()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["id"], second.as_str());
    // Queued or being answered: not again until it has its answer.
    let again = regenerate(second.clone(), token.clone()).await;
    assert_eq!((again.status, again.body["error"].clone()), (StatusCode::CONFLICT, json!("not_answered")));
    let new = answered_via_api(app, &token, &second).await;
    assert_eq!(fake.calls().len(), calls + 1, "one more model call");
    assert_eq!(new["answer"], old["answer"], "the fake answers the same prompt alike");
    assert!(new["updated_at"].as_i64() > old["updated_at"].as_i64(), "{old:?} → {new:?}");
    // The model got the earlier turn and the prompt again, not the answer being replaced.
    let body = fake.bodies().last().cloned().unwrap();
    let turns: Vec<&str> = body["messages"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(turns.iter().filter(|t| t.contains("two")).count(), 1, "{turns:?}");
    assert!(turns.iter().any(|t| t.contains("one")), "{turns:?}");
    // One message, one answer, in the conversation.
    let c = call(app, "GET", &format!("/v1/conversations/{conv}"), Some(&token), None, &[]).await;
    assert_eq!(c.body["messages"].as_array().unwrap().len(), 2);
}
