//! The worker against llm-katan (PyPI, pinned by `scripts/llm-katan.sh`), an outside server that
//! speaks the OpenAI API and Bedrock's Converse API: answers through both providers, the SigV4
//! signature as llm-katan reads it, and its faults. One llm-katan per test, on a free port.
//! What llm-katan saw is read from its own log and its `/stats` counters.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aira_runtime::api::Limits;
use aira_runtime::group_commit::Durability;
use aira_runtime::llm::bedrock::Bedrock;
use aira_runtime::llm::{Llm, OpenAi};
use aira_runtime::metrics::Metrics;
use aira_runtime::model::Status;
use aira_runtime::queue::Queue;
use aira_runtime::worker::WorkerConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use serde_json::{json, Value};

use crate::common::*;
use crate::sigv4;

const MODEL_ID: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const ACCESS_KEY: &str = "AKIAKATANTEST";
const SECS_20: Duration = Duration::from_secs(20);

struct Katan {
    child: Child,
    port: u16,
    /// The event stream proxy in front of llm-katan's Bedrock routes (see [`eventstream_proxy`]).
    bedrock_url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Katan {
    /// Starts llm-katan with the echo backend and both providers, plus `extra` options. `None`
    /// (the caller skips) when it is not installed and `AIRA_ALLOW_SKIP=1`; otherwise that fails.
    async fn start(extra: &[&str]) -> Option<Katan> {
        let exe = std::env::var_os("AIRA_LLM_KATAN").map(PathBuf::from).unwrap_or_else(|| {
            let cache = std::env::var_os("AIRA_CACHE").map(PathBuf::from).unwrap_or("/var/tmp/aira-cache".into());
            cache.join("venv/bin/llm-katan")
        });
        if !exe.is_file() {
            let why = format!("llm-katan not found at {} (scripts/llm-katan.sh installs it)", exe.display());
            assert!(std::env::var("AIRA_ALLOW_SKIP").as_deref() == Ok("1"), "{why} (AIRA_ALLOW_SKIP=1 skips)");
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("llm-katan.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&exe)
            .args(["--backend", "echo", "--providers", "openai,bedrock", "-m", "katan-echo", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--stats-file", dir.path().join("stats.json").to_str().unwrap()])
            .args(extra)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let bedrock_url = eventstream_proxy(format!("http://127.0.0.1:{port}")).await;
        let katan = Katan { child, port, bedrock_url, log, _dir: dir };
        // Python's start-up on a loaded machine takes seconds.
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("{}/health", katan.base_url())).await.is_err() {
            assert!(Instant::now() < deadline, "llm-katan did not start:\n{}", katan.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(katan)
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where the Bedrock provider is pointed: ConverseStream answers in AWS's event stream.
    fn bedrock_url(&self) -> String {
        self.bedrock_url.clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Requests llm-katan answered for `provider` (errors included), by its own count.
    async fn requests(&self, provider: &str) -> u64 {
        let stats: Value = reqwest::get(format!("{}/stats", self.base_url())).await.unwrap().json().await.unwrap();
        stats["providers"][provider].as_u64().unwrap_or(0)
    }

    /// A Bedrock client signing with static temporary credentials (with a session token).
    fn bedrock(&self, access_key: &str, region: &str) -> Arc<dyn Llm> {
        let creds = Credentials::new(access_key, "katan-secret", Some("katan-session-token".into()), None, "test");
        let creds = SharedCredentialsProvider::new(creds);
        Arc::new(Bedrock::new(&self.bedrock_url(), MODEL_ID, region, creds, None, SECS_20).unwrap())
    }
}

impl Drop for Katan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in front of llm-katan for what it does otherwise than Bedrock: llm-katan answers
/// ConverseStream with server-sent events (`data: {"contentBlockDelta": …}`) under the content
/// type `application/vnd.amazon.eventstream`; Bedrock sends AWS's binary event stream, one
/// frame per event (`:message-type` `event`, `:event-type` the event's name, `:content-type`
/// `application/json`, the event's members as the payload), which this proxy writes, with the
/// SDK's own encoder. Everything else (the request, its signature, errors) passes unchanged.
async fn eventstream_proxy(upstream: String) -> String {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    use axum::body::{Body, Bytes};
    use axum::extract::Request;
    use axum::response::Response;
    let http = reqwest::Client::new();
    let forward = move |req: Request| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
            let mut out = http.request(parts.method.clone(), format!("{upstream}{path}")).body(body);
            for (k, v) in &parts.headers {
                out = out.header(k, v);
            }
            let resp = out.send().await.unwrap();
            let status = resp.status();
            let mut builder = Response::builder().status(status);
            for (k, v) in resp.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    builder = builder.header(k, v);
                }
            }
            let bytes = resp.bytes().await.unwrap();
            if !(path.ends_with("/converse-stream") && status.is_success()) {
                return builder.body(Body::from(bytes)).unwrap();
            }
            let mut frames = Vec::new();
            for line in String::from_utf8_lossy(&bytes).lines() {
                let Some(data) = line.strip_prefix("data: ") else { continue };
                let event: serde_json::Map<String, Value> = serde_json::from_str(data).unwrap();
                let (name, members) = event.into_iter().next().unwrap();
                let message = Message::new(members.to_string().into_bytes())
                    .add_header(Header::new(":message-type", HeaderValue::String("event".into())))
                    .add_header(Header::new(":event-type", HeaderValue::String(name.into())))
                    .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())));
                aws_smithy_eventstream::frame::write_message_to(&message, &mut frames).unwrap();
            }
            builder.body(Body::from(frames)).unwrap()
        }
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A user's message posted through the API, then the worker's answer from the store.
async fn ask(env: &Env, token: &str, conv: &str, prompt: &str, status: Status) -> aira_runtime::model::Message {
    let id = post_message(&env.app(), token, conv, prompt).await;
    wait_status(env.store.as_ref(), &id, status, SECS_20).await
}

#[tokio::test]
async fn openai_provider_answers_from_llm_katan() {
    let Some(katan) = Katan::start(&[]).await else { return };
    let env = Env::new(Limits::default());
    let app = env.app();
    let llm = Arc::new(
        OpenAi::new(&format!("{}/v1", katan.base_url()), "katan-echo", Some("sk-katan".into()), None, SECS_20).unwrap(),
    );
    let (_w, _stop) = spawn_worker(env.worker(llm, worker_config()));
    let token = user(&app, "katan-openai@example.com").await;
    let conv = conversation(&app, &token).await;
    let m = ask(&env, &token, &conv, "hello over openai", Status::Answered).await;
    let answer = m.answer.unwrap();
    assert!(answer.contains("User: hello over openai"), "{answer}");
    // Streamed (`stream: true`): llm-katan leaves streams out of its `/stats`, and logs each.
    let streamed = katan.log().lines().filter(|l| l.contains("openai | ") && l.contains("| 200 | stream |")).count();
    assert_eq!((streamed, katan.requests("openai").await), (1, 0), "{}", katan.log());
}

/// `aira-runtime serve` with the bedrock provider pointed at llm-katan, `env` on top of a
/// clean AWS configuration (no profile, no files, no instance metadata).
struct Serve {
    child: Child,
    base: String,
    http: reqwest::Client,
    token: String,
    conversation: String,
    _data: tempfile::TempDir,
}

impl Serve {
    async fn start(katan: &Katan, env: &[(&str, &str)]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aira-runtime"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data", dir.path().to_str().unwrap()])
            .env("AIRA_LOG", "warn")
            .env("AIRA_LLM_PROVIDER", "bedrock")
            .env("AIRA_LLM_MODEL", MODEL_ID)
            .env("AIRA_LLM_BASE_URL", katan.bedrock_url())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::null());
        for v in ["AIRA_LLM_API_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            cmd.env_remove(v);
        }
        for v in ["AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"] {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("start aira-runtime serve");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + SECS_20;
        while http.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (token, conversation) = sign_up_over_http(&http, &base, "katan-bedrock@example.com").await;
        Serve { child, base, http, token, conversation, _data: dir }
    }

    /// Posts `prompt` and returns the answer; panics if the message fails.
    async fn ask(&self, prompt: &str, katan: &Katan) -> String {
        let url = format!("{}/v1/conversations/{}/messages", self.base, self.conversation);
        let r = self.http.post(url).bearer_auth(&self.token).json(&json!({ "content": prompt })).send().await.unwrap();
        let m: Value = r.json().await.unwrap();
        let url = format!("{}/v1/messages/{}", self.base, m["id"].as_str().unwrap());
        let deadline = Instant::now() + SECS_20;
        loop {
            let m: Value = self.http.get(&url).bearer_auth(&self.token).send().await.unwrap().json().await.unwrap();
            if m["status"] == "answered" {
                return m["answer"].as_str().unwrap().to_string();
            }
            assert!(m["status"] != "failed" && Instant::now() < deadline, "not answered: {m}\n{}", katan.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `serve` binary configured as ECS configures the worker (AIRA_LLM_PROVIDER=bedrock,
/// AWS_REGION, credentials from the chain, here temporary ones in the environment): the answer
/// comes from llm-katan's Converse API, signed for `bedrock` in that region with those
/// credentials, the conversation history included.
#[tokio::test]
async fn bedrock_provider_answers_signed_from_the_credential_chain() {
    let Some(katan) = Katan::start(&["--validate-keys", "--api-keys", &format!("bedrock={ACCESS_KEY}")]).await else {
        return;
    };
    // Each call recorded on its way to llm-katan, whose check reads the scope only.
    let recorder = sigv4::Recorder::start(katan.bedrock_url()).await;
    let env = [
        ("AWS_REGION", "eu-west-3"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", "katan-secret"),
        ("AWS_SESSION_TOKEN", "katan-session-token"),
        ("AIRA_LLM_BASE_URL", &recorder.url),
    ];
    let serve = Serve::start(&katan, &env).await;
    let first = serve.ask("first over bedrock", &katan).await;
    let second = serve.ask("second over bedrock", &katan).await;
    drop(serve);

    // Signed for `bedrock` in the task's region with the secret key, over the body sent; the
    // check refuses a tampered body and another secret.
    let calls = recorder.requests();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for call in &calls {
        let date = call.headers["x-amz-date"].to_str().unwrap()[..8].to_string();
        let scope = format!("{date}/eu-west-3/bedrock/aws4_request");
        assert_eq!(sigv4::verify(call, &scope, "katan-secret"), Ok(()), "{call:?}");
        let mut body = call.body.to_vec();
        body[0] ^= 0x20;
        let tampered = sigv4::Arrived { body: body.into(), ..call.clone() };
        assert_eq!(sigv4::verify(&tampered, &scope, "katan-secret"), Err("the signature does not verify".into()));
        assert!(sigv4::verify(call, &scope, "another-secret").is_err());
        assert!(call.path.starts_with("/model/") && call.path.ends_with("/converse-stream"), "{}", call.path);
    }

    assert!(first.contains("User: first over bedrock"), "{first}");
    // The second call carries the first exchange: user, assistant, user.
    assert!(second.contains("messages=3") && second.contains("User: second over bedrock"), "{second}");
    assert_eq!(katan.requests("bedrock").await, 2);
    // llm-katan refuses (401) a signature for another service or another access key; it logs
    // the model of the path, the region of the credential scope, and a missing session token.
    let log = katan.log();
    let converse: Vec<&str> =
        log.lines().filter(|l| l.contains("bedrock converse |") && l.contains("model=")).collect();
    assert_eq!(converse.len(), 2, "{log}");
    for line in converse {
        assert!(line.contains(&format!("model={MODEL_ID} ")) && line.contains("region=eu-west-3"), "{line}");
    }
    assert!(!log.contains("x-amz-security-token not present"), "the session token was not sent:\n{log}");
}

/// The task role as ECS hands it out (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, here a loopback
/// server): credentials far from their expiry are fetched once for many calls; credentials
/// within 5 minutes of it are fetched again before the next call.
#[tokio::test]
async fn bedrock_credentials_from_the_container_endpoint_are_refreshed_before_they_expire() {
    let Some(katan) = Katan::start(&["--validate-keys", "--api-keys", &format!("bedrock={ACCESS_KEY}")]).await else {
        return;
    };
    for (valid_for, fetches) in [(Duration::from_secs(3600), 1), (Duration::from_secs(120), 3)] {
        let endpoint = CredentialsEndpoint::start(valid_for).await;
        let uri = endpoint.uri();
        let serve =
            Serve::start(&katan, &[("AWS_REGION", "us-east-1"), ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)]).await;
        for i in 0..3 {
            assert!(serve.ask(&format!("call {i}"), &katan).await.contains(&format!("User: call {i}")));
        }
        assert_eq!(endpoint.fetches(), fetches, "credentials valid for {valid_for:?}");
    }
    assert!(!katan.log().contains("x-amz-security-token not present"), "{}", katan.log());
}

/// A cross-region inference profile is called by its id (`AIRA_LLM_MODEL`, as `up` sets it):
/// the Converse path names the profile, signed for `bedrock` in the task's region.
#[tokio::test]
async fn bedrock_provider_calls_an_inference_profile_by_its_id() {
    const PROFILE: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
    let Some(katan) = Katan::start(&["--validate-keys", "--api-keys", &format!("bedrock={ACCESS_KEY}")]).await else {
        return;
    };
    let env = [
        ("AWS_REGION", "us-east-2"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", "katan-secret"),
        ("AIRA_LLM_MODEL", PROFILE),
    ];
    let serve = Serve::start(&katan, &env).await;
    let answer = serve.ask("through a profile", &katan).await;
    drop(serve);
    assert!(answer.contains("User: through a profile"), "{answer}");
    let log = katan.log();
    let converse: Vec<&str> =
        log.lines().filter(|l| l.contains("bedrock converse |") && l.contains("model=")).collect();
    assert_eq!(converse.len(), 1, "{log}");
    assert!(
        converse[0].contains(&format!("model={PROFILE} ")) && converse[0].contains("region=us-east-2"),
        "{}",
        converse[0]
    );
}

/// A loopback stand-in for the ECS credentials endpoint: temporary credentials for ACCESS_KEY
/// that expire `valid_for` after each fetch; counts the fetches.
struct CredentialsEndpoint {
    addr: std::net::SocketAddr,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl CredentialsEndpoint {
    async fn start(valid_for: Duration) -> CredentialsEndpoint {
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = fetches.clone();
        let app = axum::Router::new().route(
            "/creds",
            axum::routing::get(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(json!({
                        "AccessKeyId": ACCESS_KEY,
                        "SecretAccessKey": "katan-secret",
                        "Token": "katan-session-token",
                        "Expiration": rfc3339(SystemTime::now() + valid_for),
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        CredentialsEndpoint { addr, fetches }
    }

    fn uri(&self) -> String {
        format!("http://{}/creds", self.addr)
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (the ECS endpoint's `Expiration`), by the SDK's own formatter.
fn rfc3339(t: SystemTime) -> String {
    use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    DateTime::from_secs(secs).fmt(DateTimeFormat::DateTime).unwrap()
}

/// 429 after one request (ThrottlingException) and 504 after one (ModelTimeoutException):
/// the first message is answered; the next is retried on every receive and then ends as any
/// retryable failure does: failed for the user (with Bedrock's error type) and dead-lettered.
#[tokio::test]
async fn bedrock_throttling_and_timeouts_are_retried_until_the_dead_letter_queue() {
    for (option, code, kind) in [
        ("--rate-limit-after", "ThrottlingException", "rate_limited"),
        ("--timeout-after", "ModelTimeoutException", "server"),
    ] {
        let Some(katan) = Katan::start(&[option, "1"]).await else { return };
        let env = Env::new(Limits::default());
        let app = env.app();
        let cfg = worker_config();
        let (_w, stop) = spawn_worker(env.worker(katan.bedrock(ACCESS_KEY, "us-east-1"), cfg.clone()));
        let token = user(&app, "katan-faults@example.com").await;
        let conv = conversation(&app, &token).await;
        ask(&env, &token, &conv, "before the limit", Status::Answered).await;
        let m = ask(&env, &token, &conv, "after the limit", Status::Failed).await;
        assert_eq!(m.error.as_deref(), Some(format!("{} ({code})", unavailable_or_rate_limited(kind)).as_str()));
        let dlq = env.backends.dead_letter.clone();
        wait_until("the message in the dead-letter queue", SECS_20, || async {
            dlq.approximate_len().await.unwrap() == 1
        })
        .await;
        assert_eq!(katan.requests("bedrock").await, 1 + u64::from(cfg.max_receives), "{option}");
        assert_eq!(
            metric(&env.metrics, &format!("aira_llm_errors_total{{kind=\"{kind}\"}}")),
            f64::from(cfg.max_receives)
        );
        stop.cancel();
    }
}

fn unavailable_or_rate_limited(kind: &str) -> &'static str {
    match kind {
        "rate_limited" => "the language model is rate limiting us; try again later",
        _ => "the language model is unavailable; try again later",
    }
}

/// Half of llm-katan's answers are 500 (InternalServerException): every message is answered
/// in the end, after retries.
#[tokio::test]
async fn bedrock_internal_errors_are_retried_and_answered() {
    let Some(katan) = Katan::start(&["--error-rate", "0.5"]).await else { return };
    // The queue's max receives must be the worker's (its redrive policy).
    let dir = tempfile::tempdir().unwrap();
    let backends = aira_runtime::run::open_embedded(dir.path(), 20, Durability::Full).unwrap();
    let (store, queue) = (backends.store.clone(), backends.queue.clone());
    let env = Env::with(dir, backends, store, queue, Arc::new(Metrics::new()), Limits::default());
    let app = env.app();
    // 12 messages that each fail 20 times in a row: about 1 in 10⁵; none failing at all: 1 in 4096.
    let cfg = WorkerConfig { max_receives: 20, retry_max: Duration::from_millis(500), ..worker_config() };
    let (_w, _stop) = spawn_worker(env.worker(katan.bedrock(ACCESS_KEY, "us-east-1"), cfg));
    let token = user(&app, "katan-flaky@example.com").await;
    let conv = conversation(&app, &token).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(post_message(&app, &token, &conv, &format!("flaky {i}")).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let m = wait_status(env.store.as_ref(), id, Status::Answered, Duration::from_secs(60)).await;
        assert!(m.answer.unwrap().contains(&format!("User: flaky {i}")));
    }
    let errors = metric(&env.metrics, "aira_llm_errors_total{kind=\"server\"}");
    assert!(errors >= 1.0, "no 500 in 12 calls at an error rate of 0.5");
    assert_eq!(katan.requests("bedrock").await as f64, 12.0 + errors);
}

/// A signature llm-katan refuses (another access key: 401 UnrecognizedClientException) is not
/// retried: one call, the message failed with that type, nothing in the dead-letter queue.
#[tokio::test]
async fn bedrock_refusal_is_not_retried() {
    let Some(katan) = Katan::start(&["--validate-keys", "--api-keys", &format!("bedrock={ACCESS_KEY}")]).await else {
        return;
    };
    let env = Env::new(Limits::default());
    let app = env.app();
    let (_w, _stop) = spawn_worker(env.worker(katan.bedrock("AKIAOTHERKEY", "us-east-1"), worker_config()));
    let token = user(&app, "katan-refused@example.com").await;
    let conv = conversation(&app, &token).await;
    let m = ask(&env, &token, &conv, "let me in", Status::Failed).await;
    assert_eq!(m.error.as_deref(), Some("the language model refused the request (UnrecognizedClientException)"));
    wait_until("queue empty", SECS_20, || async { env.queue.approximate_len().await.unwrap() == 0 }).await;
    assert_eq!(katan.requests("bedrock").await, 1, "no retry");
    assert_eq!(env.backends.dead_letter.approximate_len().await.unwrap(), 0);
    assert_eq!(metric(&env.metrics, "aira_llm_errors_total{kind=\"rejected\"}"), 1.0);
}

/// Bedrock signs with the task role: an API key is refused at start, naming the variable.
#[test]
fn bedrock_with_an_api_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aira-runtime"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data", dir.path().to_str().unwrap()])
        .env("AIRA_LLM_PROVIDER", "bedrock")
        .env("AIRA_LLM_MODEL", MODEL_ID)
        .env("AIRA_LLM_API_KEY", "sk-not-for-bedrock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AIRA_LLM_API_KEY") && stderr.contains("bedrock"), "{stderr}");
    assert!(!stderr.contains("sk-not-for-bedrock"), "the key is never printed: {stderr}");
}
